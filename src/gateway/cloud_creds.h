/* cloud_creds.h: short-lived cloud credentials for upstream deployments (issue 13 item 4).
 *
 * A deployment whose `auth:` names a cloud identity (or `auto` finds one in the environment) gets a credential
 * source: a kind plus its parameters, read from the environment when the registry is built. Sources are
 * process-wide and shared: two deployments (or two configuration generations across a reload) with the same kind
 * and parameters use one source, refcounted, so a reload does not fetch a new token.
 *
 * One credentials thread (cc_start) fetches every source's credentials, blocking HTTP through libcurl
 * (cc_http), never on a worker loop. It refreshes a source at min(expiry - 5 min, obtained + 80% of the
 * lifetime) (never sooner than CC_MIN_REFRESH_MS after the last fetch); after a failure it retries with
 * exponential backoff (CC_BACKOFF_MIN_MS doubling to CC_BACKOFF_MAX_MS), keeping the old credentials while they
 * are valid (a request that finds none brings the retry forward, to at most one per CC_DEMAND_RETRY_MS).
 * Workers read at request time with cc_acquire: a refcounted immutable snapshot taken under a mutex
 * (a pointer copy and an increment), released with cc_release once the request is signed. A request that finds
 * no valid credentials gets CC_PENDING (first fetch not done yet) or CC_FAILED (with the last fetch's error)
 * at once, never a wait; cc_error_set turns either into a 503 for the client.
 *
 * Adding a source kind (e.g. google_service_account, google_metadata):
 *   1. the CC_AUTH_* value and its `auth:` name exist below and in cc_auth_names (cloud_creds.c);
 *   2. write `const struct cc_kind cc_kind_xxx` in its own file (cloud_aws.c, cloud_azure.c are examples):
 *      - configure(spec, env, dep, why): reads the environment (and the deployment's configuration) into
 *        spec->arg[0..CC_NARGS) (strings the kind defines; they also identify the source for sharing).
 *        Returns 0, or 1 when the environment does not have what the kind needs (`auto` then tries the next
 *        kind; an explicit `auth:` reports why), or -1 on an error (why set);
 *      - fetch(spec, out, err): on the credentials thread, may block (cc_http has a timeout); fills out->token
 *        (bearer kinds) or out->access_key_id/secret_access_key/session_token (AWS) with malloc'd strings and
 *        out->expires_at (wall-clock seconds since the epoch; 0 = does not expire). Returns 0, or -1 with a
 *        message for the operator and the client in err (say which endpoint and what it answered; never a
 *        secret);
 *   3. list it in cc_kinds[] (cloud_creds.c) at its CC_AUTH_* index, and in `auto` order in auto_chain[] if
 *      `auto` should find it; a provider's cloud comes from cc_provider_cloud.
 * The response parsers are separate pure functions (cc_aws_parse_sts etc.) so unit tests and fuzz targets reach
 * them without a network. */
#ifndef AGENTD_CLOUD_CREDS_H
#define AGENTD_CLOUD_CREDS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct gw_error;
struct config_deployment;

#define CC_NARGS 8
#define CC_MIN_REFRESH_MS 1000
#define CC_BACKOFF_MIN_MS 1000
#define CC_BACKOFF_MAX_MS 60000
#define CC_DEMAND_RETRY_MS 2000 /* a request finding no credentials brings a failed source's retry this close */
#define CC_REFRESH_MARGIN_S 300 /* refresh at least this long before expiry ... */
#define CC_REFRESH_FRACTION 0.8 /* ... and by this fraction of the lifetime, whichever comes first */
#define CC_HTTP_TIMEOUT_MS 10000
#define CC_HTTP_MAX_BODY (256 * 1024)

/* A deployment's `auth:` (gw_config.c: the `auth` key; config_deployment.auth). */
enum cc_auth {
    CC_AUTH_AUTO, /* the provider's key if set, else the first cloud identity the environment has */
    CC_AUTH_API_KEY,
    CC_AUTH_AWS_WEB_IDENTITY,
    CC_AUTH_AWS_CONTAINER,
    CC_AUTH_AZURE_WORKLOAD_IDENTITY,
    CC_AUTH_AZURE_MANAGED_IDENTITY,
    CC_AUTH_GOOGLE_SERVICE_ACCOUNT,
    CC_AUTH_GOOGLE_METADATA,
    CC_AUTH_COUNT
};
/* Indexed by CC_AUTH_*, NULL-terminated (the allowed values of `auth:`). */
extern const char *const cc_auth_names[CC_AUTH_COUNT + 1];

enum cc_cloud { CC_CLOUD_NONE, CC_CLOUD_AWS, CC_CLOUD_AZURE, CC_CLOUD_GOOGLE };
/* The cloud of a PROVIDER_* (Bedrock: AWS, Azure OpenAI: Azure, ...), CC_CLOUD_NONE for the others. */
enum cc_cloud cc_provider_cloud(int provider);
/* The cloud a CC_AUTH_* kind belongs to (CC_CLOUD_NONE for auto and api_key). */
enum cc_cloud cc_auth_cloud(int auth);

/* What a source is: its kind and the kind's parameters (built by configure; owned strings or NULL). */
struct cc_spec {
    int auth; /* CC_AUTH_* */
    char *arg[CC_NARGS];
};

/* Credentials as fetched. Strings malloc'd (cc_creds_clear frees and wipes them). */
struct cc_creds {
    char *token;                                               /* bearer kinds */
    char *access_key_id, *secret_access_key, *session_token;   /* AWS kinds */
    int64_t expires_at;                                        /* wall seconds since the epoch; 0 = never */
};
void cc_creds_clear(struct cc_creds *c);

/* The deployment a source is configured for. */
struct cc_dep_info {
    int provider;                           /* PROVIDER_* */
    const char *region;                     /* resolved region (AWS), or NULL */
    const struct config_deployment *conf;   /* may be NULL */
    const char *credentials_file;           /* the deployment's key file (google_service_account), or NULL */
};

struct cc_kind {
    const char *name; /* = cc_auth_names[auth] */
    int (*configure)(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen);
    int (*fetch)(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen);
};

/* ---------- sources (registry side) ---------- */

struct cc_source;

/* The source a deployment uses for `auth` (CC_AUTH_*) in environment env, shared with any existing source of the
 * same kind and parameters (one more reference; cc_source_put drops it). Returns:
 *   1  and *out = NULL: no source needed (api_key, or auto found the key or no identity for this provider);
 *   0  and *out: a source (its first fetch is queued on the credentials thread if that runs);
 *   -1 with why: the kind was asked for explicitly and the environment lacks what it needs, or the kind is not
 *      built in.
 * has_key: the deployment already has a static key (auto then needs no source). */
int cc_source_get(int auth, bool has_key, char **env, const struct cc_dep_info *dep, struct cc_source **out,
                  char *why, size_t whylen);
void cc_source_put(struct cc_source *s);
/* The kind's name ("aws_web_identity"), for messages. */
const char *cc_source_kind(const struct cc_source *s);

/* ---------- request side (any thread) ---------- */

enum cc_status { CC_OK, CC_PENDING, CC_FAILED };

struct cc_snap {
    struct cc_creds c;
    atomic_int refs; /* private */
};

/* The current credentials of s: CC_OK with *out (cc_release it), or CC_PENDING / CC_FAILED with *out = NULL and
 * the reason (the last fetch's error) in why. Never blocks on a fetch. */
enum cc_status cc_acquire(struct cc_source *s, struct cc_snap **out, char *why, size_t whylen);
void cc_release(struct cc_snap *snap);
/* For /ready: true when s has valid credentials now; else false with the reason in why. Never triggers a fetch. */
bool cc_source_state(struct cc_source *s, char *why, size_t whylen);
/* The current and the previous credentials of s (those an upstream error may quote back: ex_attempt_scrub_error
 * scrubs them as it does the static keys), each with a reference (cc_release them). Returns how many (0..2). */
size_t cc_recent(struct cc_source *s, struct cc_snap *out[2]);
/* A 503 (type overloaded, code "upstream_credentials_unavailable", retryable on another deployment) for a
 * deployment whose credentials are not available: "deployment X: no aws_web_identity credentials yet/...: why". */
void cc_error_set(struct gw_error *err, const char *dep_label, const struct cc_source *s, enum cc_status st,
                  const char *why);

/* ---------- the credentials thread ---------- */

/* Starts the thread (the daemon, once; CLI commands never do, so `config check` fetches nothing). Sources made
 * before or after are fetched by it. Returns 0 or -1. */
int cc_start(void);
/* Stops and joins the thread. Sources still referenced stay readable (with what they have) until put. */
void cc_stop(void);
/* Counters for tests and /metrics-style introspection: fetches attempted / failed since start. */
void cc_stats(uint64_t *fetches, uint64_t *failures);

/* ---------- helpers for kinds ---------- */

/* A blocking HTTP request through libcurl (loaded on first use), for the credentials thread only.
 * method "GET" or "POST"; headers "Name: value" lines (NULL-terminated array, may be NULL); body for POST.
 * The response body (up to CC_HTTP_MAX_BODY) goes to resp, the status to *status. Returns 0 when an HTTP
 * response came back (any status), -1 with err set on transport failure. */
int cc_http(const char *method, const char *url, const char *const *headers, const char *body, size_t body_len,
            long timeout_ms, int *status, struct buf *resp, char *err, size_t errlen);
/* Reads a small file (a projected token) whole into out (limit 64 KiB), trailing whitespace trimmed. 0 or -1. */
int cc_read_file(const char *path, struct buf *out, char *err, size_t errlen);
/* Percent-encodes s for application/x-www-form-urlencoded and query strings (unreserved kept). */
void cc_form_encode(struct buf *out, const char *s);
/* An environment lookup in env (NULL-terminated "NAME=value"): the value, or NULL when unset or empty. */
const char *cc_env(char **env, const char *name);
/* Parses an RFC 3339 / ISO 8601 UTC time ("2026-12-04T17:20:00Z", fractional seconds allowed) to epoch seconds.
 * 0 or -1. */
int cc_parse_iso8601(const char *s, size_t n, int64_t *out);

/* ---------- built-in kinds ---------- */
extern const struct cc_kind cc_kind_aws_web_identity, cc_kind_aws_container;          /* cloud_aws.c */
extern const struct cc_kind cc_kind_azure_workload_identity, cc_kind_azure_managed_identity; /* cloud_azure.c */
extern const struct cc_kind cc_kind_google_service_account, cc_kind_google_metadata; /* cloud_google.c */

/* Response parsers (pure; unit tests and fuzz targets). 0, or -1 with err (the service's own error message when
 * the body is an error document). */
int cc_aws_parse_sts(const char *body, size_t len, struct cc_creds *out, char *err, size_t errlen);
int cc_aws_parse_container(const char *body, size_t len, struct cc_creds *out, char *err, size_t errlen);
/* Entra ID token endpoint and IMDS: {"access_token", "expires_in" | "expires_on", ...} or {"error",
 * "error_description"}. now: wall seconds, for expires_in. */
int cc_azure_parse_token(const char *body, size_t len, int64_t now, struct cc_creds *out, char *err,
                         size_t errlen);
/* One OAuth 2.0 token request (Entra ID, IMDS, Google's token_uri and metadata server all answer in the shape
 * cc_azure_parse_token reads), made with cc_http and answered into out; or -1 with err naming what ("Entra ID
 * token endpoint", "GCE metadata server", ...), the URL, the status, and the endpoint's own error or the start
 * of its body. */
int cc_oauth_token(const char *what, const char *method, const char *url, const char *const *hdrs,
                   const struct buf *form, struct cc_creds *out, char *err, size_t errlen);
/* The first 200 bytes of an answer body, printable ASCII only, for an error message (dst: 201 bytes). */
void cc_brief_body(char *dst, size_t n, const struct buf *b);

#endif
