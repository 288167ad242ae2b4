/* The native HTTP/1.1 upstream client (net/h1client.c) through the upstream_* interface, against a scripted
 * libuv server on the same loop: keep-alive reuse, chunked and close-delimited bodies, 1xx, pause/resume,
 * cancellation inside callbacks, the dead-pooled-connection retry, connect/first-byte/transfer deadlines,
 * oversized and malformed responses, DNS, the proxy routing, and shutdown with everything still open. The same
 * scenario also runs through libcurl to show that both backends report alike. */
#include "../../../src/net/upstream.c"

#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/h1_url.h"
#include "test.h"

static uv_loop_t loop;
static struct up_options uopts; /* what every upstream_new here is given (the TLS tests add the test CA) */

/* ---------- a scripted server ---------- */

enum act_kind {
    ACT_RESPOND,       /* write bytes, keep the connection */
    ACT_RESPOND_CLOSE, /* write bytes, then close at once */
    ACT_CLOSE,         /* close without answering */
    ACT_HANG,          /* read the request, never answer */
};

struct act {
    enum act_kind kind;
    const char *bytes;
    size_t len; /* 0: strlen(bytes) */
};

struct tsrv {
    uv_tcp_t tcp;
    int port;
    int accepted, open, requests;
    struct act acts[16];
    int nacts, next;
    char last[4096]; /* the last complete request, raw */
    size_t last_len;
};

struct tconn {
    uv_tcp_t tcp;
    http_parser p;
    struct tsrv *s;
    struct buf raw;
    bool done_msg;
    bool closed;
};

static const char OK_SMALL[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Test: small\r\n"
                               "Content-Length: 11\r\n\r\n{\"ok\":true}";

static void tconn_closed(uv_handle_t *h)
{
    struct tconn *c = h->data;
    buf_free(&c->raw);
    xfree(c);
}

static void tconn_close(struct tconn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    c->s->open--;
    uv_close((uv_handle_t *)&c->tcp, tconn_closed);
}

static void on_t_write(uv_write_t *w, int status)
{
    (void)status;
    xfree(w);
}

static void t_write(struct tconn *c, const char *bytes, size_t len)
{
    uv_write_t *w = xcalloc(1, sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)len);
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_t_write);
}

static int on_t_msg(http_parser *p)
{
    struct tconn *c = p->data;
    c->done_msg = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings t_settings = {.on_message_complete = on_t_msg};

static void t_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)h;
    static char mem[65536];
    (void)n;
    *b = uv_buf_init(mem, sizeof(mem));
}

static void on_t_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct tconn *c = st->data;
    if (c->closed)
        return;
    if (nread < 0) {
        tconn_close(c);
        return;
    }
    size_t off = 0;
    buf_append(&c->raw, b->base, (size_t)nread);
    while (off < (size_t)nread && !c->closed) {
        size_t n = http_parser_execute(&c->p, &t_settings, b->base + off, (size_t)nread - off);
        off += n;
        if (!c->done_msg) {
            if (HTTP_PARSER_ERRNO(&c->p) != HPE_OK)
                tconn_close(c);
            break;
        }
        c->done_msg = false;
        http_parser_pause(&c->p, 0);
        struct tsrv *s = c->s;
        s->requests++;
        s->last_len = c->raw.len < sizeof(s->last) - 1 ? c->raw.len : sizeof(s->last) - 1;
        memcpy(s->last, c->raw.data, s->last_len);
        s->last[s->last_len] = '\0';
        buf_reset(&c->raw);
        struct act a = s->next < s->nacts ? s->acts[s->next++] : (struct act){ACT_RESPOND, OK_SMALL, 0};
        size_t len = a.bytes ? (a.len ? a.len : strlen(a.bytes)) : 0;
        if (a.kind == ACT_RESPOND || a.kind == ACT_RESPOND_CLOSE)
            t_write(c, a.bytes, len);
        if (a.kind == ACT_RESPOND_CLOSE || a.kind == ACT_CLOSE)
            tconn_close(c); /* the write above went out synchronously (small, empty queue) */
    }
}

static void on_t_conn(uv_stream_t *l, int status)
{
    struct tsrv *s = l->data;
    if (status < 0)
        return;
    struct tconn *c = xcalloc(1, sizeof(*c));
    c->s = s;
    buf_init(&c->raw, BUF_UNBOUNDED);
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, tconn_closed);
        return;
    }
    s->accepted++;
    s->open++;
    uv_read_start((uv_stream_t *)&c->tcp, t_alloc, on_t_read);
}

/* Freed by tsrv_stop's close callback (the listener may still be closing when the next test starts). */
static struct tsrv *tsrv_start(void)
{
    struct tsrv *s = xcalloc(1, sizeof(*s));
    uv_tcp_init(&loop, &s->tcp);
    s->tcp.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&s->tcp, (const struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&s->tcp, 64, on_t_conn);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return s;
}

static void tsrv_script(struct tsrv *s, enum act_kind kind, const char *bytes, size_t len)
{
    s->acts[s->nacts++] = (struct act){kind, bytes, len};
}

static void tsrv_closed(uv_handle_t *h)
{
    xfree(h->data);
}

static void tsrv_stop(struct tsrv *s)
{
    uv_close((uv_handle_t *)&s->tcp, tsrv_closed);
}

/* ---------- running the loop until something happened ---------- */

static uv_timer_t guard;
static bool guard_fired;

static void on_guard(uv_timer_t *t)
{
    (void)t;
    guard_fired = true;
}

/* Runs the loop until *flag reaches want (or 5 s pass: a failure, not a hang). */
static bool run_until(const int *flag, int want)
{
    guard_fired = false;
    uv_timer_start(&guard, on_guard, 5000, 0);
    while (*flag < want && !guard_fired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&guard);
    return *flag >= want;
}

/* Runs the loop until *flag drops to want. */
static bool run_until_down(const int *flag, int want)
{
    guard_fired = false;
    uv_timer_start(&guard, on_guard, 5000, 0);
    while (*flag > want && !guard_fired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&guard);
    return *flag <= want;
}

/* A few loop turns without waiting. */
static void spin(int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void count_active(uv_handle_t *h, void *arg)
{
    if (h != (uv_handle_t *)&guard && uv_is_active(h) && !uv_is_closing(h))
        (*(int *)arg)++;
}

/* ---------- a client transfer ---------- */

struct res {
    struct up_xfer *x;
    struct upstream *u;
    int headers, datas, dones;
    bool ok;
    enum up_result result;
    int status;
    char err[256];
    char xtest[64];
    struct buf body;
    int pause_at;    /* return PAUSE on this data call (1-based), once */
    int pause_every; /* or on every n-th call */
    int paused;      /* times PAUSE was returned */
    struct buf paused_bytes;
    bool redelivered_same; /* the call after the pause carried the same bytes */
    bool check_redelivery;
    bool cancel_in_headers, cancel_in_data;
    void (*after_done)(struct res *r);
    struct res *next_res; /* for after_done */
    const char *next_url;
};

static void res_init(struct res *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->body, BUF_UNBOUNDED);
    buf_init(&r->paused_bytes, BUF_UNBOUNDED);
}

static void res_free(struct res *r)
{
    buf_free(&r->body);
    buf_free(&r->paused_bytes);
}

static void on_h(struct up_xfer *x, void *ud)
{
    struct res *r = ud;
    r->headers++;
    r->status = x->status;
    up_xfer_header(x, "x-test", r->xtest, sizeof(r->xtest));
    if (r->cancel_in_headers)
        upstream_cancel(x);
}

static int on_d(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    struct res *r = ud;
    r->datas++;
    if (r->check_redelivery) {
        r->check_redelivery = false;
        r->redelivered_same = len == r->paused_bytes.len && memcmp(data, r->paused_bytes.data, len) == 0;
    }
    if ((r->pause_at && r->datas == r->pause_at) || (r->pause_every && r->datas % r->pause_every == 0)) {
        r->paused++;
        buf_reset(&r->paused_bytes);
        buf_append(&r->paused_bytes, data, len);
        r->check_redelivery = true;
        return UP_DATA_PAUSE;
    }
    buf_append(&r->body, data, len);
    if (r->cancel_in_data) {
        upstream_cancel(x);
        return UP_DATA_OK;
    }
    return UP_DATA_OK;
}

static void on_dn(struct up_xfer *x, enum up_result result, void *ud)
{
    struct res *r = ud;
    r->dones++;
    r->ok = result == UP_OK;
    r->result = result;
    snprintf(r->err, sizeof(r->err), "%s", up_xfer_error(x));
    r->x = NULL;
    if (r->after_done)
        r->after_done(r);
}

static const struct up_callbacks cbs = {on_h, on_d, on_dn};

static long connect_ms = 5000; /* TLS handshakes under valgrind are slow; the deadline tests lower it */

static struct up_xfer *start_ex(struct upstream *u, const char *url, const char *body, struct res *r, int client,
                                long fb_ms, long total_ms)
{
    struct up_request q;
    up_request_init(&q);
    buf_append_str(&q.url, url);
    up_request_header(&q, "Content-Type", "application/json");
    up_request_header(&q, "Authorization", "Bearer k");
    buf_append_str(&q.headers, "Expect:\n");
    if (body)
        buf_append_str(&q.body, body);
    q.client = client;
    q.connect_timeout_ms = connect_ms;
    q.first_byte_timeout_ms = fb_ms;
    q.timeout_ms = total_ms;
    r->u = u;
    r->x = upstream_start(u, &q, &cbs, r);
    up_request_free(&q);
    return r->x;
}

static struct up_xfer *start(struct upstream *u, const char *url, const char *body, struct res *r)
{
    return start_ex(u, url, body, r, UP_CLIENT_NATIVE, 0, 0);
}

static char url_buf[256];
static const char *url_of(const struct tsrv *s, const char *path)
{
    snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d%s", s->port, path);
    return url_buf;
}

static struct h1_stats stats(struct upstream *u)
{
    struct h1_stats st;
    h1_get_stats(u->h1, &st);
    return st;
}

/* ---------- tests ---------- */

static void test_url(void)
{
    struct h1_url u;
    ok(h1_parse_url("http://127.0.0.1:8080/v1/chat?x=1", 33, &u) == 0);
    ok(!u.tls && u.port == 8080 && u.port_given && u.host_len == 9 && memcmp(u.host, "127.0.0.1", 9) == 0);
    ok(u.target_len == 12 && memcmp(u.target, "/v1/chat?x=1", 12) == 0);
    const char *s = "https://api.openai.com";
    ok(h1_parse_url(s, strlen(s), &u) == 0 && u.tls && u.port == 443 && !u.port_given);
    ok(u.target_len == 1 && u.target[0] == '/');
    s = "http://[::1]:9/a";
    ok(h1_parse_url(s, strlen(s), &u) == 0 && u.ipv6 && u.host_len == 3 && u.port == 9);
    const char *bad[] = {"ftp://h/",
                         "http://",
                         "http://u:p@h/",
                         "http://h:0/",
                         "http://h:65536/",
                         "http://h:/",
                         "http://h/a b",
                         "http://h/#frag",
                         "http://h/../x",
                         "http://h/a/.",
                         "http://h?q",
                         "http://h%41/",
                         "http://[fe80::1%25eth0]/",
                         "HTTP://h/",
                         "http://h/\x7f",
                         "http://[::1/",
                         "http://h:12a/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (!ok(h1_parse_url(bad[i], strlen(bad[i]), &u) == -1))
            printf("#   accepted %s\n", bad[i]);
    s = "http://h/a/..b/.c?x=/../";
    ok(h1_parse_url(s, strlen(s), &u) == 0); /* not dot segments; the query is not a path */
}

static void test_no_proxy(void)
{
    ok(h1_no_proxy_match("*", "x.example", 9));
    ok(h1_no_proxy_match("example.com", "example.com", 11));
    ok(h1_no_proxy_match("localhost, .example.com", "api.example.com", 15));
    ok(h1_no_proxy_match("EXAMPLE.com.", "Api.Example.COM", 15));
    ok(!h1_no_proxy_match("example.com", "nonexample.com", 14));
    ok(!h1_no_proxy_match("api.example.com", "example.com", 11));
    ok(h1_no_proxy_match("10.0.0.1,127.0.0.1", "127.0.0.1", 9));
    ok(!h1_no_proxy_match("127.0.0.0/8", "127.0.0.1", 9)); /* CIDR: curl decides */
    ok(!h1_no_proxy_match("", "a", 1));
    ok(!h1_no_proxy_match(NULL, "a", 1));
    ok(!h1_no_proxy_match("*.example.com", "a.example.com", 13)); /* not a pattern curl knows either */
}

static void test_keepalive(void)
{
    struct tsrv *s = tsrv_start();
    struct upstream *u = upstream_new(&loop, uopts);
    struct h1_stats before = stats(u);
    for (int i = 0; i < 3; i++) {
        struct res r;
        res_init(&r);
        ok(start(u, url_of(s, "/v1/chat/completions?a=b"), "{\"n\":1}", &r) != NULL);
        ok(r.x->native != NULL);
        ok(run_until(&r.dones, 1));
        ok(r.ok && r.status == 200 && r.headers == 1);
        is_str(r.xtest, "small");
        is_str(r.body.data, "{\"ok\":true}");
        res_free(&r);
    }
    is_int(s->accepted, 1);
    is_int(s->requests, 3);
    struct h1_stats st = stats(u);
    is_int(st.connects - before.connects, 1);
    is_int(st.reuses - before.reuses, 2);
    is_int(st.idle, 1);
    /* the request as it went out: one head, our framing, the caller's headers, "Expect:" dropped */
    char want_host[64];
    snprintf(want_host, sizeof(want_host), "\r\nHost: 127.0.0.1:%d\r\n", s->port);
    ok(strncmp(s->last, "POST /v1/chat/completions?a=b HTTP/1.1\r\n", 40) == 0);
    ok(strstr(s->last, want_host) != NULL);
    ok(strstr(s->last, "\r\nContent-Length: 7\r\n") != NULL);
    ok(strstr(s->last, "\r\nAuthorization: Bearer k\r\n") != NULL);
    ok(strstr(s->last, "Expect") == NULL);
    ok(s->last_len > 7 && memcmp(s->last + s->last_len - 11, "\r\n\r\n{\"n\":1}", 11) == 0);
    upstream_free(u);
    tsrv_stop(s);
}

static const char CHUNKED[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: chunky\r\n\r\n"
                              "5\r\nhello\r\n7\r\n, world\r\n1;ext=1\r\n!\r\n0\r\nTrailer: t\r\n\r\n";

/* 200 transfers at once, twice: the pool keeps what the burst needed (more than the floor of 64), so the second
 * burst opens nothing new. */
static void test_pool_follows_load(void)
{
    struct tsrv *s = tsrv_start();
    struct upstream *u = upstream_new(&loop, uopts);
    enum { N = 200 };
    static struct res rs[N];
    for (int round = 0; round < 2; round++) {
        int done = 0;
        for (int i = 0; i < N; i++) {
            res_init(&rs[i]);
            start(u, url_of(s, "/"), "x", &rs[i]);
        }
        guard_fired = false;
        uv_timer_start(&guard, on_guard, 5000, 0);
        while (done < N && !guard_fired) {
            uv_run(&loop, UV_RUN_ONCE);
            done = 0;
            for (int i = 0; i < N; i++)
                done += rs[i].dones;
        }
        uv_timer_stop(&guard);
        is_int(done, N);
        int good = 0;
        for (int i = 0; i < N; i++) {
            good += rs[i].ok;
            res_free(&rs[i]);
        }
        is_int(good, N);
    }
    is_int(s->accepted, N);
    is_int(stats(u).idle, N);
    upstream_free(u);
    tsrv_stop(s);
}

static void test_idle_timeout(void)
{
    struct tsrv *s = tsrv_start();
    struct upstream *u = upstream_new(&loop, uopts);
    h1_set_idle_timeout(u->h1, 100);
    struct res r;
    /* the connect deadline is still armed when the connection is pooled: it fires, finds the connection idle
     * long enough (or re-arms for the rest of the idle time) */
    res_init(&r);
    connect_ms = 200;
    start(u, url_of(s, "/"), "x", &r);
    connect_ms = 5000;
    ok(run_until(&r.dones, 1) && r.ok);
    is_int(stats(u).idle, 1);
    uint64_t t0 = uv_now(&loop);
    ok(run_until_down(&s->open, 0)); /* we closed it */
    ok(uv_now(&loop) - t0 >= 90);
    is_int(stats(u).idle, 0);
    res_free(&r);
    /* a reused connection whose transfer had no deadline at all (the timer is stopped): the idle timer is armed
     * when it is pooled */
    h1_set_idle_timeout(u->h1, 60000);
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.dones, 1) && r.ok);
    res_free(&r);
    h1_set_idle_timeout(u->h1, 50);
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r); /* reuses it */
    ok(run_until(&r.dones, 1) && r.ok);
    is_int(stats(u).idle, 1);
    t0 = uv_now(&loop);
    ok(run_until_down(&s->open, 0));
    ok(uv_now(&loop) - t0 >= 40);
    is_int(stats(u).idle, 0);
    res_free(&r);
    upstream_free(u);
    tsrv_stop(s);
}

static void test_chunked(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(s, ACT_RESPOND, CHUNKED, 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.dones, 1));
    ok(r.ok);
    is_str(r.body.data, "hello, world!");
    is_str(r.xtest, "chunky");
    res_free(&r);
    /* the connection was clean after the last chunk: reused */
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.dones, 1) && r.ok);
    is_int(s->accepted, 1);
    res_free(&r);
    upstream_free(u);
    tsrv_stop(s);
}

static void test_close_delimited(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 200 OK\r\nConnection: close\r\nX-Test: eof\r\n\r\nhello until eof", 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.0 200 OK\r\n\r\nten four", 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.dones, 1));
    ok(r.ok);
    is_str(r.body.data, "hello until eof");
    res_free(&r);
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.dones, 1));
    ok(r.ok);
    is_str(r.body.data, "ten four");
    res_free(&r);
    is_int(s->accepted, 2);
    is_int(stats(u).idle, 0);
    upstream_free(u);
    tsrv_stop(s);
}

static void test_informational(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(s, ACT_RESPOND,
                "HTTP/1.1 100 Continue\r\nX-Test: early\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                "HTTP/1.1 201 Created\r\nX-Test: final\r\nContent-Length: 2\r\n\r\nok",
                0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.dones, 1));
    ok(r.ok);
    is_int(r.headers, 1);
    is_int(r.status, 201);
    is_str(r.xtest, "final");
    is_str(r.body.data, "ok");
    res_free(&r);
    upstream_free(u);
    tsrv_stop(s);
}

static char big_resp[40000];

static void test_pause_resume(void)
{
    struct tsrv *s = tsrv_start();
    /* one Content-Length body */
    int n = snprintf(big_resp, sizeof(big_resp), "HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n");
    for (int i = 0; i < 30000; i++)
        big_resp[n + i] = (char)('a' + i % 26);
    tsrv_script(s, ACT_RESPOND, big_resp, (size_t)n + 30000);
    /* chunks in one write: pausing on the second leaves the third unparsed (the stash) */
    tsrv_script(s, ACT_RESPOND,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n",
                0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    r.pause_at = 1;
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.paused, 1));
    ok(r.x && r.x->paused && r.dones == 0);
    int datas = r.datas;
    upstream_resume(r.x); /* delivers the held bytes again, synchronously */
    ok(r.datas == datas + 1 && r.redelivered_same);
    ok(run_until(&r.dones, 1));
    ok(r.ok);
    is_int(r.body.len, 30000);
    ok(r.body.len == 30000 && memcmp(r.body.data, big_resp + n, 30000) == 0);
    res_free(&r);

    res_init(&r);
    r.pause_at = 2;
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.paused, 1));
    ok(r.dones == 0);
    is_str(r.paused_bytes.data, "two");
    upstream_resume(r.x);
    ok(r.redelivered_same);
    ok(run_until(&r.dones, 1));
    ok(r.ok);
    is_str(r.body.data, "onetwothree");
    res_free(&r);
    is_int(s->accepted, 1); /* paused and resumed responses still leave a reusable connection */
    upstream_free(u);
    tsrv_stop(s);
}

static void test_cancel(void)
{
    struct tsrv *s = tsrv_start();
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    /* inside on_headers: nothing more is called, the connection is closed, not pooled */
    res_init(&r);
    r.cancel_in_headers = true;
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.headers, 1));
    ok(run_until_down(&s->open, 0)); /* the server saw the connection close */
    is_int(r.datas, 0);
    is_int(r.dones, 0);
    is_int(stats(u).open, 0);
    res_free(&r);
    /* inside on_data */
    res_init(&r);
    r.cancel_in_data = true;
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&r.datas, 1));
    is_int(r.dones, 0);
    is_int(stats(u).open, 0);
    res_free(&r);
    ok(run_until_down(&s->open, 0));
    /* from outside, before the answer (the server hangs), and before the connection is even up */
    s->next = s->nacts = 0;
    tsrv_script(s, ACT_HANG, NULL, 0);
    res_init(&r);
    int req_before = s->requests;
    start(u, url_of(s, "/"), "x", &r);
    ok(run_until(&s->requests, req_before + 1));
    upstream_cancel(r.x);
    ok(run_until_down(&s->open, 0));
    is_int(r.dones, 0);
    res_free(&r);
    res_init(&r);
    start(u, url_of(s, "/"), "x", &r);
    upstream_cancel(r.x); /* still connecting */
    spin(5);
    is_int(r.dones, 0);
    is_int(r.headers, 0);
    is_int(stats(u).open, 0);
    res_free(&r);
    upstream_free(u);
    tsrv_stop(s);
}

static void start_next(struct res *r)
{
    /* from inside on_done, as the gateway's next attempt would: takes the connection just pooled */
    start(r->u, r->next_url, "again", r->next_res);
}

/* Starts r1 with body and, from inside r1's on_done, r2 on the same URL; runs the loop until r2 is done. */
static bool run_back_to_back(struct upstream *u, const char *url, const char *body, struct res *r1, struct res *r2)
{
    res_init(r1);
    res_init(r2);
    r1->after_done = start_next;
    r1->next_res = r2;
    r1->next_url = url;
    start(u, url, body, r1);
    return run_until(&r2->dones, 1);
}

static void test_dead_pooled_retry(void)
{
    struct tsrv *s = tsrv_start();
    /* keep-alive response, then the server closes anyway: the pooled connection is dead */
    tsrv_script(s, ACT_RESPOND_CLOSE, OK_SMALL, 0);
    tsrv_script(s, ACT_RESPOND, OK_SMALL, 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct h1_stats b = stats(u);
    struct res r1, r2;
    char url[256];
    snprintf(url, sizeof(url), "%s", url_of(s, "/"));
    ok(run_back_to_back(u, url, "first", &r1, &r2));
    ok(r1.ok && r2.ok);
    if (!r2.ok)
        printf("#   %s\n", r2.err);
    is_int(s->accepted, 2);
    is_int(s->requests, 2);
    struct h1_stats st = stats(u);
    is_int(st.reuses - b.reuses, 1);
    is_int(st.retries - b.retries, 1);
    res_free(&r1);
    res_free(&r2);

    /* a fresh connection closed without an answer is not retried (it may have been processed) */
    tsrv_script(s, ACT_CLOSE, NULL, 0);
    upstream_free(u);
    u = upstream_new(&loop, uopts);
    res_init(&r1);
    start(u, url, "x", &r1);
    ok(run_until(&r1.dones, 1));
    ok(!r1.ok);
    is_str(r1.err, "Empty reply from server");
    is_int(stats(u).retries, 0);
    res_free(&r1);

    /* retried once, not twice */
    tsrv_script(s, ACT_RESPOND_CLOSE, OK_SMALL, 0);
    tsrv_script(s, ACT_CLOSE, NULL, 0);
    ok(run_back_to_back(u, url, "x", &r1, &r2));
    ok(r1.ok && !r2.ok);
    is_str(r2.err, "Empty reply from server");
    is_int(stats(u).retries, 1);
    res_free(&r1);
    res_free(&r2);
    upstream_free(u);
    tsrv_stop(s);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_connect_errors(void)
{
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    int port = free_port();
    char url[128], want[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
    start(u, url, "x", &r);
    ok(r.dones == 0); /* never inside upstream_start */
    ok(run_until(&r.dones, 1));
    ok(!r.ok);
    snprintf(want, sizeof(want), "Failed to connect to 127.0.0.1 port %d: Connection refused", port);
    is_str(r.err, want);
    is_str(up_result_name(r.result), "connect");
    res_free(&r);

    /* an unknown name (".invalid" never resolves, RFC 6761) */
    res_init(&r);
    start(u, "http://agentd-test.invalid:80/x", "x", &r);
    ok(run_until(&r.dones, 1));
    ok(!r.ok && strncmp(r.err, "Could not resolve host: agentd-test.invalid", 43) == 0);
    is_str(up_result_name(r.result), "dns");
    res_free(&r);

    /* a listener whose accept queue is full: SYNs are dropped, the connect deadline ends it */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(lfd, (struct sockaddr *)&a, sizeof(a));
    listen(lfd, 0);
    socklen_t alen = sizeof(a);
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof(a));
    }
    res_init(&r);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    connect_ms = 300;
    start(u, url, "x", &r);
    connect_ms = 5000;
    ok(run_until(&r.dones, 1));
    ok(!r.ok && strstr(r.err, "timed out") != NULL);
    is_str(up_result_name(r.result), "connect_timeout");
    if (strncmp(r.err, "Connection timed out after", 26) != 0)
        printf("# note: the kernel did not drop the SYN (%s)\n", r.err);
    res_free(&r);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    upstream_free(u);
}

static void test_deadlines(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(s, ACT_HANG, NULL, 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    start_ex(u, url_of(s, "/"), "x", &r, UP_CLIENT_NATIVE, 100, 0);
    ok(run_until(&r.dones, 1));
    ok(!r.ok);
    is_str(r.err, "no response headers within 100 ms (timed out)");
    is_str(up_result_name(r.result), "first_byte_timeout");
    res_free(&r);
    res_init(&r);
    start_ex(u, url_of(s, "/"), "x", &r, UP_CLIENT_NATIVE, 0, 150);
    ok(run_until(&r.dones, 1));
    ok(!r.ok && r.headers == 1);
    ok(strncmp(r.err, "Operation timed out after ", 26) == 0 && strstr(r.err, "with 10 bytes received"));
    is_str(up_result_name(r.result), "timeout");
    res_free(&r);
    upstream_free(u);
    tsrv_stop(s);
}

static char huge_headers[70 * 1024 + 200];

static void test_bad_responses(void)
{
    struct tsrv *s = tsrv_start();
    int n = snprintf(huge_headers, sizeof(huge_headers), "HTTP/1.1 200 OK\r\n");
    while (n < 70 * 1024)
        n += snprintf(huge_headers + n, sizeof(huge_headers) - (size_t)n, "X-Filler: %0100d\r\n", n);
    n += snprintf(huge_headers + n, sizeof(huge_headers) - (size_t)n, "Content-Length: 0\r\n\r\n");
    tsrv_script(s, ACT_RESPOND, huge_headers, (size_t)n);
    tsrv_script(s, ACT_RESPOND, "SSH-2.0-OpenSSH_9.2\r\n", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 200 OK\r\nContent-", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 000 OK\r\n\r\nbody", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabc", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\n{}", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 599 Edge\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    const char *want[] = {"Response headers larger than 65536 bytes",
                          "Invalid HTTP response from the server: invalid constant string",
                          NULL,
                          "transfer closed with 97 bytes remaining to read",
                          "transfer closed with outstanding read data remaining",
                          "Connection closed before the end of the response headers",
                          "Unexpected 101 Switching Protocols from the server",
                          "",
                          "Invalid HTTP response from the server: invalid HTTP status code",
                          "Invalid HTTP response from the server: status code below 100",
                          "Invalid HTTP response from the server: a 1xx response with a body",
                          "Invalid HTTP response from the server: status code above 599",
                          "Invalid HTTP response from the server: status code above 599",
                          ""};
    const char *want_result[] = {"too_large", "protocol", NULL,       "reset",    "reset",    "reset_before_headers",
                                 "protocol",  "ok",       "protocol", "protocol", "protocol", "protocol",
                                 "protocol",  "ok"};
    for (int i = 0; i < 14; i++) {
        res_init(&r);
        start(u, url_of(s, "/"), "x", &r);
        if (i == 2) {
            /* 3 of 5 body bytes, then the server only closes when the connection does */
            ok(run_until(&r.datas, 1));
            upstream_cancel(r.x);
            res_free(&r);
            continue;
        }
        ok(run_until(&r.dones, 1));
        if (!ok(strcmp(up_result_name(r.result), want_result[i]) == 0))
            printf("#   case %d: got result %s\n", i, up_result_name(r.result));
        if (want[i][0]) {
            ok(!r.ok);
            ok(r.headers == 0 || i == 3 || i == 4); /* a bad status is never relayed as headers */
            if (!ok(strcmp(r.err, want[i]) == 0))
                printf("#   case %d: got \"%s\"\n", i, r.err);
        } else {
            ok(r.ok);
            is_str(r.body.data, "ok");
        }
        res_free(&r);
    }
    is_int(stats(u).idle, 0); /* nothing after a bad response is reused, nor after trailing garbage */
    upstream_free(u);
    tsrv_stop(s);
}

static void test_localhost(void)
{
    struct tsrv *s = tsrv_start();
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    char url[128];
    snprintf(url, sizeof(url), "http://localhost:%d/", s->port);
    start(u, url, "x", &r);
    ok(run_until(&r.dones, 1));
    ok(r.ok); /* whatever order the names come in (::1 may come first and be refused), 127.0.0.1 answers */
    if (!r.ok)
        printf("#   %s\n", r.err);
    char want[64];
    snprintf(want, sizeof(want), "\r\nHost: localhost:%d\r\n", s->port);
    ok(strstr(s->last, want) != NULL);
    res_free(&r);
    upstream_free(u);
    tsrv_stop(s);
}

static void test_same_as_curl(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(s, ACT_RESPOND, CHUNKED, 0);
    tsrv_script(s, ACT_RESPOND, CHUNKED, 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}", 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res n, c;
    for (int round = 0; round < 2; round++) {
        res_init(&n);
        res_init(&c);
        struct up_xfer *xn = start_ex(u, url_of(s, "/"), "x", &n, UP_CLIENT_NATIVE, 0, 0);
        ok(run_until(&n.dones, 1));
        struct up_xfer *xc = start_ex(u, url_of(s, "/"), "x", &c, UP_CLIENT_CURL, 0, 0);
        ok(xn && xc && xc->ops == &up_curl_backend_ops && xc->easy != NULL && xc->native == NULL);
        ok(run_until(&c.dones, 1));
        ok(n.ok && c.ok);
        is_int(n.status, c.status);
        is_str(n.body.data ? n.body.data : "", c.body.data ? c.body.data : "");
        is_str(n.xtest, c.xtest);
        res_free(&n);
        res_free(&c);
    }
    /* and fail alike: the same result code for the same event, whatever the words */
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\n{}", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\n{}", 0);
    tsrv_script(s, ACT_HANG, NULL, 0);
    tsrv_script(s, ACT_HANG, NULL, 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 0);
    tsrv_script(s, ACT_RESPOND_CLOSE, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 0);
    tsrv_script(s, ACT_CLOSE, NULL, 0);
    tsrv_script(s, ACT_CLOSE, NULL, 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", 0);
    tsrv_script(s, ACT_RESPOND, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", 0);
    char refused[64];
    snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/", free_port());
    const struct {
        const char *url;
        long fb_ms, total_ms;
        const char *want;
    } fails[] = {{NULL, 0, 0, "protocol"},
                 {NULL, 100, 0, "first_byte_timeout"},
                 {NULL, 0, 0, "reset"},
                 {NULL, 0, 0, "reset_before_headers"},
                 {NULL, 0, 300, "timeout"},
                 {refused, 0, 0, "connect"},
                 {"http://agentd-test.invalid:80/", 0, 0, "dns"}};
    for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++) {
        for (int curl = 0; curl < 2; curl++) {
            res_init(&n);
            struct upstream *uf = upstream_new(&loop, uopts); /* fresh pools: no reused connection to retry on */
            start_ex(uf, fails[i].url ? fails[i].url : url_of(s, "/"), "x", &n, curl ? UP_CLIENT_CURL : UP_CLIENT_NATIVE,
                     fails[i].fb_ms, fails[i].total_ms);
            ok(run_until(&n.dones, 1));
            if (!ok(!n.ok && strcmp(up_result_name(n.result), fails[i].want) == 0))
                printf("#   %s, %s: got %s (%s)\n", fails[i].want, curl ? "curl" : "native", up_result_name(n.result),
                       n.err);
            ok(n.status == 0 || strcmp(fails[i].want, "reset") == 0 || strcmp(fails[i].want, "timeout") == 0);
            res_free(&n);
            upstream_free(uf);
        }
    }
    upstream_free(u);
    tsrv_stop(s);
}

static long retry_after;

static void grab_retry_after(struct up_xfer *x, enum up_result result, void *ud)
{
    retry_after = up_xfer_retry_after_ms(x);
    on_dn(x, result, ud);
}

static void test_headers_lookup(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(
        s, ACT_RESPOND,
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nx-request-id:  abc \r\nContent-Length: 2\r\n\r\n{}", 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    struct up_request q;
    up_request_init(&q);
    buf_append_str(&q.url, url_of(s, "/"));
    q.client = UP_CLIENT_NATIVE;
    static const struct up_callbacks cb2 = {on_h, on_d, grab_retry_after};
    r.u = u;
    r.x = upstream_start(u, &q, &cb2, &r);
    up_request_free(&q);
    ok(run_until(&r.dones, 1));
    ok(r.ok && r.status == 429);
    is_int(retry_after, 7000);
    res_free(&r);
    /* a GET-less default method is POST with an empty body: Content-Length: 0 */
    ok(strstr(s->last, "\r\nContent-Length: 0\r\n") != NULL);
    upstream_free(u);
    tsrv_stop(s);
}

static void test_proxy_env(void)
{
    struct tsrv *s = tsrv_start();
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    setenv("no_proxy", "example.org", 1);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    /* a proxy applies to 127.0.0.1: libcurl takes it (and fails on the dead proxy port) */
    struct up_xfer *x = start(u, url_of(s, "/"), "x", &r);
    ok(x && x->ops == &up_curl_backend_ops && x->native == NULL && x->easy != NULL);
    ok(run_until(&r.dones, 1));
    ok(!r.ok);
    is_int(s->requests, 0);
    res_free(&r);
    upstream_free(u);
    setenv("no_proxy", "localhost,127.0.0.1", 1);
    u = upstream_new(&loop, uopts);
    res_init(&r);
    x = start(u, url_of(s, "/"), "x", &r);
    ok(x && x->ops == &h1_backend_ops && x->native != NULL);
    ok(run_until(&r.dones, 1) && r.ok);
    res_free(&r);
    upstream_free(u);
    unsetenv("http_proxy");
    unsetenv("no_proxy");
    tsrv_stop(s);
}

static void test_free_while_busy(void)
{
    struct tsrv *s = tsrv_start();
    tsrv_script(s, ACT_RESPOND, OK_SMALL, 0);
    tsrv_script(s, ACT_HANG, NULL, 0);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r1, r2;
    res_init(&r1);
    res_init(&r2);
    start(u, url_of(s, "/"), "x", &r1);
    ok(run_until(&r1.dones, 1));
    start(u, url_of(s, "/"), "x", &r2); /* on the pooled connection; the server hangs */
    ok(run_until(&s->requests, 2));
    struct res r3;
    res_init(&r3);
    start(u, "http://agentd-test.invalid:81/", "x", &r3); /* a lookup in flight */
    log_min_level = LL_ERROR;
    upstream_free(u); /* drops the hanging transfer, closes everything; no callbacks */
    log_min_level = LL_INFO;
    is_int(r2.dones, 0);
    is_int(r3.dones, 0);
    res_free(&r1);
    res_free(&r2);
    res_free(&r3);
    tsrv_stop(s);
}

/* ---------- TLS: a blocking OpenSSL server on its own thread, certificates made here ---------- */

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>

struct tls_srv {
    int lfd, port;
    SSL_CTX *ctx;
    pthread_t th;
    struct act acts[16];
    int nacts, next;
    bool no_handshake; /* accept TCP, never answer the ClientHello */
    _Atomic int accepted, requests, resumed;
    char sni[64];
};

static EVP_PKEY *ca_key, *leaf_key;
static X509 *ca_cert, *leaf_cert;
static char ca_path[64];

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    add_ext(x, &v3, NID_basic_constraints, issuer ? "CA:FALSE" : "critical,CA:TRUE");
    if (!issuer)
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    if (san)
        add_ext(x, &v3, NID_subject_alt_name, san);
    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
    return x;
}

static void tls_fixtures(void)
{
    ca_key = EVP_EC_gen("P-256");
    leaf_key = EVP_EC_gen("P-256");
    ca_cert = make_cert(ca_key, "agentd test CA", NULL, NULL, NULL);
    leaf_cert = make_cert(leaf_key, "upstream", ca_cert, ca_key, "IP:127.0.0.1,DNS:localhost");
    snprintf(ca_path, sizeof(ca_path), "/tmp/agentd-h1-ca-XXXXXX");
    int fd = mkstemp(ca_path);
    FILE *f = fdopen(fd, "w");
    PEM_write_X509(f, ca_cert);
    fclose(f);
}

static bool tls_read_request(SSL *ssl)
{
    char req[8192];
    size_t n = 0;
    char *end = NULL;
    while (end == NULL) {
        if (n >= sizeof(req) - 1)
            return false;
        int r = SSL_read(ssl, req + n, (int)(sizeof(req) - 1 - n));
        if (r <= 0)
            return false;
        n += (size_t)r;
        req[n] = '\0';
        end = strstr(req, "\r\n\r\n");
    }
    const char *cl = strcasestr(req, "\r\ncontent-length:");
    size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0;
    size_t have = n - (size_t)(end + 4 - req);
    while (have < want) {
        char sink[4096];
        int r = SSL_read(ssl, sink, sizeof(sink));
        if (r <= 0)
            return false;
        have += (size_t)r;
    }
    return true;
}

static void *tls_srv_main(void *arg)
{
    struct tls_srv *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            return NULL; /* shut down */
        s->accepted++;
        if (s->no_handshake) {
            char b[1024];
            while (read(fd, b, sizeof(b)) > 0)
                ;
            close(fd);
            continue;
        }
        SSL *ssl = SSL_new(s->ctx);
        SSL_set_fd(ssl, fd);
        bool open_ = SSL_accept(ssl) == 1;
        if (open_) {
            const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
            snprintf(s->sni, sizeof(s->sni), "%s", sn ? sn : "");
            if (SSL_session_reused(ssl))
                s->resumed++;
        }
        while (open_ && tls_read_request(ssl)) {
            s->requests++;
            struct act a = s->next < s->nacts ? s->acts[s->next++] : (struct act){ACT_RESPOND, OK_SMALL, 0};
            size_t len = a.bytes ? (a.len ? a.len : strlen(a.bytes)) : 0;
            if (a.kind == ACT_RESPOND || a.kind == ACT_RESPOND_CLOSE)
                SSL_write(ssl, a.bytes, (int)len);
            if (a.kind == ACT_RESPOND_CLOSE || a.kind == ACT_CLOSE) {
                SSL_shutdown(ssl); /* close_notify, then the FIN */
                break;
            }
            if (a.kind == ACT_HANG) {
                char b[64];
                while (SSL_read(ssl, b, sizeof(b)) > 0)
                    ;
                break;
            }
        }
        SSL_free(ssl);
        close(fd);
        ERR_clear_error();
    }
}

static struct tls_srv *tls_srv_start(void)
{
    struct tls_srv *s = xcalloc(1, sizeof(*s));
    s->ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(s->ctx, leaf_cert);
    SSL_CTX_use_PrivateKey(s->ctx, leaf_key);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s->lfd, (struct sockaddr *)&a, sizeof(a));
    listen(s->lfd, 16);
    socklen_t len = sizeof(a);
    getsockname(s->lfd, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    return s;
}

static void tls_srv_run(struct tls_srv *s)
{
    pthread_create(&s->th, NULL, tls_srv_main, s);
}

static void tls_srv_stop(struct tls_srv *s)
{
    shutdown(s->lfd, SHUT_RDWR); /* wakes the blocked accept */
    pthread_join(s->th, NULL);
    close(s->lfd);
    SSL_CTX_free(s->ctx);
    xfree(s);
}

static char tls_url_buf[128];
static const char *tls_url(const struct tls_srv *s, const char *host)
{
    snprintf(tls_url_buf, sizeof(tls_url_buf), "https://%s:%d/v1/x", host, s->port);
    return tls_url_buf;
}

static char tls_big[120000];

static void test_tls(void)
{
    struct tls_srv *s = tls_srv_start();
    int n = snprintf(tls_big, sizeof(tls_big), "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    for (int i = 0; i < 100000; i++)
        tls_big[n + i] = (char)('A' + i % 23);
    s->acts[s->nacts++] = (struct act){ACT_RESPOND, OK_SMALL, 0};
    s->acts[s->nacts++] = (struct act){ACT_RESPOND, tls_big, (size_t)n + 100000};
    s->acts[s->nacts++] = (struct act){ACT_RESPOND, CHUNKED, 0};
    tls_srv_run(s);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    ok(start(u, tls_url(s, "127.0.0.1"), "{}", &r) && r.x->native);
    ok(run_until(&r.dones, 1));
    ok(r.ok && r.status == 200);
    if (!r.ok)
        printf("#   %s\n", r.err);
    is_str(r.body.data, "{\"ok\":true}");
    is_str(s->sni, ""); /* an address: no SNI */
    res_free(&r);
    /* a body of many records, paused on every other delivery: what OpenSSL decrypted meanwhile must come out
     * after each resume, in order */
    res_init(&r);
    r.pause_every = 2;
    start(u, tls_url(s, "127.0.0.1"), "{}", &r);
    guard_fired = false;
    uv_timer_start(&guard, on_guard, 5000, 0);
    bool same = true;
    while (r.dones == 0 && !guard_fired) {
        if (r.x && r.x->paused) {
            upstream_resume(r.x); /* as a client drain would, outside any callback */
            same = same && r.redelivered_same;
            continue;
        }
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&guard);
    ok(r.dones == 1 && r.ok);
    ok(r.paused >= 2 && same);
    ok(r.body.len == 100000 && memcmp(r.body.data, tls_big + n, 100000) == 0);
    res_free(&r);
    res_init(&r);
    start(u, tls_url(s, "127.0.0.1"), "{}", &r);
    ok(run_until(&r.dones, 1) && r.ok);
    is_str(r.body.data, "hello, world!");
    res_free(&r);
    is_int(s->accepted, 1); /* one TLS connection for all three */
    upstream_free(u);
    tls_srv_stop(s);
}

static void test_tls_by_name_and_resumption(void)
{
    struct tls_srv *s = tls_srv_start();
    s->acts[s->nacts++] = (struct act){ACT_RESPOND_CLOSE, OK_SMALL, 0};
    tls_srv_run(s);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    start(u, tls_url(s, "localhost"), "{}", &r);
    ok(run_until(&r.dones, 1) && r.ok);
    if (!r.ok)
        printf("#   %s\n", r.err);
    is_str(s->sni, "localhost");
    res_free(&r);
    /* the server closed that one; the next connection resumes the session it handed out */
    res_init(&r);
    start(u, tls_url(s, "localhost"), "{}", &r);
    ok(run_until(&r.dones, 1) && r.ok);
    is_int(s->accepted, 2);
    is_int(s->resumed, 1);
    res_free(&r);
    upstream_free(u);
    tls_srv_stop(s);
}

static void test_tls_dead_pooled_retry(void)
{
    struct tls_srv *s = tls_srv_start();
    /* keep-alive response, then close_notify and close: the pooled connection is dead */
    s->acts[s->nacts++] = (struct act){ACT_RESPOND_CLOSE, OK_SMALL, 0};
    s->acts[s->nacts++] = (struct act){ACT_RESPOND, OK_SMALL, 0};
    tls_srv_run(s);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r1, r2;
    char url[128];
    snprintf(url, sizeof(url), "%s", tls_url(s, "127.0.0.1"));
    ok(run_back_to_back(u, url, "first", &r1, &r2));
    ok(r1.ok && r2.ok);
    if (!r2.ok)
        printf("#   %s\n", r2.err);
    is_int(s->accepted, 2);
    is_int(s->requests, 2);
    is_int(stats(u).retries, 1);
    res_free(&r1);
    res_free(&r2);
    upstream_free(u);
    tls_srv_stop(s);
}

static void test_tls_handshake_deadline(void)
{
    struct tls_srv *s = tls_srv_start();
    s->no_handshake = true;
    tls_srv_run(s);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    connect_ms = 300; /* covers the handshake too */
    start(u, tls_url(s, "127.0.0.1"), "{}", &r);
    connect_ms = 5000;
    ok(run_until(&r.dones, 1));
    ok(!r.ok && strncmp(r.err, "TLS handshake timed out after", 29) == 0);
    if (r.ok || strncmp(r.err, "TLS handshake timed out after", 29) != 0)
        printf("#   %s\n", r.err);
    res_free(&r);
    upstream_free(u);
    tls_srv_stop(s);
}

static void test_tls_untrusted(void)
{
    /* a server whose certificate this client has no reason to trust (self-signed) */
    struct tls_srv *s = tls_srv_start();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *self = make_cert(k, "127.0.0.1", NULL, NULL, "IP:127.0.0.1");
    SSL_CTX_use_certificate(s->ctx, self);
    SSL_CTX_use_PrivateKey(s->ctx, k);
    tls_srv_run(s);
    struct upstream *u = upstream_new(&loop, uopts);
    struct res r;
    res_init(&r);
    start(u, tls_url(s, "127.0.0.1"), "{}", &r);
    ok(run_until(&r.dones, 1));
    ok(!r.ok);
    is_str(r.err, "SSL certificate problem: self-signed certificate");
    is_int(s->requests, 0);
    res_free(&r);
    upstream_free(u);
    tls_srv_stop(s);
    X509_free(self);
    EVP_PKEY_free(k);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as agentd: a peer gone mid-write is an error return, not a signal */
    upstream_global_init();
    uv_loop_init(&loop);
    uv_timer_init(&loop, &guard);
    unsetenv("http_proxy");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    subtest("URL shapes served natively", test_url);
    subtest("no_proxy matching (a subset of curl's)", test_no_proxy);
    subtest("keep-alive reuse and the request as sent", test_keepalive);
    subtest("the pool keeps what a burst needed", test_pool_follows_load);
    subtest("idle pooled connections are closed", test_idle_timeout);
    subtest("chunked responses", test_chunked);
    subtest("close-delimited bodies", test_close_delimited);
    subtest("1xx responses are skipped", test_informational);
    subtest("pause and resume", test_pause_resume);
    subtest("cancel inside callbacks and from outside", test_cancel);
    subtest("a dead pooled connection is retried once", test_dead_pooled_retry);
    subtest("connect refused, unknown host, connect timeout", test_connect_errors);
    subtest("first-byte and transfer deadlines", test_deadlines);
    subtest("oversized, malformed and truncated responses", test_bad_responses);
    subtest("names are resolved off the loop", test_localhost);
    subtest("native and libcurl report alike", test_same_as_curl);
    subtest("response headers and retry hints", test_headers_lookup);
    subtest("proxies from the environment go to libcurl", test_proxy_env);
    subtest("upstream_free with transfers, pool and lookups", test_free_while_busy);
    /* TLS: trust the test CA through up_options.ca_file, as gateway.ca_file does in a deployment */
    tls_fixtures();
    uopts.ca_file = ca_path;
    subtest("https: keep-alive, many records, pause and resume", test_tls);
    subtest("https by name: SNI, the name checked, sessions resumed", test_tls_by_name_and_resumption);
    subtest("https: a dead pooled connection is retried once", test_tls_dead_pooled_retry);
    subtest("https: the connect deadline covers the handshake", test_tls_handshake_deadline);
    subtest("https: an untrusted certificate is refused", test_tls_untrusted);
    unlink(ca_path);
    X509_free(leaf_cert);
    X509_free(ca_cert);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(ca_key);
    /* Everything was closed: the loop ends on its own (bounded by the guard, so a leak fails instead of hanging) */
    guard_fired = false;
    uv_timer_start(&guard, on_guard, 5000, 0);
    int active = 1;
    while (active && !guard_fired) {
        uv_run(&loop, UV_RUN_ONCE);
        active = 0;
        uv_walk(&loop, count_active, &active);
    }
    is_int(active, 0);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ok(uv_loop_close(&loop) == 0);
    upstream_global_cleanup();
    return done_testing();
}
