/* observers.c: the first two exchange observers (exchange.h): the GenAI metrics and the `llm` log line. Each
 * is called once per attempt end and once per exchange end, whatever ended them. */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/gw_config.h"
#include "gateway/registry.h"
#include "policy/auth.h"
#include "telemetry/eval.h"
#include "telemetry/genai.h"

static const char *const front_names[] = {"openai", "anthropic", "openai-embeddings", "openai-responses"};

/* the series metrics_settle uses, by their index in its memo */
enum { SS_REQ, SS_AREQ, SS_DUR, SS_OP_DUR, SS_OVERHEAD, SS_TOK_IN, SS_TOK_OUT, SS_TOKENS, SS_COST, SS_TTFT, SS_TPOT };
static _Thread_local struct metrics_memo settle_memo;
#define SETTLE_SERIES(i, def, ...) metrics_memo_series(&settle_memo, memo, (i), (def), (const char *[]){__VA_ARGS__})

static void metrics_attempt_end(const struct exchange *ex, const struct attempt *a, const struct attempt_outcome *o)
{
    (void)ex;
    char label[24];
    const char *outcome = ex_attempt_result_name(o->result);
    if (o->result == AO_HTTP_STATUS) {
        snprintf(label, sizeof(label), "http_%d", o->status);
        outcome = label;
    }
    metrics_inc(&genai_upstream_attempts, (const char *[]){a->dep->label, outcome});
}

static void metrics_settle(const struct exchange *ex, const struct ex_outcome *o)
{
    const struct deployment *dep = o->dep;
    const char *dlabel = dep ? dep->label : "-";
    const char *pname = dep ? dep->prov->name : "-";
    const char *op = ex->front == FRONT_OPENAI_EMBEDDINGS ? "embeddings" : "chat";
    const char *model = ex->rq.model_name;
    char st[24];
    if (o->status >= 0) /* no printf on every request */
        st[fmt_u64(st, (uint64_t)o->status)] = '\0';
    else
        snprintf(st, sizeof(st), "%d", o->status);
    const char *wf = ex->trace.workflow[0] ? ex->trace.workflow : "none";
    /* every label below follows from these (the error's series are looked up each time) */
    bool memo = metrics_memo_use(&settle_memo, o->status * 16 + (int)ex->front,
                                 (const char *[]){model, wf, dlabel, pname}, 4);
    metrics_series_add(SETTLE_SERIES(SS_REQ, &genai_gateway_requests, front_names[ex->front], model, dlabel, st), 1);
    metrics_series_add(SETTLE_SERIES(SS_AREQ, &agent_requests_total, wf, st), 1);
    /* a sampled trace leaves its ids on the duration buckets (exemplars) */
    bool exemplar = ex->trace.active && ex->trace.sampled;
    struct metric_series *dur = SETTLE_SERIES(SS_DUR, &agent_request_duration, wf);
    if (exemplar)
        metrics_series_observe_ex(dur, (double)o->total_us / 1e3, ex->trace.trace_id, ex->trace.server_span_id);
    else
        metrics_series_observe(dur, (double)o->total_us / 1e3);
    if (o->status >= 400) {
        /* the OpenAI error type (invalid_request_error, rate_limit_error, ...): few values */
        const char *et = o->err ? gw_err_type_openai(o->err->type) : "api_error";
        metrics_inc(&agent_errors_total, (const char *[]){wf, o->status == 499 ? "client_closed" : et});
    }
    if (ex->model == NULL)
        return;
    const char *etype = o->status >= 400 ? st : "";
    struct metric_series *op_dur = SETTLE_SERIES(SS_OP_DUR, &genai_operation_duration, op, pname, model, etype);
    if (exemplar)
        metrics_series_observe_ex(op_dur, (double)o->total_us / 1e6, ex->trace.trace_id, ex->trace.server_span_id);
    else
        metrics_series_observe(op_dur, (double)o->total_us / 1e6);
    metrics_series_observe(SETTLE_SERIES(SS_OVERHEAD, &genai_gateway_overhead, model, dlabel),
                           (double)o->overhead_us / 1e6);
    if (ex->usage.known || ex->usage.input || ex->usage.output) {
        metrics_series_observe(SETTLE_SERIES(SS_TOK_IN, &genai_token_usage, op, pname, model, "input"),
                               (double)ex->usage.input);
        if (ex->front != FRONT_OPENAI_EMBEDDINGS)
            metrics_series_observe(SETTLE_SERIES(SS_TOK_OUT, &genai_token_usage, op, pname, model, "output"),
                                   (double)ex->usage.output);
        metrics_series_add(SETTLE_SERIES(SS_TOKENS, &genai_agent_tokens_used, model, dlabel),
                           (double)(ex->usage.input + ex->usage.output));
    }
    if (ex->priced && ex->cost_usd > 0)
        metrics_series_add(SETTLE_SERIES(SS_COST, &genai_cost_usd, model, dlabel), ex->cost_usd);
    if (ex->t_first_token_us) {
        metrics_series_observe(SETTLE_SERIES(SS_TTFT, &genai_time_to_first_token, model, dlabel),
                               (double)(ex->t_first_token_us - ex->t_start_us) / 1e6);
        uint64_t end = ex->t_start_us + o->total_us;
        if (o->status < 400 && ex->usage.output > 1 && end > ex->t_first_token_us)
            metrics_series_observe(SETTLE_SERIES(SS_TPOT, &genai_time_per_output_token, model, dlabel),
                                   (double)(end - ex->t_first_token_us) / 1e6 / (double)(ex->usage.output - 1));
    }
}

const struct ex_observer observers_metrics = {
    .name = "metrics", .on_attempt_end = metrics_attempt_end, .on_settle = metrics_settle};

static void llm_log_settle(const struct exchange *ex, const struct ex_outcome *o)
{
    int status = o->status;
    bool wanted = ex->rq.cfg && ex->rq.cfg->log.llm;
    struct log_line l;
    if (!(wanted || status >= 500) || !log_begin(&l, status >= 500 ? LL_WARN : LL_INFO, "llm"))
        return;
    log_field_cstr(&l, "request_id", ex->rq.request_id);
    if (ex->trace.active) /* trace_id and span_id (the request's SERVER span); OTLP logs carry them too */
        log_field_trace(&l, ex->trace.trace_id, ex->trace.server_span_id);
    log_field_cstr(&l, "front", front_names[ex->front]);
    log_field_cstr(&l, "model", ex->rq.model_name);
    log_field_cstr(&l, "deployment", o->dep ? o->dep->label : "-");
    if (ex->rq.who) { /* attribution (policy/auth.h): empty fields are left out */
        const struct principal *p = ex->rq.who;
        if (p->key_id[0])
            log_field_cstr(&l, "key_id", p->key_id);
        if (p->user[0])
            log_field_cstr(&l, "user", p->user);
        if (p->team[0])
            log_field_cstr(&l, "team", p->team);
        if (p->workflow[0])
            log_field_cstr(&l, "workflow", p->workflow);
    }
    log_field_int(&l, "status", status);
    log_field_bool(&l, "stream", ex->rq.stream);
    log_field_int(&l, "attempts", ex->attempts);
    if (ex->narec > 1) { /* every attempt and how it ended (issue 9, item 2) */
        struct buf ao = BUF_INIT(4096);
        ex_attempt_outcomes(ex, &ao);
        log_field_str(&l, "attempt_outcomes", ao.data ? ao.data : "", ao.len);
        buf_free(&ao);
    }
    log_field_int(&l, "input_tokens", ex->usage.input);
    log_field_int(&l, "output_tokens", ex->usage.output);
    if (ex->usage.cached_input)
        log_field_int(&l, "cached_tokens", ex->usage.cached_input);
    if (ex->usage.cache_write)
        log_field_int(&l, "cache_write_tokens", ex->usage.cache_write);
    if (ex->usage.reasoning)
        log_field_int(&l, "reasoning_tokens", ex->usage.reasoning);
    if (ex->route_rule) { /* routing (gateway/routing.c) */
        log_field_cstr(&l, "route", ex->route_rule);
        log_field_cstr(&l, "routed_from", ex->routed_from);
    }
    if (ex->cache_result) /* the response cache (gateway/cache.c) */
        log_field_cstr(&l, "cache", ex->cache_result);
    if (ex->cache_saved_nusd > 0)
        log_field_double(&l, "cache_saved_usd", (double)ex->cache_saved_nusd / 1e9);
    if (ex->priced)
        log_field_double(&l, "cost_usd", ex->cost_usd);
    log_field_bool(&l, "usage_reported", ex->usage.known);
    if (ex->incomplete)
        log_field_bool(&l, "incomplete", true);
    log_field_uint(&l, "duration_us", o->total_us);
    log_field_uint(&l, "overhead_us", o->overhead_us);
    if (ex->t_first_token_us)
        log_field_uint(&l, "ttft_us", ex->t_first_token_us - ex->t_start_us);
    if (status >= 400 && o->err)
        log_field_cstr(&l, "error", o->err->message);
    log_end(&l);
}

const struct ex_observer observers_llm_log = {.name = "llm_log", .on_settle = llm_log_settle};

/* Evaluations (telemetry/eval.h): a sampled fraction of complete chat answers is copied to the evaluation thread;
 * nothing is scored here. A streamed answer is kept as the client received it (up to
 * telemetry.evaluation_stream_max_bytes) by a sink that forwards every byte, put on top of the exchange's sink at
 * its first attempt when the exchange is sampled; a longer stream is not scored. */

static bool eval_sampled(const struct exchange *ex, const char **wf_out)
{
    const char *wf = ex->trace.workflow;
    if (!wf[0] && ex->rq.who)
        wf = ex->rq.who->workflow;
    *wf_out = wf;
    if ((ex->front != FRONT_OPENAI_CHAT && ex->front != FRONT_ANTHROPIC_MESSAGES) || eval_is_judge(ex->rq.who))
        return false;
    double rate = eval_rate(ex->rq.model_name, wf);
    if (rate <= 0)
        return false;
    if (rate < 1) {
        uint8_t r[8];
        trace_new_span_id(r);
        uint64_t v = 0;
        for (int i = 0; i < 7; i++)
            v = v << 8 | r[i];
        if ((double)v / 72057594037927936.0 >= rate) /* 2^56 */
            return false;
    }
    return true;
}

struct eval_tee {
    const struct ex_sink_ops *ops;
    void *sink;
    struct exchange *ex;
    struct buf text;
    bool overflow;
};

static void tee_head(void *sink, int status, const struct buf *hdrs, bool stream)
{
    struct eval_tee *t = sink;
    t->ops->head(t->sink, status, hdrs, stream);
}

static int tee_write(void *sink, const void *data, size_t len)
{
    struct eval_tee *t = sink;
    if (!t->overflow && buf_append(&t->text, data, len) != 0) {
        t->overflow = true; /* longer than telemetry.evaluation_stream_max_bytes: relayed, not scored */
        buf_free(&t->text);
    }
    return t->ops->write(t->sink, data, len);
}

static size_t tee_pending(void *sink)
{
    struct eval_tee *t = sink;
    return t->ops->pending ? t->ops->pending(t->sink) : 0;
}

static void tee_end(void *sink)
{
    struct eval_tee *t = sink;
    t->ex->sink_ops = t->ops;
    t->ex->sink = t->sink;
    t->ops->end(t->sink);
    buf_free(&t->text);
    xfree(t);
}

static const struct ex_sink_ops eval_tee_ops = {
    .head = tee_head, .write = tee_write, .end = tee_end, .pending = tee_pending};

static void eval_attempt_start(struct exchange *ex, struct attempt *a, struct up_request *r)
{
    (void)a, (void)r;
    int64_t cap = eval_stream_max();
    const char *wf;
    /* once per exchange: a retry finds the tee on top (nothing else wraps the sink after the first attempt) */
    if (!ex->rq.stream || cap <= 0 || ex->attempts > 1 || ex->sink_ops == &eval_tee_ops || !eval_sampled(ex, &wf))
        return;
    struct eval_tee *t = xcalloc(1, sizeof(*t));
    t->ops = ex->sink_ops;
    t->sink = ex->sink;
    t->ex = ex;
    buf_init(&t->text, (size_t)cap);
    ex->sink_ops = &eval_tee_ops;
    ex->sink = t;
}

static void eval_settle(const struct exchange *ex, const struct ex_outcome *o)
{
    if (o->status != 200)
        return;
    const char *wf;
    const char *resp;
    size_t resp_len;
    bool stream = false;
    if (ex->sink_ops == &eval_tee_ops) { /* a sampled stream */
        const struct eval_tee *t = ex->sink;
        if (t->overflow || t->text.len == 0)
            return;
        wf = ex->trace.workflow[0] || !ex->rq.who ? ex->trace.workflow : ex->rq.who->workflow;
        resp = t->text.data;
        resp_len = t->text.len;
        stream = true;
    } else {
        if (!o->body || o->body->len == 0 || !eval_sampled(ex, &wf))
            return;
        resp = o->body->data;
        resp_len = o->body->len;
    }
    struct eval_job_in in = {.anthropic = ex->front == FRONT_ANTHROPIC_MESSAGES,
                             .request = ex->rq.body.p,
                             .request_len = ex->rq.body.n,
                             .response = resp,
                             .response_len = resp_len,
                             .stream = stream,
                             .model = ex->rq.model_name,
                             .workflow = wf,
                             .response_id = ex->id,
                             .request_id = ex->rq.request_id};
    if (ex->trace.active) {
        memcpy(in.trace_id, ex->trace.trace_id, 16);
        memcpy(in.span_id, ex->trace.attempt_span_id, 8); /* the chat span that made the answer */
    }
    eval_submit(&in);
}

const struct ex_observer observers_eval = {
    .name = "eval", .on_settle = eval_settle, .on_attempt_start = eval_attempt_start};

/* ---- the LLM judge's transport (telemetry/eval.h): an exchange on the evaluation thread's own loop, answering
 * into an in-process sink, as agent runs do (no HTTP to ourselves) ---- */

struct judge_req {
    struct buf resp, hdrs;
    int status;
    struct exchange *ex;
    struct config *cfg;
    struct str tp;
    char traceparent[TRACEPARENT_LEN + 1];
    eval_judge_done_fn done;
    void *ud;
};

static void *judge_open(uv_loop_t *loop, const struct config *cfg)
{
    return ex_worker_new(loop, gw_config_up_options(cfg));
}

static void judge_close(void *w)
{
    ex_worker_free(w);
}

static void jr_bind(void *sink, struct exchange *ex)
{
    ((struct judge_req *)sink)->ex = ex;
}

static void jr_head(void *sink, int status, const struct buf *hdrs, bool stream)
{
    (void)stream;
    struct judge_req *r = sink;
    r->status = status;
    if (hdrs->len)
        buf_append(&r->hdrs, hdrs->data, hdrs->len);
}

static int jr_write(void *sink, const void *data, size_t len)
{
    struct judge_req *r = sink;
    return buf_append(&r->resp, data, len) == 0 ? 0 : -1; /* bounded: 4 MiB */
}

static void jr_end(void *sink)
{
    struct judge_req *r = sink;
    if (r->ex)
        r->ex->rq.who = NULL; /* the evaluator's principal: nothing of the exchange reads it after its end */
    r->done(r->ud, r->status, &r->hdrs, &r->resp);
    buf_free(&r->resp);
    buf_free(&r->hdrs);
    config_unref(r->cfg);
    xfree(r);
}

static const struct ex_sink_ops judge_sink_ops = {.head = jr_head, .write = jr_write, .end = jr_end, .bind = jr_bind};

static const struct str *judge_header(const void *hctx, const char *name)
{
    const struct judge_req *r = hctx;
    static const struct str wf = {.p = "evaluation", .n = 10};
    if (strcmp(name, "traceparent") == 0 && r->traceparent[0])
        return &r->tp;
    if (strcmp(name, "x-agentd-workflow") == 0)
        return &wf;
    return NULL;
}

static void *judge_submit(void *w, const char *body, size_t n, const char *traceparent, const char *request_id,
                          const struct principal *who, eval_judge_done_fn done, void *ud)
{
    struct judge_req *r = xcalloc(1, sizeof(*r));
    buf_init(&r->resp, 4u << 20);
    buf_init(&r->hdrs, 64 * 1024);
    r->cfg = config_acquire();
    r->done = done;
    r->ud = ud;
    snprintf(r->traceparent, sizeof(r->traceparent), "%s", traceparent);
    r->tp = str_make(r->traceparent, strlen(r->traceparent));
    struct ex_request rq = {0};
    rq.body = str_make(body, n); /* the caller keeps it until done */
    rq.max_tokens = -1;
    snprintf(rq.request_id, sizeof(rq.request_id), "%s", request_id);
    rq.cfg = r->cfg;
    rq.who = who; /* authenticate does not run: the judge is agentd itself */
    rq.header = judge_header;
    rq.hctx = r;
    struct exchange *ex = ex_submit(w, &front_openai_chat, &rq, &judge_sink_ops, r);
    return ex ? r : NULL; /* NULL: it ended already (r is gone) */
}

static void judge_cancel(void *h)
{
    struct judge_req *r = h;
    if (r->ex)
        ex_cancel(r->ex);
}

const struct eval_transport eval_gateway_transport = {
    .open = judge_open, .close = judge_close, .submit = judge_submit, .cancel = judge_cancel};
