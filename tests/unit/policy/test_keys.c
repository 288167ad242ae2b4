/* Virtual keys: hashing, the pepper, the snapshot look-up (valid, wrong, revoked, expired, wrong model),
 * attribution, the JSON checks shared by the CLI and the admin API, the CLI's flags, the SQLite store and the
 * refresh thread. */
#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/admin_keys.h"
#include "api/keys_cli.h"
#include "common/alloc.h"
#include "config/config.h"
#include "policy/auth.h"
#include "policy/keys.h"
#include "store/keys_store.h"
#include "test.h"

static const uint8_t PEPPER[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static char *tmpdir(void)
{
    char t[] = "/tmp/agentd-keys-XXXXXX";
    char *d = mkdtemp(t);
    return d ? xstrdup(d) : NULL;
}

static void rmdir_all(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", d);
}

static void test_hash(void)
{
    struct key_hasher h;
    key_hasher_init(&h, PEPPER);
    const char *msgs[] = {"", "sk-agentd-abc", "sk-agentd-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i < 3; i++) {
        uint8_t a[32], b[32];
        unsigned bl = 0;
        key_hash(&h, msgs[i], strlen(msgs[i]), a);
        HMAC(EVP_sha256(), PEPPER, 32, (const unsigned char *)msgs[i], strlen(msgs[i]), b, &bl);
        is_int(bl, 32);
        ok(memcmp(a, b, 32) == 0); /* the precomputed pads give exactly HMAC-SHA256 */
        ok(key_hash_eq(a, b));
        b[31] ^= 1;
        ok(!key_hash_eq(a, b));
    }
    char s1[KEY_SECRET_MAX], s2[KEY_SECRET_MAX];
    ok(key_secret_new(s1, sizeof(s1)) == 0 && key_secret_new(s2, sizeof(s2)) == 0);
    ok(strncmp(s1, "sk-agentd-", 10) == 0);
    is_int(strlen(s1), 10 + 44);
    ok(strcmp(s1, s2) != 0);
    ok(key_secret_new(s1, 20) == -1);
    char id[KEY_ID_MAX];
    ok(key_id_new(id) == 0);
    is_int(strlen(id), 20);
}

static void test_pepper(void)
{
    char *d = tmpdir();
    uint8_t p1[32], p2[32];
    struct buf err = BUF_INIT(4096);
    ok(key_pepper_load(d, p1, &err) == 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/keys.pepper", d);
    struct stat st;
    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 32);
    ok(key_pepper_load(d, p2, &err) == 0);
    ok(memcmp(p1, p2, 32) == 0); /* the same pepper on the next start */
    chmod(path, 0644);
    buf_reset(&err);
    ok(key_pepper_load(d, p2, &err) == -1); /* readable by others: refused */
    ok(err.data && strstr(err.data, "0600") != NULL);
    buf_free(&err);
    rmdir_all(d);
    xfree(d);
}

/* Two threads of one process create the pepper of a fresh data dir at once (the keyring's refresh thread and the
 * admin path do this when the data dir appears after the start): both succeed and agree on one pepper. */
struct pepper_race {
    const char *dir;
    pthread_barrier_t *go;
    uint8_t pepper[32];
    int rc;
    char err[256];
};

static void *pepper_racer(void *arg)
{
    struct pepper_race *r = arg;
    struct buf err = BUF_INIT(256);
    pthread_barrier_wait(r->go);
    r->rc = key_pepper_load(r->dir, r->pepper, &err);
    snprintf(r->err, sizeof(r->err), "%s", err.data ? err.data : "");
    buf_free(&err);
    return NULL;
}

static void test_pepper_race(void)
{
    char *base = tmpdir();
    int failures = 0, differ = 0;
    for (int i = 0; i < 200; i++) {
        char d[512];
        snprintf(d, sizeof(d), "%s/%d", base, i);
        if (mkdir(d, 0700) != 0)
            break;
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct pepper_race a = {.dir = d, .go = &go}, b = {.dir = d, .go = &go};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, pepper_racer, &a);
        pthread_create(&tb, NULL, pepper_racer, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&go);
        if (a.rc != 0 || b.rc != 0) {
            if (failures++ == 0)
                printf("# round %d: %s | %s\n", i, a.err, b.err);
        } else if (memcmp(a.pepper, b.pepper, 32) != 0) {
            differ++;
        }
    }
    is_int(failures, 0);
    is_int(differ, 0);
    rmdir_all(base);
    xfree(base);
}

/* A record with a secret. */
static void make_key(struct key_record *r, const char *id, const char *secret, const char *models_json,
                     const char *workflow, bool attr)
{
    struct key_hasher h;
    key_hasher_init(&h, PEPPER);
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", id);
    cJSON_AddStringToObject(o, "user", "u1");
    cJSON_AddStringToObject(o, "team", "t1");
    cJSON_AddBoolToObject(o, "caller_attribution", attr);
    if (models_json)
        cJSON_AddItemToObject(o, "models", cJSON_Parse(models_json));
    if (workflow)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "tags"), "workflow", workflow);
    char err[256];
    if (!ok(key_apply_json(r, o, true, 1000, err, sizeof(err)) == 0))
        printf("# %s\n", err);
    cJSON_Delete(o);
    key_set_secret(r, &h, secret);
}

static enum auth_result check(const char *secret, const char *model, const struct principal **p)
{
    struct auth_input in = {.secret = str_from(secret), .model = str_from(model)};
    return auth_check(&in, (int64_t)time(NULL), p);
}

static void test_snapshot(void)
{
    keyring_set_pepper(PEPPER);
    struct key_record *v = xcalloc(4, sizeof(*v));
    make_key(&v[0], "key_0000000000000001", "sk-agentd-good", NULL, "triage", false);
    make_key(&v[1], "key_0000000000000002", "sk-agentd-revoked", NULL, NULL, false);
    v[1].revoked_at = 5;
    make_key(&v[2], "key_0000000000000003", "sk-agentd-expired", NULL, NULL, false);
    v[2].expires_at = (int64_t)time(NULL) - 1;
    make_key(&v[3], "key_0000000000000004", "sk-agentd-limited", "[\"mock\",\"gpt-4o\"]", NULL, true);
    uint64_t g0 = keyring_generation();
    keyring_install(v, 4);
    ok(keyring_generation() == g0 + 1);
    is_int(keyring_size(), 4);

    const struct principal *p = NULL;
    is_int(check("sk-agentd-good", "anything", &p), AUTH_OK);
    ok(p && strcmp(p->key_id, "key_0000000000000001") == 0);
    ok(p && strcmp(p->user, "u1") == 0 && strcmp(p->team, "t1") == 0 && strcmp(p->workflow, "triage") == 0);
    /* the principal keeps its snapshot alive across a swap */
    keyring_install(NULL, 0);
    is_int(keyring_size(), 0);
    ok(p && strcmp(p->key_name, "key_0000000000000001") == 0);
    principal_release(p);
    is_int(check("sk-agentd-good", "anything", &p), AUTH_BAD_KEY);
    ok(p == NULL);

    v = xcalloc(4, sizeof(*v));
    make_key(&v[0], "key_0000000000000001", "sk-agentd-good", NULL, "triage", false);
    make_key(&v[1], "key_0000000000000002", "sk-agentd-revoked", NULL, NULL, false);
    v[1].revoked_at = 5;
    make_key(&v[2], "key_0000000000000003", "sk-agentd-expired", NULL, NULL, false);
    v[2].expires_at = (int64_t)time(NULL) - 1;
    make_key(&v[3], "key_0000000000000004", "sk-agentd-limited", "[\"mock\",\"gpt-4o\"]", NULL, true);
    keyring_install(v, 4);
    is_int(check("", "m", &p), AUTH_NO_KEY);
    is_int(check("sk-agentd-goo", "m", &p), AUTH_BAD_KEY);
    is_int(check("sk-agentd-good2", "m", &p), AUTH_BAD_KEY);
    is_int(check("not-a-key", "m", &p), AUTH_BAD_KEY);
    is_int(check("sk-agentd-revoked", "m", &p), AUTH_BAD_KEY);
    is_int(check("sk-agentd-expired", "m", &p), AUTH_BAD_KEY);
    is_int(check("sk-agentd-limited", "gpt-4o-mini", &p), AUTH_MODEL_DENIED);
    ok(p == NULL);
    is_int(check("sk-agentd-limited", "gpt-4o", &p), AUTH_OK);
    principal_release(p);
    char big[400];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "sk-agentd-", 10);
    is_int(check(big, "m", &p), AUTH_BAD_KEY);

    /* attribution: the caller's user/workflow only when the key allows it */
    struct auth_input in = {.secret = STR_LIT("sk-agentd-limited"), .model = STR_LIT("mock"),
                            .user = STR_LIT("end-user-7"), .workflow = STR_LIT("wf\nx")};
    is_int(auth_check(&in, (int64_t)time(NULL), &p), AUTH_OK);
    ok(p && strcmp(p->user, "end-user-7") == 0 && strcmp(p->workflow, "wfx") == 0);
    principal_release(p);
    in.secret = STR_LIT("sk-agentd-good");
    is_int(auth_check(&in, (int64_t)time(NULL), &p), AUTH_OK);
    ok(p && strcmp(p->user, "u1") == 0 && strcmp(p->workflow, "triage") == 0);
    principal_release(p);
    keyring_stop();
    is_int(check("sk-agentd-good", "m", &p), AUTH_BAD_KEY);
}

static void test_many_keys(void)
{
    keyring_set_pepper(PEPPER);
    struct key_hasher h;
    key_hasher_init(&h, PEPPER);
    size_t n = 5000;
    struct key_record *v = xcalloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        snprintf(v[i].id, sizeof(v[i].id), "key_%016zx", i);
        v[i].name = xstrdup("k");
        v[i].user = xstrdup("");
        v[i].team = xstrdup("");
        char s[64];
        snprintf(s, sizeof(s), "sk-agentd-%zu", i);
        key_set_secret(&v[i], &h, s);
    }
    keyring_install(v, n);
    int found = 0;
    for (size_t i = 0; i < n; i += 7) {
        char s[64];
        snprintf(s, sizeof(s), "sk-agentd-%zu", i);
        const struct principal *p;
        if (check(s, "m", &p) == AUTH_OK && strcmp(p->key_id, v[i].id) == 0)
            found++;
        principal_release(p);
    }
    is_int(found, (int)((n + 6) / 7));
    keyring_stop();
}

/* Readers on other threads keep principals across snapshot swaps; every look-up sees a whole snapshot (the key
 * is in all of them) and nothing leaks or is used after free (ASan). */
struct reader {
    _Atomic bool *stop;
    int ok, bad;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    const struct principal *held[8] = {0};
    for (int i = 0; !atomic_load(r->stop) || i < 1000; i++) {
        const struct principal *p;
        if (check("sk-agentd-good", "m", &p) == AUTH_OK && strcmp(p->key_id, "key_0000000000000001") == 0)
            r->ok++;
        else
            r->bad++;
        principal_release(held[i % 8]); /* released later, after the snapshot under it may have changed */
        held[i % 8] = p;
    }
    for (int i = 0; i < 8; i++)
        principal_release(held[i]);
    return NULL;
}

static void test_threads(void)
{
    keyring_set_pepper(PEPPER);
    _Atomic bool stop = false;
    struct key_record *v = xcalloc(1, sizeof(*v));
    make_key(&v[0], "key_0000000000000001", "sk-agentd-good", NULL, NULL, false);
    keyring_install(v, 1);
    struct reader r[2] = {{&stop, 0, 0}, {&stop, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader_main, &r[i]);
    for (int n = 0; n < 200; n++) {
        size_t k = 1 + (size_t)n % 3;
        v = xcalloc(k, sizeof(*v));
        make_key(&v[0], "key_0000000000000001", "sk-agentd-good", NULL, NULL, false);
        for (size_t j = 1; j < k; j++)
            make_key(&v[j], j == 1 ? "key_0000000000000002" : "key_0000000000000003",
                     j == 1 ? "sk-agentd-x" : "sk-agentd-y", NULL, NULL, false);
        keyring_install(v, k);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    ok(r[0].ok >= 1000 && r[1].ok >= 1000);
    is_int(r[0].bad + r[1].bad, 0);
    keyring_stop();
}

static void test_secret_from(void)
{
    struct str bearer = STR_LIT("Bearer  sk-agentd-a "), xk = STR_LIT("sk-agentd-b"), ak = STR_LIT(" sk-agentd-c");
    struct str lower = STR_LIT("bearer sk-agentd-d"), basic = STR_LIT("Basic Zm9v"), empty = STR_LIT("  ");
    ok(str_eq_cstr(auth_secret_from(&bearer, &xk, &ak), "sk-agentd-a"));
    ok(str_eq_cstr(auth_secret_from(&lower, NULL, NULL), "sk-agentd-d"));
    ok(str_eq_cstr(auth_secret_from(NULL, &xk, &ak), "sk-agentd-b"));
    ok(str_eq_cstr(auth_secret_from(NULL, NULL, &ak), "sk-agentd-c"));
    ok(str_eq_cstr(auth_secret_from(&empty, &xk, NULL), "sk-agentd-b"));
    ok(str_eq_cstr(auth_secret_from(&basic, &xk, NULL), "Basic Zm9v")); /* presented, and not a key */
    is_int(auth_secret_from(NULL, NULL, NULL).n, 0);
    is_int(auth_secret_from(NULL, &empty, NULL).n, 0);
}

static int apply(struct key_record *r, const char *js, bool create, char *err, size_t n)
{
    cJSON *o = cJSON_Parse(js);
    int rc = key_apply_json(r, o, create, 1000, err, n);
    cJSON_Delete(o);
    return rc;
}

static void test_json(void)
{
    struct key_record r = {0};
    char err[512];
    ok(apply(&r, "{\"user\":\"x\"}", true, err, sizeof(err)) == -1 && strstr(err, "'name'"));
    ok(apply(&r, "[1]", true, err, sizeof(err)) == -1);
    ok(apply(&r, "{\"name\":\"a\",\"rpm\":\"10\"}", true, err, sizeof(err)) == -1 && strstr(err, "'rpm'"));
    ok(apply(&r, "{\"name\":\"a\",\"rpm\":1.5}", true, err, sizeof(err)) == -1 && strstr(err, "'rpm'"));
    ok(apply(&r, "{\"name\":\"a\",\"tpm\":-1}", true, err, sizeof(err)) == -1 && strstr(err, "'tpm'"));
    ok(apply(&r, "{\"name\":\"a\",\"budget_usd\":-1}", true, err, sizeof(err)) == -1 && strstr(err, "budget_usd"));
    ok(apply(&r, "{\"name\":\"a\",\"budget_window\":\"year\"}", true, err, sizeof(err)) == -1 &&
       strstr(err, "budget_window"));
    ok(apply(&r, "{\"name\":\"a\",\"tags\":{\"k\":1}}", true, err, sizeof(err)) == -1 && strstr(err, "'tags'"));
    ok(apply(&r, "{\"name\":\"a\",\"models\":[1]}", true, err, sizeof(err)) == -1 && strstr(err, "'models'"));
    ok(apply(&r, "{\"name\":\"a\",\"models\":\"a,,b\"}", true, err, sizeof(err)) == -1);
    ok(apply(&r, "{\"name\":\"a\",\"expires_in\":\"30x\"}", true, err, sizeof(err)) == -1 &&
       strstr(err, "expires_in"));
    ok(apply(&r, "{\"name\":\"a\",\"bogus\":1}", true, err, sizeof(err)) == -1 && strstr(err, "'bogus'"));
    ok(apply(&r, "{\"name\":\"a\",\"max_concurrent\":-1}", true, err, sizeof(err)) == -1 &&
       strstr(err, "'max_concurrent'"));
    ok(apply(&r, "{\"name\":\"a\",\"max_concurrent\":2.5}", true, err, sizeof(err)) == -1);
    ok(apply(&r, "{\"name\":\"a\",\"max_concurrent\":1000001}", true, err, sizeof(err)) == -1);
    ok(apply(&r, "{\"name\":\"\"}", true, err, sizeof(err)) == -1);
    ok(apply(&r, "{\"name\":\"a\\nb\"}", true, err, sizeof(err)) == -1);
    ok(r.name == NULL); /* nothing applied from a refused body */
    ok(apply(&r, "{\"name\":\"a\",\"models\":\"m1,m2\",\"tags\":{\"workflow\":\"w\"},\"rpm\":10,\"budget_usd\":2.5,"
                 "\"budget_window\":\"month\",\"expires_in\":\"2d\",\"caller_attribution\":true}",
             true, err, sizeof(err)) == 0);
    is_str(r.name, "a");
    is_int(r.nmodels, 2);
    ok(key_model_allowed(&r, "m2", 2) && !key_model_allowed(&r, "m", 1) && !key_model_allowed(&r, "m22", 3));
    is_str(key_tag(&r, "workflow"), "w");
    is_int(r.rpm, 10);
    is_int(r.budget_window, KEY_WINDOW_MONTH);
    is_int(r.expires_at, 1000 + 2 * 86400);
    ok(r.caller_attribution);
    ok(key_active(&r, 1000) && key_expired(&r, 1000 + 2 * 86400) && !key_active(&r, 1000 + 2 * 86400));
    /* an update that fails changes nothing; one that succeeds changes only what it names */
    ok(apply(&r, "{\"rpm\":5,\"tpm\":\"x\"}", false, err, sizeof(err)) == -1);
    is_int(r.rpm, 10);
    ok(apply(&r, "{\"rpm\":5,\"models\":null}", false, err, sizeof(err)) == 0);
    is_int(r.rpm, 5);
    is_int(r.nmodels, 0);
    is_int(r.max_concurrent, 0);
    ok(apply(&r, "{\"max_concurrent\":3}", false, err, sizeof(err)) == 0);
    is_int(r.max_concurrent, 3);
    is_int(r.rpm, 5);
    ok(key_model_allowed(&r, "anything", 8));
    is_str(r.name, "a");
    cJSON *j = key_to_json(&r, 1000);
    ok(cJSON_GetObjectItem(j, "hash") == NULL && cJSON_GetObjectItem(j, "key") == NULL);
    is_str(cJSON_GetStringValue(cJSON_GetObjectItem(j, "status")), "active");
    is_int((int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "max_concurrent")), 3);
    cJSON_Delete(j);
    key_record_free(&r);

    is_int(key_parse_duration("30d"), 30 * 86400);
    is_int(key_parse_duration("2w"), 14 * 86400);
    is_int(key_parse_duration("90m"), 5400);
    is_int(key_parse_duration("45s"), 45);
    is_int(key_parse_duration("0d"), -1);
    is_int(key_parse_duration("d"), -1);
    is_int(key_parse_duration("30"), -1);
    is_int(key_parse_duration("30dd"), -1);
    is_int(key_parse_duration("99999999999999d"), -1);
}

static cJSON *flags(const char *const *argv, int argc)
{
    const char *dd = NULL, *cp = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    cJSON *o = keys_cli_flags(argc, (char **)argv, &dd, &cp, devnull);
    fclose(devnull);
    return o;
}

static void test_cli_flags(void)
{
    const char *a1[] = {"--name", "ci", "--user", "bob", "--tag", "workflow=triage", "--tag", "env=prod",
                        "--models", "a,b", "--budget-usd", "1.5", "--budget-window", "day", "--rpm", "60",
                        "--tpm", "1000", "--budget-tokens", "5000", "--expires", "30d", "--caller-attribution",
                        "--max-concurrent", "4"};
    cJSON *o = flags(a1, (int)ARRAY_LEN(a1));
    ok(o != NULL);
    struct key_record r = {0};
    char err[256];
    ok(key_apply_json(&r, o, true, 0, err, sizeof(err)) == 0);
    is_str(r.user, "bob");
    is_int(r.ntags, 2);
    is_str(key_tag(&r, "env"), "prod");
    is_int(r.nmodels, 2);
    ok(r.budget_usd == 1.5);
    is_int(r.budget_window, KEY_WINDOW_DAY);
    is_int(r.rpm, 60);
    is_int(r.tpm, 1000);
    is_int(r.budget_tokens, 5000);
    is_int(r.max_concurrent, 4);
    is_int(r.expires_at, 30 * 86400);
    ok(r.caller_attribution);
    key_record_free(&r);
    cJSON_Delete(o);
    const char *bad1[] = {"--rpm", "ten"};
    ok(flags(bad1, 2) == NULL);
    const char *bad2[] = {"--tag", "novalue"};
    ok(flags(bad2, 2) == NULL);
    const char *bad3[] = {"--name"};
    ok(flags(bad3, 1) == NULL);
    const char *bad4[] = {"--frobnicate", "1"};
    ok(flags(bad4, 2) == NULL);
    const char *bad5[] = {"--rpm", "-3"};
    ok(flags(bad5, 2) == NULL);
    const char *bad6[] = {"--name", "a", "--name", "b"};
    ok(flags(bad6, 4) == NULL);
    const char *dd = NULL, *cp = NULL;
    const char *a2[] = {"--data-dir", "/x", "--config", "/y.yaml", "--expires", "never"};
    o = keys_cli_flags(6, (char **)a2, &dd, &cp, stderr);
    ok(o && dd && strcmp(dd, "/x") == 0 && cp && strcmp(cp, "/y.yaml") == 0);
    ok(cJSON_GetObjectItem(o, "expires_at") && cJSON_GetObjectItem(o, "expires_at")->valuedouble == 0);
    cJSON_Delete(o);
}

/* mcp_tools / mcp_deny: names or "prefix*" patterns, deny wins, null clears; the JSON shows both. */
static void test_mcp_tools(void)
{
    struct key_record r = {0};
    char err[256];
    ok(key_mcp_tool_allowed(NULL, "anything"));
    ok(apply(&r, "{\"name\":\"a\"}", true, err, sizeof(err)) == 0);
    ok(key_mcp_tool_allowed(&r, "files__read")); /* no lists: every tool */
    ok(apply(&r, "{\"mcp_tools\":[\"files__*\",\"echo\"],\"mcp_deny\":[\"files__rm\"]}", false, err,
             sizeof(err)) == 0);
    ok(key_mcp_tool_allowed(&r, "files__read"));
    ok(key_mcp_tool_allowed(&r, "echo"));
    ok(!key_mcp_tool_allowed(&r, "files__rm"));
    ok(!key_mcp_tool_allowed(&r, "echo2")); /* an exact name is not a prefix */
    ok(!key_mcp_tool_allowed(&r, "wait"));
    cJSON *j = key_to_json(&r, 0);
    is_int(cJSON_GetArraySize(cJSON_GetObjectItem(j, "mcp_tools")), 2);
    is_str(cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "mcp_deny"), 0)), "files__rm");
    cJSON_Delete(j);
    struct key_record c;
    key_record_copy(&c, &r);
    ok(!key_mcp_tool_allowed(&c, "files__rm") && key_mcp_tool_allowed(&c, "files__ls"));
    key_record_free(&c);
    ok(apply(&r, "{\"mcp_tools\":null,\"mcp_deny\":\"*\"}", false, err, sizeof(err)) == 0);
    ok(!key_mcp_tool_allowed(&r, "echo")); /* deny everything */
    ok(apply(&r, "{\"mcp_tools\":7}", false, err, sizeof(err)) == -1 && strstr(err, "'mcp_tools'"));
    ok(apply(&r, "{\"mcp_deny\":\"a,\"}", false, err, sizeof(err)) == -1 && strstr(err, "'mcp_deny'"));
    ok(apply(&r, "{\"mcp_deny\":[\"a\"],\"mcp_deny\":[\"b\"]}", false, err, sizeof(err)) == -1);
    ok(!key_mcp_tool_allowed(&r, "wait")); /* refused patches changed nothing */
    key_record_free(&r);
    const char *a[] = {"--name", "m", "--mcp-tools", "files__*", "--mcp-deny", "files__rm"};
    cJSON *o = flags(a, (int)ARRAY_LEN(a));
    ok(o && key_apply_json(&r, o, true, 0, err, sizeof(err)) == 0);
    ok(r.nmcp_tools == 1 && r.nmcp_deny == 1 && !key_mcp_tool_allowed(&r, "files__rm"));
    key_record_free(&r);
    cJSON_Delete(o);
}

static void test_store_and_refresh(void)
{
    char *d = tmpdir();
    struct buf err = BUF_INIT(4096);
    struct keys_admin a = {0};
    ok(keys_admin_open(&a, d, &err) == 0);
    ok(keyring_start(d, &keys_store_sqlite, 20, &err) == 0);
    is_int(keyring_size(), 0);
    uint64_t g0 = keyring_generation();

    cJSON *body = cJSON_Parse("{\"name\":\"k1\",\"models\":[\"mock\"]}");
    cJSON *out = NULL;
    is_int(keys_admin_exec(&a, KEYS_OP_CREATE, NULL, body, (int64_t)time(NULL), &out), 201);
    const char *secret = cJSON_GetStringValue(cJSON_GetObjectItem(out, "key"));
    char id[KEY_ID_MAX];
    snprintf(id, sizeof(id), "%s", cJSON_GetStringValue(cJSON_GetObjectItem(out, "id")));
    char sec[KEY_SECRET_MAX];
    snprintf(sec, sizeof(sec), "%s", secret ? secret : "");
    cJSON_Delete(out);
    cJSON_Delete(body);

    /* the refresh thread sees another connection's commit: wait for the next snapshot (bounded) */
    for (int i = 0; i < 500 && keyring_generation() == g0; i++)
        usleep(2000);
    ok(keyring_generation() > g0);
    const struct principal *p;
    is_int(check(sec, "mock", &p), AUTH_OK);
    principal_release(p);
    is_int(check(sec, "other", &p), AUTH_MODEL_DENIED);

    /* the stored hash is the secret's HMAC, never the secret */
    struct key_record r;
    is_int(a.ops->get(a.st, id, &r, &err), 0);
    ok(strstr(r.hint, "...") != NULL && strlen(r.hint) < 20);
    key_record_free(&r);

    uint64_t g1 = keyring_generation();
    is_int(keys_admin_exec(&a, KEYS_OP_REVOKE, id, NULL, (int64_t)time(NULL), &out), 200);
    is_str(cJSON_GetStringValue(cJSON_GetObjectItem(out, "status")), "revoked");
    cJSON_Delete(out);
    for (int i = 0; i < 500 && keyring_generation() == g1; i++)
        usleep(2000);
    is_int(check(sec, "mock", &p), AUTH_BAD_KEY);

    is_int(keys_admin_exec(&a, KEYS_OP_SHOW, "key_ffffffffffffffff", NULL, 0, &out), 404);
    cJSON_Delete(out);
    is_int(keys_admin_exec(&a, KEYS_OP_SHOW, "../etc", NULL, 0, &out), 404);
    cJSON_Delete(out);
    body = cJSON_Parse("{\"rpm\":\"x\"}");
    is_int(keys_admin_exec(&a, KEYS_OP_UPDATE, id, body, 0, &out), 400);
    is_str(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(out, "error"), "param")), "rpm");
    cJSON_Delete(out);
    cJSON_Delete(body);
    is_int(keys_admin_exec(&a, KEYS_OP_LIST, NULL, NULL, 0, &out), 200);
    is_int(cJSON_GetArraySize(out), 1);
    cJSON_Delete(out);

    keyring_stop();
    keys_admin_close(&a);
    buf_free(&err);
    rmdir_all(d);
    xfree(d);
}

/* A keys table written by an agentd from before max_concurrent: opening it adds the column (old rows: 0, no
 * limit), the rows read back, and the new field is stored; a second open finds the column and changes nothing. */
static void test_store_migration(void)
{
    char *d = tmpdir();
    char path[512];
    snprintf(path, sizeof(path), "%s/agentd.db", d);
    sqlite3 *db = NULL;
    ok(sqlite3_open(path, &db) == SQLITE_OK);
    uint8_t h[KEY_HASH_LEN] = {7};
    char sql[2048];
    char hex[2 * KEY_HASH_LEN + 1];
    for (size_t i = 0; i < KEY_HASH_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    snprintf(sql, sizeof(sql),
             "CREATE TABLE keys_records (id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, hint TEXT NOT NULL,"
             " name TEXT NOT NULL, user TEXT NOT NULL, team TEXT NOT NULL, tags TEXT NOT NULL, models TEXT NOT NULL,"
             " expires_at INTEGER NOT NULL, budget_usd REAL NOT NULL, budget_window INTEGER NOT NULL,"
             " budget_tokens INTEGER NOT NULL, rpm INTEGER NOT NULL, tpm INTEGER NOT NULL,"
             " caller_attribution INTEGER NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL);"
             "INSERT INTO keys_records VALUES ('key_00000000000000aa', x'%s', 'sk-agentd-Ab...', 'old', 'u', '',"
             " '{}', '[]', 0, 0, 0, 0, 60, 0, 0, 1000, 0);",
             hex);
    ok(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    struct buf err = BUF_INIT(4096);
    for (int round = 0; round < 2; round++) {
        struct keys_store *s = keys_store_sqlite.open(d, &err);
        ok(s != NULL);
        if (!s) {
            printf("# %.*s\n", (int)err.len, err.data);
            break;
        }
        struct key_record r;
        is_int(keys_store_sqlite.get(s, "key_00000000000000aa", &r, &err), 0);
        is_str(r.name, "old");
        is_int(r.rpm, 60);
        is_int(r.max_concurrent, round == 0 ? 0 : 5);
        is_int(r.nmcp_tools, round == 0 ? 0 : 1); /* an old row: every MCP tool */
        is_int(r.nmcp_deny, round == 0 ? 0 : 2);
        if (round == 1 && r.nmcp_tools == 1 && r.nmcp_deny == 2) {
            is_str(r.mcp_tools[0], "files__*");
            is_str(r.mcp_deny[1], "echo");
        }
        r.max_concurrent = 5;
        if (round == 0) {
            char e2[128];
            cJSON *j = cJSON_Parse("{\"mcp_tools\":[\"files__*\"],\"mcp_deny\":\"files__rm,echo\"}");
            is_int(key_apply_json(&r, j, false, 0, e2, sizeof(e2)), 0);
            cJSON_Delete(j);
            is_int(keys_store_sqlite.update(s, &r, &err), 0);
        }
        key_record_free(&r);
        struct key_record *v = NULL;
        size_t n = 0;
        is_int(keys_store_sqlite.list(s, &v, &n, &err), 0);
        is_int(n, 1);
        if (n == 1)
            is_int(v[0].max_concurrent, 5);
        keys_records_free(v, n);
        keys_store_sqlite.close(s);
    }
    buf_free(&err);
    rmdir_all(d);
    xfree(d);
}

/* A store the start cannot reach (no data dir yet): keys are refused, and the thread keeps trying. */
static void test_store_late(void)
{
    char *base = tmpdir();
    char d[512];
    snprintf(d, sizeof(d), "%s/not-yet", base);
    struct buf err = BUF_INIT(4096);
    ok(keyring_start(d, &keys_store_sqlite, 20, &err) == -1);
    ok(err.len > 0);
    ok(keyring_armed());
    const struct principal *p;
    is_int(check("sk-agentd-anything", "m", &p), AUTH_BAD_KEY);
    uint64_t g0 = keyring_generation();
    ok(mkdir(d, 0700) == 0);
    struct keys_admin a = {0};
    buf_reset(&err);
    if (!ok(keys_admin_open(&a, d, &err) == 0)) {
        printf("# %s\n", err.data ? err.data : "");
        keyring_stop();
        buf_free(&err);
        rmdir_all(base);
        xfree(base);
        return;
    }
    cJSON *body = cJSON_Parse("{\"name\":\"late\"}"), *out = NULL;
    is_int(keys_admin_exec(&a, KEYS_OP_CREATE, NULL, body, (int64_t)time(NULL), &out), 201);
    char sec[KEY_SECRET_MAX];
    snprintf(sec, sizeof(sec), "%s", cJSON_GetStringValue(cJSON_GetObjectItem(out, "key")));
    cJSON_Delete(out);
    cJSON_Delete(body);
    /* the thread may connect before or after the insert: wait (bounded) for the key itself */
    enum auth_result r = AUTH_BAD_KEY;
    for (int i = 0; i < 1000 && (r = check(sec, "m", &p)) != AUTH_OK; i++)
        usleep(2000);
    is_int(r, AUTH_OK);
    ok(keyring_generation() > g0);
    principal_release(p);
    keyring_stop();
    keys_admin_close(&a);
    buf_free(&err);
    rmdir_all(base);
    xfree(base);
}

static void test_mode(void)
{
    ok(auth_host_is_loopback("127.0.0.1"));
    ok(auth_host_is_loopback("127.1.2.3"));
    ok(auth_host_is_loopback("::1"));
    ok(auth_host_is_loopback("[::1]"));
    ok(auth_host_is_loopback("localhost"));
    ok(!auth_host_is_loopback("0.0.0.0"));
    ok(!auth_host_is_loopback("::"));
    ok(!auth_host_is_loopback(""));
    ok(!auth_host_is_loopback("10.0.0.1"));
    const char *cases[][3] = {
        /* listen, environment, expected */
        {"127.0.0.1:8000", "development", "none"}, {"0.0.0.0:8000", "development", "keys"},
        {"127.0.0.1:8000", "production", "keys"},  {":8000", "development", "keys"},
        {"[::1]:8000", "development", "none"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct config_flags f = {0};
        char s1[64], s2[64];
        snprintf(s1, sizeof(s1), "server.listen=%s", cases[i][0]);
        snprintf(s2, sizeof(s2), "server.environment=%s", cases[i][1]);
        f.sets[f.nsets++] = s1;
        f.sets[f.nsets++] = s2;
        char *env[] = {NULL};
        struct buf e = BUF_INIT(1 << 16);
        struct config *c = config_load(&f, env, &e);
        if (!ok(c != NULL))
            printf("# %s\n", e.data);
        if (c) {
            int m = auth_mode_effective(c);
            if (!ok(m == (strcmp(cases[i][2], "keys") == 0 ? AUTH_MODE_KEYS : AUTH_MODE_NONE)))
                printf("# case %zu\n", i);
            config_unref(c);
        }
        buf_free(&e);
    }
    struct config_flags f = {.sets = {"auth.mode=none", "server.listen=0.0.0.0:1"}, .nsets = 2};
    char *env[] = {NULL};
    struct buf e = BUF_INIT(1 << 16);
    struct config *c = config_load(&f, env, &e);
    ok(c && auth_mode_effective(c) == AUTH_MODE_NONE); /* an explicit choice stands */
    config_unref(c);
    struct config_flags f2 = {.sets = {"auth.mode=maybe"}, .nsets = 1};
    ok(config_load(&f2, env, &e) == NULL && e.data && strstr(e.data, "auth.mode"));
    buf_free(&e);
}

int main(void)
{
    subtest("HMAC with precomputed pads, secrets, ids", test_hash);
    subtest("the pepper file", test_pepper);
    subtest("two threads create one pepper", test_pepper_race);
    subtest("snapshot look-up: valid, wrong, revoked, expired, model", test_snapshot);
    subtest("5000 keys", test_many_keys);
    subtest("readers on other threads across snapshot swaps", test_threads);
    subtest("Bearer, x-api-key, api-key", test_secret_from);
    subtest("key JSON: types, ranges, nothing changed on error", test_json);
    subtest("CLI flags", test_cli_flags);
    subtest("mcp_tools and mcp_deny", test_mcp_tools);
    subtest("SQLite store and the refresh thread", test_store_and_refresh);
    subtest("a keys table from before max_concurrent is migrated", test_store_migration);
    subtest("a store that appears after the start", test_store_late);
    subtest("auth.mode", test_mode);
    return done_testing();
}
