/* The asynchronous C API end to end with an in-process pool: concurrent runs, stdin, output caps, deadlines,
 * cancellation, large specs, closing a pool with runs in flight. Needs root (or unprivileged user namespaces)
 * and real namespaces: skipped, with the reason, where the host has none, and under valgrind. */
#include <dirent.h>
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "sandbox/sbx.h"
#include "test.h"

static uv_loop_t loop;
static struct sbx_pool *pool;

struct got {
    bool done;
    struct sbx_result res;
};

static void on_done(struct sbx_run *run, struct sbx_result *res, void *ud)
{
    struct got *g = ud;
    (void)run;
    g->res = *res;
    buf_init(&res->out, 0); /* take the buffers */
    buf_init(&res->err, 0);
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

static int start(struct sbx_spec *s, struct got *g, struct sbx_run **run)
{
    struct buf err = BUF_INIT(512);
    memset(g, 0, sizeof(*g));
    int rc = sbx_run_start(pool, s, on_done, g, run, &err);
    if (rc != 0)
        printf("#   refused: %s\n", err.data);
    buf_free(&err);
    return rc;
}

static void argv_spec(struct sbx_spec *s, const char *const *argv, size_t argc)
{
    sbx_spec_init(s);
    s->argv = argv;
    s->argc = argc;
}

static void test_concurrent(void)
{
    static const char *const a0[] = {"/bin/sh", "-c", "echo zero"};
    static const char *const a1[] = {"/bin/sh", "-c", "echo one >&2; exit 3"};
    static const char *const a2[] = {"/usr/bin/python3", "-c", "import ctypes; ctypes.string_at(0)"};
    struct sbx_spec s[3];
    struct got g[3];
    argv_spec(&s[0], a0, 3);
    argv_spec(&s[1], a1, 3);
    argv_spec(&s[2], a2, 3);
    for (int i = 0; i < 3; i++)
        ok(start(&s[i], &g[i], NULL) == 0);
    wait_all(g, 3);
    is_int(g[0].res.reason, SBX_REASON_EXIT);
    is_int(g[0].res.exit_code, 0);
    is_str(g[0].res.out.data, "zero\n");
    is_int(g[1].res.exit_code, 3);
    is_str(g[1].res.err.data, "one\n");
    ok(g[1].res.out.len == 0);
    /* A fault kills even a PID 1. */
    is_int(g[2].res.reason, SBX_REASON_SIGNAL);
    is_int(g[2].res.term_signal, SIGSEGV);
    ok(g[0].res.host_uid != g[1].res.host_uid && g[0].res.host_uid >= 1000000000u);
    ok(g[0].res.wall_us > 0 && g[0].res.wall_us < 5000000);
    for (int i = 0; i < 3; i++)
        sbx_result_free(&g[i].res);
}

static void test_stdin_and_files(void)
{
    static const char *const cat[] = {"/bin/cat"};
    struct sbx_spec s;
    struct got g;
    size_t n = 300 * 1024; /* several pipe buffers */
    char *in = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)('a' + i % 26);
    argv_spec(&s, cat, 1);
    s.stdin_data = in;
    s.stdin_len = n;
    ok(start(&s, &g, NULL) == 0);
    wait_all(&g, 1);
    is_int(g.res.reason, SBX_REASON_EXIT);
    ok(g.res.out.len == n && memcmp(g.res.out.data, in, n) == 0);
    sbx_result_free(&g.res);

    /* A spec too big for one datagram travels in a memfd. */
    static const char *const wc[] = {"/bin/sh", "-c", "wc -c < big.bin; cat small.txt; ls -l run.sh | cut -c1-10"};
    struct sbx_file files[3] = {{"big.bin", in, n, 0}, {"small.txt", "hi", 2, 0}, {"run.sh", "#!/bin/sh\n", 10, 0700}};
    argv_spec(&s, wc, 3);
    s.files = files;
    s.nfiles = 3;
    ok(start(&s, &g, NULL) == 0);
    wait_all(&g, 1);
    is_int(g.res.reason, SBX_REASON_EXIT);
    is_str(g.res.out.data, "307200\nhi-rwx------\n");
    sbx_result_free(&g.res);
    xfree(in);
}

static void test_limits(void)
{
    static const char *const yes[] = {"/usr/bin/yes"};
    static const char *const sleep_[] = {"/bin/sleep", "30"};
    struct sbx_spec s;
    struct got g;
    argv_spec(&s, yes, 1);
    s.limits.stdout_max = 1000;
    ok(start(&s, &g, NULL) == 0);
    wait_all(&g, 1);
    is_int(g.res.reason, SBX_REASON_OUTPUT_CAP);
    is_int(g.res.out.len, 1000);
    ok(g.res.out_truncated);
    sbx_result_free(&g.res);

    argv_spec(&s, sleep_, 2);
    s.limits.wall_ms = 300;
    ok(start(&s, &g, NULL) == 0);
    wait_all(&g, 1);
    is_int(g.res.reason, SBX_REASON_TIMEOUT);
    is_int(g.res.term_signal, SIGKILL);
    ok(g.res.wall_us >= 300000 && g.res.wall_us < 3000000);
    sbx_result_free(&g.res);

    static const char *const df[] = {"/bin/sh", "-c", "df -k /work /tmp | tail -2 | awk '{print $2}'"};
    argv_spec(&s, df, 3);
    s.limits.work_bytes = 2u << 20;
    s.limits.tmp_bytes = 3u << 20;
    ok(start(&s, &g, NULL) == 0);
    wait_all(&g, 1);
    is_str(g.res.out.data, "2048\n3072\n");
    sbx_result_free(&g.res);
}

static void test_cancel(void)
{
    static const char *const sleep_[] = {"/bin/sleep", "30"};
    struct sbx_spec s;
    struct got g[2];
    struct sbx_run *run[2];
    argv_spec(&s, sleep_, 2);
    ok(start(&s, &g[0], &run[0]) == 0);
    ok(start(&s, &g[1], &run[1]) == 0);
    sbx_run_cancel(run[0]); /* before it even started */
    wait_all(g, 1);
    is_int(g[0].res.reason, SBX_REASON_KILLED);
    sbx_run_cancel(run[1]);
    wait_all(g, 2);
    is_int(g[1].res.reason, SBX_REASON_KILLED);
    ok(g[1].res.wall_us < 5000000);
    sbx_result_free(&g[0].res);
    sbx_result_free(&g[1].res);

    /* Refused specs: -1 and no callback, ever. */
    struct buf err = BUF_INIT(256);
    struct got never;
    memset(&never, 0, sizeof(never));
    sbx_spec_init(&s);
    ok(sbx_run_start(pool, &s, on_done, &never, NULL, &err) == -1);
    ok(err.len > 0);
    buf_free(&err);
}

static bool closed;
static void on_closed(void *ud)
{
    (void)ud;
    closed = true;
}

static void test_close_in_flight(void)
{
    static const char *const sleep_[] = {"/bin/sleep", "30"};
    struct sbx_spec s;
    struct got g;
    argv_spec(&s, sleep_, 2);
    ok(start(&s, &g, NULL) == 0);
    sbx_pool_close(pool, on_closed, NULL);
    pool = NULL;
    while (!(g.done && closed) && uv_run(&loop, UV_RUN_ONCE))
        ;
    ok(g.done);
    is_int(g.res.reason, SBX_REASON_KILLED);
    ok(closed);
    sbx_result_free(&g.res);
}

/* The daemon's situation: worker threads exist, so the pool must be a zygote. */
static pthread_mutex_t idle_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cv = PTHREAD_COND_INITIALIZER;
static bool idle_stop;

static void *idle_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&idle_mu);
    while (!idle_stop)
        pthread_cond_wait(&idle_cv, &idle_mu);
    pthread_mutex_unlock(&idle_mu);
    return NULL;
}

static void test_zygote_from_threads(void)
{
    const char *exe = getenv("AGENTD_BIN");
    if (exe == NULL) {
        printf("# skip zygote pool: AGENTD_BIN not set (tests/sandbox.cmake sets it)\n");
        ok(1);
        return;
    }
    pthread_t t;
    ok(pthread_create(&t, NULL, idle_thread, NULL) == 0);
    struct sbx_pool_opts po;
    struct buf err = BUF_INIT(512);
    sbx_pool_opts_init(&po);
    /* An in-process engine would fork from a threaded process: refused. */
    struct sbx_pool *bad = NULL;
    ok(sbx_pool_new(&loop, &po, &bad, &err) == -1);
    ok(err.data && strstr(err.data, "single-threaded") != NULL);
    po.zygote = true;
    po.exe = exe;
    po.warm = 2;
    buf_reset(&err);
    ok(sbx_pool_new(&loop, &po, &pool, &err) == 0);

    static const char *const echo[] = {"/bin/sh", "-c", "echo $0 $(id -u)", "z"};
    static const char *const yes[] = {"/usr/bin/yes"};
    static const char *const sleep_[] = {"/bin/sleep", "30"};
    struct sbx_spec s[4];
    struct got g[4];
    struct sbx_run *run[4];
    argv_spec(&s[0], echo, 4);
    argv_spec(&s[1], yes, 1);
    s[1].limits.stdout_max = 5000;
    argv_spec(&s[2], sleep_, 2);
    argv_spec(&s[3], sleep_, 2);
    s[3].limits.wall_ms = 200;
    for (int i = 0; i < 4; i++)
        ok(start(&s[i], &g[i], &run[i]) == 0);
    sbx_run_cancel(run[2]);
    wait_all(g, 4);
    is_int(g[0].res.reason, SBX_REASON_EXIT);
    is_str(g[0].res.out.data, "z 1000\n");
    is_int(g[1].res.reason, SBX_REASON_OUTPUT_CAP);
    is_int(g[1].res.out.len, 5000);
    is_int(g[2].res.reason, SBX_REASON_KILLED);
    is_int(g[3].res.reason, SBX_REASON_TIMEOUT);
    for (int i = 0; i < 4; i++)
        sbx_result_free(&g[i].res);
    /* The pool warms back up (the zygote says how many children are ready). */
    for (int spins = 0; sbx_pool_ready(pool) < 2 && spins < 100000; spins++)
        uv_run(&loop, UV_RUN_ONCE);
    is_int(sbx_pool_ready(pool), 2);
    closed = false;
    sbx_pool_close(pool, on_closed, NULL);
    pool = NULL;
    while (!closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    ok(closed);
    pthread_mutex_lock(&idle_mu);
    idle_stop = true;
    pthread_cond_signal(&idle_cv);
    pthread_mutex_unlock(&idle_mu);
    pthread_join(t, NULL);
    buf_free(&err);
}

/* Open fds of this process (the directory's own fd left out). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = -1;
    if (d == NULL)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 2; /* "." and ".." */
}

static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char path[300], link[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = '\0';
            printf("#   fd %s -> %s\n", e->d_name, link);
        }
    }
    if (d)
        closedir(d);
}

static const char *why_skip(void)
{
    static char why[128];
    const char *p = getenv("LD_PRELOAD");
    if (p && strstr(p, "vgpreload"))
        return "under valgrind (raw clone with namespaces)";
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
    const char *skip = why_skip();
    if (skip) {
        printf("# skip sandbox API tests: %s\n", skip);
        ok(1);
        return done_testing();
    }
    struct sbx_pool_opts po;
    struct buf err = BUF_INIT(512);
    uv_loop_init(&loop);
    /* libuv reserves an fd of its own (on /dev/null) with a loop's first stream, for the life of the loop. */
    uv_pipe_t first;
    uv_pipe_init(&loop, &first, 0);
    uv_close((uv_handle_t *)&first, NULL);
    int fds0 = count_fds();
    sbx_pool_opts_init(&po);
    po.warm = 1;
    if (!ok(sbx_pool_new(&loop, &po, &pool, &err) == 0)) {
        printf("#   %s\n", err.data);
        return done_testing();
    }
    buf_free(&err);
    subtest("concurrent runs", test_concurrent);
    subtest("stdin and files", test_stdin_and_files);
    subtest("output cap, deadline, tmpfs sizes", test_limits);
    subtest("cancel and refusal", test_cancel);
    subtest("closing the pool with a run in flight", test_close_in_flight);
    while (uv_run(&loop, UV_RUN_DEFAULT))
        ;
    /* Nothing of the pool, its children or its runs is left open: warm children's /work, pipes, sockets. */
    if (!is_int(count_fds(), fds0))
        list_fds();
    /* Last: it starts a thread, after which this process may no longer host an engine. */
    subtest("zygote pool from a multi-threaded process", test_zygote_from_threads);
    while (uv_run(&loop, UV_RUN_DEFAULT))
        ;
    ok(uv_loop_close(&loop) == 0);
    return done_testing();
}
