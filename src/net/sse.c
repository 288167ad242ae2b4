#include "net/sse.h"

#include <string.h>

void sse_parser_init(struct sse_parser *p, size_t max_event, sse_event_fn *fn, void *ud)
{
    memset(p, 0, sizeof(*p));
    buf_init(&p->line, max_event);
    buf_init(&p->data, max_event);
    buf_init(&p->event, 256);
    buf_init(&p->id, 1024);
    p->retry_ms = -1;
    p->max_event = max_event;
    p->fn = fn;
    p->ud = ud;
}

void sse_parser_free(struct sse_parser *p)
{
    buf_free(&p->line);
    buf_free(&p->data);
    buf_free(&p->event);
    buf_free(&p->id);
}

static int dispatch(struct sse_parser *p)
{
    int rc = 0;
    /* As the spec says, an event without any data line is not dispatched. */
    if (p->has_data) {
        struct sse_event ev = {
            str_make(p->event.data ? p->event.data : "", p->event.len),
            str_make(p->data.data ? p->data.data : "", p->data.len),
            str_make(p->id.data ? p->id.data : "", p->id.len),
            p->retry_ms,
        };
        rc = p->fn(&ev, p->ud);
    }
    buf_reset(&p->data);
    buf_reset(&p->event);
    p->has_data = false;
    p->retry_ms = -1;
    return rc;
}

static int process_line(struct sse_parser *p, const char *line, size_t n)
{
    if (n == 0)
        return dispatch(p);
    if (line[0] == ':')
        return 0; /* comment (keep-alive pings) */
    const char *colon = memchr(line, ':', n);
    size_t flen = colon ? (size_t)(colon - line) : n;
    const char *val = colon ? colon + 1 : line + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && *val == ' ') {
        val++;
        vlen--;
    }
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        if (p->has_data && buf_append_char(&p->data, '\n') != 0)
            return -1;
        if (buf_append(&p->data, val, vlen) != 0)
            return -1;
        p->has_data = true;
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        buf_reset(&p->event);
        if (buf_append(&p->event, val, vlen) != 0)
            return -1;
    } else if (flen == 2 && memcmp(line, "id", 2) == 0) {
        if (memchr(val, '\0', vlen) == NULL) {
            buf_reset(&p->id);
            if (buf_append(&p->id, val, vlen) != 0)
                return -1;
        }
    } else if (flen == 5 && memcmp(line, "retry", 5) == 0) {
        long v = 0;
        bool okv = vlen > 0 && vlen < 10;
        for (size_t i = 0; okv && i < vlen; i++) {
            if (val[i] < '0' || val[i] > '9')
                okv = false;
            else
                v = v * 10 + (val[i] - '0');
        }
        if (okv)
            p->retry_ms = v;
    }
    return 0;
}

static int feed_lines(struct sse_parser *p, const char *data, size_t len);

int sse_feed(struct sse_parser *p, const char *data, size_t len)
{
    static const unsigned char bom[3] = {0xef, 0xbb, 0xbf};
    size_t i = 0;
    /* A UTF-8 BOM may open the stream, split across fragments like anything else. */
    while (!p->bom_checked && i < len) {
        if ((unsigned char)data[i] == bom[p->bom_seen]) {
            i++;
            if (++p->bom_seen == 3)
                p->bom_checked = true;
            continue;
        }
        /* not a BOM after all: the bytes that looked like one are data */
        p->bom_checked = true;
        if (p->bom_seen) {
            int rc = feed_lines(p, (const char *)bom, p->bom_seen);
            if (rc)
                return rc;
        }
    }
    return i < len ? feed_lines(p, data + i, len - i) : 0;
}

static int feed_lines(struct sse_parser *p, const char *data, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (p->saw_cr) {
            p->saw_cr = false;
            if (data[i] == '\n') {
                i++;
                continue;
            }
        }
        /* find the next line end: LF, CR or CRLF (memchr runs a word or a vector at a time) */
        const char *lf = memchr(data + i, '\n', len - i);
        size_t j = lf ? (size_t)(lf - data) : len;
        const char *cr = memchr(data + i, '\r', j - i);
        if (cr)
            j = (size_t)(cr - data);
        if (j == len) {
            if (buf_append(&p->line, data + i, len - i) != 0)
                return -1;
            return 0;
        }
        int rc;
        if (p->line.len) {
            if (buf_append(&p->line, data + i, j - i) != 0)
                return -1;
            rc = process_line(p, p->line.data, p->line.len);
            buf_reset(&p->line);
        } else {
            rc = process_line(p, data + i, j - i);
        }
        if (data[j] == '\r')
            p->saw_cr = true;
        i = j + 1;
        if (rc)
            return rc;
        if (p->data.len > p->max_event)
            return -1;
    }
    return 0;
}

void sse_finish(struct sse_parser *p)
{
    buf_reset(&p->line);
    buf_reset(&p->data);
    buf_reset(&p->event);
    p->has_data = false;
}

int sse_append_event(struct buf *out, const char *name, const char *data, size_t len)
{
    if (name && buf_printf(out, "event: %s\n", name) != 0)
        return -1;
    size_t i = 0;
    do {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (data + i)) : len - i;
        if (buf_append(out, "data: ", 6) != 0 || buf_append(out, data + i, n) != 0 || buf_append_char(out, '\n') != 0)
            return -1;
        i += n + (nl ? 1 : 0);
    } while (i < len);
    return buf_append_char(out, '\n');
}
