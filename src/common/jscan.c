#include "common/jscan.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

struct scanner {
    const char *p, *end, *start;
    const char *err;
    const char *err_at;
    int depth;
    bool trusted; /* the text was validated already: strings are skipped, not checked again */
};

static void ws(struct scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int fail(struct scanner *s, const char *msg)
{
    if (!s->err) {
        s->err = msg;
        s->err_at = s->p;
    }
    return -1;
}

/* Validates UTF-8 of one multi-byte sequence starting at p (first byte >= 0x80). Returns its length or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

/* Bytes a string scan must stop at: the quote, the backslash, control characters, and non-ASCII (UTF-8 is
 * checked). Everything else is skipped in a tight loop. */
static const unsigned char string_stop[256] = {
    [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};

/* A string in text validated before: its end is the first '"' preceded by an even run of backslashes. memchr
 * makes this several times cheaper than checking every byte again; each backslash run is looked at once. */
static int skip_trusted_string(struct scanner *s)
{
    const char *p = s->p + 1;
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(s->end - p));
        if (q == NULL)
            return fail(s, "unterminated string");
        size_t bs = 0;
        while (q - bs > p && q[-(ptrdiff_t)bs - 1] == '\\')
            bs++;
        p = q + 1;
        if (bs % 2 == 0) {
            s->p = p;
            return 0;
        }
    }
}

/* Whether any of the 8 bytes in x is one string_stop marks: a quote, a backslash, below 0x20 or above 0x7f.
 * Exact as an existence test (a borrow only spreads above a byte that matched already). */
static inline bool swar_has_stop(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    return ((((q - ones) & ~q) | ((b - ones) & ~b) | (x - ones * 0x20) | x) & highs) != 0;
}

static int scan_string(struct scanner *s)
{
    if (s->trusted)
        return skip_trusted_string(s);
    s->p++; /* opening quote */
    while (s->p < s->end) {
        const char *p = s->p, *end = s->end;
        /* Short strings (keys, roles, ids) end within a few bytes: byte by byte first, then eight bytes at a time
         * through long plain-ASCII runs (most of any LLM payload), then byte by byte to the stop. */
        const char *head = end - p > 16 ? p + 16 : end;
        while (p < head && !string_stop[(unsigned char)*p])
            p++;
        if (p == head && p < end) { /* no stop yet (one found above ends the run where it is) */
            while (end - p >= 8) {
                uint64_t x;
                memcpy(&x, p, 8);
                if (swar_has_stop(x))
                    break;
                p += 8;
            }
            while (p < end && !string_stop[(unsigned char)*p])
                p++;
        }
        s->p = p;
        if (p >= end)
            break;
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c == '\\') {
            s->p++;
            if (s->p >= s->end)
                break;
            char e = *s->p;
            if (e == 'u') {
                if (s->end - s->p < 5)
                    return fail(s, "truncated \\u escape");
                unsigned cp = 0;
                for (int i = 1; i <= 4; i++) {
                    if (str_hexval(s->p[i]) < 0)
                        return fail(s, "invalid \\u escape");
                    cp = (cp << 4) | (unsigned)str_hexval(s->p[i]);
                }
                s->p += 5;
                /* A surrogate must come as a high + low pair: a lone half has no UTF-8 form, and every JSON
                 * library downstream refuses it. */
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return fail(s, "lone low surrogate in \\u escape");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo = 0;
                    if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u')
                        return fail(s, "high surrogate without its low half");
                    for (int i = 2; i <= 5; i++) {
                        if (str_hexval(s->p[i]) < 0)
                            return fail(s, "invalid \\u escape");
                        lo = (lo << 4) | (unsigned)str_hexval(s->p[i]);
                    }
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return fail(s, "high surrogate without its low half");
                    s->p += 6;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return fail(s, "invalid escape");
            s->p++;
            continue;
        }
        if (c < 0x20)
            return fail(s, "control character in string");
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end);
            if (n == 0)
                return fail(s, "invalid UTF-8 in string");
            s->p += n;
            continue;
        }
        s->p++;
    }
    return fail(s, "unterminated string");
}

static int scan_number(struct scanner *s)
{
    const char *p = s->p;
    if (p < s->end && *p == '-')
        p++;
    if (p >= s->end)
        return fail(s, "invalid number");
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return fail(s, "invalid number");
    }
    if (p < s->end && *p == '.') {
        p++;
        if (p >= s->end || *p < '0' || *p > '9')
            return fail(s, "invalid number");
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < s->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= s->end || *p < '0' || *p > '9')
            return fail(s, "invalid number");
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    return 0;
}

static int scan_literal(struct scanner *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return fail(s, "invalid literal");
    s->p += n;
    return 0;
}

/* Member-capture callback used while scanning the top-level object. */
struct capture {
    const char *const *keys;
    struct jval *out;
    size_t nkeys;
    size_t found;
    bool stop_when_all; /* jscan_get: stop as soon as the single key is found */
};

static int scan_value(struct scanner *s, struct jval *v, struct capture *cap);

static bool key_matches(const char *raw, size_t rawlen, const char *key)
{
    /* raw is the quoted key; keys we look for never contain escapes, so a byte compare of the inside suffices,
     * except that an escaped key ("\u006dodel") must still match: fall back to unescaping. */
    /* most members are not the key: the first byte tells (or is the start of an escape) */
    if (key[0] != '\0' && rawlen > 2 && raw[1] != key[0] && raw[1] != '\\')
        return false;
    size_t klen = strlen(key);
    if (rawlen == klen + 2 && memcmp(raw + 1, key, klen) == 0)
        return true;
    if (memchr(raw, '\\', rawlen) == NULL)
        return false;
    struct jval v = {J_STRING, {raw, rawlen}};
    return jval_is_str(&v, key);
}

static int scan_object(struct scanner *s, struct capture *cap)
{
    if (++s->depth > JSCAN_MAX_DEPTH)
        return fail(s, "nesting too deep");
    s->p++; /* { */
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        ws(s);
        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a string key");
        const char *kstart = s->p;
        if (scan_string(s) != 0)
            return -1;
        size_t klen = (size_t)(s->p - kstart);
        ws(s);
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected ':'");
        s->p++;
        ws(s);
        struct jval v;
        if (scan_value(s, &v, NULL) != 0)
            return -1;
        if (cap) {
            for (size_t i = 0; i < cap->nkeys; i++) {
                if (!key_matches(kstart, klen, cap->keys[i]))
                    continue;
                if (cap->out[i].type != J_NONE) {
                    /* Parsers disagree on which copy wins ("model" twice could be routed and priced as one model
                     * and run as another), so a duplicate of a member we read is an error. */
                    s->p = kstart;
                    return fail(s, "duplicate member");
                }
                cap->out[i] = v;
                cap->found++;
                break;
            }
            if (cap->stop_when_all && cap->found == cap->nkeys)
                return 1; /* early exit */
        }
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            s->depth--;
            return 0;
        }
        return fail(s, "expected ',' or '}'");
    }
}

static int scan_array(struct scanner *s)
{
    if (++s->depth > JSCAN_MAX_DEPTH)
        return fail(s, "nesting too deep");
    s->p++; /* [ */
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        ws(s);
        struct jval v;
        if (scan_value(s, &v, NULL) != 0)
            return -1;
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            s->depth--;
            return 0;
        }
        return fail(s, "expected ',' or ']'");
    }
}

/* An object or array of already-validated text whose members nobody asked for: only brackets and strings matter
 * (a tool's JSON schema is most of a request's structure; walking it member by member again cost as much as
 * validating it). Linear: each byte is looked at once, strings are skipped with memchr. */
static int skip_trusted_container(struct scanner *s)
{
    int depth = 0;
    while (s->p < s->end) {
        switch (*s->p) {
        case '"':
            if (skip_trusted_string(s) != 0)
                return -1;
            continue;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (--depth == 0) {
                s->p++;
                return 0;
            }
            break;
        default:
            break;
        }
        s->p++;
    }
    return fail(s, "unterminated container");
}

static int scan_value(struct scanner *s, struct jval *v, struct capture *cap)
{
    if (s->p >= s->end)
        return fail(s, "unexpected end of input");
    const char *start = s->p;
    int rc;
    if (s->trusted && cap == NULL && (*s->p == '{' || *s->p == '[')) {
        v->type = *s->p == '{' ? J_OBJECT : J_ARRAY;
        rc = skip_trusted_container(s);
        v->raw = str_make(start, (size_t)(s->p - start));
        return rc;
    }
    switch (*s->p) {
    case '{':
        v->type = J_OBJECT;
        rc = scan_object(s, cap);
        break;
    case '[':
        v->type = J_ARRAY;
        rc = scan_array(s);
        break;
    case '"':
        v->type = J_STRING;
        rc = scan_string(s);
        break;
    case 't':
        v->type = J_TRUE;
        rc = scan_literal(s, "true");
        break;
    case 'f':
        v->type = J_FALSE;
        rc = scan_literal(s, "false");
        break;
    case 'n':
        v->type = J_NULL;
        rc = scan_literal(s, "null");
        break;
    default:
        v->type = J_NUMBER;
        rc = scan_number(s);
    }
    v->raw = str_make(start, (size_t)(s->p - start));
    return rc;
}

static void report(struct scanner *s, size_t *err_off, const char **err_msg)
{
    if (err_off)
        *err_off = s->err_at ? (size_t)(s->err_at - s->start) : 0;
    if (err_msg)
        *err_msg = s->err ? s->err : "invalid JSON";
}

int jscan_validate(const char *text, size_t len, size_t *err_off, const char **err_msg)
{
    struct scanner s = {text, text + len, text, NULL, NULL, 0, false};
    struct jval v;
    ws(&s);
    if (scan_value(&s, &v, NULL) != 0) {
        report(&s, err_off, err_msg);
        return -1;
    }
    ws(&s);
    if (s.p != s.end) {
        fail(&s, "trailing characters after the JSON value");
        report(&s, err_off, err_msg);
        return -1;
    }
    return 0;
}

int jscan_fields(const char *text, size_t len, const char *const *keys, struct jval *out, size_t nkeys,
                 size_t *err_off, const char **err_msg)
{
    struct scanner s = {text, text + len, text, NULL, NULL, 0, false};
    for (size_t i = 0; i < nkeys; i++)
        out[i].type = J_NONE;
    struct capture cap = {keys, out, nkeys, 0, false};
    ws(&s);
    if (s.p >= s.end || *s.p != '{') {
        fail(&s, s.p >= s.end ? "empty body" : "expected a JSON object");
        report(&s, err_off, err_msg);
        return -1;
    }
    if (scan_object(&s, &cap) != 0) {
        report(&s, err_off, err_msg);
        return -1;
    }
    ws(&s);
    if (s.p != s.end) {
        fail(&s, "trailing characters after the JSON value");
        report(&s, err_off, err_msg);
        return -1;
    }
    return 0;
}

int jscan_fields_trusted(const struct jval *obj, const char *const *keys, struct jval *out, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++)
        out[i].type = J_NONE;
    if (obj->type != J_OBJECT)
        return -1;
    struct scanner s = {obj->raw.p, obj->raw.p + obj->raw.n, obj->raw.p, NULL, NULL, 0, true};
    struct capture cap = {keys, out, nkeys, 0, false};
    return scan_object(&s, &cap) != 0 ? -1 : 0;
}

int jscan_get(const char *text, size_t len, const char *key, struct jval *out)
{
    struct scanner s = {text, text + len, text, NULL, NULL, 0, false};
    const char *keys[1] = {key};
    out->type = J_NONE;
    struct capture cap = {keys, out, 1, 0, true};
    ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -1;
    int rc = scan_object(&s, &cap);
    if (rc < 0 && cap.found == 0)
        return -1;
    return out->type == J_NONE ? -1 : 0;
}

int jscan_path(const char *text, size_t len, const char *path, struct jval *out)
{
    char key[128];
    const char *p = path;
    struct str cur = str_make(text, len);
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(key))
            return -1;
        memcpy(key, p, n);
        key[n] = '\0';
        if (jscan_get(cur.p, cur.n, key, out) != 0)
            return -1;
        if (!dot)
            return 0;
        if (out->type != J_OBJECT)
            return -1;
        cur = out->raw;
        p = dot + 1;
    }
}

/* ---- value helpers ---- */

static int put_utf8(struct buf *out, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return buf_append(out, b, n);
}

int jval_str(const struct jval *v, struct buf *out)
{
    if (v->type != J_STRING || v->raw.n < 2)
        return -1;
    const char *p = v->raw.p + 1, *end = v->raw.p + v->raw.n - 1;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        if (bs == NULL)
            return buf_append(out, p, (size_t)(end - p));
        if (buf_append(out, p, (size_t)(bs - p)) != 0)
            return -1;
        p = bs + 1;
        if (p >= end)
            return -1;
        char e = *p++;
        char c;
        switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            if (end - p < 4)
                return -1;
            uint32_t cp = 0;
            for (int i = 0; i < 4; i++)
                cp = (cp << 4) | (uint32_t)str_hexval(p[i]);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t lo = 0;
                for (int i = 2; i < 6; i++)
                    lo = (lo << 4) | (uint32_t)str_hexval(p[i]);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff)
                cp = 0xfffd; /* lone surrogate */
            if (put_utf8(out, cp) != 0)
                return -1;
            continue;
        }
        default: return -1;
        }
        if (buf_append_char(out, c) != 0)
            return -1;
    }
    return 0;
}

bool jval_is_str(const struct jval *v, const char *s)
{
    if (v->type != J_STRING)
        return false;
    size_t n = strlen(s);
    if (v->raw.n == n + 2 && memcmp(v->raw.p + 1, s, n) == 0)
        return true;
    if (memchr(v->raw.p, '\\', v->raw.n) == NULL)
        return false;
    struct buf b = BUF_INIT(v->raw.n + 1);
    bool eq = jval_str(v, &b) == 0 && b.len == n && (n == 0 || memcmp(b.data, s, n) == 0);
    buf_free(&b);
    return eq;
}

int jval_i64(const struct jval *v, int64_t *out)
{
    if (v->type != J_NUMBER)
        return -1;
    if (str_to_i64(v->raw, out) == 0)
        return 0;
    /* 1e3 or 100.0 are integers too when they are whole and in range */
    double d;
    if (str_to_double(v->raw, &d) != 0 || d != floor(d) || fabs(d) > 9.0e15)
        return -1;
    *out = (int64_t)d;
    return 0;
}

int jval_double(const struct jval *v, double *out)
{
    if (v->type != J_NUMBER)
        return -1;
    /* Token counts and most numbers agentd reads are short unsigned integers: exact in a double, no strtod. */
    if (v->raw.n > 0 && v->raw.n <= 15) {
        uint64_t n = 0;
        size_t i = 0;
        while (i < v->raw.n && v->raw.p[i] >= '0' && v->raw.p[i] <= '9')
            n = n * 10 + (uint64_t)(v->raw.p[i++] - '0');
        if (i == v->raw.n) {
            *out = (double)n;
            return 0;
        }
    }
    return str_to_double(v->raw, out);
}

int jval_bool(const struct jval *v, bool *out)
{
    if (v->type == J_TRUE || v->type == J_FALSE) {
        *out = v->type == J_TRUE;
        return 0;
    }
    return -1;
}

int jscan_each(const struct jval *c, jscan_each_fn *fn, void *ud)
{
    if (c->type != J_OBJECT && c->type != J_ARRAY)
        return -1;
    struct scanner s = {c->raw.p + 1, c->raw.p + c->raw.n - 1, c->raw.p, NULL, NULL, 1, false};
    bool obj = c->type == J_OBJECT;
    for (;;) {
        ws(&s);
        if (s.p >= s.end)
            return 0;
        struct str key = STR_NULL;
        if (obj) {
            const char *k = s.p;
            if (scan_string(&s) != 0)
                return -1;
            key = str_make(k, (size_t)(s.p - k));
            ws(&s);
            s.p++; /* ':' (the container was validated) */
            ws(&s);
        }
        struct jval v;
        if (scan_value(&s, &v, NULL) != 0)
            return -1;
        int rc = fn(key, &v, ud);
        if (rc)
            return rc;
        ws(&s);
        if (s.p < s.end && *s.p == ',')
            s.p++;
    }
}

int jscan_each_fields(const struct jval *array, const char *const *keys, struct jval *out, size_t nkeys,
                      jscan_each_fields_fn *fn, void *ud)
{
    if (array->type != J_ARRAY)
        return -1;
    struct scanner s = {array->raw.p + 1, array->raw.p + array->raw.n - 1, array->raw.p, NULL, NULL, 1, true};
    for (;;) {
        ws(&s);
        if (s.p >= s.end)
            return 0;
        for (size_t i = 0; i < nkeys; i++)
            out[i].type = J_NONE;
        struct jval v;
        if (*s.p == '{') {
            /* the element's members are captured in the same scan that finds its end */
            const char *start = s.p;
            struct capture cap = {keys, out, nkeys, 0, false};
            if (scan_object(&s, &cap) != 0)
                return -1;
            v.type = J_OBJECT;
            v.raw = str_make(start, (size_t)(s.p - start));
        } else if (scan_value(&s, &v, NULL) != 0) {
            return -1;
        }
        int rc = fn(&v, out, ud);
        if (rc)
            return rc;
        ws(&s);
        if (s.p < s.end && *s.p == ',')
            s.p++;
    }
}

static const char *skip_ws(const char *c, const char *end)
{
    while (c < end && (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r'))
        c++;
    return c;
}

bool jscan_may_have_object(const char *text, size_t len, const char *const *keys)
{
    size_t klen[8], nk = 0;
    for (; keys[nk] && nk < 8; nk++)
        klen[nk] = strlen(keys[nk]);
    const char *p = text, *end = text + len;
    /* Quote by quote (memchr runs a vector at a time): a member name is a quote, the key, a quote. */
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL || q + 1 >= end)
            return false;
        p = q + 1;
        for (size_t k = 0; k < nk; k++) {
            size_t kn = klen[k];
            if (*p != keys[k][0] || (size_t)(end - p) < kn + 1 || p[kn] != '"' || memcmp(p, keys[k], kn) != 0)
                continue;
            const char *c = skip_ws(p + kn + 1, end);
            if (c >= end)
                return true; /* cut short here: cannot tell */
            if (*c == ':') {
                c = skip_ws(c + 1, end);
                if (c >= end || *c == '{')
                    return true;
            }
            p += kn + 1; /* past the key's closing quote */
            break;
        }
    }
    return false;
}

static bool jws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The key set of jscan_event_scan: at most 8 keys (NULL-terminated), each at most 63 bytes and without a quote.
 * No lengths are taken up front: most events have one or two '{' that follow a member name. */
struct keyset {
    const char *const *keys; /* NULL: none */
};

static void keyset_init(struct keyset *ks, const char *const *keys)
{
    ks->keys = keys && keys[0] ? keys : NULL;
}

/* The keys whose member value the '{' at text[i] may be: stepping back from it over whitespace, a ':', whitespace,
 * then `"key"`. Only the whitespace runs before this '{' and before its ':' are walked, and each belongs to this
 * '{' alone, then at most 64 bytes back to the quote before the name, so a whole scan stays linear. */
static unsigned object_key_hits(const char *text, size_t start, size_t i, const struct keyset *ks)
{
    size_t j = i;
    while (j > start && jws(text[j - 1]))
        j--;
    if (j == start || text[j - 1] != ':')
        return 0;
    j--;
    while (j > start && jws(text[j - 1]))
        j--;
    if (j == start || text[j - 1] != '"')
        return 0;
    j--; /* text[j]: the quote after the name */
    size_t q = j, lim = j - start > 64 ? j - 64 : start;
    while (q > lim && text[q - 1] != '"')
        q--;
    if (q == start || text[q - 1] != '"') /* no quote before the name within reach: not one of the keys */
        return 0;
    size_t kn = j - q; /* the name: text[q, j), a quote before it (no key has one inside) */
    unsigned hits = 0;
    for (size_t k = 0; k < 8 && ks->keys[k]; k++) {
        const char *key = ks->keys[k];
        size_t t = 0;
        while (t < kn && key[t] != '\0' && key[t] == text[q + t])
            t++;
        if (t == kn && key[kn] == '\0')
            hits |= 1u << k;
    }
    return hits;
}

/* Nesting deeper than 64: the full validation decides, and jscan_may_have_object names the keys. */
static int deep_fallback(const char *text, size_t len, const struct keyset *ks, unsigned *hits)
{
    if (hits) {
        *hits = 0;
        for (size_t k = 0; ks->keys && k < 8 && ks->keys[k]; k++)
            if (jscan_may_have_object(text, len, (const char *const[]){ks->keys[k], NULL}))
                *hits |= 1u << k;
    }
    return jscan_validate(text, len, NULL, NULL);
}

static int structure_bytes(const char *text, size_t len, const struct keyset *ks, unsigned *hits)
{
    const char *p = text, *e = text + len;
    while (p < e && jws(*p))
        p++;
    while (e > p && jws(e[-1]))
        e--;
    if (p == e || (*p != '{' && *p != '['))
        return -1;
    const char *start = p;
    uint64_t stack = 0; /* bit i: level i+1 is an array */
    unsigned depth = 0;
    while (p < e) {
        char c = *p++;
        if (c == '"') {
            for (;;) { /* to the closing quote: one not preceded by an odd run of backslashes */
                const char *q = memchr(p, '"', (size_t)(e - p));
                if (q == NULL)
                    return -1;
                size_t bs = 0;
                while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
                    bs++;
                p = q + 1;
                if ((bs & 1) == 0)
                    break;
            }
        } else if (c == '\\') {
            return -1; /* never outside a string in JSON */
        } else if (c == '{' || c == '[') {
            if (depth == 64)
                return deep_fallback(text, len, ks, hits);
            if (c == '{' && ks->keys)
                *hits |= object_key_hits(text, (size_t)(start - text), (size_t)(p - 1 - text), ks);
            stack = (stack << 1) | (c == '[');
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0 || (stack & 1) != (uint64_t)(c == ']'))
                return -1;
            stack >>= 1;
            if (--depth == 0)
                return p == e ? 0 : -1; /* the value ends at the last byte */
        }
    }
    return -1; /* unclosed */
}

int jscan_structure_ok_bytes(const char *text, size_t len)
{
    struct keyset none = {0};
    return structure_bytes(text, len, &none, NULL);
}

int jscan_event_scan_bytes(const char *text, size_t len, const char *const *keys, unsigned *hits)
{
    struct keyset ks;
    keyset_init(&ks, keys);
    *hits = 0;
    int rc = structure_bytes(text, len, &ks, hits);
    if (rc != 0)
        *hits = 0;
    return rc;
}

struct block_masks {
    uint64_t quote, bslash, bracket; /* bit i: block[i] is " / \ / (SSE2: may be) one of { } [ ] */
};

/* The masks of a 64-byte block. With SSE2 the bracket mask is one AND and one compare: the bytes that equal 0x59
 * under mask 0xD9 are { } [ ] and Y _ y DEL; the scan looks at the byte before it counts one. */
static inline void block_masks64(const char *b, struct block_masks *m)
{
#if defined(__SSE2__)
    m->quote = m->bslash = m->bracket = 0;
    const __m128i dq = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\'), bm = _mm_set1_epi8((char)0xD9),
                  bv = _mm_set1_epi8(0x59);
    for (unsigned k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + 16 * k));
        m->quote |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, dq)) << (16 * k);
        m->bslash |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, bs)) << (16 * k);
        __m128i br = _mm_cmpeq_epi8(_mm_and_si128(v, bm), bv);
        m->bracket |= (uint64_t)(unsigned)_mm_movemask_epi8(br) << (16 * k);
    }
#else
    m->quote = m->bslash = m->bracket = 0;
    for (unsigned i = 0; i < 64; i++) {
        char c = b[i];
        m->quote |= (uint64_t)(c == '"') << i;
        m->bslash |= (uint64_t)(c == '\\') << i;
        m->bracket |= (uint64_t)(c == '{' || c == '}' || c == '[' || c == ']') << i;
    }
#endif
}

/* Whether one of the 32 bytes at p is a quote. */
static inline bool quote_in32(const char *p)
{
#if defined(__SSE2__)
    const __m128i dq = _mm_set1_epi8('"');
    __m128i a = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)p), dq);
    __m128i b = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)), dq);
    return _mm_movemask_epi8(_mm_or_si128(a, b)) != 0;
#else
    return memchr(p, '"', 32) != NULL;
#endif
}

/* structure_bytes' answer, 64 bytes at a time, without visiting the bytes of strings: the block's quotes,
 * backslashes and brackets come as bit masks; the escaped bytes follow from the backslashes (a short loop, only
 * in blocks that have one); the bytes inside strings are the prefix XOR of the unescaped quotes; and only the
 * brackets outside strings are visited, to match them (and, for jscan_event_scan, to look back from each '{' for
 * a wanted key). A backslash outside a string is refused, as the reference refuses it (none is valid JSON),
 * which is also what makes the escapes computable before the strings are known: up to the first backslash
 * outside a string both ways agree. Inlined into its two callers, so that the structure-only one has no key
 * code at all. */
static inline __attribute__((always_inline)) int structure_blocks(const char *text, size_t len,
                                                                  const struct keyset *ks, unsigned *hits)
{
    size_t p = 0, e = len;
    while (p < e && jws(text[p]))
        p++;
    while (e > p && jws(text[e - 1]))
        e--;
    if (p == e || (text[p] != '{' && text[p] != '['))
        return -1;
    const size_t start = p;
    uint64_t stack = 0; /* bit i: level i+1 is an array */
    unsigned depth = 0;
    uint64_t in_str = 0, esc_carry = 0; /* from the block before: inside a string; its first byte escaped */
    for (size_t blk = p, next; blk < e; blk = next) {
        next = blk + 64;
        char tail[64];
        const char *b = text + blk;
        uint64_t live = ~(uint64_t)0;
        if (e - blk < 64) {
            memset(tail, ' ', sizeof(tail));
            memcpy(tail, b, e - blk);
            b = tail;
            live = ((uint64_t)1 << (e - blk)) - 1;
        }
        struct block_masks m;
        block_masks64(b, &m);
        m.quote &= live;
        m.bslash &= live;
        m.bracket &= live;
        uint64_t escaped = esc_carry;
        esc_carry = 0;
        for (uint64_t bs = m.bslash; bs; bs &= bs - 1) {
            unsigned i = (unsigned)__builtin_ctzll(bs);
            if (escaped & ((uint64_t)1 << i))
                continue;
            if (i == 63)
                esc_carry = 1;
            else
                escaped |= (uint64_t)1 << (i + 1);
        }
        uint64_t r = m.quote & ~escaped; /* after the prefix XOR, bit i: inside a string (opening quote included) */
        r ^= r << 1;
        r ^= r << 2;
        r ^= r << 4;
        r ^= r << 8;
        r ^= r << 16;
        r ^= r << 32;
        r ^= in_str;
        in_str = (uint64_t)0 - (r >> 63);
        if (m.bslash & ~r & ~escaped) /* a backslash outside a string */
            return -1;
        for (uint64_t br = m.bracket & ~r; br; br &= br - 1) {
            unsigned i = (unsigned)__builtin_ctzll(br);
            char c = b[i];
            if (c == '{' || c == '[') {
                if (depth == 64)
                    return deep_fallback(text, len, ks, hits);
                if (c == '{' && ks->keys && blk + i > start)
                    *hits |= object_key_hits(text, start, blk + i, ks);
                stack = (stack << 1) | (c == '[');
                depth++;
            } else if (c == '}' || c == ']') {
                if (depth == 0 || (stack & 1) != (uint64_t)(c == ']'))
                    return -1;
                stack >>= 1;
                if (--depth == 0)
                    return blk + i + 1 == e ? 0 : -1; /* the value ends at the last byte */
            }
        }
        if (in_str && next < e && e - next > 32 && !quote_in32(text + next)) {
            /* The block ends inside a string that goes on for more than 32 bytes (a message's text): its closing
             * quote is found with memchr (a vector at a time, the bytes of the string not classified), as the
             * reference finds it, and the blocks go on after it. The first byte of the rest is escaped when
             * esc_carry says so; from there a run of backslashes before a quote starts fresh, so its length
             * decides whether the quote is escaped. A short string is left to the next block, which costs less
             * than a call. */
            size_t from = next + (size_t)esc_carry;
            for (;;) {
                const char *q = from < e ? memchr(text + from, '"', e - from) : NULL;
                if (q == NULL)
                    return -1; /* the string never closes */
                size_t qi = (size_t)(q - text), bs = 0;
                while (qi - bs > from && text[qi - 1 - bs] == '\\')
                    bs++;
                from = qi + 1;
                if ((bs & 1) == 0)
                    break;
            }
            next = from;
            in_str = 0;
            esc_carry = 0;
        }
    }
    return -1; /* unclosed */
}

int jscan_structure_ok(const char *text, size_t len)
{
    static const struct keyset none = {0};
    return structure_blocks(text, len, &none, NULL);
}

int jscan_event_scan(const char *text, size_t len, const char *const *keys, unsigned *hits)
{
    struct keyset ks;
    keyset_init(&ks, keys);
    *hits = 0;
    int rc = structure_blocks(text, len, &ks, hits);
    if (rc != 0)
        *hits = 0;
    return rc;
}
