/* libFuzzer target: what agentd's MCP client answers a server (agent/mcp_client.h), from any JSON: an
 * elicitation (accepted only with every field's default), a server request, an input_required result's
 * inputRequests, a refused version's 400 body, a tool's x-mcp-header annotations and the Mcp-Param-* value of any
 * argument. Every answer must be JSON of the expected shape, and a header value a plain header value (printable
 * ASCII, no leading or trailing whitespace) or the =?base64?...?= form. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/mcp_client.h"
#include "common/buf.h"

static void check_value(const cJSON *v)
{
    struct buf b = BUF_INIT(1 << 20);
    if (mcp_param_header_value(v, &b)) {
        for (size_t i = 0; i < b.len; i++)
            if ((unsigned char)b.data[i] < 0x20 || (unsigned char)b.data[i] > 0x7e)
                abort();
        if (b.len == 0 || b.data[0] == ' ' || b.data[b.len - 1] == ' ')
            abort();
    }
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)mcp_unsupported_pick((const char *)data, size);
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (j == NULL)
        return 0;
    cJSON *a = mcp_elicit_answer(j);
    const cJSON *action = cJSON_GetObjectItemCaseSensitive(a, "action");
    if (!cJSON_IsString(action) || (strcmp(action->valuestring, "accept") != 0 &&
                                    strcmp(action->valuestring, "decline") != 0))
        abort();
    cJSON_Delete(a);
    char why[160];
    cJSON *ir = mcp_input_responses(j, why, sizeof(why));
    if (ir && !cJSON_IsObject(ir))
        abort();
    cJSON_Delete(ir);
    cJSON *map = NULL;
    int n = mcp_tool_param_headers(j, &map);
    if ((n > 0) != (map != NULL) || (map && cJSON_GetArraySize(map) != n))
        abort();
    cJSON_Delete(map);
    check_value(j);
    const cJSON *e;
    cJSON_ArrayForEach(e, j) check_value(e);
    cJSON_Delete(j);
    return 0;
}
