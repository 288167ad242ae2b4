/* mcp_stdio.h: MCP servers over stdio, for the MCP client (mcp_client.h). A server configured with `command`
 * (and `args`, `env`) is started by agentd, once per worker loop, the first time one of its tools is needed:
 *
 *   - uv_spawn with three pipes; the child's environment is PATH, HOME, LANG, LC_ALL, TERM, USER, LOGNAME,
 *     SHELL, TMPDIR (those the daemon has) plus the server's `env`;
 *   - messages are JSON-RPC, one per line (UTF-8, '\n'-terminated, no embedded newline), both ways;
 *   - initialize -> the result (protocolVersion one agentd speaks) -> notifications/initialized, then requests;
 *     requests made meanwhile wait (each with its own timeout);
 *   - every request has the server's `timeout`; a request that times out or is cancelled is followed by
 *     notifications/cancelled with its id; a late answer is dropped;
 *   - the server's own requests are answered (ping: {}, anything else: -32601), its notifications skipped;
 *   - stderr goes to agentd's log, a line at a time (at most 512 bytes of a line, 20 lines per 10 s per server,
 *     then a count of those left out);
 *   - when the process exits, the requests it had are answered with an error, and it is started again after a
 *     backoff (250 ms doubling to 30 s; back to 250 ms after 30 s of life);
 *   - at shutdown (mcp_stdio_loop_done) its stdin is closed and it gets SIGTERM, SIGKILL 2 s later if it is
 *     still there.
 * The process must ignore SIGPIPE (agentd does): a write to a server that has just exited is then an error. */
#ifndef AGENTD_AGENT_MCP_STDIO_H
#define AGENTD_AGENT_MCP_STDIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"

struct cJSON;
struct agent_mcp_server;

/* ---- the line framer (pure; fuzzed by tests/fuzz/fuzz_mcp_stdio.c) ---- */

/* Splits a byte stream into lines. A line longer than max is cut: its first max bytes are given with truncated
 * set, the rest up to its '\n' is skipped. A trailing '\r' is removed; empty lines are not given. Linear in the
 * input, whatever the fragmentation. */
struct mcp_lines {
    struct buf line;
    size_t max;
    bool skipping; /* inside the tail of a line that was cut */
};
/* cb returns 0 to go on, non-zero to stop (that value is returned by mcp_lines_feed). */
typedef int mcp_line_fn(void *ud, const char *line, size_t len, bool truncated);
void mcp_lines_init(struct mcp_lines *l, size_t max);
int mcp_lines_feed(struct mcp_lines *l, const char *data, size_t len, mcp_line_fn *cb, void *ud);
void mcp_lines_free(struct mcp_lines *l);

/* ---- requests ---- */

/* The answer to a request: ok 1 with either result or rpc_error (code, message); ok 0 when there is no answer
 * (message says why: timeout, exited, cannot start). result stays the callee's unless the callback takes it
 * (sets it to NULL). */
struct mcp_answer {
    int ok;
    struct cJSON *result;
    bool rpc_error;
    int64_t code;
    const char *message;
};
typedef void mcp_stdio_fn(void *ud, struct mcp_answer *a);

struct mcp_stdio_req;
/* Sends method(params) to the server's process on this loop (started if need be). params is owned by the
 * request. cb runs exactly once, on the loop, never from inside this call, unless the request is cancelled. */
struct mcp_stdio_req *mcp_stdio_request(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *method,
                                        struct cJSON *params, mcp_stdio_fn *cb, void *ud);
/* cb is then never called; a request already sent is followed by notifications/cancelled. */
void mcp_stdio_cancel(struct mcp_stdio_req *r);
/* The loop stops: every process is stopped (above) and freed once its handles are closed. */
void mcp_stdio_loop_done(void);

#endif
