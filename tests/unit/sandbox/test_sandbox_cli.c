/* `agentd sandbox run` option parsing: units, limits, files, refusals. The statics are reached by including the .c. */
#include "../../../src/sandbox/sandbox_cli.c"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

static int parse_args(struct cli *c, struct buf *err, int argc, const char **argv)
{
    cli_init(c);
    buf_reset(err);
    int first = parse(c, argc, (char **)argv, true, err);
    if (first < 0)
        return -1;
    return build_spec(c, argc, (char **)argv, first, err) == 0 ? first : -1;
}

static void test_limits(void)
{
    struct cli c;
    struct buf err = BUF_INIT(512);
    const char *argv[] = {"run",      "--timeout",     "0.5",        "--cpu",        "2",       "--memory",
                          "64",       "--pids",        "16",         "--nofile",     "32",      "--fsize",
                          "1048576",  "--cpu-percent", "50",         "--stdout-max", "100",     "--stderr-max",
                          "200",      "--work-size",   "1048576",    "--tmp-size",   "2097152", "--net",
                          "none",     "--env",         "A=1",        "--zygote",     "--warm",  "3",
                          "--cgroup", "off",           "--uid-base", "5000",         "--",      "/bin/echo",
                          "hi"};
    int n = (int)(sizeof(argv) / sizeof(argv[0]));
    int first = parse_args(&c, &err, n, argv);
    is_int(first, n - 2);
    const struct sbx_limits *l = &c.spec.limits;
    is_int(l->wall_ms, 500);
    is_int(l->cpu_ms, 2000);
    is_int(l->memory_bytes, 64u << 20);
    is_int(l->pids, 16);
    is_int(l->nofile, 32);
    is_int(l->fsize_bytes, 1048576);
    is_int(l->cpu_percent, 50);
    is_int(l->stdout_max, 100);
    is_int(l->stderr_max, 200);
    is_int(l->work_bytes, 1048576);
    is_int(l->tmp_bytes, 2097152);
    is_int(c.spec.envc, 1);
    is_str(c.spec.env[0], "A=1");
    ok(c.pool.zygote);
    is_int(c.pool.warm, 3);
    is_int(c.pool.cfg.cgroup_mode, SBX_CGROUP_OFF);
    is_int(c.pool.cfg.uid_base, 5000);
    is_int(c.spec.argc, 2);
    is_str(c.spec.argv[0], "/bin/echo");
    ok(sbx_spec_validate(&c.spec, &err) == 0);
    cli_free(&c);
    buf_free(&err);
}

static void test_files(void)
{
    char path[] = "/tmp/sbx-cli-XXXXXX";
    int fd = mkstemp(path);
    ok(fd >= 0);
    ok(write(fd, "payload", 7) == 7);
    close(fd);
    char arg[300];
    snprintf(arg, sizeof(arg), "data.txt=%s", path);
    struct cli c;
    struct buf err = BUF_INIT(512);
    const char *argv[] = {"run", "--file", arg, "--lang", "python", "--", "-c", "pass"};
    ok(parse_args(&c, &err, 8, argv) > 0);
    is_int(c.spec.nfiles, 1);
    is_str(c.spec.files[0].name, "data.txt");
    ok(c.spec.files[0].len == 7 && memcmp(c.spec.files[0].data, "payload", 7) == 0);
    is_int(c.spec.lang, SBX_LANG_PYTHON);
    ok(c.spec.code == NULL); /* arguments given: no snippet read from stdin */
    ok(sbx_spec_validate(&c.spec, &err) == 0);
    cli_free(&c);

    /* The name is checked by the spec, whatever the path. */
    snprintf(arg, sizeof(arg), "../x=%s", path);
    const char *bad[] = {"run", "--file", arg, "--", "/bin/true"};
    ok(parse_args(&c, &err, 5, bad) > 0);
    ok(sbx_spec_validate(&c.spec, &err) == -1);
    ok(strstr(err.data, "file name") != NULL);
    cli_free(&c);
    unlink(path);

    const char *missing[] = {"run", "--file", "x=/nonexistent/file", "--", "/bin/true"};
    ok(parse_args(&c, &err, 5, missing) == -1);
    cli_free(&c);
    const char *dir[] = {"run", "--file", "x=/", "--", "/bin/true"};
    ok(parse_args(&c, &err, 5, dir) == -1); /* not a regular file or pipe */
    cli_free(&c);
    buf_free(&err);
}

static void test_refusals(void)
{
    static const char *const cases[][4] = {
        {"run", "--timeout", "0", NULL},     {"run", "--timeout", "-1", NULL},   {"run", "--timeout", "abc", NULL},
        {"run", "--memory", "0", NULL},      {"run", "--memory", "1x", NULL},    {"run", "--net", "host", NULL},
        {"run", "--lang", "cobol", NULL},    {"run", "--pids", "-3", NULL},      {"run", "--bogus", "1", NULL},
        {"run", "--file", "noequals", NULL}, {"run", "--cgroup", "maybe", NULL}, {"run", "--timeout", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cli c;
        struct buf err = BUF_INIT(512);
        int n = cases[i][2] ? 3 : 2;
        if (!ok(parse_args(&c, &err, n, (const char **)cases[i]) == -1))
            printf("#   accepted: %s %s\n", cases[i][1], cases[i][2] ? cases[i][2] : "");
        ok(err.len > 0);
        cli_free(&c);
        buf_free(&err);
    }
}

int main(void)
{
    log_min_level = LL_OFF;
    subtest("limits and pool options", test_limits);
    subtest("files", test_files);
    subtest("refusals", test_refusals);
    return done_testing();
}
