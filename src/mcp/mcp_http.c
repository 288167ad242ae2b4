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

#include "agent/agent_config.h"
#include "agent/mcp_client.h"
#include "agent/run.h"
#include "agent/tools.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "mcp/federation.h"
#include "mcp/fixtures.h"
#include "mcp/jsonrpc.h"
#include "mcp/mcp.h"
#include "mcp/pending.h"
#include "mcp/mcp_jwt.h"
#include "policy/auth.h"
#include "policy/govern_config.h"
#include "policy/keys.h"
#include "policy/ratelimit.h"
#include "store/agent_store.h"
#include "telemetry/metrics.h"
#include "telemetry/otlp.h"
#include "telemetry/trace.h"

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

/* ---- metrics, spans and rate limits (the OpenTelemetry MCP conventions) ---- */

static const char *const op_labels[] = {"mcp_method_name", "gen_ai_tool_name", "error_type", "mcp_protocol_version",
                                        NULL};
static const char *const op_otel[] = {"mcp.method.name", "gen_ai.tool.name", "error.type", "mcp.protocol.version",
                                      NULL};
static const char *const client_labels[] = {"mcp_method_name", "gen_ai_tool_name", "error_type", "server", NULL};
static const char *const client_otel[] = {"mcp.method.name", "gen_ai.tool.name", "error.type", "agentd.mcp.server",
                                          NULL};
static const char *const req_labels[] = {"key", "method", "outcome", NULL};
static const double op_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
static struct metric_def m_server_op =
    METRIC_HISTOGRAM_DEF("mcp_server_operation_duration_seconds",
                         "MCP requests into /mcp, received to answered (error_type: the JSON-RPC error code, "
                         "tool_error, or empty).",
                         op_labels, op_buckets);
static struct metric_def m_client_op =
    METRIC_HISTOGRAM_DEF("mcp_client_operation_duration_seconds",
                         "Requests of the /mcp gateway to upstream MCP servers, sent to answered.", client_labels,
                         op_buckets);
static struct metric_def m_requests =
    METRIC_DEF("agentd_mcp_requests_total",
               "MCP requests and notifications into /mcp by key, method and outcome (ok, tool_error, the JSON-RPC "
               "error code, rate_limited, cancelled).",
               METRIC_COUNTER, req_labels);

static struct ratelimit *R;

void mcp_init(void)
{
    m_server_op.otel_name = "mcp.server.operation.duration";
    m_server_op.unit = "s";
    m_server_op.otel_labels = op_otel;
    m_client_op.otel_name = "mcp.client.operation.duration";
    m_client_op.unit = "s";
    m_client_op.otel_labels = client_otel;
    metrics_register(&m_server_op);
    metrics_register(&m_client_op);
    metrics_register(&m_requests);
    if (R == NULL)
        R = rl_new();
}

void mcp_worker_done(void)
{
    fed_loop_done();
}

void mcp_http_free(void)
{
    rl_free(R);
    R = NULL;
}

/* The request limits of this caller (the key's rpm, and the `ratelimits:` entries for its key, user and team:
 * requests only): 0, or -1 with *retry_ms and msg. Every tools/call is one request. */
static int rate_limit(const struct config *cfg, const struct principal *p, int64_t *retry_ms, char *msg, size_t n)
{
    const struct key_record *key = p ? p->key : NULL;
    struct rl_limit rl[RL_MAX_LIMITS];
    int k = 0;
    const struct config_ratelimit *cr = cfg->ratelimits.items;
    for (size_t i = 0; p && i < cfg->ratelimits.n && k < RL_MAX_LIMITS; i++) {
        if (cr[i].rpm <= 0 || (cr[i].scope != RL_KEY && cr[i].scope != RL_USER && cr[i].scope != RL_TEAM))
            continue;
        const char *name = cr[i].scope == RL_KEY ? p->key_id : cr[i].scope == RL_USER ? p->user : p->team;
        if (name == NULL || name[0] == '\0' || (strcmp(cr[i].name, "*") != 0 && strcmp(cr[i].name, name) != 0))
            continue;
        rl[k++] = (struct rl_limit){(enum rl_scope)cr[i].scope, name, cr[i].rpm, 0};
    }
    if (key && key->rpm > 0 && k < RL_MAX_LIMITS)
        rl[k++] = (struct rl_limit){RL_KEY, key->id, key->rpm, 0};
    if (k == 0 || R == NULL)
        return 0;
    struct rl_hold h;
    struct rl_decision d;
    rl_admit(R, rl, k, 0, (int64_t)(time_mono_us() / 1000), &h, &d);
    if (d.allowed)
        return 0;
    *retry_ms = d.retry_after_ms;
    if (d.bad)
        snprintf(msg, n, "Rate limit table full");
    else
        snprintf(msg, n, "Rate limit reached for %s '%s': %lld requests per minute; retry after %lld ms",
                 rl_scope_name(rl[d.which].scope), rl[d.which].name, (long long)rl[d.which].rpm,
                 (long long)d.retry_after_ms);
    return -1;
}

/* One message of a body, from its dispatch to its answer: what its metrics and SERVER span say. */
struct mop {
    uint64_t start_us, start_ns;
    char method[48];
    char tool[FED_TOOL_NAME_MAX + 1]; /* tools/call: the tool's name when it exists, else "" */
    char etype[24];                   /* error.type: "" (none), "tool_error", a JSON-RPC code, ... */
    bool request, has_parent, sampled;
    uint8_t trace_id[16], span_id[8], parent_id[8];
    uint8_t flags;
    cJSON *id;
};

static uint64_t wall_ns(void)
{
    return time_wall_us() * 1000;
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

/* A JWT caller (mcp_jwt.h): no key record, so every tool and no per-key limit; `sub` is the user, the
 * mcp.jwt.team_claim the team, and the key id "jwt:" + 32 hex digits of SHA-256(iss, sub) (fits every key_id
 * buffer, and never collides by truncation) binds its sessions and runs. Lives in the request's ctx, like a key's principal, until mcp_http_handle returns. */
struct jwt_who {
    struct principal p;
    char key_id[40], team[JWT_CLAIM_MAX + 1];
};

static void answer_401(struct http_req *req, bool presented, const char *msg)
{
    char url[400], hv[480];
    resource_url(req, "/.well-known/oauth-protected-resource/mcp", url, sizeof(url));
    snprintf(hv, sizeof(hv), "Bearer resource_metadata=\"%s\"%s", url, presented ? ", error=\"invalid_token\"" : "");
    http_resp_header(req, "WWW-Authenticate", hv);
    respond_rpc_error(req, 401, NULL, JR_INVALID_REQUEST, msg, NULL);
}

/* 0 with *who when the bearer token is a valid JWT (jw filled), or -1 after answering 401. */
static int authenticate_jwt(struct http_req *req, struct str token, struct jwt_who *jw, const struct principal **who)
{
    char aud[400];
    resource_url(req, "/mcp", aud, sizeof(aud));
    struct jwt_claims c;
    enum jwt_result r = mcp_jwt_check(req->cfg, token, aud, &c);
    if (r != JWT_OK) {
        auth_refused(r == JWT_EXPIRED ? AUTH_R_EXPIRED : r == JWT_MALFORMED ? AUTH_R_MALFORMED : AUTH_R_UNKNOWN,
                     NULL, req->request_id, "/mcp");
        log_info("mcp: JWT refused: %s (request %s)", jwt_result_name(r), req->request_id);
        answer_401(req, true, "Unauthorized: the access token is not valid");
        return -1;
    }
    memset(jw, 0, sizeof(*jw));
    snprintf(jw->key_id, sizeof(jw->key_id), "%s", c.key_id);
    snprintf(jw->p.user_buf, sizeof(jw->p.user_buf), "%s", c.sub);
    snprintf(jw->team, sizeof(jw->team), "%s", c.team);
    jw->p.key_id = jw->key_id;
    jw->p.key_name = "jwt";
    jw->p.user = jw->p.user_buf;
    jw->p.team = jw->team;
    jw->p.workflow = "";
    *who = &jw->p; /* holder NULL: principal_release leaves it alone */
    return 0;
}

/* 0 with *who (release it; NULL when anonymous under auth.mode none), or -1 after answering 401. */
static int authenticate(struct http_req *req, const struct principal **who, struct str *secret, struct jwt_who *jw)
{
    *who = NULL;
    *secret = auth_secret_from(http_req_header(req, "authorization"), http_req_header(req, "x-api-key"),
                               http_req_header(req, "api-key"));
    const struct config_mcp_jwt *j = &req->cfg->mcp.jwt;
    if (j->issuer && j->issuer[0] && jwt_looks_like(*secret)) {
        struct str tok = *secret;
        *secret = STR_NULL; /* never forwarded as a key (agent runs, upstream servers) */
        return authenticate_jwt(req, tok, jw, who);
    }
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
    answer_401(req, secret->n > 0,
               j->issuer && j->issuer[0]
                   ? "Unauthorized: pass an agentd virtual key or an access token as `Authorization: Bearer <token>`"
                   : "Unauthorized: pass an agentd virtual key as `Authorization: Bearer <key>`");
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
    const struct config_mcp_jwt *j = &req->cfg->mcp.jwt;
    if (j->issuer && j->issuer[0]) {
        cJSON *as = cJSON_AddArrayToObject(o, "authorization_servers");
        cJSON_AddItemToArray(as, cJSON_CreateString(j->issuer));
    }
    cJSON_AddStringToObject(o, "resource_name", "agentd MCP server");
    cJSON_AddStringToObject(o, "resource_documentation",
                            j->issuer && j->issuer[0]
                                ? "Authenticate with an access token from the authorization server, or an agentd "
                                  "virtual key, as a bearer token (docs/mcp.md)."
                                : "Authenticate with an agentd virtual key as a bearer token (docs/mcp.md).");
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
    char version[16];           /* the protocol version the body is handled in */
    char sid[33];               /* 2025-era: the request's session */
    size_t n, pending;
    struct buf *out;            /* per message: its response ("" for none) */
    struct call **calls;        /* per message: the tool call in flight */
    struct mop *mops;           /* per message: its telemetry */
    struct buf notes;           /* notifications sent before the answer (SSE events), when the client takes SSE */
    bool sse_ok;                /* the client accepts text/event-stream */
    bool streaming;             /* the SSE answer has started (progress notifications went out) */
};

enum call_kind { CALL_BUILTIN, CALL_AGENT, CALL_FED, CALL_LIST, CALL_ASK };

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
    struct fed_call *fed;       /* CALL_FED: the upstream call */
    struct fed_list *list;      /* CALL_LIST: the upstream servers' tools */
    struct key_record kf;       /* CALL_LIST: the caller's mcp_tools / mcp_deny (copied: the principal is gone) */
    bool has_key;
    const struct config *cfg;   /* the request's (alive while it is) */
    char server[40], upstream_tool[FED_TOOL_NAME_MAX + 1];
    uint8_t client_span[8];
    uint64_t client_start_ns, client_start_us;
    struct mcp_pending *ask;    /* CALL_ASK: a fixture's request to the client, waiting for its answer */
    uv_timer_t *ptimer;         /* CALL_AGENT with a progressToken: polls the run's progress */
    cJSON *ptoken;
    int64_t pstep;
    size_t poff;
    int pcount;
};

static const struct config_agent no_agent; /* the built-in tools do not read it */

static void ptimer_closed(uv_handle_t *h)
{
    xfree(h);
}

/* The run's progress is no longer polled (its end, or the client's). */
static void progress_stop(struct call *c)
{
    if (c->ptimer == NULL)
        return;
    uv_timer_stop(c->ptimer);
    uv_close((uv_handle_t *)c->ptimer, ptimer_closed);
    c->ptimer = NULL;
    run_watch(c->run_id, -1);
}

static void call_free(struct call *c)
{
    progress_stop(c);
    cJSON_Delete(c->ptoken);
    key_record_free(&c->kf);
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
    xfree(b->mops);
    buf_free(&b->notes);
    xfree(b);
}

/* ---- per message: metrics and the SERVER span ---- */

static void mop_begin(struct batch *b, size_t slot, const struct jr_msg *m)
{
    struct mop *o = &b->mops[slot];
    o->start_us = time_mono_us();
    o->start_ns = wall_ns();
    o->request = m->kind == JR_REQUEST;
    snprintf(o->method, sizeof(o->method), "%s", m->method ? m->method : "response");
    if (m->kind == JR_NOTIFICATION) { /* label values from a fixed set: a client's names are not metric labels */
        static const char *const known[] = {"notifications/initialized", "notifications/cancelled",
                                            "notifications/progress", "notifications/roots/list_changed"};
        bool ok = false;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]) && !ok; k++)
            ok = strcmp(o->method, known[k]) == 0;
        if (!ok)
            snprintf(o->method, sizeof(o->method), "other");
    }
    struct trace_parent tp;
    const cJSON *mt = jr_meta(m, "traceparent"); /* 2026-07-28: in _meta, unprefixed; else the HTTP header */
    bool got = cJSON_IsString(mt) && trace_parse_traceparent(mt->valuestring, strlen(mt->valuestring), &tp) == 0;
    if (!got) {
        const struct str *h = http_req_header(b->req, "traceparent");
        got = h && trace_parse_traceparent(h->p, h->n, &tp) == 0;
    }
    if (got) {
        memcpy(o->trace_id, tp.trace_id, 16);
        memcpy(o->parent_id, tp.span_id, 8);
    } else {
        trace_new_trace_id(o->trace_id);
    }
    o->has_parent = got;
    trace_new_span_id(o->span_id);
    o->sampled = otel_traces_on() && otel_sample(o->trace_id, got ? &tp : NULL);
    o->flags = o->sampled ? 1 : got ? (tp.flags & 1) : 0;
    o->start_us = o->start_us ? o->start_us : 1;
}

static void mop_end(struct batch *b, size_t slot)
{
    struct mop *o = &b->mops[slot];
    if (o->start_us == 0)
        return;
    double secs = (double)(time_mono_us() - o->start_us) / 1e6;
    const char *outcome = o->etype[0] ? o->etype : "ok";
    metrics_inc(&m_requests, (const char *[]){b->key_id, o->method, outcome});
    if (o->request)
        metrics_observe(&m_server_op, (const char *[]){o->method, o->tool, o->etype, b->version}, secs);
    if (o->sampled && o->request) {
        struct otel_span *sp = otel_span_new();
        memcpy(sp->trace_id, o->trace_id, 16);
        memcpy(sp->span_id, o->span_id, 8);
        if (o->has_parent) {
            memcpy(sp->parent_id, o->parent_id, 8);
            sp->has_parent = true;
            sp->remote_parent = true;
        }
        sp->trace_flags = 1;
        sp->kind = OTEL_SPAN_SERVER;
        sp->start_ns = o->start_ns;
        sp->end_ns = wall_ns();
        snprintf(sp->name, sizeof(sp->name), "%s%s%.100s", o->method, o->tool[0] ? " " : "", o->tool);
        otel_span_cstr(sp, "mcp.method.name", o->method);
        otel_span_cstr(sp, "mcp.protocol.version", b->version);
        if (b->sid[0])
            otel_span_cstr(sp, "mcp.session.id", b->sid);
        otel_span_cstr(sp, "network.transport", "tcp");
        otel_span_cstr(sp, "network.protocol.name", "http");
        if (o->tool[0]) {
            otel_span_cstr(sp, "gen_ai.tool.name", o->tool);
            otel_span_cstr(sp, "gen_ai.operation.name", "execute_tool");
        }
        if (b->key_id[0])
            otel_span_cstr(sp, "agentd.key.id", b->key_id);
        if (o->etype[0]) {
            sp->status = OTEL_STATUS_ERROR;
            otel_span_cstr(sp, "error.type", o->etype);
            if (o->etype[0] == '-')
                otel_span_cstr(sp, "rpc.response.status_code", o->etype);
        }
        otel_span_submit(sp);
    }
    o->start_us = 0;
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
    if (k == 0 && !b->streaming) {
        http_respond(req, 202, NULL, NULL, 0);
    } else if (b->streaming || ((b->sse || (b->notes.len && b->sse_ok)) && b->status == 200)) {
        if (!b->streaming) {
            http_resp_header(req, "Cache-Control", "no-cache");
            http_resp_header(req, "X-Accel-Buffering", "no");
            http_stream_start(req, 200, "text/event-stream");
        }
        struct buf ev = BUF_INIT(BUF_UNBOUNDED);
        buf_append(&ev, b->notes.data, b->notes.len);
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
        snprintf(b->mops[i].etype, sizeof(b->mops[i].etype), "cancelled");
        mop_end(b, i);
        if (c->kind == CALL_BUILTIN) {
            c->te.tool->cancel(&c->te);
            call_free(c);
        } else if (c->kind == CALL_FED) {
            fed_call_cancel(c->fed);
            call_free(c);
        } else if (c->kind == CALL_LIST) {
            fed_list_cancel(c->list);
            call_free(c);
        } else if (c->kind == CALL_ASK) {
            mcp_pending_cancel(c->ask);
            call_free(c);
        } else if (c->reading) {
            progress_stop(c);
            c->b = NULL; /* freed when the read ends */
        } else {
            run_forget_waiter(c->run_id, c);
            call_free(c);
        }
    }
    if (b->streaming)
        http_stream_end(req); /* discarded: the client is gone */
    else
        http_respond(req, 499, NULL, NULL, 0);
    batch_free(b);
}

/* The result of message `slot`: decorated for the era (2026-07-28: resultType and serverInfo on every result). */
static void put_result(struct batch *b, size_t slot, const cJSON *id, cJSON *result)
{
    if (b->mops[slot].etype[0] == '\0' && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, "isError")))
        snprintf(b->mops[slot].etype, sizeof(b->mops[slot].etype), "tool_error");
    if (b->modern) {
        if (!cJSON_GetObjectItemCaseSensitive(result, "resultType"))
            cJSON_AddStringToObject(result, "resultType", "complete");
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(result, "_meta");
        if (!cJSON_IsObject(meta)) {
            cJSON_DeleteItemFromObjectCaseSensitive(result, "_meta");
            meta = cJSON_AddObjectToObject(result, "_meta");
        }
        cJSON_DeleteItemFromObjectCaseSensitive(meta, META_SERVER); /* an upstream's */
        cJSON_AddItemToObject(meta, META_SERVER, server_info());
    }
    jr_result_json(&b->out[slot], id, result);
    cJSON_Delete(result);
}

static void put_error(struct batch *b, size_t slot, const cJSON *id, int code, const char *msg, const cJSON *data)
{
    if (b->mops[slot].etype[0] == '\0')
        snprintf(b->mops[slot].etype, sizeof(b->mops[slot].etype), "%d", code);
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

static const char *tname(const cJSON *t)
{
    return cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
}

/* Every agent (the configuration's first, then those added through /admin/agents, one per name), the built-in
 * tools an agent does not shadow, the conformance fixtures (when configured) and `extra` (the upstream servers'
 * tools, taken over; a name already listed is dropped), those the key may see, in name order. */
static cJSON *tools_json(const struct config *cfg, const struct key_record *key, cJSON *extra)
{
    cJSON *defs = agents_defs_json(cfg);
    cJSON *fix = cfg->mcp.conformance_fixtures ? fixtures_tools_json() : NULL;
    size_t cap = (size_t)cJSON_GetArraySize(defs) + sizeof(builtin_tools) / sizeof(builtin_tools[0]) +
                 (size_t)cJSON_GetArraySize(fix) + (size_t)cJSON_GetArraySize(extra);
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
            dup = strcmp(tname(v[i]), name->valuestring) == 0;
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
            shadowed = strcmp(tname(v[i]), builtin_tools[k]) == 0;
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
    cJSON *srcs[2] = {fix, extra};
    for (int k = 0; k < 2; k++) {
        cJSON *t;
        while (srcs[k] && (t = cJSON_DetachItemFromArray(srcs[k], 0)) != NULL) {
            bool dup = !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(t, "name"));
            for (size_t i = 0; i < n && !dup; i++)
                dup = strcmp(tname(v[i]), tname(t)) == 0;
            if (dup)
                cJSON_Delete(t);
            else
                v[n++] = t;
        }
        cJSON_Delete(srcs[k]);
    }
    qsort(v, n, sizeof(*v), by_name);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        if (key_mcp_tool_allowed(key, tname(v[i])))
            cJSON_AddItemToArray(arr, v[i]);
        else
            cJSON_Delete(v[i]);
    }
    xfree(v);
    return arr;
}

static void builtin_done(struct tool_exec *te, enum tool_outcome o, const char *text, size_t len)
{
    struct call *c = te->ud;
    struct batch *b = c->b;
    b->calls[c->slot] = NULL;
    put_result(b, c->slot, c->id, tool_result(text, len, o != TOOL_OK));
    mop_end(b, c->slot);
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
    mop_end(b, c->slot);
    call_free(c);
    batch_one_done(b);
}

/* Every PROGRESS_MS while an agent's run answers a tools/call that asked for progress: a step that began, or text
 * its model streamed, is a notifications/progress on the (then started) SSE answer, before the result. */
#define PROGRESS_MS 100
static void progress_poll(uv_timer_t *t)
{
    struct call *c = t->data;
    struct batch *b = c->b;
    if (b == NULL)
        return;
    int64_t step = c->pstep;
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    bool more = run_stream_read(c->run_id, &c->pstep, &c->poff, &text);
    if (!more && step == c->pstep) {
        buf_free(&text);
        return;
    }
    struct http_req *req = b->req;
    if (!b->streaming) {
        http_resp_header(req, "Cache-Control", "no-cache");
        http_resp_header(req, "X-Accel-Buffering", "no");
        http_stream_start(req, 200, "text/event-stream");
        b->streaming = true;
    }
    cJSON *n = cJSON_CreateObject();
    cJSON_AddStringToObject(n, "jsonrpc", "2.0");
    cJSON_AddStringToObject(n, "method", "notifications/progress");
    cJSON *p = cJSON_AddObjectToObject(n, "params");
    cJSON_AddItemToObject(p, "progressToken", cJSON_Duplicate(c->ptoken, true));
    cJSON_AddNumberToObject(p, "progress", ++c->pcount);
    char msg[300];
    snprintf(msg, sizeof(msg), "step %lld%s%.*s", (long long)c->pstep, text.len ? ": " : "",
             (int)(text.len < 200 ? text.len : 200), text.data ? text.data : "");
    cJSON_AddStringToObject(p, "message", msg);
    char *js = cJSON_PrintUnformatted(n);
    cJSON_Delete(n);
    struct buf ev = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&ev, "event: message\ndata: ");
    buf_append_str(&ev, js);
    buf_append_str(&ev, "\n\n");
    http_stream_write(req, ev.data, ev.len);
    buf_free(&ev);
    cJSON_free(js);
    buf_free(&text);
}

static void agent_finished(void *ud, const char *id)
{
    struct call *c = ud;
    progress_stop(c);
    snprintf(c->run_id, sizeof(c->run_id), "%s", id);
    c->reading = true;
    c->w.data = c;
    if (uv_queue_work(http_server_loop(c->b->req->server), &c->w, run_read_work, run_read_done) != 0) {
        c->rc = -1;
        run_read_done(&c->w, 0);
    }
}

/* The trace context for an upstream request, in its _meta (2026-07-28: traceparent, tracestate, baggage,
 * unprefixed): the client span's id under this message's trace; tracestate and baggage as the client sent them. */
static cJSON *upstream_meta(struct batch *b, size_t slot, const struct jr_msg *m, const uint8_t client_span[8])
{
    const struct mop *o = &b->mops[slot];
    cJSON *meta = cJSON_CreateObject();
    char tp[TRACEPARENT_LEN + 1];
    trace_format_traceparent(tp, o->trace_id, client_span, o->flags);
    cJSON_AddStringToObject(meta, "traceparent", tp);
    static const char *const keys[] = {"tracestate", "baggage"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = jr_meta(m, keys[k]);
        char hv[TRACESTATE_MAX + 1];
        size_t hl = 0;
        const char *val = NULL;
        if (cJSON_IsString(v)) {
            val = v->valuestring;
            hl = strlen(val);
        } else if (header_copy(b->req, keys[k], hv, sizeof(hv), &hl) && hl < sizeof(hv)) {
            val = hv;
        }
        if (val == NULL || hl == 0 || hl > TRACESTATE_MAX || strpbrk(val, "\r\n"))
            continue;
        if (k == 0 && !trace_tracestate_valid(val, hl))
            continue;
        cJSON_AddStringToObject(meta, keys[k], val);
    }
    const cJSON *pt = jr_meta(m, "progressToken");
    if (cJSON_IsString(pt) || cJSON_IsNumber(pt))
        cJSON_AddItemToObject(meta, "progressToken", cJSON_Duplicate(pt, true));
    return meta;
}

static void observe_upstream(const struct mop *o, const char *server, const char *method, const char *tool,
                             const uint8_t span[8], uint64_t start_ns, uint64_t start_us, const char *etype)
{
    double secs = (double)(time_mono_us() - start_us) / 1e6;
    metrics_observe(&m_client_op, (const char *[]){method, tool, etype ? etype : "", server}, secs);
    if (o == NULL || !o->sampled)
        return;
    struct otel_span *sp = otel_span_new();
    memcpy(sp->trace_id, o->trace_id, 16);
    memcpy(sp->span_id, span, 8);
    memcpy(sp->parent_id, o->span_id, 8);
    sp->has_parent = true;
    sp->trace_flags = 1;
    sp->kind = OTEL_SPAN_CLIENT;
    sp->start_ns = start_ns;
    sp->end_ns = wall_ns();
    snprintf(sp->name, sizeof(sp->name), "%s %.100s", method, tool);
    otel_span_cstr(sp, "mcp.method.name", method);
    otel_span_cstr(sp, "mcp.protocol.version", MCP_PROTOCOL_VERSION);
    otel_span_cstr(sp, "gen_ai.tool.name", tool);
    otel_span_cstr(sp, "gen_ai.operation.name", "execute_tool");
    otel_span_cstr(sp, "agentd.mcp.server", server);
    if (etype) {
        sp->status = OTEL_STATUS_ERROR;
        otel_span_cstr(sp, "error.type", etype);
    }
    otel_span_submit(sp);
}

/* An upstream's answer to a federated tools/call. Its result goes to the client as it is (its _meta's protocol
 * keys dropped); its JSON-RPC error keeps its code when it is a JSON-RPC or implementation-defined one (-32768 ..
 * -32000), else -32603, with the server named; a failure (unreachable, HTTP error, garbage, timeout) is a tool
 * error naming the server, so that a client's model sees it and the other tools go on working. */
static void fed_done(void *ud, const cJSON *result, bool rpc_error, int64_t code, const char *why)
{
    struct call *c = ud;
    struct batch *b = c->b;
    c->fed = NULL;
    b->calls[c->slot] = NULL;
    char msg[512];
    const char *etype = NULL;
    const cJSON *content = result ? cJSON_GetObjectItemCaseSensitive(result, "content") : NULL;
    if (result && cJSON_IsArray(content)) {
        cJSON *r = cJSON_Duplicate(result, true);
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(r, "_meta");
        if (meta && !cJSON_IsObject(meta))
            cJSON_DeleteItemFromObjectCaseSensitive(r, "_meta");
        cJSON_DeleteItemFromObjectCaseSensitive(r, "resultType");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "isError")))
            etype = "tool_error";
        put_result(b, c->slot, c->id, r);
    } else if (rpc_error) {
        int rc = code >= -32768 && code <= -32000 ? (int)code : JR_INTERNAL_ERROR;
        snprintf(msg, sizeof(msg), "%s (MCP server %s)", why, c->server);
        put_error(b, c->slot, c->id, rc, msg, NULL);
        etype = "upstream_rpc_error";
    } else {
        snprintf(msg, sizeof(msg), "MCP server %s failed: %s", c->server,
                 result ? "its answer is not a tool result" : why);
        cJSON *r = tool_result(msg, strlen(msg), true);
        cJSON *meta = cJSON_AddObjectToObject(r, "_meta");
        cJSON_AddBoolToObject(meta, "agentd/upstream_error", true);
        etype = "upstream_error";
        snprintf(b->mops[c->slot].etype, sizeof(b->mops[c->slot].etype), "%s", etype);
        put_result(b, c->slot, c->id, r);
    }
    log_info("mcp: key %s called %s on MCP server %s: %s", b->key_id[0] ? b->key_id : "(none)", c->upstream_tool,
             c->server, etype ? etype : "ok");
    observe_upstream(&b->mops[c->slot], c->server, "tools/call", c->upstream_tool, c->client_span,
                     c->client_start_ns, c->client_start_us, etype);
    mop_end(b, c->slot);
    call_free(c);
    batch_one_done(b);
}

struct ctx;
static void fixture_call(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x, const char *name,
                         const cJSON *args);

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
    const struct config *cfg = x->req->cfg;
    const char *nm = name->valuestring;
    /* a tool the key may not see does not exist for it: the same answer as a name nobody has */
    bool allowed = key_mcp_tool_allowed(x->who ? x->who->key : NULL, nm);
    struct config_agent def;
    bool agent = allowed && agent_name_problem(nm)[0] == '\0' && agents_lookup(cfg, nm, &def);
    bool builtin = false;
    for (size_t i = 0; allowed && !agent && i < sizeof(builtin_tools) / sizeof(builtin_tools[0]); i++)
        builtin = builtin || strcmp(nm, builtin_tools[i]) == 0;
    bool fixture = allowed && !agent && !builtin && cfg->mcp.conformance_fixtures && fixtures_has_tool(nm);
    const char *up_tool = NULL;
    const struct agent_mcp_server *up =
        allowed && !agent && !builtin && !fixture ? fed_server_of(cfg, nm, &up_tool) : NULL;
    if (!agent && !builtin && !fixture && up == NULL) {
        snprintf(msg, sizeof(msg), "Unknown tool: %.200s", nm);
        put_error(b, slot, m->id, JR_INVALID_PARAMS, msg, NULL);
        return;
    }
    snprintf(b->mops[slot].tool, sizeof(b->mops[slot].tool), "%s", strlen(nm) <= FED_TOOL_NAME_MAX ? nm : "");
    int64_t retry_ms = 0;
    if (rate_limit(cfg, x->who, &retry_ms, msg, sizeof(msg)) != 0) {
        if (agent)
            agent_def_free(&def);
        cJSON *data = cJSON_CreateObject();
        cJSON_AddNumberToObject(data, "retryAfterMs", (double)retry_ms);
        snprintf(b->mops[slot].etype, sizeof(b->mops[slot].etype), "rate_limited");
        put_error(b, slot, m->id, MCP_RATE_LIMITED, msg, data);
        cJSON_Delete(data);
        if (!b->array) {
            b->status = 429;
            http_resp_headerf(x->req, "Retry-After", "%lld", (long long)(retry_ms + 999) / 1000);
        }
        return;
    }
    if (fixture) {
        fixture_call(b, slot, m, x, nm, args);
        return;
    }
    struct call *c = xcalloc(1, sizeof(*c));
    c->b = b;
    c->slot = slot;
    c->id = cJSON_Duplicate(m->id, true);
    if (up) {
        c->kind = CALL_FED;
        c->cfg = cfg;
        snprintf(c->server, sizeof(c->server), "%s", up->name);
        snprintf(c->upstream_tool, sizeof(c->upstream_tool), "%s", up_tool);
        trace_new_span_id(c->client_span);
        c->client_start_ns = wall_ns();
        c->client_start_us = time_mono_us();
        b->calls[slot] = c;
        b->pending++;
        c->fed = fed_call_start(http_server_loop(x->req->server), up, up_tool, args,
                                upstream_meta(b, slot, m, c->client_span), fed_done, c);
        return;
    }
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
    /* progress from the run's steps and streamed text, when the client asked for it and takes an SSE answer (one
     * message per body: the answer's status is then certainly 200) */
    const cJSON *pt = jr_meta(m, "progressToken");
    if ((cJSON_IsString(pt) || cJSON_IsNumber(pt)) && b->sse_ok && b->n == 1) {
        c->ptoken = cJSON_Duplicate(pt, true);
        c->pstep = -1;
        run_watch(c->run_id, +1);
        c->ptimer = xmalloc(sizeof(*c->ptimer));
        uv_timer_init(loop, c->ptimer);
        c->ptimer->data = c;
        uv_timer_start(c->ptimer, progress_poll, PROGRESS_MS, PROGRESS_MS);
    }
}

static void list_put(struct batch *b, size_t slot, const cJSON *id, cJSON *tools)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "tools", tools);
    if (b->modern) {
        cJSON_AddNumberToObject(r, "ttlMs", LIST_TTL_MS);
        cJSON_AddStringToObject(r, "cacheScope", "private");
    }
    put_result(b, slot, id, r);
}

static void upstream_listed(const char *server, const char *method, const char *tool, uint64_t start_wall_us,
                            const char *etype)
{
    (void)tool;
    double secs = (double)(time_wall_us() - start_wall_us) / 1e6;
    metrics_observe(&m_client_op, (const char *[]){method, "", etype ? etype : "", server}, secs > 0 ? secs : 0);
}

static void fed_listed(void *ud, cJSON *tools)
{
    struct call *c = ud;
    struct batch *b = c->b;
    c->list = NULL;
    b->calls[c->slot] = NULL;
    list_put(b, c->slot, c->id, tools_json(c->cfg, c->has_key ? &c->kf : NULL, tools));
    mop_end(b, c->slot);
    call_free(c);
    batch_one_done(b);
}

static void tools_list(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *cursor = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "cursor") : NULL;
    if (cursor && !cJSON_IsNull(cursor)) { /* one page: no cursor is ever handed out */
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: unknown cursor", NULL);
        return;
    }
    const struct config *cfg = x->req->cfg;
    const struct key_record *key = x->who ? x->who->key : NULL;
    if (cfg->mcp.servers.n == 0) {
        list_put(b, slot, m->id, tools_json(cfg, key, NULL));
        return;
    }
    /* the upstream servers' tools: from this loop's cache, or asked (all at once); answered when they are in */
    struct call *c = xcalloc(1, sizeof(*c));
    c->b = b;
    c->slot = slot;
    c->id = cJSON_Duplicate(m->id, true);
    c->kind = CALL_LIST;
    c->cfg = cfg;
    if (key) {
        c->has_key = true;
        c->kf.nmcp_tools = key->nmcp_tools;
        c->kf.mcp_tools = key->nmcp_tools ? xcalloc(key->nmcp_tools, sizeof(char *)) : NULL;
        for (size_t i = 0; i < key->nmcp_tools; i++)
            c->kf.mcp_tools[i] = xstrdup(key->mcp_tools[i]);
        c->kf.nmcp_deny = key->nmcp_deny;
        c->kf.mcp_deny = key->nmcp_deny ? xcalloc(key->nmcp_deny, sizeof(char *)) : NULL;
        for (size_t i = 0; i < key->nmcp_deny; i++)
            c->kf.mcp_deny[i] = xstrdup(key->mcp_deny[i]);
    }
    b->calls[slot] = c;
    b->pending++;
    c->list = fed_list_start(http_server_loop(x->req->server), cfg, upstream_listed, fed_listed, c);
}

static void ask_done(void *ud, const cJSON *answer)
{
    struct call *c = ud;
    struct batch *b = c->b;
    c->ask = NULL;
    b->calls[c->slot] = NULL;
    put_result(b, c->slot, c->id, fixtures_client_result(c->name, answer));
    mop_end(b, c->slot);
    call_free(c);
    batch_one_done(b);
}

/* A fixture that asks the client (sampling, elicitation; 2025-11-25): the answer becomes an SSE stream at once,
 * the request goes out on it, and the tool's result follows when the client POSTs its answer in this session. */
static void fixture_ask(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x, const char *name,
                        cJSON *ask)
{
    if (!b->sid[0] || !b->sse_ok || b->n != 1) {
        cJSON_Delete(ask);
        const char *t = "this tool asks the client: it needs a session and a client that takes an SSE answer";
        put_result(b, slot, m->id, tool_result(t, strlen(t), true));
        return;
    }
    struct call *c = xcalloc(1, sizeof(*c));
    c->b = b;
    c->slot = slot;
    c->id = cJSON_Duplicate(m->id, true);
    c->kind = CALL_ASK;
    c->name = xstrdup(name);
    char rid[MCP_PENDING_ID_MAX];
    c->ask = mcp_pending_new(http_server_loop(x->req->server), b->sid, rid, ask_done, c);
    if (c->ask == NULL) {
        cJSON_Delete(ask);
        call_free(c);
        put_error(b, slot, m->id, JR_INTERNAL_ERROR, "too many requests to clients are waiting", NULL);
        return;
    }
    cJSON_AddStringToObject(ask, "jsonrpc", "2.0");
    cJSON_AddStringToObject(ask, "id", rid);
    char *js = cJSON_PrintUnformatted(ask);
    cJSON_Delete(ask);
    struct http_req *req = b->req;
    http_resp_header(req, "Cache-Control", "no-cache");
    http_resp_header(req, "X-Accel-Buffering", "no");
    http_stream_start(req, 200, "text/event-stream");
    b->streaming = true;
    struct buf ev = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&ev, "event: message\ndata: ");
    buf_append_str(&ev, js);
    buf_append_str(&ev, "\n\n");
    http_stream_write(req, ev.data, ev.len);
    buf_free(&ev);
    cJSON_free(js);
    b->calls[slot] = c;
    b->pending++;
}

/* A conformance fixture tool: answered now; its notifications go before the answer when the client takes SSE. */
static void fixture_call(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x, const char *name,
                         const cJSON *args)
{
    (void)args;
    (void)x;
    if (b->modern && strcmp(name, "test_missing_capability") == 0 &&
        !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(jr_meta(m, META_CAPS), "sampling"))) {
        cJSON *data = cJSON_CreateObject();
        cJSON *rc = cJSON_AddObjectToObject(data, "requiredCapabilities");
        cJSON_AddObjectToObject(rc, "sampling");
        put_error(b, slot, m->id, MCP_MISSING_CAPABILITY,
                  "Missing required client capability: this tool needs sampling", data);
        cJSON_Delete(data);
        if (!b->array)
            b->status = 400;
        return;
    }
    if (fixtures_is_mrtr(name)) {
        const char *why = "Invalid params";
        cJSON *mr = fixtures_mrtr(name, m->params, jr_meta(m, META_CAPS), &why);
        if (mr)
            put_result(b, slot, m->id, mr);
        else
            put_error(b, slot, m->id, JR_INVALID_PARAMS, why, NULL);
        return;
    }
    cJSON *ask = b->modern ? NULL : fixtures_client_request(name, args);
    if (ask) {
        fixture_ask(b, slot, m, x, name, ask);
        return;
    }
    cJSON *notes = cJSON_CreateArray();
    cJSON *r = fixtures_tool_result(name, jr_meta(m, "progressToken"), notes);
    /* 2026-07-28: log notifications only for a request that set a log level */
    bool logs = !b->modern || jr_meta(m, "io.modelcontextprotocol/logLevel") != NULL;
    const cJSON *n;
    cJSON_ArrayForEach(n, notes)
    {
        const cJSON *meth = cJSON_GetObjectItemCaseSensitive(n, "method");
        if (!logs && strcmp(meth->valuestring, "notifications/message") == 0)
            continue;
        char *t = cJSON_PrintUnformatted(n);
        buf_append_str(&b->notes, "event: message\ndata: ");
        buf_append_str(&b->notes, t);
        buf_append_str(&b->notes, "\n\n");
        cJSON_free(t);
    }
    cJSON_Delete(notes);
    put_result(b, slot, m->id, r);
}

/* ---- resources (agent definitions, and the fixtures) and prompts (the fixtures) ---- */

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
    cJSON *arr = x->req->cfg->mcp.conformance_fixtures ? fixtures_resources_json() : cJSON_CreateArray();
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
    cJSON *fc = x->req->cfg->mcp.conformance_fixtures ? fixtures_resource_read(u) : NULL;
    if (fc) {
        put_list(b, slot, m, "contents", fc);
        return;
    }
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

static void prompts_get(struct batch *b, size_t slot, const struct jr_msg *m, const struct ctx *x)
{
    const cJSON *name = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "name") : NULL;
    const cJSON *args = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "arguments") : NULL;
    if (!cJSON_IsString(name)) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, "Invalid params: \"name\" must be a string", NULL);
        return;
    }
    const char *why = "Invalid params: unknown prompt";
    bool fix = x->req->cfg->mcp.conformance_fixtures;
    cJSON *r = !fix                                ? NULL
               : fixtures_is_mrtr(name->valuestring) ? fixtures_mrtr(name->valuestring, m->params, jr_meta(m, META_CAPS), &why)
                                                   : fixtures_prompt_get(name->valuestring, args, &why);
    if (r == NULL) {
        put_error(b, slot, m->id, JR_INVALID_PARAMS, why, NULL);
        return;
    }
    put_result(b, slot, m->id, r);
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
    snprintf(b->version, sizeof(b->version), "%s", v);
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
        put_list(b, slot, m, "resourceTemplates",
                 x->req->cfg->mcp.conformance_fixtures ? fixtures_resource_templates_json() : cJSON_CreateArray());
    else if (strcmp(meth, "prompts/list") == 0 && !bad_cursor(b, slot, m))
        put_list(b, slot, m, "prompts",
                 x->req->cfg->mcp.conformance_fixtures ? fixtures_prompts_json() : cJSON_CreateArray());
    else if (strcmp(meth, "prompts/get") == 0)
        prompts_get(b, slot, m, x);
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
        snprintf(b->mops[slot].method, sizeof(b->mops[slot].method), "other"); /* metric labels stay few */
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
static void run_body(struct http_req *req, const cJSON *root, bool modern, const char *version, const char *sid,
                     const struct ctx *x)
{
    struct batch *b = xcalloc(1, sizeof(*b));
    b->req = req;
    b->modern = modern;
    snprintf(b->version, sizeof(b->version), "%s", version);
    snprintf(b->sid, sizeof(b->sid), "%s", sid);
    snprintf(b->key_id, sizeof(b->key_id), "%s", x->who && x->who->key_id ? x->who->key_id : "");
    b->array = cJSON_IsArray(root);
    b->status = 200;
    const struct str *acc = http_req_header(req, "accept");
    b->sse_ok = acc && memmem(acc->p, acc->n, "text/event-stream", 17);
    b->sse = b->sse_ok && !memmem(acc->p, acc->n, "application/json", 16);
    buf_init(&b->notes, BUF_UNBOUNDED);
    b->n = b->array ? (size_t)cJSON_GetArraySize(root) : 1;
    b->out = xcalloc(b->n, sizeof(*b->out));
    for (size_t i = 0; i < b->n; i++)
        buf_init(&b->out[i], BUF_UNBOUNDED);
    b->calls = xcalloc(b->n, sizeof(*b->calls));
    b->mops = xcalloc(b->n, sizeof(*b->mops));
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
        if (m.kind == JR_RESPONSE && b->sid[0])
            (void)mcp_pending_answer(b->sid, item); /* the answer to a request of ours (fixtures.h) */
        mop_begin(b, i, &m);
        dispatch(b, i, &m, x);
        if (b->calls[i] == NULL)
            mop_end(b, i); /* answered now */
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
    run_body(req, root, true, MODERN, "", x);
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
    char sid[80] = "";
    if (!init) {
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
    run_body(req, root, false, version, strlen(sid) < 33 ? sid : "", x);
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
    struct jwt_who jw;
    if (authenticate(req, &x.who, &x.secret, &jw) != 0)
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
