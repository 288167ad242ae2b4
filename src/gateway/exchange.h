/* exchange.h: one request through the gateway (DESIGN §1, §1a), whoever sent it.
 *
 *   parse -> authenticate -> route -> admit -> cache -> plan -> attempt* -> (relay) -> end
 *
 * The spine is a table of stages (exchange.c). Each stage returns EX_CONTINUE (go on to the next), EX_WAIT (it
 * has started something that calls ex_resume() later, from a callback on the same loop) or EX_END (it ended the
 * exchange). The attempt stage waits until an attempt ends the exchange. Stages only move forward.
 *
 * An exchange knows nothing of HTTP: a caller (the HTTP handlers in api/gw_http.c, a unit test's loopback, later
 * an agent step) fills a struct ex_request and hands ex_submit() a sink, where every byte the client receives
 * goes. One function ends an attempt (ex_attempt_end, with a typed outcome) and one ends the exchange; both tell
 * the registered observers (metrics, the `llm` log line, ...) exactly once. See docs/internals/exchange.md. */
#ifndef AGENTD_EXCHANGE_H
#define AGENTD_EXCHANGE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "gateway/admission.h"
#include "gateway/gw_types.h"
#include "gateway/provider.h"
#include "telemetry/trace.h"

struct config;
struct front_ops;
struct gateway_worker;
struct upstream;
struct model_entry;
struct registry;
struct principal; /* who is calling (set by authenticate: policy/auth.h) */

enum front { FRONT_OPENAI_CHAT, FRONT_ANTHROPIC_MESSAGES, FRONT_OPENAI_EMBEDDINGS, FRONT_OPENAI_RESPONSES };

#define EX_MAX_PLAN 16
#define EX_MAX_ATTEMPTS 32 /* attempts of one exchange, fallbacks included (a bound whatever the settings) */

/* The request, filled by the caller (body, request_id, cfg, header lookup) and by the front's parse (the rest).
 * Owned by the exchange (ex_submit copies it); the ONE source of truth: a max_tokens clamp changes it here. */
struct ex_request {
    struct str body;           /* as received; must outlive the exchange's end (the sink's end() call) */
    struct str validated;      /* the bytes a front's parse validated as JSON (body, unless replaced since) */
    char model_name[256];      /* public model name */
    bool stream;
    bool client_include_usage; /* OpenAI: stream_options.include_usage */
    int64_t max_tokens;        /* -1 when absent */
    struct str user;           /* end-user id, when the front knows one (points into body) */
    bool user_checked;         /* the front looked for the end-user id: empty user means there is none */
    char request_id[72];
    struct config *cfg;        /* the configuration snapshot this request runs under */
    const struct principal *who; /* NULL until authenticate fills it */
    cJSON *client_tree;        /* the body as a tree, built when translation needs it (freed with the exchange) */
    uint64_t t_start_us;       /* when the request began (monotonic µs); 0: at ex_submit */
    /* A request header as the client sent it (passthrough of e.g. anthropic-beta); NULL when there is none.
     * Valid until the sink's end(). */
    const struct str *(*header)(const void *hctx, const char *name);
    const void *hctx;
    char dropped_fields[512];  /* request fields a translation ignored (x-agentd-dropped-fields; canon.h) */
    /* A request its caller answers itself once admitted: the token counts (POST /v1/messages/count_tokens,
     * POST /v1/responses/input_tokens). The caller validated the body and filled model_name (the front's parse
     * is skipped); the exchange runs authenticate, route and admit (the rate limits count it as a request of 0
     * tokens, no budget is reserved: a count costs nothing) and then, in place of cache, plan and attempts, calls
     * run, which answers with ex_reply_counted() or ex_fail(). It is settled as any exchange: observers, a ledger
     * row of 0 tokens and $0 (docs/budgets.md). */
    void (*run)(struct exchange *ex, void *ud);
    void (*run_cancel)(void *ud); /* the exchange ended otherwise while run had work in flight: drop it */
    void *run_ud;
};

/* Where the response goes. A non-streamed response is head(), at most one write(), end(); a stream is head(),
 * write()*, end(). end() is the terminal call: the exchange never touches the sink again. The sink reports back
 * through ex_cancel() (its consumer went away) and ex_sink_drained() (pending() fell below the low-water mark). */
struct ex_sink_ops {
    /* hdrs: "Name: value\r\n" lines the gateway adds (x-agentd-*, retry-after, ...). */
    void (*head)(void *sink, int status, const struct buf *hdrs, bool stream);
    int (*write)(void *sink, const void *data, size_t len); /* -1: the consumer is gone */
    void (*end)(void *sink);
    size_t (*pending)(void *sink); /* bytes written and not yet consumed (backpressure); NULL: always 0 */
    /* Optional: the exchange that writes to this sink, told before any stage runs (for ex_cancel later). */
    void (*bind)(void *sink, struct exchange *ex);
};

/* Above this many pending bytes the upstream is paused until the sink calls ex_sink_drained(). */
#define EX_SINK_HIGH_WATER (256 * 1024)

/* ---- attempt outcomes ---- */

enum attempt_result {
    AO_OK,
    AO_CONNECT_REFUSED,
    AO_CONNECT_TIMEOUT,
    AO_FIRST_BYTE_TIMEOUT,
    AO_IDLE_TIMEOUT,
    AO_TIMEOUT,               /* the deployment's total timeout */
    AO_RESET_BEFORE_FIRST_BYTE,
    AO_RESET_AFTER_FIRST_BYTE,
    AO_TLS,
    AO_PROTOCOL,              /* malformed HTTP, or a stream that ended before its final event */
    AO_TOO_LARGE,
    AO_DECODE,                /* the provider could not decode the body or an event */
    AO_HTTP_STATUS,           /* the provider answered with an error status (status, retry_after_ms) */
    AO_ENCODE_REFUSED,        /* the provider cannot express this request */
    AO_START_FAILED,          /* the upstream client could not start the transfer */
    AO_CANCELLED_CLIENT,
    AO_CANCELLED_DEADLINE,
    AO_DNS,                   /* the upstream's host name did not resolve */
    AO_OTHER,                 /* the upstream client failed otherwise (an unusable URL, a local resource) */
    AO_COUNT
};

struct attempt_outcome {
    enum attempt_result result;
    int status;               /* AO_HTTP_STATUS: the HTTP status */
    long retry_after_ms;      /* AO_HTTP_STATUS: the provider's Retry-After, -1 if none */
    const struct gw_error *err; /* what the client is told if this was the last attempt (NULL for AO_OK) */
};

/* "ok", "connect_refused", ..., "http_status" (stable: metric label values). */
const char *ex_attempt_result_name(enum attempt_result r);

struct exchange;
/* The one end of an attempt: accounts its upstream time (never overhead), tells every observer's
 * on_attempt_end exactly once, frees the attempt. The caller then decides what the exchange does next. */
void ex_attempt_end(struct exchange *ex, struct attempt *a, const struct attempt_outcome *o);

/* ---- the exchange ---- */

struct exchange {
    struct ex_request rq;
    const struct front_ops *fops;
    enum front front;          /* an id (labels, logs); dispatch goes through fops */
    void *fstate;              /* the front's stream state (fops->stream_new / stream_free) */
    const struct ex_sink_ops *sink_ops;
    void *sink;
    bool sink_ended;
    struct gateway_worker *gw;
    const struct registry *reg;
    /* spine */
    int stage;
    bool in_run, resumed;
    unsigned refs;             /* the spine's own + ex_ref() holders; freed at 0 */
    cJSON *canon;              /* canonical request (OpenAI chat shape) */
    /* route + plan */
    const struct model_entry *model;
    const struct deployment *plan[EX_MAX_PLAN];
    int nplan, iplan;
    bool admitted;             /* holds an admission slot (released at the end) */
    struct adm_waiter adm;     /* its place in the admission queue while it waits (gateway/admission.h) */
    struct admission *kadm;    /* its key's own slots (max_concurrent), or NULL; a reference (adm_key_put) */
    bool key_admitted;         /* holds one of them (released at the end) */
    long key_limit;            /* the key's max_concurrent when it asked */
    struct adm_waiter kwait;   /* its place in the key's queue */
    uint64_t admit_t0_us;      /* when it reached admit: max_wait counts from there (the key's and the process's) */
    struct exchange *live_prev, *live_next; /* the worker's exchanges not yet ended (ended all at a forced drain) */
    /* attempts */
    struct attempt *att;
    int attempts;
    struct gw_error last_err;
    bool have_err;
    /* relay */
    struct usage usage;
    int64_t relayed_chars;     /* text and tool-argument characters relayed (usage estimate for a cut stream) */
    int64_t relayed_events;    /* upstream events forwarded as received (passthrough: content is not scanned) */
    struct govern_state *gov;  /* budget and rate-limit holds (gateway/govern.c), NULL when none apply */
    /* The output a budget reservation covers (set by admit; 0: none). A stream whose relayed content events (each
     * carries at least one token) pass it is ended by the gateway in the caller's format (finish reason length)
     * and charged exactly the reservation (cut_at_cap, incomplete). */
    int64_t out_cap;
    int64_t content_events;    /* content deltas (translated) or content events (passthrough) relayed */
    bool cut_pending, cut_at_cap;
    int pt_blocks, pt_open;    /* Anthropic relayed as received: content blocks started, the open one (-1 none) */
    double cost_usd;
    bool priced;
    bool client_started;       /* a response byte has been queued to the client: no more attempts */
    bool run_started;          /* rq.run was called (a token count): rq.run_cancel at an end it did not ask for */
    bool done;
    bool incomplete;           /* the stream ended without its terminal event */
    int status;                /* the status the exchange ended with */
    /* timing (monotonic µs) */
    uint64_t t_start_us, t_first_token_us, t_upstream_us;
    uv_timer_t deadline;
    char id[96];               /* response id given to the client ("chatcmpl-..." / "msg_...") */
    int64_t created;
    struct ex_trace trace;     /* W3C trace context and span ids (telemetry/trace.h; set by on_start observers) */
    /* resilience (docs/resilience.md): retries, fallbacks, backoff, stream idle */
    const struct model_entry *tier; /* the model whose deployments are tried now: ex->model or a fallback */
    int fb_list;               /* the fallback list followed: 0 fallbacks, 1 context-window, 2 content-policy */
    int fb_next;               /* its next entry */
    int tier_attempts;         /* attempts started on this tier's deployments */
    int round_started;         /* ... in the current pass over its plan */
    unsigned tier_rounds;      /* passes over the plan so far (the backoff exponent) */
    const struct deployment *last_dep; /* the deployment of the latest attempt: the one that served */
    uint64_t deadline_ms;      /* the request deadline on dep_now_ms()'s clock */
    uv_timer_t rtimer;         /* the backoff between attempts, or the stream-idle timer of the one running */
    uint64_t t_backoff_us;     /* when the pending backoff began (0: none): upstream-caused, never overhead */
    struct ex_attempt_rec {
        const struct deployment *dep;
        unsigned short result;  /* enum attempt_result */
        unsigned short status;
    } arec[EX_MAX_ATTEMPTS];
    int narec;
    /* the response cache (gateway/cache.c): "hit", "miss", "bypass" (x-agentd-cache), NULL when not consulted */
    const char *cache_result;
    int64_t cache_saved_nusd;  /* a hit: what the answer cost the first time (the saving) */
    /* routing (gateway/routing.c): the rule that sent this request to rq.model_name, and the model asked for */
    bool route_decided;
    const char *route_rule;    /* in the configuration snapshot; NULL: not routed */
    char routed_from[256];
};

/* "id=outcome, id=outcome" of every attempt so far (x-agentd-attempt-outcomes, the `llm` log line). */
void ex_attempt_outcomes(const struct exchange *ex, struct buf *out);

/* Starts an exchange for rq (copied) on this worker's loop; the response goes to sink. Returns the exchange, or
 * NULL when it already ended (a parse error, an unknown model...: the sink has had its end() call). */
struct exchange *ex_submit(struct gateway_worker *gw, const struct front_ops *front, const struct ex_request *rq,
                           const struct ex_sink_ops *sink_ops, void *sink);
/* The consumer went away: ends the exchange with 499 (the attempt in flight is cancelled and counted). */
void ex_cancel(struct exchange *ex);
/* The sink's pending bytes fell below its low-water mark: a paused upstream may go on. */
void ex_sink_drained(struct exchange *ex);
/* A stage that returned EX_WAIT calls this from its callback. Ignored once the exchange has ended. */
void ex_resume(struct exchange *ex);
/* Like ex_resume, but runs the stage that waited once more from its start (the admit stage after waiting for a
 * cluster lease decides anew). Ignored once the exchange has ended. */
void ex_rerun(struct exchange *ex);
/* Keeps the exchange's memory alive across a wait (a stage's timer or lookup); ex_unref releases it. */
void ex_ref(struct exchange *ex);
void ex_unref(struct exchange *ex);

/* ---- stages ---- */

enum ex_next { EX_CONTINUE, EX_WAIT, EX_END };
typedef enum ex_next (*ex_stage_fn)(struct exchange *ex, void *ud);
/* Plugs fn into a pass-through stage ("authenticate", "cache") until its module lands (tests use it to exercise
 * waiting). Process-wide, before any exchange runs. -1 when the stage is not a pluggable one. */
int ex_stage_plug(const char *stage, ex_stage_fn fn, void *ud);
/* Ends the exchange with an error in the client's format (from a stage that returns EX_END). */
void ex_fail(struct exchange *ex, const struct gw_error *err);
/* Ends the exchange with a stored answer (the response cache's hit): the bytes exactly as the client's format
 * wrote them the first time, as a stream or as one body; nothing was billed, so the cost is $0. */
void ex_reply_cached(struct exchange *ex, const void *data, size_t len, bool stream);
/* A request with a run (ex_request.run) answers: status and a complete JSON body in the caller's format, dep the
 * deployment that counted (x-agentd-deployment, the ledger's deployment) or NULL. Usage 0, cost $0. */
void ex_reply_counted(struct exchange *ex, int status, const void *body, size_t len, const struct deployment *dep);

/* ---- observers: told once per attempt end and once per exchange end ---- */

struct ex_outcome {
    int status;
    const struct deployment *dep; /* the last deployment tried, or NULL */
    const struct gw_error *err;   /* status >= 400: why */
    uint64_t total_us, overhead_us;
    const struct buf *body;       /* the complete response sent to the client; NULL for a stream or none */
};

struct up_request;
struct ex_observer {
    const char *name;
    void (*on_attempt_end)(const struct exchange *ex, const struct attempt *a, const struct attempt_outcome *o);
    void (*on_settle)(const struct exchange *ex, const struct ex_outcome *o);
    /* Optional: the exchange is about to run its first stage (the request's headers are readable). */
    void (*on_start)(struct exchange *ex);
    /* Optional: an attempt is about to start; r is the upstream request (headers may be added), NULL for a
     * provider that runs in-process. */
    void (*on_attempt_start)(struct exchange *ex, struct attempt *a, struct up_request *r);
};
/* Initialise observers with designated initializers (.on_settle = ...): the struct grows. */
/* Process-wide, at start-up (before workers run). -1 when the registry is full. */
int ex_observer_add(const struct ex_observer *obs);
/* The metrics and `llm` log observers (observers.c), registered by ex_global_init. */
extern const struct ex_observer observers_metrics;
extern const struct ex_observer observers_llm_log;
/* Response-quality evaluations (observers.c, telemetry/eval.h): hands sampled answers to the evaluation thread. */
extern const struct ex_observer observers_eval;
/* The LLM judge's way into the gateway (observers.c), for eval_set_transport (telemetry/eval.h). */
struct eval_transport;
extern const struct eval_transport eval_gateway_transport;
/* The OpenTelemetry spans observer (gateway/observer_spans.c): trace context in and out, SERVER and CLIENT spans. */
extern const struct ex_observer observer_spans;
/* Per-deployment health: breakers, requests in flight, time-to-first-byte average (gateway/health_observer.c). */
extern const struct ex_observer health_observer;
/* The breaker-state metric family (a collector over the current configuration). Once, at start. */
void health_observer_register_metrics(void);
/* GET /admin/deployments: {"object":"list","data":[{model, id, provider, breaker:{...}, outstanding, ...}]} */
void health_observer_deployments_json(const struct config *cfg, struct buf *out);

/* ---- policy hooks: budgets, rate limits (gateway/govern.c installs them; none by default) ---- */

struct ex_policy {
    enum ex_next (*admit)(struct exchange *ex);                  /* in `admit`, before the concurrency slot */
    void (*headers)(const struct exchange *ex, struct buf *h);  /* response header lines */
    void (*fill_usage)(struct exchange *ex);                    /* before pricing at the end */
    void (*release)(struct exchange *ex);                       /* with the exchange */
    /* Before each attempt, on the deployment it would use: false skips that deployment (err says why: a
     * deployment's own rate limit), as if it were unavailable. */
    bool (*attempt_admit)(struct exchange *ex, const struct deployment *dep, struct gw_error *err);
};
/* Process-wide, at start-up (before workers run). */
void ex_policy_set(const struct ex_policy *p);
/* Called first in `plan` (routing to cheaper models: gateway/routing.c installs it). Process-wide, at start-up. */
void ex_plan_hook_set(void (*fn)(struct exchange *ex));

/* ---- per-worker and process state ---- */

/* up: read once per worker (the settings say "restart to change"; gw_config_up_options), so no lock on the request
 * path. */
struct gateway_worker *ex_worker_new(uv_loop_t *loop, struct up_options up);
/* Call when the worker's connections are all closed; handles close asynchronously. */
void ex_worker_free(struct gateway_worker *g);
uv_loop_t *ex_worker_loop(const struct gateway_worker *g);
/* The worker's upstream client (routes outside the spine forward through it: api/upstream_call.h). */
struct upstream *ex_worker_upstream(const struct gateway_worker *g);
/* The drain's grace period is over: every exchange still running on this worker ends now with err, in its
 * caller's format (a stream gets the format's error event) and is settled. Returns how many ended. */
int ex_worker_end_all(struct gateway_worker *g, const struct gw_error *err);
/* Process-wide set-up (metrics families, observers, libcurl). */
int ex_global_init(void);
void ex_global_cleanup(void);
/* Loads libcurl now (on the calling thread) if a deployment of cfg will need it, so that no worker loop stalls on
 * the load at its first request. Call after the configuration is published, at start and on reload. */
void ex_preload(const struct config *cfg);

/* In-flight LLM requests (admission and metrics). */
extern _Atomic long ex_inflight;

#endif
