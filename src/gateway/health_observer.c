/* health_observer.c: the exchange observer that feeds per-deployment health (dep_health.h) from every attempt's
 * typed outcome, the breaker-state metric and the GET /admin/deployments view (declared in exchange.h). */
#include <stdio.h>

#include "common/buf.h"
#include "config/config.h"
#include "gateway/dep_health.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "telemetry/metrics.h"

/* What an outcome says about the deployment (not about the request). */
static enum breaker_event breaker_event_of(const struct attempt_outcome *o)
{
    switch (o->result) {
    case AO_OK: return BR_SUCCESS;
    case AO_HTTP_STATUS:
        if (o->status == 429)
            return BR_NEUTRAL; /* a rate limit is not an outage (its Retry-After throttles instead) */
        if (o->status == 408 || o->status >= 500)
            return BR_FAILURE;
        return BR_SUCCESS;     /* it answered: the request was at fault */
    case AO_CONNECT_REFUSED:
    case AO_CONNECT_TIMEOUT:
    case AO_FIRST_BYTE_TIMEOUT:
    case AO_IDLE_TIMEOUT:
    case AO_TIMEOUT:
    case AO_RESET_BEFORE_FIRST_BYTE:
    case AO_RESET_AFTER_FIRST_BYTE:
    case AO_TLS:
    case AO_PROTOCOL:
    case AO_DNS:
    case AO_DECODE: return BR_FAILURE;
    default: return BR_NEUTRAL; /* cancelled, refused by agentd, too large, local failures */
    }
}

static void health_attempt_start(struct exchange *ex, struct attempt *a, struct up_request *r)
{
    (void)ex;
    (void)r;
    if (a->dep->st)
        atomic_fetch_add_explicit(&a->dep->st->outstanding, 1, memory_order_relaxed);
}

static void health_attempt_end(const struct exchange *ex, const struct attempt *a, const struct attempt_outcome *o)
{
    (void)ex;
    struct dep_state *st = a->dep->st;
    if (st == NULL)
        return;
    if (a->started)
        atomic_fetch_sub_explicit(&st->outstanding, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->attempts, 1, memory_order_relaxed);
    /* the transfer's end when it has one (read by the upstream client: no second clock read, issue 16 item 8) */
    int64_t now = a->t_done_us ? (int64_t)(a->t_done_us / 1000) : dep_now_ms();
    enum breaker_event ev = breaker_event_of(o);
    if (ev == BR_FAILURE)
        atomic_fetch_add_explicit(&st->failures, 1, memory_order_relaxed);
    breaker_record(&st->br, now, ev, a->breaker_probe);
    if (o->result == AO_HTTP_STATUS && o->status == 429 && o->retry_after_ms > 0)
        breaker_throttle(&st->br, now, o->retry_after_ms);
    if (o->result == AO_OK && a->t_headers_us && a->t_attempt_us && a->t_headers_us > a->t_attempt_us)
        dep_ewma_add(st, a->t_headers_us - a->t_attempt_us);
}

const struct ex_observer health_observer = {
    .name = "health", .on_attempt_start = health_attempt_start, .on_attempt_end = health_attempt_end};

static void collect_breakers(struct buf *out, void *ud)
{
    (void)ud;
    struct config *cfg = config_acquire();
    if (cfg == NULL)
        return;
    const struct registry *r = registry_of(cfg);
    buf_append_str(out, "# HELP agentd_gateway_breaker_state Circuit breaker of each deployment: 0 closed, 1 "
                        "half-open, 2 open.\n# TYPE agentd_gateway_breaker_state gauge\n");
    int64_t now = dep_now_ms();
    for (size_t i = 0; r && i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            const struct deployment *d = &r->models[i].deps[j];
            if (d->st == NULL)
                continue;
            buf_append_str(out, "agentd_gateway_breaker_state{model=\"");
            metrics_append_label_value(out, r->models[i].name);
            buf_append_str(out, "\",deployment=\"");
            metrics_append_label_value(out, d->label);
            buf_printf(out, "\"} %d\n", (int)breaker_state(&d->st->br, now));
        }
    config_unref(cfg);
}

void health_observer_register_metrics(void)
{
    metrics_add_collector(collect_breakers, NULL);
}

void health_observer_deployments_json(const struct config *cfg, struct buf *out)
{
    const struct registry *r = registry_of(cfg);
    int64_t now = dep_now_ms();
    buf_append_str(out, "{\"object\":\"list\",\"data\":[");
    bool first = true;
    for (size_t i = 0; r && i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            const struct deployment *d = &r->models[i].deps[j];
            if (d->st == NULL)
                continue;
            struct breaker_view v;
            breaker_view(&d->st->br, now, &v);
            buf_append_str(out, first ? "{\"model\":" : ",{\"model\":");
            first = false;
            buf_append_json_cstr(out, r->models[i].name);
            buf_append_str(out, ",\"id\":");
            buf_append_json_cstr(out, d->label);
            buf_append_str(out, ",\"provider\":");
            buf_append_json_cstr(out, d->prov ? d->prov->name : "");
            buf_printf(out,
                       ",\"weight\":%lld,\"usable\":%s,\"breaker\":{\"state\":\"%s\",\"window_ok\":%u,"
                       "\"window_failed\":%u,\"consecutive_failures\":%lld,\"open_remaining_ms\":%lld,"
                       "\"opened_total\":%llu},\"throttle_remaining_ms\":%lld,\"outstanding\":%ld,"
                       "\"ewma_ttfb_ms\":%.3f,\"attempts\":%llu,\"failures\":%llu}",
                       (long long)d->weight, d->missing_key ? "false" : "true", breaker_state_name(v.state),
                       v.window_ok, v.window_failed, (long long)v.consecutive, (long long)v.open_remaining_ms,
                       (unsigned long long)v.opened_total, (long long)v.throttle_remaining_ms,
                       atomic_load(&d->st->outstanding), (double)atomic_load(&d->st->ewma_ttfb_us) / 1e3,
                       (unsigned long long)atomic_load(&d->st->attempts),
                       (unsigned long long)atomic_load(&d->st->failures));
        }
    buf_append_str(out, "]}");
}
