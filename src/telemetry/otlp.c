/* otlp.c: the OTLP/HTTP exporter (otlp.h). */
#include "telemetry/otlp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <zlib.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "net/curl_dl.h"
#include "telemetry/metrics.h"
#include "telemetry/otel_config.h"
#include "telemetry/pb.h"

#define SCOPE_NAME "agentd.gateway"
#define SCHEMA_URL "https://opentelemetry.io/schemas/1.41.0"
#define SPAN_ARENA_MAX (64 * 1024)        /* attribute strings of one span */
#define EXPORT_BODY_MAX (64u * 1024 * 1024) /* the spec's default cap on one request body */
#define RESPONSE_MAX (4u * 1024 * 1024)
#define MAX_RETRIES 5

struct target {
    char host[256];
    char port[8];
    char path[1024];
    char url[2048]; /* https: the whole URL for libcurl */
    bool https;
    bool set;
};

struct kv {
    char *k, *v;
};

static struct {
    bool started, ids_on, traces_on, metrics_on, logs_on, json, capture, resp_header, gzip;
    char *ca_file; /* https: CA bundle for the collector's certificate (OTEL_EXPORTER_OTLP_CERTIFICATE) */
    int sampler;
    double ratio;
    int64_t timeout_ms, delay_ms, metric_ms, log_delay_ms;
    size_t queue_max, batch_max;
    struct target traces, metrics, logs;
    struct kv *headers, *resource;
    size_t nheaders, nresource;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct otel_span *head, *tail; /* queue, oldest first */
    size_t queued;
    struct otel_span *lhead, *ltail; /* log records, oldest first */
    size_t lqueued;
    bool stop;
    uint64_t start_ns;
} X = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static atomic_ullong dropped_spans;

static const char *const drop_labels[] = {"signal", "reason", NULL};
static struct metric_def otel_dropped = METRIC_DEF(
    "agentd_otel_dropped_total", "Spans or metric exports agentd could not deliver over OTLP, by reason.",
    METRIC_COUNTER, drop_labels);
static const char *const sig_labels[] = {"signal", NULL};
static struct metric_def otel_exported = METRIC_DEF("agentd_otel_exports_total",
                                                    "OTLP export requests the receiver accepted, by signal.",
                                                    METRIC_COUNTER, sig_labels);
static struct metric_def otel_retries = METRIC_DEF("agentd_otel_export_retries_total",
                                                   "OTLP export requests retried (429/502/503/504, no connection).",
                                                   METRIC_COUNTER, sig_labels);

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------- spans ---------- */

/* Finished spans come back here from the exporter thread so that workers reuse them (and their arena) instead of
 * allocating ~2.5 KiB twice per request from a heap whose chunks another thread freed. */
#define SPAN_POOL_MAX 1024
#define SPAN_ARENA_KEEP 4096 /* an arena grown past this is not kept */
static struct {
    pthread_mutex_t lock;
    struct otel_span *head;
    size_t n;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct otel_span *otel_span_new(void)
{
    pthread_mutex_lock(&pool.lock);
    struct otel_span *s = pool.head;
    if (s) {
        pool.head = s->next;
        pool.n--;
    }
    pthread_mutex_unlock(&pool.lock);
    if (s) {
        buf_reset(&s->arena);
    } else {
        s = xmalloc(sizeof(*s));
        buf_init(&s->arena, SPAN_ARENA_MAX);
        buf_reserve(&s->arena, 256); /* the usual attribute strings in one allocation */
    }
    /* zero the fields, not the attribute slots (attr_slot fills each one it hands out) */
    memset(s, 0, offsetof(struct otel_span, attrs));
    s->nattrs = s->dropped_attrs = 0;
    s->next = NULL;
    s->severity = 0;
    s->has_trace = false;
    s->body_off = s->body_len = 0;
    return s;
}

void otel_span_free(struct otel_span *s)
{
    if (!s)
        return;
    if (s->arena.cap <= SPAN_ARENA_KEEP) {
        pthread_mutex_lock(&pool.lock);
        bool kept = pool.n < SPAN_POOL_MAX;
        if (kept) {
            s->next = pool.head;
            pool.head = s;
            pool.n++;
        }
        pthread_mutex_unlock(&pool.lock);
        if (kept)
            return;
    }
    buf_free(&s->arena);
    xfree(s);
}

static void pool_drain(void)
{
    pthread_mutex_lock(&pool.lock);
    struct otel_span *s = pool.head;
    pool.head = NULL;
    pool.n = 0;
    pthread_mutex_unlock(&pool.lock);
    while (s) {
        struct otel_span *next = s->next;
        buf_free(&s->arena);
        xfree(s);
        s = next;
    }
}

static struct otel_attr *attr_slot(struct otel_span *s, const char *key, enum otel_attr_type t)
{
    if (s->nattrs >= OTEL_MAX_ATTRS) {
        s->dropped_attrs++;
        return NULL;
    }
    struct otel_attr *a = &s->attrs[s->nattrs++];
    memset(a, 0, sizeof(*a));
    a->key = key;
    a->type = t;
    return a;
}

void otel_span_str(struct otel_span *s, const char *key, const char *v, size_t n)
{
    size_t off = s->arena.len;
    if (buf_append(&s->arena, v, n) != 0) { /* over the span's string budget */
        s->dropped_attrs++;
        return;
    }
    struct otel_attr *a = attr_slot(s, key, OA_STR);
    if (!a)
        return;
    a->soff = (uint32_t)off;
    a->slen = (uint32_t)n;
}

void otel_span_cstr(struct otel_span *s, const char *key, const char *v)
{
    otel_span_str(s, key, v, strlen(v));
}

void otel_span_int(struct otel_span *s, const char *key, int64_t v)
{
    struct otel_attr *a = attr_slot(s, key, OA_INT);
    if (a)
        a->v.i = v;
}

void otel_span_double(struct otel_span *s, const char *key, double v)
{
    struct otel_attr *a = attr_slot(s, key, OA_DOUBLE);
    if (a)
        a->v.d = v;
}

void otel_span_bool(struct otel_span *s, const char *key, bool v)
{
    struct otel_attr *a = attr_slot(s, key, OA_BOOL);
    if (a)
        a->v.b = v;
}

void otel_span_strarr(struct otel_span *s, const char *key, const char *const *v, size_t n)
{
    size_t off = s->arena.len;
    for (size_t i = 0; i < n; i++)
        if (buf_append(&s->arena, v[i], strlen(v[i]) + 1) != 0) {
            s->arena.len = off;
            s->dropped_attrs++;
            return;
        }
    struct otel_attr *a = attr_slot(s, key, OA_STRARR);
    if (!a)
        return;
    a->soff = (uint32_t)off;
    a->slen = (uint32_t)(s->arena.len - off);
    a->nstr = (uint32_t)n;
}

bool otel_trace_context_on(void)
{
    return X.ids_on;
}

bool otel_traces_on(void)
{
    return X.traces_on;
}

bool otel_capture_content(void)
{
    return X.capture;
}

bool otel_response_header(void)
{
    return X.resp_header;
}

bool otel_sample(const uint8_t trace_id[16], const struct trace_parent *parent)
{
    return trace_sample((enum trace_sampler)X.sampler, X.ratio, trace_id, parent);
}

uint64_t otel_dropped_spans(void)
{
    return atomic_load(&dropped_spans);
}

static void count_drop(const char *signal, const char *reason, uint64_t n)
{
    if (strcmp(signal, "traces") == 0)
        atomic_fetch_add(&dropped_spans, n);
    metrics_add(&otel_dropped, (const char *[]){signal, reason}, (double)n);
}

/* ---------- log records ---------- */

bool otel_logs_on(void)
{
    return X.logs_on;
}

struct otel_span *otel_log_new(int severity, const char *event_name, const uint8_t *trace_id,
                               const uint8_t *span_id)
{
    struct otel_span *r = otel_span_new();
    r->severity = (uint8_t)severity;
    r->start_ns = wall_ns();
    if (event_name)
        snprintf(r->name, sizeof(r->name), "%s", event_name);
    if (trace_id && span_id) {
        memcpy(r->trace_id, trace_id, 16);
        memcpy(r->span_id, span_id, 8);
        r->has_trace = true;
    }
    return r;
}

void otel_log_body(struct otel_span *r, const char *s, size_t n)
{
    size_t off = r->arena.len;
    if (buf_append(&r->arena, s, n) != 0)
        return;
    r->body_off = (uint32_t)off;
    r->body_len = (uint32_t)n;
}

/* Queues a finished span or log record for the export thread (one queue per signal), or drops and counts it when
 * the signal is off, the queue is full or the exporter is stopping; a full batch wakes the thread. */
static void enqueue(bool on, struct otel_span **head, struct otel_span **tail, size_t *queued, const char *signal,
                    struct otel_span *s)
{
    if (!on) {
        otel_span_free(s);
        return;
    }
    s->next = NULL;
    bool full, wake = false;
    pthread_mutex_lock(&X.lock);
    full = *queued >= X.queue_max || X.stop;
    if (!full) {
        if (*tail)
            (*tail)->next = s;
        else
            *head = s;
        *tail = s;
        (*queued)++;
        wake = *queued == X.batch_max;
    }
    pthread_mutex_unlock(&X.lock);
    if (full) {
        otel_span_free(s);
        count_drop(signal, "queue_full", 1);
    } else if (wake) {
        pthread_cond_signal(&X.cond);
    }
}

void otel_log_submit(struct otel_span *r)
{
    enqueue(X.logs_on, &X.lhead, &X.ltail, &X.lqueued, "logs", r);
}

static const char *const severity_text[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};
static const uint8_t severity_number[] = {5, 9, 13, 17, 21};

/* The log tap (common/log.h): every line written becomes a record. */
static void log_tap(int level, const char *line, size_t n, const uint8_t *trace_id, const uint8_t *span_id)
{
    if (level < LL_DEBUG || level > LL_FATAL)
        return;
    struct otel_span *r = otel_log_new(severity_number[level], NULL, trace_id, span_id);
    otel_log_body(r, line, n);
    otel_log_submit(r);
}

void otel_span_submit(struct otel_span *s)
{
    enqueue(X.traces_on, &X.head, &X.tail, &X.queued, "traces", s);
}

/* ---------- encoding ---------- */

static void encode_resource(struct pbw *w)
{
    pbw_msg(w, 1, "resource"); /* Resource { attributes = 1 } */
    pbw_arr(w, "attributes");
    if (X.nresource == 0)
        pbw_kv_cstr(w, 1, "service.name", "agentd");
    for (size_t i = 0; i < X.nresource; i++)
        pbw_kv_cstr(w, 1, X.resource[i].k, X.resource[i].v);
    pbw_arr_end(w);
    pbw_end(w);
}

static void encode_scope(struct pbw *w)
{
    pbw_msg(w, 1, "scope"); /* InstrumentationScope { name = 1, version = 2 } */
    pbw_cstr(w, 1, "name", SCOPE_NAME);
    pbw_cstr(w, 2, "version", AGENTD_VERSION);
    pbw_end(w);
}

static void encode_attr(struct pbw *w, uint32_t field, const struct otel_span *s, const struct otel_attr *a)
{
    const char *arena = s->arena.data;
    switch (a->type) {
    case OA_STR:
        pbw_kv_str(w, field, a->key, arena ? arena + a->soff : "", a->slen);
        break;
    case OA_INT:
        pbw_kv_int(w, field, a->key, a->v.i);
        break;
    case OA_DOUBLE:
        pbw_kv_double(w, field, a->key, a->v.d);
        break;
    case OA_BOOL:
        pbw_kv_bool(w, field, a->key, a->v.b);
        break;
    case OA_STRARR: {
        const char *v[16];
        size_t n = 0;
        const char *p = arena + a->soff;
        for (uint32_t i = 0; i < a->nstr && n < 16; i++) {
            v[n++] = p;
            p += strlen(p) + 1;
        }
        pbw_kv_strarr(w, field, a->key, v, n);
        break;
    }
    }
}

static void encode_span(struct pbw *w, const struct otel_span *s)
{
    pbw_msg(w, 2, NULL);
    pbw_id(w, 1, "traceId", s->trace_id, 16);
    pbw_id(w, 2, "spanId", s->span_id, 8);
    if (s->has_parent)
        pbw_id(w, 4, "parentSpanId", s->parent_id, 8);
    pbw_cstr(w, 5, "name", s->name);
    pbw_enum(w, 6, "kind", s->kind);
    pbw_fixed64(w, 7, "startTimeUnixNano", s->start_ns);
    pbw_fixed64(w, 8, "endTimeUnixNano", s->end_ns);
    pbw_arr(w, "attributes");
    for (unsigned i = 0; i < s->nattrs; i++)
        encode_attr(w, 9, s, &s->attrs[i]);
    pbw_arr_end(w);
    if (s->dropped_attrs)
        pbw_enum(w, 10, "droppedAttributesCount", (int)s->dropped_attrs); /* uint32: a varint */
    pbw_msg(w, 15, "status");
    if (s->status == OTEL_STATUS_ERROR && s->status_msg[0])
        pbw_cstr(w, 2, "message", s->status_msg);
    if (s->status != OTEL_STATUS_UNSET)
        pbw_enum(w, 3, "code", s->status);
    pbw_end(w);
    /* flags: the W3C trace flags, and whether the parent is remote (bits 8 and 9) */
    uint32_t flags = s->trace_flags | 0x100u | (s->remote_parent ? 0x200u : 0);
    pbw_fixed32(w, 16, "flags", flags);
    pbw_end(w);
}

static void encode_log(struct pbw *w, const struct otel_span *r)
{
    pbw_msg(w, 2, NULL); /* LogRecord */
    pbw_fixed64(w, 1, "timeUnixNano", r->start_ns);
    pbw_fixed64(w, 11, "observedTimeUnixNano", r->start_ns);
    if (r->severity) {
        pbw_enum(w, 2, "severityNumber", r->severity);
        int lv = (r->severity - 1) / 4 - 1; /* 5..8 DEBUG, 9..12 INFO, ... */
        if (lv >= 0 && lv < 5)
            pbw_cstr(w, 3, "severityText", severity_text[lv]);
    }
    if (r->body_len) {
        pbw_msg(w, 5, "body"); /* AnyValue { string_value = 1 } */
        pbw_string(w, 1, "stringValue", r->arena.data + r->body_off, r->body_len);
        pbw_end(w);
    }
    pbw_arr(w, "attributes");
    for (unsigned i = 0; i < r->nattrs; i++)
        encode_attr(w, 6, r, &r->attrs[i]);
    pbw_arr_end(w);
    if (r->dropped_attrs)
        pbw_enum(w, 7, "droppedAttributesCount", (int)r->dropped_attrs);
    if (r->has_trace) {
        pbw_fixed32(w, 8, "flags", r->trace_flags);
        pbw_id(w, 9, "traceId", r->trace_id, 16);
        pbw_id(w, 10, "spanId", r->span_id, 8);
    }
    if (r->name[0])
        pbw_cstr(w, 12, "eventName", r->name);
    pbw_end(w);
}

int otlp_encode_logs(struct buf *out, const struct otel_span *recs, bool json)
{
    struct pbw w;
    pbw_init(&w, out, json);
    pbw_arr(&w, "resourceLogs");
    pbw_msg(&w, 1, NULL);
    encode_resource(&w);
    pbw_arr(&w, "scopeLogs");
    pbw_msg(&w, 2, NULL);
    encode_scope(&w);
    pbw_arr(&w, "logRecords");
    for (const struct otel_span *r = recs; r; r = r->next)
        encode_log(&w, r);
    pbw_arr_end(&w);
    pbw_cstr(&w, 3, "schemaUrl", SCHEMA_URL);
    pbw_end(&w);
    pbw_arr_end(&w);
    pbw_end(&w);
    pbw_arr_end(&w);
    return pbw_finish(&w);
}

int otlp_encode_spans(struct buf *out, const struct otel_span *spans, bool json)
{
    struct pbw w;
    pbw_init(&w, out, json);
    pbw_arr(&w, "resourceSpans");
    pbw_msg(&w, 1, NULL);
    encode_resource(&w);
    pbw_arr(&w, "scopeSpans");
    pbw_msg(&w, 2, NULL);
    encode_scope(&w);
    pbw_arr(&w, "spans");
    for (const struct otel_span *s = spans; s; s = s->next)
        encode_span(&w, s);
    pbw_arr_end(&w);
    pbw_cstr(&w, 3, "schemaUrl", SCHEMA_URL);
    pbw_end(&w);
    pbw_arr_end(&w);
    pbw_end(&w);
    pbw_arr_end(&w);
    return pbw_finish(&w);
}

struct menc {
    struct pbw *w;
    const struct metric_def *cur;
    uint64_t start_ns, now_ns;
    size_t points;
};

static void metric_close(struct menc *m)
{
    if (!m->cur)
        return;
    pbw_arr_end(m->w); /* dataPoints */
    if (m->cur->kind != METRIC_GAUGE)
        pbw_enum(m->w, 2, "aggregationTemporality", 2); /* CUMULATIVE */
    if (m->cur->kind == METRIC_COUNTER)
        pbw_bool(m->w, 3, "isMonotonic", true);
    pbw_end(m->w); /* sum / gauge / histogram */
    pbw_end(m->w); /* Metric */
    m->cur = NULL;
}

static void metric_point(const struct metric_def *d, const struct metric_point *p, void *ud)
{
    struct menc *m = ud;
    struct pbw *w = m->w;
    m->points++;
    if (m->cur != d) {
        metric_close(m);
        m->cur = d;
        pbw_msg(w, 2, NULL); /* Metric */
        pbw_cstr(w, 1, "name", d->otel_name ? d->otel_name : d->name);
        pbw_cstr(w, 2, "description", d->help);
        if (d->unit)
            pbw_cstr(w, 3, "unit", d->unit);
        if (d->kind == METRIC_COUNTER)
            pbw_msg(w, 7, "sum");
        else if (d->kind == METRIC_GAUGE)
            pbw_msg(w, 5, "gauge");
        else
            pbw_msg(w, 9, "histogram");
        pbw_arr(w, "dataPoints");
    }
    pbw_msg(w, 1, NULL);
    uint32_t attrs_field = d->kind == METRIC_HISTOGRAM ? 9 : 7;
    pbw_arr(w, "attributes");
    for (size_t i = 0; i < d->nlabels; i++)
        if (p->values[i][0]) /* an empty label value is an absent attribute (error.type on success) */
            pbw_kv_cstr(w, attrs_field, d->otel_labels ? d->otel_labels[i] : d->labels[i], p->values[i]);
    pbw_arr_end(w);
    pbw_fixed64(w, 2, "startTimeUnixNano", m->start_ns);
    pbw_fixed64(w, 3, "timeUnixNano", m->now_ns);
    if (d->kind == METRIC_HISTOGRAM) {
        pbw_fixed64(w, 4, "count", p->count);
        pbw_double(w, 5, "sum", p->value);
        pbw_packed_fixed64(w, 6, "bucketCounts", p->buckets, d->nbuckets + 1);
        pbw_packed_double(w, 7, "explicitBounds", d->buckets, d->nbuckets);
        if (p->exemplars) {
            pbw_arr(w, "exemplars");
            for (size_t b = 0; b <= d->nbuckets; b++) {
                const struct metric_exemplar *e = &p->exemplars[b];
                if (!e->time_ns)
                    continue;
                pbw_msg(w, 8, NULL); /* Exemplar { time_unix_nano = 2, as_double = 3, span_id = 4, trace_id = 5 } */
                pbw_fixed64(w, 2, "timeUnixNano", e->time_ns);
                pbw_double(w, 3, "asDouble", e->value);
                pbw_id(w, 4, "spanId", e->span_id, 8);
                pbw_id(w, 5, "traceId", e->trace_id, 16);
                pbw_end(w);
            }
            pbw_arr_end(w);
        }
    } else {
        pbw_double(w, 4, "asDouble", p->value);
    }
    pbw_end(w);
}

int otlp_encode_metrics(struct buf *out, uint64_t start_ns, uint64_t now_ns, bool json)
{
    struct pbw w;
    pbw_init(&w, out, json);
    pbw_arr(&w, "resourceMetrics");
    pbw_msg(&w, 1, NULL);
    encode_resource(&w);
    pbw_arr(&w, "scopeMetrics");
    pbw_msg(&w, 2, NULL);
    encode_scope(&w);
    pbw_arr(&w, "metrics");
    struct menc m = {&w, NULL, start_ns, now_ns, 0};
    metrics_walk(metric_point, &m);
    metric_close(&m);
    pbw_arr_end(&w);
    pbw_cstr(&w, 3, "schemaUrl", SCHEMA_URL);
    pbw_end(&w);
    pbw_arr_end(&w);
    pbw_end(&w);
    pbw_arr_end(&w);
    int rc = pbw_finish(&w);
    return rc == 0 && m.points == 0 ? 1 : rc;
}

/* ---------- HTTP/1.1 POST (blocking, on the exporter thread only) ---------- */

static int parse_url(const char *url, struct target *t)
{
    memset(t, 0, sizeof(*t));
    const char *p;
    if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        t->https = true;
    } else {
        return -1;
    }
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb)
            return -1;
        if ((size_t)(rb - p - 1) >= sizeof(t->host))
            return -1;
        memcpy(t->host, p + 1, (size_t)(rb - p - 1));
        colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(hend - p));
        const char *he = colon ? colon : hend;
        if (he == p || (size_t)(he - p) >= sizeof(t->host))
            return -1;
        memcpy(t->host, p, (size_t)(he - p));
    }
    if (colon) {
        size_t n = (size_t)(hend - colon - 1);
        if (n == 0 || n >= sizeof(t->port))
            return -1;
        memcpy(t->port, colon + 1, n);
    } else {
        snprintf(t->port, sizeof(t->port), "%s", t->https ? "443" : "80");
    }
    snprintf(t->path, sizeof(t->path), "%s", slash ? slash : "/");
    snprintf(t->url, sizeof(t->url), "%s", url);
    t->set = true;
    return 0;
}

/* Waits for fd to be ready until the monotonic deadline (ms). 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short ev, uint64_t deadline_us)
{
    for (;;) {
        uint64_t now = time_mono_us();
        if (now >= deadline_us)
            return 0;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)((deadline_us - now + 999) / 1000));
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int connect_to(const struct target *t, uint64_t deadline_us)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(t->host, t->port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        int err = 0;
        socklen_t el = sizeof(err);
        if (wait_fd(fd, POLLOUT, deadline_us) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
            err != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, uint64_t deadline_us)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (wait_fd(fd, POLLOUT, deadline_us) != 1)
            return -1;
    }
    return 0;
}

/* Retry-After: delta seconds or an HTTP date; -1 when absent or unreadable. */
static long parse_retry_after(const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
        n--;
    if (n == 0)
        return -1;
    bool digits = true;
    long secs = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            digits = false;
            break;
        }
        if (secs < 86400)
            secs = secs * 10 + (v[i] - '0');
    }
    if (digits)
        return secs * 1000;
    int64_t when;
    if (time_parse_http_date(v, n, &when) != 0)
        return -1;
    int64_t d = when - (int64_t)time(NULL);
    return d > 0 ? (long)(d * 1000) : 0;
}

/* gzip (RFC 1952) of in into out. 0, or -1. */
int otlp_gzip(const struct buf *in, struct buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)in->len);
    if (buf_reserve(out, (size_t)bound) != 0) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)(in->data ? in->data : "");
    z.avail_in = (uInt)in->len;
    z.next_out = (Bytef *)out->data + out->len;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    if (rc == Z_STREAM_END)
        out->len += (size_t)(bound - z.avail_out);
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -1;
}

struct curl_rx {
    size_t body;
    long *retry_after_ms;
};

static size_t curl_body(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    struct curl_rx *rx = ud;
    rx->body += sz * n;
    return rx->body > RESPONSE_MAX ? 0 : sz * n; /* the answer is not read, only bounded */
}

static size_t curl_hdr(char *p, size_t sz, size_t n, void *ud)
{
    struct curl_rx *rx = ud;
    size_t len = sz * n;
    if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0)
        *rx->retry_after_ms = parse_retry_after(p + 12, len - 12);
    return len;
}

/* https through libcurl (loaded on first use; a blocking transfer on the exporter thread). Same results as
 * http_post; 0 when libcurl cannot be loaded, -2 when the certificate is not trusted. */
static int https_post(const struct target *t, const char *ctype, const struct buf *body, long *retry_after_ms)
{
    if (curl_dl_load() != 0) {
        static atomic_bool warned;
        if (!atomic_exchange(&warned, true))
            log_warn("telemetry: https OTLP endpoint needs libcurl: %s", curl_dl_error());
        return 0;
    }
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    struct curl_slist *h = NULL;
    char line[4200];
    snprintf(line, sizeof(line), "Content-Type: %s", ctype);
    h = curl_slist_append(h, line);
    if (X.gzip)
        h = curl_slist_append(h, "Content-Encoding: gzip");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    for (size_t i = 0; i < X.nheaders; i++) {
        snprintf(line, sizeof(line), "%s: %s", X.headers[i].k, X.headers[i].v);
        h = curl_slist_append(h, line);
    }
    struct curl_rx rx = {0, retry_after_ms};
    curl_easy_setopt(e, CURLOPT_URL, t->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body->data ? body->data : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "agentd/" AGENTD_VERSION " OTel-OTLP-Exporter-C");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)X.timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &rx);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curl_hdr);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &rx);
    if (X.ca_file && *X.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, X.ca_file);
    CURLcode rc = curl_easy_perform(e);
    long code = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    else
        log_debug("telemetry: https export to %s failed: %s", t->host, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM) {
        static atomic_bool warned;
        if (!atomic_exchange(&warned, true))
            log_warn("telemetry: the OTLP collector's certificate is not trusted (%s); set "
                     "OTEL_EXPORTER_OTLP_CERTIFICATE to its CA",
                     curl_easy_strerror(rc));
        return -2; /* trying again will not help */
    }
    return rc == CURLE_OK && code >= 100 && code <= 599 ? (int)code : -1;
}

/* One POST. Returns the HTTP status, or -1 when no response came (connection refused, timeout, reset). */
static int http_post(const struct target *t, const char *ctype, const struct buf *body, long *retry_after_ms)
{
    *retry_after_ms = -1;
    if (t->https)
        return https_post(t, ctype, body, retry_after_ms);
    uint64_t deadline = time_mono_us() + (uint64_t)X.timeout_ms * 1000;
    int fd = connect_to(t, deadline);
    if (fd < 0)
        return -1;
    struct buf req = BUF_INIT(BUF_UNBOUNDED);
    bool v6 = strchr(t->host, ':') != NULL;
    buf_printf(&req, "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: agentd/" AGENTD_VERSION
                     " OTel-OTLP-Exporter-C\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s",
               t->path, v6 ? "[" : "", t->host, v6 ? "]" : "", t->port, ctype, body->len,
               X.gzip ? "Content-Encoding: gzip\r\n" : "");
    for (size_t i = 0; i < X.nheaders; i++)
        buf_printf(&req, "%s: %s\r\n", X.headers[i].k, X.headers[i].v);
    buf_append_str(&req, "\r\n");
    int status = -1;
    if (send_all(fd, req.data, req.len, deadline) != 0 || send_all(fd, body->data, body->len, deadline) != 0)
        goto out;
    /* read the whole response (Connection: close), bounded */
    buf_reset(&req);
    char tmp[4096];
    for (;;) {
        ssize_t k = recv(fd, tmp, sizeof(tmp), 0);
        if (k > 0) {
            if (req.len + (size_t)k > RESPONSE_MAX)
                break;
            buf_append(&req, tmp, (size_t)k);
            continue;
        }
        if (k == 0)
            break;
        if (errno != EAGAIN && errno != EINTR)
            break;
        if (wait_fd(fd, POLLIN, deadline) != 1)
            break;
    }
    if (req.len < 12 || strncmp(req.data, "HTTP/1.", 7) != 0)
        goto out;
    status = 0;
    for (int i = 9; i < 12; i++)
        status = req.data[i] >= '0' && req.data[i] <= '9' ? status * 10 + (req.data[i] - '0') : -1000;
    if (status < 100 || status > 599) {
        status = -1;
        goto out;
    }
    /* headers: only Retry-After matters */
    const char *p = req.data, *end = req.data + req.len;
    const char *line = memchr(p, '\n', (size_t)(end - p));
    while (line && line + 1 < end) {
        const char *ls = line + 1;
        const char *le = memchr(ls, '\n', (size_t)(end - ls));
        if (!le || le == ls || (le == ls + 1 && *ls == '\r'))
            break;
        if ((size_t)(le - ls) > 12 && strncasecmp(ls, "retry-after:", 12) == 0)
            *retry_after_ms = parse_retry_after(ls + 12, (size_t)(le - ls - 12));
        line = le;
    }
out:
    buf_free(&req);
    close(fd);
    return status;
}

/* ---------- the exporter thread ---------- */

/* Sleeps until the monotonic deadline or stop. true when stopping. Called with X.lock held. */
static bool wait_until(uint64_t deadline_us)
{
    while (!X.stop) {
        uint64_t now = time_mono_us();
        if (now >= deadline_us)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (deadline_us - now) * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&X.cond, &X.lock, &ts);
    }
    return true;
}

static uint64_t jitter(uint64_t ms)
{
    uint8_t r[8];
    trace_new_span_id(r);
    return ms / 2 + (r[0] | (uint64_t)r[1] << 8) % (ms / 2 + 1);
}

static bool export_try(const struct target *t, const char *signal, const char *ctype, struct buf *body, bool final);

/* Sends one body (compressed when configured) with retries; true when delivered. final: at shutdown (one try,
 * no waiting). */
static bool export_body(const struct target *t, const char *signal, struct buf *body, bool final)
{
    const char *ctype = X.json ? "application/json" : "application/x-protobuf";
    struct buf gz = BUF_INIT(BUF_UNBOUNDED);
    if (X.gzip) {
        if (otlp_gzip(body, &gz) != 0) {
            buf_free(&gz);
            count_drop(signal, "compress", 1);
            return false;
        }
        body = &gz;
    }
    bool ok = export_try(t, signal, ctype, body, final);
    buf_free(&gz);
    return ok;
}

static bool export_try(const struct target *t, const char *signal, const char *ctype, struct buf *body, bool final)
{
    uint64_t backoff_ms = 500;
    uint64_t give_up = time_mono_us() + (uint64_t)X.timeout_ms * 1000 * 3;
    for (int attempt = 0;; attempt++) {
        long ra = -1;
        int st = http_post(t, ctype, body, &ra);
        if (st >= 200 && st < 300) {
            metrics_inc(&otel_exported, (const char *[]){signal});
            return true;
        }
        if (st == 0) { /* not sendable (https without libcurl) */
            count_drop(signal, "unsupported", 1);
            return false;
        }
        if (st == -2) {
            count_drop(signal, "tls", 1);
            return false;
        }
        bool retryable = st == -1 || st == 429 || st == 502 || st == 503 || st == 504;
        if (!retryable) {
            log_warn("telemetry: the OTLP receiver refused %s with status %d; dropped", signal, st);
            count_drop(signal, "rejected", 1);
            return false;
        }
        uint64_t wait = ra >= 0 ? (uint64_t)ra : jitter(backoff_ms);
        if (final || attempt + 1 >= MAX_RETRIES || time_mono_us() + wait * 1000 > give_up) {
            if (st == -1)
                log_warn("telemetry: no OTLP receiver at %s:%s; %s dropped", t->host, t->port, signal);
            else
                log_warn("telemetry: the OTLP receiver answered %d %d times; %s dropped", st, attempt + 1, signal);
            count_drop(signal, "retry_exhausted", 1);
            return false;
        }
        metrics_inc(&otel_retries, (const char *[]){signal});
        backoff_ms = backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2;
        pthread_mutex_lock(&X.lock);
        bool stopping = wait_until(time_mono_us() + wait * 1000);
        pthread_mutex_unlock(&X.lock);
        if (stopping)
            final = true; /* one more try, then give up */
    }
}

static void export_spans(struct otel_span *batch, size_t n, bool final)
{
    struct buf body;
    buf_init(&body, EXPORT_BODY_MAX);
    if (otlp_encode_spans(&body, batch, X.json) != 0) {
        log_warn("telemetry: a span batch exceeds %u bytes; dropped", EXPORT_BODY_MAX);
        count_drop("traces", "too_large", n);
    } else if (!export_body(&X.traces, "traces", &body, final)) {
        atomic_fetch_add(&dropped_spans, n);
    }
    buf_free(&body);
    while (batch) {
        struct otel_span *next = batch->next;
        otel_span_free(batch);
        batch = next;
    }
}

static void export_logs(struct otel_span *batch, size_t n, bool final)
{
    struct buf body;
    buf_init(&body, EXPORT_BODY_MAX);
    if (otlp_encode_logs(&body, batch, X.json) != 0)
        count_drop("logs", "too_large", n);
    else
        export_body(&X.logs, "logs", &body, final);
    buf_free(&body);
    while (batch) {
        struct otel_span *next = batch->next;
        otel_span_free(batch);
        batch = next;
    }
}

static void export_metrics(bool final)
{
    struct buf body;
    buf_init(&body, EXPORT_BODY_MAX);
    int rc = otlp_encode_metrics(&body, X.start_ns, wall_ns(), X.json);
    if (rc < 0)
        count_drop("metrics", "too_large", 1);
    else if (rc == 0) /* 1: no data point yet; an empty envelope is not sent */
        export_body(&X.metrics, "metrics", &body, final);
    buf_free(&body);
}

/* Takes up to batch_max spans or records off a queue (lock held). */
static struct otel_span *take_batch(struct otel_span **head, struct otel_span **tail, size_t *queued, size_t *n)
{
    struct otel_span *first = *head, *last = NULL;
    size_t k = 0;
    for (struct otel_span *s = *head; s && k < X.batch_max; s = s->next) {
        last = s;
        k++;
    }
    if (!last) {
        *n = 0;
        return NULL;
    }
    *head = last->next;
    if (!*head)
        *tail = NULL;
    last->next = NULL;
    *queued -= k;
    *n = k;
    return first;
}

static void *exporter_main(void *arg)
{
    (void)arg;
    log_tap_suppress(true); /* the exporter's own lines (a receiver down) are not exported again */
    uint64_t now = time_mono_us();
    uint64_t next_spans = now + (uint64_t)X.delay_ms * 1000;
    uint64_t next_metrics = now + (uint64_t)X.metric_ms * 1000;
    uint64_t next_logs = now + (uint64_t)X.log_delay_ms * 1000;
    pthread_mutex_lock(&X.lock);
    for (;;) {
        while (!X.stop && X.queued < X.batch_max && X.lqueued < X.batch_max) {
            uint64_t t = X.traces_on ? next_spans : UINT64_MAX;
            if (X.metrics_on && next_metrics < t)
                t = next_metrics;
            if (X.logs_on && next_logs < t)
                t = next_logs;
            if (time_mono_us() >= t)
                break;
            wait_until(t);
        }
        bool stopping = X.stop;
        now = time_mono_us();
        if (X.traces_on && (X.queued >= X.batch_max || now >= next_spans || stopping)) {
            do {
                size_t n;
                struct otel_span *batch = take_batch(&X.head, &X.tail, &X.queued, &n);
                if (!batch)
                    break;
                pthread_mutex_unlock(&X.lock);
                export_spans(batch, n, stopping);
                pthread_mutex_lock(&X.lock);
            } while (stopping || X.queued >= X.batch_max);
            next_spans = time_mono_us() + (uint64_t)X.delay_ms * 1000;
        }
        if (X.logs_on && (X.lqueued >= X.batch_max || now >= next_logs || stopping)) {
            do {
                size_t n;
                struct otel_span *batch = take_batch(&X.lhead, &X.ltail, &X.lqueued, &n);
                if (!batch)
                    break;
                pthread_mutex_unlock(&X.lock);
                export_logs(batch, n, stopping);
                pthread_mutex_lock(&X.lock);
            } while (stopping || X.lqueued >= X.batch_max);
            next_logs = time_mono_us() + (uint64_t)X.log_delay_ms * 1000;
        }
        if (X.metrics_on && (now >= next_metrics || stopping)) {
            pthread_mutex_unlock(&X.lock);
            export_metrics(stopping);
            pthread_mutex_lock(&X.lock);
            next_metrics = time_mono_us() + (uint64_t)X.metric_ms * 1000;
        }
        if (stopping)
            break;
    }
    pthread_mutex_unlock(&X.lock);
    return NULL;
}

/* ---------- start / stop ---------- */

static void add_kv(struct kv **arr, size_t *n, const char *k, const char *v)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*arr)[i].k, k) == 0) {
            xfree((*arr)[i].v);
            (*arr)[i].v = xstrdup(v);
            return;
        }
    *arr = xrealloc(*arr, (*n + 1) * sizeof(**arr));
    (*arr)[*n].k = xstrdup(k);
    (*arr)[*n].v = xstrdup(v);
    (*n)++;
}

static void header_cb(const char *k, const char *v, void *ud)
{
    (void)ud;
    add_kv(&X.headers, &X.nheaders, k, v);
}

static void resource_cb(const char *k, const char *v, void *ud)
{
    (void)ud;
    add_kv(&X.resource, &X.nresource, k, v);
}

static void resource_env(const char *key, const char *env)
{
    const char *v = getenv(env);
    if (v && *v)
        add_kv(&X.resource, &X.nresource, key, v);
}

static void build_resource(const struct config *cfg)
{
    const struct config_telemetry *t = &cfg->telemetry;
    add_kv(&X.resource, &X.nresource, "service.name", "agentd");
    add_kv(&X.resource, &X.nresource, "service.version", AGENTD_VERSION);
    add_kv(&X.resource, &X.nresource, "telemetry.sdk.name", "agentd");
    add_kv(&X.resource, &X.nresource, "telemetry.sdk.language", "c");
    add_kv(&X.resource, &X.nresource, "telemetry.sdk.version", AGENTD_VERSION);
    if (cfg->server.environment && *cfg->server.environment)
        add_kv(&X.resource, &X.nresource, "deployment.environment.name", cfg->server.environment);
    char host[256];
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        add_kv(&X.resource, &X.nresource, "host.name", host);
    }
    /* Kubernetes downward API (fieldRef env vars), by the names the OpenTelemetry operator uses */
    resource_env("k8s.pod.name", "K8S_POD_NAME");
    resource_env("k8s.pod.uid", "K8S_POD_UID");
    resource_env("k8s.namespace.name", "K8S_NAMESPACE_NAME");
    resource_env("k8s.node.name", "K8S_NODE_NAME");
    resource_env("k8s.container.name", "K8S_CONTAINER_NAME");
    resource_env("k8s.deployment.name", "K8S_DEPLOYMENT_NAME");
    otel_parse_kv_list(t->resource_attributes, resource_cb, NULL);
    if (t->service_name && *t->service_name) /* OTEL_SERVICE_NAME wins over OTEL_RESOURCE_ATTRIBUTES */
        add_kv(&X.resource, &X.nresource, "service.name", t->service_name);
}

static void signal_target(struct target *tg, const char *specific, const char *base, const char *suffix)
{
    char url[2048];
    if (specific && *specific) {
        snprintf(url, sizeof(url), "%s", specific);
    } else if (base && *base) {
        size_t n = strlen(base);
        snprintf(url, sizeof(url), "%s%s%s", base, n && base[n - 1] == '/' ? "" : "/", suffix);
    } else {
        return;
    }
    if (parse_url(url, tg) != 0)
        log_warn("telemetry: cannot use OTLP endpoint '%s'", url);
}

static char target_env[128], target_service[128];

/* target_info: the resource as Prometheus sees it (OpenTelemetry's Prometheus compatibility rule), so that
 * deployment.environment labels /metrics too. */
static void target_info(struct buf *out, void *ud)
{
    (void)ud;
    buf_append_str(out, "# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{service_name=\"");
    metrics_append_label_value(out, target_service);
    buf_append_str(out, "\",service_version=\"" AGENTD_VERSION "\",deployment_environment=\"");
    metrics_append_label_value(out, target_env);
    buf_append_str(out, "\"} 1\n");
}

int otel_start(const struct config *cfg)
{
    const struct config_telemetry *t = &cfg->telemetry;
    snprintf(target_env, sizeof(target_env), "%s", cfg->server.environment ? cfg->server.environment : "");
    snprintf(target_service, sizeof(target_service), "%s",
             t->service_name && *t->service_name ? t->service_name : "agentd");
    metrics_add_collector(target_info, NULL);
    metrics_register(&otel_dropped);
    metrics_register(&otel_exported);
    metrics_register(&otel_retries);
    if (X.started || t->disabled)
        return 0;
    X.ids_on = true;
    X.sampler = t->sampler;
    X.ratio = t->sampler_arg;
    X.capture = t->capture_content;
    X.resp_header = t->response_header == OTEL_RESPONSE_HEADER_TRACEPARENT;
    X.json = t->protocol == OTEL_PROTO_HTTP_JSON;
    X.gzip = t->compression == OTEL_COMPRESSION_GZIP;
    X.timeout_ms = t->timeout_ms;
    X.delay_ms = t->schedule_delay_ms;
    X.metric_ms = t->metric_export_interval_ms;
    X.log_delay_ms = t->logs_schedule_delay_ms;
    xfree(X.ca_file);
    X.ca_file = t->certificate && *t->certificate ? xstrdup(t->certificate) : NULL;
    X.queue_max = (size_t)t->max_queue_size;
    X.batch_max = (size_t)t->max_export_batch_size;
    X.start_ns = wall_ns();
    if (t->traces)
        signal_target(&X.traces, t->traces_endpoint, t->endpoint, "v1/traces");
    if (t->metrics)
        signal_target(&X.metrics, t->metrics_endpoint, t->endpoint, "v1/metrics");
    if (t->logs)
        signal_target(&X.logs, t->logs_endpoint, t->endpoint, "v1/logs");
    if (!X.traces.set && !X.metrics.set && !X.logs.set)
        return 0; /* trace context only */
    otel_parse_kv_list(t->headers, header_cb, NULL);
    build_resource(cfg);
    /* the waits compute monotonic deadlines: the condition variable must use that clock */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&X.cond);
    pthread_cond_init(&X.cond, &ca);
    pthread_condattr_destroy(&ca);
    X.stop = false;
    X.traces_on = X.traces.set;
    X.metrics_on = X.metrics.set;
    X.logs_on = X.logs.set;
    if (pthread_create(&X.thread, NULL, exporter_main, NULL) != 0) {
        log_error("telemetry: cannot start the exporter thread");
        X.traces_on = X.metrics_on = X.logs_on = false;
        return -1;
    }
    X.started = true;
    if (X.logs_on)
        log_set_tap(log_tap);
    log_info("telemetry: exporting%s%s%s over OTLP/HTTP (%s%s)", X.traces_on ? " traces" : "",
             X.metrics_on ? " metrics" : "", X.logs_on ? " logs" : "", X.json ? "json" : "protobuf",
             X.gzip ? ", gzip" : "");
    return 0;
}

void otel_stop(void)
{
    log_set_tap(NULL);
    if (X.started) {
        pthread_mutex_lock(&X.lock);
        X.stop = true;
        pthread_cond_broadcast(&X.cond);
        pthread_mutex_unlock(&X.lock);
        pthread_join(X.thread, NULL);
        X.started = false;
    }
    X.traces_on = X.metrics_on = X.logs_on = X.ids_on = false;
    pthread_mutex_lock(&X.lock);
    struct otel_span *s = X.head, *r = X.lhead;
    X.head = X.tail = X.lhead = X.ltail = NULL;
    X.queued = X.lqueued = 0;
    pthread_mutex_unlock(&X.lock);
    while (s) {
        struct otel_span *next = s->next;
        otel_span_free(s);
        s = next;
    }
    while (r) {
        struct otel_span *next = r->next;
        otel_span_free(r);
        r = next;
    }
    for (size_t i = 0; i < X.nheaders; i++) {
        xfree(X.headers[i].k);
        xfree(X.headers[i].v);
    }
    for (size_t i = 0; i < X.nresource; i++) {
        xfree(X.resource[i].k);
        xfree(X.resource[i].v);
    }
    xfree(X.headers);
    xfree(X.resource);
    X.headers = X.resource = NULL;
    X.nheaders = X.nresource = 0;
    memset(&X.traces, 0, sizeof(X.traces));
    memset(&X.metrics, 0, sizeof(X.metrics));
    memset(&X.logs, 0, sizeof(X.logs));
    pool_drain();
    xfree(X.ca_file);
    X.ca_file = NULL;
}
