#include <pthread.h>
#include <stdint.h>

#include "policy/ratelimit.h"
#include "test.h"

static void test_rpm(void)
{
    struct ratelimit *r = rl_new();
    struct rl_limit l = {.scope = RL_KEY, .name = "k", .rpm = 3};
    struct rl_hold h;
    struct rl_decision d;
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++) {
        rl_admit(r, &l, 1, 0, t, &h, &d);
        ok(d.allowed);
        is_int(d.remaining_requests, 2 - i);
    }
    rl_admit(r, &l, 1, 0, t, &h, &d);
    ok(!d.allowed);
    is_int(d.which, 0);
    ok(!d.which_tokens);
    is_int(d.retry_after_ms, 20000); /* one request every 20 s */
    is_int(d.limit_requests, 3);
    is_int(d.remaining_requests, 0);
    rl_admit(r, &l, 1, 0, t + 19999, &h, &d);
    ok(!d.allowed);
    rl_admit(r, &l, 1, 0, t + 20000, &h, &d);
    ok(d.allowed);
    /* another key is not affected */
    struct rl_limit l2 = {.scope = RL_KEY, .name = "k2", .rpm = 3};
    rl_admit(r, &l2, 1, 0, t, &h, &d);
    ok(d.allowed);
    /* the same name in another scope is another cell */
    struct rl_limit l3 = {.scope = RL_TEAM, .name = "k", .rpm = 3};
    rl_admit(r, &l3, 1, 0, t, &h, &d);
    ok(d.allowed);
    rl_free(r);
}

static void test_tpm_settle_all_or_none(void)
{
    struct ratelimit *r = rl_new();
    struct rl_limit l[2] = {{.scope = RL_KEY, .name = "k", .tpm = 1000}, {.scope = RL_MODEL, .name = "m", .rpm = 100}};
    struct rl_hold h1, h2;
    struct rl_decision d;
    int64_t t = 5000;
    rl_admit(r, l, 2, 600, t, &h1, &d);
    ok(d.allowed);
    is_int(d.remaining_tokens, 400);
    is_int(d.remaining_requests, 99);
    rl_admit(r, l, 2, 600, t, &h2, &d);
    ok(!d.allowed);
    ok(d.which_tokens);
    is_int(d.which, 0);
    /* the refused request charged nothing to the model's request limit either */
    struct rl_limit lm = l[1];
    rl_admit(r, &lm, 1, 0, t, &h2, &d);
    is_int(d.remaining_requests, 98);
    /* settle: only 100 used, 500 come back */
    rl_settle(r, &h1, 100);
    is_int(h1.n, 0);
    rl_admit(r, l, 2, 600, t, &h2, &d);
    ok(d.allowed);
    is_int(d.remaining_tokens, 300);
    /* a reservation larger than the whole limit never fits */
    rl_admit(r, l, 1, 5000, t + 3600000, &h2, &d);
    ok(!d.allowed);
    is_int(d.retry_after_ms, 60000);
    rl_free(r);
}

static void test_headers(void)
{
    struct rl_decision d = {.allowed = true, .limit_requests = 60, .remaining_requests = 59, .reset_requests_ms = 1000,
                            .limit_tokens = 150000, .remaining_tokens = 149000, .reset_tokens_ms = 360000};
    struct buf b;
    buf_init(&b, 4096);
    rl_headers(&b, &d, false, 0);
    buf_append_char(&b, 0);
    ok(strstr(b.data, "x-ratelimit-limit-requests: 60\r\n") != NULL);
    ok(strstr(b.data, "x-ratelimit-remaining-requests: 59\r\n") != NULL);
    ok(strstr(b.data, "x-ratelimit-reset-requests: 1s\r\n") != NULL);
    ok(strstr(b.data, "x-ratelimit-reset-tokens: 6m0s\r\n") != NULL);
    buf_reset(&b);
    rl_headers(&b, &d, true, 1796385600000LL);
    buf_append_char(&b, 0);
    ok(strstr(b.data, "anthropic-ratelimit-requests-limit: 60\r\n") != NULL);
    ok(strstr(b.data, "anthropic-ratelimit-tokens-remaining: 149000\r\n") != NULL);
    ok(strstr(b.data, "anthropic-ratelimit-requests-reset: 2026-12-04T12:00:01Z\r\n") != NULL);
    buf_free(&b);
}

/* Two threads: exactly rpm requests get through in one instant, whatever the interleaving. */
static struct ratelimit *race_r;
static int race_ok[2];
static void *racer(void *p)
{
    int *n = p;
    struct rl_limit l = {.scope = RL_KEY, .name = "race", .rpm = 5000};
    for (int i = 0; i < 10000; i++) {
        struct rl_hold h;
        struct rl_decision d;
        rl_admit(race_r, &l, 1, 0, 42, &h, &d);
        if (d.allowed)
            (*n)++;
    }
    return NULL;
}

static void test_two_threads(void)
{
    race_r = rl_new();
    pthread_t t1, t2;
    pthread_create(&t1, NULL, racer, &race_ok[0]);
    pthread_create(&t2, NULL, racer, &race_ok[1]);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    is_int(race_ok[0] + race_ok[1], 5000);
    rl_free(race_r);
}

/* rl_peek (GET /v1/me): what is left, without charging anything */
static void test_peek(void)
{
    struct ratelimit *r = rl_new();
    struct rl_limit l = {.scope = RL_USER, .name = "u", .rpm = 10, .tpm = 600};
    struct rl_peek pk;
    int64_t t = 5000000;
    rl_peek(r, &l, t, &pk); /* never used: all of it */
    is_int(pk.remaining_requests, 10);
    is_int(pk.remaining_tokens, 600);
    is_int(pk.reset_requests_ms, 0);
    struct rl_hold h;
    struct rl_decision d;
    for (int i = 0; i < 3; i++)
        rl_admit(r, &l, 1, 100, t, &h, &d);
    rl_peek(r, &l, t, &pk);
    is_int(pk.remaining_requests, 7);
    is_int(pk.remaining_tokens, 300);
    is_int(pk.reset_requests_ms, 18000); /* 3 requests at one every 6 s */
    rl_peek(r, &l, t, &pk); /* peeking charged nothing */
    is_int(pk.remaining_requests, 7);
    rl_peek(r, &l, t + 6000, &pk); /* one request's interval later */
    is_int(pk.remaining_requests, 8);
    struct rl_limit only_rpm = {.scope = RL_USER, .name = "u", .rpm = 10};
    rl_peek(r, &only_rpm, t, &pk);
    is_int(pk.remaining_tokens, -1); /* no token limit given */
    rl_free(r);
}

int main(void)
{
    subtest("peek", test_peek);
    subtest("requests per minute", test_rpm);
    subtest("tokens per minute, settle, all or none", test_tpm_settle_all_or_none);
    subtest("headers", test_headers);
    subtest("two threads", test_two_threads);
    return done_testing();
}
