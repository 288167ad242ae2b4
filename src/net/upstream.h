/* upstream.h: the upstream HTTP client, driven by the worker's libuv loop.
 *
 * Two backends behind one interface. agentd's own HTTP/1.1 client (net/h1client.c: a keep-alive pool per loop,
 * DNS in the thread pool, TLS through OpenSSL) serves http:// URLs that no proxy from the environment applies
 * to (and https:// too when gateway.upstream_client is native); libcurl's multi interface serves everything
 * else: https (HTTP/2 where the server offers it by ALPN), proxies, unusual URLs.
 * gateway.upstream_client chooses and gateway.ca_file adds trusted CAs for both (read when the upstream is
 * created). One struct upstream per loop owns both, so connections are reused across
 * every request of that worker. A transfer is started with a fully built request and
 * reports through three callbacks: headers complete, body bytes (as they arrive: streams are never buffered
 * here), and done (exactly once, unless cancelled). Nothing blocks the loop: DNS runs off the loop, TLS and I/O
 * are non-blocking.
 *
 * Re-entrancy: upstream_cancel may be called from inside any callback (the transfer is aborted and reaped
 * after curl returns); upstream_resume may deliver buffered data synchronously through on_data. */
#ifndef AGENTD_UPSTREAM_H
#define AGENTD_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/str.h"

struct upstream;
struct up_xfer;

struct up_request {
    const char *method;      /* "POST", "GET" */
    struct buf url;
    struct buf headers;      /* "Name: value\n" lines */
    struct buf body;
    long connect_timeout_ms; /* 0: 10 s */
    long timeout_ms;         /* whole transfer; 0: none (the exchange owns the deadline) */
    long first_byte_timeout_ms; /* time to response headers; 0: none */
    size_t max_response;     /* bytes buffered for the caller's own use is the caller's business; this bounds
                                nothing here and exists for logs */
    int client;              /* UP_CLIENT_*: which backend; UP_CLIENT_CONFIGURED (0) follows the configuration */
};

enum {
    UP_CLIENT_CONFIGURED = 0, /* gateway.upstream_client */
    UP_CLIENT_AUTO,           /* agentd's HTTP/1.1 client for plain http, libcurl for https (h2) and proxies */
    UP_CLIENT_NATIVE,         /* agentd's HTTP/1.1 client for http and https, libcurl only for proxies */
    UP_CLIENT_CURL,           /* libcurl for everything */
};

void up_request_init(struct up_request *r);
void up_request_free(struct up_request *r);
void up_request_header(struct up_request *r, const char *name, const char *value);
void up_request_headerf(struct up_request *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

enum { UP_DATA_OK = 0, UP_DATA_PAUSE = 1, UP_DATA_ABORT = -1 };

struct up_callbacks {
    /* Status line and headers received (not called for 1xx). */
    void (*on_headers)(struct up_xfer *x, void *ud);
    /* Response body bytes. Return UP_DATA_OK, UP_DATA_PAUSE (the same bytes come again after resume) or
     * UP_DATA_ABORT. */
    int (*on_data)(struct up_xfer *x, const char *data, size_t len, void *ud);
    /* Transfer finished: ok is true when the whole response was received; otherwise err says why. */
    void (*on_done)(struct up_xfer *x, bool ok, const char *err, void *ud);
};

struct up_xfer {
    struct upstream *u;
    void *easy;              /* CURL *, when libcurl runs it */
    void *native;            /* the h1client connection carrying it, when agentd's own client runs it */
    struct up_request req;   /* owned */
    struct up_callbacks cb;
    void *ud;
    int status;              /* HTTP status of the final response */
    struct buf resp_headers; /* raw header lines of the final response (bounded) */
    bool headers_done, paused, cancelled, finished, in_callback;
    uint64_t t_start_us, t_headers_us, t_first_byte_us, t_done_us;
    uint64_t bytes_in;
    char errbuf[256];        /* what went wrong, in curl's words */
    char abort_reason[128];  /* why agentd aborted the transfer (first-byte deadline), preferred over errbuf */
};

struct upstream *upstream_new(uv_loop_t *loop);
/* Cancels what is still running and closes handles asynchronously; the loop must run afterwards so the
 * closes complete. */
void upstream_free(struct upstream *u);

/* Starts a transfer; req's contents move into the transfer (req is left empty). Returns NULL only if libcurl
 * cannot be loaded or refuses the handle (on_done is then never called; upstream_last_error says why). */
struct up_xfer *upstream_start(struct upstream *u, struct up_request *req, const struct up_callbacks *cb, void *ud);
const char *upstream_last_error(const struct upstream *u);
/* Stops the transfer; no callback runs after this returns. */
void upstream_cancel(struct up_xfer *x);
void upstream_resume(struct up_xfer *x);

/* Case-insensitive response header lookup into out (NUL-terminated, truncated to size). Returns 0 or -1. */
int up_xfer_header(const struct up_xfer *x, const char *name, char *out, size_t size);
/* Retry hint from Retry-After (seconds or HTTP date) or retry-after-ms; -1 when absent. */
long up_xfer_retry_after_ms(const struct up_xfer *x);

/* Process-wide init/cleanup (call once from main before threads / at exit). libcurl itself is loaded on first
 * use (net/curl_dl.h); upstream_preload_curl loads it now, for a configuration that will need it, so that no
 * worker loop pays for the load on its first request. upstream_url_needs_curl says whether a URL goes to libcurl
 * under the current configuration and proxy environment. */
int upstream_global_init(void);
int upstream_preload_curl(void);
bool upstream_url_needs_curl(const char *url);
void upstream_global_cleanup(void);

#endif
