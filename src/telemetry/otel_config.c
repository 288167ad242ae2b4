/* otel_config.c: the schema of the `telemetry:` section: OpenTelemetry export settings, each with the
 * standard OTEL_* variable as its environment name (OpenTelemetry SDK environment variables). */
#include "telemetry/otel_config.h"

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/macros.h"
#include "config/config.h"
#include "telemetry/trace.h"

static const char *const protocols[] = {"http/protobuf", "http/json", NULL};
static const char *const compressions[] = {"none", "gzip", NULL};
static const char *const samplers[] = {"always_on",
                                       "always_off",
                                       "traceidratio",
                                       "parentbased_always_on",
                                       "parentbased_always_off",
                                       "parentbased_traceidratio",
                                       NULL};
_Static_assert(ARRAY_LEN(samplers) == SAMPLER_PARENTBASED_TRACEIDRATIO + 2, "one name per enum trace_sampler");
static const char *const resp_headers[] = {"traceparent", "none", NULL};

static int hexd(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copies [s, e) trimmed and percent-decoded into dst (at most cap-1 bytes). -1 on a bad escape or overflow. */
static int decode_part(const char *s, const char *e, char *dst, size_t cap, bool key)
{
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    size_t n = 0;
    for (; s < e; s++) {
        char c = *s;
        if (c == '%' && !key) {
            if (e - s < 3 || hexd(s[1]) < 0 || hexd(s[2]) < 0)
                return -1;
            c = (char)(hexd(s[1]) << 4 | hexd(s[2]));
            s += 2;
        } else if (key && (isspace((unsigned char)c) || c == '=' || (unsigned char)c < 0x21 || c == 0x7f)) {
            return -1;
        }
        if (c == '\r' || c == '\n' || c == '\0')
            return -1; /* never a line break into a header */
        if (n + 1 >= cap)
            return -1;
        dst[n++] = c;
    }
    dst[n] = '\0';
    return key && n == 0 ? -1 : 0;
}

int otel_parse_kv_list(const char *s, void (*fn)(const char *k, const char *v, void *ud), void *ud)
{
    if (s == NULL)
        return 0;
    char k[256], v[4096];
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        bool blank = true;
        for (const char *q = p; q < end; q++)
            if (!isspace((unsigned char)*q))
                blank = false;
        if (!blank) {
            if (!eq || decode_part(p, eq, k, sizeof(k), true) != 0 || decode_part(eq + 1, end, v, sizeof(v), false) != 0)
                return -1;
            if (fn)
                fn(k, v, ud);
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

static bool url_ok(const char *u)
{
    return u == NULL || *u == '\0' || strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

static void eval_rate_check(const char *k, const char *v, void *ud)
{
    (void)k;
    char *end;
    double r = strtod(v, &end);
    if (end == v || *end != '\0' || !(r >= 0 && r <= 1))
        *(bool *)ud = true;
}

static void finish(struct cfg_ctx *ctx, void *obj, const char *path)
{
    const struct config_telemetry *t = obj;
    bool bad_rate = false;
    static const struct {
        size_t off;
        const char *key, *env;
    } urls[] = {
        {offsetof(struct config_telemetry, endpoint), "endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"},
        {offsetof(struct config_telemetry, traces_endpoint), "traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
        {offsetof(struct config_telemetry, metrics_endpoint), "metrics_endpoint",
         "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"},
        {offsetof(struct config_telemetry, logs_endpoint), "logs_endpoint", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"},
    };
    for (size_t i = 0; i < ARRAY_LEN(urls); i++) {
        const char *u = *(char *const *)((const char *)t + urls[i].off);
        if (!url_ok(u))
            cfg_error_at(ctx, NULL, path, "%s (%s): '%s' is not an http:// or https:// URL", urls[i].key, urls[i].env,
                         u);
    }
    if (otel_parse_kv_list(t->headers, NULL, NULL) != 0)
        cfg_error_at(ctx, NULL, path,
                     "headers (OTEL_EXPORTER_OTLP_HEADERS): malformed list; expected key=value,key2=value2 with "
                     "percent-encoded values");
    if (otel_parse_kv_list(t->resource_attributes, NULL, NULL) != 0)
        cfg_error_at(ctx, NULL, path,
                     "resource_attributes (OTEL_RESOURCE_ATTRIBUTES): malformed list; expected key=value,key2=value2");
    if (otel_parse_kv_list(t->evaluations, eval_rate_check, &bad_rate) != 0 || bad_rate)
        cfg_error_at(ctx, NULL, path,
                     "evaluations: expected workflow:<name>=rate,<model>=rate,*=rate with rates from 0 to 1");
    if (t->max_export_batch_size > t->max_queue_size)
        cfg_error_at(ctx, NULL, path,
                     "max_export_batch_size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE) %lld is larger than max_queue_size "
                     "(OTEL_BSP_MAX_QUEUE_SIZE) %lld",
                     (long long)t->max_export_batch_size, (long long)t->max_queue_size);
}

#define TOFF(f) offsetof(struct config_telemetry, f)
static const struct cfg_field otel_fields[] = {
    {.key = "disabled", .type = CFG_BOOL, .off = TOFF(disabled), .def = "false", .flags = CFG_RESTART,
     .env_alias = "OTEL_SDK_DISABLED", .help = "turn OpenTelemetry off altogether (no trace ids, no export)"},
    {.key = "endpoint", .type = CFG_STRING, .off = TOFF(endpoint), .def = "", .flags = CFG_RESTART,
     .env_alias = "OTEL_EXPORTER_OTLP_ENDPOINT",
     .help = "OTLP/HTTP base URL (v1/traces, v1/metrics, v1/logs appended); empty: only per-signal endpoints"},
    {.key = "traces_endpoint", .type = CFG_STRING, .off = TOFF(traces_endpoint), .def = "", .flags = CFG_RESTART,
     .env_alias = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", .help = "OTLP/HTTP URL for spans, used as is"},
    {.key = "metrics_endpoint", .type = CFG_STRING, .off = TOFF(metrics_endpoint), .def = "", .flags = CFG_RESTART,
     .env_alias = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", .help = "OTLP/HTTP URL for metrics, used as is"},
    {.key = "logs_endpoint", .type = CFG_STRING, .off = TOFF(logs_endpoint), .def = "", .flags = CFG_RESTART,
     .env_alias = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", .help = "OTLP/HTTP URL for log records, used as is"},
    {.key = "protocol", .type = CFG_ENUM, .off = TOFF(protocol), .enums = protocols, .def = "http/protobuf",
     .flags = CFG_RESTART, .env_alias = "OTEL_EXPORTER_OTLP_PROTOCOL", .help = "OTLP encoding"},
    {.key = "headers", .type = CFG_STRING, .off = TOFF(headers), .def = "", .flags = CFG_RESTART | CFG_SECRET,
     .env_alias = "OTEL_EXPORTER_OTLP_HEADERS", .help = "extra request headers, key=value,key2=value2"},
    {.key = "certificate", .type = CFG_STRING, .off = TOFF(certificate), .def = "", .flags = CFG_RESTART,
     .env_alias = "OTEL_EXPORTER_OTLP_CERTIFICATE",
     .help = "CA certificate file (PEM) that signs the collector's https certificate; empty: the system's CAs"},
    {.key = "timeout_ms", .type = CFG_INT, .off = TOFF(timeout_ms), .def = "10000", .min = 1, .max = 600000,
     .flags = CFG_RESTART, .env_alias = "OTEL_EXPORTER_OTLP_TIMEOUT", .help = "one export request, milliseconds"},
    {.key = "compression", .type = CFG_ENUM, .off = TOFF(compression), .enums = compressions, .def = "none",
     .flags = CFG_RESTART, .env_alias = "OTEL_EXPORTER_OTLP_COMPRESSION", .help = "request body compression"},
    {.key = "schedule_delay_ms", .type = CFG_INT, .off = TOFF(schedule_delay_ms), .def = "5000", .min = 1,
     .max = 3600000, .flags = CFG_RESTART, .env_alias = "OTEL_BSP_SCHEDULE_DELAY",
     .help = "spans are exported at least this often, milliseconds"},
    {.key = "max_queue_size", .type = CFG_INT, .off = TOFF(max_queue_size), .def = "2048", .min = 1,
     .max = 1048576, .flags = CFG_RESTART, .env_alias = "OTEL_BSP_MAX_QUEUE_SIZE",
     .help = "finished spans waiting for export; past it spans are dropped and counted"},
    {.key = "max_export_batch_size", .type = CFG_INT, .off = TOFF(max_export_batch_size), .def = "512", .min = 1,
     .max = 1048576, .flags = CFG_RESTART, .env_alias = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
     .help = "spans per export request"},
    {.key = "metric_export_interval_ms", .type = CFG_INT, .off = TOFF(metric_export_interval_ms), .def = "60000",
     .min = 100, .max = 86400000, .flags = CFG_RESTART, .env_alias = "OTEL_METRIC_EXPORT_INTERVAL",
     .help = "metrics are exported this often, milliseconds"},
    {.key = "service_name", .type = CFG_STRING, .off = TOFF(service_name), .def = "", .flags = CFG_RESTART,
     .env_alias = "OTEL_SERVICE_NAME", .help = "service.name (default: from resource_attributes, else agentd)"},
    {.key = "resource_attributes", .type = CFG_STRING, .off = TOFF(resource_attributes), .def = "",
     .flags = CFG_RESTART, .env_alias = "OTEL_RESOURCE_ATTRIBUTES", .help = "extra resource attributes, k=v,k2=v2"},
    {.key = "sampler", .type = CFG_ENUM, .off = TOFF(sampler), .enums = samplers, .def = "parentbased_always_on",
     .flags = CFG_RESTART, .env_alias = "OTEL_TRACES_SAMPLER", .help = "which traces are recorded"},
    {.key = "sampler_arg", .type = CFG_DOUBLE, .off = TOFF(sampler_arg), .def = "1", .dmin = 0, .dmax = 1,
     .flags = CFG_RESTART, .env_alias = "OTEL_TRACES_SAMPLER_ARG", .help = "ratio for the traceidratio samplers"},
    {.key = "traces", .type = CFG_BOOL, .off = TOFF(traces), .def = "true", .flags = CFG_RESTART,
     .help = "export spans (when an endpoint is set)"},
    {.key = "metrics", .type = CFG_BOOL, .off = TOFF(metrics), .def = "true", .flags = CFG_RESTART,
     .help = "export metrics (when an endpoint is set)"},
    {.key = "logs", .type = CFG_BOOL, .off = TOFF(logs), .def = "true", .flags = CFG_RESTART,
     .help = "export the log lines and events as OTLP log records (when an endpoint is set)"},
    {.key = "logs_schedule_delay_ms", .type = CFG_INT, .off = TOFF(logs_schedule_delay_ms), .def = "1000",
     .min = 1, .max = 3600000, .flags = CFG_RESTART, .env_alias = "OTEL_BLRP_SCHEDULE_DELAY",
     .help = "log records are exported at least this often, milliseconds"},
    {.key = "capture_content", .type = CFG_BOOL, .off = TOFF(capture_content), .def = "false", .flags = CFG_RESTART,
     .help = "record prompts and responses on spans (gen_ai.input.messages / gen_ai.output.messages)"},
    {.key = "response_header", .type = CFG_ENUM, .off = TOFF(response_header), .enums = resp_headers,
     .def = "traceparent", .flags = CFG_RESTART, .help = "send the request's trace context back in a response header"},
    {.key = "evaluations", .type = CFG_STRING, .off = TOFF(evaluations), .def = "", .flags = CFG_RESTART,
     .help = "fraction of completed responses scored after they are sent: workflow:<name>=0.5,<model>=1,*=0.1"},
    {.key = "evaluation_judge", .type = CFG_STRING, .off = TOFF(evaluation_judge), .def = "", .flags = CFG_RESTART,
     .help = "model (a configured name) that grades each sampled answer through the gateway; empty: no LLM judge"},
    {.key = "evaluation_rubric", .type = CFG_STRING, .off = TOFF(evaluation_rubric),
     .def = "Grade the assistant's answer to the user's question for correctness, relevance and helpfulness.",
     .flags = CFG_RESTART, .help = "what the judge is asked to grade (its system prompt, before the reply format)"},
    {.key = "evaluation_budget_usd", .type = CFG_DOUBLE, .off = TOFF(evaluation_budget_usd), .def = "1", .dmin = 0,
     .dmax = 1e9, .flags = CFG_RESTART,
     .help = "the judge's spend since start, USD; past it judging stops (counted); 0: no limit"},
    {.key = "evaluation_budget_tokens", .type = CFG_INT, .off = TOFF(evaluation_budget_tokens), .def = "0", .min = 0,
     .max = INT64_MAX, .flags = CFG_RESTART,
     .help = "the judge's tokens (input + output) since start; past it judging stops (counted); 0: no limit"},
    {.key = "evaluation_stream_max_bytes", .type = CFG_SIZE, .off = TOFF(evaluation_stream_max_bytes),
     .def = "64KiB", .min = 0, .max = 16 << 20, .flags = CFG_RESTART,
     .help = "streamed bytes kept for a sampled answer so it can be scored; a longer stream is not scored; 0: "
             "streamed answers are not evaluated"},
};

const struct cfg_schema otel_config_schema = {
    .name = "telemetry", .fields = otel_fields, .nfields = ARRAY_LEN(otel_fields), .finish = finish};
