/* agent_config.c: the schema of `agents:` (agent_config.h) and the JSON form the admin API takes. */
#include "agent/agent_config.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "agent/tools.h"
#include "common/alloc.h"
#include "common/macros.h"
#include "sandbox/sbx_spec.h"

const char *agent_name_problem(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AGENT_NAME_MAX)
        return "an agent name is 1 to 64 characters";
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return "an agent name has only letters, digits, '_', '-' and '.'";
    }
    return "";
}

/* "" when the output schema is usable (a JSON object), else why not. */
static const char *schema_problem(const char *text)
{
    if (text == NULL || text[0] == '\0')
        return "";
    cJSON *s = cJSON_Parse(text);
    bool ok = cJSON_IsObject(s);
    cJSON_Delete(s);
    return ok ? "" : "output_schema must be a JSON Schema object (JSON text)";
}

static void validate_agent(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    struct config_agent *a = obj;
    const char *why = agent_name_problem(a->name);
    if (why[0])
        cfg_error_at(ctx, where, path, "%s", why);
    if (a->tools.n > AGENT_MAX_TOOLS)
        cfg_error_at(ctx, where, path, "at most %d tools per agent", AGENT_MAX_TOOLS);
    for (size_t i = 0; i < a->tools.n; i++)
        if (agent_tool_find(a->tools.v[i]) == NULL)
            cfg_error_at(ctx, ynode_map_get(where, "tools") ? ynode_map_get(where, "tools") : where, path,
                         "unknown tool '%s' (built-in tools: %s)", a->tools.v[i], agent_tool_names());
    if (a->mcp_servers.n > AGENT_MAX_MCP_SERVERS)
        cfg_error_at(ctx, where, path, "at most %d MCP servers per agent", AGENT_MAX_MCP_SERVERS);
    const struct agent_mcp_server *ms = a->mcp_servers.items;
    for (size_t i = 0; i < a->mcp_servers.n; i++)
        for (size_t j = 0; j < i; j++)
            if (ms[i].name && ms[j].name && strcmp(ms[i].name, ms[j].name) == 0)
                cfg_error_at(ctx, where, path, "two MCP servers named '%s'", ms[i].name);
    why = schema_problem(a->output_schema);
    if (why[0])
        cfg_error_at(ctx, ynode_map_get(where, "output_schema") ? ynode_map_get(where, "output_schema") : where,
                     path, "%s", why);
}

#define LOFF(f) offsetof(struct agent_limits, f)
static const struct cfg_field limit_fields[] = {
    {.key = "max_steps", .type = CFG_INT, .off = LOFF(max_steps), .min = 1, .max = 1000, .def = "16",
     .flags = CFG_NO_ENV, .help = "LLM steps a run may take"},
    {.key = "max_tokens", .type = CFG_INT, .off = LOFF(max_tokens), .min = 0, .max = 1000000000LL, .def = "0",
     .flags = CFG_NO_ENV, .help = "input + output tokens over the run; 0 = none"},
    {.key = "max_usd", .type = CFG_DOUBLE, .off = LOFF(max_usd), .dmin = 0, .dmax = 1e6, .flags = CFG_NO_ENV,
     .help = "USD over the run; 0 = none"},
    {.key = "deadline", .type = CFG_DURATION, .off = LOFF(deadline_ms), .min = 0, .max = 86400000LL, .def = "10m",
     .flags = CFG_NO_ENV, .help = "wall-clock time from the run's start; 0 = none"},
    {.key = "max_parallel_tools", .type = CFG_INT, .off = LOFF(max_parallel_tools), .min = 1, .max = 64,
     .def = "4", .flags = CFG_NO_ENV, .help = "tool calls of one step running at once"},
    {.key = "tool_timeout", .type = CFG_DURATION, .off = LOFF(tool_timeout_ms), .min = 1, .max = 3600000LL,
     .def = "60s", .flags = CFG_NO_ENV, .help = "one tool call; past it the model is told the tool timed out"},
    {.key = "tool_output_bytes", .type = CFG_SIZE, .off = LOFF(tool_output_bytes), .min = 64,
     .max = 16LL << 20, .def = "64KiB", .flags = CFG_NO_ENV,
     .help = "a tool result longer than this is truncated and marked"},
    {.key = "code_memory", .type = CFG_SIZE, .off = LOFF(code_memory_bytes), .min = 0, .max = 1LL << 40,
     .def = "0", .flags = CFG_NO_ENV,
     .help = "code_exec: memory of one run (clamped to sandbox.service.max_memory); 0 = the service's default"},
    {.key = "code_cpu", .type = CFG_DURATION, .off = LOFF(code_cpu_ms), .min = 0, .max = 3600000LL, .def = "0",
     .flags = CFG_NO_ENV, .help = "code_exec: CPU time per process; 0 = the service's default"},
    {.key = "code_pids", .type = CFG_INT, .off = LOFF(code_pids), .min = 0, .max = 4096, .def = "0",
     .flags = CFG_NO_ENV, .help = "code_exec: processes at once (clamped to sandbox.service.max_pids); 0 = default"},
};
static const struct cfg_schema limits_schema = {
    .name = "limits", .fields = limit_fields, .nfields = ARRAY_LEN(limit_fields)};

static const char *mcp_server_problem(const char *name, const char *url, const char *command)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 32)
        return "an MCP server's name must be 1 to 32 characters";
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
              (name[i] >= '0' && name[i] <= '9') || name[i] == '-'))
            return "an MCP server's name may only have letters, digits and '-'";
    if ((url == NULL) == (command == NULL))
        return "an MCP server has either a url (Streamable HTTP) or a command (stdio), not both";
    if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return "an MCP server's url must start with http:// or https://";
    if (command && command[0] == '\0')
        return "an MCP server's command must not be empty";
    return "";
}

/* A stdio server's env: "NAME=value" lines. */
static const char *env_problem(const struct cfg_strlist *env)
{
    if (env->n > 64)
        return "an MCP server's env has at most 64 entries";
    for (size_t i = 0; i < env->n; i++) {
        const char *e = env->v[i], *eq = strchr(e, '=');
        if (eq == NULL || eq == e)
            return "an MCP server's env entries must be \"NAME=value\"";
    }
    return "";
}

static void validate_mcp_server(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    const struct agent_mcp_server *m = obj;
    const char *why = mcp_server_problem(m->name, m->url, m->command);
    if (why[0])
        cfg_error_at(ctx, where, path, "%s", why);
    for (size_t i = 0; i < m->headers.n; i++)
        if (strchr(m->headers.v[i], ':') == NULL || strpbrk(m->headers.v[i], "\r\n"))
            cfg_error_at(ctx, where, path, "headers must be \"Name: value\" lines");
    why = env_problem(&m->env);
    if (why[0])
        cfg_error_at(ctx, where, path, "%s", why);
}

#define MOFF(f) offsetof(struct agent_mcp_server, f)
static const struct cfg_field mcp_fields[] = {
    {.key = "name", .type = CFG_STRING, .off = MOFF(name), .max = 32, .flags = CFG_REQUIRED | CFG_NO_ENV,
     .help = "the server's tools are offered to the model as <name>__<tool>"},
    {.key = "url", .type = CFG_STRING, .off = MOFF(url), .max = 2048, .flags = CFG_NO_ENV,
     .help = "the server's Streamable HTTP endpoint (or command: a stdio server)"},
    {.key = "command", .type = CFG_STRING, .off = MOFF(command), .max = 4096, .flags = CFG_NO_ENV,
     .help = "a stdio server: the program agentd starts (per worker loop) and talks to on stdin/stdout"},
    {.key = "args", .type = CFG_STRLIST, .off = MOFF(args), .flags = CFG_NO_ENV,
     .help = "a stdio server's arguments"},
    {.key = "env", .type = CFG_STRLIST, .off = MOFF(env), .flags = CFG_NO_ENV | CFG_SECRET,
     .help = "a stdio server's NAME=value environment (added to PATH, HOME, LANG, ...)"},
    {.key = "headers", .type = CFG_STRLIST, .off = MOFF(headers), .flags = CFG_NO_ENV | CFG_SECRET,
     .help = "\"Name: value\" headers sent with every request (Authorization, ...)"},
    {.key = "timeout", .type = CFG_DURATION, .off = MOFF(timeout_ms), .min = 1, .max = 3600000LL, .def = "60s",
     .flags = CFG_NO_ENV, .help = "one request to the server"},
    {.key = "tools_ttl", .type = CFG_DURATION, .off = MOFF(tools_ttl_ms), .min = 0, .max = 86400000LL,
     .def = "5m", .flags = CFG_NO_ENV, .help = "how long the server's tools/list is cached"},
};
const struct cfg_schema agent_mcp_server_schema = {.name = "mcp server",
                                                    .item_size = sizeof(struct agent_mcp_server),
                                                    .fields = mcp_fields,
                                                    .nfields = ARRAY_LEN(mcp_fields),
                                                    .validate = validate_mcp_server};

#define AOFF(f) offsetof(struct config_agent, f)
static const struct cfg_field agent_fields[] = {
    {.key = "name", .type = CFG_STRING, .off = AOFF(name), .max = AGENT_NAME_MAX, .flags = CFG_REQUIRED | CFG_NO_ENV,
     .help = "the agent's name in POST /v1/agents/{name}/runs"},
    {.key = "description", .type = CFG_STRING, .off = AOFF(description), .max = 4096, .flags = CFG_NO_ENV,
     .help = "what the agent does (for people and listings)"},
    {.key = "model", .type = CFG_STRING, .off = AOFF(model), .max = 256, .flags = CFG_REQUIRED | CFG_NO_ENV,
     .help = "public model name each step asks for (routing and fallbacks apply)"},
    {.key = "instructions", .type = CFG_STRING, .off = AOFF(instructions), .max = 1 << 20, .flags = CFG_NO_ENV,
     .help = "the system prompt"},
    {.key = "tools", .type = CFG_STRLIST, .off = AOFF(tools), .flags = CFG_NO_ENV,
     .help = "tools the model may call, by name (echo, wait, http_fetch, code_exec)"},
    {.key = "output_schema", .type = CFG_STRING, .off = AOFF(output_schema), .max = 1 << 20, .flags = CFG_NO_ENV,
     .help = "JSON Schema (as JSON text) the final answer must satisfy; the model is asked again when it does not"},
    {.key = "workflow", .type = CFG_STRING, .off = AOFF(workflow), .max = 128, .flags = CFG_NO_ENV,
     .help = "the budget scope `workflow` the run's LLM spend is charged to (with the caller's key); default: "
             "the agent's name"},
    {.key = "allow_urls", .type = CFG_STRLIST, .off = AOFF(allow_urls), .flags = CFG_NO_ENV,
     .help = "http_fetch: URL prefixes the agent may fetch"},
    {.key = "allow_private_networks", .type = CFG_BOOL, .off = AOFF(allow_private_networks), .def = "false",
     .flags = CFG_NO_ENV,
     .help = "http_fetch may reach private, loopback and link-local addresses (internal services); off by default"},
    {.key = "code_network", .type = CFG_ENUM, .off = AOFF(code_network), .enums = sbx_net_names, .def = "none",
     .flags = CFG_NO_ENV,
     .help = "code_exec's network: none, or egress (out through the sandbox's proxy, under sandbox.egress)"},
    {.key = "mcp_servers", .type = CFG_LIST, .off = AOFF(mcp_servers), .sub = &agent_mcp_server_schema,
     .flags = CFG_NO_ENV, .help = "MCP servers (Streamable HTTP) whose tools the agent may call"},
    {.key = "limits", .type = CFG_MAP, .off = AOFF(limits), .sub = &limits_schema, .flags = CFG_NO_ENV},
};
const struct cfg_schema agent_config_schema = {.name = "agent",
                                               .item_size = sizeof(struct config_agent),
                                               .fields = agent_fields,
                                               .nfields = ARRAY_LEN(agent_fields),
                                               .validate = validate_agent};

const struct config_agent *agent_config_find(const struct config *cfg, const char *name)
{
    const struct config_agent *a = cfg->agents.items;
    for (size_t i = 0; i < cfg->agents.n; i++)
        if (a[i].name && strcmp(a[i].name, name) == 0)
            return &a[i];
    return NULL;
}

/* ---- JSON (the admin API) ---- */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void strlist_copy(struct cfg_strlist *dst, const struct cfg_strlist *src)
{
    dst->n = src->n;
    dst->v = src->n ? xcalloc(src->n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->n; i++)
        dst->v[i] = xstrdup(src->v[i]);
}

void agent_def_copy(struct config_agent *dst, const struct config_agent *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->name = dup_or_null(src->name);
    dst->description = dup_or_null(src->description);
    dst->model = dup_or_null(src->model);
    dst->instructions = dup_or_null(src->instructions);
    dst->output_schema = dup_or_null(src->output_schema);
    dst->workflow = dup_or_null(src->workflow);
    strlist_copy(&dst->tools, &src->tools);
    strlist_copy(&dst->allow_urls, &src->allow_urls);
    dst->limits = src->limits;
    dst->allow_private_networks = src->allow_private_networks;
    dst->code_network = src->code_network;
    dst->mcp_servers.n = src->mcp_servers.n;
    dst->mcp_servers.items = src->mcp_servers.n ? xcalloc(src->mcp_servers.n, sizeof(struct agent_mcp_server)) : NULL;
    for (size_t i = 0; i < src->mcp_servers.n; i++) {
        const struct agent_mcp_server *s = &((const struct agent_mcp_server *)src->mcp_servers.items)[i];
        struct agent_mcp_server *d = &((struct agent_mcp_server *)dst->mcp_servers.items)[i];
        d->name = dup_or_null(s->name);
        d->url = dup_or_null(s->url);
        strlist_copy(&d->headers, &s->headers);
        d->command = dup_or_null(s->command);
        strlist_copy(&d->args, &s->args);
        strlist_copy(&d->env, &s->env);
        d->timeout_ms = s->timeout_ms;
        d->tools_ttl_ms = s->tools_ttl_ms;
    }
}

void agent_def_free(struct config_agent *a)
{
    cfg_free_obj(&agent_config_schema, a);
    memset(a, 0, sizeof(*a));
}

static int str_field(const cJSON *o, const char *key, size_t max, bool required, char **out, char *msg, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v == NULL || cJSON_IsNull(v)) {
        if (required) {
            snprintf(msg, n, "field '%s' is required", key);
            return -1;
        }
        return 0;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) > max) {
        snprintf(msg, n, "field '%s' must be a string of at most %zu bytes", key, max);
        return -1;
    }
    *out = xstrdup(v->valuestring);
    return 0;
}

static int list_field(const cJSON *o, const char *key, struct cfg_strlist *out, char *msg, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v == NULL)
        return 0;
    int count = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || count > 256) {
        snprintf(msg, n, "field '%s' must be an array of at most 256 strings", key);
        return -1;
    }
    out->v = count ? xcalloc((size_t)count, sizeof(char *)) : NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        if (!cJSON_IsString(it) || strlen(it->valuestring) > 4096) {
            snprintf(msg, n, "field '%s' must be an array of strings", key);
            return -1;
        }
        out->v[out->n++] = xstrdup(it->valuestring);
    }
    return 0;
}

static int num_field(const cJSON *o, const char *key, double min, double max, double *out, char *msg, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v == NULL)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max) {
        snprintf(msg, n, "field 'limits.%s' must be a number from %g to %g", key, min, max);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

int agent_def_from_json(const cJSON *o, struct config_agent *a, char *msg, size_t n)
{
    memset(a, 0, sizeof(*a));
    cfg_apply_defaults(&agent_config_schema, a);
    if (!cJSON_IsObject(o)) {
        snprintf(msg, n, "the body must be a JSON object");
        return -1;
    }
    static const char *const known[] = {"name",     "description", "model",      "instructions", "tools",
                                        "output_schema", "workflow", "allow_urls", "limits",
                                        "allow_private_networks", "mcp_servers", "code_network"};
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        bool found = false;
        for (size_t i = 0; i < ARRAY_LEN(known); i++)
            found = found || strcmp(it->string, known[i]) == 0;
        if (!found) {
            snprintf(msg, n, "field '%.64s' is not an agent field", it->string);
            return -1;
        }
    }
    if (str_field(o, "name", AGENT_NAME_MAX, true, &a->name, msg, n) ||
        str_field(o, "description", 4096, false, &a->description, msg, n) ||
        str_field(o, "model", 256, true, &a->model, msg, n) ||
        str_field(o, "instructions", 1 << 20, false, &a->instructions, msg, n) ||
        str_field(o, "workflow", 128, false, &a->workflow, msg, n) || list_field(o, "tools", &a->tools, msg, n) ||
        list_field(o, "allow_urls", &a->allow_urls, msg, n))
        return -1;
    const char *why = agent_name_problem(a->name);
    if (why[0]) {
        snprintf(msg, n, "field 'name': %s", why);
        return -1;
    }
    for (size_t i = 0; i < a->tools.n; i++)
        if (agent_tool_find(a->tools.v[i]) == NULL) {
            snprintf(msg, n, "field 'tools': unknown tool '%.64s' (built-in tools: %s)", a->tools.v[i],
                     agent_tool_names());
            return -1;
        }
    if (a->tools.n > AGENT_MAX_TOOLS) {
        snprintf(msg, n, "field 'tools': at most %d tools per agent", AGENT_MAX_TOOLS);
        return -1;
    }
    const cJSON *apn = cJSON_GetObjectItemCaseSensitive(o, "allow_private_networks");
    if (apn && !cJSON_IsBool(apn)) {
        snprintf(msg, n, "field 'allow_private_networks' must be a boolean");
        return -1;
    }
    a->allow_private_networks = cJSON_IsTrue(apn);
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(o, "code_network");
    if (cn) {
        int v = cJSON_IsString(cn) ? sbx_net_parse(cn->valuestring) : -1;
        if (v < 0) {
            snprintf(msg, n, "field 'code_network' must be \"none\" or \"egress\"");
            return -1;
        }
        a->code_network = v;
    }
    const cJSON *mcp = cJSON_GetObjectItemCaseSensitive(o, "mcp_servers");
    if (mcp && (!cJSON_IsArray(mcp) || cJSON_GetArraySize(mcp) > AGENT_MAX_MCP_SERVERS)) {
        snprintf(msg, n, "field 'mcp_servers' must be an array of at most %d servers", AGENT_MAX_MCP_SERVERS);
        return -1;
    }
    if (mcp && cJSON_GetArraySize(mcp) > 0) {
        a->mcp_servers.items = xcalloc((size_t)cJSON_GetArraySize(mcp), sizeof(struct agent_mcp_server));
        const cJSON *m;
        cJSON_ArrayForEach(m, mcp)
        {
            struct agent_mcp_server *d = &((struct agent_mcp_server *)a->mcp_servers.items)[a->mcp_servers.n++];
            d->timeout_ms = 60000;
            d->tools_ttl_ms = 300000;
            double to = 60, ttl = 300;
            if (!cJSON_IsObject(m)) {
                snprintf(msg, n, "field 'mcp_servers' must be an array of objects");
                return -1;
            }
            if (str_field(m, "name", 32, true, &d->name, msg, n) || str_field(m, "url", 2048, false, &d->url, msg, n) ||
                str_field(m, "command", 4096, false, &d->command, msg, n) ||
                list_field(m, "args", &d->args, msg, n) || list_field(m, "env", &d->env, msg, n) ||
                list_field(m, "headers", &d->headers, msg, n) ||
                num_field(m, "timeout_seconds", 0.001, 3600, &to, msg, n) ||
                num_field(m, "tools_ttl_seconds", 0, 86400, &ttl, msg, n))
                return -1;
            d->timeout_ms = (int64_t)(to * 1000);
            d->tools_ttl_ms = (int64_t)(ttl * 1000);
            const char *mwhy = mcp_server_problem(d->name, d->url, d->command);
            if (!mwhy[0])
                mwhy = env_problem(&d->env);
            /* The admin API does not start programs on the host: stdio servers come from the file only. */
            if (!mwhy[0] && d->command)
                mwhy = "a stdio server (command) can only be configured in the configuration file, not through "
                       "the API";
            if (mwhy[0]) {
                snprintf(msg, n, "field 'mcp_servers': %s", mwhy);
                return -1;
            }
            for (size_t i = 0; i < d->headers.n; i++)
                if (strchr(d->headers.v[i], ':') == NULL || strpbrk(d->headers.v[i], "\r\n")) {
                    snprintf(msg, n, "field 'mcp_servers': headers must be \"Name: value\" lines");
                    return -1;
                }
            for (size_t i = 0; i + 1 < a->mcp_servers.n; i++)
                if (strcmp(((struct agent_mcp_server *)a->mcp_servers.items)[i].name, d->name) == 0) {
                    snprintf(msg, n, "field 'mcp_servers': two servers named '%.32s'", d->name);
                    return -1;
                }
        }
    }
    const cJSON *sch = cJSON_GetObjectItemCaseSensitive(o, "output_schema");
    if (cJSON_IsObject(sch)) {
        char *t = cJSON_PrintUnformatted(sch);
        a->output_schema = xstrdup(t);
        cJSON_free(t);
    } else if (sch && !cJSON_IsNull(sch)) {
        snprintf(msg, n, "field 'output_schema' must be a JSON Schema object");
        return -1;
    }
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(o, "limits");
    if (lim && !cJSON_IsObject(lim)) {
        snprintf(msg, n, "field 'limits' must be an object");
        return -1;
    }
    if (lim) {
        double steps = (double)a->limits.max_steps, tokens = (double)a->limits.max_tokens;
        double deadline = (double)a->limits.deadline_ms / 1000, par = (double)a->limits.max_parallel_tools;
        double tto = (double)a->limits.tool_timeout_ms / 1000, tob = (double)a->limits.tool_output_bytes;
        double cmem = (double)a->limits.code_memory_bytes, ccpu = (double)a->limits.code_cpu_ms / 1000;
        double cpids = (double)a->limits.code_pids;
        if (num_field(lim, "max_steps", 1, 1000, &steps, msg, n) ||
            num_field(lim, "max_tokens", 0, 1e9, &tokens, msg, n) ||
            num_field(lim, "max_usd", 0, 1e6, &a->limits.max_usd, msg, n) ||
            num_field(lim, "deadline_seconds", 0, 86400, &deadline, msg, n) ||
            num_field(lim, "max_parallel_tools", 1, 64, &par, msg, n) ||
            num_field(lim, "tool_timeout_seconds", 0.001, 3600, &tto, msg, n) ||
            num_field(lim, "tool_output_bytes", 64, 16 << 20, &tob, msg, n) ||
            num_field(lim, "code_memory_bytes", 0, 1099511627776.0, &cmem, msg, n) ||
            num_field(lim, "code_cpu_seconds", 0, 3600, &ccpu, msg, n) ||
            num_field(lim, "code_pids", 0, 4096, &cpids, msg, n))
            return -1;
        a->limits.code_memory_bytes = (int64_t)cmem;
        a->limits.code_cpu_ms = (int64_t)(ccpu * 1000);
        a->limits.code_pids = (int64_t)cpids;
        a->limits.max_steps = (int64_t)steps;
        a->limits.max_tokens = (int64_t)tokens;
        a->limits.deadline_ms = (int64_t)(deadline * 1000);
        a->limits.max_parallel_tools = (int64_t)par;
        a->limits.tool_timeout_ms = (int64_t)(tto * 1000);
        a->limits.tool_output_bytes = (int64_t)tob;
    }
    return 0;
}

static cJSON *strlist_json(const struct cfg_strlist *l)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < l->n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(l->v[i]));
    return arr;
}

cJSON *agent_def_to_json(const struct config_agent *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", a->name ? a->name : "");
    if (a->description)
        cJSON_AddStringToObject(o, "description", a->description);
    cJSON_AddStringToObject(o, "model", a->model ? a->model : "");
    if (a->instructions)
        cJSON_AddStringToObject(o, "instructions", a->instructions);
    cJSON_AddItemToObject(o, "tools", strlist_json(&a->tools));
    if (a->output_schema) {
        cJSON *s = cJSON_Parse(a->output_schema);
        cJSON_AddItemToObject(o, "output_schema", s ? s : cJSON_CreateNull());
    }
    cJSON_AddStringToObject(o, "workflow", a->workflow ? a->workflow : a->name ? a->name : "");
    cJSON_AddItemToObject(o, "allow_urls", strlist_json(&a->allow_urls));
    cJSON_AddBoolToObject(o, "allow_private_networks", a->allow_private_networks);
    const char *cn = sbx_net_name((enum sbx_net)a->code_network);
    cJSON_AddStringToObject(o, "code_network", cn ? cn : "none");
    cJSON *l = cJSON_AddObjectToObject(o, "limits");
    cJSON_AddNumberToObject(l, "max_steps", (double)a->limits.max_steps);
    cJSON_AddNumberToObject(l, "max_tokens", (double)a->limits.max_tokens);
    cJSON_AddNumberToObject(l, "max_usd", a->limits.max_usd);
    cJSON_AddNumberToObject(l, "deadline_seconds", (double)a->limits.deadline_ms / 1000);
    cJSON_AddNumberToObject(l, "max_parallel_tools", (double)a->limits.max_parallel_tools);
    cJSON_AddNumberToObject(l, "tool_timeout_seconds", (double)a->limits.tool_timeout_ms / 1000);
    cJSON_AddNumberToObject(l, "tool_output_bytes", (double)a->limits.tool_output_bytes);
    cJSON_AddNumberToObject(l, "code_memory_bytes", (double)a->limits.code_memory_bytes);
    cJSON_AddNumberToObject(l, "code_cpu_seconds", (double)a->limits.code_cpu_ms / 1000);
    cJSON_AddNumberToObject(l, "code_pids", (double)a->limits.code_pids);
    if (a->mcp_servers.n) {
        cJSON *arr = cJSON_AddArrayToObject(o, "mcp_servers");
        for (size_t i = 0; i < a->mcp_servers.n; i++) {
            const struct agent_mcp_server *m = &((const struct agent_mcp_server *)a->mcp_servers.items)[i];
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "name", m->name);
            if (m->url) {
                cJSON_AddStringToObject(j, "url", m->url);
                cJSON_AddItemToObject(j, "headers", strlist_json(&m->headers)); /* (the admin key's eyes only) */
            } else {
                cJSON_AddStringToObject(j, "command", m->command);
                cJSON_AddItemToObject(j, "args", strlist_json(&m->args));
                cJSON_AddItemToObject(j, "env", strlist_json(&m->env)); /* (the admin key's eyes only) */
            }
            cJSON_AddNumberToObject(j, "timeout_seconds", (double)m->timeout_ms / 1000);
            cJSON_AddNumberToObject(j, "tools_ttl_seconds", (double)m->tools_ttl_ms / 1000);
            cJSON_AddItemToArray(arr, j);
        }
    }
    return o;
}
