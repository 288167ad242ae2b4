#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"

#define CONFIG_FILE_MAX (4 << 20)

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const upstream_clients[] = {"auto", "native", "curl", NULL};

#define OFF(f) offsetof(struct config, f)
#define I64MAX INT64_MAX

static const struct cfg_field server_limits_fields[] = {
    {.key = "header_bytes", .type = CFG_SIZE, .off = OFF(server.max_header_bytes), .min = 1024, .max = 65536,
     .def = "16KiB", .help = "request line + headers; larger requests get 431"},
    {.key = "body_bytes", .type = CFG_SIZE, .off = OFF(server.max_body_bytes), .min = 1024, .max = 1LL << 30,
     .def = "16MiB", .help = "request body; larger requests get 413"},
    {.key = "connections", .type = CFG_INT, .off = OFF(server.max_connections), .min = 1, .max = 1000000,
     .def = "10000", .help = "open client connections; past it new ones get 503 and are closed"},
    {.key = "pipeline", .type = CFG_INT, .off = OFF(server.max_pipeline), .min = 1, .max = 128, .def = "16",
     .help = "parsed requests queued on one connection before reading pauses"},
};
static const struct cfg_schema server_limits_schema = {"limits", 0, server_limits_fields, 4, NULL};

static const struct cfg_field server_timeouts_fields[] = {
    {.key = "header", .type = CFG_DURATION, .off = OFF(server.header_timeout_ms), .min = 10, .max = 600000,
     .def = "10s", .help = "first byte of a request to the end of its headers; else 408"},
    {.key = "body", .type = CFG_DURATION, .off = OFF(server.body_timeout_ms), .min = 10, .max = 3600000,
     .def = "60s", .help = "end of headers to the end of the body; else 408"},
    {.key = "idle", .type = CFG_DURATION, .off = OFF(server.idle_timeout_ms), .min = 10, .max = 86400000,
     .def = "75s", .help = "keep-alive connection with no request"},
    {.key = "drain_grace", .type = CFG_DURATION, .off = OFF(server.drain_grace_ms), .min = 0, .max = 3600000,
     .def = "30s", .help = "in-flight requests may finish for this long after SIGTERM"},
    {.key = "drain_delay", .type = CFG_DURATION, .off = OFF(server.drain_delay_ms), .min = 0, .max = 600000,
     .def = "0s", .help = "after SIGTERM /ready is 503 for this long before the API listener closes"},
    {.key = "health_stall", .type = CFG_DURATION, .off = OFF(server.health_stall_ms), .min = 100, .max = 600000,
     .def = "10s", .help = "/health fails when a worker loop has not turned for this long"},
};
static const struct cfg_schema server_timeouts_schema = {"timeouts", 0, server_timeouts_fields, 6, NULL};

static const struct cfg_field server_fields[] = {
    {.key = "listen", .type = CFG_ADDR, .off = OFF(server.listen), .def = "0.0.0.0:8000", .flags = CFG_RESTART,
     .help = "API listener"},
    {.key = "ops_listen", .type = CFG_ADDR, .off = OFF(server.ops_listen), .def = "0.0.0.0:8080",
     .flags = CFG_RESTART, .help = "probes and metrics listener"},
    {.key = "workers", .type = CFG_INT, .off = OFF(server.workers), .min = 0, .max = 256, .def = "0",
     .flags = CFG_RESTART, .help = "worker threads; 0 = CPUs available (cgroup quota respected)"},
    {.key = "data_dir", .type = CFG_STRING, .off = OFF(server.data_dir), .max = 4096, .def = "./data",
     .flags = CFG_RESTART, .help = "SQLite database and local state"},
    {.key = "environment", .type = CFG_STRING, .off = OFF(server.environment), .max = 64, .def = "development",
     .env_alias = "ENVIRONMENT", .help = "deployment environment name, reported in logs and metrics"},
    {.key = "backlog", .type = CFG_INT, .off = OFF(server.backlog), .min = 1, .max = 65535, .def = "1024",
     .flags = CFG_RESTART, .help = "listen(2) backlog"},
    {.key = "limits", .type = CFG_MAP, .sub = &server_limits_schema},
    {.key = "timeouts", .type = CFG_MAP, .sub = &server_timeouts_schema},
    {.key = "debug_routes", .type = CFG_BOOL, .off = OFF(server.debug_routes), .def = "false", .flags = CFG_RESTART,
     .help = "test-only routes /debug/echo, /debug/sleep, /debug/stall; never enable in production"},
};
static const struct cfg_schema server_schema = {"server", 0, server_fields, 9, NULL};

static const struct cfg_field log_fields[] = {
    {.key = "level", .type = CFG_ENUM, .off = OFF(log.level), .enums = log_levels, .def = "info",
     .help = "lowest level written"},
    {.key = "access", .type = CFG_BOOL, .off = OFF(log.access), .def = "true", .help = "one line per HTTP request"},
    {.key = "llm", .type = CFG_BOOL, .off = OFF(log.llm), .def = "true",
     .help = "one line per gateway request: model, deployment, tokens, cost, timings"},
};
static const struct cfg_schema log_schema = {"log", 0, log_fields, 3, NULL};

const char *const config_provider_names[] = {"mock",   "openai",  "azure-openai",      "anthropic",
                                             "gemini", "bedrock", "openai-compatible", NULL};

#define MOFF(f) offsetof(struct config_mock, f)

#define DOFF(f) offsetof(struct config_deployment, f)
/* Deployment fields; `base` shifts them when they sit inline in a model (the single-deployment shorthand). */
#define DEPLOYMENT_FIELDS(base)                                                                                   \
    {.key = "provider", .type = CFG_ENUM, .off = (base) + DOFF(provider), .enums = config_provider_names,           \
     .def = "mock", .flags = CFG_NO_ENV, .help = "upstream provider"},                                                                          \
        {.key = "model", .type = CFG_STRING, .off = (base) + DOFF(model), .max = 2048, .flags = CFG_NO_ENV,        \
         .help = "upstream model id, Azure deployment name or Bedrock model id"},     \
        {.key = "base_url", .type = CFG_STRING, .off = (base) + DOFF(base_url), .max = 2048, .flags = CFG_NO_ENV,  \
         .help = "API base URL; default: the provider's public endpoint"},  \
        {.key = "api_key_env", .type = CFG_STRING, .off = (base) + DOFF(api_key_env), .max = 256,                  \
         .flags = CFG_NO_ENV, .help = "environment variable holding the key (default: the provider's usual one)"},                                                                                     \
        {.key = "api_key", .type = CFG_STRING, .off = (base) + DOFF(api_key), .max = 4096,                         \
         .flags = CFG_NO_ENV | CFG_SECRET, .help = "inline key (prefer api_key_env)"},                                                                        \
        {.key = "api_version", .type = CFG_STRING, .off = (base) + DOFF(api_version), .max = 64,                   \
         .flags = CFG_NO_ENV, .help = "Azure api-version / Anthropic anthropic-version"},                                                                                     \
        {.key = "region", .type = CFG_STRING, .off = (base) + DOFF(region), .max = 64, .flags = CFG_NO_ENV,      \
         .help = "Bedrock region (default AWS_REGION)"},                                                           \
        {.key = "weight", .type = CFG_INT, .off = (base) + DOFF(weight), .min = 0, .max = 1000000, .def = "1",     \
         .flags = CFG_NO_ENV, .help = "share of traffic; the rest of the list is the fallback order"},             \
        {.key = "timeout", .type = CFG_DURATION, .off = (base) + DOFF(timeout_ms), .min = 0, .max = 86400000,      \
         .def = "0ms", .flags = CFG_NO_ENV, .help = "per attempt; 0 = gateway.request_timeout"},                   \
        {.key = "headers", .type = CFG_STRLIST, .off = (base) + DOFF(headers), .flags = CFG_NO_ENV,              \
         .help = "extra upstream headers, 'Name: value'"},                                                         \
        {.key = "mock", .type = CFG_MAP, .sub = &mock_schema_##base, .flags = CFG_NO_ENV}

static void validate_deployment(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path);
static void validate_model(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path);

/* The mock sub-map is a CFG_MAP with absolute offsets, so each placement of a deployment has its own table. */
#define MOCK_FIELDS(base)                                                                                        \
    {.key = "latency", .type = CFG_DURATION, .off = (base) + MOFF(latency_ms), .min = 0, .max = 600000,             \
     .def = "0ms", .flags = CFG_NO_ENV, .help = "mock: delay before the response or the first chunk"},             \
        {.key = "ttft", .type = CFG_DURATION, .off = (base) + MOFF(ttft_ms), .min = 0, .max = 600000, .def = "0ms", \
         .flags = CFG_NO_ENV, .help = "mock: extra delay before the first streamed token"},                        \
        {.key = "chunk_interval", .type = CFG_DURATION, .off = (base) + MOFF(chunk_interval_ms), .min = 0,          \
         .max = 60000, .def = "0ms", .flags = CFG_NO_ENV, .help = "mock: delay between streamed chunks"},          \
        {.key = "chunk_words", .type = CFG_INT, .off = (base) + MOFF(chunk_words), .min = 1, .max = 100000,        \
         .def = "1", .flags = CFG_NO_ENV, .help = "mock: words per streamed chunk"}
#define INLINE_BASE offsetof(struct config_model, inline_dep)
static const struct cfg_field mock_fields_0[] = {MOCK_FIELDS(DOFF(mock))};
static const struct cfg_field mock_fields_inline[] = {MOCK_FIELDS(INLINE_BASE + DOFF(mock))};
static const struct cfg_schema mock_schema_0 = {"mock", 0, mock_fields_0, 4, NULL};
static const struct cfg_schema mock_schema_INLINE_BASE = {"mock", 0, mock_fields_inline, 4, NULL};

static const struct cfg_field deployment_fields[] = {DEPLOYMENT_FIELDS(0)};
static const struct cfg_schema deployment_schema = {"deployment", sizeof(struct config_deployment),
                                                    deployment_fields, 11, validate_deployment};

#define MODOFF(f) offsetof(struct config_model, f)
static const struct cfg_field model_fields[] = {
    {.key = "name", .type = CFG_STRING, .off = MODOFF(name), .max = 256, .flags = CFG_REQUIRED | CFG_NO_ENV,
     .help = "public model name clients send"},
    {.key = "deployments", .type = CFG_LIST, .off = MODOFF(deployments), .sub = &deployment_schema,
     .flags = CFG_NO_ENV, .help = "upstream targets; or give one deployment's fields inline"},
    {.key = "embeddings", .type = CFG_BOOL, .off = MODOFF(embeddings), .def = "false", .flags = CFG_NO_ENV,
     .help = "an embeddings model (/v1/embeddings) rather than a chat model"},
    DEPLOYMENT_FIELDS(INLINE_BASE),
};
static const struct cfg_schema model_schema = {"model", sizeof(struct config_model), model_fields, 14,
                                               validate_model};

#define POFF(f) offsetof(struct config_price, f)
static const struct cfg_field price_fields[] = {
    {.key = "input", .type = CFG_DOUBLE, .off = POFF(input), .dmin = 0, .dmax = 1e6, .flags = CFG_REQUIRED,
     .help = "USD per million input tokens"},
    {.key = "output", .type = CFG_DOUBLE, .off = POFF(output), .dmin = 0, .dmax = 1e6, .flags = CFG_REQUIRED,
     .help = "USD per million output tokens"},
    {.key = "cached_input", .type = CFG_DOUBLE, .off = POFF(cached_input), .dmin = 0, .dmax = 1e6,
     .help = "USD per million cache-read tokens (default: input)"},
    {.key = "cache_write", .type = CFG_DOUBLE, .off = POFF(cache_write), .dmin = 0, .dmax = 1e6,
     .help = "USD per million cache-write tokens (default: input)"},
};
static const struct cfg_schema price_schema = {"price", sizeof(struct config_price), price_fields, 4, NULL};

static const struct cfg_field gateway_fields[] = {
    {.key = "max_concurrent_requests", .type = CFG_INT, .off = OFF(gateway.max_concurrent_requests), .min = 0,
     .max = 1000000, .def = "0", .env_alias = "MAX_CONCURRENT_REQUESTS",
     .help = "LLM requests in flight per process; 0 = unlimited"},
    {.key = "request_timeout", .type = CFG_DURATION, .off = OFF(gateway.request_timeout_ms), .min = 100,
     .max = 86400000, .def = "300s", .env_alias = "REQUEST_TIMEOUT_SECONDS", .flags = CFG_ENV_SECONDS,
     .help = "whole-request deadline for an LLM call, retries included"},
    {.key = "connect_timeout", .type = CFG_DURATION, .off = OFF(gateway.connect_timeout_ms), .min = 10,
     .max = 600000, .def = "10s", .help = "TCP + TLS connect to an upstream"},
    {.key = "first_byte_timeout", .type = CFG_DURATION, .off = OFF(gateway.first_byte_timeout_ms), .min = 0,
     .max = 86400000, .def = "120s", .help = "upstream response headers; 0 = only request_timeout"},
    {.key = "max_response_bytes", .type = CFG_SIZE, .off = OFF(gateway.max_response_bytes), .min = 1024,
     .max = 1LL << 30, .def = "32MiB", .help = "a non-streamed upstream response is buffered up to this"},
    {.key = "max_event_bytes", .type = CFG_SIZE, .off = OFF(gateway.max_event_bytes), .min = 1024,
     .max = 1LL << 30, .def = "8MiB", .help = "one streamed upstream event"},
    {.key = "default_max_tokens", .type = CFG_INT, .off = OFF(gateway.default_max_tokens), .min = 1,
     .max = 10000000, .def = "4096", .help = "sent to providers that require max_tokens when the client gave none"},
    {.key = "max_usage_tokens", .type = CFG_INT, .off = OFF(gateway.max_usage_tokens), .min = 1,
     .max = 1000000000000LL, .def = "10000000",
     .help = "largest token count an upstream may report for one response; a count that is not a whole number in "
             "0..this makes the usage 'not reported' (agentd_gateway_usage_invalid_total)"},
    {.key = "auto_models", .type = CFG_BOOL, .off = OFF(gateway.auto_models), .def = "true",
     .help = "add well-known models for every provider whose API key is in the environment"},
    {.key = "mock_model", .type = CFG_BOOL, .off = OFF(gateway.mock_model), .def = "true",
     .help = "serve the offline deterministic model 'mock'"},
    {.key = "anthropic_version", .type = CFG_STRING, .off = OFF(gateway.anthropic_version), .max = 64,
     .def = "2023-06-01", .help = "anthropic-version sent to Anthropic upstreams"},
    {.key = "upstream_client", .type = CFG_ENUM, .off = OFF(gateway.upstream_client), .enums = upstream_clients,
     .def = "auto", .flags = CFG_RESTART,
     .help = "HTTP client for upstream calls: auto = agentd's own HTTP/1.1 client for plain http:// without a "
             "proxy, libcurl for https:// (HTTP/2 where offered) and proxies; native = agentd's client for "
             "https:// too (HTTP/1.1 only); curl = libcurl for everything"},
    {.key = "ca_file", .type = CFG_STRING, .off = OFF(gateway.ca_file), .max = 4096, .def = "", .flags = CFG_RESTART,
     .help = "PEM file of extra CA certificates trusted for upstream TLS, on top of the system store"},
};
static const struct cfg_schema gateway_schema = {"gateway", 0, gateway_fields, 13, NULL};

static const struct cfg_field root_fields[] = {
    {.key = "server", .type = CFG_MAP, .sub = &server_schema},
    {.key = "log", .type = CFG_MAP, .sub = &log_schema},
    {.key = "gateway", .type = CFG_MAP, .sub = &gateway_schema},
    {.key = "models", .type = CFG_LIST, .off = OFF(models), .sub = &model_schema,
     .help = "public model names and the deployments behind them"},
    {.key = "prices", .type = CFG_DICT, .off = OFF(prices), .sub = &price_schema,
     .help = "USD per million tokens, by model name (longest prefix wins), over the built-in table"},
};
const struct cfg_schema config_schema = {"config", sizeof(struct config), root_fields, 5, NULL};

static bool str_set(const char *s)
{
    return s && *s;
}

static void validate_deployment(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    struct config_deployment *d = obj;
    if (d->provider != PROVIDER_MOCK && !str_set(d->model))
        cfg_error_at(ctx, where, path, "'model' is required for provider %s", config_provider_names[d->provider]);
    if (d->provider == PROVIDER_OPENAI_COMPATIBLE && !str_set(d->base_url))
        cfg_error_at(ctx, where, path, "'base_url' is required for provider openai-compatible");
    if (d->provider == PROVIDER_AZURE_OPENAI && !str_set(d->base_url) && !str_set(d->api_key_env))
        cfg_error_at(ctx, where, path,
                     "azure-openai needs 'base_url' (https://NAME.openai.azure.com) or AZURE_OPENAI_ENDPOINT");
    if (str_set(d->base_url) && strncmp(d->base_url, "http://", 7) != 0 && strncmp(d->base_url, "https://", 8) != 0)
        cfg_error_at(ctx, where, path, "base_url '%s' must start with http:// or https://", d->base_url);
    if (str_set(d->api_key) && str_set(d->api_key_env))
        cfg_error_at(ctx, where, path, "give either api_key_env or api_key, not both");
    for (size_t i = 0; i < d->headers.n; i++) {
        const char *h = d->headers.v[i];
        const char *colon = strchr(h, ':');
        if (!colon || colon == h || strpbrk(h, "\r\n"))
            cfg_error_at(ctx, where, path, "header '%s' is not 'Name: value'", h);
    }
}

static void validate_model(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    struct config_model *m = obj;
    const struct ynode *has_provider = ynode_map_get(where, "provider");
    if (m->deployments.n > 0 && has_provider)
        cfg_error_at(ctx, where, path, "give either 'deployments' or the inline provider fields, not both");
    if (m->deployments.n == 0) {
        if (!has_provider)
            cfg_error_at(ctx, where, path, "model '%s' needs 'provider' or 'deployments'", m->name ? m->name : "?");
        else
            validate_deployment(ctx, &m->inline_dep, where, path);
    }
    if (m->deployments.n > 16)
        cfg_error_at(ctx, where, path, "at most 16 deployments per model");
}

static void validate(struct cfg_ctx *ctx, struct config *c)
{
    const struct config_model *models = c->models.items;
    for (size_t i = 0; i < c->models.n; i++)
        for (size_t j = 0; j < i; j++)
            if (models[i].name && models[j].name && strcmp(models[i].name, models[j].name) == 0)
                cfg_error_at(ctx, NULL, "models", "model name '%s' appears twice", models[i].name);
    if (c->server.listen && c->server.ops_listen && strcmp(c->server.listen, c->server.ops_listen) == 0 &&
        strstr(c->server.listen, ":0") == NULL)
        cfg_error_at(ctx, NULL, "server.ops_listen", "must differ from server.listen (%s)", c->server.listen);
}

static int read_file(const char *path, struct buf *out, struct buf *errors)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n == -1) {
            if (errno == EINTR)
                continue;
            buf_printf(errors, "%s: cannot read: %s\n", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (buf_append(out, chunk, (size_t)n) != 0) {
            buf_printf(errors, "%s: larger than %d bytes\n", path, CONFIG_FILE_MAX);
            goto out;
        }
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

struct config *config_load(const struct config_flags *flags, char **environ_, struct buf *errors)
{
    struct config *c = xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    cfg_apply_defaults(&config_schema, c);
    struct cfg_ctx ctx = {"", errors, 0};

    if (flags && flags->config_path) {
        c->path = xstrdup(flags->config_path);
        struct buf text = BUF_INIT(CONFIG_FILE_MAX);
        if (read_file(flags->config_path, &text, errors) != 0) {
            ctx.nerrors++;
        } else {
            struct buf perr = BUF_INIT(4096);
            struct ynode *root = yaml_tree_parse(text.data ? text.data : "", text.len, &perr);
            ctx.source = flags->config_path;
            if (root == NULL) {
                buf_printf(errors, "%s:%s\n", flags->config_path, perr.data ? perr.data : " invalid YAML");
                ctx.nerrors++;
            } else {
                cfg_read_map(&ctx, &config_schema, c, root, "");
                ynode_free(root);
            }
            buf_free(&perr);
        }
        buf_free(&text);
    }
    ctx.source = "environment";
    cfg_read_env(&ctx, &config_schema, c, environ_);
    if (flags) {
        for (int i = 0; i < flags->nsets; i++) {
            const char *eq = strchr(flags->sets[i], '=');
            char path[256];
            size_t n = eq ? (size_t)(eq - flags->sets[i]) : 0;
            if (eq == NULL || n >= sizeof(path)) {
                ctx.source = "command line";
                cfg_error_at(&ctx, NULL, NULL, "'%s' is not PATH=VALUE", flags->sets[i]);
                continue;
            }
            memcpy(path, flags->sets[i], n);
            path[n] = '\0';
            char label[300];
            snprintf(label, sizeof(label), "command line --set %s", path);
            ctx.source = label;
            cfg_set_path(&ctx, &config_schema, c, path, eq + 1);
        }
    }
    ctx.source = "configuration";
    validate(&ctx, c);
    if (ctx.nerrors) {
        config_unref(c);
        return NULL;
    }
    return c;
}

struct config *config_ref(struct config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void config_unref(struct config *c)
{
    if (c == NULL)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->ext_free)
        c->ext_free(c->ext);
    cfg_free_obj(&config_schema, c);
    xfree(c->path);
    xfree(c);
}

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct config *current;
static uint64_t generation;

struct config *config_acquire(void)
{
    pthread_mutex_lock(&current_lock);
    struct config *c = current ? config_ref(current) : NULL;
    pthread_mutex_unlock(&current_lock);
    return c;
}

void config_publish(struct config *c)
{
    pthread_mutex_lock(&current_lock);
    struct config *old = current;
    c->generation = ++generation;
    current = c;
    pthread_mutex_unlock(&current_lock);
    config_unref(old);
}

void config_shutdown(void)
{
    pthread_mutex_lock(&current_lock);
    struct config *old = current;
    current = NULL;
    pthread_mutex_unlock(&current_lock);
    config_unref(old);
}

void config_print(struct buf *out, const struct config *c)
{
    buf_printf(out, "# effective configuration%s%s (secrets masked)\n", c->path ? " from " : "",
               c->path ? c->path : " (built-in defaults)");
    cfg_print(out, &config_schema, c, 0);
}

static int add_set(struct config_flags *flags, const char *path, const char *value)
{
    if (flags->nsets >= (int)(sizeof(flags->sets) / sizeof(flags->sets[0]))) {
        fprintf(stderr, "agentd: too many settings on the command line\n");
        return -1;
    }
    /* Stored as "path=value" in a small static arena that lives for the process. */
    static char storage[64][512];
    int n = snprintf(storage[flags->nsets], sizeof(storage[0]), "%s=%s", path, value);
    if (n < 0 || (size_t)n >= sizeof(storage[0])) {
        fprintf(stderr, "agentd: value for %s is too long\n", path);
        return -1;
    }
    flags->sets[flags->nsets] = storage[flags->nsets];
    flags->nsets++;
    return 0;
}

int config_parse_flags(int argc, char **argv, struct config_flags *flags, bool allow_serve_flags)
{
    static const struct {
        const char *flag;
        const char *path;
    } map[] = {{"--listen", "server.listen"},       {"--ops-listen", "server.ops_listen"},
               {"--data-dir", "server.data_dir"},   {"--workers", "server.workers"},
               {"--log-level", "log.level"}};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        char name[64];
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (strncmp(a, "--", 2) != 0 || nlen >= sizeof(name))
            break;
        memcpy(name, a, nlen);
        name[nlen] = '\0';
        bool takes_value = strcmp(name, "--config") == 0 || strcmp(name, "--set") == 0;
        for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++)
            takes_value |= strcmp(name, map[k].flag) == 0;
        if (!takes_value)
            break;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "agentd: %s needs a value\n", name);
            return -1;
        }
        if (strcmp(name, "--config") == 0) {
            flags->config_path = val;
            continue;
        }
        if (strcmp(name, "--set") == 0) {
            if (flags->nsets >= 64) {
                fprintf(stderr, "agentd: too many --set\n");
                return -1;
            }
            flags->sets[flags->nsets++] = val;
            continue;
        }
        if (!allow_serve_flags) {
            fprintf(stderr, "agentd: %s is not accepted here\n", name);
            return -1;
        }
        for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++)
            if (strcmp(name, map[k].flag) == 0 && add_set(flags, map[k].path, val) != 0)
                return -1;
    }
    return i;
}
