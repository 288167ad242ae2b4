/* alerts.c: spend alerts (issue 14 item 4). See alerts.h. */
#include "policy/alerts.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "net/upstream.h"
#include "telemetry/metrics.h"

/* ---- configuration ---- */

static const char *const formats[] = {"json", "slack", NULL};

#define WOFF(f) offsetof(struct config_alert_webhook, f)
static const struct cfg_field webhook_fields[] = {
    {.key = "url", .type = CFG_STRING, .off = WOFF(url), .max = 2048, .flags = CFG_REQUIRED,
     .help = "where alerts are POSTed (http or https)"},
    {.key = "secret_env", .type = CFG_STRING, .off = WOFF(secret_env), .max = 128,
     .help = "environment variable holding the HMAC-SHA256 secret (x-agentd-signature); unset: unsigned"},
    {.key = "format", .type = CFG_ENUM, .off = WOFF(format), .enums = formats, .def = "json",
     .help = "json (the alert object), or slack ({\"text\": ...} for an incoming webhook)"},
};
static const struct cfg_schema webhook_schema = {.name = "webhook",
                                                 .item_size = sizeof(struct config_alert_webhook),
                                                 .fields = webhook_fields,
                                                 .nfields = ARRAY_LEN(webhook_fields)};

static void alerts_validate(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path)
{
    const struct config_alerts *a = obj;
    for (size_t i = 0; i < a->thresholds.n; i++) {
        char *end;
        long v = strtol(a->thresholds.v[i], &end, 10);
        if (*a->thresholds.v[i] == '\0' || *end || v < 1 || v > 1000)
            cfg_error_at(ctx, where, path, "thresholds: '%s' is not a percentage from 1 to 1000",
                         a->thresholds.v[i]);
    }
}

#define AOFF(f) offsetof(struct config_alerts, f)
static const struct cfg_field alerts_fields[] = {
    {.key = "thresholds", .type = CFG_STRLIST, .off = AOFF(thresholds),
     .help = "percentages of each budget that fire an alert once per budget window, e.g. [50, 80, 100]"},
    {.key = "anomaly", .type = CFG_BOOL, .off = AOFF(anomaly), .def = "false",
     .help = "alert when the last hour's spend exceeds anomaly_factor times the trailing hourly average"},
    {.key = "anomaly_factor", .type = CFG_DOUBLE, .off = AOFF(anomaly_factor), .dmin = 1, .dmax = 1000, .def = "3",
     .help = "how many times the baseline's hourly average the last hour must exceed"},
    {.key = "anomaly_min_usd", .type = CFG_DOUBLE, .off = AOFF(anomaly_min_usd), .dmin = 0, .dmax = 1e9,
     .def = "1", .help = "an hour below this never fires (small absolute numbers are noise)"},
    {.key = "anomaly_baseline", .type = CFG_DURATION, .off = AOFF(anomaly_baseline_ms), .min = 3600000,
     .max = 7LL * 86400000, .def = "24h", .help = "the trailing window before the last hour the average is taken over"},
    {.key = "check_interval", .type = CFG_DURATION, .off = AOFF(check_interval_ms), .min = 10, .max = 3600000,
     .def = "30s", .help = "how often the spend rate is compared with its baseline"},
    {.key = "retries", .type = CFG_INT, .off = AOFF(retries), .min = 0, .max = 20, .def = "5",
     .help = "further attempts of a webhook delivery that failed (transport error, 5xx, 429)"},
    {.key = "retry_backoff", .type = CFG_DURATION, .off = AOFF(retry_backoff_ms), .min = 1, .max = 600000,
     .def = "1s", .help = "the wait before the first retry, doubled for each next one"},
    {.key = "timeout", .type = CFG_DURATION, .off = AOFF(timeout_ms), .min = 100, .max = 600000, .def = "10s",
     .help = "one webhook delivery attempt, whole"},
    {.key = "log", .type = CFG_BOOL, .off = AOFF(log), .def = "true",
     .help = "write each alert to the log (msg \"spend alert\", warning level)"},
    {.key = "webhooks", .type = CFG_LIST, .off = AOFF(webhooks), .sub = &webhook_schema, .flags = CFG_RESTART,
     .help = "where alerts are POSTed, signed and retried"},
};
const struct cfg_schema alerts_config_schema = {.name = "alerts",
                                                .fields = alerts_fields,
                                                .nfields = ARRAY_LEN(alerts_fields),
                                                .validate = alerts_validate};

/* ---- state ---- */

struct delivery {
    struct delivery *next;   /* the queue (new) or the in-flight list */
    char *url, *secret;      /* secret NULL: unsigned */
    char *body;
    size_t len;
    char id[40];
    int attempt;
    uv_timer_t timer;        /* backoff; initialised on the alerts loop */
    bool timer_init;
    struct up_xfer *xfer;
    int status;
};

#define FIRED_MAX 16384
#define MINUTES_MAX (7 * 1440 + 60)

static struct {
    pthread_mutex_t mu;
    bool running, stopping;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick;
    struct upstream *up;
    struct delivery *queue;  /* to start (mu) */
    struct delivery *live;   /* started (alerts thread only) */
    struct config *cfg;      /* the configuration alerts started with (webhooks, retries) */
    uint64_t fired[FIRED_MAX]; /* hashes of (budget, window, threshold) already fired; 0: empty */
    size_t nfired;
    int64_t minute_nusd[MINUTES_MAX], minute_of[MINUTES_MAX];
    int64_t last_anomaly_hour;
    uint64_t seq;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER, .last_anomaly_hour = -1};

static const char *const kind_labels[] = {"kind", NULL};
static const char *const result_labels[] = {"result", NULL};
static struct metric_def m_alerts =
    METRIC_DEF("agentd_spend_alerts_total", "Spend alerts fired, by kind (budget_threshold, spend_rate_anomaly).",
               METRIC_COUNTER, kind_labels);
static struct metric_def m_deliveries = METRIC_DEF(
    "agentd_alert_deliveries_total", "Webhook delivery attempts of spend alerts, by result (ok, retry, failed).",
    METRIC_COUNTER, result_labels);

static struct metric_def m_checks = METRIC_DEF(
    "agentd_spend_rate_checks_total", "Times the spend rate was compared with its baseline (alerts.anomaly).",
    METRIC_COUNTER, NULL);

void alerts_sign(const char *secret, const char *ts, const char *body, size_t len, char out[65])
{
    size_t tl = strlen(ts);
    unsigned char *msg = xmalloc(tl + 1 + len);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + len, mac, &ml);
    xfree(msg);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[64] = '\0';
}

/* Logs an alert, counts it and queues it for every webhook. json: the alert object; text: one line for Slack. */
static void alerts_fire(const char *kind, struct buf *json, const char *text);

/* s as the inside of a JSON string */
static void json_escape(struct buf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            buf_printf(b, "\\u%04x", c);
        else
            buf_append_char(b, (char)c);
    }
}

/* ---- delivery (on the alerts thread) ---- */

static void start_delivery(struct delivery *d);

static void delivery_release(struct delivery *d)
{
    xfree(d->url);
    xfree(d->secret);
    xfree(d->body);
    xfree(d);
}

static void delivery_closed(uv_handle_t *h)
{
    delivery_release(h->data);
}

static void delivery_free(struct delivery *d)
{
    struct delivery **p = &A.live;
    while (*p && *p != d)
        p = &(*p)->next;
    if (*p)
        *p = d->next;
    if (d->xfer)
        upstream_cancel(d->xfer);
    d->xfer = NULL;
    if (d->timer_init) {
        uv_close((uv_handle_t *)&d->timer, delivery_closed);
        return;
    }
    delivery_release(d);
}

static void on_backoff(uv_timer_t *t)
{
    start_delivery(t->data);
}

static void dl_headers(struct up_xfer *x, void *ud)
{
    ((struct delivery *)ud)->status = x->status;
}

static int dl_data(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    (void)x;
    (void)data;
    (void)len;
    (void)ud;
    return UP_DATA_OK; /* the receiver's answer is not read */
}

static void dl_done(struct up_xfer *x, enum up_result r, void *ud)
{
    struct delivery *d = ud;
    d->xfer = NULL;
    bool ok = r == UP_OK && d->status >= 200 && d->status < 300;
    bool retryable = r != UP_OK || d->status >= 500 || d->status == 429 || d->status == 408;
    if (ok) {
        metrics_inc(&m_deliveries, (const char *[]){"ok"});
        delivery_free(d);
        return;
    }
    if (retryable && d->attempt <= A.cfg->alerts.retries && !A.stopping) {
        metrics_inc(&m_deliveries, (const char *[]){"retry"});
        uint64_t wait = (uint64_t)A.cfg->alerts.retry_backoff_ms << (d->attempt - 1 < 16 ? d->attempt - 1 : 16);
        if (!d->timer_init) {
            uv_timer_init(&A.loop, &d->timer);
            d->timer.data = d;
            d->timer_init = true;
        }
        uv_timer_start(&d->timer, on_backoff, wait, 0);
        return;
    }
    metrics_inc(&m_deliveries, (const char *[]){"failed"});
    log_warn("spend alert %s: delivery to %s failed after %d attempts (%s, status %d)", d->id, d->url, d->attempt,
             r == UP_OK ? "answered" : up_xfer_error(x), d->status);
    delivery_free(d);
}

static void start_delivery(struct delivery *d)
{
    d->attempt++;
    d->status = 0;
    struct up_request r;
    up_request_init(&r);
    r.method = "POST";
    buf_append_str(&r.url, d->url);
    buf_append_str(&r.headers, "Content-Type: application/json\n");
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)(time_wall_us() / 1000000));
    buf_printf(&r.headers, "x-agentd-timestamp: %s\nx-agentd-alert-id: %s\nx-agentd-delivery-attempt: %d\n", ts,
               d->id, d->attempt);
    if (d->secret) {
        char sig[65];
        alerts_sign(d->secret, ts, d->body, d->len, sig);
        buf_printf(&r.headers, "x-agentd-signature: sha256=%s\n", sig);
    }
    buf_append(&r.body, d->body, d->len);
    r.connect_timeout_ms = (long)A.cfg->alerts.timeout_ms;
    r.timeout_ms = (long)A.cfg->alerts.timeout_ms;
    static const struct up_callbacks cbs = {dl_headers, dl_data, dl_done};
    d->xfer = upstream_start(A.up, &r, &cbs, d);
    up_request_free(&r);
    if (d->xfer == NULL) {
        metrics_inc(&m_deliveries, (const char *[]){"failed"});
        log_warn("spend alert %s: cannot send to %s: %s", d->id, d->url, upstream_last_error(A.up));
        delivery_free(d);
    }
}

/* ---- anomaly (on the alerts thread) ---- */

static void check_anomaly(void)
{
    const struct config_alerts *ca = &A.cfg->alerts;
    int64_t now_ms = (int64_t)(time_wall_us() / 1000);
    int64_t minute = now_ms / 60000, hour = now_ms / 3600000;
    int64_t base_min = ca->anomaly_baseline_ms / 60000;
    int64_t last = 0, base = 0;
    pthread_mutex_lock(&A.mu);
    for (int64_t m = minute - 59 - base_min; m <= minute; m++) {
        size_t i = (size_t)(m % MINUTES_MAX);
        if (A.minute_of[i] != m)
            continue;
        if (m > minute - 60)
            last += A.minute_nusd[i];
        else
            base += A.minute_nusd[i];
    }
    bool fire = A.last_anomaly_hour != hour && (double)last / 1e9 >= ca->anomaly_min_usd &&
                (double)last > ca->anomaly_factor * (double)base / ((double)base_min / 60.0);
    if (fire)
        A.last_anomaly_hour = hour;
    pthread_mutex_unlock(&A.mu);
    if (!fire)
        return;
    double avg = (double)base / 1e9 / ((double)base_min / 60.0);
    struct buf b = BUF_INIT(1 << 16);
    buf_printf(&b,
               "{\"type\":\"agentd.spend_alert\",\"kind\":\"spend_rate_anomaly\",\"last_hour_usd\":%.6f,"
               "\"baseline_hourly_usd\":%.6f,\"factor\":%g,\"baseline_hours\":%lld,\"ts\":%lld}",
               (double)last / 1e9, avg, ca->anomaly_factor, (long long)(base_min / 60), (long long)(now_ms / 1000));
    char text[512];
    snprintf(text, sizeof(text),
             "agentd: spend in the last hour is $%.4f, above %g times the trailing hourly average ($%.4f)",
             (double)last / 1e9, ca->anomaly_factor, avg);
    alerts_fire("spend_rate_anomaly", &b, text);
    buf_free(&b);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (A.cfg->alerts.anomaly) {
        check_anomaly();
        metrics_inc(&m_checks, NULL);
    }
}

static void on_wake(uv_async_t *h)
{
    (void)h;
    pthread_mutex_lock(&A.mu);
    struct delivery *q = A.queue;
    A.queue = NULL;
    bool stopping = A.stopping;
    pthread_mutex_unlock(&A.mu);
    while (q) {
        struct delivery *d = q;
        q = q->next;
        d->next = A.live;
        A.live = d;
        start_delivery(d);
    }
    if (!stopping)
        return;
    while (A.live)
        delivery_free(A.live);
    uv_timer_stop(&A.tick);
    uv_close((uv_handle_t *)&A.tick, NULL);
    uv_close((uv_handle_t *)&A.wake, NULL);
    upstream_free(A.up);
    A.up = NULL;
}

static void alerts_thread(void *arg)
{
    (void)arg;
    uv_run(&A.loop, UV_RUN_DEFAULT);
}

static void alerts_fire(const char *kind, struct buf *json, const char *text)
{
    metrics_inc(&m_alerts, (const char *[]){kind});
    const struct config *cfg = A.cfg;
    if (cfg == NULL)
        return;
    if (cfg->alerts.log) {
        struct log_line l;
        if (log_begin(&l, LL_WARN, "spend alert")) {
            log_field_cstr(&l, "kind", kind);
            log_field_cstr(&l, "text", text);
            log_field_str(&l, "alert", json->data, json->len);
            log_end(&l);
        }
    }
    const struct config_alert_webhook *w = cfg->alerts.webhooks.items;
    struct delivery *head = NULL;
    pthread_mutex_lock(&A.mu);
    uint64_t seq = ++A.seq;
    pthread_mutex_unlock(&A.mu);
    for (size_t i = 0; i < cfg->alerts.webhooks.n; i++) {
        struct delivery *d = xcalloc(1, sizeof(*d));
        d->url = xstrdup(w[i].url);
        const char *sec = w[i].secret_env ? getenv(w[i].secret_env) : NULL;
        d->secret = sec && *sec ? xstrdup(sec) : NULL;
        snprintf(d->id, sizeof(d->id), "al_%llx_%llu", (unsigned long long)(time_wall_us() / 1000000),
                 (unsigned long long)seq);
        struct buf b = BUF_INIT(1 << 20);
        if (w[i].format == ALERT_FORMAT_SLACK) {
            buf_append_str(&b, "{\"text\":\"");
            json_escape(&b, text);
            buf_append_str(&b, "\"}");
        } else {
            /* the id goes in first: {"id":..., <the alert's members>} */
            buf_printf(&b, "{\"id\":\"%s\",", d->id);
            buf_append(&b, json->data + 1, json->len - 1);
        }
        d->len = b.len;
        d->body = b.data ? b.data : xstrdup("");
        d->next = head;
        head = d;
    }
    if (head == NULL)
        return;
    pthread_mutex_lock(&A.mu);
    bool running = A.running && !A.stopping;
    if (running) {
        struct delivery *tail = head;
        while (tail->next)
            tail = tail->next;
        tail->next = A.queue;
        A.queue = head;
    }
    pthread_mutex_unlock(&A.mu);
    if (running) {
        uv_async_send(&A.wake);
        return;
    }
    while (head) {
        struct delivery *d = head;
        head = head->next;
        delivery_release(d);
    }
}

/* ---- the public side ---- */

int alerts_start(const struct config *cfg)
{
    static bool registered;
    if (!registered) {
        metrics_register(&m_alerts);
        metrics_register(&m_deliveries);
        metrics_register(&m_checks);
        registered = true;
    }
    if (A.running || (cfg->alerts.thresholds.n == 0 && !cfg->alerts.anomaly))
        return 0;
    A.cfg = config_ref((struct config *)cfg);
    if (uv_loop_init(&A.loop) != 0)
        return -1;
    uv_async_init(&A.loop, &A.wake, on_wake);
    uv_timer_init(&A.loop, &A.tick);
    uv_timer_start(&A.tick, on_tick, (uint64_t)cfg->alerts.check_interval_ms,
                   (uint64_t)cfg->alerts.check_interval_ms);
    A.up = upstream_new(&A.loop, (struct up_options){0});
    A.stopping = false;
    if (uv_thread_create(&A.thread, alerts_thread, NULL) != 0) {
        log_error("spend alerts: cannot start the delivery thread");
        return -1;
    }
    A.running = true;
    return 0;
}

void alerts_stop(void)
{
    if (!A.running)
        return;
    pthread_mutex_lock(&A.mu);
    A.stopping = true;
    pthread_mutex_unlock(&A.mu);
    uv_async_send(&A.wake);
    uv_thread_join(&A.thread);
    uv_run(&A.loop, UV_RUN_DEFAULT); /* closes still pending */
    uv_loop_close(&A.loop);
    pthread_mutex_lock(&A.mu);
    while (A.queue) {
        struct delivery *d = A.queue;
        A.queue = d->next;
        delivery_release(d);
    }
    A.running = false;
    pthread_mutex_unlock(&A.mu);
    config_unref(A.cfg);
    A.cfg = NULL;
}

void alerts_note_spend(int64_t nusd, int64_t now_ms)
{
    if (nusd <= 0 || !A.running)
        return;
    int64_t minute = now_ms / 60000;
    size_t i = (size_t)(minute % MINUTES_MAX);
    pthread_mutex_lock(&A.mu);
    if (A.minute_of[i] != minute) {
        A.minute_of[i] = minute;
        A.minute_nusd[i] = 0;
    }
    A.minute_nusd[i] += nusd;
    pthread_mutex_unlock(&A.mu);
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL; /* a separator, so that ("ab","c") != ("a","bc") */
}

/* True the first time (budget, window, threshold) is seen. Bounded: when the table is full it starts over
 * (a threshold may then fire again in its window; documented). */
static bool first_time(uint64_t h)
{
    if (h == 0)
        h = 1;
    bool first = false;
    pthread_mutex_lock(&A.mu);
    if (A.nfired >= FIRED_MAX * 3 / 4) {
        memset(A.fired, 0, sizeof(A.fired));
        A.nfired = 0;
    }
    size_t i = (size_t)(h % FIRED_MAX);
    while (A.fired[i] && A.fired[i] != h)
        i = (i + 1) % FIRED_MAX;
    if (A.fired[i] == 0) {
        A.fired[i] = h;
        A.nfired++;
        first = true;
    }
    pthread_mutex_unlock(&A.mu);
    return first;
}

void alerts_budget_use(const struct config *cfg, const char *scope, const char *name, const char *window,
                       int64_t window_start, double used, double limit, const char *unit)
{
    if (!A.running || cfg->alerts.thresholds.n == 0)
        return;
    for (size_t i = 0; i < cfg->alerts.thresholds.n; i++) {
        long pct = strtol(cfg->alerts.thresholds.v[i], NULL, 10);
        if (used * 100.0 < (double)pct)
            continue;
        char ws[24], ps[24];
        snprintf(ws, sizeof(ws), "%lld", (long long)window_start);
        snprintf(ps, sizeof(ps), "%ld", pct);
        uint64_t h = fnv(fnv(fnv(fnv(fnv(1469598103934665603ULL, scope), name), window), ws), ps);
        if (!first_time(h))
            continue;
        struct buf b = BUF_INIT(1 << 16);
        buf_printf(&b, "{\"type\":\"agentd.spend_alert\",\"kind\":\"budget_threshold\",\"scope\":\"%s\",\"name\":",
                   scope);
        /* the name is a key id, user, team or workflow: escaped as a JSON string */
        buf_append_char(&b, '"');
        json_escape(&b, name);
        buf_printf(&b,
                   "\",\"window\":\"%s\",\"window_start\":%lld,\"threshold_pct\":%ld,\"used_ratio\":%.6f,"
                   "\"limit\":%.6f,\"unit\":\"%s\",\"ts\":%lld}",
                   window, (long long)window_start, pct, used, limit, unit,
                   (long long)(time_wall_us() / 1000000));
        char text[512];
        snprintf(text, sizeof(text), "agentd: %s '%.100s' has used %.0f%% of its %s budget (%.4f %s; alert at %ld%%)",
                 scope, name, used * 100.0, window, limit, unit, pct);
        alerts_fire("budget_threshold", &b, text);
        buf_free(&b);
    }
}
