/* federation.h: the MCP gateway: upstream MCP servers from `mcp.servers:` federated behind /mcp (docs/mcp.md).
 *
 * Each server's tools are listed to /mcp clients as `<server>__<tool>` (server names are [A-Za-z0-9-], so the
 * first "__" splits a name); a call to such a name is sent to that server as a tools/call of `<tool>`. Requests go
 * through the agents' MCP client (agent/mcp_client.h) on the calling worker loop, never blocking it. A server
 * that cannot be reached, answers an error or garbage, or hangs past its timeout is left out of tools/list
 * (logged) and fails only the calls to it. */
#ifndef AGENTD_MCP_FEDERATION_H
#define AGENTD_MCP_FEDERATION_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct cJSON;
struct config;
struct agent_mcp_server;

#define FED_TOOL_NAME_MAX 128 /* a tool name as /mcp lists it (the spec's SHOULD) */

/* True when s is a tool name /mcp may list: 1..128 of [A-Za-z0-9_.-]. */
bool fed_tool_name_ok(const char *s);
/* The upstream server a /mcp tool name belongs to (and *tool, the name on that server), or NULL. */
const struct agent_mcp_server *fed_server_of(const struct config *cfg, const char *name, const char **tool);
/* Appends the tools of a tools/list result to arr as /mcp tools named "<server>__<name>" (every other field kept,
 * the upstream's _meta dropped; a tool whose full name would not be a valid name is skipped); *next_cursor (heap
 * or NULL) is the result's nextCursor. The number added, or -1 when result has no tools array. Linear. */
int fed_add_tools(const struct cJSON *result, const char *server, struct cJSON *arr, char **next_cursor);

/* Called when one upstream request ends (metrics and the CLIENT span): error_type NULL on success. */
typedef void fed_observe_fn(const char *server, const char *method, const char *tool, uint64_t start_wall_us,
                            const char *error_type);

/* Every server's tools, from this loop's cache where fresh, else listed (all servers at once). cb runs once, on
 * the loop, never from inside this call, with a JSON array it owns. */
struct fed_list;
typedef void fed_list_fn(void *ud, struct cJSON *tools);
struct fed_list *fed_list_start(uv_loop_t *loop, const struct config *cfg, fed_observe_fn *observe,
                                fed_list_fn *cb, void *ud);
void fed_list_cancel(struct fed_list *l); /* cb is then never called */
/* Marks the cached tools of server (NULL: every server) stale: the next list asks again. */
void fed_forget(const char *server);
/* The loop stops: its cache is freed. */
void fed_loop_done(void);

/* tools/call of `tool` on srv with args (copied; NULL: {}) and meta (taken over, may be NULL: the request's
 * `_meta`, where the trace context goes). cb: the result (borrowed), or rpc_error with code and why, or a failure
 * (why). */
struct fed_call;
typedef void fed_call_fn(void *ud, const struct cJSON *result, bool rpc_error, int64_t code, const char *why);
struct fed_call *fed_call_start(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *tool,
                                const struct cJSON *args, struct cJSON *meta, fed_call_fn *cb, void *ud);
void fed_call_cancel(struct fed_call *c); /* cb is then never called */

#endif
