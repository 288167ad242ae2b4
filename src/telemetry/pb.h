/* pb.h: one writer for the OTLP messages in both encodings OTLP/HTTP allows: protobuf (proto3 wire format,
 * field numbers) and JSON (the OTLP mapping: lowerCamelCase names, ids as hex, 64-bit integers as decimal
 * strings, enums as numbers). A caller describes a message once, naming each field by number and JSON name.
 *
 *   struct pbw w; pbw_init(&w, &out, json);
 *   pbw_arr(&w, "resourceSpans");  pbw_msg(&w, 1, NULL); ... pbw_end(&w);  pbw_arr_end(&w);
 *   pbw_finish(&w);
 *
 * Repeated message fields: pbw_arr(name) .. pbw_msg(field, NULL)* .. pbw_arr_end (the array exists only in JSON).
 * A singular sub-message: pbw_msg(field, name) .. pbw_end. Protobuf lengths are back-patched: the content of a
 * nested message is moved once per nesting level (OTLP nests six deep), so encoding stays linear. */
#ifndef AGENTD_PB_H
#define AGENTD_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define PBW_MAX_DEPTH 24

struct pbw {
    struct buf *b;
    bool json;
    int depth;
    size_t start[PBW_MAX_DEPTH]; /* pb: where the content of each open message starts */
    bool first[PBW_MAX_DEPTH];   /* json: no comma before the next member */
    bool is_arr[PBW_MAX_DEPTH];
    bool parent_first[PBW_MAX_DEPTH]; /* json: the enclosing object's state before an array's key */
    bool failed;                 /* nesting too deep or the buffer refused */
};

void pbw_init(struct pbw *w, struct buf *b, bool json);
/* Closes the top-level JSON object. Returns 0, or -1 if anything failed. */
int pbw_finish(struct pbw *w);

void pbw_msg(struct pbw *w, uint32_t field, const char *name); /* name NULL: an element of the open array */
void pbw_end(struct pbw *w);
void pbw_arr(struct pbw *w, const char *name);
void pbw_arr_end(struct pbw *w);

void pbw_string(struct pbw *w, uint32_t field, const char *name, const char *s, size_t n);
void pbw_cstr(struct pbw *w, uint32_t field, const char *name, const char *s);
void pbw_id(struct pbw *w, uint32_t field, const char *name, const uint8_t *id, size_t n); /* bytes; hex in JSON */
void pbw_fixed64(struct pbw *w, uint32_t field, const char *name, uint64_t v);             /* "123" in JSON */
void pbw_sfixed64(struct pbw *w, uint32_t field, const char *name, int64_t v);
void pbw_fixed32(struct pbw *w, uint32_t field, const char *name, uint32_t v);             /* number in JSON */
void pbw_int64(struct pbw *w, uint32_t field, const char *name, int64_t v);                /* varint; "-5" */
void pbw_enum(struct pbw *w, uint32_t field, const char *name, int v);                     /* varint; number */
void pbw_bool(struct pbw *w, uint32_t field, const char *name, bool v);
void pbw_double(struct pbw *w, uint32_t field, const char *name, double v);
void pbw_packed_double(struct pbw *w, uint32_t field, const char *name, const double *v, size_t n);
void pbw_packed_fixed64(struct pbw *w, uint32_t field, const char *name, const uint64_t *v, size_t n);

/* OTLP helpers: a KeyValue element of an open "attributes" array. */
void pbw_kv_str(struct pbw *w, uint32_t field, const char *key, const char *v, size_t n);
void pbw_kv_cstr(struct pbw *w, uint32_t field, const char *key, const char *v);
void pbw_kv_int(struct pbw *w, uint32_t field, const char *key, int64_t v);
void pbw_kv_double(struct pbw *w, uint32_t field, const char *key, double v);
void pbw_kv_bool(struct pbw *w, uint32_t field, const char *key, bool v);
/* A string array value (gen_ai.response.finish_reasons). */
void pbw_kv_strarr(struct pbw *w, uint32_t field, const char *key, const char *const *v, size_t n);

/* Appends the varint encoding of v; returns its length. */
size_t pb_varint(uint8_t out[10], uint64_t v);

#endif
