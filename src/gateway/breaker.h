/* breaker.h: a circuit breaker per deployment (issue 9, item 3), with the clock passed in (tests inject it).
 *
 *   closed --(failure rate over the window >= threshold with >= min volume, or N consecutive failures)--> open
 *   open --(cool-down elapsed)--> half_open: up to `probes` attempts at a time are let through
 *   half_open --(a probe succeeds `probes` times)--> closed;  --(a probe fails)--> open again
 *
 * A throttle (a 429 with Retry-After) is separate: the deployment is skipped until then, without counting as an
 * outage. One breaker is shared by every worker (a mutex guards it: two short critical sections per attempt). */
#ifndef AGENTD_BREAKER_H
#define AGENTD_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_HALF_OPEN = 1, BREAKER_OPEN = 2 };

struct breaker_settings {
    bool enabled;
    int64_t window_ms;        /* the sliding window of the failure rate */
    int64_t min_requests;     /* the rate is not judged below this many outcomes in the window */
    double failure_rate;      /* 0..1: opens at or above it */
    int64_t consecutive;      /* opens after this many failures in a row */
    int64_t cooldown_ms;      /* open this long before half-open */
    int64_t probes;           /* half-open: attempts at a time, and successes needed to close */
};

#define BREAKER_BUCKETS 10

/* What an attempt's outcome means for its deployment. */
enum breaker_event { BR_SUCCESS, BR_FAILURE, BR_NEUTRAL };

struct breaker {
    pthread_mutex_t mu;
    struct breaker_settings s;
    enum breaker_state state;
    /* the window, in BREAKER_BUCKETS buckets of window_ms / BREAKER_BUCKETS */
    int64_t bucket_start[BREAKER_BUCKETS];
    uint32_t ok[BREAKER_BUCKETS], bad[BREAKER_BUCKETS];
    int64_t consecutive;
    int64_t opened_ms;
    int64_t probes_out, probes_ok;
    int64_t throttled_until_ms; /* a 429's Retry-After */
    uint64_t opened_total;      /* times it opened (admin view) */
};

void breaker_init(struct breaker *b, const struct breaker_settings *s);
void breaker_destroy(struct breaker *b);
/* May an attempt start now? Takes a half-open probe slot when it says yes in half-open (*probe = true: the
 * attempt's end must be reported with probe = true). An open breaker past its cool-down turns half-open here. */
bool breaker_acquire(struct breaker *b, int64_t now_ms, bool *probe);
/* Would breaker_acquire say yes now (no slot taken)? *wait_ms: when it might (0 if now; -1 if unknown). */
bool breaker_usable(struct breaker *b, int64_t now_ms, int64_t *wait_ms);
/* An attempt ended. Returns the state after (for the metrics gauge). */
enum breaker_state breaker_record(struct breaker *b, int64_t now_ms, enum breaker_event ev, bool probe);
/* A 429 with Retry-After: skip the deployment until now + ms (not an outage). */
void breaker_throttle(struct breaker *b, int64_t now_ms, int64_t ms);
enum breaker_state breaker_state(struct breaker *b, int64_t now_ms);
const char *breaker_state_name(enum breaker_state s);

/* A snapshot for GET /admin/deployments. */
struct breaker_view {
    enum breaker_state state;
    uint32_t window_ok, window_failed;
    int64_t consecutive;
    int64_t open_remaining_ms;     /* open: until half-open */
    int64_t throttle_remaining_ms;
    uint64_t opened_total;
};
void breaker_view(struct breaker *b, int64_t now_ms, struct breaker_view *v);

#endif
