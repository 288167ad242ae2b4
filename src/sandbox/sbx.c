#include "sandbox/sbx.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "sandbox/sbx_contain.h"
#include "sandbox/sbx_egress.h"
#include "sandbox/sbx_engine.h"
#include "sandbox/sbx_files.h"
#include "sandbox/sbx_pywarm.h"
#include "sandbox/sbx_wire.h"

void sbx_pool_opts_init(struct sbx_pool_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->cfg.uid_base = 1000000000u;
    opts->cfg.uid_count = 1024;
    opts->cfg.cgroup_mode = SBX_CGROUP_AUTO;
}

/* ---- pools and runs ---- */

struct outmsg {
    struct outmsg *next;
    char *data;
    size_t len;
    int fds[SBX_WIRE_MAX_FDS];
    int nfds;
};

/* One zygote process and its socket. A pool replaces a dead one with a new instance while the old one's libuv
 * handles are still closing, so each instance has its own handles and is freed when both have closed. */
struct zinst {
    struct sbx_pool *pool;
    uv_process_t proc;
    uv_poll_t poll;
    int sock;
    int open; /* handles of this instance not yet closed */
    bool poll_open;
};

/* A warm child the zygote reserved for our direct runs (SBX_MSG_OFFER): sbx_run_start sends it the RUN itself, one
 * hop fewer than through the zygote (sbx_engine_attach_direct says how the two stay in step). */
struct offer {
    struct offer *next;
    uint64_t token;
    int fd; /* the zygote's end of the child's control socket */
    struct sbx_wire_offer w;
};

/* A run's pipes (stdin, stdout, stderr; our ends non-blocking) and our copies of the output pipes' write ends
 * (sbx_run.out_hold). */
struct pipeset {
    int in[2], out[2], err[2], hold[2];
};
static int pipeset_make(struct pipeset *ps, struct buf *err);
static void pipeset_close(struct pipeset *ps);

struct sbx_pool {
    uv_loop_t *loop;
    bool zygote;
    struct sbx_engine *eng;
    /* zygote mode */
    struct zinst *z; /* the current zygote, NULL when there is none */
    struct outmsg *outq, *outq_tail;
    bool broken;
    char broken_why[128];
    unsigned ready;  /* children ready, as the zygote last said */
    struct offer *offers;
    bool hello_seen; /* the current zygote came up */
    char *env_strs[5];
    int nenv_strs;
    char slab[65536]; /* read buffer for the runs' output pipes */
    /* The next run's pipes, made when the last one ended (after its result was handed on): making them is three
     * pipe2 and five fcntl, 50-100 us on a VM, which a request would otherwise wait for. */
    struct pipeset spare;
    bool have_spare;
    /* both */
    struct sbx_run *runs;
    uint64_t next_id;
    unsigned handles; /* pool-level handles still open (process, poll) */
    /* zygote respawn: what it was started with, and not before when */
    struct sbx_pool_opts opts;
    char *opt_exe, *opt_cgparent;
    uint64_t respawn_at_ms;
    bool closing;
    sbx_pool_closed_fn *closed_cb;
    void *closed_ud;
};

struct sbx_run {
    struct sbx_pool *pool;
    struct sbx_run *prev, *next;
    uint64_t id;
    sbx_done_fn *cb;
    void *ud;
    uv_pipe_t in, out, err;
    uv_write_t wreq;
    char *stdin_copy;
    int handles;
    bool in_open, out_eof, err_eof, have_exit, done, cancel_sent;
    bool direct; /* started on an offered child (start_direct) */
    /* Our copies of the output pipes' write ends, held until the end is reported: the program's exit then does not
     * wake this loop (twice, for two EOFs) in the middle of the exit, and the EOFs come when the result does. */
    int out_hold[2];
    struct sbx_result res;
    /* spec.collect_files: what to read back from /work when the run ends */
    bool collect;
    uint32_t files_out_max;
    uint64_t files_out_bytes;
    struct sbx_files_known *known;
    size_t nknown;
    /* network "egress": the proxy serving the run's listener (SBX_MSG_EGRESS), from then until its end */
    bool egress_wanted;
    struct sbx_egress *egress;
};

static void run_free_known(struct sbx_run *run)
{
    for (size_t i = 0; i < run->nknown; i++)
        xfree(run->known[i].name);
    xfree_null(&run->known);
    run->nknown = 0;
}

static void pool_maybe_free(struct sbx_pool *pool);

static void release_holds(struct sbx_run *run)
{
    for (int i = 0; i < 2; i++) {
        if (run->out_hold[i] != -1)
            close(run->out_hold[i]);
        run->out_hold[i] = -1;
    }
}

/* The run's way out is closed with its end: what went through goes into the result. */
static void egress_end(struct sbx_run *run)
{
    if (run->egress == NULL)
        return;
    struct sbx_egress_stats st;
    sbx_egress_get_stats(run->egress, &st);
    run->res.egress_connections = st.connections;
    run->res.egress_refused = st.refused;
    run->res.egress_bytes_out = st.bytes_out;
    run->res.egress_bytes_in = st.bytes_in;
    sbx_egress_stop(run->egress);
    run->egress = NULL;
}

static struct sbx_run *find_run(struct sbx_pool *pool, uint64_t id)
{
    for (struct sbx_run *r = pool->runs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static void on_run_handle_closed(uv_handle_t *h)
{
    struct sbx_run *run = h->data;
    if (--run->handles > 0)
        return;
    struct sbx_pool *pool = run->pool;
    if (run->prev)
        run->prev->next = run->next;
    else
        pool->runs = run->next;
    if (run->next)
        run->next->prev = run->prev;
    release_holds(run);
    egress_end(run);
    sbx_result_free(&run->res);
    run_free_known(run);
    xfree(run->stdin_copy);
    xfree(run);
    pool_maybe_free(pool);
}

static void run_close_handles(struct sbx_run *run)
{
    uv_handle_t *hs[3] = {(uv_handle_t *)&run->in, (uv_handle_t *)&run->out, (uv_handle_t *)&run->err};
    for (int i = 0; i < 3; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], on_run_handle_closed);
}

/* The run is over once the engine reported its end and both output pipes reached EOF. */
static void run_maybe_done(struct sbx_run *run)
{
    if (run->done || !run->have_exit || !run->out_eof || !run->err_eof)
        return;
    run->done = true;
    if (run->res.reason == SBX_REASON_EXIT || run->res.reason == SBX_REASON_SIGNAL) {
        /* Output past the cap killed the tree: that is why it ended, whatever the status says. */
        if (run->cancel_sent)
            run->res.reason = SBX_REASON_OUTPUT_CAP;
    }
    struct sbx_pool *pool = run->pool;
    run->cb(run, &run->res, run->ud);
    run_close_handles(run);
    if (!pool->closing && !pool->have_spare && pipeset_make(&pool->spare, NULL) == 0)
        pool->have_spare = true;
}

static void send_cancel(struct sbx_run *run, enum sbx_reason reason);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    /* One slab per pool (a pool lives on one loop, and each read is consumed at once); not a static, since
     * every worker thread of the daemon has its own loop and pool. */
    struct sbx_run *run = h->data;
    (void)suggested;
    b->base = run->pool->slab;
    b->len = sizeof(run->pool->slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct sbx_run *run = s->data;
    bool is_out = s == (uv_stream_t *)&run->out;
    struct buf *dst = is_out ? &run->res.out : &run->res.err;
    bool *trunc = is_out ? &run->res.out_truncated : &run->res.err_truncated;
    if (n > 0) {
        size_t room = dst->max - dst->len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        if (take)
            (void)buf_append(dst, b->base, take);
        if (take < (size_t)n && !*trunc) {
            *trunc = true;
            send_cancel(run, SBX_REASON_OUTPUT_CAP);
        }
        return;
    }
    if (n == 0)
        return;
    /* EOF or an error: either way nothing more comes. */
    uv_read_stop(s);
    if (is_out)
        run->out_eof = true;
    else
        run->err_eof = true;
    run_maybe_done(run);
}

static void on_stdin_written(uv_write_t *w, int status)
{
    struct sbx_run *run = w->data;
    (void)status; /* EPIPE: the program did not read it all, which is its right */
    xfree_null(&run->stdin_copy);
    if (!uv_is_closing((uv_handle_t *)&run->in))
        uv_close((uv_handle_t *)&run->in, on_run_handle_closed);
}

/* After the end is reported and our write ends are closed, what the pipes hold is all there will be: read it now,
 * rather than one more turn of the loop later. */
static void drain_pipes(struct sbx_run *run)
{
    uv_pipe_t *ps[2] = {&run->out, &run->err};
    for (int i = 0; i < 2 && !run->done; i++) {
        bool *eof = i == 0 ? &run->out_eof : &run->err_eof;
        uv_os_fd_t fd;
        if (*eof || uv_is_closing((uv_handle_t *)ps[i]) || uv_fileno((uv_handle_t *)ps[i], &fd) != 0)
            continue;
        while (!*eof && !run->done) {
            ssize_t n = read(fd, run->pool->slab, sizeof(run->pool->slab));
            if (n == -1 && errno == EINTR)
                continue;
            if (n == -1 && errno == EAGAIN)
                break; /* a writer is still open somewhere: the loop reads the rest */
            uv_buf_t b = uv_buf_init(run->pool->slab, n > 0 ? (unsigned)n : 0);
            on_read((uv_stream_t *)ps[i], n > 0 ? n : n == 0 ? UV_EOF : UV_EIO, &b);
        }
    }
}

static void apply_exit(struct sbx_run *run, const struct sbx_exit *e)
{
    struct sbx_result *r = &run->res;
    r->reason = (enum sbx_reason)e->reason;
    r->exit_code = e->exit_code;
    r->term_signal = e->term_signal;
    r->wall_us = e->wall_us;
    r->cpu_us = e->cpu_us;
    r->peak_memory_bytes = e->peak_memory_bytes;
    r->oom_kills = e->oom_kills;
    r->host_uid = e->host_uid;
    r->host_pid = e->host_pid;
    (void)snprintf(r->cgroup, sizeof(r->cgroup), "%s", e->cgroup);
    (void)snprintf(r->cgroup_name, sizeof(r->cgroup_name), "%s", e->cgroup_name);
    (void)snprintf(r->error, sizeof(r->error), "%s", e->error);
    run->have_exit = true;
    egress_end(run);
    release_holds(run);
    drain_pipes(run);
    run_maybe_done(run);
}

/* The run's output files, from its /work (work_fd, owned here; -1 when the child sent none, e.g. set-up failed). */
static void collect_files(struct sbx_run *run, int work_fd)
{
    if (!run->collect) {
        if (work_fd != -1)
            close(work_fd);
        return;
    }
    if (work_fd == -1)
        run->res.files_collected = true;
    else
        sbx_files_collect(work_fd, run->known, run->nknown, run->files_out_max, run->files_out_bytes, &run->res);
    run_free_known(run);
}

/* A run with network "egress" is running: serve its listener (listen_fd, owned here) until its end. */
static void egress_begin(struct sbx_pool *pool, uint64_t id, int listen_fd)
{
    struct sbx_run *run = find_run(pool, id);
    if (run == NULL || run->have_exit || !run->egress_wanted || run->egress || pool->opts.egress == NULL) {
        close(listen_fd);
        return;
    }
    struct buf err = BUF_INIT(256);
    run->egress = sbx_egress_start(pool->loop, listen_fd, pool->opts.egress, &err);
    if (run->egress == NULL) /* the listener is closed: the program's connections to the proxy are refused */
        log_warn("sandbox: run %" PRIu64 ": egress proxy: %s", id, err.data ? err.data : "failed");
    buf_free(&err);
}

/* engine hooks (in-process) */
static void hook_egress(void *ud, uint64_t id, int listen_fd)
{
    egress_begin(ud, id, listen_fd);
}

static void hook_result(void *ud, uint64_t id, const struct sbx_exit *e, int work_fd)
{
    struct sbx_run *run = find_run(ud, id);
    if (run && !run->have_exit) {
        collect_files(run, work_fd);
        apply_exit(run, e);
    } else if (work_fd != -1) {
        close(work_fd);
    }
}

/* ---- zygote transport ---- */

static void on_sock(uv_poll_t *p, int status, int events);

static void sock_watch(struct sbx_pool *pool)
{
    if (pool->z == NULL || !pool->z->poll_open)
        return;
    int ev = UV_READABLE | (pool->outq ? UV_WRITABLE : 0);
    uv_poll_start(&pool->z->poll, ev, on_sock);
}

static void outmsg_free(struct outmsg *m)
{
    for (int i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    xfree(m->data);
    xfree(m);
}

static void flush_out(struct sbx_pool *pool)
{
    while (pool->outq && pool->z) {
        struct outmsg *m = pool->outq;
        int rc = sbx_wire_send(pool->z->sock, m->data, m->len, m->fds, m->nfds);
        if (rc == -EAGAIN)
            break;
        if (rc != 0)
            log_warn("sandbox: sending to the zygote failed: %s", strerror(-rc));
        pool->outq = m->next;
        if (pool->outq == NULL)
            pool->outq_tail = NULL;
        outmsg_free(m);
    }
    sock_watch(pool);
}

/* Queues a message; fds are owned by the queue from here (closed once sent). */
static void send_msg(struct sbx_pool *pool, struct buf *msg, const int *fds, int nfds)
{
    struct outmsg *m = xcalloc(1, sizeof(*m));
    m->data = buf_steal(msg, &m->len);
    for (int i = 0; i < nfds; i++)
        m->fds[i] = fds[i];
    m->nfds = nfds;
    if (pool->outq_tail)
        pool->outq_tail->next = m;
    else
        pool->outq = m;
    pool->outq_tail = m;
    flush_out(pool);
}

static void offers_drop(struct sbx_pool *pool, uint64_t token, bool all)
{
    for (struct offer **pp = &pool->offers; *pp;) {
        struct offer *o = *pp;
        if (all || o->token == token) {
            *pp = o->next;
            close(o->fd);
            xfree(o);
            if (!all)
                return;
        } else {
            pp = &o->next;
        }
    }
}

static void offer_add(struct sbx_pool *pool, uint64_t token, const void *body, size_t blen, int fd)
{
    struct offer *o = xcalloc(1, sizeof(*o));
    o->token = token;
    o->fd = fd;
    if (sbx_wire_decode_offer(body, blen, &o->w) != 0) {
        close(fd);
        xfree(o);
        return;
    }
    o->next = pool->offers;
    pool->offers = o;
}

static void fail_all(struct sbx_pool *pool, const char *why)
{
    struct sbx_exit e;
    memset(&e, 0, sizeof(e));
    e.reason = SBX_REASON_ERROR;
    e.exit_code = -1;
    (void)snprintf(e.cgroup, sizeof(e.cgroup), "none");
    (void)snprintf(e.error, sizeof(e.error), "%s", why);
    struct sbx_run *next;
    for (struct sbx_run *r = pool->runs; r; r = next) {
        next = r->next;
        if (!r->have_exit) {
            if (pool->closing)
                e.reason = SBX_REASON_KILLED;
            apply_exit(r, &e);
        }
    }
}

static void on_zinst_closed(uv_handle_t *h)
{
    struct zinst *zi = h->data;
    struct sbx_pool *pool = zi->pool;
    pool->handles--;
    if (--zi->open == 0)
        xfree(zi);
    pool_maybe_free(pool);
}

/* A dead zygote is replaced on the next run, at most once a second. */
#define RESPAWN_DELAY_MS 1000

static void zygote_broken(struct sbx_pool *pool, const char *why)
{
    if (!pool->broken) {
        pool->broken = true;
        pool->respawn_at_ms = uv_now(pool->loop) + RESPAWN_DELAY_MS;
        (void)snprintf(pool->broken_why, sizeof(pool->broken_why), "%s", why);
        if (!pool->closing)
            log_error("sandbox: %s", why);
    }
    struct zinst *zi = pool->z;
    pool->z = NULL; /* its process handle closes when it exits (EOF makes it exit) */
    if (zi && zi->poll_open) {
        uv_close((uv_handle_t *)&zi->poll, on_zinst_closed);
        zi->poll_open = false;
    }
    if (zi && zi->sock != -1) {
        close(zi->sock);
        zi->sock = -1;
    }
    while (pool->outq) {
        struct outmsg *m = pool->outq;
        pool->outq = m->next;
        outmsg_free(m);
    }
    pool->outq_tail = NULL;
    offers_drop(pool, 0, true);
    fail_all(pool, why);
}

static void on_sock(uv_poll_t *p, int status, int events)
{
    struct zinst *zi = p->data;
    struct sbx_pool *pool = zi->pool;
    if (pool->z != zi)
        return;
    if (status < 0) {
        /* Hang-up or error: what the zygote said last (why it is gone) is still in the socket; read it. */
        events = UV_READABLE;
    }
    if (events & UV_WRITABLE)
        flush_out(pool);
    if (!(events & UV_READABLE))
        return;
    for (;;) {
        char msg[SBX_WIRE_MSG_MAX];
        int fds[SBX_WIRE_MAX_FDS], nfds;
        if (pool->z == NULL || pool->z != p->data)
            return;
        long n = sbx_wire_recv(pool->z->sock, msg, sizeof(msg), fds, &nfds);
        int work_fd = -1; /* a RESULT's one fd: the run's /work */
        for (int i = 0; i < nfds; i++) {
            if (i == 0 && nfds == 1 && n > 0)
                work_fd = fds[0];
            else
                close(fds[i]);
        }
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            zygote_broken(pool, "the sandbox zygote went away");
            return;
        }
        struct sbx_msg_hdr h;
        const void *body;
        size_t blen;
        bool parsed = sbx_wire_msg_parse(msg, (size_t)n, &h, &body, &blen) == 0;
        if ((!parsed || (h.type != SBX_MSG_RESULT && h.type != SBX_MSG_OFFER && h.type != SBX_MSG_EGRESS)) &&
            work_fd != -1) {
            close(work_fd);
            work_fd = -1;
        }
        if (!parsed)
            continue;
        if (h.type == SBX_MSG_OFFER) {
            if (work_fd != -1)
                offer_add(pool, h.id, body, blen, work_fd);
        } else if (h.type == SBX_MSG_EGRESS) {
            if (work_fd != -1)
                egress_begin(pool, h.id, work_fd);
        } else if (h.type == SBX_MSG_WITHDRAW) {
            offers_drop(pool, h.id, false);
        } else if (h.type == SBX_MSG_RESULT) {
            struct sbx_exit e;
            struct sbx_run *run = find_run(pool, h.id);
            struct sbx_wire_reader r;
            sbx_wire_reader_init(&r, body, blen);
            uint32_t ready = sbx_wire_get_u32(&r);
            if (!r.bad)
                pool->ready = ready;
            if (!r.bad && sbx_wire_decode_exit(r.p, r.n, &e) == 0 && run && !run->have_exit) {
                collect_files(run, work_fd);
                apply_exit(run, &e);
            } else if (work_fd != -1) {
                close(work_fd);
            }
        } else if (h.type == SBX_MSG_POOL) {
            struct sbx_wire_reader r;
            sbx_wire_reader_init(&r, body, blen);
            uint32_t ready = sbx_wire_get_u32(&r);
            if (!r.bad)
                pool->ready = ready;
        } else if (h.type == SBX_MSG_ERROR) {
            /* The zygote could not start its engine (e.g. cgroups required but unusable): that is why. */
            char why[200];
            (void)snprintf(why, sizeof(why), "sandbox zygote: %.*s", (int)(blen < 180 ? blen : 180),
                           (const char *)body);
            zygote_broken(pool, why);
            return;
        } else if (h.type == SBX_MSG_HELLO) {
            pool->hello_seen = true;
            struct log_line l;
            if (log_begin(&l, LL_DEBUG, "sandbox zygote ready")) {
                log_field_str(&l, "isolation", body, blen);
                log_end(&l);
            }
        }
    }
}

static void on_zygote_exit(uv_process_t *proc, int64_t status, int sig)
{
    struct zinst *zi = proc->data;
    struct sbx_pool *pool = zi->pool;
    char why[128];
    (void)snprintf(why, sizeof(why), "the sandbox zygote exited (status %lld, signal %d)", (long long)status, sig);
    if (pool->z == zi) /* not an instance already replaced */
        zygote_broken(pool, why);
    uv_close((uv_handle_t *)proc, on_zinst_closed);
}

static char *keep_env_str(struct sbx_pool *pool, char *s)
{
    pool->env_strs[pool->nenv_strs++] = s;
    return s;
}

static int start_zygote(struct sbx_pool *pool, const struct sbx_pool_opts *opts, struct buf *err)
{
    int sv[2];
    char warm[16], warm_py[16], base[16], cnt[16], ppid[16];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        (void)buf_printf(err, "socketpair: %s", strerror(errno));
        return -1;
    }
    (void)snprintf(warm, sizeof(warm), "%u", opts->warm);
    (void)snprintf(warm_py, sizeof(warm_py), "%u", opts->cfg.warm_python);
    (void)snprintf(base, sizeof(base), "%u", opts->cfg.uid_base);
    (void)snprintf(cnt, sizeof(cnt), "%u", opts->cfg.uid_count);
    (void)snprintf(ppid, sizeof(ppid), "%d", (int)getpid());
    const char *mode = opts->cfg.cgroup_mode == SBX_CGROUP_REQUIRED ? "required"
                       : opts->cfg.cgroup_mode == SBX_CGROUP_OFF    ? "off"
                                                                    : "auto";
    const char *exe = opts->exe ? opts->exe : "/proc/self/exe";
    char *args[22];
    int a = 0;
    args[a++] = (char *)"agentd";
    args[a++] = (char *)"sandbox";
    args[a++] = (char *)"zygote";
    args[a++] = (char *)"--fd";
    args[a++] = (char *)"3";
    args[a++] = (char *)"--warm";
    args[a++] = warm;
    args[a++] = (char *)"--warm-python";
    args[a++] = warm_py;
    args[a++] = (char *)"--uid-base";
    args[a++] = base;
    args[a++] = (char *)"--uid-count";
    args[a++] = cnt;
    args[a++] = (char *)"--cgroup";
    args[a++] = (char *)mode;
    if (opts->cfg.cgroup_parent) {
        args[a++] = (char *)"--cgroup-parent";
        args[a++] = (char *)opts->cfg.cgroup_parent;
    }
    args[a++] = (char *)"--parent-pid";
    args[a++] = ppid;
    args[a++] = (char *)"--log-level";
    args[a++] = (char *)log_level_name(log_min_level);
    args[a] = NULL;
    uv_stdio_container_t stdio[4];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    stdio[3].flags = UV_INHERIT_FD;
    stdio[3].data.fd = sv[1];
    /* The zygote gets no environment of ours: agentd's holds API keys, and nothing of it is needed there
     * (sanitizer settings excepted, so tests see the zygote's leaks too, and the runner switch, sbx_runner.h). */
    static const char *const keep_env[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "AGENTD_SANDBOX_RUNNER",
                                           NULL};
    for (int i = 0; i < pool->nenv_strs; i++)
        xfree(pool->env_strs[i]);
    pool->nenv_strs = 0;
    char *env[8]; /* PATH, keep_env, NULL */
    int e = 0;
    env[e++] = (char *)"PATH=/usr/local/bin:/usr/bin:/bin";
    for (const char *const *k = keep_env; *k; k++) {
        const char *v = getenv(*k);
        if (v) {
            struct buf kv = BUF_INIT(4096);
            if (buf_printf(&kv, "%s=%s", *k, v) == 0)
                env[e++] = keep_env_str(pool, buf_steal(&kv, NULL));
            else
                buf_free(&kv);
        }
    }
    env[e] = NULL;
    uv_process_options_t po;
    memset(&po, 0, sizeof(po));
    po.file = exe;
    po.args = args;
    po.env = env;
    po.exit_cb = on_zygote_exit;
    po.stdio = stdio;
    po.stdio_count = 4;
    struct zinst *zi = xcalloc(1, sizeof(*zi));
    zi->pool = pool;
    zi->sock = -1;
    zi->proc.data = zi;
    zi->open = 1;
    pool->handles++;
    int rc = uv_spawn(pool->loop, &zi->proc, &po);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        (void)buf_printf(err, "starting the sandbox zygote (%s): %s", exe, uv_strerror(rc));
        /* The handle must still be closed (a first start's pool goes with it: see sbx_pool_new). */
        uv_close((uv_handle_t *)&zi->proc, on_zinst_closed);
        return -1;
    }
    zi->sock = sv[0];
    (void)fcntl(zi->sock, F_SETFL, O_NONBLOCK);
    uv_poll_init(pool->loop, &zi->poll, zi->sock);
    zi->poll.data = zi;
    zi->poll_open = true;
    zi->open++;
    pool->handles++;
    pool->z = zi;
    sock_watch(pool);
    return 0;
}

int sbx_pool_new(uv_loop_t *loop, const struct sbx_pool_opts *opts, struct sbx_pool **out, struct buf *err)
{
    struct sbx_pool *pool = xcalloc(1, sizeof(*pool));
    pool->loop = loop;
    pool->zygote = opts->zygote;
    pool->opts = *opts;
    if (opts->exe)
        pool->opts.exe = pool->opt_exe = xstrdup(opts->exe);
    if (opts->cfg.cgroup_parent)
        pool->opts.cfg.cgroup_parent = pool->opt_cgparent = xstrdup(opts->cfg.cgroup_parent);
    *out = NULL;
    if (opts->zygote) {
        if (start_zygote(pool, &pool->opts, err) != 0) {
            pool->closing = true; /* freed by the close callback of its process handle */
            return -1;
        }
    } else {
        static const struct sbx_engine_hooks hooks = {.on_result = hook_result, .on_egress = hook_egress};
        if (sbx_engine_new(loop, opts->warm, &opts->cfg, &hooks, pool, &pool->eng, err) != 0) {
            xfree(pool->opt_exe);
            xfree(pool->opt_cgparent);
            xfree(pool);
            return -1;
        }
    }
    *out = pool;
    return 0;
}

unsigned sbx_pool_ready(const struct sbx_pool *pool)
{
    return pool->eng ? sbx_engine_ready(pool->eng) : pool->ready;
}

static void pool_maybe_free(struct sbx_pool *pool)
{
    if (!pool->closing || pool->runs || pool->handles)
        return;
    if (pool->have_spare) {
        pipeset_close(&pool->spare);
        pool->have_spare = false;
    }
    sbx_pool_closed_fn *cb = pool->closed_cb;
    void *ud = pool->closed_ud;
    for (int i = 0; i < pool->nenv_strs; i++)
        xfree(pool->env_strs[i]);
    xfree(pool->opt_exe);
    xfree(pool->opt_cgparent);
    xfree(pool);
    if (cb)
        cb(ud);
}

void sbx_pool_close(struct sbx_pool *pool, sbx_pool_closed_fn *cb, void *ud)
{
    pool->closing = true;
    pool->closed_cb = cb;
    pool->closed_ud = ud;
    if (pool->eng) {
        sbx_engine_close(pool->eng); /* reports KILLED for what still runs */
        pool->eng = NULL;
    } else {
        /* EOF on its socket makes the zygote kill and reap its children, remove their cgroups and exit. */
        zygote_broken(pool, "sandbox pool closed");
    }
    pool_maybe_free(pool);
}

static void send_cancel(struct sbx_run *run, enum sbx_reason reason)
{
    struct sbx_pool *pool = run->pool;
    if (run->cancel_sent || run->have_exit)
        return;
    run->cancel_sent = reason == SBX_REASON_OUTPUT_CAP;
    if (pool->eng) {
        sbx_engine_cancel(pool->eng, run->id, reason);
    } else if (pool->z) {
        struct buf m = BUF_INIT(BUF_UNBOUNDED);
        sbx_wire_msg_begin(&m, SBX_MSG_CANCEL, 0, run->id);
        sbx_wire_put_u32(&m, (uint32_t)reason);
        send_msg(pool, &m, NULL, 0);
    }
}

void sbx_run_cancel(struct sbx_run *run)
{
    send_cancel(run, SBX_REASON_KILLED);
}

static void pipeset_close(struct pipeset *ps)
{
    int *fds[] = {ps->in, ps->out, ps->err, ps->hold};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        for (int k = 0; k < 2; k++) {
            if (fds[i][k] != -1)
                close(fds[i][k]);
            fds[i][k] = -1;
        }
}

/* 0, or -1 with err (may be NULL) and nothing left open. */
static int pipeset_make(struct pipeset *ps, struct buf *err)
{
    ps->in[0] = ps->in[1] = ps->out[0] = ps->out[1] = ps->err[0] = ps->err[1] = ps->hold[0] = ps->hold[1] = -1;
    if (pipe2(ps->in, O_CLOEXEC) == -1 || pipe2(ps->out, O_CLOEXEC) == -1 || pipe2(ps->err, O_CLOEXEC) == -1) {
        if (err)
            (void)buf_printf(err, "pipe2: %s", strerror(errno));
        pipeset_close(ps);
        return -1;
    }
    (void)fcntl(ps->in[1], F_SETFL, O_NONBLOCK);
    (void)fcntl(ps->out[0], F_SETFL, O_NONBLOCK);
    (void)fcntl(ps->err[0], F_SETFL, O_NONBLOCK);
    ps->hold[0] = fcntl(ps->out[1], F_DUPFD_CLOEXEC, 3);
    ps->hold[1] = fcntl(ps->err[1], F_DUPFD_CLOEXEC, 3);
    return 0;
}

/* Starts run on an offered child, if one fits: the zygote is told first (RUN with SBX_MSG_F_DIRECT, no fds), then the
 * child gets its RUN from here. 0: started, child[] closed. -1: start it the usual way (child[] untouched): nothing
 * fits, or the zygote's socket is busy (the two messages must reach it in this order), or the child is gone, in
 * which case the run has a new id (the zygote reports the old one as failed, and nobody is waiting for that). */
static int start_direct(struct sbx_pool *pool, struct sbx_run *run, const struct sbx_spec *spec,
                        const struct buf *wire, int child[3])
{
    const struct sbx_limits *l = &spec->limits;
    if (pool->z == NULL || pool->outq || wire->len > SBX_WIRE_INLINE_MAX)
        return -1;
    if (spec->net != SBX_NET_NONE) /* offered children are made for "none"; egress makes a child of its own */
        return -1;
    /* A run a warm interpreter may serve goes to the zygote, which prefers one. */
    if (pool->opts.cfg.warm_python > 0 && sbx_pywarm_eligible(spec))
        return -1;
    struct offer **pp = &pool->offers;
    for (; *pp; pp = &(*pp)->next) {
        const struct sbx_wire_offer *w = &(*pp)->w;
        if (w->work_bytes == l->work_bytes && w->tmp_bytes == l->tmp_bytes &&
            (!w->has_cgroup || (w->cg_memory == l->memory_bytes && w->cg_pids == l->pids && w->cg_cpu == l->cpu_percent)))
            break;
    }
    if (*pp == NULL)
        return -1;
    struct offer *o = *pp;
    *pp = o->next;
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_RUN, SBX_MSG_F_DIRECT, run->id);
    sbx_wire_put_u64(&m, o->token);
    (void)buf_append(&m, wire->data, wire->len);
    int rc = sbx_wire_send(pool->z->sock, m.data, m.len, NULL, 0);
    buf_free(&m);
    if (rc != 0) { /* not sent (a full socket): the offer stands */
        o->next = pool->offers;
        pool->offers = o;
        return -1;
    }
    {
        sbx_wire_msg_begin(&m, SBX_MSG_RUN, 0, run->id);
        (void)buf_append(&m, wire->data, wire->len);
        rc = sbx_wire_send(o->fd, m.data, m.len, child, 3);
        buf_free(&m);
        if (rc != 0)
            run->id = ++pool->next_id; /* the zygote answers the old id alone */
    }
    close(o->fd);
    xfree(o);
    if (rc != 0)
        return -1;
    for (int i = 0; i < 3; i++)
        close(child[i]);
    run->direct = true;
    return 0;
}

bool sbx_run_direct(const struct sbx_run *run)
{
    return run->direct;
}

int sbx_run_start(struct sbx_pool *pool, const struct sbx_spec *spec, sbx_done_fn *cb, void *ud, struct sbx_run **out,
                  struct buf *err)
{
    struct buf wire = BUF_INIT(BUF_UNBOUNDED);
    struct sbx_run *run = NULL;
    if (out)
        *out = NULL;
    if (pool->closing) {
        (void)buf_printf(err, "sandbox pool is closing");
        goto fail;
    }
    /* A zygote that died while serving (killed, OOM) is replaced at once; one that never came up is retried at
     * most once a second, so a broken set-up does not turn into a fork loop. */
    if (pool->broken && pool->zygote && pool->z == NULL &&
        (pool->hello_seen || uv_now(pool->loop) >= pool->respawn_at_ms)) {
        log_warn("sandbox: restarting the zygote (%s)", pool->broken_why);
        pool->broken = false;
        pool->hello_seen = false;
        pool->ready = 0;
        if (start_zygote(pool, &pool->opts, err) != 0) {
            pool->broken = true;
            pool->respawn_at_ms = uv_now(pool->loop) + RESPAWN_DELAY_MS;
            goto fail;
        }
    }
    if (pool->broken) {
        (void)buf_printf(err, "sandbox pool unusable: %s", pool->broken_why);
        goto fail;
    }
    if (sbx_spec_validate(spec, err) != 0)
        goto fail;
    if (spec->net == SBX_NET_EGRESS && pool->opts.egress == NULL) {
        (void)buf_printf(err, "network \"egress\" is not enabled on this pool (sandbox.egress.enabled)");
        goto fail;
    }
    if (sbx_wire_encode_spec(spec, &wire) != 0) {
        (void)buf_printf(err, "spec larger than %u bytes", SBX_MAX_SPEC_BYTES);
        goto fail;
    }
    struct pipeset ps;
    if (pool->have_spare) {
        ps = pool->spare;
        pool->have_spare = false;
    } else if (pipeset_make(&ps, err) != 0) {
        goto fail;
    }
    run = xcalloc(1, sizeof(*run));
    run->pool = pool;
    run->id = ++pool->next_id;
    run->cb = cb;
    run->ud = ud;
    /* A direct run's child gets its RUN first, so that its phase B overlaps with the set-up below. Nothing can come
     * back before this returns to the loop. */
    int child[3] = {ps.in[0], ps.out[1], ps.err[1]};
    bool direct = pool->eng == NULL && start_direct(pool, run, spec, &wire, child) == 0;
    buf_init(&run->res.out, spec->limits.stdout_max);
    buf_init(&run->res.err, spec->limits.stderr_max);
    run->res.exit_code = -1;
    run->out_hold[0] = ps.hold[0];
    run->out_hold[1] = ps.hold[1];
    run->egress_wanted = spec->net == SBX_NET_EGRESS;
    run->res.egress = run->egress_wanted;
    if (spec->collect_files) {
        run->collect = true;
        run->files_out_max = spec->files_out_max;
        run->files_out_bytes = spec->files_out_bytes;
        run->known = xcalloc(spec->nfiles + 1, sizeof(*run->known));
        const char *snippet = sbx_lang_snippet_name(spec->lang);
        if (snippet && spec->argc == 0 && spec->code) {
            run->known[run->nknown++] = (struct sbx_files_known){
                .name = xstrdup(snippet), .len = spec->code_len, .hash = sbx_files_hash(spec->code, spec->code_len)};
        }
        for (size_t i = 0; i < spec->nfiles && run->nknown <= spec->nfiles; i++)
            run->known[run->nknown++] =
                (struct sbx_files_known){.name = xstrdup(spec->files[i].name),
                                         .len = spec->files[i].len,
                                         .hash = sbx_files_hash(spec->files[i].data, spec->files[i].len)};
    }
    uv_pipe_init(pool->loop, &run->in, 0);
    uv_pipe_init(pool->loop, &run->out, 0);
    uv_pipe_init(pool->loop, &run->err, 0);
    run->in.data = run->out.data = run->err.data = run;
    run->handles = 3;
    uv_pipe_open(&run->in, ps.in[1]);
    uv_pipe_open(&run->out, ps.out[0]);
    uv_pipe_open(&run->err, ps.err[0]);
    uv_read_start((uv_stream_t *)&run->out, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&run->err, on_alloc, on_read);
    if (spec->stdin_len) {
        run->stdin_copy = xmemdup(spec->stdin_data, spec->stdin_len);
        uv_buf_t b = uv_buf_init(run->stdin_copy, (unsigned)spec->stdin_len);
        run->wreq.data = run;
        if (uv_write(&run->wreq, (uv_stream_t *)&run->in, &b, 1, on_stdin_written) != 0) {
            xfree_null(&run->stdin_copy);
            uv_close((uv_handle_t *)&run->in, on_run_handle_closed);
        }
    } else {
        uv_close((uv_handle_t *)&run->in, on_run_handle_closed); /* EOF at once */
    }
    run->next = pool->runs;
    if (pool->runs)
        pool->runs->prev = run;
    pool->runs = run;

    if (direct) {
        buf_free(&wire);
        if (out)
            *out = run;
        return 0;
    }
    if (pool->eng) {
        sbx_engine_submit(pool->eng, run->id, wire.data, wire.len, child); /* closes child[] */
    } else {
        struct buf m = BUF_INIT(BUF_UNBOUNDED);
        int fds[4] = {child[0], child[1], child[2], -1}, nfds = 3;
        if (wire.len > SBX_WIRE_INLINE_MAX) {
            int mfd = memfd_create("sbx-spec", MFD_CLOEXEC | MFD_ALLOW_SEALING);
            if (mfd == -1 || write(mfd, wire.data, wire.len) != (ssize_t)wire.len ||
                fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == -1) {
                log_perror("sandbox: spec memfd");
                if (mfd != -1)
                    close(mfd);
                mfd = -1;
            }
            fds[nfds++] = mfd;
            sbx_wire_msg_begin(&m, SBX_MSG_RUN, SBX_MSG_F_MEMFD, run->id);
            if (mfd == -1)
                nfds--; /* the zygote refuses a RUN without its memfd: the run ends with an error */
        } else {
            sbx_wire_msg_begin(&m, SBX_MSG_RUN, 0, run->id);
            (void)buf_append(&m, wire.data, wire.len);
        }
        send_msg(pool, &m, fds, nfds);
        buf_free(&m);
    }
    buf_free(&wire);
    if (out)
        *out = run;
    return 0;
fail: /* before the pipes exist (pipeset_make leaves none open when it fails) */
    buf_free(&wire);
    return -1;
}

/* ---- synchronous convenience ---- */

struct sync_ctx {
    struct sbx_result *res;
    bool done;
};

static void on_sync_done(struct sbx_run *run, struct sbx_result *res, void *ud)
{
    struct sync_ctx *s = ud;
    (void)run;
    *s->res = *res;
    /* The buffers move to the caller; leave the run's copies empty so its cleanup frees nothing twice. */
    buf_init(&res->out, 0);
    buf_init(&res->err, 0);
    s->done = true;
}

int sbx_run_sync(const struct sbx_pool_opts *opts, const struct sbx_spec *spec, struct sbx_result *res, struct buf *err)
{
    uv_loop_t loop;
    struct sbx_pool *pool = NULL;
    struct sbx_pool_opts def;
    struct sync_ctx s = {.res = res, .done = false};
    int rc = -1;
    memset(res, 0, sizeof(*res));
    if (opts == NULL) {
        sbx_pool_opts_init(&def);
        opts = &def;
    }
    if (uv_loop_init(&loop) != 0) {
        (void)buf_printf(err, "uv_loop_init failed");
        return -1;
    }
    if (sbx_pool_new(&loop, opts, &pool, err) != 0)
        goto out;
    if (sbx_run_start(pool, spec, on_sync_done, &s, NULL, err) != 0)
        goto out;
    while (!s.done && uv_run(&loop, UV_RUN_ONCE))
        ;
    rc = s.done ? 0 : -1;
    if (!s.done)
        (void)buf_printf(err, "the run never finished");
out:
    if (pool)
        sbx_pool_close(pool, NULL, NULL);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        log_warn("sandbox: loop closed with handles still open");
    return rc;
}
