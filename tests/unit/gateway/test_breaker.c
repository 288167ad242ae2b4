/* test_breaker.c: the per-deployment circuit breaker (gateway/breaker.h) on an injected clock: no sleeps. */
#include "gateway/breaker.h"

#include "test.h"

static const struct breaker_settings base = {
    .enabled = true, .window_ms = 10000, .min_requests = 10, .failure_rate = 0.5, .consecutive = 5,
    .cooldown_ms = 1000, .probes = 1};

static void test_consecutive_opens(void)
{
    struct breaker b;
    breaker_init(&b, &base);
    bool probe;
    int64_t t = 1000;
    for (int i = 0; i < 4; i++) {
        ok(breaker_acquire(&b, t, &probe) && !probe);
        is_int(breaker_record(&b, t, BR_FAILURE, false), BREAKER_CLOSED);
    }
    /* a success resets the run */
    is_int(breaker_record(&b, t, BR_SUCCESS, false), BREAKER_CLOSED);
    for (int i = 0; i < 4; i++)
        is_int(breaker_record(&b, t, BR_FAILURE, false), BREAKER_CLOSED);
    is_int(breaker_record(&b, t, BR_FAILURE, false), BREAKER_OPEN);
    ok(!breaker_acquire(&b, t + 999, &probe));
    int64_t w = 0;
    ok(!breaker_usable(&b, t + 500, &w));
    is_int(w, 500);
    breaker_destroy(&b);
}

static void test_half_open_probe(void)
{
    struct breaker b;
    breaker_init(&b, &base);
    int64_t t = 0;
    for (int i = 0; i < 5; i++)
        breaker_record(&b, t, BR_FAILURE, false);
    is_int(breaker_state(&b, t), BREAKER_OPEN);
    bool probe = false;
    t += 1000; /* the cool-down is over */
    is_int(breaker_state(&b, t), BREAKER_HALF_OPEN);
    ok(breaker_acquire(&b, t, &probe) && probe);
    bool p2;
    ok(!breaker_acquire(&b, t, &p2)); /* one probe at a time */
    int64_t w = 0;
    ok(!breaker_usable(&b, t, &w));
    is_int(w, -1);
    /* the probe fails: open again, for another cool-down */
    is_int(breaker_record(&b, t, BR_FAILURE, true), BREAKER_OPEN);
    ok(!breaker_acquire(&b, t + 999, &p2));
    ok(breaker_acquire(&b, t + 1000, &probe) && probe);
    /* a neutral end (cancelled) gives the slot back without deciding */
    is_int(breaker_record(&b, t + 1000, BR_NEUTRAL, true), BREAKER_HALF_OPEN);
    ok(breaker_acquire(&b, t + 1000, &probe) && probe);
    is_int(breaker_record(&b, t + 1001, BR_SUCCESS, true), BREAKER_CLOSED);
    ok(breaker_acquire(&b, t + 1001, &probe) && !probe);
    /* closed again with a clean slate: four failures do not open it */
    for (int i = 0; i < 4; i++)
        is_int(breaker_record(&b, t + 1002, BR_FAILURE, false), BREAKER_CLOSED);
    struct breaker_view v;
    breaker_view(&b, t + 1002, &v);
    is_int(v.opened_total, 2);
    is_int(v.window_failed, 4);
    breaker_destroy(&b);
}

static void test_failure_rate_window(void)
{
    struct breaker_settings s = base;
    s.consecutive = 1000; /* only the rate decides */
    struct breaker b;
    breaker_init(&b, &s);
    int64_t t = 50000;
    /* below the minimum volume nothing opens, even at 100% failures */
    for (int i = 0; i < 4; i++)
        is_int(breaker_record(&b, t, BR_FAILURE, false), BREAKER_CLOSED);
    for (int i = 0; i < 5; i++)
        is_int(breaker_record(&b, t, BR_SUCCESS, false), BREAKER_CLOSED);
    /* 10 outcomes, 5 failed: 50% opens */
    is_int(breaker_record(&b, t, BR_FAILURE, false), BREAKER_OPEN);
    breaker_destroy(&b);

    /* failures that slid out of the window do not count */
    breaker_init(&b, &s);
    t = 50000;
    for (int i = 0; i < 9; i++)
        breaker_record(&b, t, BR_FAILURE, false);
    t += 11000; /* the window (10 s) has passed */
    for (int i = 0; i < 9; i++)
        is_int(breaker_record(&b, t, BR_SUCCESS, false), BREAKER_CLOSED);
    is_int(breaker_record(&b, t, BR_FAILURE, false), BREAKER_CLOSED); /* 1 of 10 */
    struct breaker_view v;
    breaker_view(&b, t, &v);
    is_int(v.window_ok, 9);
    is_int(v.window_failed, 1);
    breaker_destroy(&b);
}

static void test_throttle_not_outage(void)
{
    struct breaker b;
    breaker_init(&b, &base);
    bool probe;
    breaker_throttle(&b, 100, 2000);
    int64_t w = 0;
    ok(!breaker_usable(&b, 100, &w));
    is_int(w, 2000);
    ok(!breaker_acquire(&b, 2099, &probe));
    ok(breaker_acquire(&b, 2100, &probe));
    is_int(breaker_state(&b, 2100), BREAKER_CLOSED);
    breaker_view(&b, 2100, &(struct breaker_view){0});
    /* a neutral outcome (the 429 itself) counts for nothing */
    for (int i = 0; i < 20; i++)
        is_int(breaker_record(&b, 2100, BR_NEUTRAL, false), BREAKER_CLOSED);
    breaker_destroy(&b);
}

static void test_disabled(void)
{
    struct breaker_settings s = base;
    s.enabled = false;
    struct breaker b;
    breaker_init(&b, &s);
    bool probe;
    for (int i = 0; i < 100; i++)
        breaker_record(&b, 0, BR_FAILURE, false);
    ok(breaker_acquire(&b, 0, &probe) && !probe);
    breaker_destroy(&b);
}

int main(void)
{
    subtest("consecutive failures open it", test_consecutive_opens);
    subtest("half-open probes", test_half_open_probe);
    subtest("failure rate over a sliding window with a minimum volume", test_failure_rate_window);
    subtest("a 429 cool-down is not an outage", test_throttle_not_outage);
    subtest("disabled", test_disabled);
    return done_testing();
}
