/* sandbox_http.h: POST /v1/sandbox/runs, the sandbox service over HTTP (sandbox_http.c, docs/sandbox-service.md). */
#ifndef AGENTD_SANDBOX_HTTP_H
#define AGENTD_SANDBOX_HTTP_H

#include <stdbool.h>

struct config;
struct http_req;
struct worker;

/* Main thread, before the workers start: starts the sandbox service from cfg->sandbox (loops = worker count).
 * False when the service is disabled (the route is then not served). */
bool sandbox_http_init(const struct config *cfg, unsigned loops);
void sandbox_http_shutdown(void);
/* On a worker's thread: its pool, made now when sandbox.service.prewarm, and closed when the worker stops. */
void sandbox_http_worker_start(struct worker *w);
void sandbox_http_worker_stop(struct worker *w);

void sandbox_http_runs(struct http_req *req);

#endif
