#include "net/upstream.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "net/curl_dl.h"
#include "net/h1client.h"

#define RESP_HEADERS_MAX (64 * 1024)
#define EASY_POOL_MAX 64

struct upstream {
    uv_loop_t *loop;
    struct h1client *h1;
    int client;                /* UP_CLIENT_AUTO / NATIVE / CURL, from the configuration at creation */
    char *ca_file;             /* gateway.ca_file, or NULL */
    CURLM *multi;              /* created with the first libcurl transfer */
    long maxconnects;
    const char *error;         /* why the last upstream_start returned NULL (static text) */
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
    struct upstream *u;
    struct sock_ctx *prev, *next;
};

static void sock_unlink(struct upstream *u, struct sock_ctx *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        u->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void check_done(struct upstream *u);

int upstream_global_init(void)
{
    return 0; /* libcurl is loaded when first needed: curl_dl.h */
}

int upstream_preload_curl(void)
{
    int rc = curl_dl_load();
    if (rc != 0)
        log_error("upstream: %s", curl_dl_error());
    return rc;
}

bool upstream_url_needs_curl(const char *url)
{
    struct config *cfg = config_acquire();
    int mode = cfg ? cfg->gateway.upstream_client : CONFIG_UPSTREAM_AUTO;
    config_unref(cfg);
    if (mode == CONFIG_UPSTREAM_CURL)
        return true;
    if (url && strncasecmp(url, "https://", 8) == 0)
        return mode == CONFIG_UPSTREAM_AUTO || h1_proxy_applies(url);
    return url && h1_proxy_applies(url);
}

void upstream_global_cleanup(void)
{
    curl_dl_cleanup();
}

void up_request_init(struct up_request *r)
{
    memset(r, 0, sizeof(*r));
    r->method = "POST";
    buf_init(&r->url, 8192);
    buf_init(&r->headers, 64 * 1024);
    buf_init(&r->body, BUF_UNBOUNDED);
}

void up_request_free(struct up_request *r)
{
    buf_free(&r->url);
    buf_free(&r->headers);
    buf_free(&r->body);
}

void up_request_header(struct up_request *r, const char *name, const char *value)
{
    /* appends, not buf_printf: this runs several times per request and printf was ~1,300 instructions a call */
    buf_append_str(&r->headers, name);
    buf_append(&r->headers, ": ", 2);
    buf_append_str(&r->headers, value);
    buf_append(&r->headers, "\n", 1);
}

void up_request_headerf(struct up_request *r, const char *name, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    up_request_header(r, name, tmp);
}

/* ---------- libuv <-> curl glue ---------- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *s = h->data;
    struct upstream *u = s->u;
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
    struct upstream *u = userp;
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
    struct upstream *u = t->data;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &u->running);
    check_done(u);
}

static int on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct upstream *u = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

struct upstream *upstream_new(uv_loop_t *loop)
{
    struct upstream *u = xcalloc(1, sizeof(*u));
    u->loop = loop;
    /* Read once per worker (the settings say "restart to change"): no lock on the request path. */
    struct config *cfg = config_acquire();
    int mode = cfg ? cfg->gateway.upstream_client : CONFIG_UPSTREAM_AUTO;
    /* libcurl's connection cache: with more transfers in flight than it holds, every completion closes a
     * connection and the next request opens one, and each eviction scans the whole cache (bench/RESULTS.md measured
     * a 6x throughput drop at 1024 connections with 256). A client connection has at most one upstream transfer,
     * so the server's connection limit bounds what can be useful; HTTP/2 upstreams need far fewer. */
    long maxconnects = 256;
    if (cfg && cfg->server.max_connections > maxconnects)
        maxconnects = cfg->server.max_connections > 100000 ? 100000 : (long)cfg->server.max_connections;
    if (cfg && cfg->gateway.ca_file && cfg->gateway.ca_file[0])
        u->ca_file = xstrdup(cfg->gateway.ca_file);
    config_unref(cfg);
    u->h1 = h1_new(loop, u->ca_file);
    u->client = mode == CONFIG_UPSTREAM_CURL ? UP_CLIENT_CURL : mode == CONFIG_UPSTREAM_NATIVE ? UP_CLIENT_NATIVE
                                                                                               : UP_CLIENT_AUTO;
    u->maxconnects = maxconnects;
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    return u;
}

/* The libcurl side of u, on first use: loads libcurl if nobody has (a one-time stall of this loop, ~10 ms,
 * unless the configuration had it preloaded at start-up). */
static int multi_ready(struct upstream *u)
{
    if (u->multi)
        return 0;
    if (!curl_dl_loaded()) {
        uint64_t t0 = time_mono_us();
        if (curl_dl_load() != 0) {
            log_error("upstream: %s", curl_dl_error());
            u->error = curl_dl_error();
            return -1;
        }
        log_info("upstream: libcurl loaded on first use in %llu us", (unsigned long long)(time_mono_us() - t0));
    }
    u->multi = curl_multi_init();
    if (u->multi == NULL) {
        u->error = "curl_multi_init failed";
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

const char *upstream_last_error(const struct upstream *u)
{
    return u->error;
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
    if (x->cancelled || rc == UP_DATA_ABORT)
        return 0;
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

static void release_easy(struct upstream *u, CURL *easy)
{
    if (u->npool < EASY_POOL_MAX && !u->closing) {
        curl_easy_reset(easy);
        u->pool[u->npool++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

void up_xfer_destroy(struct up_xfer *x)
{
    up_request_free(&x->req);
    buf_free(&x->resp_headers);
    xfree(x);
}

struct xfer_private {
    struct up_xfer *x;
    struct curl_slist *headers;
};

struct up_xfer *upstream_start(struct upstream *u, struct up_request *req, const struct up_callbacks *cb, void *ud)
{
    struct up_xfer *x = xcalloc(1, sizeof(*x));
    x->u = u;
    x->req = *req;
    up_request_init(req); /* the caller's copy is now empty */
    x->cb = *cb;
    x->ud = ud;
    buf_init(&x->resp_headers, RESP_HEADERS_MAX);
    x->t_start_us = time_mono_us();
    int client = x->req.client != UP_CLIENT_CONFIGURED ? x->req.client : u->client;
    /* auto: https goes to libcurl, which offers h2 by ALPN and multiplexes; the HTTP/1.1 client takes plain http
     * (local model servers, sidecars, the benchmark's upstream), where h2 is not offered anyway. */
    bool https = x->req.url.len >= 8 && strncasecmp(x->req.url.data, "https://", 8) == 0;
    if (client != UP_CLIENT_CURL && !(client == UP_CLIENT_AUTO && https) && h1_start(u->h1, x) == 0)
        return x;
    u->error = "could not start the upstream request";
    if (multi_ready(u) != 0) {
        up_xfer_destroy(x);
        return NULL;
    }
    CURL *e = u->npool ? u->pool[--u->npool] : curl_easy_init();
    if (e == NULL) {
        up_xfer_destroy(x);
        return NULL;
    }
    x->easy = e;
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
        up_xfer_destroy(x);
        return NULL;
    }
    u->live++;
    return x;
}

static void reap(struct upstream *u, struct up_xfer *x)
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

static void check_done(struct upstream *u)
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
            bool ok = rc == CURLE_OK;
            const char *err = ok                 ? NULL
                              : x->abort_reason[0] ? x->abort_reason
                              : x->errbuf[0]       ? x->errbuf
                                                   : curl_easy_strerror(rc);
            /* The callback may start new transfers or cancel others; this one is reaped right after. */
            x->cancelled = true; /* no further callbacks for it */
            x->cb.on_done(x, ok, err, x->ud);
        }
        reap(u, x);
    }
}

void upstream_cancel(struct up_xfer *x)
{
    if (x == NULL || x->cancelled)
        return;
    if (x->native) {
        h1_cancel(x);
        return;
    }
    x->cancelled = true;
    if (x->in_callback || x->finished)
        return; /* curl aborts it when the callback returns 0; check_done reaps it */
    reap(x->u, x);
}

void upstream_resume(struct up_xfer *x)
{
    if (!x->paused || x->cancelled)
        return;
    if (x->native) {
        h1_resume(x);
        return;
    }
    x->paused = false;
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
    struct upstream *u = x->u; /* x may be reaped by now */
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &u->running);
    check_done(u);
}

int up_xfer_header(const struct up_xfer *x, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    const char *p = x->resp_headers.data;
    const char *end = p ? p + x->resp_headers.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = line_end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            size_t n = (size_t)(ve - v);
            if (size == 0)
                return 0;
            if (n >= size)
                n = size - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 0;
        }
        p = eol ? eol + 1 : end;
    }
    return -1;
}

long up_xfer_retry_after_ms(const struct up_xfer *x)
{
    char v[128];
    if (up_xfer_header(x, "retry-after-ms", v, sizeof(v)) == 0) {
        double ms;
        if (str_to_double(str_from(v), &ms) == 0 && ms >= 0)
            return (long)ms;
    }
    if (up_xfer_header(x, "retry-after", v, sizeof(v)) == 0) {
        double secs;
        if (str_to_double(str_from(v), &secs) == 0 && secs >= 0)
            return (long)(secs * 1000);
        int64_t when;
        if (time_parse_http_date(v, strlen(v), &when) == 0) {
            int64_t now = (int64_t)(time_wall_us() / 1000000);
            return when > now ? (long)(when - now) * 1000 : 0;
        }
    }
    return -1;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct upstream *u = h->data;
    for (int i = 0; i < u->npool; i++)
        curl_easy_cleanup(u->pool[i]);
    xfree(u->ca_file);
    xfree(u);
}

void upstream_free(struct upstream *u)
{
    if (u == NULL)
        return;
    u->closing = true;
    h1_free(u->h1);
    u->h1 = NULL;
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
