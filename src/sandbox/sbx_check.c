#include "sandbox/sbx_check.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sandbox/sbx_cgroup.h"
#include "sandbox/sbx_seccomp.h"

struct ns_kind {
    const char *key;  /* JSON name */
    const char *proc; /* /proc/self/ns/<proc> */
    unsigned long flag;
};

static const struct ns_kind ns_kinds[] = {
    {"user_ns", "user", CLONE_NEWUSER},       {"pid_ns", "pid", CLONE_NEWPID}, {"mount_ns", "mnt", CLONE_NEWNS},
    {"net_ns", "net", CLONE_NEWNET},          {"ipc_ns", "ipc", CLONE_NEWIPC}, {"uts_ns", "uts", CLONE_NEWUTS},
    {"cgroup_ns", "cgroup", CLONE_NEWCGROUP},
};
#define NKINDS (sizeof(ns_kinds) / sizeof(ns_kinds[0]))

/* Can this process create a namespace of this type (inside a new user namespace, as the sandbox does)? */
static bool probe_ns(unsigned long flag, int *err)
{
    unsigned long flags = CLONE_NEWUSER | flag;
    long pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == -1) {
        *err = errno;
        return false;
    }
    if (pid == 0)
        _exit(0);
    int st;
    (void)waitpid((pid_t)pid, &st, 0);
    *err = 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static bool probe_pidfd(void)
{
    long fd = syscall(SYS_pidfd_open, getpid(), 0);
    if (fd >= 0) {
        close((int)fd);
        return true;
    }
    return false;
}

static bool probe_clone3(void)
{
    /* An invalid size gets EINVAL/E2BIG from a kernel that has clone3, ENOSYS from one (or a filter) that has not. */
    long r = syscall(SYS_clone3, NULL, 0);
    return !(r == -1 && errno == ENOSYS);
}

static void read_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n > 0) {
        out[n] = '\0';
        out[strcspn(out, "\n")] = '\0';
    } else {
        out[0] = '\0';
    }
}

/* Finds "Key:\tvalue" in a /proc/<pid>/status text. */
static bool status_field(const char *text, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, key, kl) == 0 && l[kl] == ':') {
            const char *v = l + kl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strcspn(v, "\n");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

static void feature(struct buf *out, bool *first, const char *key, bool avail, bool in_force, const char *extra)
{
    (void)buf_printf(out, "%s\"%s\":{\"available\":%s,\"in_force\":%s%s%s}", *first ? "" : ",", key,
                     avail ? "true" : "false", in_force ? "true" : "false", extra && extra[0] ? "," : "",
                     extra ? extra : "");
    *first = false;
}

int sbx_check_report(const struct sbx_pool_opts *opts, struct buf *out)
{
    struct utsname u;
    struct buf tmp = BUF_INIT(BUF_UNBOUNDED), err = BUF_INIT(1024);
    bool first = true;
    int rc = 1;

    (void)uname(&u);
    (void)buf_printf(out, "{\"kernel\":");
    (void)buf_append_json_cstr(out, u.release);
    (void)buf_printf(out, ",\"root\":%s,\"features\":{", geteuid() == 0 ? "true" : "false");

    /* The probe run: it prints what it sees of itself. */
    static const char *const probe_argv[] = {
        "/bin/sh",
        "-c",
        "cat /proc/self/status; for n in user pid mnt net ipc uts cgroup; do echo \"ns_$n: $(readlink "
        "/proc/self/ns/$n)\"; done; echo \"root_ro: $( (: > /probe) 2>/dev/null && echo no || echo yes)\"; echo "
        "\"etc_shadow: $(test -e /etc/shadow && echo visible || echo absent)\"; echo \"home: $(test -e /home && "
        "echo visible || echo absent)\"",
    };
    struct sbx_spec spec;
    struct sbx_result res;
    sbx_spec_init(&spec);
    spec.argv = probe_argv;
    spec.argc = 3;
    spec.limits.wall_ms = 10000;
    bool ran = sbx_run_sync(opts, &spec, &res, &err) == 0 && res.reason == SBX_REASON_EXIT && res.exit_code == 0;
    const char *inside = ran && res.out.data ? res.out.data : "";

    for (size_t i = 0; i < NKINDS; i++) {
        int e = 0;
        bool avail = probe_ns(ns_kinds[i].flag, &e);
        char host[64], path[64], key[32], seen[64];
        (void)snprintf(path, sizeof(path), "/proc/self/ns/%s", ns_kinds[i].proc);
        ssize_t n = readlink(path, host, sizeof(host) - 1);
        host[n > 0 ? n : 0] = '\0';
        (void)snprintf(key, sizeof(key), "ns_%s", ns_kinds[i].proc);
        bool in_force = ran && status_field(inside, key, seen, sizeof(seen)) && seen[0] && strcmp(seen, host) != 0;
        buf_reset(&tmp);
        if (!avail)
            (void)buf_printf(&tmp, "\"why\":\"%s\"", strerror(e));
        feature(out, &first, ns_kinds[i].key, avail, in_force, tmp.data);
    }

    char v[128];
    bool seccomp_avail = prctl(PR_GET_SECCOMP) >= 0;
    struct sbx_seccomp_prog prog;
    struct buf serr = BUF_INIT(256);
    bool filter_ok = sbx_seccomp_build(SBX_NET_NONE, &prog, &serr) == 0;
    buf_reset(&tmp);
    (void)buf_printf(&tmp, "\"filter_instructions\":%u,\"denied\":[", filter_ok ? prog.len : 0);
    for (const char *const *s = sbx_seccomp_denied; *s; s++)
        (void)buf_printf(&tmp, "%s\"%s\"", s == sbx_seccomp_denied ? "" : ",", *s);
    (void)buf_printf(&tmp, "]");
    if (filter_ok)
        sbx_seccomp_free(&prog);
    buf_free(&serr);
    feature(out, &first, "seccomp", seccomp_avail && filter_ok,
            ran && status_field(inside, "Seccomp", v, sizeof(v)) && strcmp(v, "2") == 0, tmp.data);

    feature(out, &first, "no_new_privs", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) >= 0,
            ran && status_field(inside, "NoNewPrivs", v, sizeof(v)) && strcmp(v, "1") == 0, NULL);

    bool caps_none = ran && status_field(inside, "CapEff", v, sizeof(v)) && strcmp(v, "0000000000000000") == 0 &&
                     status_field(inside, "CapPrm", v, sizeof(v)) && strcmp(v, "0000000000000000") == 0 &&
                     status_field(inside, "CapBnd", v, sizeof(v)) && strcmp(v, "0000000000000000") == 0;
    feature(out, &first, "capabilities_dropped", true, caps_none, NULL);

    bool uid_ok = ran && status_field(inside, "Uid", v, sizeof(v)) && strncmp(v, "1000\t", 5) == 0 && res.host_uid != 0;
    buf_reset(&tmp);
    (void)buf_printf(&tmp, "\"inside_uid\":1000,\"host_uid\":%u,\"distinct_per_run\":%s", ran ? res.host_uid : 0,
                     geteuid() == 0 ? "true" : "false");
    feature(out, &first, "unprivileged_uid", true, uid_ok, tmp.data);

    bool root_ro = ran && status_field(inside, "root_ro", v, sizeof(v)) && strcmp(v, "yes") == 0;
    bool hidden = ran && status_field(inside, "etc_shadow", v, sizeof(v)) && strcmp(v, "absent") == 0 &&
                  status_field(inside, "home", v, sizeof(v)) && strcmp(v, "absent") == 0;
    feature(out, &first, "pivot_root_minimal_root", true, root_ro && hidden, NULL);
    feature(out, &first, "rlimits", true, ran, NULL);
    feature(out, &first, "pidfd", probe_pidfd(), probe_pidfd(), NULL);
    feature(out, &first, "clone3", probe_clone3(), probe_clone3(), NULL);

    /* cgroups: what the host has, and what a run got. */
    struct sbx_cgroup_env env;
    struct buf why = BUF_INIT(512);
    (void)sbx_cgroup_detect(&env, "/proc/self/mountinfo", "/proc/self/cgroup", opts ? opts->cfg.cgroup_parent : NULL,
                            &why);
    buf_reset(&tmp);
    (void)buf_printf(
        &tmp, "\"version\":%d,\"controllers\":{\"memory\":%s,\"pids\":%s,\"cpu\":%s},\"run_cgroup\":\"%s\"",
        env.version, env.have[SBX_CGC_MEMORY] ? "true" : "false", env.have[SBX_CGC_PIDS] ? "true" : "false",
        env.have[SBX_CGC_CPU] ? "true" : "false", ran ? res.cgroup : "none");
    if (why.len) {
        (void)buf_append_str(&tmp, ",\"why\":");
        (void)buf_append_json_str(&tmp, why.data, why.len);
    }
    bool cg_in_force = ran && (strcmp(res.cgroup, "v1") == 0 || strcmp(res.cgroup, "v2") == 0);
    feature(out, &first, "cgroup", env.version != 0, cg_in_force, tmp.data);
    feature(out, &first, "clone_into_cgroup", env.version == 2 && probe_clone3(), cg_in_force && env.version == 2,
            NULL);
    sbx_cgroup_env_free(&env);
    buf_free(&why);

    read_line("/proc/sys/kernel/seccomp/actions_avail", v, sizeof(v));
    (void)buf_printf(out, "},\"seccomp_actions\":");
    (void)buf_append_json_cstr(out, v);
    (void)buf_printf(out, ",\"sandbox_works\":%s,\"error\":", ran ? "true" : "false");
    if (ran) {
        (void)buf_append_str(out, "null");
        rc = 0;
    } else if (err.len) {
        (void)buf_append_json_str(out, err.data, err.len);
    } else {
        char e[400];
        (void)snprintf(e, sizeof(e), "probe run ended with %s (exit %d, signal %d): %s", sbx_reason_name(res.reason),
                       res.exit_code, res.term_signal, res.error);
        (void)buf_append_json_cstr(out, e);
    }
    (void)buf_append_char(out, '}');
    sbx_result_free(&res);
    buf_free(&tmp);
    buf_free(&err);
    return rc;
}
