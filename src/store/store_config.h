/* store_config.h: the `store:` section's schema (store_config.c) and the process-wide store built from it. Its
 * plain struct, struct config_store, is in config/config.h beside the other sections read by member name. */
#ifndef AGENTD_STORE_CONFIG_H
#define AGENTD_STORE_CONFIG_H

#include "config/config.h"
#include "config/schema.h"
#include "store/keys_store.h"
#include "store/ledger.h"
#include "store/store.h"

/* Offsets relative to struct config_store. */
extern const struct cfg_schema store_config_schema;

/* The process's store (the embedded backend, in cfg->server.data_dir, bounded by cfg->store), created on the first
 * call (no I/O: the backend opens on its first operation) and kept for the life of the process: a reload that
 * changes the data dir or the bounds takes effect at restart. NULL when cfg->store.enabled is false. */
struct store *store_shared(const struct config *cfg);
/* Drops the process's store (at exit, after the workers stopped; tests). */
void store_shared_free(void);

/* Which backend holds keys, the ledger, stored responses and agent runs: PostgreSQL when store.database_url (or
 * the environment's DATABASE_URL, which wins) is set, else the embedded SQLite files. Call once at start, before
 * any store opens (the daemon, `agentd keys`, `agentd spend`). With check, a URL that does not parse or that the
 * server refuses is -1 with err (a configuration error); a server that is merely down is 0, and /ready says why
 * until it answers. Applies the schema's migrations when the server answers. */
int store_backend_start(const struct config *cfg, bool check, struct buf *err);
void store_backend_stop(void);
const char *store_backend_name(void); /* "sqlite" or "postgresql" */
/* true when the backend is usable; else false and why ("database unreachable: ..."). */
bool store_backend_ready(char *why, size_t n);

const struct keys_store_ops *store_keys_ops(void);
const struct ledger_store_ops *store_ledger_ops(void);
const struct store_ops *store_records_ops(void);

#endif
