#include <math.h>
#include <stdint.h>

#include "policy/prices.h"
#include "test.h"

static void test_lookup_and_version(void)
{
    struct price_table *t = prices_build(NULL, 0, NULL);
    is_str(t->version, prices_builtin_version());
    const struct price *p = prices_lookup(t, "gpt-4o-mini-2024-07-18");
    ok(p != NULL);
    is_str(p->name, "gpt-4o-mini"); /* longest prefix, not "gpt-4o" */
    p = prices_lookup(t, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
    ok(p && strcmp(p->name, "anthropic.claude-sonnet-4") == 0);
    ok(prices_lookup(t, "no-such-model") == NULL);
    ok(t->max.input == 15.00 && t->max.output == 75.00 && t->max.cache_write == 18.75);
    /* defaults: cache write = input when unpriced, reasoning = output */
    p = prices_lookup(t, "gpt-4o");
    ok(p->cache_write == p->input && p->reasoning == p->output && p->cached_input == 1.25);
    prices_free(t);
}

static void test_override(void)
{
    struct price_override ov[] = {
        {"gpt-4o", 1.0, 2.0, 0, 0, 8.0},
        {"bad-nan", NAN, 1.0, 0, 0, 0},
        {"bad-neg", 1.0, -1.0, 0, 0, 0},
        {"bad-inf", 1.0, INFINITY, 0, 0, 0},
        {"bad-cached", 1.0, 1.0, NAN, 0, 0},
    };
    size_t rejected = 0;
    struct price_table *t = prices_build(ov, 5, &rejected);
    is_int(rejected, 4);
    ok(prices_lookup(t, "bad-nan") == NULL && prices_lookup(t, "bad-neg") == NULL);
    ok(prices_lookup(t, "bad-cached") == NULL);
    const struct price *p = prices_lookup(t, "gpt-4o-2024");
    ok(p->input == 1.0 && p->output == 2.0 && p->reasoning == 8.0);
    ok(strncmp(t->version, prices_builtin_version(), strlen(prices_builtin_version())) == 0);
    ok(strstr(t->version, "+cfg.") != NULL);
    /* a different override gives a different version */
    ov[0].input = 1.5;
    struct price_table *t2 = prices_build(ov, 1, NULL);
    ok(strcmp(t->version, t2->version) != 0);
    prices_free(t2);
    prices_free(t);
}

static void test_cost(void)
{
    /* claude-sonnet-4: 3 in, 15 out, 0.30 cache read, 3.75 cache write */
    struct price p = {.name = "x", .input = 3, .output = 15, .cached_input = 0.30, .cache_write = 3.75, .reasoning = 15};
    /* 1000 input of which 600 cache read and 100 cache write, 200 output */
    struct price_tokens t = {.input = 1000, .cached_input = 600, .cache_write = 100, .output = 200};
    /* 300*3 + 600*0.3 + 100*3.75 + 200*15 = 900+180+375+3000 = 4455 USD/M = 4455000 nUSD/1e6*1000 */
    is_int(price_cost_nusd(&p, &t), 4455000);
    ok(fabs(price_cost_usd(&p, &t) - 0.004455) < 1e-12);
    /* cached tokens are not lumped in at the input price */
    struct price_tokens lumped = {.input = 1000, .output = 200};
    ok(price_cost_nusd(&p, &lumped) > price_cost_nusd(&p, &t));
    /* reasoning priced separately */
    struct price pr = p;
    pr.reasoning = 60;
    struct price_tokens r = {.input = 0, .output = 100, .reasoning = 40};
    is_int(price_cost_nusd(&pr, &r), (60 * 15 + 40 * 60) * 1000);
    /* negative counts cost nothing, never a negative cost; absurd counts saturate */
    struct price_tokens neg = {.input = -5, .output = -7, .cached_input = -1, .reasoning = -3};
    is_int(price_cost_nusd(&p, &neg), 0);
    struct price_tokens huge = {.input = INT64_MAX, .output = INT64_MAX};
    is_int(price_cost_nusd(&p, &huge), PRICE_NUSD_MAX);
    /* rounding is up: one token at $0.005/M is 5 nano-USD, at $0.00875/M 8.75 -> 9 */
    struct price tiny = {.name = "t", .input = 0.00875, .output = 0, .cached_input = 0.00875, .cache_write = 0.00875};
    is_int(price_cost_nusd(&tiny, &(struct price_tokens){.input = 1}), 9);
    ok(price_cost_nusd(NULL, &t) == 0);
}

static void test_affordable(void)
{
    struct price p = {.name = "x", .input = 1, .output = 2, .cached_input = 1, .cache_write = 1, .reasoning = 4};
    /* 1 USD per million tokens is 1000 nano-USD per token; the worst case prices output at max(output,
     * reasoning) = 4 USD/M */
    is_int(price_worst_nusd(&p, 1000, 1000), 1000 * 1000 + 1000 * 4000);
    int64_t b = 1000 * 1000 + 4000 * 250;
    is_int(price_output_affordable(&p, 1000, b), 250);
    is_int(price_output_affordable(&p, 1000, b - 1), 249);
    is_int(price_output_affordable(&p, 1000, 999999), 0);
    is_int(price_output_affordable(&p, 1000, 1000000), 0);
    ok(price_worst_nusd(&p, 1000, price_output_affordable(&p, 1000, 1234567)) <= 1234567);
    is_int(price_output_affordable(&p, 1000, 1234567), 58);
    struct price fr = {.name = "f"};
    ok(price_output_affordable(&fr, 1000, 0) == INT64_MAX);
}

int main(void)
{
    subtest("lookup and version", test_lookup_and_version);
    subtest("overrides", test_override);
    subtest("cost", test_cost);
    subtest("affordable output", test_affordable);
    return done_testing();
}
