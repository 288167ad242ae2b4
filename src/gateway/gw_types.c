#include "gateway/gw_types.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/jscan.h"
#include "common/log.h"
#include "telemetry/metrics.h"

const char *gw_finish_openai(enum finish f)
{
    switch (f) {
    case FINISH_LENGTH: return "length";
    case FINISH_TOOL_CALLS: return "tool_calls";
    case FINISH_CONTENT_FILTER: return "content_filter";
    default: return "stop";
    }
}

const char *gw_finish_anthropic(enum finish f)
{
    switch (f) {
    case FINISH_LENGTH: return "max_tokens";
    case FINISH_TOOL_CALLS: return "tool_use";
    case FINISH_CONTENT_FILTER: return "refusal";
    default: return "end_turn";
    }
}

enum finish gw_finish_from_openai(const char *s)
{
    if (s == NULL)
        return FINISH_NONE;
    if (strcmp(s, "length") == 0)
        return FINISH_LENGTH;
    if (strcmp(s, "tool_calls") == 0 || strcmp(s, "function_call") == 0)
        return FINISH_TOOL_CALLS;
    if (strcmp(s, "content_filter") == 0)
        return FINISH_CONTENT_FILTER;
    return FINISH_STOP;
}

void gw_error_set(struct gw_error *e, int status, enum gw_err_type type, const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->param[0] = e->code[0] = '\0';
    e->retry_after_ms = -1;
    e->from_upstream = false;
    e->retryable = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

int gw_bad_request(struct gw_error *e, const char *param, const char *fmt, ...)
{
    gw_error_set(e, 400, GW_ERR_INVALID_REQUEST, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    if (param)
        snprintf(e->param, sizeof(e->param), "%s", param);
    return -1;
}

enum gw_err_type gw_err_type_for_status(int status)
{
    switch (status) {
    case 400: case 422: return GW_ERR_INVALID_REQUEST;
    case 401: return GW_ERR_AUTHENTICATION;
    case 403: return GW_ERR_PERMISSION;
    case 404: return GW_ERR_NOT_FOUND;
    case 413: return GW_ERR_TOO_LARGE;
    case 429: return GW_ERR_RATE_LIMIT;
    case 408: case 504: return GW_ERR_TIMEOUT;
    case 503: case 529: return GW_ERR_OVERLOADED;
    default: return status >= 500 ? GW_ERR_API : GW_ERR_INVALID_REQUEST;
    }
}

const char *gw_err_type_openai(enum gw_err_type t)
{
    switch (t) {
    case GW_ERR_INVALID_REQUEST: return "invalid_request_error";
    case GW_ERR_AUTHENTICATION: return "authentication_error";
    case GW_ERR_PERMISSION: return "permission_error";
    case GW_ERR_NOT_FOUND: return "invalid_request_error";
    case GW_ERR_TOO_LARGE: return "invalid_request_error";
    case GW_ERR_RATE_LIMIT: return "rate_limit_error";
    case GW_ERR_OVERLOADED: return "server_error";
    case GW_ERR_TIMEOUT: return "timeout_error";
    default: return "server_error";
    }
}

const char *gw_err_type_anthropic(enum gw_err_type t)
{
    switch (t) {
    case GW_ERR_INVALID_REQUEST: return "invalid_request_error";
    case GW_ERR_AUTHENTICATION: return "authentication_error";
    case GW_ERR_PERMISSION: return "permission_error";
    case GW_ERR_NOT_FOUND: return "not_found_error";
    case GW_ERR_TOO_LARGE: return "request_too_large";
    case GW_ERR_RATE_LIMIT: return "rate_limit_error";
    case GW_ERR_OVERLOADED: return "overloaded_error";
    case GW_ERR_TIMEOUT: return "timeout_error";
    default: return "api_error";
    }
}
