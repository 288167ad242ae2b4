/* buf.h: a growable byte buffer with a hard ceiling (curl's dynbuf: "the toobig value must be set").
 *
 * Every buffer whose size the network decides is a struct buf with max set from configuration; an append that
 * would pass max fails with -1 and leaves the buffer as it was, so the caller can answer 413/431 or end a
 * stream cleanly. The data is always NUL-terminated (not counted in len), so parsers may rely on a sentinel. */
#ifndef AGENTD_BUF_H
#define AGENTD_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
    char *data;  /* NULL until the first append */
    size_t len;  /* bytes used, excluding the trailing NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* ceiling on len; 0 means "no data may be stored" is never meant: use BUF_UNBOUNDED */
};

#define BUF_UNBOUNDED ((size_t)-1 / 2)
#define BUF_INIT(maxbytes) {NULL, 0, 0, (maxbytes)}

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
/* buf_free for a buffer that held a secret (a token, a key file, a form with an assertion): the whole
 * allocation is zeroed first, with explicit_bzero so that the zeroing is not optimised away. Copies left by
 * earlier growth are not reached: size such buffers up front. */
void buf_free_secret(struct buf *b);
/* Empties the buffer, keeping its allocation. */
static inline void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}
/* Makes room for n more bytes; -1 when len + n would pass max. */
int buf_reserve(struct buf *b, size_t n);
int buf_append_slow(struct buf *b, const void *p, size_t n);
/* Appends run ~80 times per proxied request, mostly a few bytes each: the common case (room already there) is
 * inline, the rest (growth, the ceiling) out of line. */
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
    if (b->cap - b->len > n && n <= b->max - b->len) { /* len + n + 1 <= cap, len + n <= max */
        if (n)
            memcpy(b->data + b->len, p, n); /* p may be NULL when n is 0 */
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    return buf_append_slow(b, p, n);
}
static inline int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}
static inline int buf_append_char(struct buf *b, char c)
{
    return buf_append(b, &c, 1);
}
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Hands the allocation to the caller (who frees it with xfree) and leaves the buffer empty. */
char *buf_steal(struct buf *b, size_t *len);

/* Decimal / lower-case hex without printf (hot paths). */
int buf_append_u64(struct buf *b, uint64_t v);
int buf_append_i64(struct buf *b, int64_t v);
/* Writes v in decimal into dst (at least 21 bytes), returns the length; no NUL. */
size_t fmt_u64(char *dst, uint64_t v);
/* Writes 16 lower-case hex digits of v into dst; no NUL. */
void fmt_hex64(char *dst, uint64_t v);

/* Appends the base64 of n bytes at p: RFC 4648 §4 with padding, or with url the §5 alphabet without padding (as
 * JWTs use). The buffer is NUL-terminated afterwards even when n is 0. */
int buf_append_base64(struct buf *b, const void *p, size_t n, bool url);

/* Appends s as a JSON string literal, quotes included, escaping what RFC 8259 requires. */
int buf_append_json_str(struct buf *b, const char *s, size_t n);
static inline int buf_append_json_cstr(struct buf *b, const char *s)
{
    return buf_append_json_str(b, s, strlen(s));
}

#endif
