#include "gateway/usage.h"
#include "gateway/providers/openai_family.h"

#include <stdio.h>
#include <string.h>

#include "common/jscan.h"
#include "gateway/exchange.h"
#include "gateway/wire_openai.h"
#include "gateway/registry.h"
#include "gateway/providers/canon.h"
#include "gateway/redact.h"

static void add_common_headers(struct attempt *a, struct up_request *r)
{
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", a->stream ? "text/event-stream" : "application/json");
    for (size_t i = 0; i < a->dep->nheaders; i++) {
        buf_append_str(&r->headers, a->dep->headers[i]);
        buf_append(&r->headers, "\n", 1);
    }
}

int openai_family_encode(struct attempt *a, struct up_request *r, struct gw_error *err, enum openai_flavor flavor)
{
    const struct deployment *d = a->dep;
    const char *path = a->op == OP_EMBEDDINGS ? "embeddings" : "chat/completions";
    r->method = "POST";
    if (flavor == FLAVOR_AZURE) {
        buf_printf(&r->url, "%s/openai/deployments/%s/%s?api-version=%s", d->base_url, d->model, path,
                   d->api_version ? d->api_version : "2024-10-21");
        if (azure_openai_auth(d, r, err) != 0)
            return -1;
    } else {
        buf_append_str(&r->url, d->base_url);
        buf_append(&r->url, "/", 1);
        buf_append_str(&r->url, path);
        if (d->api_key) {
            buf_append_str(&r->headers, "Authorization: Bearer ");
            buf_append_str(&r->headers, d->api_key);
            buf_append(&r->headers, "\n", 1);
        }
    }
    add_common_headers(a, r);
    struct str body = ex_attempt_client_body(a);
    /* Usage is forced on for every OpenAI-style stream: spend must never depend on the client remembering
     * stream_options. The extra usage chunk is dropped again for clients that did not ask for it. */
    bool force_usage = a->stream && a->op == OP_CHAT;
    if (a->passthrough) {
        /* the body the front's parse validated (not one replaced since) is not checked again */
        const struct str v = a->ex->rq.validated;
        bool valid = v.p != NULL && v.p == body.p && v.n == body.n;
        if ((valid ? wire_openai_splice_validated : wire_openai_splice_request)(body.p, body.n, d->model, force_usage,
                                                                               &r->body) != 0) {
            gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "request body is not a JSON object with a model");
            return -1;
        }
        return 0;
    }
    const cJSON *canon = ex_attempt_canonical(a, err);
    if (canon == NULL)
        return -1;
    if (cJSON_HasObjectItem(canon, "top_k")) /* canonical extension (Anthropic clients) OpenAI refuses */
        canon_dropped_add(a->ex->rq.dropped_fields, sizeof(a->ex->rq.dropped_fields), "top_k");
    if (cJSON_HasObjectItem(canon, CANON_CACHE_CONTROL)) /* no marker to send: OpenAI caches prefixes by itself */
        canon_dropped_add(a->ex->rq.dropped_fields, sizeof(a->ex->rq.dropped_fields), "cache_control");
    if (wire_openai_encode_canonical(canon, d->model, a->stream, &r->body) != 0) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    return 0;
}

int openai_family_extract_usage(const char *body, size_t len, struct usage *u)
{
    return wire_openai_extract_usage(body, len, u);
}

int openai_family_decode_response(struct attempt *a, const char *body, size_t len, cJSON **out,
                                  struct gw_error *err)
{
    *out = NULL;
    if (a->passthrough) {
        /* Relayed as received; one validating pass finds the usage, without building a tree. */
        size_t off;
        const char *msg;
        static const char *const keys[] = {"usage", "error"};
        struct jval f[2];
        if (jscan_fields(body, len, keys, f, 2, &off, &msg) != 0) {
            gw_error_set(err, 502, GW_ERR_API, "upstream %s returned invalid JSON (%s at byte %zu)", a->dep->label,
                         msg, off);
            err->from_upstream = true;
            err->retryable = true;
            return -1;
        }
        if (f[1].type == J_OBJECT) { /* a 200 whose body is an error: a failed attempt, not an answer */
            wire_openai_map_error(500, body, len, err);
            err->status = 502;
            err->retryable = true;
            return -1;
        }
        const struct jval usage = f[0];
        if (usage.type == J_OBJECT)
            wire_openai_usage_object(usage.raw.p, usage.raw.n, &a->usage);
        usage_check(&a->usage, a->dep ? a->dep->label : NULL);
        return 0;
    }
    if (a->op == OP_EMBEDDINGS) {
        cJSON *t = cJSON_ParseWithLength(body, len);
        if (t == NULL || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(t, "data"))) {
            cJSON_Delete(t);
            gw_error_set(err, 502, GW_ERR_API, "upstream %s returned a malformed embeddings response", a->dep->label);
            return -1;
        }
        wire_openai_extract_usage(body, len, &a->usage);
        usage_check(&a->usage, a->dep ? a->dep->label : NULL);
        *out = t;
        return 0;
    }
    cJSON *t = wire_openai_decode_completion(body, len, &a->usage, err);
    if (t == NULL) {
        err->retryable = true;
        return -1;
    }
    usage_check(&a->usage, a->dep ? a->dep->label : NULL);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(t, "model");
    if (cJSON_IsString(model))
        snprintf(a->response_model, sizeof(a->response_model), "%s", model->valuestring);
    *out = t;
    return 0;
}

int openai_family_decode_stream_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    if (!a->passthrough)
        return wire_openai_decode_chunk(a, ev, err);
    struct str data = str_trim(ev->data);
    if (str_eq_cstr(data, "[DONE]")) {
        a->stream_done = true;
        /* the front door writes its own [DONE] after a usage chunk it may add; forward this one as is */
        return EV_FORWARD;
    }
    /* Most events are content chunks that carry nothing agentd reads ("usage":null at most): one pass over the
     * structure bytes (jscan_event_scan) checks that they are whole, the relay's malformed-event check made here
     * so that it is not made twice, and says whether a usage or an error object may be in them. Only such an
     * event gets the validating pass that finds the three members that matter. A broken event goes the way it
     * went before this scan: the validating pass when it may carry one of them, else the relay's own check. */
    static const char *const wanted[] = {"usage", "error", NULL};
    unsigned hits;
    if (jscan_event_scan(ev->data.p, ev->data.n, wanted, &hits) == 0) {
        a->ev_checked = true;
        if (hits == 0)
            return EV_FORWARD;
    } else if (!jscan_may_have_object(data.p, data.n, wanted)) {
        return EV_FORWARD;
    }
    static const char *const keys[] = {"error", "usage", "choices"};
    enum { F_ERROR, F_USAGE, F_CHOICES, F_N };
    struct jval f[F_N];
    size_t off;
    const char *msg;
    if (jscan_fields(data.p, data.n, keys, f, F_N, &off, &msg) != 0) {
        gw_error_set(err, 502, GW_ERR_API, "upstream %s sent a malformed stream event (%s)", a->dep->label,
                     msg ? msg : "not a JSON object");
        err->from_upstream = true;
        return -1;
    }
    if (f[F_ERROR].type == J_OBJECT) {
        wire_openai_map_error(500, data.p, data.n, err);
        err->status = 502;
        return -1;
    }
    if (f[F_USAGE].type == J_OBJECT) {
        struct usage u;
        if (wire_openai_usage_object(f[F_USAGE].raw.p, f[F_USAGE].raw.n, &u) == 0) {
            usage_check(&u, a->dep ? a->dep->label : NULL);
            a->usage = u;
            bool no_choices = f[F_CHOICES].type == J_ARRAY &&
                              str_trim(str_make(f[F_CHOICES].raw.p + 1, f[F_CHOICES].raw.n - 2)).n == 0;
            if (no_choices && !ex_attempt_client_include_usage(a))
                return EV_DROP;
        }
    }
    return EV_FORWARD;
}

void openai_family_map_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err)
{
    wire_openai_map_error(status, body, len, err);
    ex_attempt_scrub_error(a, err); /* no key quoted back; a 401/403 is agentd's failure (502) */
}
