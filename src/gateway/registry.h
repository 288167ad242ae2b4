/* registry.h: the model registry: public model names, the deployments behind each, and prices.
 *
 * Built from a configuration snapshot plus the environment (API keys are read from the variables the
 * configuration names, once, at load; they live only here, never in logs, errors or `config print`). A registry
 * is immutable and hangs off its configuration snapshot, so a reload swaps models and keys atomically. */
#ifndef AGENTD_GATEWAY_REGISTRY_H
#define AGENTD_GATEWAY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"
#include "gateway/gw_config.h" /* the configuration it is built from; PROVIDER_*; struct config_mock */
#include "policy/prices.h"      /* struct price, struct price_table */

struct config;
struct provider_ops;
struct redact_set;
struct cc_source;

struct dep_state; /* breaker, requests in flight, latency average: mutable, shared by workers (dep_health.h) */

struct deployment {
    const struct provider_ops *prov;
    int provider;                /* PROVIDER_* */
    char *label;                 /* the deployment id: configured, or "openai:gpt-4o-mini" (@base URL when two
                                    deployments would share it): response header, metrics, logs */
    char *model;                 /* upstream model id / Azure deployment / Bedrock model id */
    char *base_url;              /* resolved, no trailing slash */
    char *api_key;               /* resolved secret, or NULL */
    char *api_key_env;           /* where it came from, for error messages */
    char *api_version;
    char *region;
    char *aws_access_key_id, *aws_secret_access_key, *aws_session_token; /* Bedrock, static (environment) */
    struct cc_source *creds;     /* a cloud identity (cloud_creds.h) used instead of the static key, or NULL */
    char **headers;              /* extra "Name: value" */
    size_t nheaders;
    int64_t weight;
    int64_t timeout_ms;
    int64_t connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms; /* resolved (the gateway's when 0) */
    struct dep_state *st;        /* a reference (dep_state_get): shared by every listing of the same upstream */
    bool id_given;               /* label is the configured id */
    char *pending_label;         /* registry_attach's scratch */
    const struct config_mock *mock;
    const struct price *price;   /* NULL: unpriced */
    bool missing_key;            /* a key is required and none was found */
    int api;                     /* CONFIG_API_* (gw_config.h): the OpenAI API it speaks for /v1/responses */
    char *project;               /* vertex-ai: Google Cloud project (the location is in region) */
};

struct model_entry {
    char *name;
    struct deployment *deps;
    size_t ndeps;
    int64_t total_weight;
    bool embeddings;
    bool automatic;              /* discovered from the environment rather than configured */
    /* resilience (docs/resilience.md) */
    struct retry_policy {
        int64_t max_attempts, backoff_base_ms, backoff_max_ms;
        unsigned retry_on;       /* RETRY_ON_* bits (resilience.h) */
    } retry;
    int balancing;               /* BALANCE_* */
    const struct model_entry *fallbacks[8], *cw_fallbacks[8], *cp_fallbacks[8];
    size_t nfallbacks, ncw_fallbacks, ncp_fallbacks;
};

struct registry {
    struct model_entry *models;
    size_t nmodels;
    struct price_table *prices;  /* versioned built-in table + `prices:` (policy/prices.h) */
    struct redact_set *secrets;  /* every secret above, scrubbed out of upstream text (redact.h) */
};

/* Builds the registry for cfg and attaches it (cfg->ext). Warnings (missing keys) are appended, one per line. */
int registry_attach(struct config *cfg, char **environ_, struct buf *warnings);
const struct registry *registry_of(const struct config *cfg);
const struct model_entry *registry_find(const struct registry *r, struct str name);
/* Longest-prefix price lookup by model name (Bedrock region prefixes "us." etc. are ignored). */
const struct price *registry_price(const struct registry *r, const char *model);
void registry_free(struct registry *r);

#endif
