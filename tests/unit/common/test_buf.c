#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "test.h"

static void test_limits(void)
{
    struct buf b = BUF_INIT(8);
    ok(buf_append(&b, "12345678", 8) == 0);
    is_int(b.len, 8);
    ok(buf_append(&b, "9", 1) == -1); /* one past max fails */
    is_int(b.len, 8);                 /* and leaves the buffer as it was */
    is_str(b.data, "12345678");
    buf_consume(&b, 3);
    is_str(b.data, "45678");
    ok(buf_printf(&b, "%d", 123) == 0);
    is_str(b.data, "45678123");
    ok(buf_printf(&b, "%d", 4) == -1);
    buf_free(&b);
}

static void test_json_escape(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    ok(buf_append_json_str(&b, "a\"b\\c\n\x01", 7) == 0);
    is_str(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    buf_reset(&b);
    ok(buf_append_json_cstr(&b, "plain") == 0);
    is_str(b.data, "\"plain\"");
    buf_free(&b);
    struct buf small = BUF_INIT(4);
    ok(buf_append_json_cstr(&small, "toolong") == -1);
    buf_free(&small);
}

/* The escaper as one byte at a time, the oracle of the word-at-a-time one. */
static void ref_json_escape(struct buf *out, const unsigned char *s, size_t n)
{
    buf_append_char(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"')
            buf_append_str(out, "\\\"");
        else if (c == '\\')
            buf_append_str(out, "\\\\");
        else if (c == '\n')
            buf_append_str(out, "\\n");
        else if (c == '\r')
            buf_append_str(out, "\\r");
        else if (c == '\t')
            buf_append_str(out, "\\t");
        else if (c == '\b')
            buf_append_str(out, "\\b");
        else if (c == '\f')
            buf_append_str(out, "\\f");
        else if (c < 0x20)
            buf_printf(out, "\\u%04x", c);
        else
            buf_append_char(out, (char)c);
    }
    buf_append_char(out, '"');
}

/* Every byte value at every offset of strings around the 8-byte steps (and pairs of them), then random strings:
 * the same bytes as the byte-wise escaper. */
static void test_json_escape_words(void)
{
    struct buf got = BUF_INIT(BUF_UNBOUNDED), want = BUF_INIT(BUF_UNBOUNDED);
    unsigned char s[40];
    int bad = 0;
    for (size_t len = 1; len <= 25; len++)
        for (size_t at = 0; at < len; at++)
            for (int c = 0; c < 256; c++) {
                memset(s, 'a', len);
                s[at] = (unsigned char)c;
                if (c & 1)
                    s[(at * 7 + 3) % len] = (unsigned char)(0xff - c); /* a second odd byte elsewhere */
                buf_reset(&got);
                buf_reset(&want);
                buf_append_json_str(&got, (const char *)s, len);
                ref_json_escape(&want, s, len);
                if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
                    bad++;
            }
    is_int(bad, 0);
    uint32_t x = 12345;
    for (int round = 0; round < 20000; round++) {
        size_t len = (x = x * 1103515245u + 12345u) % 40;
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            s[i] = (unsigned char)(x >> 16);
        }
        buf_reset(&got);
        buf_reset(&want);
        buf_append_json_str(&got, (const char *)s, len);
        ref_json_escape(&want, s, len);
        if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
            bad++;
    }
    is_int(bad, 0);
    buf_free(&got);
    buf_free(&want);
}

static void test_steal(void)
{
    struct buf b = BUF_INIT(100);
    size_t n = 99;
    char *p = buf_steal(&b, &n);
    is_int(n, 0);
    is_str(p, "");
    xfree(p);
    buf_append_str(&b, "xy");
    p = buf_steal(&b, &n);
    is_int(n, 2);
    is_str(p, "xy");
    ok(b.data == NULL);
    xfree(p);
}

/* RFC 4648 §10's vectors, and the URL-safe form: the standard one with '-' '_' for '+' '/' and no padding. */
static void test_base64(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        struct buf b = BUF_INIT(64);
        ok(buf_append_base64(&b, plain[i], strlen(plain[i]), false) == 0);
        ok(b.data != NULL && strcmp(b.data, coded[i]) == 0);
        buf_free(&b);
    }
    unsigned char bytes[48];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof(bytes); i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        bytes[i] = (unsigned char)(i % 3 == 0 ? 0xff : i % 3 == 1 ? 0xfb : x); /* '+' and '/' come up */
    }
    int same = 0;
    for (size_t n = 0; n <= sizeof(bytes); n++) {
        struct buf sb = BUF_INIT(BUF_UNBOUNDED), ub = BUF_INIT(BUF_UNBOUNDED);
        buf_append_base64(&sb, bytes, n, false);
        buf_append_base64(&ub, bytes, n, true);
        struct buf want = BUF_INIT(BUF_UNBOUNDED);
        buf_append(&want, "", 0);
        for (size_t i = 0; i < sb.len; i++)
            if (sb.data[i] != '=')
                buf_append_char(&want, sb.data[i] == '+' ? '-' : sb.data[i] == '/' ? '_' : sb.data[i]);
        same += ub.len == want.len && memcmp(ub.data, want.data, ub.len) == 0 && sb.len == (n + 2) / 3 * 4;
        buf_free(&sb);
        buf_free(&ub);
        buf_free(&want);
    }
    is_int(same, (int)sizeof(bytes) + 1);
    struct buf lim = BUF_INIT(7); /* 4 fit, 8 do not */
    is_int(buf_append_base64(&lim, "abcd", 4, false), -1);
    buf_free(&lim);
}

int main(void)
{
    subtest("limits", test_limits);
    subtest("json escape", test_json_escape);
    subtest("json escape, eight bytes at a time", test_json_escape_words);
    subtest("steal", test_steal);
    subtest("base64", test_base64);
    return done_testing();
}
