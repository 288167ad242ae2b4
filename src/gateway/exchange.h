/* exchange.h: one client request through the gateway, and the front doors that speak to clients.
 *
 *   parse -> route -> admit -> plan -> attempt* -> relay -> settle
 *
 * Every stage is a function of struct exchange; each returns to the loop when it waits (upstream I/O, mock
 * timers), and the next stage runs from a callback. Stages only move forward. Governance stages (budgets, rate
 * limits, cache) slot in between route and plan without reshaping the rest. */
#ifndef AGENTD_EXCHANGE_H
#define AGENTD_EXCHANGE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "gateway/gw_types.h"
#include "gateway/provider.h"

struct http_req;
struct model_entry;
struct registry;

enum front { FRONT_OPENAI_CHAT, FRONT_ANTHROPIC_MESSAGES, FRONT_OPENAI_EMBEDDINGS };

#define EX_MAX_PLAN 16

/* Front-door stream writer state (what has been sent to the client so far). */
struct front_stream {
    bool started;             /* response head written */
    bool role_sent;           /* OpenAI: first chunk with the role */
    int open_block;           /* Anthropic: index of the open content block, -1 none */
    int open_block_kind;      /* 0 text, 1 tool_use */
    int next_block;           /* Anthropic: next content block index */
    int tool_block[256];      /* Anthropic: block index of tool call i (-1: not started) */
    enum finish finish;       /* held until the end (usage arrives after the finish reason) */
    bool finished;
};

struct exchange {
    struct http_req *req;
    struct gateway_worker *gw;
    const struct registry *reg;
    enum front front;
    /* parse */
    struct str body;
    char model_name[256];
    bool stream;
    bool client_include_usage; /* OpenAI: stream_options.include_usage */
    int64_t max_tokens;        /* -1 when absent */
    cJSON *client_tree;        /* the client's body as a tree (built when translation needs it) */
    cJSON *canon;              /* canonical request (OpenAI chat shape) */
    /* route + plan */
    const struct model_entry *model;
    const struct deployment *plan[EX_MAX_PLAN];
    int nplan, iplan;
    bool admitted;
    /* attempts */
    struct attempt *att;
    int attempts;
    struct gw_error last_err;
    bool have_err;
    /* relay */
    struct front_stream fs;
    struct usage usage;
    double cost_usd;
    bool priced;
    bool client_started;       /* a response byte has been queued to the client: no more attempts */
    bool done;
    bool incomplete;           /* the stream ended without its terminal event */
    /* timing (monotonic µs) */
    uint64_t t_start_us, t_first_token_us, t_upstream_us;
    uv_timer_t deadline;
    char id[96];               /* response id given to the client ("chatcmpl-..." / "msg_...") */
    int64_t created;
    char dropped_fields[512];  /* request fields a translation ignored (x-agentd-dropped-fields; canon.h) */
};

/* Route handlers (bound in api/routes.c). */
void gw_handle_chat_completions(struct http_req *req);
void gw_handle_messages(struct http_req *req);
void gw_handle_embeddings(struct http_req *req);
void gw_handle_models(struct http_req *req);

/* Per-worker gateway state (the upstream client). */
struct config;
struct gateway_worker;
/* up: read once per worker (the settings say "restart to change"; gw_config_up_options), so no lock on the request
 * path. */
struct gateway_worker *gateway_worker_new(uv_loop_t *loop, struct up_options up);
/* Call when the worker's connections are all closed; handles close asynchronously. */
void gateway_worker_free(struct gateway_worker *g);
/* Process-wide set-up (metrics families, libcurl). */
int gateway_global_init(void);
void gateway_global_cleanup(void);
/* Loads libcurl now (on the calling thread) if a deployment of cfg will need it, so that no worker loop stalls on
 * the load at its first request. Call after the configuration is published, at start and on reload. */
void gateway_preload(const struct config *cfg);

/* In-flight LLM requests (admission and metrics). */
extern _Atomic long gw_inflight;

#endif
