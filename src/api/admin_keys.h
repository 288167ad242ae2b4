/* admin_keys.h: managing virtual keys, the same operations for the CLI (`agentd keys ...`) and the admin API
 * (`/admin/keys` on the API listener, guarded by AGENTD_ADMIN_KEY). */
#ifndef AGENTD_ADMIN_KEYS_H
#define AGENTD_ADMIN_KEYS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "common/buf.h"
#include "net/http.h"
#include "policy/keys.h"

struct keys_store;
struct keys_store_ops;

enum keys_op { KEYS_OP_CREATE, KEYS_OP_LIST, KEYS_OP_SHOW, KEYS_OP_UPDATE, KEYS_OP_REVOKE };

struct keys_admin {
    const struct keys_store_ops *ops;
    struct keys_store *st;
    struct key_hasher hasher;
};

/* Opens the store and reads the pepper of data_dir. 0 or -1 with err. */
int keys_admin_open(struct keys_admin *a, const char *data_dir, struct buf *err);
void keys_admin_close(struct keys_admin *a);

/* Runs one operation (blocks on the store). Returns the HTTP status (201 create, 200, 400, 404, 500) and puts
 * the answer in *out: the key (create: with its secret under "key", shown this once), an array (list), or
 * {"error":{"message","type","param","code"}}. body: the JSON for create/update (NULL otherwise). */
int keys_admin_exec(struct keys_admin *a, enum keys_op op, const char *id, const cJSON *body, int64_t now,
                    cJSON **out);

/* The admin API's handlers (routes.c) and its set-up: reads AGENTD_ADMIN_KEY; without it the routes answer 404. */
void admin_keys_init(const char *data_dir);
void admin_keys_shutdown(void);
void admin_keys_handle(struct http_req *req);
/* The one guard of every /admin route (keys, agents, spend, deployments): true when AGENTD_ADMIN_KEY (at least
 * ADMIN_KEY_MIN characters) is set and presented as `Authorization: Bearer`, `x-api-key` or `api-key`, compared
 * as SHA-256 digests in constant time; else it has answered 404 (no usable admin key configured) or 401 (counted
 * as agentd_auth_refused_total{reason="admin_key"} and logged with route). */
#define ADMIN_KEY_MIN 16
bool admin_guard(struct http_req *req, const char *route);

#endif
