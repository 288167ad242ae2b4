/* loopback.h: an exchange sink with no socket behind it (the unit tests' consumer). It records the response
 * head, headers and bytes; a test can make it report "consumer gone" or hold back (pending bytes). */
#ifndef AGENTD_TEST_LOOPBACK_H
#define AGENTD_TEST_LOOPBACK_H

#include <string.h>

#include "common/buf.h"
#include "gateway/exchange.h"

struct loopback {
    struct exchange *ex; /* from bind: valid until end */
    int status;
    bool stream;
    int heads, writes, ends;
    struct buf hdrs, body;
    bool gone;           /* write() answers -1 */
    size_t pending;      /* what pending() reports */
    void (*on_write)(struct loopback *lb); /* test hook, after each write */
    void (*on_end)(struct loopback *lb);   /* test hook, at end */
    void *ud;
};

static void lb_bind(void *sink, struct exchange *ex)
{
    ((struct loopback *)sink)->ex = ex;
}

static void lb_head(void *sink, int status, const struct buf *hdrs, bool stream)
{
    struct loopback *lb = sink;
    lb->heads++;
    lb->status = status;
    lb->stream = stream;
    if (hdrs->len)
        buf_append(&lb->hdrs, hdrs->data, hdrs->len);
}

static int lb_write(void *sink, const void *data, size_t len)
{
    struct loopback *lb = sink;
    if (lb->gone)
        return -1;
    lb->writes++;
    buf_append(&lb->body, data, len);
    if (lb->on_write)
        lb->on_write(lb);
    return 0;
}

static void lb_end(void *sink)
{
    struct loopback *lb = sink;
    lb->ends++;
    lb->ex = NULL;
    if (lb->on_end)
        lb->on_end(lb);
}

static size_t lb_pending(void *sink)
{
    return ((struct loopback *)sink)->pending;
}

static const struct ex_sink_ops loopback_ops = {
    .head = lb_head, .write = lb_write, .end = lb_end, .pending = lb_pending, .bind = lb_bind};

static inline void lb_init(struct loopback *lb)
{
    memset(lb, 0, sizeof(*lb));
    buf_init(&lb->hdrs, BUF_UNBOUNDED);
    buf_init(&lb->body, BUF_UNBOUNDED);
    buf_append(&lb->hdrs, "", 0);
    buf_append(&lb->body, "", 0);
}

static inline void lb_free(struct loopback *lb)
{
    buf_free(&lb->hdrs);
    buf_free(&lb->body);
}

/* The value of a response header the exchange handed to head() (first match, exact name), or NULL. */
static inline const char *lb_header(const struct loopback *lb, const char *name)
{
    static char out[256];
    size_t n = strlen(name);
    const char *p = lb->hdrs.data;
    while (p && *p) {
        const char *nl = strstr(p, "\r\n");
        if (nl == NULL)
            break;
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            size_t len = (size_t)(nl - p) - n - 2;
            if (len >= sizeof(out))
                len = sizeof(out) - 1;
            memcpy(out, p + n + 2, len);
            out[len] = '\0';
            return out;
        }
        p = nl + 2;
    }
    return NULL;
}

#endif
