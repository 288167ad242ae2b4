/* debug.h: test-only routes, mounted when server.debug_routes is true. They let the integration tests exercise
 * the server core (bodies, slow handlers, a stalled loop) before any gateway route exists. */
#ifndef AGENTD_DEBUG_ROUTES_H
#define AGENTD_DEBUG_ROUTES_H

#include "net/http.h"

/* POST /debug/echo: {"bytes":N,"fnv1a":"...","content_type":"..."} describing the body received. */
void debug_echo(struct http_req *req);
/* GET /debug/sleep?ms=N: answers after N ms without blocking the loop (an in-flight request for drain tests). */
void debug_sleep(struct http_req *req);
/* GET /debug/stall?ms=N: blocks the worker loop for N ms (liveness probe tests). */
void debug_stall(struct http_req *req);

#endif
