/* test_mcp_client.c: the MCP client's response parser and result readers (agent/mcp_client.h), with no socket: a
 * JSON body, an SSE stream with a priming event and a notification before the answer (fed a byte at a time), a
 * JSON-RPC error, the wrong id, a body over its bound, a stream that ends without the answer; tools/list results
 * as OpenAI tools (names namespaced, bad names skipped, nextCursor), tools/call results as the model's text; the
 * stdio line framer (lines split across pieces, CRLF, empty lines, a line over the limit cut and its tail skipped). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "agent/mcp_client.h"
#include "agent/mcp_stdio.h"
#include "common/alloc.h"
#include "test.h"

static int feed_all(struct mcp_resp *p, const char *s, size_t step)
{
    size_t n = strlen(s);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += step)
        rc = mcp_resp_feed(p, s + i, i + step <= n ? step : n - i);
    return rc == 0 ? mcp_resp_finish(p) : rc;
}

static void test_parser(void)
{
    struct mcp_resp p;
    mcp_resp_init(&p, false, 7, 1 << 16);
    is_int(feed_all(&p, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[]}}", 5), 1);
    ok(!p.rpc_error && cJSON_IsArray(cJSON_GetObjectItem(p.result, "tools")));
    mcp_resp_free(&p);

    const char *sse = "id: a1\ndata: \n\n"
                      "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n"
                      "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\r\ndata: \"result\":{\"content\":[]}}\r\n\r\n"
                      "data: {\"this\": \"is never read\"}\n\n";
    mcp_resp_init(&p, true, 3, 1 << 16);
    is_int(feed_all(&p, sse, 1), 1); /* a byte at a time; multi-line data joined with \n */
    ok(p.result != NULL);
    mcp_resp_free(&p);

    mcp_resp_init(&p, false, 1, 1 << 16);
    is_int(feed_all(&p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32602,\"message\":\"Unknown tool: x\"}}", 64), 1);
    ok(p.rpc_error);
    is_int(p.rpc_code, -32602);
    is_str(p.message, "Unknown tool: x");
    mcp_resp_free(&p);

    mcp_resp_init(&p, false, 1, 1 << 16);
    is_int(feed_all(&p, "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}", 64), -1);
    ok(strstr(p.message, "another request id") != NULL);
    mcp_resp_free(&p);

    mcp_resp_init(&p, false, 1, 16);
    is_int(feed_all(&p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", 4), -1);
    ok(strstr(p.message, "too large") != NULL);
    mcp_resp_free(&p);

    mcp_resp_init(&p, true, 1, 1 << 16);
    is_int(feed_all(&p, "id: 1\ndata: \n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":9}\n\n", 3), -1);
    ok(strstr(p.message, "without the response") != NULL);
    mcp_resp_free(&p);

    mcp_resp_init(&p, true, 1, 1 << 16);
    is_int(feed_all(&p, "data: [1,2]\n\n", 3), -1);
    mcp_resp_free(&p);
}

static void test_results(void)
{
    cJSON *r = cJSON_Parse("{\"tools\":[{\"name\":\"add\",\"description\":\"Adds\",\"inputSchema\":{\"type\":\"object\"}},"
                           "{\"name\":\"bad name\"},{\"name\":\"" /* 60 chars: too long with the prefix */
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"},{\"name\":\"noschema\"}],"
                           "\"nextCursor\":\"page2\"}");
    cJSON *arr = cJSON_CreateArray();
    char *cursor = NULL;
    is_int(mcp_tools_to_openai(r, "calc", arr, &cursor), 2);
    is_str(cursor, "page2");
    is_str(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "function"), "name")->valuestring,
           "calc__add");
    ok(cJSON_IsObject(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "function"), "parameters")));
    xfree(cursor);
    cJSON_Delete(arr);
    cJSON_Delete(r);
    r = cJSON_Parse("{\"content\":\"no\"}");
    arr = cJSON_CreateArray();
    is_int(mcp_tools_to_openai(r, "calc", arr, &cursor), -1);
    cJSON_Delete(arr);
    cJSON_Delete(r);

    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    r = cJSON_Parse("{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image\",\"data\":\"aGk=\",\"mimeType\":"
                    "\"image/png\"},{\"type\":\"resource_link\",\"uri\":\"file:///x\"},{\"type\":\"resource\","
                    "\"resource\":{\"uri\":\"u\",\"text\":\"inline\"}},{\"type\":\"video\"}],\"isError\":true}");
    is_int(mcp_call_text(r, &b), TOOL_ERROR);
    buf_append(&b, "", 0);
    is_str(b.data, "a\n[image image/png, 4 bytes of base64]\n[resource_link file:///x]\ninline\n[content of type video]");
    cJSON_Delete(r);
    buf_reset(&b);
    r = cJSON_Parse("{\"content\":[],\"structuredContent\":{\"x\":1}}");
    is_int(mcp_call_text(r, &b), TOOL_OK);
    buf_append(&b, "", 0);
    is_str(b.data, "{\"x\":1}");
    cJSON_Delete(r);
    buf_reset(&b);
    r = cJSON_Parse("{\"tools\":[]}");
    is_int(mcp_call_text(r, &b), TOOL_ERROR); /* not a CallToolResult */
    cJSON_Delete(r);
    buf_free(&b);
}

static int collect(void *ud, const char *s, size_t n, bool truncated)
{
    struct buf *b = ud;
    buf_printf(b, "%s[%.*s]", truncated ? "T" : "", (int)n, s);
    return 0;
}

static void test_lines(void)
{
    struct mcp_lines l;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    mcp_lines_init(&l, 8);
    const char *in = "ab\r\n\ncd\nefghijklmnop\nq\nrs";
    for (size_t i = 0; in[i]; i++) /* a byte at a time */
        is_int(mcp_lines_feed(&l, in + i, 1, collect, &b), 0);
    is_str(b.data, "[ab][cd]T[efghijkl][q]");
    b.len = 0;
    is_int(mcp_lines_feed(&l, "t\n", 2, collect, &b), 0);
    is_str(b.data, "[rst]");
    mcp_lines_free(&l);

    mcp_lines_init(&l, 8);
    b.len = 0;
    is_int(mcp_lines_feed(&l, "0123456789abcdef", 16, collect, &b), 0); /* cut before its newline arrives */
    is_int(mcp_lines_feed(&l, "gh\nok\n", 6, collect, &b), 0);
    is_str(b.data, "T[01234567][ok]");
    mcp_lines_free(&l);
    buf_free(&b);
}

int main(void)
{
    subtest("stdio lines", test_lines);
    subtest("response parser", test_parser);
    subtest("results", test_results);
    return done_testing();
}
