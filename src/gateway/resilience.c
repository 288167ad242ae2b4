/* resilience.c: retry rules (resilience.h). No clock and no random source of its own: callers pass them. */
#include "gateway/resilience.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    unsigned bit;
} retry_on_table[] = {
    {"connect", RETRY_ON_CONNECT}, {"timeout", RETRY_ON_TIMEOUT}, {"reset", RETRY_ON_RESET},
    {"protocol", RETRY_ON_PROTOCOL}, {"408", RETRY_ON_408}, {"409", RETRY_ON_409},
    {"429", RETRY_ON_429}, {"500", RETRY_ON_500}, {"502", RETRY_ON_502},
    {"503", RETRY_ON_503}, {"504", RETRY_ON_504}, {"529", RETRY_ON_529},
};

unsigned retry_on_bit(const char *name)
{
    for (size_t i = 0; i < sizeof(retry_on_table) / sizeof(retry_on_table[0]); i++)
        if (strcmp(retry_on_table[i].name, name) == 0)
            return retry_on_table[i].bit;
    return 0;
}

const char *retry_on_names(void)
{
    return "connect, timeout, reset, protocol, 408, 409, 429, 500, 502, 503, 504, 529";
}

static unsigned status_bit(int status)
{
    switch (status) {
    case 408: return RETRY_ON_408;
    case 409: return RETRY_ON_409;
    case 429: return RETRY_ON_429;
    case 500: return RETRY_ON_500;
    case 502: return RETRY_ON_502;
    case 503: return RETRY_ON_503;
    case 504: return RETRY_ON_504;
    case 529: return RETRY_ON_529;
    default: return 0;
    }
}

/* case-insensitive substring, bounded by the message's own size */
static bool has(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0)
            return true;
    return false;
}

static bool is_context_window(int status, const struct gw_error *err)
{
    if (!err || (status != 400 && status != 413 && status != 422))
        return false;
    if (strcmp(err->code, "context_length_exceeded") == 0 || strcmp(err->code, "string_above_max_length") == 0)
        return true;
    /* providers without a code say it in words: Anthropic ("prompt is too long"), Bedrock ("Input is too long"),
     * Gemini ("input token count ... exceeds the maximum"), vLLM ("maximum context length") */
    return has(err->message, "context length") || has(err->message, "context window") ||
           has(err->message, "prompt is too long") || has(err->message, "input is too long") ||
           (has(err->message, "token count") && has(err->message, "exceeds"));
}

static bool is_content_policy(int status, const struct gw_error *err)
{
    if (!err || status != 400)
        return false;
    return strcmp(err->code, "content_policy_violation") == 0 || strcmp(err->code, "content_filter") == 0 ||
           has(err->message, "content management policy") || has(err->message, "content policy");
}

enum failure_class failure_classify(enum retry_kind kind, int status, const struct gw_error *err, unsigned retry_on)
{
    switch (kind) {
    case RK_CONNECT: return retry_on & RETRY_ON_CONNECT ? FAIL_RETRY : FAIL_FATAL;
    case RK_TIMEOUT: return retry_on & RETRY_ON_TIMEOUT ? FAIL_RETRY : FAIL_FATAL;
    case RK_RESET: return retry_on & RETRY_ON_RESET ? FAIL_RETRY : FAIL_FATAL;
    case RK_PROTOCOL: return retry_on & RETRY_ON_PROTOCOL ? FAIL_RETRY : FAIL_FATAL;
    case RK_HTTP:
        if (is_context_window(status, err))
            return FAIL_CONTEXT_WINDOW;
        if (is_content_policy(status, err))
            return FAIL_CONTENT_POLICY;
        if (err && strcmp(err->code, "insufficient_quota") == 0)
            return FAIL_FATAL; /* a 429 that waiting does not cure */
        if (status_bit(status) & retry_on)
            return FAIL_RETRY;
        /* agentd's own mapping of an upstream 401/403 (another deployment has other credentials) is a 502 */
        return FAIL_FATAL;
    case RK_OTHER: break;
    }
    return err && err->retryable && err->status >= 500 ? FAIL_RETRY : FAIL_FATAL;
}

int64_t backoff_full_jitter(int64_t base_ms, int64_t max_ms, unsigned retry, uint64_t r)
{
    if (base_ms <= 0 || max_ms <= 0)
        return 0;
    int64_t cap = base_ms;
    for (unsigned i = 0; i < retry && cap < max_ms; i++)
        cap = cap > max_ms / 2 ? max_ms : cap * 2;
    if (cap > max_ms)
        cap = max_ms;
    return (int64_t)(r % ((uint64_t)cap + 1));
}

int64_t ratelimit_reset_ms(const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    double total = 0;
    const char *p = s;
    int parts = 0;
    while (*p && parts < 8) {
        if (*p < '0' || *p > '9')
            return -1;
        double v = 0;
        while (*p >= '0' && *p <= '9' && v < 1e9)
            v = v * 10 + (*p++ - '0');
        if (*p == '.') {
            p++;
            double f = 0.1;
            while (*p >= '0' && *p <= '9') {
                v += (*p++ - '0') * f;
                f /= 10;
            }
        }
        double mul;
        if (p[0] == 'm' && p[1] == 's') {
            mul = 1;
            p += 2;
        } else if (*p == 'h') {
            mul = 3600e3;
            p++;
        } else if (*p == 'm') {
            mul = 60e3;
            p++;
        } else if (*p == 's' || *p == '\0') {
            mul = 1e3; /* a bare number is seconds */
            if (*p)
                p++;
        } else {
            return -1;
        }
        total += v * mul;
        parts++;
        if (total > 86400e3)
            return -1;
    }
    if (*p)
        return -1;
    return (int64_t)(total + 0.5);
}

void retry_budget_init(struct retry_budget *b, double ratio, double min_per_s, int64_t now_ms)
{
    b->ratio = ratio;
    b->min_per_s = min_per_s;
    b->cap = min_per_s * 10 + 100 * ratio; /* a burst: ten seconds of the floor, or 100 requests' worth */
    if (b->cap < 1)
        b->cap = 1;
    b->tokens = b->cap;
    b->last_ms = now_ms;
}

static void refill(struct retry_budget *b, int64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) / 1000.0 * b->min_per_s;
        b->last_ms = now_ms;
    }
    if (b->tokens > b->cap)
        b->tokens = b->cap;
}

void retry_budget_request(struct retry_budget *b, int64_t now_ms)
{
    refill(b, now_ms);
    b->tokens += b->ratio;
    if (b->tokens > b->cap)
        b->tokens = b->cap;
}

bool retry_budget_take(struct retry_budget *b, int64_t now_ms)
{
    refill(b, now_ms);
    if (b->tokens < 1)
        return false;
    b->tokens -= 1;
    return true;
}
