/* cgroup v2 and v1 code paths against fake trees of plain files, so the v2 writes are exercised on this v1 host
 * too (and the v1 ones on a v2 host). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sandbox/sbx_cgroup.h"
#include "test.h"

static char root[64];

static char *path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *path(const char *fmt, ...)
{
    static char p[8][512];
    static int k;
    char rel[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    k = (k + 1) % 8;
    snprintf(p[k], sizeof(p[k]), "%s/%s", root, rel);
    return p[k];
}

static void put(const char *p, const char *text)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ok(fd >= 0);
    if (fd >= 0) {
        ok(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
        close(fd);
    }
}

static const char *get(const char *p)
{
    static char b[512];
    int fd = open(p, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, b, sizeof(b) - 1) : -1;
    if (fd >= 0)
        close(fd);
    b[n > 0 ? n : 0] = '\0';
    return b;
}

static void mkdirs(const char *p)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s", p);
    for (char *s = tmp + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(tmp, 0755);
            *s = '/';
        }
    }
    mkdir(tmp, 0755);
}

static void rm_rf(const char *p)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p);
    ok(system(cmd) == 0);
}

/* Removes the plain files a fake cgroup directory holds (a real cgroupfs drops them with the directory). */
static void clear_dir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "find '%s' -maxdepth 1 -type f -delete", dir);
    ok(system(cmd) == 0);
}

static void run_files(const char *dir, const char *const *names)
{
    for (const char *const *n = names; *n; n++) {
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", dir, *n);
        put(p, "");
    }
}

static void test_v2(void)
{
    struct sbx_cgroup_env env;
    struct buf why = BUF_INIT(512);
    mkdirs(path("cg2/app/agentd"));
    mkdirs(path("cg2/app/agentd-sandbox"));
    put(path("mountinfo"), "");
    char mi[1024];
    snprintf(mi, sizeof(mi),
             "24 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
             "30 25 0:26 / %s/cg2 rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
             "31 25 0:27 / %s/v1mem rw,nosuid - cgroup cgroup rw,memory\n",
             root, root);
    put(path("mountinfo"), mi);
    put(path("self"), "4:memory:/elsewhere\n0::/app\n");
    put(path("cg2/app/cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n");
    put(path("cg2/app/cgroup.subtree_control"), "");
    put(path("cg2/app/cgroup.procs"), "101\n102\n");
    put(path("cg2/app/agentd/cgroup.procs"), "");
    put(path("cg2/app/agentd-sandbox/cgroup.subtree_control"), "");
    put(path("cg2/app/agentd-sandbox/cgroup.kill"), "");

    ok(sbx_cgroup_detect(&env, path("mountinfo"), path("self"), NULL, &why) == 0);
    is_int(env.version, 2); /* v2 wins over the v1 memory hierarchy */
    is_str(env.v2_own, path("cg2/app"));
    ok(env.have[SBX_CGC_MEMORY] && env.have[SBX_CGC_PIDS] && env.have[SBX_CGC_CPU]);
    ok(sbx_cgroup_prepare(&env, &why) == 0);
    if (why.len)
        printf("#   %s\n", why.data);
    /* Our processes moved to a leaf so our cgroup may hand controllers down, then they were enabled. */
    is_str(get(path("cg2/app/agentd/cgroup.procs")), "102");
    is_str(get(path("cg2/app/cgroup.subtree_control")), "+memory +pids +cpu");
    is_str(get(path("cg2/app/agentd-sandbox/cgroup.subtree_control")), "+memory +pids +cpu");
    ok(env.has_kill);
    struct buf d = BUF_INIT(256);
    sbx_cgroup_describe(&env, &d);
    is_str(d.data, "memory pids cpu");
    buf_free(&d);

    struct sbx_cgroup cg;
    ok(sbx_cgroup_create(&env, "run-1", &cg, &why) == 0);
    ok(cg.fd >= 0); /* for clone3(CLONE_INTO_CGROUP) */
    const char *dir = path("cg2/app/agentd-sandbox/run-1");
    is_str(cg.dir[SBX_CGC_MEMORY], dir);
    static const char *const files[] = {"memory.max", "memory.swap.max", "memory.oom.group", "pids.max",
                                        "cpu.max",    "cgroup.procs",    "cgroup.kill",      NULL};
    run_files(dir, files);
    ok(sbx_cgroup_set_limits(&cg, 64u << 20, 32, 50, &why) == 0);
    is_str(get(path("cg2/app/agentd-sandbox/run-1/memory.max")), "67108864");
    is_str(get(path("cg2/app/agentd-sandbox/run-1/memory.swap.max")), "0");
    is_str(get(path("cg2/app/agentd-sandbox/run-1/memory.oom.group")), "1");
    is_str(get(path("cg2/app/agentd-sandbox/run-1/pids.max")), "32");
    is_str(get(path("cg2/app/agentd-sandbox/run-1/cpu.max")), "50000 100000");
    ok(sbx_cgroup_set_limits(&cg, 0, 0, 0, &why) == 0);
    is_str(get(path("cg2/app/agentd-sandbox/run-1/memory.max")), "max");
    is_str(get(path("cg2/app/agentd-sandbox/run-1/cpu.max")), "max 100000");
    ok(sbx_cgroup_attach(&cg, 4242, &why) == 0);
    is_str(get(path("cg2/app/agentd-sandbox/run-1/cgroup.procs")), "4242");
    ok(!sbx_cgroup_empty(&cg));

    put(path("cg2/app/agentd-sandbox/run-1/memory.peak"), "12345\n");
    put(path("cg2/app/agentd-sandbox/run-1/memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 1\n");
    put(path("cg2/app/agentd-sandbox/run-1/cpu.stat"), "usage_usec 777\nuser_usec 500\nsystem_usec 277\n");
    struct sbx_cgroup_stats st;
    ok(sbx_cgroup_stats(&cg, &st) == 0);
    ok(st.have_peak && st.peak_memory_bytes == 12345);
    is_int(st.oom_kills, 2);
    ok(st.have_cpu && st.cpu_us == 777);
    /* Opened ahead, the files are read through their fds, afresh from offset 0 each time: here they are renamed
     * away, so a read by path would find nothing. */
    sbx_cgroup_open_stats(&cg);
    ok(cg.stats_open && cg.stat_fd[0] >= 0 && cg.stat_fd[1] >= 0 && cg.stat_fd[2] >= 0);
    static const char *const v2f[] = {"memory.peak", "memory.events", "cpu.stat"};
    for (int i = 0; i < 3; i++) {
        char *from = path("cg2/app/agentd-sandbox/run-1/%s", v2f[i]);
        ok(rename(from, path("cg2/app/agentd-sandbox/run-1/%s.moved", v2f[i])) == 0);
    }
    put(path("cg2/app/agentd-sandbox/run-1/memory.peak.moved"), "54321\n");
    put(path("cg2/app/agentd-sandbox/run-1/memory.events.moved"), "oom 1\noom_kill 5\n");
    put(path("cg2/app/agentd-sandbox/run-1/cpu.stat.moved"), "usage_usec 888\n");
    ok(sbx_cgroup_stats(&cg, &st) == 0);
    ok(st.have_peak && st.peak_memory_bytes == 54321);
    is_int(st.oom_kills, 5);
    ok(st.have_cpu && st.cpu_us == 888);
    put(path("cg2/app/agentd-sandbox/run-1/cpu.stat.moved"), "usage_usec 9\n");
    ok(sbx_cgroup_stats(&cg, &st) == 0 && st.cpu_us == 9);
    sbx_cgroup_kill(&cg);
    is_str(get(path("cg2/app/agentd-sandbox/run-1/cgroup.kill")), "1");

    /* A real cgroupfs removes its files with the directory; the fake one needs them gone first. */
    clear_dir(path("cg2/app/agentd-sandbox/run-1"));
    ok(sbx_cgroup_destroy(&cg) == 0);
    ok(access(dir, F_OK) == -1 && errno == ENOENT);
    ok(cg.dir[SBX_CGC_MEMORY] == NULL);

    /* A missing limit file is an error (fail closed), except the optional ones. */
    ok(sbx_cgroup_create(&env, "run-2", &cg, &why) == 0);
    buf_reset(&why);
    ok(sbx_cgroup_set_limits(&cg, 1 << 20, 1, 1, &why) == -1);
    ok(strstr(why.data, "memory.max") != NULL);
    ok(sbx_cgroup_destroy(&cg) == 0);
    sbx_cgroup_env_free(&env);

    /* A configured parent is used as is, relative to the mount. */
    buf_reset(&why);
    mkdirs(path("cg2/delegated"));
    put(path("cg2/delegated/cgroup.subtree_control"), "memory pids cpu");
    ok(sbx_cgroup_detect(&env, path("mountinfo"), path("self"), "/delegated", &why) == 0);
    ok(sbx_cgroup_prepare(&env, &why) == 0);
    is_str(env.parent[SBX_CGC_PIDS], path("cg2/delegated"));
    ok(!env.has_kill);
    sbx_cgroup_env_free(&env);
    buf_free(&why);
}

static void test_v1(void)
{
    struct sbx_cgroup_env env;
    struct buf why = BUF_INIT(512);
    char mi[2048];
    snprintf(mi, sizeof(mi),
             "35 30 0:30 / %s/v1/memory rw,nosuid - cgroup cgroup rw,memory\n"
             "36 30 0:31 / %s/v1/pids rw,nosuid - cgroup cgroup rw,pids\n"
             "37 30 0:32 / %s/v1/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
             "38 30 0:33 / %s/v1/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
             "39 30 0:34 / %s/unified rw - cgroup2 cgroup2 rw\n",
             root, root, root, root, root);
    put(path("mountinfo"), mi);
    /* The v2 hierarchy exists but offers no controllers (this machine's hybrid layout). */
    mkdirs(path("unified"));
    put(path("unified/cgroup.controllers"), "hugetlb\n");
    put(path("self"), "9:name=systemd:/\n5:memory:/m/own\n3:pids:/\n2:cpu,cpuacct:/c\n0::/\n");
    mkdirs(path("v1/memory/m/own"));
    mkdirs(path("v1/pids"));
    mkdirs(path("v1/cpu,cpuacct/c"));

    ok(sbx_cgroup_detect(&env, path("mountinfo"), path("self"), NULL, &why) == 0);
    is_int(env.version, 1);
    ok(why.data && strstr(why.data, "lacks memory") != NULL);
    ok(env.have[SBX_CGC_MEMORY] && env.have[SBX_CGC_PIDS] && env.have[SBX_CGC_CPU] && env.have[SBX_CGC_CPUACCT]);
    is_str(env.own[SBX_CGC_MEMORY], path("v1/memory/m/own"));
    is_str(env.own[SBX_CGC_CPUACCT], path("v1/cpu,cpuacct/c"));
    ok(sbx_cgroup_prepare(&env, &why) == 0);
    is_str(env.parent[SBX_CGC_MEMORY], path("v1/memory/m/own/agentd-sandbox"));
    is_str(env.parent[SBX_CGC_PIDS], path("v1/pids/agentd-sandbox"));

    struct sbx_cgroup cg;
    ok(sbx_cgroup_create(&env, "run-2", &cg, &why) == 0);
    ok(cg.fd == -1);
    static const char *const mem[] = {"memory.limit_in_bytes", "cgroup.procs", NULL};
    static const char *const pids[] = {"pids.max", "cgroup.procs", NULL};
    static const char *const cpu[] = {"cpu.cfs_period_us", "cpu.cfs_quota_us", "cgroup.procs", NULL};
    run_files(path("v1/memory/m/own/agentd-sandbox/run-2"), mem);
    run_files(path("v1/pids/agentd-sandbox/run-2"), pids);
    run_files(path("v1/cpu,cpuacct/c/agentd-sandbox/run-2"), cpu);
    ok(sbx_cgroup_set_limits(&cg, 128u << 20, 10, 200, &why) == 0);
    if (why.len)
        printf("#   %s\n", why.data);
    is_str(get(path("v1/memory/m/own/agentd-sandbox/run-2/memory.limit_in_bytes")), "134217728");
    is_str(get(path("v1/pids/agentd-sandbox/run-2/pids.max")), "10");
    is_str(get(path("v1/cpu,cpuacct/c/agentd-sandbox/run-2/cpu.cfs_quota_us")), "200000");
    is_str(get(path("v1/cpu,cpuacct/c/agentd-sandbox/run-2/cpu.cfs_period_us")), "100000");

    /* v1 has no cgroup.kill: each listed pid is killed. Use a child of ours as the victim. */
    pid_t victim = fork();
    if (victim == 0) {
        pause();
        _exit(0);
    }
    ok(sbx_cgroup_attach(&cg, victim, &why) == 0);
    char vs[16];
    snprintf(vs, sizeof(vs), "%d", (int)victim);
    is_str(get(path("v1/pids/agentd-sandbox/run-2/cgroup.procs")), vs);
    is_str(get(path("v1/cpu,cpuacct/c/agentd-sandbox/run-2/cgroup.procs")), vs); /* co-mounted: written once */
    sbx_cgroup_kill(&cg);
    int status = 0;
    ok(waitpid(victim, &status, 0) == victim && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    put(path("v1/memory/m/own/agentd-sandbox/run-2/memory.max_usage_in_bytes"), "999\n");
    put(path("v1/memory/m/own/agentd-sandbox/run-2/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
    put(path("v1/cpu,cpuacct/c/agentd-sandbox/run-2/cpuacct.usage"), "5000000\n");
    struct sbx_cgroup_stats st;
    ok(sbx_cgroup_stats(&cg, &st) == 0);
    ok(st.peak_memory_bytes == 999 && st.oom_kills == 1 && st.cpu_us == 5000);

    clear_dir(path("v1/memory/m/own/agentd-sandbox/run-2"));
    clear_dir(path("v1/pids/agentd-sandbox/run-2"));
    clear_dir(path("v1/cpu,cpuacct/c/agentd-sandbox/run-2"));
    ok(sbx_cgroup_destroy(&cg) == 0);
    ok(access(path("v1/pids/agentd-sandbox/run-2"), F_OK) == -1);
    sbx_cgroup_env_free(&env);
    buf_free(&why);
}

static void test_detect_edges(void)
{
    struct sbx_cgroup_env env;
    struct buf why = BUF_INIT(512);
    char mi[1024];
    /* A cgroup namespace or a bind of a subtree: the mount root is stripped off our path. Spaces are escaped. */
    mkdirs(path("my cg/ctr"));
    put(path("my cg/ctr/cgroup.controllers"), "memory pids\n");
    snprintf(mi, sizeof(mi), "40 1 0:40 /kubepods/pod1 %s/my\\040cg rw - cgroup2 cgroup2 rw\n", root);
    put(path("mountinfo"), mi);
    put(path("self"), "0::/kubepods/pod1/ctr\n");
    ok(sbx_cgroup_detect(&env, path("mountinfo"), path("self"), NULL, &why) == 0);
    is_int(env.version, 2);
    is_str(env.v2_own, path("my cg/ctr"));
    ok(!env.have[SBX_CGC_CPU]);
    sbx_cgroup_env_free(&env);

    put(path("mountinfo"), "24 1 8:1 / / rw - ext4 /dev/vda rw\n");
    buf_reset(&why);
    ok(sbx_cgroup_detect(&env, path("mountinfo"), path("self"), NULL, &why) == 0);
    is_int(env.version, 0);
    ok(why.len > 0);
    ok(sbx_cgroup_prepare(&env, &why) == -1);
    sbx_cgroup_env_free(&env);
    buf_reset(&why);
    ok(sbx_cgroup_detect(&env, path("nonexistent"), path("self"), NULL, &why) == 0);
    is_int(env.version, 0);
    sbx_cgroup_env_free(&env);

    uint64_t v = 0;
    ok(sbx_cgroup_keyed("a 1\noom_kill 42\n", "oom_kill", &v) == 0 && v == 42);
    ok(sbx_cgroup_keyed("oom_kill_disable 0\noom_kill 5", "oom_kill", &v) == 0 && v == 5);
    ok(sbx_cgroup_keyed("oom 1\n", "oom_kill", &v) == -1);
    buf_free(&why);
}

int main(void)
{
    snprintf(root, sizeof(root), "/tmp/sbx-cg-XXXXXX");
    if (mkdtemp(root) == NULL)
        return 1;
    subtest("cgroup v2 against a fake tree", test_v2);
    subtest("cgroup v1 against a fake tree", test_v1);
    subtest("detection edge cases", test_detect_edges);
    rm_rf(root);
    return done_testing();
}
