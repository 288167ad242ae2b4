/* govern_lease.h: the cluster side of admit and settle (govern.c): a request's rate limits and hard budgets are
 * taken from this replica's Redis leases (policy/lease.h) on top of the in-process counters, and a request whose
 * leases are short waits, off the loop, for the lease thread to refill them, then runs admit again. */
#ifndef AGENTD_GOVERN_LEASE_H
#define AGENTD_GOVERN_LEASE_H

#include <stdint.h>

#include "gateway/exchange.h"
#include "policy/budget.h"
#include "policy/prices.h"
#include "policy/ratelimit.h"

struct lease_cell;
#define GOVERN_LEASE_MAX (2 * BUDGET_MAX_LIMITS + 2 * RL_MAX_LIMITS)
/* What a request took from leases and has not settled. */
struct govern_lease_hold {
    int n;
    struct {
        struct lease_cell *c;
        int64_t amount;
        int unit;                  /* enum lease_unit */
        const struct price *price; /* a USD budget's: the price its charge is computed at */
    } v[GOVERN_LEASE_MAX];
};

enum glease {
    GL_OK,        /* taken (or cluster mode off) */
    GL_WAIT,      /* short: wait (govern_lease_wait) and run admit again */
    GL_EXHAUSTED, /* the cluster has no more of limit *which */
    GL_DOWN,      /* Redis unreachable and on_redis_down: closed */
    GL_FULL,      /* the lease table is full or a name too long */
};

/* The request's rate limits: one request from each rpm, `tokens` from each tpm (*which: limit * 2 + 1 for its
 * tpm, + 0 for its rpm). Requests are consumed at once;
 * the token takes stay in h until govern_lease_settle. */
enum glease govern_lease_rates(const struct rl_limit *rl, int n, int64_t tokens, struct govern_lease_hold *h,
                               int *which);
/* The hard budgets of a local reservation bh (limit i held in bh->v[i]). */
enum glease govern_lease_budgets(const struct budget_limit *bl, int n, const struct budget_hold *bh, int64_t now,
                                 struct govern_lease_hold *h, int *which);
/* Settles h: budgets charged the cost of `used` (at `actual` when given, else at the price reserved), token rates
 * the tokens used; used NULL gives everything back. h is emptied. */
void govern_lease_settle(struct govern_lease_hold *h, const struct price_tokens *used, const struct price *actual);
/* Parks ex until the lease thread's next pass, then reruns the admit stage. Returns EX_WAIT. */
enum ex_next govern_lease_wait(struct exchange *ex);
/* ms until an exhausted rate cell of the last govern_lease_rates has room (0: unknown). */
int64_t govern_lease_retry_ms(const struct rl_limit *l, bool tokens);

#endif
