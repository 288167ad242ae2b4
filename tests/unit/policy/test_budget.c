#include <pthread.h>
#include <stdint.h>

#include "policy/budget.h"
#include "test.h"

/* 2026-12-04 12:00:00 UTC, a Friday */
#define NOW 1796385600LL

static const struct price P = {.name = "p", .input = 1, .output = 2, .cached_input = 1, .cache_write = 1, .reasoning = 2};
/* 1 USD/M = 1000 nano-USD per token: 1000 input + 1000 output = 1e6 + 2e6 nano-USD = $0.003 */

static void test_windows(void)
{
    is_int(budget_window_start(BUDGET_DAY, NOW), NOW - 12 * 3600);
    is_int(budget_window_end(BUDGET_DAY, NOW), NOW + 12 * 3600);
    /* the week starts on Monday 2026-11-30 */
    is_int(budget_window_start(BUDGET_WEEK, NOW), NOW - 12 * 3600 - 4 * 86400);
    is_int(budget_window_end(BUDGET_WEEK, NOW), NOW - 12 * 3600 + 3 * 86400);
    /* December 2026: 1st to 1st of January 2027 */
    is_int(budget_window_start(BUDGET_MONTH, NOW), 1796083200LL);
    is_int(budget_window_end(BUDGET_MONTH, NOW), 1798761600LL);
    /* February of a leap year ends on the 29th */
    is_int(budget_window_end(BUDGET_MONTH, 1709251199LL), 1709251200LL); /* 2024-02-29 23:59:59 -> 2024-03-01 */
    is_int(budget_window_start(BUDGET_TOTAL, NOW), 0);
    ok(budget_window_end(BUDGET_TOTAL, NOW) == INT64_MAX);
}

static void test_reserve_settle(void)
{
    struct budget *b = budget_new();
    struct budget_limit l = {.scope = BUDGET_KEY, .name = "k1", .window = BUDGET_DAY, .usd_nusd = 10000000}; /* $0.01 */
    struct budget_ask a = {.price = &P, .input_tokens = 1000, .max_tokens = 1000, .now = NOW};
    struct budget_hold h1, h2, h3, h4;
    struct budget_decision d;
    budget_reserve(b, &l, 1, &a, &h1, &d);
    is_int(d.verdict, BUDGET_OK);
    is_int(d.reserved_nusd, 3000000);
    budget_reserve(b, &l, 1, &a, &h2, &d);
    budget_reserve(b, &l, 1, &a, &h3, &d);
    is_int(d.verdict, BUDGET_OK); /* 9e6 reserved of 1e7 */
    budget_reserve(b, &l, 1, &a, &h4, &d);
    is_int(d.verdict, BUDGET_REFUSED);
    is_int(d.which, 0);
    is_int(d.retry_after, 12 * 3600);
    /* settle one at its actual usage: 1000 in, 100 out = 1.2e6; the rest is released */
    budget_settle(b, &h1, &(struct price_tokens){.input = 1000, .output = 100}, NULL, NOW);
    is_int(h1.n, 0);
    struct budget_state st;
    budget_get(b, BUDGET_KEY, "k1", BUDGET_DAY, NOW, &st);
    is_int(st.spent_nusd, 1200000);
    is_int(st.reserved_nusd, 6000000);
    is_int(st.spent_tokens, 1100);
    budget_reserve(b, &l, 1, &a, &h4, &d); /* 1.2 + 6 + 3 = 10.2 > 10: still refused */
    is_int(d.verdict, BUDGET_REFUSED);
    budget_settle(b, &h2, &(struct price_tokens){.input = 1000, .output = 100}, NULL, NOW);
    budget_reserve(b, &l, 1, &a, &h4, &d); /* 2.4 + 3 + 3 = 8.4 */
    is_int(d.verdict, BUDGET_OK);
    budget_settle(b, &h3, &(struct price_tokens){0}, NULL, NOW);
    budget_settle(b, &h4, &(struct price_tokens){0}, NULL, NOW);
    budget_get(b, BUDGET_KEY, "k1", BUDGET_DAY, NOW, &st);
    is_int(st.reserved_nusd, 0);
    is_int(st.spent_nusd, 2400000);
    /* charged at the price of the deployment that served it, not the dearer one it reserved at */
    static const struct price cheap = {.name = "c", .input = 0.5, .output = 1, .cached_input = 0.5,
                                       .cache_write = 0.5, .reasoning = 1};
    budget_reserve(b, &l, 1, &a, &h1, &d);
    budget_settle(b, &h1, &(struct price_tokens){.input = 1000, .output = 100}, &cheap, NOW);
    budget_get(b, BUDGET_KEY, "k1", BUDGET_DAY, NOW, &st);
    is_int(st.spent_nusd, 2400000 + 600000);
    /* the next day starts from zero and a reservation then fits again */
    budget_get(b, BUDGET_KEY, "k1", BUDGET_DAY, NOW + 12 * 3600, &st);
    is_int(st.spent_nusd, 0);
    budget_free(b);
}

static void test_clamp_tokens_unpriced_soft(void)
{
    struct budget *b = budget_new();
    struct budget_limit l = {.scope = BUDGET_TEAM, .name = "t", .window = BUDGET_TOTAL, .usd_nusd = 2000000,
                             .clamp = true};
    struct budget_ask a = {.price = &P, .input_tokens = 1000, .max_tokens = 1000, .now = NOW};
    struct budget_hold h, h2;
    struct budget_decision d;
    budget_reserve(b, &l, 1, &a, &h, &d);
    /* $0.002 covers the input ($0.001) and 500 output tokens */
    is_int(d.verdict, BUDGET_CLAMPED);
    is_int(d.max_tokens, 500);
    budget_reserve(b, &l, 1, &a, &h2, &d); /* nothing left: refused even with clamp, no Retry-After for total */
    is_int(d.verdict, BUDGET_REFUSED);
    is_int(d.retry_after, -1);
    budget_settle(b, &h, &(struct price_tokens){.input = 1000, .output = 500}, NULL, NOW);

    /* tokens budget */
    struct budget_limit lt = {.scope = BUDGET_USER, .name = "u", .window = BUDGET_MONTH, .tokens = 1500, .clamp = true};
    budget_reserve(b, &lt, 1, &a, &h, &d);
    is_int(d.verdict, BUDGET_CLAMPED);
    is_int(d.max_tokens, 500);
    budget_settle(b, &h, &(struct price_tokens){.input = 1000, .output = 20}, NULL, NOW);
    lt.clamp = false;
    budget_reserve(b, &lt, 1, &a, &h, &d);
    is_int(d.verdict, BUDGET_REFUSED);

    /* unpriced: deny by default; allow charges tokens only; reserve_max prices at the max price */
    struct budget_limit lu = {.scope = BUDGET_KEY, .name = "ku", .window = BUDGET_TOTAL, .usd_nusd = 5000000};
    struct budget_ask au = {.price = NULL, .max_price = &P, .input_tokens = 1000, .max_tokens = 1000, .now = NOW};
    budget_reserve(b, &lu, 1, &au, &h, &d);
    is_int(d.verdict, BUDGET_UNPRICED);
    lu.unpriced = BUDGET_UNPRICED_ALLOW;
    budget_reserve(b, &lu, 1, &au, &h, &d);
    is_int(d.verdict, BUDGET_OK);
    budget_settle(b, &h, &(struct price_tokens){.input = 1000, .output = 1000}, NULL, NOW);
    struct budget_state st;
    budget_get(b, BUDGET_KEY, "ku", BUDGET_TOTAL, NOW, &st);
    is_int(st.spent_nusd, 0);
    is_int(st.spent_tokens, 2000);
    lu.unpriced = BUDGET_UNPRICED_RESERVE_MAX;
    budget_reserve(b, &lu, 1, &au, &h, &d);
    is_int(d.verdict, BUDGET_OK);
    budget_settle(b, &h, &(struct price_tokens){.input = 1000, .output = 1000}, NULL, NOW);
    budget_get(b, BUDGET_KEY, "ku", BUDGET_TOTAL, NOW, &st);
    is_int(st.spent_nusd, 3000000);

    /* soft: never refuses, reports the crossing once per window */
    struct budget_limit ls = {.scope = BUDGET_WORKFLOW, .name = "w", .window = BUDGET_DAY, .usd_nusd = 4000000,
                              .soft = true};
    budget_reserve(b, &ls, 1, &a, &h, &d);
    is_int(d.soft_crossed, -1);
    budget_reserve(b, &ls, 1, &a, &h2, &d);
    is_int(d.verdict, BUDGET_OK);
    is_int(d.soft_crossed, 0);
    budget_settle(b, &h2, &(struct price_tokens){0}, NULL, NOW);
    budget_reserve(b, &ls, 1, &a, &h2, &d);
    is_int(d.soft_crossed, -1);
    budget_settle(b, &h, &(struct price_tokens){0}, NULL, NOW);
    budget_settle(b, &h2, &(struct price_tokens){0}, NULL, NOW);
    budget_free(b);
}

/* A request that produces no output (embeddings: max_tokens 0) is refused when its input alone does not fit:
 * it must not pass a spent budget because "no output" always fits. */
static void test_input_only(void)
{
    struct budget *b = budget_new();
    struct budget_limit lt = {.scope = BUDGET_WORKFLOW, .name = "w", .window = BUDGET_TOTAL, .tokens = 1500};
    struct budget_ask a = {.price = &P, .input_tokens = 1000, .max_tokens = 0, .now = NOW};
    struct budget_hold h;
    struct budget_decision d;
    budget_reserve(b, &lt, 1, &a, &h, &d);
    is_int(d.verdict, BUDGET_OK); /* 1000 of 1500 */
    budget_settle(b, &h, &(struct price_tokens){.input = 1000}, NULL, NOW);
    budget_reserve(b, &lt, 1, &a, &h, &d);
    is_int(d.verdict, BUDGET_REFUSED); /* 1000 more do not fit in the 500 left */
    is_int(d.which, 0);
    struct budget_limit lu = {.scope = BUDGET_USER, .name = "u", .window = BUDGET_DAY, .usd_nusd = 1500000};
    budget_reserve(b, &lu, 1, &a, &h, &d); /* 1000 input tokens = 1e6 nano-USD of 1.5e6 */
    is_int(d.verdict, BUDGET_OK);
    budget_settle(b, &h, &(struct price_tokens){.input = 1000}, NULL, NOW);
    budget_reserve(b, &lu, 1, &a, &h, &d);
    is_int(d.verdict, BUDGET_REFUSED);
    is_int(d.retry_after, 12 * 3600);
    budget_free(b);
}

static void test_all_or_nothing(void)
{
    struct budget *b = budget_new();
    struct budget_limit l[2] = {
        {.scope = BUDGET_KEY, .name = "k", .window = BUDGET_DAY, .usd_nusd = 100000000},
        {.scope = BUDGET_TEAM, .name = "t", .window = BUDGET_DAY, .usd_nusd = 1000000}, /* $0.001: too little */
    };
    struct budget_ask a = {.price = &P, .input_tokens = 1000, .max_tokens = 1000, .now = NOW};
    struct budget_hold h;
    struct budget_decision d;
    budget_reserve(b, l, 2, &a, &h, &d);
    is_int(d.verdict, BUDGET_REFUSED);
    is_int(d.which, 1);
    struct budget_state st;
    budget_get(b, BUDGET_KEY, "k", BUDGET_DAY, NOW, &st);
    is_int(st.reserved_nusd, 0); /* the key's budget holds nothing for a refused request */
    /* seeding from the ledger counts only spend inside the window */
    budget_seed(b, BUDGET_KEY, "k", BUDGET_DAY, NOW - 86400, 5000, 5, NOW);
    budget_seed(b, BUDGET_KEY, "k", BUDGET_DAY, NOW - 60, 7000, 7, NOW);
    budget_get(b, BUDGET_KEY, "k", BUDGET_DAY, NOW, &st);
    is_int(st.spent_nusd, 7000);
    is_int(st.spent_tokens, 7);
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[199] = 0;
    l[0].name = longname;
    budget_reserve(b, l, 1, &a, &h, &d);
    is_int(d.verdict, BUDGET_BAD);
    budget_free(b);
}

/* Two threads race for one budget: the reservations taken never exceed it, and every refusal came when the
 * budget really could not cover it. */
struct race {
    struct budget *b;
    int ok;
};
static const struct budget_limit race_limit = {.scope = BUDGET_KEY, .name = "race", .window = BUDGET_TOTAL,
                                               .usd_nusd = 3000000LL * 1000 + 1500000};

static void *racer(void *p)
{
    struct race *r = p;
    struct budget_ask a = {.price = &P, .input_tokens = 1000, .max_tokens = 1000, .now = NOW};
    for (int i = 0; i < 20000; i++) {
        struct budget_hold h;
        struct budget_decision d;
        budget_reserve(r->b, &race_limit, 1, &a, &h, &d);
        if (d.verdict != BUDGET_OK)
            continue;
        r->ok++;
        /* half the requests settle at their full worst case (spent for good), half at nothing */
        struct price_tokens used = {.input = 1000, .output = 1000};
        budget_settle(r->b, &h, (i & 1) ? &used : &(struct price_tokens){0}, NULL, NOW);
    }
    return NULL;
}

static void test_two_threads(void)
{
    struct budget *b = budget_new();
    struct race r1 = {b, 0}, r2 = {b, 0};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, racer, &r1);
    pthread_create(&t2, NULL, racer, &r2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    struct budget_state st;
    budget_get(b, BUDGET_KEY, "race", BUDGET_TOTAL, NOW, &st);
    ok(st.spent_nusd <= race_limit.usd_nusd);
    is_int(st.reserved_nusd, 0);
    /* exactly 1000 full charges fit: what is left ($0.0015) cannot cover one more worst case */
    is_int(st.spent_nusd, 3000000000LL);
    ok(r1.ok + r2.ok >= 2000);
    budget_free(b);
}

/* A fallback at a dearer price tops the reservation up when the budget covers the difference; else nothing
 * changes and the budget that could not cover it is named. The settle releases the topped-up reservation. */
static void test_topup(void)
{
    struct budget *b = budget_new();
    static const struct price dear = {.name = "d", .input = 3, .output = 6, .cached_input = 3, .cache_write = 3,
                                      .reasoning = 6}; /* 1000 + 1000 tokens: 9e6 nano-USD */
    struct budget_limit l = {.scope = BUDGET_KEY, .name = "t", .window = BUDGET_DAY, .usd_nusd = 10000000}; /* $0.01 */
    struct budget_ask a = {.price = &P, .input_tokens = 1000, .max_tokens = 1000, .now = NOW};
    struct budget_hold h1, h2;
    struct budget_decision d;
    struct budget_state st;
    int which;
    budget_reserve(b, &l, 1, &a, &h1, &d); /* 3e6 at P */
    is_int(d.verdict, BUDGET_OK);
    is_int(budget_topup(b, &h1, &P, 1000, 1000, NOW, &which), 0); /* the same price: nothing to do */
    budget_get(b, BUDGET_KEY, "t", BUDGET_DAY, NOW, &st);
    is_int(st.reserved_nusd, 3000000);
    is_int(budget_topup(b, &h1, &dear, 1000, 1000, NOW, &which), 0); /* +6e6: 9e6 of 1e7 */
    is_int(which, -1);
    budget_get(b, BUDGET_KEY, "t", BUDGET_DAY, NOW, &st);
    is_int(st.reserved_nusd, 9000000);
    is_int(h1.v[0].nusd, 9000000);
    budget_reserve(b, &l, 1, &a, &h2, &d); /* another request at P does not fit next to it */
    is_int(d.verdict, BUDGET_REFUSED);
    /* a second request at P (with room made for it), then its fallback to dear: not covered, nothing changes */
    budget_settle(b, &h1, &(struct price_tokens){0}, NULL, NOW);
    budget_reserve(b, &l, 1, &a, &h1, &d);
    budget_reserve(b, &l, 1, &a, &h2, &d);
    is_int(d.verdict, BUDGET_OK); /* 6e6 reserved */
    is_int(budget_topup(b, &h2, &dear, 1000, 1000, NOW, &which), -1);
    is_int(which, 0);
    is_int(h2.v[0].nusd, 3000000);
    budget_get(b, BUDGET_KEY, "t", BUDGET_DAY, NOW, &st);
    is_int(st.reserved_nusd, 6000000);
    is_int(budget_topup(b, &h2, NULL, 1000, 1000, NOW, &which), -1); /* unpriced under a USD budget */
    /* settled at the dear price after a top-up: the whole reservation released, the actual charged */
    budget_settle(b, &h2, &(struct price_tokens){0}, NULL, NOW);
    is_int(budget_topup(b, &h1, &dear, 1000, 1000, NOW, &which), 0);
    budget_settle(b, &h1, &(struct price_tokens){.input = 1000, .output = 100}, &dear, NOW);
    budget_get(b, BUDGET_KEY, "t", BUDGET_DAY, NOW, &st);
    is_int(st.reserved_nusd, 0);
    is_int(st.spent_nusd, 3600000);
    budget_free(b);
}

int main(void)
{
    subtest("calendar windows", test_windows);
    subtest("reserve and settle", test_reserve_settle);
    subtest("clamp, tokens, unpriced, soft", test_clamp_tokens_unpriced_soft);
    subtest("input only (embeddings)", test_input_only);
    subtest("all budgets or none; seeding", test_all_or_nothing);
    subtest("two threads", test_two_threads);
    subtest("top-up for a dearer fallback", test_topup);
    return done_testing();
}
