/* jsonrpc.h: JSON-RPC 2.0 message classification for MCP (docs/mcp.md). Pure functions over cJSON, no I/O: the
 * /mcp handler (mcp_http.c) and the fuzz target share them.
 *
 * A message is a request (method + id), a notification (method, no id) or a response (result or error + id).
 * ids are strings or integers (never null, never fractional); params, when present, is an object (MCP uses named
 * parameters only). Anything else is invalid: the error code and message say why, nothing is executed. */
#ifndef AGENTD_MCP_JSONRPC_H
#define AGENTD_MCP_JSONRPC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

enum {
    JR_PARSE_ERROR = -32700,
    JR_INVALID_REQUEST = -32600,
    JR_METHOD_NOT_FOUND = -32601,
    JR_INVALID_PARAMS = -32602,
    JR_INTERNAL_ERROR = -32603,
    MCP_SESSION_NOT_FOUND = -32001,   /* the TypeScript SDK's code for an unknown session */
    MCP_HEADER_MISMATCH = -32020,     /* 2026-07-28: Mcp-Method / Mcp-Name / MCP-Protocol-Version vs the body */
    MCP_MISSING_CAPABILITY = -32021,  /* 2026-07-28 */
    MCP_UNSUPPORTED_VERSION = -32022, /* 2026-07-28 */
    MCP_RATE_LIMITED = -32029,        /* agentd: a tools/call over the key's (or its user's, team's) rpm */
};

#define JR_MESSAGE_MAX (4u << 20) /* bytes of one POST body */
#define JR_BATCH_MAX 64           /* messages in one batch (2025-03-26 only) */
#define JR_METHOD_MAX 128         /* bytes of a method name */

enum jr_kind { JR_REQUEST, JR_NOTIFICATION, JR_RESPONSE, JR_INVALID };

struct jr_msg {
    enum jr_kind kind;
    const cJSON *id;     /* request / response (and an invalid message whose id could be read); borrowed */
    const char *method;  /* request / notification */
    const cJSON *params; /* object or NULL */
    int code;            /* JR_INVALID: the error */
    const char *why;     /* JR_INVALID: the message (static text) */
};

/* Parses a body: the root (free with cJSON_Delete) or NULL (JR_PARSE_ERROR). Bodies past JR_MESSAGE_MAX are
 * refused too. */
cJSON *jr_parse(const char *body, size_t len);
/* Classifies one message of a body (an element of a batch, or the body). */
void jr_classify(const cJSON *item, struct jr_msg *out);
/* params._meta[key] (NULL when absent). */
const cJSON *jr_meta(const struct jr_msg *m, const char *key);

/* Appends {"jsonrpc":"2.0","id":...,"error":{"code","message"[,"data"]}} (id NULL: "id":null). data is copied. */
void jr_error_json(struct buf *b, const cJSON *id, int code, const char *message, const cJSON *data);
/* Appends {"jsonrpc":"2.0","id":...,"result":<result>} (result printed). */
void jr_result_json(struct buf *b, const cJSON *id, const cJSON *result);

#endif
