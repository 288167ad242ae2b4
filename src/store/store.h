/* store.h: agentd's durable state behind one interface (DESIGN §4). Code above this layer never names the
 * backend: it holds a struct store and calls store_put / store_get / store_delete. The embedded default is SQLite
 * in the data dir (store_sqlite.c); PostgreSQL or Redis would be further `struct store_ops`.
 *
 * What is kept: records of a kind ("response": Responses API objects agentd produced by translation, "thread":
 * Anthropic message threads, ...), each an opaque byte blob (JSON by convention) under an id unique in its kind,
 * with a creation time and an expiry. The store is bounded: a record past its expiry is gone, and when the bytes
 * kept pass max_bytes the oldest records are evicted first. A single record larger than max_bytes is refused.
 *
 * Threads: nothing here runs on a worker loop. The asynchronous calls run the backend on the libuv thread pool
 * (uv_queue_work) and call back on the loop that asked; the backend serialises its own access. The *_sync calls
 * are for threads that may block (start-up, tests, tools). The backend opens its files lazily, on the first
 * operation, so that creating a store does no disk I/O. */
#ifndef AGENTD_STORE_H
#define AGENTD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"

enum {
    STORE_OK = 0,
    STORE_NOT_FOUND = 1,  /* no such id in that kind, or it expired */
    STORE_ERROR = -1,     /* the backend failed (message in the callback) */
    STORE_TOO_LARGE = -2, /* one record larger than max_bytes */
};

#define STORE_MAX_ID 128              /* ids and kinds are at most this many bytes */
#define STORE_MAX_RECORD (256L << 20) /* one record, whatever max_bytes says */
#define STORE_MAX_PENDING 4096        /* puts queued and not yet written; past it store_put refuses (-1) */
#define STORE_MAX_PENDING_BYTES (64L << 20)

struct store_options {
    const char *dir;      /* data dir (created when missing); NULL or "" with memory = true */
    bool memory;          /* keep nothing on disk (tests) */
    int64_t max_bytes;    /* bound on the bytes kept (all kinds together); <= 0: no bound */
    int64_t max_age_ms;   /* default lifetime of a record; <= 0: none */
};

struct store;

struct store_rec {
    const char *kind, *id;
    int64_t created_ms, expires_ms;
    const void *data;
    size_t len;
};

/* The backend: plain synchronous calls, run on a pool thread (or a thread that may block). */
struct store_ops {
    const char *name;
    void *(*open)(const struct store_options *o, char *err, size_t errlen); /* lazily, from the first op */
    int (*put)(void *b, const char *kind, const char *id, int64_t created_ms, int64_t expires_ms, const void *data,
               size_t len, char *err, size_t errlen);
    /* STORE_OK with *out filled (appended), STORE_NOT_FOUND, or an error. now_ms: records expired by then are
     * not found. */
    int (*get)(void *b, const char *kind, const char *id, int64_t now_ms, struct buf *out, char *err, size_t errlen);
    int (*del)(void *b, const char *kind, const char *id, char *err, size_t errlen);
    /* Several puts in one transaction (all or none): what the asynchronous store_put uses, so that a busy store
     * pays one commit per batch, not per record. */
    int (*put_many)(void *b, const struct store_rec *recs, size_t n, char *err, size_t errlen);
    /* Bytes and records kept (tests, metrics). */
    int (*stats)(void *b, int64_t *bytes, int64_t *records);
    void (*close)(void *b);
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* A store over a backend; copies o. Does no I/O. */
struct store *store_new(const struct store_ops *ops, const struct store_options *o);
/* Waits for nothing: call when no operation is pending (after the loops stopped). */
void store_free(struct store *s);

/* Completion callbacks, on the loop that started the operation. For get, data/len is the record (valid during
 * the call only) when rc is STORE_OK. err is a message when rc < 0, else "". The callback always runs exactly
 * once, also when the caller no longer cares: keep ud alive until then (or point it at a flag). */
typedef void store_done_cb(void *ud, int rc, const char *err);
typedef void store_get_cb(void *ud, int rc, const char *data, size_t len, const char *err);

/* ttl_ms <= 0: the store's max_age_ms (a longer ttl is cut to it). Return -1 (and never call back) when the kind or
 * the id is empty or longer than STORE_MAX_ID, the record is too large, STORE_MAX_PENDING puts are already queued,
 * or the work cannot be queued. */
int store_put(struct store *s, uv_loop_t *loop, const char *kind, const char *id, const void *data, size_t len,
              int64_t ttl_ms, store_done_cb *cb, void *ud);
int store_get(struct store *s, uv_loop_t *loop, const char *kind, const char *id, store_get_cb *cb, void *ud);
int store_delete(struct store *s, uv_loop_t *loop, const char *kind, const char *id, store_done_cb *cb, void *ud);

/* Blocking forms (never on a worker loop). */
int store_put_sync(struct store *s, const char *kind, const char *id, const void *data, size_t len, int64_t ttl_ms,
                   char *err, size_t errlen);
int store_get_sync(struct store *s, const char *kind, const char *id, struct buf *out, char *err, size_t errlen);
int store_delete_sync(struct store *s, const char *kind, const char *id, char *err, size_t errlen);
int store_stats_sync(struct store *s, int64_t *bytes, int64_t *records);

/* Wall-clock milliseconds the store dates records with (tests may move it). */
int64_t store_now_ms(void);
void store_set_clock_for_tests(int64_t (*now_ms)(void));

#endif
