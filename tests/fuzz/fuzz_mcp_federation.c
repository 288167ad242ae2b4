/* libFuzzer target: what the /mcp gateway reads from outside. An upstream server's tools/list result
 * (src/mcp/federation.c fed_add_tools): every tool it adds is named "<server>__<name>" with a valid /mcp name and
 * has an object inputSchema, the cursor is bounded; and a client's MRTR params (src/mcp/fixtures.c
 * fixtures_mrtr: inputResponses, requestState): a result or a refusal, never a complete result for a requestState
 * that was not signed by this process. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcp/federation.h"
#include "mcp/fixtures.h"

static void tools(const cJSON *result)
{
    cJSON *arr = cJSON_CreateArray();
    char *cursor = NULL;
    int n = fed_add_tools(result, "srv", arr, &cursor);
    if (n < -1 || (n >= 0 && n != cJSON_GetArraySize(arr)) || (n == -1 && cJSON_GetArraySize(arr) != 0))
        abort();
    if (cursor && strlen(cursor) >= 4096)
        abort();
    const cJSON *t;
    cJSON_ArrayForEach(t, arr)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        if (!cJSON_IsString(name) || strncmp(name->valuestring, "srv__", 5) != 0 || !fed_tool_name_ok(name->valuestring))
            abort();
        if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(t, "inputSchema")))
            abort();
        if (cJSON_GetObjectItemCaseSensitive(t, "_meta"))
            abort();
    }
    free(cursor);
    cJSON_Delete(arr);
}

static void mrtr(const cJSON *params)
{
    static const char *const names[] = {"test_input_required_result_multi_round",
                                        "test_input_required_result_tampered_state",
                                        "test_input_required_result_elicitation",
                                        "test_input_required_result_capabilities",
                                        "test_input_required_result_prompt"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *why = NULL;
        cJSON *r = fixtures_mrtr(names[i], params, cJSON_GetObjectItemCaseSensitive(params, "caps"), &why);
        if ((r == NULL) == (why == NULL))
            abort();
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(params, "requestState");
        /* a state the input made up (not one this process signed) never gets past the check */
        if (r && st && i <= 1)
            abort();
        cJSON_Delete(r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (root == NULL)
        return 0;
    tools(root);
    if (cJSON_IsObject(root))
        mrtr(root);
    cJSON_Delete(root);
    return 0;
}
