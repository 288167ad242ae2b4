/* ledger.h: the spend ledger's storage, one row per exchange (DESIGN §4: an ops struct, so PostgreSQL can
 * follow). The embedded backend is SQLite in WAL mode (ledger_sqlite.c, table `ledger_exchanges` in
 * DATA_DIR/ledger.db; evaluation scores in the side table `ledger_evaluations`, added by the schema's version 1:
 * PRAGMA user_version, so a ledger.db written before it opens and is migrated in place). Nothing here runs on a worker loop: the writer thread (policy/ledger.c) appends batches,
 * reports run on the CLI or the libuv thread pool. */
#ifndef AGENTD_LEDGER_STORE_H
#define AGENTD_LEDGER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define LEDGER_TEXT 128

struct ledger_row {
    int64_t ts_ms;                 /* wall clock, end of the exchange */
    char request_id[72];
    char key_id[40];
    char user[LEDGER_TEXT], team[LEDGER_TEXT], workflow[LEDGER_TEXT];
    char model[LEDGER_TEXT], deployment[LEDGER_TEXT], provider[32];
    int64_t input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens;
    int64_t cost_nusd;             /* nano-USD (exact; cost_usd is derived) */
    char price_version[64];
    int status;
    bool incomplete;               /* usage estimated or counted, not reported by the provider */
    bool priced;
    int attempts;
    int64_t latency_us, ttft_us;   /* ttft 0: none */
    int64_t saved_nusd;            /* a response-cache hit: what the replayed answer cost when it was stored (0: none) */
    /* An evaluation row (telemetry/eval.h): a score that arrived after the exchange's row, for the exchange with
     * this request_id. It goes to the side table ledger_evaluations (request_id, ts_ms, model, workflow, name,
     * score, label); the spend columns above are not read. */
    bool evaluation;
    char eval_name[32], eval_label[32];
    double eval_score;
};

/* One stored evaluation (ops->evaluations). */
struct ledger_eval {
    char request_id[72], name[32], label[32];
    double score;
    int64_t ts_ms;
};

enum ledger_group { LG_KEY, LG_USER, LG_TEAM, LG_WORKFLOW, LG_MODEL, LG_DAY, LG_COUNT };
/* "key", "user", "team", "workflow", "model", "day" and back (-1: none). */
const char *ledger_group_name(enum ledger_group g);
int ledger_group_parse(const char *s);

struct ledger_sum {
    char group[LEDGER_TEXT];
    int64_t requests, input_tokens, output_tokens, incomplete;
    int64_t cost_nusd;
    int64_t saved_nusd; /* what response-cache hits saved */
};

struct ledger_store;
struct ledger_store_ops {
    const char *name;
    /* Opens (creating the schema unless readonly). NULL with err on failure. */
    struct ledger_store *(*open)(const char *data_dir, bool readonly, struct buf *err);
    /* Appends rows in one transaction: 0, or -1 (busy, locked, full: the caller keeps them and retries). */
    int (*append)(struct ledger_store *s, const struct ledger_row *rows, size_t n, struct buf *err);
    /* Sums grouped by g for rows with ts_ms >= since_ms, largest cost first. *out is xmalloc'd (xfree it). */
    int (*report)(struct ledger_store *s, enum ledger_group g, int64_t since_ms, struct ledger_sum **out,
                  size_t *n, struct buf *err);
    /* The evaluations stored for one request id (all when request_id is NULL), oldest first; *out is xmalloc'd.
     * Optional (NULL: the backend keeps none). */
    int (*evaluations)(struct ledger_store *s, const char *request_id, struct ledger_eval **out, size_t *n,
                       struct buf *err);
    void (*close)(struct ledger_store *s);
};

extern const struct ledger_store_ops ledger_sqlite_ops;
extern const struct ledger_store_ops ledger_pg_ops;

#endif
