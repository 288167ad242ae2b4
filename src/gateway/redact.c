#include "gateway/redact.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_config.h"

struct redact_set {
    char **s;
    size_t *len;
    size_t n, cap;
};

struct redact_set *redact_set_new(void)
{
    return xcalloc(1, sizeof(struct redact_set));
}

void redact_set_free(struct redact_set *rs)
{
    if (rs == NULL)
        return;
    for (size_t i = 0; i < rs->n; i++) {
        volatile char *p = rs->s[i]; /* scrub the secret before returning the memory */
        while (*p)
            *p++ = 0;
        xfree(rs->s[i]);
    }
    xfree(rs->s);
    xfree(rs->len);
    xfree(rs);
}

static void add_n(struct redact_set *rs, const char *p, size_t n)
{
    if (n < REDACT_MIN_LEN)
        return;
    for (size_t i = 0; i < rs->n; i++)
        if (rs->len[i] == n && memcmp(rs->s[i], p, n) == 0)
            return;
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 8;
        rs->s = xrealloc(rs->s, rs->cap * sizeof(*rs->s));
        rs->len = xrealloc(rs->len, rs->cap * sizeof(*rs->len));
    }
    char *c = xmalloc(n + 1);
    memcpy(c, p, n);
    c[n] = '\0';
    rs->s[rs->n] = c;
    rs->len[rs->n++] = n;
}

void redact_set_add(struct redact_set *rs, const char *secret)
{
    if (rs && secret)
        add_n(rs, secret, strlen(secret));
}

size_t redact_set_count(const struct redact_set *rs)
{
    return rs ? rs->n : 0;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

void redact_set_add_header(struct redact_set *rs, const char *line)
{
    const char *colon = line ? strchr(line, ':') : NULL;
    if (rs == NULL || colon == NULL || !gw_config_header_is_secret(line, (size_t)(colon - line)))
        return;
    const char *v = colon + 1, *end = v + strlen(v);
    while (v < end && is_ws(*v))
        v++;
    while (end > v && is_ws(end[-1]))
        end--;
    add_n(rs, v, (size_t)(end - v));
    /* "Bearer sk-...", "Basic ...": the credential alone is what an upstream would quote */
    const char *sp = end;
    while (sp > v && !is_ws(sp[-1]))
        sp--;
    if (sp > v)
        add_n(rs, sp, (size_t)(end - sp));
}

/* First occurrence of the REDACT_MIN_LEN bytes at k in t[0..n), or NULL. O(n * REDACT_MIN_LEN). */
static const char *find8(const char *t, size_t n, const char *k)
{
    for (size_t i = 0; i + REDACT_MIN_LEN <= n; i++) {
        const char *p = memchr(t + i, k[0], n - i - REDACT_MIN_LEN + 1);
        if (p == NULL)
            return NULL;
        if (memcmp(p, k, REDACT_MIN_LEN) == 0)
            return p;
        i = (size_t)(p - t);
    }
    return NULL;
}

/* Marks in cov the bytes of t that belong to a secret or to a long enough fragment of one. Each pass is linear in
 * n: a forward match skips past what it covered, a backward match stops at covered bytes. */
static void mark(const struct redact_set *rs, const char *t, size_t n, unsigned char *cov)
{
    for (size_t s = 0; s < rs->n; s++) {
        const char *k = rs->s[s];
        size_t L = rs->len[s];
        bool frag = L > REDACT_FRAGMENT_ABOVE;
        /* the whole secret, or (long ones) a leading fragment */
        size_t i = 0;
        const char *hit;
        while (i < n && (hit = find8(t + i, n - i, k)) != NULL) {
            size_t at = (size_t)(hit - t), m = REDACT_MIN_LEN;
            while (m < L && at + m < n && t[at + m] == k[m])
                m++;
            if (m == L || frag) {
                memset(cov + at, 1, m);
                i = at + m;
            } else {
                i = at + 1;
            }
        }
        if (!frag)
            continue;
        /* a trailing fragment ("...wxyz1234"), extended backwards as far as it keeps matching */
        const char *tail = k + L - REDACT_MIN_LEN;
        i = 0;
        while (i < n && (hit = find8(t + i, n - i, tail)) != NULL) {
            size_t at = (size_t)(hit - t), b = at, kk = L - REDACT_MIN_LEN;
            while (b > 0 && kk > 0 && !cov[b - 1] && t[b - 1] == k[kk - 1]) {
                b--;
                kk--;
            }
            memset(cov + b, 1, at + REDACT_MIN_LEN - b);
            i = at + 1;
        }
    }
}

size_t redact_append(const struct redact_set *rs, const char *text, size_t n, struct buf *out)
{
    if (rs == NULL || rs->n == 0 || n < REDACT_MIN_LEN) {
        buf_append(out, text, n);
        return 0;
    }
    unsigned char stack[2048];
    unsigned char *cov = n <= sizeof(stack) ? stack : xmalloc(n);
    memset(cov, 0, n);
    mark(rs, text, n, cov);
    size_t spans = 0;
    for (size_t i = 0; i < n;) {
        if (!cov[i]) {
            size_t j = i;
            while (j < n && !cov[j])
                j++;
            buf_append(out, text + i, j - i);
            i = j;
        } else {
            while (i < n && cov[i])
                i++;
            buf_append_str(out, REDACT_MARK);
            spans++;
        }
    }
    if (cov != stack)
        xfree(cov);
    return spans;
}

size_t redact_cstr(const struct redact_set *rs, char *s, size_t cap)
{
    if (rs == NULL || rs->n == 0 || cap == 0)
        return 0;
    size_t n = strnlen(s, cap - 1);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    size_t spans = redact_append(rs, s, n, &out);
    if (spans) {
        size_t m = out.len < cap - 1 ? out.len : cap - 1;
        memcpy(s, out.data, m);
        s[m] = '\0';
    }
    buf_free(&out);
    return spans;
}

void redact_upstream_error(const struct redact_set *rs, const char *deployment, struct gw_error *err)
{
    redact_cstr(rs, err->message, sizeof(err->message));
    redact_cstr(rs, err->code, sizeof(err->code));
    redact_cstr(rs, err->param, sizeof(err->param));
    if (!err->from_upstream || (err->status != 401 && err->status != 403))
        return;
    /* The upstream refused agentd's credentials (or its account's rights): that is the gateway's failure, not the
     * client's; a 401 relayed as is would tell the client its own key is wrong. */
    struct buf msg = BUF_INIT(BUF_UNBOUNDED);
    buf_printf(&msg, "upstream authentication failed at deployment %s (HTTP %d): %s", deployment ? deployment : "-",
               err->status, err->message);
    size_t n = msg.len < sizeof(err->message) - 1 ? msg.len : sizeof(err->message) - 1;
    memcpy(err->message, msg.data, n);
    err->message[n] = '\0';
    buf_free(&msg);
    err->status = 502;
    err->type = GW_ERR_API;
    snprintf(err->code, sizeof(err->code), "upstream_authentication_failed");
    err->param[0] = '\0';
    err->retryable = true; /* another deployment has other credentials */
}
