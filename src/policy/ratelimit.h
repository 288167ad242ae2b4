/* ratelimit.h: requests per minute and tokens per minute, exact within one process (GCRA).
 *
 * A limit is (scope, name, rpm, tpm) for a key, user, team, model or deployment. Each (scope, name, kind) is one
 * generic cell rate algorithm cell: a theoretical arrival time `tat`; a request of cost c (1 for requests, its
 * reserved tokens for tokens) moves it to max(tat, now) + c*T where T = 60 s / limit, and is allowed while that
 * stays within 60 s of now. So a limit of N per minute lets N through at once from idle and then one every T: the
 * same cap as a sliding one-minute window, with no window edge to burst across. All the limits of a request are
 * decided together under their stripes' locks (ascending order): all are charged or none.
 *
 * Tokens are reserved at admit (estimated input + max_tokens) and corrected at settle with the actual count
 * (rl_settle moves tat back, or forward when the request used more than it reserved). */
#ifndef AGENTD_RATELIMIT_H
#define AGENTD_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"

enum rl_scope { RL_KEY, RL_USER, RL_TEAM, RL_MODEL, RL_DEPLOYMENT, RL_SCOPES };
const char *rl_scope_name(enum rl_scope s); /* "key", "user", "team", "model", "deployment" */

#define RL_MAX_LIMITS 16
#define RL_NAME_MAX 256
#define RL_MAX_CELLS 1000000

struct rl_limit {
    enum rl_scope scope;
    const char *name;
    int64_t rpm; /* 0: none */
    int64_t tpm; /* 0: none */
};

struct rl_cell;
struct rl_hold {
    int n;
    struct {
        struct rl_cell *cell;
        int64_t tokens; /* reserved on this token cell */
        int64_t tpm;    /* the limit it was reserved under */
    } v[RL_MAX_LIMITS];
};

struct rl_decision {
    bool allowed;
    bool bad;             /* too many limits, a name too long or the table full */
    int which;            /* the refusing limit, or -1 */
    bool which_tokens;    /* it refused on tokens (else requests) */
    int64_t retry_after_ms;
    /* For the x-ratelimit-* headers: the tightest request and token limits among those given (0: none). */
    int64_t limit_requests, remaining_requests, reset_requests_ms;
    int64_t limit_tokens, remaining_tokens, reset_tokens_ms;
};

struct ratelimit;
struct ratelimit *rl_new(void);
void rl_free(struct ratelimit *r);

/* Decides for a request that reserves `tokens` tokens at now_ms (any monotonic clock in ms). When allowed the
 * charges are in *h (settle them with rl_settle). */
void rl_admit(struct ratelimit *r, const struct rl_limit *l, int n, int64_t tokens, int64_t now_ms,
              struct rl_hold *h, struct rl_decision *d);
/* Corrects the token cells by (actual - reserved); h is emptied. */
void rl_settle(struct ratelimit *r, struct rl_hold *h, int64_t actual_tokens);

/* What is left of a limit now, without charging it (GET /v1/me): remaining requests and tokens (-1 for a kind the
 * limit does not set) and the ms until the cell is full again. */
struct rl_peek {
    int64_t remaining_requests, remaining_tokens;
    int64_t reset_requests_ms, reset_tokens_ms;
};
void rl_peek(struct ratelimit *r, const struct rl_limit *l, int64_t now_ms, struct rl_peek *out);

/* Appends the rate-limit headers ("Name: value\r\n") in OpenAI's naming (x-ratelimit-*), or Anthropic's
 * (anthropic-ratelimit-*, resets as RFC 3339 times from now_wall_s) when anthropic. Nothing for absent limits. */
void rl_headers(struct buf *out, const struct rl_decision *d, bool anthropic, int64_t now_wall_ms);

#endif
