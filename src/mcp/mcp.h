/* mcp.h: agentd as an MCP server at /mcp (docs/mcp.md): Streamable HTTP, both protocol eras on the same path,
 * chosen per request by the version the client sends:
 *
 *   2025-11-25 (and 2025-06-18, 2025-03-26): `initialize` negotiates the version and mints an `Mcp-Session-Id`;
 *     every later request carries it (400 without, 404 for an unknown or ended one); DELETE ends it; GET is 405
 *     (the spec allows it: this server sends nothing unsolicited); batches only for 2025-03-26.
 *   2026-07-28: stateless; `_meta["io.modelcontextprotocol/protocolVersion"]` and `.../clientCapabilities` on every
 *     request, `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers that must match the body (-32020),
 *     `server/discover`, `resultType` on every result, `ttlMs` / `cacheScope` on lists; GET and DELETE are 405.
 *
 * Gateway (federation.h): the tools of the upstream servers in `mcp.servers:` as `<server>__<tool>`; a key's
 * mcp_tools / mcp_deny (policy/keys.h) hide tools from it (absent from tools/list, "Unknown tool" when called).
 * Every tools/call counts against the key's rpm; metrics and spans per the OpenTelemetry MCP conventions.
 *
 * Tools: every agent (input = the run's input, result = the run's final answer) and the built-in tools echo, wait
 * and code_exec, in name order. Authentication: an agentd virtual key as bearer token; 401 carries
 * `WWW-Authenticate: Bearer resource_metadata=...` pointing at /.well-known/oauth-protected-resource/mcp. */
#ifndef AGENTD_MCP_H
#define AGENTD_MCP_H

#include "net/http.h"

#define MCP_SESSIONS_MAX 4096              /* live sessions in the process; past it the idlest is ended */
#define MCP_SESSION_IDLE_MS (60 * 60 * 1000) /* a session unused this long is ended */

struct gateway_worker;
/* /mcp: POST, GET, DELETE; gw: the calling loop's gateway state (agent runs submit their steps through it). */
void mcp_http_handle(struct http_req *req, struct gateway_worker *gw);
void mcp_http_metadata(struct http_req *req); /* /.well-known/oauth-protected-resource[/mcp] */
void mcp_init(void);                          /* metrics and the rate limiter; once, before the workers */
void mcp_shutdown(void);                      /* ends every session (frees the table), and what mcp_init made */
void mcp_http_free(void);                     /* (mcp_shutdown) */
void mcp_worker_done(void);                   /* a worker loop ends: its gateway cache is freed */

/* Sessions (for tests): a new one for key_id (may be ""), 0 or -1; lookup 0 with the version, -1 when none. */
int mcp_session_new(const char *key_id, const char *version, char id_out[33]);
int mcp_session_get(const char *id, const char *key_id, char version_out[16]);
int mcp_session_end(const char *id, const char *key_id); /* 0, or -1 when none */
size_t mcp_session_count(void);

#endif
