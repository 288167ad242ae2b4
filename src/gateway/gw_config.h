/* gw_config.h: the gateway's configuration: the `gateway:` section, `models:` and `prices:`.
 *
 * The `gateway:` section's plain struct (struct config_gateway) stays in config/config.h because code in other
 * layers reads it by member name (`cfg->gateway.request_timeout_ms`); its schema, and the types of the
 * `models`/`prices` list items, live here. api/config_root.c mounts them in the root table. */
#ifndef AGENTD_GW_CONFIG_H
#define AGENTD_GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "config/config.h" /* struct config_retry */
#include "config/schema.h"
#include "gateway/provider_ids.h"
#include "gateway/providers/mock_config.h"
#include "net/upstream_types.h"

struct config;

/* One upstream target of a public model. */
struct config_deployment {
    int provider;          /* PROVIDER_* */
    char *model;           /* upstream model id, Azure deployment name, Bedrock model id or ARN */
    char *base_url;        /* "" = the provider's well-known URL */
    char *api_key_env;     /* name of the environment variable holding the key (never the key) */
    char *api_key;         /* inline key; discouraged, masked by config print */
    char *api_version;     /* Azure api-version, Anthropic anthropic-version */
    char *region;          /* Bedrock region */
    int64_t weight;
    int64_t timeout_ms;    /* per attempt; 0 = the gateway's request_timeout */
    struct cfg_strlist headers; /* extra "Name: value" headers sent upstream; secret-looking values masked */
    struct config_mock mock;
    int api;               /* CONFIG_API_*: which OpenAI API the upstream speaks for /v1/responses */
    char *id;              /* "" = derived from provider, model and (when two would share it) base URL */
    int64_t connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms; /* 0 = the gateway's */
    int auth;              /* CC_AUTH_* (gateway/cloud_creds.h): static key or a cloud identity */
    char *project, *location; /* vertex-ai: Google Cloud project and location */
    char *credentials_file;   /* vertex-ai: service-account key (default GOOGLE_APPLICATION_CREDENTIALS) */
};

/* `balancing:` of a model: how the first deployment of an attempt order is chosen. */
enum { BALANCE_WEIGHTED, BALANCE_LEAST_OUTSTANDING, BALANCE_LATENCY };

/* `api:` of a deployment: auto = OpenAI and Azure OpenAI pass /v1/responses through, others translate; chat = the
 * upstream has only Chat Completions (translate); responses = it has the Responses API too (pass through). */
enum { CONFIG_API_AUTO, CONFIG_API_CHAT, CONFIG_API_RESPONSES };

struct config_model {
    char *name;                  /* public name clients send */
    /* single-deployment shorthand: the fields of one deployment inline */
    struct config_deployment inline_dep;
    struct cfg_list deployments; /* struct config_deployment */
    bool embeddings;             /* serves /v1/embeddings (otherwise chat) */
    /* resilience (docs/resilience.md) */
    struct config_retry retries; /* only the keys given override gateway.retries: */
    unsigned retries_set;        /* bit i: retry field i was given */
    struct cfg_strlist fallbacks, context_window_fallbacks, content_policy_fallbacks; /* public model names */
    int balancing;               /* BALANCE_* */
};

struct config_price {
    char *name;                  /* upstream or public model name; longest prefix wins */
    double input;                /* USD per million input tokens */
    double output;
    double cached_input;         /* cache reads; 0 = input price */
    double cache_write;          /* cache writes; 0 = input price */
    double reasoning;            /* reasoning output tokens; 0 = output price */
};

/* The `gateway:` section; offsets relative to struct config_gateway. */
extern const struct cfg_schema gw_config_schema;
/* One item of `models:` (struct config_model) and of `prices:` (struct config_price). */
extern const struct cfg_schema gw_config_model_schema;
extern const struct cfg_schema gw_config_price_schema;

/* The upstream client's options from the configuration (gateway.upstream_client, gateway.ca_file,
 * server.max_connections): net/ takes them as a plain struct. cfg may be NULL (the defaults). */
struct up_options gw_config_up_options(const struct config *cfg);

/* Checks across the whole `models` list once every source is applied (a public name given twice). */
void gw_config_models_finish(struct cfg_ctx *ctx, const struct cfg_list *models, const char *path);

/* True when a header with this name carries a credential: the name contains key, token, auth, secret, cookie,
 * password, passwd, credential or signature, in any case (Authorization, X-Api-Key, Cookie, X-Amz-Security-Token,
 * ...). `config print` masks such values; upstream-text redaction may use the same rule. */
bool gw_config_header_is_secret(const char *name, size_t len);
/* Writes a "Name: value" header as a YAML string, the value replaced by *** when gw_config_header_is_secret(Name). */
void gw_config_header_mask(struct buf *out, const char *header);

#endif
