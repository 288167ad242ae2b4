/* genai.h: the GenAI names table: the metric families of LLM calls through the gateway, with OpenTelemetry's
 * gen_ai.* names in Prometheus spelling plus agentd's own. Definitions only: the gateway's metrics observer
 * (gateway/observers.c) records into them. */
#ifndef AGENTD_GENAI_H
#define AGENTD_GENAI_H

#include "telemetry/metrics.h"

/* {gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_token_type} */
extern struct metric_def genai_token_usage;
/* {gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, error_type} */
extern struct metric_def genai_operation_duration;
/* {model, deployment} */
extern struct metric_def genai_time_to_first_token;
extern struct metric_def genai_gateway_overhead;
extern struct metric_def genai_cost_usd;
extern struct metric_def genai_agent_tokens_used;
/* {front, model, deployment, status} */
extern struct metric_def genai_gateway_requests;
/* {deployment, outcome} */
extern struct metric_def genai_upstream_attempts;
/* no labels */
extern struct metric_def genai_inflight_requests;

/* Registers every family above (once per process). */
void genai_metrics_register(void);

#endif
