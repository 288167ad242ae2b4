#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "config/config.h"
#include "config/schema.h"
#include "config/yaml_tree.h"
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

int main(void)
{
    subtest("value parsers", test_parsers);
    subtest("yaml positions and limits", test_yaml_positions);
    subtest("load, env, flags", test_load_and_env);
    subtest("publish/acquire", test_publish);
    return done_testing();
}
