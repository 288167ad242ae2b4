/* str.h: non-owning byte slices and the small parsing helpers every module needs.
 * A struct str points into someone else's memory (a request buffer, a config snapshot); it is never freed. */
#ifndef AGENTD_STR_H
#define AGENTD_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct str {
    const char *p;
    size_t n;
};

#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})
#define STR_NULL ((struct str){NULL, 0})
#define STR_FMT(s) (int)(s).n, (s).p /* for printf("%.*s", STR_FMT(x)) */

static inline struct str str_from(const char *s)
{
    return (struct str){s, s ? strlen(s) : 0};
}
static inline struct str str_make(const char *p, size_t n)
{
    return (struct str){p, n};
}
static inline bool str_eq(struct str a, struct str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}
static inline bool str_eq_cstr(struct str a, const char *b)
{
    return str_eq(a, str_from(b));
}
bool str_eq_nocase(struct str a, struct str b);
static inline bool str_eq_nocase_cstr(struct str a, const char *b)
{
    return str_eq_nocase(a, str_from(b));
}
bool str_starts_with(struct str s, struct str prefix);
bool str_has_prefix_cstr(const char *s, const char *prefix);
/* Strips spaces and tabs at both ends. */
struct str str_trim(struct str s);
/* Case-insensitive search for a token in a comma-separated header value ("keep-alive, Upgrade"). */
bool str_list_has_token(struct str list, const char *token);
/* Returns a NUL-terminated heap copy (xfree it). */
char *str_dup(struct str s);

/* Strict decimal parsers: the whole slice must be a number in range; no sign for unsigned, no spaces. */
/* The value of one hexadecimal digit (either case), or -1. */
static inline int str_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int str_to_u64(struct str s, uint64_t *out);
int str_to_i64(struct str s, int64_t *out);
int str_to_double(struct str s, double *out);

/* Copies at most dstsize-1 bytes and always NUL-terminates (when dstsize > 0). Returns strlen(src). */
size_t str_lcpy(char *dst, const char *src, size_t dstsize);

#endif
