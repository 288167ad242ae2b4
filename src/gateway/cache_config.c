/* cache_config.c: the schema of `cache:` (docs/cache.md). */
#include <stddef.h>
#include <string.h>

#include "common/macros.h"
#include "config/config.h"
#include "gateway/cache.h"
#include "gateway/gw_config.h"

static const char *const scopes[] = {"key", "team", "global", NULL};
_Static_assert(ARRAY_LEN(scopes) == CACHE_SCOPES + 1, "one name per scope");
static const char *const backends[] = {"memory", "redis", "auto", NULL};
_Static_assert(ARRAY_LEN(backends) == CACHE_BACKENDS + 1, "one name per backend");

static void model_validate(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    (void)ctx;
    (void)path;
    struct config_cache_model *m = obj;
    if (where) {
        m->line = where->line;
        m->col = where->col;
    }
}

#define MOFF(f) offsetof(struct config_cache_model, f)
static const struct cfg_field model_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = MOFF(enabled), .def = "true",
     .help = "cache this model's answers (an override turns the cache on for its model even when cache.enabled "
             "is false)"},
    {.key = "ttl", .type = CFG_DURATION, .off = MOFF(ttl_ms), .min = 0, .max = 365LL * 86400 * 1000,
     .help = "how long an answer of this model is served from the cache; 0: cache.ttl"},
};
const struct cfg_schema cache_model_schema = {.name = "cache model",
                                              .item_size = sizeof(struct config_cache_model),
                                              .fields = model_fields,
                                              .nfields = ARRAY_LEN(model_fields),
                                              .validate = model_validate};

#define COFF(f) offsetof(struct config_cache, f)
static const struct cfg_field cache_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = COFF(enabled), .def = "false",
     .help = "serve identical requests from an in-process response cache (x-agentd-cache: hit|miss|bypass)"},
    {.key = "max_bytes", .type = CFG_SIZE, .off = COFF(max_bytes), .min = 4096, .max = 1LL << 40, .def = "256MiB",
     .help = "memory the cached answers may hold, all workers together; the least recently used go first"},
    {.key = "max_entry_bytes", .type = CFG_SIZE, .off = COFF(max_entry_bytes), .min = 1024, .max = 1LL << 32,
     .def = "1MiB", .help = "a larger answer is relayed but not kept"},
    {.key = "ttl", .type = CFG_DURATION, .off = COFF(ttl_ms), .min = 1, .max = 365LL * 86400 * 1000, .def = "1h",
     .help = "how long an answer is served from the cache"},
    {.key = "scope", .type = CFG_ENUM, .off = COFF(scope), .enums = scopes, .def = "key",
     .help = "whose requests share answers: each key its own (key), a team's keys (team), or everyone (global)"},
    {.key = "only_temperature_zero", .type = CFG_BOOL, .off = COFF(only_temperature_zero), .def = "false",
     .help = "cache only requests with temperature 0 (others bypass: a sampled answer is one of many)"},
    {.key = "honor_cache_control", .type = CFG_BOOL, .off = COFF(honor_cache_control), .def = "true",
     .help = "a client's Cache-Control: no-cache skips the lookup (the fresh answer is stored), no-store skips "
             "both"},
    {.key = "coalesce", .type = CFG_BOOL, .off = COFF(coalesce), .def = "true",
     .help = "identical requests that arrive while the first is in flight wait for its answer (one upstream call)"},
    {.key = "persist", .type = CFG_BOOL, .off = COFF(persist), .def = "false", .flags = CFG_RESTART,
     .help = "save the cached answers to DATA_DIR/cache.bin (mode 0600) at shutdown and load them at start"},
    {.key = "backend", .type = CFG_ENUM, .off = COFF(backend), .enums = backends, .def = "auto",
     .flags = CFG_RESTART,
     .help = "where answers are kept: this process only (memory), or also the cluster's Redis, shared by every "
             "replica (redis; needs cluster.redis_url or REDIS_URL); auto: redis when a Redis URL is set"},
    {.key = "models", .type = CFG_DICT, .off = COFF(models), .sub = &cache_model_schema,
     .help = "per public model: enabled, ttl"},
};
const struct cfg_schema cache_config_schema = {
    .name = "cache", .fields = cache_fields, .nfields = ARRAY_LEN(cache_fields)};

void cache_config_finish(struct cfg_ctx *ctx, const struct config *c)
{
    if (c->cache.backend == CACHE_BACKEND_REDIS && (c->cluster.redis_url == NULL || c->cluster.redis_url[0] == '\0'))
        cfg_error_at(ctx, NULL, "cache.backend", "redis needs cluster.redis_url (or REDIS_URL)");
    const struct config_cache_model *m = c->cache.models.items;
    const struct config_model *models = c->models.items;
    for (size_t i = 0; i < c->cache.models.n; i++) {
        bool found = false;
        for (size_t j = 0; j < c->models.n && !found; j++)
            found = models[j].name && strcmp(models[j].name, m[i].name) == 0;
        if (found)
            continue;
        struct ynode at = {.line = m[i].line, .col = m[i].col};
        const char *src = ctx->source; /* finish runs after every source: name the file the override came from */
        if (m[i].line && c->path)
            ctx->source = c->path;
        cfg_error_at(ctx, m[i].line ? &at : NULL, "cache.models", "'%s' is not a model under models:", m[i].name);
        ctx->source = src;
    }
}
