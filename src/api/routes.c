#include "api/routes.h"

#include "api/admin_spend.h"
#include "api/debug.h"
#include "api/gw_http.h"
#include "api/ops.h"
#include "common/alloc.h"
#include "common/str.h"
#include "config/config.h"
#include "gateway/anthropic.h"
#include "gateway/exchange.h"
#include "gateway/gw_types.h"

static const struct http_route base_routes[] = {
    {"/health", HTTP_M_GET, false, ops_health, NULL},
    {"/ready", HTTP_M_GET, false, ops_ready, NULL},
    {"/v1/chat/completions", HTTP_M_POST, false, gw_handle_chat_completions, NULL},
    {"/v1/messages", HTTP_M_POST, false, gw_handle_messages, NULL},
    {"/v1/embeddings", HTTP_M_POST, false, gw_handle_embeddings, NULL},
    {"/v1/models", HTTP_M_GET, false, gw_handle_models, NULL},
    {"/admin/spend", HTTP_M_GET, false, admin_spend, NULL},
    /* clients configured with a base URL that lacks /v1 */
    {"/chat/completions", HTTP_M_POST, false, gw_handle_chat_completions, "/v1/chat/completions"},
    {"/embeddings", HTTP_M_POST, false, gw_handle_embeddings, "/v1/embeddings"},
    {"/models", HTTP_M_GET, false, gw_handle_models, "/v1/models"},
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
    anthropic_error_json(&b, &e, req->request_id);
    http_respond(req, status, "application/json", b.data, b.len);
    buf_free(&b);
}

struct http_router api_router = {.error = api_error};
struct http_router ops_router = {ops_routes, sizeof(ops_routes) / sizeof(ops_routes[0]), NULL};
static struct http_route *api_table;

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void add(size_t *n, const struct http_route *r, size_t count)
{
    for (size_t i = 0; i < count; i++)
        api_table[(*n)++] = r[i];
}

void routes_init(struct config *cfg)
{
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
    xfree(api_table);
    api_table = NULL;
    api_router.routes = NULL;
    api_router.n = 0;
}
