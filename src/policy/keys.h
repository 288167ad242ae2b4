/* keys.h: virtual keys (issue 8 item 1). A key record is plain data: who owns the key, what it may call, until
 * when, and the budget and rate-limit settings that the budget module reads (it only reads them: 0 means "no
 * limit" for every limit field). The secret itself (`sk-agentd-...`) is shown once, at creation, and never stored:
 * only its HMAC-SHA256 under a server-side pepper (a file in the data dir, mode 0600, created on first use).
 *
 * This module knows no storage and no HTTP: store/keys_store.h keeps records, policy/auth.h holds the in-memory
 * snapshot the hot path reads, api/ and the CLI turn JSON or flags into records through key_apply_json(). */
#ifndef AGENTD_KEYS_H
#define AGENTD_KEYS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define KEY_HASH_LEN 32
#define KEY_ID_MAX 32           /* "key_" + 16 hex digits, NUL included with room to spare */
#define KEY_SECRET_PREFIX "sk-agentd-"
#define KEY_SECRET_MAX 128      /* a presented secret longer than this is refused without hashing */
#define KEY_TEXT_MAX 256        /* name, user, team, tag keys and values, model names */
#define KEY_MAX_TAGS 32
#define KEY_MAX_MODELS 64
#define KEY_MAX_MCP_TOOLS 64    /* entries of mcp_tools and of mcp_deny */
#define KEY_MCP_TOOL_MAX 128    /* one entry: a tool name as /mcp lists it, or a prefix ending in '*' */

enum key_window { KEY_WINDOW_TOTAL, KEY_WINDOW_DAY, KEY_WINDOW_WEEK, KEY_WINDOW_MONTH };
extern const char *const key_window_names[]; /* "total", "day", "week", "month" */

struct key_tag {
    char *k, *v;
};

struct key_record {
    char id[KEY_ID_MAX];          /* "key_" + 16 lower-case hex digits */
    char *name;                   /* required */
    char *user, *team;            /* "" when unset */
    struct key_tag *tags;         /* e.g. workflow=triage */
    size_t ntags;
    char **models;                /* allowed public model names; none: every model */
    size_t nmodels;
    char **mcp_tools;             /* /mcp tools this key may list and call (a name, or a prefix ending in '*',
                                   * e.g. "files__*"); none: every tool */
    size_t nmcp_tools;
    char **mcp_deny;              /* /mcp tools this key may not see (same forms); wins over mcp_tools */
    size_t nmcp_deny;
    int64_t expires_at;           /* unix seconds; 0: never */
    /* budgets and rate limits, read by the budget module; 0: no limit */
    double budget_usd;
    enum key_window budget_window;
    int64_t budget_tokens;
    int64_t rpm, tpm;
    int64_t max_concurrent;       /* LLM requests of this key in flight at once; the rest wait in the key's own
                                   * FIFO (gateway/admission.h, adm_key_get); 0: no limit */
    bool caller_attribution;      /* the caller may set user and workflow (request `user`, metadata.user_id,
                                   * x-agentd-workflow); otherwise the key's own values stand */
    int64_t created_at;           /* unix seconds */
    int64_t revoked_at;           /* 0: active */
    uint8_t hash[KEY_HASH_LEN];   /* HMAC-SHA256(pepper, secret) */
    char hint[24];                /* the secret's first characters, for lists ("sk-agentd-AbC1...") */
};

void key_record_free(struct key_record *r);     /* frees what r owns, zeroes r */
void key_record_copy(struct key_record *dst, const struct key_record *src);
/* A tag's value, or NULL. */
const char *key_tag(const struct key_record *r, const char *k);

/* ---- secrets and hashing ---- */

/* Reads the pepper from DATA_DIR/keys.pepper, creating it (32 random bytes, mode 0600) when absent. A file
 * readable by others or of the wrong size is refused. 0 or -1 with err. */
int key_pepper_load(const char *data_dir, uint8_t pepper[32], struct buf *err);

/* HMAC-SHA256 with the pepper's inner and outer states computed once, so that hashing a presented secret costs
 * two SHA-256 blocks. */
struct key_hasher {
    uint8_t inner[112], outer[112]; /* opaque SHA-256 states */
};
void key_hasher_init(struct key_hasher *h, const uint8_t pepper[32]);
void key_hash(const struct key_hasher *h, const char *secret, size_t len, uint8_t out[KEY_HASH_LEN]);
/* Constant-time equality of two hashes. */
bool key_hash_eq(const uint8_t a[KEY_HASH_LEN], const uint8_t b[KEY_HASH_LEN]);

/* A new secret "sk-agentd-" + 43 URL-safe base64 characters (32 random bytes) and a new id. -1 when the system
 * has no randomness to give. */
int key_secret_new(char *out, size_t outsz);
int key_id_new(char out[KEY_ID_MAX]);
/* Fills r->hash and r->hint for a new secret. */
void key_set_secret(struct key_record *r, const struct key_hasher *h, const char *secret);

/* ---- policy ---- */

bool key_expired(const struct key_record *r, int64_t now);
bool key_active(const struct key_record *r, int64_t now); /* not revoked, not expired */
bool key_model_allowed(const struct key_record *r, const char *model, size_t len);
/* True when the /mcp tool `name` is visible to the key: on its mcp_tools (or that list is empty) and not on its
 * mcp_deny. r NULL (an anonymous caller under auth.mode none): every tool. */
bool key_mcp_tool_allowed(const struct key_record *r, const char *name);

/* ---- JSON (admin API, CLI, store) ---- */

/* "30d", "12h", "90m", "45s", "2w" -> seconds (> 0). -1 on anything else. */
int64_t key_parse_duration(const char *s);

/* Applies the fields of a JSON object to r: name, user, team, tags (object of string values), models (array of
 * strings, or a "a,b" string), expires_at (unix seconds, 0 = never) or expires_in ("30d"), budget_usd,
 * budget_window, budget_tokens, rpm, tpm, max_concurrent, caller_attribution, mcp_tools and mcp_deny (arrays of
 * tool names or "prefix*" patterns, or a "a,b" string; null: none). Unknown fields, wrong types and out-of-range values
 * are refused: -1, with err naming the field, and r unchanged. create: name is required. */
int key_apply_json(struct key_record *r, const cJSON *obj, bool create, int64_t now, char *err, size_t errsz);
/* The record as a JSON object (never the hash). */
cJSON *key_to_json(const struct key_record *r, int64_t now);

#endif
