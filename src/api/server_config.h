/* server_config.h: the `server:` section's schema. Its plain struct, struct config_server, is in
 * config/config.h because the HTTP server still reads it by member name. */
#ifndef AGENTD_SERVER_CONFIG_H
#define AGENTD_SERVER_CONFIG_H

#include "config/schema.h"

/* Offsets relative to struct config_server. */
extern const struct cfg_schema server_config_schema;

#endif
