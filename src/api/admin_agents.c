/* admin_agents.c: /admin/agents, the agent definitions added at run time (kept in the agent store, beside the
 * configuration's). Guarded like /admin/keys: 404 unless AGENTD_ADMIN_KEY is set, 401 without it.
 *   GET /admin/agents            every definition, each with "source": "config" or "admin"
 *   POST /admin/agents           a new definition (409 when the name exists)
 *   GET|PUT|DELETE /admin/agents/{name}
 * The configuration's agents cannot be changed here (409): edit the file and reload. The store is written on the
 * libuv thread pool. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "agent/run.h"
#include "api/admin_keys.h"
#include "api/agents_http.h"
#include "common/alloc.h"
#include "config/config.h"

static void answer(struct http_req *req, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    http_respond(req, status, "application/json", s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(o);
}

static void fail(struct http_req *req, int status, const char *type, const char *code, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNullToObject(e, "param");
    cJSON_AddStringToObject(e, "code", code);
    answer(req, status, o);
}

struct def_job {
    uv_work_t w;
    struct http_req *req;
    struct config_agent def;
    bool del, created;
    int rc;
    char err[256];
};

static void def_work(uv_work_t *w)
{
    struct def_job *j = w->data;
    j->rc = j->del ? agents_def_del(j->def.name, j->err, sizeof(j->err))
                   : agents_def_put(&j->def, j->err, sizeof(j->err));
}

static void def_done(uv_work_t *w, int status)
{
    struct def_job *j = w->data;
    if (status != 0 || j->rc < 0)
        fail(j->req, 500, "server_error", "store_unavailable", j->err[0] ? j->err : "the agent store failed");
    else if (j->del && j->rc == 1)
        fail(j->req, 404, "not_found_error", "agent_not_found", "no such agent");
    else if (j->del)
        http_respond(j->req, 204, NULL, NULL, 0);
    else
        answer(j->req, j->created ? 201 : 200, agent_def_to_json(&j->def));
    agent_def_free(&j->def);
    xfree(j);
}

static void queue(struct def_job *j)
{
    j->w.data = j;
    if (uv_queue_work(http_server_loop(j->req->server), &j->w, def_work, def_done) != 0) {
        agent_def_free(&j->def);
        fail(j->req, 503, "server_error", "busy", "busy");
        xfree(j);
    }
}

void admin_agents_handle(struct http_req *req)
{
    if (!admin_guard(req, "/admin/agents"))
        return;
    static const char base[] = "/admin/agents";
    struct str rest = str_make(req->path.p + sizeof(base) - 1, req->path.n - (sizeof(base) - 1));
    if (rest.n > 0 && rest.p[0] != '/') {
        fail(req, 404, "not_found_error", "unknown_url", "not found");
        return;
    }
    char name[AGENT_NAME_MAX + 1] = "";
    if (rest.n > 1) {
        if (rest.n - 1 > AGENT_NAME_MAX) {
            fail(req, 404, "not_found_error", "agent_not_found", "no such agent");
            return;
        }
        memcpy(name, rest.p + 1, rest.n - 1);
        name[rest.n - 1] = '\0';
    }
    unsigned m = req->method;
    if (!name[0] && (m & (HTTP_M_GET | HTTP_M_HEAD))) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON_AddItemToObject(o, "data", agents_defs_json(req->cfg));
        answer(req, 200, o);
        return;
    }
    if (name[0] && (m & (HTTP_M_GET | HTTP_M_HEAD))) {
        struct config_agent d;
        if (!agents_lookup(req->cfg, name, &d)) {
            fail(req, 404, "not_found_error", "agent_not_found", "no such agent");
            return;
        }
        cJSON *o = agent_def_to_json(&d);
        cJSON_AddStringToObject(o, "source", agent_config_find(req->cfg, name) ? "config" : "admin");
        agent_def_free(&d);
        answer(req, 200, o);
        return;
    }
    if ((!name[0] && m != HTTP_M_POST) || (name[0] && m != HTTP_M_PUT && m != HTTP_M_DELETE)) {
        http_resp_header(req, "Allow", name[0] ? "GET, PUT, DELETE" : "GET, POST");
        fail(req, 405, "invalid_request_error", "method_not_allowed", "method not allowed");
        return;
    }
    if (name[0] && agent_config_find(req->cfg, name)) {
        fail(req, 409, "invalid_request_error", "agent_in_config",
             "this agent is defined in the configuration file: change it there and reload");
        return;
    }
    struct def_job *j = xcalloc(1, sizeof(*j));
    j->req = req;
    if (m == HTTP_M_DELETE) {
        j->del = true;
        j->def.name = xstrdup(name);
        queue(j);
        return;
    }
    cJSON *body = cJSON_ParseWithLength(req->body.data ? req->body.data : "", req->body.len);
    if (name[0] && cJSON_IsObject(body) && !cJSON_GetObjectItemCaseSensitive(body, "name"))
        cJSON_AddStringToObject(body, "name", name);
    char msg[300];
    if (agent_def_from_json(body, &j->def, msg, sizeof(msg)) != 0) {
        cJSON_Delete(body);
        agent_def_free(&j->def);
        xfree(j);
        fail(req, 400, "invalid_request_error", "invalid_agent", msg);
        return;
    }
    cJSON_Delete(body);
    if (name[0] && strcmp(j->def.name, name) != 0) {
        agent_def_free(&j->def);
        xfree(j);
        fail(req, 400, "invalid_request_error", "invalid_agent", "the body's name differs from the URL's");
        return;
    }
    struct config_agent existing;
    bool exists = agents_lookup(req->cfg, j->def.name, &existing);
    if (exists)
        agent_def_free(&existing);
    if (!name[0] && exists) {
        agent_def_free(&j->def);
        xfree(j);
        fail(req, 409, "invalid_request_error", "agent_exists", "an agent of that name exists");
        return;
    }
    j->created = !exists;
    queue(j);
}
