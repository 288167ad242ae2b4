/* h1client.h: agentd's own HTTP/1.1 client on the worker loop, a backend of net/upstream.c (which routes
 * transfers here through h1_backend_ops; the unit tests reach the statistics below directly). Its parts:
 * h1client.c (hosts, pool, DNS, connections, deadlines), h1_resp.c (the response parser), h1_url.c (URLs and
 * proxy rules), h1_tls.c (TLS); h1_int.h is private to them.
 *
 * Why it exists: per proxied request libcurl spent about half of agentd's instructions (URL parsing, printf
 * request formatting, header compares, multi bookkeeping) on a path that is always the same: a keep-alive
 * HTTP/1.1 POST to one of a handful of hosts. This client does only that and does it with plain appends:
 * - a per-loop pool of keep-alive connections keyed by (scheme, host, port): as many idle connections per key
 *   as it recently had transfers running at once, within [H1_MIN_IDLE_PER_HOST, H1_MAX_IDLE_PER_HOST]; each
 *   closed as soon as the server closes it, or after H1_IDLE_TIMEOUT_MS unused (noticed when its timer next
 *   fires, which may be the last transfer's deadline: timers are re-armed lazily);
 * - DNS in the libuv thread pool with a small per-loop cache (H1_DNS_TTL_MS); numeric hosts skip it; the
 *   addresses of a name are tried in order;
 * - the request head and body in one uv_write; the response through http-parser (Content-Length, chunked and
 *   close-delimited bodies; 1xx skipped; headers bounded to 64 KiB);
 * - one safe retry: a request sent on a reused connection that the server had already closed (nothing of the
 *   response came back) is sent again once on a fresh connection;
 * - https through OpenSSL on memory BIOs over the same libuv stream: TLS 1.2 or later, SNI, the peer's
 *   certificate verified against the system store (plus up_options.ca_file) and its name or address checked,
 *   ALPN "http/1.1", sessions resumed per host; the connect deadline covers the handshake;
 * - connect, first-byte and whole-transfer deadlines on one timer per connection;
 * - every failure reported as an enum up_result (the same code libcurl's would map to), with a message in
 *   curl's wording for logs.
 * What it does not serve is left to libcurl by its start declining: proxies from the environment and URLs
 * outside the plain shape it parses. (libcurl also brings HTTP/2 to https upstreams; this client speaks
 * HTTP/1.1 only, one request per connection at a time, as the providers' own SDKs do.) */
#ifndef AGENTD_H1CLIENT_H
#define AGENTD_H1CLIENT_H

#include <stdint.h>

#include "net/upstream_types.h"

#define H1_MIN_IDLE_PER_HOST 64
#define H1_MAX_IDLE_PER_HOST 1024
#define H1_IDLE_TIMEOUT_MS 60000
#define H1_DNS_TTL_MS 30000

struct h1client;

/* create: one per loop, owned by struct upstream; reads the proxy environment (http_proxy, https_proxy,
 * all_proxy, no_proxy and their upper-case forms, as curl does) once, there; up_options.ca_file (NULL or "":
 * none) is a PEM file of CA certificates trusted for https on top of the system store. destroy frees the client
 * once the loop has run the closes and any DNS lookup in flight has returned. start declines (-1, *why left
 * NULL) what it does not serve: proxies from the environment and URLs outside the plain shape h1_parse_url
 * takes; the caller then gives the transfer to libcurl. */
extern const struct up_backend_ops h1_backend_ops;

/* Connections and lookups of a client, for tests: open connections (any state but closing), idle ones in the
 * pool, connections opened since h1_new. */
struct h1_stats {
    unsigned open, idle;
    uint64_t connects, reuses, retries;
};
void h1_get_stats(const struct h1client *c, struct h1_stats *out);
/* For tests: how long a pooled connection may stay unused (H1_IDLE_TIMEOUT_MS). */
void h1_set_idle_timeout(struct h1client *c, uint64_t ms);

#endif
