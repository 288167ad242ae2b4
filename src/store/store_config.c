/* store_config.c: the `store:` section (what agentd keeps in its data dir, and how much) and the process's store. */
#include "store/store_config.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>

#include "common/macros.h"
#include "store/db_pg.h"

#define STOFF(f) offsetof(struct config_store, f)
static const struct cfg_field store_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = STOFF(enabled), .def = "true", .flags = CFG_RESTART,
     .help = "keep stored responses (previous_response_id, GET /v1/responses/{id}) and message threads in the "
             "embedded store under server.data_dir; false: requests that need it get 400"},
    {.key = "responses_max_bytes", .type = CFG_SIZE, .off = STOFF(responses_max_bytes), .min = 1 << 16,
     .max = 1LL << 40, .def = "256MiB", .flags = CFG_RESTART,
     .help = "bytes of stored responses and threads kept; past it the oldest are evicted first"},
    {.key = "responses_max_age", .type = CFG_DURATION, .off = STOFF(responses_max_age_ms), .min = 1000,
     .max = 31536000000LL, .def = "720h", .flags = CFG_RESTART,
     .help = "how long a stored response or thread is kept (OpenAI keeps responses 30 days)"},
    {.key = "database_url", .type = CFG_STRING, .off = STOFF(database_url), .max = 4096, .def = "",
     .env_alias = "DATABASE_URL", .flags = CFG_RESTART | CFG_SECRET,
     .help = "PostgreSQL connection URL (postgresql://user:pass@host:5432/db?sslmode=require): keys, the spend "
             "ledger, stored responses and agent runs live there, shared by every replica (cluster mode); the "
             "environment's DATABASE_URL wins over this key. Empty: the embedded SQLite files in server.data_dir"},
};

const struct cfg_schema store_config_schema = {
    .name = "store", .fields = store_fields, .nfields = ARRAY_LEN(store_fields)};

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static struct store *shared;

struct store *store_shared(const struct config *cfg)
{
    if (cfg == NULL || !cfg->store.enabled)
        return NULL;
    pthread_mutex_lock(&shared_mu);
    if (shared == NULL) {
        struct store_options o = {.dir = cfg->server.data_dir,
                                  .max_bytes = cfg->store.responses_max_bytes,
                                  .max_age_ms = cfg->store.responses_max_age_ms};
        shared = store_new(store_records_ops(), &o);
    }
    struct store *s = shared;
    pthread_mutex_unlock(&shared_mu);
    return s;
}

void store_shared_free(void)
{
    pthread_mutex_lock(&shared_mu);
    store_free(shared);
    shared = NULL;
    pthread_mutex_unlock(&shared_mu);
}

/* ---------- the backend ---------- */

int store_backend_start(const struct config *cfg, bool check, struct buf *err)
{
    return db_pg_configure(cfg ? cfg->store.database_url : NULL, check, err);
}

void store_backend_stop(void)
{
    db_pg_reset();
}

const char *store_backend_name(void)
{
    return db_pg_enabled() ? "postgresql" : "sqlite";
}

bool store_backend_ready(char *why, size_t n)
{
    if (!db_pg_enabled())
        return true;
    char r[320];
    if (db_pg_healthy(r, sizeof(r)))
        return true;
    snprintf(why, n, "database unreachable: %s", r);
    return false;
}

const struct keys_store_ops *store_keys_ops(void)
{
    return db_pg_enabled() ? &keys_store_pg : &keys_store_sqlite;
}

const struct ledger_store_ops *store_ledger_ops(void)
{
    return db_pg_enabled() ? &ledger_pg_ops : &ledger_sqlite_ops;
}

const struct store_ops *store_records_ops(void)
{
    return db_pg_enabled() ? &store_pg_ops : &store_sqlite_ops;
}
