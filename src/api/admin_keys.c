/* admin_keys.c: key management shared by the CLI and the admin API (see admin_keys.h).
 *
 * The admin API answers on the API listener: POST /admin/keys (create), GET /admin/keys (list),
 * GET|PATCH|DELETE /admin/keys/{id}. The caller presents AGENTD_ADMIN_KEY as `Authorization: Bearer` (or
 * x-api-key); without the variable the API does not exist (404). The body is parsed on the worker (bounded by
 * server.limits.body_bytes); the store is only touched on the libuv thread pool, never on the worker loop. */
#include "api/admin_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/log.h"
#include "policy/auth.h"
#include "store/keys_store.h"
#include "store/store_config.h"

/* ---------- the operations ---------- */

int keys_admin_open(struct keys_admin *a, const char *data_dir, struct buf *err)
{
    a->ops = store_keys_ops();
    a->st = a->ops->open(data_dir, err);
    if (a->st == NULL)
        return -1;
    /* the pepper: the store's when it keeps one (shared by replicas), else the data dir's file */
    uint8_t pepper[32];
    if ((a->ops->pepper ? a->ops->pepper(a->st, pepper, err) : key_pepper_load(data_dir, pepper, err)) != 0) {
        keys_admin_close(a);
        return -1;
    }
    key_hasher_init(&a->hasher, pepper);
    OPENSSL_cleanse(pepper, sizeof(pepper));
    return 0;
}

void keys_admin_close(struct keys_admin *a)
{
    if (a->st)
        a->ops->close(a->st);
    a->st = NULL;
}

static int error(cJSON **out, int status, const char *type, const char *param, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    cJSON_AddStringToObject(e, "code", status == 404 ? "key_not_found" : type);
    *out = o;
    return status;
}

/* The field named in a key_apply_json message ("field 'x' ..."), for OpenAI's "param". */
static void param_of(const char *msg, char *out, size_t n)
{
    out[0] = '\0';
    const char *q = strchr(msg, '\'');
    const char *e = q ? strchr(q + 1, '\'') : NULL;
    if (q && e && (size_t)(e - q - 1) < n) {
        memcpy(out, q + 1, (size_t)(e - q - 1));
        out[e - q - 1] = '\0';
    }
}

static int store_error(cJSON **out, struct buf *err)
{
    log_error("key store: %s", err->data ? err->data : "?");
    return error(out, 500, "server_error", NULL, "the key store is not available");
}

static bool id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n < 5 || n >= KEY_ID_MAX || strncmp(id, "key_", 4) != 0)
        return false;
    for (size_t i = 4; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

int keys_admin_exec(struct keys_admin *a, enum keys_op op, const char *id, const cJSON *body, int64_t now,
                    cJSON **out)
{
    struct buf err = BUF_INIT(4096);
    char msg[512], param[80];
    struct key_record r = {0};
    int status = 500;
    if (op != KEYS_OP_CREATE && op != KEYS_OP_LIST && !id_ok(id)) {
        status = error(out, 404, "not_found_error", NULL, "no such key");
        goto done;
    }
    switch (op) {
    case KEYS_OP_CREATE: {
        if (key_apply_json(&r, body, true, now, msg, sizeof(msg)) != 0) {
            param_of(msg, param, sizeof(param));
            status = error(out, 400, "invalid_request_error", param[0] ? param : NULL, msg);
            break;
        }
        char secret[KEY_SECRET_MAX];
        if (key_secret_new(secret, sizeof(secret)) != 0 || key_id_new(r.id) != 0) {
            status = error(out, 500, "server_error", NULL, "no randomness available");
            break;
        }
        key_set_secret(&r, &a->hasher, secret);
        r.created_at = now;
        if (a->ops->insert(a->st, &r, &err) != 0) {
            OPENSSL_cleanse(secret, sizeof(secret));
            status = store_error(out, &err);
            break;
        }
        *out = key_to_json(&r, now);
        cJSON_AddStringToObject(*out, "key", secret);
        OPENSSL_cleanse(secret, sizeof(secret));
        status = 201;
        break;
    }
    case KEYS_OP_LIST: {
        struct key_record *v;
        size_t n;
        if (a->ops->list(a->st, &v, &n, &err) != 0) {
            status = store_error(out, &err);
            break;
        }
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, key_to_json(&v[i], now));
        keys_records_free(v, n);
        *out = arr;
        status = 200;
        break;
    }
    case KEYS_OP_SHOW:
    case KEYS_OP_UPDATE:
    case KEYS_OP_REVOKE: {
        int rc = a->ops->get(a->st, id, &r, &err);
        if (rc < 0) {
            status = store_error(out, &err);
            break;
        }
        if (rc > 0) {
            status = error(out, 404, "not_found_error", NULL, "no such key");
            break;
        }
        if (op == KEYS_OP_UPDATE) {
            if (key_apply_json(&r, body, false, now, msg, sizeof(msg)) != 0) {
                param_of(msg, param, sizeof(param));
                status = error(out, 400, "invalid_request_error", param[0] ? param : NULL, msg);
                break;
            }
        } else if (op == KEYS_OP_REVOKE && r.revoked_at == 0) {
            r.revoked_at = now;
        }
        if (op != KEYS_OP_SHOW) {
            rc = a->ops->update(a->st, &r, &err);
            if (rc != 0) {
                status = rc < 0 ? store_error(out, &err) : error(out, 404, "not_found_error", NULL, "no such key");
                break;
            }
        }
        *out = key_to_json(&r, now);
        status = 200;
        break;
    }
    }
done:
    key_record_free(&r);
    buf_free(&err);
    return status;
}

/* ---------- the admin API ---------- */

static struct {
    bool enabled;
    uint8_t admin_hash[32]; /* SHA-256 of AGENTD_ADMIN_KEY: compared in constant time whatever the length */
    char *data_dir;
    pthread_mutex_t lock; /* one store connection, used by one thread-pool thread at a time */
    struct keys_admin a;
    bool opened;
} A = {.lock = PTHREAD_MUTEX_INITIALIZER};

void admin_keys_init(const char *data_dir)
{
    const char *k = getenv("AGENTD_ADMIN_KEY");
    A.enabled = k && strlen(k) >= ADMIN_KEY_MIN;
    if (A.enabled)
        SHA256((const unsigned char *)k, strlen(k), A.admin_hash);
    else if (k && *k)
        log_warn("AGENTD_ADMIN_KEY is shorter than %d characters: the admin API (/admin/...) stays off",
                 ADMIN_KEY_MIN);
    A.data_dir = xstrdup(data_dir);
}

void admin_keys_shutdown(void)
{
    keys_admin_close(&A.a);
    A.opened = false;
    xfree(A.data_dir);
    A.data_dir = NULL;
    OPENSSL_cleanse(A.admin_hash, sizeof(A.admin_hash));
}

struct admin_job {
    uv_work_t work;
    struct http_req *req;
    enum keys_op op;
    char id[KEY_ID_MAX];
    cJSON *body;
    int status;
    char *answer;
};

static void job_work(uv_work_t *w)
{
    struct admin_job *j = w->data;
    cJSON *out = NULL;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&A.lock);
    if (!A.opened) {
        struct buf err = BUF_INIT(4096);
        if (keys_admin_open(&A.a, A.data_dir, &err) == 0) {
            A.opened = true;
        } else {
            keys_admin_close(&A.a);
            j->status = store_error(&out, &err);
        }
        buf_free(&err);
    }
    if (A.opened)
        j->status = keys_admin_exec(&A.a, j->op, j->id, j->body, now, &out);
    pthread_mutex_unlock(&A.lock);
    if (j->op == KEYS_OP_CREATE && j->status < 300) { /* the audit line names the key created */
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(out, "id");
        if (cJSON_IsString(id))
            snprintf(j->id, sizeof(j->id), "%s", id->valuestring);
    }
    j->answer = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
}

static void respond_json(struct http_req *req, int status, const char *s)
{
    http_respond(req, status, "application/json", s, strlen(s));
}

/* One audit line per change made through the admin API (reads are not logged). */
static void audit(const struct admin_job *j, int status)
{
    static const char *const ops[] = {[KEYS_OP_CREATE] = "create", [KEYS_OP_UPDATE] = "update",
                                      [KEYS_OP_REVOKE] = "revoke"};
    if (j->op != KEYS_OP_CREATE && j->op != KEYS_OP_UPDATE && j->op != KEYS_OP_REVOKE)
        return;
    struct log_line l;
    if (!log_begin(&l, LL_INFO, "admin audit"))
        return;
    log_field_cstr(&l, "op", ops[j->op]);
    log_field_cstr(&l, "key_id", j->id);
    log_field_int(&l, "status", status);
    log_field_cstr(&l, "request_id", j->req->request_id);
    log_end(&l);
}

static void job_done(uv_work_t *w, int status)
{
    struct admin_job *j = w->data;
    audit(j, status != 0 || j->answer == NULL ? 500 : j->status);
    if (status != 0 || j->answer == NULL)
        respond_json(j->req, 500, "{\"error\":{\"message\":\"the key store is not available\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":\"server_error\"}}");
    else
        respond_json(j->req, j->status, j->answer);
    cJSON_free(j->answer);
    cJSON_Delete(j->body);
    xfree(j);
}

static void respond_error(struct http_req *req, int status, const char *type, const char *param, const char *msg)
{
    cJSON *o = NULL;
    error(&o, status, type, param, msg);
    char *s = cJSON_PrintUnformatted(o);
    respond_json(req, status, s);
    cJSON_free(s);
    cJSON_Delete(o);
}

static bool admin_authorized(struct http_req *req)
{
    struct str k = auth_secret_from(http_req_header(req, "authorization"), http_req_header(req, "x-api-key"),
                                    http_req_header(req, "api-key"));
    uint8_t h[32];
    SHA256((const unsigned char *)(k.p ? k.p : ""), k.n, h);
    return k.n > 0 && CRYPTO_memcmp(h, A.admin_hash, sizeof(h)) == 0;
}

bool admin_guard(struct http_req *req, const char *route)
{
    if (!A.enabled) {
        respond_error(req, 404, "not_found_error", NULL, "not found");
        return false;
    }
    if (!admin_authorized(req)) {
        auth_refused(AUTH_R_ADMIN, NULL, req->request_id, route);
        http_resp_header(req, "WWW-Authenticate", "Bearer");
        respond_error(req, 401, "authentication_error", NULL, "a valid admin key is required");
        return false;
    }
    return true;
}

void admin_keys_handle(struct http_req *req)
{
    if (!admin_guard(req, "/admin/keys"))
        return;
    struct admin_job *j = xcalloc(1, sizeof(*j));
    j->req = req;
    struct str p = req->path;
    static const char base[] = "/admin/keys";
    struct str rest = str_make(p.p + sizeof(base) - 1, p.n - (sizeof(base) - 1)); /* the router matched base */
    if (rest.n > 0 && rest.p[0] == '/') {
        rest = str_make(rest.p + 1, rest.n - 1);
    } else if (rest.n > 0) {
        xfree(j);
        respond_error(req, 404, "not_found_error", NULL, "not found");
        return;
    }
    bool has_id = rest.n > 0;
    if (has_id && (rest.n >= KEY_ID_MAX || memchr(rest.p, '/', rest.n))) {
        xfree(j);
        respond_error(req, 404, "not_found_error", NULL, "no such key");
        return;
    }
    memcpy(j->id, rest.p, rest.n);
    j->id[rest.n] = '\0';
    unsigned m = req->method;
    if (!has_id && (m & (HTTP_M_GET | HTTP_M_HEAD)))
        j->op = KEYS_OP_LIST;
    else if (!has_id && m == HTTP_M_POST)
        j->op = KEYS_OP_CREATE;
    else if (has_id && (m & (HTTP_M_GET | HTTP_M_HEAD)))
        j->op = KEYS_OP_SHOW;
    else if (has_id && m == HTTP_M_PATCH)
        j->op = KEYS_OP_UPDATE;
    else if (has_id && m == HTTP_M_DELETE)
        j->op = KEYS_OP_REVOKE;
    else {
        xfree(j);
        http_resp_header(req, "Allow", has_id ? "GET, PATCH, DELETE" : "GET, POST");
        respond_error(req, 405, "invalid_request_error", NULL, "method not allowed");
        return;
    }
    if (j->op == KEYS_OP_CREATE || j->op == KEYS_OP_UPDATE) {
        j->body = cJSON_ParseWithLength(req->body.data ? req->body.data : "", req->body.len);
        if (!cJSON_IsObject(j->body)) {
            cJSON_Delete(j->body);
            xfree(j);
            respond_error(req, 400, "invalid_request_error", NULL, "the body must be a JSON object");
            return;
        }
    }
    j->work.data = j;
    if (uv_queue_work(http_server_loop(req->server), &j->work, job_work, job_done) != 0) {
        cJSON_Delete(j->body);
        xfree(j);
        respond_error(req, 503, "server_error", NULL, "busy");
    }
}
