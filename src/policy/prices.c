#include "policy/prices.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/macros.h"

/* ---- the built-in table ----
 * Version 2026-12-04.1. USD per million tokens, standard (non-batch, non-priority) tier, text, prompts at or below
 * the providers' long-context threshold. Sources, as published by each provider: https://openai.com/api/pricing,
 * https://www.anthropic.com/pricing (cache write = the 5-minute write price, cache read = "cache hits"),
 * https://ai.google.dev/gemini-api/docs/pricing, https://aws.amazon.com/bedrock/pricing (on-demand, us-east-1).
 * Taken on 2026-12-04 from the table agentd shipped in gateway/registry.c. 0 in cached_input / cache_write means
 * "the input price" and 0 in reasoning "the output price" (the providers bill reasoning tokens as output).
 * To update: edit the rows, bump PRICES_VERSION (date + serial), say where the numbers came from. */
#define PRICES_VERSION "2026-12-04.1"

static const struct {
    const char *name;
    double input, output, cached_input, cache_write, reasoning;
} builtin[] = {
    {"mock", 0, 0, 0, 0, 0},
    {"gpt-4o-mini", 0.15, 0.60, 0.075, 0, 0},
    {"gpt-4o", 2.50, 10.00, 1.25, 0, 0},
    {"gpt-4.1-nano", 0.10, 0.40, 0.025, 0, 0},
    {"gpt-4.1-mini", 0.40, 1.60, 0.10, 0, 0},
    {"gpt-4.1", 2.00, 8.00, 0.50, 0, 0},
    {"gpt-5-nano", 0.05, 0.40, 0.005, 0, 0},
    {"gpt-5-mini", 0.25, 2.00, 0.025, 0, 0},
    {"gpt-5", 1.25, 10.00, 0.125, 0, 0},
    {"o3-mini", 1.10, 4.40, 0.55, 0, 0},
    {"o3", 2.00, 8.00, 0.50, 0, 0},
    {"o4-mini", 1.10, 4.40, 0.275, 0, 0},
    {"text-embedding-3-small", 0.02, 0, 0, 0, 0},
    {"text-embedding-3-large", 0.13, 0, 0, 0, 0},
    {"claude-opus-4", 15.00, 75.00, 1.50, 18.75, 0},
    {"claude-sonnet-4", 3.00, 15.00, 0.30, 3.75, 0},
    {"claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25, 0},
    {"claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00, 0},
    {"claude-3-7-sonnet", 3.00, 15.00, 0.30, 3.75, 0},
    {"anthropic.claude-opus-4", 15.00, 75.00, 1.50, 18.75, 0},
    {"anthropic.claude-sonnet-4", 3.00, 15.00, 0.30, 3.75, 0},
    {"anthropic.claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25, 0},
    {"anthropic.claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00, 0},
    {"gemini-2.5-pro", 1.25, 10.00, 0.31, 0, 0},
    {"gemini-2.5-flash-lite", 0.10, 0.40, 0.025, 0, 0},
    {"gemini-2.5-flash", 0.30, 2.50, 0.075, 0, 0},
    {"gemini-2.0-flash", 0.10, 0.40, 0.025, 0, 0},
    {"gemini-embedding-001", 0.15, 0, 0, 0, 0},
    {"text-embedding-004", 0.0, 0, 0, 0, 0},
    {"amazon.nova-pro", 0.80, 3.20, 0.20, 0, 0},
    {"amazon.nova-lite", 0.06, 0.24, 0.015, 0, 0},
    {"amazon.nova-micro", 0.035, 0.14, 0.00875, 0, 0},
    {"meta.llama3-1-70b-instruct", 0.72, 0.72, 0, 0, 0},
    {"meta.llama3-1-8b-instruct", 0.22, 0.22, 0, 0, 0},
};

#define PRICE_MAX 1e6 /* USD per million tokens; the configuration's bound too */

const char *prices_builtin_version(void)
{
    return PRICES_VERSION;
}

static bool price_ok(double d)
{
    return d >= 0 && d <= PRICE_MAX; /* false for NaN too */
}

/* A price with its defaults filled in; false when a given price is not finite and >= 0. */
static bool fill(struct price *p, const char *name, double in, double out, double cached, double write, double reas)
{
    if (!price_ok(in) || !price_ok(out) || !(cached <= PRICE_MAX) || !(write <= PRICE_MAX) || !(reas <= PRICE_MAX))
        return false;
    *p = (struct price){.name = xstrdup(name),
                        .input = in,
                        .output = out,
                        .cached_input = cached > 0 ? cached : in,
                        .cache_write = write > 0 ? write : in,
                        .reasoning = reas > 0 ? reas : out};
    return true;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ULL;
    return h;
}

struct price_table *prices_build(const struct price_override *ov, size_t n, size_t *rejected)
{
    struct price_table *t = xcalloc(1, sizeof(*t));
    t->v = xcalloc(n + ARRAY_LEN(builtin), sizeof(*t->v));
    size_t bad = 0, used = 0;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        if (ov[i].name == NULL || !fill(&t->v[t->n], ov[i].name, ov[i].input, ov[i].output, ov[i].cached_input,
                                        ov[i].cache_write, ov[i].reasoning)) {
            bad++;
            continue;
        }
        const struct price *p = &t->v[t->n++];
        h = fnv(h, p->name, strlen(p->name) + 1);
        const double d[] = {p->input, p->output, p->cached_input, p->cache_write, p->reasoning};
        h = fnv(h, d, sizeof(d));
        used++;
    }
    size_t nov = t->n;
    for (size_t i = 0; i < ARRAY_LEN(builtin); i++) {
        bool dup = false;
        for (size_t j = 0; j < nov && !dup; j++)
            dup = strcmp(t->v[j].name, builtin[i].name) == 0;
        if (!dup && fill(&t->v[t->n], builtin[i].name, builtin[i].input, builtin[i].output, builtin[i].cached_input,
                         builtin[i].cache_write, builtin[i].reasoning))
            t->n++;
    }
    t->max.name = (char *)"max";
    for (size_t i = 0; i < t->n; i++) {
        const struct price *p = &t->v[i];
        t->max.input = p->input > t->max.input ? p->input : t->max.input;
        t->max.output = p->output > t->max.output ? p->output : t->max.output;
        t->max.cached_input = p->cached_input > t->max.cached_input ? p->cached_input : t->max.cached_input;
        t->max.cache_write = p->cache_write > t->max.cache_write ? p->cache_write : t->max.cache_write;
        t->max.reasoning = p->reasoning > t->max.reasoning ? p->reasoning : t->max.reasoning;
    }
    if (used)
        snprintf(t->version, sizeof(t->version), "%s+cfg.%08llx", PRICES_VERSION,
                 (unsigned long long)(h & 0xffffffffULL));
    else
        snprintf(t->version, sizeof(t->version), "%s", PRICES_VERSION);
    if (rejected)
        *rejected = bad;
    return t;
}

void prices_free(struct price_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        xfree(t->v[i].name);
    xfree(t->v);
    xfree(t);
}

const struct price *prices_lookup(const struct price_table *t, const char *model)
{
    if (t == NULL || model == NULL)
        return NULL;
    static const char *const prefixes[] = {"us.", "eu.", "apac.", "us-gov.", "global."};
    for (size_t i = 0; i < ARRAY_LEN(prefixes); i++)
        if (strncmp(model, prefixes[i], strlen(prefixes[i])) == 0) {
            model += strlen(prefixes[i]);
            break;
        }
    const struct price *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t n = strlen(t->v[i].name);
        if (n > best_len && strncmp(model, t->v[i].name, n) == 0) {
            best = &t->v[i];
            best_len = n;
        }
    }
    return best;
}

static double nz(int64_t v)
{
    return v > 0 ? (double)v : 0;
}

/* USD per million tokens -> nano-USD per token is a factor 1000. */
static int64_t to_nusd(double nusd)
{
    if (!(nusd > 0))
        return 0;
    double c = ceil(nusd);
    return c >= (double)PRICE_NUSD_MAX ? PRICE_NUSD_MAX : (int64_t)c;
}

int64_t price_cost_nusd(const struct price *p, const struct price_tokens *t)
{
    if (p == NULL || t == NULL)
        return 0;
    double cached = nz(t->cached_input), write = nz(t->cache_write), reas = nz(t->reasoning);
    double uncached = nz(t->input) - cached - write;
    double plain_out = nz(t->output) - reas;
    if (uncached < 0)
        uncached = 0;
    if (plain_out < 0) /* reasoning reported above output: bill what was reported, at the reasoning price */
        plain_out = 0;
    double c = uncached * p->input + cached * p->cached_input + write * p->cache_write + plain_out * p->output +
               reas * p->reasoning;
    return to_nusd(c * 1000.0);
}

double price_cost_usd(const struct price *p, const struct price_tokens *t)
{
    return (double)price_cost_nusd(p, t) / 1e9;
}

static double out_price(const struct price *p)
{
    return p->reasoning > p->output ? p->reasoning : p->output;
}

int64_t price_worst_nusd(const struct price *p, int64_t input, int64_t output)
{
    if (p == NULL)
        return 0;
    return to_nusd((nz(input) * p->input + nz(output) * out_price(p)) * 1000.0);
}

int64_t price_output_affordable(const struct price *p, int64_t input, int64_t budget_nusd)
{
    if (p == NULL)
        return INT64_MAX;
    int64_t in = price_worst_nusd(p, input, 0);
    if (budget_nusd < in)
        return 0;
    double per = out_price(p) * 1000.0; /* nano-USD per output token */
    if (!(per > 0))
        return INT64_MAX;
    double n = floor((double)(budget_nusd - in) / per);
    /* the worst-case cost of the result must fit: step down past rounding */
    int64_t k = n > 1e15 ? (int64_t)1e15 : (int64_t)n;
    while (k > 0 && price_worst_nusd(p, input, k) > budget_nusd)
        k--;
    return k;
}
