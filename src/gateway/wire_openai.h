/* wire_openai.h: the OpenAI Chat Completions wire format as a codec (wire_openai.c), shared by the OpenAI front
 * door and the OpenAI-family providers. */
#ifndef AGENTD_GATEWAY_WIRE_OPENAI_H
#define AGENTD_GATEWAY_WIRE_OPENAI_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/str.h"
#include "gateway/gw_types.h"

struct attempt;
struct buf;
#include <cjson/cJSON.h>
struct stream_event;

/* usage {prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens,
 * completion_tokens_details.reasoning_tokens} out of a chat.completion / chunk / embeddings body, validated
 * (gw_types.h). 0 when the body reports counts: u->known, or u->invalid when they are implausible. */
int wire_openai_extract_usage(const char *body, size_t len, struct usage *u);
/* The same, given the usage object itself: a J_OBJECT value jscan_fields returned (validated text, not checked
 * again). */
int wire_openai_usage_object(const char *obj, size_t len, struct usage *u);
/* The client body with "model" replaced and, for streams, stream_options.include_usage forced true.
 * Works on bytes (no tree). */
int wire_openai_splice_request(const char *body, size_t len, const char *model, bool force_include_usage,
                          struct buf *out);
/* The same for a body a front's parse validated already (ex_attempt_body_validated): not checked again. */
int wire_openai_splice_validated(const char *body, size_t len, const char *model, bool force_include_usage,
                                 struct buf *out);
/* A chat.completion.chunk event -> deltas (translation mode); sets a->stream_done on "[DONE]". */
int wire_openai_decode_chunk(struct attempt *a, const struct stream_event *ev, struct gw_error *err);
/* OpenAI-shaped error body -> err. */
void wire_openai_map_error(int status, const char *body, size_t len, struct gw_error *err);
/* Canonical chat request -> an OpenAI request body for `model` (translation mode: used when the client spoke
 * another format). */
int wire_openai_encode_canonical(const cJSON *canon, const char *model, bool stream, struct buf *out);
/* Builds the canonical chat.completion from a complete OpenAI response (validates its shape). */
cJSON *wire_openai_decode_completion(const char *body, size_t len, struct usage *u, struct gw_error *err);
/* Appends usage as OpenAI's JSON object (the same fields, without building a tree). */
void wire_openai_usage_append(struct buf *b, const struct usage *u);

/* {"error":{"message","type","param","code"}} for err (param and code null when unset). */
void wire_openai_error_json(const struct gw_error *err, struct buf *out);

/* What a text chunk (chat.completion.chunk) carries, found by one validating scan without a tree. */
struct openai_chunk {
    char model[256];    /* "" when absent */
    struct str text;    /* choices[0].delta.content, unescaped (in place or in the scratch); STR_NULL if absent */
    bool has_finish;    /* choices[0].finish_reason is a string */
    enum finish finish;
    struct usage usage; /* usage.known / usage.invalid when the chunk has a usage object */
};
/* Scans a chunk into *c. -1 when the scan declines it (malformed, an error member, a duplicate key, tool calls):
 * the caller decodes it with a tree instead. scratch holds unescaped text and is reset first. */
int wire_openai_scan_chunk(struct str data, struct buf *scratch, struct openai_chunk *c);

#endif
