/* store_config.h: the `store:` section's schema (store_config.c) and the process-wide store built from it. Its
 * plain struct, struct config_store, is in config/config.h beside the other sections read by member name. */
#ifndef AGENTD_STORE_CONFIG_H
#define AGENTD_STORE_CONFIG_H

#include "config/config.h"
#include "config/schema.h"
#include "store/store.h"

/* Offsets relative to struct config_store. */
extern const struct cfg_schema store_config_schema;

/* The process's store (the embedded backend, in cfg->server.data_dir, bounded by cfg->store), created on the first
 * call (no I/O: the backend opens on its first operation) and kept for the life of the process: a reload that
 * changes the data dir or the bounds takes effect at restart. NULL when cfg->store.enabled is false. */
struct store *store_shared(const struct config *cfg);
/* Drops the process's store (at exit, after the workers stopped; tests). */
void store_shared_free(void);

#endif
