/* sbx_egress.h: a run's one way out, when its spec asks for network "egress".
 *
 * Such a run still has a network namespace of its own, with nothing in it but loopback. In it, set-up leaves one
 * TCP socket listening on 127.0.0.1:SBX_EGRESS_PORT and hands it to the pool outside; the program's environment
 * names it as HTTP_PROXY and HTTPS_PROXY. This module serves that socket from the pool's loop (the socket works
 * from any namespace once made): an HTTP proxy that speaks
 *   - CONNECT host:port (a tunnel: HTTPS, or anything else over TCP to an allowed port), and
 *   - absolute-form requests, "GET http://host[:port]/path HTTP/1.1" (plain HTTP: the head is rewritten to origin
 *     form, without Proxy-* and Connection headers and with "Connection: close", its Host replaced by the target's,
 *     as RFC 9112 3.2.2 asks of a proxy, so that no Host can name a site the policy did not check; the rest is
 *     relayed as is),
 * and nothing else. Each connection is checked before anything is sent out: the port (policy ports), the host name
 * (allow_hosts patterns), then every address the name resolves to, or the literal address, must be public
 * (netaddr_public) unless allow_private_networks. Refusals are HTTP answers (400, 403, 502, 503, 504) with a line
 * of text saying why, and are counted. The sandbox's own code never resolves names or reaches an address: it has
 * no route but its loopback, and the proxy resolves and connects from the daemon's namespace. */
#ifndef AGENTD_SBX_EGRESS_H
#define AGENTD_SBX_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"

/* The proxy's port on the sandbox's own loopback (squid's: clients and people recognise it). */
#define SBX_EGRESS_PORT 3128
/* A request head larger than this is refused (400). */
#define SBX_EGRESS_HEAD_MAX 8192

struct sbx_egress_policy {
    /* Host names a run may reach: "example.com" (that name, case-insensitive) or "*.example.com" (any name under
     * it, not the name itself); an address literal matches itself only; "*" alone matches nothing (the
     * configuration refuses it). None: any host (the address checks still apply). */
    const char *const *allow_hosts;
    size_t n_allow_hosts;
    const uint16_t *ports; /* destination ports allowed; none: 80 and 443 */
    size_t n_ports;
    bool allow_private_networks; /* skip the public-address check (an internal mirror; tests) */
    uint64_t max_bytes;          /* per run, both directions together; past it every connection is cut; 0: none */
    uint32_t max_connections;    /* open at once, per run; 0: 64 */
    uint32_t connect_timeout_ms; /* resolving and connecting; 0: 10000 */
    uint32_t idle_timeout_ms;    /* a connection with no byte either way for this long is closed; 0: 60000 */
};

struct sbx_egress_stats {
    uint64_t connections; /* accepted and let through */
    uint64_t refused;     /* answered with an error instead (policy, bad request, upstream failure, caps) */
    uint64_t bytes_out;   /* from the sandbox to the outside */
    uint64_t bytes_in;    /* from the outside to the sandbox */
};

struct sbx_egress;

/* Serves listen_fd (a listening TCP socket; taken over: closed by sbx_egress_stop, or here on failure) on loop
 * with a copy of *pol. NULL with err set on failure. */
struct sbx_egress *sbx_egress_start(uv_loop_t *loop, int listen_fd, const struct sbx_egress_policy *pol,
                                    struct buf *err);
/* Before sbx_egress_stop (the figures at the run's end: read them, then stop). */
void sbx_egress_get_stats(const struct sbx_egress *e, struct sbx_egress_stats *out);
/* Closes the listener and every connection at once; the memory goes when libuv has closed the handles (the loop must
 * run on). e may be NULL. */
void sbx_egress_stop(struct sbx_egress *e);

/* ---- the parts, pure, for tests and fuzzing ---- */

enum sbx_egress_kind { SBX_EGRESS_CONNECT, SBX_EGRESS_FORWARD };

struct sbx_egress_req {
    enum sbx_egress_kind kind;
    char host[256]; /* lower case; an IPv6 literal without its brackets */
    uint16_t port;
    size_t head_len; /* bytes of the head, its final empty line included */
};

/* Parses the request head at the start of p[0..n). 1: not complete yet (n < SBX_EGRESS_HEAD_MAX); 0: parsed, and for
 * FORWARD the head to send to the origin appended to *origin_head; -1: refused, *why says why (a fixed string). */
int sbx_egress_parse(const char *p, size_t n, struct sbx_egress_req *out, struct buf *origin_head, const char **why);
/* True when pattern may stand in allow_hosts: a name (or IPv4 literal) the parser would take as a host, alone or
 * after "*.". */
bool sbx_egress_host_pattern_ok(const char *pattern);
/* True when host (lower case) matches the policy's allow_hosts (or the list is empty). */
bool sbx_egress_host_allowed(const struct sbx_egress_policy *pol, const char *host);
/* True when port is one of the policy's ports (80 and 443 when it names none). */
bool sbx_egress_port_allowed(const struct sbx_egress_policy *pol, uint16_t port);

#endif
