/* front_responses.c: the OpenAI Responses API front door (POST /v1/responses) on the spine.
 *
 *   parse    responses_parse_head: model, stream, max_output_tokens (rq.max_tokens), store, previous_response_id
 *   front    (prepare) a fresh response id; the request tree; the stored conversation of previous_response_id,
 *            looked up in the store off the loop (EX_WAIT): an unknown id is a 404 before any upstream call
 *   attempt  OpenAI and Azure OpenAI deployments pass the body through to their own /responses
 *            (provider_openai_responses); every other provider gets the canonical chat request
 *            (responses_to_chat) and its answer comes back as a Response object or the typed event stream
 *   end      a translated response with store != false is kept (the response and the conversation so far), so
 *            GET /v1/responses/{id} and previous_response_id work across requests and restarts
 *
 * The front's per-request state (struct rctx) lives behind ex->fstate for every request, streamed or not. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "common/log.h"
#include "config/config.h"
#include "gateway/usage.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/front_responses.h"
#include "gateway/wire_openai.h"
#include "gateway/registry.h"
#include "gateway/responses.h"
#include "net/sse.h"
#include "store/store_config.h"

struct rctx {
    struct responses_head head;
    cJSON *history;            /* the stored conversation before this request, or NULL */
    bool prev_missing;         /* previous_response_id given and not in the store */
    struct buf dropped;        /* x-agentd-dropped-fields */
    struct responses_stream *rs; /* translated stream encoder */
    bool forwarded;            /* a pass-through stream: the upstream's events went to the client as they are */
    bool stored;
    bool dep_recorded;         /* a pass-through response's deployment was recorded (response_dep) */
};

static struct rctx *rctx_new(void)
{
    struct rctx *c = xcalloc(1, sizeof(*c));
    buf_init(&c->dropped, BUF_UNBOUNDED);
    return c;
}

static void *rs_new(void)
{
    return rctx_new();
}

static void rs_free(void *p)
{
    struct rctx *c = p;
    if (c == NULL)
        return;
    cJSON_Delete(c->history);
    responses_stream_free(c->rs);
    buf_free(&c->dropped);
    xfree(c);
}

static struct rctx *ctx_of(struct exchange *ex)
{
    if (ex->fstate == NULL)
        ex->fstate = rctx_new();
    return ex->fstate;
}

/* The exchange that holds rq: to_canonical is handed the request, which is always the exchange's own copy. */
static struct exchange *ex_of_rq(struct ex_request *rq)
{
    return (struct exchange *)((char *)rq - offsetof(struct exchange, rq));
}

/* ---------- parse ---------- */

static int r_parse(struct ex_request *rq, struct gw_error *err)
{
    struct responses_head h;
    if (responses_parse_head(rq->body.p, rq->body.n, &h, err) != 0)
        return -1;
    memcpy(rq->model_name, h.model, sizeof(rq->model_name));
    rq->stream = h.stream;
    rq->max_tokens = h.max_output_tokens;
    rq->client_include_usage = false;
    return 0;
}

/* ---------- prepare: response id, tree, stored conversation ---------- */

void front_responses_new_id(char *out, size_t size)
{
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < sizeof(rnd); i++, t = t * 6364136223846793005ULL + 1442695040888963407ULL)
            rnd[i] = (unsigned char)(t >> 56);
    }
    static const char hex[] = "0123456789abcdef";
    char h[33];
    for (size_t i = 0; i < sizeof(rnd); i++) {
        h[2 * i] = hex[rnd[i] >> 4];
        h[2 * i + 1] = hex[rnd[i] & 15];
    }
    h[32] = '\0';
    snprintf(out, size, "resp_%s", h);
}

/* Does any deployment of the model keep conversations itself (a pass-through deployment)? */
static bool model_has_passthrough(const struct exchange *ex)
{
    for (size_t i = 0; ex->model && i < ex->model->ndeps; i++)
        if (front_responses_provider(&ex->model->deps[i]) == &provider_openai_responses)
            return true;
    return false;
}

static void not_found(struct gw_error *err, const char *id)
{
    gw_error_set(err, 404, GW_ERR_NOT_FOUND, "Previous response with id '%.128s' not found.", id);
    snprintf(err->param, sizeof(err->param), "previous_response_id");
}

static void on_history(void *ud, int rc, const char *data, size_t len, const char *emsg)
{
    struct exchange *ex = ud;
    if (!ex->done) {
        struct rctx *c = ctx_of(ex);
        struct gw_error err;
        if (rc == STORE_OK) {
            cJSON *rec = cJSON_ParseWithLength(data, len);
            cJSON *h = rec ? cJSON_DetachItemFromObjectCaseSensitive(rec, "history") : NULL;
            cJSON_Delete(rec);
            if (cJSON_IsArray(h)) {
                c->history = h;
                ex_resume(ex);
            } else {
                cJSON_Delete(h);
                gw_error_set(&err, 500, GW_ERR_API, "the stored response %.128s is unreadable",
                             c->head.previous_response_id);
                ex_fail(ex, &err);
            }
        } else if (rc == STORE_NOT_FOUND) {
            c->prev_missing = true;
            if (model_has_passthrough(ex)) {
                ex_resume(ex); /* the provider may know it; translated attempts answer 404 (to_canonical) */
            } else {
                not_found(&err, c->head.previous_response_id);
                ex_fail(ex, &err);
            }
        } else {
            gw_error_set(&err, 503, GW_ERR_OVERLOADED, "the response store is unavailable: %s", emsg ? emsg : "");
            ex_fail(ex, &err);
        }
    }
    ex_unref(ex);
}

static int r_prepare(struct exchange *ex)
{
    struct rctx *c = ctx_of(ex);
    struct gw_error err;
    front_responses_new_id(ex->id, sizeof(ex->id));
    if (responses_parse_head(ex->rq.body.p, ex->rq.body.n, &c->head, &err) != 0) {
        ex_fail(ex, &err);
        return EX_END;
    }
    ex->rq.client_tree = cJSON_ParseWithLength(ex->rq.body.p, ex->rq.body.n);
    if (ex->rq.client_tree == NULL) {
        gw_error_set(&err, 400, GW_ERR_INVALID_REQUEST, "We could not parse the JSON body of your request.");
        ex_fail(ex, &err);
        return EX_END;
    }
    if (c->head.previous_response_id[0] == '\0')
        return EX_CONTINUE;
    struct store *st = store_shared(ex->rq.cfg);
    if (st == NULL) {
        c->prev_missing = true;
        if (model_has_passthrough(ex))
            return EX_CONTINUE;
        gw_error_set(&err, 400, GW_ERR_INVALID_REQUEST,
                     "previous_response_id needs the response store, which is disabled here (store.enabled)");
        snprintf(err.param, sizeof(err.param), "previous_response_id");
        ex_fail(ex, &err);
        return EX_END;
    }
    ex_ref(ex);
    if (store_get(st, ex_worker_loop(ex->gw), "response", c->head.previous_response_id, on_history, ex) != 0) {
        ex_unref(ex);
        c->prev_missing = true;
        not_found(&err, c->head.previous_response_id);
        ex_fail(ex, &err);
        return EX_END;
    }
    return EX_WAIT;
}

/* ---------- translation ---------- */

static cJSON *r_to_canonical(struct ex_request *rq, struct gw_error *err)
{
    struct exchange *ex = ex_of_rq(rq);
    struct rctx *c = ctx_of(ex);
    if (c->prev_missing) { /* the deployment that could have known it was not the one tried */
        not_found(err, c->head.previous_response_id);
        return NULL;
    }
    buf_reset(&c->dropped);
    return responses_to_chat(rq->client_tree, c->history, &c->dropped, err);
}

/* Usage out of a canonical chat.completion's usage object. */
static struct usage canon_usage(const cJSON *resp)
{
    struct usage u = {0};
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(resp, "usage");
    if (!cJSON_IsObject(o))
        return u;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(o, "completion_tokens");
    u.known = pt || ct;
    u.input = usage_read_json(&u, pt);
    u.output = usage_read_json(&u, ct);
    const cJSON *pd = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens_details");
    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(o, "completion_tokens_details");
    if (cJSON_IsObject(pd))
        u.cached_input = usage_read_json(&u, cJSON_GetObjectItemCaseSensitive(pd, "cached_tokens"));
    if (cJSON_IsObject(cd))
        u.reasoning = usage_read_json(&u, cJSON_GetObjectItemCaseSensitive(cd, "reasoning_tokens"));
    usage_check(&u, NULL);
    return u;
}

static void on_stored(void *ud, int rc, const char *emsg)
{
    (void)ud;
    if (rc != STORE_OK)
        log_warn("responses: a response was not stored: %s", emsg && emsg[0] ? emsg : "store error");
}

/* Keeps a translated response and the conversation up to it (store != false). */
static void keep(struct exchange *ex, const cJSON *resp)
{
    struct rctx *c = ctx_of(ex);
    if (!c->head.store || c->stored)
        return;
    struct store *st = store_shared(ex->rq.cfg);
    if (st == NULL)
        return;
    c->stored = true;
    cJSON *rec = cJSON_CreateObject();
    cJSON *hist = c->history ? cJSON_Duplicate(c->history, 1) : cJSON_CreateArray();
    cJSON *in = responses_input_items(ex->rq.client_tree);
    cJSON *it;
    while ((it = cJSON_DetachItemFromArray(in, 0)) != NULL)
        cJSON_AddItemToArray(hist, it);
    cJSON_Delete(in);
    responses_append_output(hist, resp);
    cJSON_AddItemToObject(rec, "response", cJSON_Duplicate(resp, 1));
    cJSON_AddItemToObject(rec, "history", hist);
    char *s = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp, "id"));
    if (s && id && store_put(st, ex_worker_loop(ex->gw), "response", id, s, strlen(s), 0, on_stored, NULL) != 0)
        log_warn("responses: response %s is too large to store", id);
    cJSON_free(s);
}

static int r_write_response(struct exchange *ex, const cJSON *resp, struct buf *out, struct gw_error *err)
{
    struct usage u = canon_usage(resp);
    cJSON *r = responses_from_chat(ex->rq.client_tree, resp, &u, ex->id, ex->created, ex->rq.model_name);
    char *s = cJSON_PrintUnformatted(r);
    if (s == NULL) {
        cJSON_Delete(r);
        gw_error_set(err, 500, GW_ERR_API, "could not serialise the response");
        return -1;
    }
    keep(ex, r);
    buf_append_str(out, s);
    cJSON_free(s);
    cJSON_Delete(r);
    return 0;
}

static struct responses_stream *encoder(struct exchange *ex)
{
    struct rctx *c = ctx_of(ex);
    if (c->rs == NULL)
        c->rs = responses_stream_start(ex->rq.client_tree, ex->id, ex->created, ex->rq.model_name);
    return c->rs;
}

static void r_stream_delta(struct exchange *ex, const struct chat_delta *d, struct buf *out)
{
    responses_stream_delta(encoder(ex), d, out);
}

static void r_stream_end(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    struct rctx *c = ctx_of(ex);
    if (c->forwarded) {
        /* pass-through: the upstream's own events went out; a failure gets the spec's error event */
        if (err) {
            buf_append_str(out, "event: error\ndata: {\"type\":\"error\",\"code\":");
            buf_append_json_cstr(out, err->code[0] ? err->code : "server_error");
            buf_append_str(out, ",\"message\":");
            buf_append_json_cstr(out, err->message);
            buf_append_str(out, ",\"param\":null}\n\n");
        }
        return;
    }
    struct responses_stream *rs = encoder(ex);
    responses_stream_end(rs, &ex->usage, err, out);
    /* the final Response is a tree built for the store only: not when nothing is kept */
    if (err == NULL && c->head.store && !c->stored && store_shared(ex->rq.cfg) != NULL)
        keep(ex, responses_stream_response(rs));
}

void front_responses_passthrough_id(struct exchange *ex, const struct deployment *dep, const char *body, size_t len)
{
    struct rctx *c = ctx_of(ex);
    if (!c->head.store || c->dep_recorded || dep == NULL)
        return;
    struct store *st = store_shared(ex->rq.cfg);
    if (st == NULL)
        return;
    struct jval v;
    struct buf id = BUF_INIT(RESPONSES_MAX_ID);
    if (jscan_get(body, len, "id", &v) != 0 || jval_str(&v, &id) != 0 || id.len == 0 ||
        memchr(id.data, '\0', id.len) != NULL) {
        buf_free(&id);
        return;
    }
    c->dep_recorded = true;
    struct buf rec = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&rec, "{\"model\":");
    buf_append_json_cstr(&rec, ex->rq.model_name);
    buf_append_str(&rec, ",\"dep\":");
    buf_append_json_cstr(&rec, dep->label);
    buf_append_str(&rec, "}");
    if (store_put(st, ex_worker_loop(ex->gw), "response_dep", id.data, rec.data, rec.len, 0, on_stored, NULL) != 0)
        log_warn("responses: the deployment of pass-through response %s was not recorded", id.data);
    buf_free(&rec);
    buf_free(&id);
}

static void r_forward_event(struct exchange *ex, const struct stream_event *ev, struct buf *out)
{
    ctx_of(ex)->forwarded = true;
    if (str_eq_cstr(ev->event, "response.created") && ex->att) {
        struct jval r;
        if (jscan_get(ev->data.p, ev->data.n, "response", &r) == 0 && r.type == J_OBJECT)
            front_responses_passthrough_id(ex, ex->att->dep, r.raw.p, r.raw.n);
    }
    if (ev->event.n && !str_eq_cstr(ev->event, "message")) {
        buf_append_str(out, "event: ");
        buf_append(out, ev->event.p, ev->event.n);
        buf_append_char(out, '\n');
    }
    sse_append_raw(out, ev->data.p, ev->data.n);
}

static void r_error_body(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    (void)ex;
    wire_openai_error_json(err, out);
}

static void r_headers(struct exchange *ex, struct buf *h)
{
    struct rctx *c = ex->fstate;
    if (c == NULL || c->dropped.len == 0) /* filled by translation only */
        return;
    buf_append_str(h, "x-agentd-dropped-fields: ");
    for (size_t i = 0; i < c->dropped.len; i++) { /* names come from the client's JSON: printable ASCII only */
        unsigned char ch = (unsigned char)c->dropped.data[i];
        buf_append_char(h, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
    }
    buf_append(h, "\r\n", 2);
}

/* OpenAI and Azure OpenAI speak the Responses API themselves: their deployments get the client's bytes, unless
 * the deployment says `api: chat`; an OpenAI-compatible server that has it too says `api: responses`. */
const struct provider_ops *front_responses_provider(const struct deployment *dep)
{
    bool openai_family = dep->provider == PROVIDER_OPENAI || dep->provider == PROVIDER_AZURE_OPENAI ||
                         dep->provider == PROVIDER_OPENAI_COMPATIBLE;
    if (dep->api == CONFIG_API_RESPONSES && openai_family)
        return &provider_openai_responses;
    if (dep->api == CONFIG_API_AUTO && (dep->provider == PROVIDER_OPENAI || dep->provider == PROVIDER_AZURE_OPENAI))
        return &provider_openai_responses;
    return dep->prov;
}

static const struct provider_ops *r_provider_for(const struct exchange *ex, const struct deployment *dep)
{
    (void)ex;
    return front_responses_provider(dep);
}

/* The stored conversation, when the client continued one the provider does not know (pass-through). */
const cJSON *front_responses_history(const struct exchange *ex)
{
    const struct rctx *c = ex->fstate;
    return c ? c->history : NULL;
}

const struct front_ops front_responses = {
    .name = "openai-responses",
    .wire = WIRE_OPENAI_RESPONSES,
    .parse = r_parse,
    .to_canonical = r_to_canonical,
    .stream_new = rs_new,
    .stream_free = rs_free,
    .write_response = r_write_response,
    .stream_delta = r_stream_delta,
    .stream_end = r_stream_end,
    .forward_event = r_forward_event,
    .error_body = r_error_body,
    .prepare = r_prepare,
    .headers = r_headers,
    .provider_for = r_provider_for,
};
