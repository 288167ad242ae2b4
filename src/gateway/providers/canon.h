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

/* Builds the canonical chat.completion for a's exchange: id and model as the client sees them, one choice with
 * text (content null when empty and there are tool calls) and tool_calls (taken over; NULL or an empty array for
 * none), finish reason and usage. */
cJSON *canon_completion(struct attempt *a, const char *text, cJSON *tool_calls, enum finish finish,
                        const struct usage *u);
/* Usage as OpenAI's JSON object (the canonical usage). */
cJSON *canon_usage_json(const struct usage *u);
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
 * stream, stream_options and n are always read): every other top-level field of the canonical request is noted as
 * dropped on a's exchange, under the name the client used (an Anthropic client's metadata.user_id travels as
 * "user" and is reported as "metadata"). -1 with err (400) for a field whose loss changes the answer: `audio`, or
 * `modalities` asking for audio. */
int canon_note_unread(struct attempt *a, const cJSON *canon, const char *const *read, struct gw_error *err);

/* ---- prompt-cache markers (an Anthropic client's cache_control) ----
 *
 * The Anthropic front door carries each cache_control it can place onto the canonical item made from the marked
 * block, as a member CANON_CACHE_CONTROL holding the client's object ({"type":"ephemeral","ttl":"1h"}): on a content
 * part (system, user, assistant text), on an assistant tool_calls entry (tool_use), on a tool message (tool_result,
 * or a block inside it), on a tools entry. When any marker was carried, the canonical request also holds
 * CANON_CACHE_CONTROL: true at top level, so a provider that does not read it lists "cache_control" as dropped
 * (canon_note_unread). Bedrock reads them (a cachePoint block after each marked item); OpenAI-style encoders strip
 * them (canon_strip_cache_control). */
#define CANON_CACHE_CONTROL "cache_control"
/* The marker on a canonical item, or NULL. */
const cJSON *canon_cache_marker(const cJSON *item);
/* Removes every marker from a canonical request tree (the top-level flag, messages, parts, tool calls, tools). */
void canon_strip_cache_control(cJSON *canon);

/* Moves every item of array src to the end of array dst in O(1) (cJSON keeps the last item in child->prev);
 * src is left empty. Appending item by item would be O(1) too, but detaching from the front of src is not. */
void canon_array_splice(cJSON *dst, cJSON *src);

/* A small open-addressing hash map from byte strings to pointers, for the lookups translation does per item
 * (a tool result's call id -> the function name, a property name -> present) in O(1) instead of a rescan.
 * Keys are borrowed (they must outlive the map); the hash is seeded per process, so that a client cannot choose
 * keys that all collide. */
struct canon_map_ent {
    const char *key; /* NULL: empty slot */
    size_t klen;
    const void *val;
};
struct canon_map {
    struct canon_map_ent *v;
    size_t cap, n;
};
void canon_map_init(struct canon_map *m);
void canon_map_free(struct canon_map *m);
/* Sets key's value (replacing an earlier one). */
void canon_map_put(struct canon_map *m, const char *key, size_t klen, const void *val);
/* key's value, or NULL when it has none. */
const void *canon_map_get(const struct canon_map *m, const char *key, size_t klen);
bool canon_map_has(const struct canon_map *m, const char *key, size_t klen);

/* Whether the JSON text holds a string with an escaped NUL (\u0000, in a value or a key). cJSON keeps strings as C
 * strings, so such a string would be cut at the NUL in a translated request: the front doors refuse it instead.
 * One pass over the bytes, before any tree is built. When found and key is given, the top-level member it is in
 * (e.g. "messages") is copied there ("" when none). */
bool canon_json_has_nul(const char *p, size_t n, char *key, size_t keysize);
/* The 400 for it (the client's format is the front door's business: err only). Returns -1. */
int canon_nul_refused(struct gw_error *err, const char *key);

/* A 502 for an upstream body that is not what the provider documents. */
void canon_malformed(struct attempt *a, struct gw_error *err, const char *what);

#endif
