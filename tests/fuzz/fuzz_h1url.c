/* libFuzzer target: the native upstream client's URL parser and no_proxy matcher (net/h1_url.c), which decide
 * what agentd's own client serves and what goes to libcurl. Input: a URL, optionally followed by '\n', a
 * no_proxy value, '\n' and a host. Checks: a URL accepted has only the shape h1_url.h promises (scheme, host
 * and target inside the input, a host of the allowed characters, a port 1..65535, a target starting with '/',
 * no byte outside printable ASCII, no fragment, no dot segment), parsing is deterministic, and the matcher
 * answers "*" with true and the empty list with false. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "net/h1_url.h"

static void check_url(const char *url, size_t len)
{
    struct h1_url u, v;
    int rc = h1_parse_url(url, len, &u);
    if (h1_parse_url(url, len, &v) != rc)
        abort();
    if (rc != 0)
        return;
    if (memcmp(&u, &v, sizeof(u)) != 0)
        abort();
    const char *end = url + len;
    if (u.host < url || u.host_len == 0 || u.host + u.host_len > end || u.port == 0)
        abort();
    if (!(u.tls ? len > 8 && memcmp(url, "https://", 8) == 0 : len > 7 && memcmp(url, "http://", 7) == 0))
        abort();
    if (u.target_len == 0 || u.target[0] != '/')
        abort();
    bool inside = u.target >= url && u.target < end;
    if (inside ? u.target + u.target_len != end : u.target_len != 1) /* the path runs to the end, or is "/" */
        abort();
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f || c == '#' || c == '\\')
            abort();
    }
    for (size_t i = 0; i < u.host_len; i++) {
        char c = u.host[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                  c == '_' || (u.ipv6 && (c == ':' || (c >= 'a' && c <= 'f')));
        if (!ok)
            abort();
    }
    const char *path_end = memchr(u.target, '?', u.target_len);
    size_t plen = path_end ? (size_t)(path_end - u.target) : u.target_len;
    for (size_t i = 0; i + 1 < plen; i++) {
        if (u.target[i] == '/' && u.target[i + 1] == '.') {
            size_t j = i + 2 < plen && u.target[i + 2] == '.' ? i + 3 : i + 2;
            if (j >= plen || u.target[j] == '/')
                abort(); /* a dot segment was accepted */
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the URL alone, exactly as given (no terminator: the parser must stay inside len) */
    char *url = xmalloc(size ? size : 1);
    memcpy(url, data, size);
    check_url(url, size);
    xfree(url);

    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL)
        return 0;
    char *s = xmalloc(size + 1); /* no_proxy is a C string (an environment variable) */
    memcpy(s, data, size);
    s[size] = '\0';
    char *np = s + (nl - data) + 1;
    char *host = strchr(np, '\n');
    if (host) {
        *host++ = '\0';
        size_t hlen = strlen(host);
        bool m = h1_no_proxy_match(np, host, hlen);
        if (strcmp(np, "*") == 0 && hlen > 0 && !m)
            abort();
        if (np[0] == '\0' && m)
            abort();
        if (h1_no_proxy_match(np, host, hlen) != m)
            abort();
    }
    xfree(s);
    return 0;
}
