/* upstream_curl.c: the libcurl backend of the upstream client (net/upstream_curl.h): libcurl's multi interface
 * driven by the worker's libuv loop (uv_poll per socket, one uv_timer), easy handles pooled for reuse, CURLcode
 * values mapped onto enum up_result. */
#include "net/upstream_curl.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "net/curl_dl.h"

#define EASY_POOL_MAX 64

struct up_curl {
    uv_loop_t *loop;
    char *ca_file;             /* up_options.ca_file, or NULL */
    CURLM *multi;              /* created with the first transfer */
    long maxconnects;
    uv_timer_t timer;
    int running;
    CURL *pool[EASY_POOL_MAX]; /* reset easy handles ready for reuse */
    int npool;
    bool closing;
    int live;                  /* transfers not yet reaped */
    struct sock_ctx *socks;    /* watched sockets */
};

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct up_curl *u;
    struct sock_ctx *prev, *next;
};

static void sock_unlink(struct up_curl *u, struct sock_ctx *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        u->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void check_done(struct up_curl *u);

/* ---------- libuv <-> curl glue ---------- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *s = h->data;
    struct up_curl *u = s->u;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(u->multi, s->fd, flags, &u->running);
    check_done(u);
}

static void on_sock_closed(uv_handle_t *h)
{
    xfree(h->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
    (void)easy;
    struct up_curl *u = userp;
    struct sock_ctx *s = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (s) {
            sock_unlink(u, s);
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_sock_closed);
            curl_multi_assign(u->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = xcalloc(1, sizeof(*s));
        s->fd = fd;
        s->u = u;
        if (uv_poll_init_socket(u->loop, &s->poll, fd) != 0) {
            xfree(s);
            return -1;
        }
        s->poll.data = s;
        s->next = u->socks;
        if (u->socks)
            u->socks->prev = s;
        u->socks = s;
        curl_multi_assign(u->multi, fd, s);
    }
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    struct up_curl *u = t->data;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &u->running);
    check_done(u);
}

static int on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct up_curl *u = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* The multi handle, on first use: loads libcurl if nobody has (a one-time stall of this loop, ~10 ms,
 * unless the configuration had it preloaded at start-up). */
static int multi_ready(struct up_curl *u, const char **why)
{
    if (u->multi)
        return 0;
    if (!curl_dl_loaded()) {
        uint64_t t0 = time_mono_us();
        if (curl_dl_load() != 0) {
            log_error("upstream: %s", curl_dl_error());
            *why = curl_dl_error();
            return -1;
        }
        log_info("upstream: libcurl loaded on first use in %llu us", (unsigned long long)(time_mono_us() - t0));
    }
    u->multi = curl_multi_init();
    if (u->multi == NULL) {
        *why = "curl_multi_init failed";
        return -1;
    }
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, u->maxconnects);
    return 0;
}

/* ---------- transfers ---------- */

static size_t on_header_line(char *data, size_t size, size_t n, void *ud)
{
    struct up_xfer *x = ud;
    size_t len = size * n;
    if (x->cancelled)
        return 0;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* a new status line: a 1xx or a redirect response before the final one */
        buf_reset(&x->resp_headers);
        x->headers_done = false;
        return len;
    }
    if (len <= 2 && (data[0] == '\r' || data[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 100 && code < 200)
            return len;
        if (code < 100 || code > 599) {
            /* curl relays any three digits; a status outside HTTP's range is not a response to relay */
            snprintf(x->abort_reason, sizeof(x->abort_reason), "Invalid HTTP response from the server: status code %ld",
                     code); /* not errbuf: curl writes its own words there after this returns */
            x->result = UP_E_PROTOCOL;
            return 0;
        }
        x->status = (int)code;
        x->headers_done = true;
        x->t_headers_us = time_mono_us();
        if (x->cb.on_headers) {
            x->in_callback = true;
            x->cb.on_headers(x, x->ud);
            x->in_callback = false;
        }
        return x->cancelled ? 0 : len;
    }
    buf_append(&x->resp_headers, data, len); /* past the bound the rest is dropped, not an error */
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct up_xfer *x = ud;
    size_t len = size * n;
    if (x->cancelled)
        return 0;
    if (!x->t_first_byte_us)
        x->t_first_byte_us = time_mono_us();
    if (!x->cb.on_data)
        return len;
    x->in_callback = true;
    int rc = x->cb.on_data(x, data, len, x->ud);
    x->in_callback = false;
    if (x->cancelled)
        return 0;
    if (rc != UP_DATA_OK && rc != UP_DATA_PAUSE) {
        x->result = UP_E_ABORTED;
        snprintf(x->abort_reason, sizeof(x->abort_reason), "Failure writing output to destination");
        return 0;
    }
    if (rc == UP_DATA_PAUSE) {
        x->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    x->bytes_in += len;
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    struct up_xfer *x = ud;
    if (x->cancelled)
        return 1;
    /* First-byte deadline: headers must arrive within first_byte_timeout_ms of the start. */
    if (!x->headers_done && x->req.first_byte_timeout_ms > 0 &&
        time_mono_us() - x->t_start_us > (uint64_t)x->req.first_byte_timeout_ms * 1000) {
        snprintf(x->abort_reason, sizeof(x->abort_reason), "no response headers within %ld ms (timed out)",
                 x->req.first_byte_timeout_ms);
        x->result = UP_E_FIRST_BYTE_TIMEOUT;
        return 1;
    }
    return 0;
}

static struct curl_slist *build_headers(struct up_xfer *x)
{
    struct curl_slist *list = NULL;
    char *p = x->req.headers.data;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        list = curl_slist_append(list, p);
        if (!nl)
            break;
        *nl = '\n';
        p = nl + 1;
    }
    /* curl would otherwise send "Expect: 100-continue" for larger POST bodies and wait up to a second for a
     * 100 that most APIs never send. */
    list = curl_slist_append(list, "Expect:");
    return list;
}

static void release_easy(struct up_curl *u, CURL *easy)
{
    if (u->npool < EASY_POOL_MAX && !u->closing) {
        curl_easy_reset(easy);
        u->pool[u->npool++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

struct xfer_private {
    struct up_xfer *x;
    struct curl_slist *headers;
};

static void reap(struct up_curl *u, struct up_xfer *x)
{
    struct xfer_private *priv = NULL;
    curl_easy_getinfo(x->easy, CURLINFO_PRIVATE, &priv);
    curl_multi_remove_handle(u->multi, x->easy);
    if (priv) {
        curl_slist_free_all(priv->headers);
        xfree(priv);
    }
    release_easy(u, x->easy);
    x->easy = NULL;
    u->live--;
    up_xfer_destroy(x);
}

/* What a CURLcode means in agentd's terms. Timeouts are told apart by how far the transfer got: before the
 * connection (and its TLS handshake) was up it is the connect deadline, else the whole-transfer one. */
static enum up_result curl_result(struct up_xfer *x, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return UP_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return UP_E_DNS;
    case CURLE_COULDNT_CONNECT:
        return UP_E_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connected = 0, tls_done = 0;
        curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &connected);
        curl_easy_getinfo(x->easy, CURLINFO_APPCONNECT_TIME_T, &tls_done);
        bool https = x->req.url.len >= 8 && strncasecmp(x->req.url.data, "https://", 8) == 0;
        if (connected == 0 || (https && tls_done == 0))
            return UP_E_CONNECT_TIMEOUT;
        return UP_E_TIMEOUT;
    }
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return UP_E_TLS;
    case CURLE_GOT_NOTHING:
        return UP_E_RESET_BEFORE_HEADERS;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2_STREAM: /* the server reset the stream */
        return x->headers_done ? UP_E_RESET : UP_E_RESET_BEFORE_HEADERS;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP3:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return UP_E_PROTOCOL;
    case CURLE_FILESIZE_EXCEEDED:
#if LIBCURL_VERSION_NUM >= 0x080600
    case CURLE_TOO_LARGE:
#endif
        return UP_E_TOO_LARGE;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        return UP_E_ABORTED; /* our callbacks said stop without saying why (x->result was not set) */
    default:
        return UP_E_OTHER;
    }
}

static void check_done(struct up_curl *u)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(u->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct xfer_private *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        struct up_xfer *x = priv->x;
        CURLcode rc = msg->data.result;
        x->finished = true;
        x->t_done_us = time_mono_us();
        if (!x->cancelled && x->cb.on_done) {
            if (x->result == UP_OK) /* else one of our callbacks decided it (an abort, a bad status) */
                x->result = curl_result(x, rc);
            if (x->result != UP_OK && !x->errbuf[0])
                snprintf(x->errbuf, sizeof(x->errbuf), "%s", curl_easy_strerror(rc));
            /* The callback may start new transfers or cancel others; this one is reaped right after. */
            x->cancelled = true; /* no further callbacks for it */
            x->cb.on_done(x, x->result, x->ud);
        }
        reap(u, x);
    }
}

/* ---------- the backend ---------- */

static int curl_start(void *b, struct up_xfer *x, const char **why)
{
    struct up_curl *u = b;
    *why = "could not start the upstream request";
    if (multi_ready(u, why) != 0)
        return -1;
    CURL *e = u->npool ? u->pool[--u->npool] : curl_easy_init();
    if (e == NULL)
        return -1;
    x->easy = e;
    x->backend = u;
    x->ops = &up_curl_backend_ops;
    struct xfer_private *priv = xcalloc(1, sizeof(*priv));
    priv->x = x;
    priv->headers = build_headers(x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, priv);
    curl_easy_setopt(e, CURLOPT_URL, x->req.url.data ? x->req.url.data : "");
    if (strcmp(x->req.method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req.body.data ? x->req.body.data : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->req.body.len);
        if (strcmp(x->req.method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->req.method);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, priv->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header_line);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, x->req.connect_timeout_ms > 0 ? x->req.connect_timeout_ms : 10000L);
    if (x->req.timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, x->req.timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (u->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, u->ca_file); /* libcurl's CA path (Debian: the system store) stays */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK) {
        curl_slist_free_all(priv->headers);
        xfree(priv);
        release_easy(u, e);
        x->easy = NULL;
        x->backend = NULL;
        x->ops = NULL;
        return -1;
    }
    u->live++;
    return 0;
}


static void curl_cancel(struct up_xfer *x)
{
    x->cancelled = true;
    if (x->in_callback || x->finished)
        return; /* curl aborts it when the callback returns 0; check_done reaps it */
    reap(x->backend, x);
}

static void curl_resume(struct up_xfer *x)
{
    x->paused = false;
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
    struct up_curl *u = x->backend; /* x may be reaped by now */
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &u->running);
    check_done(u);
}

static void *curl_create(uv_loop_t *loop, const struct up_options *opts)
{
    struct up_curl *u = xcalloc(1, sizeof(*u));
    u->loop = loop;
    /* libcurl's connection cache: with more transfers in flight than it holds, every completion closes a
     * connection and the next request opens one, and each eviction scans the whole cache (bench/RESULTS.md measured
     * a 6x throughput drop at 1024 connections with 256). A client connection has at most one upstream transfer,
     * so the server's connection limit bounds what can be useful; HTTP/2 upstreams need far fewer. */
    long maxconnects = 256;
    if (opts->max_connections > maxconnects)
        maxconnects = opts->max_connections > 100000 ? 100000 : opts->max_connections;
    u->maxconnects = maxconnects;
    if (opts->ca_file && opts->ca_file[0])
        u->ca_file = xstrdup(opts->ca_file);
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    return u;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct up_curl *u = h->data;
    for (int i = 0; i < u->npool; i++)
        curl_easy_cleanup(u->pool[i]);
    xfree(u->ca_file);
    xfree(u);
}

static void curl_destroy(void *b)
{
    struct up_curl *u = b;
    if (u == NULL)
        return;
    u->closing = true;
    if (u->live)
        log_warn("upstream: %d transfers still attached at shutdown", u->live);
    if (u->multi)
        curl_multi_cleanup(u->multi);
    u->multi = NULL;
    /* Whatever sockets curl did not report as removed are closed here, so the loop can end. */
    while (u->socks) {
        struct sock_ctx *s = u->socks;
        sock_unlink(u, s);
        uv_poll_stop(&s->poll);
        uv_close((uv_handle_t *)&s->poll, on_sock_closed);
    }
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, on_timer_closed);
}

const struct up_backend_ops up_curl_backend_ops = {
    .name = "curl",
    .create = curl_create,
    .destroy = curl_destroy,
    .start = curl_start,
    .cancel = curl_cancel,
    .resume = curl_resume,
};
