/* auth.h: who is calling. The keyring is an immutable in-memory snapshot of every key (a hash map from the
 * secret's HMAC to its record), replaced whole when the store changes: a refresh thread polls the store's
 * version every 100 ms, so a key created, changed or revoked by the CLI or the admin API takes effect within a
 * second, and the hot path never touches the store. A look-up hashes the presented secret (two SHA-256 blocks)
 * and probes the map of its thread's view of the snapshot; it writes nothing shared, so workers never contend.
 * The principal keeps that view alive until it is released (on the same thread).
 *
 * auth.mode (auth_config.c): `keys` (every gateway request needs a key) or `none` (no key needed; a presented
 * key is still checked and attributed). Left unset, it is `keys` when agentd listens beyond loopback or
 * ENVIRONMENT=production, `none` otherwise. */
#ifndef AGENTD_AUTH_H
#define AGENTD_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"
#include "policy/keys.h"

struct config;
struct keys_store_ops;
struct holder;

/* Who an exchange runs for (ex_request.who). Strings are never NULL ("" when unknown). */
struct principal {
    const struct key_record *key; /* in the snapshot; NULL for an anonymous caller under auth.mode none */
    const char *key_id, *key_name, *user, *team, *workflow;
    struct holder *holder;        /* the thread's view of the snapshot this principal keeps alive */
    char user_buf[KEY_TEXT_MAX + 1], workflow_buf[KEY_TEXT_MAX + 1];
};

enum auth_result {
    AUTH_OK,
    AUTH_NO_KEY,        /* nothing presented (401 under mode keys) */
    AUTH_BAD_KEY,       /* unknown, malformed, revoked or expired: one answer for all (401) */
    AUTH_MODEL_DENIED,  /* a valid key that may not use this model (403) */
};

/* What a request presents. secret: the key, from auth_secret_from(); user / workflow: what the caller says
 * (request `user` or metadata.user_id, the x-agentd-workflow header), used only when the key allows it. */
struct auth_input {
    struct str secret;
    struct str model;
    struct str user;
    struct str workflow;
    /* Optional: asked for the caller's user only when user is empty and the key allows attribution (so the
     * body is scanned only then). The slice must stay valid until auth_check returns. */
    struct str (*caller_user)(void *ud);
    void *ud;
    /* Optional, for the audit line of a refusal: the request's id and route. */
    const char *request_id;
    const char *route;
};

/* Why a key was refused, for agentd_auth_refused_total{reason} and the `auth refused` audit log line only: the
 * client always gets the same answer for all but model_not_allowed. */
enum auth_reason {
    AUTH_R_NO_KEY,        /* "no_key" */
    AUTH_R_MALFORMED,     /* "malformed": not an agentd key's shape, or too long */
    AUTH_R_UNKNOWN,       /* "unknown" */
    AUTH_R_REVOKED,       /* "revoked" */
    AUTH_R_EXPIRED,       /* "expired" */
    AUTH_R_MODEL_DENIED,  /* "model_not_allowed" */
    AUTH_R_ADMIN,         /* "admin_key": the admin API without or with a wrong admin key */
    AUTH_R_COUNT
};
const char *auth_reason_name(enum auth_reason r);
/* Registers agentd_auth_refused_total (once, at start-up, before workers run). */
void auth_metrics_register(void);
/* Counts a refusal and writes the audit line (`auth refused`, with reason, key_id when known, request_id, route).
 * auth_check calls it for every refusal; the admin API calls it for a bad admin key. */
void auth_refused(enum auth_reason r, const char *key_id, const char *request_id, const char *route);

/* True when s has the shape of an agentd key ("sk-agentd-..."): under auth.mode none, only such keys are
 * checked (a client's placeholder key such as "sk-none" stays anonymous). */
bool auth_looks_like_key(struct str s);

/* The key a request presents: `Authorization: Bearer K`, else `x-api-key: K` (Anthropic SDKs), else
 * `api-key: K` (Azure SDKs). Each may be absent (NULL). STR_NULL when none is present or the value is empty. */
struct str auth_secret_from(const struct str *authorization, const struct str *x_api_key, const struct str *api_key);

/* Looks the key up in the current snapshot. AUTH_OK: *out is a principal to release with principal_release();
 * anything else: *out is NULL. now: unix seconds. */
enum auth_result auth_check(const struct auth_input *in, int64_t now, const struct principal **out);
/* Releases a principal made by auth_check, on the thread that made it; does nothing for NULL or for one its
 * caller built itself (holder NULL: an internal caller's, freed by that caller). */
void principal_release(const struct principal *p);

/* ---- the keyring ---- */

/* Loads the pepper from data_dir, opens the store, loads the first snapshot and starts the refresh thread
 * (poll_ms between version checks). 0, or -1 with err when the store could not be reached: the thread keeps
 * trying, and until it succeeds every key is refused. */
int keyring_start(const char *data_dir, const struct keys_store_ops *ops, int poll_ms, struct buf *err);
/* Stops the thread and drops the snapshot (principals still held keep theirs alive). */
void keyring_stop(void);
/* Without a store (unit tests, the benchmark): the hasher's pepper, then a set of records (taken over). */
void keyring_set_pepper(const uint8_t pepper[32]);
void keyring_install(struct key_record *recs, size_t n);
/* True once keyring_start (even a failed one: then every key is refused) or keyring_install ran in this
 * process. The exchange authenticates only then, so that code driving the gateway without a daemon (unit tests
 * through a loopback sink) is not refused for want of a keyring it never set up. */
bool keyring_armed(void);
/* Bumped every time a new snapshot is published. */
uint64_t keyring_generation(void);
/* Keys in the current snapshot. */
size_t keyring_size(void);

/* ---- auth.mode ---- */

enum { AUTH_MODE_AUTO, AUTH_MODE_KEYS, AUTH_MODE_NONE };
/* keys or none for this configuration (auto resolved from server.listen and server.environment). */
int auth_mode_effective(const struct config *cfg);
/* True when host ("127.0.0.1", "::1", "localhost", "[::1]") is a loopback address. */
bool auth_host_is_loopback(const char *host);

#endif
