/* libFuzzer: the egress proxy's request-head parser (sandbox/sbx_egress.c), the bytes a sandboxed program sends to
 * its HTTP proxy. Besides memory safety, checks what the proxy relies on:
 *   - an accepted head lies within the input and the limit, ends with its empty line, names a lower-case host of
 *     the allowed bytes and a port; a FORWARD head for the origin ends with "Connection: close" and the empty line,
 *     and carries no Proxy-* or Connection header of the client's;
 *   - the result never depends on how the bytes were split across reads: a prefix that is accepted or refused
 *     stays so with every longer input (the proxy parses again as bytes come), and nothing is written to the
 *     origin head unless the result is 0. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "sandbox/sbx_egress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prefixes of inputs up to this size are all parsed; longer inputs get a few split points. */
#define ALL_PREFIXES_MAX 512

struct result {
    int rc;
    struct sbx_egress_req req;
    struct buf origin;
};

static bool host_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == ':'))
            return false;
    }
    return true;
}

/* Does the origin head hold a header line named name (case-insensitive) after its request line? */
static bool has_header(const struct buf *o, const char *name)
{
    size_t nl = strlen(name);
    const char *p = strstr(o->data, "\r\n");
    while (p && p + 2 < o->data + o->len) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':')
            return true;
        if (strncasecmp(name, "proxy-", 6) == 0 && strncasecmp(p, "proxy-", 6) == 0)
            return true;
        p = strstr(p, "\r\n");
    }
    return false;
}

static void run(const char *p, size_t n, struct result *r)
{
    const char *why = NULL;
    buf_init(&r->origin, 3 * SBX_EGRESS_HEAD_MAX);
    r->rc = sbx_egress_parse(p, n, &r->req, &r->origin, &why);
    switch (r->rc) {
    case 1:
        if (n >= SBX_EGRESS_HEAD_MAX || r->origin.len != 0)
            abort();
        break;
    case -1:
        if (why == NULL || why[0] == '\0' || r->origin.len != 0)
            abort();
        break;
    case 0: {
        const struct sbx_egress_req *q = &r->req;
        if (q->head_len == 0 || q->head_len > n || q->head_len > SBX_EGRESS_HEAD_MAX || p[q->head_len - 1] != '\n')
            abort();
        if (!host_ok(q->host) || q->port == 0)
            abort();
        if (q->kind == SBX_EGRESS_CONNECT) {
            if (r->origin.len != 0)
                abort();
        } else if (q->kind == SBX_EGRESS_FORWARD) {
            const struct buf *o = &r->origin;
            if (o->len < 4 || memcmp(o->data + o->len - 4, "\r\n\r\n", 4) != 0)
                abort();
            if (o->len < 23 || memcmp(o->data + o->len - 23, "\r\nConnection: close\r\n\r\n", 23) != 0)
                abort();
            if (memchr(o->data, '\0', o->len) || strstr(o->data, "\r\n\r\n") != o->data + o->len - 4)
                abort(); /* one head, no NUL smuggled in */
            /* the only Connection header is ours, and no Proxy-* header or Keep-Alive is left */
            if (has_header(o, "proxy-x") || has_header(o, "keep-alive"))
                abort();
            const char *conn = strcasestr(o->data, "\r\nconnection:");
            if (conn != o->data + o->len - 23)
                abort();
            /* one Host, ours, right after the request line (the client's is replaced) */
            const char *host = strcasestr(o->data, "\r\nhost:");
            if (host == NULL || host != strstr(o->data, "\r\n") || strcasestr(host + 2, "\r\nhost:"))
                abort();
        } else {
            abort();
        }
        break;
    }
    default:
        abort();
    }
}

/* A shorter input's definite answer must be the longer one's too. */
static void same(const struct result *a, const struct result *b)
{
    if (a->rc == 1)
        return;
    if (a->rc != b->rc)
        abort();
    if (a->rc == 0 && (a->req.kind != b->req.kind || a->req.port != b->req.port || a->req.head_len != b->req.head_len ||
                       strcmp(a->req.host, b->req.host) != 0 || a->origin.len != b->origin.len ||
                       (a->origin.len && memcmp(a->origin.data, b->origin.data, a->origin.len) != 0)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy: the parser must not read a byte past what it was given (ASan watches the heap copy's end). */
    char *copy = xmemdup(data, size);
    struct result whole;
    run(copy, size, &whole);
    if (size <= ALL_PREFIXES_MAX) {
        for (size_t k = 0; k < size; k++) {
            char *pre = xmemdup(copy, k);
            struct result r;
            run(pre, k, &r);
            same(&r, &whole);
            buf_free(&r.origin);
            xfree(pre);
        }
    } else {
        size_t splits[] = {size / 3, size / 2, size - 1, whole.rc == 0 ? whole.req.head_len : size - 2};
        for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
            char *pre = xmemdup(copy, splits[i]);
            struct result r;
            run(pre, splits[i], &r);
            same(&r, &whole);
            buf_free(&r.origin);
            xfree(pre);
        }
    }
    buf_free(&whole.origin);
    xfree(copy);
    return 0;
}
