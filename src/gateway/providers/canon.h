/* canon.h: what the translating providers (Gemini, Bedrock) share: reading pieces of the canonical request
 * (OpenAI chat shape, see gw_types.h) and building the canonical chat.completion they answer with. */
#ifndef AGENTD_PROVIDERS_CANON_H
#define AGENTD_PROVIDERS_CANON_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/str.h"
#include "gateway/provider.h"

/* Splits "data:<mime>[;param]*;base64,<data>" into spans of url. Returns 0, or -1 when url is not a base64 data
 * URL (plain percent-encoded data URLs are refused too: providers want base64). */
int canon_data_url(const char *url, struct str *mime, struct str *data);

/* The text of a message's content: the string itself, or the "text" parts of an array joined with sep
 * (other part types contribute nothing). */
void canon_content_text(const cJSON *content, const char *sep, struct buf *out);

/* Tool call arguments (a JSON string; "" or absent count as {}) as a new object tree. NULL when they are not a
 * JSON object. */
cJSON *canon_parse_args(const cJSON *arguments);

/* A fresh tool-call id: "call_" + 24 lowercase hex digits (CANON_TOOL_ID_LEN characters). */
#define CANON_TOOL_ID_LEN 29
void canon_tool_call_id(char *out, size_t size);

/* o's member k when it is a string, else NULL (o may be NULL or not an object). */
const char *canon_str(const cJSON *o, const char *k);

/* Standard base64 (RFC 4648 §4, padded) of n bytes. */
int canon_base64(const void *p, size_t n, struct buf *out);

/* Builds the canonical chat.completion for a's exchange: id and model as the client sees them, one choice with
 * text (content null when empty and there are tool calls) and tool_calls (taken over; NULL or an empty array for
 * none), finish reason and usage. */
cJSON *canon_completion(struct attempt *a, const char *text, cJSON *tool_calls, enum finish finish,
                        const struct usage *u);
/* The same with the id, created time and model given (a response translated from a provider that has its own). */
cJSON *canon_completion_json(const char *id, int64_t created, const char *model, const char *text,
                             cJSON *tool_calls, enum finish finish, const struct usage *u);

/* ---- fields a translation drops (the x-agentd-dropped-fields response header) ----
 *
 * A request field the target cannot carry is ignored, never a 400, and named in x-agentd-dropped-fields, unless
 * dropping it would change what the client gets back (audio output: a 400). The list is a sorted, comma-separated
 * set of field names, bounded by the exchange's buffer (a name that does not fit, or holds a byte outside printable
 * ASCII, a space or a comma, is left out of the header). */
void canon_dropped_add(char *list, size_t size, const char *name);
/* Translation to a provider that reads only the canonical fields in `read` (NULL-terminated; model, messages,
 * stream and stream_options are always read): every other top-level field of the canonical request is noted as
 * dropped on a's exchange, under the name the client used (an Anthropic client's metadata.user_id travels as
 * "user" and is reported as "metadata"). -1 with err (400) for a field whose loss changes the answer: `audio`, or
 * `modalities` asking for audio. */
int canon_note_unread(struct attempt *a, const cJSON *canon, const char *const *read, struct gw_error *err);

/* A 502 for an upstream body that is not what the provider documents. */
void canon_malformed(struct attempt *a, struct gw_error *err, const char *what);

#endif
