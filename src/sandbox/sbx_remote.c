/* sbx_remote.c: the CLI's client of POST /v1/sandbox/runs (sbx_remote.h). */
#include "sandbox/sbx_remote.h"

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sandbox/service.h"

/* The most a response may be: both outputs at the sandbox's largest cap, each byte escaped, and some. */
#define RESPONSE_MAX ((size_t)SBX_MAX_OUTPUT_BYTES * 2 * 6 + (1u << 20))

int sbx_remote_parse_url(const char *url, char *host, size_t hostcap, int *port, char *prefix, size_t prefixcap)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *end = h + strcspn(h, "/");
    const char *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL)
            return -1;
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
        else if (rb + 1 != end)
            return -1;
        if ((size_t)(rb - h - 1) >= hostcap || rb == h + 1)
            return -1;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        const char *he = colon ? colon : end;
        if (he == h || (size_t)(he - h) >= hostcap)
            return -1;
        memcpy(host, h, (size_t)(he - h));
        host[he - h] = '\0';
    }
    *port = 80;
    if (colon) {
        char *e;
        long p = strtol(colon + 1, &e, 10);
        if (e != end || p <= 0 || p > 65535)
            return -1;
        *port = (int)p;
    }
    size_t plen = strlen(end);
    while (plen > 0 && end[plen - 1] == '/')
        plen--;
    if (plen >= prefixcap)
        return -1;
    memcpy(prefix, end, plen);
    prefix[plen] = '\0';
    return 0;
}

static int dial(const char *host, int port, uint64_t timeout_ms, struct buf *err)
{
    char ps[16];
    (void)snprintf(ps, sizeof(ps), "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        (void)buf_printf(err, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *a = ai; a && fd == -1; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd == -1)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            last = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd == -1) {
        (void)buf_printf(err, "connect %s:%d: %s", host, port, strerror(last ? last : EHOSTUNREACH));
        return -1;
    }
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000), .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Decodes a chunked body in place; -1 when malformed. */
static int dechunk(struct buf *b, size_t start)
{
    size_t r = start, w = start;
    for (;;) {
        char *e;
        if (r >= b->len)
            return -1;
        unsigned long long n = strtoull(b->data + r, &e, 16);
        char *crlf = memmem(b->data + r, b->len - r, "\r\n", 2);
        if (crlf == NULL || e == b->data + r || e > crlf)
            return -1;
        r = (size_t)(crlf - b->data) + 2;
        if (n == 0)
            break;
        if (n > b->len - r || b->len - r - n < 2)
            return -1;
        memmove(b->data + w, b->data + r, n);
        w += n;
        r += n + 2;
    }
    b->len = w;
    return 0;
}

int sbx_remote_run(const char *base_url, const char *key, const struct sbx_spec *spec, int *status, struct buf *body,
                   struct buf *err)
{
    char host[256], prefix[512];
    int port;
    if (sbx_remote_parse_url(base_url, host, sizeof(host), &port, prefix, sizeof(prefix)) != 0) {
        (void)buf_printf(err, "bad daemon URL %s (http://host:port[/prefix]; https is not supported)", base_url);
        return -1;
    }
    struct buf req = BUF_INIT(BUF_UNBOUNDED), json = BUF_INIT(BUF_UNBOUNDED);
    if (sbx_service_request_json(spec, &json, err) != 0) {
        buf_free(&json);
        return -1;
    }
    (void)buf_printf(&req,
                     "POST %s/v1/sandbox/runs HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: agentd-sandbox-cli\r\n"
                     "Content-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n",
                     prefix, host, port, json.len);
    if (key && key[0])
        (void)buf_printf(&req, "Authorization: Bearer %s\r\n", key);
    (void)buf_append_str(&req, "\r\n");
    (void)buf_append(&req, json.data, json.len);
    buf_free(&json);
    /* The daemon answers when the run ends: wait for the run's deadline and a margin for queueing. */
    int fd = dial(host, port, spec->limits.wall_ms + 120000, err);
    int rc = -1;
    struct buf resp = BUF_INIT(RESPONSE_MAX);
    if (fd == -1)
        goto out;
    if (send_all(fd, req.data, req.len) != 0) {
        (void)buf_printf(err, "sending to %s: %s", base_url, strerror(errno));
        goto out;
    }
    char chunk[65536];
    for (;;) {
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            (void)buf_printf(err, "reading from %s: %s", base_url,
                             errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (buf_append(&resp, chunk, (size_t)n) != 0) {
            (void)buf_printf(err, "the response is larger than %zu bytes", RESPONSE_MAX);
            goto out;
        }
    }
    char *head_end = resp.data ? memmem(resp.data, resp.len, "\r\n\r\n", 4) : NULL;
    int code = 0;
    if (head_end == NULL || sscanf(resp.data, "HTTP/1.%*[01] %d", &code) != 1 || code < 100 || code > 599) {
        (void)buf_printf(err, "malformed response from %s", base_url);
        goto out;
    }
    size_t start = (size_t)(head_end - resp.data) + 4;
    /* Header names are case-insensitive; look for chunked transfer coding in the head only. */
    bool chunked = false;
    for (const char *l = resp.data; l < head_end; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "transfer-encoding:", 18) == 0) {
            const char *le = strstr(l, "\r\n");
            for (const char *q = l + 18; q + 7 <= le; q++)
                if (strncasecmp(q, "chunked", 7) == 0)
                    chunked = true;
        }
        if (strstr(l, "\r\n") >= head_end)
            break;
    }
    if (chunked && dechunk(&resp, start) != 0) {
        (void)buf_printf(err, "malformed chunked response from %s", base_url);
        goto out;
    }
    (void)buf_append(body, resp.data + start, resp.len - start);
    *status = code;
    rc = 0;
out:
    if (fd != -1)
        close(fd);
    buf_free(&resp);
    buf_free(&req);
    return rc;
}
