/* responses.h: the OpenAI Responses API wire format (POST /v1/responses), as pure functions the front door
 * (front_responses.c) and the tests call: no exchange, no I/O.
 *
 *   request  -> responses_parse_head (top-level fields policy needs, no tree)
 *            -> responses_to_chat    (full validation + the canonical chat request, for translated upstreams)
 *   canonical chat.completion -> responses_from_chat (the Response object)
 *   struct chat_delta stream  -> struct responses_stream (the typed events, with sequence_number)
 *   upstream Responses body / stream (pass-through) -> responses_extract_usage / responses_decode_event
 *
 * A conversation continued with previous_response_id is a list of Responses input items ("history": the
 * previous turns' input and output items, oldest first); the front door keeps it in the store. */
#ifndef AGENTD_RESPONSES_H
#define AGENTD_RESPONSES_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "gateway/gw_types.h"

#define RESPONSES_MAX_ITEMS 10000 /* input items of one request, history included */
#define RESPONSES_MAX_TOOLS 1024
#define RESPONSES_MAX_ID 128      /* previous_response_id, call ids */

/* The top-level fields read without building a tree (validated; 400 with param otherwise). */
struct responses_head {
    char model[256];
    bool stream;
    bool store;                 /* default true, as OpenAI's */
    int64_t max_output_tokens;  /* -1 when absent */
    char previous_response_id[RESPONSES_MAX_ID + 1]; /* "" when absent */
};
int responses_parse_head(const char *body, size_t len, struct responses_head *h, struct gw_error *err);

/* Validates the whole request (item types, parts, call ids, tools, tool_choice, text.format, sizes) and builds
 * the canonical chat request. history: the stored conversation before this request (a JSON array of items), or
 * NULL. Fields and tools a chat upstream cannot honour are left out and their names appended to dropped
 * (", "-separated; for the x-agentd-dropped-fields header). NULL with err (400, OpenAI's param) when invalid.
 * With dropped == NULL only validates (and still returns the tree). */
cJSON *responses_to_chat(const cJSON *req, const cJSON *history, struct buf *dropped, struct gw_error *err);

/* The request's input as items (a string input becomes one user message item): a new array. */
cJSON *responses_input_items(const cJSON *req);

/* The Response object for a request, before any output: status "in_progress", output [], usage null, and every
 * request parameter the spec echoes (instructions, tools, tool_choice, text, reasoning, ...), null when absent. */
cJSON *responses_skeleton(const cJSON *req, const char *id, int64_t created, const char *model);
/* usage {input_tokens, input_tokens_details.cached_tokens, output_tokens, output_tokens_details.reasoning_tokens,
 * total_tokens} as a new object. */
cJSON *responses_usage_json(const struct usage *u);
/* Sets status, incomplete_details from a finish reason (length -> incomplete, max_output_tokens; content_filter ->
 * incomplete, content_filter; else completed) and the usage (null when not known). */
void responses_finish(cJSON *resp, enum finish f, const struct usage *u);
/* A complete canonical chat.completion -> the Response object (skeleton + output items + status + usage). The id
 * of each item is derived from id. */
cJSON *responses_from_chat(const cJSON *req, const cJSON *completion, const struct usage *u, const char *id,
                           int64_t created, const char *model);
/* The output items of a Response turned into items that continue the conversation (history). */
void responses_append_output(cJSON *history, const cJSON *resp);

/* ---- streaming (translation): chat deltas -> Responses events ---- */
struct responses_stream;
/* skeleton: from responses_skeleton (taken over). */
struct responses_stream *responses_stream_new(cJSON *skeleton);
/* The same stream for req without building the skeleton: the Response's fixed part is written from req, and the
 * skeleton tree is built only if responses_stream_response is called (req must still be valid then). */
struct responses_stream *responses_stream_start(const cJSON *req, const char *id, int64_t created,
                                                const char *model);
void responses_stream_free(struct responses_stream *s);
/* Appends zero or more SSE events ("event: <type>\ndata: {...}\n\n") to out. The first call sends
 * response.created and response.in_progress. */
void responses_stream_delta(struct responses_stream *s, const struct chat_delta *d, struct buf *out);
/* The end: closes what is open and sends response.completed / response.incomplete (usage u), or, with err,
 * response.failed carrying the error. */
void responses_stream_end(struct responses_stream *s, const struct usage *u, const struct gw_error *err,
                          struct buf *out);
/* The Response as the stream built it (final after responses_stream_end): a tree built on the first call after the
 * end (for the store; the events never need it). */
const cJSON *responses_stream_response(struct responses_stream *s);
/* The last sequence_number sent (-1 before the first event). */
int64_t responses_stream_seq(const struct responses_stream *s);

/* ---- pass-through: reading an upstream Responses body / stream ---- */
/* usage out of a Responses usage object / a complete Response body. 0 when counts were reported. */
int responses_usage_object(const char *obj, size_t len, struct usage *u);
int responses_extract_usage(const char *body, size_t len, struct usage *u);
/* One upstream stream event (SSE name, data). Returns RESP_EV_OTHER for an event to relay as is,
 * RESP_EV_TERMINAL for response.completed / response.incomplete / response.failed (its usage read into u, when
 * the response carries one), or -1 with err for a malformed event that may carry usage, or an "error" event. */
enum { RESP_EV_OTHER = 0, RESP_EV_TERMINAL = 1 };
int responses_decode_event(struct str event, struct str data, struct usage *u, struct gw_error *err);

#endif
