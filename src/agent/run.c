/* run.c: the agent run loop (run.h). */
#include "agent/run.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/mcp_client.h"
#include "agent/run_stream.h"
#include "agent/tools.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "policy/auth.h"
#include "telemetry/metrics.h"
#include "telemetry/otlp.h"
#include "telemetry/trace.h"

/* ---------------- process state ---------------- */

struct run;

static struct {
    struct agent_store *store;
    pthread_mutex_t mu;        /* live runs, runtime definitions */
    struct run *live;
    _Atomic long active;
    struct config_agent *defs; /* added through /admin/agents */
    size_t ndefs;
    bool metrics_done;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *const m_status_labels[] = {"agent", "status", NULL};
static struct metric_def m_runs =
    METRIC_DEF("agentd_agent_runs_total", "Agent runs finished, by agent and status.", METRIC_COUNTER, m_status_labels);
static struct metric_def m_active =
    METRIC_DEF("agentd_agent_runs_active", "Agent runs queued or running (the run queue's depth).", METRIC_GAUGE, NULL);
static const char *const m_tool_labels[] = {"tool", "outcome", NULL};
static struct metric_def m_tools =
    METRIC_DEF("agentd_agent_tool_calls_total", "Agent tool calls, by tool and outcome.", METRIC_COUNTER, m_tool_labels);

static const char *const m_run_dur_labels[] = {"agent", "status", NULL};
static const char *const m_run_dur_otel[] = {"gen_ai.agent.name", "agent.run.status", NULL};
static const double dur_buckets[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
static struct metric_def m_run_dur = {.name = "agentd_agent_run_duration_seconds",
                                      .help = "Agent runs, from start (or resume) to end, by agent and status.",
                                      .kind = METRIC_HISTOGRAM, .labels = m_run_dur_labels, .buckets = dur_buckets,
                                      .nbuckets = sizeof(dur_buckets) / sizeof(dur_buckets[0]),
                                      .otel_name = "gen_ai.invoke_agent.duration", .unit = "s",
                                      .otel_labels = m_run_dur_otel};
static const char *const m_tool_dur_otel[] = {"gen_ai.tool.name", "agent.tool.outcome", NULL};
static struct metric_def m_tool_dur = {.name = "agentd_agent_tool_duration_seconds",
                                       .help = "Agent tool calls, by tool and outcome.", .kind = METRIC_HISTOGRAM,
                                       .labels = m_tool_labels, .buckets = dur_buckets,
                                       .nbuckets = sizeof(dur_buckets) / sizeof(dur_buckets[0]),
                                       .otel_name = "gen_ai.execute_tool.duration", .unit = "s",
                                       .otel_labels = m_tool_dur_otel};

static const char *const m_overhead_labels[] = {"agent", NULL};
static const double overhead_buckets[] = {25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25};
static struct metric_def m_overhead = {
    .name = "agentd_agent_step_overhead_seconds",
    .help = "A run's own time per LLM step (everything but its model exchanges and tool calls: the loop, the commits "
            "to the store, scheduling), observed once per run, by agent.",
    .kind = METRIC_HISTOGRAM, .labels = m_overhead_labels, .buckets = overhead_buckets,
    .nbuckets = sizeof(overhead_buckets) / sizeof(overhead_buckets[0])};

static int64_t wall_ms(void)
{
    return (int64_t)(time_wall_us() / 1000);
}

struct agent_store *agents_store(void)
{
    return G.store;
}

long runs_active(void)
{
    return atomic_load(&G.active);
}

/* ---------------- the run ---------------- */

enum tc_state { TC_PENDING, TC_STARTING, TC_RUNNING, TC_DONE };

#define RUN_MAX_CALLS_PER_STEP 64 /* more in one step are answered with a tool error, not run */

struct tcall {
    struct run *run;
    char id[96], name[80];
    char *args;
    const struct agent_tool *tool;
    int64_t seq, t_start_ms;
    enum tc_state st;
    enum tool_outcome outcome;
    char *result;
    struct tool_exec te;
    struct call_timer *timer; /* the call's timeout while it runs */
};

struct call_timer {
    uv_timer_t t;
    struct run *run;
    struct tcall *c;
};

struct waiter {
    run_finished_fn *fn;
    void *ud;
    bool at_start;
    struct waiter *next;
};

struct run {
    char id[RUN_ID_MAX];
    struct config_agent def;
    struct config *cfg;
    struct gateway_worker *gw;
    uv_loop_t *loop;
    cJSON *messages;
    cJSON *tools;            /* the OpenAI tool definitions sent with each step */
    struct mcp_list *mcp_list; /* the MCP servers' tools being listed (before the run's first LLM step) */
    bool mcp_listed;
    struct as_run row;       /* status, attribution, usage (strings other than the fixed ones unused) */
    char *output, *error;
    char *secret;            /* the caller's key, in memory only */
    const struct principal *auth_p;
    struct principal who;
    int64_t next_seq;
    /* the LLM step in flight */
    struct exchange *ex;
    bool in_llm;
    struct buf body, resp, hdrs;
    int resp_status;
    /* a streamed step (someone watches the run's events): the chunks read back into one completion */
    bool step_streaming, head_stream;
    struct run_stream rs;
    double stream_cost;      /* a stream's head has no cost header: the exchange's price, taken at its end */
    int watchers;            /* G.mu: GET /v1/runs/{id}/events streams open on this run */
    /* the run's own time: while no model exchange or tool call of it is in flight (ext == 0) */
    int ext;
    uint64_t own_mark_us, own_us;
    struct buf live;         /* G.mu: the content text the streaming step has given so far (bounded) */
    int64_t live_step;       /* G.mu: that step's number (1-based; 0: none yet) */
    /* the tool calls of the current step */
    struct tcall *calls;
    int ncalls, inflight;
    int tool_commits;        /* tool results queued for commit: the step's results go on only when all are in */
    struct call_timer *retry; /* a refused step (429 but a budget's, 502-504) waits here to be asked again */
    int step_retries;
    /* lifetime */
    uv_timer_t deadline;
    uv_async_t wake;
    _Atomic bool cancel_req;
    bool finishing, suspended, started;
    unsigned refs;
    struct waiter *waiters;
    struct run *next;        /* G.live */
    struct pjob *pq_head, *pq_tail; /* commits waiting: one runs at a time, in order */
    bool pbusy;
    /* telemetry: the run's `invoke_agent` span, parent of its steps' gateway spans and of its `execute_tool` spans */
    bool traced, sampled;
    uint8_t trace_id[16], span_id[8];
    uint64_t start_ns, start_us;
    char traceparent[TRACEPARENT_LEN + 1];
    struct str tp_hdr, wf_hdr;
};

static void run_next_step(struct run *r);
static void run_tools(struct run *r);
static void run_finish(struct run *r, const char *status, const char *limit, const char *error);

static void calls_clear(struct run *r)
{
    for (int i = 0; i < r->ncalls; i++) {
        xfree(r->calls[i].args);
        xfree(r->calls[i].result);
    }
    xfree(r->calls);
    r->calls = NULL;
    r->ncalls = 0;
}

/* The tool the model called, if the agent has it: one of its built-in tools, or one of its MCP servers'. */
static const struct agent_tool *resolve_tool(const struct run *r, const char *name)
{
    for (size_t k = 0; k < r->def.tools.n; k++)
        if (strcmp(r->def.tools.v[k], name) == 0)
            return agent_tool_find(name);
    return mcp_server_of(&r->def.mcp_servers, name) ? &mcp_agent_tool : NULL;
}

static void run_unref(struct run *r)
{
    if (--r->refs > 0)
        return;
    principal_release(r->auth_p);
    r->auth_p = NULL;
    calls_clear(r);
    cJSON_Delete(r->messages);
    cJSON_Delete(r->tools);
    buf_free(&r->body);
    buf_free(&r->resp);
    buf_free(&r->hdrs);
    buf_free(&r->live);
    if (r->step_streaming)
        run_stream_free(&r->rs);
    xfree(r->output);
    xfree(r->error);
    as_run_free(&r->row);
    if (r->secret) {
        memset(r->secret, 0, strlen(r->secret));
        xfree(r->secret);
    }
    agent_def_free(&r->def);
    if (r->cfg)
        config_unref(r->cfg);
    while (r->waiters) {
        struct waiter *w = r->waiters;
        r->waiters = w->next;
        xfree(w);
    }
    xfree(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    run_unref(h->data);
}

static void on_call_timer_closed(uv_handle_t *h)
{
    struct call_timer *t = h->data;
    struct run *r = t->run;
    xfree(t);
    run_unref(r);
}

static void call_timer_stop(struct tcall *c)
{
    struct call_timer *t = c->timer;
    if (t == NULL)
        return;
    c->timer = NULL;
    uv_timer_stop(&t->t);
    uv_close((uv_handle_t *)&t->t, on_call_timer_closed);
}

/* ---- persistence: a commit on the thread pool, then a continuation on the loop ---- */

typedef void persist_cont(struct run *r, int rc);

struct pjob {
    uv_work_t w;
    struct run *run;
    struct pjob *next;
    struct as_run row;
    bool with_row;
    struct as_step *steps;
    size_t n;
    persist_cont *cont;
    char err[256];
    int rc;
};

static void pjob_work(uv_work_t *w)
{
    struct pjob *j = w->data;
    j->rc = agent_store_commit(G.store, j->run->id, j->with_row ? &j->row : NULL, j->steps, j->n, j->err,
                               sizeof(j->err));
}

static void pjob_done(uv_work_t *w, int status);

/* Starts the oldest waiting commit. A run's commits never overlap, so a later state is never overwritten by an
 * earlier one that the thread pool happened to run last. */
static void pump(struct run *r)
{
    while (!r->pbusy && r->pq_head) {
        struct pjob *j = r->pq_head;
        r->pq_head = j->next;
        if (r->pq_head == NULL)
            r->pq_tail = NULL;
        r->pbusy = true;
        if (uv_queue_work(r->loop, &j->w, pjob_work, pjob_done) != 0) {
            snprintf(j->err, sizeof(j->err), "cannot queue the commit");
            j->rc = -1;
            pjob_done(&j->w, -1);
        }
    }
}

static void pjob_done(uv_work_t *w, int status)
{
    struct pjob *j = w->data;
    struct run *r = j->run;
    if (status != 0)
        j->rc = -1;
    if (j->rc != 0)
        log_error("agent run %s: %s", r->id, j->err[0] ? j->err : "commit not run");
    if (j->with_row)
        as_run_free(&j->row);
    for (size_t i = 0; i < j->n; i++)
        as_step_free(&j->steps[i]);
    xfree(j->steps);
    persist_cont *cont = j->cont;
    int rc = j->rc;
    xfree(j);
    r->pbusy = false;
    if (cont)
        cont(r, rc);
    pump(r);
    run_unref(r);
}

static void row_snapshot(struct run *r, struct as_run *out)
{
    *out = r->row;
    out->input = r->row.input ? xstrdup(r->row.input) : NULL;
    char *m = cJSON_PrintUnformatted(r->messages);
    out->messages = xstrdup(m ? m : "[]");
    cJSON_free(m);
    out->output = r->output ? xstrdup(r->output) : NULL;
    out->error = r->error ? xstrdup(r->error) : NULL;
    out->updated_ms = wall_ms();
}

/* Commits the run row (with_row) and steps (taken over), then calls cont on the loop. */
static void persist(struct run *r, bool with_row, struct as_step *steps, size_t n, persist_cont *cont)
{
    struct pjob *j = xcalloc(1, sizeof(*j));
    j->w.data = j;
    j->run = r;
    j->with_row = with_row;
    if (with_row) {
        snprintf(r->row.id, sizeof(r->row.id), "%s", r->id);
        row_snapshot(r, &j->row);
    }
    j->steps = steps;
    j->n = n;
    j->cont = cont;
    r->refs++;
    if (r->pq_tail)
        r->pq_tail->next = j;
    else
        r->pq_head = j;
    r->pq_tail = j;
    pump(r);
}

static struct as_step step_of_call(const struct tcall *c)
{
    struct as_step s = {.seq = c->seq, .t_start_ms = c->t_start_ms};
    snprintf(s.kind, sizeof(s.kind), "tool");
    snprintf(s.name, sizeof(s.name), "%s", c->name);
    snprintf(s.call_id, sizeof(s.call_id), "%s", c->id);
    const char *state = c->st == TC_PENDING    ? "pending"
                        : c->st == TC_DONE     ? tool_outcome_name(c->outcome)
                                               : "started";
    snprintf(s.state, sizeof(s.state), "%s", state);
    s.request = xstrdup(c->args ? c->args : "{}");
    s.result = c->st == TC_DONE && c->result ? xstrdup(c->result) : NULL;
    if (c->st == TC_DONE)
        s.t_end_ms = wall_ms();
    return s;
}

/* ---- the end ---- */

static void live_remove(struct run *r)
{
    pthread_mutex_lock(&G.mu);
    for (struct run **p = &G.live; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&G.mu);
}

static uint64_t wall_ns(void)
{
    return time_wall_us() * 1000;
}

static void run_trace_init(struct run *r)
{
    r->start_ns = wall_ns();
    r->start_us = time_mono_us();
    r->own_mark_us = r->start_us;
    r->wf_hdr = str_from(r->row.workflow);
    if (!otel_trace_context_on())
        return;
    trace_new_trace_id(r->trace_id);
    trace_new_span_id(r->span_id);
    r->sampled = otel_sample(r->trace_id, NULL);
    trace_format_traceparent(r->traceparent, r->trace_id, r->span_id, r->sampled ? 1 : 0);
    r->tp_hdr = str_from(r->traceparent);
    r->traced = true;
}

static void tool_span(struct run *r, const struct tcall *c, uint64_t start_ns)
{
    if (!r->traced || !r->sampled || !otel_traces_on())
        return;
    struct otel_span *s = otel_span_new();
    memcpy(s->trace_id, r->trace_id, 16);
    trace_new_span_id(s->span_id);
    memcpy(s->parent_id, r->span_id, 8);
    s->has_parent = true;
    s->trace_flags = 1;
    s->kind = OTEL_SPAN_INTERNAL;
    s->start_ns = start_ns;
    s->end_ns = wall_ns();
    snprintf(s->name, sizeof(s->name), "execute_tool %.120s", c->name);
    otel_span_cstr(s, "gen_ai.operation.name", "execute_tool");
    otel_span_cstr(s, "gen_ai.tool.name", c->name);
    otel_span_cstr(s, "gen_ai.tool.call.id", c->id);
    otel_span_cstr(s, "gen_ai.agent.name", r->def.name);
    otel_span_cstr(s, "tool.name", c->name);
    otel_span_cstr(s, "agent.workflow", r->row.workflow);
    otel_span_cstr(s, "agent.tool.outcome", tool_outcome_name(c->outcome));
    if (c->outcome != TOOL_OK) {
        s->status = OTEL_STATUS_ERROR;
        otel_span_cstr(s, "error.type", tool_outcome_name(c->outcome));
    }
    otel_span_submit(s);
}

/* Something outside the run (its model exchange, a tool call) starts / ends: the run's own time stops / starts. */
static void ext_begin(struct run *r)
{
    if (r->ext++ == 0)
        r->own_us += time_mono_us() - r->own_mark_us;
}

static void ext_end(struct run *r)
{
    if (r->ext > 0 && --r->ext == 0)
        r->own_mark_us = time_mono_us();
}

static void run_span(struct run *r)
{
    double secs = (double)(time_mono_us() - r->start_us) / 1e6;
    if (r->row.steps > 0 && !r->suspended && r->ext == 0) {
        uint64_t own = r->own_us + (time_mono_us() - r->own_mark_us);
        metrics_observe(&m_overhead, (const char *[]){r->def.name}, (double)own / 1e6 / (double)r->row.steps);
    }
    metrics_observe(&m_run_dur, (const char *[]){r->def.name, r->suspended ? "suspended" : r->row.status}, secs);
    if (!r->traced || !r->sampled || !otel_traces_on())
        return;
    struct otel_span *s = otel_span_new();
    memcpy(s->trace_id, r->trace_id, 16);
    memcpy(s->span_id, r->span_id, 8);
    s->trace_flags = 1;
    s->kind = OTEL_SPAN_INTERNAL;
    s->start_ns = r->start_ns;
    s->end_ns = wall_ns();
    snprintf(s->name, sizeof(s->name), "invoke_agent %.120s", r->def.name);
    otel_span_cstr(s, "gen_ai.operation.name", "invoke_agent");
    otel_span_cstr(s, "gen_ai.agent.name", r->def.name);
    otel_span_cstr(s, "gen_ai.agent.id", r->id);
    otel_span_cstr(s, "gen_ai.request.model", r->def.model);
    otel_span_cstr(s, "agent.workflow", r->row.workflow);
    otel_span_cstr(s, "agent.run.status", r->suspended ? "suspended" : r->row.status);
    otel_span_int(s, "gen_ai.usage.input_tokens", r->row.input_tokens);
    otel_span_int(s, "gen_ai.usage.output_tokens", r->row.output_tokens);
    otel_span_int(s, "agent.run.steps", r->row.steps);
    otel_span_double(s, "agentd.cost_usd", r->row.cost_usd);
    if (r->row.limit_name[0])
        otel_span_cstr(s, "agent.run.limit", r->row.limit_name);
    if (!r->suspended && strcmp(r->row.status, "succeeded") != 0) {
        s->status = OTEL_STATUS_ERROR;
        otel_span_cstr(s, "error.type", r->row.status);
    }
    otel_span_submit(s);
}

static void run_close(struct run *r)
{
    run_span(r);
    live_remove(r);
    atomic_fetch_sub(&G.active, 1);
    metrics_add(&m_active, NULL, -1);
    uv_timer_stop(&r->deadline);
    r->refs += 2;
    uv_close((uv_handle_t *)&r->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&r->wake, on_handle_closed);
    run_unref(r); /* the run's own reference */
}

static void finished_committed(struct run *r, int rc)
{
    (void)rc;
    metrics_inc(&m_runs, (const char *[]){r->def.name, r->row.status});
    log_info("agent run %s (%s) %s%s%s after %lld steps", r->id, r->def.name, r->row.status,
             r->row.limit_name[0] ? ": " : "", r->row.limit_name, (long long)r->row.steps);
    while (r->waiters) {
        struct waiter *w = r->waiters;
        r->waiters = w->next;
        w->fn(w->ud, r->id);
        xfree(w);
    }
    run_close(r);
}

static void release_step_principal(struct run *r)
{
    principal_release(r->auth_p);
    r->auth_p = NULL;
}

/* Stops what is in flight: the exchange (its sink's end sees finishing and does nothing) and the tool calls. */
static void stop_inflight(struct run *r)
{
    if (r->mcp_list) {
        mcp_list_cancel(r->mcp_list);
        r->mcp_list = NULL;
        run_unref(r);
    }
    if (r->ex)
        ex_cancel(r->ex); /* its sink's end runs inside: it clears r->ex */
    for (int i = 0; i < r->ncalls; i++) {
        struct tcall *c = &r->calls[i];
        if (c->st == TC_RUNNING) {
            c->tool->cancel(&c->te);
            if (!r->suspended) {
                c->st = TC_DONE;
                c->outcome = TOOL_CANCELLED;
            }
        }
        call_timer_stop(c);
    }
    if (r->retry) {
        struct call_timer *t = r->retry;
        r->retry = NULL;
        uv_timer_stop(&t->t);
        uv_close((uv_handle_t *)&t->t, on_call_timer_closed);
    }
    /* the step's principal goes with the run (run_unref), after the exchange that points at it */
}

static void run_finish(struct run *r, const char *status, const char *limit, const char *error)
{
    if (r->finishing)
        return;
    r->finishing = true;
    stop_inflight(r);
    snprintf(r->row.status, sizeof(r->row.status), "%s", status);
    snprintf(r->row.limit_name, sizeof(r->row.limit_name), "%s", limit ? limit : "");
    if (error) {
        xfree(r->error);
        r->error = xstrdup(error);
    }
    /* the cancelled tool calls are recorded with the final state */
    struct as_step *steps = r->ncalls ? xcalloc((size_t)r->ncalls, sizeof(*steps)) : NULL;
    size_t n = 0;
    for (int i = 0; i < r->ncalls; i++)
        if (r->calls[i].st == TC_DONE && r->calls[i].outcome == TOOL_CANCELLED)
            steps[n++] = step_of_call(&r->calls[i]);
    persist(r, true, steps, n, finished_committed);
}

/* The loop drains: the run stops where it is, committed state stays for a restart to resume. */
static void run_suspend(struct run *r)
{
    if (r->finishing)
        return;
    r->finishing = r->suspended = true;
    stop_inflight(r);
    while (r->waiters) {
        struct waiter *w = r->waiters;
        r->waiters = w->next;
        w->fn(w->ud, r->id);
        xfree(w);
    }
    run_close(r);
}

/* ---- limits ---- */

/* The limit the run has passed, or NULL. */
static const char *limit_passed(const struct run *r)
{
    const struct agent_limits *l = &r->def.limits;
    if (l->max_tokens > 0 && r->row.input_tokens + r->row.output_tokens > l->max_tokens)
        return "max_tokens";
    if (l->max_usd > 0 && r->row.cost_usd > l->max_usd)
        return "max_usd";
    return NULL;
}

static void on_deadline(uv_timer_t *t)
{
    struct run *r = t->data;
    run_finish(r, "limit_exceeded", "deadline", "the run's deadline passed");
}

static void on_wake(uv_async_t *a)
{
    struct run *r = a->data;
    if (atomic_load(&r->cancel_req))
        run_finish(r, "cancelled", NULL, NULL);
}

/* ---- the LLM step ---- */

static void sink_bind(void *sink, struct exchange *ex)
{
    struct run *r = sink;
    r->ex = ex;
}

static void sink_head(void *sink, int status, const struct buf *hdrs, bool stream)
{
    struct run *r = sink;
    r->head_stream = stream;
    r->resp_status = status;
    if (hdrs->len)
        buf_append(&r->hdrs, hdrs->data, hdrs->len);
}

static int sink_write(void *sink, const void *data, size_t len)
{
    struct run *r = sink;
    if (r->step_streaming && r->head_stream)
        return run_stream_feed(&r->rs, data, len) == 0 ? 0 : -1;
    if (r->resp.len + len > (64u << 20))
        return -1;
    buf_append(&r->resp, data, len);
    return 0;
}

static double header_double(const struct buf *h, const char *name)
{
    if (h->data == NULL)
        return 0;
    const char *p = h->data;
    size_t n = strlen(name);
    while ((p = strstr(p, name)) != NULL) {
        if ((p == h->data || p[-1] == '\n') && p[n] == ':')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    return 0;
}

static void llm_step_done(struct run *r);

#define RUN_LIVE_MAX (1u << 20) /* the content text of a step kept for event streams */

static void on_stream_text(void *ud, const char *text, size_t len)
{
    struct run *r = ud;
    pthread_mutex_lock(&G.mu);
    if (r->live.len + len <= RUN_LIVE_MAX)
        buf_append(&r->live, text, len);
    pthread_mutex_unlock(&G.mu);
}

/* A streamed step has ended: what the run loop reads is the one completion the chunks amount to. */
static void stream_end(struct run *r)
{
    if (!r->step_streaming)
        return;
    r->step_streaming = false;
    if (r->head_stream) {
        if (r->ex && r->ex->priced)
            r->stream_cost = r->ex->cost_usd;
        buf_reset(&r->resp);
        if (r->resp_status == 200 && run_stream_completion(&r->rs, &r->resp) != 0) {
            r->resp_status = 502;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(cJSON_AddObjectToObject(e, "error"), "message", r->rs.why);
            char *t = cJSON_PrintUnformatted(e);
            cJSON_Delete(e);
            buf_reset(&r->resp);
            buf_append_str(&r->resp, t);
            cJSON_free(t);
        }
    }
    run_stream_free(&r->rs);
}

static void sink_end(void *sink)
{
    struct run *r = sink;
    ext_end(r);
    stream_end(r);
    /* The step's principal (rq.who) lives in the run, which may be gone before the exchange's memory is (its
     * handles close later). Once the exchange has ended nothing reads it but the release when the exchange is
     * freed, which does nothing for NULL: the exchange forgets it here. */
    if (r->ex)
        r->ex->rq.who = NULL;
    r->ex = NULL;
    r->in_llm = false;
    if (r->finishing) {
        run_unref(r);
        return;
    }
    llm_step_done(r);
    run_unref(r);
}

static const struct ex_sink_ops run_sink_ops = {
    .head = sink_head, .write = sink_write, .end = sink_end, .bind = sink_bind};

/* The headers a step's exchange sees: the run's trace context and its workflow (spans, agent.workflow). */
static const struct str *step_header(const void *hctx, const char *name)
{
    const struct run *r = hctx;
    if (r->traced && strcmp(name, "traceparent") == 0)
        return &r->tp_hdr;
    if (strcmp(name, "x-agentd-workflow") == 0)
        return &r->wf_hdr;
    return NULL;
}

static void after_llm_commit(struct run *r, int rc);

static void step_failed(struct run *r, const char *why)
{
    run_finish(r, "failed", NULL, why);
}

static void llm_start(struct run *r);

static void on_mcp_tools(void *ud, cJSON *arr)
{
    struct run *r = ud;
    r->mcp_list = NULL;
    r->mcp_listed = true;
    cJSON *t = arr->child;
    while (t) {
        cJSON *next = t->next;
        cJSON_AddItemToArray(r->tools, cJSON_DetachItemViaPointer(arr, t));
        t = next;
    }
    cJSON_Delete(arr);
    llm_start(r);
    run_unref(r);
}

static void llm_start(struct run *r)
{
    if (r->finishing)
        return;
    if (r->def.mcp_servers.n > 0 && !r->mcp_listed) { /* the MCP servers' tools first (cached per loop) */
        if (r->mcp_list == NULL) {
            r->refs++; /* on_mcp_tools's, or stop_inflight's when cancelled */
            r->mcp_list = mcp_list_tools(r->loop, &r->def.mcp_servers, on_mcp_tools, r);
        }
        return;
    }
    if (r->row.steps >= r->def.limits.max_steps) {
        run_finish(r, "limit_exceeded", "max_steps", "the run took its max_steps LLM steps");
        return;
    }
    /* who: the caller's key, checked again for each step (a key revoked meanwhile stops the run) */
    release_step_principal(r); /* the previous step's (its exchange has ended) */
    memset(&r->who, 0, sizeof(r->who));
    r->who.key_id = r->row.key_id;
    r->who.key_name = "";
    r->who.user = r->row.user;
    r->who.team = r->row.team;
    r->who.workflow = r->row.workflow;
    if (r->secret && keyring_armed()) {
        struct auth_input in = {.secret = str_from(r->secret), .model = str_from(r->def.model)};
        enum auth_result ar = auth_check(&in, (int64_t)time(NULL), &r->auth_p);
        if (ar != AUTH_OK) {
            step_failed(r, ar == AUTH_MODEL_DENIED ? "the run's key may not use the agent's model"
                                                   : "the run's key is no longer valid");
            return;
        }
        r->who.key = r->auth_p->key;
        r->who.key_name = r->auth_p->key_name;
    }
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", r->def.model);
    cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
    if (r->def.instructions && r->def.instructions[0]) {
        cJSON *sys = cJSON_CreateObject();
        cJSON_AddStringToObject(sys, "role", "system");
        cJSON_AddStringToObject(sys, "content", r->def.instructions);
        cJSON_AddItemToArray(msgs, sys);
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, r->messages)
    cJSON_AddItemToArray(msgs, cJSON_Duplicate(m, true));
    if (r->tools && cJSON_GetArraySize(r->tools) > 0)
        cJSON_AddItemToObject(req, "tools", cJSON_Duplicate(r->tools, true));
    /* Streamed while someone watches the run's events (its tokens are shown as they come); the answer the loop
     * reads is the same either way (run_stream.h). */
    pthread_mutex_lock(&G.mu);
    bool watched = r->watchers > 0;
    r->live.len = 0;
    r->live_step = r->row.steps + 1;
    pthread_mutex_unlock(&G.mu);
    r->step_streaming = watched;
    r->head_stream = false;
    r->stream_cost = 0;
    if (watched) {
        cJSON_AddTrueToObject(req, "stream");
        cJSON_AddTrueToObject(cJSON_AddObjectToObject(req, "stream_options"), "include_usage");
        run_stream_init(&r->rs, 16u << 20, on_stream_text, r);
    }
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    buf_reset(&r->body);
    buf_append_str(&r->body, text);
    cJSON_free(text);
    buf_reset(&r->resp);
    buf_reset(&r->hdrs);
    r->resp_status = 0;

    struct ex_request rq = {0};
    rq.body = str_make(r->body.data, r->body.len);
    rq.max_tokens = -1;
    /* the step first: the mock's tool call ids take the id's first characters */
    snprintf(rq.request_id, sizeof(rq.request_id), "s%lld-%s", (long long)r->row.steps + 1, r->id);
    rq.cfg = r->cfg;
    rq.who = &r->who; /* holder NULL: the exchange does not release it */
    rq.header = step_header;
    rq.hctx = r;
    r->in_llm = true;
    r->refs++; /* the sink's */
    ext_begin(r);
    ex_submit(r->gw, &front_openai_chat, &rq, &run_sink_ops, r);
}

static void add_tool_message(struct run *r, const struct tcall *c)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "role", "tool");
    cJSON_AddStringToObject(t, "tool_call_id", c->id);
    if (c->outcome == TOOL_OK) {
        cJSON_AddStringToObject(t, "content", c->result ? c->result : "");
    } else {
        struct buf b = BUF_INIT(BUF_UNBOUNDED);
        buf_printf(&b, "tool error (%s): %s", tool_outcome_name(c->outcome), c->result ? c->result : "");
        cJSON_AddStringToObject(t, "content", b.data);
        buf_free(&b);
    }
    cJSON_AddItemToArray(r->messages, t);
}

#define RUN_STEP_RETRIES 3

static void on_retry(uv_timer_t *t)
{
    struct call_timer *ct = t->data;
    struct run *r = ct->run;
    r->retry = NULL;
    uv_close((uv_handle_t *)&ct->t, on_call_timer_closed);
    if (!r->finishing)
        llm_start(r);
}

/* A step refused for a while (a rate limit, the gateway's admission, an upstream that is overloaded or down) is
 * asked again after the Retry-After the gateway gave, or a growing pause; a budget's refusal is final. The run's
 * deadline still bounds it. True when a retry is scheduled. */
static bool step_retry(struct run *r, const cJSON *resp)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(resp, "error"), "code");
    bool budget = cJSON_IsString(code) && strcmp(code->valuestring, "budget_exceeded") == 0;
    int st = r->resp_status;
    if (budget || !(st == 429 || st == 502 || st == 503 || st == 504) || r->step_retries >= RUN_STEP_RETRIES)
        return false;
    double ms = header_double(&r->hdrs, "retry-after-ms");
    if (ms <= 0)
        ms = 250.0 * (1 << r->step_retries);
    if (ms > 30000)
        ms = 30000;
    r->step_retries++;
    struct call_timer *t = xcalloc(1, sizeof(*t));
    t->run = r;
    uv_timer_init(r->loop, &t->t);
    t->t.data = t;
    r->refs++;
    r->retry = t;
    uv_timer_start(&t->t, on_retry, (uint64_t)ms, 0);
    log_info("agent run %s: step %lld refused with %d, asked again in %.0f ms (retry %d of %d)", r->id,
             (long long)r->row.steps + 1, st, ms, r->step_retries, RUN_STEP_RETRIES);
    return true;
}

static void llm_step_done(struct run *r)
{
    int64_t t_end = wall_ms();
    cJSON *resp = cJSON_ParseWithLength(r->resp.data ? r->resp.data : "", r->resp.len);
    if (r->resp_status != 200 && step_retry(r, resp)) {
        cJSON_Delete(resp);
        return;
    }
    if (r->resp_status == 200)
        r->step_retries = 0;
    if (r->resp_status != 200 || !cJSON_IsObject(resp)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(resp, "error"), "message");
        char why[600];
        snprintf(why, sizeof(why), "the model call failed with status %d: %s", r->resp_status,
                 cJSON_IsString(e) ? e->valuestring : "no answer");
        cJSON_Delete(resp);
        step_failed(r, why);
        return;
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(resp, "usage");
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    r->row.input_tokens += cJSON_IsNumber(pt) ? (int64_t)pt->valuedouble : 0;
    r->row.output_tokens += cJSON_IsNumber(ct) ? (int64_t)ct->valuedouble : 0;
    r->row.cost_usd += header_double(&r->hdrs, "x-agentd-cost-usd") + r->stream_cost;
    r->stream_cost = 0;
    r->row.steps++;
    const cJSON *msg =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0),
                                         "message");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    cJSON *am = cJSON_CreateObject();
    cJSON_AddStringToObject(am, "role", "assistant");
    if (cJSON_IsString(content))
        cJSON_AddStringToObject(am, "content", content->valuestring);
    else
        cJSON_AddNullToObject(am, "content");
    int ntc = cJSON_IsArray(tcs) ? cJSON_GetArraySize(tcs) : 0;
    if (ntc > 0)
        cJSON_AddItemToObject(am, "tool_calls", cJSON_Duplicate(tcs, true));
    cJSON_AddItemToArray(r->messages, am);

    struct as_step *steps = xcalloc((size_t)ntc + 1, sizeof(*steps));
    struct as_step *s = &steps[0];
    s->seq = r->next_seq++;
    snprintf(s->kind, sizeof(s->kind), "llm");
    snprintf(s->name, sizeof(s->name), "%s", r->def.model);
    snprintf(s->state, sizeof(s->state), "done");
    s->request = xstrdup(r->body.data ? r->body.data : "");
    s->result = xstrdup(r->resp.data);
    s->t_end_ms = t_end;

    /* the tool calls of this step, recorded as pending with it */
    calls_clear(r);
    r->calls = ntc ? xcalloc((size_t)ntc, sizeof(*r->calls)) : NULL;
    r->ncalls = 0;
    r->inflight = 0;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *ar = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        struct tcall *c = &r->calls[r->ncalls++];
        c->run = r;
        snprintf(c->id, sizeof(c->id), "%s", cJSON_IsString(id) ? id->valuestring : "");
        snprintf(c->name, sizeof(c->name), "%s", cJSON_IsString(nm) ? nm->valuestring : "");
        c->args = xstrdup(cJSON_IsString(ar) ? ar->valuestring : "{}");
        c->seq = r->next_seq++;
        /* only the agent's own tools run */
        c->tool = resolve_tool(r, c->name);
        if (r->ncalls > RUN_MAX_CALLS_PER_STEP) {
            c->st = TC_DONE;
            c->outcome = TOOL_ERROR;
            c->result = xstrdup("too many tool calls in one step (at most 64 run)");
        } else if (c->tool == NULL) {
            c->st = TC_DONE;
            c->outcome = TOOL_UNAVAILABLE;
            c->result = xstrdup("this agent has no such tool");
        }
        steps[1 + (c - r->calls)] = step_of_call(c);
    }

    if (ntc == 0) {
        /* a final answer: it must satisfy the output schema when there is one */
        const char *text = cJSON_IsString(content) ? content->valuestring : "";
        char why[300] = "";
        if (r->def.output_schema) {
            cJSON *schema = cJSON_Parse(r->def.output_schema);
            cJSON *val = cJSON_Parse(text);
            if (val == NULL)
                snprintf(why, sizeof(why), "the answer is not JSON");
            else
                json_schema_check(schema, val, why, sizeof(why));
            cJSON_Delete(schema);
            cJSON_Delete(val);
        }
        if (why[0]) {
            cJSON *u = cJSON_CreateObject();
            cJSON_AddStringToObject(u, "role", "user");
            char ask[512];
            snprintf(ask, sizeof(ask),
                     "Your answer does not satisfy the required output schema (%s). Answer again with JSON only.",
                     why);
            cJSON_AddStringToObject(u, "content", ask);
            cJSON_AddItemToArray(r->messages, u);
        } else {
            xfree(r->output);
            r->output = xstrdup(text);
            snprintf(r->row.status, sizeof(r->row.status), "succeeded");
        }
    }
    cJSON_Delete(resp);
    persist(r, true, steps, (size_t)ntc + 1, after_llm_commit);
}

static void after_llm_commit(struct run *r, int rc)
{
    if (r->finishing)
        return;
    if (rc != 0) {
        step_failed(r, "the run's state could not be committed");
        return;
    }
    if (strcmp(r->row.status, "succeeded") == 0) {
        r->finishing = true; /* committed with its final state above */
        stop_inflight(r);
        finished_committed(r, 0);
        return;
    }
    const char *lim = limit_passed(r);
    if (lim) {
        run_finish(r, "limit_exceeded", lim, "the run passed a limit");
        return;
    }
    run_next_step(r);
}

/* ---- tools ---- */

static void tool_truncate(struct run *r, struct tcall *c, const char *text, size_t len)
{
    size_t cap = (size_t)r->def.limits.tool_output_bytes;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append(&b, text, len < cap ? len : cap);
    if (len > cap)
        buf_printf(&b, "\n[truncated: the tool answered %zu bytes, the first %zu are shown]", len, cap);
    buf_append(&b, "", 0);
    xfree(c->result);
    c->result = xstrdup(b.data);
    buf_free(&b);
}

static void after_tool_commit(struct run *r, int rc);

/* The calls are freed only now, not in tool_end: a tool may still hold its tool_exec when it calls done. */
static void after_results_commit(struct run *r, int rc)
{
    if (!r->finishing)
        calls_clear(r);
    after_llm_commit(r, rc);
}

static void tool_end(struct tcall *c, enum tool_outcome o, const char *text, size_t len)
{
    struct run *r = c->run;
    call_timer_stop(c);
    if (c->st == TC_RUNNING)
        ext_end(r);
    c->st = TC_DONE;
    c->outcome = o;
    tool_truncate(r, c, text, len);
    metrics_inc(&m_tools, (const char *[]){c->name, tool_outcome_name(o)});
    int64_t ms = wall_ms() - c->t_start_ms;
    metrics_observe(&m_tool_dur, (const char *[]){c->name, tool_outcome_name(o)}, ms > 0 ? (double)ms / 1000 : 0);
    tool_span(r, c, (uint64_t)c->t_start_ms * 1000000);
    struct as_step *s = xcalloc(1, sizeof(*s));
    *s = step_of_call(c);
    bool last = !r->finishing && r->tool_commits == 0;
    for (int i = 0; last && i < r->ncalls; i++)
        last = r->calls[i].st == TC_DONE;
    if (last) {
        /* the step's last result, no other result's commit queued: it goes in one commit with the run row that
         * carries every tool message (what run_tools would commit next), then the next LLM step. One commit a
         * step fewer; still every state committed before the next step starts. */
        for (int i = 0; i < r->ncalls; i++)
            add_tool_message(r, &r->calls[i]);
        persist(r, true, s, 1, after_results_commit);
        return;
    }
    r->tool_commits++;
    persist(r, false, s, 1, after_tool_commit);
}

static void on_tool_done(struct tool_exec *te, enum tool_outcome o, const char *text, size_t len)
{
    struct tcall *c = te->ud;
    if (c->st != TC_RUNNING)
        return;
    tool_end(c, o, text, len);
}

static void on_tool_timeout(uv_timer_t *t)
{
    struct tcall *c = ((struct call_timer *)t->data)->c;
    if (c->st != TC_RUNNING)
        return;
    c->tool->cancel(&c->te);
    char msg[96];
    snprintf(msg, sizeof(msg), "no answer within %lld ms", (long long)c->run->def.limits.tool_timeout_ms);
    tool_end(c, TOOL_TIMEOUT, msg, strlen(msg));
}

static void after_start_commit(struct run *r, int rc)
{
    if (r->finishing)
        return;
    if (rc != 0) {
        step_failed(r, "the run's state could not be committed");
        return;
    }
    for (int i = 0; i < r->ncalls; i++) {
        struct tcall *c = &r->calls[i];
        if (c->st != TC_STARTING)
            continue;
        c->st = TC_RUNNING;
        c->te = (struct tool_exec){
            .loop = r->loop, .def = &r->def, .tool = c->tool, .name = c->name, .args = c->args, .done = on_tool_done,
            .ud = c};
        struct call_timer *t = xcalloc(1, sizeof(*t));
        t->run = r;
        t->c = c;
        uv_timer_init(r->loop, &t->t);
        t->t.data = t;
        r->refs++; /* the timer's, dropped when it has closed */
        c->timer = t;
        uv_timer_start(&t->t, on_tool_timeout, (uint64_t)r->def.limits.tool_timeout_ms, 0);
        ext_begin(r);
        c->tool->start(&c->te);
    }
}

/* Starts pending calls up to max_parallel_tools; when every call is done, the results go to the model. */
static void run_tools(struct run *r)
{
    if (r->finishing || r->tool_commits > 0)
        return; /* a result's commit is still queued: its continuation comes back here */
    int running = 0, done = 0;
    for (int i = 0; i < r->ncalls; i++) {
        running += r->calls[i].st == TC_RUNNING || r->calls[i].st == TC_STARTING;
        done += r->calls[i].st == TC_DONE;
    }
    if (done == r->ncalls) {
        for (int i = 0; i < r->ncalls; i++)
            add_tool_message(r, &r->calls[i]);
        calls_clear(r);
        persist(r, true, NULL, 0, after_llm_commit); /* then the next LLM step */
        return;
    }
    struct as_step *steps = xcalloc((size_t)r->ncalls, sizeof(*steps));
    size_t n = 0;
    for (int i = 0; i < r->ncalls && running < r->def.limits.max_parallel_tools; i++) {
        struct tcall *c = &r->calls[i];
        if (c->st != TC_PENDING)
            continue;
        c->st = TC_STARTING;
        c->t_start_ms = wall_ms();
        steps[n++] = step_of_call(c); /* "started" is committed before the call runs */
        running++;
    }
    if (n == 0) {
        xfree(steps);
        return; /* waiting for calls in flight */
    }
    persist(r, false, steps, n, after_start_commit);
}

static void after_tool_commit(struct run *r, int rc)
{
    r->tool_commits--;
    if (r->finishing)
        return;
    if (rc != 0) {
        step_failed(r, "the run's state could not be committed");
        return;
    }
    run_tools(r);
}

static void after_resume_commit(struct run *r, int rc)
{
    if (r->finishing)
        return;
    if (rc != 0) {
        step_failed(r, "the run's state could not be committed");
        return;
    }
    run_tools(r);
}

/* The next thing to do: the tool calls of the last step that are not done, else an LLM step. */
static void run_next_step(struct run *r)
{
    if (r->ncalls > 0)
        run_tools(r);
    else
        llm_start(r);
}

/* ---------------- starting, resuming ---------------- */

static cJSON *tools_json(const struct config_agent *def)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < def->tools.n; i++) {
        const struct agent_tool *t = agent_tool_find(def->tools.v[i]);
        if (t == NULL)
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(o, "function");
        cJSON_AddStringToObject(fn, "name", t->name);
        cJSON_AddStringToObject(fn, "description", t->description);
        cJSON *p = cJSON_Parse(t->parameters);
        cJSON_AddItemToObject(fn, "parameters", p ? p : cJSON_CreateObject());
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static struct run *run_new(uv_loop_t *loop, struct gateway_worker *gw, struct config *cfg,
                           const struct config_agent *def)
{
    struct run *r = xcalloc(1, sizeof(*r));
    r->refs = 1;
    r->loop = loop;
    r->gw = gw;
    r->cfg = config_ref(cfg);
    agent_def_copy(&r->def, def);
    r->tools = tools_json(def);
    buf_init(&r->body, BUF_UNBOUNDED);
    buf_init(&r->resp, BUF_UNBOUNDED);
    buf_init(&r->live, RUN_LIVE_MAX);
    buf_init(&r->hdrs, BUF_UNBOUNDED);
    uv_timer_init(loop, &r->deadline);
    r->deadline.data = r;
    uv_async_init(loop, &r->wake, on_wake);
    r->wake.data = r;
    return r;
}

static void live_add(struct run *r)
{
    pthread_mutex_lock(&G.mu);
    r->next = G.live;
    G.live = r;
    pthread_mutex_unlock(&G.mu);
    atomic_fetch_add(&G.active, 1);
    metrics_add(&m_active, NULL, 1);
}

static void arm_deadline(struct run *r)
{
    if (r->def.limits.deadline_ms <= 0)
        return;
    int64_t left = r->row.created_ms + r->def.limits.deadline_ms - wall_ms();
    uv_timer_start(&r->deadline, on_deadline, left > 0 ? (uint64_t)left : 0, 0);
}

static void after_first_commit(struct run *r, int rc)
{
    if (r->finishing)
        return;
    if (rc != 0) {
        step_failed(r, "the run's state could not be committed");
        return;
    }
    for (struct waiter **p = &r->waiters; *p;) {
        struct waiter *w = *p;
        if (!w->at_start) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        w->fn(w->ud, r->id);
        xfree(w);
    }
    llm_start(r);
}

int run_start(uv_loop_t *loop, struct gateway_worker *gw, struct config *cfg, const struct config_agent *def,
              struct run_request *rq, const struct principal *who, struct str secret, char id_out[RUN_ID_MAX],
              run_finished_fn *finished, void *ud, bool when_started, int *status, char *msg, size_t msglen)
{
    if (G.store == NULL) {
        *status = 503;
        snprintf(msg, msglen, "agent runs are not available: the run store could not be opened");
        return -1;
    }
    if (atomic_load(&G.active) >= RUNS_MAX_ACTIVE) {
        *status = 429;
        snprintf(msg, msglen, "too many agent runs queued or running (%d); retry later", RUNS_MAX_ACTIVE);
        return -1;
    }
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        *status = 500;
        snprintf(msg, msglen, "no randomness available");
        return -1;
    }
    struct run *r = run_new(loop, gw, cfg, def);
    int k = snprintf(r->id, sizeof(r->id), "run_");
    for (size_t i = 0; i < sizeof(rnd); i++)
        k += snprintf(r->id + k, sizeof(r->id) - (size_t)k, "%02x", rnd[i]);
    snprintf(r->row.agent, sizeof(r->row.agent), "%s", def->name);
    snprintf(r->row.status, sizeof(r->row.status), "running");
    if (who) {
        snprintf(r->row.key_id, sizeof(r->row.key_id), "%s", who->key_id);
        snprintf(r->row.user, sizeof(r->row.user), "%s", who->user);
        snprintf(r->row.team, sizeof(r->row.team), "%s", who->team);
    }
    snprintf(r->row.workflow, sizeof(r->row.workflow), "%s", def->workflow ? def->workflow : def->name);
    r->row.created_ms = wall_ms();
    if (secret.n)
        r->secret = xstrndup(secret.p, secret.n);
    r->messages = rq->messages;
    rq->messages = NULL;
    char *in = cJSON_PrintUnformatted(r->messages);
    r->row.input = xstrdup(in);
    cJSON_free(in);
    if (finished) {
        struct waiter *w = xcalloc(1, sizeof(*w));
        w->fn = finished;
        w->ud = ud;
        w->at_start = when_started;
        r->waiters = w;
    }
    memcpy(id_out, r->id, RUN_ID_MAX);
    run_trace_init(r);
    live_add(r);
    arm_deadline(r);
    persist(r, true, NULL, 0, after_first_commit);
    return 0;
}

void run_forget_waiter(const char *id, void *ud)
{
    pthread_mutex_lock(&G.mu);
    struct run *r = G.live;
    while (r && strcmp(r->id, id) != 0)
        r = r->next;
    pthread_mutex_unlock(&G.mu);
    if (r == NULL)
        return; /* the caller is on the run's loop: it cannot have gone meanwhile */
    for (struct waiter **p = &r->waiters; *p; p = &(*p)->next)
        if ((*p)->ud == ud) {
            struct waiter *w = *p;
            *p = w->next;
            xfree(w);
            return;
        }
}

void run_watch(const char *id, int delta)
{
    pthread_mutex_lock(&G.mu);
    for (struct run *r = G.live; r; r = r->next)
        if (strcmp(r->id, id) == 0) {
            r->watchers += delta;
            break;
        }
    pthread_mutex_unlock(&G.mu);
}

bool run_stream_read(const char *id, int64_t *step, size_t *off, struct buf *out)
{
    bool any = false;
    pthread_mutex_lock(&G.mu);
    for (struct run *r = G.live; r; r = r->next)
        if (strcmp(r->id, id) == 0) {
            if (r->live_step != *step) {
                *step = r->live_step;
                *off = 0;
            }
            if (r->live.len > *off) {
                buf_append(out, r->live.data + *off, r->live.len - *off);
                *off = r->live.len;
                any = true;
            }
            break;
        }
    pthread_mutex_unlock(&G.mu);
    return any;
}

int run_cancel(const char *id)
{
    int rc = 1;
    pthread_mutex_lock(&G.mu);
    for (struct run *r = G.live; r; r = r->next)
        if (strcmp(r->id, id) == 0) {
            atomic_store(&r->cancel_req, true);
            uv_async_send(&r->wake); /* the handle is closed only after the run leaves G.live */
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&G.mu);
    return rc;
}

/* ---- resume ---- */

struct resume_job {
    uv_work_t w;
    uv_loop_t *loop;
    struct gateway_worker *gw;
    struct as_run *runs;
    size_t n;
    struct as_step **steps;
    size_t *nsteps;
    char err[256];
    int rc;
};

static void fail_orphan(struct as_run *row, const char *why)
{
    /* the run's agent is gone: it ends failed (on the thread pool) */
    snprintf(row->status, sizeof(row->status), "failed");
    xfree(row->error);
    row->error = xstrdup(why);
    row->updated_ms = wall_ms();
    char err[256];
    if (agent_store_commit(G.store, row->id, row, NULL, 0, err, sizeof(err)) != 0)
        log_error("agent run %s: %s", row->id, err);
}

static void resume_work(uv_work_t *w)
{
    struct resume_job *j = w->data;
    j->rc = agent_store_unfinished(G.store, &j->runs, &j->n, j->err, sizeof(j->err));
    if (j->rc != 0)
        return;
    j->steps = xcalloc(j->n + 1, sizeof(*j->steps));
    j->nsteps = xcalloc(j->n + 1, sizeof(*j->nsteps));
    struct config *cfg = config_acquire();
    for (size_t i = 0; i < j->n; i++) {
        struct config_agent def;
        if (!agents_lookup(cfg, j->runs[i].agent, &def)) {
            log_warn("agent run %s: the agent '%s' is no longer defined: the run fails", j->runs[i].id,
                     j->runs[i].agent);
            fail_orphan(&j->runs[i], "the run's agent is no longer defined");
            continue;
        }
        agent_def_free(&def);
        agent_store_steps(G.store, j->runs[i].id, &j->steps[i], &j->nsteps[i], j->err, sizeof(j->err));
    }
    config_unref(cfg);
}

static void resume_one(struct resume_job *j, struct config *cfg, struct as_run *row, struct as_step *steps,
                       size_t nsteps)
{
    struct config_agent def;
    if (strcmp(row->status, "failed") == 0 || !agents_lookup(cfg, row->agent, &def))
        return; /* failed by resume_work: its agent is gone */
    struct run *r = run_new(j->loop, j->gw, cfg, &def);
    agent_def_free(&def);
    snprintf(r->id, sizeof(r->id), "%s", row->id);
    r->row = *row;
    memset(row, 0, sizeof(*row)); /* strings taken over */
    snprintf(r->row.status, sizeof(r->row.status), "running");
    r->messages = cJSON_Parse(r->row.messages ? r->row.messages : "[]");
    if (!cJSON_IsArray(r->messages)) {
        cJSON_Delete(r->messages);
        r->messages = cJSON_CreateArray();
    }
    xfree(r->row.messages);
    r->row.messages = NULL;
    for (size_t i = 0; i < nsteps; i++)
        if (steps[i].seq >= r->next_seq)
            r->next_seq = steps[i].seq + 1;
    /* the tool calls of the last step, when its results had not all reached the model */
    const cJSON *last = cJSON_GetArrayItem(r->messages, cJSON_GetArraySize(r->messages) - 1);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(last, "role");
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(last, "tool_calls");
    int ntc = cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0 ? cJSON_GetArraySize(tcs) : 0;
    r->calls = ntc ? xcalloc((size_t)ntc, sizeof(*r->calls)) : NULL;
    struct as_step *fix = ntc ? xcalloc((size_t)ntc, sizeof(*fix)) : NULL;
    size_t nfix = 0;
    int interrupted = 0, rerun = 0;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        if (r->ncalls == ntc)
            break;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *ar = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        struct tcall *c = &r->calls[r->ncalls++];
        c->run = r;
        snprintf(c->id, sizeof(c->id), "%s", cJSON_IsString(id) ? id->valuestring : "");
        snprintf(c->name, sizeof(c->name), "%s", cJSON_IsString(nm) ? nm->valuestring : "");
        c->args = xstrdup(cJSON_IsString(ar) ? ar->valuestring : "{}");
        c->tool = resolve_tool(r, c->name);
        const struct as_step *s = NULL; /* the call's row: the latest with its id */
        for (size_t i = 0; i < nsteps; i++)
            if (strcmp(steps[i].kind, "tool") == 0 && strcmp(steps[i].call_id, c->id) == 0)
                s = &steps[i];
        c->seq = s ? s->seq : r->next_seq++;
        c->t_start_ms = s ? s->t_start_ms : 0;
        if (c->tool == NULL) {
            c->st = TC_DONE;
            c->outcome = TOOL_UNAVAILABLE;
            c->result = xstrdup("this agent has no such tool");
        } else if (s == NULL || strcmp(s->state, "pending") == 0) {
            c->st = TC_PENDING;
        } else if (strcmp(s->state, "started") == 0) {
            if (c->tool->idempotent) {
                c->st = TC_PENDING; /* run again */
                rerun++;
            } else {
                c->st = TC_DONE;
                c->outcome = TOOL_INTERRUPTED;
                c->result = xstrdup("the call was in flight when agentd stopped; it was not run again (the tool is "
                                    "not idempotent): it may or may not have taken effect");
                fix[nfix++] = step_of_call(c);
                interrupted++;
            }
        } else {
            c->st = TC_DONE;
            c->outcome = TOOL_OK;
            for (int o = 0; o < TOOL_OUTCOMES; o++)
                if (strcmp(s->state, tool_outcome_name((enum tool_outcome)o)) == 0)
                    c->outcome = (enum tool_outcome)o;
            c->result = xstrdup(s->result ? s->result : "");
        }
    }
    run_trace_init(r);
    log_info("agent run %s (%s): resumed after %lld steps (%d tool calls run again, %d interrupted)", r->id,
             r->def.name, (long long)r->row.steps, rerun, interrupted);
    live_add(r);
    arm_deadline(r);
    persist(r, true, fix, nfix, after_resume_commit);
}

static void resume_done(uv_work_t *w, int status)
{
    struct resume_job *j = w->data;
    if (status != 0 || j->rc != 0) {
        log_error("agent runs not resumed: %s", j->err[0] ? j->err : "the work was not run");
    } else {
        struct config *cfg = config_acquire();
        for (size_t i = 0; i < j->n; i++)
            resume_one(j, cfg, &j->runs[i], j->steps[i], j->nsteps[i]);
        config_unref(cfg);
    }
    for (size_t i = 0; i < j->n; i++) {
        as_run_free(&j->runs[i]);
        for (size_t k = 0; j->steps && k < j->nsteps[i]; k++)
            as_step_free(&j->steps[i][k]);
        if (j->steps)
            xfree(j->steps[i]);
    }
    xfree(j->runs);
    xfree(j->steps);
    xfree(j->nsteps);
    xfree(j);
}

void agents_worker_init(uv_loop_t *loop, struct gateway_worker *gw, int worker_id)
{
    if (worker_id != 0 || G.store == NULL)
        return;
    struct resume_job *j = xcalloc(1, sizeof(*j));
    j->w.data = j;
    j->loop = loop;
    j->gw = gw;
    if (uv_queue_work(loop, &j->w, resume_work, resume_done) != 0) {
        log_error("agent runs not resumed: cannot queue the work");
        xfree(j);
    }
}

void agents_worker_drain(uv_loop_t *loop)
{
    for (;;) {
        struct run *found = NULL;
        pthread_mutex_lock(&G.mu);
        for (struct run *r = G.live; r; r = r->next)
            if (r->loop == loop && !r->finishing) {
                found = r;
                break;
            }
        pthread_mutex_unlock(&G.mu);
        if (found == NULL)
            break;
        run_suspend(found);
    }
    http_fetch_loop_done();
    mcp_loop_done();
}

/* ---------------- process ---------------- */

static void defs_load(void)
{
    char **names, **jsons, err[256];
    size_t n;
    if (agent_store_def_list(G.store, &names, &jsons, &n, err, sizeof(err)) != 0) {
        log_error("agent definitions not loaded: %s", err);
        return;
    }
    G.defs = n ? xcalloc(n, sizeof(*G.defs)) : NULL;
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_Parse(jsons[i]);
        char msg[256];
        if (agent_def_from_json(o, &G.defs[G.ndefs], msg, sizeof(msg)) == 0)
            G.ndefs++;
        else {
            agent_def_free(&G.defs[G.ndefs]);
            log_warn("agent definition '%s' in the store is not usable: %s", names[i], msg);
        }
        cJSON_Delete(o);
        xfree(names[i]);
        xfree(jsons[i]);
    }
    xfree(names);
    xfree(jsons);
}

int agents_start(const char *data_dir, bool memory, char *err, size_t errlen)
{
    if (!G.metrics_done) {
        metrics_register(&m_runs);
        metrics_register(&m_active);
        metrics_register(&m_tools);
        metrics_register(&m_run_dur);
        metrics_register(&m_tool_dur);
        metrics_register(&m_overhead);
        G.metrics_done = true;
    }
    G.store = agent_store_open(data_dir, memory, err, errlen);
    if (G.store == NULL)
        return -1;
    defs_load();
    return 0;
}

void agents_stop(void)
{
    agent_store_close(G.store);
    G.store = NULL;
    for (size_t i = 0; i < G.ndefs; i++)
        agent_def_free(&G.defs[i]);
    xfree(G.defs);
    G.defs = NULL;
    G.ndefs = 0;
}

bool agents_lookup(const struct config *cfg, const char *name, struct config_agent *out)
{
    const struct config_agent *a = cfg ? agent_config_find(cfg, name) : NULL;
    if (a) {
        agent_def_copy(out, a);
        return true;
    }
    bool found = false;
    pthread_mutex_lock(&G.mu);
    for (size_t i = 0; i < G.ndefs && !found; i++)
        if (strcmp(G.defs[i].name, name) == 0) {
            agent_def_copy(out, &G.defs[i]);
            found = true;
        }
    pthread_mutex_unlock(&G.mu);
    return found;
}

int agents_def_put(const struct config_agent *def, char *err, size_t errlen)
{
    if (G.store == NULL) {
        snprintf(err, errlen, "the agent store is not available");
        return -1;
    }
    cJSON *j = agent_def_to_json(def);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    int rc = agent_store_def_put(G.store, def->name, text, err, errlen);
    cJSON_free(text);
    if (rc != 0)
        return -1;
    pthread_mutex_lock(&G.mu);
    size_t i = 0;
    while (i < G.ndefs && strcmp(G.defs[i].name, def->name) != 0)
        i++;
    if (i == G.ndefs)
        G.defs = xrealloc(G.defs, ++G.ndefs * sizeof(*G.defs));
    else
        agent_def_free(&G.defs[i]);
    agent_def_copy(&G.defs[i], def);
    pthread_mutex_unlock(&G.mu);
    return 0;
}

int agents_def_del(const char *name, char *err, size_t errlen)
{
    if (G.store == NULL) {
        snprintf(err, errlen, "the agent store is not available");
        return -1;
    }
    int rc = agent_store_def_del(G.store, name, err, errlen);
    pthread_mutex_lock(&G.mu);
    for (size_t i = 0; i < G.ndefs; i++)
        if (strcmp(G.defs[i].name, name) == 0) {
            agent_def_free(&G.defs[i]);
            G.defs[i] = G.defs[--G.ndefs];
            break;
        }
    pthread_mutex_unlock(&G.mu);
    return rc;
}

cJSON *agents_defs_json(const struct config *cfg)
{
    cJSON *arr = cJSON_CreateArray();
    const struct config_agent *a = cfg->agents.items;
    for (size_t i = 0; i < cfg->agents.n; i++) {
        cJSON *o = agent_def_to_json(&a[i]);
        cJSON_AddStringToObject(o, "source", "config");
        cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_lock(&G.mu);
    for (size_t i = 0; i < G.ndefs; i++) {
        cJSON *o = agent_def_to_json(&G.defs[i]);
        cJSON_AddStringToObject(o, "source", "admin");
        cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_unlock(&G.mu);
    return arr;
}
