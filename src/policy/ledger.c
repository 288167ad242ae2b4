#include "policy/ledger.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "policy/budget.h"
#include "store/store_config.h"
#include "telemetry/metrics.h"

static struct metric_def m_written = METRIC_DEF("agentd_ledger_rows_written_total",
                                                "Spend ledger rows written to the store.", METRIC_COUNTER, NULL);
static struct metric_def m_dropped =
    METRIC_DEF("agentd_ledger_rows_dropped_total",
               "Spend ledger rows dropped because the writer's queue was full (ledger.queue_max).", METRIC_COUNTER,
               NULL);
static struct metric_def m_failures = METRIC_DEF(
    "agentd_ledger_write_failures_total", "Batches the ledger store refused (locked, full); retried.", METRIC_COUNTER,
    NULL);

/* The queue holds rows packed: the numbers, then the strings back to back without their NULs, their lengths in
 * len[]. A typical row is ~200 bytes instead of struct ledger_row's 1 KB of fixed arrays, so a worker writes 3
 * or 4 fresh cache lines into the queue instead of 16 (that copy, into memory no one had touched since the last
 * batch, was the ledger's largest cost on the worker: issue 16 item 8), and a full queue holds 5x less memory.
 * The writer unpacks a batch into struct ledger_row for the store. */
enum {
    S_REQUEST_ID,
    S_KEY_ID,
    S_USER,
    S_TEAM,
    S_WORKFLOW,
    S_MODEL,
    S_DEPLOYMENT,
    S_PROVIDER,
    S_PRICE_VERSION,
    S_EVAL_NAME,
    S_EVAL_LABEL,
    S_COUNT
};
#define ROW_STR(f) {offsetof(struct ledger_row, f), sizeof(((struct ledger_row *)0)->f)}
static const struct {
    size_t off, cap;
} row_strs[S_COUNT] = {ROW_STR(request_id), ROW_STR(key_id),   ROW_STR(user),       ROW_STR(team),
                       ROW_STR(workflow),   ROW_STR(model),    ROW_STR(deployment), ROW_STR(provider),
                       ROW_STR(price_version), ROW_STR(eval_name), ROW_STR(eval_label)};

struct packed {
    uint32_t size; /* of the record: this header and its strings, rounded up to 8 */
    int32_t status, attempts;
    bool incomplete, priced, evaluation;
    uint8_t len[S_COUNT];
    int64_t ts_ms, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nusd;
    int64_t latency_us, ttft_us, saved_nusd;
    double eval_score;
    /* the strings follow */
};

#if UINTPTR_MAX == 0xffffffffffffffffu
/* A field added to struct ledger_row must be packed and unpacked here too (and this size updated). */
_Static_assert(sizeof(struct ledger_row) == 1024, "struct ledger_row changed: update pack() and unpack()");
#endif

/* The packed size of r; its strings' lengths in len. */
static size_t packed_size(const struct ledger_row *r, uint8_t len[S_COUNT])
{
    size_t n = sizeof(struct packed);
    for (int i = 0; i < S_COUNT; i++) {
        len[i] = (uint8_t)strnlen((const char *)r + row_strs[i].off, row_strs[i].cap - 1);
        n += len[i];
    }
    return (n + 7) & ~(size_t)7;
}

static void pack(unsigned char *at, size_t size, const uint8_t len[S_COUNT], const struct ledger_row *r)
{
    struct packed *p = (struct packed *)(void *)at;
    *p = (struct packed){
        .size = (uint32_t)size,
        .status = r->status,
        .attempts = r->attempts,
        .incomplete = r->incomplete,
        .priced = r->priced,
        .evaluation = r->evaluation,
        .ts_ms = r->ts_ms,
        .input_tokens = r->input_tokens,
        .cached_tokens = r->cached_tokens,
        .cache_write_tokens = r->cache_write_tokens,
        .output_tokens = r->output_tokens,
        .reasoning_tokens = r->reasoning_tokens,
        .cost_nusd = r->cost_nusd,
        .latency_us = r->latency_us,
        .ttft_us = r->ttft_us,
        .saved_nusd = r->saved_nusd,
        .eval_score = r->eval_score,
    };
    memcpy(p->len, len, sizeof(p->len));
    unsigned char *s = at + sizeof(*p);
    for (int i = 0; i < S_COUNT; i++) {
        memcpy(s, (const char *)r + row_strs[i].off, len[i]);
        s += len[i];
    }
}

/* Returns the next record's offset. Writes only the row's fields and each string's NUL: the rest of r's arrays is
 * left as it was (the store reads each string up to its NUL). */
static size_t unpack(const unsigned char *at, struct ledger_row *r)
{
    const struct packed *p = (const struct packed *)(const void *)at;
    r->ts_ms = p->ts_ms;
    r->input_tokens = p->input_tokens;
    r->cached_tokens = p->cached_tokens;
    r->cache_write_tokens = p->cache_write_tokens;
    r->output_tokens = p->output_tokens;
    r->reasoning_tokens = p->reasoning_tokens;
    r->cost_nusd = p->cost_nusd;
    r->status = p->status;
    r->incomplete = p->incomplete;
    r->priced = p->priced;
    r->attempts = p->attempts;
    r->latency_us = p->latency_us;
    r->ttft_us = p->ttft_us;
    r->saved_nusd = p->saved_nusd;
    r->evaluation = p->evaluation;
    r->eval_score = p->eval_score;
    const unsigned char *s = at + sizeof(*p);
    for (int i = 0; i < S_COUNT; i++) {
        char *d = (char *)r + row_strs[i].off;
        memcpy(d, s, p->len[i]);
        d[p->len[i]] = '\0';
        s += p->len[i];
    }
    return p->size;
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stopping;
    unsigned char *q;     /* rows queued by workers, packed */
    size_t len, cap;      /* bytes */
    size_t n, max;        /* rows */
    size_t held;          /* rows the writer holds (being written or waiting for a retry) */
    int64_t batch_ms;
    const struct ledger_store_ops *ops;
    struct ledger_store *store;
    _Atomic uint64_t written, dropped, failures;
    _Atomic bool failing;
} L = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void collect_backlog(struct buf *out, void *ud)
{
    (void)ud;
    struct ledger_stats s;
    ledger_get_stats(&s);
    buf_printf(out,
               "# HELP agentd_ledger_backlog_rows Spend ledger rows queued or waiting for a retry.\n"
               "# TYPE agentd_ledger_backlog_rows gauge\nagentd_ledger_backlog_rows %zu\n"
               "# HELP agentd_ledger_failing 1 while the ledger store refuses writes.\n"
               "# TYPE agentd_ledger_failing gauge\nagentd_ledger_failing %d\n",
               s.backlog, s.failing ? 1 : 0);
}

void ledger_metrics_register(void)
{
    metrics_register(&m_written);
    metrics_register(&m_dropped);
    metrics_register(&m_failures);
    metrics_add_collector(collect_backlog, NULL);
}

bool ledger_enqueue(const struct ledger_row *r)
{
    uint8_t len[S_COUNT];
    size_t size = packed_size(r, len);
    pthread_mutex_lock(&L.mu);
    if (!L.running || L.n >= L.max) {
        bool running = L.running;
        pthread_mutex_unlock(&L.mu);
        if (running) {
            uint64_t d = atomic_fetch_add(&L.dropped, 1);
            metrics_inc(&m_dropped, NULL);
            if ((d & (d + 1)) == 0) /* 1st, 2nd, 4th, 8th... drop */
                log_warn("spend ledger queue full (ledger.queue_max): %llu rows dropped so far",
                         (unsigned long long)d + 1);
        }
        return false;
    }
    if (L.cap - L.len < size) {
        size_t cap = L.cap ? L.cap * 2 : 64 * 1024;
        while (cap - L.len < size)
            cap *= 2;
        L.q = xrealloc(L.q, cap);
        L.cap = cap;
    }
    pack(L.q + L.len, size, len, r);
    L.len += size;
    L.n++;
    pthread_mutex_unlock(&L.mu);
    return true;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void *writer(void *arg)
{
    (void)arg;
    unsigned char *packed = NULL; /* the queue buffer the workers are not using */
    size_t packed_cap = 0;
    struct ledger_row *batch = NULL; /* the rows being written, unpacked */
    size_t nb = 0, capb = 0;
    int64_t backoff = 0;
    int stop_tries = 0;
    pthread_mutex_lock(&L.mu);
    for (;;) {
        if (!L.stopping) {
            struct timespec ts;
            deadline_in(&ts, backoff ? backoff : L.batch_ms);
            while (!L.stopping && pthread_cond_timedwait(&L.cv, &L.mu, &ts) != ETIMEDOUT) {
            }
        }
        size_t take = 0;
        if (nb == 0 && L.n > 0) { /* take the queue (swap buffers: workers go on appending to the other) */
            unsigned char *t = packed;
            size_t tc = packed_cap;
            packed = L.q;
            packed_cap = L.cap;
            take = L.n;
            L.q = t;
            L.cap = tc;
            L.n = L.len = 0;
        }
        L.held = nb + take;
        bool stopping = L.stopping;
        pthread_mutex_unlock(&L.mu);
        if (take > 0) { /* unpacked outside the lock */
            if (take > capb) {
                xfree(batch);
                capb = take > 2 * capb ? take : 2 * capb;
                batch = xcalloc(capb, sizeof(*batch)); /* zeroed: the bytes after each string are defined */
            }
            size_t off = 0;
            for (size_t i = 0; i < take; i++)
                off += unpack(packed + off, &batch[i]);
            nb = take;
        }
        if (nb > 0) {
            struct buf err = BUF_INIT(512);
            if (L.ops->append(L.store, batch, nb, &err) == 0) {
                atomic_fetch_add(&L.written, nb);
                metrics_add(&m_written, NULL, (double)nb);
                if (atomic_exchange(&L.failing, false))
                    log_info("spend ledger writes again");
                nb = 0;
                backoff = 0;
            } else {
                atomic_fetch_add(&L.failures, 1);
                metrics_inc(&m_failures, NULL);
                if (!atomic_exchange(&L.failing, true))
                    log_warn("spend ledger write refused (%s): %zu rows kept, retrying", err.data ? err.data : "?",
                             nb);
                backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 50;
            }
            buf_free(&err);
        }
        pthread_mutex_lock(&L.mu);
        L.held = nb;
        if (stopping && (L.n == 0 && nb == 0)) 
            break;
        if (stopping && nb > 0 && ++stop_tries > 50) {
            log_warn("spend ledger: %zu rows could not be written at exit", nb + L.n);
            break;
        }
    }
    L.held = 0;
    pthread_mutex_unlock(&L.mu);
    xfree(batch);
    xfree(packed);
    return NULL;
}

int ledger_start(const struct ledger_options *o, struct buf *err)
{
    const struct ledger_store_ops *ops = o->ops ? o->ops : store_ledger_ops();
    struct ledger_store *s = ops->open(o->data_dir, false, err);
    if (s == NULL)
        return -1;
    pthread_mutex_lock(&L.mu);
    L.ops = ops;
    L.store = s;
    L.batch_ms = o->batch_ms > 0 ? o->batch_ms : 1000;
    L.max = o->queue_max > 0 ? o->queue_max : 50000;
    L.stopping = false;
    L.running = true;
    pthread_mutex_unlock(&L.mu);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&L.cv);
    pthread_cond_init(&L.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&L.thread, NULL, writer, NULL) != 0) {
        L.running = false;
        ops->close(s);
        L.store = NULL;
        buf_printf(err, "cannot start the ledger writer thread");
        return -1;
    }
    return 0;
}

void ledger_stop(void)
{
    pthread_mutex_lock(&L.mu);
    if (!L.running) {
        pthread_mutex_unlock(&L.mu);
        return;
    }
    L.stopping = true;
    pthread_cond_signal(&L.cv);
    pthread_mutex_unlock(&L.mu);
    pthread_join(L.thread, NULL);
    pthread_mutex_lock(&L.mu);
    L.running = false;
    L.ops->close(L.store);
    L.store = NULL;
    xfree(L.q);
    L.q = NULL;
    L.n = L.len = L.cap = 0;
    pthread_mutex_unlock(&L.mu);
}

void ledger_get_stats(struct ledger_stats *s)
{
    pthread_mutex_lock(&L.mu);
    s->backlog = L.n + L.held;
    s->running = L.running;
    pthread_mutex_unlock(&L.mu);
    s->written = atomic_load(&L.written);
    s->dropped = atomic_load(&L.dropped);
    s->failures = atomic_load(&L.failures);
    s->failing = atomic_load(&L.failing);
}

int ledger_rebuild_budgets(const char *data_dir, const struct ledger_store_ops *ops, struct budget *b, int64_t now,
                           struct buf *err)
{
    ops = ops ? ops : store_ledger_ops();
    struct ledger_store *s = ops->open(data_dir, false, err);
    if (s == NULL)
        return -1;
    static const enum ledger_group groups[] = {LG_KEY, LG_USER, LG_TEAM, LG_WORKFLOW};
    static const enum budget_scope scopes[] = {BUDGET_KEY, BUDGET_USER, BUDGET_TEAM, BUDGET_WORKFLOW};
    int rc = 0;
    for (int w = 0; w < BUDGET_WINDOWS && rc == 0; w++) {
        int64_t start = budget_window_start((enum budget_window)w, now);
        for (int g = 0; g < 4 && rc == 0; g++) {
            struct ledger_sum *rows = NULL;
            size_t n = 0;
            rc = ops->report(s, groups[g], start * 1000, &rows, &n, err);
            for (size_t i = 0; i < n; i++)
                if (rows[i].group[0])
                    budget_seed(b, scopes[g], rows[i].group, (enum budget_window)w, start, rows[i].cost_nusd,
                                rows[i].input_tokens + rows[i].output_tokens, now);
            xfree(rows);
        }
    }
    ops->close(s);
    return rc;
}
