/* mcp_conformance_client.c: `agentd mcp-client-conformance URL`, a test tool (mcp_conformance_client.h).
 *
 * The official conformance suite's client mode starts a test MCP server per scenario and runs a client command
 * with the server's URL as its last argument, the scenario's name in MCP_CONFORMANCE_SCENARIO and, for some, a
 * JSON context in MCP_CONFORMANCE_CONTEXT. This command is that client: it drives agentd's own MCP client
 * (mcp_client.h, the code agents and the /mcp gateway use for upstream servers; both eras negotiated by it) through
 * what each scenario exercises. Everything protocol-level (discover or initialize, headers, _meta, elicitation,
 * input_required rounds, resuming a stream, x-mcp-header) is the client's own behaviour; only the choice of
 * requests to make lives here. Each request's outcome is printed as one JSON line on stdout; the exit status is
 * 0 when every request was answered with a result, 1 otherwise. */
#include "agent/mcp_conformance_client.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/agent_config.h"
#include "agent/mcp_client.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "net/upstream.h"

struct drv {
    uv_loop_t loop;
    struct agent_mcp_server srv;
    const char *scenario;
    cJSON *ctx;   /* MCP_CONFORMANCE_CONTEXT, or NULL */
    cJSON *queue; /* [{"method","params"}]: what is still to be sent, in order */
    char method[64];
    int failures, requests;
};

static void next(struct drv *d);

static bool is(const struct drv *d, const char *name)
{
    return strcmp(d->scenario, name) == 0;
}

static void push(struct drv *d, const char *method, cJSON *params)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "method", method);
    if (params)
        cJSON_AddItemToObject(r, "params", params);
    cJSON_AddItemToArray(d->queue, r);
}

static void push_call(struct drv *d, const char *tool, cJSON *args)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", tool);
    cJSON_AddItemToObject(p, "arguments", args ? args : cJSON_CreateObject());
    push(d, "tools/call", p);
}

/* Arguments for a tool from its input schema: a plain value of each property's type. */
static cJSON *sample_args(const cJSON *schema)
{
    cJSON *a = cJSON_CreateObject();
    const cJSON *pr, *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    cJSON_ArrayForEach(pr, (cJSON_IsObject(props) ? props : NULL))
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(pr, "type");
        const char *ty = cJSON_IsString(t) ? t->valuestring : "";
        if (strcmp(ty, "string") == 0)
            cJSON_AddStringToObject(a, pr->string, "value");
        else if (strcmp(ty, "integer") == 0)
            cJSON_AddNumberToObject(a, pr->string, 1);
        else if (strcmp(ty, "number") == 0)
            cJSON_AddNumberToObject(a, pr->string, 1.5);
        else if (strcmp(ty, "boolean") == 0)
            cJSON_AddTrueToObject(a, pr->string);
    }
    return a;
}

/* What a scenario does with a tools/list result (the tools the client kept). */
static void on_tools(struct drv *d, const cJSON *result)
{
    const cJSON *t, *tools = cJSON_GetObjectItemCaseSensitive(result, "tools");
    if (is(d, "http-custom-headers")) { /* the calls the context names, with its arguments */
        const cJSON *c, *calls = cJSON_GetObjectItemCaseSensitive(d->ctx, "toolCalls");
        cJSON_ArrayForEach(c, (cJSON_IsArray(calls) ? calls : NULL))
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
            if (cJSON_IsString(name))
                push_call(d, name->valuestring,
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, "arguments"), true));
        }
        return;
    }
    if (is(d, "json-schema-2020-12-preservation")) {
        /* the focal tool's schema as an agent's model is given it (mcp_tools_to_openai), echoed back */
        cJSON *arr = cJSON_CreateArray();
        char *cursor = NULL;
        (void)mcp_tools_to_openai(result, d->srv.name, arr, &cursor);
        xfree(cursor);
        cJSON_ArrayForEach(t, arr)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            if (cJSON_IsString(name) && strcmp(name->valuestring, "conformance__json_schema_2020_12_tool") == 0) {
                cJSON *args = cJSON_CreateObject();
                cJSON_AddItemToObject(args, "schema",
                                      cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(fn, "parameters"), true));
                push_call(d, "json_schema_echo", args);
            }
        }
        cJSON_Delete(arr);
        return;
    }
    if (is(d, "tools_call") || is(d, "elicitation-sep1034-client-defaults") || is(d, "sse-retry") ||
        is(d, "sep-2322-client-request-state") || is(d, "http-standard-headers") ||
        is(d, "http-invalid-tool-headers")) {
        cJSON_ArrayForEach(t, (cJSON_IsArray(tools) ? tools : NULL))
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
            if (cJSON_IsString(name))
                push_call(d, name->valuestring, sample_args(cJSON_GetObjectItemCaseSensitive(t, "inputSchema")));
        }
    }
    /* initialize, request-metadata, json-schema-ref-no-deref and the rest: listing is the whole exercise */
}

static void on_list(struct drv *d, const cJSON *result, const char *array, const char *field, const char *method)
{
    const cJSON *e, *items = cJSON_GetObjectItemCaseSensitive(result, array);
    cJSON_ArrayForEach(e, (cJSON_IsArray(items) ? items : NULL))
    {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, field);
        if (!cJSON_IsString(v))
            continue;
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, field, v->valuestring);
        push(d, method, p);
    }
}

static void answered(void *ud, int ok, const cJSON *result, bool rpc_error, int64_t code, const char *message)
{
    struct drv *d = ud;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "method", d->method);
    if (ok && !rpc_error) {
        cJSON_AddItemToObject(line, "result", cJSON_Duplicate(result, true));
        if (strcmp(d->method, "tools/list") == 0)
            on_tools(d, result);
        else if (strcmp(d->method, "resources/list") == 0)
            on_list(d, result, "resources", "uri", "resources/read");
        else if (strcmp(d->method, "prompts/list") == 0)
            on_list(d, result, "prompts", "name", "prompts/get");
    } else {
        d->failures++;
        cJSON *e = cJSON_AddObjectToObject(line, "error");
        if (rpc_error)
            cJSON_AddNumberToObject(e, "code", (double)code);
        cJSON_AddStringToObject(e, "message", message ? message : "");
    }
    char *s = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (s)
        printf("%s\n", s);
    fflush(stdout);
    cJSON_free(s);
    next(d);
}

static void next(struct drv *d)
{
    cJSON *r = cJSON_DetachItemFromArray(d->queue, 0);
    if (r == NULL) { /* done: the client's streams and connections close, and the loop runs dry */
        mcp_loop_done();
        return;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "method");
    snprintf(d->method, sizeof(d->method), "%s", m->valuestring);
    cJSON *params = cJSON_DetachItemFromObjectCaseSensitive(r, "params");
    cJSON_Delete(r);
    d->requests++;
    (void)mcp_request_start(&d->loop, &d->srv, d->method, params, answered, d);
}

int mcp_conformance_client_main(int argc, char **argv)
{
    if (argc < 2 || strncmp(argv[argc - 1], "http", 4) != 0) {
        fprintf(stderr, "usage: agentd mcp-client-conformance URL   (a test tool: the conformance suite's client\n"
                        "       command; MCP_CONFORMANCE_SCENARIO names the scenario, MCP_CONFORMANCE_CONTEXT its context)\n");
        return 2;
    }
    struct drv d;
    memset(&d, 0, sizeof(d));
    const char *sc = getenv("MCP_CONFORMANCE_SCENARIO");
    d.scenario = sc ? sc : "";
    const char *ctx = getenv("MCP_CONFORMANCE_CONTEXT");
    d.ctx = ctx ? cJSON_Parse(ctx) : NULL;
    d.srv.name = (char *)"conformance";
    d.srv.url = argv[argc - 1];
    d.srv.timeout_ms = 20000;
    d.srv.tools_ttl_ms = 0;
    d.queue = cJSON_CreateArray();
    push(&d, "tools/list", NULL);
    if (is(&d, "http-standard-headers")) {
        push(&d, "resources/list", NULL);
        push(&d, "prompts/list", NULL);
    }
    if (upstream_global_init() != 0) {
        fprintf(stderr, "agentd: the HTTP client could not start\n");
        return 1;
    }
    uv_loop_init(&d.loop);
    next(&d);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&d.loop);
    upstream_global_cleanup();
    cJSON_Delete(d.queue);
    cJSON_Delete(d.ctx);
    fprintf(stderr, "mcp-client-conformance %s: %d requests, %d failed\n", d.scenario, d.requests, d.failures);
    return d.failures == 0 ? 0 : 1;
}
