#include "api/routes.h"

#include "api/debug.h"
#include "api/gw_http.h"
#include "api/ops.h"
#include "common/alloc.h"
#include "config/config.h"

static const struct http_route base_routes[] = {
    {"/health", HTTP_M_GET, false, ops_health, NULL},
    {"/ready", HTTP_M_GET, false, ops_ready, NULL},
    {"/v1/chat/completions", HTTP_M_POST, false, gw_handle_chat_completions, NULL},
    {"/v1/messages", HTTP_M_POST, false, gw_handle_messages, NULL},
    {"/v1/embeddings", HTTP_M_POST, false, gw_handle_embeddings, NULL},
    {"/v1/models", HTTP_M_GET, false, gw_handle_models, NULL},
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

struct http_router api_router;
struct http_router ops_router = {ops_routes, sizeof(ops_routes) / sizeof(ops_routes[0])};
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
