/* prices.h: the versioned price table (USD per million tokens) and the one cost function.
 *
 * The built-in table (prices.c) carries a version string, its sources and the date it was taken; the
 * configuration's `prices:` entries override or extend it (an override changes the version: "<builtin>+cfg.<hash>",
 * so a ledger row says exactly which prices it was charged at). Lookup is by longest prefix of the model name, so a
 * dated snapshot ("gpt-4o-mini-2024-07-18") finds its family; Bedrock's cross-region prefixes ("us.", "eu.", ...)
 * are ignored.
 *
 * Every price in a table is finite and >= 0 (prices_build replaces anything else by the default and counts it in
 * `rejected`), and costs are computed in integer nano-USD, rounded up, saturating: a cost is never NaN, infinite
 * or negative by construction. */
#ifndef AGENTD_PRICES_H
#define AGENTD_PRICES_H

#include <stddef.h>
#include <stdint.h>

struct price {
    char *name;
    double input;        /* uncached input tokens */
    double output;       /* output tokens that are not reasoning */
    double cached_input; /* input tokens read from the provider's cache (OpenAI cached, Anthropic cache read) */
    double cache_write;  /* input tokens written to the provider's cache (Anthropic, Bedrock) */
    double reasoning;    /* reasoning output tokens */
};

struct price_table {
    struct price *v;
    size_t n;
    char version[64]; /* written on every ledger row */
    struct price max; /* the highest of each price in the table (name "max"): for `unpriced: reserve_max` */
};

/* One configured override: a price <= 0 for cached_input / cache_write / reasoning means "the default" (input
 * for the cache prices, output for reasoning); input and output must be given (NaN, negative or infinite values are
 * refused: the entry is skipped and counted). */
struct price_override {
    const char *name;
    double input, output, cached_input, cache_write, reasoning;
};

/* Token counts of one exchange, as struct usage keeps them: input includes cached_input and cache_write, output
 * includes reasoning. Negative counts are treated as 0. */
struct price_tokens {
    int64_t input, cached_input, cache_write, output, reasoning;
};

/* The built-in table's version ("2026-12-04.1"). */
const char *prices_builtin_version(void);
/* Built-in table plus overrides (an override wins over a built-in entry of the same name). *rejected (may be NULL)
 * counts overrides skipped for a non-finite or negative price. Never NULL. */
struct price_table *prices_build(const struct price_override *ov, size_t n, size_t *rejected);
void prices_free(struct price_table *t);
/* Longest-prefix lookup; NULL when unpriced. */
const struct price *prices_lookup(const struct price_table *t, const char *model);

#define PRICE_NUSD_MAX ((int64_t)1 << 60) /* saturation bound of a cost (about 1.15e9 USD) */

/* The cost of t at p, in nano-USD (1e-9 USD), rounded up; 0..PRICE_NUSD_MAX. */
int64_t price_cost_nusd(const struct price *p, const struct price_tokens *t);
/* The same in USD (for logs and the ledger). */
double price_cost_usd(const struct price *p, const struct price_tokens *t);
/* The worst-case cost of `input` uncached input tokens and `output` output tokens (each output token at the
 * higher of the output and reasoning prices), nano-USD, rounded up. */
int64_t price_worst_nusd(const struct price *p, int64_t input, int64_t output);
/* How many output tokens `budget_nusd` buys at p after `input` input tokens (the higher output price); 0 when not
 * even the input fits; INT64_MAX when output is free. */
int64_t price_output_affordable(const struct price *p, int64_t input, int64_t budget_nusd);

#endif
