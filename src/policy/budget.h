/* budget.h: exact spend budgets in USD and tokens, by reservation (DESIGN §1 "admit" and "settle").
 *
 * A budget is a limit on one scope (a key, a user, a team or a workflow, named by a string) over one window:
 * `total` (never resets), or the calendar `day`, `week` (Monday 00:00 to Monday 00:00) or `month` (the 1st
 * 00:00), all in UTC. Each (scope, name, window) has one cell: spent and reserved, in nano-USD and in tokens.
 *
 * At admit, budget_reserve() takes the worst case of the request (estimated input tokens + the max_tokens it may
 * produce, priced) from every hard budget that applies, all at once or none: when one cannot cover it the request
 * is refused (the decision names that budget and when its window ends) or, when every blocking budget says
 * `on_insufficient: clamp`, max_tokens is lowered to what the remaining budgets cover. At settle, budget_settle()
 * charges the actual usage and releases the reservation. Soft budgets never refuse; crossing one is reported once
 * per window (the caller logs it and counts a metric).
 *
 * Exact within one process across all threads: the cells live in a table of striped mutexes, and a decision locks
 * the stripes of its cells in ascending order, so no two decisions can both take the last of a budget. A
 * reservation taken in one window and settled in the next is charged to the window in force at settle (the
 * reserved amount is released from the cell whatever its window). */
#ifndef AGENTD_BUDGET_H
#define AGENTD_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "policy/prices.h"

enum budget_scope { BUDGET_KEY, BUDGET_USER, BUDGET_TEAM, BUDGET_WORKFLOW, BUDGET_SCOPES };
enum budget_window { BUDGET_TOTAL, BUDGET_DAY, BUDGET_WEEK, BUDGET_MONTH, BUDGET_WINDOWS };
enum budget_unpriced { BUDGET_UNPRICED_DENY, BUDGET_UNPRICED_RESERVE_MAX, BUDGET_UNPRICED_ALLOW };

const char *budget_scope_name(enum budget_scope s);     /* "key", "user", "team", "workflow" */
const char *budget_window_name(enum budget_window w);   /* "total", "day", "week", "month" */
/* Start and end (unix seconds, UTC) of the window holding now; end is INT64_MAX for `total`. */
int64_t budget_window_start(enum budget_window w, int64_t now);
int64_t budget_window_end(enum budget_window w, int64_t now);

#define BUDGET_MAX_LIMITS 16 /* budgets that may apply to one request */
#define BUDGET_NAME_MAX 128  /* longer scope names are refused (BUDGET_BAD) */

/* One budget that applies to a request (from the key record or the `budgets:` configuration). */
struct budget_limit {
    enum budget_scope scope;
    const char *name;      /* the key id, user, team or workflow */
    enum budget_window window;
    int64_t usd_nusd;      /* limit in nano-USD; 0: no USD limit */
    int64_t tokens;        /* limit in tokens (input + output); 0: no token limit */
    bool soft;             /* alert only */
    bool clamp;            /* on_insufficient: clamp (else refuse) */
    enum budget_unpriced unpriced;
};

struct budget_ask {
    const struct price *price;     /* the deployment's price; NULL: unpriced */
    const struct price *max_price; /* the table's most expensive entry (for unpriced: reserve_max) */
    int64_t input_tokens;          /* estimate */
    int64_t max_tokens;            /* output the request may produce (the default already applied) */
    int64_t now;                   /* unix seconds */
};

enum budget_verdict {
    BUDGET_OK,
    BUDGET_CLAMPED,  /* admitted with a lower max_tokens (decision.max_tokens) */
    BUDGET_REFUSED,  /* a hard budget cannot cover the request (decision.which, retry_after) */
    BUDGET_UNPRICED, /* the model has no price and a USD budget says `unpriced: deny` (decision.which) */
    BUDGET_BAD,      /* too many limits, a name too long, or the table full (BUDGET_MAX_CELLS) */
};

struct budget_decision {
    enum budget_verdict verdict;
    int64_t max_tokens;  /* what the request may produce now (== ask.max_tokens unless clamped) */
    int which;           /* the limit that refused, or -1 */
    int64_t retry_after; /* seconds to the refusing budget's window end; -1 for `total` */
    int soft_crossed;    /* a soft budget this request crossed for the first time in its window, or -1 */
    int64_t reserved_nusd, reserved_tokens; /* the worst case held (at the request's own price) */
};

struct budget_cell;
/* What a reservation holds; lives in the exchange. Settle it exactly once (budget_settle). */
struct budget_hold {
    int n;
    struct {
        struct budget_cell *cell;
        const struct price *price; /* priced this cell's charge (NULL: tokens only) */
        int64_t nusd, tokens;
        int64_t limit_nusd;        /* the budget's USD limit (0: none) */
        bool hard;                 /* it refuses (not soft) */
    } v[BUDGET_MAX_LIMITS];
};

struct budget;
#define BUDGET_MAX_CELLS 1000000

struct budget *budget_new(void);
void budget_free(struct budget *b);

/* The decision, and when admitted (OK or CLAMPED) the reservation in *h. n may be 0 (then always OK). */
void budget_reserve(struct budget *b, const struct budget_limit *l, int n, const struct budget_ask *a,
                    struct budget_hold *h, struct budget_decision *d);
/* Charges what was used and releases the reservation; h is emptied. A cell reserved at a price is charged at
 * `actual` (the deployment that served the request) when given, else at the price it reserved at; a cell reserved
 * without one (unpriced: allow) is charged tokens only. */
void budget_settle(struct budget *b, struct budget_hold *h, const struct price_tokens *used,
                   const struct price *actual, int64_t now);

/* Before an attempt at another price p (a fallback model's deployment): every priced cell of h whose reservation
 * is below the worst case at p (in input tokens, out output) is raised to it, when every hard USD budget among them
 * still covers the difference (an unpriced p is covered by none). 0: covered (nothing to do when the reservation
 * already was enough); -1: refused, nothing changed, *which = the index in h of the budget that could not cover it.
 * The settle charges at the price of the deployment that served and releases the whole reservation. */
int budget_topup(struct budget *b, struct budget_hold *h, const struct price *p, int64_t in, int64_t out,
                 int64_t now, int *which);

/* Adds past spend to a cell (rebuilding from the ledger at start): spend at `at` (unix seconds) counts only when it
 * falls in the window in force at `now`. */
void budget_seed(struct budget *b, enum budget_scope s, const char *name, enum budget_window w, int64_t at,
                 int64_t nusd, int64_t tokens, int64_t now);

struct budget_state {
    int64_t spent_nusd, reserved_nusd, spent_tokens, reserved_tokens;
    int64_t window_start, window_end;
};
/* The cell's figures for this window (zeros when it has none). */
void budget_get(struct budget *b, enum budget_scope s, const char *name, enum budget_window w, int64_t now,
                struct budget_state *out);

#endif
