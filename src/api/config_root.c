/* config_root.c: the composition root of the configuration. It mounts every module's section schema at its key
 * in struct config; the engine in config/ knows no module. A new module adds its section here (and, while other
 * layers read it by member name, its plain struct to struct config). */
#include <stddef.h>
#include <string.h>

#include "agent/agent_config.h"
#include "api/server_config.h"
#include "common/macros.h"
#include "config/config.h"
#include "gateway/cache.h"
#include "gateway/gw_config.h"
#include "gateway/routing.h"
#include "mcp/mcp_config.h"
#include "policy/alerts.h"
#include "policy/auth_config.h"
#include "store/store_config.h"
#include "policy/govern_config.h"
#include "sandbox/sandbox_config.h"
#include "telemetry/log_config.h"
#include "telemetry/otel_config.h"

#define OFF(f) offsetof(struct config, f)

static void finish(struct cfg_ctx *ctx, void *obj, const char *path)
{
    (void)path;
    struct config *c = obj;
    gw_config_models_finish(ctx, &c->models, "models");
    auth_config_finish(c);
    const struct config_agent *a = c->agents.items;
    for (size_t i = 0; i < c->agents.n; i++)
        for (size_t j = 0; j < i; j++)
            if (a[i].name && a[j].name && strcmp(a[i].name, a[j].name) == 0)
                cfg_error_at(ctx, NULL, "agents", "agent name '%s' appears twice", a[i].name);
    cache_config_finish(ctx, c);
    routing_config_finish(ctx, c);
}

static const struct cfg_field root_fields[] = {
    {.key = "server", .type = CFG_MAP, .off = OFF(server), .sub = &server_config_schema},
    {.key = "log", .type = CFG_MAP, .off = OFF(log), .sub = &log_config_schema},
    {.key = "gateway", .type = CFG_MAP, .off = OFF(gateway), .sub = &gw_config_schema},
    {.key = "auth", .type = CFG_MAP, .off = OFF(auth), .sub = &auth_config_schema},
    {.key = "telemetry", .type = CFG_MAP, .off = OFF(telemetry), .sub = &otel_config_schema},
    {.key = "store", .type = CFG_MAP, .off = OFF(store), .sub = &store_config_schema},
    {.key = "sandbox", .type = CFG_MAP, .off = OFF(sandbox), .sub = &sandbox_config_schema},
    {.key = "models", .type = CFG_LIST, .off = OFF(models), .sub = &gw_config_model_schema,
     .help = "public model names and the deployments behind them"},
    {.key = "prices", .type = CFG_DICT, .off = OFF(prices), .sub = &gw_config_price_schema,
     .help = "USD per million tokens, by model name (longest prefix wins), over the built-in table"},
    {.key = "budgets", .type = CFG_LIST, .off = OFF(budgets), .sub = &govern_budget_schema,
     .help = "spend budgets in USD and tokens per key, user, team or workflow (docs/budgets.md)"},
    {.key = "ratelimits", .type = CFG_LIST, .off = OFF(ratelimits), .sub = &govern_ratelimit_schema,
     .help = "requests and tokens per minute per key, user, team, model or deployment (docs/budgets.md)"},
    {.key = "ledger", .type = CFG_MAP, .off = OFF(ledger), .sub = &govern_ledger_schema},
    {.key = "agents", .type = CFG_LIST, .off = OFF(agents), .sub = &agent_config_schema,
     .help = "agent definitions: model, instructions, tools, limits (docs/agents.md)"},
    {.key = "mcp", .type = CFG_MAP, .off = OFF(mcp), .sub = &mcp_config_schema},
    {.key = "cache", .type = CFG_MAP, .off = OFF(cache), .sub = &cache_config_schema},
    {.key = "routing", .type = CFG_LIST, .off = OFF(routing), .sub = &routing_rule_schema,
     .help = "rules that send a public model's requests to a cheaper one; per model, first match wins "
             "(docs/routing.md)"},
    {.key = "alerts", .type = CFG_MAP, .off = OFF(alerts), .sub = &alerts_config_schema,
     .help = "spend alerts: budget thresholds and spend-rate anomalies, to the log, metrics and webhooks"},
};

const struct cfg_schema config_schema = {.name = "config",
                                         .item_size = sizeof(struct config),
                                         .fields = root_fields,
                                         .nfields = ARRAY_LEN(root_fields),
                                         .finish = finish};

struct config *config_load(const struct config_flags *flags, char **environ_, struct buf *errors)
{
    return config_load_schema(&config_schema, flags, environ_, errors);
}
