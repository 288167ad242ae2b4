/* test_run.c: the agent run loop on a real libuv loop with no socket: the mock's scripts drive whole runs through
 * the spine (ex_submit with the run's in-process sink), the store is SQLite in memory. Parallel tool calls, the
 * tool results reaching the model, limits, cancel, tool timeouts; the run request parser, the JSON Schema subset,
 * the store's round trip. Every wait is on the run's end (its finished callback), never a sleep. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "agent/run.h"
#include "agent/tools.h"
#include "common/netaddr.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/gw_config.h"
#include "gateway/registry.h"
#include "store/agent_store.h"
#include "telemetry/metrics.h"
#include "test.h"

static uv_loop_t loop;
static struct gateway_worker *gw;
static struct config *cfg;

static struct config *load_config(void)
{
    char path[] = "/tmp/agentd-test-run-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    static const char yaml[] = "agents:\n"
                               "  - name: calc\n"
                               "    model: mock\n"
                               "    instructions: be brief\n"
                               "    tools: [echo, wait]\n"
                               "  - name: short\n"
                               "    model: mock\n"
                               "    tools: [echo, wait]\n"
                               "    limits: {max_steps: 2, tool_timeout: 50ms}\n";
    if (write(fd, yaml, sizeof(yaml) - 1) != (ssize_t)(sizeof(yaml) - 1)) {
        close(fd);
        unlink(path);
        return NULL;
    }
    close(fd);
    struct config_flags flags = {0};
    flags.config_path = path;
    char *env[] = {NULL};
    struct buf errs = BUF_INIT(1 << 16);
    struct config *c = config_load(&flags, env, &errs);
    if (c == NULL)
        printf("# config: %.*s\n", (int)errs.len, errs.data ? errs.data : "");
    else
        registry_attach(c, env, &errs);
    buf_free(&errs);
    unlink(path);
    return c;
}

struct done {
    int calls;
    char id[RUN_ID_MAX];
};

static void on_finished(void *ud, const char *id)
{
    struct done *d = ud;
    d->calls++;
    snprintf(d->id, sizeof(d->id), "%s", id);
}

/* Starts a run of agent with input text; returns 0 and fills id. */
static int start(const char *agent, const char *input, struct done *d, char id[RUN_ID_MAX])
{
    struct config_agent def;
    if (!agents_lookup(cfg, agent, &def))
        return -1;
    struct run_request rq = {.messages = cJSON_CreateArray()};
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", input);
    cJSON_AddItemToArray(rq.messages, m);
    int status = 0;
    char msg[256];
    int rc = run_start(&loop, gw, cfg, &def, &rq, NULL, STR_NULL, id, on_finished, d, false, &status, msg,
                       sizeof(msg));
    if (rc != 0)
        printf("# run_start: %d %s\n", status, msg);
    run_request_free(&rq);
    agent_def_free(&def);
    return rc;
}

static void run_until(struct done *d)
{
    while (d->calls == 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
}

/* The run's row and steps from the store. */
static int load(const char *id, struct as_run *r, struct as_step **steps, size_t *n)
{
    char err[256];
    if (agent_store_get(agents_store(), id, r, err, sizeof(err)) != 0)
        return -1;
    return agent_store_steps(agents_store(), id, steps, n, err, sizeof(err));
}

static void free_loaded(struct as_run *r, struct as_step *steps, size_t n)
{
    as_run_free(r);
    for (size_t i = 0; i < n; i++)
        as_step_free(&steps[i]);
    free(steps);
}

static void test_multi_step(void)
{
    struct done d = {0};
    char id[RUN_ID_MAX];
    ok(start("calc", "CALL echo {\"text\":\"a\",\"delay_ms\":30} CALL echo {\"text\":\"b\",\"delay_ms\":30}\n---\n"
                     "CALL echo {\"text\":\"c\"}\n---\nthe end",
             &d, id) == 0);
    run_until(&d);
    is_int(d.calls, 1);
    is_str(d.id, id);
    struct as_run r;
    struct as_step *steps = NULL;
    size_t n = 0;
    ok(load(id, &r, &steps, &n) == 0);
    is_str(r.status, "succeeded");
    is_str(r.output, "the end");
    is_int(r.steps, 3);
    is_str(r.workflow, "calc");
    ok(r.input_tokens > 0 && r.output_tokens > 0);
    is_int(n, 6); /* llm, tool, tool, llm, tool, llm */
    if (n == 6) {
        is_str(steps[0].kind, "llm");
        is_str(steps[1].state, "ok");
        is_str(steps[1].result, "a");
        is_str(steps[2].result, "b");
        /* both calls of the first step ran at once */
        ok(steps[1].t_start_ms < steps[2].t_end_ms && steps[2].t_start_ms < steps[1].t_end_ms);
        is_str(steps[4].result, "c");
        ok(steps[0].request == NULL); /* an LLM step's request is kept for audit, not read back */
        is_str(steps[1].request, "{\"text\":\"a\",\"delay_ms\":30}");
    }
    /* the conversation the model saw: every tool result, in call order, after its step */
    const char *m = r.messages;
    const char *ra = strstr(m, "{\"role\":\"tool\",\"tool_call_id\":");
    ok(ra != NULL && strstr(m, "\"content\":\"a\"}") < strstr(m, "\"content\":\"b\"}"));
    ok(strstr(m, "\"content\":\"c\"}") != NULL);
    ok(strstr(m, "\"role\":\"system\"") == NULL); /* the instructions are sent with each step, not stored */
    free_loaded(&r, steps, n);
    is_int(runs_active(), 0);
}

static void test_limits_and_timeouts(void)
{
    struct done d = {0};
    char id[RUN_ID_MAX];
    ok(start("short", "CALL echo {\"text\":\"1\"}\n---\nCALL echo {\"text\":\"2\"}\n---\nend", &d, id) == 0);
    run_until(&d);
    struct as_run r;
    struct as_step *steps = NULL;
    size_t n = 0;
    ok(load(id, &r, &steps, &n) == 0);
    is_str(r.status, "limit_exceeded");
    is_str(r.limit_name, "max_steps");
    is_int(r.steps, 2);
    free_loaded(&r, steps, n);

    /* a tool past its timeout: the model is told, the run goes on */
    memset(&d, 0, sizeof(d));
    ok(start("short", "CALL wait {\"ms\":5000}\n---\nafter", &d, id) == 0);
    run_until(&d);
    ok(load(id, &r, &steps, &n) == 0);
    is_str(r.status, "succeeded");
    is_str(r.output, "after");
    ok(n >= 2 && strcmp(steps[1].state, "timeout") == 0);
    free_loaded(&r, steps, n);
}

static void test_cancel(void)
{
    struct done d = {0};
    char id[RUN_ID_MAX];
    ok(start("calc", "CALL wait {\"ms\":60000}\n---\nnever", &d, id) == 0);
    /* turn the loop until the tool is running (its start is committed first) */
    for (int i = 0; i < 1000 && d.calls == 0; i++) {
        uv_run(&loop, UV_RUN_ONCE);
        struct as_run r;
        struct as_step *steps = NULL;
        size_t n = 0;
        bool running = load(id, &r, &steps, &n) == 0 && n >= 2 && strcmp(steps[1].state, "started") == 0;
        free_loaded(&r, steps, n);
        if (running)
            break;
    }
    is_int(run_cancel(id), 0);
    run_until(&d);
    struct as_run r;
    struct as_step *steps = NULL;
    size_t n = 0;
    ok(load(id, &r, &steps, &n) == 0);
    is_str(r.status, "cancelled");
    ok(n >= 2 && strcmp(steps[1].state, "cancelled") == 0);
    free_loaded(&r, steps, n);
    is_int(run_cancel(id), 1); /* no longer live */
}

static void test_request_parse(void)
{
    struct run_request rq;
    char msg[256], param[64];
    ok(run_request_parse("{\"input\":\"hi\",\"wait\":true}", 27, &rq, msg, sizeof(msg), param, sizeof(param)) == 0);
    ok(rq.wait);
    is_int(cJSON_GetArraySize(rq.messages), 1);
    run_request_free(&rq);
    static const struct {
        const char *body, *param;
    } bad[] = {
        {"", ""},
        {"[]", ""},
        {"{\"input\":5}", "input"},
        {"{\"input\":\"\"}", "input"},
        {"{\"input\":\"x\",\"other\":1}", "other"},
        {"{\"input\":\"x\",\"wait\":1}", "wait"},
        {"{\"input\":[]}", "input"},
        {"{\"input\":[{\"role\":\"assistant\",\"content\":\"x\"}]}", "input"},
        {"{\"input\":[{\"role\":\"user\",\"content\":\"x\",\"extra\":1}]}", "input"},
        {"{\"input\":\"x\",\"metadata\":[]}", "metadata"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = run_request_parse(bad[i].body, strlen(bad[i].body), &rq, msg, sizeof(msg), param, sizeof(param));
        if (!ok(rc == -1))
            printf("#   accepted %s\n", bad[i].body);
        is_str(param, bad[i].param);
        ok(rq.messages == NULL);
    }
}

static void test_schema(void)
{
    cJSON *s = cJSON_Parse("{\"type\":\"object\",\"required\":[\"a\"],\"properties\":{\"a\":{\"type\":\"integer\"},"
                           "\"b\":{\"type\":\"array\",\"items\":{\"enum\":[\"x\",\"y\"]}}}}");
    char why[200];
    static const struct {
        const char *v;
        bool good;
    } cases[] = {
        {"{\"a\":1}", true},          {"{\"a\":1,\"b\":[\"x\",\"y\"]}", true}, {"{\"a\":1.5}", false},
        {"{\"b\":[]}", false},        {"{\"a\":1,\"b\":[\"z\"]}", false},       {"[1]", false},
        {"{\"a\":2,\"c\":{}}", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *v = cJSON_Parse(cases[i].v);
        json_schema_check(s, v, why, sizeof(why));
        if (!ok((why[0] == '\0') == cases[i].good))
            printf("#   %s: '%s'\n", cases[i].v, why);
        cJSON_Delete(v);
    }
    cJSON_Delete(s);
}

static bool pub(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &a->sin6_addr);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &a->sin_addr);
    }
    return netaddr_public((struct sockaddr *)&ss);
}

static void test_addresses(void)
{
    static const char *const refused[] = {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                                          "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
                                          "::1", "::", "fe80::1", "fc00::1", "fd12::1", "::ffff:127.0.0.1",
                                          "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "ff02::1", "2001:db8::1"};
    static const char *const allowed[] = {"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111",
                                          "::ffff:8.8.8.8", "64:ff9b::808:808"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (!ok(!pub(refused[i])))
            printf("#   %s counted public\n", refused[i]);
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (!ok(pub(allowed[i])))
            printf("#   %s counted private\n", allowed[i]);
}

int main(void)
{
    uv_loop_init(&loop);
    ex_global_init();
    cfg = load_config();
    if (!ok(cfg != NULL))
        return done_testing();
    char err[256];
    if (!ok(agents_start(NULL, true, err, sizeof(err)) == 0)) {
        printf("# %s\n", err);
        return done_testing();
    }
    gw = ex_worker_new(&loop, gw_config_up_options(cfg));
    subtest("a multi-step run with parallel tool calls", test_multi_step);
    subtest("limits and tool timeouts", test_limits_and_timeouts);
    subtest("cancel mid-step", test_cancel);
    subtest("run request", test_request_parse);
    subtest("output schema", test_schema);
    subtest("http_fetch addresses", test_addresses);
    ex_worker_free(gw);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    uv_loop_close(&loop);
    agents_stop();
    config_unref(cfg);
    ex_global_cleanup();
    metrics_shutdown();
    return done_testing();
}
