/* worker.h: one event-loop thread. Workers own an API listener (SO_REUSEPORT), an HTTP server, and whatever
 * per-loop state the gateway needs; the main thread owns the ops listener and signals. uv_loop_t.data points at
 * the worker, so code running on a loop finds its worker without globals. */
#ifndef AGENTD_WORKER_H
#define AGENTD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct http_server;

enum {
    WORKER_CMD_RELOAD = 1 << 0, /* pick up the current configuration snapshot */
    WORKER_CMD_DRAIN = 1 << 1,  /* close the listener, finish in-flight requests, then stop */
    WORKER_CMD_FORCE = 1 << 2,  /* the grace period is over: close every connection now */
};

struct worker {
    int id;
    uv_loop_t loop;
    pthread_t thread;
    uv_async_t wakeup;
    uv_prepare_t turn;              /* stamps last_turn_us every loop iteration */
    uv_timer_t tick;                /* makes an idle loop turn at least once a second */
    _Atomic unsigned cmds;
    _Atomic uint64_t last_turn_us;  /* read by /health on other threads */
    _Atomic bool stopped;
    struct http_server *http;
    struct config *cfg;             /* snapshot for new connections */
    int api_fd;
    bool draining;
    void (*on_stopped)(struct worker *w); /* called on the worker thread when its loop has no more work */
    void *gateway;                  /* per-loop gateway state (upstream client, ...) */
};

/* The worker running the calling loop, or NULL on the main thread. */
static inline struct worker *worker_of_loop(uv_loop_t *loop)
{
    return loop->data;
}

#endif
