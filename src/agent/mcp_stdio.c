/* mcp_stdio.c: MCP servers over stdio (mcp_stdio.h). */
#include "agent/mcp_stdio.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_config.h"
#include "agent/mcp_version.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"

#define ERR_LINE_MAX 512
#define ERR_LINES_PER_WINDOW 20
#define ERR_WINDOW_MS 10000
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define HEALTHY_MS 30000
#define KILL_AFTER_MS 2000

/* ================= the line framer ================= */

void mcp_lines_init(struct mcp_lines *l, size_t max)
{
    memset(l, 0, sizeof(*l));
    l->max = max;
    buf_init(&l->line, max);
}

void mcp_lines_free(struct mcp_lines *l)
{
    buf_free(&l->line);
}

static int give(struct mcp_lines *l, const char *s, size_t n, bool truncated, mcp_line_fn *cb, void *ud)
{
    if (n && s[n - 1] == '\r' && !truncated)
        n--;
    if (n == 0)
        return 0;
    return cb(ud, s, n, truncated);
}

int mcp_lines_feed(struct mcp_lines *l, const char *data, size_t len, mcp_line_fn *cb, void *ud)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        int rc = 0;
        if (l->skipping) {
            if (nl)
                l->skipping = false;
        } else if (l->line.len + take > l->max) { /* the line is too long: its head, then skip the rest */
            size_t room = l->max - l->line.len;
            (void)buf_append(&l->line, data, room);
            rc = give(l, l->line.data, l->line.len, true, cb, ud);
            l->line.len = 0;
            l->skipping = nl == NULL;
        } else if (nl && l->line.len == 0) { /* a whole line in this piece: no copy */
            rc = give(l, data, take, false, cb, ud);
        } else {
            (void)buf_append(&l->line, data, take);
            if (nl) {
                rc = give(l, l->line.data, l->line.len, false, cb, ud);
                l->line.len = 0;
            }
        }
        if (rc != 0)
            return rc;
        if (nl == NULL)
            break;
        data = nl + 1;
        len -= take + 1;
    }
    return 0;
}

/* ================= processes ================= */

enum pstate { P_IDLE, P_INIT, P_READY, P_DEAD };

struct proc;
struct mcp_stdio_req {
    struct mcp_stdio_req *next, *prev;
    struct proc *p;
    int64_t id; /* when sent */
    bool sent;
    char *method;
    cJSON *params;
    uv_timer_t timer; /* the timeout, or the failure answered on a later turn (why set) */
    char why[320];
    bool failing;
    mcp_stdio_fn *cb;
    void *ud;
};

struct proc {
    struct proc *next;
    uv_loop_t *loop;
    char *key, *name, *command;
    char **argv, **envp;
    int64_t timeout_ms;
    enum pstate state;
    uv_process_t proc;
    uv_pipe_t in, out, err;
    int open_io;      /* pipes and the process handle not yet closed */
    int open_timers;  /* restart and kill timers */
    int nreqs;        /* requests not yet freed (a request's timer closes after it has left reqs) */
    bool live;        /* the process runs (its exit not seen yet) */
    bool in_open;
    struct mcp_lines out_l, err_l;
    int64_t next_id;
    struct mcp_stdio_req *init; /* the initialize request, while it is out */
    struct mcp_stdio_req *reqs;
    uv_timer_t restart, kill;
    uint64_t backoff_ms, started_ms;
    bool start_failed; /* the last start did not get as far as initialized: requests fail at once */
    char last_error[320];
    uint64_t err_window_ms;
    int err_lines, err_dropped;
    bool stopping;
};

static _Thread_local struct proc *tl_procs;
static _Thread_local bool tl_stopped;

static uint64_t now_ms(void)
{
    return time_mono_us() / 1000;
}

/* ---- requests ---- */

static void proc_maybe_free(struct proc *p);

static void req_unlink(struct mcp_stdio_req *r)
{
    struct proc *p = r->p;
    if (r->prev)
        r->prev->next = r->next;
    else if (p->reqs == r)
        p->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

static void req_closed(uv_handle_t *h)
{
    struct mcp_stdio_req *r = h->data;
    struct proc *p = r->p;
    cJSON_Delete(r->params);
    xfree(r->method);
    xfree(r);
    p->nreqs--;
    proc_maybe_free(p);
}

/* Ends r: unlinked, its timer closed, then freed (the proc may go with it at shutdown). */
static void req_end(struct mcp_stdio_req *r)
{
    if (r->p->init == r)
        r->p->init = NULL;
    else
        req_unlink(r);
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, req_closed);
}

static void req_answer(struct mcp_stdio_req *r, struct mcp_answer *a)
{
    mcp_stdio_fn *cb = r->cb;
    void *ud = r->ud;
    req_end(r);
    cb(ud, a);
}

static void req_fail_now(struct mcp_stdio_req *r, const char *why)
{
    struct mcp_answer a = {.ok = 0, .message = why};
    req_answer(r, &a);
}

static void proc_write(struct proc *p, const char *s, size_t n);

static void send_cancelled(struct mcp_stdio_req *r, const char *reason)
{
    struct proc *p = r->p;
    if (!r->sent || !p->live || !p->in_open)
        return;
    char m[256];
    int k = snprintf(m, sizeof(m),
                     "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":%" PRId64
                     ",\"reason\":\"%s\"}}",
                     r->id, reason);
    proc_write(p, m, (size_t)k);
}

static void req_timer_fire(uv_timer_t *t)
{
    struct mcp_stdio_req *r = t->data;
    if (r->failing) {
        char why[sizeof(r->why)];
        memcpy(why, r->why, sizeof(why));
        req_fail_now(r, why);
        return;
    }
    char why[320];
    snprintf(why, sizeof(why), "MCP server %s did not answer %s within %" PRId64 " ms", r->p->name, r->method,
             r->p->timeout_ms);
    send_cancelled(r, "timed out");
    req_fail_now(r, why);
}

/* Answered with an error on a later turn (never from inside the caller's call). */
static void req_fail_later(struct mcp_stdio_req *r, const char *why)
{
    snprintf(r->why, sizeof(r->why), "%s", why);
    r->failing = true;
    uv_timer_stop(&r->timer);
    uv_timer_start(&r->timer, req_timer_fire, 0, 0);
}

static void req_send(struct mcp_stdio_req *r)
{
    struct proc *p = r->p;
    r->id = p->next_id++;
    r->sent = true;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "jsonrpc", "2.0");
    cJSON_AddNumberToObject(m, "id", (double)r->id);
    cJSON_AddStringToObject(m, "method", r->method);
    if (r->params)
        cJSON_AddItemReferenceToObject(m, "params", r->params);
    char *s = cJSON_PrintUnformatted(m); /* no raw newline: cJSON escapes them in strings */
    cJSON_Delete(m);
    proc_write(p, s, strlen(s));
    cJSON_free(s);
}

static struct mcp_stdio_req *req_new(struct proc *p, const char *method, cJSON *params, mcp_stdio_fn *cb, void *ud)
{
    struct mcp_stdio_req *r = xcalloc(1, sizeof(*r));
    r->p = p;
    r->method = xstrdup(method);
    r->params = params;
    r->cb = cb;
    r->ud = ud;
    uv_timer_init(p->loop, &r->timer);
    r->timer.data = r;
    p->nreqs++;
    uv_timer_start(&r->timer, req_timer_fire, (uint64_t)p->timeout_ms, 0);
    return r;
}

/* Every request of p fails (later) with why. */
static void fail_all(struct proc *p, const char *why)
{
    for (struct mcp_stdio_req *r = p->reqs; r; r = r->next)
        if (!r->failing)
            req_fail_later(r, why);
}

/* ---- the process ---- */

struct wreq {
    uv_write_t w;
    char data[];
};

static void write_done(uv_write_t *w, int status)
{
    (void)status; /* a broken pipe shows as the process's exit */
    xfree(w);
}

static void proc_write(struct proc *p, const char *s, size_t n)
{
    if (!p->live || !p->in_open)
        return;
    struct wreq *w = xmalloc(sizeof(*w) + n + 1);
    memcpy(w->data, s, n);
    w->data[n] = '\n';
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(n + 1));
    if (uv_write(&w->w, (uv_stream_t *)&p->in, &b, 1, write_done) != 0)
        xfree(w);
}

static void io_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    p->open_io--;
    proc_maybe_free(p);
}

static void timer_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    p->open_timers--;
    proc_maybe_free(p);
}

static void proc_maybe_free(struct proc *p)
{
    if (!p->stopping || p->open_io > 0 || p->open_timers > 0 || p->nreqs > 0)
        return;
    mcp_lines_free(&p->out_l);
    mcp_lines_free(&p->err_l);
    for (char **a = p->argv; a && *a; a++)
        xfree(*a);
    for (char **e = p->envp; e && *e; e++)
        xfree(*e);
    xfree(p->argv);
    xfree(p->envp);
    xfree(p->key);
    xfree(p->name);
    xfree(p->command);
    xfree(p);
}

static void close_io(struct proc *p)
{
    if (p->in_open) {
        p->in_open = false;
        uv_close((uv_handle_t *)&p->in, io_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&p->out))
        uv_close((uv_handle_t *)&p->out, io_closed);
    if (!uv_is_closing((uv_handle_t *)&p->err))
        uv_close((uv_handle_t *)&p->err, io_closed);
}

static void proc_start(struct proc *p);

static void restart_fire(uv_timer_t *t)
{
    struct proc *p = t->data;
    if (p->stopping)
        return;
    if (p->open_io > 0) { /* the last process's handles are still closing */
        uv_timer_start(&p->restart, restart_fire, 10, 0);
        return;
    }
    proc_start(p);
}

static void schedule_restart(struct proc *p)
{
    p->state = P_DEAD;
    if (p->stopping)
        return;
    uint64_t up = now_ms() - p->started_ms;
    if (up >= HEALTHY_MS || p->backoff_ms == 0)
        p->backoff_ms = BACKOFF_MIN_MS;
    else if ((p->backoff_ms *= 2) > BACKOFF_MAX_MS)
        p->backoff_ms = BACKOFF_MAX_MS;
    uv_timer_start(&p->restart, restart_fire, p->backoff_ms, 0);
}

static void cancel_init(struct proc *p)
{
    if (p->init)
        req_end(p->init);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig)
{
    struct proc *p = h->data;
    bool in_init = p->state == P_INIT;
    p->live = false;
    uv_timer_stop(&p->kill);
    char why[320];
    if (sig)
        snprintf(why, sizeof(why), "MCP server %s exited (signal %d)%s", p->name, sig,
                 in_init ? " before it answered initialize" : "");
    else
        snprintf(why, sizeof(why), "MCP server %s exited (status %" PRId64 ")%s", p->name, status,
                 in_init ? " before it answered initialize" : "");
    if (!p->stopping)
        log_warn("%s; restarting it", why);
    if (in_init && !p->start_failed) {
        p->start_failed = true;
        snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    }
    cancel_init(p);
    fail_all(p, why);
    close_io(p);
    uv_close((uv_handle_t *)&p->proc, io_closed);
    if (p->stopping && !uv_is_closing((uv_handle_t *)&p->kill))
        uv_close((uv_handle_t *)&p->kill, timer_closed);
    schedule_restart(p);
}

/* The process is of no use (a broken stdout, a refused initialize): it is killed; its exit does the rest. */
static void proc_kill(struct proc *p, int sig)
{
    if (!p->live)
        return;
    (void)uv_kill(-p->proc.pid, sig); /* its process group (it leads one): what it started goes too */
    (void)uv_process_kill(&p->proc, sig);
}

static void kill_fire(uv_timer_t *t)
{
    struct proc *p = t->data;
    if (p->live)
        log_warn("MCP server %s did not exit within %d ms (%s): SIGKILL", p->name, KILL_AFTER_MS,
                 p->stopping ? "SIGTERM at shutdown" : "it closed its stdout");
    proc_kill(p, SIGKILL);
}

static void err_line(struct proc *p, const char *s, size_t n, bool truncated)
{
    uint64_t now = now_ms();
    if (now - p->err_window_ms >= ERR_WINDOW_MS) {
        if (p->err_dropped)
            log_warn("MCP server %s: %d more stderr lines not logged", p->name, p->err_dropped);
        p->err_window_ms = now;
        p->err_lines = 0;
        p->err_dropped = 0;
    }
    if (p->err_lines >= ERR_LINES_PER_WINDOW) {
        p->err_dropped++;
        return;
    }
    p->err_lines++;
    log_warn("MCP server %s stderr: %.*s%s", p->name, (int)n, s, truncated ? "..." : "");
}

static int on_err_line(void *ud, const char *s, size_t n, bool truncated)
{
    err_line(ud, s, n, truncated);
    return 0;
}

/* A request of the server's: ping is answered, anything else is refused (agentd offers no client features). */
static void answer_server_request(struct proc *p, const cJSON *id, const char *method)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "jsonrpc", "2.0");
    cJSON_AddItemToObject(m, "id", cJSON_Duplicate(id, true));
    if (strcmp(method, "ping") == 0) {
        cJSON_AddObjectToObject(m, "result");
    } else {
        cJSON *e = cJSON_AddObjectToObject(m, "error");
        cJSON_AddNumberToObject(e, "code", -32601);
        cJSON_AddStringToObject(e, "message", "Method not found");
    }
    char *s = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    proc_write(p, s, strlen(s));
    cJSON_free(s);
}

static int on_out_line(void *ud, const char *s, size_t n, bool truncated)
{
    struct proc *p = ud;
    if (truncated) {
        log_warn("MCP server %s sent a message over %u bytes: dropped", p->name, (unsigned)MCP_MAX_RESPONSE);
        return 0;
    }
    cJSON *m = cJSON_ParseWithLength(s, n);
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(m);
        err_line(p, s, n > 200 ? 200 : n, n > 200); /* not JSON-RPC: a server that logs on stdout */
        return 0;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(m, "method");
    if (cJSON_IsString(method)) {
        if (id && (cJSON_IsNumber(id) || cJSON_IsString(id)))
            answer_server_request(p, id, method->valuestring);
        cJSON_Delete(m); /* a notification (log message, progress, list changed): skipped */
        return 0;
    }
    struct mcp_stdio_req *r = NULL;
    if (cJSON_IsNumber(id)) {
        if (p->init && p->init->sent && (double)p->init->id == id->valuedouble)
            r = p->init;
        for (struct mcp_stdio_req *q = p->reqs; q && !r; q = q->next)
            if (q->sent && !q->failing && (double)q->id == id->valuedouble)
                r = q;
    }
    if (r == NULL) {
        cJSON_Delete(m); /* an answer to a request that timed out or was cancelled */
        return 0;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(m, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    cJSON *result = cJSON_DetachItemFromObjectCaseSensitive(m, "result");
    struct mcp_answer a = {.ok = 1};
    if (cJSON_IsObject(result)) {
        a.result = result;
    } else if (cJSON_IsObject(err)) {
        a.rpc_error = true;
        double c = cJSON_IsNumber(code) ? code->valuedouble : 0;
        a.code = c >= -2147483648.0 && c <= 2147483647.0 ? (int64_t)c : 0;
        a.message = cJSON_IsString(msg) ? msg->valuestring : "(no message)";
    } else {
        a.ok = 0;
        a.message = "the server's response has neither a result object nor an error object";
    }
    bool given = a.result != NULL; /* (decided before the callee may take and free it) */
    req_answer(r, &a);
    if (given)
        cJSON_Delete(a.result); /* NULL when the callee took it */
    else
        cJSON_Delete(result);
    cJSON_Delete(m);
    return 0;
}

static _Thread_local char tl_rbuf[65536];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(tl_rbuf, sizeof(tl_rbuf));
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct proc *p = s->data;
    if (n > 0) {
        mcp_lines_feed(&p->out_l, b->base, (size_t)n, on_out_line, p);
    } else if (n < 0) {
        uv_read_stop(s);
        if (p->live && !p->stopping) /* it is exiting, or broken: SIGKILL unless it has gone 2 s from now */
            uv_timer_start(&p->kill, kill_fire, KILL_AFTER_MS, 0);
    }
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct proc *p = s->data;
    if (n > 0)
        mcp_lines_feed(&p->err_l, b->base, (size_t)n, on_err_line, p);
    else if (n < 0)
        uv_read_stop(s);
}

static void init_answered(void *ud, struct mcp_answer *a)
{
    struct proc *p = ud;
    char why[320] = "";
    const cJSON *pv = a->ok && !a->rpc_error ? cJSON_GetObjectItemCaseSensitive(a->result, "protocolVersion") : NULL;
    if (!a->ok)
        snprintf(why, sizeof(why), "%s", a->message);
    else if (a->rpc_error)
        snprintf(why, sizeof(why), "MCP server %s refused initialize: %s", p->name, a->message);
    else if (!cJSON_IsString(pv) || !mcp_version_known(pv->valuestring))
        snprintf(why, sizeof(why), "MCP server %s speaks protocol version '%.32s', which agentd does not", p->name,
                 cJSON_IsString(pv) ? pv->valuestring : "");
    if (why[0]) {
        log_warn("%s", why);
        p->start_failed = true;
        snprintf(p->last_error, sizeof(p->last_error), "%s", why);
        fail_all(p, why);
        proc_kill(p, SIGKILL);
        return;
    }
    static const char initialized[] = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";
    proc_write(p, initialized, sizeof(initialized) - 1);
    p->state = P_READY;
    p->start_failed = false;
    for (struct mcp_stdio_req *r = p->reqs; r; r = r->next)
        if (!r->sent && !r->failing)
            req_send(r);
}

static void proc_start(struct proc *p)
{
    uv_pipe_init(p->loop, &p->in, 0);
    uv_pipe_init(p->loop, &p->out, 0);
    uv_pipe_init(p->loop, &p->err, 0);
    p->in.data = p->out.data = p->err.data = p->proc.data = p;
    p->open_io += 4;
    p->in_open = true;
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&p->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err;
    uv_process_options_t po;
    memset(&po, 0, sizeof(po));
    po.file = p->command;
    po.args = p->argv;
    po.env = p->envp;
    po.exit_cb = on_exit_cb;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.flags = UV_PROCESS_DETACHED; /* its own session and process group, killed as a group */
    mcp_lines_free(&p->out_l);
    mcp_lines_free(&p->err_l);
    mcp_lines_init(&p->out_l, MCP_MAX_RESPONSE);
    mcp_lines_init(&p->err_l, ERR_LINE_MAX);
    p->started_ms = now_ms();
    p->next_id = 1;
    int rc = uv_spawn(p->loop, &p->proc, &po);
    if (rc != 0) {
        snprintf(p->last_error, sizeof(p->last_error), "MCP server %s: cannot start '%.200s': %s", p->name,
                 p->command, uv_strerror(rc));
        log_warn("%s", p->last_error);
        p->start_failed = true;
        fail_all(p, p->last_error);
        close_io(p);
        uv_close((uv_handle_t *)&p->proc, io_closed); /* libuv: closed even when the spawn failed */
        schedule_restart(p);
        return;
    }
    p->live = true;
    p->state = P_INIT;
    uv_read_start((uv_stream_t *)&p->out, alloc_cb, on_out);
    uv_read_start((uv_stream_t *)&p->err, alloc_cb, on_err);
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "protocolVersion", MCP_PROTOCOL_VERSION);
    cJSON_AddObjectToObject(params, "capabilities");
    cJSON *ci = cJSON_AddObjectToObject(params, "clientInfo");
    cJSON_AddStringToObject(ci, "name", "agentd");
    cJSON_AddStringToObject(ci, "version", "1");
    p->init = req_new(p, "initialize", params, init_answered, p);
    req_send(p->init);
}

/* ---- the process of a server, per loop ---- */

static char *key_of(const struct agent_mcp_server *srv)
{
    struct buf k = BUF_INIT(BUF_UNBOUNDED);
    buf_printf(&k, "%s\x1f%s\x1f%" PRId64, srv->name, srv->command, srv->timeout_ms);
    for (size_t i = 0; i < srv->args.n; i++)
        buf_printf(&k, "\x1e%s", srv->args.v[i]);
    buf_append_str(&k, "\x1f");
    for (size_t i = 0; i < srv->env.n; i++)
        buf_printf(&k, "\x1e%s", srv->env.v[i]);
    return buf_steal(&k, NULL);
}

static const char *const pass_env[] = {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR",
                                       NULL};

static struct proc *proc_get(uv_loop_t *loop, const struct agent_mcp_server *srv)
{
    char *key = key_of(srv);
    for (struct proc *p = tl_procs; p; p = p->next)
        if (p->loop == loop && strcmp(p->key, key) == 0) {
            xfree(key);
            return p;
        }
    struct proc *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->key = key;
    p->name = xstrdup(srv->name);
    p->command = xstrdup(srv->command);
    p->timeout_ms = srv->timeout_ms > 0 ? srv->timeout_ms : 60000;
    p->argv = xcalloc(srv->args.n + 2, sizeof(char *));
    p->argv[0] = xstrdup(srv->command);
    for (size_t i = 0; i < srv->args.n; i++)
        p->argv[i + 1] = xstrdup(srv->args.v[i]);
    size_t ne = 0;
    p->envp = xcalloc(sizeof(pass_env) / sizeof(pass_env[0]) + srv->env.n + 1, sizeof(char *));
    for (const char *const *k = pass_env; *k; k++) {
        bool overridden = false;
        for (size_t i = 0; i < srv->env.n && !overridden; i++)
            overridden = strncmp(srv->env.v[i], *k, strlen(*k)) == 0 && srv->env.v[i][strlen(*k)] == '=';
        const char *v = getenv(*k);
        if (v && !overridden) {
            struct buf kv = BUF_INIT(BUF_UNBOUNDED);
            buf_printf(&kv, "%s=%s", *k, v);
            p->envp[ne++] = buf_steal(&kv, NULL);
        }
    }
    for (size_t i = 0; i < srv->env.n; i++)
        p->envp[ne++] = xstrdup(srv->env.v[i]);
    mcp_lines_init(&p->out_l, MCP_MAX_RESPONSE);
    mcp_lines_init(&p->err_l, ERR_LINE_MAX);
    uv_timer_init(loop, &p->restart);
    uv_timer_init(loop, &p->kill);
    p->restart.data = p->kill.data = p;
    p->open_timers = 2;
    p->next = tl_procs;
    tl_procs = p;
    return p;
}

struct mcp_stdio_req *mcp_stdio_request(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *method,
                                        cJSON *params, mcp_stdio_fn *cb, void *ud)
{
    if (tl_stopped || srv->command == NULL) {
        /* a request of its own that fails on the next turn, on a proc that is freed with it */
        struct proc *p = xcalloc(1, sizeof(*p));
        p->loop = loop;
        p->stopping = true;
        p->name = xstrdup(srv->name);
        p->timeout_ms = 1;
        struct mcp_stdio_req *r = req_new(p, method, params, cb, ud);
        p->reqs = r;
        req_fail_later(r, "MCP tools are not available while the daemon stops");
        return r;
    }
    struct proc *p = proc_get(loop, srv);
    struct mcp_stdio_req *r = req_new(p, method, params, cb, ud);
    r->next = p->reqs;
    if (p->reqs)
        p->reqs->prev = r;
    p->reqs = r;
    if (p->state == P_IDLE)
        proc_start(p);
    else if (p->state == P_READY)
        req_send(r);
    else if (p->state == P_DEAD && p->start_failed)
        req_fail_later(r, p->last_error); /* it did not start last time: no waiting for the next try */
    /* else (initializing, or about to be started again): sent once it is ready */
    return r;
}

void mcp_stdio_cancel(struct mcp_stdio_req *r)
{
    if (r == NULL)
        return;
    if (!r->failing)
        send_cancelled(r, "cancelled by agentd");
    req_end(r);
}


void mcp_stdio_loop_done(void)
{
    tl_stopped = true;
    struct proc *list = tl_procs;
    tl_procs = NULL;
    while (list) {
        struct proc *p = list;
        list = p->next;
        p->stopping = true;
        cancel_init(p);
        fail_all(p, "MCP tools are not available while the daemon stops");
        uv_timer_stop(&p->restart);
        uv_close((uv_handle_t *)&p->restart, timer_closed);
        if (p->live) {
            if (p->in_open) { /* EOF on its stdin: the spec's way to ask a stdio server to stop */
                p->in_open = false;
                uv_close((uv_handle_t *)&p->in, io_closed);
            }
            proc_kill(p, SIGTERM);
            uv_timer_start(&p->kill, kill_fire, KILL_AFTER_MS, 0); /* closed by its exit */
        } else {
            uv_close((uv_handle_t *)&p->kill, timer_closed);
        }
        proc_maybe_free(p);
    }
}
