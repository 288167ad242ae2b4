/* cache.h: the exact-match response cache (issue 14, docs/cache.md).
 *
 * Two layers. The store (rcache_*) is a process-wide, byte-bounded LRU of complete answers with a TTL each,
 * shared by all workers under one mutex, with an injected clock (unit tests move time by hand). It also keeps
 * the "in flight" claims that coalesce concurrent identical misses: the first becomes the leader, the others
 * wait (a waiter's wake() is called from the leader's thread, outside the lock) and look again.
 *
 * The stage (cache_init plugs it into the spine's `cache` stage) computes the key, replays a hit in the format
 * and shape (stream or not) the caller asked, or records the answer of a miss through a sink that forwards
 * every byte to the client and stores it when the exchange ended complete and successful. */
#ifndef AGENTD_CACHE_H
#define AGENTD_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"
#include "config/schema.h"
#include "gateway/gw_types.h"

#define CACHE_KEY_LEN 32

enum cache_backend { CACHE_BACKEND_MEMORY, CACHE_BACKEND_REDIS, CACHE_BACKEND_AUTO, CACHE_BACKENDS };

enum cache_scope { CACHE_SCOPE_KEY, CACHE_SCOPE_TEAM, CACHE_SCOPE_GLOBAL, CACHE_SCOPES };

/* cache.models: a per-model override (its schema: cache_config.c). */
struct config_cache_model {
    char *name;      /* public model name */
    bool enabled;
    int64_t ttl_ms;  /* 0: the section's ttl */
    unsigned line, col; /* where it was written (an unknown model is reported there) */
};

extern const struct cfg_schema cache_config_schema;
struct config;
/* Cross-section checks (an override naming no model); from the root's finish. */
void cache_config_finish(struct cfg_ctx *ctx, const struct config *c);

/* ---- the store ---- */

struct rcache;
struct rc_waiter {
    void (*wake)(struct rc_waiter *w); /* called once, from the thread that ended the claim, outside the lock */
    struct rc_waiter *next;
};

/* What is kept with an answer besides its bytes. */
struct rc_meta {
    bool stream;
    struct usage usage;   /* the original answer's usage */
    int64_t cost_nusd;    /* what the original answer cost (the saving a hit records) */
};

struct rc_stats {
    int64_t bytes, entries, pending;
    int64_t hits, misses, evictions, expirations, inserts;
};

enum rc_lookup { RC_HIT, RC_LEADER, RC_WAIT, RC_MISS };

typedef uint64_t rc_clock_fn(void *ud); /* milliseconds, monotonic */

struct rcache *rcache_new(int64_t max_bytes, rc_clock_fn *clock, void *clock_ud);
void rcache_free(struct rcache *c);
/* A new byte limit (a reload): evicts at once down to it. */
void rcache_set_max(struct rcache *c, int64_t max_bytes);
/* Looks key up. RC_HIT: the answer is copied to out (appended) and *meta. Otherwise, when claim: if another
 * exchange holds the claim and w is not NULL, w is registered (RC_WAIT); else this caller becomes the leader
 * (RC_LEADER) and must later call rcache_put or rcache_release. RC_MISS: not found and not claimed. */
enum rc_lookup rcache_lookup(struct rcache *c, const uint8_t key[CACHE_KEY_LEN], bool claim, struct rc_waiter *w,
                             struct buf *out, struct rc_meta *meta);
/* Stores an answer (replacing one under the same key), ends the key's claim and wakes its waiters. An answer
 * larger than the byte limit is not kept. */
void rcache_put(struct rcache *c, const uint8_t key[CACHE_KEY_LEN], const void *data, size_t len,
                const struct rc_meta *meta, uint64_t ttl_ms);
/* Ends the key's claim without an answer (the leader failed): its waiters wake and look again. */
void rcache_release(struct rcache *c, const uint8_t key[CACHE_KEY_LEN]);
void rcache_stats(struct rcache *c, struct rc_stats *st);
/* Persistence: every live answer, least recent first, with its remaining TTL, appended to out (format in
 * cache.c); and back: the answers of a saved image put into c (the least recent first, so the order survives), each
 * bounded by max_entry. Returns the number loaded, or -1 when the image is not one (a bad header); a truncated or
 * inconsistent tail is ignored. Linear in len. */
void rcache_save(struct rcache *c, struct buf *out);
long rcache_load(struct rcache *c, const void *data, size_t len, size_t max_entry);
/* What one entry of len bytes costs against the limit (the entry's header included). */
size_t rcache_entry_cost(size_t len);

/* ---- the key ---- */

struct cache_key_input {
    const char *front;      /* the caller's format */
    bool stream;
    struct str ns;          /* the namespace: a key id, a team, or empty */
    struct str model;       /* the model after routing */
    struct str body;        /* the request as received */
};
/* SHA-256 over the parts that determine the answer: the front, stream, namespace, model and the body's JSON in
 * a canonical form (object keys sorted, numbers by value, fields that do not change the answer left out: model,
 * stream, user, metadata, store, prompt_cache_key, safety_identifier, service_tier). Linear in the body (plus the
 * sort of each object's keys). -1 when the body is not a JSON object. */
int cache_key(const struct cache_key_input *in, uint8_t out[CACHE_KEY_LEN]);

/* ---- the stage ---- */

/* Plugs the stage into the spine and registers the metrics (once, at start-up). */
void cache_init(void);
/* Frees the store (process exit). */
void cache_cleanup(void);
/* cache.persist: writes the store to DATA_DIR/cache.bin (at shutdown, after the workers stopped) / loads it (at
 * start, before they run). 0, or -1 (logged). */
int cache_save(const struct config *cfg);
int cache_load(const struct config *cfg);
/* The process-wide store (NULL before the first exchange with the cache on). For tests and the bench. */
struct rcache *cache_store(void);

/* ---- the shared tier in the cluster's Redis (cache_redis.c; docs/cache.md, "In Redis") ----
 *
 * One thread per process owns a blocking hiredis connection (like the lease thread: workers never talk to
 * Redis). A worker queues a look-up with a callback and waits (the cache stage returns EX_WAIT); the thread
 * pipelines every queued GET and SET in one round trip and calls each look-up's done() from its own thread (the
 * caller wakes its loop with a uv_async). Stores are fire-and-forget. Redis down, or the queue full: a look-up is
 * skipped (a miss, never an error) and counted; the thread tries to connect again at most once a second. */
struct crd_lookup {
    uint8_t key[CACHE_KEY_LEN];
    void (*done)(struct crd_lookup *l); /* once, from the Redis thread */
    bool hit;
    struct buf body;      /* on a hit: the answer's bytes */
    struct rc_meta meta;  /* on a hit */
    uint64_t ttl_left_ms; /* on a hit: what Redis still gives it */
    struct crd_lookup *next;
};

/* cache.backend resolves to Redis for this configuration. */
bool crd_enabled(const struct config *cfg);
/* Queues a look-up: 0 (done() will be called), or -1 when skipped (Redis known down, queue full). */
int crd_lookup(const struct config *cfg, struct crd_lookup *l);
/* Queues a store with SET PX ttl_ms; dropped when Redis is down or the queue holds too many bytes. */
void crd_store(const struct config *cfg, const uint8_t key[CACHE_KEY_LEN], const void *data, size_t len,
               const struct rc_meta *meta, uint64_t ttl_ms);
/* Registers the metrics (once, from cache_init). */
void crd_init(void);
/* Stops the thread (process exit; after the workers stopped). */
void crd_stop(void);

/* The value's encoding (a header with the meta, then the answer). Decode: 0, or -1 when v is not one. */
void crd_encode(struct buf *out, const struct rc_meta *m, const void *data, size_t len);
int crd_decode(const void *v, size_t n, struct rc_meta *m, size_t *body_off);

#endif
