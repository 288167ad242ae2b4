/* alerts.h: spend alerts (issue 14 item 4, docs/budgets.md "Spend alerts").
 *
 * Two kinds. A budget threshold: after each settle the gateway reports the use of every budget that governs the
 * exchange (alerts_budget_use); each threshold of `alerts.thresholds` (percent) fires once per budget per window.
 * A spend-rate anomaly: spend is summed per minute (alerts_note_spend); every alerts.check_interval the last
 * hour is compared with the hourly average of the trailing alerts.anomaly_baseline before it, and an hour above
 * anomaly_factor times that average (and at least anomaly_min_usd) fires once per clock hour.
 *
 * Every alert goes to the log (msg "spend alert"), to the metric agentd_spend_alerts_total{kind} and to each
 * webhook: a JSON POST (or Slack's {"text": ...}) signed with HMAC-SHA256 over "<timestamp>.<body>" under the
 * webhook's secret (x-agentd-signature: sha256=<hex>, x-agentd-timestamp, x-agentd-alert-id), retried with
 * exponential backoff on a transport failure, a 5xx or a 429. Delivery runs on a thread of its own. */
#ifndef AGENTD_ALERTS_H
#define AGENTD_ALERTS_H

#include <stdbool.h>
#include <stdint.h>

#include "config/schema.h"

struct config;

enum alert_format { ALERT_FORMAT_JSON, ALERT_FORMAT_SLACK };

struct config_alert_webhook {
    char *url;
    char *secret_env; /* the environment variable holding the HMAC secret; NULL: unsigned */
    int format;       /* enum alert_format */
};

extern const struct cfg_schema alerts_config_schema;

/* Starts the delivery thread when cfg has alerts configured (thresholds or anomaly, and anything to deliver to:
 * webhooks or the log). 0, or -1 when the thread could not start. */
int alerts_start(const struct config *cfg);
/* Stops the thread; alerts still queued get one attempt, then are dropped. */
void alerts_stop(void);
/* A settled exchange's charge (nano-USD) at now_ms (wall clock). Any thread. */
void alerts_note_spend(int64_t nusd, int64_t now_ms);
/* A budget's use after a settle (any thread): scope and name say whose, window its name and start (unix
 * seconds), used the share of its limit used (spent, 0..), limit and unit ("usd" or "tokens") for the message. */
void alerts_budget_use(const struct config *cfg, const char *scope, const char *name, const char *window,
                       int64_t window_start, double used, double limit, const char *unit);

/* The signature a receiver checks: hex HMAC-SHA256(secret, ts "." body) into out (65 bytes). */
void alerts_sign(const char *secret, const char *ts, const char *body, size_t len, char out[65]);

#endif
