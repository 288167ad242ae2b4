/* mcp_client.h: tools from MCP servers, over Streamable HTTP (the 2026-07-28 stateless era, or the 2025-03-26 ..
 * 2025-11-25 session era) or stdio (a process agentd starts: mcp_stdio.h), for agents.
 *
 * An agent names its servers in `mcp_servers:` (agent_config.h); each server's tools are offered to the model as
 * `<server>__<tool>` (OpenAI function names allow neither '.' nor '/'). On a worker loop, never blocking it:
 *
 *   POST server/discover            -> supportedVersions names 2026-07-28: the stateless era, else (any error, any
 *                                      other answer) the session era; remembered per loop and server
 *   stateless: every request carries _meta["io.modelcontextprotocol/protocolVersion"] = "2026-07-28" and
 *   ["io.modelcontextprotocol/clientCapabilities"], and the MCP-Protocol-Version, Mcp-Method and (tools/call,
 *   prompts/get, resources/read) Mcp-Name headers; no session, no initialize; a result whose resultType is not
 *   "complete" is an error; a tools/list ttlMs shorter than tools_ttl wins; a 400 -32022 negotiates again once.
 *   session era:
 *   POST initialize                 -> the result, and the Mcp-Session-Id response header (if the server has one)
 *   POST notifications/initialized  -> 202
 *   POST tools/list (+ nextCursor)  -> cached per loop and URL for the server's tools_ttl
 *   POST tools/call                 -> the content given to the model; isError is a tool error
 *
 * Every request after initialize carries Mcp-Session-Id and MCP-Protocol-Version; a 404 on a session drops it and
 * the request is made again once on a new session (the spec's rule). A response is either one JSON object
 * (application/json) or an SSE stream (text/event-stream) whose events are JSON-RPC messages: the one whose id is
 * the request's answers it, the rest (notifications, priming events) are skipped. A server's errors (a JSON-RPC
 * error, isError, an HTTP failure) reach the model as tool errors, never as run failures.
 *
 * A stdio server (`command:`) takes the same requests, one JSON-RPC message per line, through mcp_stdio.h.
 *
 * Not done: resuming a broken SSE stream with Last-Event-ID, and
 * answering server-to-client requests (sampling, elicitation: skipped). */
#ifndef AGENTD_AGENT_MCP_CLIENT_H
#define AGENTD_AGENT_MCP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "agent/mcp_version.h"
#include "agent/tools.h"
#include "common/buf.h"
#include "net/sse.h"

struct cJSON;
struct cfg_list;
struct agent_mcp_server;

#define MCP_TOOL_NAME_MAX 64        /* "<server>__<tool>" as the model sees it */

/* ---- the response parser (pure; fuzzed by tests/fuzz/fuzz_mcp_response.c) ---- */

struct mcp_resp {
    bool sse;
    int64_t want_id;
    size_t max, seen;
    struct sse_parser sp;
    struct buf body;       /* application/json: the body */
    int state;             /* 0: not yet, 1: answered, -1: failed */
    struct cJSON *result;  /* state 1 and no rpc error: the result object (owned) */
    bool rpc_error;        /* state 1: the server answered a JSON-RPC error */
    int64_t rpc_code;
    char message[256];     /* rpc_error: the server's message; state -1: what was wrong */
};

void mcp_resp_init(struct mcp_resp *p, bool sse, int64_t want_id, size_t max);
/* 1 when the response has arrived (stop reading), 0 to go on, -1 on a malformed or oversize body. */
int mcp_resp_feed(struct mcp_resp *p, const char *data, size_t len);
/* End of the body: 1 when answered, -1 (with message) when not. */
int mcp_resp_finish(struct mcp_resp *p);
void mcp_resp_free(struct mcp_resp *p);

/* Appends the tools of a tools/list result to arr as OpenAI function tools named "<server>__<name>" (skipping
 * those whose name would be too long or has other characters than [A-Za-z0-9_-]); *next_cursor (heap, or NULL)
 * is the result's nextCursor. Returns the number added, or -1 when result has no tools array. */
int mcp_tools_to_openai(const struct cJSON *result, const char *server, struct cJSON *arr, char **next_cursor);
/* The text of a tools/call result for the model: text blocks as they are, other blocks described
 * ("[image image/png, 1234 bytes of base64]"), structuredContent when there is no content. TOOL_ERROR when
 * isError is true (or the result is not a CallToolResult), else TOOL_OK. */
enum tool_outcome mcp_call_text(const struct cJSON *result, struct buf *out);

/* ---- the tools of an agent's servers, and calls ---- */

/* The tool `name` of the agent's servers ("<server>__<tool>"): the server, or NULL. */
const struct agent_mcp_server *mcp_server_of(const struct cfg_list *servers, const char *name);
/* The agent_tool that runs every MCP tool (te->name says which). */
extern const struct agent_tool mcp_agent_tool;

struct mcp_list;
/* The OpenAI tools of every server (arr: a JSON array, owned by the caller), from the loop's cache or fetched.
 * A server that cannot be reached adds nothing (logged; its tools are simply not offered). cb runs once, on the
 * loop, never from inside this call. */
typedef void mcp_list_fn(void *ud, struct cJSON *arr);
struct mcp_list *mcp_list_tools(uv_loop_t *loop, const struct cfg_list *servers, mcp_list_fn *cb, void *ud);
/* cb is then never called. */
void mcp_list_cancel(struct mcp_list *l);

/* ---- one request to one server, for callers other than the run loop (the MCP gateway) ---- */

/* method(params) to srv (HTTP in either era, or stdio), with the era's handshake done as needed (and remembered per
 * loop). params is owned by the request; srv must stay valid until the callback or the cancel. cb runs exactly
 * once, on the loop, never from inside this call: ok 1 with result (borrowed: valid during cb, NULL when
 * rpc_error) or rpc_error (code, message); ok 0 when there is no answer (message says why). */
struct mcp_request;
typedef void mcp_request_fn(void *ud, int ok, const struct cJSON *result, bool rpc_error, int64_t code,
                            const char *message);
struct mcp_request *mcp_request_start(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *method,
                                      struct cJSON *params, mcp_request_fn *cb, void *ud);
/* cb is then never called; the server is told (notifications/cancelled) when the era has a way to. */
void mcp_request_cancel(struct mcp_request *r);

/* The loop stops: sessions and the HTTP client are freed (after every call on it has ended or been cancelled). */
void mcp_loop_done(void);

#endif
