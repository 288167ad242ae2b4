/* mcp_client.c: the MCP client over Streamable HTTP (mcp_client.h). */
#include "agent/mcp_client.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "agent/agent_config.h"
#include "agent/mcp_stdio.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "net/upstream.h"

/* ================= the response parser ================= */

static int on_message(struct mcp_resp *p, const char *json, size_t len);

static int on_sse_event(const struct sse_event *ev, void *ud)
{
    struct mcp_resp *p = ud;
    if (ev->data.n == 0)
        return 0; /* a priming event (an id, empty data) or a comment */
    int rc = on_message(p, ev->data.p, ev->data.n);
    return rc != 0 ? rc : 0;
}

void mcp_resp_init(struct mcp_resp *p, bool sse, int64_t want_id, size_t max)
{
    memset(p, 0, sizeof(*p));
    p->sse = sse;
    p->want_id = want_id;
    p->max = max;
    buf_init(&p->body, max + 1);
    sse_parser_init(&p->sp, max, on_sse_event, p);
}

void mcp_resp_free(struct mcp_resp *p)
{
    sse_parser_free(&p->sp);
    buf_free(&p->body);
    cJSON_Delete(p->result);
    p->result = NULL;
}

static int fail(struct mcp_resp *p, const char *why)
{
    p->state = -1;
    snprintf(p->message, sizeof(p->message), "%s", why);
    return -1;
}

/* One JSON-RPC message: 1 when it answers our request, 0 when it is something else (skipped), -1 when malformed
 * or a response to another id (the server mixed up streams). */
static int on_message(struct mcp_resp *p, const char *json, size_t len)
{
    cJSON *m = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(m);
        return fail(p, "the server sent a message that is not a JSON object");
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(m, "method");
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(m, "result");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(m, "error");
    if (method) { /* a notification or a request of the server's: not our answer */
        cJSON_Delete(m);
        return 0;
    }
    if (!cJSON_IsNumber(id) || id->valuedouble != (double)p->want_id) {
        cJSON_Delete(m);
        return fail(p, "the server answered another request id");
    }
    if (cJSON_IsObject(result)) {
        p->result = cJSON_DetachItemViaPointer(m, (cJSON *)result);
        p->state = 1;
        cJSON_Delete(m);
        return 1;
    }
    if (cJSON_IsObject(error)) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(error, "message");
        p->rpc_error = true;
        double c = cJSON_IsNumber(code) ? code->valuedouble : 0;
        p->rpc_code = c >= -2147483648.0 && c <= 2147483647.0 ? (int64_t)c : 0; /* JSON-RPC codes are integers */
        snprintf(p->message, sizeof(p->message), "%s", cJSON_IsString(msg) ? msg->valuestring : "(no message)");
        p->state = 1;
        cJSON_Delete(m);
        return 1;
    }
    cJSON_Delete(m);
    return fail(p, "the server's response has neither a result object nor an error object");
}

int mcp_resp_feed(struct mcp_resp *p, const char *data, size_t len)
{
    if (p->state != 0)
        return p->state;
    p->seen += len;
    if (p->seen > p->max)
        return fail(p, "the server's response is too large");
    if (!p->sse) {
        if (buf_append(&p->body, data, len) != 0)
            return fail(p, "the server's response is too large");
        return 0;
    }
    int rc = sse_feed(&p->sp, data, len);
    if (rc == -1 && p->state == 0)
        return fail(p, "an event of the server's stream is too large");
    return p->state;
}

int mcp_resp_finish(struct mcp_resp *p)
{
    if (p->state != 0)
        return p->state;
    if (p->sse) {
        sse_finish(&p->sp);
        if (p->state == 0)
            fail(p, "the server's stream ended without the response");
        return p->state;
    }
    if (p->body.len == 0)
        return fail(p, "the server's response is empty");
    int rc = on_message(p, p->body.data, p->body.len);
    if (rc == 0)
        return fail(p, "the server answered a request of its own instead of a response");
    return p->state;
}

/* ---- results ---- */

static bool tool_name_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return false;
    return true;
}

int mcp_tools_to_openai(const cJSON *result, const char *server, cJSON *arr, char **next_cursor)
{
    *next_cursor = NULL;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(result, "tools");
    if (!cJSON_IsArray(tools))
        return -1;
    const cJSON *nc = cJSON_GetObjectItemCaseSensitive(result, "nextCursor");
    if (cJSON_IsString(nc) && nc->valuestring[0] && strlen(nc->valuestring) < 4096)
        *next_cursor = xstrdup(nc->valuestring);
    int added = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(t, "description");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(t, "inputSchema");
        if (!cJSON_IsString(name) || !tool_name_ok(name->valuestring))
            continue;
        char full[MCP_TOOL_NAME_MAX + 1];
        int n = snprintf(full, sizeof(full), "%s__%s", server, name->valuestring);
        if (n < 0 || (size_t)n >= sizeof(full))
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(o, "function");
        cJSON_AddStringToObject(fn, "name", full);
        cJSON_AddStringToObject(fn, "description", cJSON_IsString(desc) ? desc->valuestring : "");
        cJSON_AddItemToObject(fn, "parameters",
                              cJSON_IsObject(schema) ? cJSON_Duplicate(schema, true) : cJSON_CreateObject());
        cJSON_AddItemToArray(arr, o);
        added++;
    }
    return added;
}

enum tool_outcome mcp_call_text(const cJSON *result, struct buf *out)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(result, "content");
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(result, "structuredContent");
    bool is_error = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, "isError"));
    bool any = false;
    const cJSON *items = cJSON_IsArray(content) ? content : NULL;
    const cJSON *c;
    cJSON_ArrayForEach(c, items)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
        const char *ty = cJSON_IsString(type) ? type->valuestring : "";
        if (any)
            buf_append_str(out, "\n");
        any = true;
        if (strcmp(ty, "text") == 0) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
            if (cJSON_IsString(text))
                buf_append_str(out, text->valuestring);
        } else if (strcmp(ty, "image") == 0 || strcmp(ty, "audio") == 0) {
            const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "mimeType");
            const cJSON *data = cJSON_GetObjectItemCaseSensitive(c, "data");
            buf_printf(out, "[%s %.64s, %zu bytes of base64]", ty, cJSON_IsString(mt) ? mt->valuestring : "?",
                       cJSON_IsString(data) ? strlen(data->valuestring) : (size_t)0);
        } else if (strcmp(ty, "resource_link") == 0) {
            const cJSON *uri = cJSON_GetObjectItemCaseSensitive(c, "uri");
            buf_printf(out, "[resource_link %.1024s]", cJSON_IsString(uri) ? uri->valuestring : "?");
        } else if (strcmp(ty, "resource") == 0) {
            const cJSON *res = cJSON_GetObjectItemCaseSensitive(c, "resource");
            const cJSON *uri = cJSON_GetObjectItemCaseSensitive(res, "uri");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(res, "text");
            if (cJSON_IsString(text))
                buf_append_str(out, text->valuestring);
            else
                buf_printf(out, "[resource %.1024s]", cJSON_IsString(uri) ? uri->valuestring : "?");
        } else {
            buf_printf(out, "[content of type %.64s]", ty[0] ? ty : "?");
        }
    }
    if (!any && sc) {
        char *s = cJSON_PrintUnformatted(sc);
        if (s)
            buf_append_str(out, s);
        cJSON_free(s);
        any = true;
    }
    if (!cJSON_IsArray(content) && !sc)
        return TOOL_ERROR; /* not a CallToolResult */
    return is_error ? TOOL_ERROR : TOOL_OK;
}

/* ================= sessions and requests (per loop) ================= */

struct mcp_sess {
    struct mcp_sess *next;
    char *url;
    char *session_id;   /* NULL: none (not initialized, or the server has no sessions) */
    char version[32];
    int era;            /* 0: not known yet, ERA_STATELESS (2026-07-28), ERA_SESSION (initialize) */
    bool ready;         /* ERA_SESSION: initialized */
    int64_t next_id;
    cJSON *tools;       /* cached OpenAI tools of this server (for `server`), or NULL */
    char *tools_server; /* the name they were made under */
    uint64_t tools_expiry_ms;
};

enum { ERA_STATELESS = 1, ERA_SESSION = 2 };
/* One operation on one HTTP server: [server/discover,] [initialize, notifications/initialized,] then the request. */
enum op_phase { PH_DISCOVER, PH_INIT, PH_INITIALIZED, PH_MAIN };
#define META_VERSION "io.modelcontextprotocol/protocolVersion"
#define META_CAPS "io.modelcontextprotocol/clientCapabilities"

static _Thread_local struct upstream *tl_up;
static _Thread_local struct mcp_sess *tl_sess;
static _Thread_local bool tl_done;

/* The session of a server: by URL, or for a stdio server by name and command (its process has its own). */
static struct mcp_sess *sess_get(const struct agent_mcp_server *srv)
{
    char key[4200];
    if (srv->url)
        snprintf(key, sizeof(key), "%s", srv->url);
    else
        snprintf(key, sizeof(key), "stdio\x1f%s\x1f%s", srv->name, srv->command ? srv->command : "");
    for (struct mcp_sess *s = tl_sess; s; s = s->next)
        if (strcmp(s->url, key) == 0)
            return s;
    struct mcp_sess *s = xcalloc(1, sizeof(*s));
    s->url = xstrdup(key);
    s->next_id = 1;
    s->next = tl_sess;
    tl_sess = s;
    return s;
}

static void sess_reset(struct mcp_sess *s)
{
    xfree(s->session_id);
    s->session_id = NULL;
    s->ready = false;
}

/* The phase an op starts in, from what is known of its server. */
static enum op_phase first_phase(const struct mcp_sess *s)
{
    if (s == NULL || s->era == 0)
        return PH_DISCOVER;
    if (s->era == ERA_STATELESS)
        return PH_MAIN;
    return s->ready ? PH_MAIN : PH_INIT;
}

/* A server/discover result that names the stateless version. */
static bool discover_ok(const cJSON *result)
{
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(result, "supportedVersions");
    const cJSON *v;
    if (!cJSON_IsArray(sv))
        return false;
    cJSON_ArrayForEach(v, sv)
    {
        if (cJSON_IsString(v) && strcmp(v->valuestring, MCP_STATELESS_VERSION) == 0)
            return true;
    }
    return false;
}

void mcp_loop_done(void)
{
    if (tl_up)
        upstream_free(tl_up);
    tl_up = NULL;
    mcp_stdio_loop_done();
    while (tl_sess) {
        struct mcp_sess *s = tl_sess;
        tl_sess = s->next;
        xfree(s->url);
        xfree(s->session_id);
        xfree(s->tools_server);
        cJSON_Delete(s->tools);
        xfree(s);
    }
    tl_done = true;
}

/* One operation on one server (tools/list pages, tools/call): the phases above over HTTP, one request over stdio. */


struct op;
typedef void op_done_fn(struct op *o, int ok, const char *why); /* ok: 1 (o->resp has the answer) or 0 */

struct op {
    uv_loop_t *loop;
    const struct agent_mcp_server *srv; /* valid while the op lives (the run's definition) */
    struct mcp_sess *sess;
    enum op_phase phase;
    bool retried;     /* a 404 on the session was retried once */
    char *method;     /* the main request */
    cJSON *params;    /* its params (owned) */
    struct up_xfer *x;
    struct mcp_stdio_req *sr; /* a stdio server's request */
    struct mcp_resp resp;
    bool resp_live;
    int64_t id;
    char new_session[256];
    op_done_fn *done;
    void *ud;
    enum tool_outcome fail_outcome; /* a call's outcome when it fails (TOOL_ERROR unless said) */
    mcp_request_fn *ucb;            /* mcp_request_start's caller */
    void *uud;
    uv_timer_t *later; /* a failure answered on the next turn */
    char later_why[256];
};

static void op_send(struct op *o);

static void later_closed(uv_handle_t *h)
{
    xfree(h);
}

static void op_end(struct op *o, int ok, const char *why)
{
    o->done(o, ok, why);
}

static void later_fire(uv_timer_t *t)
{
    struct op *o = t->data;
    uv_close((uv_handle_t *)t, later_closed);
    o->later = NULL;
    op_end(o, 0, o->later_why);
}

static void op_fail_later(struct op *o, const char *why)
{
    snprintf(o->later_why, sizeof(o->later_why), "%s", why);
    o->later = xmalloc(sizeof(*o->later));
    uv_timer_init(o->loop, o->later);
    o->later->data = o;
    uv_timer_start(o->later, later_fire, 0, 0);
}

static void op_free(struct op *o)
{
    if (o->x)
        upstream_cancel(o->x);
    if (o->sr)
        mcp_stdio_cancel(o->sr);
    if (o->later) {
        uv_timer_stop(o->later);
        uv_close((uv_handle_t *)o->later, later_closed);
    }
    if (o->resp_live)
        mcp_resp_free(&o->resp);
    cJSON_Delete(o->params);
    xfree(o->method);
    xfree(o);
}

static void on_headers(struct up_xfer *x, void *ud)
{
    struct op *o = ud;
    char ct[128] = "";
    (void)up_xfer_header(x, "content-type", ct, sizeof(ct));
    bool sse = strncasecmp(ct, "text/event-stream", 17) == 0;
    if (o->resp_live)
        mcp_resp_free(&o->resp);
    mcp_resp_init(&o->resp, sse, o->id, MCP_MAX_RESPONSE);
    o->resp_live = true;
    if (o->phase == PH_INIT) {
        o->new_session[0] = '\0';
        (void)up_xfer_header(x, "mcp-session-id", o->new_session, sizeof(o->new_session));
    }
}

static int on_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    struct op *o = ud;
    if (!o->resp_live || x->status / 100 != 2) {
        if (!o->resp_live) {
            mcp_resp_init(&o->resp, false, o->id, MCP_MAX_RESPONSE);
            o->resp_live = true;
        }
        if (o->resp.body.len < 300)
            (void)buf_append(&o->resp.body, data, len < 300 ? len : 300);
        return UP_DATA_OK;
    }
    int rc = mcp_resp_feed(&o->resp, data, len);
    return rc == 0 ? UP_DATA_OK : UP_DATA_ABORT; /* answered (or broken): the rest of the stream is not needed */
}

static bool session_id_ok(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return false;
    return true;
}

static void on_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct op *o = ud;
    o->x = NULL;
    char why[320];
    int status = x->status;
    if (r != UP_OK && !(r == UP_E_ABORTED && o->resp_live && o->resp.state != 0)) {
        snprintf(why, sizeof(why), "MCP server %s: %s", o->srv->name, up_xfer_error(x));
        op_end(o, 0, why);
        return;
    }
    if (o->phase == PH_DISCOVER) {
        /* 2026-07-28 when the server names it; anything else (an HTTP error, a JSON-RPC error, no such method:
         * a session-era server) is the session era: initialize */
        bool modern = status / 100 == 2 && o->resp_live && mcp_resp_finish(&o->resp) == 1 && !o->resp.rpc_error &&
                      discover_ok(o->resp.result);
        if (o->sess->era == 0)
            log_info("MCP server %s speaks %s", o->srv->name,
                     modern ? "protocol version " MCP_STATELESS_VERSION : "the session era (initialize)");
        o->sess->era = modern ? ERA_STATELESS : ERA_SESSION;
        o->phase = first_phase(o->sess);
        op_send(o);
        return;
    }
    if (o->phase == PH_INITIALIZED) { /* a notification: 202 (any 2xx) */
        if (status / 100 != 2) {
            snprintf(why, sizeof(why), "MCP server %s answered HTTP %d to notifications/initialized", o->srv->name,
                     status);
            op_end(o, 0, why);
            return;
        }
        o->sess->ready = true;
        o->phase = PH_MAIN;
        op_send(o);
        return;
    }
    if (status == 404 && o->sess->session_id && !o->retried) {
        /* the server ended the session: a new one, once */
        o->retried = true;
        sess_reset(o->sess);
        o->phase = PH_INIT;
        op_send(o);
        return;
    }
    if (status / 100 != 2) {
        const char *body = o->resp_live && o->resp.body.data ? o->resp.body.data : "";
        int bl = o->resp_live ? (int)(o->resp.body.len < 300 ? o->resp.body.len : 300) : 0;
        if (o->sess->era == ERA_STATELESS && status == 400 && !o->retried && memmem(body, (size_t)bl, "-32022", 6)) {
            /* the server no longer takes our version (it was changed): negotiate again, once */
            o->retried = true;
            o->sess->era = 0;
            o->phase = PH_DISCOVER;
            op_send(o);
            return;
        }
        snprintf(why, sizeof(why), "MCP server %s answered HTTP %d: %.*s", o->srv->name, status, bl, body);
        op_end(o, 0, why);
        return;
    }
    if (!o->resp_live || mcp_resp_finish(&o->resp) != 1) {
        snprintf(why, sizeof(why), "MCP server %s: %s", o->srv->name,
                 o->resp_live ? o->resp.message : "no response body");
        op_end(o, 0, why);
        return;
    }
    if (o->phase == PH_INIT) {
        if (o->resp.rpc_error) {
            snprintf(why, sizeof(why), "MCP server %s refused initialize: %s", o->srv->name, o->resp.message);
            op_end(o, 0, why);
            return;
        }
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(o->resp.result, "protocolVersion");
        const char *v = cJSON_IsString(pv) ? pv->valuestring : "";
        if (!mcp_version_known(v)) {
            snprintf(why, sizeof(why), "MCP server %s speaks protocol version '%.32s', which agentd does not",
                     o->srv->name, v);
            op_end(o, 0, why);
            return;
        }
        snprintf(o->sess->version, sizeof(o->sess->version), "%s", v);
        xfree(o->sess->session_id);
        o->sess->session_id =
            o->new_session[0] && session_id_ok(o->new_session) ? xstrdup(o->new_session) : NULL;
        o->phase = PH_INITIALIZED;
        op_send(o);
        return;
    }
    const cJSON *rt = o->resp.result ? cJSON_GetObjectItemCaseSensitive(o->resp.result, "resultType") : NULL;
    if (cJSON_IsString(rt) && strcmp(rt->valuestring, "complete") != 0) {
        snprintf(why, sizeof(why), "MCP server %s answered resultType '%.32s', which agentd does not support",
                 o->srv->name, rt->valuestring);
        op_end(o, 0, why);
        return;
    }
    op_end(o, 1, NULL);
}

/* The headers of the stateless era: the version, the method and (for the methods that have one) the name. */
static void stateless_headers(struct up_request *req, const char *method, const cJSON *params)
{
    up_request_header(req, "MCP-Protocol-Version", MCP_STATELESS_VERSION);
    up_request_header(req, "Mcp-Method", method);
    const char *field = strcmp(method, "tools/call") == 0 || strcmp(method, "prompts/get") == 0 ? "name"
                        : strcmp(method, "resources/read") == 0                              ? "uri"
                                                                                             : NULL;
    const cJSON *v = field && params ? cJSON_GetObjectItemCaseSensitive(params, field) : NULL;
    if (!cJSON_IsString(v))
        return;
    for (const char *c = v->valuestring; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            return; /* not a plain header value: left out (the server refuses the request, a tool error) */
    up_request_header(req, "Mcp-Name", v->valuestring);
}

/* params with the stateless era's _meta (a new object). */
static cJSON *stateless_params(const cJSON *params)
{
    cJSON *p = cJSON_IsObject(params) ? cJSON_Duplicate(params, true) : cJSON_CreateObject();
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(p, "_meta");
    if (!cJSON_IsObject(meta)) {
        cJSON_DeleteItemFromObjectCaseSensitive(p, "_meta");
        meta = cJSON_AddObjectToObject(p, "_meta");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(meta, META_VERSION);
    cJSON_DeleteItemFromObjectCaseSensitive(meta, META_CAPS);
    cJSON_AddStringToObject(meta, META_VERSION, MCP_STATELESS_VERSION);
    cJSON_AddObjectToObject(meta, META_CAPS);
    return p;
}

static const struct up_callbacks op_cb = {on_headers, on_data, on_done};

/* A stdio server's answer, as an HTTP one would have left it in o->resp. */
static void stdio_answered(void *ud, struct mcp_answer *a)
{
    struct op *o = ud;
    o->sr = NULL;
    if (o->resp_live)
        mcp_resp_free(&o->resp);
    mcp_resp_init(&o->resp, false, o->id, MCP_MAX_RESPONSE);
    o->resp_live = true;
    if (!a->ok) {
        op_end(o, 0, a->message);
        return;
    }
    o->resp.state = 1;
    o->resp.rpc_error = a->rpc_error;
    o->resp.rpc_code = a->code;
    snprintf(o->resp.message, sizeof(o->resp.message), "%s", a->message ? a->message : "");
    o->resp.result = a->result;
    a->result = NULL;
    op_end(o, 1, NULL);
}

static void op_send(struct op *o)
{
    if (tl_done) {
        op_fail_later(o, "MCP tools are not available while the daemon stops");
        return;
    }
    if (o->srv->command) { /* stdio: the process does its own initialize */
        o->phase = PH_MAIN;
        o->sr = mcp_stdio_request(o->loop, o->srv, o->method, o->params ? cJSON_Duplicate(o->params, true) : NULL,
                                  stdio_answered, o);
        return;
    }
    if (tl_up == NULL)
        tl_up = upstream_new(o->loop, (struct up_options){0});
    if ((o->phase == PH_INIT && o->sess->ready) || (o->phase == PH_DISCOVER && o->sess->era != 0))
        o->phase = first_phase(o->sess); /* another op found out meanwhile */
    bool stateless = o->phase == PH_DISCOVER || (o->phase == PH_MAIN && o->sess->era == ERA_STATELESS);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "jsonrpc", "2.0");
    const char *method = o->method;
    cJSON *sparams = NULL;
    if (stateless) {
        o->id = o->sess->next_id++;
        cJSON_AddNumberToObject(m, "id", (double)o->id);
        method = o->phase == PH_DISCOVER ? "server/discover" : o->method;
        cJSON_AddStringToObject(m, "method", method);
        sparams = stateless_params(o->phase == PH_DISCOVER ? NULL : o->params);
        cJSON_AddItemReferenceToObject(m, "params", sparams);
    } else if (o->phase == PH_INITIALIZED) {
        cJSON_AddStringToObject(m, "method", "notifications/initialized");
    } else {
        o->id = o->sess->next_id++;
        cJSON_AddNumberToObject(m, "id", (double)o->id);
        if (o->phase == PH_INIT) {
            cJSON_AddStringToObject(m, "method", "initialize");
            cJSON *p = cJSON_AddObjectToObject(m, "params");
            cJSON_AddStringToObject(p, "protocolVersion", MCP_PROTOCOL_VERSION);
            cJSON_AddObjectToObject(p, "capabilities");
            cJSON *ci = cJSON_AddObjectToObject(p, "clientInfo");
            cJSON_AddStringToObject(ci, "name", "agentd");
            cJSON_AddStringToObject(ci, "version", "1");
        } else {
            cJSON_AddStringToObject(m, "method", o->method);
            if (o->params)
                cJSON_AddItemReferenceToObject(m, "params", o->params);
        }
    }
    char *body = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    struct up_request req;
    up_request_init(&req);
    req.method = "POST";
    buf_append_str(&req.url, o->srv->url);
    buf_append_str(&req.body, body);
    cJSON_free(body);
    up_request_header(&req, "Content-Type", "application/json");
    up_request_header(&req, "Accept", "application/json, text/event-stream");
    if (stateless) {
        stateless_headers(&req, method, sparams);
    } else if (o->phase == PH_INITIALIZED && o->new_session[0] && session_id_ok(o->new_session)) {
        /* this op's own new session (another op may have made one meanwhile) */
        up_request_header(&req, "Mcp-Session-Id", o->new_session);
        up_request_header(&req, "MCP-Protocol-Version", o->sess->version);
    } else if (o->phase != PH_INIT) {
        if (o->sess->session_id)
            up_request_header(&req, "Mcp-Session-Id", o->sess->session_id);
        up_request_header(&req, "MCP-Protocol-Version", o->sess->version);
    }
    for (size_t i = 0; i < o->srv->headers.n; i++) {
        const char *h = o->srv->headers.v[i], *colon = strchr(h, ':');
        if (colon == NULL)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(colon - h), h);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        up_request_header(&req, name, v);
    }
    cJSON_Delete(sparams);
    req.connect_timeout_ms = 10000;
    req.timeout_ms = (long)o->srv->timeout_ms;
    if (o->resp_live) {
        mcp_resp_free(&o->resp);
        o->resp_live = false;
    }
    o->x = upstream_start(tl_up, &req, &op_cb, o);
    up_request_free(&req);
    if (o->x == NULL)
        op_fail_later(o, upstream_last_error(tl_up));
}

/* An operation on srv's session, not yet sent (op_start sends it): the caller may fill more fields first. */
static struct op *op_alloc(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *method, cJSON *params,
                           op_done_fn *done, void *ud)
{
    struct op *o = xcalloc(1, sizeof(*o));
    o->loop = loop;
    o->srv = srv;
    o->sess = tl_done ? NULL : sess_get(srv);
    o->phase = first_phase(o->sess);
    o->method = xstrdup(method);
    o->params = params;
    o->done = done;
    o->ud = ud;
    return o;
}

/* Sends o, or fails it on the next loop turn with stopping when the daemon stops (no session). */
static void op_start(struct op *o, const char *stopping)
{
    if (o->sess == NULL)
        op_fail_later(o, stopping);
    else
        op_send(o);
}

static struct op *op_new(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *method, cJSON *params,
                         op_done_fn *done, void *ud)
{
    struct op *o = op_alloc(loop, srv, method, params, done, ud);
    op_start(o, "MCP tools are not available while the daemon stops");
    return o;
}

/* ================= listing every server's tools ================= */

struct mcp_list {
    uv_loop_t *loop;
    const struct cfg_list *servers;
    size_t i;         /* the server being listed */
    cJSON *arr;       /* what the caller gets */
    cJSON *page_acc;  /* this server's tools so far */
    int pages;
    int64_t ttl_ms;   /* the server's ttlMs for this list (-1: none) */
    struct op *op;
    uv_timer_t *t;    /* the answer when everything came from the cache */
    mcp_list_fn *cb;
    void *ud;
};

static void list_next(struct mcp_list *l);

static const struct agent_mcp_server *srv_at(const struct cfg_list *servers, size_t i)
{
    return &((const struct agent_mcp_server *)servers->items)[i];
}

static void list_page_done(struct op *o, int ok, const char *why)
{
    struct mcp_list *l = o->ud;
    const struct agent_mcp_server *srv = srv_at(l->servers, l->i);
    char *cursor = NULL;
    if (ok && o->resp.rpc_error) {
        ok = 0;
        log_warn("MCP server %s: tools/list failed: %s", srv->name, o->resp.message);
    } else if (!ok) {
        log_warn("%s", why);
    } else if (mcp_tools_to_openai(o->resp.result, srv->name, l->page_acc, &cursor) < 0) {
        ok = 0;
        log_warn("MCP server %s: tools/list result has no tools array", srv->name);
    } else {
        /* 2026-07-28: the server says how long its list stays good; the shorter of that and tools_ttl wins */
        const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(o->resp.result, "ttlMs");
        if (cJSON_IsNumber(ttl) && ttl->valuedouble >= 0 && (l->ttl_ms < 0 || ttl->valuedouble < l->ttl_ms))
            l->ttl_ms = (int64_t)ttl->valuedouble;
    }
    l->op = NULL;
    op_free(o);
    if (ok && cursor && ++l->pages < 16) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "cursor", cursor);
        xfree(cursor);
        l->op = op_new(l->loop, srv, "tools/list", p, list_page_done, l);
        return;
    }
    xfree(cursor);
    if (ok) { /* cache this server's tools */
        struct mcp_sess *s = tl_done ? NULL : sess_get(srv);
        if (s) {
            cJSON_Delete(s->tools);
            xfree(s->tools_server);
            s->tools = cJSON_Duplicate(l->page_acc, true);
            s->tools_server = xstrdup(srv->name);
            int64_t ttl = l->ttl_ms >= 0 && l->ttl_ms < srv->tools_ttl_ms ? l->ttl_ms : srv->tools_ttl_ms;
            s->tools_expiry_ms = (time_mono_us() / 1000) + (uint64_t)ttl;
        }
    }
    cJSON *t;
    cJSON_ArrayForEach(t, l->page_acc) cJSON_AddItemToArray(l->arr, cJSON_Duplicate(t, true));
    cJSON_Delete(l->page_acc);
    l->page_acc = NULL;
    l->i++;
    list_next(l);
}

static void list_finish(struct mcp_list *l)
{
    cJSON *arr = l->arr;
    l->arr = NULL;
    mcp_list_fn *cb = l->cb;
    void *ud = l->ud;
    xfree(l);
    cb(ud, arr);
}

static void t_closed(uv_handle_t *h)
{
    xfree(h);
}

static void list_timer_fire(uv_timer_t *t)
{
    struct mcp_list *l = t->data;
    uv_close((uv_handle_t *)t, t_closed);
    l->t = NULL;
    list_finish(l);
}

/* From the cache where it is fresh, else a tools/list; at the end, the answer (on a later turn). */
static void list_next(struct mcp_list *l)
{
    for (; l->i < l->servers->n; l->i++) {
        const struct agent_mcp_server *srv = srv_at(l->servers, l->i);
        struct mcp_sess *s = tl_done ? NULL : sess_get(srv);
        if (s && s->tools && s->tools_server && strcmp(s->tools_server, srv->name) == 0 &&
            (time_mono_us() / 1000) < s->tools_expiry_ms) {
            cJSON *t;
            cJSON_ArrayForEach(t, s->tools) cJSON_AddItemToArray(l->arr, cJSON_Duplicate(t, true));
            continue;
        }
        l->page_acc = cJSON_CreateArray();
        l->pages = 0;
        l->ttl_ms = -1;
        l->op = op_new(l->loop, srv, "tools/list", NULL, list_page_done, l);
        return;
    }
    if (l->t == NULL && l->op == NULL) {
        /* always on a later turn: never from inside mcp_list_tools */
        l->t = xmalloc(sizeof(*l->t));
        uv_timer_init(l->loop, l->t);
        l->t->data = l;
        uv_timer_start(l->t, list_timer_fire, 0, 0);
    }
}

struct mcp_list *mcp_list_tools(uv_loop_t *loop, const struct cfg_list *servers, mcp_list_fn *cb, void *ud)
{
    struct mcp_list *l = xcalloc(1, sizeof(*l));
    l->loop = loop;
    l->servers = servers;
    l->arr = cJSON_CreateArray();
    l->cb = cb;
    l->ud = ud;
    list_next(l);
    return l;
}

void mcp_list_cancel(struct mcp_list *l)
{
    if (l == NULL)
        return;
    if (l->op)
        op_free(l->op);
    if (l->t) {
        uv_timer_stop(l->t);
        uv_close((uv_handle_t *)l->t, t_closed);
    }
    cJSON_Delete(l->arr);
    cJSON_Delete(l->page_acc);
    xfree(l);
}

/* ================= calling a tool ================= */

const struct agent_mcp_server *mcp_server_of(const struct cfg_list *servers, const char *name)
{
    const char *sep = name ? strstr(name, "__") : NULL;
    if (sep == NULL || sep[2] == '\0')
        return NULL;
    for (size_t i = 0; i < servers->n; i++) {
        const struct agent_mcp_server *s = srv_at(servers, i);
        size_t n = strlen(s->name);
        if (n == (size_t)(sep - name) && strncmp(s->name, name, n) == 0)
            return s;
    }
    return NULL;
}

static void call_done(struct op *o, int ok, const char *why)
{
    struct tool_exec *te = o->ud;
    te->state = NULL;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    enum tool_outcome out = TOOL_ERROR;
    if (!ok && o->fail_outcome != TOOL_OK)
        out = o->fail_outcome;
    if (!ok)
        buf_append_str(&b, why);
    else if (o->resp.rpc_error)
        buf_printf(&b, "MCP error %" PRId64 ": %s", o->resp.rpc_code, o->resp.message);
    else
        out = mcp_call_text(o->resp.result, &b);
    buf_append(&b, "", 0);
    op_free(o);
    te->done(te, out, b.data ? b.data : "", b.len);
    buf_free(&b);
}

static void mcp_tool_start(struct tool_exec *te)
{
    const struct agent_mcp_server *srv = te->def ? mcp_server_of(&te->def->mcp_servers, te->name) : NULL;
    cJSON *args = cJSON_Parse(te->args);
    if (srv == NULL || !cJSON_IsObject(args)) { /* answered on the next turn, by an op that sends nothing */
        cJSON_Delete(args);
        struct op *o = xcalloc(1, sizeof(*o));
        o->loop = te->loop;
        o->srv = srv;
        o->method = xstrdup("tools/call");
        o->done = call_done;
        o->ud = te;
        o->fail_outcome = srv == NULL ? TOOL_UNAVAILABLE : TOOL_BAD_ARGS;
        op_fail_later(o, srv == NULL ? "no MCP server of this agent has that tool"
                                     : "the arguments must be a JSON object");
        te->state = o;
        return;
    }
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", strstr(te->name, "__") + 2);
    cJSON_AddItemToObject(p, "arguments", args);
    te->state = op_new(te->loop, srv, "tools/call", p, call_done, te);
}

/* A cancelled call: the request is dropped and the server is told (notifications/cancelled, fire and forget). */
static void notify_done(struct up_xfer *x, enum up_result r, void *ud)
{
    (void)x;
    (void)r;
    (void)ud;
}
static const struct up_callbacks notify_cb = {NULL, NULL, notify_done};

/* Drops o, telling the server when it is a session-era request in flight (stdio: mcp_stdio_cancel does it). */
static void op_cancel(struct op *o)
{
    /* (2026-07-28 has no session to address a notification to: dropping the request is the cancel) */
    if (o->phase == PH_MAIN && o->x && tl_up && o->sess && o->sess->era != ERA_STATELESS) {
        char body[160];
        snprintf(body, sizeof(body),
                 "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":%" PRId64
                 ",\"reason\":\"cancelled by agentd\"}}",
                 o->id);
        struct up_request req;
        up_request_init(&req);
        req.method = "POST";
        buf_append_str(&req.url, o->srv->url);
        buf_append_str(&req.body, body);
        up_request_header(&req, "Content-Type", "application/json");
        up_request_header(&req, "Accept", "application/json, text/event-stream");
        if (o->sess->session_id)
            up_request_header(&req, "Mcp-Session-Id", o->sess->session_id);
        up_request_header(&req, "MCP-Protocol-Version", o->sess->version);
        req.timeout_ms = 5000;
        (void)upstream_start(tl_up, &req, &notify_cb, NULL);
        up_request_free(&req);
    }
    op_free(o);
}

static void mcp_tool_cancel(struct tool_exec *te)
{
    struct op *o = te->state;
    if (o == NULL)
        return;
    te->state = NULL;
    op_cancel(o);
}

/* ================= one request, for other callers ================= */

static void request_done(struct op *o, int ok, const char *why)
{
    if (ok)
        o->ucb(o->uud, 1, o->resp.result, o->resp.rpc_error, o->resp.rpc_code, o->resp.message);
    else
        o->ucb(o->uud, 0, NULL, false, 0, why);
    op_free(o);
}

struct mcp_request *mcp_request_start(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *method,
                                      cJSON *params, mcp_request_fn *cb, void *ud)
{
    struct op *o = op_alloc(loop, srv, method, params, request_done, NULL);
    o->ucb = cb;
    o->uud = ud;
    op_start(o, "MCP servers are not available while the daemon stops");
    return (struct mcp_request *)o;
}

void mcp_request_cancel(struct mcp_request *r)
{
    if (r)
        op_cancel((struct op *)r);
}

const struct agent_tool mcp_agent_tool = {
    .name = "mcp", .description = "a tool of an MCP server", .parameters = "{}", .idempotent = false,
    .start = mcp_tool_start, .cancel = mcp_tool_cancel};
