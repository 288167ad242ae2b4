/* mcp_config.h: the `mcp:` section (docs/mcp.md): upstream MCP servers federated behind /mcp, and the
 * conformance suite's fixture tools (test-only). */
#ifndef AGENTD_MCP_CONFIG_H
#define AGENTD_MCP_CONFIG_H

#include "config/schema.h"

#define MCP_MAX_UPSTREAMS 32

extern const struct cfg_schema mcp_config_schema;

#endif
