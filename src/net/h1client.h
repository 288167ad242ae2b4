/* h1client.h: agentd's own HTTP/1.1 client on the worker loop, private to src/net (upstream.c routes transfers
 * here; the unit tests and the fuzzer reach the pieces below directly).
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
 *   certificate verified against the system store (plus gateway.ca_file) and its name or address checked,
 *   ALPN "http/1.1", sessions resumed per host; the connect deadline covers the handshake;
 * - connect, first-byte and whole-transfer deadlines on one timer per connection;
 * - every failure reported as an enum up_result (the same code libcurl's would map to), with a message in
 *   curl's wording for logs.
 * What it does not serve is left to libcurl by h1_start returning -1: proxies from the environment and URLs
 * outside the plain shape it parses. (libcurl also brings HTTP/2 to https upstreams; this client speaks
 * HTTP/1.1 only, one request per connection at a time, as the providers' own SDKs do.) */
#ifndef AGENTD_H1CLIENT_H
#define AGENTD_H1CLIENT_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "net/upstream_types.h"

#define H1_MIN_IDLE_PER_HOST 64
#define H1_MAX_IDLE_PER_HOST 1024
#define H1_IDLE_TIMEOUT_MS 60000
#define H1_DNS_TTL_MS 30000
#define H1_MAX_ADDRS 8
#define H1_RESP_HEADERS_MAX (64 * 1024)

struct h1client;

/* One per loop, owned by struct upstream. Reads the proxy environment (http_proxy, https_proxy, all_proxy,
 * no_proxy and their upper-case forms, as curl does) once, here. ca_file (NULL or "": none) is a PEM file of CA
 * certificates trusted for https on top of the system store. */
struct h1client *h1_new(uv_loop_t *loop, const char *ca_file);
/* Closes every connection (a transfer still attached is dropped without callbacks, with a warning) and frees
 * the client once the loop has run the closes and any DNS lookup in flight has returned. */
void h1_free(struct h1client *c);

/* Takes x (built by upstream_start, x->req filled) when this client serves its URL. Returns 0: x runs here and
 * its callbacks follow, never before this returns. Returns -1: x is untouched; the caller gives it to libcurl. */
int h1_start(struct h1client *c, struct up_xfer *x);
/* upstream_cancel and upstream_resume for transfers h1_start took (same contracts). */
void h1_cancel(struct up_xfer *x);
void h1_resume(struct up_xfer *x);

/* Connections and lookups of a client, for tests: open connections (any state but closing), idle ones in the
 * pool, connections opened since h1_new. */
struct h1_stats {
    unsigned open, idle;
    uint64_t connects, reuses, retries;
};
void h1_get_stats(const struct h1client *c, struct h1_stats *out);
/* For tests: how long a pooled connection may stay unused (H1_IDLE_TIMEOUT_MS). */
void h1_set_idle_timeout(struct h1client *c, uint64_t ms);

/* ---- URLs ---- */

struct h1_url {
    bool tls;
    bool ipv6;     /* the host was a bracketed IPv6 literal */
    uint16_t port; /* explicit or the scheme's default */
    bool port_given;
    const char *host; /* into the URL, without brackets */
    size_t host_len;
    const char *target; /* path and query into the URL, or "/" when the URL has neither */
    size_t target_len;
};
/* Parses an absolute http:// or https:// URL of the plain shape agentd builds itself: printable ASCII, no
 * userinfo, no fragment, a host of letters, digits, '-', '.', '_' or a bracketed IPv6 literal, an optional port
 * 1..65535, a path without dot segments. Returns 0, or -1 for anything else (libcurl then takes it). */
int h1_parse_url(const char *url, size_t len, struct h1_url *u);

/* True when no_proxy (the variable's value) exempts host from the proxy. A subset of curl's rule, so that a true
 * here is always true for curl too: "*", exact or domain-suffix names (case-insensitive, leading and trailing
 * dots ignored), exact IP strings; CIDR ranges are left to curl (false). */
bool h1_no_proxy_match(const char *no_proxy, const char *host, size_t host_len);

/* True when a proxy from the environment applies to url (read now, by the rules h1_new follows), or when url is
 * not one this client takes: either way libcurl serves it. */
bool h1_proxy_applies(const char *url);

/* ---- the response parser (one per connection; fed the bytes the socket delivers) ---- */

struct h1_resp {
    http_parser p;
    struct up_xfer *x;
    struct buf pending; /* body bytes on_data answered PAUSE to: delivered again by h1_resp_resume */
    struct buf stash;   /* bytes read but not parsed when the transfer paused */
    const char *error;  /* why the response failed (a literal or x->errbuf); NULL while fine */
    enum up_result result; /* ... and its code (UP_E_PROTOCOL, UP_E_TOO_LARGE, UP_E_RESET, ...) */
    uint8_t hstate;     /* 0 between headers, 1 in a name, 2 in a value */
    bool complete;      /* the final response ended */
    bool keep_alive;    /* ... and the connection may carry another request */
    bool trailing;      /* ... and bytes followed it in the same read (so it may not) */
};

enum {
    H1_RESP_MORE,      /* everything parsed; feed more */
    H1_RESP_PAUSED,    /* on_data said PAUSE: stop reading, call h1_resp_resume later */
    H1_RESP_COMPLETE,  /* the final response ended (r->keep_alive, r->trailing say whether to reuse) */
    H1_RESP_FAILED,    /* r->error */
    H1_RESP_CANCELLED, /* the transfer was cancelled inside a callback */
};

/* (Re)starts the parser for a transfer, keeping the buffers' allocations. */
void h1_resp_init(struct h1_resp *r, struct up_xfer *x);
void h1_resp_free(struct h1_resp *r);
/* Parses bytes from the socket (not while paused). Calls on_headers and on_data, never on_done. Returns
 * H1_RESP_*. */
int h1_resp_feed(struct h1_resp *r, const char *data, size_t len);
/* The peer closed the connection: completes a close-delimited body (H1_RESP_COMPLETE), otherwise sets r->error
 * and r->result (H1_RESP_FAILED). */
int h1_resp_eof(struct h1_resp *r);
/* Resumes a paused transfer: delivers the held bytes again, then parses the stash. Returns H1_RESP_*. */
int h1_resp_resume(struct h1_resp *r);

#endif
