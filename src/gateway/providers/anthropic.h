/* anthropic.h: the Anthropic Messages wire format, shared by the front door (front_anthropic.c: Anthropic clients)
 * and the provider (providers/anthropic.c: Anthropic upstreams). The codecs here are pure functions of their
 * inputs (no exchange, no I/O), so unit tests and fuzz targets drive them directly; the front_ops and
 * provider_ops wrap them. Translation rules and what is dropped or emulated: docs/gateway-anthropic.md.
 *
 * Usage semantics. Anthropic's input_tokens counts only the uncached part of the prompt: cache reads
 * (cache_read_input_tokens) and cache writes (cache_creation_input_tokens) are reported beside it. The gateway's
 * struct usage counts the whole prompt in `input` (OpenAI's prompt_tokens semantics), so
 *   usage.input = input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
 *   usage.cached_input = cache_read_input_tokens, usage.cache_write = cache_creation_input_tokens,
 * and the front door writes input_tokens back as input - cached_input - cache_write. */
#ifndef AGENTD_GATEWAY_PROVIDERS_ANTHROPIC_H
#define AGENTD_GATEWAY_PROVIDERS_ANTHROPIC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"
#include "gateway/usage.h"
#include "gateway/gw_types.h"

/* Tool-block bookkeeping bound for one streamed message (a stream with more blocks is refused as malformed). */
#define ANTHROPIC_MAX_BLOCKS 1024

/* ---- usage ---- */

/* Raw Anthropic usage counters as they appear on the wire. */
struct anthropic_usage {
    int64_t input_tokens, output_tokens, cache_read, cache_creation;
    bool has_input, has_output, has_cache_read, has_cache_creation;
    bool invalid; /* a present field is not a plausible token count (usage_read_jval): the usage is dropped */
};
/* Reads an Anthropic usage object (the bytes of `{...}`); fields absent stay as they were (has_* false).
 * Returns 0, or -1 when the text is not an object. */
int anthropic_usage_scan(const char *obj, size_t len, struct anthropic_usage *au);
/* Folds wire counters into the gateway's usage (see the semantics above): present fields overwrite. An invalid
 * field, or a sum past the bound, drops the usage for good (usage_check without a deployment). */
void anthropic_usage_apply(const struct anthropic_usage *au, struct usage *u);
/* usage out of a complete Messages response body ({"usage":{...}}), validated. 0 when found (u->known, or
 * u->invalid when the counts are implausible). */
int anthropic_extract_usage(const char *body, size_t len, struct usage *u);

/* stop_reason -> finish: end_turn, stop_sequence, pause_turn -> STOP; max_tokens,
 * model_context_window_exceeded -> LENGTH; tool_use -> TOOL_CALLS; refusal -> CONTENT_FILTER. */
enum finish anthropic_finish_from(struct str stop_reason);

/* ---- requests ---- */

/* The client's body with the top-level "model" value replaced (bytes, no tree). -1 when body is not a JSON object
 * with a string model. */
int anthropic_splice_model(const char *body, size_t len, const char *model, struct buf *out);


/* Canonical OpenAI chat request -> Anthropic Messages request body for `model`. default_max_tokens is used when
 * the request names none (Anthropic requires max_tokens). When response_format asks for JSON, a tool is added to
 * emulate it and its name is written to json_tool (else json_tool[0] = '\0'). NULL with err (400). */
cJSON *anthropic_request_from_canonical(const cJSON *canon, const char *model, bool stream,
                                        int64_t default_max_tokens, char *json_tool, size_t json_tool_size,
                                        struct gw_error *err);

/* ---- responses ---- */

/* A complete Anthropic message -> canonical chat.completion with the given id/model/created. json_tool: the
 * emulated response_format tool ("" none), whose input becomes the text content. Fills *u and, when given,
 * response_model. NULL with err (502) on a malformed message. */
cJSON *anthropic_message_to_canonical(const char *body, size_t len, const char *id, const char *model,
                                      int64_t created, const char *json_tool, struct usage *u,
                                      char *response_model, size_t response_model_size, struct gw_error *err);


/* ---- upstream stream decoding ---- */

typedef void anthropic_delta_fn(void *ud, const struct chat_delta *d);

struct anthropic_stream {
    bool passthrough;          /* only read usage and the terminal event; no deltas */
    char json_tool[130];       /* response_format emulation tool, "" none */
    anthropic_delta_fn *emit;  /* translation mode: receives the deltas */
    void *ud;
    /* state */
    int *blocks;               /* content block index -> tool index (>= 0), or BLOCK_* below */
    size_t nblocks;
    int ntools;                /* tool calls seen (the emulated JSON tool excluded) */
    bool started, done;
    bool checked;              /* the last event was found structurally sound (validated, or jscan_event_scan) */
    bool untouched;            /* the last event was relayed without being read (ping, a content event) */
    struct usage usage;
    char model[256];
    struct buf text;           /* scratch for unescaped strings */
};
void anthropic_stream_init(struct anthropic_stream *s, bool passthrough, anthropic_delta_fn *emit, void *ud);
/* The attempt's stream state (a->pstate), made on first use with the attempt's delta sink: provider_anthropic's
 * decoders find it there, and a provider that reuses them (vertex-ai's Claude models) makes it the same way so
 * that what its encoder names (the response_format emulation tool) is kept in it. */
struct attempt;
struct anthropic_stream *anthropic_attempt_state(struct attempt *a);
void anthropic_stream_free(struct anthropic_stream *s);
/* One upstream SSE event. Returns 1 (forward: passthrough), 0 (consumed: translation), or -1 with err (a
 * malformed event or the upstream's `error` event; err->status is the upstream's, 529 for overloaded_error).
 * Sets s->done on message_stop. */
int anthropic_stream_event(struct anthropic_stream *s, struct str event, struct str data, struct gw_error *err);

/* ---- errors ---- */

/* An Anthropic error body ({"type":"error","error":{"type","message"}}) and status -> err (from_upstream, type,
 * message, retryable). */
void anthropic_map_error(int status, const char *body, size_t len, struct gw_error *err);

#endif
