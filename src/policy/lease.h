/* lease.h: budgets and rate limits shared by many replicas through Redis, by leases (DESIGN §4, issue 13 item 5,
 * docs/cluster.md "Redis leases").
 *
 * A lease cell stands for one shared limit: a hard budget (scope, name, window, in nano-USD or tokens) or a rate
 * limit (scope, name, requests or tokens per minute). A replica holds a slice of it, `granted`, taken from Redis
 * by a Lua script (atomic there), and admits locally from that slice: lease_take() and lease_settle() touch only
 * the cell's mutex, never the network. One lease thread talks to Redis: every cluster.sync_interval, and at once
 * when a request waits, it refills what waiters need and tops up slices below half (up to the slice), renews a
 * budget lease's TTL every third of it, returns slices unused for cluster.lease_idle (and all of them at
 * shutdown), and with each of those calls reports the use settled since (budgets: Redis `spent` grows and this
 * replica's lease shrinks by it; until then Redis still counts it inside the lease). A replica that dies stops renewing: after cluster.lease_ttl
 * Redis forgets its lease and the rest of the budget is usable by the others.
 *
 * A lease is used only while it is valid here: less than 3/4 of the TTL since Redis last confirmed it, so this
 * replica stops admitting from a lease before Redis can give it away. What was admitted from it still settles
 * and is reported (spend is never dropped); with Redis unreachable the replica keeps serving within valid leases,
 * then lease_take() says LEASE_DOWN and the caller applies cluster.on_redis_down. */
#ifndef AGENTD_LEASE_H
#define AGENTD_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "config/schema.h"

struct config;
extern const struct cfg_schema lease_config_schema;

/* Starts the lease thread when cluster.redis_url (or REDIS_URL) is set; 0 also when it is not (embedded mode).
 * The server may be down: the thread keeps trying and /ready says why. -1 with err on a bad URL. */
int lease_start(const struct config *cfg, struct buf *err);
/* Reports what is settled, returns every unused slice, stops the thread and frees the cells. */
void lease_stop(void);
bool lease_enabled(void);
bool lease_fail_open(void);
/* Redis reachable (or cluster mode off); when not, why (for /ready). */
bool lease_redis_ok(char *why, size_t n);

enum lease_unit { LEASE_BUDGET_NUSD, LEASE_BUDGET_TOKENS, LEASE_RATE_REQUESTS, LEASE_RATE_TOKENS };

struct lease_cell;
/* The cell for a budget (scope and window names as budget.h spells them; wstart/wend: the window in force, wend
 * INT64_MAX for `total`) or a rate limit; limit is the budget's (nano-USD or tokens) or the per-minute rate. NULL
 * when the table is full (LEASE_MAX_CELLS) or a name is too long. */
#define LEASE_MAX_CELLS 100000
struct lease_cell *lease_cell_get(enum lease_unit unit, const char *scope, const char *name, const char *window,
                                  int64_t wstart, int64_t wend, int64_t limit);

enum lease_take {
    LEASE_OK,        /* taken from this replica's slice */
    LEASE_WAIT,      /* the slice is short: the lease thread asks Redis; wait (lease_wait) and try again */
    LEASE_EXHAUSTED, /* Redis has no more to give (the shared budget or rate is used up) */
    LEASE_DOWN,      /* no valid slice and Redis unreachable: apply cluster.on_redis_down */
};
enum lease_take lease_take(struct lease_cell *c, int64_t amount);
/* Ends a take: `reserved` goes back, `used` is charged (and reported to Redis by the lease thread). */
void lease_settle(struct lease_cell *c, int64_t reserved, int64_t used);
/* For an exhausted rate cell: ms until Redis has room again (0 when unknown). */
int64_t lease_retry_ms(struct lease_cell *c);

/* A request waiting for a lease: wake() is called (from the lease thread) after the next pass over the cells,
 * or at lease_stop. */
struct lease_waiter {
    struct lease_waiter *next;
    void (*wake)(struct lease_waiter *w);
};
void lease_wait(struct lease_waiter *w);

/* Counters for tests and the benchmark. */
struct lease_stats {
    uint64_t passes, commands, grants, waits;
};
void lease_get_stats(struct lease_stats *s);

#endif
