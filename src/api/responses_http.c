/* responses_http.c: the Responses API routes around the exchange: GET and DELETE /v1/responses/{id} (stored
 * responses), GET /v1/responses/{id}/input_items, and POST /v1/responses/input_tokens (a count before sending).
 * POST /v1/responses itself is an exchange (gw_http.c, gateway/front_responses.c). The store runs off the loop:
 * each handler waits for its callback, and forgets the request if the client went away meanwhile. */
#include "api/responses_http.h"
#include "api/count_translated.h"
#include "api/gw_http.h"
#include "api/upstream_call.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "config/config.h"
#include "gateway/front.h"
#include "gateway/front_responses.h"
#include "gateway/wire_openai.h"
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
    gw_count_answer(req, status, b.data, b.len, NULL); /* a counted exchange's end, or the request's answer */
    buf_free(&b);
}

/* A request waiting for the store. */
struct pending_req {
    struct http_req *req; /* NULL once the client went away */
    enum { OP_GET, OP_ITEMS, OP_DELETE, OP_COUNT } op;
    char id[RESPONSES_MAX_ID + 1];
    cJSON *count_req; /* OP_COUNT: the request whose input is counted */
    bool asc;         /* OP_ITEMS: ?order=asc (OpenAI's default is newest first) */
    const struct deployment *count_dep; /* OP_COUNT: a pass-through deployment that counts exactly, or NULL */
    const struct deployment *count_tdep; /* OP_COUNT: a translated deployment whose provider counts, or NULL */
    struct str query;  /* OP_ITEMS: the query string, forwarded as it is (points into query_copy) */
    char *query_copy;
    void (*prev_abort)(struct http_req *req, void *ud); /* the request's hook before ours (a counted exchange's) */
    void *prev_abort_ud;
};

static void pending_free(struct pending_req *p)
{
    xfree(p->query_copy);
    xfree(p);
}

static void on_dep_deleted(void *ud, int rc, const char *emsg)
{
    (void)ud;
    (void)rc;
    (void)emsg;
}

static void on_abort(struct http_req *req, void *ud)
{
    struct pending_req *p = ud;
    p->req = NULL;
    req->on_abort = p->prev_abort; /* ours is done: nobody may call it again */
    req->abort_ud = p->prev_abort_ud;
    if (p->prev_abort) /* a counted exchange's sink: it ends the exchange */
        p->prev_abort(req, p->prev_abort_ud);
}

static struct http_req *pending_take(struct pending_req *p)
{
    struct http_req *req = p->req;
    if (req) {
        req->on_abort = p->prev_abort;
        req->abort_ud = p->prev_abort_ud;
    }
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

/* A query string that can go into an upstream URL as it is (list options: after, limit, order, include[]). */
static bool query_safe(struct str q)
{
    for (size_t i = 0; i < q.n; i++) {
        char c = q.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.' || c == '=' || c == '&' || c == '%' || c == '[' || c == ']'))
            return false;
    }
    return true;
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

/* ---- forwarding to a pass-through (OpenAI / Azure OpenAI `responses`) deployment ---- */

/* An up_request for {base}/responses<tail> (Azure: {base}/openai/v1/responses<tail>) with the deployment's key. */
static void passthrough_request(struct up_request *r, const struct deployment *d, const char *method, const char *tail)
{
    up_request_init(r);
    r->method = method;
    if (d->provider == PROVIDER_AZURE_OPENAI) {
        buf_printf(&r->url, "%s/openai/v1/responses%s", d->base_url, tail);
        if (d->api_key)
            up_request_header(r, "api-key", d->api_key);
    } else {
        buf_printf(&r->url, "%s/responses%s", d->base_url, tail);
        if (d->api_key)
            up_request_headerf(r, "Authorization", "Bearer %s", d->api_key);
    }
    up_request_header(r, "Accept", "application/json");
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
}

struct fwd {
    char label[128];
    enum { FWD_COUNT, FWD_ITEM } kind;
    char drop_id[RESPONSES_MAX_ID + 1]; /* a DELETE: the response_dep record goes once the provider deleted */
};

/* The provider's answer, relayed: its own body on success and on a client error (it is OpenAI's shape already);
 * agentd's key refused, a transport failure or an unreadable answer is agentd's failure (502). */
static void on_forwarded(struct http_req *req, int status, const char *body, size_t len, const char *emsg, void *ud)
{
    struct fwd *f = ud;
    size_t off;
    const char *jmsg;
    bool json = status > 0 && jscan_validate(body, len, &off, &jmsg) == 0;
    if (status == 401 || status == 403) {
        error_reply(req, 502, "server_error", NULL, "upstream %s refused agentd's credentials", f->label);
    } else if (status == 0) {
        error_reply(req, 502, "server_error", NULL, "upstream failed: %s", emsg);
    } else if (!json) {
        error_reply(req, 502, "server_error", NULL, "upstream %s answered with invalid JSON", f->label);
    } else {
        if (status == 200 && f->kind == FWD_COUNT)
            http_resp_header(req, "x-agentd-token-count", "exact");
        struct store *st = f->drop_id[0] && (status == 200 || status == 404) ? store_shared(req->cfg) : NULL;
        if (st)
            store_delete(st, http_server_loop(req->server), "response_dep", f->drop_id, on_dep_deleted, NULL);
        http_resp_header(req, "x-agentd-deployment", f->label);
        gw_count_answer(req, status, body, len, NULL);
    }
    xfree(f);
}

/* Starts r for req; on failure answers 502 itself. drop_id: a DELETE's response id, or NULL. */
static void forward(struct http_req *req, struct up_request *r, const struct deployment *d, int kind,
                    const char *drop_id)
{
    struct fwd *f = xcalloc(1, sizeof(*f));
    snprintf(f->label, sizeof(f->label), "%s", d->label);
    f->kind = kind;
    if (drop_id)
        snprintf(f->drop_id, sizeof(f->drop_id), "%s", drop_id);
    if (upstream_call(req, r, 16u << 20, on_forwarded, xfree, f) != 0) {
        xfree(f);
        error_reply(req, 502, "server_error", NULL, "could not reach upstream %s", d->label);
    }
    up_request_free(r);
}

/* POST /v1/responses/input_tokens on the deployment's own endpoint: the exact count. */
static void forward_count(struct http_req *req, const struct deployment *d)
{
    struct up_request r;
    passthrough_request(&r, d, "POST", "/input_tokens");
    up_request_header(&r, "Content-Type", "application/json");
    if (wire_openai_splice_request(req->body.data ? req->body.data : "", req->body.len, d->model, false, &r.body) != 0) {
        up_request_free(&r);
        error_reply(req, 400, "invalid_request_error", NULL, "%s", "The request body is not a JSON object with a model.");
        return;
    }
    forward(req, &r, d, FWD_COUNT, NULL);
}

/* The count of a request (with the stored conversation it continues, or NULL): by the translated deployment's
 * own counting API when tdep is given, else the marked estimate. */
static void count_reply(struct http_req *req, const cJSON *body, const cJSON *history, const struct deployment *tdep)
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
    long long tokens = (long long)((n + 3) / 4);
    if (tokens < 1)
        tokens = 1;
    if (tdep)
        count_translated(req, tdep, canon, COUNT_RESPONSES, tokens);
    else
        count_reply_estimate(req, COUNT_RESPONSES, tokens);
    cJSON_Delete(canon);
}

static int lookup_dep(struct http_req *req, struct pending_req *p);

static void on_record(void *ud, int rc, const char *data, size_t len, const char *emsg)
{
    struct pending_req *p = ud;
    struct http_req *req = pending_take(p);
    if (req == NULL)
        goto out;
    if (rc == STORE_NOT_FOUND && p->op == OP_COUNT && p->count_dep) {
        forward_count(req, p->count_dep); /* not agentd's: the provider may know it */
        goto out;
    }
    if (rc == STORE_NOT_FOUND && p->op != OP_COUNT && lookup_dep(req, p) == 0)
        return; /* p now waits for the deployment record */
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
        count_reply(req, p->count_req, hist, p->count_tdep);
    }
    cJSON_Delete(rec);
out:
    cJSON_Delete(p->count_req);
    pending_free(p);
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
            if (lookup_dep(req, p) == 0)
                return; /* p now waits for the deployment record */
            not_found(req, p->id);
        } else {
            error_reply(req, 503, "server_error", NULL, "the response store is unavailable: %s", emsg ? emsg : "");
        }
    }
    pending_free(p);
}

static struct pending_req *pending_new(struct http_req *req, int op, struct str id)
{
    struct pending_req *p = xcalloc(1, sizeof(*p));
    p->req = req;
    p->op = op;
    memcpy(p->id, id.p, id.n);
    p->id[id.n] = '\0';
    p->prev_abort = req->on_abort;
    p->prev_abort_ud = req->abort_ud;
    req->on_abort = on_abort;
    req->abort_ud = p;
    return p;
}

/* ---- stored pass-through responses: GET / DELETE go to the deployment that holds them ---- */

static void on_dep(void *ud, int rc, const char *data, size_t len, const char *emsg)
{
    (void)emsg;
    struct pending_req *p = ud;
    struct http_req *req = pending_take(p);
    if (req == NULL)
        goto out;
    const struct deployment *d = NULL;
    if (rc == STORE_OK) {
        cJSON *rec = cJSON_ParseWithLength(data, len);
        const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "model"));
        const char *label = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "dep"));
        const struct model_entry *m = model ? registry_find(registry_of(req->cfg), str_from(model)) : NULL;
        for (size_t i = 0; m && label && i < m->ndeps; i++)
            if (strcmp(m->deps[i].label, label) == 0 && !m->deps[i].missing_key &&
                front_responses_provider(&m->deps[i]) == &provider_openai_responses)
                d = &m->deps[i];
        cJSON_Delete(rec);
    }
    if (d == NULL) { /* never recorded, expired, or its deployment is no longer configured */
        not_found(req, p->id);
        goto out;
    }
    struct up_request r;
    struct buf tail = BUF_INIT(BUF_UNBOUNDED);
    buf_append_char(&tail, '/');
    buf_append_str(&tail, p->id); /* id_ok: URL-safe characters only */
    if (p->op == OP_ITEMS) {
        buf_append_str(&tail, "/input_items");
        if (p->query.n) {
            buf_append_char(&tail, '?');
            buf_append(&tail, p->query.p, p->query.n);
        }
    }
    passthrough_request(&r, d, p->op == OP_DELETE ? "DELETE" : "GET", tail.data);
    buf_free(&tail);
    /* a DELETE drops the record once the provider deleted (or no longer has) the response */
    forward(req, &r, d, FWD_ITEM, p->op == OP_DELETE ? p->id : NULL);
out:
    pending_free(p);
}

/* 0 when p now waits for the deployment of a pass-through response (p's request is re-armed); -1 otherwise. */
static int lookup_dep(struct http_req *req, struct pending_req *p)
{
    struct store *st = store_shared(req->cfg);
    if (st == NULL)
        return -1;
    p->req = req;
    req->on_abort = on_abort;
    req->abort_ud = p;
    if (store_get(st, http_server_loop(req->server), "response_dep", p->id, on_dep, p) != 0) {
        pending_take(p);
        return -1;
    }
    return 0;
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
    const struct model_entry *m = registry_find(registry_of(req->cfg), str_from(h.model));
    if (m == NULL) {
        error_reply(req, 404, "invalid_request_error", "model",
                    "The model `%s` does not exist or you do not have access to it.", h.model);
        return;
    }
    /* the deployment that counts: the model's first with credentials (configuration order) */
    const struct deployment *primary = NULL;
    for (size_t i = 0; i < m->ndeps && primary == NULL; i++)
        if (!m->deps[i].missing_key)
            primary = &m->deps[i];
    const struct deployment *pd =
        primary && front_responses_provider(primary) == &provider_openai_responses ? primary : NULL;
    const struct deployment *td = primary && !pd && primary->prov && primary->prov->encode_count ? primary : NULL;
    if (pd && (h.previous_response_id[0] == '\0' || st == NULL)) {
        forward_count(req, pd);
        return;
    }
    cJSON *body = cJSON_ParseWithLength(req->body.data, req->body.len);
    if (h.previous_response_id[0] == '\0' || st == NULL) {
        count_reply(req, body, NULL, td);
        cJSON_Delete(body);
        return;
    }
    struct pending_req *p = pending_new(req, OP_COUNT, str_from(h.previous_response_id));
    p->count_req = body;
    p->count_dep = pd;
    p->count_tdep = td;
    if (store_get(st, http_server_loop(req->server), "response", p->id, on_record, p) != 0) {
        pending_take(p);
        error_reply(req, 404, "invalid_request_error", "previous_response_id",
                    "Previous response with id '%s' not found.", p->id);
        cJSON_Delete(body);
        pending_free(p);
    }
}

/* POST /v1/responses/input_tokens runs through the spine (authenticate, route, admit: gw_submit_counted) once
 * its body is a Responses request with a model; the count itself is input_tokens. */
static void input_tokens_run(struct http_req *req, const struct model_entry *m)
{
    (void)m; /* input_tokens finds it again in the same registry snapshot */
    input_tokens(req, store_shared(req->cfg));
}

static void input_tokens_submit(struct http_req *req)
{
    struct responses_head h;
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    if (responses_parse_head(req->body.data ? req->body.data : "", req->body.len, &h, &err) != 0) {
        error_reply(req, 400, "invalid_request_error", err.param[0] ? err.param : NULL, "%s", err.message);
        return;
    }
    gw_submit_counted(req, &front_responses, h.model, input_tokens_run);
}

void responses_http_item(struct http_req *req)
{
    /* /v1/responses/<rest> or /responses/<rest> */
    struct str path = req->path;
    size_t skip = str_starts_with(path, str_from("/v1/responses/")) ? 14 : 11;
    struct str rest = str_make(path.p + skip, path.n - skip);
    struct store *st = store_shared(req->cfg);
    if (req->method == HTTP_M_POST && str_eq_cstr(rest, "input_tokens")) {
        input_tokens_submit(req);
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
    if (op == OP_ITEMS && req->query.n > 0 && req->query.n < 2048 && query_safe(req->query)) {
        p->query_copy = xstrndup(req->query.p, req->query.n);
        p->query = str_make(p->query_copy, req->query.n);
    }
    uv_loop_t *loop = http_server_loop(req->server);
    int rc = op == OP_DELETE ? store_delete(st, loop, "response", p->id, on_deleted, p)
                             : store_get(st, loop, "response", p->id, on_record, p);
    if (rc != 0) {
        pending_take(p);
        not_found(req, p->id);
        pending_free(p);
    }
}
