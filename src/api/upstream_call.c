/* upstream_call.c: a one-shot upstream request for a route outside the spine (upstream_call.h). */
#include "api/upstream_call.h"

#include <string.h>

#include "api/worker.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "gateway/exchange.h"
#include "net/upstream.h"

struct call {
    struct http_req *req; /* NULL once the client went away */
    struct up_xfer *x;
    struct buf body;
    bool too_large;
    upstream_call_cb *cb;
    void (*ud_free)(void *ud);
    void *ud;
    /* the abort hook the request had before (a counted exchange's sink): restored when the call ends, and run
     * after ours when the client goes away meanwhile */
    void (*prev_abort)(struct http_req *req, void *ud);
    void *prev_abort_ud;
};

static void call_free(struct call *c)
{
    if (c->ud_free)
        c->ud_free(c->ud);
    buf_free(&c->body);
    xfree(c);
}

static void on_abort(struct http_req *req, void *ud)
{
    struct call *c = ud;
    void (*prev)(struct http_req *, void *) = c->prev_abort;
    void *prev_ud = c->prev_abort_ud;
    c->req = NULL;
    upstream_cancel(c->x); /* no callback runs after this */
    call_free(c);
    req->on_abort = prev; /* ours is gone: nobody may call it again */
    req->abort_ud = prev_ud;
    if (prev)
        prev(req, prev_ud);
}

static int on_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    (void)x;
    struct call *c = ud;
    if (buf_append(&c->body, data, len) == 0)
        return UP_DATA_OK;
    c->too_large = true;
    return UP_DATA_ABORT;
}

static void on_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct call *c = ud;
    struct http_req *req = c->req;
    req->on_abort = c->prev_abort;
    req->abort_ud = c->prev_abort_ud;
    if (r == UP_OK)
        c->cb(req, x->status, c->body.data ? c->body.data : "", c->body.len, "", c->ud);
    else
        c->cb(req, 0, "", 0, c->too_large ? "the upstream's answer is too large" : up_xfer_error(x),
              c->ud);
    c->ud_free = NULL; /* the callback had it */
    call_free(c);
}

int upstream_call(struct http_req *req, struct up_request *r, size_t max_body, upstream_call_cb *cb,
                  void (*ud_free)(void *ud), void *ud)
{
    struct worker *w = worker_of_loop(http_server_loop(req->server));
    struct gateway_worker *gw = w ? w->gateway : NULL;
    if (gw == NULL)
        return -1;
    struct call *c = xcalloc(1, sizeof(*c));
    c->req = req;
    c->cb = cb;
    c->ud = ud;
    buf_init(&c->body, max_body);
    if (r->connect_timeout_ms == 0)
        r->connect_timeout_ms = 10000;
    if (r->timeout_ms == 0)
        r->timeout_ms = 60000;
    static const struct up_callbacks cbs = {.on_data = on_data, .on_done = on_done};
    c->x = upstream_start(ex_worker_upstream(gw), r, &cbs, c);
    if (c->x == NULL) {
        buf_free(&c->body);
        xfree(c);
        return -1;
    }
    c->ud_free = ud_free;
    c->prev_abort = req->on_abort;
    c->prev_abort_ud = req->abort_ud;
    req->on_abort = on_abort;
    req->abort_ud = c;
    return 0;
}
