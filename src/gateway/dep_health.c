/* dep_health.c: per-deployment health (dep_health.h). The observer that feeds it, the breaker-state metric and
 * the admin view are in health_observer.c. */
#include "gateway/dep_health.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/timeutil.h"

/* A list: it is walked at a configuration load only (once per deployment), never per request. */
static pthread_mutex_t tab_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dep_state *tab;
static size_t tab_n;

struct dep_state *dep_state_get(const char *ident, const struct breaker_settings *s)
{
    pthread_mutex_lock(&tab_mu);
    struct dep_state *st = tab;
    while (st && strcmp(st->ident, ident) != 0)
        st = st->next;
    if (st) {
        st->refs++;
        pthread_mutex_unlock(&tab_mu);
        pthread_mutex_lock(&st->br.mu);
        st->br.s = *s; /* the state carries over, the settings are the new configuration's */
        pthread_mutex_unlock(&st->br.mu);
        return st;
    }
    st = xcalloc(1, sizeof(*st));
    breaker_init(&st->br, s);
    st->ident = xstrdup(ident);
    st->refs = 1;
    st->next = tab;
    tab = st;
    tab_n++;
    pthread_mutex_unlock(&tab_mu);
    return st;
}

void dep_state_put(struct dep_state *st)
{
    if (st == NULL)
        return;
    pthread_mutex_lock(&tab_mu);
    if (--st->refs > 0) {
        pthread_mutex_unlock(&tab_mu);
        return;
    }
    struct dep_state **pp = &tab;
    while (*pp != st)
        pp = &(*pp)->next;
    *pp = st->next;
    tab_n--;
    pthread_mutex_unlock(&tab_mu);
    breaker_destroy(&st->br);
    xfree(st->ident);
    xfree(st);
}

size_t dep_state_count(void)
{
    pthread_mutex_lock(&tab_mu);
    size_t n = tab_n;
    pthread_mutex_unlock(&tab_mu);
    return n;
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

