/* config.h: agentd's effective configuration, as immutable reference-counted snapshots.
 *
 * Sources, lowest precedence first: built-in defaults, the YAML file, environment variables (AGENTD_<PATH> for
 * every setting plus the names Kubernetes manifests use: ENVIRONMENT, MAX_CONCURRENT_REQUESTS,
 * REQUEST_TIMEOUT_SECONDS), command-line flags. A loaded snapshot never changes; a reload builds a new one and
 * publishes it, and requests already running keep the snapshot they started with.
 *
 * Who owns what: each module owns its section's schema (keys, defaults, ranges, help, checks) in its own file
 * (api/server_config.c, telemetry/log_config.c, gateway/gw_config.c, gateway/providers/mock_config.c); the
 * composition root api/config_root.c assembles them into `config_schema`. This header keeps only the plain-data
 * shape of the snapshot: the scalar sections that code in several layers reads by member name
 * (`cfg->server.*`, `cfg->log.llm`, `cfg->gateway.*`), and generic lists whose item types belong to their module
 * (`models`, `prices`: gateway/gw_config.h). It includes nothing above config/. */
#ifndef AGENTD_CONFIG_H
#define AGENTD_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "config/schema.h"

enum { CONFIG_MOCK_AUTO, CONFIG_MOCK_OFF, CONFIG_MOCK_ON };
enum { CONFIG_LOG_DEBUG, CONFIG_LOG_INFO, CONFIG_LOG_WARN, CONFIG_LOG_ERROR };

struct config_server {
    char *listen;            /* API listener, "0.0.0.0:8000" */
    char *ops_listen;        /* probes + metrics, "0.0.0.0:8080" */
    int64_t workers;         /* 0 = one per CPU available to the process (cgroup quota respected) */
    char *data_dir;
    char *environment;
    int64_t backlog;
    /* limits */
    int64_t max_header_bytes;  /* request line + headers, else 431 */
    int64_t max_body_bytes;    /* else 413 */
    int64_t max_connections;   /* per process; past it new connections get 503 and are closed */
    int64_t max_pipeline;      /* parsed requests queued on one connection before reading pauses */
    /* timeouts, ms */
    int64_t header_timeout_ms; /* first byte of a request to end of its headers, else 408 */
    int64_t body_timeout_ms;   /* end of headers to end of body, else 408 */
    int64_t idle_timeout_ms;   /* keep-alive connection with nothing to do */
    int64_t drain_grace_ms;    /* how long in-flight requests may run after SIGTERM */
    int64_t drain_delay_ms;    /* /ready is 503 this long before listeners close (load balancer deregistration) */
    int64_t health_stall_ms;   /* /health fails when a worker loop has not turned for this long */
    bool debug_routes;         /* /debug/echo, /debug/sleep, /debug/stall on the API listener (tests only) */
};

struct config_log {
    int level;   /* CONFIG_LOG_* */
    bool access; /* one line per HTTP request */
    bool llm;    /* one line per gateway request (model, tokens, cost, timings) */
    int format;  /* LOG_FORMAT_* (common/log.h): json lines, or text for a terminal */
};

/* gateway.retries and a model's retries: (schema and checks: gateway/gw_config.c; rules: gateway/resilience.h) */
struct config_retry {
    int64_t max_attempts;            /* attempts per model, the first included */
    int64_t backoff_base_ms, backoff_max_ms;
    struct cfg_strlist retry_on;     /* outcome names; empty = the default set */
    double budget_ratio;             /* gateway only: retries at most this share of requests ... */
    int64_t budget_min_per_second;   /* ... plus this many per second */
};

/* gateway.breaker: one circuit breaker per deployment (gateway/breaker.h) */
struct config_breaker {
    bool enabled;
    int64_t window_ms, min_requests;
    double failure_rate;
    int64_t consecutive_failures, cooldown_ms, half_open_probes;
};

struct config_gateway {
    int64_t max_concurrent_requests; /* 0 = unlimited */
    int64_t request_timeout_ms;
    int64_t connect_timeout_ms;
    int64_t first_byte_timeout_ms;   /* upstream response headers */
    int64_t stream_idle_timeout_ms;  /* no upstream stream bytes for this long ends the attempt; 0 = off */
    struct config_retry retries;
    struct config_breaker breaker;
    int64_t max_response_bytes;      /* a non-streamed upstream response is buffered up to this */
    int64_t max_event_bytes;         /* one streamed event */
    int64_t default_max_tokens;      /* for providers that require max_tokens when the client gave none */
    int64_t max_usage_tokens;        /* upstream-reported token counts above this are implausible (not billed) */
    bool auto_models;                /* add well-known models of every provider whose key is in the environment */
    int mock_model;                  /* CONFIG_MOCK_*: serve the offline "mock" model (auto: not in production) */
    char *anthropic_version;         /* sent upstream to Anthropic */
    int upstream_client;             /* CONFIG_UPSTREAM_* */
    char *ca_file;                   /* extra trusted CAs for upstream TLS; "" = the system store only */
    struct config_admission {        /* gateway.admission (schema and meaning: gateway/admission.c) */
        int64_t queue_size;          /* requests that may wait for a slot; 0 = refuse at once when full */
        int64_t max_wait_ms;         /* longest wait for a slot (never past the request's deadline) */
        int64_t ready_high_water;    /* /ready is 503 while more than this many wait; 0 = never */
        int64_t retry_after_ms;      /* Retry-After on a refusal */
    } admission;
};

struct config_auth {
    int mode;      /* AUTH_MODE_* (policy/auth.h): auto, keys, none; schema in policy/auth_config.c */
    int effective; /* keys or none: auto resolved at load (auth_config_finish) */
};

/* telemetry: (telemetry/otel_config.c has the schema and the OTEL_* names) */
struct config_telemetry {
    bool disabled;                 /* OTEL_SDK_DISABLED */
    char *endpoint;                /* base URL; "" with no per-signal endpoint: nothing is exported */
    char *traces_endpoint, *metrics_endpoint, *logs_endpoint;
    int protocol;                  /* OTEL_PROTO_* */
    char *headers;                 /* "k=v,k2=v2" */
    char *certificate;             /* OTEL_EXPORTER_OTLP_CERTIFICATE: CA file for https endpoints */
    int64_t timeout_ms;
    int compression;               /* OTEL_COMPRESSION_* */
    int64_t schedule_delay_ms, max_queue_size, max_export_batch_size, metric_export_interval_ms;
    char *service_name, *resource_attributes;
    int sampler;                   /* enum trace_sampler */
    double sampler_arg;
    bool traces, metrics, logs;
    int64_t logs_schedule_delay_ms; /* OTEL_BLRP_SCHEDULE_DELAY */
    bool capture_content;
    int response_header;           /* OTEL_RESPONSE_HEADER_* */
    char *evaluations;             /* "workflow:<name>=r,<model>=r,*=r" sampling rates (telemetry/eval.h) */
    char *evaluation_judge;        /* the LLM judge's model ("": no judge) */
    char *evaluation_rubric;       /* what the judge is asked to grade */
    double evaluation_budget_usd;  /* the judge's spend since start; 0: no limit */
    int64_t evaluation_budget_tokens; /* the judge's tokens since start; 0: no limit */
    int64_t evaluation_stream_max_bytes; /* streamed text kept for a sampled answer; 0: streams not evaluated */
};

struct config_store { /* schema: store/store_config.c */
    bool enabled;                 /* stored responses and threads */
    int64_t responses_max_bytes;  /* bound on what the store keeps */
    int64_t responses_max_age_ms; /* lifetime of a stored record */
    char *database_url;           /* PostgreSQL (cluster mode); "": the embedded SQLite store */
};

/* cluster: budgets and rate limits shared by replicas through Redis leases (schema: policy/lease.c,
 * docs/cluster.md). redis_url "" (the default): embedded, exact in-process counters. */
struct config_cluster {
    char *redis_url;             /* REDIS_URL wins over cluster.redis_url */
    int on_redis_down;           /* 0 closed (refuse, 503), 1 open (admit by this replica's own counters) */
    int64_t lease_ttl_ms;        /* a lease Redis has not heard renewed for this long is recovered */
    double lease_slice;          /* share of a limit one replica may hold at once */
    int64_t sync_interval_ms;    /* the lease thread's pass: spend reported, leases renewed */
    int64_t lease_idle_ms;       /* a lease unused for this long is returned */
    int64_t redis_timeout_ms;    /* connect and command timeout */
    char *key_prefix;            /* Redis keys start with it */
};

/* sandbox: the daemon's sandbox pools and POST /v1/sandbox/runs (schema: sandbox/sandbox_config.c) */
struct config_sandbox {
    int64_t uid_base, uid_count; /* host uids the runs map to (split between the worker loops) */
    int cgroup;                  /* enum sbx_cgroup_mode */
    char *cgroup_parent;         /* "" = <our cgroup>/agentd-sandbox */
    struct config_sandbox_service {
        bool enabled;
        bool prewarm;            /* make each worker's pool at start, not on its first run */
        int64_t warm, warm_python, max_running, max_queued;
        int64_t max_code_bytes, max_stdin_bytes, max_files_bytes;
        int64_t output_files, output_files_bytes;
        int64_t timeout_ms, max_timeout_ms, memory_bytes, max_memory_bytes, output_bytes, max_output_bytes;
        int64_t max_pids;
    } service;
    struct config_sandbox_egress { /* network "egress": the proxy's policy (sandbox/sbx_egress.h) */
        bool enabled;
        struct cfg_strlist allow_hosts; /* "example.com", "*.example.com"; empty: any host */
        struct cfg_strlist ports;       /* destination ports, as text; checked at load */
        bool allow_private_networks;
        int64_t max_bytes, max_connections, connect_timeout_ms, idle_timeout_ms;
    } egress;
};

enum { CONFIG_UPSTREAM_AUTO, CONFIG_UPSTREAM_NATIVE, CONFIG_UPSTREAM_CURL };

struct config {
    _Atomic int refs;
    uint64_t generation;
    const struct cfg_schema *schema; /* the root table it was read with (frees and prints it) */
    char *path; /* file it was read from, or NULL */
    struct config_server server;
    struct config_log log;
    struct config_gateway gateway;
    struct config_auth auth;
    struct config_telemetry telemetry;
    struct config_store store;
    struct config_cluster cluster;
    struct config_sandbox sandbox;
    struct cfg_list models; /* struct config_model (gateway/gw_config.h) */
    struct cfg_list prices; /* struct config_price (gateway/gw_config.h), merged over the built-in table */
    struct cfg_list budgets;    /* struct config_budget (policy/govern_config.h) */
    struct cfg_list ratelimits; /* struct config_ratelimit (policy/govern_config.h) */
    struct cfg_list agents;     /* struct config_agent (agent/agent_config.h) */
    struct config_mcp {         /* /mcp; its schema: mcp/mcp_config.c (docs/mcp.md) */
        struct cfg_list servers; /* struct agent_mcp_server: upstream servers federated behind /mcp */
        bool conformance_fixtures; /* the conformance suite's fixture tools (tests/mcp/conformance.yaml only) */
        struct config_mcp_jwt {  /* JWT access tokens on /mcp (mcp/mcp_jwt.h); unset issuer: none accepted */
            char *issuer, *jwks_file, *jwks_url, *audience, *team_claim;
            int64_t leeway_ms, jwks_refresh_ms, jwks_min_refresh_ms;
        } jwt;
    } mcp;
    struct config_ledger {      /* its schema: policy/govern_config.c */
        bool enabled;
        int64_t batch_interval_ms;
        int64_t queue_max;
    } ledger;
    struct config_cache { /* the response cache; its schema: gateway/cache_config.c (docs/cache.md) */
        bool enabled;
        int64_t max_bytes, max_entry_bytes, ttl_ms;
        int scope;                 /* enum cache_scope (gateway/cache.h): key, team, global */
        bool only_temperature_zero;
        bool honor_cache_control;
        bool coalesce;
        bool persist;              /* saved to DATA_DIR/cache.bin at shutdown, loaded at start */
        int backend;               /* enum cache_backend (gateway/cache.h): memory, redis, auto */
        struct cfg_list models;    /* struct config_cache_model (gateway/cache.h): per public model */
    } cache;
    struct cfg_list routing;       /* struct config_route (gateway/routing.h): rules per public model */
    struct config_alerts {         /* spend alerts; the schema: policy/alerts.c */
        struct cfg_strlist thresholds; /* percent of each budget */
        bool anomaly;
        double anomaly_factor, anomaly_min_usd;
        int64_t anomaly_baseline_ms, check_interval_ms;
        int64_t retries, retry_backoff_ms, timeout_ms;
        bool log;
        struct cfg_list webhooks;  /* struct config_alert_webhook (policy/alerts.h) */
    } alerts;
    /* Derived state built by higher layers at load (the gateway's model registry), freed with the snapshot. */
    void *ext;
    void (*ext_free)(void *ext);
};

/* The root table: every module's section, assembled by the composition root (api/config_root.c). */
extern const struct cfg_schema config_schema;

/* The container's layout (DESIGN §5): /app, or $AGENTD_APP_DIR (tests, images with another layout). */
const char *config_app_dir(void);
/* Which file a command reads: `given` (--config) when set, else $AGENTD_CONFIG, else APP/config/agentd.yaml when it
 * exists (the mounted ConfigMap), else NULL (the built-in defaults). The result lives for the process. */
const char *config_default_path(const char *given);

/* Command-line settings, applied last. */
#define CONFIG_MAX_SETS 64
struct config_flags {
    const char *config_path;
    const char *sets[CONFIG_MAX_SETS]; /* "path=value" */
    int nsets;
};

/* Loads defaults + file (if path) + environment + flags through the root table `schema`, then runs its
 * `finish` checks. On failure returns NULL and appends one line per problem to errors. The result has one
 * reference. */
struct config *config_load_schema(const struct cfg_schema *schema, const struct config_flags *flags,
                                  char **environ_, struct buf *errors);
/* config_load_schema with agentd's root table (defined in api/config_root.c). */
struct config *config_load(const struct config_flags *flags, char **environ_, struct buf *errors);
struct config *config_ref(struct config *c);
void config_unref(struct config *c);

/* The process-wide current snapshot. acquire returns a new reference (config_unref it); publish takes
 * ownership of c's reference. */
struct config *config_acquire(void);
void config_publish(struct config *c);
/* Drops the current snapshot at exit. */
void config_shutdown(void);

/* For a reload: restart-only settings of `next` that differ from `running` take the running values back (the
 * schema's CFG_RESTART flag says which); their paths go to `which`. True when there was any. */
bool config_keep_restart_settings(struct config *next, const struct config *running, struct buf *which);

/* Writes the effective configuration as YAML, secrets masked. */
void config_print(struct buf *out, const struct config *c);

/* Parses the shared --config/--listen/... flags of `serve` and `config print`. Returns the index of the first
 * argument it did not take, or -1 after printing the error. */
int config_parse_flags(int argc, char **argv, struct config_flags *flags, bool allow_serve_flags);

#endif
