/* JSON-RPC classification for /mcp (src/mcp/jsonrpc.c) and the session table (src/mcp/session.c). */
#include <cjson/cJSON.h>
#include <string.h>

#include "mcp/jsonrpc.h"
#include "mcp/mcp.h"
#include "test.h"

static struct jr_msg classify(const char *text, cJSON **root)
{
    struct jr_msg m;
    *root = jr_parse(text, strlen(text));
    jr_classify(*root, &m);
    return m;
}

static int kind_of(const char *text, int *code)
{
    cJSON *root;
    struct jr_msg m = classify(text, &root);
    if (code)
        *code = m.code;
    cJSON_Delete(root);
    return (int)m.kind;
}

static void test_kinds(void)
{
    int code = 0;
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", NULL), JR_REQUEST);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\",\"params\":{}}", NULL), JR_REQUEST);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", NULL), JR_NOTIFICATION);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", NULL), JR_RESPONSE);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"x\"}}", NULL), JR_RESPONSE);
    /* invalid: version, id types, method type, params type, neither */
    is_int(kind_of("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", &code), JR_INVALID);
    is_int(code, JR_INVALID_REQUEST);
    is_int(kind_of("{\"id\":1,\"method\":\"ping\"}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", &code), JR_INVALID);
    is_int(code, JR_INVALID_REQUEST);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"ping\"}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"ping\"}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":[1]}", &code), JR_INVALID);
    is_int(code, JR_INVALID_PARAMS);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{}}", &code), JR_INVALID);
    is_int(kind_of("{\"jsonrpc\":\"2.0\",\"result\":{}}", &code), JR_INVALID);
    is_int(kind_of("[]", &code), JR_INVALID);
    is_int(kind_of("7", &code), JR_INVALID);
    /* a method name past the limit */
    char big[400];
    snprintf(big, sizeof(big), "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%0200d\"}", 0);
    is_int(kind_of(big, &code), JR_INVALID);
}

static void test_parse_and_answers(void)
{
    ok(jr_parse("{", 1) == NULL);
    ok(jr_parse("", 0) == NULL);
    ok(jr_parse(NULL, 0) == NULL);
    cJSON *root;
    struct jr_msg m = classify("{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"method\":\"tools/list\",\"params\":{\"_meta\":"
                               "{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}",
                               &root);
    const cJSON *v = jr_meta(&m, "io.modelcontextprotocol/protocolVersion");
    ok(cJSON_IsString(v) && strcmp(v->valuestring, "2026-07-28") == 0);
    ok(jr_meta(&m, "io.modelcontextprotocol/clientCapabilities") == NULL);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    jr_error_json(&b, m.id, JR_METHOD_NOT_FOUND, "Method \"x\" not found", NULL);
    buf_append_char(&b, '\0');
    is_str(b.data, "{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"error\":{\"code\":-32601,\"message\":\"Method \\\"x\\\" not found\"}}");
    buf_reset(&b);
    jr_error_json(&b, NULL, JR_PARSE_ERROR, "Parse error", NULL);
    buf_append_char(&b, '\0');
    is_str(b.data, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}");
    buf_reset(&b);
    cJSON *r = cJSON_CreateObject();
    jr_result_json(&b, m.id, r);
    buf_append_char(&b, '\0');
    is_str(b.data, "{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"result\":{}}");
    cJSON_Delete(r);
    buf_free(&b);
    cJSON_Delete(root);
}

static void test_sessions(void)
{
    char a[33], b[33], v[16];
    ok(mcp_session_new("key_a", "2025-06-18", a) == 0);
    ok(mcp_session_new("", "2025-11-25", b) == 0);
    is_int((long)strlen(a), 32);
    ok(strcmp(a, b) != 0);
    is_int(mcp_session_count(), 2);
    ok(mcp_session_get(a, "key_a", v) == 0);
    is_str(v, "2025-06-18");
    ok(mcp_session_get(a, "key_b", v) == -1); /* another key: as if it did not exist */
    ok(mcp_session_get(a, "", v) == -1);
    ok(mcp_session_get(b, "", v) == 0);
    ok(mcp_session_end(a, "key_b") == -1);
    ok(mcp_session_end(a, "key_a") == 0);
    ok(mcp_session_get(a, "key_a", v) == -1);
    ok(mcp_session_end(a, "key_a") == -1);
    /* the table is bounded: past the limit the idlest session is ended */
    for (int i = 0; i < MCP_SESSIONS_MAX + 10; i++) {
        char id[33];
        ok(mcp_session_new("k", "2025-11-25", id) == 0);
    }
    is_int(mcp_session_count(), MCP_SESSIONS_MAX);
    ok(mcp_session_get(b, "", v) == -1); /* the oldest went first */
    mcp_shutdown();
    is_int(mcp_session_count(), 0);
}

int main(void)
{
    subtest("message kinds", test_kinds);
    subtest("parse, _meta, answers", test_parse_and_answers);
    subtest("sessions", test_sessions);
    return done_testing();
}
