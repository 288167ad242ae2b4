/* http_fetch.c: the http_fetch tool (tools.h). A GET or POST to a URL under one of the agent's allow_urls
 * prefixes, through the loop's upstream HTTP client:
 *
 *   - only http:// and https:// URLs without user info, at most 2048 bytes;
 *   - the host is resolved first (uv_getaddrinfo, off the loop) and every address it resolves to must be public:
 *     private, loopback, link-local, shared (CGNAT), multicast, reserved and documentation ranges are refused,
 *     IPv4-mapped and NAT64 IPv6 addresses by their IPv4 address (unless the agent sets allow_private_networks);
 *   - an http:// request goes to the address that was checked (the URL is rewritten to it, Host keeps the name),
 *     so a second resolution cannot move it; https:// keeps the name for the certificate check, and the client
 *     resolves it again (a DNS answer that changes in between is the remaining window);
 *   - redirects (301, 302, 303, 307, 308) are followed by this code, at most 5, each target checked again
 *     (allowlist and addresses);
 *   - the body is read up to the agent's tool_output_bytes (the run marks the truncation), the call is bounded by
 *     the agent's tool_timeout (the run cancels it).
 * The answer to the model: "HTTP <status> (<content-type>)\n\n<body>"; a refused URL or a transport failure is a
 * tool error. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "agent/agent_config.h"
#include "agent/tools.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/netaddr.h"
#include "net/upstream.h"

#define FETCH_MAX_URL 2048
#define FETCH_MAX_REDIRECTS 5
#define FETCH_MAX_BODY (1 << 20) /* a POST body from the model */

static _Thread_local struct upstream *tl_up;
static _Thread_local bool tl_done;

void http_fetch_loop_done(void)
{
    if (tl_up)
        upstream_free(tl_up);
    tl_up = NULL;
    tl_done = true;
}

/* ---- URLs ---- */

struct url {
    bool https;
    char host[256]; /* without brackets */
    int port;
    const char *rest; /* path and query, into the URL ("" for none) */
};

static int parse_url(const char *s, struct url *u)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncasecmp(s, "http://", 7) == 0) {
        p = s + 7;
        u->port = 80;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        p = s + 8;
        u->https = true;
        u->port = 443;
    } else {
        return -1;
    }
    size_t alen = strcspn(p, "/?#");
    if (alen == 0 || memchr(p, '@', alen))
        return -1;
    const char *end = p + alen;
    const char *hs = p, *he;
    const char *port = NULL;
    if (*p == '[') {
        he = memchr(p, ']', alen);
        if (he == NULL)
            return -1;
        hs = p + 1;
        if (he + 1 < end) {
            if (he[1] != ':')
                return -1;
            port = he + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        he = colon ? colon : end;
        port = colon ? colon + 1 : NULL;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof(u->host))
        return -1;
    memcpy(u->host, hs, hl);
    u->host[hl] = '\0';
    if (port) {
        int v = 0;
        if (port >= end)
            return -1;
        for (const char *c = port; c < end; c++) {
            if (*c < '0' || *c > '9' || v > 65535)
                return -1;
            v = v * 10 + (*c - '0');
        }
        if (v < 1 || v > 65535)
            return -1;
        u->port = v;
    }
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return -1; /* no spaces or control characters anywhere */
    u->rest = end;
    return 0;
}

static bool allowed(const struct config_agent *def, const char *url)
{
    for (size_t i = 0; def && i < def->allow_urls.n; i++)
        if (strncmp(url, def->allow_urls.v[i], strlen(def->allow_urls.v[i])) == 0)
            return true;
    return false;
}

/* ---- the call ---- */

struct fetch {
    struct tool_exec *te;    /* NULL once cancelled */
    uv_getaddrinfo_t gai;
    bool resolving;
    struct up_xfer *x;
    char url[FETCH_MAX_URL + 1];
    struct url u;
    char method[8];
    char *body;
    int redirects;
    struct buf out;
    size_t cap;
    char ctype[128];
};

static void fetch_free(struct fetch *f)
{
    xfree(f->body);
    buf_free(&f->out);
    xfree(f);
}

static void finish(struct fetch *f, enum tool_outcome o, const char *text, size_t len)
{
    struct tool_exec *te = f->te;
    f->te = NULL;
    if (te) {
        te->state = NULL;
        te->done(te, o, text, len);
    }
}

__attribute__((format(printf, 2, 3))) static void fail(struct fetch *f, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    finish(f, TOOL_ERROR, msg, strlen(msg));
    fetch_free(f);
}

static void begin(struct fetch *f);

static int on_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    (void)x;
    struct fetch *f = ud;
    size_t room = f->cap + 1 > f->out.len ? f->cap + 1 - f->out.len : 0;
    buf_append(&f->out, data, len < room ? len : room);
    return len < room ? UP_DATA_OK : UP_DATA_ABORT; /* one byte past the cap: the run marks the truncation */
}

static void on_headers(struct up_xfer *x, void *ud)
{
    struct fetch *f = ud;
    if (up_xfer_header(x, "content-type", f->ctype, sizeof(f->ctype)) != 0)
        f->ctype[0] = '\0';
}

static void on_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct fetch *f = ud;
    f->x = NULL;
    int status = x->status;
    if (status >= 300 && status < 400 && status != 304 && status != 300 && (r == UP_OK || r == UP_E_ABORTED)) {
        char loc[FETCH_MAX_URL + 1];
        if (up_xfer_header(x, "location", loc, sizeof(loc)) != 0) {
            fail(f, "the server answered %d without a Location", status);
            return;
        }
        if (++f->redirects > FETCH_MAX_REDIRECTS) {
            fail(f, "more than %d redirects", FETCH_MAX_REDIRECTS);
            return;
        }
        char next[FETCH_MAX_URL + 1];
        if (loc[0] == '/' && loc[1] != '/') { /* same origin */
            size_t origin = (size_t)(f->u.rest - f->url);
            if (origin + strlen(loc) > FETCH_MAX_URL) {
                fail(f, "the redirect target is too long");
                return;
            }
            memcpy(next, f->url, origin);
            snprintf(next + origin, sizeof(next) - origin, "%s", loc);
        } else {
            snprintf(next, sizeof(next), "%s", loc);
        }
        snprintf(f->url, sizeof(f->url), "%s", next);
        if (status == 303 || ((status == 301 || status == 302) && strcmp(f->method, "POST") == 0)) {
            snprintf(f->method, sizeof(f->method), "GET");
            xfree(f->body);
            f->body = NULL;
        }
        buf_reset(&f->out);
        begin(f);
        return;
    }
    if (r != UP_OK && r != UP_E_ABORTED) {
        fail(f, "the fetch failed: %s", up_xfer_error(x));
        return;
    }
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_printf(&b, "HTTP %d (%s)\n\n", status, f->ctype[0] ? f->ctype : "no content type");
    buf_append(&b, f->out.data ? f->out.data : "", f->out.len);
    buf_append(&b, "", 0);
    finish(f, TOOL_OK, b.data, b.len);
    buf_free(&b);
    fetch_free(f);
}

static const struct up_callbacks fetch_cb = {.on_headers = on_headers, .on_data = on_data, .on_done = on_done};

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    struct fetch *f = g->data;
    f->resolving = false;
    if (f->te == NULL) { /* cancelled meanwhile */
        uv_freeaddrinfo(res);
        fetch_free(f);
        return;
    }
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        fail(f, "the host name %s did not resolve", f->u.host);
        return;
    }
    const struct addrinfo *use = NULL;
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (!f->te->def->allow_private_networks && !netaddr_public(a->ai_addr)) {
            uv_freeaddrinfo(res);
            fail(f, "refused: %s resolves to a private, loopback or link-local address", f->u.host);
            return;
        }
        if (use == NULL && (a->ai_family == AF_INET || a->ai_family == AF_INET6))
            use = a;
    }
    if (use == NULL) {
        uv_freeaddrinfo(res);
        fail(f, "the host name %s has no usable address", f->u.host);
        return;
    }
    struct up_request rq;
    up_request_init(&rq);
    rq.method = strcmp(f->method, "POST") == 0 ? "POST" : "GET";
    if (f->u.https) {
        buf_append_str(&rq.url, f->url);
    } else { /* pinned to the address that was checked */
        char ip[INET6_ADDRSTRLEN];
        const void *src = use->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)use->ai_addr)->sin_addr
                                                    : (const void *)&((struct sockaddr_in6 *)use->ai_addr)->sin6_addr;
        inet_ntop(use->ai_family, src, ip, sizeof(ip));
        buf_printf(&rq.url, use->ai_family == AF_INET6 ? "http://[%s]:%d%s" : "http://%s:%d%s", ip, f->u.port,
                   f->u.rest[0] ? f->u.rest : "/");
        if (f->u.port == 80)
            up_request_header(&rq, "Host", f->u.host);
        else
            up_request_headerf(&rq, "Host", "%s:%d", f->u.host, f->u.port);
    }
    uv_freeaddrinfo(res);
    up_request_header(&rq, "User-Agent", "agentd-http-fetch");
    up_request_header(&rq, "Accept-Encoding", "identity");
    if (f->body) {
        buf_append_str(&rq.body, f->body);
        up_request_header(&rq, "Content-Type", "application/json");
    }
    rq.connect_timeout_ms = 10000;
    rq.client = UP_CLIENT_NATIVE;
    if (tl_up == NULL)
        tl_up = upstream_new(f->te->loop, (struct up_options){0});
    f->x = upstream_start(tl_up, &rq, &fetch_cb, f);
    up_request_free(&rq);
    if (f->x == NULL)
        fail(f, "the fetch could not start: %s", upstream_last_error(tl_up));
}

/* Checks the URL (scheme, shape, allowlist) and resolves its host. */
static void begin(struct fetch *f)
{
    if (strlen(f->url) >= FETCH_MAX_URL || parse_url(f->url, &f->u) != 0) {
        fail(f, "not a usable http:// or https:// URL: %.200s", f->url);
        return;
    }
    if (!allowed(f->te->def, f->url)) {
        fail(f, "refused: %.200s is not under one of the agent's allow_urls", f->url);
        return;
    }
    f->gai.data = f;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    f->resolving = true;
    if (uv_getaddrinfo(f->te->loop, &f->gai, on_resolved, f->u.host, NULL, &hints) != 0) {
        f->resolving = false;
        fail(f, "cannot resolve %s", f->u.host);
    }
}

/* The call begins on the next turn (a tool never answers from inside its start()). */
struct later {
    uv_timer_t t;
    struct fetch *f;
    char msg[300];
};

static void later_closed(uv_handle_t *h)
{
    xfree(h->data);
}

static void later_fire(uv_timer_t *t)
{
    struct later *l = t->data;
    struct fetch *f = l->f;
    uv_close((uv_handle_t *)t, later_closed);
    if (f->te && l->msg[0] == '\0') {
        begin(f); /* answers (and frees f) through its callbacks, or at once through fail() */
        return;
    }
    if (f->te)
        finish(f, TOOL_BAD_ARGS, l->msg, strlen(l->msg));
    fetch_free(f);
}

void http_fetch_start(struct tool_exec *te)
{
    struct fetch *f = xcalloc(1, sizeof(*f));
    f->te = te;
    te->state = f;
    buf_init(&f->out, BUF_UNBOUNDED);
    f->cap = te->def ? (size_t)te->def->limits.tool_output_bytes : 65536;
    cJSON *a = cJSON_Parse(te->args);
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(a, "url");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(a, "method");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(a, "body");
    const char *why = NULL;
    if (tl_done)
        why = "http_fetch is not available while the daemon stops";
    else if (!cJSON_IsString(url) || strlen(url->valuestring) >= FETCH_MAX_URL)
        why = "'url' must be a string of at most 2047 bytes";
    else if (method && (!cJSON_IsString(method) ||
                        (strcmp(method->valuestring, "GET") != 0 && strcmp(method->valuestring, "POST") != 0)))
        why = "'method' must be GET or POST";
    else if (body && (!cJSON_IsString(body) || strlen(body->valuestring) > FETCH_MAX_BODY))
        why = "'body' must be a string of at most 1 MiB";
    if (why == NULL) {
        snprintf(f->url, sizeof(f->url), "%s", url->valuestring);
        snprintf(f->method, sizeof(f->method), "%s", method ? method->valuestring : "GET");
        if (body && strcmp(f->method, "POST") == 0)
            f->body = xstrdup(body->valuestring);
    }
    cJSON_Delete(a);
    /* the next turn checks the URL and resolves it, or answers the bad arguments */
    struct later *l = xcalloc(1, sizeof(*l));
    l->f = f;
    snprintf(l->msg, sizeof(l->msg), "%s", why ? why : "");
    uv_timer_init(te->loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fire, 0, 0);
}

void http_fetch_cancel(struct tool_exec *te)
{
    struct fetch *f = te->state;
    if (f == NULL)
        return;
    te->state = NULL;
    f->te = NULL;
    if (f->x) {
        upstream_cancel(f->x);
        f->x = NULL;
        fetch_free(f);
    } else if (f->resolving) {
        uv_cancel((uv_req_t *)&f->gai); /* on_resolved runs (with UV_ECANCELED) and frees it */
    }
    /* a bad call's timer frees it when it fires */
}
