/* keys_store.h: where key records live (DESIGN §4). An ops struct, so that code above it never names the
 * database: keys_store_sqlite is the embedded default (SQLite, WAL, DATA_DIR/agentd.db, table keys_records);
 * PostgreSQL can follow with the same ops.
 *
 * A handle is used by one thread at a time. Every call may block on disk: never call one on a worker loop (the
 * admin API runs them on the libuv thread pool, the key snapshot on its own refresh thread). */
#ifndef AGENTD_KEYS_STORE_H
#define AGENTD_KEYS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "policy/keys.h"

struct keys_store;

struct keys_store_ops {
    const char *name;
    /* Opens (creating the file and the table when needed). NULL with err. */
    struct keys_store *(*open)(const char *data_dir, struct buf *err);
    void (*close)(struct keys_store *s);
    /* 0, or -1 with err (a duplicate id is an error). */
    int (*insert)(struct keys_store *s, const struct key_record *r, struct buf *err);
    /* Replaces the stored record with r's id: 0, 1 when there is none, -1 with err. */
    int (*update)(struct keys_store *s, const struct key_record *r, struct buf *err);
    /* 0 and *out filled (key_record_free it), 1 when there is none, -1 with err. */
    int (*get)(struct keys_store *s, const char *id, struct key_record *out, struct buf *err);
    /* Every record, oldest first: *out is an array of *n records (keys_records_free). 0 or -1 with err. */
    int (*list)(struct keys_store *s, struct key_record **out, size_t *n, struct buf *err);
    /* A number that changes whenever any connection (this process or another) has changed the records since
     * the last call on this handle's view; cheap enough to poll every 250 ms. 0 or -1. */
    int (*version)(struct keys_store *s, uint64_t *v);
    /* The HMAC pepper of key secrets when the store keeps it (created on first use, the same for every process
     * sharing the store): 0, or -1 with err. NULL: the pepper is the data dir's keys.pepper file. */
    int (*pepper)(struct keys_store *s, uint8_t out[32], struct buf *err);
};

extern const struct keys_store_ops keys_store_sqlite;
extern const struct keys_store_ops keys_store_pg;

void keys_records_free(struct key_record *v, size_t n);

#endif
