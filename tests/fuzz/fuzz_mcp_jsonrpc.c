/* libFuzzer target: the /mcp JSON-RPC parser and classifier (src/mcp/jsonrpc.c) and the _meta lookups the
 * 2026-07-28 era does on every request. Whatever a message is classified as must be consistent: a request has a
 * method and a string/integer id, a notification a method and no id, an invalid message a JSON-RPC error code;
 * the error and result answers built from it must be JSON again. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "mcp/jsonrpc.h"

static void check(const cJSON *item)
{
    struct jr_msg m;
    jr_classify(item, &m);
    switch (m.kind) {
    case JR_REQUEST:
        if (!m.method || !m.id || !(cJSON_IsString(m.id) || cJSON_IsNumber(m.id)))
            abort();
        break;
    case JR_NOTIFICATION:
        if (!m.method || m.id)
            abort();
        break;
    case JR_RESPONSE:
        if (!m.id)
            abort();
        break;
    case JR_INVALID:
        if (m.code != JR_INVALID_REQUEST && m.code != JR_INVALID_PARAMS)
            abort();
        if (!m.why)
            abort();
        break;
    }
    if (m.params && !cJSON_IsObject(m.params))
        abort();
    (void)jr_meta(&m, "io.modelcontextprotocol/protocolVersion");
    (void)jr_meta(&m, "io.modelcontextprotocol/clientCapabilities");
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    jr_error_json(&b, m.id, m.kind == JR_INVALID ? m.code : JR_METHOD_NOT_FOUND, m.why ? m.why : "x", m.params);
    cJSON *back = cJSON_ParseWithLength(b.data, b.len);
    if (back == NULL)
        abort();
    cJSON_Delete(back);
    buf_reset(&b);
    jr_result_json(&b, m.id, m.params ? m.params : item);
    back = cJSON_ParseWithLength(b.data, b.len);
    if (back == NULL)
        abort();
    cJSON_Delete(back);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = jr_parse((const char *)data, size);
    if (root == NULL)
        return 0;
    if (cJSON_IsArray(root)) {
        int n = 0;
        for (const cJSON *e = root->child; e && n < JR_BATCH_MAX; e = e->next, n++)
            check(e);
    } else {
        check(root);
    }
    cJSON_Delete(root);
    return 0;
}
