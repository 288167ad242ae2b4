/* govern_config.h: the configuration of budgets, rate limits and the ledger (`budgets:`, `ratelimits:`,
 * `ledger:`), plain data read by gateway/govern.c. api/config_root.c mounts the schemas. */
#ifndef AGENTD_GOVERN_CONFIG_H
#define AGENTD_GOVERN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "config/schema.h"

/* One item of `budgets:`. name "*": every name of the scope has its own budget of this size. */
struct config_budget {
    int scope;            /* enum budget_scope */
    char *name;
    double usd;           /* 0: no USD limit */
    int64_t tokens;       /* 0: no token limit */
    int window;           /* enum budget_window */
    int mode;             /* 0 hard, 1 soft */
    int on_insufficient;  /* 0 refuse, 1 clamp */
    int unpriced;         /* enum budget_unpriced */
};

/* One item of `ratelimits:`. name "*": every name of the scope has its own limit. */
struct config_ratelimit {
    int scope;            /* enum rl_scope */
    char *name;
    int64_t rpm, tpm;     /* 0: none */
};

/* struct config_ledger (the `ledger:` section) is declared in config/config.h: it is a member of struct config. */

extern const struct cfg_schema govern_budget_schema;    /* items of budgets: */
extern const struct cfg_schema govern_ratelimit_schema; /* items of ratelimits: */
extern const struct cfg_schema govern_ledger_schema;    /* ledger: */

#endif
