/* govern.h: budgets, rate limits and the spend ledger on the exchange's spine (DESIGN §1: admit and settle).
 *
 * govern_admit() runs in the `admit` stage before the concurrency slot (a caller over its own limit never waits in
 * the admission queue): the rate limits of the request's key,
 * user, team, model and deployments, then the budget reservation (policy/budget.h). A refusal ends the exchange
 * with 429 (or 403 for an unpriced model under `unpriced: deny`) in the caller's format, with Retry-After and the
 * x-ratelimit-* / anthropic-ratelimit-* headers. A clamp lowers ex->rq.max_tokens and rewrites max_tokens in the
 * body the providers read. The settle observer (registered by govern_init) charges the actual usage, corrects the
 * token limits and queues the ledger row (policy/ledger.h). */
#ifndef AGENTD_GOVERN_H
#define AGENTD_GOVERN_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "gateway/exchange.h"

struct config;
struct budget;

/* Process-wide state, metrics and the settle observer (from ex_global_init). */
void govern_init(void);
void govern_cleanup(void);
/* Rebuilds budgets from the ledger in cfg's data dir and starts the ledger writer (from the daemon, before the
 * workers). 0, or -1 with err (the daemon logs it and runs without a ledger). */
int govern_start(const struct config *cfg, struct buf *err);
void govern_stop(void);
/* The ledger writer is failing (for /ready) and its backlog. */
bool govern_ledger_failing(size_t *backlog);

enum ex_next govern_admit(struct exchange *ex);
/* Response header lines for this exchange (rate-limit state). */
void govern_headers(const struct exchange *ex, struct buf *h);
/* Before pricing, when the provider reported no usage: a stream cut short (client gone, deadline, mid-stream
 * failure) is charged the estimated input plus the output counted from what was relayed (4 characters a token,
 * rounded up, or one token a content event relayed, the larger) and marked incomplete. A
 * complete answer stays "not reported" unless a budget governs it: then a stream is charged the same estimate and
 * a non-streamed answer its reservation (the ledger row says the usage was estimated). */
void govern_fill_usage(struct exchange *ex);
void govern_free(struct exchange *ex);

/* The smallest share left (0..1) among the budgets that govern this caller's key, or (team) its team, in their
 * current windows; 1 when none does (routing's budget_below condition). */
double govern_budget_remaining(const struct exchange *ex, bool team);
/* GET /v1/me: the key record (never its hash) with "workflow", and "budgets" and "rate_limits": every budget and
 * rate limit that applies to the caller (the key's own and the configured ones that match its id, user, team or
 * workflow) with what is spent, reserved and left in the current window, now. In memory only. */
struct principal;
cJSON *govern_me_json(const struct config *cfg, const struct principal *p);

/* The process's budget table (for /v1/me and tests). */
struct budget *govern_budget(void);

#endif
