/* h1_url.c: URL shapes and proxy rules for the native upstream client (net/h1_url.h). */
#include "net/h1_url.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <uv.h>

bool h1_proxy_applies(const char *url)
{
    struct h1_url u;
    if (url == NULL || h1_parse_url(url, strlen(url), &u) != 0)
        return true; /* a URL this client does not take goes to libcurl anyway */
    const char *proxy = u.tls ? getenv("https_proxy") : getenv("http_proxy");
    if ((proxy == NULL || *proxy == '\0') && u.tls)
        proxy = getenv("HTTPS_PROXY");
    if (proxy == NULL || *proxy == '\0')
        proxy = getenv("all_proxy");
    if (proxy == NULL || *proxy == '\0')
        proxy = getenv("ALL_PROXY");
    if (proxy == NULL || *proxy == '\0')
        return false;
    const char *no_proxy = getenv("no_proxy");
    if (no_proxy == NULL || *no_proxy == '\0')
        no_proxy = getenv("NO_PROXY");
    return !h1_no_proxy_match(no_proxy, u.host, u.host_len);
}

/* ---------- URLs ---------- */

static bool host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
           ch == '_';
}

static bool has_dot_segment(const char *p, size_t n)
{
    /* "/./", "/../", or a path ending in "/." or "/.." (curl would normalise them; let it) */
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '/' || i + 1 >= n || p[i + 1] != '.')
            continue;
        size_t j = i + 2;
        if (j < n && p[j] == '.')
            j++;
        if (j == n || p[j] == '/')
            return true;
    }
    return false;
}

int h1_parse_url(const char *url, size_t len, struct h1_url *u)
{
    memset(u, 0, sizeof(*u));
    if (url == NULL)
        return -1;
    const char *p = url, *end = url + len;
    if (len > 7 && memcmp(url, "http://", 7) == 0) {
        p += 7;
        u->port = 80;
    } else if (len > 8 && memcmp(url, "https://", 8) == 0) {
        p += 8;
        u->port = 443;
        u->tls = true;
    } else {
        return -1;
    }
    for (const char *q = p; q < end; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ch == '#')
            return -1;
    }
    const char *auth_end = p;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?')
        auth_end++;
    const char *port_at = NULL;
    if (p < auth_end && *p == '[') {
        const char *rb = memchr(p, ']', (size_t)(auth_end - p));
        if (rb == NULL || rb == p + 1)
            return -1;
        for (const char *q = p + 1; q < rb; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F') || *q == ':' ||
                  *q == '.'))
                return -1; /* zone ids and the rest: curl */
        u->host = p + 1;
        u->host_len = (size_t)(rb - p - 1);
        u->ipv6 = true;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return -1;
            port_at = rb + 2;
        }
    } else {
        const char *q = p;
        while (q < auth_end && host_char(*q))
            q++;
        if (q == p)
            return -1;
        u->host = p;
        u->host_len = (size_t)(q - p);
        if (q < auth_end) {
            if (*q != ':')
                return -1; /* userinfo, percent-encoding, anything unusual */
            port_at = q + 1;
        }
    }
    if (port_at) {
        size_t nd = (size_t)(auth_end - port_at);
        if (nd == 0 || nd > 5)
            return -1;
        unsigned v = 0;
        for (size_t i = 0; i < nd; i++) {
            if (port_at[i] < '0' || port_at[i] > '9')
                return -1;
            v = v * 10 + (unsigned)(port_at[i] - '0');
        }
        if (v == 0 || v > 65535)
            return -1;
        u->port = (uint16_t)v;
        u->port_given = true;
    }
    if (auth_end == end) {
        u->target = "/";
        u->target_len = 1;
        return 0;
    }
    if (*auth_end != '/')
        return -1; /* "http://host?query": rare, curl's */
    u->target = auth_end;
    u->target_len = (size_t)(end - auth_end);
    const char *qm = memchr(u->target, '?', u->target_len);
    if (has_dot_segment(u->target, qm ? (size_t)(qm - u->target) : u->target_len))
        return -1;
    return 0;
}

/* ---------- proxies from the environment ---------- */

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

bool h1_no_proxy_match(const char *no_proxy, const char *host, size_t host_len)
{
    if (no_proxy == NULL || *no_proxy == '\0' || host_len == 0)
        return false;
    if (strcmp(no_proxy, "*") == 0)
        return true;
    char tmp[64];
    bool is_ip = false;
    if (host_len < sizeof(tmp)) {
        memcpy(tmp, host, host_len);
        tmp[host_len] = '\0';
        unsigned char a[16];
        is_ip = uv_inet_pton(AF_INET, tmp, a) == 0 || uv_inet_pton(AF_INET6, tmp, a) == 0;
    }
    size_t nlen = host_len;
    if (!is_ip && nlen > 0 && host[nlen - 1] == '.')
        nlen--;
    const char *p = no_proxy;
    while (*p) {
        while (*p && blank(*p))
            p++;
        const char *tok = p;
        while (*p && !blank(*p) && *p != ',')
            p++;
        size_t tlen = (size_t)(p - tok);
        if (tlen) {
            if (is_ip) {
                /* exact text only: a CIDR or another spelling of the address is curl's call */
                if (tlen == host_len && memcmp(tok, host, tlen) == 0)
                    return true;
            } else {
                if (tok[tlen - 1] == '.')
                    tlen--;
                if (tlen && *tok == '.') {
                    tok++;
                    tlen--;
                }
                if (tlen && tlen == nlen && strncasecmp(tok, host, nlen) == 0)
                    return true;
                if (tlen && tlen < nlen && host[nlen - tlen - 1] == '.' &&
                    strncasecmp(tok, host + (nlen - tlen), tlen) == 0)
                    return true;
            }
        }
        while (*p && blank(*p))
            p++;
        while (*p == ',')
            p++;
    }
    return false;
}
