/* upstream_types.c: what the router and every backend share about a transfer (net/upstream_types.h). */
#include "net/upstream_types.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/str.h"
#include "common/timeutil.h"

void up_request_init(struct up_request *r)
{
    memset(r, 0, sizeof(*r));
    r->method = "POST";
    buf_init(&r->url, 8192);
    buf_init(&r->headers, 64 * 1024);
    buf_init(&r->body, BUF_UNBOUNDED);
}

void up_request_free(struct up_request *r)
{
    buf_free(&r->url);
    buf_free(&r->headers);
    buf_free(&r->body);
}

void up_request_header(struct up_request *r, const char *name, const char *value)
{
    /* appends, not buf_printf: this runs several times per request and printf was ~1,300 instructions a call */
    buf_append_str(&r->headers, name);
    buf_append(&r->headers, ": ", 2);
    buf_append_str(&r->headers, value);
    buf_append(&r->headers, "\n", 1);
}

void up_request_headerf(struct up_request *r, const char *name, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    up_request_header(r, name, tmp);
}

/* Metric label values: never rename one (dashboards and alerts match on them). */
static const char *const result_names[UP_RESULT_COUNT] = {
    [UP_OK] = "ok",
    [UP_E_CONNECT] = "connect",
    [UP_E_CONNECT_TIMEOUT] = "connect_timeout",
    [UP_E_DNS] = "dns",
    [UP_E_FIRST_BYTE_TIMEOUT] = "first_byte_timeout",
    [UP_E_TIMEOUT] = "timeout",
    [UP_E_RESET_BEFORE_HEADERS] = "reset_before_headers",
    [UP_E_RESET] = "reset",
    [UP_E_TLS] = "tls",
    [UP_E_PROTOCOL] = "protocol",
    [UP_E_TOO_LARGE] = "too_large",
    [UP_E_ABORTED] = "aborted",
    [UP_E_OTHER] = "other",
};

const char *up_result_name(enum up_result r)
{
    return (unsigned)r < UP_RESULT_COUNT && result_names[r] ? result_names[r] : "other";
}

bool up_result_is_timeout(enum up_result r)
{
    return r == UP_E_CONNECT_TIMEOUT || r == UP_E_FIRST_BYTE_TIMEOUT || r == UP_E_TIMEOUT;
}

const char *up_xfer_error(const struct up_xfer *x)
{
    if (x->result == UP_OK)
        return "";
    if (x->abort_reason[0])
        return x->abort_reason;
    if (x->errbuf[0])
        return x->errbuf;
    return up_result_name(x->result);
}

void up_xfer_destroy(struct up_xfer *x)
{
    up_request_free(&x->req);
    buf_free(&x->resp_headers);
    xfree(x);
}

int up_xfer_header(const struct up_xfer *x, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    const char *p = x->resp_headers.data;
    const char *end = p ? p + x->resp_headers.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = line_end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            size_t n = (size_t)(ve - v);
            if (size == 0)
                return 0;
            if (n >= size)
                n = size - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 0;
        }
        p = eol ? eol + 1 : end;
    }
    return -1;
}

long up_xfer_retry_after_ms(const struct up_xfer *x)
{
    char v[128];
    if (up_xfer_header(x, "retry-after-ms", v, sizeof(v)) == 0) {
        double ms;
        if (str_to_double(str_from(v), &ms) == 0 && ms >= 0)
            return (long)ms;
    }
    if (up_xfer_header(x, "retry-after", v, sizeof(v)) == 0) {
        double secs;
        if (str_to_double(str_from(v), &secs) == 0 && secs >= 0)
            return (long)(secs * 1000);
        int64_t when;
        if (time_parse_http_date(v, strlen(v), &when) == 0) {
            int64_t now = (int64_t)(time_wall_us() / 1000000);
            return when > now ? (long)(when - now) * 1000 : 0;
        }
    }
    return -1;
}
