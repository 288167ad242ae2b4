/* ledger.h: the spend ledger's writer. Workers hand a finished exchange's row to ledger_enqueue() (an
 * on_settle observer): a short lock, an append to a bounded in-memory queue, never any I/O. One writer thread
 * wakes every batch interval (ledger.batch_interval, default 1 s) and appends what is queued in one transaction
 * (store/ledger.h). When the store refuses (locked, disk full), the batch is kept and retried with a back-off;
 * rows that arrive meanwhile wait in the queue, whose length is the backlog (a metric, and /ready says when the
 * writer is failing). A full queue drops the row: counted (agentd_ledger_rows_dropped_total) and logged, never a
 * wait on a worker. A crash or SIGKILL loses at most the rows of the last interval. */
#ifndef AGENTD_LEDGER_H
#define AGENTD_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "store/ledger.h"

struct budget;

struct ledger_options {
    const char *data_dir;
    const struct ledger_store_ops *ops; /* NULL: SQLite */
    int64_t batch_ms;                   /* default 1000 */
    size_t queue_max;                   /* rows; default 50000 */
};

/* Opens the store and starts the writer thread. 0, or -1 with err (the gateway then runs without a ledger). */
int ledger_start(const struct ledger_options *o, struct buf *err);
/* Writes what is queued (trying for a few seconds when the store refuses) and stops the thread. */
void ledger_stop(void);
/* Queues a row. False when the ledger is not running or the queue is full (counted). Any thread. */
bool ledger_enqueue(const struct ledger_row *r);

struct ledger_stats {
    uint64_t written, dropped, failures;
    size_t backlog;   /* rows queued or held for a retry */
    bool running, failing; /* failing: the last write was refused */
};
void ledger_get_stats(struct ledger_stats *s);

/* Rebuilds budget spend from the ledger: for every window in force at now (unix seconds), the sums per key,
 * user, team and workflow. Call before ledger_start (it opens the store on the calling thread). */
int ledger_rebuild_budgets(const char *data_dir, const struct ledger_store_ops *ops, struct budget *b, int64_t now,
                           struct buf *err);

/* Registers the ledger's metric families (once, at start-up). */
void ledger_metrics_register(void);

#endif
