/* breaker.c: the per-deployment circuit breaker (breaker.h). Pure logic over an injected clock. */
#include "gateway/breaker.h"

#include <string.h>

static int64_t bucket_ms(const struct breaker *b)
{
    int64_t w = b->s.window_ms / BREAKER_BUCKETS;
    return w > 0 ? w : 1;
}

/* The bucket for `now`, emptied first when it holds an older period. */
static int bucket_at(struct breaker *b, int64_t now_ms)
{
    int64_t bms = bucket_ms(b);
    int64_t start = now_ms - (now_ms % bms);
    int i = (int)((now_ms / bms) % BREAKER_BUCKETS);
    if (b->bucket_start[i] != start) {
        b->bucket_start[i] = start;
        b->ok[i] = b->bad[i] = 0;
    }
    return i;
}

static void window_counts(const struct breaker *b, int64_t now_ms, uint32_t *ok, uint32_t *bad)
{
    int64_t oldest = now_ms - b->s.window_ms;
    *ok = *bad = 0;
    for (int i = 0; i < BREAKER_BUCKETS; i++)
        if (b->bucket_start[i] > oldest) {
            *ok += b->ok[i];
            *bad += b->bad[i];
        }
}

static void window_clear(struct breaker *b)
{
    for (int i = 0; i < BREAKER_BUCKETS; i++) {
        b->bucket_start[i] = INT64_MIN;
        b->ok[i] = b->bad[i] = 0;
    }
}

void breaker_init(struct breaker *b, const struct breaker_settings *s)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    b->s = *s;
    if (b->s.probes < 1)
        b->s.probes = 1;
    window_clear(b);
}

void breaker_destroy(struct breaker *b)
{
    pthread_mutex_destroy(&b->mu);
}

static void to_open(struct breaker *b, int64_t now_ms)
{
    b->state = BREAKER_OPEN;
    b->opened_ms = now_ms;
    b->probes_out = b->probes_ok = 0;
    b->opened_total++;
}

static void to_closed(struct breaker *b)
{
    b->state = BREAKER_CLOSED;
    b->consecutive = 0;
    b->probes_out = b->probes_ok = 0;
    window_clear(b); /* the failures that opened it are not held against it again */
}

/* open -> half-open once the cool-down is over */
static void advance(struct breaker *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && now_ms - b->opened_ms >= b->s.cooldown_ms) {
        b->state = BREAKER_HALF_OPEN;
        b->probes_out = b->probes_ok = 0;
    }
}

static bool usable_locked(struct breaker *b, int64_t now_ms, int64_t *wait_ms)
{
    int64_t wait = 0;
    if (b->throttled_until_ms > now_ms)
        wait = b->throttled_until_ms - now_ms;
    if (b->s.enabled) {
        advance(b, now_ms);
        if (b->state == BREAKER_OPEN) {
            int64_t w = b->opened_ms + b->s.cooldown_ms - now_ms;
            if (w > wait)
                wait = w;
        } else if (b->state == BREAKER_HALF_OPEN && b->probes_out >= b->s.probes && wait == 0) {
            wait = -1; /* a probe is out: when it ends, nobody knows */
        }
    }
    if (wait_ms)
        *wait_ms = wait;
    return wait == 0;
}

bool breaker_usable(struct breaker *b, int64_t now_ms, int64_t *wait_ms)
{
    pthread_mutex_lock(&b->mu);
    bool r = usable_locked(b, now_ms, wait_ms);
    pthread_mutex_unlock(&b->mu);
    return r;
}

bool breaker_acquire(struct breaker *b, int64_t now_ms, bool *probe)
{
    *probe = false;
    pthread_mutex_lock(&b->mu);
    bool r = usable_locked(b, now_ms, NULL);
    if (r && b->s.enabled && b->state == BREAKER_HALF_OPEN) {
        b->probes_out++;
        *probe = true;
    }
    pthread_mutex_unlock(&b->mu);
    return r;
}

enum breaker_state breaker_record(struct breaker *b, int64_t now_ms, enum breaker_event ev, bool probe)
{
    pthread_mutex_lock(&b->mu);
    if (!b->s.enabled) {
        pthread_mutex_unlock(&b->mu);
        return BREAKER_CLOSED;
    }
    if (probe && b->probes_out > 0)
        b->probes_out--;
    if (b->state == BREAKER_HALF_OPEN && probe) {
        if (ev == BR_FAILURE)
            to_open(b, now_ms);
        else if (ev == BR_SUCCESS && ++b->probes_ok >= b->s.probes)
            to_closed(b);
    } else if (b->state == BREAKER_CLOSED && ev != BR_NEUTRAL) {
        int i = bucket_at(b, now_ms);
        if (ev == BR_SUCCESS) {
            b->ok[i]++;
            b->consecutive = 0;
        } else {
            b->bad[i]++;
            b->consecutive++;
            uint32_t ok, bad;
            window_counts(b, now_ms, &ok, &bad);
            uint64_t n = (uint64_t)ok + bad;
            if (b->consecutive >= b->s.consecutive ||
                (n >= (uint64_t)b->s.min_requests && (double)bad >= b->s.failure_rate * (double)n))
                to_open(b, now_ms);
        }
    }
    /* an attempt that was not a probe ending while open or half-open (it started before) changes nothing */
    enum breaker_state st = b->state;
    pthread_mutex_unlock(&b->mu);
    return st;
}

void breaker_throttle(struct breaker *b, int64_t now_ms, int64_t ms)
{
    if (ms <= 0)
        return;
    pthread_mutex_lock(&b->mu);
    if (now_ms + ms > b->throttled_until_ms)
        b->throttled_until_ms = now_ms + ms;
    pthread_mutex_unlock(&b->mu);
}

enum breaker_state breaker_state(struct breaker *b, int64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    if (b->s.enabled)
        advance(b, now_ms);
    enum breaker_state s = b->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

const char *breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED: return "closed";
    case BREAKER_HALF_OPEN: return "half_open";
    case BREAKER_OPEN: return "open";
    }
    return "unknown";
}

void breaker_view(struct breaker *b, int64_t now_ms, struct breaker_view *v)
{
    pthread_mutex_lock(&b->mu);
    if (b->s.enabled)
        advance(b, now_ms);
    v->state = b->state;
    window_counts(b, now_ms, &v->window_ok, &v->window_failed);
    v->consecutive = b->consecutive;
    v->open_remaining_ms = b->state == BREAKER_OPEN ? b->opened_ms + b->s.cooldown_ms - now_ms : 0;
    v->throttle_remaining_ms = b->throttled_until_ms > now_ms ? b->throttled_until_ms - now_ms : 0;
    v->opened_total = b->opened_total;
    pthread_mutex_unlock(&b->mu);
}
