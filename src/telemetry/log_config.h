/* log_config.h: the `log:` section's schema. Its plain struct, struct config_log, is in config/config.h because
 * the gateway and the HTTP handlers read it by member name (`cfg->log.llm`, `cfg->log.access`). */
#ifndef AGENTD_LOG_CONFIG_H
#define AGENTD_LOG_CONFIG_H

#include "config/schema.h"

/* Offsets relative to struct config_log. */
extern const struct cfg_schema log_config_schema;

#endif
