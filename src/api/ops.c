#include "api/ops.h"

#include <stdio.h>
#include <string.h>

#include "api/worker.h"
#include "gateway/admission.h"
#include "gateway/cloud_creds.h"
#include "gateway/govern.h"
#include "gateway/registry.h"
#include "policy/lease.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "store/store_config.h"
#include "telemetry/metrics.h"

struct ops_state ops_state;

void ops_health(struct http_req *req)
{
    /* Liveness: every worker loop turned recently. A stuck loop (a blocking call, a livelock) fails the probe so
     * Kubernetes restarts the pod. */
    uint64_t now = time_mono_us();
    uint64_t stall_us = (uint64_t)req->cfg->server.health_stall_ms * 1000;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    int stalled = 0;
    buf_append_str(&b, "{\"status\":\"");
    size_t status_at = b.len;
    buf_append_str(&b, "ok\",\"workers\":[");
    for (int i = 0; i < ops_state.nworkers; i++) {
        struct worker *w = &ops_state.workers[i];
        uint64_t last = atomic_load_explicit(&w->last_turn_us, memory_order_relaxed);
        uint64_t age = now > last ? now - last : 0;
        bool stopped = atomic_load_explicit(&w->stopped, memory_order_relaxed);
        bool bad = !stopped && age > stall_us;
        stalled += bad;
        buf_append_str(&b, i ? ",{\"id\":" : "{\"id\":");
        buf_append_u64(&b, (uint64_t)w->id);
        buf_append_str(&b, ",\"last_turn_ms_ago\":");
        buf_append_u64(&b, age / 1000);
        buf_append_str(&b, bad ? ",\"ok\":false}" : ",\"ok\":true}");
    }
    buf_append_str(&b, "],\"uptime_s\":");
    buf_append_u64(&b, (now - ops_state.started_us) / 1000000);
    buf_append_char(&b, '}');
    if (stalled) {
        /* "ok" -> "stalled": patch in place to keep one pass */
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        buf_append(&out, b.data, status_at);
        buf_append_str(&out, "stalled");
        buf_append(&out, b.data + status_at + 2, b.len - status_at - 2);
        http_respond(req, 503, "application/json", out.data, out.len);
        buf_free(&out);
    } else {
        http_respond(req, 200, "application/json", b.data, b.len);
    }
    buf_free(&b);
}

/* Cloud credentials (issue 13 item 4): each deployment with a token source (a label shared by two deployments
 * with different sources is listed for each), and why it has no valid token.
 * Reported, never failing readiness: other deployments (or fallbacks) may serve. */
static void creds_report(struct buf *b, const struct config *cfg)
{
    const struct registry *r = cfg ? registry_of(cfg) : NULL;
    if (r == NULL)
        return;
    bool any = false;
    for (size_t i = 0; i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            const struct deployment *d = &r->models[i].deps[j];
            if (d->creds == NULL)
                continue;
            bool seen = false; /* a deployment listed under several models is reported once */
            for (size_t k = 0; k <= i && !seen; k++)
                for (size_t l = 0; l < (k == i ? j : r->models[k].ndeps) && !seen; l++)
                    seen = r->models[k].deps[l].creds == d->creds && strcmp(r->models[k].deps[l].label, d->label) == 0;
            if (seen)
                continue;
            char why[512] = "";
            bool ok = cc_source_state(d->creds, why, sizeof(why));
            buf_append_str(b, any ? ",{\"deployment\":" : ",\"credentials\":[{\"deployment\":");
            any = true;
            buf_append_json_cstr(b, d->label);
            buf_append_str(b, ",\"source\":");
            buf_append_json_cstr(b, cc_source_kind(d->creds));
            buf_append_str(b, ok ? ",\"ok\":true}" : ",\"ok\":false,\"error\":");
            if (!ok) {
                buf_append_json_cstr(b, why);
                buf_append_char(b, '}');
            }
        }
    if (any)
        buf_append_char(b, ']');
}

void ops_ready(struct http_req *req)
{
    bool draining = atomic_load(&ops_state.draining);
    bool data_ok = atomic_load(&ops_state.data_dir_ok);
    bool cfg_ok = atomic_load(&ops_state.config_ok);
    size_t backlog = 0;
    bool ledger_ok = !govern_ledger_failing(&backlog); /* a failing ledger writer is reported, not fatal */
    /* A queue over its high-water mark: let the load balancer send new work elsewhere until it shrinks. */
    long queued = adm_queued(&admission_global);
    long high = (long)req->cfg->gateway.admission.ready_high_water;
    bool queue_ok = high <= 0 || queued <= high;
    /* cluster mode: the shared database (PostgreSQL) is reachable */
    char why[400] = "";
    bool db_ok = store_backend_ready(why, sizeof(why));
    /* cluster mode: Redis unreachable. With on_redis_down: closed this replica refuses what its leases do not
     * cover, so it is not ready; open, it serves on and only says so. */
    char rwhy[256] = "";
    bool redis_ok = lease_redis_ok(rwhy, sizeof(rwhy));
    bool ready = !draining && data_ok && cfg_ok && queue_ok && db_ok && (redis_ok || lease_fail_open());
    struct buf b = BUF_INIT(4096);
    buf_printf(&b,
               "{\"status\":\"%s\",\"checks\":{\"config\":%s,\"data_dir\":%s,\"draining\":%s,"
               "\"ledger\":%s,\"ledger_backlog\":%zu,\"admission_queue\":%s,\"admission_queue_depth\":%ld",
               ready ? "ready" : "not_ready", cfg_ok ? "true" : "false", data_ok ? "true" : "false",
               draining ? "true" : "false", ledger_ok ? "true" : "false", backlog, queue_ok ? "true" : "false",
               queued);
    if (strcmp(store_backend_name(), "sqlite") != 0) /* the shared database, in cluster mode only */
        buf_printf(&b, ",\"database\":%s", db_ok ? "true" : "false");
    if (lease_enabled()) { /* Redis, in cluster mode only */
        buf_append_str(&b, redis_ok ? ",\"redis\":true" : ",\"redis\":false,\"redis_error\":");
        if (!redis_ok)
            buf_append_json_cstr(&b, rwhy);
    }
    creds_report(&b, req->cfg);
    buf_append_char(&b, '}');
    if (!db_ok) {
        buf_append_str(&b, ",\"reason\":");
        buf_append_json_cstr(&b, why);
    }
    buf_append_char(&b, '}');
    http_respond(req, ready ? 200 : 503, "application/json", b.data, b.len);
    buf_free(&b);
}

void ops_metrics(struct http_req *req)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    /* OpenMetrics when the scraper asks for it (Prometheus does): the only format that carries exemplars */
    const struct str *acc = http_req_header(req, "accept");
    if (acc && memmem(acc->p, acc->n, "application/openmetrics-text", 28) != NULL) {
        metrics_render_openmetrics(&b);
        http_respond(req, 200, "application/openmetrics-text; version=1.0.0; charset=utf-8", b.data, b.len);
    } else {
        metrics_render(&b);
        http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    }
    buf_free(&b);
}

/* ---- HTTP server metrics and access log ---- */

static const double duration_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25,   0.5,   1,      2.5,   5,    10,   30,    60};
static const char *const req_labels[] = {"listener", "method", "route", "code", NULL};
static const char *const dur_labels[] = {"listener", "method", "route", NULL};
static const char *const listener_label[] = {"listener", NULL};
static const char *const conn_labels[] = {"listener", "event", NULL};

static struct metric_def m_requests =
    METRIC_DEF("http_server_requests_total", "HTTP requests served, by status code.", METRIC_COUNTER, req_labels);
static struct metric_def m_duration =
    METRIC_HISTOGRAM_DEF("http_server_request_duration_seconds",
                         "Time from the first request byte to the end of the response.", dur_labels, duration_buckets);
static struct metric_def m_bytes_in = METRIC_DEF("http_server_request_bytes_total",
                                                 "Request bytes received (URL, headers and body).", METRIC_COUNTER,
                                                 listener_label);
static struct metric_def m_bytes_out =
    METRIC_DEF("http_server_response_body_bytes_total", "Response body bytes sent.", METRIC_COUNTER, listener_label);
static struct metric_def m_conns =
    METRIC_DEF("http_server_connections_total", "Client connections by event: opened, closed, rejected at the limit, evicted (idle, to make room at the limit).",
               METRIC_COUNTER, conn_labels);
static struct metric_def m_open =
    METRIC_DEF("http_server_open_connections", "Client connections open now.", METRIC_GAUGE, listener_label);

static void on_request_done(struct http_req *r, uint64_t duration_us)
{
    char code[8];
    code[fmt_u64(code, (uint64_t)(r->status > 0 ? r->status : 0))] = '\0';
    const char *route = r->route ? (r->route->name ? r->route->name : r->route->path) : "unmatched";
    const char *method = r->method_str ? r->method_str : "-";
    /* the four series, kept per thread for the last listener, method, route and status (telemetry/metrics.h) */
    static _Thread_local struct metrics_memo memo;
    bool ok = metrics_memo_use(&memo, r->status, (const char *[]){r->listener, method, route}, 3);
    metrics_series_add(
        metrics_memo_series(&memo, ok, 0, &m_requests, (const char *[]){r->listener, method, route, code}), 1);
    metrics_series_observe(metrics_memo_series(&memo, ok, 1, &m_duration, (const char *[]){r->listener, method, route}),
                           (double)duration_us / 1e6);
    size_t in = r->head.len + r->body.len;
    metrics_series_add(metrics_memo_series(&memo, ok, 2, &m_bytes_in, (const char *[]){r->listener}), (double)in);
    metrics_series_add(metrics_memo_series(&memo, ok, 3, &m_bytes_out, (const char *[]){r->listener}),
                       (double)r->bytes_out);
    if (!r->cfg->log.access)
        return;
    struct log_line l;
    if (!log_begin(&l, LL_INFO, "access"))
        return;
    log_field_cstr(&l, "request_id", r->request_id);
    log_field_cstr(&l, "listener", r->listener);
    log_field_cstr(&l, "remote", r->remote);
    log_field_cstr(&l, "method", method);
    log_field_str(&l, "path", r->path.p, r->path.n > 512 ? 512 : r->path.n);
    log_field_int(&l, "status", r->status);
    log_field_uint(&l, "bytes_in", in);
    log_field_uint(&l, "bytes_out", r->bytes_out);
    log_field_uint(&l, "duration_us", duration_us);
    if (r->error_reason)
        log_field_cstr(&l, "error", r->error_reason);
    if (r->has_trace)
        log_field_trace(&l, r->trace_id, r->span_id);
    const struct str *ua = http_req_header(r, "user-agent");
    if (ua)
        log_field_str(&l, "user_agent", ua->p, ua->n > 200 ? 200 : ua->n);
    log_end(&l);
}

static void on_connection(const char *listener, enum http_conn_event ev)
{
    static const char *const names[] = {"opened", "closed", "rejected", "evicted"};
    metrics_inc(&m_conns, (const char *[]){listener, names[ev]});
    if (ev == HTTP_CONN_OPEN)
        metrics_add(&m_open, (const char *[]){listener}, 1);
    else if (ev == HTTP_CONN_CLOSE)
        metrics_add(&m_open, (const char *[]){listener}, -1);
}

void ops_init_http_metrics(void)
{
    metrics_register(&m_requests);
    metrics_register(&m_duration);
    metrics_register(&m_bytes_in);
    metrics_register(&m_bytes_out);
    metrics_register(&m_conns);
    metrics_register(&m_open);
    static const struct http_server_hooks hooks = {on_request_done, on_connection};
    http_server_set_hooks(&hooks);
}
