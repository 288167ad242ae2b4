/* agent_config.h: agent definitions, the `agents:` section of the configuration (docs/agents.md).
 *
 *   agents:
 *     - name: calc
 *       model: some-model            # any public model name: routing and fallbacks apply
 *       instructions: "..."          # the system prompt
 *       tools: [code_exec, echo]     # built-in tools by name (agent/tools.h)
 *       output_schema: '{"type":"object","required":["answer"]}'   # optional, JSON text
 *       mcp_servers: [{name: files, url: "http://127.0.0.1:3000/mcp", headers: ["Authorization: Bearer x"]},
 *                     {name: git, command: node, args: [git-server.mjs], env: ["TOKEN=x"]}]
 *       limits: {max_steps: 8, max_tokens: 20000, max_usd: 0.5, deadline: 2m, max_parallel_tools: 4}
 *       # code_exec also takes code_memory, code_cpu, code_pids in limits (0: the sandbox service's defaults)
 *       code_network: egress         # code_exec may go out through the sandbox's egress proxy (default: none)
 *
 * The same definitions can be added at run time through /admin/agents (api/admin_agents.c); the run loop reads a
 * struct agent_def, whichever the source. */
#ifndef AGENTD_AGENT_CONFIG_H
#define AGENTD_AGENT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "config/schema.h"

#define AGENT_NAME_MAX 64
#define AGENT_MAX_TOOLS 32

struct agent_limits {
    int64_t max_steps;          /* LLM steps */
    int64_t max_tokens;         /* input + output tokens over the run */
    double max_usd;             /* 0: none */
    int64_t deadline_ms;        /* wall clock from the run's start */
    int64_t max_parallel_tools; /* tool calls running at once */
    int64_t tool_timeout_ms;    /* one tool call */
    int64_t tool_output_bytes;  /* a tool result longer than this is truncated and marked */
    int64_t code_memory_bytes;  /* code_exec: memory of one run; 0: the sandbox service's default */
    int64_t code_cpu_ms;        /* code_exec: CPU time per process; 0: the service's default */
    int64_t code_pids;          /* code_exec: processes at once; 0: the service's default */
};

/* One item of an agent's `mcp_servers:` (agent/mcp_client.h). */
struct agent_mcp_server {
    char *name;                 /* [A-Za-z0-9-], 1..32: its tools are offered as "<name>__<tool>" */
    char *url;                  /* the Streamable HTTP endpoint (http:// or https://), or NULL for a stdio server */
    struct cfg_strlist headers; /* "Name: value" sent with every request (an Authorization header, ...) */
    char *command;              /* a stdio server: the program (run with args, env), or NULL for an HTTP server */
    struct cfg_strlist args;    /* its arguments */
    struct cfg_strlist env;     /* "NAME=value" added to its environment */
    int64_t timeout_ms;         /* one request to it */
    int64_t tools_ttl_ms;       /* how long its tools/list stays cached (per worker loop) */
};
#define AGENT_MAX_MCP_SERVERS 8

/* One item of `agents:`. */
struct config_agent {
    char *name;
    char *description;
    char *model;
    char *instructions;
    struct cfg_strlist tools;
    char *output_schema;        /* JSON Schema text, or NULL */
    char *workflow;             /* budget scope `workflow`; NULL: the agent's name */
    struct cfg_strlist allow_urls; /* http_fetch: URL prefixes the agent may fetch */
    bool allow_private_networks;   /* http_fetch: private, loopback and link-local addresses too */
    int code_network;              /* code_exec: enum sbx_net (its names are the enum's table: sbx_net_names) */
    struct cfg_list mcp_servers;   /* struct agent_mcp_server: every tool of these is offered too */
    struct agent_limits limits;
};

extern const struct cfg_schema agent_config_schema; /* items of agents: */
extern const struct cfg_schema agent_mcp_server_schema; /* items of mcp_servers: (and of mcp.servers:) */

/* The agent of that name in cfg, or NULL. */
const struct config_agent *agent_config_find(const struct config *cfg, const char *name);
/* "" when name is a valid agent name ([A-Za-z0-9_.-], 1..64), else why not. */
const char *agent_name_problem(const char *name);

/* Reads one definition from JSON (the admin API's body): 0, or -1 with a message naming the field. The result
 * is freed with agent_def_free. */
struct cJSON;
int agent_def_from_json(const struct cJSON *o, struct config_agent *out, char *msg, size_t msglen);
struct cJSON *agent_def_to_json(const struct config_agent *a);
void agent_def_free(struct config_agent *a);
void agent_def_copy(struct config_agent *dst, const struct config_agent *src);

#endif
