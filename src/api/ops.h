/* ops.h: probes and metrics. /health and /ready answer on both listeners (Kubernetes probes hit :8000),
 * /metrics on the ops listener. */
#ifndef AGENTD_OPS_H
#define AGENTD_OPS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/http.h"

struct worker;

/* State the probes read; written by the main thread. */
struct ops_state {
    _Atomic bool draining;
    _Atomic bool data_dir_ok;
    _Atomic bool config_ok;
    struct worker *workers;
    int nworkers;
    uint64_t started_us;
};
extern struct ops_state ops_state;

void ops_health(struct http_req *req);
void ops_ready(struct http_req *req);
void ops_metrics(struct http_req *req);

/* Registers the HTTP server metric families and hooks (access log + metrics per request). */
void ops_init_http_metrics(void);

#endif
