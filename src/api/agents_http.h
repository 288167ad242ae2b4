/* agents_http.h: the runs API (docs/agents.md): POST /v1/agents/{name}/runs, GET /v1/runs, GET /v1/runs/{id},
 * GET /v1/runs/{id}/events (SSE), POST /v1/runs/{id}/cancel; and /admin/agents (admin_agents.c). */
#ifndef AGENTD_AGENTS_HTTP_H
#define AGENTD_AGENTS_HTTP_H

#include "net/http.h"

void agents_http_runs_create(struct http_req *req); /* /v1/agents/ prefix */
void agents_http_runs(struct http_req *req);        /* /v1/runs and /v1/runs/ prefix */
void admin_agents_handle(struct http_req *req);     /* /admin/agents and /admin/agents/ prefix */

#endif
