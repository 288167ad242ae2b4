/* dep_health.h: what the gateway knows about each deployment's health, shared by every worker: its circuit
 * breaker (breaker.h), its requests in flight (least-outstanding balancing) and a moving average of its time to
 * first byte (latency balancing). Kept per deployment identity (provider, upstream model, base URL and id) in one
 * process-wide table, so that a reload (SIGHUP, a file change) carries it over to the new registry: an open
 * breaker stays open until its cool-down, the attempts in flight stay counted, the latency average is kept.
 *
 * The exchange observer `ex_observer_health` (health_observer.c) feeds it from every attempt's typed outcome; the
 * metric agentd_gateway_breaker_state{model,deployment} (0 closed, 1 half-open, 2 open) and GET /admin/deployments
 * read it. */
#ifndef AGENTD_DEP_HEALTH_H
#define AGENTD_DEP_HEALTH_H

#include <stdatomic.h>
#include <stdint.h>

#include "gateway/breaker.h"

struct dep_state {
    struct breaker br;
    /* the table's: guarded by its lock */
    struct dep_state *next;
    unsigned long refs;
    char *ident;
    _Atomic long outstanding;       /* attempts in flight */
    _Atomic uint64_t ewma_ttfb_us;  /* 0: no sample yet */
    _Atomic uint64_t attempts, failures;
};

/* The state of the deployment with this identity: the one already known (its breaker takes the settings s, a
 * reload may change them) or a new one. A reference: dep_state_put() it. */
struct dep_state *dep_state_get(const char *ident, const struct breaker_settings *s);
void dep_state_put(struct dep_state *st); /* NULL: nothing */
size_t dep_state_count(void);             /* identities known (tests) */

/* Milliseconds on the breakers' clock (monotonic). */
int64_t dep_now_ms(void);

/* The moving average's weight of a new sample is 1/EWMA_DIV. */
#define DEP_EWMA_DIV 8
void dep_ewma_add(struct dep_state *st, uint64_t sample_us);

#endif
