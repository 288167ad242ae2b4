/* sandbox_config.h: the `sandbox:` section's schema (its plain struct, struct config_sandbox, is in
 * config/config.h beside the other sections), and the service options it stands for. */
#ifndef AGENTD_SANDBOX_CONFIG_H
#define AGENTD_SANDBOX_CONFIG_H

#include "config/config.h"
#include "config/schema.h"
#include "sandbox/service.h"

/* Offsets relative to struct config_sandbox. */
extern const struct cfg_schema sandbox_config_schema;

/* The service options of cfg->sandbox (strings point into cfg; sbx_service_start copies them). loops: the
 * number of worker loops. */
void sandbox_config_service_opts(const struct config *cfg, unsigned loops, struct sbx_service_opts *o);

#endif
