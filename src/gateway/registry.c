#include "gateway/usage.h"
#include "gateway/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "config/config.h"
#include "gateway/cloud_creds.h"
#include "gateway/dep_health.h"
#include "gateway/gw_types.h"
#include "gateway/provider.h"
#include "gateway/redact.h"
#include "gateway/resilience.h"
#include "policy/prices.h"

/* Models offered with no configuration when a provider's key is in the environment. */
static const struct {
    int provider;
    const char *name;
    bool embeddings;
} auto_models[] = {
    {PROVIDER_OPENAI, "gpt-4o", false},
    {PROVIDER_OPENAI, "gpt-4o-mini", false},
    {PROVIDER_OPENAI, "gpt-4.1", false},
    {PROVIDER_OPENAI, "gpt-4.1-mini", false},
    {PROVIDER_OPENAI, "gpt-4.1-nano", false},
    {PROVIDER_OPENAI, "o3", false},
    {PROVIDER_OPENAI, "o4-mini", false},
    {PROVIDER_OPENAI, "text-embedding-3-small", true},
    {PROVIDER_OPENAI, "text-embedding-3-large", true},
    {PROVIDER_ANTHROPIC, "claude-opus-4-1", false},
    {PROVIDER_ANTHROPIC, "claude-sonnet-4-5", false},
    {PROVIDER_ANTHROPIC, "claude-haiku-4-5", false},
    {PROVIDER_GEMINI, "gemini-2.5-pro", false},
    {PROVIDER_GEMINI, "gemini-2.5-flash", false},
    {PROVIDER_GEMINI, "gemini-2.5-flash-lite", false},
    {PROVIDER_GEMINI, "gemini-embedding-001", true},
    {PROVIDER_BEDROCK, "anthropic.claude-sonnet-4-5-20250929-v1:0", false},
    {PROVIDER_BEDROCK, "anthropic.claude-3-5-haiku-20241022-v1:0", false},
    {PROVIDER_BEDROCK, "amazon.nova-pro-v1:0", false},
    {PROVIDER_BEDROCK, "amazon.nova-lite-v1:0", false},
};

static const char *env_get(char **env, const char *name)
{
    if (name == NULL || *name == '\0')
        return NULL;
    size_t n = strlen(name);
    for (char **e = env; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return (*e)[n + 1] ? *e + n + 1 : NULL;
    return NULL;
}

static const char *default_key_env(int provider)
{
    switch (provider) {
    case PROVIDER_OPENAI: return "OPENAI_API_KEY";
    case PROVIDER_AZURE_OPENAI: return "AZURE_OPENAI_API_KEY";
    case PROVIDER_ANTHROPIC: return "ANTHROPIC_API_KEY";
    case PROVIDER_GEMINI: return "GEMINI_API_KEY";
    default: return NULL;
    }
}

static char *dup_or_null(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

static char *strip_slash(char *s)
{
    size_t n = s ? strlen(s) : 0;
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

static char *default_base_url(int provider, const char *region, char **env)
{
    char tmp[512];
    const char *v;
    switch (provider) {
    case PROVIDER_OPENAI:
        v = env_get(env, "OPENAI_BASE_URL");
        return xstrdup(v ? v : "https://api.openai.com/v1");
    case PROVIDER_AZURE_OPENAI:
        v = env_get(env, "AZURE_OPENAI_ENDPOINT");
        return v ? xstrdup(v) : NULL;
    case PROVIDER_ANTHROPIC:
        v = env_get(env, "ANTHROPIC_BASE_URL");
        return xstrdup(v ? v : "https://api.anthropic.com");
    case PROVIDER_GEMINI:
        v = env_get(env, "GEMINI_BASE_URL");
        if (!v)
            v = env_get(env, "GOOGLE_GEMINI_BASE_URL");
        return xstrdup(v ? v : "https://generativelanguage.googleapis.com");
    case PROVIDER_VERTEX: {
        struct buf b = BUF_INIT(BUF_UNBOUNDED);
        vertex_base_url(region, &b);
        return b.data;
    }
    case PROVIDER_BEDROCK:
        v = env_get(env, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME");
        if (!v)
            v = env_get(env, "AWS_ENDPOINT_URL");
        if (v)
            return xstrdup(v);
        snprintf(tmp, sizeof(tmp), "https://bedrock-runtime.%s.amazonaws.com", region ? region : "us-east-1");
        return xstrdup(tmp);
    default:
        return NULL;
    }
}

const struct price *registry_price(const struct registry *r, const char *model)
{
    return r ? prices_lookup(r->prices, model) : NULL;
}

static void fill_deployment(struct deployment *d, const struct config_deployment *c, const struct registry *r,
                            char **env, const struct config *cfg, struct buf *warnings, const char *public_name)
{
    d->provider = c->provider;
    d->prov = provider_by_id(c->provider);
    d->api = c->api;
    d->model = xstrdup(c->model && *c->model ? c->model : public_name);
    d->region = dup_or_null(c->region);
    if (d->provider == PROVIDER_BEDROCK && d->region == NULL) {
        const char *reg = env_get(env, "AWS_REGION");
        d->region = xstrdup(reg ? reg : (env_get(env, "AWS_DEFAULT_REGION") ? env_get(env, "AWS_DEFAULT_REGION")
                                                                              : "us-east-1"));
    }
    if (d->provider == PROVIDER_VERTEX) { /* the location rides in region; Google's SDKs' variables, then LiteLLM's */
        const char *loc = c->location && *c->location ? c->location : env_get(env, "GOOGLE_CLOUD_LOCATION");
        const char *proj = c->project && *c->project ? c->project : env_get(env, "GOOGLE_CLOUD_PROJECT");
        xfree(d->region);
        d->region = xstrdup(loc ? loc : env_get(env, "VERTEXAI_LOCATION") ? env_get(env, "VERTEXAI_LOCATION") : "global");
        d->project = dup_or_null(proj ? proj : env_get(env, "VERTEXAI_PROJECT"));
        if (strspn(d->region, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != strlen(d->region)) {
            if (warnings) /* it becomes part of a host name; the key's own value is checked by the configuration */
                buf_printf(warnings, "model %s: vertex-ai location '%s' is not a location\n", public_name, d->region);
            xfree(d->project);
            d->project = NULL; /* skipped, as a deployment without a project */
        }
        d->prov = vertex_provider_for(d->model);
    }
    d->base_url = strip_slash(c->base_url && *c->base_url ? xstrdup(c->base_url)
                                                          : default_base_url(c->provider, d->region, env));
    d->api_version = dup_or_null(c->api_version);
    if (d->api_version == NULL && d->provider == PROVIDER_AZURE_OPENAI) {
        const char *v = env_get(env, "OPENAI_API_VERSION");
        d->api_version = xstrdup(v ? v : "2024-10-21");
    }
    if (d->api_version == NULL && d->provider == PROVIDER_ANTHROPIC)
        d->api_version = xstrdup(cfg->gateway.anthropic_version);
    const char *key_env = c->api_key_env && *c->api_key_env ? c->api_key_env : default_key_env(c->provider);
    d->api_key_env = dup_or_null(key_env);
    if (c->api_key && *c->api_key)
        d->api_key = xstrdup(c->api_key);
    else if (key_env)
        d->api_key = dup_or_null(env_get(env, key_env));
    if (d->provider == PROVIDER_GEMINI && d->api_key == NULL && !(c->api_key_env && *c->api_key_env))
        d->api_key = dup_or_null(env_get(env, "GOOGLE_API_KEY"));
    if (d->provider == PROVIDER_BEDROCK) {
        d->aws_access_key_id = dup_or_null(env_get(env, "AWS_ACCESS_KEY_ID"));
        d->aws_secret_access_key = dup_or_null(env_get(env, "AWS_SECRET_ACCESS_KEY"));
        d->aws_session_token = dup_or_null(env_get(env, "AWS_SESSION_TOKEN"));
        d->missing_key = d->aws_access_key_id == NULL || d->aws_secret_access_key == NULL;
    } else if (d->provider == PROVIDER_VERTEX) {
        d->missing_key = d->project == NULL; /* the token comes from the Google credentials, or api_key */
    } else if (d->provider != PROVIDER_MOCK && d->provider != PROVIDER_OPENAI_COMPATIBLE) {
        d->missing_key = d->api_key == NULL;
    }
    /* A cloud identity: asked for by `auth:`, or found by auto when there is no static key. */
    struct cc_dep_info di = {d->provider, d->region, c, c->credentials_file};
    char why[512];
    bool has_key = d->provider == PROVIDER_VERTEX ? d->api_key != NULL : !d->missing_key; /* vertex: a static token */
    int crc = cc_source_get(c->auth, has_key, env, &di, &d->creds, why, sizeof(why));
    if (crc == 0) {
        d->missing_key = d->provider == PROVIDER_VERTEX && d->project == NULL;
    } else if (crc < 0) {
        d->missing_key = true;
        if (warnings)
            buf_printf(warnings, "model %s: deployment %s:%s: auth: %s: %s\n", public_name,
                       provider_names[d->provider], d->model, cc_auth_names[c->auth], why);
    }
    if (d->provider == PROVIDER_AZURE_OPENAI && d->base_url == NULL)
        d->missing_key = true;
    if (d->missing_key && warnings && crc >= 0)
        buf_printf(warnings, "model %s: deployment %s:%s has no credentials (%s is not set)\n", public_name,
                   provider_names[d->provider], d->model,
                   d->provider == PROVIDER_BEDROCK ? "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                   : d->provider == PROVIDER_AZURE_OPENAI && d->base_url == NULL ? "AZURE_OPENAI_ENDPOINT"
                   : d->provider == PROVIDER_VERTEX ? "project / GOOGLE_CLOUD_PROJECT"
                                                                                 : (key_env ? key_env : "api_key"));
    if (c->id && *c->id) {
        d->label = xstrdup(c->id);
        d->id_given = true;
    } else {
        char label[600];
        snprintf(label, sizeof(label), "%s:%s", provider_names[d->provider], d->model);
        d->label = xstrdup(label);
    }
    d->weight = c->weight;
    d->timeout_ms = c->timeout_ms;
    d->connect_timeout_ms = c->connect_timeout_ms ? c->connect_timeout_ms : cfg->gateway.connect_timeout_ms;
    d->first_byte_timeout_ms = c->first_byte_timeout_ms ? c->first_byte_timeout_ms : cfg->gateway.first_byte_timeout_ms;
    d->idle_timeout_ms = c->idle_timeout_ms ? c->idle_timeout_ms : cfg->gateway.stream_idle_timeout_ms;
    d->mock = &c->mock;
    d->nheaders = c->headers.n;
    d->headers = c->headers.n ? c->headers.v : NULL; /* borrowed from the configuration snapshot */
    d->price = registry_price(r, d->model);
    if (d->price == NULL)
        d->price = registry_price(r, public_name);
}

static void add_model(struct registry *r, size_t *cap, struct model_entry **out)
{
    if (r->nmodels == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        r->models = xrealloc(r->models, *cap * sizeof(*r->models));
    }
    *out = &r->models[r->nmodels++];
    memset(*out, 0, sizeof(**out));
}

static bool has_model(const struct registry *r, const char *name)
{
    for (size_t i = 0; i < r->nmodels; i++)
        if (strcmp(r->models[i].name, name) == 0)
            return true;
    return false;
}

static void free_registry_cb(void *p)
{
    registry_free(p);
}

/* The secrets of every deployment, for scrubbing upstream text (issue 15: a key quoted in an upstream error must
 * reach neither the client nor the log). Built once per configuration. */
static struct redact_set *collect_secrets(const struct registry *r)
{
    struct redact_set *rs = redact_set_new();
    for (size_t i = 0; i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            const struct deployment *d = &r->models[i].deps[j];
            redact_set_add(rs, d->api_key);
            redact_set_add(rs, d->aws_access_key_id);
            redact_set_add(rs, d->aws_secret_access_key);
            redact_set_add(rs, d->aws_session_token);
            for (size_t h = 0; h < d->nheaders; h++)
                redact_set_add_header(rs, d->headers[h]);
        }
    return rs;
}

/* "host:port/path" of a base URL (the scheme left out) */
static const char *url_tail(const char *u)
{
    const char *p = u ? strstr(u, "://") : NULL;
    return p ? p + 3 : (u ? u : "");
}

/* Two deployments of one model that would share provider:model with different base URLs get @host[:port][/path],
 * so that headers, logs and metric labels tell them apart (issue 9, item 9). Configured ids are kept as given.
 * The same provider, model, URL and id is the same upstream, whichever public model lists it: one health
 * (breaker, requests in flight, latency) for all its listings, and for the same deployment after a reload. */
static void derive_ids(struct registry *r, const struct config *cfg)
{
    for (size_t i = 0; i < r->nmodels; i++) {
        struct model_entry *m = &r->models[i];
        for (size_t a = 0; a < m->ndeps; a++) {
            struct deployment *d = &m->deps[a];
            bool shared = false;
            for (size_t b = 0; b < m->ndeps && !shared && !d->id_given; b++)
                shared = b != a && strcmp(d->label, m->deps[b].label) == 0 &&
                         strcmp(url_tail(d->base_url), url_tail(m->deps[b].base_url)) != 0;
            if (shared) {
                char label[1200];
                snprintf(label, sizeof(label), "%s@%s", d->label, url_tail(d->base_url));
                d->pending_label = xstrdup(label);
            }
        }
        for (size_t a = 0; a < m->ndeps; a++)
            if (m->deps[a].pending_label) {
                xfree(m->deps[a].label);
                m->deps[a].label = m->deps[a].pending_label;
                m->deps[a].pending_label = NULL;
            }
    }
    /* health (breaker, requests in flight, latency) by identity: shared by the listings of one upstream, and
     * carried over from the registry this one replaces (dep_health.h) */
    const struct config_breaker *cb = &cfg->gateway.breaker;
    struct breaker_settings bs = {cb->enabled,      cb->window_ms,         cb->min_requests,
                                  cb->failure_rate, cb->consecutive_failures, cb->cooldown_ms,
                                  cb->half_open_probes};
    struct buf ident = BUF_INIT(BUF_UNBOUNDED);
    for (size_t i = 0; i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            struct deployment *d = &r->models[i].deps[j];
            buf_reset(&ident);
            buf_printf(&ident, "%s\n%s\n%s\n%s", provider_names[d->provider], d->model, url_tail(d->base_url),
                       d->label);
            d->st = dep_state_get(ident.data, &bs);
        }
    buf_free(&ident);
}

static void resolve_list(const struct registry *r, const struct cfg_strlist *names, const struct model_entry **out,
                         size_t *n)
{
    *n = 0;
    for (size_t i = 0; names && i < names->n && *n < 8; i++) {
        const struct model_entry *f = registry_find(r, str_from(names->v[i]));
        if (f)
            out[(*n)++] = f;
    }
}

/* A model's retry policy (its own keys over gateway.retries), balancing and fallbacks. */
static void model_resilience(const struct registry *r, struct model_entry *m, const struct config_model *cm,
                             const struct config *cfg)
{
    const struct config_retry *g = &cfg->gateway.retries;
    const struct config_retry *own = cm ? &cm->retries : NULL;
    unsigned set = cm ? cm->retries_set : 0;
    m->retry.max_attempts = set & 1u ? own->max_attempts : g->max_attempts;
    m->retry.backoff_base_ms = set & 2u ? own->backoff_base_ms : g->backoff_base_ms;
    m->retry.backoff_max_ms = set & 4u ? own->backoff_max_ms : g->backoff_max_ms;
    const struct cfg_strlist *on = set & 8u ? &own->retry_on : &g->retry_on;
    m->retry.retry_on = on->n ? 0 : RETRY_ON_DEFAULT;
    for (size_t i = 0; i < on->n; i++)
        m->retry.retry_on |= retry_on_bit(on->v[i]);
    if (m->retry.backoff_max_ms < m->retry.backoff_base_ms)
        m->retry.backoff_max_ms = m->retry.backoff_base_ms;
    if (cm == NULL)
        return;
    m->balancing = cm->balancing;
    resolve_list(r, &cm->fallbacks, m->fallbacks, &m->nfallbacks);
    resolve_list(r, &cm->context_window_fallbacks, m->cw_fallbacks, &m->ncw_fallbacks);
    resolve_list(r, &cm->content_policy_fallbacks, m->cp_fallbacks, &m->ncp_fallbacks);
}

int registry_attach(struct config *cfg, char **env, struct buf *warnings)
{
    struct registry *r = xcalloc(1, sizeof(*r));
    usage_limits_set(&(struct usage_limits){cfg->gateway.max_usage_tokens}); /* the bound in force from now on */
    /* prices: the versioned table (policy/prices.c) with the configuration's entries over it */
    const struct config_price *cp = cfg->prices.items;
    struct price_override *ov = xcalloc(cfg->prices.n + 1, sizeof(*ov));
    for (size_t i = 0; i < cfg->prices.n; i++)
        ov[i] = (struct price_override){cp[i].name, cp[i].input, cp[i].output, cp[i].cached_input,
                                        cp[i].cache_write, cp[i].reasoning};
    r->prices = prices_build(ov, cfg->prices.n, NULL); /* the schema bounds every price: none is rejected */
    xfree(ov);

    size_t cap = 0;
    const struct config_model *cm = cfg->models.items;
    for (size_t i = 0; i < cfg->models.n; i++) {
        struct model_entry *m;
        add_model(r, &cap, &m);
        m->name = xstrdup(cm[i].name);
        m->embeddings = cm[i].embeddings;
        if (cm[i].deployments.n) {
            const struct config_deployment *cd = cm[i].deployments.items;
            m->ndeps = cm[i].deployments.n;
            m->deps = xcalloc(m->ndeps, sizeof(*m->deps));
            for (size_t j = 0; j < m->ndeps; j++)
                fill_deployment(&m->deps[j], &cd[j], r, env, cfg, warnings, m->name);
        } else {
            m->ndeps = 1;
            m->deps = xcalloc(1, sizeof(*m->deps));
            fill_deployment(&m->deps[0], &cm[i].inline_dep, r, env, cfg, warnings, m->name);
        }
        for (size_t j = 0; j < m->ndeps; j++)
            m->total_weight += m->deps[j].weight;
    }

    /* The mock models and the environment's providers, unless the configuration already names them. */
    static struct config_deployment mock_chat, mock_embed;
    static bool mock_init;
    if (!mock_init) {
        memset(&mock_chat, 0, sizeof(mock_chat));
        mock_chat.provider = PROVIDER_MOCK;
        mock_chat.weight = 1;
        mock_chat.mock.chunk_words = 1;
        mock_embed = mock_chat;
        mock_init = true;
    }
    /* auto: a production deployment (ENVIRONMENT=production) does not offer a model that answers with canned text */
    bool mock_on = cfg->gateway.mock_model == CONFIG_MOCK_ON ||
                   (cfg->gateway.mock_model == CONFIG_MOCK_AUTO && strcmp(cfg->server.environment, "production") != 0);
    if (mock_on) {
        static const char *const names[] = {"mock", "mock-embedding"};
        for (int k = 0; k < 2; k++) {
            if (has_model(r, names[k]))
                continue;
            struct model_entry *m;
            add_model(r, &cap, &m);
            m->name = xstrdup(names[k]);
            m->embeddings = k == 1;
            m->automatic = true;
            m->ndeps = 1;
            m->deps = xcalloc(1, sizeof(*m->deps));
            fill_deployment(&m->deps[0], k ? &mock_embed : &mock_chat, r, env, cfg, NULL, m->name);
            m->total_weight = 1;
        }
    }
    if (cfg->gateway.auto_models) {
        for (size_t i = 0; i < ARRAY_LEN(auto_models); i++) {
            int p = auto_models[i].provider;
            bool present = p == PROVIDER_BEDROCK ? env_get(env, "AWS_ACCESS_KEY_ID") && env_get(env, "AWS_SECRET_ACCESS_KEY")
                                                 : env_get(env, default_key_env(p)) != NULL ||
                                                       (p == PROVIDER_GEMINI && env_get(env, "GOOGLE_API_KEY"));
            if (!present || has_model(r, auto_models[i].name))
                continue;
            struct config_deployment cd;
            memset(&cd, 0, sizeof(cd));
            cd.provider = p;
            cd.model = (char *)auto_models[i].name;
            cd.weight = 1;
            cd.mock.chunk_words = 1;
            struct model_entry *m;
            add_model(r, &cap, &m);
            m->name = xstrdup(auto_models[i].name);
            m->embeddings = auto_models[i].embeddings;
            m->automatic = true;
            m->ndeps = 1;
            m->deps = xcalloc(1, sizeof(*m->deps));
            fill_deployment(&m->deps[0], &cd, r, env, cfg, NULL, m->name);
            m->deps[0].mock = NULL;
            m->total_weight = 1;
        }
        /* Azure: deployments are named by the customer; AZURE_OPENAI_DEPLOYMENTS lists them ("a,b"). */
        const char *azdeps = env_get(env, "AZURE_OPENAI_DEPLOYMENTS");
        if (azdeps && env_get(env, "AZURE_OPENAI_API_KEY") && env_get(env, "AZURE_OPENAI_ENDPOINT")) {
            char *list = xstrdup(azdeps), *save = NULL;
            for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                while (*tok == ' ')
                    tok++;
                char name[300];
                snprintf(name, sizeof(name), "azure/%s", tok);
                if (!*tok || has_model(r, name))
                    continue;
                struct config_deployment cd;
                memset(&cd, 0, sizeof(cd));
                cd.provider = PROVIDER_AZURE_OPENAI;
                cd.model = tok;
                cd.weight = 1;
                struct model_entry *m;
                add_model(r, &cap, &m);
                m->name = xstrdup(name);
                m->automatic = true;
                m->ndeps = 1;
                m->deps = xcalloc(1, sizeof(*m->deps));
                fill_deployment(&m->deps[0], &cd, r, env, cfg, NULL, m->name);
                m->deps[0].mock = NULL;
                m->total_weight = 1;
            }
            xfree(list);
        }
    }
    derive_ids(r, cfg);
    for (size_t i = 0; i < r->nmodels; i++)
        model_resilience(r, &r->models[i], i < cfg->models.n ? &cm[i] : NULL, cfg);
    r->secrets = collect_secrets(r);
    cfg->ext = r;
    cfg->ext_free = free_registry_cb;
    return 0;
}

const struct registry *registry_of(const struct config *cfg)
{
    return cfg->ext;
}

const struct model_entry *registry_find(const struct registry *r, struct str name)
{
    if (r == NULL)
        return NULL;
    for (size_t i = 0; i < r->nmodels; i++)
        if (str_eq_cstr(name, r->models[i].name))
            return &r->models[i];
    return NULL;
}

void registry_free(struct registry *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nmodels; i++) {
        struct model_entry *m = &r->models[i];
        for (size_t j = 0; j < m->ndeps; j++) {
            struct deployment *d = &m->deps[j];
            xfree(d->label);
            xfree(d->model);
            xfree(d->base_url);
            if (d->api_key) {
                /* scrub the secret before returning the memory */
                volatile char *p = d->api_key;
                while (*p)
                    *p++ = 0;
            }
            xfree(d->api_key);
            xfree(d->api_key_env);
            xfree(d->api_version);
            xfree(d->region);
            xfree(d->project);
            xfree(d->aws_access_key_id);
            if (d->aws_secret_access_key) {
                volatile char *p = d->aws_secret_access_key;
                while (*p)
                    *p++ = 0;
            }
            xfree(d->aws_secret_access_key);
            xfree(d->aws_session_token);
            cc_source_put(d->creds);
            dep_state_put(d->st);
        }
        xfree(m->deps);
        xfree(m->name);
    }
    xfree(r->models);
    prices_free(r->prices);
    redact_set_free(r->secrets);
    xfree(r);
}
