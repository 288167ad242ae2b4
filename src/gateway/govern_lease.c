#include "gateway/govern_lease.h"

#include <uv.h>

#include "common/alloc.h"
#include "policy/lease.h"

static enum glease verdict(enum lease_take t)
{
    switch (t) {
    case LEASE_OK: return GL_OK;
    case LEASE_WAIT: return GL_WAIT;
    case LEASE_EXHAUSTED: return GL_EXHAUSTED;
    default: return lease_fail_open() ? GL_OK : GL_DOWN; /* open: this replica's own counters decide */
    }
}

/* Takes amount from c into h; on anything but OK, gives back what this call took since `mark`. */
static enum glease take(struct govern_lease_hold *h, struct lease_cell *c, int unit, int64_t amount,
                        const struct price *price)
{
    if (c == NULL)
        return GL_FULL;
    enum lease_take t = lease_take(c, amount);
    if (t == LEASE_OK) {
        h->v[h->n].c = c;
        h->v[h->n].amount = amount;
        h->v[h->n].unit = unit;
        h->v[h->n].price = price;
        h->n++;
    }
    return verdict(t);
}

static void undo(struct govern_lease_hold *h, int mark)
{
    for (int i = mark; i < h->n; i++)
        lease_settle(h->v[i].c, h->v[i].amount, 0);
    h->n = mark;
}

enum glease govern_lease_rates(const struct rl_limit *rl, int n, int64_t tokens, struct govern_lease_hold *h,
                               int *which)
{
    *which = -1;
    if (!lease_enabled())
        return GL_OK;
    int mark = h->n;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            int64_t lim = k ? rl[i].tpm : rl[i].rpm;
            if (lim <= 0)
                continue;
            int unit = k ? LEASE_RATE_TOKENS : LEASE_RATE_REQUESTS;
            struct lease_cell *c = lease_cell_get(unit, rl_scope_name(rl[i].scope), rl[i].name, "", 0, 0, lim);
            enum glease r = take(h, c, unit, k ? tokens : 1, NULL);
            if (r != GL_OK) {
                undo(h, mark);
                *which = i * 2 + k;
                return r;
            }
        }
    }
    /* a request is counted when admitted: its rpm takes are settled now, the token takes at the end */
    int w = mark;
    for (int i = mark; i < h->n; i++) {
        if (h->v[i].unit == LEASE_RATE_REQUESTS)
            lease_settle(h->v[i].c, 1, 1);
        else
            h->v[w++] = h->v[i];
    }
    h->n = w;
    return GL_OK;
}

enum glease govern_lease_budgets(const struct budget_limit *bl, int n, const struct budget_hold *bh, int64_t now,
                                 struct govern_lease_hold *h, int *which)
{
    *which = -1;
    if (!lease_enabled())
        return GL_OK;
    int mark = h->n;
    for (int i = 0; i < n && i < bh->n; i++) {
        if (bl[i].soft)
            continue;
        const char *sc = budget_scope_name(bl[i].scope), *wn = budget_window_name(bl[i].window);
        int64_t ws = budget_window_start(bl[i].window, now), we = budget_window_end(bl[i].window, now);
        enum glease r = GL_OK;
        if (bl[i].usd_nusd > 0 && bh->v[i].price)
            r = take(h, lease_cell_get(LEASE_BUDGET_NUSD, sc, bl[i].name, wn, ws, we, bl[i].usd_nusd),
                     LEASE_BUDGET_NUSD, bh->v[i].nusd, bh->v[i].price);
        if (r == GL_OK && bl[i].tokens > 0)
            r = take(h, lease_cell_get(LEASE_BUDGET_TOKENS, sc, bl[i].name, wn, ws, we, bl[i].tokens),
                     LEASE_BUDGET_TOKENS, bh->v[i].tokens, NULL);
        if (r != GL_OK) {
            undo(h, mark);
            *which = i;
            return r;
        }
    }
    return GL_OK;
}

void govern_lease_settle(struct govern_lease_hold *h, const struct price_tokens *used, const struct price *actual)
{
    int64_t tok = 0;
    if (used) {
        tok = (used->input > 0 ? used->input : 0) + (used->output > 0 ? used->output : 0);
    }
    for (int i = 0; i < h->n; i++) {
        int64_t u = 0;
        if (used) {
            if (h->v[i].unit == LEASE_BUDGET_NUSD)
                u = price_cost_nusd(actual ? actual : h->v[i].price, used);
            else
                u = tok;
        }
        lease_settle(h->v[i].c, h->v[i].amount, u);
    }
    h->n = 0;
}

int64_t govern_lease_retry_ms(const struct rl_limit *l, bool tokens)
{
    struct lease_cell *c = lease_cell_get(tokens ? LEASE_RATE_TOKENS : LEASE_RATE_REQUESTS, rl_scope_name(l->scope),
                                          l->name, "", 0, 0, tokens ? l->tpm : l->rpm);
    return c ? lease_retry_ms(c) : 0;
}

/* ---- waiting for the lease thread ---- */

struct gwait {
    struct lease_waiter w; /* first: the lease thread hands this back */
    uv_async_t async;
    struct exchange *ex;
};

static void gwait_closed(uv_handle_t *hd)
{
    struct gwait *gw = hd->data;
    ex_unref(gw->ex);
    xfree(gw);
}

static void gwait_fire(uv_async_t *a)
{
    struct gwait *gw = a->data;
    uv_close((uv_handle_t *)&gw->async, gwait_closed);
    ex_rerun(gw->ex); /* admit decides again with the refilled leases (nothing when the exchange ended) */
}

static void gwait_wake(struct lease_waiter *w)
{
    struct gwait *gw = (struct gwait *)w;
    uv_async_send(&gw->async); /* from the lease thread: the exchange goes on on its own loop */
}

enum ex_next govern_lease_wait(struct exchange *ex)
{
    struct gwait *gw = xcalloc(1, sizeof(*gw));
    gw->w.wake = gwait_wake;
    gw->ex = ex;
    uv_async_init(ex_worker_loop(ex->gw), &gw->async, gwait_fire);
    gw->async.data = gw;
    ex_ref(ex); /* dropped when the handle has closed */
    lease_wait(&gw->w);
    return EX_WAIT;
}
