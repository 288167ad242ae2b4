#include "sandbox/sbx_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "sandbox/sbx_cgroup.h"
#include "sandbox/sbx_contain.h"
#include "sandbox/sbx_pages.h"
#include "sandbox/sbx_pywarm.h"
#include "sandbox/sbx_runner.h"
#include "sandbox/sbx_wire.h"

/* What of a run the engine holds past its exit, for the reaper to free: its namespaces (mnt, net, ipc, uts, pid) and
 * its seccomp filter (through the filter's listener fd, sent by the child: SBX_MSG_HOLD). */
#define SBX_NS_HELD 5
#define SBX_HELD (SBX_NS_HELD + 1)

/* A child that has not said READY after this long is stuck: kill it. */
#define SETUP_TIMEOUT_MS 10000
/* After this many warm children in a row fail set-up, stop warming (each run then shows the error). */
#define MAX_SETUP_FAILURES 3

enum child_state { CH_STARTING, CH_READY, CH_RUNNING };

struct child {
    struct sbx_engine *eng;
    struct child *prev, *next;
    pid_t pid;
    int pidfd, ctl;
    int work_fd; /* /work, sent by the child while warm (a warm interpreter: with its run) (-1: none) */
    bool collect; /* the run collects its files: work_fd goes with its result */
    int held[SBX_HELD]; /* the run's namespaces and filter, held so that their teardown is not the exiting program's */
    uint32_t slot;
    struct sbx_cgroup cg;
    bool has_cg;
    char cg_name[48];
    uint64_t cg_mem; /* limits already written to the cgroup (UINT64_MAX: none yet) */
    uint32_t cg_pids, cg_cpu;
    enum child_state state;
    bool python; /* a warm interpreter (sbx_pywarm.h): takes only runs sbx_pywarm_eligible accepts */
    uint64_t work_bytes, tmp_bytes; /* its /work and /tmp sizes: a run needs a child made for its sizes */
    enum sbx_net net;               /* the network it was made for: a run needs a child of its own mode */
    int egress_fd;                  /* egress: the proxy's listener it sent (SBX_MSG_EGRESS), until on_egress */
    /* the run, once attached */
    bool attached;
    uint64_t id;
    char *spec;
    size_t spec_len;
    int fds[3];
    struct sbx_limits limits;
    uint64_t t_start_ns;
    uint64_t t_exec_ns; /* when its exec was seen (0: not seen) */
    /* progress */
    uv_poll_t ctl_poll, pid_poll;
    uv_timer_t timer;
    int handles;
    bool ctl_open, exec_seen, reaped, killed;
    bool release_due; /* reaped and reported: child_release runs on the next refill turn (see finalize) */
    bool zombie;      /* ended and reported, but not waited for yet (on_pid): child_release does that */
    bool offered;     /* reserved for a direct run of the client (hooks.on_offer) */
    uint64_t token;
    enum sbx_reason kill_reason;
    char error[256];
};

struct pending {
    struct pending *next;
    uint64_t id;
    char *spec;
    size_t len;
    int fds[3];
    struct sbx_limits limits;
    enum sbx_net net;
    bool py;      /* a warm interpreter may serve it */
    bool collect; /* spec.collect_files */
};

struct sbx_engine {
    uv_loop_t *loop;
    struct sbx_engine_hooks hooks;
    void *ud;
    unsigned warm, warm_py; /* plain children and Python interpreters kept ready */
    uint32_t uid_base, uid_count;
    bool privileged;
    uint32_t own_uid, own_gid;
    struct sbx_cgroup_env cgenv;
    int cgver;
    char cg_why[256];
    struct sbx_contain_plan plan;
    unsigned char *slots;
    uint32_t slot_cursor;
    struct child *children;
    unsigned nchildren;
    struct pending *pend_head, *pend_tail;
    uint64_t seq;
    unsigned setup_failures[2]; /* in a row, [python] */
    char last_error[256];
    bool closing;
    /* Warming runs a moment after a run starts or ends, so a request that is already on its way is served
     * first instead of waiting behind a clone. */
    uv_timer_t refill_timer;
    bool timer_open;
    unsigned last_ready; /* what on_ready last said */
    uint64_t next_token; /* of offers */
    int runner_fd; /* the runner's image (sbx_runner.h), read-only and sealed, or -1: children run phase B themselves */
    /* The reaper: a process of ours that closes the runs' mount namespaces (see reaper_start). */
    pid_t reaper_pid;
    int reaper_sock;
};

static void refill(struct sbx_engine *eng);
static void refill_soon(struct sbx_engine *eng);
static void refill_after_result(struct sbx_engine *eng);
/* The refill turn: what waits for it (releasing ended children, warming new ones) runs that long after it is asked
 * for, so that results and new runs are served first. */
#define REFILL_TURN_MS 1
static void engine_maybe_free(struct sbx_engine *eng);
static void drain_pending(struct sbx_engine *eng);
static void finalize(struct child *ch, int status, const struct rusage *ru, uint64_t t_end);
static void release_due(struct sbx_engine *eng);
static void offer(struct child *ch);

static void close_fds(int fds[3])
{
    for (int i = 0; i < 3; i++) {
        if (fds[i] != -1)
            close(fds[i]);
        fds[i] = -1;
    }
}

static void result_error(struct sbx_engine *eng, uint64_t id, enum sbx_reason reason, const char *msg)
{
    struct sbx_exit e;
    memset(&e, 0, sizeof(e));
    e.reason = reason;
    e.exit_code = -1;
    (void)snprintf(e.cgroup, sizeof(e.cgroup), "%s", eng->cgver == 2 ? "v2" : eng->cgver == 1 ? "v1" : "none");
    if (msg)
        (void)snprintf(e.error, sizeof(e.error), "%s", msg);
    eng->hooks.on_result(eng->ud, id, &e, -1);
}

/* ---- uid slots ---- */

static int slot_take(struct sbx_engine *eng, uint32_t *out)
{
    for (uint32_t i = 0; i < eng->uid_count; i++) {
        uint32_t s = (eng->slot_cursor + i) % eng->uid_count;
        if (!eng->slots[s]) {
            eng->slots[s] = 1;
            eng->slot_cursor = (s + 1) % eng->uid_count;
            *out = s;
            return 0;
        }
    }
    return -1;
}

static void slot_give(struct sbx_engine *eng, uint32_t s)
{
    eng->slots[s] = 0;
}

static uint32_t slot_uid(const struct sbx_engine *eng, uint32_t slot)
{
    return eng->privileged ? eng->uid_base + slot : eng->own_uid;
}

/* ---- children ---- */

static unsigned count(const struct sbx_engine *eng, enum child_state st, bool attached)
{
    unsigned n = 0;
    for (const struct child *c = eng->children; c; c = c->next)
        n += (c->state == st && c->attached == attached && !c->reaped);
    return n;
}

/* Free children of one kind (plain or Python) in state st. */
static unsigned count_kind(const struct sbx_engine *eng, enum child_state st, bool python)
{
    unsigned n = 0;
    for (const struct child *c = eng->children; c; c = c->next)
        n += (c->state == st && !c->attached && !c->reaped && c->python == python);
    return n;
}

unsigned sbx_engine_ready(const struct sbx_engine *eng)
{
    return count(eng, CH_READY, false);
}

static void ready_changed(struct sbx_engine *eng)
{
    unsigned n = count(eng, CH_READY, false);
    if (n != eng->last_ready && !eng->closing) {
        eng->last_ready = n;
        if (eng->hooks.on_ready)
            eng->hooks.on_ready(eng->ud, n);
    }
}

static void kill_child(struct child *ch)
{
    if (ch->reaped)
        return;
    if (syscall(SYS_pidfd_send_signal, ch->pidfd, SIGKILL, NULL, 0) == -1 && errno != ESRCH)
        (void)kill(ch->pid, SIGKILL);
    if (ch->has_cg)
        sbx_cgroup_kill(&ch->cg);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct child *ch = h->data;
    if (--ch->handles > 0)
        return;
    struct sbx_engine *eng = ch->eng;
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        eng->children = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    eng->nchildren--;
    xfree(ch->spec);
    xfree(ch);
    engine_maybe_free(eng);
}

static void reaper_stop(struct sbx_engine *eng);

static void engine_maybe_free(struct sbx_engine *eng)
{
    if (!eng->closing || eng->nchildren || eng->timer_open)
        return;
    reaper_stop(eng);
    if (eng->runner_fd != -1)
        close(eng->runner_fd);
    sbx_cgroup_env_free(&eng->cgenv);
    sbx_contain_plan_free(&eng->plan);
    xfree(eng->slots);
    xfree(eng);
}

static void on_refill_timer_closed(uv_handle_t *h)
{
    struct sbx_engine *eng = h->data;
    eng->timer_open = false;
    engine_maybe_free(eng);
}

/* ---- the runner ----
 *
 * Each plain child execs the runner (sbx_runner.h) once it is isolated. Its image is linked into agentd and put in
 * a sealed memfd once per engine; children get a read-only fd to it (a writable one would make the exec fail with
 * ETXTBSY). Without it (no memfd, an empty image) children run phase B themselves: slower, the same steps. */

static int runner_open(void)
{
    size_t len = (size_t)(sbx_runner_image_end - sbx_runner_image);
    const char *env = getenv("AGENTD_SANDBOX_RUNNER"); /* "0": children run phase B themselves (tests, triage) */
    if (len == 0 || (env && strcmp(env, "0") == 0))
        return -1;
    int fd = memfd_create(SBX_RUNNER_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd == -1) {
        log_warn("sandbox: runner not used (memfd_create: %s)", strerror(errno));
        return -1;
    }
    int ro = -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, sbx_runner_image + off, len - off);
        if (w <= 0) {
            if (w == -1 && errno == EINTR)
                continue;
            goto out;
        }
        off += (size_t)w;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == -1)
        goto out;
    char path[64];
    (void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ro = open(path, O_RDONLY | O_CLOEXEC);
out:
    if (ro == -1)
        log_warn("sandbox: runner not used (%s)", strerror(errno));
    close(fd);
    return ro;
}

/* ---- the reaper ----
 *
 * When a run's last process exits, the kernel tears down the namespaces it leaves behind. The mount namespace's tree
 * is unmounted, then an RCU grace period is awaited (namespace_unlock -> synchronize_rcu_expedited) before its tmpfs
 * mounts are freed: from a few hundred microseconds to a few milliseconds on a busy host. The network namespace is
 * queued to a kernel worker (cleanup_net: unregistering the loopback device, more grace periods), and the IPC
 * namespace too. Done at the exit, all of it is on the run's critical path: the exit itself is slower, and the workers
 * it wakes take the CPUs from the engine and the daemon just when they report the result (measured: 0.3-0.7 ms of a
 * 4 ms /bin/true run on 2 CPUs). So the engine holds each run's namespaces from its spawn, and once the run is
 * reported, gives them to the reaper: a forked process that holds nothing else (every other fd closed) and does one
 * thing, receive fds and close them a moment later (REAPER_HOLD_MS), after the caller has its answer and usually
 * before the next run. It never holds more than REAPER_MAX_HELD runs' namespaces (their tmpfs memory with them):
 * past that the oldest go at once. An fd in flight keeps its namespace alive, so nothing is freed early; if the reaper
 * is gone or cannot keep up (its socket full), the engine closes the fds itself, which is only slower. The reaper
 * dies with the engine (parent-death signal) and is waited for when the engine is freed, after it has closed what it
 * was sent. */

#define REAPER_HOLD_MS 20
#define REAPER_MAX_HELD 16

struct reaper_held {
    int fds[SBX_WIRE_MAX_FDS];
    int n;
    uint64_t due_ms;
};

static void reaper_close(struct reaper_held *h)
{
    for (int i = 0; i < h->n; i++)
        close(h->fds[i]);
    h->n = 0;
}

static void reaper_main(int sock)
{
    (void)prctl(PR_SET_NAME, "agentd-reaper");
    static struct reaper_held ring[REAPER_MAX_HELD]; /* oldest at head */
    unsigned head = 0, count = 0;
    for (;;) {
        int timeout = -1;
        if (count > 0) {
            uint64_t now = time_mono_us() / 1000u, due = ring[head].due_ms;
            timeout = due > now ? (int)(due - now) : 0;
        }
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout);
        if (pr > 0) {
            char b[8];
            int fds[SBX_WIRE_MAX_FDS], nfds = 0;
            long n = sbx_wire_recv(sock, b, sizeof(b), fds, &nfds);
            if (n == 0 || (n < 0 && n != -EINTR && n != -EMSGSIZE && n != -EAGAIN)) {
                for (unsigned i = 0; i < count; i++)
                    reaper_close(&ring[(head + i) % REAPER_MAX_HELD]);
                for (int i = 0; i < nfds; i++)
                    close(fds[i]);
                _exit(0);
            }
            if (nfds > 0) {
                if (count == REAPER_MAX_HELD) {
                    reaper_close(&ring[head]);
                    head = (head + 1) % REAPER_MAX_HELD;
                    count--;
                }
                struct reaper_held *h = &ring[(head + count) % REAPER_MAX_HELD];
                memcpy(h->fds, fds, sizeof(int) * (size_t)nfds);
                h->n = nfds;
                h->due_ms = time_mono_us() / 1000u + REAPER_HOLD_MS;
                count++;
            }
        }
        uint64_t now = time_mono_us() / 1000u;
        while (count > 0 && ring[head].due_ms <= now) {
            reaper_close(&ring[head]);
            head = (head + 1) % REAPER_MAX_HELD;
            count--;
        }
    }
}

static void reaper_start(struct sbx_engine *eng)
{
    int sv[2];
    eng->reaper_pid = -1;
    eng->reaper_sock = -1;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
        return;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        /* Nothing of the engine's: no pipes of runs, no sockets, no cgroup files (0-2 go to /dev/null). */
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        for (int fd = 0; fd < 3 && null != -1; fd++)
            (void)dup2(null, fd);
        if (sv[1] != 3 && dup2(sv[1], 3) == -1)
            _exit(1);
        if (syscall(SYS_close_range, 4u, ~0u, 0u) == -1)
            for (int fd = 4; fd < 65536; fd++)
                (void)close(fd);
        reaper_main(3);
    }
    close(sv[1]);
    if (pid == -1) {
        log_warn("sandbox: no reaper (fork: %s): run namespaces are released in the engine's loop", strerror(errno));
        close(sv[0]);
        return;
    }
    (void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
    eng->reaper_pid = pid;
    eng->reaper_sock = sv[0];
}

/* Hands the fds (owned; -1 entries skipped) to the reaper, or closes them here. */
static void reaper_give(struct sbx_engine *eng, int *fds, int n)
{
    int give[SBX_WIRE_MAX_FDS], ng = 0;
    for (int i = 0; i < n && ng < SBX_WIRE_MAX_FDS; i++)
        if (fds[i] != -1)
            give[ng++] = fds[i];
    if (ng > 0 && eng->reaper_sock != -1 && sbx_wire_send(eng->reaper_sock, "R", 1, give, ng) != 0) {
        /* Gone or behind: from here on, this loop closes them. */
        close(eng->reaper_sock);
        eng->reaper_sock = -1;
    }
    for (int i = 0; i < n; i++) {
        if (fds[i] != -1)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* EOF makes the reaper close what it still has and exit; wait for it, so nothing of a run outlives the engine. */
static void reaper_stop(struct sbx_engine *eng)
{
    if (eng->reaper_sock != -1)
        close(eng->reaper_sock);
    eng->reaper_sock = -1;
    if (eng->reaper_pid > 0) {
        while (waitpid(eng->reaper_pid, NULL, __WALL) == -1 && errno == EINTR)
            ;
        eng->reaper_pid = -1;
    }
}

/* Releases everything a child holds once it is reaped. */
static void child_release(struct child *ch)
{
    struct sbx_engine *eng = ch->eng;
    if (ch->zombie) { /* first: its cgroup goes below, and a zombie may still count as one of its tasks */
        int st;
        while (wait4(ch->pid, &st, __WALL, NULL) == -1 && errno == EINTR)
            ;
        ch->zombie = false;
    }
    close_fds(ch->fds);
    if (ch->has_cg) {
        (void)sbx_cgroup_destroy(&ch->cg);
        ch->has_cg = false;
    }
    slot_give(eng, ch->slot);
    uv_close((uv_handle_t *)&ch->timer, on_handle_closed);
    uv_close((uv_handle_t *)&ch->pid_poll, on_handle_closed);
    if (ch->ctl_open) {
        uv_close((uv_handle_t *)&ch->ctl_poll, on_handle_closed);
        ch->ctl_open = false;
    }
    if (ch->ctl != -1)
        close(ch->ctl);
    ch->ctl = -1;
    if (ch->work_fd != -1)
        close(ch->work_fd);
    ch->work_fd = -1;
    if (ch->egress_fd != -1)
        close(ch->egress_fd);
    ch->egress_fd = -1;
    close(ch->pidfd);
    ch->pidfd = -1;
    reaper_give(eng, ch->held, SBX_HELD);
}

static int write_proc(pid_t pid, const char *file, const char *text, struct buf *err)
{
    char path[64];
    (void)snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd == -1) {
        (void)buf_printf(err, "open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int saved = errno;
    close(fd);
    if (w != (ssize_t)n) {
        (void)buf_printf(err, "write %s: %s", path, strerror(saved));
        return -1;
    }
    return 0;
}

static bool children_sched_other; /* sbx_engine_background */

int sbx_engine_background(void)
{
    struct sched_param sp = {.sched_priority = 0};
    if (sched_getscheduler(0) != SCHED_OTHER)
        return 0;
    if (sched_setscheduler(0, SCHED_BATCH, &sp) == -1)
        return -1;
    children_sched_other = true;
    return 0;
}

static pid_t clone_child(uint64_t flags, int cgroup_fd, int *pidfd, bool *into_cgroup)
{
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = flags | CLONE_PIDFD | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = SIGCHLD;
    args.cgroup = cgroup_fd >= 0 ? (uint64_t)cgroup_fd : 0;
    *into_cgroup = cgroup_fd >= 0;
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == -1 && (errno == ENOSYS || errno == E2BIG || (errno == EINVAL && cgroup_fd >= 0))) {
        /* No clone3 (old kernel, or a container seccomp profile that answers ENOSYS): clone(2) can still hand
         * back a pidfd (through the parent_tid argument), but not join a cgroup; the caller attaches it. */
        *into_cgroup = false;
        pid = syscall(SYS_clone, (unsigned long)(flags | CLONE_PIDFD | SIGCHLD), NULL, pidfd, NULL, NULL);
    }
    return (pid_t)pid;
}

static void on_ctl(uv_poll_t *p, int status, int events);
static void on_pid(uv_poll_t *p, int status, int events);
static void on_timer(uv_timer_t *t);
static void dispatch(struct child *ch);

/* Starts a child; on failure returns NULL with err set and nothing left behind. */
static struct child *spawn(struct sbx_engine *eng, uint64_t work_bytes, uint64_t tmp_bytes, bool python,
                           enum sbx_net net, struct buf *err)
{
    struct child *ch = xcalloc(1, sizeof(*ch));
    int sv[2] = {-1, -1};
    ch->eng = eng;
    ch->python = python;
    ch->work_bytes = work_bytes;
    ch->tmp_bytes = tmp_bytes;
    ch->net = net;
    ch->pidfd = ch->ctl = ch->work_fd = ch->egress_fd = -1;
    for (int i = 0; i < SBX_HELD; i++)
        ch->held[i] = -1;
    ch->fds[0] = ch->fds[1] = ch->fds[2] = -1;
    if (slot_take(eng, &ch->slot) != 0) {
        (void)buf_printf(err, "no free uid slot");
        xfree(ch);
        return NULL;
    }
    if (eng->cgver) {
        /* The engine's pid in the name lets a later engine tell our leftovers from a live engine's groups. */
        (void)snprintf(ch->cg_name, sizeof(ch->cg_name), "run-%d-%" PRIu64, (int)getpid(), ++eng->seq);
        if (sbx_cgroup_create(&eng->cgenv, ch->cg_name, &ch->cg, err) != 0)
            goto fail;
        ch->has_cg = true;
        sbx_cgroup_open_stats(&ch->cg);
        /* Most runs keep the default limits: write them now, so a warm run's dispatch writes nothing. */
        struct sbx_limits def;
        sbx_limits_default(&def);
        ch->cg_mem = UINT64_MAX;
        if (sbx_cgroup_set_limits(&ch->cg, def.memory_bytes, def.pids, def.cpu_percent, err) != 0)
            goto fail;
        ch->cg_mem = def.memory_bytes;
        ch->cg_pids = def.pids;
        ch->cg_cpu = def.cpu_percent;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        (void)buf_printf(err, "socketpair: %s", strerror(errno));
        goto fail;
    }
    bool into_cg = false;
    uint64_t flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
    uint64_t t_clone = uv_hrtime();
    pid_t pid = clone_child(flags, ch->has_cg ? ch->cg.fd : -1, &ch->pidfd, &into_cg);
    t_clone = uv_hrtime() - t_clone;
    if (pid == -1) {
        (void)buf_printf(err, "clone: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        close(sv[0]);
        if (children_sched_other) {
            struct sched_param sp = {.sched_priority = 0};
            (void)sched_setscheduler(0, SCHED_OTHER, &sp);
        }
        struct sbx_contain_args args = {.work_bytes = work_bytes,
                                        .tmp_bytes = tmp_bytes,
                                        .cgroup_memory = ch->has_cg && eng->cgenv.have[SBX_CGC_MEMORY],
                                        .python_argv = python ? sbx_pywarm_argv() : NULL,
                                        .runner_fd = eng->runner_fd,
                                        .net = net};
        sbx_contain_child(&eng->plan, &args, sv[1]); /* never returns */
    }
    ch->pid = pid;
    /* Namespace creation takes kernel-wide locks (network namespaces above all): say when it was slow. */
    if (t_clone > 200u * 1000 * 1000)
        log_warn("sandbox: clone with new namespaces took %.1f ms", (double)t_clone / 1e6);
    close(sv[1]);
    sv[1] = -1;
    ch->ctl = sv[0];
    sv[0] = -1;
    (void)fcntl(ch->ctl, F_SETFL, O_NONBLOCK);

    /* Hold its namespaces (see the reaper, above): opened now, while the child still has our credentials (it
     * waits for MAPPED), so that this works unprivileged too. Without them the run is only slower. Its user
     * namespace is held by these; its cgroup namespace is made later, by the child, and costs nothing to free. */
    {
        static const char *const ns[SBX_NS_HELD] = {"mnt", "net", "ipc", "uts", "pid"};
        char nspath[64];
        for (int i = 0; i < SBX_NS_HELD; i++) {
            (void)snprintf(nspath, sizeof(nspath), "/proc/%d/ns/%s", (int)pid, ns[i]);
            ch->held[i] = open(nspath, O_RDONLY | O_CLOEXEC);
        }
    }
    /* Map the child's uid/gid 1000 to its own unprivileged host ids (or, when we are not root, to ours: the
     * only mapping an unprivileged process may write). setgroups is denied so the child can never shed a
     * supplementary group that a file's permissions hold against it. */
    char map[64];
    uint32_t uid = slot_uid(eng, ch->slot), gid = eng->privileged ? uid : eng->own_gid;
    if (write_proc(pid, "setgroups", "deny", err) != 0)
        goto fail_child;
    (void)snprintf(map, sizeof(map), "%d %u 1\n", SBX_IN_UID, uid);
    if (write_proc(pid, "uid_map", map, err) != 0)
        goto fail_child;
    (void)snprintf(map, sizeof(map), "%d %u 1\n", SBX_IN_GID, gid);
    if (write_proc(pid, "gid_map", map, err) != 0)
        goto fail_child;
    if (ch->has_cg && !into_cg && sbx_cgroup_attach(&ch->cg, pid, err) != 0)
        goto fail_child;
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_MAPPED, 0, 0);
    int src = sbx_wire_send(ch->ctl, m.data, m.len, NULL, 0);
    buf_free(&m);
    if (src != 0) {
        (void)buf_printf(err, "send MAPPED: %s", strerror(-src));
        goto fail_child;
    }

    uv_poll_init(eng->loop, &ch->ctl_poll, ch->ctl);
    uv_poll_init(eng->loop, &ch->pid_poll, ch->pidfd);
    uv_timer_init(eng->loop, &ch->timer);
    ch->ctl_poll.data = ch->pid_poll.data = ch->timer.data = ch;
    ch->handles = 3;
    ch->ctl_open = true;
    uv_poll_start(&ch->ctl_poll, UV_READABLE, on_ctl);
    uv_poll_start(&ch->pid_poll, UV_READABLE, on_pid);
    uv_timer_start(&ch->timer, on_timer, SETUP_TIMEOUT_MS, 0);
    ch->state = CH_STARTING;
    ch->next = eng->children;
    if (eng->children)
        eng->children->prev = ch;
    eng->children = ch;
    eng->nchildren++;
    return ch;

fail_child:
    (void)kill(pid, SIGKILL);
    (void)waitpid(pid, NULL, 0);
fail:
    if (sv[0] != -1)
        close(sv[0]);
    if (sv[1] != -1)
        close(sv[1]);
    if (ch->ctl != -1)
        close(ch->ctl);
    if (ch->pidfd != -1)
        close(ch->pidfd);
    for (int i = 0; i < SBX_HELD; i++)
        if (ch->held[i] != -1)
            close(ch->held[i]);
    if (ch->has_cg)
        (void)sbx_cgroup_destroy(&ch->cg);
    slot_give(eng, ch->slot);
    xfree(ch);
    return NULL;
}

/* Run id is ch's from now on, with limits l; its deadline counts from here, so a cold start's set-up is inside it
 * too. */
static void start_run(struct child *ch, uint64_t id, const struct sbx_limits *l, bool collect)
{
    ch->attached = true;
    ch->id = id;
    ch->limits = *l;
    ch->collect = collect;
    ch->t_start_ns = uv_hrtime();
    /* The loop's clock may be stale (it is read once per iteration): refresh it, or the timer fires early by however
     * long this turn ran. */
    uv_update_time(ch->eng->loop);
    uv_timer_start(&ch->timer, on_timer, l->wall_ms, 0);
}

/* ch has its RUN. From here the child only says something if its set-up fails (ERROR, then it dies), and the
 * socket's EOF is its execve: both are read when it is reaped (finalize). Watching for the EOF would wake this loop,
 * and the client it tells, in the middle of every run, competing with the program for the CPU; only the debug log,
 * which names the moment of the exec, still watches. */
static void running(struct child *ch)
{
    ch->state = CH_RUNNING;
    if (ch->ctl_open && LL_DEBUG < log_min_level)
        uv_poll_stop(&ch->ctl_poll);
}

static void attach(struct child *ch, uint64_t id, char *spec, size_t len, int fds[3], const struct sbx_limits *l,
                   bool collect)
{
    ch->spec = spec;
    ch->spec_len = len;
    for (int i = 0; i < 3; i++) {
        ch->fds[i] = fds[i];
        fds[i] = -1;
    }
    start_run(ch, id, l, collect);
    if (ch->state == CH_READY) {
        dispatch(ch);
        ready_changed(ch->eng);
    }
}

static void dispatch(struct child *ch)
{
    struct buf err = BUF_INIT(256);
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    struct buf py = BUF_INIT(BUF_UNBOUNDED);
    int fds[4] = {ch->fds[0], ch->fds[1], ch->fds[2], -1}, nfds = 3;
    uint16_t flags = 0;
    const struct sbx_limits *l = &ch->limits;
    if (ch->killed) /* cancelled or timed out while it was getting ready: nothing to start */
        goto out;
    if (ch->has_cg && (l->memory_bytes != ch->cg_mem || l->pids != ch->cg_pids || l->cpu_percent != ch->cg_cpu)) {
        if (sbx_cgroup_set_limits(&ch->cg, l->memory_bytes, l->pids, l->cpu_percent, &err) != 0) {
            (void)snprintf(ch->error, sizeof(ch->error), "cgroup limits: %s", err.data);
            kill_child(ch);
            goto out;
        }
    }
    /* A warm interpreter gets the run in the form its bootstrap reads (sbx_pywarm.h); a plain child the spec. */
    const char *body = ch->spec;
    size_t body_len = ch->spec_len;
    enum sbx_msg_type type = SBX_MSG_RUN;
    if (ch->python) {
        struct sbx_wire_spec ws;
        if (sbx_wire_decode_spec(ch->spec, ch->spec_len, &ws, &err) != 0) {
            (void)snprintf(ch->error, sizeof(ch->error), "spec: %s", err.data ? err.data : "?");
            kill_child(ch);
            goto out;
        }
        sbx_pywarm_encode(&ws.spec, ch->has_cg && ch->eng->cgenv.have[SBX_CGC_MEMORY], &py);
        sbx_wire_spec_free(&ws);
        body = py.data;
        body_len = py.len;
        type = (enum sbx_msg_type)SBX_MSG_PYRUN;
    }
    if (body_len > SBX_WIRE_INLINE_MAX) {
        /* Too big for one datagram: hand it over in a sealed memfd. */
        int mfd = memfd_create("sbx-spec", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (mfd == -1 || write(mfd, body, body_len) != (ssize_t)body_len ||
            fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == -1) {
            (void)snprintf(ch->error, sizeof(ch->error), "spec memfd: %s", strerror(errno));
            if (mfd != -1)
                close(mfd);
            kill_child(ch);
            goto out;
        }
        fds[nfds++] = mfd;
        flags = SBX_MSG_F_MEMFD;
        sbx_wire_msg_begin(&m, type, flags, ch->id);
    } else {
        sbx_wire_msg_begin(&m, type, flags, ch->id);
        (void)buf_append(&m, body, body_len);
    }
    int rc = sbx_wire_send(ch->ctl, m.data, m.len, fds, nfds);
    if (nfds == 4)
        close(fds[3]);
    if (rc != 0) {
        (void)snprintf(ch->error, sizeof(ch->error), "send RUN: %s", strerror(-rc));
        kill_child(ch);
        goto out;
    }
    running(ch);
    if (ch->egress_fd != -1) {
        int lfd = ch->egress_fd;
        ch->egress_fd = -1;
        if (ch->eng->hooks.on_egress)
            ch->eng->hooks.on_egress(ch->eng->ud, ch->id, lfd);
        else
            close(lfd);
    }
out:
    /* The child has its own copies now (or is being killed): ours must go, or EOF would never come. */
    close_fds(ch->fds);
    xfree_null(&ch->spec);
    buf_free(&py);
    buf_free(&m);
    buf_free(&err);
}

/* ---- our own pages ----
 *
 * Each clone of a child makes every writable page of this process copy-on-write, and once the child has exec'd
 * (the runner, or Python) the first write to each page still faults, to make it writable again: a few dozen on the
 * way from a child's exit to its result, 15-30 us each on a VM. So when no child shares our pages any more, they
 * are made writable in one call per region, while nothing waits. */

static void own_pages(struct sbx_engine *eng)
{
    for (const struct child *c = eng->children; c; c = c->next)
        if (c->state == CH_STARTING && !c->reaped)
            return; /* still a copy of us, before its exec: writing now would copy the pages */
    sbx_pages_objects(false);
    FILE *f = fopen("/proc/self/maps", "re");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if ((strstr(line, "[heap]") || strstr(line, "[stack]")) && sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
            /* the stack: only the part in use, and a little below (the rest may never be touched) */
            if (strstr(line, "[stack]")) {
                uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
                lo = sp - 64 * 1024 > lo ? sp - 64 * 1024 : lo;
            }
            sbx_pages_write(lo, hi);
        }
    }
    fclose(f);
}

/* Reserves a ready plain child for the client's direct runs (hooks.on_offer). */
static void offer(struct child *ch)
{
    struct sbx_engine *eng = ch->eng;
    if (eng->hooks.on_offer == NULL || ch->python || ch->offered || eng->closing)
        return;
    int fd = fcntl(ch->ctl, F_DUPFD_CLOEXEC, 3);
    if (fd == -1)
        return;
    ch->offered = true;
    ch->token = ++eng->next_token;
    struct sbx_wire_offer o = {.work_bytes = ch->work_bytes,
                               .tmp_bytes = ch->tmp_bytes,
                               .has_cgroup = ch->has_cg,
                               .cg_memory = ch->cg_mem,
                               .cg_pids = ch->cg_pids,
                               .cg_cpu = ch->cg_cpu};
    eng->hooks.on_offer(eng->ud, ch->token, &o, fd);
}

/* An offered child said something, ended its socket or died: if the client gave it a run, the attach is in the
 * client's socket already (the client tells the engine before it sends the child anything), so read that first. */
static void sync_offered(struct child *ch)
{
    if (ch->offered && !ch->attached && ch->eng->hooks.sync)
        ch->eng->hooks.sync(ch->eng->ud);
}

/* Reads what the child said; returns false once the socket reached EOF (and is closed). */
static bool read_ctl(struct child *ch)
{
    char msg[1024];
    int fds[SBX_WIRE_MAX_FDS], nfds;
    while (ch->ctl != -1) {
        long n = sbx_wire_recv(ch->ctl, msg, sizeof(msg), fds, &nfds);
        struct sbx_msg_hdr wh;
        const void *wbody;
        size_t wlen;
        if (n > 0 && nfds == 1 && ch->work_fd == -1 && (ch->state == CH_STARTING || ch->state == CH_RUNNING) &&
            sbx_wire_msg_parse(msg, (size_t)n, &wh, &wbody, &wlen) == 0 && wh.type == SBX_MSG_WORKDIR) {
            ch->work_fd = fds[0];
            continue;
        }
        if (n > 0 && nfds == 1 && ch->egress_fd == -1 && ch->net == SBX_NET_EGRESS && ch->state == CH_STARTING &&
            sbx_wire_msg_parse(msg, (size_t)n, &wh, &wbody, &wlen) == 0 && wh.type == SBX_MSG_EGRESS) {
            ch->egress_fd = fds[0];
            continue;
        }
        if (n > 0 && nfds == 1 && ch->held[SBX_NS_HELD] == -1 && ch->state == CH_STARTING &&
            sbx_wire_msg_parse(msg, (size_t)n, &wh, &wbody, &wlen) == 0 && wh.type == SBX_MSG_HOLD) {
            ch->held[SBX_NS_HELD] = fds[0];
            continue;
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (n == -EAGAIN)
            return true;
        if (n <= 0) {
            if (ch->ctl_open) {
                uv_close((uv_handle_t *)&ch->ctl_poll, on_handle_closed);
                ch->ctl_open = false;
            }
            close(ch->ctl);
            ch->ctl = -1;
            return false;
        }
        struct sbx_msg_hdr h;
        const void *body;
        size_t blen;
        if (sbx_wire_msg_parse(msg, (size_t)n, &h, &body, &blen) != 0)
            continue;
        if (h.type == SBX_MSG_ERROR) {
            size_t l = blen < sizeof(ch->error) - 1 ? blen : sizeof(ch->error) - 1;
            memcpy(ch->error, body, l);
            ch->error[l] = '\0';
        } else if (h.type == SBX_MSG_READY && ch->state == CH_STARTING) {
            ch->state = CH_READY;
            ch->eng->setup_failures[ch->python] = 0;
            if (ch->attached) {
                dispatch(ch);
            } else {
                uv_timer_stop(&ch->timer);
                drain_pending(ch->eng);
                if (!ch->attached)
                    offer(ch);
                ready_changed(ch->eng);
                own_pages(ch->eng);
            }
        }
    }
    return false;
}

static void exec_seen(struct child *ch);

static void on_ctl(uv_poll_t *p, int status, int events)
{
    struct child *ch = p->data;
    (void)status;
    (void)events;
    sync_offered(ch);
    if (ch->reaped) /* the client went away meanwhile, and the engine closed (and reaped every child) */
        return;
    if (read_ctl(ch))
        return;
    exec_seen(ch);
}

/* The control socket reached EOF: while running and with no error reported, close-on-exec closed it at the exec. */
static void exec_seen(struct child *ch)
{
    if (ch->state == CH_RUNNING && ch->error[0] == '\0' && !ch->exec_seen) {
        ch->exec_seen = true;
        ch->t_exec_ns = uv_hrtime();
        struct log_line l;
        if (log_begin(&l, LL_DEBUG, "sandbox exec")) {
            log_field_uint(&l, "id", ch->id);
            log_field_int(&l, "pid", ch->pid);
            log_field_uint(&l, "uid", slot_uid(ch->eng, ch->slot));
            log_field_cstr(&l, "cgroup", ch->has_cg ? ch->cg_name : "");
            log_field_double(&l, "ms_since_start", (double)(ch->t_exec_ns - ch->t_start_ns) / 1e6);
            log_end(&l);
        }
    }
}

static void on_pid(uv_poll_t *p, int status, int events)
{
    struct child *ch = p->data;
    uint64_t t_end = uv_hrtime();
    int st = 0;
    struct rusage ru;
    (void)status;
    (void)events;
    sync_offered(ch);
    if (ch->reaped) /* as in on_ctl */
        return;
    memset(&ru, 0, sizeof(ru));
    /* Its status and figures, without reaping it yet: freeing the process takes tens of microseconds, which the
     * caller would wait for; child_release, after the result, does it. Where the kernel lacks P_PIDFD, wait4 now. */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (syscall(SYS_waitid, P_PIDFD, ch->pidfd, &si, WEXITED | WNOHANG | WNOWAIT | __WALL, &ru) == 0) {
        if (si.si_pid == 0)
            return;
        ch->zombie = true;
        st = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status & 0xff, 0)
                                      : (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
    } else {
        pid_t r = wait4(ch->pid, &st, WNOHANG | __WALL, &ru);
        if (r == 0)
            return;
        if (r == -1) {
            log_perror("wait4 %d", (int)ch->pid);
            st = 0;
        }
    }
    uv_poll_stop(&ch->pid_poll);
    finalize(ch, st, &ru, t_end);
}

/* What the run's processes were doing when its deadline passed: busy, or blocked in the kernel (and where). */
static void log_stuck(struct child *ch)
{
    char body[4096], path[64], status[1024], wchan[64];
    const char *dir =
        ch->has_cg ? (ch->cg.dir[SBX_CGC_PIDS] ? ch->cg.dir[SBX_CGC_PIDS] : ch->cg.dir[SBX_CGC_MEMORY]) : NULL;
    struct log_line l;
    if (dir == NULL || !log_begin(&l, LL_INFO, "sandbox deadline passed"))
        return;
    log_field_uint(&l, "id", ch->id);
    log_field_cstr(&l, "cgroup", ch->cg_name);
    if (sbx_cgroup_read(dir, "cgroup.procs", body, sizeof(body)) > 0) {
        int n = 0;
        char *save = NULL;
        for (char *pid = strtok_r(body, "\n", &save); pid && n < 8; pid = strtok_r(NULL, "\n", &save), n++) {
            (void)snprintf(path, sizeof(path), "/proc/%s", pid);
            long sl = sbx_cgroup_read(path, "status", status, sizeof(status));
            long wl = sbx_cgroup_read(path, "wchan", wchan, sizeof(wchan));
            const char *name = sl > 0 ? strstr(status, "Name:\t") : NULL;
            const char *state = sl > 0 ? strstr(status, "State:\t") : NULL;
            char key[16], val[160];
            (void)snprintf(key, sizeof(key), "proc%d", n);
            (void)snprintf(val, sizeof(val), "%s %.*s %.*s wchan=%s", pid, name ? (int)strcspn(name + 6, "\n") : 0,
                           name ? name + 6 : "", state ? (int)strcspn(state + 7, "\n") : 0, state ? state + 7 : "",
                           wl > 0 ? wchan : "?");
            log_field_cstr(&l, key, val);
        }
    }
    log_end(&l);
}

static void on_timer(uv_timer_t *t)
{
    struct child *ch = t->data;
    if (!ch->attached) {
        (void)snprintf(ch->error, sizeof(ch->error), "set-up did not finish within %d ms", SETUP_TIMEOUT_MS);
        kill_child(ch);
        return;
    }
    if (!ch->killed) {
        ch->killed = true;
        ch->kill_reason = SBX_REASON_TIMEOUT;
        log_stuck(ch);
    }
    kill_child(ch);
}

static uint64_t tv_us(struct timeval tv)
{
    return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static void finalize(struct child *ch, int status, const struct rusage *ru, uint64_t t_end)
{
    struct sbx_engine *eng = ch->eng;
    ch->reaped = true;
    if (ch->ctl != -1 && !read_ctl(ch)) /* an ERROR sent just before dying, or the EOF of its exec */
        exec_seen(ch);
    /* The PID namespace died with its init, so the cgroup is empty (sbx_cgroup_destroy would kill a straggler). */
    struct sbx_cgroup_stats cs;
    memset(&cs, 0, sizeof(cs));
    if (ch->has_cg)
        (void)sbx_cgroup_stats(&ch->cg, &cs);
    if (!ch->attached) {
        if (ch->offered) {
            ch->offered = false;
            if (eng->hooks.on_withdraw)
                eng->hooks.on_withdraw(eng->ud, ch->token);
        }
        if (!eng->closing) {
            eng->setup_failures[ch->python]++;
            (void)snprintf(eng->last_error, sizeof(eng->last_error), "%s",
                           ch->error[0] ? ch->error : "warm child died before its run");
            struct log_line l;
            if (log_begin(&l, LL_WARN, "sandbox child failed set-up")) {
                log_field_cstr(&l, "error", eng->last_error);
                log_field_int(&l, "status", status);
                log_end(&l);
            }
        }
        child_release(ch);
        if (!eng->closing) {
            drain_pending(eng);
            ready_changed(eng);
            refill_soon(eng);
        }
        return;
    }
    struct sbx_exit e;
    memset(&e, 0, sizeof(e));
    e.exit_code = -1;
    e.host_pid = ch->pid;
    e.host_uid = slot_uid(eng, ch->slot);
    e.wall_us = (t_end - ch->t_start_ns) / 1000u;
    e.cpu_us = cs.have_cpu ? cs.cpu_us : tv_us(ru->ru_utime) + tv_us(ru->ru_stime);
    e.peak_memory_bytes = cs.have_peak ? cs.peak_memory_bytes : (uint64_t)ru->ru_maxrss * 1024u;
    e.oom_kills = cs.oom_kills;
    (void)snprintf(e.cgroup, sizeof(e.cgroup), "%s", ch->has_cg ? (eng->cgver == 2 ? "v2" : "v1") : "none");
    (void)snprintf(e.cgroup_name, sizeof(e.cgroup_name), "%s", ch->has_cg ? ch->cg_name : "");
    if (WIFEXITED(status))
        e.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        e.term_signal = WTERMSIG(status);
    uint64_t own_cpu_us = tv_us(ru->ru_utime) + tv_us(ru->ru_stime);
    uint64_t cpu_used_us = own_cpu_us > e.cpu_us ? own_cpu_us : e.cpu_us;
    uint64_t cpu_limit_us = ch->limits.cpu_ms ? (ch->limits.cpu_ms + 999) / 1000 * 1000000u : UINT64_MAX;
    /* A kill we were asked for (deadline, cancel, output cap) explains the end even when it cut set-up short
     * and left an error behind (a RUN sent to the child just killed). */
    if (ch->killed) {
        e.reason = ch->kill_reason;
    } else if (ch->error[0] && !ch->exec_seen) {
        e.reason = SBX_REASON_ERROR;
        (void)snprintf(e.error, sizeof(e.error), "%s", ch->error);
    } else if (e.oom_kills > 0) {
        e.reason = SBX_REASON_MEMORY;
    } else if (WIFSIGNALED(status) &&
               (e.term_signal == SIGXCPU || (e.term_signal == SIGKILL && cpu_used_us >= cpu_limit_us / 2))) {
        /* Nobody inside can SIGKILL its PID 1, and we did not: that is RLIMIT_CPU. The kernel checks it against
         * tick-sampled CPU time, which on a contended VM runs well ahead of the precise figures we read, hence
         * only half the limit is asked for here. */
        e.reason = SBX_REASON_CPU;
    } else if (WIFSIGNALED(status)) {
        e.reason = SBX_REASON_SIGNAL;
    } else {
        e.reason = SBX_REASON_EXIT;
    }
    if (e.reason == SBX_REASON_ERROR)
        e.exit_code = -1;
    struct log_line l;
    if (log_begin(&l, LL_DEBUG, "sandbox end")) {
        log_field_uint(&l, "id", ch->id);
        log_field_cstr(&l, "reason", sbx_reason_name((enum sbx_reason)e.reason));
        log_field_double(&l, "wall_ms", (double)e.wall_us / 1000.0);
        if (ch->t_exec_ns)
            log_field_double(&l, "exec_ms", (double)(ch->t_exec_ns - ch->t_start_ns) / 1e6);
        log_end(&l);
    }
    /* Report first, and release later: removing the cgroup (4 rmdirs on v1) and handing the namespaces to the reaper
     * take this thread for a few hundred microseconds, and on a busy host the caller, woken by the result, often
     * waits for exactly this thread's CPU to read it (a wake-up does not always preempt this SCHED_BATCH thread).
     * So the release waits for the refill turn, a full turn from now (refill_after_result), which runs it before it
     * warms anything. Nothing of the run can act meanwhile: its processes are gone. */
    uv_timer_stop(&ch->timer);
    int work_fd = -1; /* handed over: the hook closes or passes it on; else child_release closes it */
    if (ch->collect) {
        work_fd = ch->work_fd;
        ch->work_fd = -1;
    }
    eng->hooks.on_result(eng->ud, ch->id, &e, work_fd);
    if (eng->closing) {
        child_release(ch);
        return;
    }
    ch->release_due = true;
    drain_pending(eng);
    refill_after_result(eng);
}

/* Releases the children finalize left for later (release_due). */
static void release_due(struct sbx_engine *eng)
{
    struct child *next;
    for (struct child *c = eng->children; c; c = next) {
        next = c->next;
        if (!c->release_due)
            continue;
        c->release_due = false;
        uint64_t t_rel = uv_hrtime();
        child_release(c);
        t_rel = uv_hrtime() - t_rel;
        if (t_rel > 200u * 1000 * 1000)
            log_warn("sandbox: releasing a run (cgroup removal) took %.1f ms", (double)t_rel / 1e6);
    }
}

/* Gives waiting runs to ready children, or starts children for them while slots last. */
static void drain_pending(struct sbx_engine *eng)
{
    while (eng->pend_head && !eng->closing) {
        struct child *ch = NULL;
        const struct sbx_limits *want = &eng->pend_head->limits;
        /* A ready child made for these sizes first, else one still setting up (it dispatches when READY). A run a
         * warm interpreter may serve takes a ready one first, else whatever a plain run would take, and an
         * interpreter still starting last (it takes longer than a cold start of python3 costs): it never waits
         * for one. A plain run never takes an interpreter. */
        static const struct {
            enum child_state st;
            bool python;
        } order[] = {{CH_READY, true}, {CH_READY, false}, {CH_STARTING, false}, {CH_STARTING, true}};
        for (size_t pass = 0; pass < sizeof(order) / sizeof(order[0]) && !ch; pass++) {
            if (order[pass].python && !eng->pend_head->py)
                continue;
            for (struct child *c = eng->children; c && !ch; c = c->next)
                if (!c->attached && !c->reaped && !c->offered && c->state == order[pass].st &&
                    c->python == order[pass].python && c->net == eng->pend_head->net &&
                    c->work_bytes == want->work_bytes && c->tmp_bytes == want->tmp_bytes)
                    ch = c;
        }
        if (ch == NULL) {
            struct buf err = BUF_INIT(256);
            ch = spawn(eng, want->work_bytes, want->tmp_bytes, false, eng->pend_head->net, &err);
            if (ch == NULL && eng->nchildren > 0) {
                buf_free(&err);
                return; /* no slot: wait for a child to end */
            }
            if (ch == NULL) {
                struct pending *p = eng->pend_head;
                eng->pend_head = p->next;
                if (eng->pend_head == NULL)
                    eng->pend_tail = NULL;
                close_fds(p->fds);
                xfree(p->spec);
                result_error(eng, p->id, SBX_REASON_ERROR, err.data);
                xfree(p);
                buf_free(&err);
                continue;
            }
            buf_free(&err);
        }
        struct pending *p = eng->pend_head;
        eng->pend_head = p->next;
        if (eng->pend_head == NULL)
            eng->pend_tail = NULL;
        attach(ch, p->id, p->spec, p->len, p->fds, &p->limits, p->collect);
        xfree(p);
    }
}

static void on_refill_timer(uv_timer_t *t)
{
    struct sbx_engine *eng = t->data;
    release_due(eng);
    drain_pending(eng); /* a run may have waited for the uid slot just released */
    refill(eng);
}

static void refill_soon(struct sbx_engine *eng)
{
    if (eng->timer_open && !uv_is_active((uv_handle_t *)&eng->refill_timer))
        uv_timer_start(&eng->refill_timer, on_refill_timer, REFILL_TURN_MS, 0);
}

/* As refill_soon, but a full turn from now even when a turn is due already: one started when the run began (an
 * attach calls refill_soon) has often passed by the time it ends, and would then release the run's child and warm
 * the next (a clone: a millisecond or more) right after the result, while the client it woke waits for the CPU. */
static void refill_after_result(struct sbx_engine *eng)
{
    if (eng->timer_open) {
        uv_update_time(eng->loop);
        uv_timer_start(&eng->refill_timer, on_refill_timer, REFILL_TURN_MS, 0);
    }
}

/* Warms one child per loop turn, so results and new runs are served between clones (a clone with new
 * namespaces holds this thread for about a millisecond). While runs are going and at least half the pool is
 * still ready, warming waits for a quiet moment: a clone and a child's set-up compete with running programs
 * for the CPU, which is what a warm pool exists to avoid. */
static void refill(struct sbx_engine *eng)
{
    if (eng->closing)
        return;
    unsigned running = 0;
    for (const struct child *c = eng->children; c; c = c->next)
        running += c->attached && !c->reaped;
    /* Plain children first (every kind of run can use them), then interpreters; one clone per turn. */
    for (int python = 0; python < 2; python++) {
        unsigned want = python ? eng->warm_py : eng->warm;
        if (eng->setup_failures[python] >= MAX_SETUP_FAILURES)
            continue;
        unsigned ready = count_kind(eng, CH_READY, python), starting = count_kind(eng, CH_STARTING, python);
        if (ready + starting >= want)
            continue;
        if (running > 0 && 2 * ready >= want)
            continue; /* finalize() calls refill_soon() again when a run ends */
        struct buf err = BUF_INIT(256);
        struct child *ch = spawn(eng, eng->plan.work_bytes, eng->plan.tmp_bytes, python, SBX_NET_NONE, &err);
        if (ch == NULL) {
            log_warn("sandbox: cannot warm a child: %s", err.data ? err.data : "?");
            buf_free(&err);
            return;
        }
        buf_free(&err);
        refill_soon(eng); /* the next turn sees whether more are wanted */
        return;
    }
}

void sbx_engine_submit(struct sbx_engine *eng, uint64_t id, const void *spec, size_t len, int fds[3])
{
    struct sbx_wire_spec ws;
    struct buf err = BUF_INIT(256);
    if (eng->closing) {
        close_fds(fds);
        result_error(eng, id, SBX_REASON_KILLED, "sandbox pool is closing");
        goto out;
    }
    if (sbx_wire_decode_spec(spec, len, &ws, &err) != 0) {
        close_fds(fds);
        result_error(eng, id, SBX_REASON_ERROR, err.data);
        goto out;
    }
    struct pending *p = xcalloc(1, sizeof(*p));
    p->id = id;
    p->spec = xmemdup(spec, len);
    p->len = len;
    p->limits = ws.spec.limits;
    p->net = ws.spec.net;
    p->py = sbx_pywarm_eligible(&ws.spec);
    p->collect = ws.spec.collect_files;
    for (int i = 0; i < 3; i++) {
        p->fds[i] = fds[i];
        fds[i] = -1;
    }
    sbx_wire_spec_free(&ws);
    if (eng->pend_tail)
        eng->pend_tail->next = p;
    else
        eng->pend_head = p;
    eng->pend_tail = p;
    drain_pending(eng);
    refill_soon(eng);
out:
    buf_free(&err);
}

void sbx_engine_attach_direct(struct sbx_engine *eng, uint64_t id, uint64_t token, const void *spec, size_t len)
{
    struct sbx_wire_spec ws;
    struct buf err = BUF_INIT(256);
    if (sbx_wire_decode_spec(spec, len, &ws, &err) != 0) {
        /* The child got the same bytes and refuses them too (its ERROR is read when it dies). */
        result_error(eng, id, SBX_REASON_ERROR, err.data);
        buf_free(&err);
        return;
    }
    struct child *ch = NULL;
    for (struct child *c = eng->children; c && !ch; c = c->next)
        if (c->offered && c->token == token)
            ch = c;
    if (ch == NULL || eng->closing || ch->attached || ch->reaped || ch->state != CH_READY) {
        sbx_wire_spec_free(&ws);
        buf_free(&err);
        result_error(eng, id, eng->closing ? SBX_REASON_KILLED : SBX_REASON_ERROR, "sandbox child gone before its run");
        return;
    }
    ch->offered = false;
    start_run(ch, id, &ws.spec.limits, ws.spec.collect_files);
    sbx_wire_spec_free(&ws);
    buf_free(&err);
    running(ch); /* as dispatch leaves it: the child has its RUN, from the client */
    ready_changed(eng);
    refill_soon(eng);
}

void sbx_engine_fail(struct sbx_engine *eng, uint64_t id, const char *why)
{
    result_error(eng, id, SBX_REASON_ERROR, why);
}

void sbx_engine_cancel(struct sbx_engine *eng, uint64_t id, enum sbx_reason reason)
{
    for (struct child *c = eng->children; c; c = c->next) {
        if (c->attached && c->id == id && !c->reaped) {
            if (!c->killed) {
                c->killed = true;
                c->kill_reason = reason;
            }
            kill_child(c);
            return;
        }
    }
    for (struct pending **pp = &eng->pend_head; *pp; pp = &(*pp)->next) {
        struct pending *p = *pp;
        if (p->id != id)
            continue;
        *pp = p->next;
        if (eng->pend_tail == p) {
            eng->pend_tail = NULL;
            for (struct pending *q = eng->pend_head; q; q = q->next)
                eng->pend_tail = q;
        }
        close_fds(p->fds);
        xfree(p->spec);
        xfree(p);
        result_error(eng, id, reason, NULL);
        return;
    }
}

static int single_threaded(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *t = strstr(buf, "\nThreads:");
    if (t == NULL)
        return -1;
    t += 9;
    while (*t == ' ' || *t == '\t')
        t++;
    return (t[0] == '1' && (t[1] == '\n' || t[1] == '\0')) ? 0 : -1;
}

int sbx_engine_new(uv_loop_t *loop, unsigned warm, const struct sbx_config *cfg, const struct sbx_engine_hooks *hooks,
                   void *ud, struct sbx_engine **out, struct buf *err)
{
    struct buf why = BUF_INIT(512);
    *out = NULL;
    if (single_threaded() != 0) {
        (void)buf_printf(err, "the sandbox engine forks: it needs a single-threaded process (use a zygote pool)");
        return -1;
    }
    struct sbx_engine *eng = xcalloc(1, sizeof(*eng));
    eng->runner_fd = -1;
    eng->loop = loop;
    eng->hooks = *hooks;
    eng->ud = ud;
    eng->warm = warm;
    /* No interpreter on this host: Python runs start cold (and say why if python3 is really missing). */
    eng->warm_py = access(sbx_pywarm_argv()[0], X_OK) == 0 ? cfg->warm_python : 0;
    eng->uid_base = cfg->uid_base;
    eng->uid_count = cfg->uid_count ? cfg->uid_count : 1;
    eng->own_uid = (uint32_t)geteuid();
    eng->own_gid = (uint32_t)getegid();
    /* Mapping to arbitrary host ids takes CAP_SETUID in our namespace, i.e. root. */
    eng->privileged = eng->own_uid == 0;
    if (eng->privileged && (uint64_t)eng->uid_base + eng->uid_count > UINT32_MAX - 1) {
        (void)buf_printf(err, "uid range %u+%u passes the 32-bit uid space", eng->uid_base, eng->uid_count);
        goto fail;
    }
    if (eng->privileged && eng->uid_base == 0) {
        (void)buf_printf(err, "uid_base 0 would map the sandbox to host root");
        goto fail;
    }
    eng->slots = xcalloc(eng->uid_count, 1);
    eng->slot_cursor = (uint32_t)getpid() % eng->uid_count;
    if (cfg->cgroup_mode != SBX_CGROUP_OFF) {
        (void)sbx_cgroup_detect(&eng->cgenv, "/proc/self/mountinfo", "/proc/self/cgroup", cfg->cgroup_parent, &why);
        if (eng->cgenv.version && sbx_cgroup_prepare(&eng->cgenv, &why) == 0) {
            eng->cgver = eng->cgenv.version;
            int gone = sbx_cgroup_gc(&eng->cgenv);
            if (gone)
                log_info("sandbox: removed %d run cgroups left by a dead engine", gone);
        }
        if (eng->cgver == 0) {
            (void)snprintf(eng->cg_why, sizeof(eng->cg_why), "%s", why.data ? why.data : "unavailable");
            if (cfg->cgroup_mode == SBX_CGROUP_REQUIRED) {
                (void)buf_printf(err, "cgroup limits required but unusable: %s", eng->cg_why);
                goto fail;
            }
        }
    } else {
        (void)snprintf(eng->cg_why, sizeof(eng->cg_why), "disabled by configuration");
    }
    if (sbx_contain_plan_init(&eng->plan, err) != 0)
        goto fail;
    buf_free(&why);
    eng->runner_fd = runner_open();
    reaper_start(eng);
    uv_timer_init(loop, &eng->refill_timer);
    eng->refill_timer.data = eng;
    eng->timer_open = true;
    *out = eng;
    refill(eng);
    return 0;
fail:
    buf_free(&why);
    sbx_cgroup_env_free(&eng->cgenv);
    xfree(eng->slots);
    xfree(eng);
    return -1;
}

int sbx_engine_cgroup_version(const struct sbx_engine *eng)
{
    return eng->cgver;
}

void sbx_engine_describe(const struct sbx_engine *eng, struct buf *out)
{
    if (eng->cgver) {
        (void)buf_printf(out, "cgroup v%d (", eng->cgver);
        sbx_cgroup_describe(&eng->cgenv, out);
        (void)buf_printf(out, ")");
    } else {
        (void)buf_printf(out, "no cgroup limits: %s", eng->cg_why);
    }
    if (eng->privileged)
        (void)buf_printf(out, "; uid 1000 -> host %u..%u", eng->uid_base, eng->uid_base + eng->uid_count - 1);
    else
        (void)buf_printf(out, "; uid 1000 -> host %u (not root: own uid)", eng->own_uid);
}

void sbx_engine_close(struct sbx_engine *eng)
{
    eng->closing = true;
    release_due(eng);
    if (eng->timer_open)
        uv_close((uv_handle_t *)&eng->refill_timer, on_refill_timer_closed);
    while (eng->pend_head) {
        struct pending *p = eng->pend_head;
        eng->pend_head = p->next;
        close_fds(p->fds);
        xfree(p->spec);
        result_error(eng, p->id, SBX_REASON_KILLED, "sandbox pool closed");
        xfree(p);
    }
    eng->pend_tail = NULL;
    /* SIGKILL and reap synchronously: the children die at once, and their cgroups can only go once they did. */
    for (struct child *c = eng->children; c; c = c->next) {
        if (c->reaped)
            continue;
        if (c->attached && !c->killed) {
            c->killed = true;
            c->kill_reason = SBX_REASON_KILLED;
        }
        kill_child(c);
    }
    struct child *next;
    for (struct child *c = eng->children; c; c = next) {
        next = c->next;
        if (c->reaped)
            continue;
        int st = 0;
        struct rusage ru;
        memset(&ru, 0, sizeof(ru));
        while (wait4(c->pid, &st, __WALL, &ru) == -1 && errno == EINTR)
            ;
        uv_poll_stop(&c->pid_poll);
        finalize(c, st, &ru, uv_hrtime());
    }
}
