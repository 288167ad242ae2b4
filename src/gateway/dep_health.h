/* dep_health.h: what the gateway knows about each deployment's health, shared by every worker: its circuit
 * breaker (breaker.h), its requests in flight (least-outstanding balancing) and a moving average of its time to
 * first byte (latency balancing). Kept per deployment of a registry, so a reload starts afresh.
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
    _Atomic long outstanding;       /* attempts in flight */
    _Atomic uint64_t ewma_ttfb_us;  /* 0: no sample yet */
    _Atomic uint64_t attempts, failures;
};

struct dep_state *dep_state_new(const struct breaker_settings *s);
void dep_state_free(struct dep_state *st);

/* Milliseconds on the breakers' clock (monotonic). */
int64_t dep_now_ms(void);

/* The moving average's weight of a new sample is 1/EWMA_DIV. */
#define DEP_EWMA_DIV 8
void dep_ewma_add(struct dep_state *st, uint64_t sample_us);

#endif
