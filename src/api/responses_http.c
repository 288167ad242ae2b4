/* responses_http.c: the Responses API routes around the exchange: GET and DELETE /v1/responses/{id} (stored
 * responses), GET /v1/responses/{id}/input_items, and POST /v1/responses/input_tokens (a count before sending).
 * POST /v1/responses itself is an exchange (gw_http.c, gateway/front_responses.c). The store runs off the loop:
 * each handler waits for its callback, and forgets the request if the client went away meanwhile. */
#include "api/responses_http.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "config/config.h"
#include "gateway/registry.h"
#include "gateway/responses.h"
#include "net/http.h"
#include "store/store_config.h"

static void error_reply(struct http_req *req, int status, const char *type, const char *param, const char *fmt,
                        const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, arg);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"error\":{\"message\":");
    buf_append_json_cstr(&b, msg);
    buf_append_str(&b, ",\"type\":");
    buf_append_json_cstr(&b, type);
    buf_append_str(&b, ",\"param\":");
    if (param)
        buf_append_json_cstr(&b, param);
    else
        buf_append_str(&b, "null");
    buf_append_str(&b, ",\"code\":null}}");
    http_respond(req, status, "application/json", b.data, b.len);
    buf_free(&b);
}

/* A request waiting for the store. */
struct pending_req {
    struct http_req *req; /* NULL once the client went away */
    enum { OP_GET, OP_ITEMS, OP_DELETE, OP_COUNT } op;
    char id[RESPONSES_MAX_ID + 1];
    cJSON *count_req; /* OP_COUNT: the request whose input is counted */
    bool asc;         /* OP_ITEMS: ?order=asc (OpenAI's default is newest first) */
};

static void on_abort(struct http_req *req, void *ud)
{
    (void)req;
    struct pending_req *p = ud;
    p->req = NULL;
}

static struct http_req *pending_take(struct pending_req *p)
{
    struct http_req *req = p->req;
    if (req)
        req->on_abort = NULL;
    return req;
}

static bool id_ok(struct str id)
{
    if (id.n == 0 || id.n > RESPONSES_MAX_ID)
        return false;
    for (size_t i = 0; i < id.n; i++) {
        char c = id.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* One "name=value" member of a query string, exactly. */
static bool query_has(struct str q, const char *kv)
{
    size_t n = strlen(kv), i = 0;
    while (i < q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        if (j - i == n && memcmp(q.p + i, kv, n) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

static void not_found(struct http_req *req, const char *id)
{
    error_reply(req, 404, "invalid_request_error", NULL, "Response with id '%s' not found.", id);
}

/* ---- input_tokens: an estimate (bytes of text / 4), marked as such ---- */

static void text_bytes(const cJSON *v, size_t *n)
{
    if (cJSON_IsString(v)) {
        *n += strlen(v->valuestring);
        return;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, v)
    {
        if (c->string && (strcmp(c->string, "image_url") == 0 || strcmp(c->string, "file_data") == 0 ||
                          strcmp(c->string, "data") == 0)) {
            *n += 1024; /* media: a flat guess, not its base64 */
            continue;
        }
        if (c->string && (strcmp(c->string, "role") == 0 || strcmp(c->string, "type") == 0 ||
                          strcmp(c->string, "id") == 0 || strcmp(c->string, "tool_call_id") == 0))
            continue; /* structure, not text the model reads as such */
        text_bytes(c, n);
    }
}

static void count_reply(struct http_req *req, const cJSON *body, const cJSON *history)
{
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    cJSON *canon = responses_to_chat(body, history, NULL, &err);
    if (canon == NULL) {
        error_reply(req, err.status ? err.status : 400, "invalid_request_error", err.param[0] ? err.param : NULL,
                    "%s", err.message);
        return;
    }
    size_t n = 0;
    text_bytes(cJSON_GetObjectItemCaseSensitive(canon, "messages"), &n);
    text_bytes(cJSON_GetObjectItemCaseSensitive(canon, "tools"), &n);
    cJSON_Delete(canon);
    long long tokens = (long long)((n + 3) / 4);
    if (tokens < 1)
        tokens = 1;
    char out[160];
    int len = snprintf(out, sizeof(out),
                       "{\"object\":\"response.input_tokens\",\"input_tokens\":%lld,\"estimated\":true}", tokens);
    http_resp_header(req, "x-agentd-token-count", "estimate");
    http_respond(req, 200, "application/json", out, (size_t)len);
}

static void on_record(void *ud, int rc, const char *data, size_t len, const char *emsg)
{
    struct pending_req *p = ud;
    struct http_req *req = pending_take(p);
    if (req == NULL)
        goto out;
    if (rc == STORE_NOT_FOUND) {
        if (p->op == OP_COUNT)
            error_reply(req, 404, "invalid_request_error", "previous_response_id",
                        "Previous response with id '%s' not found.", p->id);
        else
            not_found(req, p->id);
        goto out;
    }
    if (rc != STORE_OK) {
        error_reply(req, 503, "server_error", NULL, "the response store is unavailable: %s", emsg ? emsg : "");
        goto out;
    }
    cJSON *rec = cJSON_ParseWithLength(data, len);
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(rec, "response");
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(rec, "history");
    if (!cJSON_IsObject(resp) || !cJSON_IsArray(hist)) {
        error_reply(req, 500, "server_error", NULL, "the stored response %s is unreadable", p->id);
    } else if (p->op == OP_GET) {
        char *s = cJSON_PrintUnformatted(resp);
        http_respond(req, 200, "application/json", s, strlen(s));
        cJSON_free(s);
    } else if (p->op == OP_ITEMS) {
        /* the items that went in: the conversation without this response's own output */
        int nout = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(resp, "output"));
        int n = cJSON_GetArraySize(hist) - nout;
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "object", "list");
        cJSON *arr = cJSON_AddArrayToObject(l, "data");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, hist)
        {
            if (i++ >= n)
                break;
            cJSON *c = cJSON_Duplicate(it, 1);
            if (p->asc || arr->child == NULL)
                cJSON_AddItemToArray(arr, c);
            else
                cJSON_InsertItemInArray(arr, 0, c); /* O(1) at the head */
        }
        cJSON_AddBoolToObject(l, "has_more", 0);
        cJSON_AddNullToObject(l, "first_id");
        cJSON_AddNullToObject(l, "last_id");
        char *s = cJSON_PrintUnformatted(l);
        cJSON_Delete(l);
        http_respond(req, 200, "application/json", s, strlen(s));
        cJSON_free(s);
    } else { /* OP_COUNT */
        count_reply(req, p->count_req, hist);
    }
    cJSON_Delete(rec);
out:
    cJSON_Delete(p->count_req);
    xfree(p);
}

static void on_deleted(void *ud, int rc, const char *emsg)
{
    struct pending_req *p = ud;
    struct http_req *req = pending_take(p);
    if (req) {
        if (rc == STORE_OK) {
            struct buf b = BUF_INIT(BUF_UNBOUNDED);
            buf_append_str(&b, "{\"id\":");
            buf_append_json_cstr(&b, p->id);
            buf_append_str(&b, ",\"object\":\"response\",\"deleted\":true}");
            http_respond(req, 200, "application/json", b.data, b.len);
            buf_free(&b);
        } else if (rc == STORE_NOT_FOUND) {
            not_found(req, p->id);
        } else {
            error_reply(req, 503, "server_error", NULL, "the response store is unavailable: %s", emsg ? emsg : "");
        }
    }
    xfree(p);
}

static struct pending_req *pending_new(struct http_req *req, int op, struct str id)
{
    struct pending_req *p = xcalloc(1, sizeof(*p));
    p->req = req;
    p->op = op;
    memcpy(p->id, id.p, id.n);
    p->id[id.n] = '\0';
    req->on_abort = on_abort;
    req->abort_ud = p;
    return p;
}

static void input_tokens(struct http_req *req, struct store *st)
{
    struct responses_head h;
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    if (responses_parse_head(req->body.data ? req->body.data : "", req->body.len, &h, &err) != 0) {
        error_reply(req, 400, "invalid_request_error", err.param[0] ? err.param : NULL, "%s", err.message);
        return;
    }
    if (registry_find(registry_of(req->cfg), str_from(h.model)) == NULL) {
        error_reply(req, 404, "invalid_request_error", "model",
                    "The model `%s` does not exist or you do not have access to it.", h.model);
        return;
    }
    cJSON *body = cJSON_ParseWithLength(req->body.data, req->body.len);
    if (h.previous_response_id[0] == '\0' || st == NULL) {
        count_reply(req, body, NULL);
        cJSON_Delete(body);
        return;
    }
    struct pending_req *p = pending_new(req, OP_COUNT, str_from(h.previous_response_id));
    p->count_req = body;
    if (store_get(st, http_server_loop(req->server), "response", p->id, on_record, p) != 0) {
        pending_take(p);
        error_reply(req, 404, "invalid_request_error", "previous_response_id",
                    "Previous response with id '%s' not found.", p->id);
        cJSON_Delete(body);
        xfree(p);
    }
}

void responses_http_item(struct http_req *req)
{
    /* /v1/responses/<rest> or /responses/<rest> */
    struct str path = req->path;
    size_t skip = str_starts_with(path, str_from("/v1/responses/")) ? 14 : 11;
    struct str rest = str_make(path.p + skip, path.n - skip);
    struct store *st = store_shared(req->cfg);
    if (req->method == HTTP_M_POST && str_eq_cstr(rest, "input_tokens")) {
        input_tokens(req, st);
        return;
    }
    int op = req->method == HTTP_M_DELETE ? OP_DELETE : OP_GET;
    const char *slash = memchr(rest.p, '/', rest.n);
    if (slash) {
        struct str tail = str_make(slash + 1, rest.n - (size_t)(slash + 1 - rest.p));
        rest.n = (size_t)(slash - rest.p);
        if (!str_eq_cstr(tail, "input_items") || req->method != HTTP_M_GET) {
            error_reply(req, 404, "invalid_request_error", NULL, "Unknown route %s.", "under /v1/responses/{id}");
            return;
        }
        op = OP_ITEMS;
    } else if (req->method == HTTP_M_POST) {
        error_reply(req, 405, "invalid_request_error", NULL, "%s",
                    "Only GET and DELETE are allowed on /v1/responses/{id}.");
        return;
    }
    if (!id_ok(rest)) {
        error_reply(req, 404, "invalid_request_error", NULL, "Response with id '%s' not found.", "(malformed id)");
        return;
    }
    if (st == NULL) {
        char id[RESPONSES_MAX_ID + 1];
        memcpy(id, rest.p, rest.n);
        id[rest.n] = '\0';
        not_found(req, id);
        return;
    }
    struct pending_req *p = pending_new(req, op, rest);
    p->asc = query_has(req->query, "order=asc");
    uv_loop_t *loop = http_server_loop(req->server);
    int rc = op == OP_DELETE ? store_delete(st, loop, "response", p->id, on_deleted, p)
                             : store_get(st, loop, "response", p->id, on_record, p);
    if (rc != 0) {
        pending_take(p);
        not_found(req, p->id);
        xfree(p);
    }
}
