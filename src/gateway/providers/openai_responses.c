/* openai_responses.c: the Responses API of OpenAI (POST {base_url}/responses) and Azure OpenAI
 * ({base_url}/openai/v1/responses), for clients
 * of /v1/responses (front_responses.c chooses it through front_ops.provider_for). Always pass-through: the body
 * goes up with only "model" replaced, the answer comes back byte for byte; usage is read from the complete body or
 * from the stream's terminal event (response.completed / .incomplete / .failed), and a stream that ends without
 * one is incomplete, never silently free. */
#include <stdio.h>
#include <string.h>

#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/exchange.h"
#include "gateway/wire_openai.h"
#include "gateway/front_responses.h"
#include "gateway/registry.h"
#include "gateway/providers/openai_family.h"
#include "gateway/responses.h"

static int encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    r->method = "POST";
    if (d->provider == PROVIDER_AZURE_OPENAI) {
        /* the v1 API: no api-version (the chat API's api_version predates Responses) */
        buf_printf(&r->url, "%s/openai/v1/responses", d->base_url);
        if (azure_openai_auth(d, r, err) != 0)
            return -1;
    } else {
        buf_printf(&r->url, "%s/responses", d->base_url);
        if (d->api_key) {
            buf_append_str(&r->headers, "Authorization: Bearer ");
            buf_append_str(&r->headers, d->api_key);
            buf_append(&r->headers, "\n", 1);
        }
    }
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", a->stream ? "text/event-stream" : "application/json");
    for (size_t i = 0; i < d->nheaders; i++) {
        buf_append_str(&r->headers, d->headers[i]);
        buf_append(&r->headers, "\n", 1);
    }
    const cJSON *history = front_responses_history(a->ex);
    if (history) {
        /* a conversation agentd stored (it began on a translated deployment): the provider has never seen it, so
         * it goes up in full, as input items, instead of as previous_response_id */
        cJSON *t = cJSON_Duplicate(a->ex->rq.client_tree, 1);
        cJSON *items = cJSON_Duplicate(history, 1);
        cJSON *in = responses_input_items(t);
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(in, 0)) != NULL)
            cJSON_AddItemToArray(items, it);
        cJSON_Delete(in);
        cJSON_DeleteItemFromObjectCaseSensitive(t, "input");
        cJSON_DeleteItemFromObjectCaseSensitive(t, "previous_response_id");
        cJSON_DeleteItemFromObjectCaseSensitive(t, "model");
        cJSON_AddStringToObject(t, "model", d->model);
        cJSON_AddItemToObject(t, "input", items);
        char *s = cJSON_PrintUnformatted(t);
        cJSON_Delete(t);
        if (s == NULL) {
            gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
            return -1;
        }
        buf_append_str(&r->body, s);
        cJSON_free(s);
        return 0;
    }
    struct str body = ex_attempt_client_body(a);
    if (wire_openai_splice_request(body.p, body.n, d->model, false, &r->body) != 0) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "request body is not a JSON object with a model");
        return -1;
    }
    return 0;
}

static int decode_response(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err)
{
    *out = NULL; /* relayed as received */
    size_t off = 0;
    const char *msg = NULL;
    if (jscan_validate(body, len, &off, &msg) != 0) {
        gw_error_set(err, 502, GW_ERR_API, "upstream %s returned invalid JSON (%s at byte %zu)", a->dep->label, msg,
                     off);
        err->from_upstream = true;
        err->retryable = true;
        return -1;
    }
    responses_extract_usage(body, len, &a->usage);
    usage_check(&a->usage, a->dep->label);
    front_responses_passthrough_id(a->ex, a->dep, body, len); /* GET / DELETE find it there */
    return 0;
}

static int decode_stream_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    struct usage u;
    int rc = responses_decode_event(ev->event, ev->data, &u, err);
    if (rc < 0)
        return -1;
    if (rc == RESP_EV_TERMINAL) {
        a->stream_done = true;
        if (u.known || u.invalid) {
            usage_check(&u, a->dep->label);
            a->usage = u;
        }
    }
    return EV_FORWARD;
}

const struct provider_ops provider_openai_responses = {
    .name = "openai-responses",
    .wire = WIRE_OPENAI_RESPONSES,
    .framing = FRAMING_SSE,
    .encode_request = encode,
    .decode_response = decode_response,
    .decode_stream_event = decode_stream_event,
    .extract_usage = responses_extract_usage,
    .map_error = openai_family_map_error,
};
