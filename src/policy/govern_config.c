/* govern_config.c: the schemas of `budgets:`, `ratelimits:` and `ledger:`. */
#include "policy/govern_config.h"

#include <stddef.h>

#include "common/macros.h"
#include "config/config.h"
#include "policy/budget.h"
#include "policy/ratelimit.h"

static const char *const budget_scopes[] = {"key", "user", "team", "workflow", NULL};
static const char *const windows[] = {"total", "day", "week", "month", NULL};
static const char *const modes[] = {"hard", "soft", NULL};
static const char *const insufficient[] = {"refuse", "clamp", NULL};
static const char *const unpriced[] = {"deny", "reserve_max", "allow", NULL};
static const char *const rl_scopes[] = {"key", "user", "team", "model", "deployment", NULL};
_Static_assert(ARRAY_LEN(budget_scopes) == BUDGET_SCOPES + 1, "one name per scope");
_Static_assert(ARRAY_LEN(windows) == BUDGET_WINDOWS + 1, "one name per window");
_Static_assert(ARRAY_LEN(rl_scopes) == RL_SCOPES + 1, "one name per scope");

#define BOFF(f) offsetof(struct config_budget, f)
static const struct cfg_field budget_fields[] = {
    {.key = "scope", .type = CFG_ENUM, .off = BOFF(scope), .enums = budget_scopes, .flags = CFG_REQUIRED,
     .help = "what the budget limits: a key (its id), a user, a team or a workflow"},
    {.key = "name", .type = CFG_STRING, .off = BOFF(name), .max = BUDGET_NAME_MAX, .flags = CFG_REQUIRED,
     .help = "the key id, user, team or workflow; '*' gives every one its own budget of this size"},
    {.key = "usd", .type = CFG_DOUBLE, .off = BOFF(usd), .dmin = 0, .dmax = 1e9,
     .help = "USD per window; 0 = no USD limit"},
    {.key = "tokens", .type = CFG_INT, .off = BOFF(tokens), .min = 0, .max = 1000000000000000LL,
     .help = "tokens (input + output) per window; 0 = no token limit"},
    {.key = "window", .type = CFG_ENUM, .off = BOFF(window), .enums = windows, .def = "month",
     .help = "total, or the calendar day, week (from Monday) or month, in UTC"},
    {.key = "mode", .type = CFG_ENUM, .off = BOFF(mode), .enums = modes, .def = "hard",
     .help = "hard refuses what the budget cannot cover; soft only logs and counts a metric"},
    {.key = "on_insufficient", .type = CFG_ENUM, .off = BOFF(on_insufficient), .enums = insufficient,
     .def = "refuse", .help = "refuse (429), or clamp: lower max_tokens to what remains"},
    {.key = "unpriced", .type = CFG_ENUM, .off = BOFF(unpriced), .enums = unpriced, .def = "deny",
     .help = "a model with no price under a USD budget: deny, reserve_max (priced at the table's highest "
             "prices) or allow (tokens only)"},
};
const struct cfg_schema govern_budget_schema = {.name = "budget",
                                                .item_size = sizeof(struct config_budget),
                                                .fields = budget_fields,
                                                .nfields = ARRAY_LEN(budget_fields)};

#define ROFF(f) offsetof(struct config_ratelimit, f)
static const struct cfg_field ratelimit_fields[] = {
    {.key = "scope", .type = CFG_ENUM, .off = ROFF(scope), .enums = rl_scopes, .flags = CFG_REQUIRED,
     .help = "what the limit applies to: a key (its id), a user, a team, a model or a deployment"},
    {.key = "name", .type = CFG_STRING, .off = ROFF(name), .max = RL_NAME_MAX, .flags = CFG_REQUIRED,
     .help = "the key id, user, team, public model name or deployment label; '*' gives every one its own limit"},
    {.key = "rpm", .type = CFG_INT, .off = ROFF(rpm), .min = 0, .max = 1000000000LL,
     .help = "requests per minute; 0 = none"},
    {.key = "tpm", .type = CFG_INT, .off = ROFF(tpm), .min = 0, .max = 1000000000000LL,
     .help = "tokens (input + output) per minute; 0 = none"},
};
const struct cfg_schema govern_ratelimit_schema = {.name = "ratelimit",
                                                   .item_size = sizeof(struct config_ratelimit),
                                                   .fields = ratelimit_fields,
                                                   .nfields = ARRAY_LEN(ratelimit_fields)};

#define LOFF(f) offsetof(struct config_ledger, f)
static const struct cfg_field ledger_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = LOFF(enabled), .def = "true", .flags = CFG_RESTART,
     .help = "write one spend ledger row per exchange to DATA_DIR/ledger.db"},
    {.key = "batch_interval", .type = CFG_DURATION, .off = LOFF(batch_interval_ms), .min = 10, .max = 60000,
     .def = "1s", .flags = CFG_RESTART,
     .help = "the writer appends queued rows this often; a crash loses at most this much"},
    {.key = "queue_max", .type = CFG_INT, .off = LOFF(queue_max), .min = 100, .max = 10000000, .def = "50000",
     .flags = CFG_RESTART, .help = "rows waiting for the writer; past it rows are dropped and counted"},
};
const struct cfg_schema govern_ledger_schema = {
    .name = "ledger", .fields = ledger_fields, .nfields = ARRAY_LEN(ledger_fields)};
