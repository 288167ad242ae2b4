/* upstream_types.h: the vocabulary of an upstream transfer, shared by net/upstream.c (which routes transfers)
 * and its backends (net/h1client.c, the libcurl glue): the request, the transfer, the caller's callbacks, the
 * typed result a transfer ends with, and the operations a backend provides. Callers include net/upstream.h;
 * backends include only this, so there is no include cycle between the router and its backends. */
#ifndef AGENTD_UPSTREAM_TYPES_H
#define AGENTD_UPSTREAM_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"

struct upstream;
struct up_xfer;

struct up_request {
    const char *method;      /* "POST", "GET" */
    struct buf url;
    struct buf headers;      /* "Name: value\n" lines */
    struct buf body;
    long connect_timeout_ms; /* 0: 10 s; covers DNS, TCP and the TLS handshake */
    long timeout_ms;         /* whole transfer; 0: none (the exchange owns the deadline) */
    long first_byte_timeout_ms; /* time to response headers; 0: none */
    size_t max_response;     /* bytes buffered for the caller's own use is the caller's business; this bounds
                                nothing here and exists for logs */
    int client;              /* UP_CLIENT_*: which backend; UP_CLIENT_DEFAULT (0) follows the upstream's options */
};

enum {
    UP_CLIENT_DEFAULT = 0, /* what struct up_options.client says (itself 0: UP_CLIENT_AUTO) */
    UP_CLIENT_AUTO,        /* agentd's HTTP/1.1 client for plain http, libcurl for https (h2) and proxies */
    UP_CLIENT_NATIVE,      /* agentd's HTTP/1.1 client for http and https, libcurl only for proxies */
    UP_CLIENT_CURL,        /* libcurl for everything */
};

/* What an upstream client is told when it is created (restart to change). A zeroed struct is valid: auto,
 * the system CA store only, the default connection cache. */
struct up_options {
    int client;           /* UP_CLIENT_AUTO (or 0), UP_CLIENT_NATIVE, UP_CLIENT_CURL */
    const char *ca_file;  /* PEM file of CAs trusted for https on top of the system store; NULL or "": none.
                             Copied. */
    long max_connections; /* client connections the process may hold (server.max_connections): sizes libcurl's
                             connection cache; <= 256 (or 0) keeps 256, capped at 100000 */
};

void up_request_init(struct up_request *r);
void up_request_free(struct up_request *r);
void up_request_header(struct up_request *r, const char *name, const char *value);
void up_request_headerf(struct up_request *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* How a transfer ended. Every backend reports the same code for the same event (curl's CURLcode values are
 * mapped onto these), so retry policy, breakers and metrics decide on the code, never on the message. An HTTP
 * error status (4xx, 5xx) is UP_OK: the transfer worked, x->status says what the server answered. */
enum up_result {
    UP_OK = 0,
    UP_E_CONNECT,              /* TCP connect refused or unreachable (every address tried) */
    UP_E_CONNECT_TIMEOUT,      /* DNS + TCP + TLS handshake did not finish within connect_timeout_ms */
    UP_E_DNS,                  /* the host name did not resolve */
    UP_E_FIRST_BYTE_TIMEOUT,   /* no response headers within first_byte_timeout_ms */
    UP_E_TIMEOUT,              /* the whole transfer did not finish within timeout_ms */
    UP_E_RESET_BEFORE_HEADERS, /* the connection failed or closed after the request, before the response headers */
    UP_E_RESET,                /* ... after the response headers: a truncated body */
    UP_E_TLS,                  /* handshake, certificate or record layer failure */
    UP_E_PROTOCOL,             /* not a valid HTTP response (a malformed head, a status outside 100-599, ...) */
    UP_E_TOO_LARGE,            /* response headers over the bound */
    UP_E_ABORTED,              /* the caller's on_data returned UP_DATA_ABORT */
    UP_E_OTHER,                /* anything else (an unusable URL, a local resource failure) */
    UP_RESULT_COUNT
};

/* A stable snake_case name ("ok", "connect", "connect_timeout", ...) for metrics labels and logs. */
const char *up_result_name(enum up_result r);
/* Timeouts (connect, first byte, whole transfer): what a gateway answers with 504. */
bool up_result_is_timeout(enum up_result r);

enum { UP_DATA_OK = 0, UP_DATA_PAUSE = 1, UP_DATA_ABORT = -1 };

struct up_callbacks {
    /* Status line and headers received (not called for 1xx). */
    void (*on_headers)(struct up_xfer *x, void *ud);
    /* Response body bytes. Return UP_DATA_OK, UP_DATA_PAUSE (the same bytes come again after resume) or
     * UP_DATA_ABORT (the transfer ends with UP_E_ABORTED). */
    int (*on_data)(struct up_xfer *x, const char *data, size_t len, void *ud);
    /* Transfer finished, exactly once unless cancelled: r is UP_OK when the whole response was received;
     * otherwise up_xfer_error(x) says why in words, for logs. x is freed after this returns. */
    void (*on_done)(struct up_xfer *x, enum up_result r, void *ud);
};

struct up_backend_ops;

struct up_xfer {
    struct upstream *u;
    const struct up_backend_ops *ops; /* the backend running it (set by its start) */
    void *backend;           /* that backend's instance */
    void *easy;              /* CURL *, when libcurl runs it */
    void *native;            /* the h1client connection carrying it, when agentd's own client runs it */
    struct up_request req;   /* owned */
    struct up_callbacks cb;
    void *ud;
    int status;              /* HTTP status of the final response */
    struct buf resp_headers; /* raw header lines of the final response (bounded) */
    bool headers_done, paused, cancelled, finished, in_callback;
    enum up_result result;   /* set when the transfer ends; a backend may set it earlier for an abort it decides */
    uint64_t t_start_us, t_headers_us, t_first_byte_us, t_done_us;
    uint64_t bytes_in;
    char errbuf[256];        /* what went wrong, in words */
    char abort_reason[128];  /* why agentd aborted the transfer (first-byte deadline), preferred over errbuf */
};

/* Why the transfer failed, in words for logs ("Failed to connect to 10.0.0.1 port 443: Connection refused");
 * never NULL (up_result_name(x->result) when no backend said more; "" for UP_OK). */
const char *up_xfer_error(const struct up_xfer *x);

/* Case-insensitive response header lookup into out (NUL-terminated, truncated to size). Returns 0 or -1. */
int up_xfer_header(const struct up_xfer *x, const char *name, char *out, size_t size);
/* Retry hint from Retry-After (seconds or HTTP date) or retry-after-ms; -1 when absent. */
long up_xfer_retry_after_ms(const struct up_xfer *x);

/* Frees a transfer; shared by the backends. */
void up_xfer_destroy(struct up_xfer *x);

/* A backend of the upstream client: agentd's HTTP/1.1 client (net/h1client.h) or libcurl (net/upstream_curl.h).
 * net/upstream.c makes one instance of each per loop and chooses, per transfer, which one starts it. */
struct up_backend_ops {
    const char *name; /* "native", "curl" */
    void *(*create)(uv_loop_t *loop, const struct up_options *opts);
    /* Closes everything (a transfer still attached is dropped without callbacks, with a warning); the instance
     * is freed once the loop has run the closes. */
    void (*destroy)(void *backend);
    /* Takes x (x->req, x->cb filled by upstream_start). Returns 0: x runs here (x->ops and x->backend set) and
     * its callbacks follow, never before this returns. Returns -1: x is untouched; *why says why when this
     * backend failed rather than declined (NULL: not one it serves). */
    int (*start)(void *backend, struct up_xfer *x, const char **why);
    /* upstream_cancel and upstream_resume (same contracts; upstream.c has checked x->cancelled and x->paused). */
    void (*cancel)(struct up_xfer *x);
    void (*resume)(struct up_xfer *x);
};

#endif
