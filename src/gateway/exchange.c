/* exchange.c: the spine of the gateway (DESIGN §1, §1a). One struct exchange per request; it moves through the
 * stage table below and never back. One function ends an attempt (ex_attempt_end) and one ends the exchange
 * (ex_end); both tell the observers. See docs/internals/exchange.md. */
#include "gateway/usage.h"
#include "gateway/exchange.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/admission.h"
#include "gateway/cloud_creds.h"
#include "gateway/dep_health.h"
#include "gateway/eventstream.h"
#include "gateway/front.h"
#include "gateway/registry.h"
#include "gateway/redact.h"
#include "gateway/resilience.h"
#include "net/sse.h"
#include "net/upstream.h"
#include "policy/auth.h"
#include "telemetry/genai.h"
#include "telemetry/metrics.h"
#include "telemetry/otlp.h"

_Atomic long ex_inflight;

#define EX_SPARE_MAX 64 /* recycled exchanges a worker keeps (~300 KB) */

struct gateway_worker {
    uv_loop_t *loop;
    struct upstream *up;
    uint64_t rng;
    /* The stream output produced while one upstream read is fed to its parser, written to the client in one go
     * at the end of the read (on_up_data): one write per read instead of one per event, and no allocation per
     * event. relay_owner is the exchange whose read is being fed (NULL otherwise): only its output goes here.
     * Bounded by what one read produces; the buffer is kept between reads unless it grew past RELAY_KEEP. */
    struct buf relay;
    struct exchange *relay_owner;
    struct retry_budget rbudget; /* retries this worker may still add (resilience.h) */
    bool rbudget_init;
    struct adm_loop *adm;      /* where this loop's admission waiters are woken */
    struct exchange *live;     /* exchanges not yet ended (ex_worker_end_all) */
    /* Exchanges recycled on this loop (ex_submit takes one, the last ex_unref gives it back): a ~4.6 KB block
     * from glibc costs a walk of its bins on every request, and a recycled one is still in cache. Ownership rule:
     * an exchange's last reference may drop AFTER ex_worker_free (its deadline and retry timers close
     * asynchronously, on the loop's next turn). So the worker counts the exchanges it handed out (nex), and
     * ex_worker_free, when some are still out, frees everything else and leaves only this struct (gone = true);
     * the exchange whose release brings nex to 0 then frees the struct, and an exchange released on a gone
     * worker is freed, never kept. ex_unref touches only spare, nspare, nex and gone after ex_worker_free.
     * Everything runs on the worker's loop thread, so no lock. */
    struct exchange *spare[EX_SPARE_MAX];
    size_t nspare;
    size_t nex;
    bool gone;
};

#define RELAY_KEEP (64 * 1024)

/* ---------- observers ---------- */

#define EX_MAX_OBSERVERS 16
static const struct ex_observer *observers[EX_MAX_OBSERVERS];
static size_t nobservers;

int ex_observer_add(const struct ex_observer *obs)
{
    for (size_t i = 0; i < nobservers; i++)
        if (observers[i] == obs)
            return 0;
    if (nobservers >= EX_MAX_OBSERVERS)
        return -1;
    observers[nobservers++] = obs;
    return 0;
}

static const struct ex_policy *policy;
static void (*plan_hook)(struct exchange *ex);

void ex_plan_hook_set(void (*fn)(struct exchange *ex))
{
    plan_hook = fn;
}

void ex_policy_set(const struct ex_policy *p)
{
    policy = p;
}

int ex_global_init(void)
{
    genai_metrics_register();
    ex_observer_add(&observers_metrics);
    ex_observer_add(&observers_llm_log);
    ex_observer_add(&observers_eval);
    ex_observer_add(&observer_spans);
    ex_observer_add(&health_observer);
    health_observer_register_metrics();
    usage_metrics_register();
    admission_global_init();
    return upstream_global_init();
}

void ex_preload(const struct config *cfg)
{
    const struct registry *r = registry_of(cfg);
    for (size_t i = 0; r && i < r->nmodels; i++)
        for (size_t j = 0; j < r->models[i].ndeps; j++) {
            const struct deployment *d = &r->models[i].deps[j];
            if (d->provider != PROVIDER_MOCK && d->base_url &&
                upstream_url_needs_curl(d->base_url, gw_config_up_options(cfg).client)) {
                upstream_preload_curl();
                return;
            }
        }
}

void ex_global_cleanup(void)
{
    upstream_global_cleanup();
}

/* A spare exchange is off limits to everything but ex_take/ex_release: under ASan, touching one is reported as a
 * use after free, as it would be had it been freed. */
#if defined(__SANITIZE_ADDRESS__)
#define EX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EX_ASAN 1
#endif
#endif
#ifdef EX_ASAN
#include <sanitizer/asan_interface.h>
#define spare_poison(ex) ASAN_POISON_MEMORY_REGION((ex), sizeof(struct exchange))
#define spare_unpoison(ex) ASAN_UNPOISON_MEMORY_REGION((ex), sizeof(struct exchange))
#else
#define spare_poison(ex) ((void)(ex))
#define spare_unpoison(ex) ((void)(ex))
#endif

static void spare_free(struct exchange *ex)
{
    spare_unpoison(ex);
    xfree(ex);
}

/* An exchange's memory for ex_submit: a spare one of this worker's, or a new block. Not cleared. */
static struct exchange *ex_take(struct gateway_worker *g)
{
    g->nex++;
    if (g->nspare == 0)
        return xmalloc(sizeof(struct exchange));
    struct exchange *ex = g->spare[--g->nspare];
    spare_unpoison(ex);
    return ex;
}

/* The last reference is gone (see the ownership rule at struct gateway_worker). */
static void ex_release(struct exchange *ex)
{
    struct gateway_worker *g = ex->gw;
    g->nex--;
    if (g->gone) {
        xfree(ex);
        if (g->nex == 0)
            xfree(g);
        return;
    }
    if (g->nspare == EX_SPARE_MAX) {
        xfree(ex);
        return;
    }
    spare_poison(ex);
    g->spare[g->nspare++] = ex;
}

struct gateway_worker *ex_worker_new(uv_loop_t *loop, struct up_options up)
{
    struct gateway_worker *g = xcalloc(1, sizeof(*g));
    g->loop = loop;
    g->up = upstream_new(loop, up);
    g->rng = time_mono_ns() ^ (uint64_t)(uintptr_t)g;
    g->relay = (struct buf)BUF_INIT(BUF_UNBOUNDED);
    g->adm = adm_loop_new(loop);
    return g;
}

void ex_worker_free(struct gateway_worker *g)
{
    if (g == NULL)
        return;
    upstream_free(g->up);
    g->up = NULL;
    adm_loop_free(g->adm);
    g->adm = NULL;
    buf_free(&g->relay);
    for (size_t i = 0; i < g->nspare; i++)
        spare_free(g->spare[i]);
    g->nspare = 0;
    if (g->nex > 0) { /* exchanges still hold references: the last one's release frees g (ex_release) */
        g->gone = true;
        return;
    }
    xfree(g);
}

uv_loop_t *ex_worker_loop(const struct gateway_worker *g)
{
    return g->loop;
}

struct upstream *ex_worker_upstream(const struct gateway_worker *g)
{
    return g->up;
}

static uint64_t rng_next(struct gateway_worker *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

/* ---------- attempt API used by providers ---------- */

struct str ex_attempt_client_body(const struct attempt *a)
{
    return a->ex->rq.body;
}

const cJSON *ex_attempt_canonical(struct attempt *a, struct gw_error *err)
{
    struct exchange *ex = a->ex;
    if (ex->canon == NULL)
        ex->canon = ex->fops->to_canonical(&ex->rq, err);
    return ex->canon;
}

bool ex_attempt_client_stream(const struct attempt *a)
{
    return a->ex->rq.stream;
}

bool ex_attempt_client_include_usage(const struct attempt *a)
{
    return a->ex->rq.client_include_usage;
}

const char *ex_attempt_public_model(const struct attempt *a)
{
    return a->ex->rq.model_name;
}

int64_t ex_attempt_max_tokens(const struct attempt *a)
{
    return a->ex->rq.max_tokens;
}

int64_t ex_attempt_default_max_tokens(const struct attempt *a)
{
    return a->ex->rq.cfg ? a->ex->rq.cfg->gateway.default_max_tokens : 4096;
}

const char *ex_attempt_request_id(const struct attempt *a)
{
    return a->ex->rq.request_id;
}

const char *ex_attempt_response_id(const struct attempt *a)
{
    return a->ex->id;
}

int64_t ex_attempt_created(const struct attempt *a)
{
    return a->ex->created;
}

const struct str *ex_attempt_client_header(const struct attempt *a, const char *name)
{
    const struct ex_request *rq = &a->ex->rq;
    return rq->header ? rq->header(rq->hctx, name) : NULL;
}

struct uv_loop_s *ex_attempt_loop(const struct attempt *a)
{
    return a->ex->gw->loop;
}

/* ---------- outcomes ---------- */

const char *ex_attempt_result_name(enum attempt_result r)
{
    static const char *const names[AO_COUNT] = {
        [AO_OK] = "ok",
        [AO_CONNECT_REFUSED] = "connect_refused",
        [AO_CONNECT_TIMEOUT] = "connect_timeout",
        [AO_FIRST_BYTE_TIMEOUT] = "first_byte_timeout",
        [AO_IDLE_TIMEOUT] = "idle_timeout",
        [AO_TIMEOUT] = "timeout",
        [AO_RESET_BEFORE_FIRST_BYTE] = "reset_before_first_byte",
        [AO_RESET_AFTER_FIRST_BYTE] = "reset_after_first_byte",
        [AO_TLS] = "tls",
        [AO_PROTOCOL] = "protocol",
        [AO_TOO_LARGE] = "too_large",
        [AO_DECODE] = "decode",
        [AO_HTTP_STATUS] = "http_status",
        [AO_ENCODE_REFUSED] = "encode_refused",
        [AO_START_FAILED] = "start_failed",
        [AO_DNS] = "dns",
        [AO_OTHER] = "other",
        [AO_CANCELLED_CLIENT] = "cancelled_client",
        [AO_CANCELLED_DEADLINE] = "cancelled_deadline",
    };
    return (unsigned)r < AO_COUNT && names[r] ? names[r] : "unknown";
}

/* The upstream client's result, as an attempt outcome (the one place that maps it). */
static enum attempt_result outcome_from_upstream(enum up_result r)
{
    switch (r) {
    case UP_OK: return AO_OK;
    case UP_E_CONNECT: return AO_CONNECT_REFUSED;
    case UP_E_DNS: return AO_DNS;
    case UP_E_CONNECT_TIMEOUT: return AO_CONNECT_TIMEOUT;
    case UP_E_FIRST_BYTE_TIMEOUT: return AO_FIRST_BYTE_TIMEOUT;
    case UP_E_TIMEOUT: return AO_TIMEOUT;
    case UP_E_RESET_BEFORE_HEADERS: return AO_RESET_BEFORE_FIRST_BYTE;
    case UP_E_RESET: return AO_RESET_AFTER_FIRST_BYTE;
    case UP_E_TLS: return AO_TLS;
    case UP_E_PROTOCOL: return AO_PROTOCOL;
    case UP_E_TOO_LARGE: return AO_TOO_LARGE;
    case UP_E_ABORTED: return AO_DECODE; /* our own on_data abort (it normally carries a->err) */
    default: return AO_OTHER;
    }
}

/* ---------- exchange lifecycle ---------- */

static void ex_next_attempt(struct exchange *ex);
static void backoff_account(struct exchange *ex);
static void attempt_free(struct attempt *a);
static void ex_run(struct exchange *ex);

void ex_ref(struct exchange *ex)
{
    ex->refs++;
}

void ex_unref(struct exchange *ex)
{
    if (--ex->refs > 0)
        return;
    if (ex->rq.client_tree)
        cJSON_Delete(ex->rq.client_tree);
    if (ex->canon)
        cJSON_Delete(ex->canon);
    if (ex->fstate)
        ex->fops->stream_free(ex->fstate);
    if (ex->gov && policy && policy->release)
        policy->release(ex);
    adm_key_put(ex->kadm); /* after every callback of its queue ran: each held a reference on ex */
    principal_release(ex->rq.who);
    ex_release(ex);
}

static void on_deadline_closed(uv_handle_t *h)
{
    ex_unref(h->data);
}

/* Upstream time of an attempt that is still running, so far: it is never agentd's overhead. */
static uint64_t attempt_upstream_so_far(const struct attempt *a, uint64_t now)
{
    return a && a->t_start_us && now > a->t_start_us ? now - a->t_start_us : 0;
}

static void observers_attempt_start(struct exchange *ex, struct attempt *a, struct up_request *r)
{
    a->started = true;
    for (size_t i = 0; i < nobservers; i++)
        if (observers[i]->on_attempt_start)
            observers[i]->on_attempt_start(ex, a, r);
}

/* The one end of an attempt: accounts its upstream time, tells the observers, frees it. The caller then
 * decides what the exchange does next (another attempt, a response, an error). */
void ex_attempt_end(struct exchange *ex, struct attempt *a, const struct attempt_outcome *o)
{
    if (a->up_us_known)
        ex->t_upstream_us += a->up_us;
    else
        ex->t_upstream_us += attempt_upstream_so_far(a, time_mono_us());
    a->t_start_us = 0;
    uv_timer_stop(&ex->rtimer); /* the stream-idle timer belongs to the attempt running */
    if (ex->narec < EX_MAX_ATTEMPTS)
        ex->arec[ex->narec++] = (struct ex_attempt_rec){a->dep, (unsigned short)o->result,
                                                        (unsigned short)(o->result == AO_HTTP_STATUS ? o->status : 0)};
    for (size_t i = 0; i < nobservers; i++)
        if (observers[i]->on_attempt_end)
            observers[i]->on_attempt_end(ex, a, o);
    if (ex->att == a)
        ex->att = NULL;
    attempt_free(a);
}

static void end_attempt(struct exchange *ex, struct attempt *a, enum attempt_result r, const struct gw_error *err)
{
    struct attempt_outcome o = {r, 0, -1, err};
    if (r == AO_HTTP_STATUS && err) {
        o.status = a->status ? a->status : err->status; /* the upstream's own status when there was one */
        o.retry_after_ms = err->retry_after_ms;
    }
    ex_attempt_end(ex, a, &o);
}

/* "0.00012345": USD with 8 decimals, without printf (this runs on every response). */
static size_t fmt_usd(char *dst, double usd)
{
    if (!(usd >= 0) || usd > 1e12)
        usd = 0;
    uint64_t units = (uint64_t)(usd * 1e8 + 0.5);
    size_t n = fmt_u64(dst, units / 100000000u);
    dst[n++] = '.';
    uint64_t frac = units % 100000000u;
    for (int i = 7; i >= 0; i--) {
        dst[n + (size_t)i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    return n + 8;
}

/* name ": " value CRLF, reserved and copied at once (a response gets several of these). */
static void hdr_line(struct buf *h, const char *name, size_t nn, const char *value, size_t vn)
{
    if (buf_reserve(h, nn + vn + 4) != 0)
        return;
    char *p = h->data + h->len;
    memcpy(p, name, nn);
    p += nn;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, value, vn);
    p += vn;
    *p++ = '\r';
    *p++ = '\n';
    *p = '\0';
    h->len += nn + vn + 4;
}

/* One response header line; a value that would break the header (a client-chosen model name) is left out. The
 * names are literals (hdr_add and hdr_add_u64 below take their length at compile time). */
static void hdr_add_n(struct buf *h, const char *name, size_t nn, const char *value)
{
    size_t n = strcspn(value, "\r\n"); /* one pass finds both a line break and the length */
    if (value[n])
        return;
    hdr_line(h, name, nn, value, n);
}

static void hdr_add_u64_n(struct buf *h, const char *name, size_t nn, uint64_t v)
{
    char digits[24];
    hdr_line(h, name, nn, digits, fmt_u64(digits, v));
}

#define hdr_add(h, name, value) hdr_add_n((h), "" name, sizeof(name) - 1, (value))
#define hdr_add_u64(h, name, v) hdr_add_u64_n((h), "" name, sizeof(name) - 1, (v))

/* agentd's own time so far: everything but the upstream's (finished attempts, and the one in flight). */
static uint64_t overhead_now(const struct exchange *ex, uint64_t now)
{
    uint64_t total = now - ex->t_start_us;
    uint64_t up = ex->t_upstream_us + attempt_upstream_so_far(ex->att, now);
    return total > up ? total - up : 0;
}

/* The request's trace context, back to the client (docs/telemetry.md). */
static void trace_header(const struct exchange *ex, struct buf *h)
{
    if (!ex->trace.active || !otel_response_header())
        return;
    hdr_add(h, "traceparent", ex->trace.traceparent); /* formatted when the trace started (observer_spans.c) */
}

/* now: time_mono_us(), read by the caller (ex_end's reading: the header's overhead is the one the observers see) */
static void gateway_headers(struct exchange *ex, struct buf *h, const struct deployment *dep, bool with_cost,
                            uint64_t now)
{
    trace_header(ex, h);
    if (ex->front == FRONT_ANTHROPIC_MESSAGES)
        hdr_add(h, "request-id", ex->rq.request_id); /* what Anthropic's SDKs read as requestID */
    if (dep)
        hdr_add(h, "x-agentd-deployment", dep->label);
    hdr_add(h, "x-agentd-model", ex->rq.model_name);
    if (ex->rq.dropped_fields[0])
        hdr_add(h, "x-agentd-dropped-fields", ex->rq.dropped_fields);
    hdr_add_u64(h, "x-agentd-overhead-us", overhead_now(ex, now));
    hdr_add_u64(h, "x-agentd-attempts", (uint64_t)ex->attempts);
    if (ex->narec + (ex->att ? 1 : 0) > 1) {
        struct buf ao = BUF_INIT(4096);
        ex_attempt_outcomes(ex, &ao);
        if (ex->att) /* a stream's head: the attempt relaying it has no outcome yet */
            buf_printf(&ao, ", %s=streaming", ex->att->dep->label);
        buf_append(&ao, "", 1);
        if (ao.data)
            hdr_add(h, "x-agentd-attempt-outcomes", ao.data);
        buf_free(&ao);
    }
    if (ex->cache_result)
        hdr_add(h, "x-agentd-cache", ex->cache_result);
    if (ex->route_rule) {
        hdr_add(h, "x-agentd-route", ex->route_rule);
        hdr_add(h, "x-agentd-routed-from", ex->routed_from);
    }
    if (policy && policy->headers)
        policy->headers(ex, h);
    if (ex->fops->headers)
        ex->fops->headers(ex, h);
    if (with_cost) {
        if (ex->priced) {
            char usd[40];
            usd[fmt_usd(usd, ex->cost_usd)] = '\0';
            hdr_add(h, "x-agentd-cost-usd", usd);
        } else {
            hdr_add(h, "x-agentd-cost-usd", "unknown");
        }
        hdr_add_u64(h, "x-agentd-input-tokens", (uint64_t)(ex->usage.input > 0 ? ex->usage.input : 0));
        hdr_add_u64(h, "x-agentd-output-tokens", (uint64_t)(ex->usage.output > 0 ? ex->usage.output : 0));
    }
}

static const struct deployment *last_deployment(const struct exchange *ex)
{
    return ex->last_dep;
}

void ex_attempt_outcomes(const struct exchange *ex, struct buf *out)
{
    for (int i = 0; i < ex->narec; i++) {
        const struct ex_attempt_rec *r = &ex->arec[i];
        if (i)
            buf_append(out, ", ", 2);
        buf_append_str(out, r->dep ? r->dep->label : "-");
        buf_append(out, "=", 1);
        if (r->result == AO_HTTP_STATUS)
            buf_printf(out, "http_%u", r->status);
        else
            buf_append_str(out, ex_attempt_result_name((enum attempt_result)r->result));
    }
}

static void price(struct exchange *ex)
{
    /* Cost from the provider-reported usage (or, for a stream cut short, what was counted: govern.c). */
    if (policy && policy->fill_usage)
        policy->fill_usage(ex);
    const struct deployment *dep = last_deployment(ex);
    const struct price *p = dep ? dep->price : NULL;
    if (p == NULL)
        return;
    struct price_tokens t = {ex->usage.input, ex->usage.cached_input, ex->usage.cache_write, ex->usage.output,
                             ex->usage.reasoning};
    ex->cost_usd = price_cost_usd(p, &t);
    ex->priced = true;
}

/* What the client gets when the exchange ends without a stream under way. */
struct ex_reply {
    const struct buf *body;       /* NULL: none */
    const struct deployment *dep; /* x-agentd-deployment, or NULL */
    bool with_cost;               /* a complete response: cost and token headers */
};

/* The one end of an exchange. Prices it, writes the response head and body (when no stream is under way),
 * calls every observer's on_settle once, then ends the sink and releases the exchange's resources. An attempt
 * still running is cancelled first (counted by the caller's outcome). */
static void relay_flush(struct exchange *ex, const struct deployment *dep);
static void cut_at_cap(struct exchange *ex, struct attempt *a);

static void live_link(struct exchange *ex)
{
    struct gateway_worker *g = ex->gw;
    ex->live_prev = NULL;
    ex->live_next = g->live;
    if (g->live)
        g->live->live_prev = ex;
    g->live = ex;
}

static void live_unlink(struct exchange *ex)
{
    struct gateway_worker *g = ex->gw;
    if (ex->live_prev)
        ex->live_prev->live_next = ex->live_next;
    else if (g->live == ex)
        g->live = ex->live_next;
    if (ex->live_next)
        ex->live_next->live_prev = ex->live_prev;
    ex->live_prev = ex->live_next = NULL;
}

static void ex_end(struct exchange *ex, int status, const struct gw_error *err, const struct ex_reply *reply)
{
    if (ex->done)
        return;
    relay_flush(ex, ex->att ? ex->att->dep : NULL); /* the stream bytes of the read under way go first */
    backoff_account(ex);                            /* the deadline may cut a backoff */
    ex->done = true;
    live_unlink(ex);
    ex->status = status;
    if (err && err != &ex->last_err) {
        ex->last_err = *err;
        ex->have_err = true;
    }
    price(ex);
    uint64_t now = time_mono_us();
    struct ex_outcome o = {status, last_deployment(ex), status >= 400 && ex->have_err ? &ex->last_err : NULL,
                           now - ex->t_start_us, overhead_now(ex, now),
                           !ex->client_started && reply ? reply->body : NULL};
    struct buf hdrs = BUF_INIT(BUF_UNBOUNDED);
    if (!ex->client_started) {
        buf_reserve(&hdrs, 384); /* the usual set in one allocation */
        if (ex->model)
            gateway_headers(ex, &hdrs, reply ? reply->dep : NULL, reply && reply->with_cost, now);
        else if (ex->front == FRONT_ANTHROPIC_MESSAGES)
            hdr_add(&hdrs, "request-id", ex->rq.request_id);
        if (!ex->model)
            trace_header(ex, &hdrs);
        if (err && err->retry_after_ms >= 0) {
            hdr_add_u64(&hdrs, "retry-after", (uint64_t)(err->retry_after_ms + 999) / 1000);
            hdr_add_u64(&hdrs, "retry-after-ms", (uint64_t)err->retry_after_ms);
        }
    }
    for (size_t i = 0; i < nobservers; i++)
        if (observers[i]->on_settle)
            observers[i]->on_settle(ex, &o);
    if (ex->run_started) { /* a count's own look-up or upstream call may still be under way (a forced drain) */
        ex->run_started = false;
        if (ex->rq.run_cancel)
            ex->rq.run_cancel(ex->rq.run_ud);
    }
    if (!ex->client_started) {
        ex->sink_ops->head(ex->sink, status, &hdrs, false);
        if (reply && reply->body && reply->body->len)
            ex->sink_ops->write(ex->sink, reply->body->data, reply->body->len);
    }
    buf_free(&hdrs);
    ex->sink_ended = true;
    ex->sink_ops->end(ex->sink);
    if (ex->att) { /* every path ends its attempt first; this is a safety net, counted as a client cancel */
        struct gw_error e;
        gw_error_set(&e, 499, GW_ERR_API, "exchange ended");
        end_attempt(ex, ex->att, AO_CANCELLED_CLIENT, &e);
    }
    if (ex->admitted) {
        atomic_fetch_sub(&ex_inflight, 1);
        metrics_add(&genai_inflight_requests, NULL, -1);
        adm_release(&admission_global); /* may hand the slot to the next waiter */
    } else if (ex->adm.ready && adm_cancel(&admission_global, &ex->adm, false)) { /* it was waiting */
        ex_unref(ex); /* the queue's reference (the spine's own keeps ex alive until the deadline closes) */
    } /* else granted or refused meanwhile: on_admit_ready runs, releases the slot and drops the reference */
    if (ex->key_admitted) {
        ex->key_admitted = false;
        adm_release(ex->kadm); /* may hand the key's slot to its next waiter */
    } else if (ex->kadm && ex->kwait.ready && adm_cancel(ex->kadm, &ex->kwait, false)) {
        ex_unref(ex);
    } /* else granted meanwhile: on_key_admit_ready releases it */
    uv_timer_stop(&ex->deadline);
    uv_close((uv_handle_t *)&ex->deadline, on_deadline_closed);
    uv_timer_stop(&ex->rtimer);
    uv_close((uv_handle_t *)&ex->rtimer, on_deadline_closed);
}

/* Writes stream bytes, starting the stream (head, naming dep) with the first. */
static void client_send(struct exchange *ex, const struct buf *out, const struct deployment *dep)
{
    if (out->len == 0 || ex->sink_ended)
        return;
    if (!ex->client_started) {
        ex->client_started = true;
        struct buf hdrs = BUF_INIT(BUF_UNBOUNDED);
        buf_reserve(&hdrs, 384);
        gateway_headers(ex, &hdrs, dep, false, time_mono_us());
        ex->sink_ops->head(ex->sink, 200, &hdrs, true);
        buf_free(&hdrs);
    }
    /* -1: the consumer is gone; the sink tells us through ex_cancel from its own callback. */
    (void)ex->sink_ops->write(ex->sink, out->data, out->len);
}

/* Where the exchange's stream output goes: the worker's relay buffer while its own upstream read is being fed,
 * else NULL (write it now). */
static struct buf *relay_buf(struct exchange *ex)
{
    return ex->gw && ex->gw->relay_owner == ex ? &ex->gw->relay : NULL;
}

/* Writes what the read under way produced so far (one sink write). */
static void relay_flush(struct exchange *ex, const struct deployment *dep)
{
    struct gateway_worker *gw = ex->gw;
    if (gw == NULL || gw->relay_owner != ex || gw->relay.len == 0)
        return;
    gw->relay_owner = NULL; /* anything the sink does meanwhile (a cancel) writes straight out */
    client_send(ex, &gw->relay, dep);
    if (gw->relay.cap > RELAY_KEEP)
        buf_free(&gw->relay);
    else
        buf_reset(&gw->relay);
    gw->relay_owner = ex;
}

static void client_write_as(struct exchange *ex, struct buf *out, const struct deployment *dep)
{
    relay_flush(ex, dep); /* order: what the read produced before this goes first */
    client_send(ex, out, dep);
}

static void client_write(struct exchange *ex, struct buf *out)
{
    client_write_as(ex, out, ex->att ? ex->att->dep : NULL);
}

static void ex_fail_at(struct exchange *ex, const struct gw_error *err, const struct deployment *dep)
{
    if (ex->done)
        return;
    ex->last_err = *err;
    ex->have_err = true;
    if (ex->client_started) {
        /* A stream already reached the client: end it with the format's error event. */
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        ex->fops->stream_end(ex, err, &out);
        client_write(ex, &out);
        buf_free(&out);
        ex->incomplete = true;
        ex_end(ex, err->status, err, NULL);
        return;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    ex->fops->error_body(ex, err, &out);
    struct ex_reply r = {&out, dep, false};
    ex_end(ex, err->status, err, &r);
    buf_free(&out);
}

void ex_fail(struct exchange *ex, const struct gw_error *err)
{
    ex_fail_at(ex, err, NULL);
}

void ex_reply_cached(struct exchange *ex, const void *data, size_t len, bool stream)
{
    if (ex->done)
        return;
    ex->usage = (struct usage){.known = true}; /* billed: nothing */
    ex->cost_usd = 0;
    ex->priced = true;
    struct buf b = {(char *)data, len, len, len};
    if (stream) {
        ex->t_first_token_us = time_mono_us();
        client_send(ex, &b, NULL);
        ex_end(ex, 200, NULL, NULL);
        return;
    }
    struct ex_reply r = {&b, NULL, true};
    ex_end(ex, 200, NULL, &r);
}

void ex_reply_counted(struct exchange *ex, int status, const void *body, size_t len, const struct deployment *dep)
{
    if (ex->done)
        return;
    ex->usage = (struct usage){.known = true}; /* a count bills nothing */
    ex->cost_usd = 0;
    ex->priced = true;
    if (dep)
        ex->last_dep = dep;
    ex->run_started = false; /* it answered: nothing of it is in flight */
    struct buf b = {(char *)body, len, len, len};
    struct ex_reply r = {&b, dep, false};
    ex_end(ex, status, NULL, &r);
}

void ex_cancel(struct exchange *ex)
{
    if (ex == NULL || ex->done)
        return;
    /* The client went away: stop the upstream transfer at once (no point paying for tokens nobody reads). */
    struct gw_error err;
    gw_error_set(&err, 499, GW_ERR_API, "client closed the connection");
    if (ex->att)
        end_attempt(ex, ex->att, AO_CANCELLED_CLIENT, &err);
    ex_end(ex, 499, &err, NULL);
}

void ex_sink_drained(struct exchange *ex)
{
    if (ex && !ex->done && ex->att && ex->att->xfer)
        upstream_resume(ex->att->xfer);
}

int ex_worker_end_all(struct gateway_worker *g, const struct gw_error *err)
{
    int n = 0;
    while (g && g->live) {
        struct exchange *ex = g->live;
        ex_ref(ex);
        if (ex->att)
            end_attempt(ex, ex->att, AO_CANCELLED_DEADLINE, err);
        ex_fail(ex, err);
        if (g->live == ex) /* never: ex_end unlinks; guards against a loop */
            live_unlink(ex);
        ex_unref(ex);
        n++;
    }
    return n;
}

static void on_deadline(uv_timer_t *t)
{
    struct exchange *ex = t->data;
    struct gw_error err;
    gw_error_set(&err, 504, GW_ERR_TIMEOUT, "the request did not complete within %lld ms (gateway.request_timeout)",
                 (long long)ex->rq.cfg->gateway.request_timeout_ms);
    if (ex->att)
        end_attempt(ex, ex->att, AO_CANCELLED_DEADLINE, &err);
    ex_fail(ex, &err);
}

void ex_attempt_delta(struct attempt *a, const struct chat_delta *d)
{
    struct exchange *ex = a->ex;
    if (ex->done)
        return;
    if (d->kind == DELTA_USAGE) {
        ex->usage = d->usage;
        return;
    }
    if ((d->kind == DELTA_TEXT || d->kind == DELTA_TOOL_START) && !ex->t_first_token_us)
        ex->t_first_token_us = time_mono_us();
    a->any_output = true;
    if (d->kind == DELTA_TEXT || d->kind == DELTA_TOOL_ARGS) {
        ex->relayed_chars += (int64_t)d->text.n;
        if (d->text.n && ++ex->content_events > ex->out_cap && ex->out_cap > 0 && !a->prov->run_local) {
            ex->cut_pending = true; /* past the reservation: this delta is not relayed (on_up_data ends it) */
            return;
        }
    }
    struct buf *rb = relay_buf(ex);
    if (rb) {
        ex->fops->stream_delta(ex, d, rb);
        return;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    ex->fops->stream_delta(ex, d, &out);
    client_write(ex, &out);
    buf_free(&out);
}

/* A stream that ended well: the attempt ends ok, the client gets the terminal events. */
static void complete_stream(struct exchange *ex, struct attempt *a)
{
    bool passthrough = a->passthrough;
    const struct deployment *dep = a->dep;
    if (a->usage.known && (!ex->usage.known || a->prov->run_local == NULL))
        ex->usage = a->usage;
    end_attempt(ex, a, AO_OK, NULL);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    /* In passthrough the upstream's own terminal events were forwarded already. */
    if (!passthrough)
        ex->fops->stream_end(ex, NULL, &out);
    client_write_as(ex, &out, dep);
    buf_free(&out);
    ex_end(ex, 200, NULL, NULL);
}

/* The stream reached the output its budget reservation covers (ex->out_cap): the gateway ends it cleanly in the
 * caller's format with finish reason `length` (max_tokens on Anthropic's door), stops the upstream transfer and
 * settles the exchange as a 200 charged exactly its reservation (govern_fill_usage), marked incomplete. */
static void cut_at_cap(struct exchange *ex, struct attempt *a)
{
    const struct deployment *dep = a->dep;
    bool passthrough = a->passthrough;
    ex->cut_at_cap = true;
    ex->incomplete = true;
    end_attempt(ex, a, AO_OK, NULL);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    if (!passthrough) {
        struct chat_delta fin = {.kind = DELTA_FINISH, .finish = FINISH_LENGTH};
        ex->fops->stream_delta(ex, &fin, &out);
        ex->fops->stream_end(ex, NULL, &out);
    } else if (ex->fops->wire == WIRE_ANTHROPIC) {
        /* the upstream's own message_start went out; its stop events are written here */
        if (ex->pt_open >= 0)
            buf_printf(&out, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":%d}\n\n",
                       ex->pt_open);
        buf_append_str(&out, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
                             "\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        buf_printf(&out, "%lld}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                   (long long)ex->out_cap);
    } else {
        buf_append_str(&out, "data: {\"id\":");
        buf_append_json_cstr(&out, ex->id);
        buf_printf(&out, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":", (long long)ex->created);
        buf_append_json_cstr(&out, ex->rq.model_name);
        buf_append_str(&out, ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}]}"
                             "\n\ndata: [DONE]\n\n");
    }
    client_write_as(ex, &out, dep);
    buf_free(&out);
    if (!ex->done)
        ex_end(ex, 200, NULL, NULL);
}

void ex_attempt_stream_end(struct attempt *a)
{
    if (a->ex->done)
        return;
    complete_stream(a->ex, a);
}

/* A complete canonical response (or, in passthrough, the raw upstream body in a->resp). */
static void respond_complete(struct exchange *ex, struct attempt *a, cJSON *resp)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    struct gw_error err;
    const struct deployment *dep = a->dep;
    if (resp) {
        /* ids and model the client sees come from the gateway when translating */
        int rc = ex->fops->write_response(ex, resp, &out, &err);
        cJSON_Delete(resp);
        if (rc != 0) {
            buf_free(&out);
            end_attempt(ex, a, AO_DECODE, &err);
            ex_fail_at(ex, &err, dep);
            return;
        }
    } else {
        buf_append(&out, a->resp.data, a->resp.len);
    }
    ex->usage = a->usage;
    end_attempt(ex, a, AO_OK, NULL);
    struct ex_reply r = {&out, dep, true};
    ex_end(ex, 200, NULL, &r);
    buf_free(&out);
}

void ex_attempt_complete(struct attempt *a, cJSON *resp)
{
    struct exchange *ex = a->ex;
    if (ex->done) {
        cJSON_Delete(resp);
        return;
    }
    respond_complete(ex, a, resp);
}

/* The deployment's current and previous fetched credentials, out of an upstream error's text (rare: errors only,
 * so a set built for the occasion; redact_set_free wipes its copies). */
static void scrub_fetched(struct cc_source *src, struct gw_error *err)
{
    struct cc_snap *sn[2];
    size_t n = cc_recent(src, sn);
    if (n == 0)
        return;
    struct redact_set *rs = redact_set_new();
    for (size_t i = 0; i < n; i++) {
        const char *v[] = {sn[i]->c.token, sn[i]->c.secret_access_key, sn[i]->c.session_token};
        for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
            if (v[k] && *v[k])
                redact_set_add(rs, v[k]);
        cc_release(sn[i]);
    }
    redact_cstr(rs, err->message, sizeof(err->message));
    redact_cstr(rs, err->code, sizeof(err->code));
    redact_cstr(rs, err->param, sizeof(err->param));
    redact_set_free(rs);
}

void ex_attempt_scrub_error(const struct attempt *a, struct gw_error *err)
{
    const struct redact_set *rs = a && a->ex && a->ex->reg ? a->ex->reg->secrets : NULL;
    if (a && a->dep && a->dep->creds) /* fetched cloud tokens are secrets too, and they change */
        scrub_fetched(a->dep->creds, err);
    redact_upstream_error(rs, a && a->dep ? a->dep->label : NULL, err);
}

/* The typed outcome, as far as the retry rules care (resilience.h). */
static enum retry_kind retry_kind_of(enum attempt_result r)
{
    switch (r) {
    case AO_CONNECT_REFUSED:
    case AO_CONNECT_TIMEOUT:
    case AO_DNS:
    case AO_TLS: return RK_CONNECT;
    case AO_FIRST_BYTE_TIMEOUT:
    case AO_IDLE_TIMEOUT:
    case AO_TIMEOUT: return RK_TIMEOUT;
    case AO_RESET_BEFORE_FIRST_BYTE:
    case AO_RESET_AFTER_FIRST_BYTE: return RK_RESET; /* after the upstream's first byte, not the client's */
    case AO_PROTOCOL:
    case AO_DECODE: return RK_PROTOCOL;
    case AO_HTTP_STATUS: return RK_HTTP;
    default: return RK_OTHER;
    }
}

static bool enter_fallbacks(struct exchange *ex, int list);
static const char *const class_names[] = {"fatal", "retry", "context_window", "content_policy"};

/* The failover/retry log line: its facts are fields (issue 9, item 9). */
static void log_attempt_failed(const struct exchange *ex, const struct deployment *dep, enum attempt_result r,
                               const struct gw_error *e, enum failure_class cls, const char *next)
{
    struct log_line l;
    if (!log_begin(&l, LL_WARN, "upstream attempt failed"))
        return;
    log_field_cstr(&l, "request_id", ex->rq.request_id);
    log_field_int(&l, "attempt", ex->attempts);
    log_field_cstr(&l, "deployment", dep->label);
    char oc[24];
    if (r == AO_HTTP_STATUS)
        snprintf(oc, sizeof(oc), "http_%d", e->status);
    log_field_cstr(&l, "outcome", r == AO_HTTP_STATUS ? oc : ex_attempt_result_name(r));
    log_field_cstr(&l, "class", class_names[cls]);
    log_field_cstr(&l, "next", next);
    log_field_cstr(&l, "model", ex->tier ? ex->tier->name : ex->rq.model_name);
    log_field_cstr(&l, "error", e->message);
    log_end(&l);
}

/* An attempt failed with a typed outcome: count it, then retry (the same or another deployment, now or after a
 * backoff), fall back to another model, or tell the client. Never once a byte has reached the client. */
static void attempt_failed(struct attempt *a, enum attempt_result r, const struct gw_error *err)
{
    struct exchange *ex = a->ex;
    if (ex->done)
        return;
    const struct deployment *dep = a->dep;
    struct gw_error e = *err; /* err may live in the attempt */
    ex_attempt_scrub_error(a, &e); /* upstream text reaches neither client nor log with a key in it */
    int ustatus = r == AO_HTTP_STATUS && a->status ? a->status : e.status;
    end_attempt(ex, a, r, &e);
    ex->last_err = e;
    ex->have_err = true;
    const struct model_entry *m = ex->tier ? ex->tier : ex->model;
    enum failure_class cls = failure_classify(retry_kind_of(r), ustatus, &e, m ? m->retry.retry_on : RETRY_ON_DEFAULT);
    if (ex->client_started || m == NULL) {
        ex_fail_at(ex, &e, dep);
        return;
    }
    switch (cls) {
    case FAIL_RETRY:
        log_attempt_failed(ex, dep, r, &e, cls, "retry");
        ex_next_attempt(ex);
        return;
    case FAIL_CONTEXT_WINDOW:
    case FAIL_CONTENT_POLICY:
        if (enter_fallbacks(ex, cls == FAIL_CONTEXT_WINDOW ? 1 : 2)) {
            log_attempt_failed(ex, dep, r, &e, cls, "fallback");
            ex_next_attempt(ex);
            return;
        }
        break;
    case FAIL_FATAL: break;
    }
    if (ustatus >= 500 || r != AO_HTTP_STATUS)
        log_attempt_failed(ex, dep, r, &e, cls, "fail");
    ex_fail_at(ex, &e, dep);
}

/* Local providers report failures as the status an upstream would have answered. */
void ex_attempt_fail(struct attempt *a, const struct gw_error *err)
{
    attempt_failed(a, AO_HTTP_STATUS, err);
}

/* ---------- upstream callbacks ---------- */

/* A passthrough event that carries output (the count a cut stream is billed by, and the reservation cap's):
 * Anthropic's content_block_delta, the Responses API's *.delta events, every OpenAI chat chunk but [DONE] (its
 * role and finish chunks are allowed for at the cap). Event names only: the data is not scanned. */
static bool content_event(struct exchange *ex, const struct stream_event *ev)
{
    if (ex->fops->wire == WIRE_ANTHROPIC) {
        if (str_eq_cstr(ev->event, "content_block_delta"))
            return true;
        /* which block is open, so that a cut can close it (event names only, as the blocks are numbered 0, 1, ...) */
        if (str_eq_cstr(ev->event, "content_block_start"))
            ex->pt_open = ex->pt_blocks++;
        else if (str_eq_cstr(ev->event, "content_block_stop"))
            ex->pt_open = -1;
        return false;
    }
    if (ex->fops->wire == WIRE_OPENAI_RESPONSES)
        return ev->event.n > 6 && memcmp(ev->event.p + ev->event.n - 6, ".delta", 6) == 0;
    return !str_eq_cstr(str_trim(ev->data), "[DONE]");
}

/* An event relayed as received must still be one JSON object (OpenAI's [DONE] aside): a truncated or broken one
 * is refused as a translated stream refuses it, never handed to the client. The check looks at the structure
 * bytes only (jscan_structure_ok: brackets and strings, found 64 bytes at a time), so that it costs a fraction of
 * a full validation; the OpenAI and Anthropic decoders make it themselves in the pass that looks for usage
 * (jscan_event_scan) and say so in a->ev_checked, so that each event's bytes are read once. bench/ measures it. */
static bool passthrough_event_ok(struct attempt *a, const struct stream_event *ev)
{
    struct str d = ev->data;
    if (a->ev_checked) /* the decoder's one pass over the bytes checked it (jscan_event_scan) */
        return true;
    if (ev->is_exception || d.n == 0) /* an exception is the decoder's; an empty event carries no content */
        return true;
    if (d.n == 6 && memcmp(d.p, "[DONE]", 6) == 0) /* OpenAI's terminal marker (its decoder said so) */
        return true;
    if (jscan_structure_ok(d.p, d.n) == 0)
        return true;
    struct str t = str_trim(d);
    if (t.n == 0 || str_eq_cstr(t, "[DONE]"))
        return true;
    gw_error_set(&a->err, 502, GW_ERR_API,
                 "upstream %s sent a malformed stream event (not one complete JSON object)", a->dep->label);
    a->err.from_upstream = true;
    a->has_err = true;
    a->err_result = AO_DECODE;
    a->stream_done = false;
    return false;
}

static int on_stream_event(struct attempt *a, const struct stream_event *ev)
{
    struct exchange *ex = a->ex;
    struct gw_error err;
    if (ex->cut_pending)
        return -1; /* the rest of the read is not relayed */
    a->ev_checked = false;
    int rc = a->prov->decode_stream_event(a, ev, &err);
    if (ex->cut_pending)
        return -1;
    if (rc < 0) {
        a->stream_done = false;
        a->err = err;
        a->has_err = true;
        a->err_result = AO_DECODE;
        return -1;
    }
    if (rc == EV_FORWARD && a->passthrough && !passthrough_event_ok(a, ev))
        return -1; /* ends as a translated stream's decode failure does: the client's error event, incomplete */
    if (rc == EV_FORWARD) {
        if (!ex->t_first_token_us)
            ex->t_first_token_us = time_mono_us();
        a->any_output = true;
        if (content_event(ex, ev) && ++ex->content_events > ex->out_cap + (ex->fops->wire == WIRE_ANTHROPIC ? 0 : 2) &&
            ex->out_cap > 0 && (ex->front == FRONT_OPENAI_CHAT || ex->front == FRONT_ANTHROPIC_MESSAGES)) {
            ex->cut_pending = true;
            return -1;
        }
        ex->relayed_events++;
        struct buf *rb = relay_buf(ex);
        if (rb) {
            ex->fops->forward_event(ex, ev, rb); /* written at the end of the read */
            return 0;
        }
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        ex->fops->forward_event(ex, ev, &out);
        client_write(ex, &out);
        buf_free(&out);
    }
    return 0;
}

static int on_sse(const struct sse_event *e, void *ud)
{
    struct attempt *a = ud;
    struct stream_event ev = {e->event, e->data, false};
    return on_stream_event(a, &ev) != 0 ? -1 : 0;
}

static int on_es_message(const struct eventstream_message *m, void *ud)
{
    struct attempt *a = ud;
    struct stream_event ev = {m->event_type, m->payload, m->is_exception};
    return on_stream_event(a, &ev) != 0 ? -1 : 0;
}

/* A stream sent nothing for the deployment's idle timeout: the attempt ends (typed: idle_timeout). Before the
 * first client byte another attempt follows; after it the client gets its format's error event. */
static void on_stream_idle(uv_timer_t *t)
{
    struct exchange *ex = t->data;
    struct attempt *a = ex->att;
    if (ex->done || a == NULL || a->xfer == NULL)
        return;
    upstream_cancel(a->xfer);
    a->xfer = NULL;
    struct gw_error err;
    gw_error_set(&err, 504, GW_ERR_TIMEOUT, "upstream %s sent nothing for %lld ms (stream idle timeout)",
                 a->dep->label, (long long)a->dep->idle_timeout_ms);
    err.retryable = true;
    if (ex->client_started)
        ex->incomplete = true;
    attempt_failed(a, AO_IDLE_TIMEOUT, &err);
}

static void on_up_headers(struct up_xfer *x, void *ud)
{
    struct attempt *a = ud;
    a->status = x->status;
    a->t_headers_us = x->t_headers_us;
    up_xfer_header(x, "x-request-id", a->upstream_request_id, sizeof(a->upstream_request_id));
    if (a->upstream_request_id[0] == '\0')
        up_xfer_header(x, "request-id", a->upstream_request_id, sizeof(a->upstream_request_id));
    if (a->upstream_request_id[0] == '\0')
        up_xfer_header(x, "x-amzn-requestid", a->upstream_request_id, sizeof(a->upstream_request_id));
    if (a->status >= 400)
        up_xfer_header(x, "x-amzn-errortype", a->upstream_error_type, sizeof(a->upstream_error_type));
    if (a->status >= 200 && a->status < 300 && a->stream) {
        if (a->dep->idle_timeout_ms > 0)
            uv_timer_start(&a->ex->rtimer, on_stream_idle, (uint64_t)a->dep->idle_timeout_ms,
                           (uint64_t)a->dep->idle_timeout_ms);
        size_t max = (size_t)a->ex->rq.cfg->gateway.max_event_bytes;
        if (a->prov->framing == FRAMING_AWS_EVENTSTREAM) {
            struct eventstream_parser *p = xcalloc(1, sizeof(*p));
            eventstream_parser_init(p, max, on_es_message, a);
            a->framing_state = p;
        } else {
            struct sse_parser *p = xcalloc(1, sizeof(*p));
            sse_parser_init(p, max, on_sse, a);
            a->framing_state = p;
        }
    }
}

static int on_up_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    (void)x;
    struct attempt *a = ud;
    struct exchange *ex = a->ex;
    if (a->framing_state == NULL) {
        /* a complete response, or an error body: buffered, bounded */
        if (buf_append(&a->resp, data, len) != 0) {
            gw_error_set(&a->err, 502, GW_ERR_API, "upstream response larger than gateway.max_response_bytes");
            a->has_err = true;
            a->err_result = AO_TOO_LARGE;
            return UP_DATA_ABORT;
        }
        return UP_DATA_OK;
    }
    if (a->dep->idle_timeout_ms > 0)
        uv_timer_again(&ex->rtimer); /* the upstream is alive */
    /* A slow client holds the upstream back instead of growing our buffers (the sink calls ex_sink_drained). */
    if (ex->sink_ops->pending && ex->sink_ops->pending(ex->sink) > EX_SINK_HIGH_WATER)
        return UP_DATA_PAUSE;
    /* The events of this read are written to the client together, once the read is fed (flushed before any
     * other write of this exchange, and by ex_end). The pause decision above always sees an empty relay. */
    struct gateway_worker *gw = ex->gw;
    const struct deployment *dep = a->dep;
    bool batch = gw && gw->relay_owner == NULL;
    if (batch)
        gw->relay_owner = ex;
    int rc;
    if (a->prov->framing == FRAMING_AWS_EVENTSTREAM)
        rc = eventstream_feed(a->framing_state, data, len);
    else
        rc = sse_feed(a->framing_state, data, len);
    int ret = UP_DATA_OK;
    if (ex->cut_pending) {
        if (batch) {
            relay_flush(ex, dep);
            gw->relay_owner = NULL;
        }
        if (!ex->done)
            cut_at_cap(ex, a);
        return UP_DATA_OK; /* the attempt (and its transfer) ended */
    }
    if (rc != 0) {
        if (!a->has_err) { /* a decode error already said more */
            gw_error_set(&a->err, 502, GW_ERR_API, "upstream stream framing is invalid or an event is too large");
            a->has_err = true;
            a->err_result = AO_DECODE;
        }
        ret = UP_DATA_ABORT;
    }
    if (batch) {
        relay_flush(ex, dep); /* may end the exchange (the client gone): `a` is not touched after this */
        gw->relay_owner = NULL;
    }
    return ret;
}

static void on_up_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct attempt *a = ud;
    struct exchange *ex = a->ex;
    a->xfer = NULL; /* reaped after this callback */
    a->t_done_us = x->t_done_us;
    a->up_us = x->t_done_us - x->t_start_us;
    a->up_us_known = true;
    struct gw_error err;
    if (a->status >= 400) {
        /* The provider said no: map its error, keep its status and retry hints. */
        a->prov->map_error(a, a->status, a->resp.data ? a->resp.data : "", a->resp.len, &err);
        long ra = up_xfer_retry_after_ms(x);
        if (ra < 0 && a->status == 429) {
            /* OpenAI's x-ratelimit-reset-{requests,tokens}: the one whose remaining count is 0, else tokens */
            char v[64];
            bool req0 = up_xfer_header(x, "x-ratelimit-remaining-requests", v, sizeof(v)) == 0 && strcmp(v, "0") == 0;
            if (up_xfer_header(x, req0 ? "x-ratelimit-reset-requests" : "x-ratelimit-reset-tokens", v, sizeof(v)) == 0 ||
                up_xfer_header(x, "x-ratelimit-reset-requests", v, sizeof(v)) == 0)
                ra = (long)ratelimit_reset_ms(v);
        }
        if (ra >= 0)
            err.retry_after_ms = ra;
        attempt_failed(a, AO_HTTP_STATUS, &err);
        return;
    }
    if (r != UP_OK) {
        enum attempt_result ar;
        if (a->has_err) {
            err = a->err; /* our own abort: a response too large, a decode error, a mid-stream error event */
            ar = a->err_result;
        } else {
            ar = outcome_from_upstream(r);
            bool timeout = up_result_is_timeout(r);
            gw_error_set(&err, timeout ? 504 : 502, timeout ? GW_ERR_TIMEOUT : GW_ERR_API, "upstream %s: %s",
                         a->dep->label, up_xfer_error(x));
            err.retryable = true;
        }
        err.retryable = err.retryable || (!a->any_output && err.status >= 500);
        attempt_failed(a, ar, &err);
        return;
    }
    if (a->stream) {
        if (a->framing_state && a->prov->framing == FRAMING_SSE)
            sse_finish(a->framing_state);
        if (!a->stream_done) {
            gw_error_set(&err, 502, GW_ERR_API, "upstream %s ended the stream before its final event", a->dep->label);
            err.retryable = true;
            ex->incomplete = true;
            attempt_failed(a, AO_PROTOCOL, &err);
            return;
        }
        complete_stream(ex, a);
        return;
    }
    cJSON *resp = NULL;
    if (a->prov->decode_response(a, a->resp.data ? a->resp.data : "", a->resp.len, &resp, &err) != 0) {
        attempt_failed(a, AO_DECODE, &err);
        return;
    }
    respond_complete(ex, a, resp);
}

/* ---------- attempts ---------- */

static void attempt_free(struct attempt *a)
{
    if (a->xfer) {
        upstream_cancel(a->xfer);
        a->xfer = NULL;
    }
    if (a->framing_state) {
        if (a->prov->framing == FRAMING_AWS_EVENTSTREAM)
            eventstream_parser_free(a->framing_state);
        else
            sse_parser_free(a->framing_state);
        xfree(a->framing_state);
    }
    if (a->prov->free_state)
        a->prov->free_state(a);
    buf_free(&a->resp);
    xfree(a);
}

/* Weighted order of a model's usable deployments (a missing key is never usable); the model's balancing then
 * chooses the first: least_outstanding takes the less busy of the first two (power of two choices, drawn by
 * weight), latency the lowest moving average of time to first byte (one never measured first). */
static void plan_model(struct exchange *ex, const struct model_entry *m)
{
    ex->nplan = ex->iplan = 0;
    int n = 0;
    const struct deployment *cand[EX_MAX_PLAN];
    int64_t weights[EX_MAX_PLAN];
    int64_t total = 0;
    for (size_t i = 0; i < m->ndeps && n < EX_MAX_PLAN; i++) {
        if (m->deps[i].missing_key)
            continue;
        cand[n] = &m->deps[i];
        weights[n] = m->deps[i].weight;
        total += weights[n];
        n++;
    }
    while (n > 0) {
        int pick = 0;
        if (total > 0) {
            int64_t r = (int64_t)(rng_next(ex->gw) % (uint64_t)total);
            for (pick = 0; pick < n - 1; pick++) {
                if (r < weights[pick])
                    break;
                r -= weights[pick];
            }
        }
        ex->plan[ex->nplan++] = cand[pick];
        total -= weights[pick];
        cand[pick] = cand[n - 1];
        weights[pick] = weights[n - 1];
        n--;
    }
    if (ex->nplan < 2)
        return;
    if (m->balancing == BALANCE_LEAST_OUTSTANDING) {
        const struct deployment *a = ex->plan[0], *b = ex->plan[1];
        if (a->st && b->st && atomic_load_explicit(&b->st->outstanding, memory_order_relaxed) <
                                  atomic_load_explicit(&a->st->outstanding, memory_order_relaxed)) {
            ex->plan[0] = b;
            ex->plan[1] = a;
        }
    } else if (m->balancing == BALANCE_LATENCY) {
        int best = 0;
        uint64_t bv = UINT64_MAX;
        for (int i = 0; i < ex->nplan; i++) {
            uint64_t v = ex->plan[i]->st ? atomic_load_explicit(&ex->plan[i]->st->ewma_ttfb_us, memory_order_relaxed)
                                         : 0;
            if (v < bv) {
                bv = v;
                best = i;
            }
        }
        const struct deployment *d = ex->plan[best];
        memmove(&ex->plan[1], &ex->plan[0], (size_t)best * sizeof(ex->plan[0]));
        ex->plan[0] = d;
    }
}

static void enter_tier(struct exchange *ex, const struct model_entry *m)
{
    ex->tier = m;
    ex->tier_attempts = ex->round_started = 0;
    ex->tier_rounds = 0;
    plan_model(ex, m);
}

/* The next model of the fallback list being followed; false when there is none. */
static bool next_fallback(struct exchange *ex)
{
    const struct model_entry *m = ex->model;
    const struct model_entry *const *l = ex->fb_list == 1 ? m->cw_fallbacks : ex->fb_list == 2 ? m->cp_fallbacks
                                                                                               : m->fallbacks;
    size_t n = ex->fb_list == 1 ? m->ncw_fallbacks : ex->fb_list == 2 ? m->ncp_fallbacks : m->nfallbacks;
    if ((size_t)ex->fb_next >= n)
        return false;
    enter_tier(ex, l[ex->fb_next++]);
    return true;
}

/* A context-window (1) or content-policy (2) error: follow that list from its start. */
static bool enter_fallbacks(struct exchange *ex, int list)
{
    ex->fb_list = list;
    ex->fb_next = 0;
    return next_fallback(ex);
}

/* Starts one attempt on dep. Returns false when it ended before reaching the upstream and another deployment may
 * take it (a request this provider cannot express); true otherwise (it runs, or the exchange has ended). */
static bool start_attempt(struct exchange *ex, const struct deployment *dep, bool probe)
{
    struct gw_error err;
    if (!ex->client_started) { /* a retry starts clean: nothing of a failed attempt reached the client */
        ex->usage = (struct usage){0};
        ex->relayed_chars = ex->relayed_events = 0;
        ex->t_first_token_us = 0;
    }
    struct attempt *a = xcalloc(1, sizeof(*a));
    a->ex = ex;
    a->dep = dep;
    a->breaker_probe = probe;
    a->prov = ex->fops->provider_for ? ex->fops->provider_for(ex, dep) : dep->prov;
    a->op = ex->front == FRONT_OPENAI_EMBEDDINGS ? OP_EMBEDDINGS : OP_CHAT;
    a->stream = ex->rq.stream;
    a->passthrough = ex->fops->wire != WIRE_NONE && ex->fops->wire == a->prov->wire;
    buf_init(&a->resp, (size_t)ex->rq.cfg->gateway.max_response_bytes);
    ex->att = a;
    ex->attempts++;
    ex->tier_attempts++;
    ex->round_started++;
    ex->last_dep = dep;
    if (a->prov->run_local) {
        observers_attempt_start(ex, a, NULL);
        a->t_start_us = a->t_attempt_us = time_mono_us(); /* the local provider's timers are its own time */
        a->prov->run_local(a);                            /* failures come back through ex_attempt_fail */
        return true;
    }
    struct up_request r;
    up_request_init(&r);
    r.connect_timeout_ms = (long)dep->connect_timeout_ms;
    r.first_byte_timeout_ms = (long)dep->first_byte_timeout_ms;
    r.timeout_ms = (long)dep->timeout_ms;
    if (a->prov->encode_request(a, &r, &err) != 0) {
        up_request_free(&r);
        /* A request this provider cannot express: try another deployment, else tell the client (a 4xx that
         * another deployment may serve says retryable: a message thread only Anthropic can hold). */
        ex->tier_attempts--; /* no upstream was asked: not one of the model's attempts */
        ex->round_started--; /* nor a pass to repeat after a backoff (e.g. cloud credentials not available) */
        end_attempt(ex, a, AO_ENCODE_REFUSED, &err);
        ex->last_err = err;
        ex->have_err = true;
        if (err.status >= 500 || err.retryable)
            return false;
        ex_fail(ex, &err);
        return true;
    }
    static const struct up_callbacks cbs = {on_up_headers, on_up_data, on_up_done};
    observers_attempt_start(ex, a, &r);
    a->t_start_us = a->t_attempt_us = time_mono_us();
    a->xfer = upstream_start(ex->gw->up, &r, &cbs, a);
    up_request_free(&r);
    if (a->xfer == NULL) {
        const char *why = upstream_last_error(ex->gw->up);
        gw_error_set(&err, 500, GW_ERR_API, "%s", why ? why : "could not start the upstream request");
        end_attempt(ex, a, AO_START_FAILED, &err);
        ex_fail(ex, &err);
    }
    return true;
}

/* A backoff is waiting on the upstreams (their failures, their Retry-After): it is counted as upstream time. */
static void backoff_account(struct exchange *ex)
{
    if (ex->t_backoff_us) {
        ex->t_upstream_us += time_mono_us() - ex->t_backoff_us;
        ex->t_backoff_us = 0;
    }
}

static void on_backoff(uv_timer_t *t)
{
    struct exchange *ex = t->data;
    backoff_account(ex);
    if (!ex->done)
        ex_next_attempt(ex);
}

/* The request cannot be served: the last attempt's error, or (nothing was tried: every breaker open) a 503 with
 * Retry-After when a deployment will be worth trying again. */
static void fail_exhausted(struct exchange *ex, int64_t wait_ms)
{
    if (ex->have_err) {
        ex_fail(ex, &ex->last_err);
        return;
    }
    struct gw_error err;
    gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                 "no deployment of model %s is available now (circuit breakers open or in cool-down)",
                 ex->rq.model_name);
    err.retry_after_ms = wait_ms > 0 ? wait_ms : 1000;
    ex_fail(ex, &err);
}

/* The next attempt: the next usable deployment of the current plan; at the plan's end another pass after a
 * backoff (full jitter, at least a cool-down's Retry-After) if it fits in the deadline and the model has attempts
 * left; else the next fallback model; else the error. Never blocks: a wait is a timer. */
static void ex_next_attempt(struct exchange *ex)
{
    int64_t wait_fail = -1; /* Retry-After for a 503 when nothing could be tried */
    for (int guard = 0; guard < 4 * EX_MAX_ATTEMPTS && !ex->done; guard++) {
        const struct model_entry *m = ex->tier;
        if (ex->attempts >= EX_MAX_ATTEMPTS)
            break;
        if (ex->tier_attempts < m->retry.max_attempts) {
            int64_t now = dep_now_ms();
            bool started = false;
            while (!started && ex->iplan < ex->nplan) {
                const struct deployment *dep = ex->plan[ex->iplan++];
                bool probe = false;
                if (dep->st && !breaker_acquire(&dep->st->br, now, &probe))
                    continue;
                struct gw_error aerr;
                if (policy && policy->attempt_admit && !policy->attempt_admit(ex, dep, &aerr)) {
                    if (probe) /* give the probe slot back: no attempt */
                        breaker_record(&dep->st->br, now, BR_NEUTRAL, true);
                    ex->last_err = aerr; /* e.g. the deployment's rate limit: the next one may serve */
                    ex->have_err = true;
                    continue;
                }
                if (ex->attempts > 0 && !retry_budget_take(&ex->gw->rbudget, now)) {
                    if (probe) /* give the probe slot back: no attempt */
                        breaker_record(&dep->st->br, now, BR_NEUTRAL, true);
                    log_warn("request %s: retry budget spent (gateway.retries.budget_ratio); not retrying",
                             ex->rq.request_id);
                    fail_exhausted(ex, -1);
                    return;
                }
                if (start_attempt(ex, dep, probe))
                    return;
            }
            /* The pass is over. When will a deployment of this plan be worth trying? A 429's cool-down is waited
             * out (when it ends before the deadline); an open breaker is not: its cool-down is for the deployment
             * to recover, so the request goes on to a fallback, or fails now. */
            int64_t remaining = (int64_t)ex->deadline_ms - now;
            int64_t minw = INT64_MAX, min_open = INT64_MAX;
            bool any_unknown = false;
            for (int i = 0; i < ex->nplan; i++) {
                const struct deployment *d = ex->plan[i];
                int64_t w = 0;
                if (d->st) {
                    breaker_usable(&d->st->br, now, &w);
                    if (breaker_state(&d->st->br, now) == BREAKER_OPEN) {
                        if (w >= 0 && w < min_open)
                            min_open = w;
                        continue;
                    }
                }
                if (w < 0)
                    any_unknown = true; /* a half-open probe is out */
                else if (w < minw)
                    minw = w;
            }
            int64_t wait = -1;
            if (ex->round_started > 0 && (minw != INT64_MAX || any_unknown)) {
                /* attempts failed in this pass: back off, then another pass */
                wait = backoff_full_jitter(m->retry.backoff_base_ms, m->retry.backoff_max_ms, ex->tier_rounds,
                                           rng_next(ex->gw));
                if (minw != INT64_MAX && minw > wait)
                    wait = minw;
            } else if (ex->round_started == 0 && !any_unknown && minw != INT64_MAX && minw > 0) {
                wait = minw; /* nothing tried: every closed deployment is in a 429's cool-down */
            }
            if (wait < 0 || wait >= remaining)
                wait_fail = min_open != INT64_MAX ? min_open : minw != INT64_MAX && minw > 0 ? minw : wait_fail;
            if (wait >= 0 && wait < remaining) {
                ex->iplan = 0;
                ex->round_started = 0;
                ex->tier_rounds++;
                if (wait == 0)
                    continue;
                ex->t_backoff_us = time_mono_us();
                uv_timer_start(&ex->rtimer, on_backoff, (uint64_t)wait, 0);
                return;
            }
        }
        if (!next_fallback(ex))
            break;
        log_info("request %s: model %s spent; falling back to %s", ex->rq.request_id, ex->rq.model_name,
                 ex->tier->name);
    }
    fail_exhausted(ex, wait_fail);
}

/* ---------- stages ---------- */

static enum ex_next st_parse(struct exchange *ex, void *ud)
{
    (void)ud;
    struct gw_error err;
    if (ex->rq.run) /* its caller parsed it */
        return EX_CONTINUE;
    if (ex->fops->parse(&ex->rq, &err) != 0) {
        ex_fail(ex, &err);
        return EX_END;
    }
    if (ex->rq.stream && ex->fops->stream_new) /* only the stream writers keep state */
        ex->fstate = ex->fops->stream_new();
    return EX_CONTINUE;
}

static enum ex_next st_route(struct exchange *ex, void *ud)
{
    (void)ud;
    struct gw_error err;
    ex->model = registry_find(ex->reg, str_from(ex->rq.model_name));
    if (ex->model && ex->model->embeddings == (ex->front == FRONT_OPENAI_EMBEDDINGS))
        return EX_CONTINUE;
    if (ex->model == NULL)
        gw_error_set(&err, 404, GW_ERR_NOT_FOUND,
                     "The model `%s` does not exist or you do not have access to it. GET /v1/models lists the "
                     "models served here.",
                     ex->rq.model_name);
    else
        gw_error_set(&err, 400, GW_ERR_INVALID_REQUEST, "model `%s` is %s model", ex->rq.model_name,
                     ex->model->embeddings ? "an embeddings" : "a chat");
    snprintf(err.code, sizeof(err.code), "model_not_found");
    snprintf(err.param, sizeof(err.param), "model");
    ex->model = NULL;
    ex_fail(ex, &err);
    return EX_END;
}

/* authenticate (policy/auth.h): the key from Authorization: Bearer, x-api-key or api-key, looked up in the
 * in-memory keyring; sets rq.who. An internal caller that filled rq.who itself is trusted; a process that never
 * set up a keyring (unit tests through a loopback sink) does not authenticate. */
static const struct str *rq_header(const struct ex_request *rq, const char *name)
{
    return rq->header ? rq->header(rq->hctx, name) : NULL;
}

struct caller_user_ctx {
    const struct exchange *ex;
    struct buf b;
};

/* The caller's own end-user id: the request's `user` (OpenAI) or metadata.user_id (Anthropic). */
static struct str caller_user(void *ud)
{
    struct caller_user_ctx *c = ud;
    const struct ex_request *rq = &c->ex->rq;
    if (rq->user.n)
        return rq->user;
    struct jval v;
    const char *path = c->ex->front == FRONT_ANTHROPIC_MESSAGES ? "metadata.user_id" : "user";
    if (jscan_path(rq->body.p, rq->body.n, path, &v) == 0 && v.type == J_STRING && jval_str(&v, &c->b) == 0)
        return str_make(c->b.data, c->b.len);
    return STR_NULL;
}

static enum ex_next st_authenticate(struct exchange *ex, void *ud)
{
    (void)ud;
    if (ex->rq.who || !keyring_armed())
        return EX_CONTINUE;
    const struct ex_request *rq = &ex->rq;
    static const char *const routes[] = {"/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/responses"};
    struct auth_input in = {.model = str_from(rq->model_name),
                            .caller_user = caller_user,
                            .request_id = rq->request_id,
                            .route = !ex->rq.run                               ? routes[ex->front]
                                     : ex->front == FRONT_ANTHROPIC_MESSAGES ? "/v1/messages/count_tokens"
                                                                             : "/v1/responses/input_tokens"};
    in.secret = auth_secret_from(rq_header(rq, "authorization"), rq_header(rq, "x-api-key"), rq_header(rq, "api-key"));
    if (auth_mode_effective(rq->cfg) == AUTH_MODE_NONE && !auth_looks_like_key(in.secret))
        return EX_CONTINUE; /* anonymous (a placeholder key such as "sk-none" included) */
    const struct str *wf = rq_header(rq, "x-agentd-workflow");
    if (wf)
        in.workflow = *wf;
    struct caller_user_ctx cu = {ex, BUF_INIT(KEY_TEXT_MAX * 6)};
    in.ud = &cu;
    enum auth_result r = auth_check(&in, (int64_t)time(NULL), &ex->rq.who);
    buf_free(&cu.b);
    if (r == AUTH_OK)
        return EX_CONTINUE;
    struct gw_error err;
    if (r == AUTH_MODEL_DENIED) {
        gw_error_set(&err, 403, GW_ERR_PERMISSION, "This key may not use the model `%s`.", rq->model_name);
        snprintf(err.code, sizeof(err.code), "model_not_allowed");
        snprintf(err.param, sizeof(err.param), "model");
    } else { /* missing, unknown, revoked, expired: one answer */
        gw_error_set(&err, 401, GW_ERR_AUTHENTICATION,
                     "Invalid or missing API key. Pass an agentd virtual key as `Authorization: Bearer <key>`, "
                     "`x-api-key` or `api-key`.");
        snprintf(err.code, sizeof(err.code), "invalid_api_key");
    }
    ex_fail(ex, &err);
    return EX_END;
}

/* admit: the caller's own limits (rate limits, budget reservation: govern.c), then one of its key's slots (the key
 * record's max_concurrent), then one of the process's slots (MAX_CONCURRENT_REQUESTS), waiting in a FIFO queue
 * when all are taken (gateway/admission.h). The limits come first so that a caller over its own limit is told at
 * once and never holds a place in a queue; the key's slot comes before the process's so that a key at its own
 * limit waits without holding one of the process's slots. */
enum admit_refusal { REFUSE_FULL, REFUSE_TIMEOUT, REFUSE_DRAINING };

static void admit_refuse(struct exchange *ex, enum admit_refusal why, long limit)
{
    const struct config_admission *c = &ex->rq.cfg->gateway.admission;
    struct gw_error err;
    if (why == REFUSE_DRAINING)
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "this agentd is shutting down and takes no new work; retry (another instance will answer)");
    else if (why == REFUSE_FULL)
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "overloaded: all %ld slots (MAX_CONCURRENT_REQUESTS) are busy and the admission queue is full "
                     "(%lld waiting, gateway.admission.queue_size); retry shortly",
                     limit, (long long)c->queue_size);
    else
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "overloaded: no slot of %ld (MAX_CONCURRENT_REQUESTS) freed within %lld ms "
                     "(gateway.admission.max_wait, or the request's deadline); retry shortly",
                     limit, (long long)ex->adm.waited_us / 1000);
    snprintf(err.code, sizeof(err.code), "overloaded");
    err.retry_after_ms = (long)c->retry_after_ms;
    ex_fail(ex, &err);
}

/* The key's own limit: the caller's doing, so 429 like its rpm (another instance would not help). */
static void key_refuse(struct exchange *ex, enum admit_refusal why)
{
    const struct config_admission *c = &ex->rq.cfg->gateway.admission;
    const char *id = ex->rq.who && ex->rq.who->key ? ex->rq.who->key->id : "?";
    struct gw_error err;
    if (why == REFUSE_FULL)
        gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                     "concurrency limit reached for key '%s': %ld requests in flight (max_concurrent) and %lld "
                     "waiting (gateway.admission.queue_size); retry shortly",
                     id, ex->key_limit, (long long)c->queue_size);
    else
        gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                     "concurrency limit reached for key '%s': no slot of %ld (max_concurrent) freed within %lld ms "
                     "(gateway.admission.max_wait, or the request's deadline); retry shortly",
                     id, ex->key_limit, (long long)ex->kwait.waited_us / 1000);
    snprintf(err.code, sizeof(err.code), "concurrency_limit_exceeded");
    err.retry_after_ms = (long)c->retry_after_ms;
    ex_fail(ex, &err);
}

static void admitted(struct exchange *ex)
{
    ex->admitted = true;
    atomic_fetch_add(&ex_inflight, 1);
    metrics_add(&genai_inflight_requests, NULL, 1);
}

/* On this exchange's loop: the queue gave it a slot, or refused it (drain). */
static void on_admit_ready(struct adm_waiter *w)
{
    struct exchange *ex = (struct exchange *)((char *)w - offsetof(struct exchange, adm));
    if (w->state == ADM_W_GRANTED) {
        w->state = ADM_W_IDLE;
        if (ex->done) {
            adm_release(&admission_global); /* it ended meanwhile (client gone): pass the slot on */
        } else {
            uv_timer_stop(&ex->deadline);
            admitted(ex);
            ex_resume(ex);
        }
    } else if (!ex->done) {
        admit_refuse(ex, REFUSE_DRAINING, (long)ex->rq.cfg->gateway.max_concurrent_requests);
    }
    ex_unref(ex);
}

static void on_admit_timeout(uv_timer_t *t)
{
    struct exchange *ex = t->data;
    if (!adm_cancel(&admission_global, &ex->adm, true))
        return; /* granted or refused just now: on_admit_ready is on its way */
    admit_refuse(ex, REFUSE_TIMEOUT, (long)ex->rq.cfg->gateway.max_concurrent_requests);
    ex_unref(ex);
}

/* How long a wait for a slot may last from now: max_wait or the request's deadline, whichever comes first. The
 * key's wait and the process's wait share max_wait (it counts from the request's arrival at admit). */
static uint64_t admit_wait_ms(const struct exchange *ex, uint64_t now)
{
    const struct config_gateway *gc = &ex->rq.cfg->gateway;
    uint64_t deadline = ex->t_start_us + (uint64_t)gc->request_timeout_ms * 1000;
    uint64_t wait_ms = deadline > now ? (deadline - now) / 1000 : 0;
    uint64_t waited_ms = now > ex->admit_t0_us ? (now - ex->admit_t0_us) / 1000 : 0;
    uint64_t max_ms = (uint64_t)gc->admission.max_wait_ms > waited_ms ? (uint64_t)gc->admission.max_wait_ms - waited_ms
                                                                      : 0;
    return max_ms < wait_ms ? max_ms : wait_ms;
}

/* The process's slot (second half of admit); now: time_mono_us(), read by the caller (st_admit has just read it:
 * each read of the clock costs ~200 ns on a VM's clock source, issue 16 item 8). */
static enum ex_next admit_global(struct exchange *ex, uint64_t now)
{
    const struct config_gateway *gc = &ex->rq.cfg->gateway;
    long limit = (long)gc->max_concurrent_requests;
    ex->adm.loop = ex->gw->adm;
    ex->adm.ready = on_admit_ready;
    uint64_t wait_ms = admit_wait_ms(ex, now);
    long qmax = wait_ms > 0 ? (long)gc->admission.queue_size : 0;
    enum adm_result r = adm_acquire(&admission_global, &ex->adm, limit, qmax);
    if (r == ADM_GRANTED) {
        admitted(ex);
        return EX_CONTINUE;
    }
    if (r == ADM_QUEUED) {
        ex_ref(ex); /* the queue's: dropped by on_admit_ready, on_admit_timeout or ex_end, whichever takes it out */
        uv_timer_start(&ex->deadline, on_admit_timeout, wait_ms, 0);
        return EX_WAIT;
    }
    admit_refuse(ex, r == ADM_DRAINING ? REFUSE_DRAINING : REFUSE_FULL, limit);
    return EX_END;
}

/* On this exchange's loop: its key's queue gave it a slot; now the process's. */
static void on_key_admit_ready(struct adm_waiter *w)
{
    struct exchange *ex = (struct exchange *)((char *)w - offsetof(struct exchange, kwait));
    if (w->state == ADM_W_GRANTED) {
        w->state = ADM_W_IDLE;
        if (ex->done) {
            adm_release(ex->kadm); /* it ended meanwhile (client gone): pass the slot on */
        } else {
            uv_timer_stop(&ex->deadline);
            ex->key_admitted = true;
            if (admit_global(ex, time_mono_us()) == EX_CONTINUE)
                ex_resume(ex);
        }
    } else if (!ex->done) { /* refused: the process drains (adm_close closes the keys' queues too) */
        admit_refuse(ex, REFUSE_DRAINING, (long)ex->rq.cfg->gateway.max_concurrent_requests);
    }
    ex_unref(ex);
}

static void on_key_admit_timeout(uv_timer_t *t)
{
    struct exchange *ex = t->data;
    if (!adm_cancel(ex->kadm, &ex->kwait, true))
        return; /* granted just now: on_key_admit_ready is on its way */
    key_refuse(ex, REFUSE_TIMEOUT);
    ex_unref(ex);
}

static enum ex_next st_admit(struct exchange *ex, void *ud)
{
    (void)ud;
    if (policy && policy->admit) {
        enum ex_next n = policy->admit(ex); /* rate limits, budget reservation */
        if (n != EX_CONTINUE)
            return n;
    }
    ex->admit_t0_us = time_mono_us();
    const struct key_record *key = ex->rq.who ? ex->rq.who->key : NULL;
    if (key && key->max_concurrent > 0) {
        const struct config_admission *c = &ex->rq.cfg->gateway.admission;
        if (ex->kadm == NULL)
            ex->kadm = adm_key_get(key->id);
        ex->key_limit = (long)key->max_concurrent; /* a key update applies to the next acquire and release */
        ex->kwait.loop = ex->gw->adm;
        ex->kwait.ready = on_key_admit_ready;
        uint64_t wait_ms = admit_wait_ms(ex, ex->admit_t0_us);
        long qmax = wait_ms > 0 ? (long)c->queue_size : 0;
        enum adm_result r = adm_acquire(ex->kadm, &ex->kwait, ex->key_limit, qmax);
        if (r == ADM_QUEUED) {
            ex_ref(ex); /* the queue's: dropped by on_key_admit_ready, on_key_admit_timeout or ex_end */
            uv_timer_start(&ex->deadline, on_key_admit_timeout, wait_ms, 0);
            return EX_WAIT;
        }
        if (r == ADM_DRAINING) { /* the process's doing, not the key's: 503 as the process's queue */
            admit_refuse(ex, REFUSE_DRAINING, (long)ex->rq.cfg->gateway.max_concurrent_requests);
            return EX_END;
        }
        if (r != ADM_GRANTED) {
            key_refuse(ex, REFUSE_FULL);
            return EX_END;
        }
        ex->key_admitted = true;
    }
    return admit_global(ex, ex->admit_t0_us); /* read just now */
}

static enum ex_next st_plan(struct exchange *ex, void *ud)
{
    (void)ud;
    if (plan_hook)
        plan_hook(ex); /* routing to cheaper models (gateway/routing.c): may change the model first */
    enter_tier(ex, ex->model);
    struct gateway_worker *gw = ex->gw;
    const struct config_retry *rc = &ex->rq.cfg->gateway.retries;
    int64_t now = dep_now_ms();
    if (!gw->rbudget_init) {
        retry_budget_init(&gw->rbudget, rc->budget_ratio, (double)rc->budget_min_per_second, now);
        gw->rbudget_init = true;
    }
    gw->rbudget.ratio = rc->budget_ratio; /* a reload may change them */
    gw->rbudget.min_per_s = (double)rc->budget_min_per_second;
    retry_budget_request(&gw->rbudget, now);
    ex->deadline_ms = (uint64_t)(now + ex->rq.cfg->gateway.request_timeout_ms);
    if (ex->nplan == 0 && ex->model->nfallbacks == 0) {
        struct gw_error err;
        const struct deployment *d = &ex->model->deps[0];
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "model %s has no usable deployment: credentials for %s are not configured (%s)",
                     ex->rq.model_name, d->label, d->api_key_env ? d->api_key_env : "api_key");
        ex_fail(ex, &err);
        return EX_END;
    }
    /* The deadline counts from the request's arrival: time spent waiting for an admission slot is inside it. A
     * timer is due at the loop's clock + its timeout, and the loop's clock (uv_now: the monotonic clock's
     * milliseconds, time_mono_us()'s, read at the start of this turn) may be well behind now when the turn was
     * long. So the timeout is counted from the loop's clock to the deadline itself: it fires at the deadline
     * however stale the loop's clock is, with no clock read here (each costs ~200 ns on a VM's clock source,
     * issue 16 item 8). */
    uint64_t due_ms = ex->t_start_us / 1000 + (uint64_t)ex->rq.cfg->gateway.request_timeout_ms;
    uint64_t loop_ms = uv_now(ex->deadline.loop);
    uv_timer_start(&ex->deadline, on_deadline, due_ms > loop_ms ? due_ms - loop_ms : 1, 0);
    return EX_CONTINUE;
}

/* The front's own stage (front_ops.prepare), when it has one. */
static enum ex_next st_front(struct exchange *ex, void *ud)
{
    (void)ud;
    return ex->fops->prepare ? (enum ex_next)ex->fops->prepare(ex) : EX_CONTINUE;
}

/* Waits until an attempt ends the exchange (a response, a stream's end, an error). */
static enum ex_next st_attempt(struct exchange *ex, void *ud)
{
    (void)ud;
    if (ex->rq.run) { /* a token count: its caller answers (ex_reply_counted / ex_fail) */
        ex->usage = (struct usage){.known = true}; /* whatever the answer, a count bills nothing */
        ex->run_started = true;
        ex->rq.run(ex, ex->rq.run_ud);
        return EX_WAIT;
    }
    ex_next_attempt(ex);
    return EX_WAIT;
}

struct ex_stage {
    const char *name;
    ex_stage_fn run;
    void *ud;
    bool pluggable; /* a pass-through until its module lands */
    bool counted;   /* runs for a request its caller answers (ex_request.run: token counts) */
};

static struct ex_stage spine[] = {
    {"parse", st_parse, NULL, false, true},
    /* authenticate before route: a caller without a valid key learns nothing, not even which models exist */
    {"authenticate", st_authenticate, NULL, true, true}, /* keys: sets rq.who */
    {"route", st_route, NULL, false, true},
    {"front", st_front, NULL, false, false},  /* the front's own look-ups (stored responses) */
    {"admit", st_admit, NULL, false, true},   /* rate limits, budget reservation, then a slot (may wait in the queue) */
    {"cache", NULL, NULL, true, false},       /* may END on a hit */
    {"plan", st_plan, NULL, false, false},
    {"attempt", st_attempt, NULL, false, true},
};
#define NSTAGES ((int)(sizeof(spine) / sizeof(spine[0])))

int ex_stage_plug(const char *stage, ex_stage_fn fn, void *ud)
{
    for (int i = 0; i < NSTAGES; i++)
        if (spine[i].pluggable && strcmp(spine[i].name, stage) == 0) {
            spine[i].run = fn;
            spine[i].ud = ud;
            return 0;
        }
    return -1;
}

/* Runs stages from ex->stage until one waits or the exchange ends. */
static void ex_run(struct exchange *ex)
{
    ex->in_run = true;
    ex_ref(ex);
    while (!ex->done && ex->stage < NSTAGES) {
        const struct ex_stage *s = &spine[ex->stage];
        if (ex->rq.run && !s->counted) {
            ex->stage++;
            continue;
        }
        ex->resumed = false;
        enum ex_next n = s->run ? s->run(ex, s->ud) : EX_CONTINUE;
        if (ex->done || n == EX_END)
            break;
        if (n == EX_WAIT) {
            if (ex->resumed) /* resumed from inside the stage: ex_resume moved on already */
                continue;
            break;
        }
        ex->stage++;
    }
    ex->in_run = false;
    ex_unref(ex);
}

void ex_resume(struct exchange *ex)
{
    if (ex->done)
        return;
    ex->stage++;
    if (ex->in_run) {
        ex->resumed = true;
        return;
    }
    ex_run(ex);
}

void ex_rerun(struct exchange *ex)
{
    if (ex->done)
        return;
    ex->stage--; /* ex_resume moves on by one: back to the stage that waited */
    ex_resume(ex);
}

struct exchange *ex_submit(struct gateway_worker *gw, const struct front_ops *front, const struct ex_request *rq,
                           const struct ex_sink_ops *sink_ops, void *sink)
{
    /* Zeroed but for three parts written before they are read: rq (copied next), id (written next) and last_err
     * (written whole wherever have_err is set, read only then). The exchange is ~4.6 KB and clearing all of it
     * was the largest single cost the spine added to a proxied request (issue 16 item 8). */
    _Static_assert(offsetof(struct exchange, rq) == 0 &&
                       sizeof(struct ex_request) <= offsetof(struct exchange, last_err) &&
                       offsetof(struct exchange, last_err) + sizeof(struct gw_error) <= offsetof(struct exchange, id),
                   "ex_submit zeroes the exchange around rq, last_err and id, in this order");
    struct exchange *ex = ex_take(gw);
    char *base = (char *)ex;
    size_t err_at = offsetof(struct exchange, last_err), err_end = err_at + sizeof(ex->last_err);
    size_t id_at = offsetof(struct exchange, id), id_end = id_at + sizeof(ex->id);
    memset(base + sizeof(ex->rq), 0, err_at - sizeof(ex->rq));
    memset(base + err_end, 0, id_at - err_end);
    memset(base + id_end, 0, sizeof(*ex) - id_end);
    ex->rq = *rq;
    ex->rq.client_tree = NULL;
    ex->fops = front;
    ex->front = front == &front_anthropic          ? FRONT_ANTHROPIC_MESSAGES
                : front == &front_openai_embeddings ? FRONT_OPENAI_EMBEDDINGS
                : front == &front_responses  ? FRONT_OPENAI_RESPONSES
                                                    : FRONT_OPENAI_CHAT;
    ex->sink_ops = sink_ops;
    ex->sink = sink;
    ex->gw = gw;
    ex->reg = registry_of(rq->cfg);
    ex->refs = 1; /* the spine's, dropped when the deadline timer has closed */
    ex->t_start_us = rq->t_start_us ? rq->t_start_us : time_mono_us();
    ex->created = (int64_t)time(NULL);
    ex->pt_open = -1;
    {
        /* "<prefix><request id>", cut to fit as snprintf would (no printf on every request) */
        const char *pre = ex->front == FRONT_ANTHROPIC_MESSAGES ? "msg_" : "chatcmpl-";
        size_t pn = strlen(pre), rn = strlen(rq->request_id);
        if (rn > sizeof(ex->id) - 1 - pn)
            rn = sizeof(ex->id) - 1 - pn;
        memcpy(ex->id, pre, pn);
        memcpy(ex->id + pn, rq->request_id, rn);
        ex->id[pn + rn] = '\0';
    }
    uv_timer_init(gw->loop, &ex->deadline);
    ex->deadline.data = ex;
    uv_timer_init(gw->loop, &ex->rtimer);
    ex->rtimer.data = ex;
    ex_ref(ex); /* the rtimer's, dropped when it has closed */
    live_link(ex);
    if (sink_ops->bind)
        sink_ops->bind(sink, ex);
    for (size_t i = 0; i < nobservers; i++)
        if (observers[i]->on_start)
            observers[i]->on_start(ex);
    ex_ref(ex);
    ex_run(ex);
    struct exchange *ret = ex->done ? NULL : ex;
    ex_unref(ex);
    return ret;
}
