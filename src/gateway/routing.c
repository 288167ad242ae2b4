/* routing.c: routing to cheaper models (issue 14 item 3, docs/routing.md). See routing.h. */
#include "gateway/routing.h"

#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/govern.h"
#include "gateway/registry.h"
#include "policy/prices.h"
#include "telemetry/metrics.h"

/* ---- configuration ---- */

static const char *const tri[] = {"any", "true", "false", NULL};
static const char *const budget_scopes[] = {"key", "team", NULL};

static void rule_validate(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    (void)ctx;
    (void)path;
    struct config_route *r = obj;
    if (where) {
        r->line = where->line;
        r->col = where->col;
    }
}

#define ROFF(f) offsetof(struct config_route, f)
static const struct cfg_field when_fields[] = {
    {.key = "min_prompt_tokens", .type = CFG_INT, .off = ROFF(min_prompt_tokens), .min = 0, .max = 100000000,
     .help = "the estimated prompt (request bytes / 4) has at least this many tokens; 0: no bound"},
    {.key = "max_prompt_tokens", .type = CFG_INT, .off = ROFF(max_prompt_tokens), .min = 0, .max = 100000000,
     .help = "the estimated prompt has at most this many tokens; 0: no bound"},
    {.key = "tools", .type = CFG_ENUM, .off = ROFF(tools), .enums = tri, .def = "any",
     .help = "true: the request offers tools; false: it offers none"},
    {.key = "images", .type = CFG_ENUM, .off = ROFF(images), .enums = tri, .def = "any",
     .help = "true: the request holds an image; false: it holds none"},
    {.key = "tier", .type = CFG_STRING, .off = ROFF(tier), .max = 64,
     .help = "the request's x-agentd-tier header has this value"},
    {.key = "budget_below", .type = CFG_DOUBLE, .off = ROFF(budget_below), .dmin = 0, .dmax = 1,
     .help = "the share left of the caller's budgets (budget_scope) is below this, e.g. 0.2; 0: no condition"},
    {.key = "budget_scope", .type = CFG_ENUM, .off = ROFF(budget_scope), .enums = budget_scopes, .def = "key",
     .help = "whose budgets budget_below reads: the key's or its team's"},
    {.key = "hour_from", .type = CFG_INT, .off = ROFF(hour_from), .min = -1, .max = 23, .def = "-1",
     .help = "from this UTC hour (inclusive; with hour_to, wrapping past midnight); -1: any time"},
    {.key = "hour_to", .type = CFG_INT, .off = ROFF(hour_to), .min = -1, .max = 24, .def = "-1",
     .help = "until this UTC hour (exclusive)"},
};
static const struct cfg_schema when_schema = {.name = "when", .fields = when_fields,
                                              .nfields = ARRAY_LEN(when_fields)};

static const struct cfg_field rule_fields[] = {
    {.key = "name", .type = CFG_STRING, .off = ROFF(name), .max = 64, .flags = CFG_REQUIRED,
     .help = "the rule's name (x-agentd-route, the llm log line, the span, the what-if)"},
    {.key = "model", .type = CFG_STRING, .off = ROFF(model), .max = 255, .flags = CFG_REQUIRED,
     .help = "the public model whose requests the rule may route"},
    {.key = "to", .type = CFG_STRING, .off = ROFF(to), .max = 255, .flags = CFG_REQUIRED,
     .help = "the public model that serves them instead"},
    {.key = "when", .type = CFG_MAP, .off = 0, .sub = &when_schema,
     .help = "conditions, all of which must hold (none: always)"},
};
const struct cfg_schema routing_rule_schema = {.name = "route",
                                               .item_size = sizeof(struct config_route),
                                               .fields = rule_fields,
                                               .nfields = ARRAY_LEN(rule_fields),
                                               .validate = rule_validate};

static const struct config_model *find_model(const struct config *c, const char *name)
{
    const struct config_model *m = c->models.items;
    for (size_t i = 0; i < c->models.n; i++)
        if (m[i].name && strcmp(m[i].name, name) == 0)
            return &m[i];
    return NULL;
}

static void rule_error(struct cfg_ctx *ctx, const struct config *c, const struct config_route *r, const char *what,
                       const char *model)
{
    struct ynode at = {.line = r->line, .col = r->col};
    const char *src = ctx->source; /* finish runs after every source: name the file the rule came from */
    if (r->line && c->path)
        ctx->source = c->path;
    cfg_error_at(ctx, r->line ? &at : NULL, "routing", "rule '%s': %s '%s' is not a model under models:", r->name,
                 what, model);
    ctx->source = src;
}

void routing_config_finish(struct cfg_ctx *ctx, const struct config *c)
{
    const struct config_route *r = c->routing.items;
    for (size_t i = 0; i < c->routing.n; i++) {
        if (r[i].name == NULL || r[i].model == NULL || r[i].to == NULL)
            continue; /* reported as missing already */
        const struct config_model *from = find_model(c, r[i].model), *to = find_model(c, r[i].to);
        if (from == NULL)
            rule_error(ctx, c, &r[i], "model", r[i].model);
        if (to == NULL)
            rule_error(ctx, c, &r[i], "to", r[i].to);
        if (from && to && from->embeddings != to->embeddings) {
            struct ynode at = {.line = r[i].line, .col = r[i].col};
            cfg_error_at(ctx, r[i].line ? &at : NULL, "routing",
                         "rule '%s': '%s' and '%s' are not both chat or both embeddings models", r[i].name,
                         r[i].model, r[i].to);
        }
        if ((r[i].hour_from < 0) != (r[i].hour_to < 0) || r[i].hour_from == r[i].hour_to % 24) {
            if (r[i].hour_from >= 0 || r[i].hour_to >= 0) {
                struct ynode at = {.line = r[i].line, .col = r[i].col};
                cfg_error_at(ctx, r[i].line ? &at : NULL, "routing",
                             "rule '%s': hour_from and hour_to go together and must differ", r[i].name);
            }
        }
        if (r[i].min_prompt_tokens && r[i].max_prompt_tokens && r[i].min_prompt_tokens > r[i].max_prompt_tokens) {
            struct ynode at = {.line = r[i].line, .col = r[i].col};
            cfg_error_at(ctx, r[i].line ? &at : NULL, "routing", "rule '%s': min_prompt_tokens > max_prompt_tokens",
                         r[i].name);
        }
    }
}

/* ---- matching ---- */

static bool tri_holds(int cond, int fact)
{
    return cond == ROUTE_ANY || (fact != ROUTE_ANY && cond == fact);
}

static bool rule_holds(const struct config_route *r, const struct route_facts *f)
{
    if (r->min_prompt_tokens && !(f->prompt_tokens >= 0 && f->prompt_tokens >= r->min_prompt_tokens))
        return false;
    if (r->max_prompt_tokens && !(f->prompt_tokens >= 0 && f->prompt_tokens <= r->max_prompt_tokens))
        return false;
    if (!tri_holds(r->tools, f->tools) || !tri_holds(r->images, f->images))
        return false;
    if (r->tier && !(f->tier_known && f->tier && strcmp(f->tier, r->tier) == 0))
        return false;
    if (r->budget_below > 0) {
        double left = r->budget_scope == ROUTE_BUDGET_TEAM ? f->budget_team : f->budget_key;
        if (!(left >= 0 && left < r->budget_below))
            return false;
    }
    if (r->hour_from >= 0 && r->hour_to >= 0) {
        if (f->hour < 0)
            return false;
        int64_t from = r->hour_from, to = r->hour_to % 24, h = f->hour;
        bool in = from < to ? (h >= from && h < to) : (h >= from || h < to);
        if (!in)
            return false;
    }
    return true;
}

const struct config_route *routing_match(const struct config *cfg, const struct route_facts *f)
{
    const struct config_route *r = cfg->routing.items;
    for (size_t i = 0; i < cfg->routing.n; i++)
        if (strcmp(r[i].model, f->model) == 0 && rule_holds(&r[i], f))
            return &r[i];
    return NULL;
}

/* ---- live requests ---- */

static const char *const route_labels[] = {"model", "rule", "to", NULL};
static struct metric_def m_routed = METRIC_DEF("agentd_routing_decisions_total",
                                               "Requests a routing rule sent to another model.", METRIC_COUNTER,
                                               route_labels);
static bool metrics_done;

static bool body_has(struct str b, const char *needle)
{
    size_t n = strlen(needle);
    return b.p && b.n >= n && memmem(b.p, b.n, needle, n) != NULL;
}

/* Whether the request offers tools: a non-empty top-level "tools" array. */
static int tools_of(struct str body)
{
    struct jval v;
    if (jscan_path(body.p, body.n, "tools", &v) != 0 || v.type != J_ARRAY)
        return ROUTE_NO;
    for (size_t i = 1; i < v.raw.n; i++) {
        char c = v.raw.p[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        return c == ']' ? ROUTE_NO : ROUTE_YES;
    }
    return ROUTE_NO;
}

/* Whether the request holds an image: an OpenAI image_url part or an Anthropic image block (one scan of the
 * bytes: an image's marker cannot appear unescaped inside a string). */
static int images_of(struct str body)
{
    return body_has(body, "\"image_url\"") || body_has(body, "\"type\":\"image\"") ||
                   body_has(body, "\"type\": \"image\"")
               ? ROUTE_YES
               : ROUTE_NO;
}

static bool rules_need_budget(const struct config *cfg, const char *model)
{
    const struct config_route *r = cfg->routing.items;
    for (size_t i = 0; i < cfg->routing.n; i++)
        if (r[i].budget_below > 0 && strcmp(r[i].model, model) == 0)
            return true;
    return false;
}

static bool has_rules(const struct config *cfg, const char *model)
{
    const struct config_route *r = cfg->routing.items;
    for (size_t i = 0; i < cfg->routing.n; i++)
        if (strcmp(r[i].model, model) == 0)
            return true;
    return false;
}

int routing_apply(struct exchange *ex)
{
    if (ex->route_decided)
        return 0;
    ex->route_decided = true;
    const struct config *cfg = ex->rq.cfg;
    if (cfg->routing.n == 0 || ex->model == NULL || !has_rules(cfg, ex->rq.model_name))
        return 0;
    struct route_facts f = {.model = ex->rq.model_name, .budget_key = -1, .budget_team = -1, .hour = -1,
                            .tier_known = true};
    f.prompt_tokens = ((int64_t)ex->rq.body.n + 3) / 4;
    f.tools = tools_of(ex->rq.body);
    f.images = images_of(ex->rq.body);
    const struct str *tier = ex->rq.header ? ex->rq.header(ex->rq.hctx, "x-agentd-tier") : NULL;
    char tbuf[65];
    if (tier && tier->n < sizeof(tbuf)) {
        memcpy(tbuf, tier->p, tier->n);
        tbuf[tier->n] = '\0';
        f.tier = tbuf;
    }
    if (rules_need_budget(cfg, f.model)) {
        f.budget_key = govern_budget_remaining(ex, false);
        f.budget_team = govern_budget_remaining(ex, true);
    }
    time_t now = (time_t)(time_wall_us() / 1000000);
    struct tm tm;
    gmtime_r(&now, &tm);
    f.hour = tm.tm_hour;
    const struct config_route *r = routing_match(cfg, &f);
    if (r == NULL)
        return 0;
    const struct model_entry *m = registry_find(ex->reg, str_from(r->to));
    if (m == NULL || m->embeddings != ex->model->embeddings)
        return -1; /* the configuration check keeps this from happening */
    snprintf(ex->routed_from, sizeof(ex->routed_from), "%s", ex->rq.model_name);
    snprintf(ex->rq.model_name, sizeof(ex->rq.model_name), "%s", r->to);
    ex->model = m;
    ex->route_rule = r->name;
    if (!metrics_done) { /* registration is idempotent; the flag only saves the lookup */
        metrics_register(&m_routed);
        metrics_done = true;
    }
    metrics_inc(&m_routed, (const char *[]){ex->routed_from, r->name, r->to});
    return 0;
}

static void plan_hook(struct exchange *ex)
{
    routing_apply(ex);
}

void routing_init(void)
{
    metrics_register(&m_routed);
    metrics_done = true;
    ex_plan_hook_set(plan_hook);
}

/* ---- what-if over the ledger ---- */

static int whatif_usage(void)
{
    fputs("usage: agentd spend whatif --rules FILE [--days N] [--data-dir DIR]\n"
          "  FILE is a configuration (its models, prices and routing: rules). For every ledger row of the last N\n"
          "  days (default 7) the rules are matched on what the ledger knows (model, prompt size, hour); a rule\n"
          "  that needs what the ledger does not keep (tools, images, tier, budget share) does not match.\n",
          stderr);
    return 2;
}

struct whatif_rule {
    const struct config_route *r;
    int64_t rows, actual_nusd, routed_nusd;
};

int routing_whatif_main(int argc, char **argv)
{
    const char *rules = NULL, *data_dir = NULL;
    long days = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rules") == 0 && i + 1 < argc)
            rules = argv[++i];
        else if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
            char *end;
            days = strtol(argv[++i], &end, 10);
            if (*end || days <= 0 || days > 3650) {
                fprintf(stderr, "agentd spend whatif: --days takes 1..3650\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc)
            data_dir = argv[++i];
        else
            return whatif_usage();
    }
    if (rules == NULL)
        return whatif_usage();
    struct config_flags fl = {.config_path = rules};
    struct buf errors = BUF_INIT(1 << 20);
    extern char **environ;
    struct config *cfg = config_load(&fl, environ, &errors);
    if (cfg == NULL) {
        fputs(errors.data ? errors.data : "invalid configuration\n", stderr);
        buf_free(&errors);
        return 2;
    }
    struct buf warn = BUF_INIT(1 << 16);
    registry_attach(cfg, environ, &warn); /* prices by model, as the daemon sees them */
    buf_free(&warn);
    buf_free(&errors);
    const struct registry *reg = registry_of(cfg);
    char path[4096];
    snprintf(path, sizeof(path), "%s/ledger.db", data_dir ? data_dir : cfg->server.data_dir);
    sqlite3 *db = NULL;
    int rc = 1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT model, input_tokens, cached_tokens, cache_write_tokens, output_tokens, "
                           "reasoning_tokens, cost_nusd, ts_ms FROM ledger_exchanges WHERE ts_ms >= ? AND "
                           "status = 200",
                           -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "agentd spend whatif: cannot read %s: %s\n", path, db ? sqlite3_errmsg(db) : "?");
        goto out;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    sqlite3_bind_int64(st, 1, now_ms - (int64_t)days * 86400 * 1000);
    size_t nr = cfg->routing.n;
    struct whatif_rule *wr = xcalloc(nr ? nr : 1, sizeof(*wr));
    const struct config_route *cr = cfg->routing.items;
    for (size_t i = 0; i < nr; i++)
        wr[i].r = &cr[i];
    int64_t rows = 0, total_nusd = 0, saved_nusd = 0, unpriced = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        const char *model = (const char *)sqlite3_column_text(st, 0);
        struct price_tokens t = {sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
                                 sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4),
                                 sqlite3_column_int64(st, 5)};
        int64_t cost = sqlite3_column_int64(st, 6);
        total_nusd += cost;
        time_t ts = (time_t)(sqlite3_column_int64(st, 7) / 1000);
        struct tm tm;
        gmtime_r(&ts, &tm);
        struct route_facts f = {.model = model ? model : "", .prompt_tokens = t.input, .tools = ROUTE_ANY,
                                .images = ROUTE_ANY, .budget_key = -1, .budget_team = -1, .hour = tm.tm_hour};
        const struct config_route *r = routing_match(cfg, &f);
        if (r == NULL)
            continue;
        const struct model_entry *m = registry_find(reg, str_from(r->to));
        const struct price *p = m && m->ndeps ? m->deps[0].price : NULL;
        if (p == NULL) {
            unpriced++;
            continue;
        }
        int64_t routed = price_cost_nusd(p, &t);
        struct whatif_rule *w = &wr[r - cr];
        w->rows++;
        w->actual_nusd += cost;
        w->routed_nusd += routed;
        saved_nusd += cost - routed;
    }
    printf("ledger rows (last %ld days, status 200): %lld, spent $%.6f\n", days, (long long)rows,
           (double)total_nusd / 1e9);
    printf("%-24s %-20s %-20s %10s %14s %14s %14s\n", "rule", "model", "to", "rows", "actual_usd", "routed_usd",
           "saved_usd");
    for (size_t i = 0; i < nr; i++)
        printf("%-24s %-20s %-20s %10lld %14.6f %14.6f %14.6f\n", wr[i].r->name, wr[i].r->model, wr[i].r->to,
               (long long)wr[i].rows, (double)wr[i].actual_nusd / 1e9, (double)wr[i].routed_nusd / 1e9,
               (double)(wr[i].actual_nusd - wr[i].routed_nusd) / 1e9);
    printf("would have saved $%.6f (%.1f%%)%s\n", (double)saved_nusd / 1e9,
           total_nusd > 0 ? 100.0 * (double)saved_nusd / (double)total_nusd : 0.0,
           unpriced ? " (rows routed to an unpriced model left out)" : "");
    xfree(wr);
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    config_unref(cfg);
    return rc;
}
