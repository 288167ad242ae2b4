/* AWS event-stream framing: CRC32, frames made by a second implementation (tests/fakes/eventstream.mjs), every
 * split of the input, the pending-buffer bound, oversized and corrupt frames, exceptions and error messages. */
#include "test.h"

#include "common/alloc.h"
#include "gateway/eventstream.h"

struct seen {
    int n;
    char types[16][64];
    char events[16][64];
    char payloads[16][256];
    bool exc[16];
    int stop_at; /* return 7 from the callback at this message (1-based), 0 never */
};

static int on_msg(const struct eventstream_message *m, void *ud)
{
    struct seen *s = ud;
    if (s->n < 16) {
        snprintf(s->types[s->n], 64, "%.*s", STR_FMT(m->message_type));
        snprintf(s->events[s->n], 64, "%.*s", STR_FMT(m->event_type));
        snprintf(s->payloads[s->n], 256, "%.*s", STR_FMT(m->payload));
        s->exc[s->n] = m->is_exception;
    }
    s->n++;
    return s->stop_at && s->n == s->stop_at ? 7 : 0;
}

static size_t unhex(const char *hex, unsigned char *out)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (unsigned char)v;
    }
    return n;
}

/* eventFrame('messageStart', {role:'assistant', p:'abc'}) and exceptionFrame('throttlingException',
 * {message:'slow down'}) from tests/fakes/eventstream.mjs. */
static const char FRAME_START[] =
    "000000800000005251a15f230b3a6576656e742d7479706507000c6d65737361676553746172740d3a636f6e74656e742d7479706507001061"
    "70706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b22726f6c65223a22617373697374616e7422"
    "2c2270223a22616263227d8eb8e9b8";
static const char FRAME_THROTTLE[] =
    "0000008800000061de0175f40f3a657863657074696f6e2d747970650700137468726f74746c696e67457863657074696f6e0d3a636f6e74"
    "656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d74797065070009657863657074696f6e7b226d"
    "657373616765223a22736c6f7720646f776e227d832ee072";

static void test_crc(void)
{
    is_int(eventstream_crc32(0, "123456789", 9), 0xCBF43926u);
    is_int(eventstream_crc32(0, "", 0), 0);
    /* incremental == one shot */
    is_int(eventstream_crc32(eventstream_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}

static void test_foreign_frames(void)
{
    unsigned char b[512];
    size_t n = unhex(FRAME_START, b);
    n += unhex(FRAME_THROTTLE, b + n);
    struct eventstream_parser p;
    struct seen s = {0};
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, (const char *)b, n), 0);
    is_int(s.n, 2);
    is_str(s.types[0], "event");
    is_str(s.events[0], "messageStart");
    is_str(s.payloads[0], "{\"role\":\"assistant\",\"p\":\"abc\"}");
    ok(!s.exc[0]);
    is_str(s.types[1], "exception");
    is_str(s.events[1], "throttlingException");
    is_str(s.payloads[1], "{\"message\":\"slow down\"}");
    ok(s.exc[1]);
    is_int(p.pending.len, 0);
    eventstream_parser_free(&p);
}

static void test_every_split(void)
{
    unsigned char b[512];
    size_t n = unhex(FRAME_START, b);
    n += unhex(FRAME_THROTTLE, b + n);
    for (size_t cut1 = 0; cut1 <= n; cut1++) {
        for (size_t cut2 = cut1; cut2 <= n; cut2 += 7) {
            struct eventstream_parser p;
            struct seen s = {0};
            eventstream_parser_init(&p, 4096, on_msg, &s);
            int rc = eventstream_feed(&p, (const char *)b, cut1);
            rc |= eventstream_feed(&p, (const char *)b + cut1, cut2 - cut1);
            rc |= eventstream_feed(&p, (const char *)b + cut2, n - cut2);
            if (!ok(rc == 0 && s.n == 2 && strcmp(s.events[1], "throttlingException") == 0 &&
                    strcmp(s.payloads[0], "{\"role\":\"assistant\",\"p\":\"abc\"}") == 0))
                printf("#   split at %zu/%zu\n", cut1, cut2);
            eventstream_parser_free(&p);
        }
    }
    /* one byte at a time */
    struct eventstream_parser p;
    struct seen s = {0};
    eventstream_parser_init(&p, 4096, on_msg, &s);
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        rc |= eventstream_feed(&p, (const char *)b + i, 1);
    is_int(rc, 0);
    is_int(s.n, 2);
    eventstream_parser_free(&p);
}

static void encode(struct buf *out, const char *type, const char *payload)
{
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "event"};
    ok(eventstream_encode(out, names, values, 3, payload, strlen(payload)) == 0);
}

/* A read that completes a pending message may carry many more messages: their sum is larger than
 * max_message, yet each message is within it. */
static void test_pending_bound(void)
{
    struct buf all = BUF_INIT(BUF_UNBOUNDED);
    char payload[200];
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    for (int i = 0; i < 12; i++)
        encode(&all, "contentBlockDelta", payload);
    size_t one_len = all.len / 12;
    ok(one_len < 1024 && all.len > 1024);
    struct eventstream_parser p;
    struct seen s = {0};
    eventstream_parser_init(&p, 1024, on_msg, &s);
    is_int(eventstream_feed(&p, all.data, 5), 0);               /* part of the prelude */
    is_int(eventstream_feed(&p, all.data + 5, all.len - 5), 0); /* the rest, 2.5 KB in one read */
    is_int(s.n, 12);
    ok(p.pending.len == 0);
    eventstream_parser_free(&p);
    buf_free(&all);
}

static void test_oversized(void)
{
    struct buf big = BUF_INIT(BUF_UNBOUNDED);
    char *payload = xcalloc(1, 3000);
    memset(payload, 'y', 2999);
    encode(&big, "contentBlockDelta", payload);
    xfree(payload);
    struct eventstream_parser p;
    struct seen s = {0};
    eventstream_parser_init(&p, 2048, on_msg, &s);
    /* refused as soon as the prelude is known, before the body is buffered */
    is_int(eventstream_feed(&p, big.data, 12), -1);
    is_int(s.n, 0);
    eventstream_parser_free(&p);
    /* split inside the prelude: the pending path checks it too */
    eventstream_parser_init(&p, 2048, on_msg, &s);
    is_int(eventstream_feed(&p, big.data, 6), 0);
    is_int(eventstream_feed(&p, big.data + 6, 100), -1);
    eventstream_parser_free(&p);
    buf_free(&big);
}

static void test_bad_crc(void)
{
    struct buf f = BUF_INIT(BUF_UNBOUNDED);
    encode(&f, "messageStop", "{\"stopReason\":\"end_turn\"}");
    struct eventstream_parser p;
    struct seen s = {0};
    /* message CRC */
    f.data[f.len - 1] ^= 1;
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, f.data, f.len), -1);
    is_int(s.n, 0);
    eventstream_parser_free(&p);
    f.data[f.len - 1] ^= 1;
    /* a payload byte: the message CRC no longer matches */
    f.data[f.len - 6] ^= 0x20;
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, f.data, f.len), -1);
    eventstream_parser_free(&p);
    f.data[f.len - 6] ^= 0x20;
    /* prelude CRC */
    f.data[9] ^= 0x80;
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, f.data, f.len), -1);
    eventstream_parser_free(&p);
    f.data[9] ^= 0x80;
    /* intact: accepted */
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, f.data, f.len), 0);
    is_int(s.n, 1);
    eventstream_parser_free(&p);
    buf_free(&f);
}

/* Frames whose CRCs are right but whose inside is wrong. */
static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static size_t raw_frame(unsigned char *out, const unsigned char *hdrs, size_t hlen, uint32_t claimed_hlen,
                        const char *payload)
{
    size_t plen = strlen(payload);
    uint32_t total = (uint32_t)(16 + hlen + plen);
    put32(out, total);
    put32(out + 4, claimed_hlen);
    put32(out + 8, eventstream_crc32(0, out, 8));
    memcpy(out + 12, hdrs, hlen);
    memcpy(out + 12 + hlen, payload, plen);
    put32(out + 12 + hlen + plen, eventstream_crc32(0, out, total - 4));
    return total;
}

static void test_bad_headers(void)
{
    unsigned char f[256];
    struct eventstream_parser p;
    struct seen s = {0};
    /* header value type 12 does not exist */
    static const unsigned char bad_type[] = {2, 'a', 'b', 12, 0};
    size_t n = raw_frame(f, bad_type, sizeof(bad_type), sizeof(bad_type), "{}");
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, (const char *)f, n), -1);
    eventstream_parser_free(&p);
    /* string value running past the headers */
    static const unsigned char overrun[] = {2, 'a', 'b', 7, 0, 40, 'x'};
    n = raw_frame(f, overrun, sizeof(overrun), sizeof(overrun), "{}");
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, (const char *)f, n), -1);
    eventstream_parser_free(&p);
    /* headers length larger than the message allows */
    n = raw_frame(f, overrun, 0, 200, "{}");
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, (const char *)f, n), -1);
    eventstream_parser_free(&p);
    /* a zero-length header name */
    static const unsigned char empty_name[] = {0, 7, 0, 0};
    n = raw_frame(f, empty_name, sizeof(empty_name), sizeof(empty_name), "{}");
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, (const char *)f, n), -1);
    eventstream_parser_free(&p);
    /* every fixed-size type is skipped correctly: bool, byte, short, int, long, timestamp, uuid, bytes */
    static const unsigned char typed2[] = {1, 'a', 0, 1, 'b', 1, 1, 'c', 2, 9, 1, 'd', 3, 0, 1, 1, 'e', 4, 0, 0, 0, 1,
                                           1, 'f', 5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'g', 8, 0, 0, 0, 0, 0, 0, 0, 1, 1,
                                           'h', 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'i', 6, 0, 2,
                                           0xff, 0xfe, 11, ':', 'e', 'v', 'e', 'n', 't', '-', 't', 'y', 'p', 'e', 7, 0,
                                           2, 'o', 'k'};
    n = raw_frame(f, typed2, sizeof(typed2), sizeof(typed2), "{\"a\":1}");
    s.n = 0;
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, (const char *)f, n), 0);
    is_int(s.n, 1);
    is_str(s.events[0], "ok");
    is_str(s.payloads[0], "{\"a\":1}");
    eventstream_parser_free(&p);
}

static void test_error_message(void)
{
    const char *names[] = {":message-type", ":error-code", ":error-message"};
    const char *values[] = {"error", "InternalFailure", "something broke"};
    struct buf f = BUF_INIT(BUF_UNBOUNDED);
    ok(eventstream_encode(&f, names, values, 3, "", 0) == 0);
    struct eventstream_parser p;
    struct seen s = {0};
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, f.data, f.len), 0);
    is_int(s.n, 1);
    ok(s.exc[0]);
    is_str(s.events[0], "InternalFailure");
    is_str(s.payloads[0], "something broke");
    eventstream_parser_free(&p);
    buf_free(&f);
}

static void test_callback_stops(void)
{
    struct buf all = BUF_INIT(BUF_UNBOUNDED);
    encode(&all, "a", "{}");
    encode(&all, "b", "{}");
    encode(&all, "c", "{}");
    struct eventstream_parser p;
    struct seen s = {.stop_at = 2};
    eventstream_parser_init(&p, 4096, on_msg, &s);
    is_int(eventstream_feed(&p, all.data, all.len), 7);
    is_int(s.n, 2);
    eventstream_parser_free(&p);
    /* the same through the pending path */
    struct seen s2 = {.stop_at = 1};
    eventstream_parser_init(&p, 4096, on_msg, &s2);
    is_int(eventstream_feed(&p, all.data, 3), 0);
    is_int(eventstream_feed(&p, all.data + 3, all.len - 3), 7);
    is_int(s2.n, 1);
    eventstream_parser_free(&p);
    buf_free(&all);
}

static void test_encode_limits(void)
{
    struct buf f = BUF_INIT(BUF_UNBOUNDED);
    const char *names[] = {":event-type"};
    const char *values[] = {"x"};
    ok(eventstream_encode(&f, names, values, 1, "", (size_t)UINT32_MAX) == -1);
    buf_free(&f);
}

int main(void)
{
    subtest("crc32", test_crc);
    subtest("frames from the fake's encoder", test_foreign_frames);
    subtest("every split", test_every_split);
    subtest("pending holds one message only", test_pending_bound);
    subtest("oversized", test_oversized);
    subtest("bad crc", test_bad_crc);
    subtest("bad headers", test_bad_headers);
    subtest("error message", test_error_message);
    subtest("callback stops parsing", test_callback_stops);
    subtest("encode limits", test_encode_limits);
    return done_testing();
}
