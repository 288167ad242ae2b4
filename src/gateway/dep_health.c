/* dep_health.c: per-deployment health (dep_health.h). The observer that feeds it, the breaker-state metric and
 * the admin view are in health_observer.c. */
#include "gateway/dep_health.h"

#include <stdio.h>

#include "common/alloc.h"
#include "common/timeutil.h"

struct dep_state *dep_state_new(const struct breaker_settings *s)
{
    struct dep_state *st = xcalloc(1, sizeof(*st));
    breaker_init(&st->br, s);
    return st;
}

void dep_state_free(struct dep_state *st)
{
    if (st == NULL)
        return;
    breaker_destroy(&st->br);
    xfree(st);
}

int64_t dep_now_ms(void)
{
    return (int64_t)(time_mono_us() / 1000);
}

void dep_ewma_add(struct dep_state *st, uint64_t sample_us)
{
    /* racy read-modify-write across workers: a lost sample only slows the average down */
    uint64_t old = atomic_load_explicit(&st->ewma_ttfb_us, memory_order_relaxed);
    uint64_t v = old == 0 ? sample_us : old - old / DEP_EWMA_DIV + sample_us / DEP_EWMA_DIV;
    if (v == 0)
        v = 1;
    atomic_store_explicit(&st->ewma_ttfb_us, v, memory_order_relaxed);
}

