/* observer_spans.c: the OpenTelemetry spans observer (gateway/exchange.h): trace context in (the client's
 * traceparent / tracestate, else a new trace) and out (a traceparent on every upstream request, naming the
 * attempt's span), a SERVER span per gateway request and a CLIENT span `chat {model}` / `embeddings {model}`
 * per attempt with the GenAI attributes (genai_names.h). Retries and fallbacks are sibling attempt spans. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/jscan.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "net/upstream_types.h"
#include "telemetry/genai_names.h"
#include "telemetry/otlp.h"


static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Copies src into dst, cut to fit (span names and status messages are bounded). */
static void copy_cut(char *dst, size_t cap, const char *a, const char *b)
{
    size_t n = 0;
    for (const char *p = a; p && *p && n + 1 < cap; p++)
        dst[n++] = *p;
    if (b && n + 1 < cap)
        dst[n++] = ' ';
    for (const char *p = b; p && *p && n + 1 < cap; p++)
        dst[n++] = *p;
    dst[n] = '\0';
}

static const char *const routes[] = {"/v1/chat/completions", "/v1/messages", "/v1/embeddings"};

static bool workflow_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == ':' || c == '/';
}

static void spans_start(struct exchange *ex)
{
    struct ex_trace *t = &ex->trace;
    const struct str *wf = ex->rq.header ? ex->rq.header(ex->rq.hctx, "x-agentd-workflow") : NULL;
    if (wf && wf->n > 0 && wf->n < sizeof(t->workflow)) {
        bool ok = true;
        for (size_t i = 0; i < wf->n; i++)
            ok = ok && workflow_char(wf->p[i]);
        if (ok) {
            memcpy(t->workflow, wf->p, wf->n);
            t->workflow[wf->n] = '\0';
        }
    }
    if (!otel_trace_context_on())
        return;
    struct trace_parent tp;
    const struct str *h = ex->rq.header ? ex->rq.header(ex->rq.hctx, "traceparent") : NULL;
    bool remote = h && trace_parse_traceparent(h->p, h->n, &tp) == 0;
    if (remote) {
        memcpy(t->trace_id, tp.trace_id, 16);
        memcpy(t->parent_span_id, tp.span_id, 8);
        t->remote_parent = true;
        const struct str *ts = ex->rq.header(ex->rq.hctx, "tracestate");
        if (ts && trace_tracestate_valid(ts->p, ts->n)) {
            memcpy(t->tracestate, ts->p, ts->n);
            t->tracestate[ts->n] = '\0';
        }
    } else {
        trace_new_trace_id(t->trace_id);
    }
    trace_new_span_id(t->server_span_id);
    t->sampled = otel_sample(t->trace_id, remote ? &tp : NULL);
    trace_format_traceparent(t->traceparent, t->trace_id, t->server_span_id, t->sampled ? 1 : 0);
    /* The clocks are read only for a span that will be recorded: a clock read costs ~200 ns on a VM's clock
     * source, and without an exporter these two were most of this observer's cost (issue 16 item 8). */
    if (t->sampled && otel_traces_on()) {
        uint64_t now_mono = time_mono_us(), now = wall_ns();
        uint64_t ago = now_mono > ex->t_start_us ? (now_mono - ex->t_start_us) * 1000 : 0;
        t->start_ns = now > ago ? now - ago : now;
    }
    t->active = true;
}

static void spans_attempt_start(struct exchange *ex, struct attempt *a, struct up_request *r)
{
    (void)a;
    struct ex_trace *t = &ex->trace;
    if (!t->active)
        return;
    trace_new_span_id(t->attempt_span_id);
    bool record = t->sampled && otel_traces_on();
    t->attempt_start_ns = record ? wall_ns() : 0;
    if (r == NULL)
        return;
    char attempt_tp[TRACEPARENT_LEN + 1];
    /* the upstream's parent is the attempt span when it is recorded, else the server span (still one trace) */
    const char *tp = t->traceparent;
    if (record) {
        trace_format_traceparent(attempt_tp, t->trace_id, t->attempt_span_id, 1);
        tp = attempt_tp;
    }
    /* one allocation for this and the provider's header lines that follow (a 64-byte start doubled three times) */
    buf_reserve(&r->headers, 512);
    buf_append(&r->headers, "traceparent: ", 13);
    buf_append(&r->headers, tp, TRACEPARENT_LEN);
    buf_append_char(&r->headers, '\n');
    if (t->tracestate[0])
        buf_printf(&r->headers, "tracestate: %s\n", t->tracestate);
    /* W3C baggage travels with the trace: the client's header, forwarded as is when it is within the
     * specification's 8192 bytes and holds only visible ASCII and spaces (it becomes a header line here). */
    const struct str *bg = ex->rq.header ? ex->rq.header(ex->rq.hctx, "baggage") : NULL;
    if (bg && bg->n > 0 && bg->n <= 8192) {
        bool ok = true;
        for (size_t i = 0; i < bg->n && ok; i++)
            ok = (unsigned char)bg->p[i] >= 0x20 && (unsigned char)bg->p[i] < 0x7f;
        if (ok)
            buf_printf(&r->headers, "baggage: %.*s\n", (int)bg->n, bg->p);
    }
}

static const char *provider_name(const struct deployment *dep)
{
    const char *n = dep->prov->name;
    if (strcmp(n, "azure-openai") == 0)
        return "azure.ai.openai";
    if (strcmp(n, "bedrock") == 0)
        return "aws.bedrock";
    if (strcmp(n, "gemini") == 0)
        return "gcp.gemini";
    if (strcmp(n, "vertex-ai") == 0)
        return "gcp.vertex_ai";
    return n; /* openai, anthropic, and agentd's own (openai-compatible, mock) */
}

static void server_attrs(struct otel_span *s, const char *base_url)
{
    if (!base_url)
        return;
    const char *p = strstr(base_url, "://");
    if (!p)
        return;
    p += 3;
    size_t n = strcspn(p, "/");
    const char *colon = memchr(p, ':', n);
    bool https = strncmp(base_url, "https", 5) == 0;
    if (*p == '[') /* IPv6 literal: no port split here */
        colon = NULL;
    otel_span_str(s, genai_attr->server_address, p, colon ? (size_t)(colon - p) : n);
    long port = colon ? strtol(colon + 1, NULL, 10) : (https ? 443 : 80);
    otel_span_int(s, genai_attr->server_port, port);
}

struct fr_ctx {
    const char *v[8];
    char store[8][32];
    size_t n;
};

static int finish_reason_each(struct str key, const struct jval *choice, void *ud)
{
    (void)key;
    struct fr_ctx *c = ud;
    struct jval fr;
    if (c->n < 8 && choice->type == J_OBJECT &&
        jscan_get(choice->raw.p, choice->raw.n, "finish_reason", &fr) == 0 && fr.type == J_STRING &&
        fr.raw.n >= 2 && fr.raw.n - 2 < sizeof(c->store[0])) {
        memcpy(c->store[c->n], fr.raw.p + 1, fr.raw.n - 2);
        c->store[c->n][fr.raw.n - 2] = '\0';
        c->v[c->n] = c->store[c->n];
        c->n++;
    }
    return 0;
}

/* Finish reasons of a buffered (non-streamed) response in OpenAI's or Anthropic's shape. */
static void finish_reasons(struct otel_span *s, const struct attempt *a)
{
    if (a->stream || a->resp.len == 0 || a->status != 200)
        return;
    struct fr_ctx c = {.n = 0};
    struct jval v;
    if (jscan_get(a->resp.data, a->resp.len, "choices", &v) == 0 && v.type == J_ARRAY)
        jscan_each(&v, finish_reason_each, &c);
    else if (jscan_get(a->resp.data, a->resp.len, "stop_reason", &v) == 0 && v.type == J_STRING &&
             v.raw.n >= 2 && v.raw.n - 2 < sizeof(c.store[0])) {
        memcpy(c.store[0], v.raw.p + 1, v.raw.n - 2);
        c.store[0][v.raw.n - 2] = '\0';
        c.v[0] = c.store[0];
        c.n = 1;
    }
    if (c.n)
        otel_span_strarr(s, genai_attr->response_finish_reasons, c.v, c.n);
}

static void request_params(struct otel_span *s, const struct exchange *ex)
{
    static const char *const keys[] = {"temperature", "top_p"};
    struct jval v[2];
    if (jscan_fields(ex->rq.body.p, ex->rq.body.n, keys, v, 2, NULL, NULL) != 0)
        return;
    double d;
    if (v[0].type == J_NUMBER && jval_double(&v[0], &d) == 0)
        otel_span_double(s, genai_attr->request_temperature, d);
    if (v[1].type == J_NUMBER && jval_double(&v[1], &d) == 0)
        otel_span_double(s, genai_attr->request_top_p, d);
}

static void common_ids(struct otel_span *s, const struct exchange *ex)
{
    memcpy(s->trace_id, ex->trace.trace_id, 16);
    s->trace_flags = 1;
    s->remote_parent = false;
}

static void spans_attempt_end(const struct exchange *ex, const struct attempt *a, const struct attempt_outcome *o)
{
    const struct ex_trace *t = &ex->trace;
    if (!t->active || !t->sampled || !otel_traces_on())
        return;
    struct otel_span *s = otel_span_new();
    common_ids(s, ex);
    memcpy(s->span_id, t->attempt_span_id, 8);
    memcpy(s->parent_id, t->server_span_id, 8);
    s->has_parent = true;
    s->kind = OTEL_SPAN_CLIENT;
    s->end_ns = wall_ns();
    /* 0: tracing was turned on while the attempt ran; its start from the monotonic clock */
    uint64_t now = time_mono_us();
    s->start_ns = t->attempt_start_ns                             ? t->attempt_start_ns
                  : a->t_attempt_us && a->t_attempt_us <= now ? s->end_ns - (now - a->t_attempt_us) * 1000
                                                                : s->end_ns;
    const struct deployment *dep = a->dep;
    const char *op = ex->front == FRONT_OPENAI_EMBEDDINGS ? "embeddings" : "chat";
    const char *model = dep->model && *dep->model ? dep->model : ex->rq.model_name;
    copy_cut(s->name, sizeof(s->name), op, model);
    const struct genai_names *N = genai_attr;
    otel_span_cstr(s, N->operation_name, op);
    otel_span_cstr(s, N->provider_name, provider_name(dep));
    otel_span_cstr(s, N->request_model, model);
    if (ex->rq.max_tokens >= 0)
        otel_span_int(s, N->request_max_tokens, ex->rq.max_tokens);
    request_params(s, ex);
    if (ex->rq.stream)
        otel_span_bool(s, N->request_stream, true);
    if (a->response_model[0])
        otel_span_cstr(s, N->response_model, a->response_model);
    if (o->result == AO_OK) {
        otel_span_cstr(s, N->response_id, ex->id);
        finish_reasons(s, a);
    }
    if (a->usage.known) {
        otel_span_int(s, N->usage_input_tokens, a->usage.input);
        if (ex->front != FRONT_OPENAI_EMBEDDINGS)
            otel_span_int(s, N->usage_output_tokens, a->usage.output);
        if (a->usage.cached_input)
            otel_span_int(s, N->usage_cache_read_input_tokens, a->usage.cached_input);
        if (a->usage.cache_write)
            otel_span_int(s, N->usage_cache_creation_input_tokens, a->usage.cache_write);
        if (a->usage.reasoning)
            otel_span_int(s, N->usage_reasoning_output_tokens, a->usage.reasoning);
    }
    server_attrs(s, dep->base_url);
    otel_span_cstr(s, N->deployment, dep->label);
    otel_span_int(s, N->attempt_number, ex->attempts);
    char st[24];
    const char *outcome = ex_attempt_result_name(o->result);
    if (o->result == AO_HTTP_STATUS) {
        snprintf(st, sizeof(st), "%d", o->status);
        outcome = st;
    }
    otel_span_cstr(s, N->attempt_outcome, ex_attempt_result_name(o->result));
    if (o->result != AO_OK) {
        otel_span_cstr(s, N->error_type, outcome);
        s->status = OTEL_STATUS_ERROR;
        if (o->err)
            copy_cut(s->status_msg, sizeof(s->status_msg), o->err->message, NULL);
    }
    if (t->workflow[0])
        otel_span_cstr(s, N->agent_workflow, t->workflow);
    if (otel_capture_content() && ex->rq.body.n)
        otel_span_str(s, N->input_messages, ex->rq.body.p, ex->rq.body.n);
    otel_span_submit(s);
}

static void spans_settle(const struct exchange *ex, const struct ex_outcome *o)
{
    const struct ex_trace *t = &ex->trace;
    if (!t->active || !t->sampled || !otel_traces_on())
        return;
    struct otel_span *s = otel_span_new();
    common_ids(s, ex);
    memcpy(s->span_id, t->server_span_id, 8);
    if (t->remote_parent) {
        memcpy(s->parent_id, t->parent_span_id, 8);
        s->has_parent = true;
        s->remote_parent = true;
    }
    s->kind = OTEL_SPAN_SERVER;
    s->start_ns = t->start_ns ? t->start_ns : wall_ns() - o->total_us * 1000; /* 0: tracing turned on meanwhile */
    s->end_ns = s->start_ns + o->total_us * 1000;
    const char *route = routes[ex->front];
    snprintf(s->name, sizeof(s->name), "POST %s", route);
    const struct genai_names *N = genai_attr;
    otel_span_cstr(s, N->http_method, "POST");
    otel_span_cstr(s, N->http_route, route);
    otel_span_int(s, N->http_status_code, o->status);
    otel_span_cstr(s, N->operation_name, ex->front == FRONT_OPENAI_EMBEDDINGS ? "embeddings" : "chat");
    if (ex->rq.model_name[0]) {
        otel_span_cstr(s, N->public_model, ex->rq.model_name);
        otel_span_cstr(s, N->request_model, ex->rq.model_name);
    }
    otel_span_cstr(s, N->request_id, ex->rq.request_id);
    otel_span_cstr(s, N->agent_type, "gateway");
    if (ex->route_rule) { /* routing (gateway/routing.c) and the response cache (gateway/cache.c) */
        otel_span_cstr(s, "agentd.route.rule", ex->route_rule);
        otel_span_cstr(s, "agentd.route.from", ex->routed_from);
    }
    if (ex->cache_result)
        otel_span_cstr(s, "agentd.cache", ex->cache_result);
    if (t->workflow[0])
        otel_span_cstr(s, N->agent_workflow, t->workflow);
    if (o->dep)
        otel_span_cstr(s, N->deployment, o->dep->label);
    if (ex->usage.known || ex->usage.input || ex->usage.output) {
        otel_span_int(s, N->usage_input_tokens, ex->usage.input);
        otel_span_int(s, N->usage_output_tokens, ex->usage.output);
    }
    if (ex->priced)
        otel_span_double(s, N->cost_usd, ex->cost_usd);
    if (ex->rq.user.n)
        otel_span_str(s, N->user_id, ex->rq.user.p, ex->rq.user.n);
    if (o->status >= 500 || (o->status >= 400 && o->status != 499)) {
        char st[16];
        snprintf(st, sizeof(st), "%d", o->status);
        otel_span_cstr(s, N->error_type, st);
        if (o->status >= 500) /* a SERVER span's status is an error for 5xx only (HTTP conventions) */
            s->status = OTEL_STATUS_ERROR;
        if (o->err && o->status >= 500)
            copy_cut(s->status_msg, sizeof(s->status_msg), o->err->message, NULL);
    }
    otel_span_submit(s);
}

const struct ex_observer observer_spans = {.name = "spans",
                                              .on_start = spans_start,
                                              .on_attempt_start = spans_attempt_start,
                                              .on_attempt_end = spans_attempt_end,
                                              .on_settle = spans_settle};
