/* otlp.h: the OpenTelemetry exporter: spans, metrics and logs over OTLP/HTTP (protobuf or JSON) from one background
 * thread.
 *
 * Worker threads hand finished spans to a bounded queue (a short mutex hold, never a wait): when the queue is
 * full the span is dropped and counted (agentd_otel_dropped_total{signal="traces",reason="queue_full"}). The
 * exporter thread sends a batch when max_export_batch_size spans wait or schedule_delay_ms has passed, and the
 * metrics registry (telemetry/metrics.h, the one behind /metrics) every metric_export_interval_ms, cumulative.
 * 429/502/503/504 and connection failures are retried with exponential backoff and jitter, honouring
 * Retry-After, within the export timeout; other failures drop the batch and count it. otel_stop() flushes what is
 * queued (one try each) and joins the thread. */
#ifndef AGENTD_OTLP_H
#define AGENTD_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "telemetry/trace.h"

struct config;

enum otel_span_kind { OTEL_SPAN_INTERNAL = 1, OTEL_SPAN_SERVER = 2, OTEL_SPAN_CLIENT = 3 };
enum otel_status { OTEL_STATUS_UNSET = 0, OTEL_STATUS_OK = 1, OTEL_STATUS_ERROR = 2 };

#define OTEL_MAX_ATTRS 48

enum otel_attr_type { OA_STR, OA_INT, OA_DOUBLE, OA_BOOL, OA_STRARR };
struct otel_attr {
    const char *key;  /* static storage (the names table) */
    enum otel_attr_type type;
    union {
        int64_t i;
        double d;
        bool b;
    } v;
    uint32_t soff, slen, nstr; /* strings: offset and length in the span's arena; OA_STRARR: nstr NUL-ended */
};

struct otel_span {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    bool has_parent, remote_parent;
    uint8_t trace_flags;
    enum otel_span_kind kind;
    uint64_t start_ns, end_ns;
    enum otel_status status;
    char name[160];
    char status_msg[160];
    struct otel_attr attrs[OTEL_MAX_ATTRS];
    unsigned nattrs, dropped_attrs;
    struct buf arena; /* attribute strings (bounded) */
    struct otel_span *next;
    /* a log record (otel_log_new): name is the eventName ("" for a plain line), start_ns the time, trace_id and
     * span_id set when has_trace, the body a string in the arena */
    uint8_t severity;
    bool has_trace;
    uint32_t body_off, body_len;
};

/* Starts the exporter per cfg->telemetry (a copy is kept). 0, or -1 with a log line. Call once, before workers. */
int otel_start(const struct config *cfg);
/* Flushes queued spans and a last metrics export, stops the thread. Safe when never started. */
void otel_stop(void);

/* True when trace ids are given out (telemetry not disabled). */
bool otel_trace_context_on(void);
/* True when spans are exported (an endpoint for traces). */
bool otel_traces_on(void);
/* The configured sampler decision for a trace (parent: the client's traceparent, or NULL). */
bool otel_sample(const uint8_t trace_id[16], const struct trace_parent *parent);
bool otel_capture_content(void);
bool otel_response_header(void);

struct otel_span *otel_span_new(void);
void otel_span_free(struct otel_span *s);
void otel_span_str(struct otel_span *s, const char *key, const char *v, size_t n);
void otel_span_cstr(struct otel_span *s, const char *key, const char *v);
void otel_span_int(struct otel_span *s, const char *key, int64_t v);
void otel_span_double(struct otel_span *s, const char *key, double v);
void otel_span_bool(struct otel_span *s, const char *key, bool v);
void otel_span_strarr(struct otel_span *s, const char *key, const char *const *v, size_t n);
/* Hands a finished span to the exporter (which frees it). Never blocks; dropped and counted when full. */
void otel_span_submit(struct otel_span *s);

/* ---- logs (OTLP logs signal) ----
 * Every JSON log line goes out as a log record (body: the line, severity from its level, trace and span ids when
 * the line has them: log_field_trace) once otel_start saw a logs endpoint; events (gen_ai.evaluation.result) are
 * records with an eventName and attributes. Same queue discipline as spans: bounded, dropped and counted
 * (agentd_otel_dropped_total{signal="logs"}) when full, never a wait. */
bool otel_logs_on(void);
/* severity: the OpenTelemetry SeverityNumber (9 INFO, 13 WARN, 17 ERROR); event_name static or NULL; ids NULL
 * when the record belongs to no trace. */
struct otel_span *otel_log_new(int severity, const char *event_name, const uint8_t *trace_id,
                               const uint8_t *span_id);
void otel_log_body(struct otel_span *r, const char *s, size_t n);
void otel_log_submit(struct otel_span *r);
int otlp_encode_logs(struct buf *out, const struct otel_span *recs, bool json);

/* Encoders (exposed for the unit tests): an ExportTraceServiceRequest for spans (a list linked by next) and an
 * ExportMetricsServiceRequest for the registry, with the resource of the running exporter (or service.name only
 * when none runs). 0, or -1 when the output would exceed out's limit; otlp_encode_metrics returns 1 when the
 * registry has no data point (nothing worth sending). */
int otlp_encode_spans(struct buf *out, const struct otel_span *spans, bool json);
int otlp_encode_metrics(struct buf *out, uint64_t start_ns, uint64_t now_ns, bool json);

/* gzip of in appended to out (Content-Encoding: gzip). 0, or -1. */
int otlp_gzip(const struct buf *in, struct buf *out);

/* Counters for tests and /metrics. */
uint64_t otel_dropped_spans(void);

#endif
