/* http.h: agentd's HTTP/1.1 server: connections, requests, responses, routing.
 *
 * One struct http_server lives on each event loop (a worker, or the main thread for the ops listener). A
 * connection parses requests with http-parser into a bounded queue and serves them strictly in order, so
 * pipelining needs no special case: the head of the queue is the request being handled, and the next one starts
 * when the head's response has been fully queued for writing.
 *
 * Handler contract. A handler is called with a request whose headers and body are complete. It must end the
 * request with exactly one terminal call: http_respond(), or http_stream_start() ... http_stream_end(). It may
 * do so later, from another callback on the same loop. If the client goes away first, the on_abort callback
 * (if registered) runs, and the handler must still make its terminal call (the response is then discarded).
 * After the terminal call the handler must not touch the request again. */
#ifndef AGENTD_HTTP_H
#define AGENTD_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/str.h"

struct config;
struct http_conn;
struct http_opts;
struct http_req;
struct http_server;

enum {
    HTTP_M_GET = 1 << 0,
    HTTP_M_HEAD = 1 << 1,
    HTTP_M_POST = 1 << 2,
    HTTP_M_PUT = 1 << 3,
    HTTP_M_DELETE = 1 << 4,
    HTTP_M_OPTIONS = 1 << 5,
    HTTP_M_PATCH = 1 << 6,
};

typedef void http_handler_fn(struct http_req *req);
typedef void http_req_cb(struct http_req *req, void *ud);

struct http_route {
    const char *path;   /* exact path, or a prefix when prefix is true ("/v1/agents/") */
    unsigned methods;   /* HTTP_M_GET | ...; GET routes answer HEAD too */
    bool prefix;
    http_handler_fn *fn;
    const char *name;   /* route label in metrics and logs; defaults to path */
};

/* Answers an error the server found itself (a protocol error, a limit, an unknown route, a wrong method) in the
 * listener's own wire format; must make the terminal call. code: a short stable reason ("unknown_url",
 * "method_not_allowed", "body_too_large", "header_timeout", ...). req->path is what was read of the URL so far
 * ("-" when nothing was); req->request_id is always set. */
typedef void http_error_fn(struct http_req *req, int status, const char *code, const char *message);

struct http_router {
    const struct http_route *routes;
    size_t n;
    http_error_fn *error; /* NULL: http_respond_error's generic shape */
};

struct http_header {
    struct str name;
    struct str value;
};

#define HTTP_MAX_HEADERS 128

struct http_req {
    /* ---- request, read-only for handlers ---- */
    struct http_conn *conn;       /* NULL once the connection is gone */
    struct http_server *server;
    const char *listener;         /* "api" or "ops" */
    unsigned method;              /* one HTTP_M_* bit */
    const char *method_str;
    struct str url, path, query;
    size_t nheaders;              /* headers[0..nheaders) are valid (the array is at the end of the struct) */
    struct buf body;              /* complete request body (bounded by http_limits.body_bytes) */
    unsigned http_minor;          /* 0 or 1 */
    char request_id[72];
    uint8_t trace_id[16];         /* set by the handler when the request belongs to a trace (the access line) */
    uint8_t span_id[8];
    bool has_trace;
    char remote[64];              /* "ip:port" of the client */
    uint64_t t_start_us;          /* first byte of the request (monotonic) */
    uint64_t t_headers_us;        /* headers complete (monotonic) */
    uint64_t t_dispatch_us;       /* handler called */
    struct config *cfg;           /* the creator's context for this request's lifetime (http_options.cfg; opaque
                                   * to net/, which never reads it) */
    const struct http_route *route;

    /* ---- handler state ---- */
    void *ud;                     /* free for the handler */
    http_req_cb *on_abort;        /* client went away before the terminal call */
    void *abort_ud;
    http_req_cb *on_drain;        /* the write queue fell below the low-water mark (streaming backpressure) */
    void *drain_ud;

    /* ---- response state, owned by the server ---- */
    int status;
    struct buf resp_headers;      /* extra "Name: value\r\n" lines */
    size_t bytes_in, bytes_out;
    bool started, finished, chunked, close_after, aborted, logged;
    struct http_opts *opts;            /* the options this request was read with (server-private) */
    int error_status;             /* synthetic request carrying a protocol error (400/408/413/417/431) */
    const char *error_reason;
    unsigned refs;                /* queue/handler ownership + outstanding writes */
    struct buf head;              /* raw URL + header bytes (bounded by http_limits.header_bytes) */
    bool head_done;               /* headers complete: head is frozen (url, path, headers point into it) */
    struct http_req *next;        /* connection queue */

    /* Large arrays last: a new request zeroes only what comes before them. */
    struct http_header headers[HTTP_MAX_HEADERS];
    uint32_t hdr_off[HTTP_MAX_HEADERS][4]; /* name off/len, value off/len into head while parsing */
};

/* ---- server ---- */

enum http_conn_event { HTTP_CONN_OPEN, HTTP_CONN_CLOSE, HTTP_CONN_REJECT, HTTP_CONN_EVICT };

/* Observers for what happens inside the server (metrics and logs live above net/). Set once at start-up. */
struct http_server_hooks {
    /* Once per finished request, on the request's loop (access log, metrics). */
    void (*on_request_done)(struct http_req *req, uint64_t duration_us);
    /* Connection opened, closed, refused at the connection limit, or closed while idle to make room for a new
     * one at the limit (EVICT, followed by its CLOSE). */
    void (*on_connection)(const char *listener, enum http_conn_event ev);
};
void http_server_set_hooks(const struct http_server_hooks *hooks);

/* What the server enforces. Plain values from the creator: net/ never reads the configuration itself. */
struct http_limits {
    size_t header_bytes;          /* request line + headers, else 431 */
    size_t body_bytes;            /* else 413 */
    long connections;             /* "api" listeners, process-wide; past it the longest-idle connection is closed,
                                   * or the new one gets 503 */
    long ops_connections;         /* the "ops" listener's own budget, so probes get through a saturated API */
    unsigned pipeline;            /* parsed requests queued on one connection before reading pauses */
    uint64_t header_timeout_ms;   /* first byte of a request to the end of its headers, else 408 */
    uint64_t body_timeout_ms;     /* end of headers to end of body, else 408 */
    uint64_t idle_timeout_ms;     /* keep-alive connection with nothing to do */
};

struct http_options {
    struct http_limits limits;
    /* The creator's context, handed to handlers as req->cfg and kept until no connection or request uses these
     * options any more; then cfg_release(cfg) runs (on the server's loop). Both may be NULL. */
    struct config *cfg;
    void (*cfg_release)(struct config *cfg);
};

/* Creates the server state for one loop; opts apply to new requests. The server takes over opts->cfg (released
 * through opts->cfg_release). Free with http_server_free once the loop has stopped. */
struct http_server *http_server_new(uv_loop_t *loop, const struct http_options *opts);
/* Reload: new requests (also on kept-alive connections) get these; requests in progress keep theirs. Takes over
 * opts->cfg like http_server_new. */
void http_server_set_options(struct http_server *srv, const struct http_options *opts);
void http_server_free(struct http_server *srv);

/* Starts accepting on an already bound, listening-capable socket fd (the caller made it, SO_REUSEPORT etc.).
 * name is the listener label: "api" connections count against limits.connections; "ops" connections against
 * limits.ops_connections, so probes and scrapes get through a saturated API. */
int http_server_listen_fd(struct http_server *srv, int fd, const char *name, const struct http_router *router,
                          int backlog);
/* Stops accepting: closes every listener of this server. */
void http_server_close_listeners(struct http_server *srv);
/* Drain: closes idle connections now and every other connection after its current response. */
void http_server_drain(struct http_server *srv);
/* Closes every connection now, aborting handlers (end of the drain grace period). */
void http_server_close_all(struct http_server *srv);
/* Open connections on this server. */
size_t http_server_connections(const struct http_server *srv);
uv_loop_t *http_server_loop(struct http_server *srv);

/* Process-wide API connection count, against http_limits.connections. */
extern _Atomic long http_open_connections;

/* Creates a TCP socket bound to addr ("host:port"), with SO_REUSEADDR and SO_REUSEPORT, not yet listening.
 * When *port is 0 on entry the kernel picks one; *port returns the bound port. probe_exclusive first checks that
 * no other socket holds the port (SO_REUSEPORT would otherwise share it with another process).
 * Returns the fd or -1 (err set). */
int http_bind_socket(const char *host, int *port, bool probe_exclusive, struct buf *err);

/* ---- request API ---- */

/* Case-insensitive header lookup; NULL when absent. */
const struct str *http_req_header(const struct http_req *req, const char *name);
/* Adds a response header; call before the response starts. */
void http_resp_header(struct http_req *req, const char *name, const char *value);
void http_resp_headerf(struct http_req *req, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Terminal: a complete response. body may be NULL when len is 0. */
void http_respond(struct http_req *req, int status, const char *content_type, const void *body, size_t len);
/* Terminal: {"error":{"message":...,"type":...,"param":null,"code":...}} with the given status (code may be
 * NULL: null). */
void http_respond_error(struct http_req *req, int status, const char *type, const char *code, const char *message);

/* Streaming: chunked for HTTP/1.1 (close-delimited for 1.0). write returns -1 when the client is gone. */
void http_stream_start(struct http_req *req, int status, const char *content_type);
int http_stream_write(struct http_req *req, const void *data, size_t len);
void http_stream_end(struct http_req *req); /* terminal */
/* Bytes queued to the client and not yet written (backpressure). */
size_t http_req_pending_bytes(const struct http_req *req);
#define HTTP_WRITE_LOW_WATER (64 * 1024)
#define HTTP_WRITE_HIGH_WATER (256 * 1024)

const char *http_status_reason(int status);

#endif
