/* h1_resp.c: the native upstream client's response parser (net/h1_resp.h). */
#include "net/h1_resp.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/timeutil.h"

/* ---------- the response parser ---------- */

static int deliver(struct h1_resp *r, const char *data, size_t len)
{
    struct up_xfer *x = r->x;
    if (x->cb.on_data == NULL) {
        x->bytes_in += len;
        return UP_DATA_OK;
    }
    x->in_callback = true;
    int rc = x->cb.on_data(x, data, len, x->ud);
    x->in_callback = false;
    if (x->cancelled)
        return UP_DATA_ABORT;
    if (rc == UP_DATA_PAUSE) {
        x->paused = true;
        return UP_DATA_PAUSE;
    }
    if (rc != UP_DATA_OK) {
        r->error = "Failure writing output to destination";
        r->result = UP_E_ABORTED;
        return UP_DATA_ABORT;
    }
    x->bytes_in += len;
    return UP_DATA_OK;
}

static int hdr_append(struct h1_resp *r, const char *p, size_t n)
{
    if (buf_append(&r->x->resp_headers, p, n) == 0)
        return 0;
    r->error = "Response headers larger than 65536 bytes";
    r->result = UP_E_TOO_LARGE;
    return -1;
}

static int on_p_message_begin(http_parser *p)
{
    struct h1_resp *r = p->data;
    buf_reset(&r->x->resp_headers); /* after a 1xx: only the final response's headers are kept */
    r->hstate = 0;
    return 0;
}

static int on_p_header_field(http_parser *p, const char *at, size_t n)
{
    struct h1_resp *r = p->data;
    if (r->hstate == 2 && hdr_append(r, "\r\n", 2) != 0)
        return -1;
    r->hstate = 1;
    return hdr_append(r, at, n);
}

static int on_p_header_value(http_parser *p, const char *at, size_t n)
{
    struct h1_resp *r = p->data;
    if (r->hstate == 1 && hdr_append(r, ": ", 2) != 0)
        return -1;
    r->hstate = 2;
    return hdr_append(r, at, n);
}

static int on_p_headers_complete(http_parser *p)
{
    struct h1_resp *r = p->data;
    struct up_xfer *x = r->x;
    if (r->hstate == 2 && hdr_append(r, "\r\n", 2) != 0)
        return -1;
    r->hstate = 0;
    if (p->status_code < 100) {
        r->error = "Invalid HTTP response from the server: status code below 100";
        r->result = UP_E_PROTOCOL;
        return -1;
    }
    if (p->status_code > 599) {
        r->error = "Invalid HTTP response from the server: status code above 599";
        r->result = UP_E_PROTOCOL;
        return -1;
    }
    if (p->status_code < 200) {
        if (p->status_code == 101) {
            r->error = "Unexpected 101 Switching Protocols from the server";
            r->result = UP_E_PROTOCOL;
            return -1;
        }
        return 0; /* 100, 102, 103: the final response follows */
    }
    x->status = p->status_code;
    x->headers_done = true;
    x->t_headers_us = time_mono_us();
    if (x->cb.on_headers) {
        x->in_callback = true;
        x->cb.on_headers(x, x->ud);
        x->in_callback = false;
        if (x->cancelled)
            return -1;
    }
    return 0;
}

static int on_p_body(http_parser *p, const char *at, size_t n)
{
    struct h1_resp *r = p->data;
    struct up_xfer *x = r->x;
    if (!x->headers_done) {
        r->error = "Invalid HTTP response from the server: a 1xx response with a body";
        r->result = UP_E_PROTOCOL;
        return -1;
    }
    if (!x->t_first_byte_us)
        x->t_first_byte_us = time_mono_us();
    int rc = deliver(r, at, n);
    if (rc == UP_DATA_OK)
        return 0;
    if (rc == UP_DATA_PAUSE) {
        /* http-parser counts these bytes as consumed: keep them to deliver again on resume */
        buf_reset(&r->pending);
        buf_append(&r->pending, at, n);
        http_parser_pause(p, 1);
        return 0;
    }
    return -1;
}

static int on_p_message_complete(http_parser *p)
{
    struct h1_resp *r = p->data;
    if (p->status_code < 200)
        return 0;
    r->complete = true;
    r->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1); /* whatever follows is not part of this response */
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = on_p_message_begin,
    .on_header_field = on_p_header_field,
    .on_header_value = on_p_header_value,
    .on_headers_complete = on_p_headers_complete,
    .on_body = on_p_body,
    .on_message_complete = on_p_message_complete,
};

void h1_resp_init(struct h1_resp *r, struct up_xfer *x)
{
    struct buf pending = r->pending, stash = r->stash;
    memset(r, 0, sizeof(*r));
    r->pending = pending; /* the allocations are kept across the transfers of one connection */
    r->stash = stash;
    if (r->pending.max == 0)
        buf_init(&r->pending, BUF_UNBOUNDED);
    if (r->stash.max == 0)
        buf_init(&r->stash, BUF_UNBOUNDED);
    buf_reset(&r->pending);
    buf_reset(&r->stash);
    r->x = x;
    http_parser_init(&r->p, HTTP_RESPONSE);
    r->p.data = r;
}

void h1_resp_free(struct h1_resp *r)
{
    buf_free(&r->pending);
    buf_free(&r->stash);
}

/* One http_parser_execute over data and what it means. from_stash: data is r->stash itself. */
static int resp_parse(struct h1_resp *r, const char *data, size_t len, bool from_stash)
{
    struct up_xfer *x = r->x;
    size_t n = http_parser_execute(&r->p, &resp_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->p);
    if (x->cancelled)
        return H1_RESP_CANCELLED;
    if (e != HPE_OK && e != HPE_PAUSED) {
        if (r->error == NULL) {
            snprintf(x->errbuf, sizeof(x->errbuf), "Invalid HTTP response from the server: %s",
                     http_errno_description(e));
            r->error = x->errbuf;
            r->result = UP_E_PROTOCOL;
        }
        return H1_RESP_FAILED;
    }
    if (r->error)
        return H1_RESP_FAILED; /* a callback refused it (headers too large, an abort) */
    if (r->complete) {
        r->trailing = n < len;
        if (from_stash)
            buf_reset(&r->stash);
        return H1_RESP_COMPLETE;
    }
    if (x->paused) {
        /* What was read and not parsed waits for resume: at most one read's worth, as reading stops. */
        if (from_stash) {
            buf_consume(&r->stash, n);
        } else {
            buf_reset(&r->stash);
            buf_append(&r->stash, data + n, len - n);
        }
        return H1_RESP_PAUSED;
    }
    if (from_stash)
        buf_reset(&r->stash);
    return H1_RESP_MORE;
}

int h1_resp_feed(struct h1_resp *r, const char *data, size_t len)
{
    if (r->error)
        return H1_RESP_FAILED;
    if (r->complete)
        return H1_RESP_COMPLETE;
    if (r->x->paused)
        return H1_RESP_PAUSED; /* never fed while paused: the connection stops reading */
    return resp_parse(r, data, len, false);
}

int h1_resp_eof(struct h1_resp *r)
{
    if (r->error)
        return H1_RESP_FAILED;
    if (r->complete)
        return H1_RESP_COMPLETE;
    struct up_xfer *x = r->x;
    bool started = r->p.nread > 0 || r->p.http_major > 0 || x->headers_done;
    unsigned flags = r->p.flags;
    uint64_t left = r->p.content_length;
    http_parser_execute(&r->p, &resp_settings, NULL, 0);
    if (r->complete)
        return H1_RESP_COMPLETE;
    if (r->error)
        return H1_RESP_FAILED;
    r->result = x->headers_done ? UP_E_RESET : UP_E_RESET_BEFORE_HEADERS;
    if (!x->headers_done && !started) {
        r->error = "Empty reply from server";
    } else if (!x->headers_done) {
        r->error = "Connection closed before the end of the response headers";
    } else if (!(flags & F_CHUNKED) && left != ULLONG_MAX && left > 0) {
        snprintf(x->errbuf, sizeof(x->errbuf), "transfer closed with %llu bytes remaining to read",
                 (unsigned long long)left);
        r->error = x->errbuf;
    } else {
        r->error = "transfer closed with outstanding read data remaining";
    }
    return H1_RESP_FAILED;
}

int h1_resp_resume(struct h1_resp *r)
{
    struct up_xfer *x = r->x;
    if (!x->paused)
        return H1_RESP_MORE;
    x->paused = false;
    if (r->pending.len) {
        int rc = deliver(r, r->pending.data, r->pending.len);
        if (rc == UP_DATA_PAUSE)
            return H1_RESP_PAUSED; /* held again as it is */
        if (rc != UP_DATA_OK)
            return x->cancelled ? H1_RESP_CANCELLED : H1_RESP_FAILED;
        buf_reset(&r->pending);
    }
    http_parser_pause(&r->p, 0);
    if (r->stash.len == 0)
        return H1_RESP_MORE;
    return resp_parse(r, r->stash.data, r->stash.len, true);
}
