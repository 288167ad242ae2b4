/* gw_config.c: the schema of the gateway's settings (`gateway:`, `models:`, `prices:`) and their checks. */
#include "gateway/gw_config.h"

#include <ctype.h>
#include <string.h>

#include "common/macros.h"
#include "gateway/admission.h"
#include "gateway/cloud_creds.h"
#include "config/config.h"
#include "gateway/resilience.h"

/* ---- gateway.retries, a model's retries, gateway.breaker ---- */

static void validate_retry(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    struct config_retry *r = obj;
    for (size_t i = 0; i < r->retry_on.n; i++)
        if (retry_on_bit(r->retry_on.v[i]) == 0)
            cfg_error_at(ctx, where, path, "retry_on: unknown outcome '%s' (allowed: %s)", r->retry_on.v[i],
                         retry_on_names());
    if (r->backoff_max_ms < r->backoff_base_ms && ynode_map_get(where, "backoff_max"))
        cfg_error_at(ctx, where, path, "backoff_max (%lld ms) is below backoff_base (%lld ms)",
                     (long long)r->backoff_max_ms, (long long)r->backoff_base_ms);
}

#define ROFF(f) offsetof(struct config_retry, f)
/* The keys a model may override; their order is the bit order of config_model.retries_set. */
#define RETRY_FIELDS                                                                                              \
    {.key = "max_attempts", .type = CFG_INT, .off = ROFF(max_attempts), .min = 1, .max = 20, .def = "3",       \
     .flags = CFG_NO_ENV, .help = "attempts per model, the first included (1 = no retries)"},                   \
        {.key = "backoff_base", .type = CFG_DURATION, .off = ROFF(backoff_base_ms), .min = 1, .max = 600000,   \
         .def = "200ms", .flags = CFG_NO_ENV,                                                                   \
         .help = "first backoff ceiling; the n-th retry waits a uniform draw in [0, min(backoff_max, base*2^n)]"}, \
        {.key = "backoff_max", .type = CFG_DURATION, .off = ROFF(backoff_max_ms), .min = 1, .max = 3600000,    \
         .def = "10s", .flags = CFG_NO_ENV, .help = "largest backoff ceiling"},                                 \
        {.key = "retry_on", .type = CFG_STRLIST, .off = ROFF(retry_on), .flags = CFG_NO_ENV,                  \
         .help = "outcomes that retry: connect, timeout, reset, protocol, 408, 409, 429, 500, 502, 503, 504, "  \
                 "529 (empty = all of them); 400, 401, 403, 404 and context-window errors never retry"}

static const struct cfg_field retry_fields[] = {
    RETRY_FIELDS,
    {.key = "budget_ratio", .type = CFG_DOUBLE, .off = ROFF(budget_ratio), .dmin = 0, .dmax = 10, .def = "0.2",
     .help = "retries may add at most this share of the requests a worker sees ..."},
    {.key = "budget_min_per_second", .type = CFG_INT, .off = ROFF(budget_min_per_second), .min = 0,
     .max = 1000000, .def = "10", .help = "... plus this many retries per second and worker"},
};
static const struct cfg_schema gw_retry_schema = {
    .name = "retries", .fields = retry_fields, .nfields = ARRAY_LEN(retry_fields), .validate = validate_retry};

static const struct cfg_field model_retry_fields[] = {RETRY_FIELDS};
static const struct cfg_schema model_retry_schema = {.name = "retries",
                                                     .fields = model_retry_fields,
                                                     .nfields = ARRAY_LEN(model_retry_fields),
                                                     .validate = validate_retry};

#define BOFF(f) offsetof(struct config_breaker, f)
static const struct cfg_field breaker_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = BOFF(enabled), .def = "true", .help = "breakers on"},
    {.key = "window", .type = CFG_DURATION, .off = BOFF(window_ms), .min = 100, .max = 3600000, .def = "30s",
     .help = "sliding window of the failure rate"},
    {.key = "min_requests", .type = CFG_INT, .off = BOFF(min_requests), .min = 1, .max = 1000000, .def = "20",
     .help = "outcomes in the window before the failure rate is judged"},
    {.key = "failure_rate", .type = CFG_DOUBLE, .off = BOFF(failure_rate), .dmin = 0.01, .dmax = 1, .def = "0.5",
     .help = "share of failed attempts in the window that opens the breaker"},
    {.key = "consecutive_failures", .type = CFG_INT, .off = BOFF(consecutive_failures), .min = 1,
     .max = 1000000, .def = "5", .help = "failures in a row that open the breaker"},
    {.key = "cooldown", .type = CFG_DURATION, .off = BOFF(cooldown_ms), .min = 10, .max = 3600000, .def = "30s",
     .help = "open this long, then half-open"},
    {.key = "half_open_probes", .type = CFG_INT, .off = BOFF(half_open_probes), .min = 1, .max = 1000,
     .def = "1", .help = "half-open: attempts let through at a time, and successes that close it"},
};
static const struct cfg_schema gw_breaker_schema = {
    .name = "breaker", .fields = breaker_fields, .nfields = ARRAY_LEN(breaker_fields)};

/* ---- gateway: ---- */

static const char *const upstream_clients[] = {"auto", "native", "curl", NULL};

static const char *const mock_modes[] = {"auto", "false", "true", NULL};
_Static_assert(CONFIG_MOCK_AUTO == 0 && CONFIG_MOCK_OFF == 1 && CONFIG_MOCK_ON == 2, "one name per CONFIG_MOCK_*");

#define GOFF(f) offsetof(struct config_gateway, f)
static const struct cfg_field gateway_fields[] = {
    {.key = "max_concurrent_requests", .type = CFG_INT, .off = GOFF(max_concurrent_requests), .min = 0,
     .max = 1000000, .def = "0", .env_alias = "MAX_CONCURRENT_REQUESTS",
     .help = "slots: LLM requests in flight per process, all workers together; the rest wait in the admission "
             "queue (gateway.admission). 0 = unlimited"},
    {.key = "admission", .type = CFG_MAP, .off = GOFF(admission), .sub = &admission_config_schema,
     .help = "the queue for max_concurrent_requests' slots"},
    {.key = "request_timeout", .type = CFG_DURATION, .off = GOFF(request_timeout_ms), .min = 100,
     .max = 86400000, .def = "300s", .env_alias = "REQUEST_TIMEOUT_SECONDS", .flags = CFG_ENV_SECONDS,
     .help = "whole-request deadline for an LLM call, retries included"},
    {.key = "connect_timeout", .type = CFG_DURATION, .off = GOFF(connect_timeout_ms), .min = 10, .max = 600000,
     .def = "10s", .help = "TCP + TLS connect to an upstream"},
    {.key = "first_byte_timeout", .type = CFG_DURATION, .off = GOFF(first_byte_timeout_ms), .min = 0,
     .max = 86400000, .def = "120s", .help = "upstream response headers; 0 = only request_timeout"},
    {.key = "stream_idle_timeout", .type = CFG_DURATION, .off = GOFF(stream_idle_timeout_ms), .min = 0,
     .max = 86400000, .def = "120s",
     .help = "a stream with no upstream bytes for this long ends its attempt (before the first client byte "
             "another attempt follows); 0 = off"},
    {.key = "retries", .type = CFG_MAP, .off = GOFF(retries), .sub = &gw_retry_schema,
     .help = "retries and backoff (docs/resilience.md); a model's own `retries:` overrides key by key"},
    {.key = "breaker", .type = CFG_MAP, .off = GOFF(breaker), .sub = &gw_breaker_schema,
     .help = "a circuit breaker per deployment (docs/resilience.md)"},
    {.key = "max_response_bytes", .type = CFG_SIZE, .off = GOFF(max_response_bytes), .min = 1024,
     .max = 1LL << 30, .def = "32MiB", .help = "a non-streamed upstream response is buffered up to this"},
    {.key = "max_event_bytes", .type = CFG_SIZE, .off = GOFF(max_event_bytes), .min = 1024, .max = 1LL << 30,
     .def = "8MiB", .help = "one streamed upstream event"},
    {.key = "default_max_tokens", .type = CFG_INT, .off = GOFF(default_max_tokens), .min = 1, .max = 10000000,
     .def = "4096", .help = "sent to providers that require max_tokens when the client gave none"},
    {.key = "max_usage_tokens", .type = CFG_INT, .off = GOFF(max_usage_tokens), .min = 1, .max = 1000000000000LL,
     .def = "10000000",
     .help = "largest token count an upstream may report for one response; a count that is not a whole number in "
             "0..this makes the usage 'not reported' (agentd_gateway_usage_invalid_total)"},
    {.key = "auto_models", .type = CFG_BOOL, .off = GOFF(auto_models), .def = "true",
     .help = "add well-known models for every provider whose API key is in the environment"},
    {.key = "mock_model", .type = CFG_ENUM, .off = GOFF(mock_model), .enums = mock_modes, .def = "auto",
     .help = "serve the offline deterministic models 'mock' and 'mock-embedding'; auto: yes unless "
             "server.environment is 'production'"},
    {.key = "anthropic_version", .type = CFG_STRING, .off = GOFF(anthropic_version), .max = 64,
     .def = "2023-06-01", .help = "anthropic-version sent to Anthropic upstreams"},
    {.key = "upstream_client", .type = CFG_ENUM, .off = GOFF(upstream_client), .enums = upstream_clients,
     .def = "auto", .flags = CFG_RESTART,
     .help = "HTTP client for upstream calls: auto = agentd's own HTTP/1.1 client for plain http:// without a "
             "proxy, libcurl for https:// (HTTP/2 where offered) and proxies; native = agentd's client for "
             "https:// too (HTTP/1.1 only); curl = libcurl for everything"},
    {.key = "ca_file", .type = CFG_STRING, .off = GOFF(ca_file), .max = 4096, .def = "", .flags = CFG_RESTART,
     .help = "PEM file of extra CA certificates trusted for upstream TLS, on top of the system store"},
};
_Static_assert(ARRAY_LEN(upstream_clients) == CONFIG_UPSTREAM_CURL + 2, "one name per CONFIG_UPSTREAM_*");

const struct cfg_schema gw_config_schema = {
    .name = "gateway", .fields = gateway_fields, .nfields = ARRAY_LEN(gateway_fields)};

/* ---- headers ---- */

bool gw_config_header_is_secret(const char *name, size_t len)
{
    static const char *const words[] = {"key",      "token",  "auth",       "secret",   "cookie",
                                        "password", "passwd", "credential", "signature"};
    for (size_t w = 0; w < ARRAY_LEN(words); w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= len; i++) {
            size_t k = 0;
            while (k < wl && tolower((unsigned char)name[i + k]) == words[w][k])
                k++;
            if (k == wl)
                return true;
        }
    }
    return false;
}

void gw_config_header_mask(struct buf *out, const char *header)
{
    const char *colon = strchr(header, ':');
    if (colon == NULL || !gw_config_header_is_secret(header, (size_t)(colon - header))) {
        buf_append_json_cstr(out, header);
        return;
    }
    struct buf tmp = BUF_INIT(BUF_UNBOUNDED);
    buf_append(&tmp, header, (size_t)(colon - header) + 1);
    buf_append_str(&tmp, " ***");
    buf_append_json_str(out, tmp.data, tmp.len);
    buf_free(&tmp);
}

/* ---- models: and their deployments ---- */

static bool str_set(const char *s)
{
    return s && *s;
}

static void validate_deployment(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    struct config_deployment *d = obj;
    if (d->provider != PROVIDER_MOCK && !str_set(d->model))
        cfg_error_at(ctx, where, path, "'model' is required for provider %s", provider_names[d->provider]);
    if (d->provider == PROVIDER_OPENAI_COMPATIBLE && !str_set(d->base_url))
        cfg_error_at(ctx, where, path, "'base_url' is required for provider openai-compatible");
    if (d->provider == PROVIDER_AZURE_OPENAI && !str_set(d->base_url) && !str_set(d->api_key_env))
        cfg_error_at(ctx, where, path,
                     "azure-openai needs 'base_url' (https://NAME.openai.azure.com) or AZURE_OPENAI_ENDPOINT");
    if (str_set(d->base_url) && strncmp(d->base_url, "http://", 7) != 0 && strncmp(d->base_url, "https://", 8) != 0)
        cfg_error_at(ctx, where, path, "base_url '%s' must start with http:// or https://", d->base_url);
    if (str_set(d->api_key) && str_set(d->api_key_env))
        cfg_error_at(ctx, where, path, "give either api_key_env or api_key, not both");
    for (const char *p = d->location; p && *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-')) { /* it becomes part of a host name */
            cfg_error_at(ctx, where, path, "location '%s': only letters, digits and - are allowed", d->location);
            break;
        }
    if (d->api == CONFIG_API_RESPONSES && d->provider != PROVIDER_OPENAI && d->provider != PROVIDER_AZURE_OPENAI &&
        d->provider != PROVIDER_OPENAI_COMPATIBLE)
        cfg_error_at(ctx, where, path, "api: responses is for openai, azure-openai and openai-compatible deployments");
    if (cc_auth_cloud(d->auth) != CC_CLOUD_NONE && cc_auth_cloud(d->auth) != cc_provider_cloud(d->provider))
        cfg_error_at(ctx, where, path, "auth: %s does not apply to provider %s", cc_auth_names[d->auth],
                     provider_names[d->provider]);
    else if (cc_auth_cloud(d->auth) != CC_CLOUD_NONE && (str_set(d->api_key) || str_set(d->api_key_env)))
        cfg_error_at(ctx, where, path, "give either a key (api_key / api_key_env) or auth: %s, not both",
                     cc_auth_names[d->auth]);
    for (const char *p = d->id; p && *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("._:@/-+", *p))) {
            cfg_error_at(ctx, where, path, "id '%s': only letters, digits and . _ : @ / - + are allowed", d->id);
            break;
        }
    for (size_t i = 0; i < d->headers.n; i++) {
        const char *h = d->headers.v[i];
        const char *colon = strchr(h, ':');
        if (!colon || colon == h || strpbrk(h, "\r\n"))
            cfg_error_at(ctx, where, path, "header '%s' is not 'Name: value'", h);
    }
}

static const char *const deployment_apis[] = {"auto", "chat", "responses", NULL};
_Static_assert(ARRAY_LEN(deployment_apis) == CONFIG_API_RESPONSES + 2, "one name per CONFIG_API_*");

#define DOFF(f) offsetof(struct config_deployment, f)
/* Deployment fields; `base` shifts them when they sit inline in a model (the single-deployment shorthand). */
#define DEPLOYMENT_FIELDS(base)                                                                                   \
    {.key = "provider", .type = CFG_ENUM, .off = (base) + DOFF(provider), .enums = provider_names,        \
     .def = "mock", .flags = CFG_NO_ENV, .help = "upstream provider"},                                            \
        {.key = "model", .type = CFG_STRING, .off = (base) + DOFF(model), .max = 2048, .flags = CFG_NO_ENV,     \
         .help = "upstream model id, Azure deployment name or Bedrock model id"},                                 \
        {.key = "base_url", .type = CFG_STRING, .off = (base) + DOFF(base_url), .max = 2048,                    \
         .flags = CFG_NO_ENV, .help = "API base URL; default: the provider's public endpoint"},                   \
        {.key = "api_key_env", .type = CFG_STRING, .off = (base) + DOFF(api_key_env), .max = 256,               \
         .flags = CFG_NO_ENV, .help = "environment variable holding the key (default: the provider's usual one)"}, \
        {.key = "api_key", .type = CFG_STRING, .off = (base) + DOFF(api_key), .max = 4096,                      \
         .flags = CFG_NO_ENV | CFG_SECRET, .help = "inline key (prefer api_key_env)"},                            \
        {.key = "api_version", .type = CFG_STRING, .off = (base) + DOFF(api_version), .max = 64,                \
         .flags = CFG_NO_ENV, .help = "Azure api-version / Anthropic anthropic-version"},                         \
        {.key = "region", .type = CFG_STRING, .off = (base) + DOFF(region), .max = 64, .flags = CFG_NO_ENV,     \
         .help = "Bedrock region (default AWS_REGION)"},                                                          \
        {.key = "weight", .type = CFG_INT, .off = (base) + DOFF(weight), .min = 0, .max = 1000000, .def = "1",  \
         .flags = CFG_NO_ENV, .help = "share of traffic; the rest of the list is the fallback order"},            \
        {.key = "timeout", .type = CFG_DURATION, .off = (base) + DOFF(timeout_ms), .min = 0, .max = 86400000,   \
         .def = "0ms", .flags = CFG_NO_ENV, .help = "per attempt; 0 = gateway.request_timeout"},                  \
        {.key = "headers", .type = CFG_STRLIST, .off = (base) + DOFF(headers), .flags = CFG_NO_ENV,             \
         .mask = gw_config_header_mask, .help = "extra upstream headers, 'Name: value'"},                         \
        {.key = "mock", .type = CFG_MAP, .off = (base) + DOFF(mock), .sub = &mock_config_schema,                \
         .flags = CFG_NO_ENV},                                                                                    \
        {.key = "api", .type = CFG_ENUM, .off = (base) + DOFF(api), .enums = deployment_apis, .def = "auto",    \
         .flags = CFG_NO_ENV,                                                                                     \
         .help = "OpenAI API the upstream speaks for /v1/responses: auto (openai and azure-openai pass it "      \
                 "through, others translate to chat), chat (translate), responses (pass through)"},               \
        {.key = "id", .type = CFG_STRING, .off = (base) + DOFF(id), .max = 128, .flags = CFG_NO_ENV,             \
         .help = "deployment id in headers, logs and metric labels; default provider:model, with @host[:port] " \
                 "when two deployments would share it"},                                                         \
        {.key = "connect_timeout", .type = CFG_DURATION, .off = (base) + DOFF(connect_timeout_ms), .min = 0,    \
         .max = 600000, .def = "0ms", .flags = CFG_NO_ENV, .help = "0 = gateway.connect_timeout"},              \
        {.key = "first_byte_timeout", .type = CFG_DURATION, .off = (base) + DOFF(first_byte_timeout_ms),        \
         .min = 0, .max = 86400000, .def = "0ms", .flags = CFG_NO_ENV, .help = "0 = gateway.first_byte_timeout"}, \
        {.key = "idle_timeout", .type = CFG_DURATION, .off = (base) + DOFF(idle_timeout_ms), .min = 0,          \
         .max = 86400000, .def = "0ms", .flags = CFG_NO_ENV, .help = "stream idle; 0 = gateway.stream_idle_timeout"}, \
        {.key = "auth", .type = CFG_ENUM, .off = (base) + DOFF(auth), .enums = cc_auth_names, .def = "auto",     \
         .flags = CFG_NO_ENV,                                                                                     \
         .help = "credentials: auto (the key if set, else a cloud identity found in the environment), api_key, " \
                 "aws_web_identity, aws_container, azure_workload_identity, azure_managed_identity, "            \
                 "google_service_account, google_metadata (docs/cloud/)"},                                       \
        {.key = "project", .type = CFG_STRING, .off = (base) + DOFF(project), .max = 128, .flags = CFG_NO_ENV,  \
         .help = "vertex-ai: Google Cloud project id (default GOOGLE_CLOUD_PROJECT)"},                            \
        {.key = "location", .type = CFG_STRING, .off = (base) + DOFF(location), .max = 64, .flags = CFG_NO_ENV, \
         .help = "vertex-ai: location, e.g. us-central1 (default GOOGLE_CLOUD_LOCATION, else global)"},         \
        {.key = "credentials_file", .type = CFG_STRING, .off = (base) + DOFF(credentials_file), .max = 4096,     \
         .flags = CFG_NO_ENV,                                                                                     \
         .help = "vertex-ai: service-account key file (default GOOGLE_APPLICATION_CREDENTIALS)"}

static const struct cfg_field deployment_fields[] = {DEPLOYMENT_FIELDS(0)};
static const struct cfg_schema deployment_schema = {.name = "deployment",
                                                    .item_size = sizeof(struct config_deployment),
                                                    .fields = deployment_fields,
                                                    .nfields = ARRAY_LEN(deployment_fields),
                                                    .validate = validate_deployment};

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
    const struct ynode *rn = ynode_map_get(where, "retries");
    m->retries_set = 0;
    for (size_t i = 0; rn && i < ARRAY_LEN(model_retry_fields); i++)
        if (ynode_map_get(rn, model_retry_fields[i].key))
            m->retries_set |= 1u << i;
}

static const char *const balancings[] = {"weighted", "least_outstanding", "latency", NULL};
_Static_assert(ARRAY_LEN(balancings) == BALANCE_LATENCY + 2, "one name per BALANCE_*");

#define MODOFF(f) offsetof(struct config_model, f)
static const struct cfg_field model_fields[] = {
    {.key = "name", .type = CFG_STRING, .off = MODOFF(name), .max = 256, .flags = CFG_REQUIRED | CFG_NO_ENV,
     .help = "public model name clients send"},
    {.key = "deployments", .type = CFG_LIST, .off = MODOFF(deployments), .sub = &deployment_schema,
     .flags = CFG_NO_ENV, .help = "upstream targets; or give one deployment's fields inline"},
    {.key = "embeddings", .type = CFG_BOOL, .off = MODOFF(embeddings), .def = "false", .flags = CFG_NO_ENV,
     .help = "an embeddings model (/v1/embeddings) rather than a chat model"},
    {.key = "retries", .type = CFG_MAP, .off = MODOFF(retries), .sub = &model_retry_schema, .flags = CFG_NO_ENV,
     .help = "this model's retry settings; keys not given come from gateway.retries"},
    {.key = "fallbacks", .type = CFG_STRLIST, .off = MODOFF(fallbacks), .flags = CFG_NO_ENV,
     .help = "models tried in order once this one's attempts are spent"},
    {.key = "context_window_fallbacks", .type = CFG_STRLIST, .off = MODOFF(context_window_fallbacks),
     .flags = CFG_NO_ENV, .help = "models (larger context) tried when a deployment says the prompt is too long"},
    {.key = "content_policy_fallbacks", .type = CFG_STRLIST, .off = MODOFF(content_policy_fallbacks),
     .flags = CFG_NO_ENV, .help = "models tried when a provider's content policy refuses the request"},
    {.key = "balancing", .type = CFG_ENUM, .off = MODOFF(balancing), .enums = balancings, .def = "weighted",
     .flags = CFG_NO_ENV,
     .help = "first deployment of each request: weighted (random by weight), least_outstanding (fewest "
             "requests in flight of two drawn by weight), latency (lowest moving average of time to first byte)"},
    DEPLOYMENT_FIELDS(MODOFF(inline_dep)),
};
const struct cfg_schema gw_config_model_schema = {.name = "model",
                                           .item_size = sizeof(struct config_model),
                                           .fields = model_fields,
                                           .nfields = ARRAY_LEN(model_fields),
                                           .validate = validate_model};

static const struct config_model *find_model(const struct cfg_list *models, const char *name)
{
    const struct config_model *m = models->items;
    for (size_t i = 0; i < models->n; i++)
        if (m[i].name && strcmp(m[i].name, name) == 0)
            return &m[i];
    return NULL;
}

static void check_fallbacks(struct cfg_ctx *ctx, const struct cfg_list *models, const struct config_model *m,
                            const struct cfg_strlist *l, const char *key, const char *path)
{
    if (l->n > 8)
        cfg_error_at(ctx, NULL, path, "model '%s': at most 8 %s", m->name, key);
    for (size_t i = 0; i < l->n; i++) {
        const struct config_model *f = find_model(models, l->v[i]);
        if (f == NULL)
            cfg_error_at(ctx, NULL, path, "model '%s': %s names '%s', which is not a model under models:", m->name,
                         key, l->v[i]);
        else if (f == m)
            cfg_error_at(ctx, NULL, path, "model '%s': %s names the model itself", m->name, key);
        else if (f->embeddings != m->embeddings)
            cfg_error_at(ctx, NULL, path, "model '%s': %s names '%s', %s model", m->name, key, l->v[i],
                         f->embeddings ? "an embeddings" : "a chat");
    }
}

static void dep_ids(const struct config_model *m, const struct config_deployment **out, size_t *n)
{
    *n = 0;
    if (m->deployments.n) {
        const struct config_deployment *d = m->deployments.items;
        for (size_t i = 0; i < m->deployments.n && *n < 16; i++)
            out[(*n)++] = &d[i];
    } else {
        out[(*n)++] = &m->inline_dep;
    }
}

void gw_config_models_finish(struct cfg_ctx *ctx, const struct cfg_list *models, const char *path)
{
    const struct config_model *m = models->items;
    for (size_t i = 0; i < models->n; i++)
        for (size_t j = 0; j < i; j++)
            if (m[i].name && m[j].name && strcmp(m[i].name, m[j].name) == 0)
                cfg_error_at(ctx, NULL, path, "model name '%s' appears twice", m[i].name);
    for (size_t i = 0; i < models->n; i++) {
        if (!m[i].name)
            continue;
        check_fallbacks(ctx, models, &m[i], &m[i].fallbacks, "fallbacks", path);
        check_fallbacks(ctx, models, &m[i], &m[i].context_window_fallbacks, "context_window_fallbacks", path);
        check_fallbacks(ctx, models, &m[i], &m[i].content_policy_fallbacks, "content_policy_fallbacks", path);
    }
    /* a deployment id names one deployment: given twice it would merge two breakers' worth of metrics */
    for (size_t i = 0; i < models->n; i++) {
        const struct config_deployment *a[16];
        size_t na;
        dep_ids(&m[i], a, &na);
        for (size_t x = 0; x < na; x++) {
            if (!str_set(a[x]->id))
                continue;
            for (size_t j = 0; j <= i; j++) {
                const struct config_deployment *b[16];
                size_t nb;
                dep_ids(&m[j], b, &nb);
                for (size_t y = 0; y < nb && (j < i || y < x); y++)
                    if (str_set(b[y]->id) && strcmp(a[x]->id, b[y]->id) == 0)
                        cfg_error_at(ctx, NULL, path, "deployment id '%s' appears twice", a[x]->id);
            }
        }
    }
}

/* ---- prices: ---- */

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
    {.key = "reasoning", .type = CFG_DOUBLE, .off = POFF(reasoning), .dmin = 0, .dmax = 1e6,
     .help = "USD per million reasoning output tokens (default: output)"},
};
const struct cfg_schema gw_config_price_schema = {.name = "price",
                                           .item_size = sizeof(struct config_price),
                                           .fields = price_fields,
                                           .nfields = ARRAY_LEN(price_fields)};

struct up_options gw_config_up_options(const struct config *cfg)
{
    int c = cfg ? cfg->gateway.upstream_client : CONFIG_UPSTREAM_AUTO;
    return (struct up_options){
        .client = c == CONFIG_UPSTREAM_CURL     ? UP_CLIENT_CURL
                  : c == CONFIG_UPSTREAM_NATIVE ? UP_CLIENT_NATIVE
                                                : UP_CLIENT_AUTO,
        .ca_file = cfg ? cfg->gateway.ca_file : NULL,
        .max_connections = cfg ? (long)cfg->server.max_connections : 0,
    };
}
