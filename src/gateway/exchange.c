/* exchange.c: the spine of the gateway (DESIGN §1). One struct exchange per client request; it moves through
 * parse -> route -> admit -> plan -> attempt* -> relay -> settle and never back. */
#include "gateway/exchange.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/worker.h"
#include "common/alloc.h"
#include "common/jscan.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/eventstream.h"
#include "gateway/front.h"
#include "gateway/models.h"
#include "gateway/redact.h"
#include "net/http.h"
#include "net/sse.h"
#include "net/upstream.h"
#include "telemetry/metrics.h"

_Atomic long gw_inflight;

struct gateway_worker {
    uv_loop_t *loop;
    struct upstream *up;
    uint64_t rng;
};

/* ---------- metrics (OpenTelemetry GenAI names, Prometheus spelling) ---------- */

static const double token_buckets[] = {1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304};
static const double op_buckets[] = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
static const double ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10};
static const double overhead_buckets[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025};
static const char *const tok_labels[] = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                                         "gen_ai_token_type", NULL};
static const char *const op_labels[] = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                                        "error_type", NULL};
static const char *const req_labels[] = {"front", "model", "deployment", "status", NULL};
static const char *const model_labels[] = {"model", "deployment", NULL};
static const char *const attempt_labels[] = {"deployment", "outcome", NULL};

static struct metric_def m_tokens = METRIC_HISTOGRAM_DEF(
    "gen_ai_client_token_usage", "Tokens used per LLM call (OpenTelemetry gen_ai.client.token.usage).", tok_labels,
    token_buckets);
static struct metric_def m_op_duration =
    METRIC_HISTOGRAM_DEF("gen_ai_client_operation_duration_seconds",
                         "Duration of LLM calls through the gateway (gen_ai.client.operation.duration).", op_labels,
                         op_buckets);
static struct metric_def m_ttft = METRIC_HISTOGRAM_DEF(
    "gen_ai_server_time_to_first_token_seconds", "Time to the first streamed token (gen_ai.server.time_to_first_token).",
    model_labels, ttft_buckets);
static struct metric_def m_overhead =
    METRIC_HISTOGRAM_DEF("agentd_gateway_overhead_seconds",
                         "Time agentd spent on a request outside the upstream call.", model_labels, overhead_buckets);
static struct metric_def m_requests = METRIC_DEF("agentd_gateway_requests_total",
                                                 "LLM requests by front door, model, deployment and status.",
                                                 METRIC_COUNTER, req_labels);
static struct metric_def m_attempts = METRIC_DEF("agentd_gateway_upstream_attempts_total",
                                                 "Upstream attempts by deployment and outcome.", METRIC_COUNTER,
                                                 attempt_labels);
static struct metric_def m_cost = METRIC_DEF("agentd_gateway_cost_usd_total", "Spend in US dollars.", METRIC_COUNTER,
                                             model_labels);
static struct metric_def m_tokens_total = METRIC_DEF("agent_tokens_used_total",
                                                     "Tokens used (the seed's agent.tokens.used counter).",
                                                     METRIC_COUNTER, model_labels);
static struct metric_def m_inflight = METRIC_DEF("agentd_gateway_inflight_requests", "LLM requests in flight.",
                                                 METRIC_GAUGE, NULL);

int gateway_global_init(void)
{
    metrics_register(&m_tokens);
    metrics_register(&m_op_duration);
    metrics_register(&m_ttft);
    metrics_register(&m_overhead);
    metrics_register(&m_requests);
    metrics_register(&m_attempts);
    metrics_register(&m_cost);
    metrics_register(&m_tokens_total);
    metrics_register(&m_inflight);
    usage_metrics_register();
    return upstream_global_init();
}

void gateway_preload(const struct config *cfg)
{
    const struct registry *r = registry_of(cfg);
    for (size_t i = 0; r && i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            const struct deployment *d = &r->models[i].deps[j];
            if (d->provider != PROVIDER_MOCK && d->base_url &&
                upstream_url_needs_curl(d->base_url, gw_config_up_options(cfg).client)) {
                upstream_preload_curl();
                return;
            }
        }
}

void gateway_global_cleanup(void)
{
    upstream_global_cleanup();
}

struct gateway_worker *gateway_worker_new(uv_loop_t *loop, struct up_options up)
{
    struct gateway_worker *g = xcalloc(1, sizeof(*g));
    g->loop = loop;
    g->up = upstream_new(loop, up);
    g->rng = time_mono_ns() ^ (uint64_t)(uintptr_t)g;
    return g;
}

void gateway_worker_free(struct gateway_worker *g)
{
    if (g == NULL)
        return;
    upstream_free(g->up);
    xfree(g);
}

static struct gateway_worker *worker_gateway(struct http_req *req)
{
    struct worker *w = worker_of_loop(http_server_loop(req->server));
    return w ? w->gateway : NULL;
}

static uint64_t rng_next(struct gateway_worker *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

/* ---------- fronts ---------- */

static const struct front_ops *front_of(const struct exchange *ex)
{
    switch (ex->front) {
    case FRONT_ANTHROPIC_MESSAGES: return &front_anthropic;
    case FRONT_OPENAI_EMBEDDINGS: return &front_openai_embeddings;
    default: return &front_openai_chat;
    }
}

/* ---------- attempt API used by providers ---------- */

struct str attempt_client_body(const struct attempt *a)
{
    return a->ex->body;
}

const cJSON *attempt_canonical(struct attempt *a, struct gw_error *err)
{
    struct exchange *ex = a->ex;
    if (ex->canon == NULL)
        ex->canon = front_of(ex)->to_canonical(ex, err);
    return ex->canon;
}

bool attempt_client_stream(const struct attempt *a)
{
    return a->ex->stream;
}

bool attempt_client_include_usage(const struct attempt *a)
{
    return a->ex->client_include_usage;
}

const char *attempt_public_model(const struct attempt *a)
{
    return a->ex->model_name;
}

int64_t attempt_max_tokens(const struct attempt *a)
{
    return a->ex->max_tokens;
}

int64_t attempt_default_max_tokens(const struct attempt *a)
{
    return a->ex->req->cfg->gateway.default_max_tokens;
}

const char *attempt_request_id(const struct attempt *a)
{
    return a->ex->req->request_id;
}

struct uv_loop_s *attempt_loop(const struct attempt *a)
{
    return a->ex->gw->loop;
}

/* ---------- exchange lifecycle ---------- */

static void ex_next_attempt(struct exchange *ex);
static void ex_finish(struct exchange *ex);
static void attempt_free(struct attempt *a);

static void on_deadline_closed(uv_handle_t *h)
{
    struct exchange *ex = h->data;
    if (ex->client_tree)
        cJSON_Delete(ex->client_tree);
    if (ex->canon)
        cJSON_Delete(ex->canon);
    xfree(ex);
}

static void settle(struct exchange *ex, int status)
{
    /* Cost from the provider-reported usage (or, for a stream cut short, what was counted). */
    const struct deployment *dep = ex->att ? ex->att->dep : (ex->iplan > 0 ? ex->plan[ex->iplan - 1] : NULL);
    const struct price *p = dep ? dep->price : NULL;
    if (p) {
        int64_t uncached = ex->usage.input - ex->usage.cached_input - ex->usage.cache_write;
        if (uncached < 0)
            uncached = 0;
        ex->cost_usd = ((double)uncached * p->input + (double)ex->usage.cached_input * p->cached_input +
                        (double)ex->usage.cache_write * p->cache_write + (double)ex->usage.output * p->output) /
                       1e6;
        ex->priced = true;
    }
    uint64_t now = time_mono_us();
    uint64_t total = now - ex->t_start_us;
    uint64_t overhead = total > ex->t_upstream_us ? total - ex->t_upstream_us : 0;
    const char *dlabel = dep ? dep->label : "-";
    const char *pname = dep ? dep->prov->name : "-";
    const char *op = ex->front == FRONT_OPENAI_EMBEDDINGS ? "embeddings" : "chat";
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    static const char *const front_names[] = {"openai", "anthropic", "openai-embeddings"};
    metrics_inc(&m_requests, (const char *[]){front_names[ex->front], ex->model_name, dlabel, st});
    if (ex->model) {
        const char *etype = status >= 400 ? st : "";
        metrics_observe(&m_op_duration, (const char *[]){op, pname, ex->model_name, etype}, (double)total / 1e6);
        metrics_observe(&m_overhead, (const char *[]){ex->model_name, dlabel}, (double)overhead / 1e6);
        if (ex->usage.known || ex->usage.input || ex->usage.output) {
            metrics_observe(&m_tokens, (const char *[]){op, pname, ex->model_name, "input"}, (double)ex->usage.input);
            if (ex->front != FRONT_OPENAI_EMBEDDINGS)
                metrics_observe(&m_tokens, (const char *[]){op, pname, ex->model_name, "output"},
                                (double)ex->usage.output);
            metrics_add(&m_tokens_total, (const char *[]){ex->model_name, dlabel},
                        (double)(ex->usage.input + ex->usage.output));
        }
        if (ex->priced && ex->cost_usd > 0)
            metrics_add(&m_cost, (const char *[]){ex->model_name, dlabel}, ex->cost_usd);
        if (ex->t_first_token_us)
            metrics_observe(&m_ttft, (const char *[]){ex->model_name, dlabel},
                            (double)(ex->t_first_token_us - ex->t_start_us) / 1e6);
    }
    struct log_line l;
    if ((ex->req->cfg->log.llm || status >= 500) && log_begin(&l, status >= 500 ? LL_WARN : LL_INFO, "llm")) {
        log_field_cstr(&l, "request_id", ex->req->request_id);
        log_field_cstr(&l, "front", front_names[ex->front]);
        log_field_cstr(&l, "model", ex->model_name);
        log_field_cstr(&l, "deployment", dlabel);
        log_field_int(&l, "status", status);
        log_field_bool(&l, "stream", ex->stream);
        log_field_int(&l, "attempts", ex->attempts);
        log_field_int(&l, "input_tokens", ex->usage.input);
        log_field_int(&l, "output_tokens", ex->usage.output);
        if (ex->usage.cached_input)
            log_field_int(&l, "cached_tokens", ex->usage.cached_input);
        if (ex->usage.reasoning)
            log_field_int(&l, "reasoning_tokens", ex->usage.reasoning);
        if (ex->priced)
            log_field_double(&l, "cost_usd", ex->cost_usd);
        log_field_bool(&l, "usage_reported", ex->usage.known);
        if (ex->incomplete)
            log_field_bool(&l, "incomplete", true);
        log_field_uint(&l, "duration_us", total);
        log_field_uint(&l, "overhead_us", overhead);
        if (ex->t_first_token_us)
            log_field_uint(&l, "ttft_us", ex->t_first_token_us - ex->t_start_us);
        if (status >= 400 && ex->have_err)
            log_field_cstr(&l, "error", ex->last_err.message);
        log_end(&l);
    }
}

/* Every path ends here exactly once: releases the admission slot, stops the deadline, frees. */
static void ex_finish(struct exchange *ex)
{
    if (ex->done)
        return;
    ex->done = true;
    if (ex->att) {
        attempt_free(ex->att);
        ex->att = NULL;
    }
    if (ex->admitted) {
        atomic_fetch_sub(&gw_inflight, 1);
        metrics_add(&m_inflight, NULL, -1);
    }
    uv_timer_stop(&ex->deadline);
    uv_close((uv_handle_t *)&ex->deadline, on_deadline_closed);
}

/* Terminal calls: the request must not call back into an exchange that is going away, and after the terminal
 * call the request itself may already be freed. */
static void ex_detach(struct exchange *ex)
{
    ex->req->on_abort = NULL;
    ex->req->on_drain = NULL;
}

static void ex_respond(struct exchange *ex, int status, const char *ctype, const void *body, size_t len)
{
    ex_detach(ex);
    http_respond(ex->req, status, ctype, body, len);
}

static void ex_stream_end(struct exchange *ex)
{
    ex_detach(ex);
    http_stream_end(ex->req);
}

/* "0.00012345": USD with 8 decimals, without printf (this runs on every response). */
static size_t fmt_usd(char *dst, double usd)
{
    if (!(usd >= 0) || usd > 1e12)
        usd = 0;
    uint64_t units = (uint64_t)(usd * 1e8 + 0.5);
    size_t n = fmt_u64(dst, units / 100000000u);
    dst[n++] = '.';
    uint64_t frac = units % 100000000u;
    for (int i = 7; i >= 0; i--) {
        dst[n + (size_t)i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    return n + 8;
}

static void add_header_u64(struct http_req *req, const char *name, uint64_t v)
{
    char tmp[24];
    tmp[fmt_u64(tmp, v)] = '\0';
    http_resp_header(req, name, tmp);
}

static void add_gateway_headers(struct exchange *ex, const struct deployment *dep, bool with_cost)
{
    struct http_req *req = ex->req;
    if (ex->front == FRONT_ANTHROPIC_MESSAGES)
        http_resp_header(req, "request-id", req->request_id); /* what Anthropic's SDKs read as requestID */
    if (dep)
        http_resp_header(req, "x-agentd-deployment", dep->label);
    http_resp_header(req, "x-agentd-model", ex->model_name);
    if (ex->dropped_fields[0])
        http_resp_header(req, "x-agentd-dropped-fields", ex->dropped_fields);
    uint64_t now = time_mono_us();
    uint64_t total = now - ex->t_start_us;
    uint64_t up = ex->t_upstream_us;
    if (ex->stream && ex->att && ex->att->t_headers_us && ex->att->t_start_us)
        up += ex->att->t_headers_us - ex->att->t_start_us; /* upstream time to first byte, still in flight */
    add_header_u64(req, "x-agentd-overhead-us", total > up ? total - up : 0);
    add_header_u64(req, "x-agentd-attempts", (uint64_t)ex->attempts);
    if (with_cost) {
        if (ex->priced) {
            char usd[40];
            usd[fmt_usd(usd, ex->cost_usd)] = '\0';
            http_resp_header(req, "x-agentd-cost-usd", usd);
        } else {
            http_resp_header(req, "x-agentd-cost-usd", "unknown");
        }
        add_header_u64(req, "x-agentd-input-tokens", (uint64_t)(ex->usage.input > 0 ? ex->usage.input : 0));
        add_header_u64(req, "x-agentd-output-tokens", (uint64_t)(ex->usage.output > 0 ? ex->usage.output : 0));
    }
}

static void ex_fail(struct exchange *ex, const struct gw_error *err)
{
    ex->last_err = *err;
    ex->have_err = true;
    struct http_req *req = ex->req;
    const struct front_ops *f = front_of(ex);
    if (ex->client_started) {
        /* A stream already reached the client: end it with the format's error event. */
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        f->stream_end(ex, err, &out);
        http_stream_write(req, out.data, out.len);
        buf_free(&out);
        ex->incomplete = true;
        settle(ex, err->status);
        ex_stream_end(ex);
        ex_finish(ex);
        return;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    f->error_body(ex, err, &out);
    const struct deployment *dep = ex->att ? ex->att->dep : NULL;
    if (ex->model)
        add_gateway_headers(ex, dep, false);
    else if (ex->front == FRONT_ANTHROPIC_MESSAGES)
        http_resp_header(req, "request-id", req->request_id);
    if (err->retry_after_ms >= 0) {
        http_resp_headerf(req, "retry-after", "%ld", (err->retry_after_ms + 999) / 1000);
        http_resp_headerf(req, "retry-after-ms", "%ld", err->retry_after_ms);
    }
    settle(ex, err->status);
    ex_respond(ex, err->status, "application/json", out.data, out.len);
    buf_free(&out);
    ex_finish(ex);
}

static void on_client_abort(struct http_req *req, void *ud)
{
    struct exchange *ex = ud;
    (void)req;
    /* The client went away: stop the upstream transfer at once (no point paying for tokens nobody reads). */
    ex->last_err.status = 499;
    ex->have_err = true;
    snprintf(ex->last_err.message, sizeof(ex->last_err.message), "client closed the connection");
    settle(ex, 499);
    if (ex->client_started)
        ex_stream_end(ex);
    else
        ex_respond(ex, 499, NULL, NULL, 0);
    ex_finish(ex);
}

static void on_deadline(uv_timer_t *t)
{
    struct exchange *ex = t->data;
    struct gw_error err;
    gw_error_set(&err, 504, GW_ERR_TIMEOUT, "the request did not complete within %lld ms (gateway.request_timeout)",
                 (long long)ex->req->cfg->gateway.request_timeout_ms);
    if (ex->att) {
        attempt_free(ex->att);
        ex->att = NULL;
    }
    ex_fail(ex, &err);
}

static void client_write(struct exchange *ex, struct buf *out)
{
    if (out->len == 0)
        return;
    if (!ex->client_started) {
        ex->client_started = true;
        add_gateway_headers(ex, ex->att ? ex->att->dep : NULL, false);
        http_stream_start(ex->req, 200, "text/event-stream");
    }
    http_stream_write(ex->req, out->data, out->len);
}

void attempt_delta(struct attempt *a, const struct chat_delta *d)
{
    struct exchange *ex = a->ex;
    if (ex->done)
        return;
    if (d->kind == DELTA_USAGE) {
        ex->usage = d->usage;
        return;
    }
    if ((d->kind == DELTA_TEXT || d->kind == DELTA_TOOL_START) && !ex->t_first_token_us)
        ex->t_first_token_us = time_mono_us();
    a->any_output = true;
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    front_of(ex)->stream_delta(ex, d, &out);
    client_write(ex, &out);
    buf_free(&out);
}

static void complete_stream(struct exchange *ex)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    /* In passthrough the upstream's own terminal events were forwarded already. */
    if (!ex->att || !ex->att->passthrough)
        front_of(ex)->stream_end(ex, NULL, &out);
    client_write(ex, &out);
    buf_free(&out);
    settle(ex, 200);
    ex_stream_end(ex);
    ex_finish(ex);
}

void attempt_stream_end(struct attempt *a)
{
    struct exchange *ex = a->ex;
    if (ex->done)
        return;
    if (a->t_start_us)
        ex->t_upstream_us += time_mono_us() - a->t_start_us;
    a->t_start_us = 0;
    if (a->usage.known && !ex->usage.known)
        ex->usage = a->usage;
    complete_stream(ex);
}

/* A complete canonical response (or, in passthrough, the raw upstream body in a->resp). */
static void respond_complete(struct exchange *ex, struct attempt *a, cJSON *resp)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    struct gw_error err;
    if (resp) {
        /* ids and model the client sees come from the gateway when translating */
        if (front_of(ex)->write_response(ex, resp, &out, &err) != 0) {
            cJSON_Delete(resp);
            buf_free(&out);
            ex_fail(ex, &err);
            return;
        }
        cJSON_Delete(resp);
    } else {
        buf_append(&out, a->resp.data, a->resp.len);
    }
    ex->usage = a->usage;
    settle(ex, 200);
    add_gateway_headers(ex, a->dep, true);
    ex_respond(ex, 200, "application/json", out.data, out.len);
    buf_free(&out);
    ex_finish(ex);
}

void attempt_complete(struct attempt *a, cJSON *resp)
{
    struct exchange *ex = a->ex;
    if (ex->done) {
        cJSON_Delete(resp);
        return;
    }
    if (a->t_start_us)
        ex->t_upstream_us += time_mono_us() - a->t_start_us;
    a->t_start_us = 0;
    respond_complete(ex, a, resp);
}

void attempt_scrub_error(const struct attempt *a, struct gw_error *err)
{
    const struct redact_set *rs = a && a->ex && a->ex->reg ? a->ex->reg->secrets : NULL;
    redact_upstream_error(rs, a && a->dep ? a->dep->label : NULL, err);
}

static bool can_retry(struct exchange *ex, const struct gw_error *err)
{
    return err->retryable && !ex->client_started && ex->iplan < ex->nplan;
}

void attempt_fail(struct attempt *a, const struct gw_error *err_in)
{
    struct gw_error scrubbed = *err_in; /* upstream text reaches neither client nor log with a key in it */
    attempt_scrub_error(a, &scrubbed);
    const struct gw_error *err = &scrubbed;
    struct exchange *ex = a->ex;
    if (ex->done)
        return;
    if (a->t_start_us)
        ex->t_upstream_us += time_mono_us() - a->t_start_us;
    a->t_start_us = 0;
    metrics_inc(&m_attempts, (const char *[]){a->dep->label, "error"});
    ex->last_err = *err;
    ex->have_err = true;
    if (can_retry(ex, err)) {
        log_info("request %s: %s failed (%d %s); trying the next deployment", ex->req->request_id, a->dep->label,
                 err->status, err->message);
        attempt_free(ex->att);
        ex->att = NULL;
        ex_next_attempt(ex);
        return;
    }
    ex_fail(ex, err);
}

/* ---------- upstream callbacks ---------- */

static int on_stream_event(struct attempt *a, const struct stream_event *ev)
{
    struct exchange *ex = a->ex;
    struct gw_error err;
    int rc = a->prov->decode_stream_event(a, ev, &err);
    if (rc < 0) {
        a->stream_done = false;
        a->err = err;
        a->has_err = true;
        return -1;
    }
    if (rc == EV_FORWARD) {
        if (!ex->t_first_token_us)
            ex->t_first_token_us = time_mono_us();
        a->any_output = true;
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        front_of(ex)->forward_event(ex, ev, &out);
        client_write(ex, &out);
        buf_free(&out);
    }
    return 0;
}

static int on_sse(const struct sse_event *e, void *ud)
{
    struct attempt *a = ud;
    struct stream_event ev = {e->event, e->data, false};
    return on_stream_event(a, &ev) != 0 ? -1 : 0;
}

static int on_es_message(const struct es_message *m, void *ud)
{
    struct attempt *a = ud;
    struct stream_event ev = {m->event_type, m->payload, m->is_exception};
    return on_stream_event(a, &ev) != 0 ? -1 : 0;
}

static void on_up_headers(struct up_xfer *x, void *ud)
{
    struct attempt *a = ud;
    a->status = x->status;
    a->t_headers_us = x->t_headers_us;
    up_xfer_header(x, "x-request-id", a->upstream_request_id, sizeof(a->upstream_request_id));
    if (a->upstream_request_id[0] == '\0')
        up_xfer_header(x, "request-id", a->upstream_request_id, sizeof(a->upstream_request_id));
    if (a->upstream_request_id[0] == '\0')
        up_xfer_header(x, "x-amzn-requestid", a->upstream_request_id, sizeof(a->upstream_request_id));
    if (a->status >= 400)
        up_xfer_header(x, "x-amzn-errortype", a->upstream_error_type, sizeof(a->upstream_error_type));
    if (a->status >= 200 && a->status < 300 && a->stream) {
        size_t max = (size_t)a->ex->req->cfg->gateway.max_event_bytes;
        if (a->prov->framing == FRAMING_AWS_EVENTSTREAM) {
            struct es_parser *p = xcalloc(1, sizeof(*p));
            es_parser_init(p, max, on_es_message, a);
            a->framing_state = p;
        } else {
            struct sse_parser *p = xcalloc(1, sizeof(*p));
            sse_parser_init(p, max, on_sse, a);
            a->framing_state = p;
        }
    }
}

static void on_client_drain(struct http_req *req, void *ud)
{
    (void)req;
    struct exchange *ex = ud;
    if (ex->att && ex->att->xfer)
        upstream_resume(ex->att->xfer);
}

static int on_up_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    (void)x;
    struct attempt *a = ud;
    struct exchange *ex = a->ex;
    if (a->framing_state == NULL) {
        /* a complete response, or an error body: buffered, bounded */
        if (buf_append(&a->resp, data, len) != 0) {
            gw_error_set(&a->err, 502, GW_ERR_API, "upstream response larger than gateway.max_response_bytes");
            a->has_err = true;
            return UP_DATA_ABORT;
        }
        return UP_DATA_OK;
    }
    /* A slow client holds the upstream back instead of growing our buffers. */
    if (http_req_pending_bytes(ex->req) > HTTP_WRITE_HIGH_WATER) {
        ex->req->on_drain = on_client_drain;
        ex->req->drain_ud = ex;
        return UP_DATA_PAUSE;
    }
    int rc;
    if (a->prov->framing == FRAMING_AWS_EVENTSTREAM)
        rc = es_feed(a->framing_state, data, len);
    else
        rc = sse_feed(a->framing_state, data, len);
    if (rc != 0) {
        if (!a->has_err) { /* a decode error already said more */
            gw_error_set(&a->err, 502, GW_ERR_API, "upstream stream framing is invalid or an event is too large");
            a->has_err = true;
        }
        return UP_DATA_ABORT;
    }
    return UP_DATA_OK;
}

static void on_up_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct attempt *a = ud;
    struct exchange *ex = a->ex;
    a->xfer = NULL; /* reaped after this callback */
    a->t_done_us = x->t_done_us;
    ex->t_upstream_us += x->t_done_us - x->t_start_us;
    a->t_start_us = 0;
    struct gw_error err;
    if (a->status >= 400) {
        /* The provider said no: map its error, keep its status and retry hints. */
        a->prov->map_error(a, a->status, a->resp.data ? a->resp.data : "", a->resp.len, &err);
        long ra = up_xfer_retry_after_ms(x);
        if (ra >= 0)
            err.retry_after_ms = ra;
        attempt_fail(a, &err);
        return;
    }
    if (r != UP_OK) {
        if (a->has_err) {
            err = a->err; /* our own abort: a response too large, a decode error, a mid-stream error event */
        } else {
            bool timeout = up_result_is_timeout(r);
            gw_error_set(&err, timeout ? 504 : 502, timeout ? GW_ERR_TIMEOUT : GW_ERR_API, "upstream %s: %s",
                         a->dep->label, up_xfer_error(x));
            err.retryable = true;
        }
        err.retryable = err.retryable || (!a->any_output && err.status >= 500);
        attempt_fail(a, &err);
        return;
    }
    if (a->stream) {
        if (a->framing_state && a->prov->framing == FRAMING_SSE)
            sse_finish(a->framing_state);
        if (!a->stream_done) {
            gw_error_set(&err, 502, GW_ERR_API, "upstream %s ended the stream before its final event", a->dep->label);
            err.retryable = true;
            ex->incomplete = true;
            attempt_fail(a, &err);
            return;
        }
        metrics_inc(&m_attempts, (const char *[]){a->dep->label, "ok"});
        if (a->usage.known)
            ex->usage = a->usage;
        complete_stream(ex);
        return;
    }
    cJSON *resp = NULL;
    if (a->prov->decode_response(a, a->resp.data ? a->resp.data : "", a->resp.len, &resp, &err) != 0) {
        attempt_fail(a, &err);
        return;
    }
    metrics_inc(&m_attempts, (const char *[]){a->dep->label, "ok"});
    respond_complete(ex, a, resp);
}

/* ---------- attempts ---------- */

static void attempt_free(struct attempt *a)
{
    if (a->xfer) {
        upstream_cancel(a->xfer);
        a->xfer = NULL;
    }
    if (a->framing_state) {
        if (a->prov->framing == FRAMING_AWS_EVENTSTREAM)
            es_parser_free(a->framing_state);
        else
            sse_parser_free(a->framing_state);
        xfree(a->framing_state);
    }
    if (a->prov->free_state)
        a->prov->free_state(a);
    buf_free(&a->resp);
    xfree(a);
}

static void ex_next_attempt(struct exchange *ex)
{
    struct gw_error err;
    while (ex->iplan < ex->nplan) {
        const struct deployment *dep = ex->plan[ex->iplan++];
        struct attempt *a = xcalloc(1, sizeof(*a));
        a->ex = ex;
        a->dep = dep;
        a->prov = dep->prov;
        a->op = ex->front == FRONT_OPENAI_EMBEDDINGS ? OP_EMBEDDINGS : OP_CHAT;
        a->stream = ex->stream;
        const struct front_ops *f = front_of(ex);
        a->passthrough = f->wire != WIRE_NONE && f->wire == a->prov->wire;
        buf_init(&a->resp, (size_t)ex->req->cfg->gateway.max_response_bytes);
        a->t_start_us = time_mono_us();
        ex->att = a;
        ex->attempts++;
        if (a->prov->run_local) {
            if (a->prov->run_local(a) == 0)
                return;
            return; /* run_local reported through attempt_fail */
        }
        struct up_request r;
        up_request_init(&r);
        int64_t tmo = dep->timeout_ms ? dep->timeout_ms : 0;
        r.connect_timeout_ms = (long)ex->req->cfg->gateway.connect_timeout_ms;
        r.first_byte_timeout_ms = (long)ex->req->cfg->gateway.first_byte_timeout_ms;
        r.timeout_ms = (long)tmo;
        if (a->prov->encode_request(a, &r, &err) != 0) {
            up_request_free(&r);
            /* A request this provider cannot express: try another deployment, else tell the client. */
            ex->last_err = err;
            ex->have_err = true;
            attempt_free(a);
            ex->att = NULL;
            if (ex->iplan < ex->nplan && err.status >= 500)
                continue;
            ex_fail(ex, &err);
            return;
        }
        static const struct up_callbacks cbs = {on_up_headers, on_up_data, on_up_done};
        a->xfer = upstream_start(ex->gw->up, &r, &cbs, a);
        up_request_free(&r);
        if (a->xfer == NULL) {
            const char *why = upstream_last_error(ex->gw->up);
            gw_error_set(&err, 500, GW_ERR_API, "%s", why ? why : "could not start the upstream request");
            attempt_free(a);
            ex->att = NULL;
            ex_fail(ex, &err);
        }
        return;
    }
    if (ex->have_err) {
        ex_fail(ex, &ex->last_err);
        return;
    }
    gw_error_set(&err, 503, GW_ERR_OVERLOADED, "no deployment of model %s is available", ex->model_name);
    ex_fail(ex, &err);
}

/* Weighted order: the first deployment is drawn by weight, the rest follow by weight as fallbacks. */
static void plan(struct exchange *ex)
{
    const struct model_entry *m = ex->model;
    int n = 0;
    const struct deployment *cand[EX_MAX_PLAN];
    int64_t weights[EX_MAX_PLAN];
    int64_t total = 0;
    for (size_t i = 0; i < m->ndeps && n < EX_MAX_PLAN; i++) {
        if (m->deps[i].missing_key)
            continue;
        cand[n] = &m->deps[i];
        weights[n] = m->deps[i].weight;
        total += weights[n];
        n++;
    }
    while (n > 0) {
        int pick = 0;
        if (total > 0) {
            int64_t r = (int64_t)(rng_next(ex->gw) % (uint64_t)total);
            for (pick = 0; pick < n - 1; pick++) {
                if (r < weights[pick])
                    break;
                r -= weights[pick];
            }
        }
        ex->plan[ex->nplan++] = cand[pick];
        total -= weights[pick];
        cand[pick] = cand[n - 1];
        weights[pick] = weights[n - 1];
        n--;
    }
}

static void ex_start(struct http_req *req, enum front front)
{
    struct exchange *ex = xcalloc(1, sizeof(*ex));
    ex->req = req;
    ex->front = front;
    ex->gw = worker_gateway(req);
    ex->reg = registry_of(req->cfg);
    ex->t_start_us = req->t_start_us;
    ex->body = str_make(req->body.data ? req->body.data : "", req->body.len);
    ex->max_tokens = -1;
    ex->created = (int64_t)time(NULL);
    if (front == FRONT_ANTHROPIC_MESSAGES)
        snprintf(ex->id, sizeof(ex->id), "msg_%s", req->request_id);
    else
        snprintf(ex->id, sizeof(ex->id), "chatcmpl-%s", req->request_id);
    uv_timer_init(ex->gw->loop, &ex->deadline);
    ex->deadline.data = ex;
    req->on_abort = on_client_abort;
    req->abort_ud = ex;
    struct gw_error err;
    const struct front_ops *f = front_of(ex);

    /* parse */
    if (f->parse(ex, &err) != 0) {
        ex_fail(ex, &err);
        return;
    }
    /* route */
    ex->model = registry_find(ex->reg, str_from(ex->model_name));
    if (ex->model == NULL || ex->model->embeddings != (front == FRONT_OPENAI_EMBEDDINGS)) {
        if (ex->model == NULL)
            gw_error_set(&err, 404, GW_ERR_NOT_FOUND,
                         "The model `%s` does not exist or you do not have access to it. GET /v1/models lists the "
                         "models served here.",
                         ex->model_name);
        else
            gw_error_set(&err, 400, GW_ERR_INVALID_REQUEST, "model `%s` is %s model", ex->model_name,
                         ex->model->embeddings ? "an embeddings" : "a chat");
        snprintf(err.code, sizeof(err.code), "model_not_found");
        snprintf(err.param, sizeof(err.param), "model");
        ex->model = NULL;
        ex_fail(ex, &err);
        return;
    }
    /* admit: a bounded number of LLM calls in flight per process (MAX_CONCURRENT_REQUESTS) */
    long limit = (long)req->cfg->gateway.max_concurrent_requests;
    long now_inflight = atomic_fetch_add(&gw_inflight, 1) + 1;
    ex->admitted = true;
    metrics_add(&m_inflight, NULL, 1);
    if (limit > 0 && now_inflight > limit) {
        gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                     "too many concurrent requests (limit %ld, MAX_CONCURRENT_REQUESTS); retry shortly", limit);
        err.retry_after_ms = 1000;
        ex_fail(ex, &err);
        return;
    }
    /* plan */
    plan(ex);
    if (ex->nplan == 0) {
        const struct deployment *d = &ex->model->deps[0];
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "model %s has no usable deployment: credentials for %s are not configured (%s)", ex->model_name,
                     d->label, d->api_key_env ? d->api_key_env : "api_key");
        ex_fail(ex, &err);
        return;
    }
    uv_timer_start(&ex->deadline, on_deadline, (uint64_t)req->cfg->gateway.request_timeout_ms, 0);
    ex_next_attempt(ex);
}

void gw_handle_chat_completions(struct http_req *req)
{
    ex_start(req, FRONT_OPENAI_CHAT);
}

void gw_handle_messages(struct http_req *req)
{
    ex_start(req, FRONT_ANTHROPIC_MESSAGES);
}

void gw_handle_embeddings(struct http_req *req)
{
    ex_start(req, FRONT_OPENAI_EMBEDDINGS);
}

void gw_handle_models(struct http_req *req)
{
    const struct registry *r = registry_of(req->cfg);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    bool anthropic = http_req_header(req, "anthropic-version") != NULL;
    int64_t created = (int64_t)time(NULL);
    if (anthropic)
        buf_append_str(&b, "{\"data\":[");
    else
        buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    size_t shown = 0;
    for (size_t i = 0; r && i < r->nmodels; i++) {
        const struct model_entry *m = &r->models[i];
        if (shown++)
            buf_append_char(&b, ',');
        if (anthropic) {
            buf_append_str(&b, "{\"type\":\"model\",\"id\":");
            buf_append_json_cstr(&b, m->name);
            buf_append_str(&b, ",\"display_name\":");
            buf_append_json_cstr(&b, m->name);
            buf_append_str(&b, ",\"created_at\":\"1970-01-01T00:00:00Z\"}");
        } else {
            buf_append_str(&b, "{\"id\":");
            buf_append_json_cstr(&b, m->name);
            buf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":", (long long)created);
            buf_append_json_cstr(&b, m->ndeps ? config_provider_names[m->deps[0].provider] : "agentd");
            buf_append_str(&b, "}");
        }
    }
    if (anthropic) {
        buf_append_str(&b, "],\"has_more\":false,\"first_id\":");
        if (r && r->nmodels)
            buf_append_json_cstr(&b, r->models[0].name);
        else
            buf_append_str(&b, "null");
        buf_append_str(&b, ",\"last_id\":");
        if (r && r->nmodels)
            buf_append_json_cstr(&b, r->models[r->nmodels - 1].name);
        else
            buf_append_str(&b, "null");
        buf_append_str(&b, "}");
    } else {
        buf_append_str(&b, "]}");
    }
    http_respond(req, 200, "application/json", b.data, b.len);
    buf_free(&b);
}
