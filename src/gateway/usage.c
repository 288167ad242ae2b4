/* usage.c: upstream token counts judged one way (the bound, the one decision per count, the readers for cJSON and
 * jscan values), and the metric of usages dropped as implausible. */
#include "gateway/usage.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/jscan.h"
#include "common/log.h"
#include "telemetry/metrics.h"

/* ---------- upstream usage ---------- */

static _Atomic int64_t max_usage_tokens = USAGE_MAX_TOKENS_DEFAULT;

struct usage_limits usage_limits_get(void)
{
    return (struct usage_limits){atomic_load_explicit(&max_usage_tokens, memory_order_relaxed)};
}

void usage_limits_set(const struct usage_limits *l)
{
    int64_t m = l->max_tokens;
    if (m < 0 || m > USAGE_MAX_TOKENS_LIMIT)
        m = USAGE_MAX_TOKENS_DEFAULT;
    atomic_store_explicit(&max_usage_tokens, m, memory_order_relaxed);
}

bool usage_count_ok(bool is_number, double d, const struct usage_limits *l)
{
    /* !(d >= 0) also refuses NaN; the bound (at most 1e12) keeps the conversion to int64 defined */
    return is_number && d >= 0 && d == floor(d) && d <= (double)l->max_tokens;
}

static int64_t read_count(struct usage *u, bool is_number, double d)
{
    struct usage_limits l = usage_limits_get();
    if (!usage_count_ok(is_number, d, &l)) {
        u->invalid = true;
        return 0;
    }
    return (int64_t)d;
}

int64_t usage_read_json(struct usage *u, const cJSON *v)
{
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    return read_count(u, cJSON_IsNumber(v), cJSON_IsNumber(v) ? v->valuedouble : 0);
}

int64_t usage_read_jval(struct usage *u, const struct jval *v)
{
    if (v->type == J_NONE || v->type == J_NULL)
        return 0;
    double d = 0;
    bool num = v->type == J_NUMBER && jval_double(v, &d) == 0;
    return read_count(u, num, d);
}

bool usage_validate(struct usage *u, const struct usage_limits *l)
{
    const int64_t c[] = {u->input, u->output, u->cached_input, u->cache_write, u->reasoning};
    bool bad = u->invalid;
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        if (c[i] < 0 || c[i] > l->max_tokens)
            bad = true;
    if (bad)
        *u = (struct usage){.invalid = true, .invalid_noted = u->invalid_noted};
    return u->known;
}

static const char *const invalid_labels[] = {"deployment", NULL};
static struct metric_def m_usage_invalid =
    METRIC_DEF("agentd_gateway_usage_invalid_total",
               "Upstream responses whose usage was not a plausible token count (billed as not reported).",
               METRIC_COUNTER, invalid_labels);

void usage_metrics_register(void)
{
    metrics_register(&m_usage_invalid);
}

/* Deployments already warned about (a fixed table: no allocation, nothing to free at exit). */
#define WARNED_MAX 128
static pthread_mutex_t warned_lock = PTHREAD_MUTEX_INITIALIZER;
static char warned[WARNED_MAX][128];
static size_t nwarned;

static bool first_warning(const char *deployment)
{
    bool first = true;
    pthread_mutex_lock(&warned_lock);
    for (size_t i = 0; i < nwarned && first; i++)
        if (strncmp(warned[i], deployment, sizeof(warned[i]) - 1) == 0)
            first = false;
    if (first) {
        if (nwarned < WARNED_MAX)
            snprintf(warned[nwarned++], sizeof(warned[0]), "%s", deployment);
        else
            first = false; /* past the table: the metric still counts */
    }
    pthread_mutex_unlock(&warned_lock);
    return first;
}

bool usage_check(struct usage *u, const char *deployment)
{
    struct usage_limits l = usage_limits_get();
    if (usage_validate(u, &l) || !u->invalid || u->invalid_noted || deployment == NULL)
        return u->known;
    u->invalid_noted = true; /* copies of this usage (stream state -> attempt) are not counted again */
    metrics_inc(&m_usage_invalid, (const char *[]){deployment});
    struct log_line line;
    if (first_warning(deployment) &&
        log_begin(&line, LL_WARN,
                  "upstream usage is not a plausible token count (negative, fractional, not a number or above "
                  "gateway.max_usage_tokens): billed as usage not reported; agentd_gateway_usage_invalid_total "
                  "counts them, this warning is given once per deployment")) {
        log_field_cstr(&line, "deployment", deployment);
        log_field_int(&line, "max_usage_tokens", l.max_tokens);
        log_end(&line);
    }
    return false;
}
