/* admin_deployments.h: GET /admin/deployments on the API port, guarded by AGENTD_ADMIN_KEY (Authorization:
 * Bearer, or x-api-key): every deployment of the running configuration with its id, breaker state, cool-down,
 * requests in flight and time-to-first-byte average (gateway/dep_health.h; docs/resilience.md). */
#ifndef AGENTD_ADMIN_DEPLOYMENTS_H
#define AGENTD_ADMIN_DEPLOYMENTS_H

#include "net/http.h"

void admin_deployments(struct http_req *req);

#endif
