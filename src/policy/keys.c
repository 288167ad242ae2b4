/* keys.c: key records, secrets, the peppered HMAC and the JSON shape of a key (see keys.h). */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* SHA256_Init & co.: the precomputed HMAC pads need the raw states */
#include "policy/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/str.h"

const char *const key_window_names[] = {"total", "day", "week", "month", NULL};

_Static_assert(sizeof(SHA256_CTX) <= sizeof(((struct key_hasher *)0)->inner), "SHA-256 state fits");

void key_record_free(struct key_record *r)
{
    xfree(r->name);
    xfree(r->user);
    xfree(r->team);
    for (size_t i = 0; i < r->ntags; i++) {
        xfree(r->tags[i].k);
        xfree(r->tags[i].v);
    }
    xfree(r->tags);
    for (size_t i = 0; i < r->nmodels; i++)
        xfree(r->models[i]);
    xfree(r->models);
    for (size_t i = 0; i < r->nmcp_tools; i++)
        xfree(r->mcp_tools[i]);
    xfree(r->mcp_tools);
    for (size_t i = 0; i < r->nmcp_deny; i++)
        xfree(r->mcp_deny[i]);
    xfree(r->mcp_deny);
    memset(r, 0, sizeof(*r));
}

static char *dup_or_empty(const char *s)
{
    return xstrdup(s ? s : "");
}

void key_record_copy(struct key_record *dst, const struct key_record *src)
{
    *dst = *src;
    dst->name = dup_or_empty(src->name);
    dst->user = dup_or_empty(src->user);
    dst->team = dup_or_empty(src->team);
    dst->tags = src->ntags ? xcalloc(src->ntags, sizeof(*dst->tags)) : NULL;
    for (size_t i = 0; i < src->ntags; i++) {
        dst->tags[i].k = xstrdup(src->tags[i].k);
        dst->tags[i].v = xstrdup(src->tags[i].v);
    }
    dst->models = src->nmodels ? xcalloc(src->nmodels, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->nmodels; i++)
        dst->models[i] = xstrdup(src->models[i]);
    dst->mcp_tools = src->nmcp_tools ? xcalloc(src->nmcp_tools, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->nmcp_tools; i++)
        dst->mcp_tools[i] = xstrdup(src->mcp_tools[i]);
    dst->mcp_deny = src->nmcp_deny ? xcalloc(src->nmcp_deny, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->nmcp_deny; i++)
        dst->mcp_deny[i] = xstrdup(src->mcp_deny[i]);
}

const char *key_tag(const struct key_record *r, const char *k)
{
    for (size_t i = 0; i < r->ntags; i++)
        if (strcmp(r->tags[i].k, k) == 0)
            return r->tags[i].v;
    return NULL;
}

/* ---------- pepper, hashing, secrets ---------- */

int key_pepper_load(const char *data_dir, uint8_t pepper[32], struct buf *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/keys.pepper", data_dir) >= sizeof(path)) {
        buf_printf(err, "data dir path too long");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        uint8_t fresh[32];
        if (RAND_bytes(fresh, sizeof(fresh)) != 1) {
            buf_printf(err, "no randomness for the key pepper");
            return -1;
        }
        /* Written to a private temporary name, then linked into place: two processes starting at once agree on
         * one pepper (link fails with EEXIST for the loser, which then reads the winner's). */
        /* The name is private to this process *and* this call: the keyring's refresh thread and the admin
         * path of the same process may both create the pepper of a fresh data dir at once. */
        static atomic_uint seq;
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&seq, 1));
        int w = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (w < 0) {
            buf_printf(err, "cannot create %s: %s", tmp, strerror(errno));
            return -1;
        }
        ssize_t n = write(w, fresh, sizeof(fresh));
        int sync_rc = fsync(w);
        close(w);
        OPENSSL_cleanse(fresh, sizeof(fresh));
        if (n != (ssize_t)sizeof(fresh) || sync_rc != 0 || (link(tmp, path) != 0 && errno != EEXIST)) {
            buf_printf(err, "cannot write %s: %s", path, strerror(errno));
            unlink(tmp);
            return -1;
        }
        unlink(tmp);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        buf_printf(err, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_size != 32) {
        close(fd);
        buf_printf(err, "%s must be a 32-byte file readable only by its owner (mode 0600)", path);
        return -1;
    }
    ssize_t n = read(fd, pepper, 32);
    close(fd);
    if (n != 32) {
        buf_printf(err, "cannot read %s", path);
        return -1;
    }
    return 0;
}

void key_hasher_init(struct key_hasher *h, const uint8_t pepper[32])
{
    uint8_t pad[64];
    SHA256_CTX c;
    memset(pad, 0x36, sizeof(pad));
    for (int i = 0; i < 32; i++)
        pad[i] ^= pepper[i];
    SHA256_Init(&c);
    SHA256_Update(&c, pad, sizeof(pad));
    memcpy(h->inner, &c, sizeof(c));
    memset(pad, 0x5c, sizeof(pad));
    for (int i = 0; i < 32; i++)
        pad[i] ^= pepper[i];
    SHA256_Init(&c);
    SHA256_Update(&c, pad, sizeof(pad));
    memcpy(h->outer, &c, sizeof(c));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(&c, sizeof(c));
}

void key_hash(const struct key_hasher *h, const char *secret, size_t len, uint8_t out[KEY_HASH_LEN])
{
    SHA256_CTX c;
    uint8_t ih[32];
    memcpy(&c, h->inner, sizeof(c));
    SHA256_Update(&c, secret, len);
    SHA256_Final(ih, &c);
    memcpy(&c, h->outer, sizeof(c));
    SHA256_Update(&c, ih, sizeof(ih));
    SHA256_Final(out, &c);
}

bool key_hash_eq(const uint8_t a[KEY_HASH_LEN], const uint8_t b[KEY_HASH_LEN])
{
    return CRYPTO_memcmp(a, b, KEY_HASH_LEN) == 0;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int key_secret_new(char *out, size_t outsz)
{
    uint8_t r[33]; /* 32 bytes of entropy, encoded 6 bits a character: 44 characters (264 bits, last 8 spare) */
    if (outsz < sizeof(KEY_SECRET_PREFIX) + 44 || RAND_bytes(r, sizeof(r)) != 1)
        return -1;
    size_t n = str_lcpy(out, KEY_SECRET_PREFIX, outsz);
    for (size_t i = 0; i < sizeof(r); i += 3) {
        uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];
        out[n++] = b64url[(v >> 18) & 63];
        out[n++] = b64url[(v >> 12) & 63];
        out[n++] = b64url[(v >> 6) & 63];
        out[n++] = b64url[v & 63];
    }
    out[n] = '\0';
    OPENSSL_cleanse(r, sizeof(r));
    return 0;
}

int key_id_new(char out[KEY_ID_MAX])
{
    uint8_t r[8];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return -1;
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "key_", 4);
    for (int i = 0; i < 8; i++) {
        out[4 + 2 * i] = hex[r[i] >> 4];
        out[5 + 2 * i] = hex[r[i] & 15];
    }
    out[20] = '\0';
    return 0;
}

void key_set_secret(struct key_record *r, const struct key_hasher *h, const char *secret)
{
    key_hash(h, secret, strlen(secret), r->hash);
    size_t pl = sizeof(KEY_SECRET_PREFIX) - 1;
    snprintf(r->hint, sizeof(r->hint), "%.*s...", (int)(pl + 4), secret);
}

/* ---------- policy ---------- */

bool key_expired(const struct key_record *r, int64_t now)
{
    return r->expires_at > 0 && now >= r->expires_at;
}

bool key_active(const struct key_record *r, int64_t now)
{
    return r->revoked_at == 0 && !key_expired(r, now);
}

bool key_model_allowed(const struct key_record *r, const char *model, size_t len)
{
    if (r->nmodels == 0)
        return true;
    for (size_t i = 0; i < r->nmodels; i++)
        if (strlen(r->models[i]) == len && memcmp(r->models[i], model, len) == 0)
            return true;
    return false;
}

static bool tool_listed(char *const *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        if (l > 0 && v[i][l - 1] == '*' ? strncmp(v[i], name, l - 1) == 0 : strcmp(v[i], name) == 0)
            return true;
    }
    return false;
}

bool key_mcp_tool_allowed(const struct key_record *r, const char *name)
{
    if (r == NULL)
        return true;
    if (tool_listed(r->mcp_deny, r->nmcp_deny, name))
        return false;
    return r->nmcp_tools == 0 || tool_listed(r->mcp_tools, r->nmcp_tools, name);
}

/* ---------- JSON ---------- */

int64_t key_parse_duration(const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    int64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > 100000000) /* ~3000 years in seconds at the largest unit is plenty */
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (p == s || v <= 0 || p[0] == '\0' || p[1] != '\0')
        return -1;
    switch (*p) {
    case 's': return v;
    case 'm': return v * 60;
    case 'h': return v * 3600;
    case 'd': return v * 86400;
    case 'w': return v * 7 * 86400;
    default: return -1;
    }
}

static bool text_ok(const char *s, bool allow_empty)
{
    size_t n = strlen(s);
    if (n > KEY_TEXT_MAX || (!allow_empty && n == 0))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* The fields a record may be given, and the pending values (applied only when all are valid). */
struct key_patch {
    const char *name, *user, *team;
    bool set_tags, set_models;
    struct key_tag *tags;
    size_t ntags;
    char **models;
    size_t nmodels;
    bool set_mcp_tools, set_mcp_deny;
    char **mcp_tools, **mcp_deny;
    size_t nmcp_tools, nmcp_deny;
    bool set_expires, set_budget_usd, set_window, set_budget_tokens, set_rpm, set_tpm, set_maxc, set_attr;
    int64_t expires_at, budget_tokens, rpm, tpm, max_concurrent;
    double budget_usd;
    int window;
    bool attr;
};

static void patch_free(struct key_patch *p)
{
    for (size_t i = 0; i < p->ntags; i++) {
        xfree(p->tags[i].k);
        xfree(p->tags[i].v);
    }
    xfree(p->tags);
    for (size_t i = 0; i < p->nmodels; i++)
        xfree(p->models[i]);
    xfree(p->models);
    for (size_t i = 0; i < p->nmcp_tools; i++)
        xfree(p->mcp_tools[i]);
    xfree(p->mcp_tools);
    for (size_t i = 0; i < p->nmcp_deny; i++)
        xfree(p->mcp_deny[i]);
    xfree(p->mcp_deny);
}

#define FAIL(...)                                                                                                   \
    do {                                                                                                            \
        snprintf(err, errsz, __VA_ARGS__);                                                                          \
        return -1;                                                                                                  \
    } while (0)

static int text_field(const cJSON *f, const char **out, bool allow_empty, char *err, size_t errsz)
{
    if (!cJSON_IsString(f))
        FAIL("field '%s' must be a string", f->string);
    if (!text_ok(f->valuestring, allow_empty))
        FAIL("field '%s' must be %sat most %d printable characters", f->string, allow_empty ? "" : "1 to ",
             KEY_TEXT_MAX);
    *out = f->valuestring;
    return 0;
}

static int int_field(const cJSON *f, int64_t max, int64_t *out, char *err, size_t errsz)
{
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || f->valuedouble < 0 || f->valuedouble > (double)max ||
        f->valuedouble != floor(f->valuedouble))
        FAIL("field '%s' must be a whole number from 0 to %lld", f->string, (long long)max);
    *out = (int64_t)f->valuedouble;
    return 0;
}

/* A list of names (models, mcp_tools, mcp_deny): an array of strings, or "a,b" as the CLI writes it. */
static int names_field(char ***v, size_t *n, const cJSON *f, size_t max_n, size_t max_len, char *err, size_t errsz)
{
    const char *what = f->string;
    if (cJSON_IsString(f)) {
        const char *s = f->valuestring;
        while (*s) {
            const char *c = strchr(s, ',');
            size_t len = c ? (size_t)(c - s) : strlen(s);
            if (len == 0 || len > max_len || *n >= max_n)
                FAIL("field '%s' must list 1 to %zu names of at most %zu characters", what, max_n, max_len);
            *v = xrealloc(*v, (*n + 1) * sizeof(char *));
            (*v)[(*n)++] = xstrndup(s, len);
            if (!text_ok((*v)[*n - 1], false))
                FAIL("field '%s' has a name with control characters", what);
            s = c ? c + 1 : s + len;
            if (c && *s == '\0')
                FAIL("field '%s' ends with a comma", what);
        }
        return 0;
    }
    if (!cJSON_IsArray(f))
        FAIL("field '%s' must be an array of strings", what);
    const cJSON *m;
    cJSON_ArrayForEach(m, f)
    {
        if (!cJSON_IsString(m) || !text_ok(m->valuestring, false) || strlen(m->valuestring) > max_len)
            FAIL("field '%s' must be an array of names (strings of 1 to %zu characters)", what, max_len);
        if (*n >= max_n)
            FAIL("field '%s' has more than %zu entries", what, max_n);
        *v = xrealloc(*v, (*n + 1) * sizeof(char *));
        (*v)[(*n)++] = xstrdup(m->valuestring);
    }
    return 0;
}

static int models_field(struct key_patch *p, const cJSON *f, char *err, size_t errsz)
{
    p->set_models = true;
    return names_field(&p->models, &p->nmodels, f, KEY_MAX_MODELS, KEY_TEXT_MAX, err, errsz);
}

static int tags_field(struct key_patch *p, const cJSON *f, char *err, size_t errsz)
{
    p->set_tags = true;
    if (!cJSON_IsObject(f))
        FAIL("field 'tags' must be an object of string values");
    const cJSON *t;
    cJSON_ArrayForEach(t, f)
    {
        if (!cJSON_IsString(t) || !text_ok(t->string, false) || !text_ok(t->valuestring, true) ||
            strchr(t->string, '=') != NULL)
            FAIL("field 'tags' must map names (no '=') to strings of at most %d characters", KEY_TEXT_MAX);
        if (p->ntags >= KEY_MAX_TAGS)
            FAIL("field 'tags' has more than %d entries", KEY_MAX_TAGS);
        for (size_t i = 0; i < p->ntags; i++)
            if (strcmp(p->tags[i].k, t->string) == 0)
                FAIL("field 'tags' names '%s' twice", t->string);
        p->tags = xrealloc(p->tags, (p->ntags + 1) * sizeof(*p->tags));
        p->tags[p->ntags].k = xstrdup(t->string);
        p->tags[p->ntags].v = xstrdup(t->valuestring);
        p->ntags++;
    }
    return 0;
}

#define MAX_LIMIT ((int64_t)1 << 50)
#define MAX_CONCURRENT ((int64_t)1000000) /* slots of one key: the same bound as gateway.admission.queue_size */

static int patch_read(struct key_patch *p, const cJSON *obj, bool create, int64_t now, char *err, size_t errsz)
{
    if (!cJSON_IsObject(obj))
        FAIL("the body must be a JSON object");
    const cJSON *f;
    cJSON_ArrayForEach(f, obj)
    {
        const char *k = f->string;
        if (strcmp(k, "name") == 0) {
            if (text_field(f, &p->name, false, err, errsz))
                return -1;
        } else if (strcmp(k, "user") == 0) {
            if (text_field(f, &p->user, true, err, errsz))
                return -1;
        } else if (strcmp(k, "team") == 0) {
            if (text_field(f, &p->team, true, err, errsz))
                return -1;
        } else if (strcmp(k, "tags") == 0) {
            if (p->set_tags)
                FAIL("field 'tags' given twice");
            if (tags_field(p, f, err, errsz))
                return -1;
        } else if (strcmp(k, "models") == 0) {
            if (p->set_models)
                FAIL("field 'models' given twice");
            if (cJSON_IsNull(f)) {
                p->set_models = true; /* every model */
            } else if (models_field(p, f, err, errsz)) {
                return -1;
            }
        } else if (strcmp(k, "mcp_tools") == 0 || strcmp(k, "mcp_deny") == 0) {
            bool deny = k[4] == 'd';
            bool *set = deny ? &p->set_mcp_deny : &p->set_mcp_tools;
            if (*set)
                FAIL("field '%s' given twice", k);
            *set = true;
            if (!cJSON_IsNull(f) && names_field(deny ? &p->mcp_deny : &p->mcp_tools, deny ? &p->nmcp_deny : &p->nmcp_tools,
                                                f, KEY_MAX_MCP_TOOLS, KEY_MCP_TOOL_MAX, err, errsz))
                return -1;
        } else if (strcmp(k, "expires_at") == 0) {
            if (int_field(f, (int64_t)1 << 40, &p->expires_at, err, errsz))
                return -1;
            p->set_expires = true;
        } else if (strcmp(k, "expires_in") == 0) {
            int64_t d = cJSON_IsString(f) ? key_parse_duration(f->valuestring) : -1;
            if (d <= 0)
                FAIL("field 'expires_in' must be a duration such as \"30d\", \"12h\", \"90m\" (units s, m, h, d, w)");
            if (d > ((int64_t)1 << 40) - now) /* the bound expires_at itself accepts: what is stored reads back */
                FAIL("field 'expires_in' is too far in the future");
            p->expires_at = now + d;
            p->set_expires = true;
        } else if (strcmp(k, "budget_usd") == 0) {
            if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || f->valuedouble < 0 || f->valuedouble > 1e12)
                FAIL("field 'budget_usd' must be a number from 0 (no budget) to 1e12");
            p->budget_usd = f->valuedouble;
            p->set_budget_usd = true;
        } else if (strcmp(k, "budget_window") == 0) {
            int w = -1;
            for (int i = 0; cJSON_IsString(f) && key_window_names[i]; i++)
                if (strcmp(f->valuestring, key_window_names[i]) == 0)
                    w = i;
            if (w < 0)
                FAIL("field 'budget_window' must be one of total, day, week, month");
            p->window = w;
            p->set_window = true;
        } else if (strcmp(k, "budget_tokens") == 0) {
            if (int_field(f, MAX_LIMIT, &p->budget_tokens, err, errsz))
                return -1;
            p->set_budget_tokens = true;
        } else if (strcmp(k, "rpm") == 0) {
            if (int_field(f, MAX_LIMIT, &p->rpm, err, errsz))
                return -1;
            p->set_rpm = true;
        } else if (strcmp(k, "tpm") == 0) {
            if (int_field(f, MAX_LIMIT, &p->tpm, err, errsz))
                return -1;
            p->set_tpm = true;
        } else if (strcmp(k, "max_concurrent") == 0) {
            if (int_field(f, MAX_CONCURRENT, &p->max_concurrent, err, errsz))
                return -1;
            p->set_maxc = true;
        } else if (strcmp(k, "caller_attribution") == 0) {
            if (!cJSON_IsBool(f))
                FAIL("field 'caller_attribution' must be true or false");
            p->attr = cJSON_IsTrue(f);
            p->set_attr = true;
        } else {
            FAIL("unknown field '%s' (allowed: name, user, team, tags, models, expires_at, expires_in, budget_usd, "
                 "budget_window, budget_tokens, rpm, tpm, max_concurrent, caller_attribution, mcp_tools, mcp_deny)",
                 k);
        }
    }
    if (create && p->name == NULL)
        FAIL("field 'name' is required");
    return 0;
}

int key_apply_json(struct key_record *r, const cJSON *obj, bool create, int64_t now, char *err, size_t errsz)
{
    struct key_patch p = {0};
    if (patch_read(&p, obj, create, now, err, errsz) != 0) {
        patch_free(&p);
        return -1;
    }
    if (p.name) {
        xfree(r->name);
        r->name = xstrdup(p.name);
    }
    if (p.user || !r->user) {
        xfree(r->user);
        r->user = dup_or_empty(p.user);
    }
    if (p.team || !r->team) {
        xfree(r->team);
        r->team = dup_or_empty(p.team);
    }
    if (p.set_tags) {
        for (size_t i = 0; i < r->ntags; i++) {
            xfree(r->tags[i].k);
            xfree(r->tags[i].v);
        }
        xfree(r->tags);
        r->tags = p.tags;
        r->ntags = p.ntags;
        p.tags = NULL;
        p.ntags = 0;
    }
    if (p.set_models) {
        for (size_t i = 0; i < r->nmodels; i++)
            xfree(r->models[i]);
        xfree(r->models);
        r->models = p.models;
        r->nmodels = p.nmodels;
        p.models = NULL;
        p.nmodels = 0;
    }
    if (p.set_mcp_tools) {
        for (size_t i = 0; i < r->nmcp_tools; i++)
            xfree(r->mcp_tools[i]);
        xfree(r->mcp_tools);
        r->mcp_tools = p.mcp_tools;
        r->nmcp_tools = p.nmcp_tools;
        p.mcp_tools = NULL;
        p.nmcp_tools = 0;
    }
    if (p.set_mcp_deny) {
        for (size_t i = 0; i < r->nmcp_deny; i++)
            xfree(r->mcp_deny[i]);
        xfree(r->mcp_deny);
        r->mcp_deny = p.mcp_deny;
        r->nmcp_deny = p.nmcp_deny;
        p.mcp_deny = NULL;
        p.nmcp_deny = 0;
    }
    if (p.set_expires)
        r->expires_at = p.expires_at;
    if (p.set_budget_usd)
        r->budget_usd = p.budget_usd;
    if (p.set_window)
        r->budget_window = (enum key_window)p.window;
    if (p.set_budget_tokens)
        r->budget_tokens = p.budget_tokens;
    if (p.set_rpm)
        r->rpm = p.rpm;
    if (p.set_tpm)
        r->tpm = p.tpm;
    if (p.set_maxc)
        r->max_concurrent = p.max_concurrent;
    if (p.set_attr)
        r->caller_attribution = p.attr;
    patch_free(&p);
    return 0;
}

cJSON *key_to_json(const struct key_record *r, int64_t now)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "name", r->name ? r->name : "");
    cJSON_AddStringToObject(o, "user", r->user ? r->user : "");
    cJSON_AddStringToObject(o, "team", r->team ? r->team : "");
    cJSON *tags = cJSON_AddObjectToObject(o, "tags");
    for (size_t i = 0; i < r->ntags; i++)
        cJSON_AddStringToObject(tags, r->tags[i].k, r->tags[i].v);
    if (r->nmodels) {
        cJSON *m = cJSON_AddArrayToObject(o, "models");
        for (size_t i = 0; i < r->nmodels; i++)
            cJSON_AddItemToArray(m, cJSON_CreateString(r->models[i]));
    } else {
        cJSON_AddNullToObject(o, "models");
    }
    cJSON *mt = r->nmcp_tools ? cJSON_AddArrayToObject(o, "mcp_tools") : NULL;
    for (size_t i = 0; i < r->nmcp_tools; i++)
        cJSON_AddItemToArray(mt, cJSON_CreateString(r->mcp_tools[i]));
    if (!mt)
        cJSON_AddNullToObject(o, "mcp_tools");
    cJSON *md = cJSON_AddArrayToObject(o, "mcp_deny");
    for (size_t i = 0; i < r->nmcp_deny; i++)
        cJSON_AddItemToArray(md, cJSON_CreateString(r->mcp_deny[i]));
    cJSON_AddNumberToObject(o, "expires_at", (double)r->expires_at);
    cJSON_AddNumberToObject(o, "budget_usd", r->budget_usd);
    cJSON_AddStringToObject(o, "budget_window", key_window_names[r->budget_window]);
    cJSON_AddNumberToObject(o, "budget_tokens", (double)r->budget_tokens);
    cJSON_AddNumberToObject(o, "rpm", (double)r->rpm);
    cJSON_AddNumberToObject(o, "tpm", (double)r->tpm);
    cJSON_AddNumberToObject(o, "max_concurrent", (double)r->max_concurrent);
    cJSON_AddBoolToObject(o, "caller_attribution", r->caller_attribution);
    cJSON_AddNumberToObject(o, "created_at", (double)r->created_at);
    cJSON_AddNumberToObject(o, "revoked_at", (double)r->revoked_at);
    cJSON_AddStringToObject(o, "status",
                            r->revoked_at ? "revoked" : key_expired(r, now) ? "expired" : "active");
    cJSON_AddStringToObject(o, "hint", r->hint);
    return o;
}
