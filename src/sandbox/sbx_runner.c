#include "sandbox/sbx_runner.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "sandbox/sbx_files.h"
#include "sandbox/sbx_pages.h"

/* Each language's interpreter (argv[0]); the snippet's file name is the vocabulary's (sbx_lang_snippet_name). */
static const char *const interps[SBX_LANG__COUNT] = {
    [SBX_LANG_NONE] = NULL,
    [SBX_LANG_PYTHON] = "/usr/bin/python3",
    [SBX_LANG_SH] = "/bin/sh",
    [SBX_LANG_NODE] = "/usr/bin/node",
};

const char *sbx_runner_interpreter(int lang)
{
    return (lang > 0 && lang < SBX_LANG__COUNT) ? interps[lang] : NULL;
}

/* ---- how steps fail ---- */

int sbx_step_vfail(struct sbx_step_ctx *c, const char *fmt, va_list ap)
{
    int saved = errno;
    (void)vsnprintf(c->err, sizeof(c->err), fmt, ap);
    if (saved) {
        size_t n = strlen(c->err);
        (void)snprintf(c->err + n, sizeof(c->err) - n, ": %s", strerror(saved));
    }
    return -1;
}

int sbx_step_fail(struct sbx_step_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = sbx_step_vfail(c, fmt, ap);
    va_end(ap);
    return r;
}

void sbx_step_send(int ctl, enum sbx_msg_type type, const char *text)
{
    char msg[sizeof(struct sbx_msg_hdr) + 600];
    struct sbx_msg_hdr h = {.magic = SBX_WIRE_MAGIC, .type = (uint16_t)type};
    size_t n = text ? strnlen(text, 512) : 0;
    memcpy(msg, &h, sizeof(h));
    if (n)
        memcpy(msg + sizeof(h), text, n);
    (void)sbx_wire_send(ctl, msg, sizeof(h) + n, NULL, 0);
}

int sbx_step_send_fd(int ctl, enum sbx_msg_type type, int fd)
{
    char msg[sizeof(struct sbx_msg_hdr)];
    struct sbx_msg_hdr h = {.magic = SBX_WIRE_MAGIC, .type = (uint16_t)type};
    memcpy(msg, &h, sizeof(h));
    return sbx_wire_send(ctl, msg, sizeof(msg), &fd, 1);
}

void sbx_step_die(struct sbx_step_ctx *c, const char *step)
{
    char text[600];
    (void)snprintf(text, sizeof(text), "%s: %s", step, c->err[0] ? c->err : "failed");
    sbx_step_send(c->ctl, SBX_MSG_ERROR, text);
    _exit(SBX_CHILD_SETUP_FAILED);
}

/* ---- phase B ---- */

struct runner {
    struct sbx_step_ctx sc;
    bool cgroup_memory;
    struct sbx_wire_spec ws;
    void *spec_bytes;
    int stdio[3];
    char exe[4096];
    const char **argv;
    char **envp;
};

static int step_receive(struct runner *c)
{
    sbx_step_send(c->sc.ctl, SBX_MSG_READY, NULL);
    size_t cap = SBX_WIRE_MSG_MAX;
    char *msg = xmalloc(cap);
    int fds[SBX_WIRE_MAX_FDS], nfds = 0, rc = -1;
    /* Inheritable: the run's stdio lands on 0-2, which the warm steps left free (step_stdio then has nothing to
     * do); everything else received is closed below or by close_fds before the exec. */
    long n = sbx_wire_recv_inheritable(c->sc.ctl, msg, cap, fds, &nfds);
    struct sbx_msg_hdr h;
    const void *body;
    size_t blen;
    struct buf err = BUF_INIT(256);
    if (n == 0) /* the engine let us go (pool shrinking or closing) */
        _exit(0);
    if (n < 0) {
        errno = (int)-n;
        sbx_step_fail(&c->sc, "recv");
        goto out;
    }
    if (sbx_wire_msg_parse(msg, (size_t)n, &h, &body, &blen) != 0 || h.type != SBX_MSG_RUN || nfds < 3) {
        errno = EPROTO;
        sbx_step_fail(&c->sc, "expected RUN with 3 fds");
        goto out;
    }
    if (h.flags & SBX_MSG_F_MEMFD) {
        struct stat st;
        if (nfds < 4 || fstat(fds[3], &st) == -1 || st.st_size <= 0 || st.st_size > SBX_MAX_SPEC_BYTES) {
            errno = EPROTO;
            sbx_step_fail(&c->sc, "spec memfd");
            goto out;
        }
        c->spec_bytes = xmalloc((size_t)st.st_size);
        if (pread(fds[3], c->spec_bytes, (size_t)st.st_size, 0) != st.st_size) {
            sbx_step_fail(&c->sc, "read spec memfd");
            goto out;
        }
        blen = (size_t)st.st_size;
    } else {
        c->spec_bytes = xmemdup(body, blen);
    }
    if (sbx_wire_decode_spec(c->spec_bytes, blen, &c->ws, &err) != 0) {
        errno = 0;
        sbx_step_fail(&c->sc, "%s", err.data ? err.data : "bad spec");
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        c->stdio[i] = fds[i];
        fds[i] = -1;
    }
    rc = 0;
out:
    for (int i = 0; i < nfds; i++)
        if (fds[i] != -1)
            close(fds[i]);
    buf_free(&err);
    xfree(msg);
    return rc;
}

/* The run's files, in /work: the current directory since the warm steps (AT_FDCWD is /work). */
static int step_files(struct runner *c)
{
    const struct sbx_spec *s = &c->ws.spec;
    struct buf err = BUF_INIT(512);
    int rc = -1;
    if (s->lang != SBX_LANG_NONE && s->argc == 0 && s->code) {
        if (sbx_files_write_one(AT_FDCWD, sbx_lang_snippet_name(s->lang), s->code, s->code_len, 0644, &err) != 0) {
            errno = 0;
            sbx_step_fail(&c->sc, "%s", err.data);
            goto out;
        }
    }
    if (sbx_files_write(AT_FDCWD, s->files, s->nfiles, &err) != 0) {
        errno = 0;
        sbx_step_fail(&c->sc, "%s", err.data);
        goto out;
    }
    rc = 0;
out:
    buf_free(&err);
    return rc;
}

static int step_stdio(struct runner *c)
{
    for (int i = 0; i < 3; i++) {
        if (c->stdio[i] != i && dup2(c->stdio[i], i) == -1) /* already there: received onto the free 0-2 */
            return sbx_step_fail(&c->sc, "dup2 %d", i);
    }
    for (int i = 0; i < 3; i++)
        if (c->stdio[i] > 2)
            close(c->stdio[i]);
    return 0;
}

/* The environment every run starts from (the spec adds to it or replaces entries). */
const char *const sbx_runner_base_env[] = {
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "HOME=/work",
    "TMPDIR=/tmp",
    "LANG=C.UTF-8",
    "USER=sandbox",
    "LOGNAME=sandbox",
    "SHELL=/bin/sh",
    "PWD=/work",
    "PYTHONDONTWRITEBYTECODE=1",
    NULL,
};
#define NBASE_ENV (sizeof(sbx_runner_base_env) / sizeof(sbx_runner_base_env[0]) - 1)

/* Network "egress": the proxy on the run's own loopback (sbx_egress.h), under the names tools look for (curl and
 * Python read the lower-case ones, others the upper-case; Node's fetch reads them when NODE_USE_ENV_PROXY is set,
 * from Node 22.21 and 24); local addresses stay direct. */
#define EGRESS_PROXY_URL "http://127.0.0.1:3128"
static const char *const egress_env[] = {
    "HTTP_PROXY=" EGRESS_PROXY_URL,
    "HTTPS_PROXY=" EGRESS_PROXY_URL,
    "http_proxy=" EGRESS_PROXY_URL,
    "https_proxy=" EGRESS_PROXY_URL,
    "NO_PROXY=localhost,127.0.0.1,::1",
    "no_proxy=localhost,127.0.0.1,::1",
    "NODE_USE_ENV_PROXY=1",
    NULL,
};
#define NEGRESS_ENV (sizeof(egress_env) / sizeof(egress_env[0]) - 1)

static int step_exec_args(struct runner *c)
{
    const struct sbx_spec *s = &c->ws.spec;
    size_t n = 0;
    c->argv = xcalloc(s->argc + 3, sizeof(*c->argv));
    if (s->lang != SBX_LANG_NONE) {
        c->argv[n++] = interps[s->lang];
        if (s->argc == 0)
            c->argv[n++] = sbx_lang_snippet_name(s->lang);
        for (size_t i = 0; i < s->argc; i++)
            c->argv[n++] = s->argv[i];
    } else {
        for (size_t i = 0; i < s->argc; i++)
            c->argv[n++] = s->argv[i];
    }
    if (n == 0) {
        errno = EINVAL;
        return sbx_step_fail(&c->sc, "nothing to run");
    }
    const char *prog = c->argv[0];
    if (strlen(prog) + sizeof("/usr/local/bin/") > sizeof(c->exe)) {
        errno = ENAMETOOLONG;
        return sbx_step_fail(&c->sc, "program name");
    }
    if (strncmp(prog, "/proc/", 6) == 0 || strncmp(prog, "/dev/", 5) == 0) {
        /* /proc/self/exe and friends are magic links to files outside this root (agentd itself). */
        errno = EACCES;
        return sbx_step_fail(&c->sc, "%s", prog);
    }
    if (strchr(prog, '/')) {
        memcpy(c->exe, prog, strlen(prog) + 1); /* fits: checked above */
    } else {
        static const char *const path[] = {"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"};
        bool found = false;
        for (size_t i = 0; i < sizeof(path) / sizeof(path[0]) && !found; i++) {
            struct stat st;
            (void)snprintf(c->exe, sizeof(c->exe), "%s/%s", path[i], prog);
            found = stat(c->exe, &st) == 0 && S_ISREG(st.st_mode) && access(c->exe, X_OK) == 0;
        }
        if (!found) {
            errno = ENOENT;
            return sbx_step_fail(&c->sc, "%s not found in PATH", prog);
        }
    }
    size_t nb = NBASE_ENV + (s->net == SBX_NET_EGRESS ? NEGRESS_ENV : 0), ne = 0;
    c->envp = xcalloc(nb + s->envc + 1, sizeof(*c->envp));
    for (size_t i = 0; i < nb; i++) {
        const char *def = i < NBASE_ENV ? sbx_runner_base_env[i] : egress_env[i - NBASE_ENV];
        /* An entry of the spec with the same name replaces the default. */
        size_t kl = (size_t)(strchr(def, '=') - def) + 1;
        bool overridden = false;
        for (size_t k = 0; k < s->envc; k++)
            overridden |= strncmp(s->env[k], def, kl) == 0;
        if (!overridden)
            c->envp[ne++] = (char *)def;
    }
    for (size_t k = 0; k < s->envc; k++)
        c->envp[ne++] = (char *)s->env[k];
    return 0;
}

size_t sbx_runner_rlimits(const struct sbx_limits *l, bool cgroup_memory, struct sbx_rlimit *out)
{
    size_t n = 0;
/* The name is made here, before RLIMIT_NPROC and friends (macros in glibc) are expanded by a macro they pass to. */
#define RLX(r, nm, s, h, f)                                                                                            \
    (out[n++] = (struct sbx_rlimit){.res = (int)(r), .name = &(nm)[7], .soft = (s), .hard = (h), .fixed = (f)})
#define RL(r, s, h) RLX(r, #r, s, h, false)
#define RLF(r, v) RLX(r, #r, v, v, true) /* the same for every run */
    /* soft == hard for CPU: the kernel then sends SIGKILL at the limit, which even a PID 1 cannot ignore. */
    uint64_t cpu_s = l->cpu_ms ? (l->cpu_ms + 999) / 1000 : RLIM_INFINITY;
    uint64_t as = l->address_space_bytes ? l->address_space_bytes : RLIM_INFINITY;
    /* Without a memory cgroup the limit can only be per process. RLIMIT_DATA counts private writable memory
     * (made writable by mmap or mprotect) but not PROT_NONE reservations, so V8, which reserves gigabytes up
     * front, still starts, while a real allocation past the limit fails. */
    if (!cgroup_memory)
        RL(RLIMIT_DATA, l->memory_bytes, l->memory_bytes);
    RL(RLIMIT_CPU, cpu_s, cpu_s);
    RLF(RLIMIT_CORE, 0);
    RL(RLIMIT_NPROC, l->pids, l->pids);
    RL(RLIMIT_NOFILE, l->nofile, l->nofile);
    RL(RLIMIT_FSIZE, l->fsize_bytes, l->fsize_bytes);
    RLF(RLIMIT_STACK, 8ull << 20);
    RLF(RLIMIT_MEMLOCK, 64ull << 10);
    RLF(RLIMIT_MSGQUEUE, 1024);
    RLF(RLIMIT_NICE, 0);
    RLF(RLIMIT_RTPRIO, 0);
    RLF(RLIMIT_SIGPENDING, 1024);
    /* Last: the address-space limit also binds this process until execve replaces it. */
    RL(RLIMIT_AS, as, as);
#undef RLF
#undef RL
#undef RLX
    return n;
}

/* The rlimits of the run (fixed: those the same for every run, set before it exists by the warm steps). */
static int set_rlimits(struct runner *c, const struct sbx_limits *l, bool fixed)
{
    struct sbx_rlimit rl[SBX_RLIMITS_MAX];
    size_t n = sbx_runner_rlimits(l, c->cgroup_memory, rl);
    for (size_t i = 0; i < n; i++) {
        if (rl[i].fixed != fixed)
            continue;
        struct rlimit r = {.rlim_cur = rl[i].soft, .rlim_max = rl[i].hard};
        if (setrlimit(rl[i].res, &r) == -1)
            return sbx_step_fail(&c->sc, "setrlimit(%s)", rl[i].name);
    }
    return 0;
}

static int step_rlimits(struct runner *c)
{
    return set_rlimits(c, &c->ws.spec.limits, false);
}

static int step_close_fds(struct runner *c)
{
    /* 0-2 are the pipes, 3 the control socket (close-on-exec); nothing else may cross into the program. */
    if (syscall(SYS_close_range, 4u, ~0u, 0u) == -1) {
        for (int fd = 4; fd < 65536; fd++)
            (void)close(fd);
    }
    return 0;
}


/* ---- the warm steps: what no run decides, done before READY ---- */

/* /work becomes the current directory, and the engine gets an fd on it now rather than mid-run: it keeps the tmpfs
 * alive past the end of the run, and reads from outside the files a run that collects them left there. */
static int warm_workdir(struct runner *c)
{
    if (chdir("/work") == -1)
        return sbx_step_fail(&c->sc, "chdir /work");
    int dfd = open("/work", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd == -1)
        return sbx_step_fail(&c->sc, "open /work");
    int rc = sbx_step_send_fd(c->sc.ctl, SBX_MSG_WORKDIR, dfd);
    close(dfd);
    if (rc != 0) {
        errno = -rc;
        return sbx_step_fail(&c->sc, "send /work");
    }
    return 0;
}

static int warm_rlimits(struct runner *c)
{
    static const struct sbx_limits any; /* the fixed ones do not depend on the limits */
    return set_rlimits(c, &any, true);
}

/* 0-2 (/dev/null until now) are closed, so the RUN's three fds land on them (step_receive). */
static int warm_stdio(struct runner *c)
{
    for (int fd = 0; fd < 3; fd++)
        if (close(fd) == -1 && errno != EBADF)
            return sbx_step_fail(&c->sc, "close %d", fd);
    return 0;
}

/* Touches, while the child is still only warm, the memory a run's steps will use: the heap (kept: no trimming) and
 * the stack. A first touch of a page is a fault, and on a VM a costly one (several microseconds each, tens of them
 * per run): paid here, before any run exists, not between the RUN message and the program's exec. */
static void __attribute__((noinline)) touch_stack(void)
{
    volatile char pad[64 << 10];
    memset((char *)pad, 0, sizeof(pad));
}

/* The runner's code and data mapped now: run-time calls of libc functions not called yet would each take a page
 * fault for their code, between the RUN and the exec (sbx_pages.h). */
static void prefault(void)
{
    sbx_pages_objects(true);
    (void)mallopt(M_TRIM_THRESHOLD, 64 << 20);
    (void)mallopt(M_MMAP_THRESHOLD, 16 << 20);
    size_t n = 2 * SBX_WIRE_MSG_MAX + (64u << 10);
    char *p = xmalloc(n);
    memset(p, 0, n);
    xfree(p);
    touch_stack();
}

struct step {
    const char *name;
    int (*fn)(struct runner *c);
};

static void run_steps(struct runner *c, const struct step *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        errno = 0;
        c->sc.err[0] = '\0';
        if (st[i].fn(c) != 0)
            sbx_step_die(&c->sc, st[i].name);
    }
}

void sbx_runner_main(int ctl, bool cgroup_memory)
{
    static struct runner c; /* static: this process has nothing else to do, and the stack stays small */
    memset(&c, 0, sizeof(c));
    c.sc.ctl = ctl;
    /* The control socket's EOF tells the engine the program was exec'd (an exec'd runner got it inheritable). */
    if (fcntl(ctl, F_SETFD, FD_CLOEXEC) == -1) {
        sbx_step_fail(&c.sc, "fcntl");
        sbx_step_die(&c.sc, "receive");
    }
    c.cgroup_memory = cgroup_memory;
    static const struct step warm[] = {{"workdir", warm_workdir}, {"rlimits", warm_rlimits}, {"stdio", warm_stdio}};
    static const struct step steps[] = {
        {"receive", step_receive},     {"files", step_files},   {"stdio", step_stdio}, {"exec_args", step_exec_args},
        {"close_fds", step_close_fds}, {"rlimits", step_rlimits},
    };
    run_steps(&c, warm, sizeof(warm) / sizeof(warm[0]));
    prefault();
    run_steps(&c, steps, sizeof(steps) / sizeof(steps[0]));
    execve(c.exe, (char *const *)c.argv, c.envp);
    c.sc.err[0] = '\0';
    sbx_step_fail(&c.sc, "%s", c.exe);
    sbx_step_die(&c.sc, "execve");
}
