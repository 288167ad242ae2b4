/* auth_config.h: the `auth:` section's schema (plain struct config_auth in config/config.h). */
#ifndef AGENTD_AUTH_CONFIG_H
#define AGENTD_AUTH_CONFIG_H

#include "config/schema.h"

/* Offsets relative to struct config_auth. */
extern const struct cfg_schema auth_config_schema;

struct config;
/* Resolves auth.mode auto into cfg->auth.effective (from server.listen and server.environment). */
void auth_config_finish(struct config *cfg);

#endif
