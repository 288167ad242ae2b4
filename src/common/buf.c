#include "common/buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void buf_free(struct buf *b)
{
    xfree(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_free_secret(struct buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap); /* not a dead store the compiler may drop before the free */
    buf_free(b);
}

int buf_reserve(struct buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return -1;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap < (BUF_UNBOUNDED / 2) ? cap * 2 : need;
    /* Growing past max+1 buys nothing; keep the slack small for bounded buffers. */
    if (cap > b->max + 1 && need <= b->max + 1)
        cap = b->max + 1;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int buf_append_slow(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof(small))
        return buf_append(b, small, (size_t)n);
    if (buf_reserve(b, (size_t)n) != 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *buf_steal(struct buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    if (p == NULL)
        p = xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* Eight bytes at once (SWAR): does any of them need an escape in a JSON string ('"', '\\' or below 0x20)? The
 * zero-byte test ((v - 0x01..) & ~v & 0x80..) is exact as a yes/no for the whole word; "below 0x20" is the same
 * test with 0x20. Text deltas are mostly plain: they are copied in runs found eight bytes per step. */
#define JSON_ONES 0x0101010101010101ull
#define JSON_HIGHS 0x8080808080808080ull
static inline bool json_clean8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t q = w ^ (JSON_ONES * '"'), bs = w ^ (JSON_ONES * '\\');
    uint64_t bad = ((w - JSON_ONES * 0x20) & ~w) | ((q - JSON_ONES) & ~q) | ((bs - JSON_ONES) & ~bs);
    return (bad & JSON_HIGHS) == 0;
}

static inline bool json_needs_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

int buf_append_json_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) /* an empty struct str (STR_NULL) is an empty string */
        s = "";
    /* Worst case every byte becomes \u00XX. */
    if (buf_reserve(b, n > (BUF_UNBOUNDED / 8) ? BUF_UNBOUNDED : n * 6 + 2) != 0) {
        /* Not enough headroom for the worst case; fall back to byte-wise appends that stop at max. */
    }
    if (buf_append_char(b, '"') != 0)
        return -1;
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    size_t i = 0;
    for (;;) {
        while (i + 8 <= n && json_clean8(s + i))
            i += 8;
        while (i < n && !json_needs_escape((unsigned char)s[i]))
            i++; /* at most to the byte that made the word unclean, or the tail */
        if (i >= n)
            break;
        unsigned char c = (unsigned char)s[i];
        const char *esc;
        char ubuf[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            ubuf[0] = '\\'; ubuf[1] = 'u'; ubuf[2] = '0'; ubuf[3] = '0';
            ubuf[4] = hex[c >> 4]; ubuf[5] = hex[c & 15]; ubuf[6] = '\0';
            esc = ubuf;
        }
        if (buf_append(b, s + run, i - run) != 0 || buf_append_str(b, esc) != 0)
            return -1;
        run = ++i;
    }
    if (buf_append(b, s + run, n - run) != 0)
        return -1;
    return buf_append_char(b, '"');
}

size_t fmt_u64(char *dst, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

void fmt_hex64(char *dst, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        dst[i] = hex[v & 15];
        v >>= 4;
    }
}

int buf_append_base64(struct buf *b, const void *p, size_t n, bool url)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char safe[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *t = url ? safe : std;
    const unsigned char *in = p;
    if (buf_reserve(b, (n + 2) / 3 * 4) != 0)
        return -1;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        char q[4] = {t[(v >> 18) & 63], t[(v >> 12) & 63], i + 1 < n ? t[(v >> 6) & 63] : '=',
                     i + 2 < n ? t[v & 63] : '='};
        size_t k = !url || i + 2 < n ? 4 : i + 1 < n ? 3 : 2;
        if (buf_append(b, q, k) != 0)
            return -1;
    }
    return buf_append(b, "", 0);
}

int buf_append_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    return buf_append(b, tmp, fmt_u64(tmp, v));
}

int buf_append_i64(struct buf *b, int64_t v)
{
    if (v < 0) {
        if (buf_append_char(b, '-') != 0)
            return -1;
        return buf_append_u64(b, v == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-v);
    }
    return buf_append_u64(b, (uint64_t)v);
}
