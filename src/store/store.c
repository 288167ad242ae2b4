/* store.c: the backend-neutral half of the store: lazy open, bounds checks on ids, and the asynchronous calls
 * that run the backend on the libuv thread pool and call back on the loop (store.h). */
#include "store/store.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/timeutil.h"

/* A put queued and not yet written: visible to gets at once, so that a client that reads what it was just
 * answered (GET /v1/responses/{id}, previous_response_id on its next request) never races the pool thread. */
struct pending {
    struct pending *next, *prev;
    char kind[STORE_MAX_ID + 1], id[STORE_MAX_ID + 1];
    void *data;   /* owned by the entry */
    size_t len;
    int64_t ttl_ms;
    bool deleted; /* a delete came after it: the put is skipped */
    bool claimed; /* a flush is writing it */
};

struct store {
    const struct store_ops *ops;
    pthread_mutex_t pending_mu;
    pthread_mutex_t flush_mu; /* one flush at a time, so batches do not split */
    struct pending *pending, *pending_tail; /* newest first; the tail is the oldest */
    size_t npending, pending_bytes;
    struct store_options o;
    char *dir;
    pthread_mutex_t open_mu; /* guards the lazy open only; the backend serialises its own calls */
    void *backend;
    bool open_failed;
    char open_err[256];
};

static int64_t wall_ms(void)
{
    return (int64_t)(time_wall_us() / 1000);
}

static int64_t (*clock_fn)(void) = wall_ms;

int64_t store_now_ms(void)
{
    return clock_fn();
}

void store_set_clock_for_tests(int64_t (*now_ms)(void))
{
    clock_fn = now_ms ? now_ms : wall_ms;
}

struct store *store_new(const struct store_ops *ops, const struct store_options *o)
{
    struct store *s = xcalloc(1, sizeof(*s));
    s->ops = ops;
    s->o = *o;
    s->dir = xstrdup(o->dir ? o->dir : "");
    s->o.dir = s->dir;
    pthread_mutex_init(&s->open_mu, NULL);
    pthread_mutex_init(&s->pending_mu, NULL);
    pthread_mutex_init(&s->flush_mu, NULL);
    return s;
}

void store_free(struct store *s)
{
    if (s == NULL)
        return;
    if (s->backend)
        s->ops->close(s->backend);
    while (s->pending) { /* puts whose work never ran (a loop closed with them queued) */
        struct pending *p = s->pending;
        s->pending = p->next;
        xfree(p->data);
        xfree(p);
    }
    pthread_mutex_destroy(&s->open_mu);
    pthread_mutex_destroy(&s->pending_mu);
    pthread_mutex_destroy(&s->flush_mu);
    xfree(s->dir);
    xfree(s);
}

/* The backend, opened on first use (on the thread that runs the operation). A failed open is remembered: the
 * data dir does not become writable by retrying on every request. */
static void *backend(struct store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->open_mu);
    if (s->backend == NULL && !s->open_failed) {
        s->backend = s->ops->open(&s->o, s->open_err, sizeof(s->open_err));
        s->open_failed = s->backend == NULL;
    }
    void *b = s->backend;
    if (b == NULL)
        snprintf(err, errlen, "%s", s->open_err[0] ? s->open_err : "the store could not be opened");
    pthread_mutex_unlock(&s->open_mu);
    return b;
}

static bool name_ok(const char *s)
{
    size_t n = s ? strnlen(s, STORE_MAX_ID + 1) : 0;
    return n > 0 && n <= STORE_MAX_ID;
}

int store_put_sync(struct store *s, const char *kind, const char *id, const void *data, size_t len, int64_t ttl_ms,
                   char *err, size_t errlen)
{
    err[0] = '\0';
    if (!name_ok(kind) || !name_ok(id)) {
        snprintf(err, errlen, "store: a kind and an id are 1 to %d bytes", STORE_MAX_ID);
        return STORE_ERROR;
    }
    if ((s->o.max_bytes > 0 && (int64_t)len > s->o.max_bytes) || len > STORE_MAX_RECORD) {
        snprintf(err, errlen, "store: a record of %zu bytes is larger than the store's bound (%lld bytes)", len,
                 (long long)(s->o.max_bytes > 0 && s->o.max_bytes < STORE_MAX_RECORD ? s->o.max_bytes
                                                                                      : STORE_MAX_RECORD));
        return STORE_TOO_LARGE;
    }
    void *b = backend(s, err, errlen);
    if (b == NULL)
        return STORE_ERROR;
    int64_t now = store_now_ms();
    if (ttl_ms <= 0)
        ttl_ms = s->o.max_age_ms;
    if (s->o.max_age_ms > 0 && ttl_ms > s->o.max_age_ms)
        ttl_ms = s->o.max_age_ms;
    int64_t expires = ttl_ms > 0 ? now + ttl_ms : INT64_MAX;
    return s->ops->put(b, kind, id, now, expires, data, len, err, errlen);
}

int store_get_sync(struct store *s, const char *kind, const char *id, struct buf *out, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!name_ok(kind) || !name_ok(id))
        return STORE_NOT_FOUND;
    int rc = -99;
    pthread_mutex_lock(&s->pending_mu);
    for (struct pending *p = s->pending; p; p = p->next) /* the newest first */
        if (strcmp(p->kind, kind) == 0 && strcmp(p->id, id) == 0) {
            rc = p->deleted ? STORE_NOT_FOUND : buf_append(out, p->data, p->len) == 0 ? STORE_OK : STORE_ERROR;
            break;
        }
    pthread_mutex_unlock(&s->pending_mu);
    if (rc != -99)
        return rc;
    void *b = backend(s, err, errlen);
    if (b == NULL)
        return STORE_ERROR;
    return s->ops->get(b, kind, id, store_now_ms(), out, err, errlen);
}

int store_delete_sync(struct store *s, const char *kind, const char *id, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!name_ok(kind) || !name_ok(id))
        return STORE_NOT_FOUND;
    bool was_pending = false;
    pthread_mutex_lock(&s->flush_mu); /* a put being written finishes first, then this delete removes it */
    pthread_mutex_lock(&s->pending_mu);
    for (struct pending *p = s->pending; p; p = p->next)
        if (strcmp(p->kind, kind) == 0 && strcmp(p->id, id) == 0 && !p->deleted) {
            p->deleted = true;
            was_pending = true;
        }
    pthread_mutex_unlock(&s->pending_mu);
    void *b = backend(s, err, errlen);
    int rc = b ? s->ops->del(b, kind, id, err, errlen) : STORE_ERROR;
    pthread_mutex_unlock(&s->flush_mu);
    return rc == STORE_NOT_FOUND && was_pending ? STORE_OK : rc;
}

int store_stats_sync(struct store *s, int64_t *bytes, int64_t *records)
{
    char err[256];
    void *b = backend(s, err, sizeof(err));
    if (b == NULL)
        return STORE_ERROR;
    return s->ops->stats(b, bytes, records);
}

/* ---------- asynchronous calls ---------- */

enum op_kind { OP_PUT, OP_GET, OP_DEL };

static void pending_remove(struct store *s, struct pending *p)
{
    pthread_mutex_lock(&s->pending_mu);
    if (p->prev)
        p->prev->next = p->next;
    else
        s->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        s->pending_tail = p->prev;
    s->npending--;
    s->pending_bytes -= p->len;
    pthread_mutex_unlock(&s->pending_mu);
    xfree(p->data);
    xfree(p);
}

#define FLUSH_BATCH 256

/* Writes the queued puts nobody is writing yet, up to FLUSH_BATCH, in one backend transaction. Every put queues
 * one work item that calls this after its entry was queued, so each entry is written by some flush. */
static int flush(struct store *s, char *err, size_t errlen)
{
    err[0] = '\0';
    pthread_mutex_lock(&s->flush_mu);
    struct pending *batch[FLUSH_BATCH];
    size_t n = 0;
    pthread_mutex_lock(&s->pending_mu);
    for (struct pending *p = s->pending_tail; p && n < FLUSH_BATCH; p = p->prev) /* oldest first: the last put wins */
        if (!p->claimed) {
            p->claimed = true;
            batch[n++] = p;
        }
    pthread_mutex_unlock(&s->pending_mu);
    int rc = STORE_OK;
    if (n > 0) {
        void *b = backend(s, err, errlen);
        struct store_rec recs[FLUSH_BATCH];
        size_t m = 0;
        int64_t now = store_now_ms();
        pthread_mutex_lock(&s->pending_mu);
        for (size_t i = 0; i < n; i++) {
            if (batch[i]->deleted)
                continue;
            int64_t ttl = batch[i]->ttl_ms > 0 ? batch[i]->ttl_ms : s->o.max_age_ms;
            if (s->o.max_age_ms > 0 && ttl > s->o.max_age_ms)
                ttl = s->o.max_age_ms;
            recs[m++] = (struct store_rec){batch[i]->kind, batch[i]->id, now, ttl > 0 ? now + ttl : INT64_MAX,
                                           batch[i]->data, batch[i]->len};
        }
        pthread_mutex_unlock(&s->pending_mu);
        if (b == NULL)
            rc = STORE_ERROR;
        else if (m > 0)
            rc = s->ops->put_many(b, recs, m, err, errlen);
        for (size_t i = 0; i < n; i++)
            pending_remove(s, batch[i]);
    }
    pthread_mutex_unlock(&s->flush_mu);
    return rc;
}

struct store_work {
    uv_work_t w;
    struct store *s;
    enum op_kind op;
    char kind[STORE_MAX_ID + 1], id[STORE_MAX_ID + 1];
    void *data; /* put: a copy of the record */
    size_t len;
    int64_t ttl_ms;
    struct buf out; /* get: the record */
    int rc;
    char err[256];
    store_done_cb *done;
    store_get_cb *got;
    void *ud;
};

static void work_run(uv_work_t *w)
{
    struct store_work *x = w->data;
    switch (x->op) {
    case OP_PUT: x->rc = flush(x->s, x->err, sizeof(x->err)); break;
    case OP_GET: x->rc = store_get_sync(x->s, x->kind, x->id, &x->out, x->err, sizeof(x->err)); break;
    case OP_DEL: x->rc = store_delete_sync(x->s, x->kind, x->id, x->err, sizeof(x->err)); break;
    }
}

static void work_after(uv_work_t *w, int status)
{
    struct store_work *x = w->data;
    if (status != 0 && x->rc == STORE_OK) { /* cancelled before it ran */
        x->rc = STORE_ERROR;
        snprintf(x->err, sizeof(x->err), "store: the operation was cancelled");
    }
    if (x->op == OP_GET)
        x->got(x->ud, x->rc, x->rc == STORE_OK ? (x->out.data ? x->out.data : "") : NULL,
               x->rc == STORE_OK ? x->out.len : 0, x->err);
    else
        x->done(x->ud, x->rc, x->err);
    buf_free(&x->out);
    xfree(x->data);
    xfree(x);
}

static struct store_work *work_new(struct store *s, enum op_kind op, const char *kind, const char *id)
{
    if (!name_ok(kind) || !name_ok(id))
        return NULL;
    struct store_work *x = xcalloc(1, sizeof(*x));
    x->w.data = x;
    x->s = s;
    x->op = op;
    memcpy(x->kind, kind, strlen(kind) + 1);
    memcpy(x->id, id, strlen(id) + 1);
    buf_init(&x->out, BUF_UNBOUNDED);
    return x;
}

static int work_queue(uv_loop_t *loop, struct store_work *x)
{
    if (uv_queue_work(loop, &x->w, work_run, work_after) != 0) {
        buf_free(&x->out);
        xfree(x->data);
        xfree(x);
        return -1;
    }
    return 0;
}


int store_put(struct store *s, uv_loop_t *loop, const char *kind, const char *id, const void *data, size_t len,
              int64_t ttl_ms, store_done_cb *cb, void *ud)
{
    struct store_work *x = work_new(s, OP_PUT, kind, id);
    if (x == NULL)
        return -1;
    if ((s->o.max_bytes > 0 && (int64_t)len > s->o.max_bytes) || len > STORE_MAX_RECORD) {
        buf_free(&x->out);
        xfree(x);
        return -1;
    }
    x->done = cb;
    x->ud = ud;
    struct pending *p = xcalloc(1, sizeof(*p));
    memcpy(p->kind, x->kind, sizeof(p->kind));
    memcpy(p->id, x->id, sizeof(p->id));
    p->data = xmemdup(len ? data : "", len ? len : 1);
    p->len = len;
    p->ttl_ms = ttl_ms;
    pthread_mutex_lock(&s->pending_mu);
    /* bounded: a store slower than the requests that feed it refuses more, rather than queueing without end */
    bool full = s->npending >= STORE_MAX_PENDING || s->pending_bytes + len > STORE_MAX_PENDING_BYTES;
    if (!full) {
        p->next = s->pending;
        if (p->next)
            p->next->prev = p;
        else
            s->pending_tail = p;
        s->pending = p;
        s->npending++;
        s->pending_bytes += len;
    }
    pthread_mutex_unlock(&s->pending_mu);
    if (full) {
        xfree(p->data);
        xfree(p);
        buf_free(&x->out);
        xfree(x);
        return -1;
    }
    if (uv_queue_work(loop, &x->w, work_run, work_after) != 0) {
        pthread_mutex_lock(&s->pending_mu);
        bool mine = !p->claimed; /* else a running flush owns it now */
        pthread_mutex_unlock(&s->pending_mu);
        if (mine)
            pending_remove(s, p);
        buf_free(&x->out);
        xfree(x);
        return -1;
    }
    return 0;
}

int store_get(struct store *s, uv_loop_t *loop, const char *kind, const char *id, store_get_cb *cb, void *ud)
{
    struct store_work *x = work_new(s, OP_GET, kind, id);
    if (x == NULL)
        return -1;
    x->got = cb;
    x->ud = ud;
    return work_queue(loop, x);
}

int store_delete(struct store *s, uv_loop_t *loop, const char *kind, const char *id, store_done_cb *cb, void *ud)
{
    struct store_work *x = work_new(s, OP_DEL, kind, id);
    if (x == NULL)
        return -1;
    x->done = cb;
    x->ud = ud;
    return work_queue(loop, x);
}
