#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "config/config.h"
#include "config/schema.h"
#include "config/yaml_tree.h"
#include "gateway/gw_config.h"
#include "test.h"

static void test_parsers(void)
{
    int64_t v;
    ok(cfg_parse_size("16KiB", &v) == 0 && v == 16384);
    ok(cfg_parse_size("4MiB", &v) == 0 && v == 4194304);
    ok(cfg_parse_size("1.5GiB", &v) == 0 && v == 1610612736);
    ok(cfg_parse_size("10MB", &v) == 0 && v == 10000000);
    ok(cfg_parse_size("512", &v) == 0 && v == 512);
    ok(cfg_parse_size("12 parsecs", &v) == -1);
    ok(cfg_parse_size("-5", &v) == -1);
    ok(cfg_parse_size("0.5B", &v) == -1); /* fractional bytes */
    ok(cfg_parse_duration_ms("500ms", &v) == 0 && v == 500);
    ok(cfg_parse_duration_ms("30s", &v) == 0 && v == 30000);
    ok(cfg_parse_duration_ms("1.5s", &v) == 0 && v == 1500);
    ok(cfg_parse_duration_ms("2h", &v) == 0 && v == 7200000);
    ok(cfg_parse_duration_ms("0", &v) == 0 && v == 0);
    ok(cfg_parse_duration_ms("10", &v) == -1); /* a unit is required */
    bool b;
    ok(cfg_parse_bool("yes", &b) == 0 && b);
    ok(cfg_parse_bool("off", &b) == 0 && !b);
    ok(cfg_parse_bool("maybe", &b) == -1);
    char host[64];
    int port;
    ok(cfg_parse_addr("127.0.0.1:80", host, sizeof(host), &port) == 0 && port == 80 && strcmp(host, "127.0.0.1") == 0);
    ok(cfg_parse_addr("[::1]:8000", host, sizeof(host), &port) == 0 && port == 8000 && strcmp(host, "::1") == 0);
    ok(cfg_parse_addr(":9", host, sizeof(host), &port) == 0 && strcmp(host, "0.0.0.0") == 0);
    ok(cfg_parse_addr("::1:80", host, sizeof(host), &port) == -1);
    ok(cfg_parse_addr("host:70000", host, sizeof(host), &port) == -1);
    ok(cfg_parse_addr("nohost", host, sizeof(host), &port) == -1);
}

static void test_yaml_positions(void)
{
    struct buf err = BUF_INIT(4096);
    const char *text = "a:\n  b: 1\n  c: [x, y]\n";
    struct ynode *root = yaml_tree_parse(text, strlen(text), &err);
    ok(root != NULL);
    const struct ynode *a = ynode_map_get(root, "a");
    ok(a && a->kind == YNODE_MAP);
    const struct ynode *b = ynode_map_get(a, "b");
    ok(b && b->line == 2 && b->col == 6);
    const struct ynode *c = ynode_map_get(a, "c");
    ok(c && c->kind == YNODE_SEQ && c->nitems == 2);
    ynode_free(root);
    buf_reset(&err);
    ok(yaml_tree_parse("a: *ref\n", 8, &err) == NULL);
    ok(err.data && strstr(err.data, "alias") != NULL);
    buf_reset(&err);
    /* depth bomb */
    char deep[200];
    memset(deep, '[', 100);
    deep[100] = '\0';
    ok(yaml_tree_parse(deep, 100, &err) == NULL);
    buf_reset(&err);
    root = yaml_tree_parse("", 0, &err); /* empty document = empty map */
    ok(root && root->kind == YNODE_MAP && root->nitems == 0);
    ynode_free(root);
    buf_free(&err);
}

static void test_load_and_env(void)
{
    struct buf errs = BUF_INIT(1 << 16);
    char *env[] = {"AGENTD_SERVER_WORKERS=3", "MAX_CONCURRENT_REQUESTS=10", "REQUEST_TIMEOUT_SECONDS=30",
                   "AGENTD_SERVER_TIMEOUTS_IDLE=5s", NULL};
    struct config_flags flags = {0};
    flags.sets[flags.nsets++] = "server.workers=4";
    struct config *c = config_load(&flags, env, &errs);
    ok(c != NULL);
    if (c) {
        is_int(c->server.workers, 4);                      /* flag beats env */
        is_int(c->gateway.max_concurrent_requests, 10);    /* Kubernetes alias */
        is_int(c->gateway.request_timeout_ms, 30000);      /* seconds alias */
        is_int(c->server.idle_timeout_ms, 5000);
        is_int(c->server.max_header_bytes, 16384);         /* default */
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        config_print(&out, c);
        ok(strstr(out.data, "workers: 4\n") != NULL);
        ok(strstr(out.data, "idle: 5s\n") != NULL);
        buf_free(&out);
        config_unref(c);
    }
    char *bad_env[] = {"AGENTD_SERVER_LIMITS_BODY_BYTES=huge", NULL};
    buf_reset(&errs);
    c = config_load(NULL, bad_env, &errs);
    ok(c == NULL);
    ok(errs.data && strstr(errs.data, "environment AGENTD_SERVER_LIMITS_BODY_BYTES") != NULL);
    buf_free(&errs);
}

static void test_publish(void)
{
    struct buf errs = BUF_INIT(4096);
    char *env[] = {NULL};
    struct config *a = config_load(NULL, env, &errs);
    struct config *b = config_load(NULL, env, &errs);
    config_publish(a);
    struct config *got = config_acquire();
    ok(got == a);
    uint64_t gen_a = a->generation;
    config_publish(b); /* a stays alive while `got` holds it */
    ok(got->server.listen != NULL);
    config_unref(got);
    got = config_acquire();
    ok(got == b);
    ok(b->generation == gen_a + 1);
    config_unref(got);
    config_shutdown();
    buf_free(&errs);
}

/* ---- the engine on a module-style schema: a section struct mounted at an offset, relative sub-offsets ---- */

struct t_inner {
    int64_t x;
    char *s;
    struct cfg_strlist l;
};
struct t_outer {
    int64_t a;
    struct t_inner in;
    bool flag;
};

static int t_finish_calls;
static const void *t_finish_obj;
static char t_finish_path[64];
static void t_finish(struct cfg_ctx *ctx, void *obj, const char *path)
{
    (void)ctx;
    t_finish_calls++;
    t_finish_obj = obj;
    snprintf(t_finish_path, sizeof(t_finish_path), "%s", path);
}
static void t_mask(struct buf *out, const char *v)
{
    buf_printf(out, "\"<%zu>\"", strlen(v));
}

#define TIOFF(f) offsetof(struct t_inner, f)
static const struct cfg_field t_inner_fields[] = {
    {.key = "x", .type = CFG_INT, .off = TIOFF(x), .min = 0, .max = 100, .def = "7"},
    {.key = "s", .type = CFG_STRING, .off = TIOFF(s), .def = "dflt", .flags = CFG_RESTART},
    {.key = "l", .type = CFG_STRLIST, .off = TIOFF(l), .mask = t_mask},
};
static const struct cfg_schema t_inner_schema = {
    .name = "in", .fields = t_inner_fields, .nfields = ARRAY_LEN(t_inner_fields), .finish = t_finish};
static const struct cfg_field t_outer_fields[] = {
    {.key = "a", .type = CFG_INT, .off = offsetof(struct t_outer, a), .min = 0, .max = 100, .def = "1"},
    {.key = "in", .type = CFG_MAP, .off = offsetof(struct t_outer, in), .sub = &t_inner_schema},
    {.key = "flag", .type = CFG_BOOL, .off = offsetof(struct t_outer, flag), .def = "false", .flags = CFG_RESTART},
};
static const struct cfg_schema t_outer_schema = {
    .name = "t", .fields = t_outer_fields, .nfields = ARRAY_LEN(t_outer_fields)};

static void test_module_section(void)
{
    struct buf errs = BUF_INIT(1 << 16);
    struct cfg_ctx ctx = {"t.yaml", &errs, 0};
    struct t_outer o = {0};
    cfg_apply_defaults(&t_outer_schema, &o);
    is_int(o.a, 1);
    is_int(o.in.x, 7);
    is_str(o.in.s, "dflt");
    const char *text = "a: 2\nin:\n  x: 3\n  l: [one, three]\n";
    struct ynode *root = yaml_tree_parse(text, strlen(text), &errs);
    ok(root != NULL);
    cfg_read_map(&ctx, &t_outer_schema, &o, root, "");
    ynode_free(root);
    is_int(ctx.nerrors, 0);
    is_int(o.a, 2);
    is_int(o.in.x, 3);
    is_int(o.in.l.n, 2);
    char *env[] = {"AGENTD_IN_X=9", NULL};
    ctx.source = "environment";
    cfg_read_env(&ctx, &t_outer_schema, &o, env);
    is_int(o.in.x, 9);
    ok(cfg_set_path(&ctx, &t_outer_schema, &o, "in.s", "yo") == 0);
    is_str(o.in.s, "yo");
    ok(cfg_set_path(&ctx, &t_outer_schema, &o, "in.x", "101") == -1); /* range checked through the mount */
    ok(errs.data && strstr(errs.data, "in.x: 101 is out of range") != NULL);
    is_int(o.in.x, 9);
    /* errors inside the section carry the file position and the full path */
    buf_reset(&errs);
    ctx.source = "t.yaml";
    root = yaml_tree_parse("in:\n  x: many\n", 14, &errs);
    cfg_read_map(&ctx, &t_outer_schema, &o, root, "");
    ynode_free(root);
    ok(errs.data && strstr(errs.data, "t.yaml:2:6: in.x: 'many' is not an integer") != NULL);

    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    cfg_print(&out, &t_outer_schema, &o, 0);
    ok(strstr(out.data, "a: 2\nin:\n  x: 9\n  s: \"yo\"\n  l: [\"<3>\", \"<5>\"]\nflag: false\n") != NULL);
    buf_free(&out);

    t_finish_calls = 0;
    cfg_finish(&ctx, &t_outer_schema, &o, "");
    is_int(t_finish_calls, 1);
    ok(t_finish_obj == &o.in);
    is_str(t_finish_path, "in");

    /* restart-only fields are found through the mount and copied back; the others keep the new value */
    struct t_outer running = {0};
    cfg_apply_defaults(&t_outer_schema, &running);
    running.flag = true;
    struct buf which = BUF_INIT(4096);
    ok(cfg_keep_restart_fields(&t_outer_schema, &o, &running, &which, ""));
    is_str(which.data, "in.s, flag");
    is_str(o.in.s, "dflt");
    ok(o.in.s != running.in.s); /* a copy: each snapshot frees its own */
    ok(o.flag);
    is_int(o.in.x, 9);
    buf_reset(&which);
    ok(!cfg_keep_restart_fields(&t_outer_schema, &o, &running, &which, ""));
    buf_free(&which);
    cfg_free_obj(&t_outer_schema, &running);
    cfg_free_obj(&t_outer_schema, &o);
    ok(o.in.s == NULL && o.in.l.n == 0);
    buf_free(&errs);
}

/* A reload keeps every CFG_RESTART setting of the running snapshot, named from the schema, not a hand list. */
static void test_keep_restart(void)
{
    struct buf errs = BUF_INIT(1 << 16);
    char *env[] = {NULL};
    struct config_flags fa = {0}, fb = {0};
    fa.sets[fa.nsets++] = "server.listen=127.0.0.1:1001";
    fa.sets[fa.nsets++] = "gateway.upstream_client=curl";
    fa.sets[fa.nsets++] = "server.environment=old";
    fb.sets[fb.nsets++] = "server.listen=127.0.0.1:1002";
    fb.sets[fb.nsets++] = "gateway.upstream_client=native";
    fb.sets[fb.nsets++] = "gateway.ca_file=/etc/ca.pem";
    fb.sets[fb.nsets++] = "server.debug_routes=true";
    fb.sets[fb.nsets++] = "server.workers=5";
    fb.sets[fb.nsets++] = "server.environment=new";
    fb.sets[fb.nsets++] = "server.limits.body_bytes=4KiB";
    struct config *a = config_load(&fa, env, &errs);
    struct config *b = config_load(&fb, env, &errs);
    ok(a && b);
    if (a && b) {
        struct buf which = BUF_INIT(4096);
        ok(config_keep_restart_settings(b, a, &which));
        is_str(which.data, "server.listen, server.workers, server.debug_routes, gateway.upstream_client, "
                           "gateway.ca_file");
        is_str(b->server.listen, "127.0.0.1:1001");
        is_int(b->server.workers, a->server.workers);
        ok(!b->server.debug_routes);
        is_int(b->gateway.upstream_client, CONFIG_UPSTREAM_CURL);
        is_str(b->gateway.ca_file, "");
        is_str(b->server.environment, "new"); /* reloadable settings take the new value */
        is_int(b->server.max_body_bytes, 4096);
        buf_free(&which);
    }
    config_unref(a);
    config_unref(b);
    buf_free(&errs);
}

/* `config print` masks credentials in deployment headers as it does api_key (issue 15 item 4). */
static void test_print_masks_headers(void)
{
    ok(gw_config_header_is_secret("Authorization", 13));
    ok(gw_config_header_is_secret("x-api-key", 9));
    ok(gw_config_header_is_secret("X-Goog-Api-Key", 14));
    ok(gw_config_header_is_secret("Cookie", 6));
    ok(gw_config_header_is_secret("X-Amz-Security-Token", 20));
    ok(gw_config_header_is_secret("X-Client-SECRET", 15));
    ok(gw_config_header_is_secret("X-Db-Password", 13));
    ok(!gw_config_header_is_secret("X-Trace-Id", 10));
    ok(!gw_config_header_is_secret("Accept", 6));
    ok(!gw_config_header_is_secret("X-Trace-Id-Token", 10)); /* only the name's own bytes count */

    struct buf errs = BUF_INIT(1 << 16);
    char *env[] = {NULL};
    struct config_flags flags = {0};
    flags.sets[flags.nsets++] =
        "models=[{name: m, provider: mock, headers: ['Authorization: Bearer sk-live-1', 'x-api-key: k-2', "
        "'Cookie: session=c-3', 'X-Amz-Security-Token: t-4', 'X-Trace: keep-5']}, {name: n, deployments: "
        "[{provider: mock, headers: ['Proxy-Authorization: Basic p-6', 'X-Db-Password: pw-7']}]}]";
    struct config *c = config_load(&flags, env, &errs);
    ok(c != NULL);
    if (c) {
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        config_print(&out, c);
        static const char *const secrets[] = {"sk-live-1", "k-2", "c-3", "t-4", "p-6", "pw-7"};
        for (size_t i = 0; i < ARRAY_LEN(secrets); i++)
            if (!ok(strstr(out.data, secrets[i]) == NULL))
                printf("#   %s printed\n", secrets[i]);
        ok(strstr(out.data, "headers: [\"Authorization: ***\", \"x-api-key: ***\", \"Cookie: ***\", "
                            "\"X-Amz-Security-Token: ***\", \"X-Trace: keep-5\"]") != NULL);
        ok(strstr(out.data, "headers: [\"Proxy-Authorization: ***\", \"X-Db-Password: ***\"]") != NULL);
        buf_free(&out);
        config_unref(c);
    }
    buf_free(&errs);
}

int main(void)
{
    subtest("value parsers", test_parsers);
    subtest("yaml positions and limits", test_yaml_positions);
    subtest("load, env, flags", test_load_and_env);
    subtest("publish/acquire", test_publish);
    subtest("a module's section at an offset", test_module_section);
    subtest("reload keeps restart-only settings", test_keep_restart);
    subtest("config print masks secret headers", test_print_masks_headers);
    return done_testing();
}
