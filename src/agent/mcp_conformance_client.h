/* mcp_conformance_client.h: `agentd mcp-client-conformance URL`, a test tool: the client command of the official
 * MCP conformance suite's client mode, driving agentd's own MCP client (mcp_client.h) through each scenario
 * (docs/mcp.md, tests/mcp/conformance_client.test.mjs). Not for production use. */
#ifndef AGENTD_AGENT_MCP_CONFORMANCE_CLIENT_H
#define AGENTD_AGENT_MCP_CONFORMANCE_CLIENT_H

int mcp_conformance_client_main(int argc, char **argv);

#endif
