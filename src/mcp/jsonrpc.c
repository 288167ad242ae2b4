/* jsonrpc.c: JSON-RPC 2.0 message classification (jsonrpc.h). */
#include "mcp/jsonrpc.h"

#include <math.h>
#include <string.h>

cJSON *jr_parse(const char *body, size_t len)
{
    if (body == NULL || len == 0 || len > JR_MESSAGE_MAX)
        return NULL;
    return cJSON_ParseWithLength(body, len);
}

static bool id_ok(const cJSON *id)
{
    if (cJSON_IsString(id))
        return true;
    if (!cJSON_IsNumber(id))
        return false;
    double v = id->valuedouble;
    return isfinite(v) && v == floor(v) && fabs(v) <= 9007199254740991.0;
}

static void invalid(struct jr_msg *out, int code, const char *why)
{
    out->kind = JR_INVALID;
    out->code = code;
    out->why = why;
}

void jr_classify(const cJSON *item, struct jr_msg *out)
{
    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(item)) {
        invalid(out, JR_INVALID_REQUEST, "Invalid Request: a JSON-RPC message must be an object");
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
    if (id && id_ok(id))
        out->id = id;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, "jsonrpc");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "2.0") != 0) {
        invalid(out, JR_INVALID_REQUEST, "Invalid Request: \"jsonrpc\" must be \"2.0\"");
        return;
    }
    if (id && !id_ok(id)) {
        invalid(out, JR_INVALID_REQUEST, "Invalid Request: \"id\" must be a string or an integer");
        return;
    }
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(item, "method");
    if (method) {
        if (!cJSON_IsString(method) || method->valuestring[0] == '\0' ||
            strlen(method->valuestring) > JR_METHOD_MAX) {
            invalid(out, JR_INVALID_REQUEST, "Invalid Request: \"method\" must be a non-empty string");
            return;
        }
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(item, "params");
        if (params && !cJSON_IsObject(params)) {
            invalid(out, JR_INVALID_PARAMS, "Invalid params: \"params\" must be an object");
            return;
        }
        out->method = method->valuestring;
        out->params = params;
        out->kind = id ? JR_REQUEST : JR_NOTIFICATION;
        return;
    }
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(item, "result");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(item, "error");
    if (id && ((result != NULL) != (error != NULL)) && (!error || cJSON_IsObject(error))) {
        out->kind = JR_RESPONSE;
        return;
    }
    invalid(out, JR_INVALID_REQUEST, "Invalid Request: neither a request, a notification nor a response");
}

const cJSON *jr_meta(const struct jr_msg *m, const char *key)
{
    const cJSON *meta = m->params ? cJSON_GetObjectItemCaseSensitive(m->params, "_meta") : NULL;
    return cJSON_IsObject(meta) ? cJSON_GetObjectItemCaseSensitive(meta, key) : NULL;
}

static void append_id(struct buf *b, const cJSON *id)
{
    buf_append_str(b, "{\"jsonrpc\":\"2.0\",\"id\":");
    if (id == NULL) {
        buf_append_str(b, "null");
        return;
    }
    char *s = cJSON_PrintUnformatted(id);
    buf_append_str(b, s ? s : "null");
    cJSON_free(s);
}

void jr_error_json(struct buf *b, const cJSON *id, int code, const char *message, const cJSON *data)
{
    append_id(b, id);
    buf_printf(b, ",\"error\":{\"code\":%d,\"message\":", code);
    buf_append_json_cstr(b, message);
    if (data) {
        char *s = cJSON_PrintUnformatted(data);
        if (s) {
            buf_append_str(b, ",\"data\":");
            buf_append_str(b, s);
        }
        cJSON_free(s);
    }
    buf_append_str(b, "}}");
}

void jr_result_json(struct buf *b, const cJSON *id, const cJSON *result)
{
    append_id(b, id);
    buf_append_str(b, ",\"result\":");
    char *s = cJSON_PrintUnformatted(result);
    buf_append_str(b, s ? s : "{}");
    cJSON_free(s);
    buf_append_char(b, '}');
}
