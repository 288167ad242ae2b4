#include "gateway/gw_types.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/jscan.h"
#include "common/log.h"
#include "telemetry/metrics.h"

const char *finish_openai(enum finish f)
{
    switch (f) {
    case FINISH_LENGTH: return "length";
    case FINISH_TOOL_CALLS: return "tool_calls";
    case FINISH_CONTENT_FILTER: return "content_filter";
    default: return "stop";
    }
}

const char *finish_anthropic(enum finish f)
{
    switch (f) {
    case FINISH_LENGTH: return "max_tokens";
    case FINISH_TOOL_CALLS: return "tool_use";
    case FINISH_CONTENT_FILTER: return "refusal";
    default: return "end_turn";
    }
}

enum finish finish_from_openai(const char *s)
{
    if (s == NULL)
        return FINISH_NONE;
    if (strcmp(s, "length") == 0)
        return FINISH_LENGTH;
    if (strcmp(s, "tool_calls") == 0 || strcmp(s, "function_call") == 0)
        return FINISH_TOOL_CALLS;
    if (strcmp(s, "content_filter") == 0)
        return FINISH_CONTENT_FILTER;
    return FINISH_STOP;
}

void gw_error_set(struct gw_error *e, int status, enum gw_err_type type, const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->param[0] = e->code[0] = '\0';
    e->retry_after_ms = -1;
    e->from_upstream = false;
    e->retryable = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

int gw_bad_request(struct gw_error *e, const char *param, const char *fmt, ...)
{
    gw_error_set(e, 400, GW_ERR_INVALID_REQUEST, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    if (param)
        snprintf(e->param, sizeof(e->param), "%s", param);
    return -1;
}

enum gw_err_type gw_err_type_for_status(int status)
{
    switch (status) {
    case 400: case 422: return GW_ERR_INVALID_REQUEST;
    case 401: return GW_ERR_AUTHENTICATION;
    case 403: return GW_ERR_PERMISSION;
    case 404: return GW_ERR_NOT_FOUND;
    case 413: return GW_ERR_TOO_LARGE;
    case 429: return GW_ERR_RATE_LIMIT;
    case 408: case 504: return GW_ERR_TIMEOUT;
    case 503: case 529: return GW_ERR_OVERLOADED;
    default: return status >= 500 ? GW_ERR_API : GW_ERR_INVALID_REQUEST;
    }
}

const char *gw_err_type_openai(enum gw_err_type t)
{
    switch (t) {
    case GW_ERR_INVALID_REQUEST: return "invalid_request_error";
    case GW_ERR_AUTHENTICATION: return "authentication_error";
    case GW_ERR_PERMISSION: return "permission_error";
    case GW_ERR_NOT_FOUND: return "invalid_request_error";
    case GW_ERR_TOO_LARGE: return "invalid_request_error";
    case GW_ERR_RATE_LIMIT: return "rate_limit_error";
    case GW_ERR_OVERLOADED: return "server_error";
    case GW_ERR_TIMEOUT: return "timeout_error";
    default: return "server_error";
    }
}

const char *gw_err_type_anthropic(enum gw_err_type t)
{
    switch (t) {
    case GW_ERR_INVALID_REQUEST: return "invalid_request_error";
    case GW_ERR_AUTHENTICATION: return "authentication_error";
    case GW_ERR_PERMISSION: return "permission_error";
    case GW_ERR_NOT_FOUND: return "not_found_error";
    case GW_ERR_TOO_LARGE: return "request_too_large";
    case GW_ERR_RATE_LIMIT: return "rate_limit_error";
    case GW_ERR_OVERLOADED: return "overloaded_error";
    case GW_ERR_TIMEOUT: return "timeout_error";
    default: return "api_error";
    }
}

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
