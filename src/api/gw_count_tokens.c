/* gw_count_tokens.c: POST /v1/messages/count_tokens (the Anthropic SDK's messages.countTokens). The request is a
 * Messages request without max_tokens; the answer is {"input_tokens": N}. A model with an Anthropic deployment gets
 * the exact count: the request goes to that deployment's own /v1/messages/count_tokens (model replaced, the
 * client's anthropic-beta kept) and its answer comes back as it is, marked `x-agentd-token-count: exact`. Any
 * other model gets an estimate (bytes of text / 4, media a flat 1024 bytes), marked as POST
 * /v1/responses/input_tokens marks its own: `x-agentd-token-count: estimate` and `"estimated": true` in the body.
 * An unknown model is a 404 and a malformed request a 400, both in Anthropic's error shape. */
#include <stdio.h>
#include <string.h>

#include "api/count_translated.h"
#include "api/gw_http.h"
#include "api/upstream_call.h"
#include <cjson/cJSON.h>
#include "common/alloc.h"
#include "common/buf.h"
#include "common/jscan.h"
#include "common/str.h"
#include "gateway/front.h"
#include "gateway/front_anthropic.h"
#include "gateway/providers/anthropic.h"
#include "gateway/gw_types.h"
#include "gateway/registry.h"
#include "gateway/provider.h"
#include "net/http.h"

static void reply_error(struct http_req *req, const struct gw_error *e)
{
    if (gw_count_fail(req, e)) /* the counted exchange answers, in Anthropic's shape */
        return;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic_error_json(&b, e, req->request_id);
    http_respond(req, e->status, "application/json", b.data, b.len);
    buf_free(&b);
}

/* Bytes of text the model reads in v: strings, less structure keys; media (base64 sources) a flat guess. One walk
 * over the tree (cJSON bounds its depth). */
static void text_bytes(const cJSON *v, size_t *n)
{
    if (cJSON_IsString(v)) {
        *n += strlen(v->valuestring);
        return;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, v)
    {
        if (c->string && (strcmp(c->string, "source") == 0 || strcmp(c->string, "data") == 0)) {
            *n += 1024; /* image or document: a flat guess, not its base64 */
            continue;
        }
        if (c->string && (strcmp(c->string, "role") == 0 || strcmp(c->string, "type") == 0 ||
                          strcmp(c->string, "id") == 0 || strcmp(c->string, "tool_use_id") == 0 ||
                          strcmp(c->string, "cache_control") == 0))
            continue; /* structure, not text the model reads as such */
        text_bytes(c, n);
    }
}

/* The deployment that counts: the model's first with its credentials configured (in configuration order), or
 * NULL. */
static const struct deployment *counting_deployment(const struct model_entry *m)
{
    for (size_t i = 0; i < m->ndeps; i++)
        if (!m->deps[i].missing_key)
            return &m->deps[i];
    return NULL;
}

struct count_call {
    char label[128];
    const struct deployment *dep; /* in the exchange's configuration snapshot, alive while it runs */
};

static void on_counted(struct http_req *req, int status, const char *body, size_t len, const char *emsg, void *ud)
{
    struct count_call *c = ud;
    struct gw_error e;
    if (status == 200) {
        struct jval v;
        if (jscan_get(body, len, "input_tokens", &v) == 0 && v.type == J_NUMBER) {
            http_resp_header(req, "x-agentd-token-count", "exact");
            gw_count_answer(req, 200, body, len, c->dep);
            xfree(c);
            return;
        }
        gw_error_set(&e, 502, GW_ERR_API, "upstream %s answered the token count without input_tokens", c->label);
    } else if (status == 401 || status == 403) {
        /* the upstream refused agentd's key: agentd's failure, not the client's */
        gw_error_set(&e, 502, GW_ERR_API, "upstream %s refused agentd's credentials for the token count (HTTP %d)",
                     c->label, status);
    } else if (status > 0) {
        anthropic_map_error(status, body, len, &e);
    } else {
        gw_error_set(&e, 502, GW_ERR_API, "upstream %s: the token count failed: %s", c->label, emsg);
    }
    xfree(c);
    reply_error(req, &e);
}

/* The exact count: the client's request to the deployment's own endpoint, with its model. 0 when started. */
static int forward(struct http_req *req, const struct deployment *d)
{
    struct up_request r;
    up_request_init(&r);
    r.method = "POST";
    buf_printf(&r.url, "%s/v1/messages/count_tokens", d->base_url);
    if (d->api_key)
        up_request_header(&r, "x-api-key", d->api_key);
    up_request_header(&r, "anthropic-version", d->api_version ? d->api_version : "2023-06-01");
    up_request_header(&r, "Content-Type", "application/json");
    up_request_header(&r, "Accept", "application/json");
    const struct str *beta = http_req_header(req, "anthropic-beta");
    if (beta && beta->n < 1024 && memchr(beta->p, '\r', beta->n) == NULL && memchr(beta->p, '\n', beta->n) == NULL)
        buf_printf(&r.headers, "anthropic-beta: %.*s\n", (int)beta->n, beta->p);
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r.headers, "%s\n", d->headers[i]);
    if (anthropic_splice_model(req->body.data, req->body.len, d->model, &r.body) != 0) {
        up_request_free(&r);
        return -1;
    }
    struct count_call *c = xcalloc(1, sizeof(*c));
    snprintf(c->label, sizeof(c->label), "%s", d->label);
    c->dep = d;
    if (upstream_call(req, &r, 1 << 20, on_counted, xfree, c) != 0) {
        up_request_free(&r);
        xfree(c);
        return -1;
    }
    up_request_free(&r);
    return 0;
}

/* The count, once the spine admitted it (gw_submit_counted): m is the routed model. */
static void count_run(struct http_req *req, const struct model_entry *m)
{
    cJSON *body = cJSON_ParseWithLength(req->body.data ? req->body.data : "", req->body.len);
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(body, "messages");
    const struct deployment *dep = counting_deployment(m);
    if (dep && dep->provider == PROVIDER_ANTHROPIC && forward(req, dep) == 0) {
        cJSON_Delete(body);
        return;
    }
    size_t n = 0;
    text_bytes(messages, &n);
    text_bytes(cJSON_GetObjectItemCaseSensitive(body, "system"), &n);
    text_bytes(cJSON_GetObjectItemCaseSensitive(body, "tools"), &n);
    long long tokens = (long long)((n + 3) / 4);
    if (tokens < 1)
        tokens = 1;
    if (dep && dep->provider != PROVIDER_ANTHROPIC && dep->prov && dep->prov->encode_count) {
        /* a translated deployment whose provider counts (Gemini, Bedrock): the request as a real call would send it */
        char dropped[512];
        struct gw_error te;
        cJSON *canon = front_anthropic_request_to_canonical(body, dropped, sizeof(dropped), &te);
        if (canon) {
            count_translated(req, dep, canon, COUNT_ANTHROPIC, tokens);
            cJSON_Delete(canon);
            cJSON_Delete(body);
            return;
        }
    }
    cJSON_Delete(body);
    count_reply_estimate(req, COUNT_ANTHROPIC, tokens);
}

/* A malformed request is a 400 here (before the key, as the spine's parse stage does for /v1/messages); a valid
 * one runs through authenticate, route and admit (gw_submit_counted): 401, 403, 404, 429 and 503 in Anthropic's
 * shape, and the key's rate limits count it. */
void gw_handle_count_tokens(struct http_req *req)
{
    struct gw_error e;
    cJSON *body = cJSON_ParseWithLength(req->body.data ? req->body.data : "", req->body.len);
    if (body == NULL || !cJSON_IsObject(body)) {
        gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "The request body is not a valid JSON object.");
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0' || strlen(model->valuestring) >= 256) {
        gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "model: Field required");
        goto fail;
    }
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(messages)) {
        gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "messages: Field required");
        goto fail;
    }
    char name[256];
    snprintf(name, sizeof(name), "%s", model->valuestring);
    cJSON_Delete(body);
    gw_submit_counted(req, &front_anthropic, name, count_run);
    return;
fail:
    cJSON_Delete(body);
    reply_error(req, &e);
}
