/* metrics.h: counters, gauges and histograms with labels, kept per thread and summed at scrape time.
 *
 * A worker never contends with another worker to count something: each thread owns a shard, and only the owner
 * writes the shard's values (relaxed atomics, so the scraper reads whole values). The scraper locks a shard only
 * to walk its table, and the owner locks it only to insert a new series. Families are declared statically and
 * registered once at start-up, before threads exist.
 *
 *   static const char *const labels[] = {"method", "code", NULL};
 *   static struct metric_def requests = METRIC_DEF("http_server_requests_total", "Requests.", METRIC_COUNTER, labels);
 *   metrics_register(&requests);                           // once
 *   metrics_inc(&requests, (const char *[]){"GET", "200"}); // anywhere, any thread
 *
 * Names follow Prometheus conventions (base units, _total on counters) so `promtool check metrics` passes. */
#ifndef AGENTD_METRICS_H
#define AGENTD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_def {
    const char *name;
    const char *help;
    enum metric_kind kind;
    const char *const *labels; /* NULL-terminated label names, or NULL for none */
    const double *buckets;     /* histogram upper bounds, ascending, +Inf implied */
    size_t nbuckets;
    /* OpenTelemetry name and unit for OTLP export (NULL: the Prometheus name, no unit) */
    const char *otel_name;
    const char *unit;
    const char *const *otel_labels; /* attribute names for OTLP, parallel to labels (NULL: the label names) */
    /* /metrics shows histogram bounds and sums divided by this (0: as recorded): a family recorded in the
     * OpenTelemetry unit (ms) is exposed in Prometheus' base unit (seconds) */
    double prom_div;
    bool exemplars; /* histogram: keep the last traced observation per bucket (metrics_series_observe_ex) */
    /* filled by metrics_register */
    int id;
    size_t nlabels;
};

#define METRIC_DEF(n, h, k, l) {.name = (n), .help = (h), .kind = (k), .labels = (l)}
#define METRIC_HISTOGRAM_DEF(n, h, l, b)                                                                        \
    {.name = (n), .help = (h), .kind = METRIC_HISTOGRAM, .labels = (l), .buckets = (b),                            \
     .nbuckets = sizeof(b) / sizeof((b)[0])}

#define METRICS_MAX_FAMILIES 256
#define METRICS_MAX_LABELS 8
/* Series one family may hold in one shard; past it new label sets fold into label values "other". */
#define METRICS_MAX_SERIES_PER_FAMILY 2000

struct metric_series;

void metrics_register(struct metric_def *def);
/* The calling thread's series for these label values (created on first use). Cache the pointer when the labels
 * are fixed; it stays valid until metrics_shutdown. */
struct metric_series *metrics_series(struct metric_def *def, const char *const *label_values);
/* Changes when metrics_shutdown frees the series: a caller that keeps series pointers across calls (a per-thread
 * cache of the series its hot path uses) checks it before using them. */
uint64_t metrics_epoch(void);
void metrics_series_add(struct metric_series *s, double v);
void metrics_series_observe(struct metric_series *s, double v);
/* An observation that belongs to a sampled trace: on a family with .exemplars it also becomes its bucket's
 * exemplar (the latest wins), shown on /metrics in the OpenMetrics format and sent over OTLP. */
void metrics_series_observe_ex(struct metric_series *s, double v, const uint8_t trace_id[16],
                               const uint8_t span_id[8]);

/* A hot path's per-thread memo of the series it uses for one set of label strings. A worker sees the same model,
 * deployment, route and status request after request, so comparing those few strings once replaces a lookup per
 * series (metrics_series compares every label of its candidates). Declare it _Thread_local, call
 * metrics_memo_use with the strings (and a number, such as a status) that decide every label the path uses, then
 * get each series by its index with metrics_memo_series. A different key, or metrics_shutdown, starts it over. */
#define METRICS_MEMO_KEYS 6
#define METRICS_MEMO_SERIES 12
struct metrics_memo {
    uint64_t epoch; /* metrics_epoch() when filled; 0: empty */
    int tag;
    unsigned nkeys;
    uint16_t off[METRICS_MEMO_KEYS]; /* where each key string starts in key[] */
    char key[512];
    struct metric_series *s[METRICS_MEMO_SERIES];
};
/* True when m now stands for (tag, keys): kept from the last call, or emptied and set to them. False when they
 * do not fit (n > METRICS_MEMO_KEYS or too long): m is empty and metrics_memo_series looks each series up. */
bool metrics_memo_use(struct metrics_memo *m, int tag, const char *const *keys, unsigned n);
static inline struct metric_series *metrics_memo_series(struct metrics_memo *m, bool ok, unsigned i,
                                                        struct metric_def *def, const char *const *label_values)
{
    if (!ok || i >= METRICS_MEMO_SERIES)
        return metrics_series(def, label_values);
    if (!m->s[i])
        m->s[i] = metrics_series(def, label_values);
    return m->s[i];
}

struct metric_exemplar {
    double value;
    uint64_t time_ns; /* 0: the bucket has none */
    uint8_t trace_id[16], span_id[8];
};

static inline void metrics_add(struct metric_def *def, const char *const *label_values, double v)
{
    metrics_series_add(metrics_series(def, label_values), v);
}
static inline void metrics_inc(struct metric_def *def, const char *const *label_values)
{
    metrics_add(def, label_values, 1.0);
}
static inline void metrics_observe(struct metric_def *def, const char *const *label_values, double v)
{
    metrics_series_observe(metrics_series(def, label_values), v);
}

/* Called at scrape time to append lines for values computed on demand (process stats, config info). It must
 * write complete families (# HELP, # TYPE, samples). */
typedef void metrics_collector_fn(struct buf *out, void *ud);
void metrics_add_collector(metrics_collector_fn *fn, void *ud);

/* Prometheus text exposition format 0.0.4. */
void metrics_render(struct buf *out);
/* OpenMetrics 1.0 text (application/openmetrics-text; version=1.0.0): the same families, counters' TYPE without
 * the _total suffix, histogram buckets with their exemplars, and the closing # EOF. */
void metrics_render_openmetrics(struct buf *out);
/* Sum of a counter or gauge family over all shards and label sets matching `label_values` (NULL entries match
 * anything). For tests and for the ops endpoints. */
double metrics_sum(const struct metric_def *def, const char *const *label_values);

/* Writes a label value with the escapes the text format needs. */
void metrics_append_label_value(struct buf *out, const char *v);

/* One merged series of a family, as metrics_walk hands it over (valid during the call only). */
struct metric_point {
    const char *const *values; /* label values, def->nlabels of them */
    double value;              /* counter/gauge value, histogram sum */
    uint64_t count;            /* histogram count */
    const uint64_t *buckets;   /* histogram per-bucket (not cumulative) counts, nbuckets + 1 */
    const struct metric_exemplar *exemplars; /* nbuckets + 1 (time_ns 0: none), or NULL */
};
typedef void metrics_walk_fn(const struct metric_def *def, const struct metric_point *p, void *ud);
/* Calls fn for every series of every family (merged over threads), family by family (OTLP export). */
void metrics_walk(metrics_walk_fn *fn, void *ud);
/* Writes a bucket bound exactly (shortest round-trip text). */
void metrics_format_bound(char *dst, size_t cap, double v);

/* Frees every shard and forgets the families (at exit). */
void metrics_shutdown(void);

/* Standard process_* metrics (CPU, RSS, fds, start time) as a collector. */
void metrics_register_process_collector(void);

#endif
