#include "telemetry/metrics.h"

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/str.h"
#include "common/timeutil.h"

struct metric_series {
    const struct metric_def *def;
    char *key;      /* label values joined by '\x1f'; "" for no labels */
    char **values;  /* label values */
    uint64_t hash;
    _Atomic uint64_t value_bits; /* counter/gauge value (double bits), histogram sum */
    _Atomic uint64_t count;      /* histogram count */
    _Atomic uint64_t *buckets;   /* histogram per-bucket (non-cumulative) counts, nbuckets + 1 */
    struct ex_slot *ex;          /* def->exemplars: one per bucket, or NULL */
};

/* One exemplar, written by the owner thread only and read by the scraper under a sequence lock (odd: being
 * written). The words are relaxed atomics so that a torn read is detected, never undefined. */
struct ex_slot {
    _Atomic uint32_t seq;
    _Atomic uint64_t w[5]; /* value bits, time_ns, trace id (2 words), span id */
};

/* The last few series each metric family used on this thread. A worker sees the same few label sets request after
 * request (its models, deployments, statuses), so comparing the label values of these few, which stops at the first
 * differing byte, is cheaper than hashing every value for the table lookup. */
#define SERIES_HINT_WAYS 4
struct series_hints {
    struct metric_series *m[SERIES_HINT_WAYS];
    unsigned next; /* the way to replace */
};

struct shard {
    pthread_mutex_t lock;     /* held by the owner to insert, by the scraper to read the table */
    struct metric_series **slots;
    size_t cap, used;
    size_t per_family[METRICS_MAX_FAMILIES];
    struct series_hints hints[METRICS_MAX_FAMILIES]; /* by family id; owner thread only */
    struct shard *next;
};

static struct metric_def *families[METRICS_MAX_FAMILIES];
static int nfamilies;
static pthread_mutex_t shards_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shard *shards;
static _Thread_local struct shard *tls_shard;
static _Atomic uint64_t epoch = 1; /* bumped by metrics_shutdown */

struct collector {
    metrics_collector_fn *fn;
    void *ud;
};
static struct collector collectors[32];
static int ncollectors;

void metrics_register(struct metric_def *def)
{
    for (int i = 0; i < nfamilies; i++)
        if (families[i] == def)
            return;
    if (nfamilies >= METRICS_MAX_FAMILIES)
        abort();
    def->nlabels = 0;
    while (def->labels && def->labels[def->nlabels])
        def->nlabels++;
    def->id = nfamilies;
    families[nfamilies++] = def;
}

void metrics_add_collector(metrics_collector_fn *fn, void *ud)
{
    if (ncollectors < (int)(sizeof(collectors) / sizeof(collectors[0])))
        collectors[ncollectors++] = (struct collector){fn, ud};
}

static struct shard *my_shard(void)
{
    if (tls_shard)
        return tls_shard;
    struct shard *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->cap = 64;
    s->slots = xcalloc(s->cap, sizeof(*s->slots));
    pthread_mutex_lock(&shards_lock);
    s->next = shards;
    shards = s;
    pthread_mutex_unlock(&shards_lock);
    tls_shard = s;
    return s;
}

static uint64_t hash_bytes(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void build_key(const struct metric_def *def, const char *const *values, struct buf *key)
{
    for (size_t i = 0; i < def->nlabels; i++) {
        if (i)
            buf_append_char(key, '\x1f');
        buf_append_str(key, values && values[i] ? values[i] : "");
    }
}

static void shard_grow(struct shard *s)
{
    size_t ncap = s->cap * 2;
    struct metric_series **nslots = xcalloc(ncap, sizeof(*nslots));
    for (size_t i = 0; i < s->cap; i++) {
        struct metric_series *m = s->slots[i];
        if (!m)
            continue;
        size_t j = m->hash & (ncap - 1);
        while (nslots[j])
            j = (j + 1) & (ncap - 1);
        nslots[j] = m;
    }
    xfree(s->slots);
    s->slots = nslots;
    s->cap = ncap;
}

static uint64_t hash_labels(const struct metric_def *def, const char *const *values)
{
    uint64_t h = 14695981039346656037ull ^ (uint64_t)def->id;
    for (size_t i = 0; i < def->nlabels; i++) {
        const char *v = values && values[i] ? values[i] : "";
        h = hash_bytes(h, v, strlen(v));
        h = hash_bytes(h, "\x1f", 1);
    }
    return h;
}

static bool labels_equal(const struct metric_series *m, const char *const *values)
{
    for (size_t i = 0; i < m->def->nlabels; i++)
        if (strcmp(m->values[i], values && values[i] ? values[i] : "") != 0)
            return false;
    return true;
}

static struct metric_series *lookup(struct shard *s, const struct metric_def *def, uint64_t h,
                                    const char *const *values)
{
    size_t j = h & (s->cap - 1);
    while (s->slots[j]) {
        struct metric_series *m = s->slots[j];
        if (m->hash == h && m->def == def && labels_equal(m, values))
            return m;
        j = (j + 1) & (s->cap - 1);
    }
    return NULL;
}

static struct metric_series *hint_find(struct shard *s, const struct metric_def *def, const char *const *values)
{
    struct series_hints *h = &s->hints[def->id];
    for (unsigned i = 0; i < SERIES_HINT_WAYS; i++)
        if (h->m[i] && labels_equal(h->m[i], values))
            return h->m[i];
    return NULL;
}

static struct metric_series *hint_set(struct shard *s, const struct metric_def *def, struct metric_series *m)
{
    struct series_hints *h = &s->hints[def->id];
    h->m[h->next] = m;
    h->next = (h->next + 1) % SERIES_HINT_WAYS;
    return m;
}

/* The hot path finds the series by its hint or hashes the label values in place, and allocates nothing once the
 * series exists. */
struct metric_series *metrics_series(struct metric_def *def, const char *const *label_values)
{
    struct shard *s = my_shard();
    struct metric_series *m = hint_find(s, def, label_values);
    if (m)
        return m;
    uint64_t h = hash_labels(def, label_values);
    m = lookup(s, def, h, label_values);
    if (m)
        return hint_set(s, def, m);
    const char *others[METRICS_MAX_LABELS];
    if (s->per_family[def->id] >= METRICS_MAX_SERIES_PER_FAMILY && def->nlabels > 0) {
        /* Cardinality guard: fold into one "other" series rather than grow without bound. */
        for (size_t i = 0; i < def->nlabels && i < METRICS_MAX_LABELS; i++)
            others[i] = "other";
        label_values = others;
        h = hash_labels(def, label_values);
        m = lookup(s, def, h, label_values);
        if (m)
            return m;
    }
    struct buf key = BUF_INIT(BUF_UNBOUNDED);
    build_key(def, label_values, &key);
    m = xcalloc(1, sizeof(*m));
    m->def = def;
    m->key = key.data ? buf_steal(&key, NULL) : xstrdup("");
    m->hash = h;
    m->values = xcalloc(def->nlabels ? def->nlabels : 1, sizeof(char *));
    for (size_t i = 0; i < def->nlabels; i++)
        m->values[i] = xstrdup(label_values && label_values[i] ? label_values[i] : "");
    if (def->kind == METRIC_HISTOGRAM)
        m->buckets = xcalloc(def->nbuckets + 1, sizeof(*m->buckets));
    if (def->kind == METRIC_HISTOGRAM && def->exemplars)
        m->ex = xcalloc(def->nbuckets + 1, sizeof(*m->ex));
    pthread_mutex_lock(&s->lock);
    if ((s->used + 1) * 4 > s->cap * 3)
        shard_grow(s);
    size_t j = h & (s->cap - 1);
    while (s->slots[j])
        j = (j + 1) & (s->cap - 1);
    s->slots[j] = m;
    s->used++;
    s->per_family[def->id]++;
    pthread_mutex_unlock(&s->lock);
    return hint_set(s, def, m);
}

static inline double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static inline uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

uint64_t metrics_epoch(void)
{
    return atomic_load_explicit(&epoch, memory_order_relaxed);
}

bool metrics_memo_use(struct metrics_memo *m, int tag, const char *const *keys, unsigned n)
{
    uint64_t e = metrics_epoch();
    if (m->epoch == e && m->tag == tag && m->nkeys == n) {
        unsigned i = 0;
        while (i < n && strcmp(m->key + m->off[i], keys[i] ? keys[i] : "") == 0)
            i++;
        if (i == n)
            return true;
    }
    memset(m, 0, sizeof(*m));
    if (n > METRICS_MEMO_KEYS)
        return false;
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *k = keys[i] ? keys[i] : "";
        size_t len = strlen(k);
        if (len >= sizeof(m->key) - at) {
            memset(m, 0, sizeof(*m));
            return false;
        }
        m->off[i] = (uint16_t)at;
        memcpy(m->key + at, k, len + 1);
        at += len + 1;
    }
    m->epoch = e;
    m->tag = tag;
    m->nkeys = n;
    return true;
}

void metrics_series_add(struct metric_series *s, double v)
{
    if (s->def->kind == METRIC_COUNTER && !(v >= 0 && v <= DBL_MAX))
        return; /* a counter only goes up, by a finite amount (a negative or NaN sample would break rate()) */
    /* Only the owning thread writes, so load-add-store is exact; relaxed atomics keep reads whole. */
    uint64_t b = atomic_load_explicit(&s->value_bits, memory_order_relaxed);
    atomic_store_explicit(&s->value_bits, double_to_bits(bits_to_double(b) + v), memory_order_relaxed);
}

static size_t bucket_of(const struct metric_def *d, double v)
{
    size_t i = 0;
    while (i < d->nbuckets && v > d->buckets[i])
        i++;
    return i;
}

void metrics_series_observe(struct metric_series *s, double v)
{
    atomic_fetch_add_explicit(&s->buckets[bucket_of(s->def, v)], 1, memory_order_relaxed);
    metrics_series_add(s, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

static uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

void metrics_series_observe_ex(struct metric_series *s, double v, const uint8_t trace_id[16],
                               const uint8_t span_id[8])
{
    size_t i = bucket_of(s->def, v);
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    metrics_series_add(s, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    if (!s->ex)
        return;
    /* The coarse clock (the last tick, a few ms old, without reading the time source): an exemplar's timestamp
     * needs no more, and a precise read costs ~200 ns on a VM's clock source, per observation (issue 16 item 8). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    struct ex_slot *e = &s->ex[i];
    uint32_t q = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, q + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    uint64_t vb;
    memcpy(&vb, &v, sizeof(vb));
    atomic_store_explicit(&e->w[0], vb, memory_order_relaxed);
    atomic_store_explicit(&e->w[1], (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, memory_order_relaxed);
    atomic_store_explicit(&e->w[2], load_be64(trace_id), memory_order_relaxed);
    atomic_store_explicit(&e->w[3], load_be64(trace_id + 8), memory_order_relaxed);
    atomic_store_explicit(&e->w[4], load_be64(span_id), memory_order_relaxed);
    atomic_store_explicit(&e->seq, q + 2, memory_order_release);
}

/* A consistent copy of a slot (a few retries while the owner writes it; else none). */
static bool ex_read(const struct ex_slot *e, struct metric_exemplar *out)
{
    for (int tries = 0; tries < 8; tries++) {
        uint32_t q1 = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (q1 & 1)
            continue;
        uint64_t w[5];
        for (int k = 0; k < 5; k++)
            w[k] = atomic_load_explicit(&e->w[k], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) != q1)
            continue;
        if (q1 == 0)
            return false;
        memcpy(&out->value, &w[0], sizeof(out->value));
        out->time_ns = w[1];
        store_be64(out->trace_id, w[2]);
        store_be64(out->trace_id + 8, w[3]);
        store_be64(out->span_id, w[4]);
        return true;
    }
    return false;
}

/* ---- rendering ---- */

void metrics_append_label_value(struct buf *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            buf_append_str(out, "\\\\");
        else if (*p == '"')
            buf_append_str(out, "\\\"");
        else if (*p == '\n')
            buf_append_str(out, "\\n");
        else
            buf_append_char(out, *p);
    }
}

static void append_number(struct buf *out, double v)
{
    if (isnan(v))
        buf_append_str(out, "NaN");
    else if (isinf(v))
        buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        buf_printf(out, "%.0f", v);
    else
        buf_printf(out, "%.12g", v);
}

struct agg {
    const struct metric_series *first; /* label values come from here */
    double value;
    uint64_t count;
    uint64_t *buckets;
    struct metric_exemplar *ex; /* the latest per bucket over the shards, or NULL */
};

static int agg_cmp(const void *a, const void *b)
{
    return strcmp(((const struct agg *)a)->first->key, ((const struct agg *)b)->first->key);
}

static void append_labels(struct buf *out, const struct metric_def *d, const struct metric_series *m,
                          const char *extra_name, const char *extra_value)
{
    if (d->nlabels == 0 && !extra_name)
        return;
    buf_append_char(out, '{');
    for (size_t i = 0; i < d->nlabels; i++) {
        buf_printf(out, "%s%s=\"", i ? "," : "", d->labels[i]);
        metrics_append_label_value(out, m->values[i]);
        buf_append_char(out, '"');
    }
    if (extra_name)
        buf_printf(out, "%s%s=\"%s\"", d->nlabels ? "," : "", extra_name, extra_value);
    buf_append_char(out, '}');
}

/* Gathers a family's series from every shard, merging equal label sets, sorted by label values. */
static struct agg *gather_family(const struct metric_def *d, size_t *np)
{
    size_t cap = 16, n = 0;
    struct agg *aggs = xcalloc(cap, sizeof(*aggs));
    pthread_mutex_lock(&shards_lock);
    for (struct shard *s = shards; s; s = s->next) {
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->cap; i++) {
            const struct metric_series *m = s->slots[i];
            if (!m || m->def != d)
                continue;
            struct agg *a = NULL;
            for (size_t k = 0; k < n; k++) /* few series per family; linear merge is fine at scrape time */
                if (strcmp(aggs[k].first->key, m->key) == 0) {
                    a = &aggs[k];
                    break;
                }
            if (!a) {
                if (n == cap) {
                    cap *= 2;
                    aggs = xrealloc(aggs, cap * sizeof(*aggs));
                }
                a = &aggs[n++];
                memset(a, 0, sizeof(*a));
                a->first = m;
                if (d->kind == METRIC_HISTOGRAM)
                    a->buckets = xcalloc(d->nbuckets + 1, sizeof(uint64_t));
            }
            a->value += bits_to_double(atomic_load_explicit(&m->value_bits, memory_order_relaxed));
            if (d->kind == METRIC_HISTOGRAM) {
                /* Read buckets before count so that count >= sum of buckets never breaks monotonicity. */
                uint64_t total = 0;
                for (size_t b = 0; b <= d->nbuckets; b++) {
                    uint64_t c = atomic_load_explicit(&m->buckets[b], memory_order_relaxed);
                    a->buckets[b] += c;
                    total += c;
                }
                a->count += total;
            }
            if (m->ex) {
                if (!a->ex)
                    a->ex = xcalloc(d->nbuckets + 1, sizeof(*a->ex));
                for (size_t b = 0; b <= d->nbuckets; b++) {
                    struct metric_exemplar e;
                    if (ex_read(&m->ex[b], &e) && e.time_ns > a->ex[b].time_ns)
                        a->ex[b] = e;
                }
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&shards_lock);
    qsort(aggs, n, sizeof(*aggs), agg_cmp);
    *np = n;
    return aggs;
}

/* A bucket bound as the shortest text that reads back as the same number: 1048576, not 1.04858e+06. */
void metrics_format_bound(char *dst, size_t cap, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(dst, cap, "%.*g", prec, v);
        if (strtod(dst, NULL) == v)
            return;
    }
}

void metrics_walk(metrics_walk_fn *fn, void *ud)
{
    for (int i = 0; i < nfamilies; i++) {
        const struct metric_def *d = families[i];
        size_t n;
        struct agg *aggs = gather_family(d, &n);
        for (size_t k = 0; k < n; k++) {
            struct metric_point p = {.values = (const char *const *)aggs[k].first->values,
                                     .value = aggs[k].value,
                                     .count = aggs[k].count,
                                     .buckets = aggs[k].buckets,
                                     .exemplars = aggs[k].ex};
            fn(d, &p, ud);
            xfree(aggs[k].buckets);
            xfree(aggs[k].ex);
        }
        xfree(aggs);
    }
}

static void append_exemplar(struct buf *out, const struct metric_def *d, const struct metric_exemplar *e)
{
    char t[33], sp[17];
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        t[2 * i] = hx[e->trace_id[i] >> 4];
        t[2 * i + 1] = hx[e->trace_id[i] & 15];
    }
    for (int i = 0; i < 8; i++) {
        sp[2 * i] = hx[e->span_id[i] >> 4];
        sp[2 * i + 1] = hx[e->span_id[i] & 15];
    }
    t[32] = sp[16] = '\0';
    buf_printf(out, " # {trace_id=\"%s\",span_id=\"%s\"} ", t, sp);
    append_number(out, d->prom_div > 0 ? e->value / d->prom_div : e->value);
    buf_printf(out, " %llu.%03llu", (unsigned long long)(e->time_ns / 1000000000ull),
               (unsigned long long)(e->time_ns % 1000000000ull / 1000000ull));
}

static void render_family(struct buf *out, const struct metric_def *d, bool om)
{
    size_t n;
    struct agg *aggs = gather_family(d, &n);
    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    size_t nl = strlen(d->name);
    if (om && d->kind == METRIC_COUNTER && nl > 6 && strcmp(d->name + nl - 6, "_total") == 0)
        nl -= 6; /* OpenMetrics names the counter family without its _total sample suffix */
    buf_printf(out, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)nl, d->name, d->help, (int)nl, d->name,
               kinds[d->kind]);
    for (size_t k = 0; k < n; k++) {
        struct agg *a = &aggs[k];
        if (d->kind != METRIC_HISTOGRAM) {
            buf_append_str(out, d->name);
            append_labels(out, d, a->first, NULL, NULL);
            buf_append_char(out, ' ');
            append_number(out, a->value);
            buf_append_char(out, '\n');
            continue;
        }
        uint64_t cum = 0;
        for (size_t b = 0; b <= d->nbuckets; b++) {
            char le[40];
            cum += a->buckets[b];
            if (b == d->nbuckets)
                snprintf(le, sizeof(le), "+Inf");
            else
                metrics_format_bound(le, sizeof(le), d->prom_div > 0 ? d->buckets[b] / d->prom_div : d->buckets[b]);
            buf_printf(out, "%s_bucket", d->name);
            append_labels(out, d, a->first, "le", le);
            buf_printf(out, " %llu", (unsigned long long)cum);
            if (om && a->ex && a->ex[b].time_ns)
                append_exemplar(out, d, &a->ex[b]);
            buf_append_char(out, '\n');
        }
        buf_printf(out, "%s_sum", d->name);
        append_labels(out, d, a->first, NULL, NULL);
        buf_append_char(out, ' ');
        append_number(out, d->prom_div > 0 ? a->value / d->prom_div : a->value);
        buf_printf(out, "\n%s_count", d->name);
        append_labels(out, d, a->first, NULL, NULL);
        buf_printf(out, " %llu\n", (unsigned long long)cum);
        xfree(a->buckets);
        xfree(a->ex);
    }
    xfree(aggs);
}

void metrics_render(struct buf *out)
{
    for (int i = 0; i < nfamilies; i++)
        render_family(out, families[i], false);
    for (int i = 0; i < ncollectors; i++)
        collectors[i].fn(out, collectors[i].ud);
}

/* The name of a "# HELP name ..." or "# TYPE name ..." line, or NULL. */
static const char *meta_name(const char *line, const char *end, size_t *n)
{
    if (end - line < 8 || (memcmp(line, "# HELP ", 7) != 0 && memcmp(line, "# TYPE ", 7) != 0))
        return NULL;
    const char *p = line + 7, *q = p;
    while (q < end && *q != ' ')
        q++;
    *n = (size_t)(q - p);
    return p;
}

void metrics_render_openmetrics(struct buf *out)
{
    for (int i = 0; i < nfamilies; i++)
        render_family(out, families[i], true);
    /* the collectors write the 0.0.4 text; their counters' HELP and TYPE lines lose the _total suffix */
    struct buf c = BUF_INIT(BUF_UNBOUNDED);
    for (int i = 0; i < ncollectors; i++)
        collectors[i].fn(&c, collectors[i].ud);
    struct buf counters = BUF_INIT(BUF_UNBOUNDED); /* "\nname\n" for each counter family ending _total */
    if (c.len == 0)
        buf_append_str(&c, "\n"); /* no collector: one empty line keeps the walk below simple */
    const char *p = c.data, *end = c.data + c.len;
    while (p && p < end) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        le = le ? le : end;
        size_t n;
        const char *name = meta_name(p, le, &n);
        if (name && p[2] == 'T' && n > 6 && memcmp(name + n - 6, "_total", 6) == 0 &&
            (size_t)(le - name) >= n + 8 && memcmp(name + n, " counter", 8) == 0) {
            buf_append_char(&counters, '\n');
            buf_append(&counters, name, n);
            buf_append_char(&counters, '\n');
        }
        p = le + 1;
    }
    buf_append_char(&counters, '\0');
    for (p = c.data; p && p < end;) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        le = le ? le + 1 : end;
        size_t n;
        const char *name = meta_name(p, le, &n);
        bool strip = false;
        if (name && n > 6) {
            char key[256];
            if (n + 3 <= sizeof(key)) {
                key[0] = '\n';
                memcpy(key + 1, name, n);
                key[n + 1] = '\n';
                key[n + 2] = '\0';
                strip = strstr(counters.data, key) != NULL;
            }
        }
        if (strip) {
            buf_append(out, p, (size_t)(name - p) + n - 6);
            buf_append(out, name + n, (size_t)(le - name - n));
        } else {
            buf_append(out, p, (size_t)(le - p));
        }
        p = le;
    }
    buf_free(&counters);
    buf_free(&c);
    buf_append_str(out, "# EOF\n");
}

double metrics_sum(const struct metric_def *d, const char *const *label_values)
{
    double total = 0;
    pthread_mutex_lock(&shards_lock);
    for (struct shard *s = shards; s; s = s->next) {
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->cap; i++) {
            const struct metric_series *m = s->slots[i];
            if (!m || m->def != d)
                continue;
            bool match = true;
            for (size_t l = 0; label_values && l < d->nlabels; l++)
                if (label_values[l] && strcmp(label_values[l], m->values[l]) != 0)
                    match = false;
            if (!match)
                continue;
            if (d->kind == METRIC_HISTOGRAM)
                total += (double)atomic_load_explicit(&m->count, memory_order_relaxed);
            else
                total += bits_to_double(atomic_load_explicit(&m->value_bits, memory_order_relaxed));
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&shards_lock);
    return total;
}

void metrics_shutdown(void)
{
    pthread_mutex_lock(&shards_lock);
    struct shard *s = shards;
    shards = NULL;
    pthread_mutex_unlock(&shards_lock);
    while (s) {
        struct shard *next = s->next;
        for (size_t i = 0; i < s->cap; i++) {
            struct metric_series *m = s->slots[i];
            if (!m)
                continue;
            for (size_t l = 0; l < m->def->nlabels; l++)
                xfree(m->values[l]);
            xfree(m->values);
            xfree(m->key);
            xfree((void *)m->buckets);
            xfree(m->ex);
            xfree(m);
        }
        xfree(s->slots);
        pthread_mutex_destroy(&s->lock);
        xfree(s);
        s = next;
    }
    tls_shard = NULL;
    atomic_fetch_add_explicit(&epoch, 1, memory_order_relaxed);
    nfamilies = 0;
    ncollectors = 0;
}

/* ---- process collector ---- */

static double process_start_time(void)
{
    /* starttime (field 22 of /proc/self/stat) is in clock ticks since boot; btime is boot time in epoch seconds. */
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return 0;
    char line[1024];
    double start = 0;
    if (fgets(line, sizeof(line), f)) {
        const char *p = strrchr(line, ')');
        unsigned long long ticks = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                        &ticks) == 1)
            start = (double)ticks / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
    f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    unsigned long long btime = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    return (double)btime + start;
}

static void process_collector(struct buf *out, void *ud)
{
    (void)ud;
    static double start_time;
    if (start_time == 0)
        start_time = process_start_time();
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vsize = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%llu %llu", &vsize, &rss) != 2)
            vsize = rss = 0;
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory handle itself */
    }
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;
    buf_printf(out,
               "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
               "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n"
               "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
               "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n"
               "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
               "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n"
               "# HELP process_open_fds Number of open file descriptors.\n"
               "# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
               "# HELP process_max_fds Maximum number of open file descriptors.\n"
               "# TYPE process_max_fds gauge\nprocess_max_fds %.0f\n"
               "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
               "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
               (double)time_process_cpu_us() / 1e6, rss * (unsigned long long)page,
               vsize * (unsigned long long)page, fds, maxfds, start_time);
}

void metrics_register_process_collector(void)
{
    metrics_add_collector(process_collector, NULL);
}
