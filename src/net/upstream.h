/* upstream.h: the upstream HTTP client, driven by the worker's libuv loop.
 *
 * Two backends behind one interface (struct up_backend_ops, net/upstream_types.h). agentd's own HTTP/1.1 client
 * (net/h1client.h: a keep-alive pool per loop, DNS in the thread pool, TLS through OpenSSL) serves http:// URLs
 * that no proxy from the environment applies to (and https:// too under UP_CLIENT_NATIVE); libcurl's multi
 * interface (net/upstream_curl.h) serves everything else: https (HTTP/2 where the server offers it by ALPN),
 * proxies, unusual URLs. struct up_options chooses the backend and adds trusted CAs for both: the creator fills
 * it (the gateway, from its configuration); nothing in net/ reads the global configuration. One struct upstream
 * per loop owns one instance of each, so connections are reused across every request of that worker. A transfer is started with a fully built request and
 * reports through three callbacks: headers complete, body bytes (as they arrive: streams are never buffered
 * here), and done (exactly once, unless cancelled). Nothing blocks the loop: DNS runs off the loop, TLS and I/O
 * are non-blocking.
 *
 * A transfer ends with an enum up_result (net/upstream_types.h), the same code from either backend; the words
 * for logs come from up_xfer_error.
 *
 * Re-entrancy: upstream_cancel may be called from inside any callback (the transfer is aborted and reaped
 * after curl returns); upstream_resume may deliver buffered data synchronously through on_data. */
#ifndef AGENTD_UPSTREAM_H
#define AGENTD_UPSTREAM_H

#include <stdbool.h>
#include <uv.h>

#include "net/upstream_types.h"

struct upstream *upstream_new(uv_loop_t *loop, struct up_options opts);
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

/* Process-wide init/cleanup (call once from main before threads / at exit). libcurl itself is loaded on first
 * use (net/curl_dl.h); upstream_preload_curl loads it now, for a configuration that will need it, so that no
 * worker loop pays for the load on its first request. upstream_url_needs_curl says whether a URL goes to libcurl
 * with that client choice (UP_CLIENT_*) and the current proxy environment. */
int upstream_global_init(void);
int upstream_preload_curl(void);
bool upstream_url_needs_curl(const char *url, int client);
void upstream_global_cleanup(void);

#endif
