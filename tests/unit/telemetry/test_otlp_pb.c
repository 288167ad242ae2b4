/* The OTLP writer (telemetry/pb.h): protobuf wire bytes checked by hand, the JSON mapping's rules, the span
 * encoder's JSON against a literal, and exact bucket bounds. The integration test decodes the same output with
 * the official definitions; these pin the bytes. */
#include <string.h>
#include <zlib.h>

#include "telemetry/metrics.h"
#include "telemetry/otlp.h"
#include "telemetry/pb.h"
#include "test.h"

static int bytes_eq(const struct buf *b, const unsigned char *want, size_t n)
{
    return b->len == n && memcmp(b->data, want, n) == 0;
}

static void test_varint(void)
{
    uint8_t v[10];
    is_int(pb_varint(v, 0), 1);
    ok(v[0] == 0);
    is_int(pb_varint(v, 300), 2);
    ok(v[0] == 0xac && v[1] == 0x02);
    is_int(pb_varint(v, 1ull << 32), 5);
    is_int(pb_varint(v, UINT64_MAX), 10);
}

static void test_nested(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct pbw w;
    pbw_init(&w, &b, false);
    pbw_msg(&w, 1, "m");
    pbw_cstr(&w, 1, "s", "hi");
    pbw_msg(&w, 2, "n");
    pbw_int64(&w, 3, "i", 150);
    pbw_end(&w);
    pbw_end(&w);
    is_int(pbw_finish(&w), 0);
    static const unsigned char want[] = {0x0a, 0x09, 0x0a, 0x02, 'h', 'i', 0x12, 0x03, 0x18, 0x96, 0x01};
    ok(bytes_eq(&b, want, sizeof(want)));
    buf_free(&b);
}

static void test_long_length(void)
{
    /* a nested message over 127 bytes needs a two-byte length, written in place of the reserved five */
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct pbw w;
    char s[200];
    memset(s, 'x', sizeof(s));
    pbw_init(&w, &b, false);
    pbw_msg(&w, 1, "m");
    pbw_string(&w, 2, "s", s, sizeof(s));
    pbw_end(&w);
    is_int(pbw_finish(&w), 0);
    /* 0a | len(203) = cb 01 | 12 | c8 01 | 200 x */
    is_int(b.len, 1 + 2 + 1 + 2 + 200);
    ok((unsigned char)b.data[0] == 0x0a && (unsigned char)b.data[1] == 0xcb && b.data[2] == 0x01);
    ok((unsigned char)b.data[3] == 0x12 && (unsigned char)b.data[4] == 0xc8 && b.data[5] == 0x01);
    ok(b.data[6] == 'x' && b.data[205] == 'x');
    buf_free(&b);
}

static void test_fixed_and_packed(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct pbw w;
    pbw_init(&w, &b, false);
    pbw_fixed64(&w, 7, "t", 1);
    pbw_fixed32(&w, 16, "f", 0x301);
    const double d[] = {1.0};
    pbw_packed_double(&w, 7, "b", d, 1);
    const uint64_t c[] = {2, 3};
    pbw_packed_fixed64(&w, 6, "c", c, 2);
    is_int(pbw_finish(&w), 0);
    static const unsigned char want[] = {
        0x39, 1, 0, 0, 0, 0, 0, 0, 0,                  /* field 7, I64 */
        0x85, 0x01, 0x01, 0x03, 0, 0,                  /* field 16, I32 (tag needs two bytes) */
        0x3a, 0x08, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,      /* field 7, packed: 1.0 */
        0x32, 0x10, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0};
    ok(bytes_eq(&b, want, sizeof(want)));
    buf_free(&b);
}

static void test_json_rules(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct pbw w;
    pbw_init(&w, &b, true);
    pbw_arr(&w, "attributes");
    pbw_kv_int(&w, 1, "n", -5);
    pbw_kv_double(&w, 1, "d", 0.1);
    pbw_kv_cstr(&w, 1, "s", "a\"b");
    const char *fr[] = {"stop", "length"};
    pbw_kv_strarr(&w, 1, "fr", fr, 2);
    pbw_arr_end(&w);
    static const uint8_t id[8] = {0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    pbw_id(&w, 2, "spanId", id, 8);
    pbw_fixed64(&w, 7, "startTimeUnixNano", 1767225600000000000ull);
    pbw_enum(&w, 6, "kind", 3);
    const double bounds[] = {1, 1048576, 0.00001};
    pbw_packed_double(&w, 7, "explicitBounds", bounds, 3);
    is_int(pbw_finish(&w), 0);
    is_str(b.data ? (buf_append_char(&b, '\0'), b.data) : "",
           "{\"attributes\":[{\"key\":\"n\",\"value\":{\"intValue\":\"-5\"}},"
           "{\"key\":\"d\",\"value\":{\"doubleValue\":0.1}},"
           "{\"key\":\"s\",\"value\":{\"stringValue\":\"a\\\"b\"}},"
           "{\"key\":\"fr\",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":\"stop\"},{\"stringValue\":\"length\"}]}}}],"
           "\"spanId\":\"00f067aa0ba902b7\",\"startTimeUnixNano\":\"1767225600000000000\",\"kind\":3,"
           "\"explicitBounds\":[1,1048576,1e-05]}");
    buf_free(&b);
}

static void test_depth_and_limit(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct pbw w;
    pbw_init(&w, &b, false);
    for (int i = 0; i < PBW_MAX_DEPTH + 2; i++)
        pbw_msg(&w, 1, "m");
    ok(w.failed);
    buf_free(&b);
    /* a bounded output buffer: the writer reports the overflow instead of writing past it */
    struct buf small = BUF_INIT(16);
    pbw_init(&w, &small, false);
    pbw_cstr(&w, 1, "s", "this string is longer than sixteen bytes");
    is_int(pbw_finish(&w), -1);
    buf_free(&small);
}

static void test_span_json(void)
{
    struct otel_span *s = otel_span_new();
    memset(s->trace_id, 0x11, 16);
    memset(s->span_id, 0x22, 8);
    memset(s->parent_id, 0x33, 8);
    s->has_parent = true;
    s->remote_parent = true;
    s->trace_flags = 1;
    s->kind = OTEL_SPAN_CLIENT;
    s->start_ns = 5;
    s->end_ns = 7;
    s->status = OTEL_STATUS_ERROR;
    strcpy(s->name, "chat m");
    strcpy(s->status_msg, "boom");
    otel_span_cstr(s, "gen_ai.operation.name", "chat");
    otel_span_int(s, "gen_ai.usage.input_tokens", 12);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    is_int(otlp_encode_spans(&b, s, true), 0);
    buf_append_char(&b, '\0');
    is_str(b.data,
           "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
           "\"agentd\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"agentd.gateway\",\"version\":\"" AGENTD_VERSION
           "\"},\"spans\":[{\"traceId\":\"11111111111111111111111111111111\",\"spanId\":\"2222222222222222\","
           "\"parentSpanId\":\"3333333333333333\",\"name\":\"chat m\",\"kind\":3,\"startTimeUnixNano\":\"5\","
           "\"endTimeUnixNano\":\"7\",\"attributes\":[{\"key\":\"gen_ai.operation.name\",\"value\":{\"stringValue\":"
           "\"chat\"}},{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":\"12\"}}],\"status\":"
           "{\"message\":\"boom\",\"code\":2},\"flags\":769}],\"schemaUrl\":"
           "\"https://opentelemetry.io/schemas/1.41.0\"}]}]}");
    /* the same span as protobuf starts with resource_spans (field 1, LEN) and holds the name bytes */
    struct buf p = BUF_INIT(BUF_UNBOUNDED);
    is_int(otlp_encode_spans(&p, s, false), 0);
    ok(p.len > 0 && (unsigned char)p.data[0] == 0x0a);
    ok(memmem(p.data, p.len, "\x2a\x06" "chat m", 8) != NULL); /* Span.name = 5 */
    buf_free(&p);
    buf_free(&b);
    otel_span_free(s);
}

static void test_span_limits(void)
{
    struct otel_span *s = otel_span_new();
    for (int i = 0; i < OTEL_MAX_ATTRS + 5; i++)
        otel_span_int(s, "k", i);
    is_int(s->nattrs, OTEL_MAX_ATTRS);
    is_int(s->dropped_attrs, 5);
    otel_span_free(s);
    s = otel_span_new();
    static char big[70 * 1024];
    memset(big, 'a', sizeof(big));
    otel_span_str(s, "big", big, sizeof(big)); /* over the span's string budget: dropped, counted */
    is_int(s->nattrs, 0);
    is_int(s->dropped_attrs, 1);
    otel_span_free(s);
}

static void test_bounds(void)
{
    char t[40];
    metrics_format_bound(t, sizeof(t), 1048576);
    is_str(t, "1048576");
    metrics_format_bound(t, sizeof(t), 4194304);
    is_str(t, "4194304");
    metrics_format_bound(t, sizeof(t), 0.00025);
    is_str(t, "0.00025");
    metrics_format_bound(t, sizeof(t), 81.92);
    is_str(t, "81.92");
    metrics_format_bound(t, sizeof(t), 16777216);
    is_str(t, "16777216");
}

static void test_gzip(void)
{
    struct buf in = BUF_INIT(BUF_UNBOUNDED), out = BUF_INIT(BUF_UNBOUNDED);
    for (int i = 0; i < 1000; i++)
        buf_printf(&in, "span %d;", i);
    is_int(otlp_gzip(&in, &out), 0);
    ok(out.len > 10 && out.len < in.len);
    ok((unsigned char)out.data[0] == 0x1f && (unsigned char)out.data[1] == 0x8b); /* gzip magic */
    char back[16384];
    z_stream z;
    memset(&z, 0, sizeof(z));
    is_int(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)out.data;
    z.avail_in = (uInt)out.len;
    z.next_out = (Bytef *)back;
    z.avail_out = sizeof(back);
    is_int(inflate(&z, Z_FINISH), Z_STREAM_END);
    is_int(z.total_out, in.len);
    ok(memcmp(back, in.data, in.len) == 0);
    inflateEnd(&z);
    buf_free(&in);
    buf_free(&out);
}

int main(void)
{
    subtest("gzip", test_gzip);
    subtest("varint", test_varint);
    subtest("nested messages", test_nested);
    subtest("two-byte length", test_long_length);
    subtest("fixed and packed", test_fixed_and_packed);
    subtest("json rules", test_json_rules);
    subtest("depth and output limit", test_depth_and_limit);
    subtest("span as json and protobuf", test_span_json);
    subtest("span attribute limits", test_span_limits);
    subtest("exact bucket bounds", test_bounds);
    otel_stop(); /* frees the pooled spans */
    return done_testing();
}
