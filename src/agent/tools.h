/* tools.h: the tools an agent's model may call. Each call is one struct tool_exec, an attempt-like unit: it is
 * started on the run's loop, never blocks it, and ends exactly once through its done callback with a typed
 * outcome (the run loop adds the timeout and the span around it).
 *
 * Built-in tools:
 *   echo       {"text": ..., "delay_ms": N}  answers its arguments (after delay_ms); idempotent
 *   wait       {"ms": N}                     answers after N ms; NOT idempotent (a call in flight when agentd stops
 *                                            is reported to the model as interrupted, not run again)
 *   code_exec  {"language", "code", "stdin", "files"} runs the code (files in /work) through the sandbox service on the run's loop
 *                                            (agent/code_exec.c); not idempotent
 *   http_fetch {"url", "method", "body"}     GET or POST to a URL under one of the agent's allow_urls prefixes
 *                                            (agent/http_fetch.c); private, loopback and link-local addresses
 *                                            are refused after resolution and on every redirect */
#ifndef AGENTD_AGENT_TOOLS_H
#define AGENTD_AGENT_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"

enum tool_outcome {
    TOOL_OK,
    TOOL_ERROR,       /* the tool answered with an error (shown to the model as a tool error) */
    TOOL_TIMEOUT,     /* tool_timeout passed */
    TOOL_CANCELLED,   /* the run was cancelled or suspended */
    TOOL_INTERRUPTED, /* in flight when agentd stopped, not idempotent: not run again */
    TOOL_UNAVAILABLE, /* the tool cannot run in this daemon */
    TOOL_BAD_ARGS,    /* the arguments are not what the tool takes */
    TOOL_OUTCOMES
};
const char *tool_outcome_name(enum tool_outcome o);

struct tool_exec;
typedef void tool_done_fn(struct tool_exec *te, enum tool_outcome o, const char *text, size_t len);

struct config_agent;
struct tool_exec {
    uv_loop_t *loop;
    const struct config_agent *def; /* the agent's definition (allow_urls, limits), valid until done */
    const struct agent_tool *tool;
    const char *name;   /* the name the model called (an MCP tool's "<server>__<tool>"), valid until done */
    const char *args;   /* JSON text, valid until done */
    tool_done_fn *done; /* called exactly once, never from inside start() */
    void *ud;
    void *state;        /* the tool's */
};

struct agent_tool {
    const char *name;
    const char *description;
    const char *parameters; /* JSON Schema of the arguments (text) */
    bool idempotent;
    /* Starts the call; it ends through te->done, later, on te->loop. */
    void (*start)(struct tool_exec *te);
    /* Stops a call that has not ended: done is then never called. */
    void (*cancel)(struct tool_exec *te);
};

const struct agent_tool *agent_tool_find(const char *name);

/* code_exec (code_exec.c). */
void code_exec_start(struct tool_exec *te);
void code_exec_cancel(struct tool_exec *te);
/* http_fetch (http_fetch.c). */
void http_fetch_start(struct tool_exec *te);
void http_fetch_cancel(struct tool_exec *te);
/* The loop stops: frees its HTTP client (after every fetch on it has ended). */
void http_fetch_loop_done(void);
/* "echo, wait, code_exec, http_fetch" */
const char *agent_tool_names(void);

#endif
