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
 * Every request says who the client is (initialize's clientInfo; the stateless era's _meta
 * ["io.modelcontextprotocol/clientInfo"]) and declares one capability, elicitation (form): agentd has no user to
 * ask, so an elicitation is accepted with the server's own defaults when its schema gives one for every field, and
 * declined otherwise (mcp_elicit_answer). Server-to-client requests arrive two ways:
 *   session era: as requests on a response's SSE stream (elicitation/create, roots/list, ping): each is answered
 *   by a POST of its response in the same session, and the stream goes on to the result;
 *   stateless era: as an input_required result (MRTR): the client fulfils its inputRequests, then sends the same
 *   request again (a new id) with inputResponses and the server's requestState echoed verbatim (none when the
 *   server gave none), for at most MCP_MAX_INPUT_ROUNDS rounds. A result without resultType is complete.
 * A server/discover refused with 400 -32022 whose data.supported names 2026-07-28 is asked once more; one naming
 * only session-era versions goes to initialize.
 *
 * Resuming (SEP-1699, session era): an SSE response stream that ends before the answer, after an event that had
 * an id, is resumed by a GET with Last-Event-ID (and the session's headers) after the server's last `retry` delay
 * (default 1 s, at most 30 s), at most MCP_MAX_RESUMES times; the answer may arrive on that stream.
 *
 * Tool parameters as headers (SEP-2243, stateless era): a tools/list tool whose inputSchema property carries
 * `x-mcp-header` has that argument mirrored into `Mcp-Param-<header>` on each tools/call of it (strings as they
 * are unless they need `=?base64?...?=`: not printable ASCII, leading or trailing whitespace, or empty; integers
 * in decimal; booleans true/false; null or absent: no header). A tool whose annotation is invalid (empty, not a
 * token, a duplicate ignoring case, on a type other than string/integer/boolean) is dropped from the list: it is
 * never offered nor called. Schemas are otherwise passed on untouched ($ref never dereferenced).
 *
 * The session's GET stream (opened once initialized; a 405 means the server has none) carries the server's
 * requests and notifications: notifications/tools/list_changed drops the cached tools (mcp_tools_generation tells
 * other caches). It reconnects from its last event id after the server's retry, 3 times in a row without an event
 * at most.
 *
 * Not done: sampling (not declared), OAuth, list_changed in the stateless era (no subscriptions/listen). */
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
#define MCP_MAX_INPUT_ROUNDS 8      /* input_required rounds of one request */
#define MCP_MAX_RESUMES 3           /* GET resumptions of one request's broken SSE stream */
#define MCP_MAX_RESUME_DELAY_MS 30000

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
    char last_event_id[256]; /* SSE: the id of the last event that had one ("" none; a longer id is not kept) */
    long retry_ms;         /* SSE: the last `retry` the server gave, -1 none */
    bool unanswered;       /* SSE: the stream ended cleanly without the answer (resumable with last_event_id) */
    /* a request (method and a number or string id) or notification (method, no id) of the server's on the
     * stream: msg is borrowed */
    void (*on_request)(void *ud, const struct cJSON *msg);
    void *req_ud;
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

/* ---- what the client answers a server (pure; fuzzed by tests/fuzz/fuzz_mcp_client_answers.c) ---- */

/* The ElicitResult for elicitation/create params: accept with content = every property's default when
 * requestedSchema has at least one property and each has a default, else {"action":"decline"}. */
struct cJSON *mcp_elicit_answer(const struct cJSON *params);
/* The result for a server's request (elicitation/create, roots/list: no roots, ping), or NULL for a method the
 * client does not serve (a -32601 answer). */
struct cJSON *mcp_client_answer(const char *method, const struct cJSON *params);
/* The inputResponses object for an input_required result's inputRequests ({"<key>":{"method","params"}}), or
 * NULL (why says) when it has none, more than 16, or one that is not a request object. */
struct cJSON *mcp_input_responses(const struct cJSON *result, char *why, size_t whylen);
/* A 400 body of a refused version (-32022): 1 when data.supported names MCP_STATELESS_VERSION, 2 when it names
 * only session-era versions agentd speaks (mcp_version_known), 0 otherwise (not that error, or nothing usable). */
int mcp_unsupported_pick(const char *body, size_t len);
/* A tool's x-mcp-header annotations: -1 when one is invalid (the tool is to be dropped), 0 when there are none
 * (*map NULL), else their number with *map = {"<argument>":"<header>"} (owned by the caller). */
int mcp_tool_param_headers(const struct cJSON *tool, struct cJSON **map);
/* The Mcp-Param-* value of an argument, appended to out: false when no header is sent (null, absent, an object or
 * an array). */
bool mcp_param_header_value(const struct cJSON *v, struct buf *out);

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
/* How many times srv announced a changed tool list (notifications/tools/list_changed, session era) on this loop: a
 * cache of its tools made at another value is stale. */
uint64_t mcp_tools_generation(const struct agent_mcp_server *srv);

/* The loop stops: sessions and the HTTP client are freed (after every call on it has ended or been cancelled). */
void mcp_loop_done(void);

#endif
