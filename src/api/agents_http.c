/* agents_http.c: the runs API (agents_http.h). Authenticated with virtual keys like the gateway's routes: under
 * auth.mode keys every call needs a key; a run made with a key is visible (get, list, events, cancel) to that key
 * only. A run's state is read from the agent store (the run loop commits every step), on the libuv thread pool, so
 * any worker answers for any run. */
#include "api/agents_http.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/run.h"
#include "api/worker.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/config.h"
#include "policy/auth.h"
#include "store/agent_store.h"

static void respond_cjson(struct http_req *req, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    http_respond(req, status, "application/json", s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(o);
}

static void err(struct http_req *req, int status, const char *type, const char *code, const char *param,
                const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param && param[0])
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    cJSON_AddStringToObject(e, "code", code);
    respond_cjson(req, status, o);
}

/* The caller: 0 with *who (release it; NULL for an anonymous caller under auth.mode none) and the secret, or -1
 * after answering 401. */
static int caller(struct http_req *req, const struct principal **who, struct str *secret)
{
    *who = NULL;
    *secret = auth_secret_from(http_req_header(req, "authorization"), http_req_header(req, "x-api-key"),
                               http_req_header(req, "api-key"));
    if (!keyring_armed())
        return 0;
    bool keys = auth_mode_effective(req->cfg) == AUTH_MODE_KEYS;
    if (!keys && !auth_looks_like_key(*secret)) {
        *secret = STR_NULL;
        return 0;
    }
    struct auth_input in = {.secret = *secret};
    enum auth_result r = auth_check(&in, (int64_t)time(NULL), who);
    if (r == AUTH_OK)
        return 0;
    err(req, 401, "authentication_error", "invalid_api_key", NULL,
        "Invalid or missing API key. Pass an agentd virtual key as `Authorization: Bearer <key>`, `x-api-key` or "
        "`api-key`.");
    return -1;
}

/* ---- store reads on the thread pool ---- */

enum job_kind { JOB_GET, JOB_LIST, JOB_EVENTS };

struct job {
    uv_work_t w;
    struct http_req *req;
    enum job_kind kind;
    char id[RUN_ID_MAX + 8];
    char key_id[48];      /* the caller's; "" for none */
    char agent[80], status[24];
    size_t limit;
    int rc;
    char err[256];
    struct as_run run;
    struct as_step *steps;
    size_t nsteps;
    struct as_run *runs;
    size_t nruns;
    int answer_status;    /* 200, or 202 for a run just started */
    struct sse *sse;      /* JOB_EVENTS */
    int64_t after, last;  /* JOB_EVENTS: the events numbered after `after` (evs), and the run's newest number */
    struct as_event *evs;
    size_t nev;
};

#define SSE_EVENTS_MAX 256 /* events read by one poll (more: the next poll comes at once) */

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct agent_store *st = agents_store();
    if (st == NULL) {
        j->rc = -1;
        snprintf(j->err, sizeof(j->err), "the run store is not available");
        return;
    }
    if (j->kind == JOB_LIST) {
        j->rc = agent_store_list(st, j->agent, j->status, j->limit, &j->runs, &j->nruns, j->err, sizeof(j->err));
        return;
    }
    if (j->kind == JOB_EVENTS) {
        /* the events first, so the run and steps read after are at least as new as every event; from the last one
         * sent, again: whether it was the run's end decides whether the stream is over */
        j->rc = agent_store_events(st, j->id, j->after > 0 ? j->after - 1 : 0, SSE_EVENTS_MAX, &j->evs, &j->nev,
                                   &j->last, j->err, sizeof(j->err));
        if (j->rc != 0)
            return;
    }
    j->rc = agent_store_get(st, j->id, &j->run, j->err, sizeof(j->err));
    /* the steps are what the new events show: a poll with none (most polls of a watched run) reads no step */
    if (j->rc == 0 && (j->kind != JOB_EVENTS || j->last > j->after))
        j->rc = agent_store_steps(st, j->id, &j->steps, &j->nsteps, j->err, sizeof(j->err));
}

static void job_free(struct job *j)
{
    as_run_free(&j->run); /* zeroed when it was not read */
    for (size_t i = 0; i < j->nsteps; i++)
        as_step_free(&j->steps[i]);
    xfree(j->steps);
    for (size_t i = 0; i < j->nruns; i++)
        as_run_free(&j->runs[i]);
    xfree(j->runs);
    xfree(j->evs);
    xfree(j);
}

/* A run made with a key is visible to that key only (and one made without a key to every caller). */
static bool visible(const struct as_run *r, const char *key_id)
{
    return r->key_id[0] == '\0' || strcmp(r->key_id, key_id) == 0;
}

static void job_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct http_req *req = j->req;
    if (status != 0 || j->rc < 0) {
        if (j->err[0])
            log_error("runs API: %s", j->err);
        err(req, 503, "server_error", "store_unavailable", NULL, "the run store is not available");
    } else if (j->kind == JOB_LIST) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON *arr = cJSON_AddArrayToObject(o, "data");
        for (size_t i = 0; i < j->nruns; i++)
            if (visible(&j->runs[i], j->key_id))
                cJSON_AddItemToArray(arr, run_to_json(&j->runs[i], NULL, 0));
        respond_cjson(req, 200, o);
    } else if (j->rc == 1 || !visible(&j->run, j->key_id)) {
        /* not the caller's: as if it did not exist */
        err(req, 404, "not_found_error", "run_not_found", NULL, "no such run");
    } else {
        respond_cjson(req, j->answer_status ? j->answer_status : 200, run_to_json(&j->run, j->steps, j->nsteps));
    }
    job_free(j);
}

static void job_queue(struct job *j)
{
    j->w.data = j;
    if (uv_queue_work(http_server_loop(j->req->server), &j->w, job_work, job_done) != 0) {
        err(j->req, 503, "server_error", "busy", NULL, "busy");
        xfree(j);
    }
}

static bool final_status(const char *s)
{
    return strcmp(s, "running") != 0 && strcmp(s, "queued") != 0;
}

/* ---- POST /v1/agents/{name}/runs ---- */

struct create {
    struct http_req *req;
    char id[RUN_ID_MAX];
    char key_id[48];
    bool wait;
};

static void on_create_abort(struct http_req *req, void *ud)
{
    struct create *c = ud;
    run_forget_waiter(c->id, c);
    req->on_abort = NULL;
    http_respond(req, 499, NULL, NULL, 0); /* discarded: the client is gone */
    xfree(c);
}

static void on_run_ready(void *ud, const char *id)
{
    struct create *c = ud;
    c->req->on_abort = NULL;
    struct job *j = xcalloc(1, sizeof(*j));
    j->req = c->req;
    j->kind = JOB_GET;
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->key_id, sizeof(j->key_id), "%s", c->key_id);
    j->answer_status = c->wait ? 200 : 202;
    xfree(c);
    job_queue(j);
}

void agents_http_runs_create(struct http_req *req)
{
    static const char base[] = "/v1/agents/";
    struct str p = req->path;
    struct str rest = str_make(p.p + sizeof(base) - 1, p.n - (sizeof(base) - 1));
    static const char tail[] = "/runs";
    size_t tl = sizeof(tail) - 1;
    if (rest.n <= tl || memcmp(rest.p + rest.n - tl, tail, tl) != 0 || rest.n - tl > AGENT_NAME_MAX) {
        err(req, 404, "not_found_error", "unknown_url", NULL, "not found: POST /v1/agents/{name}/runs");
        return;
    }
    if (req->method != HTTP_M_POST) {
        http_resp_header(req, "Allow", "POST");
        err(req, 405, "invalid_request_error", "method_not_allowed", NULL, "method not allowed");
        return;
    }
    char name[AGENT_NAME_MAX + 1];
    memcpy(name, rest.p, rest.n - tl);
    name[rest.n - tl] = '\0';
    const struct principal *who;
    struct str secret;
    if (caller(req, &who, &secret) != 0)
        return;
    struct config_agent def;
    if (agent_name_problem(name)[0] || !agents_lookup(req->cfg, name, &def)) {
        principal_release(who);
        char m[160];
        snprintf(m, sizeof(m), "no agent named '%s'", name);
        err(req, 404, "not_found_error", "agent_not_found", NULL, m);
        return;
    }
    struct run_request rq;
    char msg[256], param[80];
    if (run_request_parse(req->body.data, req->body.len, &rq, msg, sizeof(msg), param, sizeof(param)) != 0) {
        principal_release(who);
        agent_def_free(&def);
        err(req, 400, "invalid_request_error", "invalid_run_input", param, msg);
        return;
    }
    struct worker *w = worker_of_loop(http_server_loop(req->server));
    struct create *c = xcalloc(1, sizeof(*c));
    c->req = req;
    c->wait = rq.wait;
    if (who)
        snprintf(c->key_id, sizeof(c->key_id), "%s", who->key_id);
    int status = 500;
    int rc = run_start(http_server_loop(req->server), w->gateway, req->cfg, &def, &rq, who, secret, c->id,
                       on_run_ready, c, !rq.wait, &status, msg, sizeof(msg));
    principal_release(who);
    agent_def_free(&def);
    run_request_free(&rq);
    if (rc != 0) {
        xfree(c);
        if (status == 429)
            http_resp_header(req, "Retry-After", "1");
        err(req, status, status == 429 ? "rate_limit_error" : "server_error",
            status == 429 ? "runs_queue_full" : "runs_unavailable", NULL, msg);
        return;
    }
    req->on_abort = on_create_abort;
    req->abort_ud = c;
}

/* ---- POST /v1/runs/{id}/cancel ---- */

static void cancel_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    if (status == 0 && j->rc == 0 && visible(&j->run, j->key_id)) {
        if (final_status(j->run.status)) {
            char m[128];
            snprintf(m, sizeof(m), "the run has already ended (%s)", j->run.status);
            err(j->req, 409, "invalid_request_error", "run_not_running", NULL, m);
            job_free(j);
            return;
        }
        if (run_cancel(j->id) != 0) {
            /* not live in this process (its daemon stopped before it ended; it resumes on restart) */
            err(j->req, 409, "invalid_request_error", "run_not_live", NULL,
                "the run is not running in this process right now; retry");
            job_free(j);
            return;
        }
    }
    job_done(w, status); /* 202 with the run as it is now, or the error */
}

static void cancel_queue(struct job *j)
{
    if (uv_queue_work(http_server_loop(j->req->server), &j->w, job_work, cancel_done) != 0) {
        err(j->req, 503, "server_error", "busy", NULL, "busy");
        xfree(j);
    }
}

/* ---- GET /v1/runs/{id}/events: the run's steps as server-sent events ----
 *
 * Every event of the run's event log (agent_store.h: one per step state a commit wrote, one when the run ends) is
 * sent with its number as the SSE `id:`; a client that reconnects with `Last-Event-ID: N` (or `?after=N`) gets the
 * events numbered after N, read from the store, then the new ones as they are committed: no gap, no duplicate,
 * across restarts. run.status (first, the run as it is) and step.delta (the tokens of the LLM step in progress,
 * kept in memory only) have no id: they leave the client's Last-Event-ID where it was. */

#define SSE_POLL_MS 50
#define SSE_RETRY_MS 1000 /* the reconnection delay suggested to clients (`retry:`) */

struct sse {
    struct http_req *req;
    uv_timer_t timer;
    char id[RUN_ID_MAX + 8], key_id[48];
    int64_t after;       /* the number of the last event sent (or the client's Last-Event-ID) */
    const char *param;   /* where the client's resume point came from: "Last-Event-ID" or "after" */
    bool gone, busy, started, closing, watching, finished;
    bool rechecked;      /* an ended run with no event was read again (see sse_job_done) */
    int64_t delta_step;  /* the LLM step whose text was last sent as step.delta (1-based; 0: none) */
    size_t delta_off;    /* bytes of its text sent */
};

static void sse_closed(uv_handle_t *h)
{
    struct sse *s = h->data;
    xfree(s);
}

static void sse_stop(struct sse *s)
{
    if (s->closing)
        return;
    s->closing = true;
    if (s->watching)
        run_watch(s->id, -1);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, sse_closed);
}

static void sse_end(struct sse *s)
{
    struct http_req *req = s->req;
    req->on_abort = NULL;
    if (s->started)
        http_stream_end(req);
    sse_stop(s);
}

static void on_sse_abort(struct http_req *req, void *ud)
{
    (void)req;
    struct sse *s = ud;
    s->gone = true;
    if (!s->busy)
        sse_end(s);
}

/* An event; ev > 0: its number, sent as `id:`. */
static void sse_event(struct sse *s, int64_t ev, const char *name, cJSON *data)
{
    char *d = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    if (ev > 0)
        buf_printf(&b, "id: %lld\n", (long long)ev);
    buf_printf(&b, "event: %s\ndata: %s\n\n", name, d);
    cJSON_free(d);
    http_stream_write(s->req, b.data, b.len);
    buf_free(&b);
}

static void sse_poll(uv_timer_t *t);

static void delta_event(struct sse *s, int64_t step, size_t offset, const char *text, size_t len)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "step", (double)step);
    cJSON_AddNumberToObject(d, "offset", (double)offset);
    struct buf t = BUF_INIT(BUF_UNBOUNDED);
    buf_append(&t, text, len);
    cJSON_AddStringToObject(d, "delta", t.data ? t.data : "");
    buf_free(&t);
    sse_event(s, 0, "step.delta", d);
}

/* The tokens the run's current LLM step has streamed since the last poll (run_stream_read). */
static void send_deltas(struct sse *s)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    int64_t step = s->delta_step;
    size_t off = s->delta_off;
    if (run_stream_read(s->id, &step, &off, &b)) {
        size_t from = step != s->delta_step ? 0 : s->delta_off;
        delta_event(s, step, from, b.data, b.len);
        s->delta_step = step;
        s->delta_off = off;
    }
    buf_free(&b);
}

/* An LLM step (number `step`) has finished: what of its text the deltas did not show yet (the run may have moved
 * on, or ended, between two polls), so that the deltas of a step add up to its content. */
static void finish_deltas(struct sse *s, int64_t step, const struct as_step *st)
{
    if (step < s->delta_step)
        return; /* an earlier step (a stream that opened late sees them all at once) */
    if (step == s->delta_step && s->delta_off > 0 && s->delta_off != SIZE_MAX && st->result) {
        cJSON *resp = cJSON_Parse(st->result);
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0), "message");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (cJSON_IsString(content) && strlen(content->valuestring) > s->delta_off)
            delta_event(s, step, s->delta_off, content->valuestring + s->delta_off,
                        strlen(content->valuestring) - s->delta_off);
        cJSON_Delete(resp);
    }
    s->delta_step = step;
    s->delta_off = SIZE_MAX; /* done: its text is not read again */
}

static const char *event_name(const struct as_step *st, const char *state)
{
    if (strcmp(st->kind, "llm") == 0)
        return "step.finished";
    if (strcmp(state, "pending") == 0)
        return "tool.call";
    if (strcmp(state, "started") == 0)
        return "tool.started";
    return "tool.result";
}

/* The index of the step numbered seq in steps (sorted by seq), or -1. */
static ssize_t step_at(const struct as_step *steps, size_t n, int64_t seq)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (steps[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && steps[lo].seq == seq ? (ssize_t)lo : -1;
}

/* The step as the event saw it: a tool call's `tool.call` and `tool.started` show it before its result. */
static cJSON *step_event_json(const struct as_run *run, const struct as_step *now, const char *state)
{
    struct as_step st = *now;
    snprintf(st.state, sizeof(st.state), "%s", state);
    bool tool = strcmp(st.kind, "tool") == 0;
    if (tool && (strcmp(state, "pending") == 0 || strcmp(state, "started") == 0)) {
        st.result = NULL;
        st.t_end_ms = 0;
        if (strcmp(state, "pending") == 0)
            st.t_start_ms = 0;
    }
    cJSON *full = run_to_json(run, &st, 1);
    cJSON *steps = cJSON_DetachItemFromObjectCaseSensitive(full, "steps");
    cJSON_Delete(full);
    cJSON *ev = cJSON_DetachItemFromArray(steps, 0);
    cJSON_Delete(steps);
    return ev;
}

static void sse_bad_resume(struct sse *s, const char *msg)
{
    s->req->on_abort = NULL;
    err(s->req, 400, "invalid_request_error", "invalid_last_event_id", s->param, msg);
    sse_stop(s);
}

static void sse_job_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct sse *s = j->sse;
    s->busy = false;
    if (s->gone) {
        job_free(j);
        sse_end(s);
        return;
    }
    if (status != 0 || j->rc != 0 || !visible(&j->run, s->key_id)) {
        if (!s->started) {
            s->req->on_abort = NULL;
            if (status == 0 && j->rc >= 0)
                err(s->req, 404, "not_found_error", "run_not_found", NULL, "no such run");
            else
                err(s->req, 503, "server_error", "store_unavailable", NULL, "the run store is not available");
            sse_stop(s);
        } else {
            sse_end(s);
        }
        job_free(j);
        return;
    }
    if (!s->started) {
        if (s->after > j->last) {
            char m[192];
            snprintf(m, sizeof(m), "%s %lld is after the run's last event (%lld)", s->param, (long long)s->after,
                     (long long)j->last);
            job_free(j);
            sse_bad_resume(s, m);
            return;
        }
        s->started = true;
        http_resp_header(s->req, "Cache-Control", "no-cache");
        http_stream_start(s->req, 200, "text/event-stream");
        char retry[32];
        int rn = snprintf(retry, sizeof(retry), "retry: %d\n\n", SSE_RETRY_MS);
        http_stream_write(s->req, retry, (size_t)rn);
        sse_event(s, 0, "run.status", run_to_json(&j->run, NULL, 0));
    }
    /* the events committed since the last poll, in order, then the tokens streamed meanwhile */
    int64_t *llm_no = xcalloc(j->nsteps + 1, sizeof(*llm_no)); /* the LLM step number of steps[i] */
    for (size_t i = 0, k = 0; i < j->nsteps; i++)
        llm_no[i] = (int64_t)(k += strcmp(j->steps[i].kind, "llm") == 0);
    for (size_t e = 0; e < j->nev; e++) {
        const struct as_event *ev = &j->evs[e];
        if (ev->ev <= s->after) { /* the last one sent (or the client's Last-Event-ID): the run's end? */
            s->finished |= ev->seq < 0;
            continue;
        }
        s->after = ev->ev;
        if (ev->seq < 0) {
            struct as_run fin = j->run;
            snprintf(fin.status, sizeof(fin.status), "%s", ev->state);
            sse_event(s, ev->ev, "run.finished", run_to_json(&fin, NULL, 0));
            s->finished = true;
            continue;
        }
        ssize_t i = step_at(j->steps, j->nsteps, ev->seq);
        if (i < 0)
            continue; /* cannot be: a step's event is committed with its row */
        const struct as_step *st = &j->steps[i];
        if (strcmp(st->kind, "llm") == 0)
            finish_deltas(s, llm_no[i], st);
        sse_event(s, ev->ev, event_name(st, ev->state), step_event_json(&j->run, st, ev->state));
    }
    xfree(llm_no);
    bool more = j->nev == SSE_EVENTS_MAX;
    if (!s->finished && !more)
        send_deltas(s);
    struct worker *wk = worker_of_loop(s->timer.loop);
    if (wk && wk->draining) { /* the daemon stops: the stream ends (the run resumes at the next start) */
        job_free(j);
        sse_end(s);
        return;
    }
    /* the end: run.finished sent (now or before the client's Last-Event-ID), or a run that ended before runs had
     * an event log */
    bool ended = final_status(j->run.status) && !more;
    if (ended && !s->finished && j->last == 0 && !s->rechecked) {
        /* The events were read before the run: a run that went from queued to its end in between shows its end
         * and none of its events. Read once more, now that its end is known: its events are committed by then. */
        s->rechecked = true;
        job_free(j);
        uv_timer_start(&s->timer, sse_poll, 0, 0);
        return;
    }
    if (ended && !s->finished && j->last == 0) {
        sse_event(s, 0, "run.finished", run_to_json(&j->run, NULL, 0));
        s->finished = true;
    }
    if (s->finished) {
        http_stream_write(s->req, "data: [DONE]\n\n", 14);
        job_free(j);
        sse_end(s);
        return;
    }
    job_free(j);
    uv_timer_start(&s->timer, sse_poll, more ? 0 : SSE_POLL_MS, 0);
}

static void sse_poll(uv_timer_t *t)
{
    struct sse *s = t->data;
    struct job *j = xcalloc(1, sizeof(*j));
    j->req = s->req;
    j->kind = JOB_EVENTS;
    j->sse = s;
    j->after = s->after;
    snprintf(j->id, sizeof(j->id), "%s", s->id);
    j->w.data = j;
    s->busy = true;
    if (uv_queue_work(t->loop, &j->w, job_work, sse_job_done) != 0) {
        xfree(j);
        s->busy = false;
        uv_timer_start(&s->timer, sse_poll, SSE_POLL_MS, 0);
    }
}

/* Where a stream resumes: the Last-Event-ID header, else the `after` query parameter (an EventSource reconnects
 * to the same URL with the header, which then wins). 0 with *after (0: from the start), or -1 with why. */
static int resume_point(const struct http_req *req, int64_t *after, const char **param, char *why, size_t n)
{
    *after = 0;
    const struct str *h = http_req_header(req, "last-event-id");
    struct str v = STR_NULL;
    const char *what = "Last-Event-ID";
    if (h && h->n) {
        v = *h;
    } else if (req->query.p) {
        const char *p = req->query.p, *end = req->query.p + req->query.n;
        while (p && p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *e = amp ? amp : end;
            if (e - p >= 6 && memcmp(p, "after=", 6) == 0) {
                v = str_make(p + 6, (size_t)(e - p - 6));
                what = "after";
                break;
            }
            p = amp ? amp + 1 : NULL;
        }
    }
    if (v.p == NULL)
        return 0;
    int64_t x = 0;
    bool ok = v.n > 0 && v.n <= 18;
    for (size_t i = 0; ok && i < v.n; i++) {
        ok = v.p[i] >= '0' && v.p[i] <= '9';
        x = x * 10 + (v.p[i] - '0');
    }
    *param = what;
    if (!ok) {
        snprintf(why, n, "%s must be the number of an event of this run (the `id:` of an event it sent)", what);
        return -1;
    }
    *after = x;
    *param = what;
    return 0;
}

static void events(struct http_req *req, const char *id, const char *key_id)
{
    int64_t after;
    const char *param = "Last-Event-ID";
    char why[160];
    if (resume_point(req, &after, &param, why, sizeof(why)) != 0) {
        err(req, 400, "invalid_request_error", "invalid_last_event_id", param, why);
        return;
    }
    struct sse *s = xcalloc(1, sizeof(*s));
    s->req = req;
    s->after = after;
    s->param = param;
    snprintf(s->id, sizeof(s->id), "%s", id);
    snprintf(s->key_id, sizeof(s->key_id), "%s", key_id);
    uv_timer_init(http_server_loop(req->server), &s->timer);
    s->timer.data = s;
    req->on_abort = on_sse_abort;
    req->abort_ud = s;
    run_watch(s->id, +1); /* the run's LLM steps stream while this is open */
    s->watching = true;
    sse_poll(&s->timer);
}

/* ---- /v1/runs ---- */

static bool id_ok(struct str id)
{
    if (id.n < 5 || id.n >= RUN_ID_MAX || memcmp(id.p, "run_", 4) != 0)
        return false;
    for (size_t i = 4; i < id.n; i++)
        if (!((id.p[i] >= '0' && id.p[i] <= '9') || (id.p[i] >= 'a' && id.p[i] <= 'f')))
            return false;
    return true;
}

/* The value of name in the query string (decoded: letters, digits, '_', '-', '.' only), or "" */
static void query_param(struct str q, const char *name, char *out, size_t n)
{
    out[0] = '\0';
    if (q.p == NULL)
        return;
    size_t nl = strlen(name);
    const char *p = q.p, *end = q.p + q.n;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t k = 0;
            for (const char *c = p + nl + 1; c < e && k + 1 < n; c++)
                if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                    *c == '-' || *c == '.')
                    out[k++] = *c;
            out[k] = '\0';
            return;
        }
        p = amp ? amp + 1 : NULL;
    }
}

void agents_http_runs(struct http_req *req)
{
    const struct principal *who;
    struct str secret;
    if (caller(req, &who, &secret) != 0)
        return;
    char key_id[48];
    snprintf(key_id, sizeof(key_id), "%s", who ? who->key_id : "");
    principal_release(who);
    struct str p = req->path;
    static const char base[] = "/v1/runs";
    struct str rest = str_make(p.p + sizeof(base) - 1, p.n - (sizeof(base) - 1));
    if (rest.n == 0) { /* the list */
        if (!(req->method & (HTTP_M_GET | HTTP_M_HEAD))) {
            http_resp_header(req, "Allow", "GET");
            err(req, 405, "invalid_request_error", "method_not_allowed", NULL, "method not allowed");
            return;
        }
        struct job *j = xcalloc(1, sizeof(*j));
        j->req = req;
        j->kind = JOB_LIST;
        snprintf(j->key_id, sizeof(j->key_id), "%s", key_id);
        query_param(req->query, "agent", j->agent, sizeof(j->agent));
        query_param(req->query, "status", j->status, sizeof(j->status));
        char lim[16];
        query_param(req->query, "limit", lim, sizeof(lim));
        long l = lim[0] ? strtol(lim, NULL, 10) : 100;
        j->limit = l < 1 ? 1 : l > 1000 ? 1000 : (size_t)l;
        job_queue(j);
        return;
    }
    rest = str_make(rest.p + 1, rest.n - 1); /* after "/" */
    const char *slash = memchr(rest.p, '/', rest.n);
    struct str id = slash ? str_make(rest.p, (size_t)(slash - rest.p)) : rest;
    struct str action = slash ? str_make(slash + 1, rest.n - id.n - 1) : STR_NULL;
    if (!id_ok(id)) {
        err(req, 404, "not_found_error", "run_not_found", NULL, "no such run");
        return;
    }
    char idc[RUN_ID_MAX];
    memcpy(idc, id.p, id.n);
    idc[id.n] = '\0';
    if (action.n == 0 && !slash) {
        if (!(req->method & (HTTP_M_GET | HTTP_M_HEAD))) {
            http_resp_header(req, "Allow", "GET");
            err(req, 405, "invalid_request_error", "method_not_allowed", NULL, "method not allowed");
            return;
        }
        struct job *j = xcalloc(1, sizeof(*j));
        j->req = req;
        j->kind = JOB_GET;
        snprintf(j->id, sizeof(j->id), "%s", idc);
        snprintf(j->key_id, sizeof(j->key_id), "%s", key_id);
        job_queue(j);
        return;
    }
    if (str_eq(action, STR_LIT("events"))) {
        if (!(req->method & (HTTP_M_GET | HTTP_M_HEAD))) {
            http_resp_header(req, "Allow", "GET");
            err(req, 405, "invalid_request_error", "method_not_allowed", NULL, "method not allowed");
            return;
        }
        events(req, idc, key_id);
        return;
    }
    if (str_eq(action, STR_LIT("cancel"))) {
        if (req->method != HTTP_M_POST) {
            http_resp_header(req, "Allow", "POST");
            err(req, 405, "invalid_request_error", "method_not_allowed", NULL, "method not allowed");
            return;
        }
        /* the run answers `cancelled` once it has stopped; the answer is its state now (visibility checked) */
        struct job *j = xcalloc(1, sizeof(*j));
        j->req = req;
        j->kind = JOB_GET;
        snprintf(j->id, sizeof(j->id), "%s", idc);
        snprintf(j->key_id, sizeof(j->key_id), "%s", key_id);
        j->answer_status = 202;
        j->w.data = j;
        cancel_queue(j);
        return;
    }
    err(req, 404, "not_found_error", "unknown_url", NULL, "not found");
}
