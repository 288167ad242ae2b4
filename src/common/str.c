#include "common/str.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "common/alloc.h"

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool str_eq_nocase(struct str a, struct str b)
{
    if (a.n != b.n)
        return false;
    for (size_t i = 0; i < a.n; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    return true;
}

bool str_starts_with(struct str s, struct str prefix)
{
    return s.n >= prefix.n && memcmp(s.p, prefix.p, prefix.n) == 0;
}

bool str_has_prefix_cstr(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

struct str str_trim(struct str s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.n--;
    }
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

bool str_list_has_token(struct str list, const char *token)
{
    struct str tok = str_from(token);
    size_t i = 0;
    while (i <= list.n) {
        size_t j = i;
        while (j < list.n && list.p[j] != ',')
            j++;
        if (str_eq_nocase(str_trim(str_make(list.p + i, j - i)), tok))
            return true;
        i = j + 1;
    }
    return false;
}

char *str_dup(struct str s)
{
    char *p = xmalloc(s.n + 1);
    if (s.n)
        memcpy(p, s.p, s.n);
    p[s.n] = '\0';
    return p;
}

int str_to_u64(struct str s, uint64_t *out)
{
    if (s.n == 0 || s.n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s.p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int str_to_i64(struct str s, int64_t *out)
{
    bool neg = false;
    if (s.n && (s.p[0] == '-' || s.p[0] == '+')) {
        neg = s.p[0] == '-';
        s.p++;
        s.n--;
    }
    uint64_t v;
    if (str_to_u64(s, &v) != 0)
        return -1;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

int str_to_double(struct str s, double *out)
{
    char tmp[64];
    if (s.n == 0 || s.n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s.p, s.n);
    tmp[s.n] = '\0';
    for (size_t i = 0; i < s.n; i++) {
        char c = tmp[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E'))
            return -1;
    }
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (errno != 0 || end != tmp + s.n || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

size_t str_lcpy(char *dst, const char *src, size_t dstsize)
{
    size_t len = strlen(src);
    if (dstsize) {
        size_t n = len < dstsize - 1 ? len : dstsize - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}
