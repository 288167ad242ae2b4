/* test_resilience.c: retry rules (gateway/resilience.h): backoff, rate-limit reset hints, the retry budget on an
 * injected clock, and which failures retry or go to a fallback. */
#include "gateway/resilience.h"

#include <stdio.h>

#include "test.h"

static void test_backoff(void)
{
    /* the ceiling doubles per retry up to the maximum; the draw is uniform in [0, ceiling] */
    is_int(backoff_full_jitter(100, 10000, 0, 100), 100);
    is_int(backoff_full_jitter(100, 10000, 0, 101), 0);
    is_int(backoff_full_jitter(100, 10000, 1, 200), 200);
    is_int(backoff_full_jitter(100, 10000, 3, 800), 800);
    is_int(backoff_full_jitter(100, 10000, 3, 801), 0);
    is_int(backoff_full_jitter(100, 1000, 10, 1000), 1000); /* capped */
    is_int(backoff_full_jitter(100, 1000, 60, 1000), 1000); /* no overflow for a large exponent */
    is_int(backoff_full_jitter(100, 1000, 10, 1500), 499);  /* the draw is in [0, 1000]: 1500 mod 1001 */
    for (uint64_t r = 0; r < 3000; r += 7)
        ok(backoff_full_jitter(100, 1000, 4, r) <= 1000);    /* 100 * 2^4 = 1600 is capped at the maximum */
    /* every draw stays inside the ceiling */
    int64_t worst = 0;
    for (uint64_t r = 0; r < 5000; r++) {
        int64_t v = backoff_full_jitter(250, 8000, 2, r * 2654435761u);
        if (v > worst)
            worst = v;
        ok(v >= 0 && v <= 1000);
    }
    ok(worst > 900); /* and reaches near it: the jitter is full */
    is_int(backoff_full_jitter(0, 1000, 1, 5), 0);
}

static void test_reset_hint(void)
{
    is_int(ratelimit_reset_ms("1s"), 1000);
    is_int(ratelimit_reset_ms("20ms"), 20);
    is_int(ratelimit_reset_ms("6m0s"), 360000);
    is_int(ratelimit_reset_ms("1h2m3.5s"), 3723500);
    is_int(ratelimit_reset_ms("0.5"), 500);
    is_int(ratelimit_reset_ms("1.25s"), 1250);
    is_int(ratelimit_reset_ms(""), -1);
    is_int(ratelimit_reset_ms("soon"), -1);
    is_int(ratelimit_reset_ms("5x"), -1);
    is_int(ratelimit_reset_ms("-1s"), -1);
    is_int(ratelimit_reset_ms("100h"), -1); /* over a day: not a hint to wait for */
}

static void test_budget(void)
{
    struct retry_budget b;
    retry_budget_init(&b, 0.2, 0, 0); /* no floor: only requests earn retries */
    int64_t t = 0;
    /* the initial burst (100 requests' worth) */
    int n = 0;
    while (retry_budget_take(&b, t))
        n++;
    is_int(n, 20);
    /* then one retry per five requests */
    for (int i = 0; i < 50; i++)
        retry_budget_request(&b, t);
    n = 0;
    while (retry_budget_take(&b, t))
        n++;
    ok(n == 9 || n == 10); /* 50 * 0.2, give or take the float sum */
    ok(!retry_budget_take(&b, t + 100000)); /* time alone earns nothing without a floor */

    retry_budget_init(&b, 0, 5, 0); /* a floor of 5 per second */
    while (retry_budget_take(&b, 0))
        ;
    ok(!retry_budget_take(&b, 100));
    ok(retry_budget_take(&b, 200)); /* 0.2 s * 5/s = 1 */
    ok(!retry_budget_take(&b, 200));
}

static void test_classify(void)
{
    struct gw_error e;
    gw_error_set(&e, 503, GW_ERR_OVERLOADED, "busy");
    is_int(failure_classify(RK_HTTP, 503, &e, RETRY_ON_DEFAULT), FAIL_RETRY);
    is_int(failure_classify(RK_HTTP, 503, &e, RETRY_ON_429), FAIL_FATAL); /* not in retry_on */
    is_int(failure_classify(RK_HTTP, 529, &e, RETRY_ON_DEFAULT), FAIL_RETRY);
    static const int never[] = {400, 401, 403, 404};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
        gw_error_set(&e, never[i], GW_ERR_INVALID_REQUEST, "no");
        e.retryable = true; /* whatever a provider said */
        is_int(failure_classify(RK_HTTP, never[i], &e, RETRY_ON_DEFAULT), FAIL_FATAL);
    }
    gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "This model's maximum context length is 8192 tokens.");
    snprintf(e.code, sizeof(e.code), "context_length_exceeded");
    is_int(failure_classify(RK_HTTP, 400, &e, RETRY_ON_DEFAULT), FAIL_CONTEXT_WINDOW);
    gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "prompt is too long: 210000 tokens > 200000 maximum");
    is_int(failure_classify(RK_HTTP, 400, &e, RETRY_ON_DEFAULT), FAIL_CONTEXT_WINDOW);
    gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "Your request was rejected by our safety system");
    snprintf(e.code, sizeof(e.code), "content_policy_violation");
    is_int(failure_classify(RK_HTTP, 400, &e, RETRY_ON_DEFAULT), FAIL_CONTENT_POLICY);
    gw_error_set(&e, 429, GW_ERR_RATE_LIMIT, "You exceeded your current quota");
    snprintf(e.code, sizeof(e.code), "insufficient_quota");
    is_int(failure_classify(RK_HTTP, 429, &e, RETRY_ON_DEFAULT), FAIL_FATAL);
    gw_error_set(&e, 502, GW_ERR_API, "reset");
    is_int(failure_classify(RK_RESET, 0, &e, RETRY_ON_DEFAULT), FAIL_RETRY);
    is_int(failure_classify(RK_RESET, 0, &e, RETRY_ON_TIMEOUT), FAIL_FATAL);
    is_int(failure_classify(RK_TIMEOUT, 0, &e, RETRY_ON_TIMEOUT), FAIL_RETRY);
    is_int(failure_classify(RK_CONNECT, 0, &e, RETRY_ON_DEFAULT), FAIL_RETRY);
    is_int(retry_on_bit("503"), RETRY_ON_503);
    is_int(retry_on_bit("400"), 0);
    is_int(retry_on_bit("bogus"), 0);
}

int main(void)
{
    subtest("exponential backoff with full jitter", test_backoff);
    subtest("x-ratelimit-reset values", test_reset_hint);
    subtest("retry budget", test_budget);
    subtest("which failures retry", test_classify);
    return done_testing();
}
