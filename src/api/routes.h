/* routes.h: the route tables of the two listeners. */
#ifndef AGENTD_ROUTES_H
#define AGENTD_ROUTES_H

#include "net/http.h"

struct config;

extern struct http_router api_router; /* :8000 */
extern struct http_router ops_router; /* :8080 */

/* Builds the tables (the gateway's routes depend on configuration features). */
void routes_init(struct config *cfg);
void routes_shutdown(void);

#endif
