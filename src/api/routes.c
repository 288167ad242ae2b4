#include "api/routes.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/admin_deployments.h"
#include "api/admin_keys.h"
#include "api/admin_spend.h"
#include "api/agents_http.h"
#include "agent/run.h"
#include "api/debug.h"
#include "api/gw_http.h"
#include "api/me.h"
#include "api/ops.h"
#include "api/responses_http.h"
#include "api/sandbox_http.h"
#include "api/worker.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"
#include "config/config.h"
#include "gateway/front_anthropic.h"
#include "gateway/providers/anthropic.h"
#include "gateway/exchange.h"
#include "gateway/gw_types.h"
#include "mcp/mcp.h"
#include "mcp/mcp_jwt.h"
#include "policy/auth.h"
#include "store/keys_store.h"
#include "store/store_config.h"

static void models_guarded(struct http_req *req);
static void model_get_guarded(struct http_req *req);
static void responses_item_guarded(struct http_req *req);
static void mcp_route(struct http_req *req);

static const struct http_route base_routes[] = {
    {"/health", HTTP_M_GET, false, ops_health, NULL},
    {"/ready", HTTP_M_GET, false, ops_ready, NULL},
    {"/v1/chat/completions", HTTP_M_POST, false, gw_handle_chat_completions, NULL},
    {"/v1/messages", HTTP_M_POST, false, gw_handle_messages, NULL},
    /* a token count runs through the spine (authenticate, route, admit: gw_submit_counted) */
    {"/v1/messages/count_tokens", HTTP_M_POST, false, gw_handle_count_tokens, NULL},
    {"/v1/embeddings", HTTP_M_POST, false, gw_handle_embeddings, NULL},
    {"/v1/models", HTTP_M_GET, false, models_guarded, NULL},
    {"/v1/models/", HTTP_M_GET, true, model_get_guarded, "/v1/models/{id}"},
    {"/v1/responses", HTTP_M_POST, false, gw_handle_responses, NULL},
    {"/v1/responses/", HTTP_M_GET | HTTP_M_DELETE | HTTP_M_POST, true, responses_item_guarded, "/v1/responses/{id}"},
    {"/v1/sandbox/runs", HTTP_M_POST, false, sandbox_http_runs, NULL},
    /* key management (admin_keys.c): 404 unless AGENTD_ADMIN_KEY is set */
    {"/admin/keys", HTTP_M_GET | HTTP_M_POST, false, admin_keys_handle, NULL},
    {"/admin/keys/", HTTP_M_GET | HTTP_M_PATCH | HTTP_M_DELETE, true, admin_keys_handle, "/admin/keys/{id}"},
    {"/admin/spend", HTTP_M_GET, false, admin_spend, NULL},
    {"/admin/deployments", HTTP_M_GET, false, admin_deployments, NULL},
    /* agents (agents_http.c, admin_agents.c) */
    {"/v1/agents/", HTTP_M_POST | HTTP_M_GET, true, agents_http_runs_create, "/v1/agents/{name}/runs"},
    {"/v1/runs", HTTP_M_GET, false, agents_http_runs, "/v1/runs"},
    {"/v1/runs/", HTTP_M_GET | HTTP_M_POST, true, agents_http_runs, "/v1/runs/{id}"},
    {"/admin/agents", HTTP_M_GET | HTTP_M_POST, false, admin_agents_handle, NULL},
    {"/admin/agents/", HTTP_M_GET | HTTP_M_PUT | HTTP_M_DELETE, true, admin_agents_handle, "/admin/agents/{name}"},
    /* the calling key's own budgets, limits and what is left of them (me.c) */
    {"/v1/me", HTTP_M_GET, false, me_handle, NULL},
    /* MCP server (src/mcp, docs/mcp.md) and its OAuth protected-resource metadata (RFC 9728) */
    {"/mcp", HTTP_M_GET | HTTP_M_POST | HTTP_M_DELETE, false, mcp_route, NULL},
    {"/.well-known/oauth-protected-resource", HTTP_M_GET, false, mcp_http_metadata, NULL},
    {"/.well-known/oauth-protected-resource/mcp", HTTP_M_GET, false, mcp_http_metadata, NULL},
    /* clients configured with a base URL that lacks /v1 */
    {"/chat/completions", HTTP_M_POST, false, gw_handle_chat_completions, "/v1/chat/completions"},
    {"/embeddings", HTTP_M_POST, false, gw_handle_embeddings, "/v1/embeddings"},
    {"/models", HTTP_M_GET, false, models_guarded, "/v1/models"},
    {"/models/", HTTP_M_GET, true, model_get_guarded, "/v1/models/{id}"},
    {"/responses", HTTP_M_POST, false, gw_handle_responses, "/v1/responses"},
    {"/responses/", HTTP_M_GET | HTTP_M_DELETE | HTTP_M_POST, true, responses_item_guarded, "/v1/responses/{id}"},
};

static const struct http_route debug_routes[] = {
    {"/debug/echo", HTTP_M_POST | HTTP_M_PUT, false, debug_echo, NULL},
    {"/debug/sleep", HTTP_M_GET, false, debug_sleep, NULL},
    {"/debug/stall", HTTP_M_GET, false, debug_stall, NULL},
};

static const struct http_route ops_routes[] = {
    {"/health", HTTP_M_GET, false, ops_health, NULL},
    {"/ready", HTTP_M_GET, false, ops_ready, NULL},
    {"/metrics", HTTP_M_GET, false, ops_metrics, NULL},
};

/* Errors the HTTP server finds itself (404, 405, 408, 413, 431, ...) in the format of the route family the
 * client is talking to: Anthropic's for /v1/messages and below, OpenAI's for everything else. */
static bool anthropic_family(struct str path)
{
    return str_eq(path, STR_LIT("/v1/messages")) || str_starts_with(path, STR_LIT("/v1/messages/"));
}

static void api_error(struct http_req *req, int status, const char *code, const char *message)
{
    enum gw_err_type t = gw_err_type_for_status(status);
    if (!anthropic_family(req->path)) {
        http_respond_error(req, status, gw_err_type_openai(t), code, message);
        return;
    }
    struct gw_error e = {.status = status, .type = t, .retry_after_ms = -1};
    str_lcpy(e.message, message, sizeof(e.message));
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic_error_json(&b, &e, req->request_id);
    http_respond(req, status, "application/json", b.data, b.len);
    buf_free(&b);
}

struct http_router api_router = {.error = api_error};

/* GET /v1/models: under auth.mode keys the list is for callers with a valid key only (as the chat routes, whose
 * authenticate stage runs before the model is looked up). */
/* Routes outside the spine (/v1/models, /v1/models/{id}, stored responses) need a key as every model route does
 * under auth.mode keys. */
static bool models_key_ok(struct http_req *req)
{
    if (keyring_armed() && auth_mode_effective(req->cfg) == AUTH_MODE_KEYS) {
        struct auth_input in = {.secret = auth_secret_from(http_req_header(req, "authorization"),
                                                           http_req_header(req, "x-api-key"),
                                                           http_req_header(req, "api-key")),
                               .request_id = req->request_id};
        char route[128];
        snprintf(route, sizeof(route), "%.*s", (int)(req->path.n < 120 ? req->path.n : 120), req->path.p);
        in.route = route;
        const struct principal *p = NULL;
        enum auth_result r = auth_check(&in, (int64_t)time(NULL), &p);
        principal_release(p);
        if (r != AUTH_OK && r != AUTH_MODEL_DENIED) { /* a key limited to some models may still list */
            gw_respond_unauthorized(req);
            return false;
        }
    }
    return true;
}

static void models_guarded(struct http_req *req)
{
    if (models_key_ok(req))
        gw_handle_models(req);
}

static void model_get_guarded(struct http_req *req)
{
    if (models_key_ok(req))
        gw_handle_model_get(req);
}

/* Stored responses (GET/DELETE /v1/responses/{id}, input_items) do not run through the spine's
 * authenticate stage: they need a key here, as every other route that reads or spends does. */
static void responses_item_guarded(struct http_req *req)
{
    /* POST /v1/responses/input_tokens runs through the spine, whose authenticate stage checks the key */
    static const char tail[] = "/input_tokens";
    size_t n = sizeof(tail) - 1;
    bool count = req->method == HTTP_M_POST && req->path.n > n &&
                 memcmp(req->path.p + req->path.n - n, tail, n) == 0;
    if (count || models_key_ok(req))
        responses_http_item(req);
}

/* /mcp (src/mcp): agent runs started there submit through this loop's gateway state. */
static void mcp_route(struct http_req *req)
{
    struct worker *w = worker_of_loop(http_server_loop(req->server));
    mcp_http_handle(req, w ? w->gateway : NULL);
}

struct http_router ops_router = {ops_routes, sizeof(ops_routes) / sizeof(ops_routes[0]), NULL};
static struct http_route *api_table;

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void add(size_t *n, const struct http_route *r, size_t count)
{
    for (size_t i = 0; i < count; i++)
        api_table[(*n)++] = r[i];
}

/* The services the API's routes need: the keyring (keys in memory, refreshed from the store by its own thread)
 * and the admin API's settings. */
static void services_start(const struct config *cfg)
{
    struct buf err = BUF_INIT(4096);
    if (keyring_start(cfg->server.data_dir, store_keys_ops(), 100, &err) != 0)
        log_error("virtual keys unavailable, retrying every 100ms (until then every key is refused): %s",
                  err.data ? err.data : "?");
    buf_free(&err);
    admin_keys_init(cfg->server.data_dir);
    mcp_init();
    mcp_jwt_start(cfg);
    char aerr[256];
    if (agents_start(cfg->server.data_dir, false, aerr, sizeof(aerr)) != 0)
        log_error("agent runs unavailable: %s", aerr);
    if (auth_mode_effective(cfg) == AUTH_MODE_NONE)
        log_warn("auth.mode is none: any client that reaches %s may call the gateway without a key (set "
                 "auth.mode: keys, or listen beyond loopback / ENVIRONMENT=production to make keys the default)",
                 cfg->server.listen);
    else
        log_info("auth.mode is keys: gateway requests need a virtual key (%zu known)", keyring_size());
}

void routes_init(struct config *cfg)
{
    services_start(cfg);
    size_t cap = COUNT(base_routes) + COUNT(debug_routes);
    api_table = xcalloc(cap, sizeof(*api_table));
    size_t n = 0;
    add(&n, base_routes, COUNT(base_routes));
    if (cfg->server.debug_routes)
        add(&n, debug_routes, COUNT(debug_routes));
    api_router.routes = api_table;
    api_router.n = n;
}

void routes_shutdown(void)
{
    admin_keys_shutdown();
    mcp_jwt_stop();
    mcp_shutdown();
    agents_stop();
    keyring_stop();
    xfree(api_table);
    api_table = NULL;
    api_router.routes = NULL;
    api_router.n = 0;
}
