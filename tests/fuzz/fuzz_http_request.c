/* libFuzzer target: the HTTP/1.1 request path of the server (parser callbacks, limits, queueing, pipelining,
 * error responses), driven through a real connection object on a real libuv loop over a socketpair.
 * The first input byte chooses how the rest is split into reads, so fragmentation is explored too. */
#include "../../src/net/http_server.c"

#include <sys/socket.h>

static uv_loop_t loop;
static struct http_server *srv;
static struct http_listener listener;

static void h_echo(struct http_req *r)
{
    http_resp_header(r, "X-Test", "1");
    http_respond(r, 200, "text/plain", r->body.data, r->body.len);
}

static void h_stream(struct http_req *r)
{
    http_stream_start(r, 200, "text/event-stream");
    http_stream_write(r, "data: a\n\n", 9);
    http_stream_end(r);
}

static const struct http_route routes[] = {
    {"/stream", HTTP_M_GET, false, h_stream, NULL},
    {"/", HTTP_M_GET | HTTP_M_POST | HTTP_M_PUT, true, h_echo, NULL},
};
static const struct http_router router = {routes, 2, NULL};

static void setup(void)
{
    /* Small limits so that the fuzzer reaches them; no configuration involved (net/ takes plain options). */
    const struct http_options o = {
        .limits = {.header_bytes = 2048,
                   .body_bytes = 4096,
                   .connections = 1000,
                   .ops_connections = 1000,
                   .pipeline = 4,
                   .header_timeout_ms = 10000,
                   .body_timeout_ms = 10000,
                   .idle_timeout_ms = 10000},
    };
    uv_loop_init(&loop);
    srv = http_server_new(&loop, &o);
    listener.srv = srv;
    listener.router = &router;
    listener.name = "api";
    listener.open_count = &http_open_connections;
    log_min_level = LL_OFF;
}

static void drain_peer(int fd)
{
    char sink[65536];
    while (read(fd, sink, sizeof(sink)) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (srv == NULL)
        setup();
    if (size == 0)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    struct http_conn *c = conn_new(&listener);
    if (uv_tcp_open(&c->tcp, sv[0]) != 0) {
        close(sv[0]);
        close(sv[1]);
        conn_close(c);
        uv_run(&loop, UV_RUN_DEFAULT);
        return 0;
    }
    conn_accepted(&listener, c);
    size_t pieces = (size_t)(data[0] % 4) + 1;
    const char *p = (const char *)data + 1;
    size_t left = size - 1;
    for (size_t i = 0; i < pieces && c->state == CONN_OPEN; i++) {
        size_t n = i + 1 == pieces ? left : left / (pieces - i);
        conn_parse(c, p, n);
        conn_pump(c);
        p += n;
        left -= n;
        uv_run(&loop, UV_RUN_NOWAIT);
        drain_peer(sv[1]);
    }
    if (c->state == CONN_OPEN)
        conn_close(c);
    else if (c->state == CONN_LINGER)
        conn_close(c);
    close(sv[1]);
    uv_run(&loop, UV_RUN_DEFAULT);
    return 0;
}
