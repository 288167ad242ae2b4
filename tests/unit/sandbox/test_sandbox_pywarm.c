/* Warm Python interpreters: which runs they may serve, and the PYRUN payload as Python's own marshal reads it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "sandbox/sbx_pywarm.h"
#include "test.h"

static void test_eligible(void)
{
    struct sbx_spec s;
    sbx_spec_init(&s);
    s.lang = SBX_LANG_PYTHON;
    s.code = "pass";
    s.code_len = 4;
    ok(sbx_pywarm_eligible(&s));
    static const char *const fine[] = {"FOO=1", "USER=x", "PATH=/bin", "PYTHO=1", "XLANG=1"};
    s.env = fine;
    s.envc = 5;
    ok(sbx_pywarm_eligible(&s));
    /* what the interpreter reads while it starts */
    static const char *const envs[] = {"PYTHONPATH=/work", "PYTHONHASHSEED=0", "LANG=C", "LC_ALL=C", "LANGUAGE=de",
                                       "HOME=/tmp", "TZ=UTC"};
    for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
        const char *one[] = {"FOO=1", envs[i]};
        s.env = one;
        s.envc = 2;
        ok(!sbx_pywarm_eligible(&s));
    }
    s.env = NULL;
    s.envc = 0;
    static const char *const args[] = {"-c", "pass"};
    s.argv = args;
    s.argc = 2;
    ok(!sbx_pywarm_eligible(&s)); /* interpreter arguments */
    s.argv = NULL;
    s.argc = 0;
    s.lang = SBX_LANG_SH;
    ok(!sbx_pywarm_eligible(&s));
    s.lang = SBX_LANG_PYTHON;
    struct sbx_file files[2] = {{.name = "in.csv", .data = "x", .len = 1},
                                {.name = "data/in.csv", .data = "y", .len = 1}};
    s.files = files;
    s.nfiles = 1;
    ok(sbx_pywarm_eligible(&s)); /* a plain input name: the bootstrap writes it */
    s.nfiles = 2;
    ok(!sbx_pywarm_eligible(&s)); /* one in a subdirectory: the C child makes the directory */
    s.files = NULL;
    s.nfiles = 0;
    s.code = NULL;
    ok(!sbx_pywarm_eligible(&s));
}

/* Runs python3 on the payload; returns what it printed (static). */
static const char *python_reads(const struct buf *payload, const char *script)
{
    static char out[4096];
    char path[] = "/tmp/test_pywarm_XXXXXX";
    int fd = mkstemp(path);
    if (fd == -1 || write(fd, payload->data, payload->len) != (ssize_t)payload->len)
        return "write failed";
    close(fd);
    char cmd[1024];
    (void)snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '%s' < %s", script, path);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
    out[n] = '\0';
    if (p)
        (void)pclose(p);
    unlink(path);
    return out;
}

static void test_encode(void)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        ok(1); /* no interpreter to read it here */
        return;
    }
    static const char *const env[] = {"A=1", "B=x=y"};
    static const struct sbx_file files[] = {{"in.txt", "a\0c", 3, 0600}, {"e", "", 0, 0}};
    struct sbx_spec s;
    sbx_spec_init(&s);
    s.lang = SBX_LANG_PYTHON;
    s.code = "print('\xc3\xa9')";
    s.code_len = strlen(s.code);
    s.env = env;
    s.envc = 2;
    s.files = files;
    s.nfiles = 2;
    s.collect_files = true;
    s.limits.cpu_ms = 0;                            /* no CPU limit: RLIM_INFINITY, Python's -1 */
    s.limits.address_space_bytes = 5ull << 30;      /* past 32 bits: marshal's long */
    s.limits.memory_bytes = (1ull << 62) + 12345;   /* several 15-bit digits */
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    sbx_pywarm_encode(&s, false, &b);
    const char *got = python_reads(&b, "import marshal, sys\n"
                                       "c, f, e, l, k = marshal.loads(sys.stdin.buffer.read())\n"
                                       "print(c, f, e, k, len(l))\n"
                                       "print([r for r in l if r[3] in (\"CPU\", \"AS\", \"DATA\", \"NOFILE\")])");
    char want[1024];
    (void)snprintf(want, sizeof(want),
                   "b\"print('\\xc3\\xa9')\" ((b'in.txt', b'a\\x00c', 384), (b'e', b'', 0)) (b'A=1', b'B=x=y') "
                   "True 13\n"
                   "[(%d, %llu, %llu, 'DATA'), (%d, -1, -1, 'CPU'), (%d, 64, 64, 'NOFILE'), (%d, %llu, %llu, 'AS')]\n",
                   RLIMIT_DATA, (1ull << 62) + 12345, (1ull << 62) + 12345, RLIMIT_CPU, RLIMIT_NOFILE, RLIMIT_AS,
                   5ull << 30, 5ull << 30);
    is_str(got, want);
    /* with a memory cgroup there is no RLIMIT_DATA, and no collection asked for */
    buf_reset(&b);
    s.collect_files = false;
    sbx_pywarm_encode(&s, true, &b);
    got = python_reads(&b, "import marshal, sys\n"
                           "c, f, e, l, k = marshal.loads(sys.stdin.buffer.read())\n"
                           "print(k, len(l), [r[3] for r in l])");
    is_str(got, "False 12 ['CPU', 'CORE', 'NPROC', 'NOFILE', 'FSIZE', 'STACK', 'MEMLOCK', 'MSGQUEUE', 'NICE', "
                "'RTPRIO', 'SIGPENDING', 'AS']\n");
    buf_free(&b);
}

int main(void)
{
    subtest("which runs a warm interpreter may serve", test_eligible);
    subtest("the PYRUN payload, read by python3", test_encode);
    return done_testing();
}
