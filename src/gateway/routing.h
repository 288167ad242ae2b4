/* routing.h: routing to cheaper models (issue 14 item 3, docs/routing.md).
 *
 * `routing:` is a list of rules; each names the public model it applies to (`model`), the public model it sends
 * the request to (`to`) and its conditions (`when`: estimated prompt size, tools, images, the x-agentd-tier
 * header, the key's or team's remaining budget share, the UTC hour). The rules of a model are tried in order; the
 * first whose conditions all hold wins. The decision is taken in the spine's `plan` stage (and, when the response
 * cache is on, before its lookup, so that the key holds the model after routing); it is told in the response
 * headers (x-agentd-route, x-agentd-routed-from), the `llm` log line and the span. */
#ifndef AGENTD_ROUTING_H
#define AGENTD_ROUTING_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "config/schema.h"

struct config;
struct exchange;

enum route_tri { ROUTE_ANY, ROUTE_YES, ROUTE_NO }; /* a yes/no condition, or none */
enum route_budget_scope { ROUTE_BUDGET_KEY, ROUTE_BUDGET_TEAM };

struct config_route {
    char *name;            /* the rule's name (headers, log, span, what-if) */
    char *model;           /* the public model it applies to */
    char *to;              /* the public model it routes to */
    /* when: */
    int64_t min_prompt_tokens, max_prompt_tokens; /* estimated (bytes / 4); 0: no bound */
    int tools, images;     /* enum route_tri */
    char *tier;            /* x-agentd-tier equals this; NULL: any */
    double budget_below;   /* the remaining share of the key's (or team's) budgets is below this; 0: no condition */
    int budget_scope;      /* enum route_budget_scope */
    int64_t hour_from, hour_to; /* UTC hours [from, to), wrapping past midnight; -1: any time */
    unsigned line, col;
};

extern const struct cfg_schema routing_rule_schema;
/* Cross-section checks (a rule naming a model that does not exist, or routing a chat model to an embeddings one);
 * from the root's finish. */
void routing_config_finish(struct cfg_ctx *ctx, const struct config *c);

/* What a rule needs to know about a request, so that the same matching serves live requests and the what-if over
 * the ledger (where some facts are unknown). */
struct route_facts {
    const char *model;
    int64_t prompt_tokens;
    int tools, images;     /* enum route_tri: ROUTE_ANY when unknown */
    const char *tier;      /* NULL: none sent, or unknown */
    bool tier_known;
    double budget_key, budget_team; /* remaining shares; < 0: unknown */
    int hour;              /* UTC hour, -1 unknown */
};
/* The first rule of facts->model whose conditions all hold, or NULL. A condition on an unknown fact does not hold. */
const struct config_route *routing_match(const struct config *cfg, const struct route_facts *f);

/* Decides (once) and applies the routing of ex: from `plan`, and from the cache stage before its lookup. A
 * routed exchange serves the target model: ex->model and rq.model_name change, ex->route_rule names the rule.
 * Returns -1 when the target cannot serve (ex has not changed). */
int routing_apply(struct exchange *ex);
/* Installs routing_apply as the spine's plan hook (once, at start-up). */
void routing_init(void);

/* agentd spend whatif --rules FILE [--days N] [--data-dir DIR]: what the rules would have saved over the
 * ledger's last N days, at today's prices. */
int routing_whatif_main(int argc, char **argv);

#endif
