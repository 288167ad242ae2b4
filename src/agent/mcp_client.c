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
    if (ev->id.n > 0 && ev->id.n < sizeof(p->last_event_id)) { /* what a resumption asks for */
        memcpy(p->last_event_id, ev->id.p, ev->id.n);
        p->last_event_id[ev->id.n] = '\0';
    }
    if (ev->retry_ms >= 0)
        p->retry_ms = ev->retry_ms;
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
    p->retry_ms = -1;
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
        if (p->on_request && cJSON_IsString(method) && (id == NULL || cJSON_IsNumber(id) || cJSON_IsString(id)))
            p->on_request(p->req_ud, m);
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
        if (p->state == 0) {
            fail(p, "the server's stream ended without the response");
            p->unanswered = true;
        }
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

/* ================= what the client answers a server ================= */

cJSON *mcp_elicit_answer(const cJSON *params)
{
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(params, "requestedSchema");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    cJSON *content = cJSON_CreateObject();
    int n = 0;
    bool all = cJSON_IsObject(props);
    const cJSON *pr, *each = all ? props : NULL;
    cJSON_ArrayForEach(pr, each)
    {
        const cJSON *def = cJSON_GetObjectItemCaseSensitive(pr, "default");
        if (!cJSON_IsObject(pr) || def == NULL || pr->string == NULL || ++n > 64 ||
            cJSON_GetObjectItemCaseSensitive(content, pr->string)) {
            all = false;
            break;
        }
        cJSON_AddItemToObject(content, pr->string, cJSON_Duplicate(def, true));
    }
    cJSON *r = cJSON_CreateObject();
    if (all && n > 0) {
        cJSON_AddStringToObject(r, "action", "accept");
        cJSON_AddItemToObject(r, "content", content);
    } else {
        cJSON_Delete(content);
        cJSON_AddStringToObject(r, "action", "decline");
    }
    return r;
}

cJSON *mcp_client_answer(const char *method, const cJSON *params)
{
    if (strcmp(method, "elicitation/create") == 0)
        return mcp_elicit_answer(params);
    if (strcmp(method, "roots/list") == 0) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddArrayToObject(r, "roots");
        return r;
    }
    if (strcmp(method, "ping") == 0)
        return cJSON_CreateObject();
    return NULL;
}

cJSON *mcp_input_responses(const cJSON *result, char *why, size_t whylen)
{
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(result, "inputRequests");
    if (!cJSON_IsObject(reqs) || reqs->child == NULL) {
        snprintf(why, whylen, "an input_required result without inputRequests");
        return NULL;
    }
    cJSON *out = cJSON_CreateObject();
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs)
    {
        const cJSON *method = cJSON_GetObjectItemCaseSensitive(r, "method");
        if (++n > 16 || r->string == NULL || !cJSON_IsString(method) ||
            cJSON_GetObjectItemCaseSensitive(out, r->string)) {
            snprintf(why, whylen, n > 16 ? "more than 16 inputRequests" : "an inputRequest that is not a request");
            cJSON_Delete(out);
            return NULL;
        }
        cJSON *a = mcp_client_answer(method->valuestring, cJSON_GetObjectItemCaseSensitive(r, "params"));
        if (a == NULL) {
            snprintf(why, whylen, "an inputRequest for %.64s, which agentd does not serve", method->valuestring);
            cJSON_Delete(out);
            return NULL;
        }
        cJSON_AddItemToObject(out, r->string, a);
    }
    return out;
}

int mcp_unsupported_pick(const char *body, size_t len)
{
    cJSON *m = cJSON_ParseWithLength(body, len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(m, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    const cJSON *sup = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(err, "data"), "supported");
    int pick = 0;
    const cJSON *v;
    if (cJSON_IsNumber(code) && code->valuedouble == -32022 && cJSON_IsArray(sup)) {
        cJSON_ArrayForEach(v, sup)
        {
            if (!cJSON_IsString(v))
                continue;
            if (strcmp(v->valuestring, MCP_STATELESS_VERSION) == 0)
                pick = 1;
            else if (pick == 0 && mcp_version_known(v->valuestring))
                pick = 2;
        }
    }
    cJSON_Delete(m);
    return pick;
}

/* A header name token of RFC 9110 (tchar), 1..64 of them. */
static bool header_token_ok(const char *s)
{
    size_t n = 0;
    for (; *s; s++, n++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return n >= 1 && n <= 64;
}

int mcp_tool_param_headers(const cJSON *tool, cJSON **map)
{
    *map = NULL;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tool, "inputSchema"),
                                                          "properties");
    int n = 0;
    const cJSON *pr, *each = cJSON_IsObject(props) ? props : NULL;
    cJSON_ArrayForEach(pr, each)
    {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(pr, "x-mcp-header");
        if (h == NULL)
            continue;
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(pr, "type");
        bool prim = cJSON_IsString(type) && (strcmp(type->valuestring, "string") == 0 ||
                                             strcmp(type->valuestring, "integer") == 0 ||
                                             strcmp(type->valuestring, "boolean") == 0);
        bool dup = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, *map)
        {
            if (cJSON_IsString(h) && strcasecmp(e->valuestring, h->valuestring) == 0)
                dup = true;
        }
        if (!cJSON_IsString(h) || !header_token_ok(h->valuestring) || !prim || dup || pr->string == NULL ||
            ++n > 32) {
            cJSON_Delete(*map);
            *map = NULL;
            return -1;
        }
        if (*map == NULL)
            *map = cJSON_CreateObject();
        cJSON_AddStringToObject(*map, pr->string, h->valuestring);
    }
    return n;
}

bool mcp_param_header_value(const cJSON *v, struct buf *out)
{
    if (cJSON_IsBool(v)) {
        buf_append_str(out, cJSON_IsTrue(v) ? "true" : "false");
        return true;
    }
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d > -9.2e18 && d < 9.2e18 && d == (double)(long long)d) /* the range first: the cast of a larger one is UB */
            buf_printf(out, "%lld", (long long)d);
        else
            buf_printf(out, "%.17g", d);
        return true;
    }
    if (!cJSON_IsString(v))
        return false;
    const char *s = v->valuestring;
    size_t n = strlen(s);
    bool plain = n > 0 && s[0] != ' ' && s[0] != '\t' && s[n - 1] != ' ' && s[n - 1] != '\t';
    for (size_t i = 0; plain && i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            plain = false;
    if (plain) {
        buf_append(out, s, n);
    } else { /* an empty value too: many HTTP stacks drop an empty header */
        buf_append_str(out, "=?base64?");
        buf_append_base64(out, s, n, false);
        buf_append_str(out, "?=");
    }
    return true;
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
    cJSON *param_headers; /* ERA_STATELESS: {"<tool>":{"<argument>":"<header>"}} from its tools/list (SEP-2243) */
    int param_headers_n;
    char *tools_server; /* the name they were made under */
    uint64_t tools_expiry_ms;
    uint64_t tools_gen; /* notifications/tools/list_changed seen (mcp_tools_generation) */
    /* ERA_SESSION: the standalone GET stream, on which the server sends its requests and notifications */
    uv_loop_t *loop;
    char *name;          /* the server's name (logs) and configured headers ("Name: value\n" lines), copied when
                            the session became ready: the definition may go away before the session does */
    struct buf hdrs;
    struct up_xfer *gx;  /* the stream, while open */
    struct mcp_resp gresp;
    bool gresp_live, gsaw;  /* gsaw: it carried an event */
    bool get_refused;    /* the server has no GET stream (405, or another refusal): not asked again */
    int gfails;          /* reconnections in a row without an event */
    uv_timer_t *gt;      /* the wait before reconnecting */
    char g_last_id[256];
    long g_retry_ms;
};

enum { ERA_STATELESS = 1, ERA_SESSION = 2 };
/* One operation on one HTTP server: [server/discover,] [initialize, notifications/initialized,] then the request. */
enum op_phase { PH_DISCOVER, PH_INIT, PH_INITIALIZED, PH_MAIN };
#define META_VERSION "io.modelcontextprotocol/protocolVersion"
#define META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define META_INFO "io.modelcontextprotocol/clientInfo"

/* What the client declares (both eras): elicitation (form), answered by mcp_elicit_answer. */
static cJSON *client_caps(void)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddObjectToObject(cJSON_AddObjectToObject(c, "elicitation"), "form");
    return c;
}

static cJSON *client_info(void)
{
    cJSON *ci = cJSON_CreateObject();
    cJSON_AddStringToObject(ci, "name", "agentd");
    cJSON_AddStringToObject(ci, "version", AGENTD_VERSION);
    return ci;
}

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

static void closed_free(uv_handle_t *h)
{
    xfree(h);
}

/* Closes the session's GET stream (and its pending reconnection). */
static void get_close(struct mcp_sess *s)
{
    if (s->gx)
        upstream_cancel(s->gx);
    s->gx = NULL;
    if (s->gt) {
        uv_timer_stop(s->gt);
        uv_close((uv_handle_t *)s->gt, closed_free);
        s->gt = NULL;
    }
    if (s->gresp_live)
        mcp_resp_free(&s->gresp);
    s->gresp_live = false;
    s->g_last_id[0] = '\0';
    s->gfails = 0;
}

static void sess_reset(struct mcp_sess *s)
{
    get_close(s);
    xfree(s->session_id);
    s->session_id = NULL;
    s->ready = false;
}

static void notify_done(struct up_xfer *x, enum up_result r, void *ud)
{
    (void)x;
    (void)r;
    (void)ud;
}
static const struct up_callbacks notify_cb = {NULL, NULL, notify_done};

/* POSTs body in s's session, its answer unread (a notification, or our response to a server's request). */
static void post_in_session(struct mcp_sess *s, const char *body)
{
    if (tl_up == NULL || tl_done)
        return;
    struct up_request req;
    up_request_init(&req);
    req.method = "POST";
    buf_append_str(&req.url, s->url);
    buf_append_str(&req.body, body);
    up_request_header(&req, "Content-Type", "application/json");
    up_request_header(&req, "Accept", "application/json, text/event-stream");
    if (s->session_id)
        up_request_header(&req, "Mcp-Session-Id", s->session_id);
    up_request_header(&req, "MCP-Protocol-Version", s->version);
    if (s->hdrs.len)
        buf_append(&req.headers, s->hdrs.data, s->hdrs.len);
    req.timeout_ms = 5000;
    (void)upstream_start(tl_up, &req, &notify_cb, NULL);
    up_request_free(&req);
}

/* A message of the server's with a method, on a stream of s (session era): a request (it has an id) is answered
 * by a POST of its response; notifications/tools/list_changed drops the cached tools. */
static void sess_server_message(struct mcp_sess *s, const cJSON *msg)
{
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(msg, "method");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    if (id == NULL) {
        if (strcmp(method->valuestring, "notifications/tools/list_changed") == 0) {
            log_info("MCP server %s: its tool list changed", s->name ? s->name : s->url);
            cJSON_Delete(s->tools);
            s->tools = NULL; /* the next listing asks the server */
            s->tools_gen++;
        }
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "jsonrpc", "2.0");
    cJSON_AddItemToObject(r, "id", cJSON_Duplicate(id, false));
    cJSON *result = mcp_client_answer(method->valuestring, cJSON_GetObjectItemCaseSensitive(msg, "params"));
    if (result) {
        cJSON_AddItemToObject(r, "result", result);
    } else {
        cJSON *e = cJSON_AddObjectToObject(r, "error");
        cJSON_AddNumberToObject(e, "code", -32601);
        cJSON_AddStringToObject(e, "message", "Method not found");
    }
    char *body = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    log_info("MCP server %s asked %.64s: answered", s->name ? s->name : s->url, method->valuestring);
    if (body)
        post_in_session(s, body);
    cJSON_free(body);
}

static void get_msg(void *ud, const cJSON *msg)
{
    struct mcp_sess *s = ud;
    s->gsaw = true;
    sess_server_message(s, msg);
}

static void get_open(struct mcp_sess *s);

static void get_fire(uv_timer_t *t)
{
    struct mcp_sess *s = t->data;
    uv_close((uv_handle_t *)t, closed_free);
    s->gt = NULL;
    get_open(s);
}

static void get_headers(struct up_xfer *x, void *ud)
{
    struct mcp_sess *s = ud;
    char ct[128] = "";
    (void)up_xfer_header(x, "content-type", ct, sizeof(ct));
    if (x->status / 100 != 2 || strncasecmp(ct, "text/event-stream", 17) != 0)
        return;
    mcp_resp_init(&s->gresp, true, -1, MCP_MAX_RESPONSE);
    s->gresp.on_request = get_msg;
    s->gresp.req_ud = s;
    s->gresp_live = true;
}

static int get_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    struct mcp_sess *s = ud;
    (void)x;
    if (!s->gresp_live)
        return UP_DATA_OK;
    return mcp_resp_feed(&s->gresp, data, len) == 0 ? UP_DATA_OK : UP_DATA_ABORT;
}

static void get_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct mcp_sess *s = ud;
    s->gx = NULL;
    bool stream = s->gresp_live;
    if (stream) {
        if (s->gresp.last_event_id[0])
            snprintf(s->g_last_id, sizeof(s->g_last_id), "%s", s->gresp.last_event_id);
        if (s->gresp.retry_ms >= 0)
            s->g_retry_ms = s->gresp.retry_ms;
        mcp_resp_free(&s->gresp);
        s->gresp_live = false;
    }
    if (!stream && (r == UP_OK || x->status != 0)) {
        /* 405: the server has no GET stream (not asked again); another answer that is not a stream (a 404 for a
         * session it forgot, ...): none until the next session */
        if (x->status == 405)
            s->get_refused = true;
        return;
    }
    s->gfails = s->gsaw ? 0 : s->gfails + 1;
    s->gsaw = false;
    if (s->gfails > MCP_MAX_RESUMES || tl_done)
        return; /* a server that keeps closing it without a word: left closed until the next session */
    long ms = s->g_retry_ms >= 0 ? s->g_retry_ms : 1000;
    s->gt = xmalloc(sizeof(*s->gt));
    uv_timer_init(s->loop, s->gt);
    s->gt->data = s;
    uv_timer_start(s->gt, get_fire, (uint64_t)(ms < MCP_MAX_RESUME_DELAY_MS ? ms : MCP_MAX_RESUME_DELAY_MS), 0);
}

static const struct up_callbacks get_cb = {get_headers, get_data, get_done};

/* Opens (or reopens, from the last event id) the session's GET stream. */
static void get_open(struct mcp_sess *s)
{
    if (s->get_refused || s->gx || s->gt || !s->ready || tl_up == NULL || tl_done)
        return;
    struct up_request req;
    up_request_init(&req);
    req.method = "GET";
    buf_append_str(&req.url, s->url);
    up_request_header(&req, "Accept", "text/event-stream");
    if (s->session_id)
        up_request_header(&req, "Mcp-Session-Id", s->session_id);
    up_request_header(&req, "MCP-Protocol-Version", s->version);
    if (s->g_last_id[0])
        up_request_header(&req, "Last-Event-ID", s->g_last_id);
    if (s->hdrs.len)
        buf_append(&req.headers, s->hdrs.data, s->hdrs.len);
    req.connect_timeout_ms = 10000;
    req.timeout_ms = 0; /* long-lived */
    s->gx = upstream_start(tl_up, &req, &get_cb, s);
    up_request_free(&req);
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
    for (struct mcp_sess *s = tl_sess; s; s = s->next)
        get_close(s);
    if (tl_up)
        upstream_free(tl_up);
    tl_up = NULL;
    mcp_stdio_loop_done();
    while (tl_sess) {
        struct mcp_sess *s = tl_sess;
        tl_sess = s->next;
        xfree(s->name);
        buf_free(&s->hdrs);
        xfree(s->url);
        xfree(s->session_id);
        xfree(s->tools_server);
        cJSON_Delete(s->tools);
        cJSON_Delete(s->param_headers);
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
    int rounds;        /* input_required rounds so far */
    int resumes;       /* GET resumptions so far */
    bool get;          /* the transfer in flight is a resuming GET */
    uv_timer_t *resume_t; /* the wait before the next GET */
    char resume_id[256];  /* the last SSE event id of this request's streams */
    long retry_ms;        /* the server's last retry (-1: none) */
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
    if (o->resume_t) {
        uv_timer_stop(o->resume_t);
        uv_close((uv_handle_t *)o->resume_t, later_closed);
    }
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

/* The server's configured headers ("Name: value"). */
static void add_server_headers(struct up_request *req, const struct agent_mcp_server *srv)
{
    for (size_t i = 0; i < srv->headers.n; i++) {
        const char *h = srv->headers.v[i], *colon = strchr(h, ':');
        if (colon == NULL)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(colon - h), h);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        up_request_header(req, name, v);
    }
}

/* A request or notification of the server's on our response stream (session era). */
static void on_server_request(void *ud, const cJSON *msg)
{
    struct op *o = ud;
    sess_server_message(o->sess, msg);
}

/* The session is ready: what later requests of the session need without the definition is copied, and the GET
 * stream opened. */
static void sess_ready(struct op *o)
{
    struct mcp_sess *s = o->sess;
    s->loop = o->loop;
    xfree(s->name);
    s->name = xstrdup(o->srv->name);
    buf_free(&s->hdrs);
    buf_init(&s->hdrs, BUF_UNBOUNDED);
    struct up_request tmp;
    up_request_init(&tmp);
    add_server_headers(&tmp, o->srv);
    if (tmp.headers.len)
        buf_append(&s->hdrs, tmp.headers.data, tmp.headers.len);
    up_request_free(&tmp);
    get_open(s);
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
    if (o->phase == PH_MAIN && o->sess && o->sess->era == ERA_SESSION) { /* the server may ask us things on the stream */
        o->resp.on_request = on_server_request;
        o->resp.req_ud = o;
    }
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

/* SEP-2243: each listed tool's x-mcp-header annotations are remembered for its calls (a listing's first page
 * starts afresh; at most 4096 tools with annotations), and a tool with an invalid one is taken out of the result
 * (never offered, never called). Linear in the tools listed. */
static void note_param_headers(struct mcp_sess *s, const struct agent_mcp_server *srv, bool first_page,
                               cJSON *result)
{
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(result, "tools");
    if (!cJSON_IsArray(tools))
        return;
    if (first_page || s->param_headers == NULL) {
        cJSON_Delete(s->param_headers);
        s->param_headers = cJSON_CreateObject();
        s->param_headers_n = 0;
    }
    cJSON *t = tools->child;
    while (t) {
        cJSON *next = t->next;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        cJSON *map = NULL;
        int rc = mcp_tool_param_headers(t, &map);
        if (rc < 0)
            log_warn("MCP server %s: tool %.128s dropped: its x-mcp-header annotations are invalid", srv->name,
                     cJSON_IsString(name) ? name->valuestring : "?");
        else if (map && cJSON_IsString(name) && s->param_headers_n < 4096) {
            cJSON_AddItemToObject(s->param_headers, name->valuestring, map); /* (a repeated name: the first wins) */
            map = NULL;
            s->param_headers_n++;
        }
        cJSON_Delete(map);
        if (rc < 0)
            cJSON_Delete(cJSON_DetachItemViaPointer(tools, t));
        t = next;
    }
}

static void resume_fire(uv_timer_t *t);

/* Waits the server's retry delay, then resumes o's stream with a GET. */
static void resume_later(struct op *o)
{
    long ms = o->retry_ms >= 0 ? o->retry_ms : 1000;
    if (ms > MCP_MAX_RESUME_DELAY_MS)
        ms = MCP_MAX_RESUME_DELAY_MS;
    o->resumes++;
    o->resume_t = xmalloc(sizeof(*o->resume_t));
    uv_timer_init(o->loop, o->resume_t);
    o->resume_t->data = o;
    uv_timer_start(o->resume_t, resume_fire, (uint64_t)ms, 0);
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
        if (status == 400 && !o->retried && o->resp_live &&
            mcp_unsupported_pick(o->resp.body.data ? o->resp.body.data : "", o->resp.body.len) == 1) {
            /* refused our version while naming it as supported (a server that changed meanwhile): once more */
            o->retried = true;
            op_send(o);
            return;
        }
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
        sess_ready(o);
        o->phase = PH_MAIN;
        op_send(o);
        return;
    }
    if (status == 404 && o->sess->session_id && !o->retried && !o->get) {
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
        if (o->resp_live && o->resp.last_event_id[0])
            snprintf(o->resume_id, sizeof(o->resume_id), "%s", o->resp.last_event_id);
        if (o->resp_live && o->resp.retry_ms >= 0)
            o->retry_ms = o->resp.retry_ms;
        if (o->phase == PH_MAIN && o->sess->era == ERA_SESSION && o->resp_live && o->resp.sse &&
            o->resp.unanswered && o->resume_id[0] && o->resumes < MCP_MAX_RESUMES) {
            resume_later(o); /* SEP-1699: the stream broke before the answer; a GET picks it up */
            return;
        }
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
    if (cJSON_IsString(rt) && strcmp(rt->valuestring, "input_required") == 0) {
        char w[160] = "";
        cJSON *ir = o->rounds < MCP_MAX_INPUT_ROUNDS ? mcp_input_responses(o->resp.result, w, sizeof(w)) : NULL;
        if (ir == NULL) {
            snprintf(why, sizeof(why), "MCP server %s: %s", o->srv->name,
                     w[0] ? w : "more input rounds than agentd answers");
            op_end(o, 0, why);
            return;
        }
        /* MRTR: the same request again (a new id), with the answers and the server's state exactly as it sent it */
        if (!cJSON_IsObject(o->params)) {
            cJSON_Delete(o->params);
            o->params = cJSON_CreateObject();
        }
        cJSON_DeleteItemFromObjectCaseSensitive(o->params, "inputResponses");
        cJSON_DeleteItemFromObjectCaseSensitive(o->params, "requestState");
        cJSON_AddItemToObject(o->params, "inputResponses", ir);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o->resp.result, "requestState");
        if (cJSON_IsString(st))
            cJSON_AddStringToObject(o->params, "requestState", st->valuestring);
        o->rounds++;
        op_send(o);
        return;
    }
    if (cJSON_IsString(rt) && strcmp(rt->valuestring, "complete") != 0) {
        snprintf(why, sizeof(why), "MCP server %s answered resultType '%.32s', which agentd does not support",
                 o->srv->name, rt->valuestring);
        op_end(o, 0, why);
        return;
    }
    if (o->sess->era == ERA_STATELESS && o->srv->url && strcmp(o->method, "tools/list") == 0 && o->resp.result)
        note_param_headers(o->sess, o->srv, cJSON_GetObjectItemCaseSensitive(o->params, "cursor") == NULL,
                           o->resp.result);
    op_end(o, 1, NULL);
}

/* The headers of the stateless era: the version, the method, (for the methods that have one) the name, and for a
 * tools/call the Mcp-Param-* headers its tool's x-mcp-header annotations ask for (hmap, or NULL). */
static void stateless_headers(struct up_request *req, const char *method, const cJSON *params, const cJSON *hmap)
{
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(params, "arguments");
    const cJSON *e;
    cJSON_ArrayForEach(e, hmap)
    {
        struct buf v = BUF_INIT(8192);
        char name[96];
        snprintf(name, sizeof(name), "Mcp-Param-%s", e->valuestring);
        if (cJSON_IsObject(args) && mcp_param_header_value(cJSON_GetObjectItemCaseSensitive(args, e->string), &v) &&
            buf_append(&v, "", 1) == 0)
            up_request_header(req, name, v.data);
        buf_free(&v);
    }
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
    cJSON_DeleteItemFromObjectCaseSensitive(meta, META_INFO);
    cJSON_AddStringToObject(meta, META_VERSION, MCP_STATELESS_VERSION);
    cJSON_AddItemToObject(meta, META_CAPS, client_caps());
    cJSON_AddItemToObject(meta, META_INFO, client_info());
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

/* The GET that resumes o's stream from its last event id (session era). */
static void resume_fire(uv_timer_t *t)
{
    struct op *o = t->data;
    uv_close((uv_handle_t *)t, later_closed);
    o->resume_t = NULL;
    if (tl_done || tl_up == NULL) {
        op_fail_later(o, "MCP tools are not available while the daemon stops");
        return;
    }
    struct up_request req;
    up_request_init(&req);
    req.method = "GET";
    buf_append_str(&req.url, o->srv->url);
    up_request_header(&req, "Accept", "text/event-stream");
    up_request_header(&req, "Last-Event-ID", o->resume_id);
    if (o->sess->session_id)
        up_request_header(&req, "Mcp-Session-Id", o->sess->session_id);
    up_request_header(&req, "MCP-Protocol-Version", o->sess->version);
    add_server_headers(&req, o->srv);
    req.connect_timeout_ms = 10000;
    req.timeout_ms = (long)o->srv->timeout_ms;
    if (o->resp_live) {
        mcp_resp_free(&o->resp);
        o->resp_live = false;
    }
    o->get = true;
    o->x = upstream_start(tl_up, &req, &op_cb, o);
    up_request_free(&req);
    if (o->x == NULL)
        op_fail_later(o, upstream_last_error(tl_up));
}

static void op_send(struct op *o)
{
    o->get = false;
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
            cJSON_AddItemToObject(p, "capabilities", client_caps());
            cJSON_AddItemToObject(p, "clientInfo", client_info());
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
        const cJSON *tn = strcmp(method, "tools/call") == 0 ? cJSON_GetObjectItemCaseSensitive(sparams, "name") : NULL;
        stateless_headers(&req, method, sparams,
                          cJSON_IsString(tn) ? cJSON_GetObjectItemCaseSensitive(o->sess->param_headers, tn->valuestring)
                                             : NULL);
    } else if (o->phase == PH_INITIALIZED && o->new_session[0] && session_id_ok(o->new_session)) {
        /* this op's own new session (another op may have made one meanwhile) */
        up_request_header(&req, "Mcp-Session-Id", o->new_session);
        up_request_header(&req, "MCP-Protocol-Version", o->sess->version);
    } else if (o->phase != PH_INIT) {
        if (o->sess->session_id)
            up_request_header(&req, "Mcp-Session-Id", o->sess->session_id);
        up_request_header(&req, "MCP-Protocol-Version", o->sess->version);
    }
    add_server_headers(&req, o->srv);
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
    o->retry_ms = -1;
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
        post_in_session(o->sess, body);
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

uint64_t mcp_tools_generation(const struct agent_mcp_server *srv)
{
    if (tl_done || srv->url == NULL)
        return 0;
    return sess_get(srv)->tools_gen;
}

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
