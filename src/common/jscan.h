/* jscan.h: a validating JSON scanner that finds fields without building a tree.
 *
 * The gateway's hot path needs a few fields of a request or response (model, stream, max_tokens, usage) and
 * must reject malformed JSON, but should not pay for a full parse when the body is passed through untouched.
 * jscan validates the whole document in one pass (RFC 8259, nesting bounded) and reports the byte span of the
 * values it is asked for. Spans point into the caller's buffer. */
#ifndef AGENTD_JSCAN_H
#define AGENTD_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"

#define JSCAN_MAX_DEPTH 128

enum jtype { J_NONE = 0, J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_TRUE, J_FALSE, J_NULL };

struct jval {
    enum jtype type;
    struct str raw; /* the value's bytes; for strings, including the quotes */
};

/* Validates text as one JSON value (surrounding whitespace allowed). Returns 0, or -1 with *err_off set to the
 * byte offset of the first error and *err_msg to a static description. */
int jscan_validate(const char *text, size_t len, size_t *err_off, const char **err_msg);

/* A cheap structural check of text as one JSON object or array: brackets balance and match, strings close
 * (escapes honoured), nothing but whitespace around it. Only the structure bytes are looked at, found 64
 * bytes at a time (scalars are not checked), so it is a fraction of jscan_validate's cost: what a relay can
 * afford per event to refuse a truncated or broken one. Every text jscan_validate accepts as an object
 * or array passes (the fuzz target checks it). Nesting deeper than 64 is handed to jscan_validate. 0 or -1. */
int jscan_structure_ok(const char *text, size_t len);
/* The same answer, byte by byte: the reference the unit test and the fuzz target hold the block scan to. */
int jscan_structure_ok_bytes(const char *text, size_t len);
/* jscan_structure_ok and jscan_may_have_object in one pass over a relayed event's bytes, so that a decoder reads
 * them once: returns jscan_structure_ok's answer (0 or -1) and, when 0, sets in *hits bit k for each keys[k]
 * (NULL-terminated, at most 8, each at most 63 bytes and without a quote) that some '{' outside the strings may
 * be the value of: before it, after whitespace, a ':', whitespace, then the quoted key. On text jscan_validate
 * accepts that is exactly jscan_may_have_object's answer for keys[k] (the fuzz target checks it); *hits is 0
 * when the answer is -1. */
int jscan_event_scan(const char *text, size_t len, const char *const *keys, unsigned *hits);
/* The same answer, byte by byte: the reference of the unit test and the fuzz target. */
int jscan_event_scan_bytes(const char *text, size_t len, const char *const *keys, unsigned *hits);

/* Finds the member `key` of the top-level object in text (which must be a valid object; the scan stops at the
 * first match, so call jscan_validate first when the text is untrusted). Returns 0 and fills *out, or -1. */
int jscan_get(const char *text, size_t len, const char *key, struct jval *out);
/* Like jscan_get for a dotted path of object members: "usage.prompt_tokens_details.cached_tokens". */
int jscan_path(const char *text, size_t len, const char *path, struct jval *out);

/* Several top-level members in one pass: keys[i] -> out[i] (type J_NONE when absent). Validates the whole
 * object. Returns 0, or -1 on invalid JSON / non-object / one of keys appearing twice (err as in
 * jscan_validate). */
int jscan_fields(const char *text, size_t len, const char *const *keys, struct jval *out, size_t nkeys,
                 size_t *err_off, const char **err_msg);

/* jscan_fields over an object value out of text validated already (a jval from jscan_fields, jscan_each_fields or
 * jscan_validate'd text): strings are skipped and the members not asked for stepped over as brackets, not checked
 * again. Returns 0, or -1 (not an object; one of keys appearing twice). */
int jscan_fields_trusted(const struct jval *obj, const char *const *keys, struct jval *out, size_t nkeys);

/* A cheap pre-check for relays that pass most documents through untouched: false only when no member named by
 * one of `keys` (NULL-terminated; at any depth) can have an object as its value, i.e. every occurrence of a
 * quoted key is followed by something other than ':' then '{' (after whitespace). A quote inside a JSON string
 * is always escaped, so string contents never match. It validates nothing: when it says true, scan the text
 * with jscan_fields. */
bool jscan_may_have_object(const char *text, size_t len, const char *const *keys);

/* Value helpers. */
bool jval_is_str(const struct jval *v, const char *s); /* string equal to s (escapes resolved) */
int jval_str(const struct jval *v, struct buf *out);     /* unescaped string into out; -1 if not a string */
int jval_i64(const struct jval *v, int64_t *out);         /* integer number */
int jval_double(const struct jval *v, double *out);
int jval_bool(const struct jval *v, bool *out);

/* Calls fn for each element of an array value, or each member of an object value (key is the raw quoted key
 * for objects, STR_NULL for arrays). Stops when fn returns non-zero and returns that. */
typedef int jscan_each_fn(struct str key, const struct jval *v, void *ud);
int jscan_each(const struct jval *container, jscan_each_fn *fn, void *ud);
/* For each element of an array: fn(element, fields, ud), where fields[i] is the element's member keys[i] (J_NONE
 * when absent or when the element is not an object), found in the same scan that finds the element: one pass over
 * the array instead of jscan_each + jscan_fields per element. The array must come from validated text (a jval out
 * of jscan_fields / jscan_validate'd text): strings are skipped, not checked again. out (nkeys entries) is the
 * caller's scratch. Returns
 * 0, fn's non-zero result, or -1 (not an array; a key in keys appearing twice in an element). */
typedef int jscan_each_fields_fn(const struct jval *elem, const struct jval *fields, void *ud);
int jscan_each_fields(const struct jval *array, const char *const *keys, struct jval *out, size_t nkeys,
                      jscan_each_fields_fn *fn, void *ud);

#endif
