/* genai_names.h: the span attribute names of the OpenTelemetry GenAI semantic conventions, in one table, so that
 * a newer convention version is a second table (docs/telemetry.md). Pinned: v1.41 (the last released GenAI
 * conventions; see ../shared/reference/observability.md §1). */
#ifndef AGENTD_GENAI_NAMES_H
#define AGENTD_GENAI_NAMES_H

struct genai_names {
    const char *operation_name, *provider_name, *request_model, *request_max_tokens, *request_temperature,
        *request_top_p, *request_stream, *response_model, *response_id, *response_finish_reasons,
        *usage_input_tokens, *usage_output_tokens, *usage_cache_read_input_tokens,
        *usage_cache_creation_input_tokens, *usage_reasoning_output_tokens, *input_messages, *output_messages,
        *error_type, *server_address, *server_port, *http_method, *http_route, *http_status_code,
        /* the seed's own names, set beside the GenAI ones */
        *agent_workflow, *agent_type,
        /* agentd's */
        *cost_usd, *deployment, *attempt_outcome, *attempt_number, *public_model, *request_id, *user_id;
};

extern const struct genai_names genai_names_v1_41;
/* The table in use. */
extern const struct genai_names *genai_attr;

#endif
