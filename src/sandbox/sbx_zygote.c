#include "sandbox/sbx_zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"
#include "sandbox/sbx_engine.h"
#include "sandbox/sbx_wire.h"

struct zmsg {
    struct zmsg *next;
    char *data;
    size_t len;
    int fd; /* sent with the message, then closed (-1: none) */
};

struct zygote {
    uv_loop_t loop;
    struct sbx_engine *eng;
    int sock;
    uv_poll_t poll;
    uv_signal_t sigterm;
    bool poll_open, stopping;
    struct zmsg *q, *q_tail;
    bool reading;        /* in read_client (the engine's sync hook may ask again from inside it) */
    unsigned ready_sent; /* the ready count the client was last told */
    unsigned ready_now;  /* the engine's, told later when it went down (see hook_ready) */
};

static void stop(struct zygote *z);

static void on_sock(uv_poll_t *p, int status, int events);

static void watch(struct zygote *z)
{
    if (z->poll_open)
        uv_poll_start(&z->poll, UV_READABLE | (z->q ? UV_WRITABLE : 0), on_sock);
}

static void drop_first(struct zygote *z)
{
    struct zmsg *m = z->q;
    z->q = m->next;
    if (z->q == NULL)
        z->q_tail = NULL;
    if (m->fd != -1)
        close(m->fd);
    xfree(m->data);
    xfree(m);
}

/* Sends what is queued, in order, until the socket is full (on_sock flushes the rest when it is writable). */
static void flush(struct zygote *z)
{
    while (z->q && z->sock != -1) {
        struct zmsg *m = z->q;
        int rc = sbx_wire_send(z->sock, m->data, m->len, m->fd != -1 ? &m->fd : NULL, m->fd != -1 ? 1 : 0);
        if (rc == -EAGAIN)
            break;
        drop_first(z); /* sent, or it cannot be (the client is gone: EOF comes next) */
    }
    watch(z);
}

/* Queues b, and fd (owned from here; -1: none) with it. */
static void queue_fd(struct zygote *z, struct buf *b, int fd)
{
    if (z->sock == -1) {
        buf_free(b);
        if (fd != -1)
            close(fd);
        return;
    }
    struct zmsg *m = xcalloc(1, sizeof(*m));
    m->fd = fd;
    m->data = buf_steal(b, &m->len);
    if (z->q_tail)
        z->q_tail->next = m;
    else
        z->q = m;
    z->q_tail = m;
    flush(z);
}

static void queue(struct zygote *z, struct buf *b)
{
    queue_fd(z, b, -1);
}

static void send_ready(struct zygote *z)
{
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_POOL, 0, 0);
    sbx_wire_put_u32(&m, z->ready_now);
    queue(z, &m);
    z->ready_sent = z->ready_now;
}

static void hook_result(void *ud, uint64_t id, const struct sbx_exit *e, int work_fd)
{
    struct zygote *z = ud;
    /* The ready count rides in the result (a client that paces itself on it reads both at once). As a message of
     * its own, even in the same sendmmsg, it woke the client by itself: on a shared CPU the woken worker preempts
     * us between the two messages, reads the count alone, sleeps, and is woken again for the result. */
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_RESULT, 0, id);
    sbx_wire_put_u32(&m, z->ready_now);
    z->ready_sent = z->ready_now;
    sbx_wire_encode_exit(e, &m);
    queue_fd(z, &m, work_fd);
}

/* The client is told at once when children become ready (a caller may wait for that), but a count that went down
 * (a run took a child) waits for the next result: told at once, it would wake the client in the middle of the run,
 * taking the CPU from the program just when it starts. */
static void hook_ready(void *ud, unsigned ready)
{
    struct zygote *z = ud;
    z->ready_now = ready;
    if (ready > z->ready_sent)
        send_ready(z);
}

static void hook_offer(void *ud, uint64_t token, const struct sbx_wire_offer *o, int ctl_fd)
{
    struct zygote *z = ud;
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_OFFER, 0, token);
    sbx_wire_encode_offer(o, &m);
    queue_fd(z, &m, ctl_fd);
}

static void hook_egress(void *ud, uint64_t id, int listen_fd)
{
    struct zygote *z = ud;
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_EGRESS, 0, id);
    queue_fd(z, &m, listen_fd);
}

static void hook_withdraw(void *ud, uint64_t token)
{
    struct zygote *z = ud;
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_WITHDRAW, 0, token);
    queue(z, &m);
}

static void read_client(struct zygote *z);

static void hook_sync(void *ud)
{
    read_client(ud);
}

static void handle_run(struct zygote *z, const struct sbx_msg_hdr *h, const void *body, size_t blen, int *fds, int nfds)
{
    int stdio[3] = {-1, -1, -1};
    char *spec = NULL;
    if (h->flags & SBX_MSG_F_DIRECT) {
        struct sbx_wire_reader r;
        sbx_wire_reader_init(&r, body, blen);
        uint64_t token = sbx_wire_get_u64(&r);
        if (r.bad) {
            sbx_engine_fail(z->eng, h->id, "direct RUN without its child");
            return;
        }
        sbx_engine_attach_direct(z->eng, h->id, token, (const char *)body + 8, blen - 8);
        return;
    }
    if (nfds < 3) {
        sbx_engine_fail(z->eng, h->id, "RUN without its stdio fds");
        return;
    }
    for (int i = 0; i < 3; i++) {
        stdio[i] = fds[i];
        fds[i] = -1;
    }
    if (h->flags & SBX_MSG_F_MEMFD) {
        struct stat st;
        if (nfds < 4 || fstat(fds[3], &st) == -1 || st.st_size <= 0 || st.st_size > SBX_MAX_SPEC_BYTES) {
            /* An empty spec is refused by the engine with a proper result. */
            sbx_engine_submit(z->eng, h->id, "", 0, stdio);
            return;
        }
        spec = xmalloc((size_t)st.st_size);
        if (pread(fds[3], spec, (size_t)st.st_size, 0) != st.st_size) {
            xfree(spec);
            sbx_engine_submit(z->eng, h->id, "", 0, stdio);
            return;
        }
        sbx_engine_submit(z->eng, h->id, spec, (size_t)st.st_size, stdio);
        xfree(spec);
        return;
    }
    sbx_engine_submit(z->eng, h->id, body, blen, stdio);
}

static void on_sock(uv_poll_t *p, int status, int events)
{
    struct zygote *z = p->data;
    if (status < 0) {
        stop(z);
        return;
    }
    if (events & UV_WRITABLE)
        flush(z);
    if (events & UV_READABLE)
        read_client(z);
}

/* Everything the client sent that is not read yet. */
static void read_client(struct zygote *z)
{
    if (z->reading || z->stopping)
        return;
    z->reading = true;
    char *msg = xmalloc(SBX_WIRE_MSG_MAX);
    while (z->sock != -1) {
        int fds[SBX_WIRE_MAX_FDS], nfds = 0;
        long n = sbx_wire_recv(z->sock, msg, SBX_WIRE_MSG_MAX, fds, &nfds);
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            stop(z); /* EOF: our parent closed the pool or died */
            break;
        }
        struct sbx_msg_hdr h;
        const void *body;
        size_t blen;
        if (sbx_wire_msg_parse(msg, (size_t)n, &h, &body, &blen) == 0) {
            if (h.type == SBX_MSG_RUN) {
                handle_run(z, &h, body, blen, fds, nfds);
            } else if (h.type == SBX_MSG_CANCEL) {
                struct sbx_wire_reader r;
                sbx_wire_reader_init(&r, body, blen);
                uint32_t reason = sbx_wire_get_u32(&r);
                if (!r.bad && (reason == SBX_REASON_OUTPUT_CAP || reason == SBX_REASON_KILLED))
                    sbx_engine_cancel(z->eng, h.id, (enum sbx_reason)reason);
            }
        }
        for (int i = 0; i < nfds; i++)
            if (fds[i] != -1)
                close(fds[i]);
    }
    xfree(msg);
    z->reading = false;
}

static void stop(struct zygote *z)
{
    if (z->stopping)
        return;
    z->stopping = true;
    if (z->poll_open) {
        uv_close((uv_handle_t *)&z->poll, NULL);
        z->poll_open = false;
    }
    /* Results of what was running cannot be delivered any more; the engine kills and reaps it all. */
    if (z->sock != -1) {
        close(z->sock);
        z->sock = -1;
    }
    if (z->eng) {
        sbx_engine_close(z->eng);
        z->eng = NULL;
    }
    uv_close((uv_handle_t *)&z->sigterm, NULL);
}

static void on_sigterm(uv_signal_t *s, int sig)
{
    (void)sig;
    stop(s->data);
}

static int usage(void)
{
    fprintf(stderr, "usage: agentd sandbox zygote --fd N [--warm N] [--warm-python N] [--uid-base N] [--uid-count N] "
                    "[--cgroup auto|required|off] [--cgroup-parent PATH] [--parent-pid PID] [--log-level L]\n"
                    "(internal: started by a sandbox pool)\n");
    return 2;
}

static int parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (str_to_u64(str_from(s), &v) != 0 || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int sbx_zygote_main(int argc, char **argv)
{
    struct zygote z;
    struct sbx_config cfg = {.uid_base = 1000000000u, .uid_count = 1024, .cgroup_mode = SBX_CGROUP_AUTO};
    uint32_t fd = 3, warm = 0, warm_py = 0, ppid = 0;
    struct buf err = BUF_INIT(512);
    int rc = 1;
    memset(&z, 0, sizeof(z));
    z.sock = -1;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        if (strcmp(a, "--fd") == 0 && parse_u32(v, &fd) == 0) {
        } else if (strcmp(a, "--warm") == 0 && parse_u32(v, &warm) == 0) {
        } else if (strcmp(a, "--warm-python") == 0 && parse_u32(v, &warm_py) == 0) {
        } else if (strcmp(a, "--uid-base") == 0 && parse_u32(v, &cfg.uid_base) == 0) {
        } else if (strcmp(a, "--uid-count") == 0 && parse_u32(v, &cfg.uid_count) == 0) {
        } else if (strcmp(a, "--parent-pid") == 0 && parse_u32(v, &ppid) == 0) {
        } else if (strcmp(a, "--cgroup") == 0) {
            if (strcmp(v, "auto") == 0)
                cfg.cgroup_mode = SBX_CGROUP_AUTO;
            else if (strcmp(v, "required") == 0)
                cfg.cgroup_mode = SBX_CGROUP_REQUIRED;
            else if (strcmp(v, "off") == 0)
                cfg.cgroup_mode = SBX_CGROUP_OFF;
            else
                return usage();
        } else if (strcmp(a, "--cgroup-parent") == 0) {
            cfg.cgroup_parent = v;
        } else if (strcmp(a, "--log-level") == 0 && log_level_parse(v) >= 0) {
            log_min_level = log_level_parse(v);
        } else {
            return usage();
        }
    }
    /* Go with the parent: SIGTERM (handled below: kill and reap the children, remove their cgroups), and if it is
     * already gone (we were reparented before getting here), leave at once. */
    cfg.warm_python = warm_py;
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || (ppid && (uint32_t)getppid() != ppid))
        return 1;
    (void)prctl(PR_SET_NAME, "agentd-zygote"); /* exec'd as /proc/self/exe, it would show as "exe" */
    if (sbx_engine_background() == -1)
        log_warn("sandbox zygote: SCHED_BATCH: %s", strerror(errno));
    struct stat st;
    if (fstat((int)fd, &st) == -1 || !S_ISSOCK(st.st_mode)) {
        log_error("sandbox zygote: fd %u is not a socket", fd);
        return 2;
    }
    z.sock = (int)fd;
    /* Whatever else agentd left open without close-on-exec is not ours to hold. */
    if (z.sock == 3 && syscall(SYS_close_range, 4u, ~0u, 0u) == -1)
        log_warn("sandbox zygote: close_range: %s", strerror(errno));
    (void)fcntl(z.sock, F_SETFD, FD_CLOEXEC);
    (void)fcntl(z.sock, F_SETFL, O_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN); /* a terminal's ^C is for our parent; we go when it closes the socket */
    if (uv_loop_init(&z.loop) != 0)
        return 1;
    /* The handler first: children exist from sbx_engine_new on, and SIGTERM must not orphan their cgroups. */
    uv_signal_init(&z.loop, &z.sigterm);
    z.sigterm.data = &z;
    uv_signal_start(&z.sigterm, on_sigterm, SIGTERM);
    static const struct sbx_engine_hooks hooks = {.on_result = hook_result,
                                                  .on_ready = hook_ready,
                                                  .on_offer = hook_offer,
                                                  .on_withdraw = hook_withdraw,
                                                  .sync = hook_sync,
                                                  .on_egress = hook_egress};
    if (sbx_engine_new(&z.loop, warm, &cfg, &hooks, &z, &z.eng, &err) != 0) {
        log_error("sandbox zygote: %s", err.data ? err.data : "engine failed");
        struct buf m = BUF_INIT(BUF_UNBOUNDED);
        sbx_wire_msg_begin(&m, SBX_MSG_ERROR, 0, 0);
        (void)buf_append_str(&m, err.data ? err.data : "engine failed");
        (void)fcntl(z.sock, F_SETFL, 0); /* one blocking send: the client must learn why */
        (void)sbx_wire_send(z.sock, m.data, m.len, NULL, 0);
        buf_free(&m);
        close(z.sock);
        z.sock = -1;
        uv_close((uv_handle_t *)&z.sigterm, NULL);
        goto out;
    }
    uv_poll_init(&z.loop, &z.poll, z.sock);
    z.poll.data = &z;
    z.poll_open = true;
    struct buf hello = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&hello, SBX_MSG_HELLO, 0, 0);
    sbx_engine_describe(z.eng, &hello);
    queue(&z, &hello);
    watch(&z);
    (void)uv_run(&z.loop, UV_RUN_DEFAULT);
    rc = 0;
out:
    while (z.q) {
        struct zmsg *m = z.q;
        z.q = m->next;
        if (m->fd != -1)
            close(m->fd);
        xfree(m->data);
        xfree(m);
    }
    (void)uv_run(&z.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&z.loop) != 0)
        log_warn("sandbox zygote: handles left open at exit");
    buf_free(&err);
    return rc;
}
