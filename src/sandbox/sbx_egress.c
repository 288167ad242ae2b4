/* sbx_egress.c: the run's HTTP proxy (sbx_egress.h).
 *
 * One struct conn per accepted connection, moving forward through
 *   HEAD (reading the request head) -> RESOLVE -> CONNECT -> RELAY,
 * or to ANSWER (an error answer is being written) from any of the first three, and CLOSED at the end. A conn owns
 * up to three handles (the sandbox side, the outside side, one timer) and at most one getaddrinfo request; it is
 * freed when the last of them has called back (conn_unref), never from inside one of its own callbacks before that.
 * The proxy itself is freed once it is stopped, its listener closed and its last conn freed.
 *
 * Bytes are counted where they cross to or from the outside (what is written to and read from the upstream
 * socket, the origin head included): that is what max_bytes limits. The proxy's own answers are not counted. */
#include "sandbox/sbx_egress.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/netaddr.h"

#define DEFAULT_MAX_CONNECTIONS 64
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
/* One read from either side; the read's buffer becomes the write's, so a side holds at most this plus the high
 * water mark of unsent bytes. */
#define RELAY_CHUNK 65536
/* Stop reading a side while the other side has more than this waiting to go out. */
#define RELAY_HIGH_WATER 65536
/* The addresses a name resolves to that are tried, in order. All of them are checked. */
#define ADDRS_MAX 16
/* After an error answer, what the client still sends is read and dropped for a moment before closing: closing with
 * unread bytes makes the kernel send a reset, which can destroy the answer before the client reads it. */
#define LINGER_MS 2000
#define LINGER_BYTES 65536
#define METHOD_MAX 32

/* ======================================================================================================
 * The parser: pure, for the proxy, the tests and the fuzzer.
 * ====================================================================================================== */

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Bytes a request target may hold: visible ASCII (RFC 9112 §3.2; a space would end it). */
static bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

/* Bytes a header value may hold: tab, space, visible ASCII, obs-text. Not CR, LF, NUL or other controls. */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

static bool eq_nocase(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    return an == bn && strncasecmp(a, b, an) == 0;
}

/* A line not finished yet may already hold a byte its line can never hold: refusing it now spares reading up to
 * the head limit. Only what the complete line's checks would refuse too is refused here (the fuzzer checks that a
 * longer input never turns a refusal into an acceptance). A CR is allowed only as the last byte (its LF may
 * follow). */
static bool partial_line_ok(const char *p, size_t n, bool request_line)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' && i + 1 == n)
            continue;
        if (request_line ? (c != ' ' && !is_target_char(c)) : !is_value_char(c))
            return false;
    }
    if (n > 0 && !request_line && (p[0] == ' ' || p[0] == '\t'))
        return false; /* a folded line */
    return true;
}

/* Digits only, 1 to 65535. */
static int parse_port(const char *p, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5)
        return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* A DNS name or IPv4 literal: [a-z0-9.-] after lower-casing, labels of 1 to 63 bytes, at most 255 in all. No empty
 * label (so no leading, trailing or doubled dot): "a.example.com." would otherwise be a second spelling of a name
 * for the host patterns to miss. */
static int copy_name(const char *p, size_t n, char *dst)
{
    if (n == 0 || n > 255)
        return -1;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = lower(p[i]);
        if (c == '.') {
            if (label == 0)
                return -1;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
            if (++label > 63)
                return -1;
        } else {
            return -1;
        }
        dst[i] = c;
    }
    if (label == 0)
        return -1;
    dst[n] = '\0';
    return 0;
}

/* "host:port", "[v6]:port", or without the port when it is not required. Fills out->host and out->port (the
 * default when absent). */
static int parse_authority(const char *p, size_t n, bool need_port, uint16_t def_port, struct sbx_egress_req *out,
                           const char **why)
{
    const char *port = NULL;
    size_t port_n = 0;
    if (n == 0) {
        *why = "no host in the request target";
        return -1;
    }
    if (p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        size_t hn = rb ? (size_t)(rb - p - 1) : 0;
        if (rb == NULL || hn == 0 || hn >= INET6_ADDRSTRLEN) {
            *why = "bad IPv6 address in the request target";
            return -1;
        }
        for (size_t i = 0; i < hn; i++) {
            char c = lower(p[1 + i]);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':' || c == '.')) {
                *why = "bad IPv6 address in the request target";
                return -1;
            }
            out->host[i] = c;
        }
        out->host[hn] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, out->host, &a6) != 1) {
            *why = "bad IPv6 address in the request target";
            return -1;
        }
        const char *after = rb + 1;
        size_t rest = n - (size_t)(after - p);
        if (rest > 0) {
            if (*after != ':') {
                *why = "junk after the IPv6 address in the request target";
                return -1;
            }
            port = after + 1;
            port_n = rest - 1;
        }
    } else {
        const char *colon = memchr(p, ':', n);
        size_t hn = colon ? (size_t)(colon - p) : n;
        if (copy_name(p, hn, out->host) != 0) {
            *why = "bad host name in the request target";
            return -1;
        }
        if (colon) {
            port = colon + 1;
            port_n = n - hn - 1;
        }
    }
    if (port == NULL) {
        if (need_port) {
            *why = "CONNECT needs host:port";
            return -1;
        }
        out->port = def_port;
        return 0;
    }
    if (parse_port(port, port_n, &out->port) != 0) {
        *why = "bad port in the request target";
        return -1;
    }
    return 0;
}

/* Hop-by-hop headers of the client's hop, and Host, which is rebuilt from the target (RFC 9112 §3.2.2: a proxy
 * replaces it; forwarding the client's would let it name any virtual host behind an allowed address). */
static bool dropped_header(const char *name, size_t n)
{
    if (n >= 6 && strncasecmp(name, "proxy-", 6) == 0)
        return true;
    return eq_nocase(name, n, "connection") || eq_nocase(name, n, "keep-alive") || eq_nocase(name, n, "host");
}

/* A header line: a token, a colon, then value bytes. */
static bool header_line_ok(const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);
    if (colon == NULL || colon == p)
        return false;
    for (const char *c = p; c < colon; c++)
        if (!is_tchar((unsigned char)*c))
            return false; /* also a space before the colon (RFC 9112 §5.1: must be refused) */
    for (const char *c = colon + 1; c < p + n; c++)
        if (!is_value_char((unsigned char)*c))
            return false;
    return true;
}

struct reqline {
    const char *method, *path, *version;
    size_t method_n, path_n;
};

static int parse_request_line(const char *p, size_t n, struct sbx_egress_req *out, struct reqline *rl, const char **why)
{
    const char *sp1 = memchr(p, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - p)) : NULL;
    if (sp2 == NULL) {
        *why = "bad request line";
        return -1;
    }
    rl->method = p;
    rl->method_n = (size_t)(sp1 - p);
    if (rl->method_n == 0 || rl->method_n > METHOD_MAX) {
        *why = "bad method";
        return -1;
    }
    for (size_t i = 0; i < rl->method_n; i++)
        if (!is_tchar((unsigned char)p[i])) {
            *why = "bad method";
            return -1;
        }
    const char *target = sp1 + 1;
    size_t target_n = (size_t)(sp2 - target);
    const char *version = sp2 + 1;
    size_t version_n = n - (size_t)(version - p);
    if (version_n != 8 || memcmp(version, "HTTP/1.", 7) != 0 || version[7] < '0' || version[7] > '9') {
        *why = "not an HTTP/1.x request";
        return -1;
    }
    rl->version = version;
    if (target_n == 0) {
        *why = "bad request line";
        return -1;
    }
    for (size_t i = 0; i < target_n; i++)
        if (!is_target_char((unsigned char)target[i])) {
            *why = "bad request target";
            return -1;
        }
    if (rl->method_n == 7 && memcmp(p, "CONNECT", 7) == 0) {
        out->kind = SBX_EGRESS_CONNECT;
        return parse_authority(target, target_n, true, 0, out, why);
    }
    out->kind = SBX_EGRESS_FORWARD;
    if (target_n >= 8 && strncasecmp(target, "https://", 8) == 0) {
        *why = "https:// goes through CONNECT, not as an absolute-form request";
        return -1;
    }
    if (target_n < 7 || strncasecmp(target, "http://", 7) != 0) {
        *why = "only CONNECT and absolute-form http:// requests are served";
        return -1;
    }
    if (memchr(target, '#', target_n)) {
        *why = "a fragment in the request target";
        return -1;
    }
    const char *auth = target + 7, *end = target + target_n;
    const char *auth_end = auth;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?')
        auth_end++;
    if (memchr(auth, '@', (size_t)(auth_end - auth))) {
        *why = "user info in the request target is refused";
        return -1;
    }
    if (parse_authority(auth, (size_t)(auth_end - auth), false, 80, out, why) != 0)
        return -1;
    rl->path = auth_end;
    rl->path_n = (size_t)(end - auth_end);
    return 0;
}

/* The origin-form head: request line, Host from the target, the client's headers but the dropped ones, and
 * "Connection: close" (the relay is one exchange per connection: the upstream closes after its answer). */
static int build_origin_head(const char *p, size_t head_len, size_t first_line_end, const struct sbx_egress_req *r,
                             const struct reqline *rl, struct buf *o)
{
    int rc = 0;
    rc |= buf_append(o, rl->method, rl->method_n);
    rc |= buf_append_char(o, ' ');
    if (rl->path_n == 0 || rl->path[0] == '?')
        rc |= buf_append_char(o, '/');
    rc |= buf_append(o, rl->path, rl->path_n);
    rc |= buf_append_char(o, ' ');
    rc |= buf_append(o, rl->version, 8);
    rc |= buf_append_str(o, "\r\nHost: ");
    bool v6 = strchr(r->host, ':') != NULL;
    if (v6)
        rc |= buf_append_char(o, '[');
    rc |= buf_append_str(o, r->host);
    if (v6)
        rc |= buf_append_char(o, ']');
    if (r->port != 80) {
        rc |= buf_append_char(o, ':');
        rc |= buf_append_u64(o, r->port);
    }
    rc |= buf_append_str(o, "\r\n");
    size_t pos = first_line_end;
    while (rc == 0 && pos < head_len) {
        const char *nl = memchr(p + pos, '\n', head_len - pos);
        size_t len = (size_t)(nl - (p + pos));
        if (len > 0 && p[pos + len - 1] == '\r')
            len--;
        if (len == 0)
            break; /* the final empty line */
        const char *colon = memchr(p + pos, ':', len);
        if (!dropped_header(p + pos, (size_t)(colon - (p + pos)))) {
            rc |= buf_append(o, p + pos, len);
            rc |= buf_append_str(o, "\r\n");
        }
        pos = (size_t)(nl - p) + 1;
    }
    rc |= buf_append_str(o, "Connection: close\r\n\r\n");
    return rc == 0 ? 0 : -1;
}

/* Lines end with LF, a CR before it is allowed (RFC 9112 §2.2 lets a recipient take a bare LF); a CR anywhere else
 * is refused. The head ends at the first empty line. Nothing is written to origin_head unless the result is 0. */
int sbx_egress_parse(const char *p, size_t n, struct sbx_egress_req *out, struct buf *origin_head, const char **why)
{
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (n == 0)
        return 1;
    size_t lim = n < SBX_EGRESS_HEAD_MAX ? n : SBX_EGRESS_HEAD_MAX;
    size_t pos = 0, first_line_end = 0;
    struct reqline rl;
    memset(&rl, 0, sizeof(rl));
    for (;;) {
        const char *nl = memchr(p + pos, '\n', lim - pos);
        if (nl == NULL) {
            if (!partial_line_ok(p + pos, lim - pos, pos == 0)) {
                *why = pos == 0 ? "bad request line" : "bad header line";
                return -1;
            }
            if (n >= SBX_EGRESS_HEAD_MAX) {
                *why = "request head too large";
                return -1;
            }
            return 1;
        }
        size_t end = (size_t)(nl - p);
        size_t len = end - pos;
        if (len > 0 && p[end - 1] == '\r')
            len--;
        if (pos == 0) {
            if (len == 0) {
                *why = "bad request line";
                return -1;
            }
            if (parse_request_line(p, len, out, &rl, why) != 0)
                return -1;
            first_line_end = end + 1;
        } else if (len == 0) {
            out->head_len = end + 1;
            break;
        } else if (p[pos] == ' ' || p[pos] == '\t') {
            *why = "folded header lines are refused";
            return -1;
        } else if (!header_line_ok(p + pos, len)) {
            *why = "bad header line";
            return -1;
        }
        pos = end + 1;
    }
    if (out->kind == SBX_EGRESS_FORWARD) {
        size_t before = origin_head->len;
        if (build_origin_head(p, out->head_len, first_line_end, out, &rl, origin_head) != 0) {
            origin_head->len = before; /* as it was: a refusal leaves nothing behind */
            if (origin_head->data)
                origin_head->data[before] = '\0';
            *why = "request head too large";
            return -1;
        }
    }
    return 0;
}

bool sbx_egress_host_pattern_ok(const char *pattern)
{
    char name[256];
    const char *p = strncmp(pattern, "*.", 2) == 0 ? pattern + 2 : pattern;
    return copy_name(p, strlen(p), name) == 0;
}

bool sbx_egress_host_allowed(const struct sbx_egress_policy *pol, const char *host)
{
    if (pol->n_allow_hosts == 0)
        return true;
    size_t hn = strlen(host);
    for (size_t i = 0; i < pol->n_allow_hosts; i++) {
        const char *pat = pol->allow_hosts[i];
        if (pat == NULL)
            continue;
        if (pat[0] == '*' && pat[1] == '.') {
            /* ".example.com" must end the host, with at least one byte before it: not the name itself, and a dot
             * boundary, so "badexample.com" is not under it. */
            size_t sn = strlen(pat + 1);
            if (hn > sn && strcasecmp(host + hn - sn, pat + 1) == 0)
                return true;
        } else if (strcasecmp(host, pat) == 0) {
            return true;
        }
    }
    return false;
}

bool sbx_egress_port_allowed(const struct sbx_egress_policy *pol, uint16_t port)
{
    if (pol->n_ports == 0)
        return port == 80 || port == 443;
    for (size_t i = 0; i < pol->n_ports; i++)
        if (pol->ports[i] == port)
            return true;
    return false;
}

/* ======================================================================================================
 * The proxy.
 * ====================================================================================================== */

enum conn_state { ST_HEAD, ST_RESOLVE, ST_CONNECT, ST_RELAY, ST_ANSWER, ST_CLOSED };

struct side {
    uv_tcp_t tcp;
    uv_shutdown_t shut_req;
    bool open;   /* initialised, its close callback not yet run */
    bool eof;    /* nothing more comes from it */
    bool paused; /* not read while the other side's write queue is above the high water mark */
    bool shut;   /* its write direction is shut down */
};

struct conn {
    struct sbx_egress *e;
    struct conn *prev, *next;
    enum conn_state state;
    struct side cl; /* the sandbox's end */
    struct side up; /* the outside's end */
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    int pending;    /* handles not closed yet + a getaddrinfo in flight: freed at 0 */
    bool resolving; /* gai in flight */
    bool counted;   /* counts in e->open */
    char *head;     /* SBX_EGRESS_HEAD_MAX bytes: the head as it arrives; later, where lingering reads go */
    size_t head_got;
    struct sbx_egress_req req;
    struct buf origin;
    struct sockaddr_storage addrs[ADDRS_MAX];
    size_t n_addrs, next_addr;
    int last_err;
    uint64_t t_mark; /* loop ms: the last byte (HEAD, RELAY), resolving began (RESOLVE, CONNECT), the answer (ANSWER) */
    uint64_t bytes_out, bytes_in;
    size_t discarded;
};

struct sbx_egress {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listener_open;
    bool stopping;
    bool capped;                  /* max_bytes reached: everything cut, new connections refused */
    struct sbx_egress_policy pol; /* the copy; its arrays below */
    char **hosts;
    uint16_t *ports;
    struct sbx_egress_stats stats;
    struct conn *conns;
    uint32_t open;   /* counted conns */
    uint64_t pauses; /* times a side was paused for backpressure (tests look) */
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    char *owned; /* freed when the write is done; NULL for static bytes */
    char inline_bytes[];
};

static void conn_close(struct conn *c);
static void relay_read_start(struct conn *c, struct side *s);

static void egress_maybe_free(struct sbx_egress *e)
{
    if (!e->stopping || e->listener_open || e->conns)
        return;
    for (size_t i = 0; i < e->pol.n_allow_hosts; i++)
        xfree(e->hosts[i]);
    xfree(e->hosts);
    xfree(e->ports);
    xfree(e);
}

static void conn_free(struct conn *c)
{
    struct sbx_egress *e = c->e;
    if (c->prev)
        c->prev->next = c->next;
    else
        e->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    xfree(c->head);
    buf_free(&c->origin);
    xfree(c);
    egress_maybe_free(e);
}

static void conn_unref(struct conn *c)
{
    if (--c->pending == 0)
        conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void on_side_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    (h == (uv_handle_t *)&c->cl.tcp ? &c->cl : &c->up)->open = false;
    conn_unref(c);
}

static void side_close(struct side *s)
{
    if (s->open && !uv_is_closing((uv_handle_t *)&s->tcp))
        uv_close((uv_handle_t *)&s->tcp, on_side_closed);
}

static void arm_timer(struct conn *c, uint64_t ms);

static uint64_t linger_ms(const struct sbx_egress *e)
{
    return e->pol.idle_timeout_ms < LINGER_MS ? e->pol.idle_timeout_ms : LINGER_MS;
}

static void log_conn_end(struct conn *c)
{
    struct log_line l;
    if (log_begin(&l, LL_DEBUG, "sandbox egress end")) {
        log_field_cstr(&l, "host", c->req.host);
        log_field_uint(&l, "port", c->req.port);
        log_field_uint(&l, "bytes_out", c->bytes_out);
        log_field_uint(&l, "bytes_in", c->bytes_in);
        log_end(&l);
    }
}

/* Everything at once: handles closing, a resolution cancelled (its callback still comes, and drops the last
 * reference). Safe to call again. */
static void conn_close(struct conn *c)
{
    if (c->state == ST_CLOSED)
        return;
    if (c->state == ST_RELAY)
        log_conn_end(c);
    c->state = ST_CLOSED;
    if (c->counted) {
        c->counted = false;
        c->e->open--;
    }
    if (c->resolving)
        (void)uv_cancel((uv_req_t *)&c->gai); /* UV_EBUSY when already running: it then ends normally */
    side_close(&c->cl);
    side_close(&c->up);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* ---- error answers ---- */

static void on_answer_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct conn *c = r->c;
    xfree(r);
    if (c->state != ST_ANSWER)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* The FIN tells the client the answer is complete; what it still sends is read and dropped until it closes. */
    if (uv_shutdown(&c->cl.shut_req, (uv_stream_t *)&c->cl.tcp, NULL) != 0)
        conn_close(c);
}

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->head, SBX_EGRESS_HEAD_MAX);
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    (void)b;
    if (nread == 0 || c->state != ST_ANSWER)
        return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->discarded += (size_t)nread;
    if (c->discarded > LINGER_BYTES)
        conn_close(c);
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Error";
    }
}

/* Answers code with a line saying why, stops whatever was under way outside, and closes after the answer. */
__attribute__((format(printf, 3, 4))) static void refuse(struct conn *c, int code, const char *fmt, ...)
{
    struct sbx_egress *e = c->e;
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    e->stats.refused++;
    struct log_line l;
    if (log_begin(&l, LL_INFO, "sandbox egress refused")) {
        log_field_cstr(&l, "host", c->req.host);
        log_field_uint(&l, "port", c->req.port);
        log_field_int(&l, "status", code);
        log_field_cstr(&l, "why", why);
        log_end(&l);
    }
    if (c->resolving)
        (void)uv_cancel((uv_req_t *)&c->gai);
    side_close(&c->up);
    c->state = ST_ANSWER;
    c->t_mark = uv_now(e->loop);
    arm_timer(c, linger_ms(e));

    char body[440];
    int bn = snprintf(body, sizeof(body), "agentd egress: %s\n", why);
    if (bn < 0 || (size_t)bn >= sizeof(body))
        bn = (int)sizeof(body) - 1;
    struct buf a = BUF_INIT(1024);
    (void)buf_printf(&a,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                     code, reason_phrase(code), bn);
    (void)buf_append(&a, body, (size_t)bn);
    struct wreq *r = xmalloc(sizeof(*r) + a.len);
    r->c = c;
    r->owned = NULL;
    memcpy(r->inline_bytes, a.data, a.len);
    uv_buf_t ub = uv_buf_init(r->inline_bytes, (unsigned)a.len);
    buf_free(&a);
    uv_read_stop((uv_stream_t *)&c->cl.tcp);
    if (uv_write(&r->req, (uv_stream_t *)&c->cl.tcp, &ub, 1, on_answer_written) != 0) {
        xfree(r);
        conn_close(c);
        return;
    }
    (void)uv_read_start((uv_stream_t *)&c->cl.tcp, on_linger_alloc, on_linger_read);
}

/* ---- the byte cap ---- */

static void cap_reached(struct sbx_egress *e)
{
    if (!e->capped)
        log_info("sandbox egress: byte cap of %llu reached: every connection cut",
                 (unsigned long long)e->pol.max_bytes);
    e->capped = true;
    for (struct conn *c = e->conns; c; c = c->next)
        conn_close(c);
}

/* Counts n bytes about to cross (out: towards the outside); false, and everything cut, when they would pass
 * max_bytes (then they are not sent: the counters never pass the cap). */
static bool account(struct conn *c, bool out, size_t n)
{
    struct sbx_egress *e = c->e;
    uint64_t total = e->stats.bytes_out + e->stats.bytes_in;
    if (e->pol.max_bytes && (total + n > e->pol.max_bytes || total + n < total)) {
        cap_reached(e);
        return false;
    }
    if (out) {
        e->stats.bytes_out += n;
        c->bytes_out += n;
    } else {
        e->stats.bytes_in += n;
        c->bytes_in += n;
    }
    return true;
}

/* ---- the relay ---- */

static struct side *other(struct conn *c, struct side *s)
{
    return s == &c->cl ? &c->up : &c->cl;
}

static void on_relay_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct conn *c = r->c;
    uv_stream_t *dst_stream = w->handle;
    xfree(r->owned);
    xfree(r);
    if (c->state != ST_RELAY)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->t_mark = uv_now(c->e->loop);
    struct side *dst = dst_stream == (uv_stream_t *)&c->cl.tcp ? &c->cl : &c->up;
    struct side *src = other(c, dst);
    if (src->paused && !src->eof && uv_stream_get_write_queue_size(dst_stream) <= RELAY_HIGH_WATER) {
        src->paused = false;
        relay_read_start(c, src);
    }
}

/* Writes len bytes at p to dst; owned (may be NULL) is freed once written. */
static int relay_write(struct conn *c, struct side *dst, char *owned, const char *p, size_t len)
{
    struct wreq *r = xmalloc(sizeof(*r));
    r->c = c;
    r->owned = owned;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    if (uv_write(&r->req, (uv_stream_t *)&dst->tcp, &b, 1, on_relay_written) != 0) {
        xfree(owned);
        xfree(r);
        conn_close(c);
        return -1;
    }
    return 0;
}

static void check_done(struct conn *c)
{
    if (c->cl.eof && c->up.shut && c->up.eof && c->cl.shut)
        conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != ST_RELAY)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    (req == &c->cl.shut_req ? &c->cl : &c->up)->shut = true;
    check_done(c);
}

static void on_relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(xmalloc(RELAY_CHUNK), RELAY_CHUNK);
}

static void on_relay_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    struct side *src = s == (uv_stream_t *)&c->cl.tcp ? &c->cl : &c->up;
    struct side *dst = other(c, src);
    if (nread <= 0 || c->state != ST_RELAY) {
        xfree(b->base);
        if (nread == 0 || c->state != ST_RELAY)
            return;
        if (nread != UV_EOF) {
            conn_close(c);
            return;
        }
        /* Half-close: the other side learns there is no more, and may still answer. */
        src->eof = true;
        uv_read_stop(s);
        dst->shut_req.data = c;
        if (uv_shutdown(&dst->shut_req, (uv_stream_t *)&dst->tcp, on_shutdown) != 0)
            conn_close(c);
        return;
    }
    c->t_mark = uv_now(c->e->loop);
    if (!account(c, src == &c->cl, (size_t)nread)) {
        xfree(b->base);
        return;
    }
    if (relay_write(c, dst, b->base, b->base, (size_t)nread) != 0)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&dst->tcp) > RELAY_HIGH_WATER) {
        uv_read_stop(s);
        src->paused = true;
        c->e->pauses++;
    }
}

static void relay_read_start(struct conn *c, struct side *s)
{
    if (uv_read_start((uv_stream_t *)&s->tcp, on_relay_alloc, on_relay_read) != 0)
        conn_close(c);
}

static void start_relay(struct conn *c)
{
    struct sbx_egress *e = c->e;
    static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    c->state = ST_RELAY;
    e->stats.connections++;
    c->t_mark = uv_now(e->loop);
    arm_timer(c, e->pol.idle_timeout_ms);
    (void)uv_tcp_nodelay(&c->up.tcp, 1);
    if (c->req.kind == SBX_EGRESS_CONNECT) {
        if (relay_write(c, &c->cl, NULL, established, sizeof(established) - 1) != 0)
            return;
    } else {
        if (!account(c, true, c->origin.len))
            return;
        size_t n = c->origin.len;
        char *o = buf_steal(&c->origin, NULL);
        if (relay_write(c, &c->up, o, o, n) != 0)
            return;
    }
    /* What the client sent after its head (a TLS hello, a request body) goes first, in order. */
    size_t extra = c->head_got - c->req.head_len;
    if (extra > 0) {
        if (!account(c, true, extra))
            return;
        char *x = xmemdup(c->head + c->req.head_len, extra);
        if (relay_write(c, &c->up, x, x, extra) != 0)
            return;
    }
    relay_read_start(c, &c->cl);
    if (c->state == ST_RELAY)
        relay_read_start(c, &c->up);
}

/* ---- resolving and connecting ---- */

static void try_connect(struct conn *c);

static void on_up_closed_retry(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->up.open = false;
    if (c->state != ST_CONNECT) {
        conn_unref(c);
        return;
    }
    c->pending--; /* the sandbox side and the timer still hold it */
    try_connect(c);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != ST_CONNECT)
        return; /* closing (UV_ECANCELED): the handle's close callback does the rest */
    if (status < 0) {
        c->last_err = status;
        uv_close((uv_handle_t *)&c->up.tcp, on_up_closed_retry);
        return;
    }
    start_relay(c);
}

/* The next address, or 502 when none is left. The deadline set when resolving began still runs. */
static void try_connect(struct conn *c)
{
    struct sbx_egress *e = c->e;
    if (c->next_addr >= c->n_addrs) {
        refuse(c, 502, "cannot connect to %s port %u (%s)", c->req.host, (unsigned)c->req.port,
               c->last_err ? uv_strerror(c->last_err) : "no address");
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->next_addr++];
    memset(&c->up, 0, sizeof(c->up));
    (void)uv_tcp_init(e->loop, &c->up.tcp);
    c->up.tcp.data = c;
    c->up.open = true;
    c->pending++;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->up.tcp, sa, on_connected);
    if (rc != 0) {
        c->last_err = rc;
        uv_close((uv_handle_t *)&c->up.tcp, on_up_closed_retry);
    }
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    struct conn *c = g->data;
    c->resolving = false;
    if (c->state != ST_RESOLVE) { /* closed, or answered (a timeout) meanwhile */
        uv_freeaddrinfo(res);
        conn_unref(c);
        return;
    }
    c->pending--; /* the sandbox side and the timer still hold it */
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        refuse(c, 502, "cannot resolve %s (%s)", c->req.host, status ? uv_strerror(status) : "no address");
        return;
    }
    /* Every address is checked, not only those tried: a name that also points inside is refused (DNS rebinding:
     * the same rule as http_fetch). */
    bool private_seen = false;
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
            continue;
        if (!c->e->pol.allow_private_networks && !netaddr_public(a->ai_addr))
            private_seen = true;
        if (c->n_addrs < ADDRS_MAX && a->ai_addrlen <= sizeof(c->addrs[0])) {
            memcpy(&c->addrs[c->n_addrs], a->ai_addr, a->ai_addrlen);
            set_port(&c->addrs[c->n_addrs], c->req.port);
            c->n_addrs++;
        }
    }
    uv_freeaddrinfo(res);
    if (private_seen) {
        refuse(c, 403, "%s resolves to a private address", c->req.host);
        return;
    }
    if (c->n_addrs == 0) {
        refuse(c, 502, "cannot resolve %s (no address)", c->req.host);
        return;
    }
    c->state = ST_CONNECT;
    try_connect(c);
}

/* The head is in: the policy, then a resolution or a connection. Nothing leaves before the checks pass. */
static void begin(struct conn *c)
{
    struct sbx_egress *e = c->e;
    const struct sbx_egress_req *r = &c->req;
    c->state = ST_RESOLVE;
    c->t_mark = uv_now(e->loop);
    arm_timer(c, e->pol.connect_timeout_ms);
    if (!sbx_egress_port_allowed(&e->pol, r->port)) {
        refuse(c, 403, "port %u is not allowed", (unsigned)r->port);
        return;
    }
    if (!sbx_egress_host_allowed(&e->pol, r->host)) {
        refuse(c, 403, "host %s is not allowed", r->host);
        return;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, r->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, r->host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
    }
    if (ss.ss_family != AF_UNSPEC) {
        if (!e->pol.allow_private_networks && !netaddr_public((const struct sockaddr *)&ss)) {
            refuse(c, 403, "%s is a private address", r->host);
            return;
        }
        set_port(&ss, r->port);
        c->addrs[0] = ss;
        c->n_addrs = 1;
        c->state = ST_CONNECT;
        try_connect(c);
        return;
    }
    /* A name (or a numeric form inet_pton does not take, "127.1": the resolver turns it into the address it means,
     * which is then checked like any other). */
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    int rc = uv_getaddrinfo(e->loop, &c->gai, on_resolved, r->host, NULL, &hints);
    if (rc != 0) {
        refuse(c, 502, "cannot resolve %s (%s)", r->host, uv_strerror(rc));
        return;
    }
    c->resolving = true;
    c->pending++;
}

/* ---- the head ---- */

static void on_head_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->head + c->head_got, (unsigned)(SBX_EGRESS_HEAD_MAX - c->head_got));
}

static void on_head_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (nread == 0 || c->state != ST_HEAD)
        return;
    if (nread < 0) { /* gone before a whole head: nothing to answer */
        conn_close(c);
        return;
    }
    c->head_got += (size_t)nread;
    c->t_mark = uv_now(c->e->loop);
    /* Parsing starts over on each read: only worth it when a line ended, the buffer is full, or on the first read
     * (junk such as a TLS hello sent to the proxy itself is refused at once, not after 8 KiB or the idle time). */
    if (c->head_got < SBX_EGRESS_HEAD_MAX && c->head_got != (size_t)nread &&
        memchr(b->base, '\n', (size_t)nread) == NULL)
        return;
    const char *why;
    int r = sbx_egress_parse(c->head, c->head_got, &c->req, &c->origin, &why);
    if (r == 1)
        return;
    uv_read_stop(s);
    if (r < 0) {
        refuse(c, 400, "%s", why);
        return;
    }
    begin(c);
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct sbx_egress *e = c->e;
    uint64_t limit;
    switch (c->state) {
    case ST_HEAD:
    case ST_RELAY:
        limit = e->pol.idle_timeout_ms;
        break;
    case ST_RESOLVE:
    case ST_CONNECT:
        limit = e->pol.connect_timeout_ms;
        break;
    case ST_ANSWER:
        limit = linger_ms(e);
        break;
    default:
        return;
    }
    /* Reads only move t_mark; the timer catches up here, so a busy connection costs no timer update per read. */
    uint64_t now = uv_now(e->loop), due = c->t_mark + limit;
    if (now < due) {
        arm_timer(c, due - now);
        return;
    }
    if (c->state == ST_RESOLVE || c->state == ST_CONNECT) {
        refuse(c, 504, "connecting to %s port %u timed out", c->req.host, (unsigned)c->req.port);
        return;
    }
    if (c->state != ST_ANSWER)
        log_debug("sandbox egress: idle connection to %s closed", c->req.host[0] ? c->req.host : "(no request)");
    conn_close(c);
}

static void arm_timer(struct conn *c, uint64_t ms)
{
    (void)uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status)
{
    struct sbx_egress *e = server->data;
    if (status < 0) {
        log_warn("sandbox egress: accept: %s", uv_strerror(status));
        return;
    }
    struct conn *c = xcalloc(1, sizeof(*c));
    c->e = e;
    c->next = e->conns;
    if (e->conns)
        e->conns->prev = c;
    e->conns = c;
    c->head = xmalloc(SBX_EGRESS_HEAD_MAX);
    /* The origin head is the client's head with a Host line and "Connection: close" more, CRs added to bare LFs. */
    buf_init(&c->origin, 2 * SBX_EGRESS_HEAD_MAX + 512);
    c->state = ST_HEAD;
    (void)uv_tcp_init(e->loop, &c->cl.tcp);
    c->cl.tcp.data = c;
    c->cl.open = true;
    (void)uv_timer_init(e->loop, &c->timer);
    c->timer.data = c;
    c->pending = 2;
    if (uv_accept(server, (uv_stream_t *)&c->cl.tcp) != 0) {
        conn_close(c);
        return;
    }
    (void)uv_tcp_nodelay(&c->cl.tcp, 1);
    if (e->capped) {
        refuse(c, 403, "byte cap reached");
        return;
    }
    if (e->open >= e->pol.max_connections) {
        refuse(c, 503, "too many connections (%u open)", (unsigned)e->open);
        return;
    }
    c->counted = true;
    e->open++;
    c->t_mark = uv_now(e->loop);
    arm_timer(c, e->pol.idle_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->cl.tcp, on_head_alloc, on_head_read) != 0)
        conn_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct sbx_egress *e = h->data;
    e->listener_open = false;
    egress_maybe_free(e);
}

static void copy_policy(struct sbx_egress *e, const struct sbx_egress_policy *pol)
{
    static const struct sbx_egress_policy none;
    if (pol == NULL)
        pol = &none;
    e->pol = *pol;
    e->pol.n_allow_hosts = 0;
    e->hosts = xcalloc(pol->n_allow_hosts ? pol->n_allow_hosts : 1, sizeof(char *));
    for (size_t i = 0; i < pol->n_allow_hosts; i++)
        if (pol->allow_hosts[i])
            e->hosts[e->pol.n_allow_hosts++] = xstrdup(pol->allow_hosts[i]);
    e->pol.allow_hosts = (const char *const *)e->hosts;
    e->ports = pol->n_ports ? xmemdup(pol->ports, pol->n_ports * sizeof(uint16_t)) : NULL;
    e->pol.ports = e->ports;
    if (e->pol.max_connections == 0)
        e->pol.max_connections = DEFAULT_MAX_CONNECTIONS;
    if (e->pol.connect_timeout_ms == 0)
        e->pol.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (e->pol.idle_timeout_ms == 0)
        e->pol.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
}

struct sbx_egress *sbx_egress_start(uv_loop_t *loop, int listen_fd, const struct sbx_egress_policy *pol,
                                    struct buf *err)
{
    if (listen_fd < 0) {
        (void)buf_printf(err, "sandbox egress: no listening socket");
        return NULL;
    }
    struct sbx_egress *e = xcalloc(1, sizeof(*e));
    e->loop = loop;
    copy_policy(e, pol);
    (void)uv_tcp_init(loop, &e->listener);
    e->listener.data = e;
    e->listener_open = true;
    int rc = uv_tcp_open(&e->listener, listen_fd);
    if (rc != 0) {
        (void)close(listen_fd); /* not taken by the handle */
        (void)buf_printf(err, "sandbox egress: cannot use the listening socket: %s", uv_strerror(rc));
        goto fail;
    }
    /* listen() again on a listening socket only sets the backlog; libuv needs the call to start accepting. */
    rc = uv_listen((uv_stream_t *)&e->listener, 128, on_connection);
    if (rc != 0) {
        (void)buf_printf(err, "sandbox egress: cannot listen: %s", uv_strerror(rc));
        goto fail;
    }
    return e;
fail:
    e->stopping = true;
    uv_close((uv_handle_t *)&e->listener, on_listener_closed); /* frees e */
    return NULL;
}

void sbx_egress_get_stats(const struct sbx_egress *e, struct sbx_egress_stats *out)
{
    *out = e->stats;
}

void sbx_egress_stop(struct sbx_egress *e)
{
    if (e == NULL || e->stopping)
        return;
    e->stopping = true;
    uv_close((uv_handle_t *)&e->listener, on_listener_closed);
    for (struct conn *c = e->conns; c; c = c->next)
        conn_close(c);
}
