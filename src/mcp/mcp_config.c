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
    const struct config_mcp_jwt *j = &m->jwt;
    bool file = j->jwks_file && j->jwks_file[0], url = j->jwks_url && j->jwks_url[0];
    if (j->issuer && j->issuer[0] && file == url)
        cfg_error_at(ctx, where, path, "mcp.jwt.issuer needs exactly one of mcp.jwt.jwks_file and mcp.jwt.jwks_url");
    if (url && strncmp(j->jwks_url, "https://", 8) != 0 && strncmp(j->jwks_url, "http://", 7) != 0)
        cfg_error_at(ctx, where, path, "mcp.jwt.jwks_url must be an http(s) URL");
}

#define JOFF(f) offsetof(struct config_mcp_jwt, f)
static const struct cfg_field jwt_fields[] = {
    {.key = "issuer", .type = CFG_STRING, .off = JOFF(issuer), .flags = CFG_RESTART,
     .help = "accept JWT access tokens from this issuer (`iss`) as an alternative to virtual keys; unset: none"},
    {.key = "jwks_file", .type = CFG_STRING, .off = JOFF(jwks_file), .flags = CFG_RESTART,
     .help = "the issuer's signing keys, a JWKS document in a file (or jwks_url)"},
    {.key = "jwks_url", .type = CFG_STRING, .off = JOFF(jwks_url), .flags = CFG_RESTART,
     .help = "the issuer's signing keys, a JWKS document fetched by a thread of its own (or jwks_file)"},
    {.key = "audience", .type = CFG_STRING, .off = JOFF(audience),
     .help = "the `aud` a token must carry; unset: the resource URL of /.well-known/oauth-protected-resource"},
    {.key = "team_claim", .type = CFG_STRING, .off = JOFF(team_claim),
     .help = "the claim whose string value is the caller's team (`sub` is always the user); unset: no team"},
    {.key = "leeway", .type = CFG_DURATION, .off = JOFF(leeway_ms), .def = "60s", .min = 0, .max = 600000,
     .help = "clock skew allowed when checking exp and nbf"},
    {.key = "jwks_refresh", .type = CFG_DURATION, .off = JOFF(jwks_refresh_ms), .def = "5m", .min = 1000, .max = 86400000,
     .flags = CFG_RESTART, .help = "how often the JWKS is reloaded"},
    {.key = "jwks_min_refresh", .type = CFG_DURATION, .off = JOFF(jwks_min_refresh_ms), .def = "10s", .min = 100, .max = 3600000,
     .flags = CFG_RESTART, .help = "a token with an unknown kid reloads the JWKS at most this often"},
};
static const struct cfg_schema jwt_schema = {.name = "jwt", .fields = jwt_fields, .nfields = ARRAY_LEN(jwt_fields)};

#define OFF(f) offsetof(struct config_mcp, f)
static const struct cfg_field fields[] = {
    {.key = "servers", .type = CFG_LIST, .off = OFF(servers), .sub = &agent_mcp_server_schema,
     .help = "upstream MCP servers federated behind /mcp; their tools are listed as <name>__<tool>"},
    {.key = "conformance_fixtures", .type = CFG_BOOL, .off = OFF(conformance_fixtures), .def = "false",
     .flags = CFG_NO_ENV, .help = "serve the MCP conformance suite's fixture tools, resources and prompts (tests only; the file only)"},
    {.key = "jwt", .type = CFG_MAP, .off = OFF(jwt), .sub = &jwt_schema,
     .help = "JWT access tokens on /mcp (docs/mcp.md)"},
};

const struct cfg_schema mcp_config_schema = {
    .name = "mcp", .fields = fields, .nfields = ARRAY_LEN(fields), .validate = validate};
