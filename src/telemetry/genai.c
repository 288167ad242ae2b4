/* genai.c: the GenAI names table (OpenTelemetry GenAI semantic conventions, Prometheus spelling). */
#include "telemetry/genai.h"

static const double token_buckets[] = {1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304};
static const double op_buckets[] = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
static const double ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10};
static const double overhead_buckets[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025};
static const char *const tok_labels[] = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                                         "gen_ai_token_type", NULL};
static const char *const op_labels[] = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                                        "error_type", NULL};
static const char *const tok_otel[] = {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                                       "gen_ai.token.type", NULL};
static const char *const op_otel[] = {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                                      "error.type", NULL};
static const double tpot_buckets[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5};
static const double agent_ms_buckets[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000};
static const char *const wf_status_labels[] = {"workflow", "status", NULL};
static const char *const wf_labels[] = {"workflow", NULL};
static const char *const wf_error_labels[] = {"workflow", "error_type", NULL};
static const char *const wf_error_otel[] = {"workflow", "error.type", NULL};
static const char *const req_labels[] = {"front", "model", "deployment", "status", NULL};
static const char *const model_labels[] = {"model", "deployment", NULL};
static const char *const attempt_labels[] = {"deployment", "outcome", NULL};

struct metric_def genai_token_usage = METRIC_HISTOGRAM_DEF(
    "gen_ai_client_token_usage", "Tokens used per LLM call (OpenTelemetry gen_ai.client.token.usage).", tok_labels,
    token_buckets);
struct metric_def genai_operation_duration =
    METRIC_HISTOGRAM_DEF("gen_ai_client_operation_duration_seconds",
                         "Duration of LLM calls through the gateway (gen_ai.client.operation.duration).", op_labels,
                         op_buckets);
struct metric_def genai_time_to_first_token = METRIC_HISTOGRAM_DEF(
    "gen_ai_server_time_to_first_token_seconds", "Time to the first streamed token (gen_ai.server.time_to_first_token).",
    model_labels, ttft_buckets);
struct metric_def genai_gateway_overhead =
    METRIC_HISTOGRAM_DEF("agentd_gateway_overhead_seconds",
                         "Time agentd spent on a request outside the upstream call.", model_labels, overhead_buckets);
struct metric_def genai_gateway_requests = METRIC_DEF("agentd_gateway_requests_total",
                                                      "LLM requests by front door, model, deployment and status.",
                                                      METRIC_COUNTER, req_labels);
struct metric_def genai_upstream_attempts = METRIC_DEF("agentd_gateway_upstream_attempts_total",
                                                       "Upstream attempts by deployment and outcome.", METRIC_COUNTER,
                                                       attempt_labels);
struct metric_def genai_cost_usd = METRIC_DEF("agentd_gateway_cost_usd_total", "Spend in US dollars.", METRIC_COUNTER,
                                              model_labels);
struct metric_def genai_agent_tokens_used = METRIC_DEF("agent_tokens_used_total",
                                                       "Tokens used (the seed's agent.tokens.used counter).",
                                                       METRIC_COUNTER, model_labels);
struct metric_def genai_inflight_requests = METRIC_DEF("agentd_gateway_inflight_requests", "LLM requests in flight.",
                                                       METRIC_GAUGE, NULL);

struct metric_def genai_time_per_output_token = METRIC_HISTOGRAM_DEF(
    "gen_ai_server_time_per_output_token_seconds",
    "Time per output token after the first of a streamed response (gen_ai.server.time_per_output_token).",
    model_labels, tpot_buckets);
struct metric_def agent_requests_total = METRIC_DEF(
    "agent_requests_total", "Requests by workflow and status (the seed's agent.requests.total).", METRIC_COUNTER,
    wf_status_labels);
struct metric_def agent_request_duration = METRIC_HISTOGRAM_DEF(
    "agent_request_duration_seconds",
    "Request duration (the seed's agent.request.duration, recorded in ms, shown here in seconds).",
    wf_labels, agent_ms_buckets);
struct metric_def agent_errors_total = METRIC_DEF(
    "agent_errors_total", "Failed requests by workflow and error type (the seed's agent.errors.total).",
    METRIC_COUNTER, wf_error_labels);

/* OpenTelemetry names, units and attribute names for OTLP export of the families above. */
static void otel_names(void)
{
    genai_token_usage.otel_name = "gen_ai.client.token.usage";
    genai_token_usage.unit = "{token}";
    genai_token_usage.otel_labels = tok_otel;
    genai_operation_duration.otel_name = "gen_ai.client.operation.duration";
    genai_operation_duration.unit = "s";
    genai_operation_duration.otel_labels = op_otel;
    genai_time_to_first_token.otel_name = "gen_ai.server.time_to_first_token";
    genai_time_to_first_token.unit = "s";
    genai_time_per_output_token.otel_name = "gen_ai.server.time_per_output_token";
    genai_time_per_output_token.unit = "s";
    genai_gateway_overhead.otel_name = "agentd.gateway.overhead";
    genai_gateway_overhead.unit = "s";
    genai_gateway_requests.otel_name = "agentd.gateway.requests";
    genai_upstream_attempts.otel_name = "agentd.gateway.upstream.attempts";
    genai_cost_usd.otel_name = "agentd.gateway.cost";
    genai_cost_usd.unit = "USD";
    genai_agent_tokens_used.otel_name = "agent.tokens.used";
    genai_agent_tokens_used.unit = "{token}";
    genai_inflight_requests.otel_name = "agentd.gateway.inflight_requests";
    agent_requests_total.otel_name = "agent.requests.total";
    agent_request_duration.otel_name = "agent.request.duration";
    agent_request_duration.unit = "ms";
    agent_request_duration.exemplars = true; /* trace ids of sampled requests on the buckets */
    genai_operation_duration.exemplars = true;
    agent_request_duration.prom_div = 1000; /* Prometheus' base unit; promtool refuses a _milliseconds name */
    agent_errors_total.otel_name = "agent.errors.total";
    agent_errors_total.otel_labels = wf_error_otel;
}

void genai_metrics_register(void)
{
    otel_names();
    metrics_register(&genai_time_per_output_token);
    metrics_register(&agent_requests_total);
    metrics_register(&agent_request_duration);
    metrics_register(&agent_errors_total);
    metrics_register(&genai_token_usage);
    metrics_register(&genai_operation_duration);
    metrics_register(&genai_time_to_first_token);
    metrics_register(&genai_gateway_overhead);
    metrics_register(&genai_gateway_requests);
    metrics_register(&genai_upstream_attempts);
    metrics_register(&genai_cost_usd);
    metrics_register(&genai_agent_tokens_used);
    metrics_register(&genai_inflight_requests);
}
