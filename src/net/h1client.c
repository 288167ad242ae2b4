#include "net/h1client.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"

#define READ_BUF_SIZE (64 * 1024)
#define TLS_PLAIN_SIZE (16 * 1024) /* one TLS record's worth of plaintext per SSL_read */
#define DEFAULT_CONNECT_TIMEOUT_MS 10000

enum conn_state {
    CONN_NEW,        /* no socket yet: waiting for addresses */
    CONN_CONNECTING, /* uv_tcp_connect in flight */
    CONN_HANDSHAKE,  /* TLS handshake in flight */
    CONN_ACTIVE,     /* connected, carrying a transfer */
    CONN_IDLE,       /* connected, in the pool */
    CONN_CLOSING,    /* handles closing; freed by the last close callback */
};

struct h1dns;
struct h1conn;

/* A (scheme, host, port) key: the pool, the resolved addresses and the proxy decision for it. Hosts live as long
 * as the client (their number is bounded by the configured deployments). */
struct h1host {
    struct h1host *next;
    char *name; /* NUL-terminated, without brackets */
    size_t name_len;
    char *authority; /* the Host header value */
    size_t authority_len;
    uint16_t port;
    bool tls, ipv6, numeric;
    bool proxied; /* a proxy from the environment applies: libcurl's business */
    struct sockaddr_storage addrs[H1_MAX_ADDRS];
    int naddrs;
    uint64_t addrs_expire_ms; /* uv_now; numeric hosts never expire */
    SSL_SESSION *session;     /* the last TLS session the server gave us, to resume on new connections */
    struct h1dns *lookup;     /* in flight */
    struct h1conn *waiting;   /* connections waiting for it */
    struct h1conn *idle;      /* pooled connections, most recently used first */
    unsigned nidle;
    unsigned inflight; /* transfers running to this host */
    unsigned peak;     /* the most running at once since peak_ms */
    uint64_t peak_ms;
};

struct h1dns {
    uv_getaddrinfo_t req;
    struct h1client *c;
    struct h1host *host; /* NULL once the client is closing */
};

/* One socket's life. A connection carries at most one transfer at a time; the transfer's own state (deadlines,
 * the parser, the retry flag) lives here too, and moves to a fresh connection on a retry or a failover to the
 * next address. */
struct h1conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the transfer's deadlines, or the idle timeout in the pool, or a deferred failure */
    uv_connect_t creq;
    uv_write_t wreq;
    struct h1client *c;
    struct h1host *host;
    struct h1conn *prev, *next;   /* c->conns */
    struct h1conn *lprev, *lnext; /* the list in *lhead (a host's idle or waiting list), if any */
    struct h1conn **lhead;
    enum conn_state state;
    int closes_pending;
    struct up_xfer *x;
    struct h1_resp resp;
    SSL *ssl;        /* https: TLS on memory BIOs between the socket and the parser */
    struct buf head; /* the request head, built once per transfer */
    uint64_t t0_ms;  /* the transfer's start (uv_now) */
    uint64_t due_ms; /* when the timer fires (uv_now), UINT64_MAX when it is stopped */
    uint64_t idle_since_ms;
    uint64_t rx;     /* response bytes (plaintext) received for the current transfer */
    unsigned addr_i; /* address being tried */
    int last_err;    /* of the last failed connect */
    unsigned nreq;   /* requests sent on this connection */
    unsigned writes; /* uv_writes in flight */
    bool reading;
    bool retried;   /* the transfer was already sent again once */
    bool tls_bad;   /* TLS itself failed: the session is not worth resuming */
    bool fail_soon; /* a failure found while starting: reported from the timer, never inside h1_start */
    enum up_result fail_result; /* ... and what it was */
};

struct h1client {
    uv_loop_t *loop;
    char *rbuf; /* one read buffer per loop: read callbacks consume their bytes before returning */
    char *tbuf; /* and one for TLS plaintext */
    SSL_CTX *ssl_ctx;
    bool ssl_ctx_failed;
    char *ca_file;
    struct h1host *hosts;
    struct h1conn *conns; /* not closing */
    unsigned nconns, nidle;
    int closing_conns; /* closes still running */
    int lookups;       /* getaddrinfo requests not yet returned */
    bool closing;
    char *http_proxy, *https_proxy, *all_proxy, *no_proxy;
    uint64_t connects, reuses, retries;
    uint64_t idle_timeout_ms;
};

static void conn_close(struct h1conn *k);
static void conn_to_pool(struct h1conn *k);
static void conn_start(struct h1conn *k);
static void conn_send(struct h1conn *k);
static bool conn_retry(struct h1conn *k);
static void conn_read_start(struct h1conn *k);
static void conn_arm_timer(struct h1conn *k);
static void on_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* ---------- small helpers ---------- */

static const char *err_text(int uverr)
{
    /* libc's wording ("Connection refused"), which is what curl reports; libuv's is lower-case */
    return uverr < 0 ? strerror(-uverr) : "unknown error";
}

static void list_push(struct h1conn **head, struct h1conn *k)
{
    k->lhead = head;
    k->lprev = NULL;
    k->lnext = *head;
    if (*head)
        (*head)->lprev = k;
    *head = k;
}

static void list_remove(struct h1conn *k)
{
    if (k->lhead == NULL)
        return;
    if (k->lprev)
        k->lprev->lnext = k->lnext;
    else
        *k->lhead = k->lnext;
    if (k->lnext)
        k->lnext->lprev = k->lprev;
    k->lprev = k->lnext = NULL;
    k->lhead = NULL;
}

static char *env_dup(const char *lower, const char *upper)
{
    const char *v = getenv(lower);
    if ((v == NULL || *v == '\0') && upper)
        v = getenv(upper);
    return v && *v ? xstrdup(v) : NULL;
}

bool h1_proxy_applies(const char *url)
{
    struct h1_url u;
    if (url == NULL || h1_parse_url(url, strlen(url), &u) != 0)
        return true; /* a URL this client does not take goes to libcurl anyway */
    const char *proxy = u.tls ? getenv("https_proxy") : getenv("http_proxy");
    if ((proxy == NULL || *proxy == '\0') && u.tls)
        proxy = getenv("HTTPS_PROXY");
    if (proxy == NULL || *proxy == '\0')
        proxy = getenv("all_proxy");
    if (proxy == NULL || *proxy == '\0')
        proxy = getenv("ALL_PROXY");
    if (proxy == NULL || *proxy == '\0')
        return false;
    const char *no_proxy = getenv("no_proxy");
    if (no_proxy == NULL || *no_proxy == '\0')
        no_proxy = getenv("NO_PROXY");
    return !h1_no_proxy_match(no_proxy, u.host, u.host_len);
}

/* ---------- URLs ---------- */

static bool host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
           ch == '_';
}

static bool has_dot_segment(const char *p, size_t n)
{
    /* "/./", "/../", or a path ending in "/." or "/.." (curl would normalise them; let it) */
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '/' || i + 1 >= n || p[i + 1] != '.')
            continue;
        size_t j = i + 2;
        if (j < n && p[j] == '.')
            j++;
        if (j == n || p[j] == '/')
            return true;
    }
    return false;
}

int h1_parse_url(const char *url, size_t len, struct h1_url *u)
{
    memset(u, 0, sizeof(*u));
    if (url == NULL)
        return -1;
    const char *p = url, *end = url + len;
    if (len > 7 && memcmp(url, "http://", 7) == 0) {
        p += 7;
        u->port = 80;
    } else if (len > 8 && memcmp(url, "https://", 8) == 0) {
        p += 8;
        u->port = 443;
        u->tls = true;
    } else {
        return -1;
    }
    for (const char *q = p; q < end; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ch == '#')
            return -1;
    }
    const char *auth_end = p;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?')
        auth_end++;
    const char *port_at = NULL;
    if (p < auth_end && *p == '[') {
        const char *rb = memchr(p, ']', (size_t)(auth_end - p));
        if (rb == NULL || rb == p + 1)
            return -1;
        for (const char *q = p + 1; q < rb; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F') || *q == ':' ||
                  *q == '.'))
                return -1; /* zone ids and the rest: curl */
        u->host = p + 1;
        u->host_len = (size_t)(rb - p - 1);
        u->ipv6 = true;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return -1;
            port_at = rb + 2;
        }
    } else {
        const char *q = p;
        while (q < auth_end && host_char(*q))
            q++;
        if (q == p)
            return -1;
        u->host = p;
        u->host_len = (size_t)(q - p);
        if (q < auth_end) {
            if (*q != ':')
                return -1; /* userinfo, percent-encoding, anything unusual */
            port_at = q + 1;
        }
    }
    if (port_at) {
        size_t nd = (size_t)(auth_end - port_at);
        if (nd == 0 || nd > 5)
            return -1;
        unsigned v = 0;
        for (size_t i = 0; i < nd; i++) {
            if (port_at[i] < '0' || port_at[i] > '9')
                return -1;
            v = v * 10 + (unsigned)(port_at[i] - '0');
        }
        if (v == 0 || v > 65535)
            return -1;
        u->port = (uint16_t)v;
        u->port_given = true;
    }
    if (auth_end == end) {
        u->target = "/";
        u->target_len = 1;
        return 0;
    }
    if (*auth_end != '/')
        return -1; /* "http://host?query": rare, curl's */
    u->target = auth_end;
    u->target_len = (size_t)(end - auth_end);
    const char *qm = memchr(u->target, '?', u->target_len);
    if (has_dot_segment(u->target, qm ? (size_t)(qm - u->target) : u->target_len))
        return -1;
    return 0;
}

/* ---------- proxies from the environment ---------- */

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

bool h1_no_proxy_match(const char *no_proxy, const char *host, size_t host_len)
{
    if (no_proxy == NULL || *no_proxy == '\0' || host_len == 0)
        return false;
    if (strcmp(no_proxy, "*") == 0)
        return true;
    char tmp[64];
    bool is_ip = false;
    if (host_len < sizeof(tmp)) {
        memcpy(tmp, host, host_len);
        tmp[host_len] = '\0';
        unsigned char a[16];
        is_ip = uv_inet_pton(AF_INET, tmp, a) == 0 || uv_inet_pton(AF_INET6, tmp, a) == 0;
    }
    size_t nlen = host_len;
    if (!is_ip && nlen > 0 && host[nlen - 1] == '.')
        nlen--;
    const char *p = no_proxy;
    while (*p) {
        while (*p && blank(*p))
            p++;
        const char *tok = p;
        while (*p && !blank(*p) && *p != ',')
            p++;
        size_t tlen = (size_t)(p - tok);
        if (tlen) {
            if (is_ip) {
                /* exact text only: a CIDR or another spelling of the address is curl's call */
                if (tlen == host_len && memcmp(tok, host, tlen) == 0)
                    return true;
            } else {
                if (tok[tlen - 1] == '.')
                    tlen--;
                if (tlen && *tok == '.') {
                    tok++;
                    tlen--;
                }
                if (tlen && tlen == nlen && strncasecmp(tok, host, nlen) == 0)
                    return true;
                if (tlen && tlen < nlen && host[nlen - tlen - 1] == '.' &&
                    strncasecmp(tok, host + (nlen - tlen), tlen) == 0)
                    return true;
            }
        }
        while (*p && blank(*p))
            p++;
        while (*p == ',')
            p++;
    }
    return false;
}

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

/* ---------- transfers ---------- */

static void xfer_finish(struct up_xfer *x, enum up_result result, const char *err)
{
    x->finished = true;
    x->t_done_us = time_mono_us();
    x->result = result;
    if (result != UP_OK && err && err != x->errbuf && err != x->abort_reason)
        snprintf(x->errbuf, sizeof(x->errbuf), "%s", err);
    if (!x->cancelled && x->cb.on_done) {
        x->cancelled = true; /* no further callbacks; a cancel from inside on_done is a no-op */
        x->cb.on_done(x, result, x->ud);
    }
    up_xfer_destroy(x);
}

static struct up_xfer *conn_detach(struct h1conn *k)
{
    struct up_xfer *x = k->x;
    k->x = NULL;
    if (x)
        x->native = NULL;
    return x;
}

static void conn_attach(struct h1conn *k, struct up_xfer *x)
{
    k->x = x;
    x->native = k;
    k->rx = 0;
    h1_resp_init(&k->resp, x);
}

/* The transfer ends on k (whatever becomes of k). */
static struct up_xfer *conn_release(struct h1conn *k)
{
    if (k->x)
        k->host->inflight--;
    return conn_detach(k);
}

/* The transfer failed: the connection cannot be trusted any more. */
static void xfer_fail(struct h1conn *k, enum up_result result, const char *msg)
{
    struct up_xfer *x = conn_release(k);
    conn_close(k);
    if (x == NULL)
        return;
    xfer_finish(x, result == UP_OK ? UP_E_OTHER : result, msg ? msg : "transfer failed");
}

/* Cancelled from inside one of its callbacks: tear down without on_done. */
static void xfer_drop(struct h1conn *k)
{
    struct up_xfer *x = conn_release(k);
    conn_close(k);
    if (x)
        up_xfer_destroy(x);
}

/* ---------- connections ---------- */

static void on_conn_timer(uv_timer_t *t);
static void on_connect(uv_connect_t *req, int status);
static void on_write(uv_write_t *req, int status);

static void client_maybe_free(struct h1client *c);

static void on_handle_closed(uv_handle_t *h)
{
    struct h1conn *k = h->data;
    if (--k->closes_pending > 0)
        return;
    struct h1client *c = k->c;
    if (k->ssl) {
        /* OpenSSL marks the session not resumable when a connection ends without close_notify, as most
         * keep-alive connections do (idle timeouts, the server's own). Only a TLS failure should cost the
         * next connection its resumption. */
        if (!k->tls_bad && SSL_is_init_finished(k->ssl)) {
            SSL_set_quiet_shutdown(k->ssl, 1);
            SSL_shutdown(k->ssl);
        }
        SSL_free(k->ssl);
        ERR_clear_error();
    }
    buf_free(&k->head);
    h1_resp_free(&k->resp);
    xfree(k);
    c->closing_conns--;
    client_maybe_free(c);
}

/* Closes at once (a half-read response cannot be reused). The transfer must have been detached. */
static void conn_close(struct h1conn *k)
{
    if (k->state == CONN_CLOSING)
        return;
    struct h1client *c = k->c;
    if (k->state == CONN_IDLE) {
        k->host->nidle--;
        c->nidle--;
    }
    list_remove(k);
    if (k->prev)
        k->prev->next = k->next;
    else
        c->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    c->nconns--;
    k->state = CONN_CLOSING;
    c->closing_conns++;
    uv_timer_stop(&k->timer);
    k->closes_pending = 2;
    uv_close((uv_handle_t *)&k->timer, on_handle_closed);
    uv_close((uv_handle_t *)&k->tcp, on_handle_closed);
}

/* Freed by on_handle_closed after conn_close. */
static struct h1conn *conn_new(struct h1client *c, struct h1host *h)
{
    struct h1conn *k = xcalloc(1, sizeof(*k));
    k->c = c;
    k->host = h;
    k->state = CONN_NEW;
    uv_tcp_init(c->loop, &k->tcp);
    uv_tcp_nodelay(&k->tcp, 1);       /* applied when the socket is created */
    uv_tcp_keepalive(&k->tcp, 1, 60); /* long streams through middleboxes that drop quiet flows */
    uv_timer_init(c->loop, &k->timer);
    k->due_ms = UINT64_MAX;
    k->tcp.data = k;
    k->timer.data = k;
    k->creq.data = k;
    k->wreq.data = k;
    buf_init(&k->head, BUF_UNBOUNDED);
    k->next = c->conns;
    if (c->conns)
        c->conns->prev = k;
    c->conns = k;
    c->nconns++;
    return k;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct h1conn *k = h->data;
    *b = uv_buf_init(k->c->rbuf, READ_BUF_SIZE);
}

static void conn_read_start(struct h1conn *k)
{
    if (k->reading || k->state == CONN_CLOSING)
        return;
    if (uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_conn_read) == 0)
        k->reading = true;
}

static void conn_read_stop(struct h1conn *k)
{
    if (!k->reading)
        return;
    uv_read_stop((uv_stream_t *)&k->tcp);
    k->reading = false;
}

static void timer_at(struct h1conn *k, uint64_t due)
{
    uint64_t now = uv_now(k->c->loop);
    k->due_ms = due;
    uv_timer_start(&k->timer, on_conn_timer, due > now ? due - now : 0, 0);
}

/* A failure found where on_done must not run yet (inside h1_start): reported from the timer, next loop turn. */
static void conn_fail_soon(struct h1conn *k, enum up_result result)
{
    k->fail_soon = true;
    k->fail_result = result;
    timer_at(k, 0);
}

/* Arms the timer for the transfer's nearest deadline. Lazily, as nginx does: a timer already due earlier is
 * left alone (it fires, finds nothing due and re-arms), so a busy keep-alive connection touches the timer heap
 * about once per deadline period instead of twice per request. */
static void conn_arm_timer(struct h1conn *k)
{
    struct up_xfer *x = k->x;
    const struct up_request *rq = &x->req;
    uint64_t due = UINT64_MAX;
    if (k->state == CONN_NEW || k->state == CONN_CONNECTING || k->state == CONN_HANDSHAKE)
        due = (uint64_t)(rq->connect_timeout_ms > 0 ? rq->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS);
    if (!x->headers_done && rq->first_byte_timeout_ms > 0 && (uint64_t)rq->first_byte_timeout_ms < due)
        due = (uint64_t)rq->first_byte_timeout_ms;
    if (rq->timeout_ms > 0 && (uint64_t)rq->timeout_ms < due)
        due = (uint64_t)rq->timeout_ms;
    if (due == UINT64_MAX) {
        if (k->due_ms != UINT64_MAX) {
            uv_timer_stop(&k->timer);
            k->due_ms = UINT64_MAX;
        }
        return;
    }
    due += k->t0_ms;
    if (k->due_ms <= due)
        return;
    timer_at(k, due);
}

/* A fresh connection for k's transfer (a retry, or the next address of the host); k is closed. */
static struct h1conn *conn_replace(struct h1conn *k, unsigned addr_i)
{
    struct h1conn *n = conn_new(k->c, k->host);
    struct up_xfer *x = conn_detach(k);
    conn_attach(n, x);
    n->t0_ms = k->t0_ms;
    n->retried = k->retried;
    n->last_err = k->last_err;
    n->addr_i = addr_i;
    struct buf head = n->head; /* the request head moves along; k's write, if any, dies with k */
    n->head = k->head;
    k->head = head;
    conn_close(k);
    conn_arm_timer(n);
    return n;
}

static void connect_failed(struct h1conn *k, bool defer)
{
    struct h1host *h = k->host;
    struct up_xfer *x = k->x;
    snprintf(x->errbuf, sizeof(x->errbuf), "Failed to connect to %s port %u: %s", h->name, (unsigned)h->port,
             err_text(k->last_err));
    if (!h->numeric)
        h->addrs_expire_ms = 0; /* the next connection looks the name up again */
    if (defer)
        conn_fail_soon(k, UP_E_CONNECT);
    else
        xfer_fail(k, UP_E_CONNECT, x->errbuf);
}

/* Connects to the host's address k->addr_i, failing over to the next ones on immediate errors. */
static void conn_connect(struct h1conn *k)
{
    struct h1host *h = k->host;
    for (;;) {
        int rc = uv_tcp_connect(&k->creq, &k->tcp, (const struct sockaddr *)&h->addrs[k->addr_i], on_connect);
        if (rc == 0) {
            k->state = CONN_CONNECTING;
            return;
        }
        k->last_err = rc;
        if (k->addr_i + 1 >= (unsigned)h->naddrs) {
            connect_failed(k, true);
            return;
        }
        k = conn_replace(k, k->addr_i + 1);
    }
}

static void on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct h1dns *d = (struct h1dns *)req;
    struct h1client *c = d->c;
    struct h1host *h = d->host;
    c->lookups--;
    xfree(d);
    if (h == NULL || c->closing) {
        uv_freeaddrinfo(res);
        client_maybe_free(c);
        return;
    }
    h->lookup = NULL;
    int n = 0;
    struct sockaddr_storage addrs[H1_MAX_ADDRS];
    for (struct addrinfo *ai = status == 0 ? res : NULL; ai && n < H1_MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in *sa = (struct sockaddr_in *)&addrs[n++];
            memcpy(sa, ai->ai_addr, sizeof(*sa));
            sa->sin_port = htons(h->port);
        } else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&addrs[n++];
            memcpy(sa, ai->ai_addr, sizeof(*sa));
            sa->sin6_port = htons(h->port);
        }
    }
    uv_freeaddrinfo(res);
    if (n > 0) {
        memcpy(h->addrs, addrs, sizeof(addrs[0]) * (size_t)n);
        h->naddrs = n;
        h->addrs_expire_ms = uv_now(c->loop) + H1_DNS_TTL_MS;
    } else if (h->naddrs > 0) {
        log_warn("upstream: looking up %s failed (%s); using the addresses it had", h->name, uv_strerror(status));
    }
    /* The waiters as a batch: what runs below (on_done) may queue new ones behind a new lookup. A connection
     * closed meanwhile leaves the batch by itself (list_remove). */
    struct h1conn *batch = NULL;
    while (h->waiting) {
        struct h1conn *k = h->waiting;
        list_remove(k);
        list_push(&batch, k);
    }
    while (batch) {
        struct h1conn *k = batch;
        list_remove(k);
        if (h->naddrs > 0) {
            k->addr_i = 0;
            conn_connect(k);
        } else {
            snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Could not resolve host: %s", h->name);
            xfer_fail(k, UP_E_DNS, k->x->errbuf);
        }
    }
}

/* A new connection: addresses from the cache, or a lookup in the thread pool (shared by everyone waiting). */
static void conn_start(struct h1conn *k)
{
    struct h1client *c = k->c;
    struct h1host *h = k->host;
    if (h->naddrs > 0 && (h->numeric || uv_now(c->loop) < h->addrs_expire_ms)) {
        k->addr_i = 0;
        conn_connect(k);
        return;
    }
    list_push(&h->waiting, k);
    if (h->lookup)
        return;
    struct h1dns *d = xcalloc(1, sizeof(*d));
    d->c = c;
    d->host = h;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    int rc = uv_getaddrinfo(c->loop, &d->req, on_dns, h->name, NULL, &hints);
    if (rc != 0) {
        xfree(d);
        list_remove(k);
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Could not resolve host: %s (%s)", h->name, uv_strerror(rc));
        conn_fail_soon(k, UP_E_DNS);
        return;
    }
    h->lookup = d;
    c->lookups++;
}

/* The server dropped a reused connection before answering anything: send once more on a fresh one. */
static bool conn_retry(struct h1conn *k)
{
    if (k->nreq < 2 || k->retried || k->rx > 0 || k->c->closing)
        return false;
    k->c->retries++;
    struct h1conn *n = conn_replace(k, 0);
    n->retried = true;
    conn_start(n);
    return true;
}

static void xfer_complete(struct h1conn *k, bool clean)
{
    bool reuse = clean && k->resp.keep_alive && k->writes == 0 && k->state == CONN_ACTIVE &&
                 !(k->ssl && SSL_pending(k->ssl) > 0);
    struct up_xfer *x = conn_release(k);
    if (reuse)
        conn_to_pool(k);
    else
        conn_close(k);
    xfer_finish(x, UP_OK, NULL);
}

/* What the parser said about k's transfer. Returns true while the transfer runs on k and wants more input. */
static bool conn_after_parse(struct h1conn *k, int st)
{
    switch (st) {
    case H1_RESP_MORE:
        return true;
    case H1_RESP_PAUSED:
        conn_read_stop(k); /* until resume */
        return false;
    case H1_RESP_COMPLETE:
        xfer_complete(k, !k->resp.trailing);
        return false;
    case H1_RESP_CANCELLED:
        xfer_drop(k);
        return false;
    default:
        xfer_fail(k, k->resp.result, k->resp.error);
        return false;
    }
}

/* The peer ended the byte stream (a TCP FIN, or a TLS close_notify). */
static void conn_eof(struct h1conn *k)
{
    if (k->state == CONN_HANDSHAKE) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "TLS connect error: the server closed the connection");
        xfer_fail(k, UP_E_TLS, k->x->errbuf);
        return;
    }
    if (conn_retry(k))
        return;
    if (h1_resp_eof(&k->resp) == H1_RESP_COMPLETE)
        xfer_complete(k, false);
    else
        xfer_fail(k, k->resp.result, k->resp.error);
}

/* ---------- TLS (memory BIOs: ciphertext in from the socket, out through uv_write) ---------- */

struct tls_wreq {
    uv_write_t w;
    char data[];
};

static void on_write_done(struct h1conn *k, int status);

static void on_tls_write(uv_write_t *req, int status)
{
    struct h1conn *k = req->data;
    xfree(req); /* struct tls_wreq starts with its uv_write_t */
    on_write_done(k, status);
}

/* Sends what OpenSSL queued in the write BIO: at once if the socket takes it, a copy of the rest queued. Returns
 * 0 or a uv error. */
static int tls_flush(struct h1conn *k)
{
    BIO *wb = SSL_get_wbio(k->ssl);
    char *p = NULL;
    long n = BIO_get_mem_data(wb, &p);
    if (n <= 0)
        return 0;
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    int done = uv_try_write((uv_stream_t *)&k->tcp, &b, 1); /* UV_EAGAIN while earlier bytes are queued */
    if (done < 0 && done != UV_EAGAIN) {
        (void)BIO_reset(wb);
        return done;
    }
    size_t off = done > 0 ? (size_t)done : 0;
    if (off == (size_t)n) {
        (void)BIO_reset(wb);
        return 0;
    }
    struct tls_wreq *w = xmalloc(sizeof(*w) + (size_t)n - off);
    memcpy(w->data, p + off, (size_t)n - off);
    (void)BIO_reset(wb);
    w->w.data = k;
    b = uv_buf_init(w->data, (unsigned)((size_t)n - off));
    int rc = uv_write(&w->w, (uv_stream_t *)&k->tcp, &b, 1, on_tls_write);
    if (rc != 0) {
        xfree(w);
        return rc;
    }
    k->writes++;
    return 0;
}

/* Why TLS failed, in curl's words where it has them, into x->errbuf. */
static void tls_errmsg(struct h1conn *k, const char *what)
{
    struct up_xfer *x = k->x;
    k->tls_bad = true;
    long vr = SSL_get_verify_result(k->ssl);
    unsigned long e = ERR_peek_last_error();
    if (vr != X509_V_OK) {
        snprintf(x->errbuf, sizeof(x->errbuf), "SSL certificate problem: %s", X509_verify_cert_error_string(vr));
    } else if (e) {
        char tmp[160];
        ERR_error_string_n(e, tmp, sizeof(tmp));
        snprintf(x->errbuf, sizeof(x->errbuf), "%s: %s", what, tmp);
    } else {
        snprintf(x->errbuf, sizeof(x->errbuf), "%s", what);
    }
    ERR_clear_error();
}

static void tls_fail(struct h1conn *k, const char *what)
{
    tls_errmsg(k, what);
    xfer_fail(k, UP_E_TLS, k->x->errbuf);
}

static void tls_handshake(struct h1conn *k)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(k->ssl);
    int e = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(k->ssl, rc);
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
        tls_fail(k, "TLS connect error");
        return;
    }
    int wrc = tls_flush(k);
    if (wrc != 0) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Send failure: %s", err_text(wrc));
        xfer_fail(k, UP_E_TLS, k->x->errbuf); /* during the handshake, as curl's SSL connect error */
        return;
    }
    if (e == SSL_ERROR_WANT_READ)
        return;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(k->ssl, &alpn, &alpn_len);
    if (alpn_len && !(alpn_len == 8 && memcmp(alpn, "http/1.1", 8) == 0)) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "TLS connect error: the server chose ALPN %.*s", (int)alpn_len,
                 (const char *)alpn);
        xfer_fail(k, UP_E_TLS, k->x->errbuf);
        return;
    }
    k->state = CONN_ACTIVE;
    conn_send(k);
}

/* Decrypts what the read BIO holds and parses it. Returns true while the transfer wants more input. */
static bool tls_drain(struct h1conn *k)
{
    char *plain = k->c->tbuf;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(k->ssl, plain, TLS_PLAIN_SIZE);
        if (n > 0) {
            k->rx += (uint64_t)n;
            if (!conn_after_parse(k, h1_resp_feed(&k->resp, plain, (size_t)n)))
                return false;
            continue;
        }
        int e = SSL_get_error(k->ssl, n);
        int wrc = tls_flush(k); /* a key update or a renegotiation may have something to say */
        if (e == SSL_ERROR_WANT_READ && wrc == 0)
            return true;
        if (e == SSL_ERROR_ZERO_RETURN) {
            conn_eof(k);
            return false;
        }
        if (wrc != 0) {
            snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Send failure: %s", err_text(wrc));
            xfer_fail(k, k->x->headers_done ? UP_E_RESET : UP_E_RESET_BEFORE_HEADERS, k->x->errbuf);
            return false;
        }
        tls_fail(k, "TLS receive error");
        return false;
    }
}

/* Ciphertext from the socket. */
static void tls_input(struct h1conn *k, const char *data, size_t len)
{
    BIO_write(SSL_get_rbio(k->ssl), data, (int)len); /* a memory BIO takes it all */
    if (k->state == CONN_HANDSHAKE)
        tls_handshake(k);
    else
        tls_drain(k);
}

/* Bytes on a pooled TLS connection: a late session ticket or a key update keeps it; application data, an
 * alert or close_notify ends it. */
static bool tls_idle_input(struct h1conn *k, const char *data, size_t len)
{
    BIO_write(SSL_get_rbio(k->ssl), data, (int)len);
    ERR_clear_error();
    int n = SSL_read(k->ssl, k->c->tbuf, TLS_PLAIN_SIZE);
    bool keep = n <= 0 && SSL_get_error(k->ssl, n) == SSL_ERROR_WANT_READ && tls_flush(k) == 0;
    ERR_clear_error();
    return keep;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct h1conn *k = SSL_get_app_data(ssl);
    if (k == NULL || k->state == CONN_CLOSING)
        return 0;
    struct h1host *h = k->host;
    if (h->session)
        SSL_SESSION_free(h->session);
    h->session = sess;
    return 1; /* the reference is ours now */
}

/* One TLS context per loop, made at the first https transfer: the system store plus gateway.ca_file. */
static SSL_CTX *client_ssl_ctx(struct h1client *c)
{
    if (c->ssl_ctx || c->ssl_ctx_failed)
        return c->ssl_ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        c->ssl_ctx_failed = true;
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle pooled connections keep no 34 KiB of buffers */
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        log_warn("upstream TLS: the system certificate store could not be loaded");
    if (c->ca_file && SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1) {
        log_error("upstream TLS: cannot load gateway.ca_file %s", c->ca_file);
        SSL_CTX_free(ctx);
        ERR_clear_error();
        c->ssl_ctx_failed = true;
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    ERR_clear_error();
    c->ssl_ctx = ctx;
    return ctx;
}

/* TCP is up: start the handshake (SNI and the name or address to verify, ALPN http/1.1, TLS 1.2 or later). */
static void tls_start(struct h1conn *k)
{
    struct h1host *h = k->host;
    SSL_CTX *ctx = client_ssl_ctx(k->c);
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (ssl == NULL) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "TLS connect error: %s",
                 k->c->ca_file ? "cannot load gateway.ca_file" : "cannot set up TLS");
        xfer_fail(k, UP_E_TLS, k->x->errbuf);
        return;
    }
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rb, -1); /* empty means "wait for more", not end of stream */
    SSL_set_bio(ssl, rb, wb);
    SSL_set_connect_state(ssl);
    SSL_set_app_data(ssl, k);
    k->ssl = ssl;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = 1;
    if (h->numeric) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, h->name); /* no SNI for addresses (RFC 6066) */
    } else {
        ok = SSL_set_tlsext_host_name(ssl, h->name) == 1 && X509_VERIFY_PARAM_set1_host(param, h->name, h->name_len);
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    if (!ok || SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1) != 0) {
        tls_fail(k, "TLS connect error");
        return;
    }
    if (h->session)
        SSL_set_session(ssl, h->session);
    k->state = CONN_HANDSHAKE;
    conn_read_start(k);
    tls_handshake(k);
}

/* ---------- reading and writing ---------- */

static void on_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct h1conn *k = s->data;
    if (nread == 0 || k->state == CONN_CLOSING)
        return;
    struct up_xfer *x = k->x;
    if (x == NULL) {
        /* In the pool: the server closed it, or sent something nobody asked for. Either way it is done. */
        if (!(nread > 0 && k->ssl && tls_idle_input(k, b->base, (size_t)nread)))
            conn_close(k);
        return;
    }
    if (nread > 0) {
        if (k->ssl) {
            tls_input(k, b->base, (size_t)nread);
            return;
        }
        k->rx += (uint64_t)nread;
        conn_after_parse(k, h1_resp_feed(&k->resp, b->base, (size_t)nread));
        return;
    }
    if (nread == UV_EOF) {
        conn_eof(k); /* TLS: a server closing without close_notify ends the stream the same way (as curl) */
        return;
    }
    if (conn_retry(k))
        return;
    snprintf(x->errbuf, sizeof(x->errbuf), "Recv failure: %s", err_text((int)nread));
    xfer_fail(k, x->headers_done ? UP_E_RESET : UP_E_RESET_BEFORE_HEADERS, x->errbuf);
}

static void on_write_done(struct h1conn *k, int status)
{
    k->writes--;
    if (status == 0 || k->state == CONN_CLOSING || k->x == NULL)
        return;
    if (k->rx > 0)
        return; /* the server answered already (an early error response): let the read side finish it */
    if (conn_retry(k))
        return;
    snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Send failure: %s", err_text(status));
    xfer_fail(k, UP_E_RESET_BEFORE_HEADERS, k->x->errbuf); /* nothing of the response came back (rx == 0) */
}

static void on_write(uv_write_t *req, int status)
{
    on_write_done(req->data, status);
}

/* Writes at once what the socket takes (the usual case: no write request, no callback to wait for before the
 * connection can be reused), and queues the rest with the connection's write request. Returns 0 or a uv error. */
static int conn_write(struct h1conn *k, uv_buf_t *b, unsigned nb)
{
    int done = uv_try_write((uv_stream_t *)&k->tcp, b, nb);
    if (done < 0 && done != UV_EAGAIN)
        return done;
    size_t off = done > 0 ? (size_t)done : 0;
    unsigned i = 0;
    while (i < nb && off >= b[i].len) {
        off -= b[i].len;
        i++;
    }
    if (i == nb)
        return 0;
    b[i].base += off;
    b[i].len -= off;
    int rc = uv_write(&k->wreq, (uv_stream_t *)&k->tcp, b + i, nb - i, on_write);
    if (rc == 0)
        k->writes++;
    return rc;
}

/* The request in one write: head and body as two buffers of one writev (through TLS: two records, one write). */
static void conn_send(struct h1conn *k)
{
    struct up_xfer *x = k->x;
    uv_buf_t b[2];
    unsigned nb = 1;
    b[0] = uv_buf_init(k->head.data, (unsigned)k->head.len);
    bool get = x->req.method && strcmp(x->req.method, "GET") == 0;
    if (!get && x->req.body.len > 0)
        b[nb++] = uv_buf_init(x->req.body.data, (unsigned)x->req.body.len);
    k->nreq++;
    int rc;
    if (k->ssl) {
        ERR_clear_error();
        for (unsigned i = 0; i < nb; i++) {
            if (SSL_write(k->ssl, b[i].base, (int)b[i].len) <= 0) {
                tls_errmsg(k, "TLS send error");
                conn_fail_soon(k, UP_E_TLS); /* this may run inside h1_start */
                return;
            }
        }
        rc = tls_flush(k);
    } else {
        rc = conn_write(k, b, nb);
    }
    if (rc != 0) {
        if (conn_retry(k)) /* a pooled connection the server had closed (EPIPE, ECONNRESET) */
            return;
        snprintf(x->errbuf, sizeof(x->errbuf), "Send failure: %s", err_text(rc));
        conn_fail_soon(k, UP_E_RESET_BEFORE_HEADERS); /* this may run inside h1_start */
        return;
    }
    conn_read_start(k);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct h1conn *k = req->data;
    if (k->state != CONN_CONNECTING)
        return; /* closed meanwhile: UV_ECANCELED */
    if (status < 0) {
        k->last_err = status;
        if (k->addr_i + 1 < (unsigned)k->host->naddrs) {
            struct h1conn *n = conn_replace(k, k->addr_i + 1);
            conn_connect(n);
            return;
        }
        connect_failed(k, false);
        return;
    }
    k->c->connects++;
    if (k->host->tls) {
        tls_start(k);
        return;
    }
    k->state = CONN_ACTIVE;
    conn_send(k);
}

static void conn_to_pool(struct h1conn *k)
{
    struct h1client *c = k->c;
    struct h1host *h = k->host;
    /* Keep as many idle connections as the host recently had transfers running at once (they come back in
     * bursts and want them again), at least H1_MIN_IDLE_PER_HOST and at most H1_MAX_IDLE_PER_HOST: a fixed
     * small bound closes and reopens connections all the time under high concurrency. */
    uint64_t now = uv_now(c->loop);
    unsigned keep = h->peak < H1_MIN_IDLE_PER_HOST   ? H1_MIN_IDLE_PER_HOST
                    : h->peak > H1_MAX_IDLE_PER_HOST ? H1_MAX_IDLE_PER_HOST
                                                     : h->peak;
    if (c->closing || h->nidle >= keep) {
        conn_close(k);
        return;
    }
    k->state = CONN_IDLE;
    list_push(&h->idle, k);
    h->nidle++;
    c->nidle++;
    k->idle_since_ms = now;
    if (k->due_ms == UINT64_MAX)
        timer_at(k, k->idle_since_ms + c->idle_timeout_ms); /* else the armed deadline fires first and re-arms */
    conn_read_start(k);                                     /* a close by the server while idle is noticed at once */
}

static void on_conn_timer(uv_timer_t *t)
{
    struct h1conn *k = t->data;
    k->due_ms = UINT64_MAX;
    if (k->state == CONN_CLOSING)
        return;
    struct up_xfer *x = k->x;
    if (x == NULL) {
        uint64_t expire = k->idle_since_ms + k->c->idle_timeout_ms;
        if (uv_now(k->c->loop) >= expire)
            conn_close(k); /* idle too long */
        else
            timer_at(k, expire);
        return;
    }
    if (k->fail_soon) {
        xfer_fail(k, k->fail_result, x->errbuf);
        return;
    }
    const struct up_request *rq = &x->req;
    unsigned long long el = (unsigned long long)(uv_now(k->c->loop) - k->t0_ms);
    if (!x->headers_done && rq->first_byte_timeout_ms > 0 && el >= (unsigned long long)rq->first_byte_timeout_ms) {
        snprintf(x->abort_reason, sizeof(x->abort_reason), "no response headers within %ld ms (timed out)",
                 rq->first_byte_timeout_ms);
        xfer_fail(k, UP_E_FIRST_BYTE_TIMEOUT, x->abort_reason);
        return;
    }
    long ct = rq->connect_timeout_ms > 0 ? rq->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    if ((k->state == CONN_NEW || k->state == CONN_CONNECTING || k->state == CONN_HANDSHAKE) &&
        el >= (unsigned long long)ct) {
        snprintf(x->errbuf, sizeof(x->errbuf), "%s timed out after %llu milliseconds",
                 k->state == CONN_NEW         ? "Resolving"
                 : k->state == CONN_HANDSHAKE ? "TLS handshake"
                                              : "Connection",
                 el);
        xfer_fail(k, UP_E_CONNECT_TIMEOUT, x->errbuf);
        return;
    }
    if (rq->timeout_ms > 0 && el >= (unsigned long long)rq->timeout_ms) {
        snprintf(x->errbuf, sizeof(x->errbuf), "Operation timed out after %llu milliseconds with %llu bytes received",
                 el, (unsigned long long)x->bytes_in);
        xfer_fail(k, UP_E_TIMEOUT, x->errbuf);
        return;
    }
    conn_arm_timer(k);
}

/* ---------- hosts ---------- */

#define MAX_HOSTS 1024

static struct h1host *host_get(struct h1client *c, const struct h1_url *u)
{
    unsigned n = 0;
    for (struct h1host *h = c->hosts; h; h = h->next, n++)
        if (h->port == u->port && h->tls == u->tls && h->name_len == u->host_len &&
            memcmp(h->name, u->host, u->host_len) == 0)
            return h;
    if (n >= MAX_HOSTS)
        return NULL; /* a configuration with that many upstream hosts: curl takes the rest */
    struct h1host *h = xcalloc(1, sizeof(*h));
    h->name = xstrndup(u->host, u->host_len);
    h->name_len = u->host_len;
    h->port = u->port;
    h->tls = u->tls;
    h->ipv6 = u->ipv6;
    if (u->ipv6) {
        if (uv_ip6_addr(h->name, h->port, (struct sockaddr_in6 *)&h->addrs[0]) != 0) {
            xfree(h->name);
            xfree(h);
            return NULL;
        }
        h->numeric = true;
        h->naddrs = 1;
    } else if (uv_ip4_addr(h->name, h->port, (struct sockaddr_in *)&h->addrs[0]) == 0) {
        h->numeric = true;
        h->naddrs = 1;
    }
    /* The Host header as curl writes it: the port only when it is not the scheme's default. */
    struct buf a = BUF_INIT(BUF_UNBOUNDED);
    if (u->ipv6)
        buf_append_char(&a, '[');
    buf_append(&a, u->host, u->host_len);
    if (u->ipv6)
        buf_append_char(&a, ']');
    if (h->port != (u->tls ? 443 : 80)) {
        buf_append_char(&a, ':');
        buf_append_u64(&a, h->port);
    }
    h->authority = buf_steal(&a, &h->authority_len);
    const char *proxy = u->tls ? c->https_proxy : c->http_proxy;
    if (proxy == NULL)
        proxy = c->all_proxy;
    h->proxied = proxy && !h1_no_proxy_match(c->no_proxy, h->name, h->name_len);
    h->next = c->hosts;
    c->hosts = h;
    return h;
}

/* ---------- the request ---------- */

static void build_head(struct buf *b, const struct up_xfer *x, const struct h1_url *u, const struct h1host *h)
{
    buf_reset(b);
    const char *m = x->req.method ? x->req.method : "POST";
    bool get = strcmp(m, "GET") == 0;
    buf_append_str(b, m);
    buf_append_char(b, ' ');
    buf_append(b, u->target, u->target_len);
    buf_append(b, " HTTP/1.1\r\n", 11);
    bool has_host = false;
    const char *p = x->req.headers.data, *end = p ? p + x->req.headers.len : NULL;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *le = nl ? nl : end;
        p = nl ? nl + 1 : end;
        if (le > line && le[-1] == '\r')
            le--;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (colon == NULL || colon == line)
            continue;
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        if (v == le)
            continue; /* "Name:" with no value: curl's way of saying "do not send it" (Expect:) */
        size_t nlen = (size_t)(colon - line);
        if (nlen == 4 && strncasecmp(line, "host", 4) == 0)
            has_host = true;
        else if ((nlen == 14 && strncasecmp(line, "content-length", 14) == 0) ||
                 (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0))
            continue; /* the framing is ours */
        buf_append(b, line, (size_t)(le - line));
        buf_append(b, "\r\n", 2);
    }
    if (!has_host) {
        buf_append(b, "Host: ", 6);
        buf_append(b, h->authority, h->authority_len);
        buf_append(b, "\r\n", 2);
    }
    if (!get) {
        buf_append(b, "Content-Length: ", 16);
        buf_append_u64(b, x->req.body.len);
        buf_append(b, "\r\n", 2);
    }
    buf_append(b, "\r\n", 2);
}

/* ---------- public ---------- */

int h1_start(struct h1client *c, struct up_xfer *x)
{
    struct h1_url u;
    if (c->closing || h1_parse_url(x->req.url.data, x->req.url.len, &u) != 0)
        return -1;
    if (x->req.body.len > INT_MAX)
        return -1; /* one uv_buf_t, one SSL_write */
    struct h1host *h = host_get(c, &u);
    if (h == NULL || h->proxied)
        return -1;
    struct h1conn *k = h->idle;
    if (k) {
        list_remove(k);
        h->nidle--;
        c->nidle--;
        k->state = CONN_ACTIVE;
        c->reuses++;
    } else {
        k = conn_new(c, h);
    }
    conn_attach(k, x);
    k->t0_ms = uv_now(c->loop);
    if (k->t0_ms - h->peak_ms >= c->idle_timeout_ms) {
        h->peak = 0; /* a new window of about one idle timeout */
        h->peak_ms = k->t0_ms;
    }
    if (++h->inflight > h->peak)
        h->peak = h->inflight;
    k->retried = false;
    k->fail_soon = false;
    k->addr_i = 0;
    build_head(&k->head, x, &u, h);
    conn_arm_timer(k);
    if (k->state == CONN_ACTIVE)
        conn_send(k);
    else
        conn_start(k);
    return 0;
}

void h1_cancel(struct up_xfer *x)
{
    if (x->cancelled)
        return;
    x->cancelled = true;
    if (x->in_callback || x->finished)
        return; /* torn down when the callback returns */
    struct h1conn *k = x->native;
    if (k)
        xfer_drop(k);
    else
        up_xfer_destroy(x);
}

void h1_resume(struct up_xfer *x)
{
    if (!x->paused || x->cancelled || x->in_callback)
        return;
    struct h1conn *k = x->native;
    if (!conn_after_parse(k, h1_resp_resume(&k->resp)))
        return;
    if (k->ssl && !tls_drain(k)) /* records decrypted while paused wait inside OpenSSL */
        return;
    conn_read_start(k);
}

struct h1client *h1_new(uv_loop_t *loop, const char *ca_file)
{
    struct h1client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->rbuf = xmalloc(READ_BUF_SIZE);
    c->tbuf = xmalloc(TLS_PLAIN_SIZE);
    c->idle_timeout_ms = H1_IDLE_TIMEOUT_MS;
    c->ca_file = ca_file && *ca_file ? xstrdup(ca_file) : NULL;
    /* curl's rules: http_proxy only in lower case (httpoxy), the others in either case */
    c->http_proxy = env_dup("http_proxy", NULL);
    c->https_proxy = env_dup("https_proxy", "HTTPS_PROXY");
    c->all_proxy = env_dup("all_proxy", "ALL_PROXY");
    c->no_proxy = env_dup("no_proxy", "NO_PROXY");
    return c;
}

static void client_maybe_free(struct h1client *c)
{
    if (!c->closing || c->closing_conns > 0 || c->lookups > 0)
        return;
    while (c->hosts) {
        struct h1host *h = c->hosts;
        c->hosts = h->next;
        xfree(h->name);
        xfree(h->authority);
        if (h->session)
            SSL_SESSION_free(h->session);
        xfree(h);
    }
    if (c->ssl_ctx)
        SSL_CTX_free(c->ssl_ctx);
    xfree(c->ca_file);
    xfree(c->tbuf);
    xfree(c->http_proxy);
    xfree(c->https_proxy);
    xfree(c->all_proxy);
    xfree(c->no_proxy);
    xfree(c->rbuf);
    xfree(c);
}

void h1_free(struct h1client *c)
{
    if (c == NULL)
        return;
    c->closing = true;
    int dropped = 0;
    while (c->conns) {
        struct h1conn *k = c->conns;
        struct up_xfer *x = conn_release(k);
        conn_close(k);
        if (x) {
            x->cancelled = true;
            up_xfer_destroy(x);
            dropped++;
        }
    }
    if (dropped)
        log_warn("upstream: %d transfers still attached at shutdown", dropped);
    for (struct h1host *h = c->hosts; h; h = h->next) {
        if (h->lookup) {
            h->lookup->host = NULL;
            uv_cancel((uv_req_t *)&h->lookup->req); /* if it has not started; otherwise it returns on its own */
            h->lookup = NULL;
        }
    }
    client_maybe_free(c);
}

void h1_get_stats(const struct h1client *c, struct h1_stats *out)
{
    out->open = c->nconns;
    out->idle = c->nidle;
    out->connects = c->connects;
    out->reuses = c->reuses;
    out->retries = c->retries;
}

void h1_set_idle_timeout(struct h1client *c, uint64_t ms)
{
    c->idle_timeout_ms = ms;
}
