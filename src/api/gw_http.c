/* gw_http.c: the HTTP sink of the exchange (gateway/exchange.h) and the gateway's route handlers. A handler
 * fills an ex_request from the http_req and submits it with a sink that writes to the connection; the sink
 * reports the client going away (ex_cancel) and its write queue draining (ex_sink_drained). */
#include "api/gw_http.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/worker.h"
#include "common/alloc.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/gw_types.h"
#include "gateway/front_anthropic.h"
#include "common/str.h"
#include "gateway/registry.h"
#include "net/http.h"

struct http_sink {
    struct http_req *req;
    struct exchange *ex;
    gw_count_fn *count; /* a token count (gw_submit_counted), else NULL */
    int status;
    bool stream, responded;
};

static void sink_detach(struct http_sink *s)
{
    s->req->on_abort = NULL;
    s->req->on_drain = NULL;
}

static void on_client_abort(struct http_req *req, void *ud)
{
    (void)req;
    struct http_sink *s = ud;
    ex_cancel(s->ex); /* ends the exchange: the sink's end() runs (and frees it) inside */
}

static void on_client_drain(struct http_req *req, void *ud)
{
    (void)req;
    struct http_sink *s = ud;
    ex_sink_drained(s->ex);
}

static void sink_bind(void *sink, struct exchange *ex)
{
    struct http_sink *s = sink;
    s->ex = ex;
    s->req->on_abort = on_client_abort;
    s->req->abort_ud = s;
    s->req->on_drain = on_client_drain;
    s->req->drain_ud = s;
}

/* hdrs: "Name: value\r\n" lines, already checked for line breaks by the exchange. */
static void sink_head(void *sink, int status, const struct buf *hdrs, bool stream)
{
    struct http_sink *s = sink;
    s->status = status;
    s->stream = stream;
    if (s->ex && s->ex->trace.active) { /* the access line joins the exchange's trace (ops.c) */
        memcpy(s->req->trace_id, s->ex->trace.trace_id, sizeof(s->req->trace_id));
        memcpy(s->req->span_id, s->ex->trace.server_span_id, sizeof(s->req->span_id));
        s->req->has_trace = true;
    }
    if (hdrs->len)
        buf_append(&s->req->resp_headers, hdrs->data, hdrs->len);
    if (stream)
        http_stream_start(s->req, status, "text/event-stream");
}

static int sink_write(void *sink, const void *data, size_t len)
{
    struct http_sink *s = sink;
    if (s->stream)
        return http_stream_write(s->req, data, len);
    if (s->responded)
        return -1;
    /* a complete response is one write: it is the terminal call */
    sink_detach(s);
    s->responded = true;
    http_respond(s->req, s->status, "application/json", data, len);
    return 0;
}

static void sink_end(void *sink)
{
    struct http_sink *s = sink;
    if (!s->responded) {
        sink_detach(s);
        if (s->stream)
            http_stream_end(s->req);
        else
            http_respond(s->req, s->status, s->status == 499 ? NULL : "application/json", NULL, 0);
    }
    xfree(s);
}

static size_t sink_pending(void *sink)
{
    struct http_sink *s = sink;
    return http_req_pending_bytes(s->req);
}

static const struct ex_sink_ops http_sink_ops = {
    .head = sink_head,
    .write = sink_write,
    .end = sink_end,
    .pending = sink_pending,
    .bind = sink_bind,
};

static const struct str *req_header(const void *hctx, const char *name)
{
    return http_req_header(hctx, name);
}

static void submit_rq(struct http_req *req, const struct front_ops *front, struct ex_request *rq, gw_count_fn *count);

static void submit(struct http_req *req, const struct front_ops *front)
{
    struct ex_request rq = {0};
    submit_rq(req, front, &rq, NULL);
}

/* ---- token counts through the spine (ex_request.run) ----
 *
 * The count code (gw_count_tokens.c, responses_http.c, count_translated.c) answers through gw_count_answer /
 * gw_count_fail, which end the exchange when the request runs as one (req->ud is its exchange). While it waits
 * (a store look-up, an upstream call) its own abort hook sits on the request, chained to the sink's; an end it
 * did not ask for (a forced drain) fires that hook so nothing of it outlives the request. */

static void counted_run(struct exchange *ex, void *ud)
{
    struct http_sink *s = ud;
    s->req->ud = ex;
    s->count(s->req, ex->model);
}

/* The exchange ended while the count waited: fire the hook it put on the request (it drops its work, then chains
 * to the sink's, which finds the exchange ended). */
static void counted_cancel(void *ud)
{
    struct http_sink *s = ud;
    struct http_req *req = s->req;
    if (req->on_abort && req->on_abort != on_client_abort) {
        void (*fn)(struct http_req *, void *) = req->on_abort;
        void *aud = req->abort_ud;
        req->on_abort = NULL;
        fn(req, aud);
    }
    req->ud = NULL;
}

void gw_submit_counted(struct http_req *req, const struct front_ops *front, const char *model, gw_count_fn *count)
{
    struct ex_request rq = {0};
    snprintf(rq.model_name, sizeof(rq.model_name), "%s", model);
    rq.run = counted_run;
    rq.run_cancel = counted_cancel;
    submit_rq(req, front, &rq, count);
}

static struct exchange *counted_ex(struct http_req *req)
{
    return req->ud;
}

void gw_count_answer(struct http_req *req, int status, const char *body, size_t len, const struct deployment *dep)
{
    struct exchange *ex = counted_ex(req);
    if (ex) {
        req->ud = NULL;
        ex_reply_counted(ex, status, body, len, dep);
        return;
    }
    if (dep)
        http_resp_header(req, "x-agentd-deployment", dep->label);
    http_respond(req, status, "application/json", body, len);
}

bool gw_count_fail(struct http_req *req, const struct gw_error *e)
{
    struct exchange *ex = counted_ex(req);
    if (ex == NULL)
        return false;
    req->ud = NULL;
    ex_fail(ex, e);
    return true;
}

static void submit_rq(struct http_req *req, const struct front_ops *front, struct ex_request *rq, gw_count_fn *count)
{
    struct worker *w = worker_of_loop(http_server_loop(req->server));
    struct http_sink *s = xcalloc(1, sizeof(*s));
    s->req = req;
    s->count = count;
    if (count)
        rq->run_ud = s;
    rq->body = str_make(req->body.data ? req->body.data : "", req->body.len);
    rq->max_tokens = count ? 0 : -1;
    memcpy(rq->request_id, req->request_id, sizeof(rq->request_id));
    rq->cfg = req->cfg;
    rq->t_start_us = req->t_start_us;
    rq->header = req_header;
    rq->hctx = req;
    ex_submit(w->gateway, front, rq, &http_sink_ops, s);
}

void gw_handle_chat_completions(struct http_req *req)
{
    submit(req, &front_openai_chat);
}

void gw_handle_messages(struct http_req *req)
{
    submit(req, &front_anthropic);
}

void gw_handle_responses(struct http_req *req)
{
    submit(req, &front_responses);
}

void gw_handle_embeddings(struct http_req *req)
{
    submit(req, &front_openai_embeddings);
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
            buf_append_json_cstr(&b, m->ndeps ? provider_names[m->deps[0].provider] : "agentd");
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

void gw_respond_unauthorized(struct http_req *req)
{
    static const char msg[] =
        "Invalid or missing API key. Pass an agentd virtual key as `Authorization: Bearer <key>`, `x-api-key` or "
        "`api-key`.";
    if (!http_req_header(req, "anthropic-version")) {
        http_respond_error(req, 401, "authentication_error", "invalid_api_key", msg);
        return;
    }
    struct gw_error e = {.status = 401, .type = GW_ERR_AUTHENTICATION, .retry_after_ms = -1};
    str_lcpy(e.message, msg, sizeof(e.message));
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic_error_json(&b, &e, req->request_id);
    http_respond(req, 401, "application/json", b.data, b.len);
    buf_free(&b);
}
