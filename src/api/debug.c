#include "api/debug.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"

static uint64_t query_u64(const struct http_req *r, const char *key, uint64_t def, uint64_t max)
{
    size_t klen = strlen(key);
    const char *p = r->query.p, *end = r->query.p + r->query.n;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > klen && memcmp(p, key, klen) == 0 && p[klen] == '=') {
            uint64_t v;
            if (str_to_u64(str_make(p + klen + 1, (size_t)(stop - p) - klen - 1), &v) == 0)
                return v > max ? max : v;
        }
        p = amp ? amp + 1 : NULL;
    }
    return def;
}

void debug_echo(struct http_req *req)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < req->body.len; i++) {
        h ^= (unsigned char)req->body.data[i];
        h *= 1099511628211ull;
    }
    const struct str *ct = http_req_header(req, "content-type");
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_printf(&b, "{\"bytes\":%zu,\"fnv1a\":\"%016llx\",\"content_type\":", req->body.len, (unsigned long long)h);
    if (ct)
        buf_append_json_str(&b, ct->p, ct->n);
    else
        buf_append_str(&b, "null");
    buf_append_str(&b, "}");
    http_respond(req, 200, "application/json", b.data, b.len);
    buf_free(&b);
}

struct sleeper {
    uv_timer_t timer;
    struct http_req *req;
};

static void on_sleeper_closed(uv_handle_t *h)
{
    xfree(h->data);
}

static void on_sleep_done(uv_timer_t *t)
{
    struct sleeper *s = t->data;
    struct http_req *req = s->req;
    s->req = NULL;
    uv_close((uv_handle_t *)&s->timer, on_sleeper_closed);
    if (req)
        http_respond(req, 200, "application/json", "{\"slept\":true}", 14);
}

static void on_sleep_abort(struct http_req *req, void *ud)
{
    struct sleeper *s = ud;
    s->req = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_sleeper_closed);
    http_respond(req, 499, NULL, NULL, 0); /* terminal call; discarded since the client is gone */
}

void debug_sleep(struct http_req *req)
{
    uint64_t ms = query_u64(req, "ms", 1000, 600000);
    struct sleeper *s = xcalloc(1, sizeof(*s));
    s->req = req;
    uv_timer_init(http_server_loop(req->server), &s->timer);
    s->timer.data = s;
    req->on_abort = on_sleep_abort;
    req->abort_ud = s;
    uv_timer_start(&s->timer, on_sleep_done, ms, 0);
    /* Tests wait on this line to know the request is in the handler (instead of sleeping and hoping). */
    struct log_line l;
    if (log_begin(&l, LL_INFO, "debug_sleep started")) {
        log_field_cstr(&l, "request_id", req->request_id);
        log_field_uint(&l, "ms", ms);
        log_end(&l);
    }
}

void debug_stall(struct http_req *req)
{
    uint64_t ms = query_u64(req, "ms", 1000, 60000);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1)
        ;
    http_respond(req, 200, "application/json", "{\"stalled\":true}", 16);
}
