/* mcp_version.h: the MCP protocol versions agentd's client speaks (mcp_client.h, mcp_stdio.h). */
#ifndef AGENTD_AGENT_MCP_VERSION_H
#define AGENTD_AGENT_MCP_VERSION_H

#include <stdbool.h>
#include <string.h>

#define MCP_PROTOCOL_VERSION "2025-11-25" /* asked for in initialize (the session era) */
#define MCP_STATELESS_VERSION "2026-07-28"  /* the stateless era: server/discover, _meta on every request */
#define MCP_MAX_RESPONSE (8u << 20)       /* bytes of one response (JSON body, SSE stream, or stdio line) */

/* True for a protocol version of the session era agentd speaks (2025-03-26, 2025-06-18, 2025-11-25). */
static inline bool mcp_version_known(const char *v)
{
    return strcmp(v, "2025-11-25") == 0 || strcmp(v, "2025-06-18") == 0 || strcmp(v, "2025-03-26") == 0;
}

#endif
