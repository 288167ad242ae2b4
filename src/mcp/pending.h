/* pending.h: requests agentd sends to an MCP client on a response stream (sampling/createMessage,
 * elicitation/create; 2025-11-25 era), waiting for the client's answer, which arrives in a later POST of the same
 * session, maybe on another worker thread. A waiter lives on its loop; the answer is handed over under a mutex and
 * a uv_async wakes the waiter's loop. At most MCP_PENDING_MAX wait at once. */
#ifndef AGENTD_MCP_PENDING_H
#define AGENTD_MCP_PENDING_H

#include <uv.h>

#define MCP_PENDING_MAX 1024
#define MCP_PENDING_ID_MAX 32

struct cJSON;
struct mcp_pending;
/* answer: the client's whole response message (result or error), owned by the callee for the call only. */
typedef void mcp_pending_fn(void *ud, const struct cJSON *answer);

/* A waiter for the answer to request id_out (made here: "agentd-<n>") in session sid. NULL when too many wait.
 * cb runs once, on loop, never from inside this call. */
struct mcp_pending *mcp_pending_new(uv_loop_t *loop, const char *sid, char id_out[MCP_PENDING_ID_MAX],
                                    mcp_pending_fn *cb, void *ud);
/* On the waiter's loop: cb is then never called. */
void mcp_pending_cancel(struct mcp_pending *p);
/* Any thread: msg is a response of session sid; 0 when a waiter took it, -1 when none waits for its id. */
int mcp_pending_answer(const char *sid, const struct cJSON *msg);

#endif
