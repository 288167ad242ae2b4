/* fixtures.h: the tools, resources and prompts the MCP conformance suite (@modelcontextprotocol/conformance)
 * expects of a server under test (test_simple_text, test://static-text, test_simple_prompt, ...). Served only when
 * `mcp.conformance_fixtures: true` (tests/mcp/conformance.yaml), never by default. Pure functions over cJSON. */
#ifndef AGENTD_MCP_FIXTURES_H
#define AGENTD_MCP_FIXTURES_H

#include <stdbool.h>

struct cJSON;

struct cJSON *fixtures_tools_json(void); /* MCP tool objects (caller owns) */
bool fixtures_has_tool(const char *name);
/* The CallToolResult of a fixture tool. notes (a JSON array): the notifications to send before the result
 * ({"method","params"} objects: log messages, and progress when progress_token is a string or number). */
struct cJSON *fixtures_tool_result(const char *name, const struct cJSON *progress_token, struct cJSON *notes);

struct cJSON *fixtures_resources_json(void);          /* resources/list items */
struct cJSON *fixtures_resource_templates_json(void); /* resources/templates/list items */
/* resources/read: the contents array for uri, or NULL when no fixture has it. */
struct cJSON *fixtures_resource_read(const char *uri);

struct cJSON *fixtures_prompts_json(void); /* prompts/list items */
/* prompts/get: the result, or NULL with *why (static text: an unknown prompt, a missing argument). */
struct cJSON *fixtures_prompt_get(const char *name, const struct cJSON *args, const char **why);

/* The fixtures that ask the client (2025-11-25 era, on the response stream): test_sampling, test_elicitation,
 * test_elicitation_sep1034_defaults, test_elicitation_sep1330_enums. The request to send ({"method","params"}),
 * or NULL when name is not one of them; then the result made of the client's answer (its response message). */
struct cJSON *fixtures_client_request(const char *name, const struct cJSON *args);
struct cJSON *fixtures_client_result(const char *name, const struct cJSON *answer);

/* The MRTR fixtures (2026-07-28 `input_required` results: test_input_required_result_*, and the prompt
 * test_input_required_result_prompt). Stateless: the round a call is in travels in an HMAC-signed requestState. */
bool fixtures_is_mrtr(const char *name);
/* The result for this round: an InputRequiredResult (resultType "input_required", inputRequests, requestState),
 * or the complete result; NULL with *why (static text) when inputResponses or requestState are refused (tampered,
 * malformed): a JSON-RPC -32602. params: the request's params; caps: its client capabilities (or NULL). */
struct cJSON *fixtures_mrtr(const char *name, const struct cJSON *params, const struct cJSON *caps, const char **why);

#endif
