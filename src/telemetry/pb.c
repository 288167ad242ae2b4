/* pb.c: the OTLP message writer (pb.h). */
#include "telemetry/pb.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "telemetry/trace.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

size_t pb_varint(uint8_t out[10], uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static void put(struct pbw *w, const void *p, size_t n)
{
    if (!w->failed && buf_append(w->b, p, n) != 0)
        w->failed = true;
}

static void put_str(struct pbw *w, const char *s)
{
    put(w, s, strlen(s));
}

static void put_varint(struct pbw *w, uint64_t v)
{
    uint8_t tmp[10];
    put(w, tmp, pb_varint(tmp, v));
}

static void put_tag(struct pbw *w, uint32_t field, int wt)
{
    put_varint(w, (uint64_t)field << 3 | (uint64_t)wt);
}

/* JSON: a comma when needed, then "name": unless inside an array. */
static void json_key(struct pbw *w, const char *name)
{
    if (!w->first[w->depth])
        put(w, ",", 1);
    w->first[w->depth] = false;
    if (name && !w->is_arr[w->depth]) {
        put(w, "\"", 1);
        put_str(w, name);
        put(w, "\":", 2);
    }
}

static void json_string(struct pbw *w, const char *s, size_t n)
{
    if (!w->failed && buf_append_json_str(w->b, s, n) != 0)
        w->failed = true;
}

void pbw_init(struct pbw *w, struct buf *b, bool json)
{
    memset(w, 0, sizeof(*w));
    w->b = b;
    w->json = json;
    w->first[0] = true;
    if (json)
        put(w, "{", 1);
}

int pbw_finish(struct pbw *w)
{
    if (w->depth != 0)
        w->failed = true;
    if (w->json)
        put(w, "}", 1);
    return w->failed ? -1 : 0;
}

static bool push(struct pbw *w, bool arr)
{
    if (w->depth + 1 >= PBW_MAX_DEPTH) {
        w->failed = true;
        return false;
    }
    w->depth++;
    w->first[w->depth] = true;
    w->is_arr[w->depth] = arr;
    return true;
}

void pbw_msg(struct pbw *w, uint32_t field, const char *name)
{
    if (w->json) {
        json_key(w, name);
        put(w, "{", 1);
        push(w, false);
        return;
    }
    put_tag(w, field, WT_LEN);
    /* reserve the widest length varint we allow (5 bytes: < 4 GiB); pbw_end shrinks it */
    static const uint8_t pad[5] = {0};
    put(w, pad, sizeof(pad));
    if (push(w, false))
        w->start[w->depth] = w->b->len;
}

void pbw_end(struct pbw *w)
{
    if (w->depth == 0) {
        w->failed = true;
        return;
    }
    if (w->json) {
        put(w, "}", 1);
        w->depth--;
        return;
    }
    if (w->failed) {
        w->depth--;
        return;
    }
    size_t start = w->start[w->depth];
    size_t len = w->b->len - start;
    uint8_t tmp[10];
    size_t vn = pb_varint(tmp, len);
    if (vn > 5) {
        w->failed = true;
        w->depth--;
        return;
    }
    char *p = w->b->data;
    memmove(p + start - 5 + vn, p + start, len);
    memcpy(p + start - 5, tmp, vn);
    w->b->len -= 5 - vn;
    w->depth--;
}

void pbw_arr(struct pbw *w, const char *name)
{
    if (!w->json)
        return;
    size_t mark = w->b->len;
    bool was_first = w->first[w->depth];
    json_key(w, name);
    put(w, "[", 1);
    if (push(w, true)) {
        w->start[w->depth] = mark;
        w->parent_first[w->depth] = was_first;
    }
}

void pbw_arr_end(struct pbw *w)
{
    if (!w->json)
        return;
    if (w->depth > 0 && w->is_arr[w->depth] && w->first[w->depth] && !w->failed) {
        w->b->len = w->start[w->depth]; /* no element: no key */
        w->first[w->depth - 1] = w->parent_first[w->depth];
        w->depth--;
        return;
    }
    put(w, "]", 1);
    if (w->depth > 0)
        w->depth--;
}

void pbw_string(struct pbw *w, uint32_t field, const char *name, const char *s, size_t n)
{
    if (w->json) {
        json_key(w, name);
        json_string(w, s, n);
        return;
    }
    put_tag(w, field, WT_LEN);
    put_varint(w, n);
    put(w, s, n);
}

void pbw_cstr(struct pbw *w, uint32_t field, const char *name, const char *s)
{
    pbw_string(w, field, name, s, strlen(s));
}

void pbw_id(struct pbw *w, uint32_t field, const char *name, const uint8_t *id, size_t n)
{
    if (w->json) {
        char hex[65];
        if (n > 32)
            n = 32;
        trace_hex(hex, id, n);
        json_key(w, name);
        json_string(w, hex, 2 * n);
        return;
    }
    put_tag(w, field, WT_LEN);
    put_varint(w, n);
    put(w, id, n);
}

static void put_le(struct pbw *w, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, n);
}

static void json_quoted_u64(struct pbw *w, uint64_t v, bool neg)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof(tmp), "\"%s%llu\"", neg ? "-" : "", (unsigned long long)v);
    put(w, tmp, (size_t)k);
}

void pbw_fixed64(struct pbw *w, uint32_t field, const char *name, uint64_t v)
{
    if (w->json) {
        json_key(w, name);
        json_quoted_u64(w, v, false);
        return;
    }
    put_tag(w, field, WT_I64);
    put_le(w, v, 8);
}

static uint64_t abs64(int64_t v)
{
    return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
}

void pbw_sfixed64(struct pbw *w, uint32_t field, const char *name, int64_t v)
{
    if (w->json) {
        json_key(w, name);
        json_quoted_u64(w, abs64(v), v < 0);
        return;
    }
    put_tag(w, field, WT_I64);
    put_le(w, (uint64_t)v, 8);
}

void pbw_fixed32(struct pbw *w, uint32_t field, const char *name, uint32_t v)
{
    if (w->json) {
        char tmp[16];
        json_key(w, name);
        put(w, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%u", v));
        return;
    }
    put_tag(w, field, WT_I32);
    put_le(w, v, 4);
}

void pbw_int64(struct pbw *w, uint32_t field, const char *name, int64_t v)
{
    if (w->json) {
        json_key(w, name);
        json_quoted_u64(w, abs64(v), v < 0);
        return;
    }
    put_tag(w, field, WT_VARINT);
    put_varint(w, (uint64_t)v);
}

void pbw_enum(struct pbw *w, uint32_t field, const char *name, int v)
{
    if (w->json) {
        char tmp[16];
        json_key(w, name);
        put(w, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%d", v));
        return;
    }
    put_tag(w, field, WT_VARINT);
    put_varint(w, (uint64_t)(int64_t)v);
}

void pbw_bool(struct pbw *w, uint32_t field, const char *name, bool v)
{
    if (w->json) {
        json_key(w, name);
        put_str(w, v ? "true" : "false");
        return;
    }
    put_tag(w, field, WT_VARINT);
    put_varint(w, v ? 1 : 0);
}

/* Shortest text that reads back as the same double (JSON has no NaN or Infinity: those are written as the
 * strings the proto3 JSON mapping uses). */
static void json_double(struct pbw *w, double v)
{
    if (isnan(v)) {
        put_str(w, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        put_str(w, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char tmp[40];
    int k = 0;
    for (int prec = 15; prec <= 17; prec++) {
        k = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        double back;
        if (sscanf(tmp, "%lf", &back) == 1 && back == v)
            break;
    }
    put(w, tmp, (size_t)k);
}

static uint64_t dbits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

void pbw_double(struct pbw *w, uint32_t field, const char *name, double v)
{
    if (w->json) {
        json_key(w, name);
        json_double(w, v);
        return;
    }
    put_tag(w, field, WT_I64);
    put_le(w, dbits(v), 8);
}

void pbw_packed_double(struct pbw *w, uint32_t field, const char *name, const double *v, size_t n)
{
    if (w->json) {
        json_key(w, name);
        put(w, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                put(w, ",", 1);
            json_double(w, v[i]);
        }
        put(w, "]", 1);
        return;
    }
    if (n == 0)
        return;
    put_tag(w, field, WT_LEN);
    put_varint(w, 8 * n);
    for (size_t i = 0; i < n; i++)
        put_le(w, dbits(v[i]), 8);
}

void pbw_packed_fixed64(struct pbw *w, uint32_t field, const char *name, const uint64_t *v, size_t n)
{
    if (w->json) {
        json_key(w, name);
        put(w, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                put(w, ",", 1);
            json_quoted_u64(w, v[i], false);
        }
        put(w, "]", 1);
        return;
    }
    if (n == 0)
        return;
    put_tag(w, field, WT_LEN);
    put_varint(w, 8 * n);
    for (size_t i = 0; i < n; i++)
        put_le(w, v[i], 8);
}

/* KeyValue { key = 1; value = 2 (AnyValue) } */
static void kv_begin(struct pbw *w, uint32_t field, const char *key)
{
    pbw_msg(w, field, NULL);
    pbw_cstr(w, 1, "key", key);
    pbw_msg(w, 2, "value");
}

static void kv_end(struct pbw *w)
{
    pbw_end(w);
    pbw_end(w);
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Protobuf fast path for the commonest messages of all (a span has ~20): a KeyValue whose AnyValue holds one
 * field, written front to back with its lengths computed first, so nothing is reserved and moved back. hdr is the
 * AnyValue field's tag and fixed part, p its variable bytes. */
static void kv_pb(struct pbw *w, uint32_t field, const char *key, const uint8_t *hdr, size_t hn, const void *p,
                  size_t pn)
{
    size_t kl = strlen(key), any = hn + pn;
    size_t kv = 1 + varint_len(kl) + kl + 1 + varint_len(any) + any;
    uint8_t tag[10];
    size_t tn = pb_varint(tag, (uint64_t)field << 3 | WT_LEN);
    size_t total = tn + varint_len(kv) + kv;
    if (w->failed || buf_reserve(w->b, total) != 0) {
        w->failed = true;
        return;
    }
    uint8_t *o = (uint8_t *)w->b->data + w->b->len; /* one reservation, then straight copies */
    memcpy(o, tag, tn);
    o += tn;
    o += pb_varint(o, kv);
    *o++ = 0x0a; /* key = 1 */
    o += pb_varint(o, kl);
    memcpy(o, key, kl);
    o += kl;
    *o++ = 0x12; /* value = 2 */
    o += pb_varint(o, any);
    memcpy(o, hdr, hn);
    o += hn;
    if (pn)
        memcpy(o, p, pn);
    w->b->len += total;
    w->b->data[w->b->len] = '\0';
}

void pbw_kv_str(struct pbw *w, uint32_t field, const char *key, const char *v, size_t n)
{
    if (!w->json) {
        uint8_t h[11];
        h[0] = 0x0a; /* AnyValue.string_value = 1 */
        kv_pb(w, field, key, h, 1 + pb_varint(h + 1, n), v, n);
        return;
    }
    kv_begin(w, field, key);
    pbw_string(w, 1, "stringValue", v, n);
    kv_end(w);
}

void pbw_kv_cstr(struct pbw *w, uint32_t field, const char *key, const char *v)
{
    pbw_kv_str(w, field, key, v, strlen(v));
}

void pbw_kv_int(struct pbw *w, uint32_t field, const char *key, int64_t v)
{
    if (!w->json) {
        uint8_t h[11];
        h[0] = 0x18; /* AnyValue.int_value = 3 */
        kv_pb(w, field, key, h, 1 + pb_varint(h + 1, (uint64_t)v), NULL, 0);
        return;
    }
    kv_begin(w, field, key);
    pbw_int64(w, 3, "intValue", v);
    kv_end(w);
}

void pbw_kv_double(struct pbw *w, uint32_t field, const char *key, double v)
{
    if (!w->json) {
        uint8_t h[9];
        h[0] = 0x21; /* AnyValue.double_value = 4, fixed64 little-endian */
        uint64_t b = dbits(v);
        for (int i = 0; i < 8; i++)
            h[1 + i] = (uint8_t)(b >> (8 * i));
        kv_pb(w, field, key, h, sizeof(h), NULL, 0);
        return;
    }
    kv_begin(w, field, key);
    pbw_double(w, 4, "doubleValue", v);
    kv_end(w);
}

void pbw_kv_bool(struct pbw *w, uint32_t field, const char *key, bool v)
{
    kv_begin(w, field, key);
    pbw_bool(w, 2, "boolValue", v);
    kv_end(w);
}

void pbw_kv_strarr(struct pbw *w, uint32_t field, const char *key, const char *const *v, size_t n)
{
    kv_begin(w, field, key);
    pbw_msg(w, 5, "arrayValue"); /* ArrayValue { repeated AnyValue values = 1 } */
    pbw_arr(w, "values");
    for (size_t i = 0; i < n; i++) {
        pbw_msg(w, 1, NULL);
        pbw_cstr(w, 1, "stringValue", v[i]);
        pbw_end(w);
    }
    pbw_arr_end(w);
    pbw_end(w);
    kv_end(w);
}
