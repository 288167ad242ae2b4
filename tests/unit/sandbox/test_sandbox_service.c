/* The sandbox service (sandbox/service.h): the POST /v1/sandbox/runs body (always), and, where the host can make
 * namespaces, admission on a zygote pool: a full queue refuses, queued jobs run later from their own copy of the
 * spec, cancelling a queued job delivers KILLED, closing the loop ends everything, the uid slice of a loop. */
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "sandbox/sbx_remote.h"
#include "sandbox/service.h"
#include "test.h"

/* ---- the request body ---- */

static int parse(const char *body, struct sbx_json_spec *js, char *param, struct buf *err)
{
    buf_reset(err);
    return sbx_service_parse_request(body, strlen(body), js, err, param, 64);
}

static void expect_bad(const char *body, const char *want_param, const char *want_in_msg)
{
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(1024);
    char param[64];
    int rc = parse(body, &js, param, &err);
    if (!is_int(rc, SBX_SVC_INVALID))
        printf("#   body: %s\n", body);
    if (!is_str(param, want_param))
        printf("#   body: %s (message: %s)\n", body, err.data ? err.data : "");
    if (want_in_msg && !ok(err.data && strstr(err.data, want_in_msg)))
        printf("#   message: %s\n", err.data ? err.data : "(none)");
    sbx_json_spec_free(&js);
    buf_free(&err);
}

static void test_parse_good(void)
{
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(1024);
    char param[64];
    ok(parse("{\"language\":\"python\",\"code\":\"print(1)\",\"stdin\":\"in\",\"network\":\"none\","
             "\"files\":[{\"name\":\"a.csv\",\"content\":\"1,2\"}],\"env\":{\"K\":\"v\"},"
             "\"limits\":{\"timeout_ms\":1500,\"memory_mb\":64,\"stdout_max\":100}}",
             &js, param, &err) == SBX_SVC_OK);
    is_int(js.spec.lang, SBX_LANG_PYTHON);
    is_str(js.spec.code, "print(1)");
    is_int(js.spec.stdin_len, 2);
    is_int(js.spec.nfiles, 1);
    is_str(js.spec.files[0].name, "a.csv");
    is_int(js.spec.envc, 1);
    is_str(js.spec.env[0], "K=v");
    is_int(js.spec.limits.wall_ms, 1500);
    is_int(js.spec.limits.memory_bytes, 64 << 20);
    is_int(js.spec.limits.stdout_max, 100);
    sbx_json_spec_free(&js);

    ok(parse("{\"command\":[\"/bin/echo\",\"hi\"],\"timeout_s\":2,\"network\":false}", &js, param, &err) == SBX_SVC_OK);
    is_int(js.spec.lang, SBX_LANG_NONE);
    is_int(js.spec.argc, 2);
    is_str(js.spec.argv[0], "/bin/echo");
    is_int(js.spec.limits.wall_ms, 2000);
    sbx_json_spec_free(&js);

    ok(parse("{\"language\":\"sh\",\"args\":[\"-c\",\"echo x\"]}", &js, param, &err) == SBX_SVC_OK);
    is_int(js.spec.lang, SBX_LANG_SH);
    is_int(js.spec.argc, 2);
    sbx_json_spec_free(&js);
    buf_free(&err);
}

static void test_parse_bad(void)
{
    expect_bad("", "", "JSON object");
    expect_bad("[1]", "", "JSON object");
    expect_bad("{\"language\":\"cobol\",\"code\":\"x\"}", "language", "unknown language \"cobol\"");
    expect_bad("{\"language\":7,\"code\":\"x\"}", "language", "unknown language");
    expect_bad("{\"code\":\"print(1)\"}", "language", "needs a language");
    expect_bad("{}", "", "give language and code, or command");
    expect_bad("{\"language\":\"python\"}", "code", "needs code");
    expect_bad("{\"language\":\"python\",\"code\":1}", "code", "must be a string");
    expect_bad("{\"language\":\"sh\",\"code\":\"x\",\"command\":[\"/bin/true\"]}", "command", "not both");
    expect_bad("{\"command\":[]}", "command", "non-empty array");
    expect_bad("{\"command\":[\"/bin/true\",3]}", "command", "array of strings");
    expect_bad("{\"command\":[\"/bin/true\"],\"args\":[\"x\"]}", "args", "command takes no args");
    expect_bad("{\"args\":[\"x\"]}", "args", "args go with language");
    expect_bad("{\"language\":\"sh\",\"code\":\"echo\",\"args\":[\"x\"]}", "args", "give code or args");
    expect_bad("{\"command\":[\"/bin/true\"],\"network\":\"host\"}", "network", "none");
    expect_bad("{\"command\":[\"/bin/true\"],\"nework\":\"none\"}", "nework", "unknown field \"nework\"");
    expect_bad("{\"language\":\"sh\",\"language\":\"sh\",\"code\":\"x\"}", "language", "twice");
    expect_bad("{\"command\":[\"/bin/true\"],\"limits\":{\"memroy_mb\":1}}", "limits", "memroy_mb");
    expect_bad("{\"command\":[\"/bin/true\"],\"limits\":{\"timeout_ms\":-1}}", "limits", NULL);
    expect_bad("{\"command\":[\"/bin/true\"],\"limits\":{\"timeout_ms\":1,\"wall_ms\":1}}", "limits.timeout_ms",
               "not both");
    expect_bad("{\"command\":[\"/bin/true\"],\"limits\":3}", "limits", "object");
    expect_bad("{\"command\":[\"/bin/true\"],\"files\":[{\"name\":\"../x\",\"content\":\"\"}]}", "files", NULL);
    expect_bad("{\"command\":[\"/bin/true\"],\"stdin_base64\":\"***\"}", "stdin", "base64");
}

static void test_parse_ceilings(void)
{
    /* the service's ceilings, as the daemon sets them from sandbox.service */
    struct sbx_service_opts o;
    sbx_service_opts_init(&o);
    o.max_code_bytes = 16;
    o.ceiling.wall_ms = 5000;
    o.ceiling.stdout_max = 1000;
    o.defaults.wall_ms = 1234;
    struct buf err = BUF_INIT(512);
    ok(sbx_service_start(&o, &err) == 0);
    expect_bad("{\"language\":\"sh\",\"code\":\"echo 0123456789abcdef\"}", "code", "ceiling of 16");
    expect_bad("{\"command\":[\"/bin/true\"],\"limits\":{\"timeout_ms\":5001}}", "limits.wall_ms", "ceiling of 5000");
    expect_bad("{\"command\":[\"/bin/true\"],\"limits\":{\"stdout_max\":1001}}", "limits.stdout_max", NULL);
    struct sbx_json_spec js;
    char param[64];
    ok(parse("{\"language\":\"sh\",\"code\":\"echo 0123456789\"}", &js, param, &err) == SBX_SVC_OK);
    is_int(js.spec.limits.wall_ms, 1234); /* the service's default, not the sandbox's */
    sbx_json_spec_free(&js);
    sbx_service_stop();
    buf_free(&err);
}

/* CPU time of this thread: a loaded machine preempts the test, which wall-clock time would count. */
static double thread_cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The parser walks the body once: a body twice as large takes about twice as long (generous ratio). */
static double parse_seconds(size_t n)
{
    struct buf body = BUF_INIT(BUF_UNBOUNDED);
    (void)buf_append_str(&body, "{\"language\":\"python\",\"code\":\"");
    for (size_t i = 0; i < n; i++)
        (void)buf_append_str(&body, "\\\"x");
    (void)buf_append_str(&body, "\"}");
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        struct sbx_json_spec js;
        struct buf err = BUF_INIT(512);
        char param[64];
        double t0 = thread_cpu_seconds();
        int rc = sbx_service_parse_request(body.data, body.len, &js, &err, param, sizeof(param));
        double s = thread_cpu_seconds() - t0;
        ok(rc == SBX_SVC_OK);
        best = s < best ? s : best;
        sbx_json_spec_free(&js);
        buf_free(&err);
    }
    buf_free(&body);
    return best;
}

static void test_parse_linear(void)
{
    double a = parse_seconds(100000), b = parse_seconds(400000);
    if (!ok(b < a * 12 + 0.05))
        printf("#   100k: %.4fs, 400k: %.4fs\n", a, b);
}

/* The CLI's --daemon writes a spec as a request body: it reads back the same. */
static void test_request_json(void)
{
    static const char *const args[] = {"-c", "print(1)"};
    static const char *const env[] = {"K=v w"};
    static const char bin[] = {'\0', '\xff', 'x'};
    struct sbx_file f = {.name = "b.bin", .data = bin, .len = sizeof(bin), .mode = 0755};
    struct sbx_spec s;
    sbx_spec_init(&s);
    s.lang = SBX_LANG_PYTHON;
    s.argv = args;
    s.argc = 2;
    s.env = env;
    s.envc = 1;
    s.files = &f;
    s.nfiles = 1;
    s.stdin_data = bin;
    s.stdin_len = sizeof(bin);
    s.limits.wall_ms = 2500;
    s.limits.pids = 9;
    struct buf out = BUF_INIT(BUF_UNBOUNDED), err = BUF_INIT(512);
    ok(sbx_service_request_json(&s, &out, &err) == 0);
    ok(strstr(out.data, "\"memory_bytes\"") == NULL); /* defaults are left to the daemon */
    struct sbx_json_spec js;
    char param[64];
    if (!ok(sbx_service_parse_request(out.data, out.len, &js, &err, param, sizeof(param)) == SBX_SVC_OK))
        printf("#   %s: %s\n", out.data, err.data);
    is_int(js.spec.lang, SBX_LANG_PYTHON);
    is_int(js.spec.argc, 2);
    is_str(js.spec.argv[1], "print(1)");
    is_str(js.spec.env[0], "K=v w");
    is_int(js.spec.nfiles, 1);
    ok(js.spec.files[0].len == 3 && memcmp(js.spec.files[0].data, bin, 3) == 0);
    is_int(js.spec.files[0].mode, 0755);
    ok(js.spec.stdin_len == 3 && memcmp(js.spec.stdin_data, bin, 3) == 0);
    is_int(js.spec.limits.wall_ms, 2500);
    is_int(js.spec.limits.pids, 9);
    sbx_json_spec_free(&js);
    /* a snippet with a NUL cannot travel as a JSON string */
    struct sbx_spec c;
    sbx_spec_init(&c);
    c.lang = SBX_LANG_SH;
    c.code = "a\0b";
    c.code_len = 3;
    buf_reset(&out);
    ok(sbx_service_request_json(&c, &out, &err) == -1);
    buf_free(&out);
    buf_free(&err);
}

static void test_remote_url(void)
{
    char host[64], prefix[64];
    int port;
    ok(sbx_remote_parse_url("http://127.0.0.1:8000", host, sizeof(host), &port, prefix, sizeof(prefix)) == 0);
    is_str(host, "127.0.0.1");
    is_int(port, 8000);
    is_str(prefix, "");
    ok(sbx_remote_parse_url("http://agentd.svc/base/", host, sizeof(host), &port, prefix, sizeof(prefix)) == 0);
    is_str(host, "agentd.svc");
    is_int(port, 80);
    is_str(prefix, "/base");
    ok(sbx_remote_parse_url("http://[::1]:9/", host, sizeof(host), &port, prefix, sizeof(prefix)) == 0);
    is_str(host, "::1");
    is_int(port, 9);
    ok(sbx_remote_parse_url("https://x", host, sizeof(host), &port, prefix, sizeof(prefix)) == -1);
    ok(sbx_remote_parse_url("http://x:0", host, sizeof(host), &port, prefix, sizeof(prefix)) == -1);
    ok(sbx_remote_parse_url("http://x:70000", host, sizeof(host), &port, prefix, sizeof(prefix)) == -1);
    ok(sbx_remote_parse_url("http://:80", host, sizeof(host), &port, prefix, sizeof(prefix)) == -1);
    ok(sbx_remote_parse_url("http://[::1", host, sizeof(host), &port, prefix, sizeof(prefix)) == -1);
}

/* ---- the service on a zygote pool ---- */

static uv_loop_t loop;

struct got {
    bool done;
    int order;
    struct sbx_result res;
    uint64_t queue_us;
};
static int finished;

static void on_done(struct sbx_service_job *job, struct sbx_result *res, uint64_t queue_us, void *ud)
{
    (void)job;
    struct got *g = ud;
    g->res = *res;
    buf_init(&res->out, 0); /* take the buffers */
    buf_init(&res->err, 0);
    g->queue_us = queue_us;
    g->order = ++finished;
    g->done = true;
}

static void wait_all(struct got *g, int n)
{
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++)
            left += !g[i].done;
        if (left == 0 || uv_run(&loop, UV_RUN_ONCE) == 0)
            break;
    }
}

static void test_admission(void)
{
    struct buf err = BUF_INIT(512);
    static const char *const sleep_[] = {"/bin/sleep", "0.3"};
    struct sbx_spec s;
    sbx_service_spec_init(&s);
    s.argv = sleep_;
    s.argc = 2;
    struct got g[4];
    memset(g, 0, sizeof(g));
    finished = 0;
    struct sbx_service_job *job[4];
    /* one running, one queued, the third refused */
    ok(sbx_service_submit(&loop, &s, on_done, &g[0], &job[0], &err) == SBX_SVC_OK);

    /* the queued job's spec comes from buffers the caller reuses at once: it must run from its own copy */
    char code[64], in[16], fname[16], fdata[16], env[16];
    strcpy(code, "cat; cat data.txt; echo $K");
    strcpy(in, "stdin;");
    strcpy(fname, "data.txt");
    strcpy(fdata, "file;");
    strcpy(env, "K=env");
    const char *envv[] = {env};
    struct sbx_file f = {.name = fname, .data = fdata, .len = strlen(fdata)};
    struct sbx_spec q;
    sbx_service_spec_init(&q);
    q.lang = SBX_LANG_SH;
    q.code = code;
    q.code_len = strlen(code);
    q.stdin_data = in;
    q.stdin_len = strlen(in);
    q.files = &f;
    q.nfiles = 1;
    q.env = envv;
    q.envc = 1;
    ok(sbx_service_submit(&loop, &q, on_done, &g[1], &job[1], &err) == SBX_SVC_OK);
    memset(code, 'X', sizeof(code) - 1);
    memset(in, 'X', sizeof(in) - 1);
    memset(fname, 'X', sizeof(fname) - 1);
    memset(fdata, 'X', sizeof(fdata) - 1);
    memset(env, 'X', sizeof(env) - 1);

    struct sbx_service_stats st;
    sbx_service_stats(&loop, &st);
    is_int(st.running, 1);
    is_int(st.queued, 1);
    buf_reset(&err);
    ok(sbx_service_submit(&loop, &s, on_done, &g[2], &job[2], &err) == SBX_SVC_BUSY);
    ok(err.data && strstr(err.data, "busy"));
    /* over a ceiling: refused before it takes a slot */
    struct sbx_spec big = s;
    big.limits.wall_ms = 120000;
    ok(sbx_service_submit(&loop, &big, on_done, &g[2], NULL, &err) == SBX_SVC_INVALID);
    wait_all(g, 2);
    is_int(g[0].res.reason, SBX_REASON_EXIT);
    is_int(g[1].res.reason, SBX_REASON_EXIT);
    is_str(g[1].res.out.data, "stdin;file;env\n");
    is_int(g[0].order, 1);
    is_int(g[1].order, 2);
    ok(g[1].queue_us >= 250000); /* it waited for the first to end */
    ok(!g[2].done);
    for (int i = 0; i < 2; i++)
        sbx_result_free(&g[i].res);

    /* cancelling a queued job: KILLED, and it never ran */
    memset(g, 0, sizeof(g));
    ok(sbx_service_submit(&loop, &s, on_done, &g[0], &job[0], &err) == SBX_SVC_OK);
    ok(sbx_service_submit(&loop, &s, on_done, &g[1], &job[1], &err) == SBX_SVC_OK);
    sbx_service_cancel(job[1]);
    sbx_service_cancel(job[1]); /* twice: still one callback */
    ok(!g[1].done);             /* delivered from the loop, not from inside cancel */
    /* the cancelled job gave its place in the queue back at once */
    ok(sbx_service_submit(&loop, &s, on_done, &g[2], &job[2], &err) == SBX_SVC_OK);
    wait_all(g, 3);
    is_int(g[1].res.reason, SBX_REASON_KILLED);
    is_int(g[1].res.host_pid, 0);
    is_int(g[0].res.reason, SBX_REASON_EXIT);
    is_int(g[2].res.reason, SBX_REASON_EXIT);
    ok(g[1].order < g[0].order);
    ok(g[0].order < g[2].order);
    for (int i = 0; i < 3; i++)
        sbx_result_free(&g[i].res);
    buf_free(&err);
}

static void test_uid_slice(void)
{
    struct buf err = BUF_INIT(512);
    static const char *const t[] = {"/bin/true"};
    struct sbx_spec s;
    sbx_service_spec_init(&s);
    s.argv = t;
    s.argc = 1;
    struct got g;
    memset(&g, 0, sizeof(g));
    ok(sbx_service_submit(&loop, &s, on_done, &g, NULL, &err) == SBX_SVC_OK);
    wait_all(&g, 1);
    is_int(g.res.reason, SBX_REASON_EXIT);
    /* 4 loops share 1024 uids: this, the first loop opened, has the first 256 */
    if (!ok(g.res.host_uid >= 1500000000u && g.res.host_uid < 1500000000u + 256))
        printf("#   host uid %u\n", g.res.host_uid);
    sbx_result_free(&g.res);
    buf_free(&err);
}

static void test_close(void)
{
    struct buf err = BUF_INIT(512);
    static const char *const sleep_[] = {"/bin/sleep", "30"};
    struct sbx_spec s;
    sbx_service_spec_init(&s);
    s.argv = sleep_;
    s.argc = 2;
    struct got g[2];
    memset(g, 0, sizeof(g));
    ok(sbx_service_submit(&loop, &s, on_done, &g[0], NULL, &err) == SBX_SVC_OK);
    ok(sbx_service_submit(&loop, &s, on_done, &g[1], NULL, &err) == SBX_SVC_OK);
    /* let the first one start */
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    sbx_service_loop_close(&loop);
    ok(g[1].done); /* the queued one at once */
    wait_all(g, 2);
    is_int(g[0].res.reason, SBX_REASON_KILLED);
    is_int(g[1].res.reason, SBX_REASON_KILLED);
    for (int i = 0; i < 2; i++)
        sbx_result_free(&g[i].res);
    while (uv_run(&loop, UV_RUN_DEFAULT))
        ;
    struct sbx_service_stats st;
    sbx_service_stats(&loop, &st);
    is_int(st.running + st.queued, 0);
    buf_free(&err);
}

static const char *why_skip(void)
{
    static char why[128];
    const char *p = getenv("LD_PRELOAD");
    if (p && strstr(p, "vgpreload"))
        return "under valgrind (raw clone with namespaces)";
    if (getenv("AGENTD_BIN") == NULL)
        return "AGENTD_BIN not set (tests/sandbox.cmake sets it)";
    long pid =
        syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == 0)
        _exit(0);
    if (pid == -1) {
        snprintf(why, sizeof(why), "cannot create namespaces here: %s", strerror(errno));
        return why;
    }
    waitpid((pid_t)pid, NULL, 0);
    return NULL;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    subtest("request body: accepted forms", test_parse_good);
    subtest("request body: refusals name the field", test_parse_bad);
    subtest("request body: the service's ceilings and defaults", test_parse_ceilings);
    subtest("request body: linear", test_parse_linear);
    subtest("request body: written by the CLI, read back the same", test_request_json);
    subtest("--daemon URLs", test_remote_url);
    const char *skip = why_skip();
    if (skip) {
        printf("# skip sandbox service runs: %s\n", skip);
        return done_testing();
    }
    uv_loop_init(&loop);
    struct sbx_service_opts o;
    sbx_service_opts_init(&o);
    o.exe = getenv("AGENTD_BIN");
    o.warm = 1;
    o.max_running = 1;
    o.max_queued = 1;
    o.loops = 4;
    o.cfg.uid_base = 1500000000u;
    o.ceiling.wall_ms = 60000;
    struct buf err = BUF_INIT(512);
    ok(sbx_service_start(&o, &err) == 0);
    if (!ok(sbx_service_loop_open(&loop, &err) == SBX_SVC_OK))
        printf("#   %s\n", err.data);
    buf_free(&err);
    subtest("uid slice of a loop", test_uid_slice);
    subtest("admission: running, queued, busy, copies, cancel", test_admission);
    subtest("closing the loop ends queued and running jobs", test_close);
    sbx_service_stop();
    ok(uv_loop_close(&loop) == 0);
    return done_testing();
}
