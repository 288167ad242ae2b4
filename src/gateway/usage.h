/* usage.h: upstream token counts judged one way (usage.c). struct usage itself is in gw_types.h. */
#ifndef AGENTD_GATEWAY_USAGE_H
#define AGENTD_GATEWAY_USAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/gw_types.h"

#define USAGE_MAX_TOKENS_DEFAULT 10000000LL /* gateway.max_usage_tokens: per count, per request */
#define USAGE_MAX_TOKENS_LIMIT 1000000000000LL /* the largest bound the configuration accepts */

struct usage_limits {
    int64_t max_tokens; /* largest plausible count of one kind in one response */
};
/* The bound in force (process-wide; set from gateway.max_usage_tokens whenever a configuration is loaded). */
struct usage_limits usage_limits_get(void);
void usage_limits_set(const struct usage_limits *l);

/* The one decision on one upstream count: a JSON number (is_number) whose value d is whole and in [0, max]. */
bool usage_count_ok(bool is_number, double d, const struct usage_limits *l);
/* One count field of a usage object, cJSON or jscan alike: absent or null -> 0; a plausible count -> its value;
 * anything else -> 0 with u->invalid set (usage_check then drops the whole usage). */
struct cJSON;
struct jval;
int64_t usage_read_json(struct usage *u, const struct cJSON *v);
int64_t usage_read_jval(struct usage *u, const struct jval *v);
/* After the counts are read (u->known set when the upstream reported usage at all): a usage with an invalid field
 * or a count outside [0, l->max_tokens] becomes "not reported" (zero counts, known false, invalid true).
 * Returns u->known. */
bool usage_validate(struct usage *u, const struct usage_limits *l);
/* usage_validate with the bound in force. With a deployment (the point where an attempt takes the usage), a
 * dropped usage not counted yet is counted in agentd_gateway_usage_invalid_total{deployment} and logged (a
 * warning once per deployment per process); extractors without one pass NULL and only validate. */
bool usage_check(struct usage *u, const char *deployment);
/* Registers the metric family (once, at start-up, before threads). */
void usage_metrics_register(void);

#endif
