/* vertex.c: Google Vertex AI (aiplatform.googleapis.com): Gemini and Anthropic models of a Google Cloud project.
 *   Gemini:    POST {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}
 *                   :generateContent, :streamGenerateContent?alt=sse (SSE), :countTokens
 *   Anthropic: POST {base}/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}
 *                   :rawPredict, :streamRawPredict (SSE); .../publishers/anthropic/models/count-tokens:rawPredict
 * {base} is https://aiplatform.googleapis.com for location `global`, else https://{location}-aiplatform.googleapis.com
 * (registry.c), or the deployment's base_url. The credential is an OAuth access token (Authorization: Bearer) from
 * the deployment's Google credentials source (cloud_google.c: a service-account key or the metadata server), or a
 * static token given as the deployment's key.
 *
 * Nothing of either wire format is re-implemented here: a Gemini model's body is gemini.c's GenerateContentRequest
 * and its responses, chunks, counts and errors go through provider_gemini's ops; an Anthropic model's body is the
 * Messages body without "model" and with "anthropic_version": "vertex-2023-10-16" (an Anthropic client's own body
 * in passthrough, else anthropic.c's translation) and its responses and event stream are Anthropic's
 * (provider_anthropic's ops). Errors are Google's google.rpc.Status JSON when Vertex itself refuses (quota, IAM,
 * unknown model) and Anthropic's when the model does; map_error reads either. Which publisher a model belongs to:
 * an explicit "anthropic/" or "google/" prefix, else a model id starting with "claude" is Anthropic's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/cloud_creds.h"
#include "gateway/registry.h"
#include "gateway/providers/anthropic.h"
#include "gateway/providers/canon.h"
#include "gateway/providers/gemini.h"
#include "gateway/providers/vertex.h"
#include "gateway/usage.h"

#define VERTEX_ANTHROPIC_VERSION "vertex-2023-10-16"

int vertex_publisher(const char *model, const char **id)
{
    const char *m = model ? model : "";
    if (strncmp(m, "anthropic/", 10) == 0) {
        *id = m + 10;
        return VERTEX_PUB_ANTHROPIC;
    }
    if (strncmp(m, "google/", 7) == 0) {
        *id = m + 7;
        return VERTEX_PUB_GOOGLE;
    }
    *id = m;
    return strncmp(m, "claude", 6) == 0 ? VERTEX_PUB_ANTHROPIC : VERTEX_PUB_GOOGLE;
}

void vertex_base_url(const char *location, struct buf *out)
{
    if (location == NULL || *location == '\0' || strcmp(location, "global") == 0)
        buf_append_str(out, "https://aiplatform.googleapis.com");
    else
        buf_printf(out, "https://%s-aiplatform.googleapis.com", location);
}

/* A path segment: RFC 3986 unreserved characters and '@' (Claude versions, "claude-sonnet-4-5@20250929", as
 * Google's and Anthropic's SDKs send them) kept, the rest percent-encoded. */
static void segment(const char *s, struct buf *out)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~@", c))
            buf_append(out, s, 1);
        else
            buf_printf(out, "%%%02X", c);
    }
}

int vertex_model_url(const char *base, const char *version, const char *project, const char *location,
                     const char *model, const char *method, bool sse, struct buf *out)
{
    if (project == NULL || *project == '\0' || location == NULL || *location == '\0')
        return -1;
    const char *id;
    int pub = vertex_publisher(model, &id);
    if (*id == '\0')
        return -1;
    buf_printf(out, "%s/%s/projects/", base, version && *version ? version : "v1");
    segment(project, out);
    buf_append_str(out, "/locations/");
    segment(location, out);
    buf_printf(out, "/publishers/%s/models/", pub == VERTEX_PUB_ANTHROPIC ? "anthropic" : "google");
    segment(id, out);
    buf_printf(out, ":%s%s", method, sse ? "?alt=sse" : "");
    return 0;
}

/* ---------- shared request parts ---------- */

static int url_for(const struct deployment *d, const char *model, const char *method, bool sse, struct up_request *r,
                   struct gw_error *err)
{
    if (vertex_model_url(d->base_url, d->api_version, d->project, d->region, model, method, sse, &r->url) != 0) {
        gw_error_set(err, 500, GW_ERR_API, "deployment %s: vertex-ai needs a project and a location", d->label);
        return -1;
    }
    return 0;
}

static int cloud_bearer(const struct deployment *d, struct up_request *r, struct gw_error *err)
{
    if (d->creds == NULL) {
        gw_error_set(err, 503, GW_ERR_OVERLOADED,
                     "deployment %s has no Google credentials (auth, credentials_file, GOOGLE_APPLICATION_CREDENTIALS "
                     "or a metadata server)",
                     d->label);
        err->retryable = true;
        return -1;
    }
    struct cc_snap *snap = NULL;
    char why[600];
    enum cc_status st = cc_acquire(d->creds, &snap, why, sizeof(why));
    if (st != CC_OK || snap->c.token == NULL) {
        cc_release(snap);
        cc_error_set(err, d->label, d->creds, st == CC_OK ? CC_FAILED : st, why);
        return -1;
    }
    buf_printf(&r->headers, "Authorization: Bearer %s\n", snap->c.token);
    cc_release(snap);
    return 0;
}

/* Authorization: Bearer <token>: the deployment's Google credentials (refreshed off the worker loops), or its
 * static token. A deployment whose credentials are not available yet fails with a retryable 503. */
static int add_auth(const struct deployment *d, struct up_request *r, struct gw_error *err)
{
    if (d->api_key) {
        buf_printf(&r->headers, "Authorization: Bearer %s\n", d->api_key);
        return 0;
    }
    return cloud_bearer(d, r, err);
}

static void common_headers(const struct deployment *d, struct up_request *r, bool stream)
{
    r->method = "POST";
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", stream ? "text/event-stream" : "application/json");
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
}

static int put_body(cJSON *body, struct up_request *r, struct gw_error *err)
{
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, s);
    cJSON_free(s);
    return 0;
}

/* ---------- Gemini models ---------- */

/* Embeddings: {model}:predict with {"instances":[{"content":text}...],"parameters":{"outputDimensionality":n}}
 * (text-embedding-*, gemini-embedding-*; Vertex bounds the instances per request by model). */
static int embed_encode(struct attempt *a, const cJSON *canon, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(canon, "input");
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(canon, "dimensions");
    if (!cJSON_IsString(input) && !(cJSON_IsArray(input) && input->child))
        return gw_bad_request(err, "input", "'input' must be a string or a non-empty array of strings");
    cJSON *body = cJSON_CreateObject();
    cJSON *inst = cJSON_AddArrayToObject(body, "instances");
    for (const cJSON *it = cJSON_IsString(input) ? input : input->child; it; it = cJSON_IsString(input) ? NULL : it->next) {
        if (!cJSON_IsString(it)) {
            cJSON_Delete(body);
            return gw_bad_request(err, "input", "provider vertex-ai embeds text only: token-array input is not supported");
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "content", it->valuestring);
        cJSON_AddItemToArray(inst, o);
    }
    if (cJSON_IsNumber(dims))
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(body, "parameters"), "outputDimensionality", dims->valuedouble);
    if (url_for(d, d->model, "predict", false, r, err) != 0 || add_auth(d, r, err) != 0) {
        cJSON_Delete(body);
        return -1;
    }
    common_headers(d, r, false);
    return put_body(body, r, err);
}

static int gemini_encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    const cJSON *canon = ex_attempt_canonical(a, err);
    if (canon && a->op == OP_EMBEDDINGS)
        return embed_encode(a, canon, r, err);
    if (canon == NULL || canon_note_unread(a, canon, gemini_read_fields, err) != 0)
        return -1;
    cJSON *body = gemini_build_generate(canon, ex_attempt_max_tokens(a), err);
    if (body == NULL)
        return -1;
    if (url_for(d, d->model, a->stream ? "streamGenerateContent" : "generateContent", a->stream, r, err) != 0 ||
        add_auth(d, r, err) != 0) {
        cJSON_Delete(body);
        return -1;
    }
    common_headers(d, r, a->stream);
    return put_body(body, r, err);
}

/* Vertex's CountTokensRequest carries the GenerateContentRequest's fields at its top level (the Gemini API's wraps
 * them in generateContentRequest). */
static int gemini_encode_count(const struct deployment *d, const cJSON *canon, struct up_request *r,
                               struct gw_error *err)
{
    cJSON *body = gemini_build_generate(canon, -1, err);
    if (body == NULL)
        return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(body, "generationConfig");
    if (url_for(d, d->model, "countTokens", false, r, err) != 0 || add_auth(d, r, err) != 0) {
        cJSON_Delete(body);
        return -1;
    }
    common_headers(d, r, false);
    return put_body(body, r, err);
}

/* A :predict answer, {"predictions":[{"embeddings":{"values":[...],"statistics":{"token_count":n}}}]}, read by the
 * Gemini codec once its embeddings are moved (not copied) into the Gemini API's shape,
 * {"embeddings":[{"values":[...]}],"usageMetadata":{"promptTokenCount":sum}} (no counts: the codec estimates). */
static int embed_decode(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err)
{
    cJSON *t = cJSON_ParseWithLength(body, len);
    const cJSON *preds = cJSON_GetObjectItemCaseSensitive(t, "predictions");
    if (!cJSON_IsArray(preds)) {
        cJSON_Delete(t);
        canon_malformed(a, err, "a predict response without predictions");
        return -1;
    }
    cJSON *g = cJSON_CreateObject();
    cJSON *embs = cJSON_AddArrayToObject(g, "embeddings");
    double tokens = 0;
    bool counted = true;
    for (cJSON *p = preds->child; p; p = p->next) {
        cJSON *e = cJSON_GetObjectItemCaseSensitive(p, "embeddings");
        cJSON *values = cJSON_DetachItemFromObjectCaseSensitive(e, "values");
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "statistics"), "token_count");
        if (cJSON_IsNumber(tc) && tc->valuedouble >= 0)
            tokens += tc->valuedouble;
        else
            counted = false;
        cJSON *o = cJSON_CreateObject();
        if (values)
            cJSON_AddItemToObject(o, "values", values);
        cJSON_AddItemToArray(embs, o);
    }
    cJSON_Delete(t);
    if (counted && embs->child)
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(g, "usageMetadata"), "promptTokenCount", tokens);
    char *s = cJSON_PrintUnformatted(g);
    cJSON_Delete(g);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not decode the upstream response");
        return -1;
    }
    int rc = provider_gemini.decode_response(a, s, strlen(s), out, err);
    cJSON_free(s);
    return rc;
}

static int gemini_decode_response(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err)
{
    if (a->op == OP_EMBEDDINGS)
        return embed_decode(a, body, len, out, err);
    return provider_gemini.decode_response(a, body, len, out, err);
}

static int gemini_decode_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    return provider_gemini.decode_stream_event(a, ev, err);
}

static int gemini_usage(const char *body, size_t len, struct usage *u)
{
    return provider_gemini.extract_usage(body, len, u);
}

static void gemini_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err)
{
    provider_gemini.map_error(a, status, body, len, err);
}

static void gemini_free(struct attempt *a)
{
    provider_gemini.free_state(a);
}

static int gemini_count(const char *body, size_t len, int64_t *n)
{
    return provider_gemini.decode_count(body, len, n);
}

const struct provider_ops provider_vertex = {
    .name = "vertex-ai",
    .wire = WIRE_NONE,
    .framing = FRAMING_SSE,
    .supports_embeddings = true,
    .encode_request = gemini_encode,
    .decode_response = gemini_decode_response,
    .decode_stream_event = gemini_decode_event,
    .extract_usage = gemini_usage,
    .map_error = gemini_error,
    .free_state = gemini_free,
    .encode_count = gemini_encode_count,
    .decode_count = gemini_count,
};

/* ---------- Anthropic models ---------- */

int vertex_anthropic_body(cJSON *messages_body, bool keep_model)
{
    if (!cJSON_IsObject(messages_body))
        return -1;
    /* every copy, in one pass: a body that names a key twice must not leave one behind */
    for (cJSON *it = messages_body->child, *next; it; it = next) {
        next = it->next;
        if (it->string && ((!keep_model && strcmp(it->string, "model") == 0) ||
                           strcmp(it->string, "anthropic_version") == 0))
            cJSON_Delete(cJSON_DetachItemViaPointer(messages_body, it));
    }
    cJSON *v = cJSON_CreateString(VERTEX_ANTHROPIC_VERSION);
    if (v == NULL)
        return -1;
    cJSON_AddItemToObject(messages_body, "anthropic_version", v);
    return 0;
}

static int anthropic_encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    struct anthropic_stream *s = anthropic_attempt_state(a);
    if (a->op != OP_CHAT) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "Anthropic models do not serve embeddings");
        return -1;
    }
    cJSON *body;
    if (a->passthrough) {
        struct str cb = ex_attempt_client_body(a);
        body = cJSON_ParseWithLength(cb.p, cb.n);
        if (!cJSON_IsObject(body)) {
            cJSON_Delete(body);
            gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "request body is not a JSON object");
            return -1;
        }
    } else {
        const cJSON *canon = ex_attempt_canonical(a, err);
        if (canon == NULL)
            return -1;
        static const char *const read[] = {"max_completion_tokens", "max_tokens", "stop", "temperature", "top_p",
                                           "top_k", "user", "tools", "response_format", "tool_choice",
                                           "parallel_tool_calls", NULL};
        if (canon_note_unread(a, canon, read, err) != 0)
            return -1;
        int64_t max = ex_attempt_max_tokens(a);
        const char *id;
        vertex_publisher(d->model, &id);
        body = anthropic_request_from_canonical(canon, id, a->stream, max > 0 ? max : ex_attempt_default_max_tokens(a),
                                                s->json_tool, sizeof(s->json_tool), err);
        if (body == NULL)
            return -1;
    }
    if (vertex_anthropic_body(body, false) != 0 ||
        url_for(d, d->model, a->stream ? "streamRawPredict" : "rawPredict", false, r, err) != 0 ||
        add_auth(d, r, err) != 0) {
        if (err->status == 0)
            gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        cJSON_Delete(body);
        return -1;
    }
    common_headers(d, r, a->stream);
    if (a->passthrough) {
        /* betas change what the body means; the body is the client's, so are its betas (Vertex reads the header) */
        const struct str *beta = ex_attempt_client_header(a, "anthropic-beta");
        if (beta && beta->n < 1024 && memchr(beta->p, '\r', beta->n) == NULL && memchr(beta->p, '\n', beta->n) == NULL)
            buf_printf(&r->headers, "anthropic-beta: %.*s\n", (int)beta->n, beta->p);
    }
    return put_body(body, r, err);
}

/* publishers/anthropic/models/count-tokens:rawPredict with the Messages body, "model" in it. */
static int anthropic_encode_count(const struct deployment *d, const cJSON *canon, struct up_request *r,
                                  struct gw_error *err)
{
    char json_tool[130];
    const char *id;
    vertex_publisher(d->model, &id);
    cJSON *body = anthropic_request_from_canonical(canon, id, false, 1, json_tool, sizeof(json_tool), err);
    if (body == NULL)
        return -1;
    static const char *const not_counted[] = {"max_tokens", "stream", "stop_sequences", "temperature", "top_p",
                                              "top_k", "metadata"};
    for (size_t i = 0; i < sizeof(not_counted) / sizeof(not_counted[0]); i++)
        cJSON_DeleteItemFromObjectCaseSensitive(body, not_counted[i]);
    if (vertex_anthropic_body(body, true) != 0 || url_for(d, "anthropic/count-tokens", "rawPredict", false, r, err) != 0 ||
        add_auth(d, r, err) != 0) {
        if (err->status == 0)
            gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        cJSON_Delete(body);
        return -1;
    }
    common_headers(d, r, false);
    return put_body(body, r, err);
}

static int anthropic_decode_response(struct attempt *a, const char *body, size_t len, cJSON **out,
                                     struct gw_error *err)
{
    anthropic_attempt_state(a);
    return provider_anthropic.decode_response(a, body, len, out, err);
}

static int anthropic_decode_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    anthropic_attempt_state(a);
    return provider_anthropic.decode_stream_event(a, ev, err);
}

static int anthropic_usage(const char *body, size_t len, struct usage *u)
{
    return provider_anthropic.extract_usage(body, len, u);
}

/* Vertex's own refusals (quota, IAM, an unknown model) are google.rpc.Status JSON; the model's are Anthropic's. */
static void anthropic_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err)
{
    struct jval t;
    if (jscan_get(body, len, "type", &t) == 0 && jval_is_str(&t, "error"))
        provider_anthropic.map_error(a, status, body, len, err);
    else
        provider_gemini.map_error(a, status, body, len, err);
}

static void anthropic_free(struct attempt *a)
{
    provider_anthropic.free_state(a);
}

static int anthropic_count(const char *body, size_t len, int64_t *n)
{
    return provider_anthropic.decode_count(body, len, n);
}

const struct provider_ops provider_vertex_anthropic = {
    .name = "vertex-ai",
    .wire = WIRE_ANTHROPIC,
    .framing = FRAMING_SSE,
    .supports_embeddings = false,
    .encode_request = anthropic_encode,
    .decode_response = anthropic_decode_response,
    .decode_stream_event = anthropic_decode_event,
    .extract_usage = anthropic_usage,
    .map_error = anthropic_error,
    .free_state = anthropic_free,
    .encode_count = anthropic_encode_count,
    .decode_count = anthropic_count,
};

const struct provider_ops *vertex_provider_for(const char *model)
{
    const char *id;
    return vertex_publisher(model, &id) == VERTEX_PUB_ANTHROPIC ? &provider_vertex_anthropic : &provider_vertex;
}
