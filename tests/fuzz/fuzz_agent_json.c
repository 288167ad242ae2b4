/* libFuzzer target: what the agents API parses from clients. The first byte picks the parser:
 *   0: a run request (POST /v1/agents/{name}/runs): refused with a message and a parameter, or accepted with a
 *      non-empty array of messages that ends with a user message;
 *   1: an agent definition (/admin/agents): refused with a message, or accepted, and then its own JSON form reads
 *      back to the same definition;
 *   2: a JSON Schema and a value (split at the first NUL): the check answers, within its depth bound. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_config.h"
#include "agent/run.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *print_def(const struct config_agent *a)
{
    cJSON *j = agent_def_to_json(a);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    char msg[512], param[96];
    switch (data[0] % 3) {
    case 0: {
        struct run_request rq;
        if (run_request_parse(p, n, &rq, msg, sizeof(msg), param, sizeof(param)) != 0) {
            if (msg[0] == '\0' || rq.messages != NULL)
                abort();
            return 0;
        }
        int count = cJSON_GetArraySize(rq.messages);
        const cJSON *last = cJSON_GetArrayItem(rq.messages, count - 1);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(last, "role");
        if (count < 1 || count > RUN_INPUT_MAX_MESSAGES || !cJSON_IsString(role) ||
            strcmp(role->valuestring, "user") != 0)
            abort();
        run_request_free(&rq);
        return 0;
    }
    case 1: {
        cJSON *o = cJSON_ParseWithLength(p, n);
        struct config_agent a;
        if (agent_def_from_json(o, &a, msg, sizeof(msg)) != 0) {
            if (msg[0] == '\0')
                abort();
        } else {
            char *first = print_def(&a);
            cJSON *again = cJSON_Parse(first);
            cJSON_DeleteItemFromObjectCaseSensitive(again, "workflow"); /* shown with its default filled */
            if (a.workflow)
                cJSON_AddStringToObject(again, "workflow", a.workflow);
            struct config_agent b;
            if (agent_def_from_json(again, &b, msg, sizeof(msg)) != 0)
                abort();
            char *second = print_def(&b);
            if (strcmp(first, second) != 0)
                abort();
            cJSON_free(first);
            cJSON_free(second);
            cJSON_Delete(again);
            agent_def_free(&b);
        }
        agent_def_free(&a);
        cJSON_Delete(o);
        return 0;
    }
    default: {
        const char *nul = memchr(p, '\0', n);
        if (nul == NULL)
            return 0;
        cJSON *schema = cJSON_ParseWithLength(p, (size_t)(nul - p));
        cJSON *value = cJSON_ParseWithLength(nul + 1, n - (size_t)(nul - p) - 1);
        char why[300];
        if (schema && value)
            json_schema_check(schema, value, why, sizeof(why));
        cJSON_Delete(schema);
        cJSON_Delete(value);
        return 0;
    }
    }
}
