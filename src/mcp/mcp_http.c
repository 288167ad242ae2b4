/* mcp_http.c: /mcp, agentd's MCP server over Streamable HTTP (mcp.h, docs/mcp.md). A POST body is parsed and
 * checked whole before anything runs (jsonrpc.c); its messages are then dispatched on this loop. Tool calls end
 * later: a built-in tool through its done callback, an agent through its run's finished callback and a read of
 * the run from the store (thread pool), so the worker loop never waits. The answer goes out once every message
 * of the body has its response: one JSON object, an array for a batch, or the same as one SSE event when the
 * client accepts only text/event-stream; 202 with no body when the body held only notifications/responses. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "agent/run.h"
#include "agent/tools.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/config.h"
#include "mcp/jsonrpc.h"
#include "mcp/mcp.h"
#include "policy/auth.h"
#include "store/agent_store.h"

#define MODERN "2026-07-28"
#define META_VERSION "io.modelcontextprotocol/protocolVersion"
#define META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define META_SERVER "io.modelcontextprotocol/serverInfo"
#define LIST_TTL_MS 5000

static const char *const legacy_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};
static const char *const builtin_tools[] = {"code_exec", "echo", "wait"}; /* name order */

static bool legacy_supported(const char *v)
{
    for (size_t i = 0; i < sizeof(legacy_versions) / sizeof(legacy_versions[0]); i++)
        if (strcmp(v, legacy_versions[i]) == 0)
            return true;
    return false;
}

/* modern: the versions server/discover names; else every version this server speaks */
static cJSON *supported_json(const char *requested, bool modern)
{
    cJSON *d = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(d, "supported");
    cJSON_AddItemToArray(a, cJSON_CreateString(MODERN));
    for (size_t i = 0; !modern && i < sizeof(legacy_versions) / sizeof(legacy_versions[0]); i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(legacy_versions[i]));
    cJSON_AddStringToObject(d, "requested", requested);
    return d;
}

static cJSON *server_info(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", "agentd");
    cJSON_AddStringToObject(o, "version", "0.1.0");
    return o;
}

/* A header's value as a C string (truncated to n-1; *len the full length). "" when absent. */
static bool header_copy(const struct http_req *req, const char *name, char *out, size_t n, size_t *len)
{
    const struct str *h = http_req_header(req, name);
    out[0] = '\0';
    *len = 0;
    if (h == NULL)
        return false;
    *len = h->n;
    size_t k = h->n < n - 1 ? h->n : n - 1;
    memcpy(out, h->p, k);
    out[k] = '\0';
    return true;
}

/* ---- answers outside a body's messages ---- */

static void respond_rpc_error(struct http_req *req, int status, const cJSON *id, int code, const char *msg,
                              const cJSON *data)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    jr_error_json(&b, id, code, msg, data);
    http_respond(req, status, "application/json", b.data, b.len);
    buf_free(&b);
}

/* ---- Origin and Host (DNS rebinding): a server bound to loopback answers loopback names only ---- */

static bool loopback_host(const char *h, size_t n)
{
    /* host[:port] or [::1][:port] */
    size_t hn = n;
    if (n > 0 && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        if (e == NULL)
            return false;
        hn = (size_t)(e - h) + 1;
    } else {
        const char *c = memchr(h, ':', n);
        if (c)
            hn = (size_t)(c - h);
    }
    if (hn < n && h[hn] != ':')
        return false;
    for (size_t i = hn + 1; i < n; i++)
        if (h[i] < '0' || h[i] > '9')
            return false;
    return (hn == 9 && strncasecmp(h, "localhost", 9) == 0) || (hn == 9 && memcmp(h, "127.0.0.1", 9) == 0) ||
           (hn == 5 && memcmp(h, "[::1]", 5) == 0);
}

static bool listen_loopback(const struct config *cfg)
{
    const char *l = cfg && cfg->server.listen ? cfg->server.listen : "";
    return strncmp(l, "127.", 4) == 0 || strncmp(l, "localhost:", 10) == 0 || strncmp(l, "[::1]", 5) == 0;
}

/* false: 403. A loopback-bound server accepts loopback Host and Origin names only; any server accepts an Origin
 * whose host is the request's Host. No Origin (not a browser): allowed. */
static bool origin_ok(const struct http_req *req)
{
    const struct str *host = http_req_header(req, "host");
    bool loop = listen_loopback(req->cfg);
    if (loop && host && !loopback_host(host->p, host->n))
        return false;
    const struct str *o = http_req_header(req, "origin");
    if (o == NULL)
        return true;
    const char *sep = o->n > 3 ? memmem(o->p, o->n, "://", 3) : NULL;
    if (sep == NULL)
        return false;
    const char *oh = sep + 3;
    size_t ohn = o->n - (size_t)(oh - o->p);
    if (ohn > 0 && oh[ohn - 1] == '/')
        ohn--;
    if (loop)
        return loopback_host(oh, ohn);
    return host && host->n == ohn && strncasecmp(host->p, oh, ohn) == 0;
}

/* ---- authentication: a virtual key as bearer token ---- */

static void resource_url(const struct http_req *req, const char *path, char *out, size_t n)
{
    char host[256];
    size_t hl;
    header_copy(req, "host", host, sizeof(host), &hl);
    bool ok = hl > 0 && hl < sizeof(host);
    for (size_t i = 0; ok && host[i]; i++)
        ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]", host[i]) != NULL;
    char proto[8];
    size_t pl;
    header_copy(req, "x-forwarded-proto", proto, sizeof(proto), &pl);
    snprintf(out, n, "%s://%s%s", strcmp(proto, "https") == 0 ? "https" : "http", ok ? host : "localhost", path);
}

/* 0 with *who (release it; NULL when anonymous under auth.mode none), or -1 after answering 401. */
static int authenticate(struct http_req *req, const struct principal **who, struct str *secret)
{
    *who = NULL;
    *secret = auth_secret_from(http_req_header(req, "authorization"), http_req_header(req, "x-api-key"),
                               http_req_header(req, "api-key"));
    bool keys = auth_mode_effective(req->cfg) == AUTH_MODE_KEYS;
    if (!keyring_armed() && !keys)
        return 0;
    if (!keys && !auth_looks_like_key(*secret)) {
        *secret = STR_NULL;
        return 0;
    }
    struct auth_input in = {.secret = *secret, .request_id = req->request_id, .route = "/mcp"};
    enum auth_result r = keyring_armed() ? auth_check(&in, (int64_t)time(NULL), who) : AUTH_BAD_KEY;
    if (r == AUTH_OK || r == AUTH_MODEL_DENIED)
        return 0;
    principal_release(*who);
    *who = NULL;
    char url[400], hv[480];
    resource_url(req, "/.well-known/oauth-protected-resource/mcp", url, sizeof(url));
    snprintf(hv, sizeof(hv), "Bearer resource_metadata=\"%s\"%s", url,
             secret->n ? ", error=\"invalid_token\"" : "");
    http_resp_header(req, "WWW-Authenticate", hv);
    respond_rpc_error(req, 401, NULL, JR_INVALID_REQUEST,
                      "Unauthorized: pass an agentd virtual key as `Authorization: Bearer <key>`", NULL);
    return -1;
}

/* GET /.well-known/oauth-protected-resource[/mcp]: RFC 9728 metadata for the /mcp resource. */
void mcp_http_metadata(struct http_req *req)
{
    char url[400];
    resource_url(req, "/mcp", url, sizeof(url));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "resource", url);
    cJSON *bm = cJSON_AddArrayToObject(o, "bearer_methods_supported");
    cJSON_AddItemToArray(bm, cJSON_CreateString("header"));
    cJSON_AddStringToObject(o, "resource_name", "agentd MCP server");
    cJSON_AddStringToObject(o, "resource_documentation",
                            "Authenticate with an agentd virtual key as a bearer token (docs/mcp.md).");
    char *s = cJSON_PrintUnformatted(o);
    http_respond(req, 200, "application/json", s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(o);
}

/* ---- a POST body in flight ---- */

struct call;

struct batch {
    struct http_req *req;
    bool modern, array, sse, aborted;
    int status;                 /* of the answer (a single invalid message: 400, ...) */
    char session[33];           /* set: the answer carries Mcp-Session-Id (initialize) */
    char key_id[48];
    size_t n, pending;
    struct buf *out;            /* per message: its response ("" for none) */
    struct call **calls;        /* per message: the tool call in flight */
};

enum call_kind { CALL_BUILTIN, CALL_AGENT };

struct call {
    struct batch *b;            /* NULL once the request is gone (an agent call reading its run) */
    size_t slot;
    cJSON *id;
    enum call_kind kind;
    struct tool_exec te;
    char *args, *name;          /* te.args, te.name: kept until the call ends */
    char run_id[RUN_ID_MAX];
    bool reading;               /* agent: its run is being read from the store */
    uv_work_t w;
    int rc;
    struct as_run run;
};

static const struct config_agent no_agent; /* the built-in tools do not read it */

static void call_free(struct call *c)
{
    cJSON_Delete(c->id);
    xfree(c->args);
    xfree(c->name);
    as_run_free(&c->run);
    xfree(c);
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        buf_free(&b->out[i]);
    xfree(b->out);
    xfree(b->calls);
    xfree(b);
}

static void batch_finish(struct batch *b)
{
    struct http_req *req = b->req;
    req->on_abort = NULL;
    struct buf body = BUF_INIT(BUF_UNBOUNDED);
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->out[i].len == 0)
            continue;
        buf_append_str(&body, k++ == 0 ? (b->array ? "[" : "") : ",");
        buf_append(&body, b->out[i].data, b->out[i].len);
    }
    if (k > 0 && b->array)
        buf_append_char(&body, ']');
    if (b->session[0])
        http_resp_header(req, "Mcp-Session-Id", b->session);
    if (k == 0) {
        http_respond(req, 202, NULL, NULL, 0);
    } else if (b->sse && b->status == 200) {
        http_resp_header(req, "Cache-Control", "no-cache");
        http_resp_header(req, "X-Accel-Buffering", "no");
        http_stream_start(req, 200, "text/event-stream");
        struct buf ev = BUF_INIT(BUF_UNBOUNDED);
        buf_append_str(&ev, "event: message\ndata: ");
        buf_append(&ev, body.data, body.len);
        buf_append_str(&ev, "\n\n");
        http_stream_write(req, ev.data, ev.len);
        buf_free(&ev);
        http_stream_end(req);
    } else {
        http_respond(req, b->status, "application/json", body.data, body.len);
    }
    buf_free(&body);
    batch_free(b);
}

static void batch_one_done(struct batch *b)
{
    if (--b->pending == 0)
        batch_finish(b);
}

/* The client went away: every call in flight stops (an agent's run goes on; its answer has no reader). */
static void on_abort(struct http_req *req, void *ud)
{
    struct batch *b = ud;
    req->on_abort = NULL;
    for (size_t i = 0; i < b->n; i++) {
        struct call *c = b->calls[i];
        if (c == NULL)
            continue;
        if (c->kind == CALL_BUILTIN) {
            c->te.tool->cancel(&c->te);
            call_free(c);
        } else if (c->reading) {
            c->b = NULL; /* freed when the read ends */
        } else {
            run_forget_waiter(c->run_id, c);
            call_free(c);
        }
    }
    http_respond(req, 499, NULL, NULL, 0); /* discarded: the client is gone */
    batch_free(b);
}

/* The result of message `slot`: decorated for the era (2026-07-28: resultType and serverInfo on every result). */
static void put_result(struct batch *b, size_t slot, const cJSON *id, cJSON *result)
{
    if (b->modern) {
        if (!cJSON_GetObjectItemCaseSensitive(result, "resultType"))
            cJSON_AddStringToObject(result, "resultType", "complete");
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(result, "_meta");
        if (!cJSON_IsObject(meta)) {
            cJSON_DeleteItemFromObjectCaseSensitive(result, "_meta");
            meta = cJSON_AddObjectToObject(result, "_meta");
        }
        cJSON_AddItemToObject(meta, META_SERVER, server_info());
    }
    jr_result_json(&b->out[slot], id, result);
    cJSON_Delete(result);
}

static void put_error(struct batch *b, size_t slot, const cJSON *id, int code, const char *msg, const cJSON *data)
{
    jr_error_json(&b->out[slot], id, code, msg, data);
}

static cJSON *tool_result(const char *text, size_t len, bool is_error)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(r, "content");
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "type", "text");
    char *s = xmalloc(len + 1);
    memcpy(s, text ? text : "", len);
    s[len] = '\0';
    cJSON_AddStringToObject(t, "text", s);
    xfree(s);
    cJSON_AddItemToArray(content, t);
    cJSON_AddBoolToObject(r, "isError", is_error);
    return r;
}

/* ---- tools ---- */

static int by_name(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(cJSON_GetObjectItemCaseSensitive(x, "name")->valuestring,
                  cJSON_GetObjectItemCaseSensitive(y, "name")->valuestring);
}

/* Every agent (the configuration's first, then those added through /admin/agents, one per name) and the built-in
 * tools an agent does not shadow, in name order. */
static cJSON *tools_json(const struct config *cfg)
{
    cJSON *defs = agents_defs_json(cfg);
    size_t cap = (size_t)cJSON_GetArraySize(defs) + sizeof(builtin_tools) / sizeof(builtin_tools[0]);
    cJSON **v = xcalloc(cap ? cap : 1, sizeof(*v));
    size_t n = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, defs)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "name");
        if (!cJSON_IsString(name))
            continue;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(cJSON_GetObjectItemCaseSensitive(v[i], "name")->valuestring, name->valuestring) == 0;
        if (dup)
            continue;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", name->valuestring);
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(d, "description");
        char dbuf[200];
        snprintf(dbuf, sizeof(dbuf), "Runs the agent '%s' on the input and answers its final answer.",
                 name->valuestring);
        cJSON_AddStringToObject(t, "description",
                                cJSON_IsString(desc) && desc->valuestring[0] ? desc->valuestring : dbuf);
        cJSON *schema = cJSON_AddObjectToObject(t, "inputSchema");
        cJSON_AddStringToObject(schema, "type", "object");
        cJSON *props = cJSON_AddObjectToObject(schema, "properties");
        cJSON *in = cJSON_AddObjectToObject(props, "input");
        cJSON_AddStringToObject(in, "type", "string");
        cJSON_AddStringToObject(in, "description", "The run's input (the user's message).");
        cJSON *req = cJSON_AddArrayToObject(schema, "required");
        cJSON_AddItemToArray(req, cJSON_CreateString("input"));
        v[n++] = t;
    }
    cJSON_Delete(defs);
    for (size_t k = 0; k < sizeof(builtin_tools) / sizeof(builtin_tools[0]); k++) {
        bool shadowed = false;
        for (size_t i = 0; i < n && !shadowed; i++)
            shadowed = strcmp(cJSON_GetObjectItemCaseSensitive(v[i], "name")->valuestring, builtin_tools[k]) == 0;
        const struct agent_tool *tool = agent_tool_find(builtin_tools[k]);
        if (shadowed || tool == NULL)
            continue;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", tool->name);
        cJSON_AddStringToObject(t, "description", tool->description);
        cJSON *schema = cJSON_Parse(tool->parameters);
        cJSON_AddItemToObject(t, "inputSchema", schema ? schema : cJSON_CreateObject());
        v[n++] = t;
    }
    qsort(v, n, sizeof(*v), by_name);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, v[i]);
    xfree(v);
    return arr;
}

static void builtin_done(struct tool_exec *te, enum tool_outcome o, const char *text, size_t len)
{
    struct call *c = te->ud;
    struct batch *b = c->b;
    b->calls[c->slot] = NULL;
    put_result(b, c->slot, c->id, tool_result(text, len, o != TOOL_OK));
    call_free(c);
    batch_one_done(b);
}

static void run_read_work(uv_work_t *w)
{
    struct call *c = w->data;
    struct agent_store *st = agents_store();
    char e[256];
    c->rc = st ? agent_store_get(st, c->run_id, &c->run, e, sizeof(e)) : -1;
}

static void run_read_done(uv_work_t *w, int status)
{
    struct call *c = w->data;
    struct batch *b = c->b;
    if (b == NULL) { /* the client went away meanwhile */
        call_free(c);
        return;
    }
    b->calls[c->slot] = NULL;
    if (status != 0 || c->rc != 0) {
        put_error(b, c->slot, c->id, JR_INTERNAL_ERROR, "the run's result could not be read", NULL);
    } else {
        bool ok = strcmp(c->run.status, "succeeded") == 0;
        char msg[512];
        const char *text = c->run.output;
        if (!ok) {
            snprintf(msg, sizeof(msg), "the run %s ended %s%s%s%s%s", c->run.id, c->run.status,
                     c->run.limit_name[0] ? " (" : "", c->run.limit_name, c->run.limit_name[0] ? ")" : "",
                     c->run.error ? ": " : "");
            text = NULL;
        }
        cJSON *r;
        if (ok) {
            r = tool_result(text ? text : "", text ? strlen(text) : 0, false);
        } else {
            struct buf t = BUF_INIT(BUF_UNBOUNDED);
            buf_append_str(&t, msg);
            if (c->run.error)
                buf_append_str(&t, c->run.error);
            r = tool_result(t.data, t.len, true);
            buf_free(&t);
        }
        cJSON *meta = cJSON_AddObjectToObject(r, "_meta");
        cJSON_AddStringToObject(meta, "agentd/run_id", c->run.id);
        cJSON_AddStringToObject(meta, "agentd/run_status", c->run.status);
        put_result(b, c->slot, c->id, r);
    }
    call_free(c);
    batch_one_done(b);
}

static void agent_finished(void *ud, const char *id)
{
    struct call *c = ud;
    snprintf(c->run_id, sizeof(c->run_id), "%s", id);
    c->reading = true;
    c->w.data = c;
    if (uv_queue_work(http_server_loop(c->b->req->server), &c->w, run_read_work, run_read_done) != 0) {
        c->rc = -1;
        run_read_done(&c->w, 0);
    }
}

struct ctx {
    struct http_req *req;
    struct gateway_worker *gw;
    const struct principal *who;
    struct str secret;
};

static void tools_call(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *name = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "name") : NULL;
    const cJSON *args = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "arguments") : NULL;
    if (!cJSON_IsString(name)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"name\" must be a string", NULL);
        return;
    }
    if (args && !cJSON_IsObject(args)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"arguments\" must be an object", NULL);
        return;
    }
    char msg[300];
    struct config_agent def;
    bool agent = agent_name_problem(name->valuestring)[0] == '\0' && agents_lookup(x->req->cfg, name->valuestring, &def);
    bool builtin = false;
    for (size_t i = 0; !agent && i < sizeof(builtin_tools) / sizeof(builtin_tools[0]); i++)
        builtin = builtin || strcmp(name->valuestring, builtin_tools[i]) == 0;
    if (!agent && !builtin) {
        snprintf(msg, sizeof(msg), "Unknown tool: %.200s", name->valuestring);
        put_error(b, slot, m->id, JR_INVALID_PARAMS, msg, NULL);
        return;
    }
    struct call *c = xcalloc(1, sizeof(*c));
    c->b = b;
    c->slot = slot;
    c->id = cJSON_Duplicate(m->id, true);
    if (builtin) {
        char *a = args ? cJSON_PrintUnformatted(args) : NULL;
        c->args = xstrdup(a ? a : "{}");
        cJSON_free(a);
        c->kind = CALL_BUILTIN;
        c->name = xstrdup(name->valuestring);
        c->te = (struct tool_exec){.loop = http_server_loop(x->req->server),
                                   .def = &no_agent,
                                   .tool = agent_tool_find(name->valuestring),
                                   .name = c->name,
                                   .args = c->args,
                                   .done = builtin_done,
                                   .ud = c};
        b->calls[slot] = c;
        b->pending++;
        c->te.tool->start(&c->te);
        return;
    }
    /* an agent: {"input": ...} is the run's input; a bad one is a tool error (the model may retry) */
    c->kind = CALL_AGENT;
    cJSON *body = cJSON_CreateObject();
    const cJSON *input = args ? cJSON_GetObjectItemCaseSensitive(args, "input") : NULL;
    if (input)
        cJSON_AddItemToObject(body, "input", cJSON_Duplicate(input, true));
    cJSON_AddBoolToObject(body, "wait", true);
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    struct run_request rq;
    char param[80];
    int prc = run_request_parse(s, strlen(s), &rq, msg, sizeof(msg), param, sizeof(param));
    cJSON_free(s);
    if (prc != 0) {
        put_result(b, slot, m->id, tool_result(msg, strlen(msg), true));
        agent_def_free(&def);
        call_free(c);
        return;
    }
    uv_loop_t *loop = http_server_loop(x->req->server);
    int status = 500;
    int rc = run_start(loop, x->gw, x->req->cfg, &def, &rq, x->who, x->secret, c->run_id,
                       agent_finished, c, false, &status, msg, sizeof(msg));
    agent_def_free(&def);
    run_request_free(&rq);
    if (rc != 0) {
        put_error(b, slot, m->id, JR_INTERNAL_ERROR, msg, NULL);
        call_free(c);
        return;
    }
    b->calls[slot] = c;
    b->pending++;
}

static void tools_list(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *cursor = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "cursor") : NULL;
    if (cursor && !cJSON_IsNull(cursor)) { /* one page: no cursor is ever handed out */
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: unknown cursor", NULL);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "tools", tools_json(x->req->cfg));
    if (b->modern) {
        cJSON_AddNumberToObject(r, "ttlMs", LIST_TTL_MS);
        cJSON_AddStringToObject(r, "cacheScope", "private");
    }
    put_result(b, slot, m->id, r);
}

/* ---- resources (agent definitions) and prompts (none) ---- */

#define AGENT_URI "agentd://agents/"

static bool bad_cursor(struct batch *b, size_t slot, const struct jr_msg *m)
{
    const cJSON *cursor = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "cursor") : NULL;
    if (cursor && !cJSON_IsNull(cursor)) { /* one page: no cursor is ever handed out */
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: unknown cursor", NULL);
        return true;
    }
    return false;
}

static void put_list(struct batch *b, size_t slot, const struct jr_msg *m, const char *field, cJSON *arr)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, field, arr);
    if (b->modern) {
        cJSON_AddNumberToObject(r, "ttlMs", LIST_TTL_MS);
        cJSON_AddStringToObject(r, "cacheScope", "private");
    }
    put_result(b, slot, m->id, r);
}

/* Every agent definition as a resource agentd://agents/{name}, in name order. */
static void resources_list(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    if (bad_cursor(b, slot, m))
        return;
    cJSON *defs = agents_defs_json(x->req->cfg);
    size_t cap = (size_t)cJSON_GetArraySize(defs);
    cJSON **v = xcalloc(cap ? cap : 1, sizeof(*v));
    size_t n = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, defs)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "name");
        if (!cJSON_IsString(name))
            continue;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(cJSON_GetObjectItemCaseSensitive(v[i], "name")->valuestring, name->valuestring) == 0;
        if (dup)
            continue;
        cJSON *res = cJSON_CreateObject();
        char uri[AGENT_NAME_MAX + 32];
        snprintf(uri, sizeof(uri), AGENT_URI "%s", name->valuestring);
        cJSON_AddStringToObject(res, "uri", uri);
        cJSON_AddStringToObject(res, "name", name->valuestring);
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(d, "description");
        if (cJSON_IsString(desc) && desc->valuestring[0])
            cJSON_AddStringToObject(res, "description", desc->valuestring);
        cJSON_AddStringToObject(res, "mimeType", "application/json");
        v[n++] = res;
    }
    cJSON_Delete(defs);
    qsort(v, n, sizeof(*v), by_name);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, v[i]);
    xfree(v);
    put_list(b, slot, m, "resources", arr);
}

static void resources_read(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *uri = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "uri") : NULL;
    if (!cJSON_IsString(uri)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"uri\" must be a string", NULL);
        return;
    }
    const char *u = uri->valuestring;
    struct config_agent def;
    size_t pl = sizeof(AGENT_URI) - 1;
    if (strncmp(u, AGENT_URI, pl) != 0 || agent_name_problem(u + pl)[0] || !agents_lookup(x->req->cfg, u + pl, &def)) {
        /* not found: -32002 until 2025-11-25, -32602 from 2026-07-28 */
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "uri", u);
        put_error(b, slot, m->id, b->modern ? JR_INVALID_PARAMS : -32002, "Resource not found", data);
        cJSON_Delete(data);
        return;
    }
    cJSON *dj = agent_def_to_json(&def);
    agent_def_free(&def);
    char *text = cJSON_PrintUnformatted(dj);
    cJSON_Delete(dj);
    cJSON *contents = cJSON_CreateArray();
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "uri", u);
    cJSON_AddStringToObject(c, "mimeType", "application/json");
    cJSON_AddStringToObject(c, "text", text ? text : "{}");
    cJSON_free(text);
    cJSON_AddItemToArray(contents, c);
    put_list(b, slot, m, "contents", contents);
}

/* logging/setLevel (up to 2025-11-25): the level is checked and accepted; agentd sends no log notifications. */
static void set_level(struct batch *b, size_t slot, const struct jr_msg *m)
{
    static const char *const levels[] = {"debug", "info", "notice", "warning", "error", "critical", "alert",
                                         "emergency"};
    const cJSON *l = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "level") : NULL;
    for (size_t i = 0; cJSON_IsString(l) && i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(l->valuestring, levels[i]) == 0) {
            put_result(b, slot, m->id, cJSON_CreateObject());
            return;
        }
    put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"level\" must be a syslog level name", NULL);
}

/* completion/complete: no prompt or resource template takes arguments, so there is never a suggestion. */
static void complete(struct batch *b, size_t slot, const struct jr_msg *m)
{
    const cJSON *ref = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "ref") : NULL;
    const cJSON *arg = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "argument") : NULL;
    if (!cJSON_IsObject(ref) || !cJSON_IsObject(arg)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"ref\" and \"argument\" must be objects",
                  NULL);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON *c = cJSON_AddObjectToObject(r, "completion");
    cJSON_AddItemToObject(c, "values", cJSON_CreateArray());
    cJSON_AddNumberToObject(c, "total", 0);
    cJSON_AddBoolToObject(c, "hasMore", false);
    put_result(b, slot, m->id, r);
}

/* resources/subscribe, resources/unsubscribe (up to 2025-11-25): accepted; no update is sent (definitions change
 * through /admin/agents, and this server has no stream to send notifications/resources/updated on). */
static void subscribe(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *uri = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "uri") : NULL;
    if (!cJSON_IsString(uri)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"uri\" must be a string", NULL);
        return;
    }
    (void)x;
    put_result(b, slot, m->id, cJSON_CreateObject());
}

static cJSON *capabilities(bool modern)
{
    cJSON *caps = cJSON_CreateObject();
    cJSON *tools = cJSON_AddObjectToObject(caps, "tools");
    cJSON_AddBoolToObject(tools, "listChanged", false);
    cJSON *res = cJSON_AddObjectToObject(caps, "resources");
    if (!modern)
        cJSON_AddBoolToObject(res, "subscribe", true);
    cJSON_AddObjectToObject(caps, "prompts");
    cJSON_AddObjectToObject(caps, "completions");
    if (!modern)
        cJSON_AddObjectToObject(caps, "logging");
    return caps;
}

static void initialize(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *pv = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "protocolVersion") : NULL;
    if (!cJSON_IsString(pv)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"protocolVersion\" must be a string", NULL);
        return;
    }
    /* the client's version when this server speaks it, else the latest of the era */
    const char *v = legacy_supported(pv->valuestring) ? pv->valuestring : legacy_versions[0];
    char key_id[48];
    snprintf(key_id, sizeof(key_id), "%s", x->who && x->who->key_id ? x->who->key_id : "");
    if (mcp_session_new(key_id, v, b->session) != 0) {
        put_error(b, slot, m->id, JR_INTERNAL_ERROR, "no session could be created", NULL);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "protocolVersion", v);
    cJSON_AddItemToObject(r, "capabilities", capabilities(b->modern));
    cJSON_AddItemToObject(r, "serverInfo", server_info());
    cJSON_AddStringToObject(r, "instructions",
                            "agentd: each agent is a tool (input: the run's input; result: its final answer).");
    put_result(b, slot, m->id, r);
}

static void discover(struct batch *b, size_t slot, const struct jr_msg *m)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *sv = cJSON_AddArrayToObject(r, "supportedVersions");
    cJSON_AddItemToArray(sv, cJSON_CreateString(MODERN));
    cJSON_AddItemToObject(r, "capabilities", capabilities(b->modern));
    cJSON_AddItemToObject(r, "serverInfo", server_info());
    cJSON_AddStringToObject(r, "instructions",
                            "agentd: each agent is a tool (input: the run's input; result: its final answer).");
    cJSON_AddNumberToObject(r, "ttlMs", LIST_TTL_MS);
    cJSON_AddStringToObject(r, "cacheScope", "public");
    put_result(b, slot, m->id, r);
}

/* One valid message of the body. */
static void dispatch(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    if (m->kind != JR_REQUEST)
        return; /* notifications (initialized, cancelled, ...) and responses: accepted, no answer */
    const char *meth = m->method;
    if (strcmp(meth, "tools/list") == 0)
        tools_list(b, slot, m, x);
    else if (strcmp(meth, "tools/call") == 0)
        tools_call(b, slot, m, x);
    else if (strcmp(meth, "resources/list") == 0)
        resources_list(b, slot, m, x);
    else if (strcmp(meth, "resources/read") == 0)
        resources_read(b, slot, m, x);
    else if (strcmp(meth, "resources/templates/list") == 0 && !bad_cursor(b, slot, m))
        put_list(b, slot, m, "resourceTemplates", cJSON_CreateArray());
    else if (strcmp(meth, "prompts/list") == 0 && !bad_cursor(b, slot, m))
        put_list(b, slot, m, "prompts", cJSON_CreateArray());
    else if (strcmp(meth, "resources/templates/list") == 0 || strcmp(meth, "prompts/list") == 0)
        ; /* bad cursor: answered */
    else if (strcmp(meth, "completion/complete") == 0)
        complete(b, slot, m);
    else if (!b->modern && strcmp(meth, "logging/setLevel") == 0)
        set_level(b, slot, m);
    else if (!b->modern && (strcmp(meth, "resources/subscribe") == 0 || strcmp(meth, "resources/unsubscribe") == 0))
        subscribe(b, slot, m, x);
    else if (!b->modern && strcmp(meth, "ping") == 0)
        put_result(b, slot, m->id, cJSON_CreateObject());
    else if (!b->modern && strcmp(meth, "initialize") == 0)
        initialize(b, slot, m, x);
    else if (b->modern && strcmp(meth, "server/discover") == 0)
        discover(b, slot, m);
    else {
        char msg[200];
        snprintf(msg, sizeof(msg), "Method not found: %.128s", meth);
        put_error(b, slot, m->id, JR_METHOD_NOT_FOUND, msg, NULL);
        if (b->modern)
            b->status = 404;
    }
}

/* ---- POST ---- */

static bool media_has(const struct str *h, const char *type)
{
    return h && (memmem(h->p, h->n, type, strlen(type)) != NULL || memmem(h->p, h->n, "*/*", 3) != NULL);
}

/* Runs the messages of a checked body: answers now, or when the last tool call ends. */
static void run_body(struct http_req *req, const cJSON *root, bool modern, const struct ctx *x)
{
    struct batch *b = xcalloc(1, sizeof(*b));
    b->req = req;
    b->modern = modern;
    b->array = cJSON_IsArray(root);
    b->status = 200;
    const struct str *acc = http_req_header(req, "accept");
    b->sse = acc && memmem(acc->p, acc->n, "text/event-stream", 17) && !memmem(acc->p, acc->n, "application/json", 16);
    b->n = b->array ? (size_t)cJSON_GetArraySize(root) : 1;
    b->out = xcalloc(b->n, sizeof(*b->out));
    for (size_t i = 0; i < b->n; i++)
        buf_init(&b->out[i], BUF_UNBOUNDED);
    b->calls = xcalloc(b->n, sizeof(*b->calls));
    b->pending = 1; /* the dispatch below */
    size_t i = 0;
    const cJSON *item = b->array ? root->child : root;
    for (; item && i < b->n; item = b->array ? item->next : NULL, i++) {
        struct jr_msg m;
        jr_classify(item, &m);
        if (m.kind == JR_INVALID) {
            put_error(b, i, m.id, m.code, m.why, NULL);
            if (!b->array)
                b->status = 400;
            continue;
        }
        if (b->array && m.kind == JR_REQUEST && strcmp(m.method, "initialize") == 0) {
            put_error(b, i, m.id, JR_INVALID_REQUEST, "Invalid Request: initialize must not be part of a batch",
                      NULL);
            continue;
        }
        dispatch(b, i, &m, x);
    }
    if (b->pending > 1) {
        req->on_abort = on_abort;
        req->abort_ud = b;
    }
    batch_one_done(b);
}

static void post_modern(struct http_req *req, const cJSON *root, const char *hdr_ver, const struct ctx *x)
{
    if (cJSON_IsArray(root)) {
        respond_rpc_error(req, 400, NULL, JR_INVALID_REQUEST,
                          "Invalid Request: batches are not part of protocol version " MODERN, NULL);
        return;
    }
    struct jr_msg m;
    jr_classify(root, &m);
    if (m.kind == JR_INVALID) {
        respond_rpc_error(req, 400, m.id, m.code, m.why, NULL);
        return;
    }
    if (m.kind == JR_RESPONSE) {
        respond_rpc_error(req, 400, m.id, JR_INVALID_REQUEST,
                          "Invalid Request: clients do not send responses in protocol version " MODERN, NULL);
        return;
    }
    const cJSON *mv = jr_meta(&m, META_VERSION);
    if (!cJSON_IsString(mv)) {
        respond_rpc_error(req, 400, m.id, JR_INVALID_PARAMS,
                          "Invalid params: _meta[\"" META_VERSION "\"] is required", NULL);
        return;
    }
    if (strcmp(hdr_ver, mv->valuestring) != 0) {
        respond_rpc_error(req, 400, m.id, MCP_HEADER_MISMATCH,
                          "Header mismatch: MCP-Protocol-Version must equal _meta[\"" META_VERSION "\"]", NULL);
        return;
    }
    if (strcmp(mv->valuestring, MODERN) != 0) {
        cJSON *d = supported_json(mv->valuestring, true);
        respond_rpc_error(req, 400, m.id, MCP_UNSUPPORTED_VERSION, "Unsupported protocol version", d);
        cJSON_Delete(d);
        return;
    }
    char hv[JR_METHOD_MAX + 2];
    size_t hl;
    if (!header_copy(req, "mcp-method", hv, sizeof(hv), &hl) || hl != strlen(m.method) || strcmp(hv, m.method) != 0) {
        respond_rpc_error(req, 400, m.id, MCP_HEADER_MISMATCH, "Header mismatch: Mcp-Method must equal the method",
                          NULL);
        return;
    }
    const char *name_field = strcmp(m.method, "tools/call") == 0 || strcmp(m.method, "prompts/get") == 0 ? "name"
                             : strcmp(m.method, "resources/read") == 0                                   ? "uri"
                                                                                                         : NULL;
    if (name_field) {
        const cJSON *nv = m.params ? cJSON_GetObjectItemCaseSensitive(m.params, name_field) : NULL;
        const struct str *nh = http_req_header(req, "mcp-name");
        if (!cJSON_IsString(nv) || nh == NULL || nh->n != strlen(nv->valuestring) ||
            memcmp(nh->p, nv->valuestring, nh->n) != 0) {
            respond_rpc_error(req, 400, m.id, MCP_HEADER_MISMATCH,
                              "Header mismatch: Mcp-Name must equal the name in the body", NULL);
            return;
        }
    }
    if (m.kind == JR_REQUEST && !cJSON_IsObject(jr_meta(&m, META_CAPS))) {
        respond_rpc_error(req, 400, m.id, JR_INVALID_PARAMS, "Invalid params: _meta[\"" META_CAPS "\"] is required",
                          NULL);
        return;
    }
    run_body(req, root, true, x);
}

static void post_legacy(struct http_req *req, const cJSON *root, const char *hdr_ver, const struct ctx *x)
{
    bool init = false;
    if (cJSON_IsObject(root)) {
        const cJSON *meth = cJSON_GetObjectItemCaseSensitive(root, "method");
        init = cJSON_IsString(meth) && strcmp(meth->valuestring, "initialize") == 0;
    }
    char version[16] = "2025-03-26"; /* no header, no session: the spec's assumption */
    if (hdr_ver[0])
        snprintf(version, sizeof(version), "%s", hdr_ver);
    if (!init) {
        char sid[80];
        size_t sl;
        if (!header_copy(req, "mcp-session-id", sid, sizeof(sid), &sl)) {
            respond_rpc_error(req, 400, NULL, JR_INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required",
                              NULL);
            return;
        }
        char sv[16];
        const char *key_id = x->who && x->who->key_id ? x->who->key_id : "";
        if (sl >= sizeof(sid) || mcp_session_get(sid, key_id, sv) != 0) {
            respond_rpc_error(req, 404, NULL, MCP_SESSION_NOT_FOUND, "Session not found", NULL);
            return;
        }
        if (!hdr_ver[0])
            memcpy(version, sv, sizeof(version));
    }
    if (cJSON_IsArray(root)) {
        if (strcmp(version, "2025-03-26") != 0) {
            respond_rpc_error(req, 400, NULL, JR_INVALID_REQUEST,
                              "Invalid Request: batches are not part of protocol versions after 2025-03-26", NULL);
            return;
        }
        int n = cJSON_GetArraySize(root);
        if (n == 0 || n > JR_BATCH_MAX) {
            respond_rpc_error(req, 400, NULL, JR_INVALID_REQUEST,
                              n == 0 ? "Invalid Request: empty batch" : "Invalid Request: batch too large", NULL);
            return;
        }
    }
    run_body(req, root, false, x);
}

static void post(struct http_req *req, const struct ctx *x)
{
    const struct str *ct = http_req_header(req, "content-type");
    if (ct == NULL || memmem(ct->p, ct->n, "application/json", 16) == NULL) {
        respond_rpc_error(req, 415, NULL, JR_INVALID_REQUEST,
                          "Unsupported Media Type: Content-Type must be application/json", NULL);
        return;
    }
    const struct str *acc = http_req_header(req, "accept");
    if (acc && !media_has(acc, "application/json") && !media_has(acc, "text/event-stream")) {
        respond_rpc_error(req, 406, NULL, JR_INVALID_REQUEST,
                          "Not Acceptable: accept application/json and text/event-stream", NULL);
        return;
    }
    if (req->body.len > JR_MESSAGE_MAX) {
        respond_rpc_error(req, 413, NULL, JR_INVALID_REQUEST, "Invalid Request: message too large", NULL);
        return;
    }
    cJSON *root = jr_parse(req->body.data, req->body.len);
    if (root == NULL) {
        respond_rpc_error(req, 400, NULL, JR_PARSE_ERROR, "Parse error: the body is not JSON", NULL);
        return;
    }
    char hdr_ver[24];
    size_t hl;
    header_copy(req, "mcp-protocol-version", hdr_ver, sizeof(hdr_ver), &hl);
    bool modern = strcmp(hdr_ver, MODERN) == 0;
    if (!modern && cJSON_IsObject(root)) {
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
        const cJSON *meta = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "_meta") : NULL;
        modern = cJSON_IsObject(meta) && cJSON_GetObjectItemCaseSensitive(meta, META_VERSION) != NULL;
    }
    if (!modern && hl && (hl >= sizeof(hdr_ver) || !legacy_supported(hdr_ver))) {
        cJSON *d = supported_json(hdr_ver, false);
        respond_rpc_error(req, 400, NULL, MCP_UNSUPPORTED_VERSION, "Unsupported protocol version", d);
        cJSON_Delete(d);
    } else if (modern) {
        post_modern(req, root, hdr_ver, x);
    } else {
        post_legacy(req, root, hdr_ver, x);
    }
    cJSON_Delete(root);
}

void mcp_http_handle(struct http_req *req, struct gateway_worker *gw)
{
    if (!origin_ok(req)) {
        respond_rpc_error(req, 403, NULL, JR_INVALID_REQUEST, "Forbidden: Origin or Host not allowed", NULL);
        return;
    }
    struct ctx x = {.req = req, .gw = gw};
    if (authenticate(req, &x.who, &x.secret) != 0)
        return;
    char hdr_ver[24];
    size_t hl;
    header_copy(req, "mcp-protocol-version", hdr_ver, sizeof(hdr_ver), &hl);
    if (req->method == HTTP_M_POST) {
        post(req, &x);
    } else if (req->method == HTTP_M_DELETE && strcmp(hdr_ver, MODERN) != 0) {
        char sid[80];
        size_t sl;
        const char *key_id = x.who && x.who->key_id ? x.who->key_id : "";
        if (!header_copy(req, "mcp-session-id", sid, sizeof(sid), &sl))
            respond_rpc_error(req, 400, NULL, JR_INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required",
                              NULL);
        else if (sl >= sizeof(sid) || mcp_session_end(sid, key_id) != 0)
            respond_rpc_error(req, 404, NULL, MCP_SESSION_NOT_FOUND, "Session not found", NULL);
        else
            http_respond(req, 200, NULL, NULL, 0);
    } else {
        /* GET: no server-initiated stream (the spec allows 405); 2026-07-28: POST only */
        http_resp_header(req, "Allow", strcmp(hdr_ver, MODERN) == 0 ? "POST" : "POST, DELETE");
        respond_rpc_error(req, 405, NULL, JR_INVALID_REQUEST, "Method Not Allowed", NULL);
    }
    principal_release(x.who);
}
