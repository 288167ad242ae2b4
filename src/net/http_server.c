#include "net/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"

_Atomic long http_open_connections;
/* The ops listener has its own small budget: probes and scrapes must get through when the API is saturated. */
static _Atomic long ops_open_connections;

#define READ_BUF_SIZE (64 * 1024)

/* One set of options from the creator, shared by the server, its connections and their requests until the last of
 * them lets go (all on one loop: plain counts). */
struct http_opts {
    unsigned refs;
    struct http_options o;
};

static struct http_opts *opts_new(const struct http_options *o)
{
    struct http_opts *op = xcalloc(1, sizeof(*op));
    op->refs = 1;
    op->o = *o;
    return op;
}

static struct http_opts *opts_ref(struct http_opts *op)
{
    op->refs++;
    return op;
}

static void opts_unref(struct http_opts *op)
{
    if (op == NULL || --op->refs > 0)
        return;
    if (op->o.cfg_release)
        op->o.cfg_release(op->o.cfg);
    xfree(op);
}
#define LINGER_MS 2000

struct http_listener {
    uv_tcp_t tcp;
    _Atomic long *open_count;  /* connections of this listener kind, process-wide */
    bool ops;                  /* budget: limits.ops_connections, else limits.connections */
    struct http_server *srv;
    const struct http_router *router;
    const char *name;
    struct http_listener *next;
};

struct http_server {
    uv_loop_t *loop;
    struct http_opts *opts;  /* what new requests get (replaced on reload) */
    char *read_buf;
    bool read_buf_busy;
    struct http_listener *listeners;
    struct http_conn *conns; /* doubly linked */
    size_t nconns;
    /* Open connections with no request in progress, most recently idle first: at the connection limit the
     * oldest of them makes room for a new connection (a probe must not lose to a pile of idle sockets). */
    struct http_conn *idle_head, *idle_tail;
    bool draining;
    time_t date_sec;
    char date[40];
    struct buf scratch; /* response heads are built here (one loop, one response at a time) */
};

enum conn_state { CONN_OPEN, CONN_LINGER, CONN_CLOSING };

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    http_parser parser;
    struct http_server *srv;
    /* Copied from the listener at accept time: a listener closes (drain) before its connections do. */
    const char *lname;
    const struct http_router *router;
    _Atomic long *open_count;
    struct http_opts *opts;             /* limits for this connection's current request */
    struct http_req *cur;          /* request being parsed */
    struct http_req *queue_head;   /* parsed, in order; head is being handled */
    struct http_req *queue_tail;
    unsigned queued;
    enum conn_state state;
    bool reading;                  /* uv_read_start active */
    bool stop_parsing;             /* a fatal protocol error is queued: ignore further input */
    bool header_last_was_value;
    bool handling;                 /* the head request's handler was called and has not finished */
    bool pumping;                  /* conn_pump is on the stack: finishing handlers must not re-enter it */
    bool close_when_done;          /* close after the queue drains (drain, Connection: close, errors) */
    int pending_close_handles;
    size_t pending_write_bytes;
    unsigned nrequests;
    char remote[64];
    struct http_conn *prev, *next;
    struct http_conn *idle_prev, *idle_next;
    bool idle;                     /* on the server's idle list */
};

struct wreq {
    uv_write_t w;
    struct http_req *req;
    struct http_conn *conn;
    size_t len;
    char data[];
};

static const http_parser_settings parser_settings;
static void conn_close(struct http_conn *c);
static void conn_pump(struct http_conn *c);
static void conn_arm_timer(struct http_conn *c);
static void req_unref(struct http_req *r);

/* ---------- small helpers ---------- */

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Site Overloaded";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* http-parser's enum http_method to our HTTP_M_* bits. */
static unsigned method_bit(unsigned m)
{
    switch (m) {
    case HTTP_GET: return HTTP_M_GET;
    case HTTP_HEAD: return HTTP_M_HEAD;
    case HTTP_POST: return HTTP_M_POST;
    case HTTP_PUT: return HTTP_M_PUT;
    case HTTP_DELETE: return HTTP_M_DELETE;
    case HTTP_OPTIONS: return HTTP_M_OPTIONS;
    case HTTP_PATCH: return HTTP_M_PATCH;
    default: return 0;
    }
}

static _Thread_local uint64_t rng_state[2];

static uint64_t rng_next(void)
{
    if (rng_state[0] == 0 && rng_state[1] == 0) {
        if (getrandom(rng_state, sizeof(rng_state), 0) != (ssize_t)sizeof(rng_state) ||
            (rng_state[0] == 0 && rng_state[1] == 0)) {
            rng_state[0] = time_mono_ns() | 1;
            rng_state[1] = (uint64_t)(uintptr_t)&rng_state ^ time_wall_us();
        }
    }
    /* xorshift128+ */
    uint64_t s1 = rng_state[0];
    const uint64_t s0 = rng_state[1];
    rng_state[0] = s0;
    s1 ^= s1 << 23;
    rng_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_state[1] + s0;
}

/* A client-supplied id is kept when it is short and printable without quoting, so it can be echoed in headers
 * and JSON logs as is. */
static bool request_id_ok(struct str v)
{
    if (v.n == 0 || v.n > 64)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' ||
              c == '.' || c == ':' || c == '/' || c == '+' || c == '='))
            return false;
    }
    return true;
}

static void set_request_id(struct http_req *r)
{
    const struct str *h = http_req_header(r, "x-request-id");
    if (h && request_id_ok(*h)) {
        memcpy(r->request_id, h->p, h->n);
        r->request_id[h->n] = '\0';
        return;
    }
    fmt_hex64(r->request_id, rng_next());
    fmt_hex64(r->request_id + 16, rng_next());
    r->request_id[32] = '\0';
}

static const char *date_header(struct http_server *srv)
{
    time_t now = time(NULL);
    if (now != srv->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof(srv->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_sec = now;
    }
    return srv->date;
}

/* ---------- requests ---------- */

/* Created by the parser; owned by the connection queue (one reference) and freed by req_unref when the queue,
 * the handler and every pending write have let go of it. */
static struct http_req *req_new(struct http_conn *c)
{
    /* The header arrays (6 KiB) are filled as headers arrive; zeroing them per request was a third of the
     * instructions a small request cost (callgrind). */
    struct http_req *r = xmalloc(sizeof(*r));
    memset(r, 0, offsetof(struct http_req, headers));
    r->conn = c;
    r->server = c->srv;
    r->listener = c->lname;
    r->opts = opts_ref(c->opts);
    r->cfg = c->opts->o.cfg;
    buf_init(&r->head, c->opts->o.limits.header_bytes);
    buf_init(&r->body, c->opts->o.limits.body_bytes);
    buf_init(&r->resp_headers, 64 * 1024);
    r->refs = 1;
    r->t_start_us = time_mono_us();
    str_lcpy(r->remote, c->remote, sizeof(r->remote));
    return r;
}

static void req_unref(struct http_req *r)
{
    if (--r->refs > 0)
        return;
    buf_free(&r->head);
    buf_free(&r->body);
    buf_free(&r->resp_headers);
    opts_unref(r->opts);
    xfree(r);
}

const struct str *http_req_header(const struct http_req *r, const char *name)
{
    struct str n = str_from(name);
    /* length first: most of a request's headers are not the one asked for, and are told apart without a call */
    for (size_t i = 0; i < r->nheaders; i++)
        if (r->headers[i].name.n == n.n && str_eq_nocase(r->headers[i].name, n))
            return &r->headers[i].value;
    return NULL;
}

/* ---------- parser callbacks ---------- */

static struct http_conn *parser_conn(http_parser *p)
{
    return p->data;
}

static int fail(struct http_conn *c, int status, const char *reason)
{
    if (c->cur && !c->cur->error_status) {
        c->cur->error_status = status;
        c->cur->error_reason = reason;
    }
    return -1;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = parser_conn(p);
    if (c->opts != c->srv->opts) { /* reloaded: each new request on a kept-alive connection gets the new limits */
        opts_unref(c->opts);
        c->opts = opts_ref(c->srv->opts);
    }
    c->cur = req_new(c);
    c->header_last_was_value = false;
    conn_arm_timer(c);
    return 0;
}

static int head_append(struct http_conn *c, const char *at, size_t len)
{
    if (buf_append(&c->cur->head, at, len) != 0)
        return fail(c, 431, "header_too_large");
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = parser_conn(p);
    if (head_append(c, at, len) != 0)
        return -1;
    c->cur->url.n += len;
    return 0;
}

/* RFC 9110 5.6.2: a field name is a token. http-parser (non-strict build) also lets spaces through, so that
 * "Transfer-Encoding : chunked" was honoured and "X A: b" accepted; RFC 9112 5.1 says to refuse both. */
static const bool tchar[256] = {
    ['0' ... '9'] = true, ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['!'] = true, ['#'] = true, ['$'] = true,
    ['%'] = true,         ['&'] = true,         ['\''] = true,       ['*'] = true, ['+'] = true, ['-'] = true,
    ['.'] = true,         ['^'] = true,         ['_'] = true,         ['`'] = true, ['|'] = true, ['~'] = true,
};

static bool is_tchar(unsigned char ch)
{
    return tchar[ch];
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = parser_conn(p);
    struct http_req *r = c->cur;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return fail(c, 400, isspace((unsigned char)at[i]) ? "space_in_header_name" : "invalid_header_name");
    if (r->head_done)
        return 0; /* a chunked body's trailer: ignored (growing head would move what url and headers point at) */
    if (c->header_last_was_value || r->nheaders == 0) {
        if (r->nheaders == HTTP_MAX_HEADERS)
            return fail(c, 431, "too_many_headers");
        r->hdr_off[r->nheaders][0] = (uint32_t)r->head.len;
        r->hdr_off[r->nheaders][1] = 0;
        r->hdr_off[r->nheaders][2] = 0;
        r->hdr_off[r->nheaders][3] = 0;
        r->nheaders++;
        c->header_last_was_value = false;
    }
    if (head_append(c, at, len) != 0)
        return -1;
    r->hdr_off[r->nheaders - 1][1] += (uint32_t)len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = parser_conn(p);
    struct http_req *r = c->cur;
    if (r->head_done)
        return 0;
    if (!c->header_last_was_value) {
        r->hdr_off[r->nheaders - 1][2] = (uint32_t)r->head.len;
        c->header_last_was_value = true;
    }
    if (head_append(c, at, len) != 0)
        return -1;
    r->hdr_off[r->nheaders - 1][3] += (uint32_t)len;
    return 0;
}

static void resolve_head(struct http_req *r)
{
    /* The head buffer no longer grows (trailers are not appended), so slices into it stay valid. */
    r->head_done = true;
    const char *base = r->head.data ? r->head.data : "";
    r->url = str_make(base, r->url.n);
    for (size_t i = 0; i < r->nheaders; i++) {
        r->headers[i].name = str_make(base + r->hdr_off[i][0], r->hdr_off[i][1]);
        r->headers[i].value = str_trim(str_make(base + r->hdr_off[i][2], r->hdr_off[i][3]));
    }
    const char *q = memchr(r->url.p, '?', r->url.n);
    r->path = q ? str_make(r->url.p, (size_t)(q - r->url.p)) : r->url;
    r->query = q ? str_make(q + 1, r->url.n - (size_t)(q - r->url.p) - 1) : STR_NULL;
}

/* The path part of the URL bytes read so far, for a request that fails before its headers are complete. */
static void req_partial_path(struct http_req *r)
{
    if (r->url.n == 0 || r->head.data == NULL) {
        r->path = STR_LIT("-");
        return;
    }
    r->url = str_make(r->head.data, r->url.n);
    const char *q = memchr(r->url.p, '?', r->url.n);
    r->path = q ? str_make(r->url.p, (size_t)(q - r->url.p)) : r->url;
}

static void gen_request_id(struct http_req *r);
static void write_raw(struct http_conn *c, struct http_req *r, const char *data, size_t len);

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = parser_conn(p);
    struct http_req *r = c->cur;
    resolve_head(r);
    r->method = method_bit(p->method);
    r->method_str = http_method_str(p->method);
    r->http_minor = p->http_minor;
    if (p->http_major != 1)
        return fail(c, 505, "http_version");
    set_request_id(r);
    if (r->method == 0)
        return fail(c, 501, "method_not_implemented");
    /* RFC 9112 6.1: the only transfer coding agentd decodes is chunked; anything else ("gzip, chunked", a second
     * Transfer-Encoding line) is 501 rather than read as chunked and handed on half-decoded. */
    unsigned te = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!str_eq_nocase_cstr(r->headers[i].name, "transfer-encoding"))
            continue;
        if (++te > 1 || !str_eq_nocase_cstr(r->headers[i].value, "chunked"))
            return fail(c, 501, "unsupported_transfer_encoding");
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > (uint64_t)c->opts->o.limits.body_bytes)
        return fail(c, 413, "body_too_large");
    const struct str *expect = http_req_header(r, "expect");
    if (expect) {
        if (!str_eq_nocase_cstr(*expect, "100-continue"))
            return fail(c, 417, "expectation_failed");
        /* Ask for the body only when nothing is ahead of this request on the wire: a 100 must not land in the
         * middle of an earlier response. A client that gets no 100 sends the body after its own short wait. */
        if (r->http_minor >= 1 && c->queue_head == NULL)
            write_raw(c, NULL, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    r->t_headers_us = time_mono_us();
    conn_arm_timer(c); /* header deadline -> body deadline */
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = parser_conn(p);
    if (buf_append(&c->cur->body, at, len) != 0)
        return fail(c, 413, "body_too_large");
    return 0;
}

static void queue_push(struct http_conn *c, struct http_req *r)
{
    r->next = NULL;
    if (c->queue_tail)
        c->queue_tail->next = r;
    else
        c->queue_head = r;
    c->queue_tail = r;
    c->queued++;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = parser_conn(p);
    struct http_req *r = c->cur;
    c->cur = NULL;
    if (!http_should_keep_alive(p))
        r->close_after = true;
    queue_push(c, r);
    conn_arm_timer(c);
    if (r->close_after) {
        /* Nothing after "Connection: close" is read. */
        c->stop_parsing = true;
        return -1;
    }
    if (c->queued >= c->opts->o.limits.pipeline && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Turns a parse failure into a queued error response that closes the connection. */
static void parse_failed(struct http_conn *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    struct http_req *r = c->cur;
    c->cur = NULL;
    c->stop_parsing = true;
    if (r == NULL) { /* failed before a message began (garbage between requests) */
        r = req_new(c);
        set_request_id(r);
    }
    if (!r->error_status) {
        r->error_status = e == HPE_HEADER_OVERFLOW ? 431 : e == HPE_INVALID_TRANSFER_ENCODING ? 501 : 400;
        r->error_reason = e == HPE_HEADER_OVERFLOW                ? "header_too_large"
                          : e == HPE_INVALID_TRANSFER_ENCODING ? "unsupported_transfer_encoding"
                                                                : http_errno_name(e);
    }
    if (r->method_str == NULL)
        r->method_str = "-";
    if (r->path.p == NULL)
        r->path = STR_LIT("-");
    r->close_after = true;
    queue_push(c, r);
}

static void conn_parse(struct http_conn *c, const char *data, size_t len)
{
    if (c->stop_parsing || len == 0)
        return;
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    (void)n;
    if (c->stop_parsing) /* Connection: close seen; the rest is ignored */
        return;
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        parse_failed(c);
        return;
    }
    if (c->parser.upgrade) {
        /* No protocol upgrades here: answer the request as plain HTTP, then close, since what follows on the
         * wire is not HTTP. */
        c->stop_parsing = true;
        if (c->queue_tail)
            c->queue_tail->close_after = true;
    }
}

/* ---------- writing ---------- */

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct http_conn *c = wr->conn;
    c->pending_write_bytes -= wr->len;
    struct http_req *r = wr->req;
    if (r) {
        if (status == 0 && r->on_drain && r->conn && c->pending_write_bytes < HTTP_WRITE_LOW_WATER)
            r->on_drain(r, r->drain_ud);
        req_unref(r);
    }
    xfree(wr);
    if (status < 0 && status != UV_ECANCELED && c->state == CONN_OPEN)
        conn_close(c);
}

/* Copies a then b into one write request; r (may be NULL) is kept alive until the write completes. */
static void write_two(struct http_conn *c, struct http_req *r, const char *a, size_t alen, const void *b2,
                      size_t blen)
{
    if (c->state != CONN_OPEN)
        return;
    size_t len = alen + blen;
    struct wreq *wr = xmalloc(sizeof(*wr) + len);
    wr->req = r;
    wr->conn = c;
    wr->len = len;
    memcpy(wr->data, a, alen);
    if (blen)
        memcpy(wr->data + alen, b2, blen);
    if (r)
        r->refs++;
    c->pending_write_bytes += len;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        c->pending_write_bytes -= len;
        if (r)
            req_unref(r);
        xfree(wr);
        conn_close(c);
    }
}

static void write_raw(struct http_conn *c, struct http_req *r, const char *data, size_t len)
{
    write_two(c, r, data, len, NULL, 0);
}

/* Built with plain appends: printf was the largest cost of a small response (callgrind). */
static void build_head(struct http_req *r, struct buf *out, int status, const char *ctype, bool has_length,
                       size_t length)
{
    struct http_conn *c = r->conn;
    if (c->close_when_done || c->srv->draining)
        r->close_after = true;
    buf_append(out, r->http_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    buf_append_u64(out, (uint64_t)status);
    buf_append_char(out, ' ');
    buf_append_str(out, http_status_reason(status));
    buf_append(out, "\r\nDate: ", 8);
    buf_append_str(out, date_header(c->srv));
    buf_append(out, "\r\n", 2);
    if (ctype) {
        buf_append(out, "Content-Type: ", 14);
        buf_append_str(out, ctype);
        buf_append(out, "\r\n", 2);
    }
    if (has_length) {
        buf_append(out, "Content-Length: ", 16);
        buf_append_u64(out, length);
        buf_append(out, "\r\n", 2);
    } else if (r->chunked) {
        buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (r->close_after)
        buf_append(out, "Connection: close\r\n", 19);
    else if (r->http_minor == 0)
        buf_append(out, "Connection: keep-alive\r\n", 24);
    buf_append(out, "X-Request-Id: ", 14);
    buf_append_str(out, r->request_id);
    buf_append(out, "\r\n", 2);
    if (r->resp_headers.len)
        buf_append(out, r->resp_headers.data, r->resp_headers.len);
    buf_append(out, "\r\n", 2);
}

void http_resp_header(struct http_req *r, const char *name, const char *value)
{
    if (r->started)
        return;
    /* Header injection guard: a value from elsewhere must not smuggle a line break. */
    if (strpbrk(value, "\r\n") || strpbrk(name, "\r\n: "))
        return;
    buf_append_str(&r->resp_headers, name);
    buf_append(&r->resp_headers, ": ", 2);
    buf_append_str(&r->resp_headers, value);
    buf_append(&r->resp_headers, "\r\n", 2);
}

void http_resp_headerf(struct http_req *r, const char *name, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    http_resp_header(r, name, tmp);
}

static void req_finish(struct http_req *r);

void http_respond(struct http_req *r, int status, const char *ctype, const void *body, size_t len)
{
    if (r->finished)
        return;
    r->status = status;
    if (r->conn && r->conn->state == CONN_OPEN && !r->started) {
        r->started = true;
        bool no_body = r->method == HTTP_M_HEAD || status == 204 || status == 304 || (status >= 100 && status < 200);
        /* Head and body go out in one write request; the head is built in the loop's scratch buffer. */
        struct buf *head = &r->conn->srv->scratch;
        buf_reset(head);
        build_head(r, head, status, ctype, status != 204 && status != 304, len);
        size_t blen = no_body ? 0 : len;
        r->bytes_out += blen;
        write_two(r->conn, r, head->data, head->len, body, blen);
    }
    req_finish(r);
}

void http_respond_error(struct http_req *r, int status, const char *type, const char *code, const char *message)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"error\":{\"message\":");
    buf_append_json_cstr(&b, message);
    buf_append_str(&b, ",\"type\":");
    buf_append_json_cstr(&b, type);
    buf_append_str(&b, ",\"param\":null,\"code\":");
    if (code)
        buf_append_json_cstr(&b, code);
    else
        buf_append_str(&b, "null");
    buf_append_str(&b, "}}");
    http_respond(r, status, "application/json", b.data, b.len);
    buf_free(&b);
}

/* An error the server found itself, in the listener's format when its router has one. */
static void server_error(struct http_req *r, const struct http_router *router, int status, const char *code,
                         const char *message)
{
    if (router && router->error) {
        router->error(r, status, code, message);
        return;
    }
    http_respond_error(r, status, status >= 500 ? "server_error" : "invalid_request_error", code, message);
}

/* Writes the n buffers in order: straight to the socket when nothing is queued on it (no copy, no allocation,
 * one writev), and whatever the kernel did not take is copied into one write request. A stream calls this once per
 * upstream read, so its cost is the relay's cost per read. */
static void stream_writev(struct http_req *r, const uv_buf_t *bufs, unsigned n)
{
    struct http_conn *c = r->conn;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    /* uv_try_write writes only when the stream's queue is empty (UV_EAGAIN otherwise), so order is kept. An
     * error other than EAGAIN goes the queued way, which reports it from on_write as before. */
    int done = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    size_t skip = done > 0 ? (size_t)done : 0;
    if (skip == total)
        return;
    struct wreq *wr = xmalloc(sizeof(*wr) + (total - skip));
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t bl = bufs[i].len;
        if (skip >= bl) {
            skip -= bl;
            continue;
        }
        memcpy(wr->data + off, bufs[i].base + skip, bl - skip);
        off += bl - skip;
        skip = 0;
    }
    wr->req = r;
    wr->conn = c;
    wr->len = off;
    r->refs++;
    c->pending_write_bytes += wr->len;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        c->pending_write_bytes -= wr->len;
        req_unref(r);
        xfree(wr);
        conn_close(c);
    }
}

void http_stream_start(struct http_req *r, int status, const char *ctype)
{
    if (r->started || r->finished)
        return;
    r->started = true;
    r->status = status;
    if (r->http_minor >= 1)
        r->chunked = true;
    else
        r->close_after = true; /* HTTP/1.0: the body ends when the connection does */
    if (!r->conn || r->conn->state != CONN_OPEN)
        return;
    struct buf *head = &r->conn->srv->scratch;
    buf_reset(head);
    build_head(r, head, status, ctype, false, 0);
    uv_buf_t b = uv_buf_init(head->data, (unsigned)head->len);
    stream_writev(r, &b, 1);
}

int http_stream_write(struct http_req *r, const void *data, size_t len)
{
    if (!r->started || r->finished || !r->conn || r->conn->state != CONN_OPEN)
        return -1;
    if (len == 0)
        return 0;
    if (r->method == HTTP_M_HEAD)
        return 0;
    if (len > UINT32_MAX / 2) /* one uv_buf_t; the exchange writes one upstream read's worth at a time */
        return -1;
    r->bytes_out += len;
    if (!r->chunked) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        stream_writev(r, &b, 1);
        return 0;
    }
    /* chunk: hex size, CRLF, data, CRLF */
    static const char hexd[] = "0123456789abcdef";
    char hdr[2 * sizeof(size_t) + 2];
    size_t hn = 0;
    for (int sh = (int)(sizeof(size_t) * 8) - 4; sh >= 0; sh -= 4) {
        unsigned d = (unsigned)(len >> sh) & 0xf;
        if (d || hn)
            hdr[hn++] = hexd[d];
    }
    hdr[hn++] = '\r';
    hdr[hn++] = '\n';
    uv_buf_t b[3] = {uv_buf_init(hdr, (unsigned)hn), uv_buf_init((char *)data, (unsigned)len),
                     uv_buf_init((char *)"\r\n", 2)};
    stream_writev(r, b, 3);
    return r->conn && r->conn->state == CONN_OPEN ? 0 : -1;
}

void http_stream_end(struct http_req *r)
{
    if (r->finished)
        return;
    if (r->started && r->chunked && r->conn && r->conn->state == CONN_OPEN && r->method != HTTP_M_HEAD) {
        uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
        stream_writev(r, &b, 1);
    }
    req_finish(r);
}

size_t http_req_pending_bytes(const struct http_req *r)
{
    return r->conn ? r->conn->pending_write_bytes : 0;
}

/* ---------- dispatch ---------- */

static struct http_server_hooks hooks;

void http_server_set_hooks(const struct http_server_hooks *h)
{
    hooks = *h;
}

/* The route's path equals the request's (or starts it, for a prefix route). One pass that stops at the first
 * differing byte: most routes differ from the request a few bytes in, so no strlen of every route's path. */
static bool route_path_matches(const struct http_route *rt, struct str path)
{
    const char *rp = rt->path;
    size_t i = 0;
    while (i < path.n && rp[i] != '\0') {
        if (rp[i] != path.p[i])
            return false;
        i++;
    }
    return rp[i] == '\0' && (rt->prefix || i == path.n);
}

static void route_and_call(struct http_req *r, const struct http_router *router)
{
    unsigned allowed = 0;
    const struct http_route *match = NULL;
    for (size_t i = 0; i < router->n; i++) {
        const struct http_route *rt = &router->routes[i];
        if (!route_path_matches(rt, r->path))
            continue;
        unsigned m = rt->methods | ((rt->methods & HTTP_M_GET) ? HTTP_M_HEAD : 0);
        allowed |= m;
        if ((m & r->method) && match == NULL)
            match = rt;
    }
    if (match) {
        r->route = match;
        match->fn(r);
        return;
    }
    if (allowed) {
        static const struct {
            unsigned bit;
            const char *name;
        } names[] = {{HTTP_M_GET, "GET"},       {HTTP_M_HEAD, "HEAD"},      {HTTP_M_POST, "POST"},
                     {HTTP_M_PUT, "PUT"},       {HTTP_M_DELETE, "DELETE"}, {HTTP_M_OPTIONS, "OPTIONS"},
                     {HTTP_M_PATCH, "PATCH"}};
        char allow[128] = "";
        size_t alen = 0;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (allowed & names[i].bit)
                alen += (size_t)snprintf(allow + alen, sizeof(allow) - alen, "%s%s", alen ? ", " : "", names[i].name);
        http_resp_header(r, "Allow", allow);
        char msg[256];
        snprintf(msg, sizeof(msg), "method %s is not allowed on %.*s (allowed: %s)", r->method_str, STR_FMT(r->path),
                 allow);
        server_error(r, router, 405, "method_not_allowed", msg);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof(msg), "no route for %s %.*s", r->method_str, (int)(r->path.n > 200 ? 200 : r->path.n),
             r->path.p);
    server_error(r, router, 404, "unknown_url", msg);
}

static void dispatch_error(struct http_req *r)
{
    static const struct {
        int status;
        const char *msg;
    } msgs[] = {{400, "malformed HTTP request"},
                {408, "request not received in time"},
                {413, "request body is larger than the configured limit"},
                {417, "only 'Expect: 100-continue' is supported"},
                {431, "request headers are larger than the configured limit"},
                {501, "not implemented (method or transfer coding)"},
                {503, "the server is at its connection limit or shutting down; retry shortly"},
                {505, "HTTP version not supported"}};
    const char *m = "bad request";
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++)
        if (msgs[i].status == r->error_status)
            m = msgs[i].msg;
    r->close_after = true;
    /* Found before the request line or headers were complete: still answer with an id, in the format of the
     * route family the URL read so far names, and in the client's HTTP version when it is known. */
    if (r->request_id[0] == '\0')
        gen_request_id(r);
    if (!r->head_done) {
        req_partial_path(r);
        if (r->conn && r->conn->parser.http_major == 1)
            r->http_minor = r->conn->parser.http_minor;
        else
            r->http_minor = 1;
    }
    char detail[200];
    snprintf(detail, sizeof(detail), "%s (%s)", m, r->error_reason ? r->error_reason : "protocol error");
    server_error(r, r->conn ? r->conn->router : NULL, r->error_status,
                 r->error_reason ? r->error_reason : "protocol_error", detail);
}

static void conn_finish(struct http_conn *c);
static void conn_start_reading(struct http_conn *c);

/* Serves the head of the queue if nothing is being handled. Handlers that finish synchronously return here
 * (req_finish sees `pumping` and does not recurse), so a burst of pipelined requests is a loop, not a stack. */
static void conn_pump(struct http_conn *c)
{
    if (c->pumping)
        return;
    c->pumping = true;
    while (c->state == CONN_OPEN && !c->handling && c->queue_head) {
        struct http_req *r = c->queue_head;
        c->handling = true;
        r->t_dispatch_us = time_mono_us();
        r->refs++; /* the handler's reference, dropped by the terminal call */
        if (r->error_status)
            dispatch_error(r);
        else
            route_and_call(r, c->router);
    }
    c->pumping = false;
    if (c->state != CONN_OPEN || c->handling || c->queue_head)
        return;
    if (c->close_when_done || c->stop_parsing) {
        conn_finish(c);
        return;
    }
    if (!c->reading)
        conn_start_reading(c);
    conn_arm_timer(c);
}

static void log_and_count(struct http_req *r)
{
    if (r->logged)
        return;
    r->logged = true;
    uint64_t dur = time_mono_us() - r->t_start_us;
    if (hooks.on_request_done)
        hooks.on_request_done(r, dur);
}

static void req_finish(struct http_req *r)
{
    r->finished = true;
    if (r->status == 0)
        r->status = 499; /* never answered: the client went away (nginx's convention) */
    log_and_count(r);
    struct http_conn *c = r->conn;
    if (c && c->queue_head == r) {
        c->queue_head = r->next;
        if (c->queue_head == NULL)
            c->queue_tail = NULL;
        c->queued--;
        c->handling = false;
        c->nrequests++;
        if (r->close_after)
            c->close_when_done = true;
        req_unref(r); /* the queue's reference */
        req_unref(r); /* the handler's reference */
        conn_pump(c); /* no-op when called from inside the pump */
        return;
    }
    /* The connection is gone: only the handler's reference remains (plus any cancelled writes). */
    req_unref(r);
}

/* ---------- connections ---------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct http_conn *c = h->data;
    /* One read buffer per loop: read callbacks run one at a time and consume the bytes before returning. */
    *b = uv_buf_init(c->srv->read_buf, READ_BUF_SIZE);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    if (--c->pending_close_handles > 0)
        return;
    opts_unref(c->opts);
    xfree(c);
}

static void conn_set_idle(struct http_conn *c, bool idle)
{
    struct http_server *srv = c->srv;
    if (idle == c->idle)
        return;
    c->idle = idle;
    if (idle) {
        c->idle_prev = NULL;
        c->idle_next = srv->idle_head;
        if (srv->idle_head)
            srv->idle_head->idle_prev = c;
        else
            srv->idle_tail = c;
        srv->idle_head = c;
        return;
    }
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        srv->idle_head = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    else
        srv->idle_tail = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
}

static void conn_unlink(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    conn_set_idle(c, false);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
    atomic_fetch_sub_explicit(c->open_count, 1, memory_order_relaxed);
    if (hooks.on_connection)
        hooks.on_connection(c->lname, HTTP_CONN_CLOSE);
}

/* Closes at once: the client is gone, or the server gives up on it. Requests still queued are dropped; the one
 * being handled is detached and its handler told through on_abort. */
static void conn_close(struct http_conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    bool was_open = c->state == CONN_OPEN;
    c->state = CONN_CLOSING;
    struct http_req *active = (c->handling && c->queue_head && !c->queue_head->finished) ? c->queue_head : NULL;
    struct http_req *r = c->queue_head;
    c->queue_head = c->queue_tail = NULL;
    c->queued = 0;
    c->handling = false;
    while (r) {
        struct http_req *next = r->next;
        r->next = NULL;
        r->conn = NULL;
        if (r == active)
            r->aborted = true;
        else if (!r->finished && !r->logged && r->error_status == 0) {
            /* parsed but never served */
        }
        req_unref(r); /* the queue's reference */
        r = next;
    }
    if (c->cur) {
        req_unref(c->cur);
        c->cur = NULL;
    }
    if (was_open)
        conn_unlink(c);
    uv_timer_stop(&c->timer);
    c->pending_close_handles = 2;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    /* Last: the handler may finish the request from inside on_abort, which frees it. */
    if (active && active->on_abort)
        active->on_abort(active, active->abort_ud);
}

static void on_linger_timeout(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;
    if (c->state != CONN_LINGER)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* FIN is out after the last response byte. Keep reading and discarding for a moment so that a client still
     * sending (a refused large body) reads our response instead of getting a reset. */
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
}

/* Closes gracefully after the last queued response byte (Connection: close, errors, drain). */
static void conn_finish(struct http_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->state = CONN_LINGER;
    c->stop_parsing = true;
    uv_timer_stop(&c->timer);
    conn_unlink(c); /* no longer counts as open; it only flushes and waits for the peer's FIN */
    /* conn_unlink decremented the count; closing later must not do it again */
    c->shutdown_req.data = c;
    if (!c->reading)
        conn_start_reading(c);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

static void client_gone(struct http_conn *c)
{
    conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = s->data;
    if (nread > 0) {
        if (c->state != CONN_OPEN || c->stop_parsing)
            return; /* lingering or past a fatal error: discard */
        conn_parse(c, b->base, (size_t)nread);
        conn_pump(c);
        return;
    }
    if (nread == 0)
        return;
    /* EOF or error: the client is gone. A response still being produced is aborted. */
    client_gone(c);
}

static void conn_start_reading(struct http_conn *c)
{
    if (c->reading || c->state == CONN_CLOSING)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

static void gen_request_id(struct http_req *r)
{
    fmt_hex64(r->request_id, rng_next());
    fmt_hex64(r->request_id + 16, rng_next());
    r->request_id[32] = '\0';
}

static void on_conn_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    if (c->state != CONN_OPEN)
        return;
    if (c->cur) {
        /* Header or body deadline: answer 408 in order, then close. */
        struct http_req *r = c->cur;
        c->cur = NULL;
        bool headers_done = r->t_headers_us != 0;
        r->error_status = 408;
        r->error_reason = headers_done ? "body_timeout" : "header_timeout";
        r->close_after = true;
        if (!headers_done) {
            r->nheaders = 0;
            r->method_str = "-";
        }
        c->stop_parsing = true;
        queue_push(c, r);
        conn_pump(c);
        return;
    }
    if (!c->handling && c->queue_head == NULL)
        conn_close(c); /* idle keep-alive connection */
}

static void conn_arm_timer(struct http_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    const struct http_limits *sc = &c->opts->o.limits;
    uint64_t now = time_mono_us(), deadline_us;
    if (c->cur) {
        if (c->cur->t_headers_us)
            deadline_us = c->cur->t_headers_us + sc->body_timeout_ms * 1000;
        else
            deadline_us = c->cur->t_start_us + sc->header_timeout_ms * 1000;
    } else if (!c->handling && c->queue_head == NULL) {
        uint64_t idle = sc->idle_timeout_ms;
        if (c->nrequests == 0 && sc->header_timeout_ms < idle)
            idle = sc->header_timeout_ms; /* a silent new connection gets no more than a slow request would */
        deadline_us = now + idle * 1000;
        conn_set_idle(c, true);
    } else {
        conn_set_idle(c, false);
        uv_timer_stop(&c->timer);
        return;
    }
    if (c->cur)
        conn_set_idle(c, false);
    uint64_t ms = deadline_us > now ? (deadline_us - now + 999) / 1000 : 0;
    uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

/* Sets up a connection whose tcp handle has just been accepted (or opened, in the fuzz driver). */
static void conn_accepted(struct http_listener *l, struct http_conn *c)
{
    struct http_server *srv = l->srv;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(c->remote, sizeof(c->remote), "%s:%d", ip, port);
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    long open = atomic_fetch_add_explicit(l->open_count, 1, memory_order_relaxed) + 1;
    if (hooks.on_connection)
        hooks.on_connection(l->name, HTTP_CONN_OPEN);
    long limit = l->ops ? c->opts->o.limits.ops_connections : c->opts->o.limits.connections;
    /* At the limit, the connection of this listener that has been idle longest (no request in progress) makes
     * room: an idle keep-alive socket is worth less than a new request. Only this loop's connections can be
     * closed here; when none of them is idle the new connection is refused as before. */
    for (struct http_conn *v = srv->idle_tail; open > limit && !srv->draining && v; v = srv->idle_tail) {
        while (v && v->open_count != l->open_count) /* another budget (one listener kind per loop in agentd) */
            v = v->idle_prev;
        if (v == NULL)
            break;
        if (hooks.on_connection)
            hooks.on_connection(v->lname, HTTP_CONN_EVICT);
        if (v->pending_write_bytes)
            conn_finish(v); /* its last response is still being written: FIN after it */
        else
            conn_close(v);
        open = atomic_load_explicit(l->open_count, memory_order_relaxed);
    }
    if (open > limit || srv->draining) {
        /* Over the limit: answer 503 at once and close, so accepting stays cheap and the backlog never fills. */
        if (hooks.on_connection)
            hooks.on_connection(l->name, HTTP_CONN_REJECT);
        struct http_req *r = req_new(c);
        gen_request_id(r);
        r->error_status = 503;
        r->error_reason = srv->draining ? "draining" : "connection_limit";
        r->method_str = "-";
        r->path = STR_LIT("-");
        r->close_after = true;
        r->http_minor = 1;
        c->stop_parsing = true;
        queue_push(c, r);
        http_resp_header(r, "Retry-After", "1");
        conn_pump(c);
        return;
    }
    conn_start_reading(c);
    conn_arm_timer(c);
}

static struct http_conn *conn_new(struct http_listener *l)
{
    struct http_server *srv = l->srv;
    struct http_conn *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->lname = l->name;
    c->router = l->router;
    c->open_count = l->open_count;
    c->opts = opts_ref(srv->opts);
    c->state = CONN_OPEN;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    return c;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct http_listener *l = server->data;
    if (status < 0) {
        log_warn("accept on %s listener failed: %s", l->name, uv_strerror(status));
        return;
    }
    struct http_conn *c = conn_new(l);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        c->state = CONN_CLOSING;
        c->pending_close_handles = 2;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    conn_accepted(l, c);
}

/* ---------- server ---------- */

struct http_server *http_server_new(uv_loop_t *loop, const struct http_options *opts)
{
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->opts = opts_new(opts);
    srv->read_buf = xmalloc(READ_BUF_SIZE);
    buf_init(&srv->scratch, BUF_UNBOUNDED);
    return srv;
}

void http_server_set_options(struct http_server *srv, const struct http_options *opts)
{
    struct http_opts *old = srv->opts;
    srv->opts = opts_new(opts);
    opts_unref(old);
}

uv_loop_t *http_server_loop(struct http_server *srv)
{
    return srv->loop;
}

size_t http_server_connections(const struct http_server *srv)
{
    return srv->nconns;
}

static void on_listener_closed(uv_handle_t *h)
{
    xfree(h->data);
}

int http_server_listen_fd(struct http_server *srv, int fd, const char *name, const struct http_router *router,
                          int backlog)
{
    struct http_listener *l = xcalloc(1, sizeof(*l));
    l->srv = srv;
    l->router = router;
    l->name = name;
    bool ops = strcmp(name, "ops") == 0;
    l->open_count = ops ? &ops_open_connections : &http_open_connections;
    l->ops = ops;
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, backlog, on_connection);
    if (rc != 0) {
        log_error("listen on %s listener failed: %s", name, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        return -1;
    }
    l->next = srv->listeners;
    srv->listeners = l;
    return 0;
}

void http_server_close_listeners(struct http_server *srv)
{
    struct http_listener *l = srv->listeners;
    srv->listeners = NULL;
    while (l) {
        struct http_listener *next = l->next;
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        l = next;
    }
}

void http_server_drain(struct http_server *srv)
{
    srv->draining = true;
    struct http_conn *c = srv->conns;
    while (c) {
        struct http_conn *next = c->next;
        c->close_when_done = true;
        if (c->cur == NULL && !c->handling && c->queue_head == NULL)
            conn_close(c);
        c = next;
    }
}

void http_server_close_all(struct http_server *srv)
{
    while (srv->conns)
        conn_close(srv->conns);
}

void http_server_free(struct http_server *srv)
{
    if (srv == NULL)
        return;
    opts_unref(srv->opts);
    xfree(srv->read_buf);
    buf_free(&srv->scratch);
    xfree(srv);
}

int http_bind_socket(const char *host, int *port, bool probe_exclusive, struct buf *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", *port);
    const char *h = (host == NULL || *host == '\0' || strcmp(host, "*") == 0) ? NULL : host;
    int rc = getaddrinfo(h, portstr, &hints, &res);
    if (rc != 0) {
        /* "localhost" and other names: resolve once at start-up, never on the loop. */
        hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
        rc = getaddrinfo(h, portstr, &hints, &res);
    }
    if (rc != 0 || res == NULL) {
        buf_printf(err, "cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int one = 1;
    if (*port != 0 && probe_exclusive) {
        /* SO_REUSEPORT lets a second process of the same user bind the same port and silently share its traffic.
         * Bind once without it first: if that fails, someone else owns the port. */
        int probe = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe != -1) {
            setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (res->ai_family == AF_INET6)
                setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
            if (bind(probe, res->ai_addr, res->ai_addrlen) == -1) {
                buf_printf(err, "bind %s:%d: %s", host, *port, strerror(errno));
                close(probe);
                freeaddrinfo(res);
                return -1;
            }
            close(probe);
        }
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        buf_printf(err, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) {
        buf_printf(err, "SO_REUSEPORT: %s", strerror(errno));
        goto fail;
    }
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) == -1) {
        buf_printf(err, "bind %s:%d: %s", host, *port, strerror(errno));
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(res);
    return fd;
fail:
    close(fd);
    freeaddrinfo(res);
    return -1;
}
