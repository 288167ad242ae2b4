/* mcp_config.c: the schema of `mcp:` (mcp_config.h). */
#include "mcp/mcp_config.h"

#include <stddef.h>
#include <string.h>

#include "agent/agent_config.h"
#include "config/config.h"

static void validate(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    const struct config_mcp *m = obj;
    const struct agent_mcp_server *s = m->servers.items;
    if (m->servers.n > MCP_MAX_UPSTREAMS)
        cfg_error_at(ctx, where, path, "at most %d upstream MCP servers", MCP_MAX_UPSTREAMS);
    for (size_t i = 0; i < m->servers.n; i++)
        for (size_t j = 0; j < i; j++)
            if (s[i].name && s[j].name && strcmp(s[i].name, s[j].name) == 0)
                cfg_error_at(ctx, where, path, "upstream MCP server name '%s' appears twice", s[i].name);
}

#define OFF(f) offsetof(struct config_mcp, f)
static const struct cfg_field fields[] = {
    {.key = "servers", .type = CFG_LIST, .off = OFF(servers), .sub = &agent_mcp_server_schema,
     .help = "upstream MCP servers federated behind /mcp; their tools are listed as <name>__<tool>"},
    {.key = "conformance_fixtures", .type = CFG_BOOL, .off = OFF(conformance_fixtures), .def = "false",
     .flags = CFG_NO_ENV, .help = "serve the MCP conformance suite's fixture tools, resources and prompts (tests only; the file only)"},
};

const struct cfg_schema mcp_config_schema = {
    .name = "mcp", .fields = fields, .nfields = ARRAY_LEN(fields), .validate = validate};
