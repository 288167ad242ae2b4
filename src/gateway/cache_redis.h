/* cache_redis.h: the response cache's shared tier in the cluster's Redis (docs/cache.md, "In Redis").
 *
 * One thread per process owns a blocking hiredis connection (like the lease thread: workers never talk to
 * Redis). A worker queues a look-up with a callback and waits (the cache stage returns EX_WAIT); the thread
 * pipelines every queued GET and SET in one round trip and calls each look-up's done() from its own thread (the
 * caller wakes its loop with a uv_async). Stores are fire-and-forget. Redis down, or the queue full: a look-up is
 * skipped (a miss, never an error) and counted; the thread tries to connect again at most once a second. */
#ifndef AGENTD_CACHE_REDIS_H
#define AGENTD_CACHE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "gateway/cache.h"

struct config;

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
