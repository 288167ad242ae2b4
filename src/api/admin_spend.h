/* admin_spend.h: GET /admin/spend?by=key|user|team|workflow|model|day&since=7d[&format=json|csv] on the API
 * port, guarded by AGENTD_ADMIN_KEY (Authorization: Bearer, or x-api-key). SQLite runs on the libuv thread pool. */
#ifndef AGENTD_ADMIN_SPEND_H
#define AGENTD_ADMIN_SPEND_H

#include "net/http.h"

void admin_spend(struct http_req *req);

#endif
