/* federation.c: upstream MCP servers behind /mcp (federation.h). Requests go through the agents' MCP client
 * (agent/mcp_client.h: HTTP in either era, or stdio; one session per loop and server); a server's tools are cached
 * per loop for its tools_ttl, under the name and URL (or command) they were listed from, until the server announces
 * a changed list (notifications/tools/list_changed, session era: mcp_tools_generation). */
#include "mcp/federation.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_config.h"
#include "agent/mcp_client.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"

#define LIST_PAGES_MAX 16 /* tools/list pages read from one server */

static const struct agent_mcp_server *srv_at(const struct config *cfg, size_t i)
{
    return &((const struct agent_mcp_server *)cfg->mcp.servers.items)[i];
}

/* ---- names ---- */

bool fed_tool_name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9') ||
              s[n] == '_' || s[n] == '-' || s[n] == '.'))
            return false;
    return n > 0 && n <= FED_TOOL_NAME_MAX;
}

const struct agent_mcp_server *fed_server_of(const struct config *cfg, const char *name, const char **tool)
{
    const char *sep = name ? strstr(name, "__") : NULL;
    if (sep == NULL || sep[2] == '\0')
        return NULL;
    for (size_t i = 0; i < cfg->mcp.servers.n; i++) {
        const struct agent_mcp_server *s = srv_at(cfg, i);
        size_t n = strlen(s->name);
        if (n == (size_t)(sep - name) && strncmp(s->name, name, n) == 0) {
            *tool = sep + 2;
            return s;
        }
    }
    return NULL;
}

int fed_add_tools(const cJSON *result, const char *server, cJSON *arr, char **next_cursor)
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
        if (!cJSON_IsObject(t) || !cJSON_IsString(name))
            continue;
        char full[FED_TOOL_NAME_MAX + 2];
        int n = snprintf(full, sizeof(full), "%s__%s", server, name->valuestring);
        if (n < 0 || (size_t)n > FED_TOOL_NAME_MAX || !fed_tool_name_ok(name->valuestring))
            continue; /* a name /mcp could not list as it is */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", full);
        const cJSON *f;
        cJSON_ArrayForEach(f, t)
        {
            /* A key the server sent twice: the first one counts, as for every reader of it (cJSON's lookups). */
            if (strcmp(f->string, "name") != 0 && strcmp(f->string, "_meta") != 0 &&
                !cJSON_GetObjectItemCaseSensitive(o, f->string))
                cJSON_AddItemToObject(o, f->string, cJSON_Duplicate(f, true));
        }
        if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "inputSchema"))) {
            cJSON_DeleteItemFromObjectCaseSensitive(o, "inputSchema");
            cJSON *s = cJSON_AddObjectToObject(o, "inputSchema");
            cJSON_AddStringToObject(s, "type", "object");
        }
        cJSON_AddItemToArray(arr, o);
        added++;
    }
    return added;
}

/* ---- the per-loop cache of each server's tools ---- */

struct cached {
    struct cached *next;
    char *name, *url;
    cJSON *tools; /* MCP tool objects named <name>__<tool> */
    uint64_t expiry_ms;
    uint64_t gen; /* the server's tool-list generation when listed (mcp_tools_generation: list_changed) */
};

static _Thread_local struct cached *tl_cache;

static uint64_t now_ms(void)
{
    return time_mono_us() / 1000;
}

/* what a server is reached at: its URL, or its stdio command */
static const char *srv_where(const struct agent_mcp_server *s)
{
    return s->url ? s->url : s->command ? s->command : "";
}

static struct cached *cache_find(const struct agent_mcp_server *s)
{
    for (struct cached *c = tl_cache; c; c = c->next)
        if (strcmp(c->name, s->name) == 0 && strcmp(c->url, srv_where(s)) == 0)
            return c;
    return NULL;
}

static void cache_put(const struct agent_mcp_server *s, const cJSON *tools, uint64_t gen)
{
    struct cached *c = cache_find(s);
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        c->name = xstrdup(s->name);
        c->url = xstrdup(srv_where(s));
        c->next = tl_cache;
        tl_cache = c;
    }
    cJSON_Delete(c->tools);
    c->tools = cJSON_Duplicate(tools, true);
    c->expiry_ms = now_ms() + (uint64_t)s->tools_ttl_ms;
    c->gen = gen;
}

void fed_forget(const char *server)
{
    for (struct cached *c = tl_cache; c; c = c->next)
        if (server == NULL || strcmp(c->name, server) == 0)
            c->expiry_ms = 0;
}

void fed_loop_done(void)
{
    while (tl_cache) {
        struct cached *c = tl_cache;
        tl_cache = c->next;
        xfree(c->name);
        xfree(c->url);
        cJSON_Delete(c->tools);
        xfree(c);
    }
}

/* ---- listing ---- */

struct fed_one {
    struct fed_list *l;
    uint64_t gen;
    const struct agent_mcp_server *srv;
    struct mcp_request *call;
    cJSON *acc; /* this server's tools so far; NULL when it failed */
    int pages;
    uint64_t start_us;
};

struct fed_list {
    uv_loop_t *loop;
    size_t n, pending;
    struct fed_one *one;
    uv_timer_t *t;
    fed_list_fn *cb;
    void *ud;
    fed_observe_fn *observe;
};

static void t_closed(uv_handle_t *h)
{
    xfree(h);
}

static void list_finish(struct fed_list *l)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < l->n; i++) {
        if (l->one[i].acc == NULL)
            continue;
        cJSON *t;
        cJSON_ArrayForEach(t, l->one[i].acc) cJSON_AddItemToArray(arr, cJSON_Duplicate(t, true));
        cJSON_Delete(l->one[i].acc);
    }
    fed_list_fn *cb = l->cb;
    void *ud = l->ud;
    xfree(l->one);
    xfree(l);
    cb(ud, arr);
}

static void timer_fire(uv_timer_t *t)
{
    struct fed_list *l = t->data;
    uv_close((uv_handle_t *)t, t_closed);
    l->t = NULL;
    list_finish(l);
}

static void page_done(void *ud, int ok, const cJSON *result, bool rpc_error, int64_t code, const char *why)
{
    if (!ok)
        result = NULL, rpc_error = false;
    struct fed_one *o = ud;
    struct fed_list *l = o->l;
    o->call = NULL;
    char *cursor = NULL;
    const char *err = NULL;
    char msg[320];
    if (rpc_error) {
        snprintf(msg, sizeof(msg), "MCP server %s: tools/list failed: %lld %s", o->srv->name, (long long)code, why);
        err = msg;
    } else if (result == NULL) {
        err = why;
    } else if (fed_add_tools(result, o->srv->name, o->acc, &cursor) < 0) {
        snprintf(msg, sizeof(msg), "MCP server %s: its tools/list result has no tools array", o->srv->name);
        err = msg;
    }
    if (err == NULL && cursor && ++o->pages < LIST_PAGES_MAX) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "cursor", cursor);
        xfree(cursor);
        o->call = mcp_request_start(l->loop, o->srv, "tools/list", p, page_done, o);
        return;
    }
    xfree(cursor);
    if (l->observe)
        l->observe(o->srv->name, "tools/list", NULL, o->start_us, err ? "upstream_error" : NULL);
    if (err) {
        log_warn("%s (its tools are not listed)", err);
        cJSON_Delete(o->acc);
        o->acc = NULL;
    } else {
        cache_put(o->srv, o->acc, o->gen);
    }
    if (--l->pending == 0)
        list_finish(l);
}

struct fed_list *fed_list_start(uv_loop_t *loop, const struct config *cfg, fed_observe_fn *observe,
                                fed_list_fn *cb, void *ud)
{
    struct fed_list *l = xcalloc(1, sizeof(*l));
    l->loop = loop;
    l->cb = cb;
    l->ud = ud;
    l->observe = observe;
    l->n = cfg->mcp.servers.n;
    l->one = xcalloc(l->n ? l->n : 1, sizeof(*l->one));
    uint64_t now = now_ms();
    for (size_t i = 0; i < l->n; i++) {
        struct fed_one *o = &l->one[i];
        o->l = l;
        o->srv = srv_at(cfg, i);
        struct cached *c = cache_find(o->srv);
        o->gen = mcp_tools_generation(o->srv); /* before listing: a change announced meanwhile lists again */
        if (c && c->tools && now < c->expiry_ms && c->gen == o->gen) {
            o->acc = cJSON_Duplicate(c->tools, true);
            continue;
        }
        o->acc = cJSON_CreateArray();
        o->start_us = time_wall_us();
        l->pending++;
    }
    if (l->pending == 0) { /* all cached: answered on a later turn, never from inside this call */
        l->t = xmalloc(sizeof(*l->t));
        uv_timer_init(loop, l->t);
        l->t->data = l;
        uv_timer_start(l->t, timer_fire, 0, 0);
        return l;
    }
    for (size_t i = 0; i < l->n; i++)
        if (l->one[i].start_us)
            l->one[i].call = mcp_request_start(loop, l->one[i].srv, "tools/list", NULL, page_done, &l->one[i]);
    return l;
}

void fed_list_cancel(struct fed_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        mcp_request_cancel(l->one[i].call);
        cJSON_Delete(l->one[i].acc);
    }
    if (l->t) {
        uv_timer_stop(l->t);
        uv_close((uv_handle_t *)l->t, t_closed);
    }
    xfree(l->one);
    xfree(l);
}

/* ---- calls ---- */

struct fed_call {
    struct mcp_request *call;
    fed_call_fn *cb;
    void *ud;
};

static void call_done(void *ud, int ok, const cJSON *result, bool rpc_error, int64_t code, const char *why)
{
    if (!ok)
        result = NULL, rpc_error = false;
    struct fed_call *c = ud;
    fed_call_fn *cb = c->cb;
    void *cud = c->ud;
    xfree(c);
    cb(cud, result, rpc_error, code, why);
}

struct fed_call *fed_call_start(uv_loop_t *loop, const struct agent_mcp_server *srv, const char *tool,
                                const cJSON *args, cJSON *meta, fed_call_fn *cb, void *ud)
{
    struct fed_call *c = xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->ud = ud;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", tool);
    cJSON_AddItemToObject(p, "arguments", args ? cJSON_Duplicate(args, true) : cJSON_CreateObject());
    if (meta)
        cJSON_AddItemToObject(p, "_meta", meta);
    c->call = mcp_request_start(loop, srv, "tools/call", p, call_done, c);
    return c;
}

void fed_call_cancel(struct fed_call *c)
{
    if (c == NULL)
        return;
    mcp_request_cancel(c->call);
    xfree(c);
}
