/* h1_url.h: the URLs and proxy rules of agentd's HTTP/1.1 upstream client (net/h1client.h): which URLs it parses
 * and serves itself, and when a proxy from the environment sends a URL to libcurl instead. Pure functions of
 * their input and the environment; the unit tests reach them directly. */
#ifndef AGENTD_H1_URL_H
#define AGENTD_H1_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
