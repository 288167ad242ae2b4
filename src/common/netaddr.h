/* netaddr.h: which IP addresses code on this host may be sent to on a caller's behalf (the http_fetch tool, the
 * sandbox's egress proxy). */
#ifndef AGENTD_NETADDR_H
#define AGENTD_NETADDR_H

#include <stdbool.h>

struct sockaddr;

/* True when sa is a public unicast address: not "this network", private, loopback, link-local (cloud metadata),
 * shared (CGNAT), multicast, reserved, broadcast, documentation or benchmarking; IPv4-mapped, -compatible and NAT64
 * IPv6 addresses are judged by their IPv4 address, unique-local and link-local IPv6 are not public. */
bool netaddr_public(const struct sockaddr *sa);

#endif
