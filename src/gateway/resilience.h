/* resilience.h: the retry rules of issue 9 (items 1, 2, 5), kept apart from the exchange so that they can be
 * tested with an injected clock and random numbers: which outcomes retry, exponential backoff with full jitter,
 * rate-limit reset hints, the retry budget, and which errors go to a context-window or content-policy fallback.
 * The exchange (exchange.c) applies them; the breakers are in breaker.h. */
#ifndef AGENTD_RESILIENCE_H
#define AGENTD_RESILIENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/gw_types.h"

/* The outcomes a retry may follow (config `retry_on`: these names). */
enum {
    RETRY_ON_CONNECT = 1u << 0,  /* "connect": refused, DNS, connect timeout, TLS handshake */
    RETRY_ON_TIMEOUT = 1u << 1,  /* "timeout": first byte, stream idle (before the first client byte), total */
    RETRY_ON_RESET = 1u << 2,    /* "reset": the connection dropped before the first byte reached the client */
    RETRY_ON_PROTOCOL = 1u << 3, /* "protocol": malformed HTTP, a malformed body, a stream cut before its end */
    RETRY_ON_408 = 1u << 4,
    RETRY_ON_409 = 1u << 5,
    RETRY_ON_429 = 1u << 6,
    RETRY_ON_500 = 1u << 7,
    RETRY_ON_502 = 1u << 8,
    RETRY_ON_503 = 1u << 9,
    RETRY_ON_504 = 1u << 10,
    RETRY_ON_529 = 1u << 11,
};
#define RETRY_ON_DEFAULT 0xfffu

/* The name's bit, or 0 when the name is unknown. */
unsigned retry_on_bit(const char *name);
/* "connect, timeout, reset, protocol, 408, ..." (for error messages and docs) */
const char *retry_on_names(void);

/* What a failed attempt calls for. */
enum failure_class {
    FAIL_FATAL,          /* the same request would fail anywhere: tell the client */
    FAIL_RETRY,          /* transient: the same deployment later, or another one */
    FAIL_CONTEXT_WINDOW, /* the prompt is too long for this model: a larger-context fallback */
    FAIL_CONTENT_POLICY, /* the provider's content policy refused it: a content-policy fallback */
};

/* The kind of outcome an attempt ended with, as far as retries care (the exchange maps its typed outcomes). */
enum retry_kind { RK_CONNECT, RK_TIMEOUT, RK_RESET, RK_PROTOCOL, RK_HTTP, RK_OTHER };

/* kind + status (RK_HTTP) + the error the client would get -> what to do, given the retry_on set. */
enum failure_class failure_classify(enum retry_kind kind, int status, const struct gw_error *err, unsigned retry_on);

/* Exponential backoff with full jitter: a uniform draw in [0, min(max_ms, base_ms * 2^retry)], retry = 0 for the
 * first retry. r is a random 64-bit number. */
int64_t backoff_full_jitter(int64_t base_ms, int64_t max_ms, unsigned retry, uint64_t r);

/* x-ratelimit-reset-requests / -tokens values as OpenAI sends them ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5"):
 * milliseconds, or -1 when the text is not one. Linear, bounded (at most 24 h). */
int64_t ratelimit_reset_ms(const char *s);

/* The retry budget: retries may add at most `ratio` of the requests seen, plus `min_per_s` retries per second
 * (so that a quiet gateway can still retry). A token bucket refilled by requests and by time, per worker. */
struct retry_budget {
    double tokens;
    int64_t last_ms;
    double ratio, min_per_s, cap;
};
void retry_budget_init(struct retry_budget *b, double ratio, double min_per_s, int64_t now_ms);
void retry_budget_request(struct retry_budget *b, int64_t now_ms); /* a request arrived */
bool retry_budget_take(struct retry_budget *b, int64_t now_ms);   /* may one retry start? (takes it) */

#endif
