/* test_mcp_stdio.c: the MCP client's one-request API (mcp_request_start, for the MCP gateway) over a stdio server,
 * with a real loop and a real process: a /bin/sh script that plays the server's side of the wire exactly
 * (initialize answered with id 1, notifications/initialized, then the request with id 2, a ping of its own
 * first) and writes every line it reads to a file, so the test sees what agentd sent: the handshake, the
 * server's ping answered, the request, a cancelled request followed by notifications/cancelled, a server that
 * exits before initialize (the request fails at once), one that closes its stdout but stays (killed), and the
 * processes stopped when the loop is done. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_config.h"
#include "agent/mcp_client.h"
#include "common/alloc.h"
#include "test.h"

struct got {
    int calls, ok;
    bool rpc_error;
    char text[512];
};

static void on_answer(void *ud, int ok_, const cJSON *result, bool rpc_error, int64_t code, const char *message)
{
    (void)code;
    struct got *g = ud;
    g->calls++;
    g->ok = ok_;
    g->rpc_error = rpc_error;
    if (result) {
        char *s = cJSON_PrintUnformatted(result);
        snprintf(g->text, sizeof(g->text), "%s", s);
        cJSON_free(s);
    } else {
        snprintf(g->text, sizeof(g->text), "%s", message ? message : "");
    }
}

static void run_until(uv_loop_t *loop, const int *flag)
{
    for (int i = 0; i < 2000 && *flag == 0; i++)
        uv_run(loop, UV_RUN_ONCE);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return xstrdup("");
    static char b[8192];
    size_t n = fread(b, 1, sizeof(b) - 1, f);
    fclose(f);
    b[n] = '\0';
    return xstrdup(b);
}

static char *script_args[2];
static struct agent_mcp_server server(const char *script)
{
    struct agent_mcp_server s;
    memset(&s, 0, sizeof(s));
    s.name = (char *)"sh";
    s.command = (char *)"/bin/sh";
    script_args[0] = (char *)"-c";
    script_args[1] = (char *)script;
    s.args.v = script_args;
    s.args.n = 2;
    s.timeout_ms = 5000;
    return s;
}

static char logpath[64];

static void test_request(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char script[1024];
    snprintf(script, sizeof(script),
             "exec 2>/dev/null; log=%s\n"
             "read l; echo \"$l\" >> $log\n"
             "echo '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{}}}'\n"
             "read l; echo \"$l\" >> $log\n"
             "echo '{\"jsonrpc\":\"2.0\",\"id\":\"p1\",\"method\":\"ping\"}'\n"
             "read l; echo \"$l\" >> $log\n" /* the ping's answer or the request, whichever came first */
             "read l; echo \"$l\" >> $log\n"
             "echo 'not json: a server that logs on stdout'\n"
             "echo '{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"x\"}]}}'\n"
             "read l; echo \"$l\" >> $log\n" /* request 3, never answered */
             "read l; echo \"$l\" >> $log\n" /* its notifications/cancelled */
             "while read l; do echo \"$l\" >> $log; done\n",
             logpath);
    struct agent_mcp_server srv = server(script);
    struct got g = {0};
    struct mcp_request *r = mcp_request_start(&loop, &srv, "tools/list", NULL, on_answer, &g);
    ok(r != NULL);
    is_int(g.calls, 0); /* never from inside the call */
    run_until(&loop, &g.calls);
    is_int(g.calls, 1);
    is_int(g.ok, 1);
    is_str(g.text, "{\"tools\":[{\"name\":\"x\"}]}");

    /* a request cancelled while the server holds it: the server is told */
    struct got g2 = {0};
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", "slow");
    struct mcp_request *r2 = mcp_request_start(&loop, &srv, "tools/call", p, on_answer, &g2);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    mcp_request_cancel(r2);
    int seen = 0;
    for (int i = 0; i < 400 && !seen; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        char *log = slurp(logpath);
        seen = strstr(log, "notifications/cancelled") != NULL;
        xfree(log);
        if (!seen)
            usleep(5000);
    }
    ok(seen);
    is_int(g2.calls, 0);
    char *log = slurp(logpath);
    ok(strstr(log, "\"method\":\"initialize\"") != NULL);
    ok(strstr(log, "\"protocolVersion\":\"2025-11-25\"") != NULL);
    ok(strstr(log, "notifications/initialized") != NULL);
    ok(strstr(log, "{\"jsonrpc\":\"2.0\",\"id\":\"p1\",\"result\":{}}") != NULL); /* its ping answered */
    ok(strstr(log, "\"id\":2,\"method\":\"tools/list\"") != NULL);
    ok(strstr(log, "\"id\":3,\"method\":\"tools/call\"") != NULL);
    ok(strstr(log, "\"requestId\":3") != NULL);
    xfree(log);

    mcp_loop_done(); /* stdin closed, SIGTERM: the loop ends once the process is gone */
    is_int(uv_run(&loop, UV_RUN_DEFAULT), 0);
    is_int(uv_loop_close(&loop), 0);
}

static void test_dies_before_initialize(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct agent_mcp_server srv = server("exit 7");
    struct got g = {0};
    mcp_request_start(&loop, &srv, "tools/list", NULL, on_answer, &g);
    run_until(&loop, &g.calls);
    is_int(g.calls, 1);
    is_int(g.ok, 0);
    ok(strstr(g.text, "exited (status 7) before it answered initialize") != NULL);
    /* while it is down after a failed start, a request fails at once (not after its timeout) */
    struct got g2 = {0};
    mcp_request_start(&loop, &srv, "tools/list", NULL, on_answer, &g2);
    run_until(&loop, &g2.calls);
    is_int(g2.ok, 0);
    ok(strstr(g2.text, "before it answered initialize") != NULL);
    mcp_loop_done();
    is_int(uv_run(&loop, UV_RUN_DEFAULT), 0);
    is_int(uv_loop_close(&loop), 0);
}

static void test_closes_stdout(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct agent_mcp_server srv = server("exec >&-; exec sleep 30"); /* alive, but it can never answer */
    struct got g = {0};
    mcp_request_start(&loop, &srv, "tools/list", NULL, on_answer, &g);
    run_until(&loop, &g.calls);
    is_int(g.calls, 1);
    is_int(g.ok, 0);
    ok(strstr(g.text, "exited (signal 9) before it answered initialize") != NULL);
    mcp_loop_done();
    is_int(uv_run(&loop, UV_RUN_DEFAULT), 0);
    is_int(uv_loop_close(&loop), 0);
}

/* mcp_loop_done ends the client on its thread for good (a worker loop's end): each subtest has its own thread. */
struct body {
    void (*fn)(void);
};

static void *thread_main(void *arg)
{
    ((struct body *)arg)->fn();
    return NULL;
}

static void on_own_thread(void (*fn)(void))
{
    struct body b = {fn};
    pthread_t t;
    pthread_create(&t, NULL, thread_main, &b);
    pthread_join(t, NULL);
}

static void request_thread(void)
{
    on_own_thread(test_request);
}

static void dies_thread(void)
{
    on_own_thread(test_dies_before_initialize);
}

static void stdout_thread(void)
{
    on_own_thread(test_closes_stdout);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as in agentd: a write to a server that has exited is an error, not a signal */
    snprintf(logpath, sizeof(logpath), "/tmp/agentd-test-mcp-stdio-%d.log", (int)getpid());
    unlink(logpath);
    subtest("a request over stdio, a cancel", request_thread);
    subtest("a server that exits before initialize", dies_thread);
    subtest("a server that closes its stdout is killed 2 s later", stdout_thread);
    unlink(logpath);
    return done_testing();
}
