/* gw_types.h: the gateway's shared vocabulary: token usage, finish reasons, streaming deltas, errors.
 *
 * The canonical form of a chat request and of a complete chat response is the OpenAI Chat Completions JSON
 * shape (a cJSON tree), because it is the lingua franca every provider's shape translates to and from without
 * loss for the features the gateway relays (text, images, tools, tool results, JSON output). A stream is a
 * sequence of struct chat_delta, which front doors turn back into their own event formats incrementally. */
#ifndef AGENTD_GW_TYPES_H
#define AGENTD_GW_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#include "common/str.h"

/* Token usage as an upstream reports it. Nothing an upstream says reaches the ledger unchecked: a count is accepted
 * only when it is a JSON number holding a whole value in [0, gateway.max_usage_tokens]. Anything else (negative,
 * fractional, NaN, a string, past the bound) makes the whole usage "not reported" (known false, invalid true, all
 * counts 0): billed as unknown, counted in agentd_gateway_usage_invalid_total{deployment}, logged once per
 * deployment. Every provider and path reads counts with usage_read_json / usage_read_jval and ends with
 * usage_check, so a body gives the same numbers whether it is relayed as is or translated. */
struct usage {
    int64_t input;        /* prompt tokens, cached ones included */
    int64_t output;       /* completion tokens, reasoning ones included */
    int64_t cached_input; /* prompt tokens read from the provider's cache */
    int64_t cache_write;  /* prompt tokens written to the provider's cache (Anthropic, Bedrock) */
    int64_t reasoning;    /* output tokens spent on reasoning */
    bool known;           /* the provider reported usage, and it passed usage_check */
    bool invalid;         /* the provider reported something that is not a plausible token count */
    bool invalid_noted;   /* usage_check counted it (copies of a dropped usage are counted once) */
};


enum finish {
    FINISH_NONE = 0,
    FINISH_STOP,          /* natural end or a stop sequence */
    FINISH_LENGTH,        /* max_tokens reached */
    FINISH_TOOL_CALLS,
    FINISH_CONTENT_FILTER,
};
const char *gw_finish_openai(enum finish f);    /* "stop", "length", "tool_calls", "content_filter" */
const char *gw_finish_anthropic(enum finish f); /* "end_turn", "max_tokens", "tool_use", "refusal" */
enum finish gw_finish_from_openai(const char *s);

enum delta_kind {
    DELTA_TEXT,       /* text fragment */
    DELTA_TOOL_START, /* a tool call begins: tool_index, tool_id, tool_name */
    DELTA_TOOL_ARGS,  /* a fragment of the tool call's JSON arguments */
    DELTA_FINISH,     /* finish reason (usage may follow) */
    DELTA_USAGE,      /* usage so far (the last one wins) */
};

struct chat_delta {
    enum delta_kind kind;
    struct str text;      /* TEXT, TOOL_ARGS */
    int tool_index;       /* TOOL_START, TOOL_ARGS: 0, 1, ... in order of appearance */
    struct str tool_id;
    struct str tool_name;
    enum finish finish;
    struct usage usage;
};

/* Error types, named as OpenAI and Anthropic both understand them; each front door spells them its own way. */
enum gw_err_type {
    GW_ERR_INVALID_REQUEST, /* 400 */
    GW_ERR_AUTHENTICATION,  /* 401 */
    GW_ERR_PERMISSION,      /* 403 */
    GW_ERR_NOT_FOUND,       /* 404 */
    GW_ERR_TOO_LARGE,       /* 413 */
    GW_ERR_RATE_LIMIT,      /* 429 */
    GW_ERR_API,             /* 500, 502 */
    GW_ERR_OVERLOADED,      /* 503, 529 */
    GW_ERR_TIMEOUT,         /* 504, 408 */
};

struct gw_error {
    int status;             /* HTTP status for the client */
    enum gw_err_type type;
    char message[1024];
    char param[64];         /* OpenAI "param" (the offending field), may be empty */
    char code[64];          /* OpenAI "code" (model_not_found, ...), may be empty */
    long retry_after_ms;    /* -1: none; otherwise passed to the client as Retry-After */
    bool from_upstream;     /* the provider said it (vs. agentd refusing) */
    bool retryable;         /* another attempt (same or next deployment) may succeed */
};

void gw_error_set(struct gw_error *e, int status, enum gw_err_type type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A request agentd refuses before any upstream call: 400 invalid_request with the message and, when not NULL, the
 * offending field as OpenAI's "param". Returns -1, for `return gw_bad_request(...)`. */
int gw_bad_request(struct gw_error *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The type a status implies when the provider's body says nothing more specific. */
enum gw_err_type gw_err_type_for_status(int status);
const char *gw_err_type_openai(enum gw_err_type t);
const char *gw_err_type_anthropic(enum gw_err_type t);

#endif
