/* anthropic_threads.c: Anthropic message threads held in agentd's store (anthropic_threads.h). */
#include "gateway/anthropic_threads.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "policy/auth.h"
#include "store/store_config.h"

#define MAX_TOOLS 256 /* tool calls kept from one streamed reply (as the stream writer's own bound) */

struct tool_acc {
    char *id, *name;
    struct buf args;
};

struct athread {
    struct exchange *ex; /* the exchange whose front state holds this (alive while a look-up holds a reference) */
    enum athread_mode mode;
    char prev[ATHREAD_MAX_ID + 1];
    bool missing;     /* a continue whose id agentd does not hold (an Anthropic deployment may) */
    bool no_store;    /* the store is disabled: agentd cannot hold this thread */
    bool kept;
    size_t held_bytes; /* the held record a continue was rebuilt from */
    struct buf body;  /* the rebuilt request for an Anthropic deployment; ex->rq.body points here */
    /* a translated stream's reply, from its deltas */
    struct buf text;
    struct tool_acc *tools;
    int ntools;
};

/* ---------- validation (parse) ---------- */

int athread_check(const struct jval *v, enum athread_mode *mode, char *id, struct gw_error *err)
{
    *mode = ATHREAD_NONE;
    id[0] = '\0';
    if (v->type == J_NONE || v->type == J_NULL)
        return 0;
    if (v->type != J_OBJECT)
        return gw_bad_request(err, NULL, "thread: Input should be a valid dictionary or object to extract fields from");
    static const char *const keys[] = {"type", "previous_message_id"};
    struct jval f[2];
    if (jscan_fields(v->raw.p, v->raw.n, keys, f, 2, NULL, NULL) != 0)
        return gw_bad_request(err, NULL, "thread: invalid object");
    if (jval_is_str(&f[0], "create")) {
        if (f[1].type != J_NONE && f[1].type != J_NULL)
            return gw_bad_request(err, NULL, "thread.create.previous_message_id: Extra inputs are not permitted");
        *mode = ATHREAD_CREATE;
        return 0;
    }
    if (!jval_is_str(&f[0], "continue"))
        return gw_bad_request(err, NULL,
                              "thread: Input tag found using 'type' does not match any of the expected tags: "
                              "'create', 'continue'");
    if (f[1].type == J_NONE)
        return gw_bad_request(err, NULL, "thread.continue.previous_message_id: Field required");
    struct buf b = BUF_INIT(ATHREAD_MAX_ID);
    int rc = f[1].type == J_STRING ? jval_str(&f[1], &b) : -1;
    bool ok = rc == 0 && b.len > 0 && b.len <= ATHREAD_MAX_ID && memchr(b.data, '\0', b.len) == NULL;
    if (ok)
        memcpy(id, b.data, b.len + 1);
    buf_free(&b);
    if (!ok)
        return gw_bad_request(err, NULL,
                              "thread.continue.previous_message_id: Input should be a valid string of 1 to %d "
                              "characters",
                              ATHREAD_MAX_ID);
    *mode = ATHREAD_CONTINUE;
    return 0;
}

/* ---------- prepare ---------- */

void athread_free(struct athread *t)
{
    if (t == NULL)
        return;
    buf_free(&t->body);
    buf_free(&t->text);
    for (int i = 0; i < t->ntools; i++) {
        xfree(t->tools[i].id);
        xfree(t->tools[i].name);
        buf_free(&t->tools[i].args);
    }
    xfree(t->tools);
    xfree(t);
}

/* Does a deployment of the model hold threads itself (Anthropic, the body passed through)? */
static bool model_has_anthropic(const struct exchange *ex)
{
    for (size_t i = 0; ex->model && i < ex->model->ndeps; i++)
        if (ex->model->deps[i].prov && ex->model->deps[i].prov->wire == WIRE_ANTHROPIC)
            return true;
    return false;
}

static void thread_error(struct gw_error *err, int status, const char *code, const char *fmt, const char *arg)
{
    gw_error_set(err, status, status == 404 ? GW_ERR_NOT_FOUND : GW_ERR_INVALID_REQUEST, fmt, arg);
    snprintf(err->code, sizeof(err->code), "%s", code);
}

static void not_found(struct gw_error *err, const char *id)
{
    thread_error(err, 404, "thread_not_found",
                 "thread.continue.previous_message_id: no message thread with id '%.128s' (it expired, was never "
                 "held here, or was created on another deployment); send the full conversation under a new thread",
                 id);
}

/* A fresh message id: a thread's record is stored under it, so it must not be one a client chose (x-request-id). */
static void new_id(char *out, size_t size)
{
    unsigned char rnd[12];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        uint64_t x = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < sizeof(rnd); i++, x = x * 6364136223846793005ULL + 1442695040888963407ULL)
            rnd[i] = (unsigned char)(x >> 56);
    }
    static const char hex[] = "0123456789abcdef";
    char h[2 * sizeof(rnd) + 1];
    for (size_t i = 0; i < sizeof(rnd); i++) {
        h[2 * i] = hex[rnd[i] >> 4];
        h[2 * i + 1] = hex[rnd[i] & 15];
    }
    h[sizeof(h) - 1] = '\0';
    snprintf(out, size, "msg_agentd%s", h);
}

static cJSON *tree_of(struct exchange *ex)
{
    if (ex->rq.client_tree == NULL)
        ex->rq.client_tree = cJSON_ParseWithLength(ex->rq.body.p, ex->rq.body.n);
    return ex->rq.client_tree;
}

/* The virtual key a thread belongs to: a thread created under a key continues under that key only. */
static const char *key_of(const struct exchange *ex)
{
    return ex->rq.who && ex->rq.who->key_id ? ex->rq.who->key_id : NULL;
}

static bool same_key(const struct exchange *ex, const cJSON *rec)
{
    const char *held = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "key_id"));
    const char *mine = key_of(ex);
    return held == NULL || (mine && strcmp(held, mine) == 0);
}

/* The stored conversation + this turn: the full request the deployments get. */
static int rebuild(struct exchange *ex, struct athread *t, cJSON *rec, struct gw_error *err)
{
    cJSON *tree = tree_of(ex);
    cJSON *hist = cJSON_GetObjectItemCaseSensitive(rec, "messages");
    if (tree == NULL || !cJSON_IsArray(hist)) {
        gw_error_set(err, 500, GW_ERR_API, "the message thread %.128s is unreadable", t->prev);
        return -1;
    }
    cJSON *msgs = cJSON_DetachItemFromObjectCaseSensitive(tree, "messages");
    cJSON *all = cJSON_DetachItemFromObjectCaseSensitive(rec, "messages");
    cJSON *m;
    while (msgs && (m = cJSON_DetachItemFromArray(msgs, 0)) != NULL)
        cJSON_AddItemToArray(all, m);
    cJSON_Delete(msgs);
    cJSON_AddItemToObject(tree, "messages", all);
    static const char *const kept[] = {"system", "tools"};
    for (size_t i = 0; i < 2; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(tree, kept[i]);
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(rec, kept[i]);
        if (v && !cJSON_IsNull(v))
            cJSON_AddItemToObject(tree, kept[i], v);
        else
            cJSON_Delete(v);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(tree, "thread");
    if (model_has_anthropic(ex)) {
        /* Anthropic does not know this thread: it gets the whole conversation, and holds it from now on */
        cJSON *th = cJSON_AddObjectToObject(tree, "thread");
        cJSON_AddStringToObject(th, "type", "create");
        char *s = cJSON_PrintUnformatted(tree);
        cJSON_DeleteItemFromObjectCaseSensitive(tree, "thread");
        if (s == NULL) {
            gw_error_set(err, 500, GW_ERR_API, "could not rebuild the message thread %.128s", t->prev);
            return -1;
        }
        buf_reset(&t->body);
        buf_append_str(&t->body, s);
        cJSON_free(s);
        ex->rq.body = str_make(t->body.data, t->body.len);
    }
    return 0;
}

static void on_thread(void *ud, int rc, const char *data, size_t len, const char *emsg)
{
    struct athread *t = ud;
    struct exchange *ex = t->ex;
    if (!ex->done) {
        struct gw_error err;
        if (rc == STORE_OK) {
            t->held_bytes = len;
            cJSON *rec = cJSON_ParseWithLength(data, len);
            if (!same_key(ex, rec)) { /* another key's thread: as if unknown (its id says nothing more) */
                t->held_bytes = 0;
                t->missing = true;
                not_found(&err, t->prev);
                ex_fail(ex, &err);
            } else if (rebuild(ex, t, rec, &err) == 0)
                ex_resume(ex);
            else
                ex_fail(ex, &err);
            cJSON_Delete(rec);
        } else if (rc == STORE_NOT_FOUND) {
            t->missing = true;
            if (model_has_anthropic(ex)) {
                ex_resume(ex); /* Anthropic may hold it; translated attempts answer thread_not_found */
            } else {
                not_found(&err, t->prev);
                ex_fail(ex, &err);
            }
        } else {
            gw_error_set(&err, 503, GW_ERR_OVERLOADED, "the thread store is unavailable: %s", emsg ? emsg : "");
            ex_fail(ex, &err);
        }
    }
    ex_unref(ex);
}

int athread_prepare(struct exchange *ex, struct athread **slot)
{
    struct gw_error err;
    struct jval v;
    if (jscan_get(ex->rq.body.p, ex->rq.body.n, "thread", &v) != 0)
        v.type = J_NONE;
    enum athread_mode mode;
    char id[ATHREAD_MAX_ID + 1];
    if (athread_check(&v, &mode, id, &err) != 0) {
        ex_fail(ex, &err);
        return EX_END;
    }
    if (mode == ATHREAD_NONE)
        return EX_CONTINUE;
    struct athread *t = xcalloc(1, sizeof(*t));
    *slot = t;
    t->ex = ex;
    t->mode = mode;
    memcpy(t->prev, id, sizeof(t->prev));
    buf_init(&t->body, BUF_UNBOUNDED);
    buf_init(&t->text, BUF_UNBOUNDED);
    struct store *st = store_shared(ex->rq.cfg);
    t->no_store = st == NULL;
    if (st)
        new_id(ex->id, sizeof(ex->id));
    if (st == NULL && !model_has_anthropic(ex)) {
        thread_error(&err, 400, "thread_unsupported_request",
                     "thread: message threads need agentd's store (store.enabled) or an Anthropic deployment, and "
                     "model %.200s has neither; send the full conversation without `thread`",
                     ex->rq.model_name);
        ex_fail(ex, &err);
        return EX_END;
    }
    cJSON *tree = tree_of(ex);
    if (tree == NULL) {
        gw_error_set(&err, 400, GW_ERR_INVALID_REQUEST, "There was an issue with your request body: invalid JSON");
        ex_fail(ex, &err);
        return EX_END;
    }
    if (mode == ATHREAD_CONTINUE) {
        static const char *const create_only[] = {"system", "tools"};
        for (size_t i = 0; i < 2; i++) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(tree, create_only[i]);
            if (f && !cJSON_IsNull(f)) {
                gw_error_set(&err, 400, GW_ERR_INVALID_REQUEST,
                             "%s: a thread keeps the `%s` it was created with; a `continue` turn cannot set it (start "
                             "a new thread to change it)",
                             create_only[i], create_only[i]);
                ex_fail(ex, &err);
                return EX_END;
            }
        }
    }
    if (mode == ATHREAD_CREATE && st != NULL)
        cJSON_DeleteItemFromObjectCaseSensitive(tree, "thread"); /* translation sees a plain request */
    if (mode == ATHREAD_CREATE || st == NULL)
        return EX_CONTINUE; /* a create needs nothing yet; without a store only Anthropic can continue */
    ex_ref(ex);
    if (store_get(st, ex_worker_loop(ex->gw), "thread", t->prev, on_thread, t) != 0) {
        ex_unref(ex);
        t->missing = true;
        if (model_has_anthropic(ex))
            return EX_CONTINUE;
        not_found(&err, t->prev);
        ex_fail(ex, &err);
        return EX_END;
    }
    return EX_WAIT;
}

size_t athread_held_bytes(const struct athread *t)
{
    return t && !t->missing && t->body.len == 0 ? t->held_bytes : 0;
}

int athread_translatable(const struct athread *t, struct gw_error *err)
{
    if (t == NULL || t->mode == ATHREAD_NONE)
        return 0;
    /* both refusals defer to a later deployment of the plan (an Anthropic one can hold the thread) */
    if (t->no_store) {
        thread_error(err, 400, "thread_unsupported_request",
                     "thread: message threads are held only by Anthropic deployments here (store.enabled is false) "
                     "and this attempt went to %s; send the full conversation without `thread`",
                     "another provider");
        err->retryable = true;
        return -1;
    }
    if (t->missing) {
        not_found(err, t->prev);
        err->retryable = true;
        return -1;
    }
    return 0;
}

/* ---------- recording the reply ---------- */

void athread_delta(struct athread *t, const struct chat_delta *d)
{
    if (t == NULL || t->mode == ATHREAD_NONE)
        return;
    switch (d->kind) {
    case DELTA_TEXT: buf_append(&t->text, d->text.p, d->text.n); break;
    case DELTA_TOOL_START:
    case DELTA_TOOL_ARGS:
        if (t->ntools < MAX_TOOLS && d->tool_index == t->ntools) { /* a new call (arguments may come first) */
            t->tools = xrealloc(t->tools, (size_t)(t->ntools + 1) * sizeof(*t->tools));
            struct tool_acc *a = &t->tools[t->ntools++];
            a->id = xstrndup(d->tool_id.p ? d->tool_id.p : "", d->tool_id.n);
            a->name = xstrndup(d->tool_name.p ? d->tool_name.p : "", d->tool_name.n);
            buf_init(&a->args, BUF_UNBOUNDED);
        }
        if (d->kind == DELTA_TOOL_ARGS && d->tool_index >= 0 && d->tool_index < t->ntools)
            buf_append(&t->tools[d->tool_index].args, d->text.p, d->text.n);
        break;
    default: break;
    }
}

/* The streamed reply as Anthropic content blocks. */
static cJSON *content_of_deltas(const struct athread *t)
{
    cJSON *c = cJSON_CreateArray();
    if (t->text.len) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        char *s = xstrndup(t->text.data, t->text.len);
        cJSON_AddStringToObject(b, "text", s);
        xfree(s);
        cJSON_AddItemToArray(c, b);
    }
    for (int i = 0; i < t->ntools; i++) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", t->tools[i].id);
        cJSON_AddStringToObject(b, "name", t->tools[i].name);
        cJSON *in = t->tools[i].args.len ? cJSON_ParseWithLength(t->tools[i].args.data, t->tools[i].args.len) : NULL;
        if (!cJSON_IsObject(in)) {
            cJSON_Delete(in);
            in = cJSON_CreateObject();
        }
        cJSON_AddItemToObject(b, "input", in);
        cJSON_AddItemToArray(c, b);
    }
    return c;
}

static void on_stored(void *ud, int rc, const char *emsg)
{
    (void)ud;
    if (rc != STORE_OK)
        log_warn("anthropic: a message thread was not stored: %s", emsg && emsg[0] ? emsg : "store error");
}

void athread_keep(struct exchange *ex, struct athread *t, const cJSON *message)
{
    if (t == NULL || t->mode == ATHREAD_NONE || t->kept || t->missing)
        return;
    struct store *st = store_shared(ex->rq.cfg);
    const cJSON *tree = ex->rq.client_tree;
    if (st == NULL || tree == NULL)
        return;
    t->kept = true;
    cJSON *content = message ? cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(message, "content"), 1)
                             : content_of_deltas(t);
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(content);
        return;
    }
    cJSON *rec = cJSON_CreateObject();
    if (key_of(ex))
        cJSON_AddStringToObject(rec, "key_id", key_of(ex));
    static const char *const kept[] = {"system", "tools"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(tree, kept[i]);
        cJSON_AddItemToObject(rec, kept[i], v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(tree, "messages");
    cJSON *all = cJSON_IsArray(msgs) ? cJSON_Duplicate(msgs, 1) : cJSON_CreateArray();
    cJSON *reply = cJSON_CreateObject();
    cJSON_AddStringToObject(reply, "role", "assistant");
    cJSON_AddItemToObject(reply, "content", content);
    cJSON_AddItemToArray(all, reply);
    cJSON_AddItemToObject(rec, "messages", all);
    char *s = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    if (s && store_put(st, ex_worker_loop(ex->gw), "thread", ex->id, s, strlen(s), 0, on_stored, NULL) != 0)
        log_warn("anthropic: message thread %s is too large to store (store.responses_max_bytes)", ex->id);
    cJSON_free(s);
}
