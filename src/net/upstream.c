/* upstream.c: the upstream client's front (net/upstream.h): one instance of each backend per loop, and the
 * choice of backend per transfer. The backends (net/h1client.c, net/upstream_curl.c) know nothing of this file. */
#include "net/upstream.h"

#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "net/curl_dl.h"
#include "net/h1_url.h"
#include "net/h1client.h"
#include "net/upstream_curl.h"

#define RESP_HEADERS_MAX (64 * 1024)

struct upstream {
    uv_loop_t *loop;
    int client;           /* UP_CLIENT_AUTO / NATIVE / CURL, from up_options */
    struct h1client *h1;  /* h1_backend_ops */
    void *curl;           /* up_curl_backend_ops */
    const char *error;    /* why the last upstream_start returned NULL (static text) */
};

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

bool upstream_url_needs_curl(const char *url, int client)
{
    if (client == UP_CLIENT_CURL)
        return true;
    if (url && strncasecmp(url, "https://", 8) == 0)
        return client != UP_CLIENT_NATIVE || h1_proxy_applies(url);
    return url && h1_proxy_applies(url);
}

void upstream_global_cleanup(void)
{
    curl_dl_cleanup();
}

struct upstream *upstream_new(uv_loop_t *loop, struct up_options opts)
{
    struct upstream *u = xcalloc(1, sizeof(*u));
    u->loop = loop;
    u->client = opts.client == UP_CLIENT_CURL || opts.client == UP_CLIENT_NATIVE ? opts.client : UP_CLIENT_AUTO;
    u->h1 = h1_backend_ops.create(loop, &opts);
    u->curl = up_curl_backend_ops.create(loop, &opts);
    return u;
}

void upstream_free(struct upstream *u)
{
    if (u == NULL)
        return;
    h1_backend_ops.destroy(u->h1);
    up_curl_backend_ops.destroy(u->curl);
    xfree(u);
}

const char *upstream_last_error(const struct upstream *u)
{
    return u->error;
}

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
    int client = x->req.client != UP_CLIENT_DEFAULT ? x->req.client : u->client;
    /* auto: https goes to libcurl, which offers h2 by ALPN and multiplexes; the HTTP/1.1 client takes plain http
     * (local model servers, sidecars, the benchmark's upstream), where h2 is not offered anyway. The native
     * client declines what it does not serve (proxies from the environment, unusual URLs): libcurl takes it. */
    bool https = x->req.url.len >= 8 && strncasecmp(x->req.url.data, "https://", 8) == 0;
    const char *why = NULL;
    if (client != UP_CLIENT_CURL && !(client == UP_CLIENT_AUTO && https) &&
        h1_backend_ops.start(u->h1, x, &why) == 0)
        return x;
    if (up_curl_backend_ops.start(u->curl, x, &why) == 0)
        return x;
    u->error = why ? why : "could not start the upstream request";
    up_xfer_destroy(x);
    return NULL;
}

void upstream_cancel(struct up_xfer *x)
{
    if (x == NULL || x->cancelled)
        return;
    x->ops->cancel(x);
}

void upstream_resume(struct up_xfer *x)
{
    if (!x->paused || x->cancelled)
        return;
    x->ops->resume(x);
}
