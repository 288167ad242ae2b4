/* h1client.c: agentd's HTTP/1.1 upstream client (net/h1client.h): hosts, the keep-alive pool, DNS, connections,
 * deadlines and the request. The response parser is net/h1_resp.c, URLs and proxy rules net/h1_url.c, TLS
 * net/h1_tls.c; the private structures are in net/h1_int.h. */
#include "net/h1client.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "net/h1_int.h"
#include "net/h1_url.h"

static void conn_close(struct h1conn *k);
static void conn_to_pool(struct h1conn *k);
static void conn_start(struct h1conn *k);
static bool conn_retry(struct h1conn *k);
static void conn_arm_timer(struct h1conn *k);
static void on_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* ---------- small helpers ---------- */

const char *h1_err_text(int uverr)
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
void h1_xfer_fail(struct h1conn *k, enum up_result result, const char *msg)
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
    h1_tls_conn_free(k);
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

void h1_conn_read_start(struct h1conn *k)
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
             h1_err_text(k->last_err));
    if (!h->numeric)
        h->addrs_expire_ms = 0; /* the next connection looks the name up again */
    if (defer)
        conn_fail_soon(k, UP_E_CONNECT);
    else
        h1_xfer_fail(k, UP_E_CONNECT, x->errbuf);
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
            h1_xfer_fail(k, UP_E_DNS, k->x->errbuf);
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
                 !h1_tls_pending(k);
    struct up_xfer *x = conn_release(k);
    if (reuse)
        conn_to_pool(k);
    else
        conn_close(k);
    xfer_finish(x, UP_OK, NULL);
}

/* What the parser said about k's transfer. Returns true while the transfer runs on k and wants more input. */
bool h1_conn_after_parse(struct h1conn *k, int st)
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
        h1_xfer_fail(k, k->resp.result, k->resp.error);
        return false;
    }
}

/* The peer ended the byte stream (a TCP FIN, or a TLS close_notify). */
void h1_conn_eof(struct h1conn *k)
{
    if (k->state == CONN_HANDSHAKE) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "TLS connect error: the server closed the connection");
        h1_xfer_fail(k, UP_E_TLS, k->x->errbuf);
        return;
    }
    if (conn_retry(k))
        return;
    if (h1_resp_eof(&k->resp) == H1_RESP_COMPLETE)
        xfer_complete(k, false);
    else
        h1_xfer_fail(k, k->resp.result, k->resp.error);
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
        if (!(nread > 0 && k->ssl && h1_tls_idle_input(k, b->base, (size_t)nread)))
            conn_close(k);
        return;
    }
    if (nread > 0) {
        if (k->ssl) {
            h1_tls_input(k, b->base, (size_t)nread);
            return;
        }
        k->rx += (uint64_t)nread;
        h1_conn_after_parse(k, h1_resp_feed(&k->resp, b->base, (size_t)nread));
        return;
    }
    if (nread == UV_EOF) {
        h1_conn_eof(k); /* TLS: a server closing without close_notify ends the stream the same way (as curl) */
        return;
    }
    if (conn_retry(k))
        return;
    snprintf(x->errbuf, sizeof(x->errbuf), "Recv failure: %s", h1_err_text((int)nread));
    h1_xfer_fail(k, x->headers_done ? UP_E_RESET : UP_E_RESET_BEFORE_HEADERS, x->errbuf);
}

void h1_on_write_done(struct h1conn *k, int status)
{
    k->writes--;
    if (status == 0 || k->state == CONN_CLOSING || k->x == NULL)
        return;
    if (k->rx > 0)
        return; /* the server answered already (an early error response): let the read side finish it */
    if (conn_retry(k))
        return;
    snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Send failure: %s", h1_err_text(status));
    h1_xfer_fail(k, UP_E_RESET_BEFORE_HEADERS, k->x->errbuf); /* nothing of the response came back (rx == 0) */
}

static void on_write(uv_write_t *req, int status)
{
    h1_on_write_done(req->data, status);
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
void h1_conn_send(struct h1conn *k)
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
        if (h1_tls_write(k, b, nb) != 0) {
            conn_fail_soon(k, UP_E_TLS); /* this may run inside h1_start */
            return;
        }
        rc = h1_tls_flush(k);
    } else {
        rc = conn_write(k, b, nb);
    }
    if (rc != 0) {
        if (conn_retry(k)) /* a pooled connection the server had closed (EPIPE, ECONNRESET) */
            return;
        snprintf(x->errbuf, sizeof(x->errbuf), "Send failure: %s", h1_err_text(rc));
        conn_fail_soon(k, UP_E_RESET_BEFORE_HEADERS); /* this may run inside h1_start */
        return;
    }
    h1_conn_read_start(k);
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
        h1_tls_start(k);
        return;
    }
    k->state = CONN_ACTIVE;
    h1_conn_send(k);
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
    h1_conn_read_start(k);                                     /* a close by the server while idle is noticed at once */
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
        h1_xfer_fail(k, k->fail_result, x->errbuf);
        return;
    }
    const struct up_request *rq = &x->req;
    unsigned long long el = (unsigned long long)(uv_now(k->c->loop) - k->t0_ms);
    if (!x->headers_done && rq->first_byte_timeout_ms > 0 && el >= (unsigned long long)rq->first_byte_timeout_ms) {
        snprintf(x->abort_reason, sizeof(x->abort_reason), "no response headers within %ld ms (timed out)",
                 rq->first_byte_timeout_ms);
        h1_xfer_fail(k, UP_E_FIRST_BYTE_TIMEOUT, x->abort_reason);
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
        h1_xfer_fail(k, UP_E_CONNECT_TIMEOUT, x->errbuf);
        return;
    }
    if (rq->timeout_ms > 0 && el >= (unsigned long long)rq->timeout_ms) {
        snprintf(x->errbuf, sizeof(x->errbuf), "Operation timed out after %llu milliseconds with %llu bytes received",
                 el, (unsigned long long)x->bytes_in);
        h1_xfer_fail(k, UP_E_TIMEOUT, x->errbuf);
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

static int h1_start(void *backend, struct up_xfer *x, const char **why)
{
    (void)why; /* nothing here fails to start: failures are reported through on_done */
    struct h1client *c = backend;
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
    x->ops = &h1_backend_ops;
    x->backend = c;
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
        h1_conn_send(k);
    else
        conn_start(k);
    return 0;
}

static void h1_cancel(struct up_xfer *x)
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

static void h1_resume(struct up_xfer *x)
{
    if (!x->paused || x->cancelled || x->in_callback)
        return;
    struct h1conn *k = x->native;
    if (!h1_conn_after_parse(k, h1_resp_resume(&k->resp)))
        return;
    if (k->ssl && !h1_tls_drain(k)) /* records decrypted while paused wait inside OpenSSL */
        return;
    h1_conn_read_start(k);
}

static void *h1_new(uv_loop_t *loop, const struct up_options *opts)
{
    const char *ca_file = opts->ca_file;
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
    h1_tls_client_free(c);
    while (c->hosts) {
        struct h1host *h = c->hosts;
        c->hosts = h->next;
        xfree(h->name);
        xfree(h->authority);
        xfree(h);
    }
    xfree(c->ca_file);
    xfree(c->tbuf);
    xfree(c->http_proxy);
    xfree(c->https_proxy);
    xfree(c->all_proxy);
    xfree(c->no_proxy);
    xfree(c->rbuf);
    xfree(c);
}

static void h1_free(void *backend)
{
    struct h1client *c = backend;
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

const struct up_backend_ops h1_backend_ops = {
    .name = "native",
    .create = h1_new,
    .destroy = h1_free,
    .start = h1_start,
    .cancel = h1_cancel,
    .resume = h1_resume,
};
