/* gw_count_tokens.c: POST /v1/messages/count_tokens (the Anthropic SDK's messages.countTokens). The request is a
 * Messages request without max_tokens; the answer is {"input_tokens": N}. agentd answers an estimate for every
 * deployment (bytes of text / 4, media a flat 1024 bytes), marked as POST /v1/responses/input_tokens marks its
 * own: header `x-agentd-token-count: estimate` and `"estimated": true` in the body. An unknown model is a 404 and
 * a malformed request a 400, both in Anthropic's error shape. */
#include <stdio.h>
#include <string.h>

#include "api/gw_http.h"
#include <cjson/cJSON.h>
#include "common/buf.h"
#include "common/str.h"
#include "gateway/anthropic.h"
#include "gateway/gw_types.h"
#include "gateway/models.h"
#include "net/http.h"

static void reply_error(struct http_req *req, const struct gw_error *e)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    anthropic_error_json(&b, e, req->request_id);
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

void gw_handle_count_tokens(struct http_req *req)
{
    struct gw_error e;
    cJSON *body = cJSON_ParseWithLength(req->body.data ? req->body.data : "", req->body.len);
    if (body == NULL || !cJSON_IsObject(body)) {
        gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "The request body is not a valid JSON object.");
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0') {
        gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "model: Field required");
        goto fail;
    }
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(messages)) {
        gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "messages: Field required");
        goto fail;
    }
    if (registry_find(registry_of(req->cfg), str_from(model->valuestring)) == NULL) {
        gw_error_set(&e, 404, GW_ERR_NOT_FOUND,
                     "The model `%s` does not exist. GET /v1/models lists the models served here.", model->valuestring);
        goto fail;
    }
    size_t n = 0;
    text_bytes(messages, &n);
    text_bytes(cJSON_GetObjectItemCaseSensitive(body, "system"), &n);
    text_bytes(cJSON_GetObjectItemCaseSensitive(body, "tools"), &n);
    cJSON_Delete(body);
    long long tokens = (long long)((n + 3) / 4);
    if (tokens < 1)
        tokens = 1;
    char out[96];
    int len = snprintf(out, sizeof(out), "{\"input_tokens\":%lld,\"estimated\":true}", tokens);
    http_resp_header(req, "x-agentd-token-count", "estimate");
    http_respond(req, 200, "application/json", out, (size_t)len);
    return;
fail:
    cJSON_Delete(body);
    reply_error(req, &e);
}
