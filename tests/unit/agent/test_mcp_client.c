/* test_mcp_client.c: the MCP client's response parser and result readers (agent/mcp_client.h), with no socket: a
 * JSON body, an SSE stream with a priming event and a notification before the answer (fed a byte at a time), a
 * JSON-RPC error, the wrong id, a body over its bound, a stream that ends without the answer; tools/list results
 * as OpenAI tools (names namespaced, bad names skipped, nextCursor), tools/call results as the model's text; the
 * stdio line framer (lines split across pieces, CRLF, empty lines, a line over the limit cut and its tail skipped);
 * what a stream leaves for its resumption (last event id, retry) and the server's requests on it; the answers to
 * a server (elicitation by defaults, roots, ping, input_required rounds, a refused version); x-mcp-header
 * annotations and their header values. */
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

static int seen_requests;
static char seen_method[64];
static void count_request(void *ud, const cJSON *msg)
{
    (void)ud;
    seen_requests++;
    snprintf(seen_method, sizeof(seen_method), "%s", cJSON_GetObjectItem(msg, "method")->valuestring);
}

/* What a resumption needs from a stream (the last event id, the last retry), and the server's requests on it. */
static void test_stream_state(void)
{
    struct mcp_resp p;
    mcp_resp_init(&p, true, 4, 1 << 16);
    p.on_request = count_request;
    const char *s = "id: e1\nretry: 500\ndata: \n\n"
                    "data: {\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"elicitation/create\",\"params\":{}}\n\n"
                    "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"
                    "data: {\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}\n\n" /* not a usable id: skipped */
                    "id: e2\ndata: \n\n";
    is_int(feed_all(&p, s, 3), -1);
    ok(p.unanswered);
    is_str(p.last_event_id, "e2");
    is_int(p.retry_ms, 500);
    is_int(seen_requests, 2);
    is_str(seen_method, "notifications/tools/list_changed");
    mcp_resp_free(&p);

    mcp_resp_init(&p, true, 4, 1 << 16); /* no id and no retry: not resumable */
    is_int(feed_all(&p, "data: \n\n", 1), -1);
    is_str(p.last_event_id, "");
    is_int(p.retry_ms, -1);
    mcp_resp_free(&p);

    mcp_resp_init(&p, true, 4, 1 << 16); /* answered: not "unanswered" */
    is_int(feed_all(&p, "id: 7\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}\n\n", 5), 1);
    ok(!p.unanswered);
    is_str(p.last_event_id, "7");
    mcp_resp_free(&p);
}

static char *print(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static void is_json(cJSON *j, const char *want)
{
    char *s = print(j);
    is_str(s ? s : "(null)", want);
    cJSON_free(s);
}

static void test_answers(void)
{
    cJSON *p = cJSON_Parse("{\"message\":\"m\",\"requestedSchema\":{\"type\":\"object\",\"properties\":{"
                           "\"name\":{\"type\":\"string\",\"default\":\"John\"},\"age\":{\"type\":\"integer\",\"default\":30},"
                           "\"ok\":{\"type\":\"boolean\",\"default\":true}}}}");
    is_json(mcp_elicit_answer(p), "{\"action\":\"accept\",\"content\":{\"name\":\"John\",\"age\":30,\"ok\":true}}");
    cJSON_Delete(p);
    p = cJSON_Parse("{\"requestedSchema\":{\"properties\":{\"a\":{\"default\":1},\"confirmed\":{\"type\":\"boolean\"}}}}");
    is_json(mcp_elicit_answer(p), "{\"action\":\"decline\"}"); /* a field without a default: nobody to ask */
    cJSON_Delete(p);
    p = cJSON_Parse("{\"requestedSchema\":{\"properties\":{}}}");
    is_json(mcp_elicit_answer(p), "{\"action\":\"decline\"}"); /* nothing proposed: never a blind yes */
    cJSON_Delete(p);
    is_json(mcp_elicit_answer(NULL), "{\"action\":\"decline\"}");
    is_json(mcp_client_answer("roots/list", NULL), "{\"roots\":[]}");
    is_json(mcp_client_answer("ping", NULL), "{}");
    ok(mcp_client_answer("sampling/createMessage", NULL) == NULL);

    char why[160];
    cJSON *r = cJSON_Parse("{\"resultType\":\"input_required\",\"inputRequests\":{\"a\":{\"method\":\"roots/list\"},"
                           "\"b\":{\"method\":\"elicitation/create\",\"params\":{\"requestedSchema\":{\"properties\":{"
                           "\"x\":{\"default\":\"y\"}}}}}},\"requestState\":\"opaque\"}");
    is_json(mcp_input_responses(r, why, sizeof(why)),
            "{\"a\":{\"roots\":[]},\"b\":{\"action\":\"accept\",\"content\":{\"x\":\"y\"}}}");
    cJSON_Delete(r);
    r = cJSON_Parse("{\"inputRequests\":{\"a\":{\"method\":\"sampling/createMessage\"}}}");
    ok(mcp_input_responses(r, why, sizeof(why)) == NULL);
    ok(strstr(why, "sampling/createMessage") != NULL);
    cJSON_Delete(r);
    r = cJSON_Parse("{\"inputRequests\":{}}");
    ok(mcp_input_responses(r, why, sizeof(why)) == NULL);
    cJSON_Delete(r);
    r = cJSON_Parse("{\"inputRequests\":{\"a\":\"roots/list\"}}");
    ok(mcp_input_responses(r, why, sizeof(why)) == NULL);
    cJSON_Delete(r);

    const char *e = "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32022,\"message\":\"Unsupported protocol version\","
                    "\"data\":{\"supported\":[\"2025-11-25\",\"2026-07-28\"],\"requested\":\"x\"}}}";
    is_int(mcp_unsupported_pick(e, strlen(e)), 1);
    e = "{\"error\":{\"code\":-32022,\"data\":{\"supported\":[\"2025-06-18\"]}}}";
    is_int(mcp_unsupported_pick(e, strlen(e)), 2);
    e = "{\"error\":{\"code\":-32022,\"data\":{\"supported\":[\"1999-01-01\"]}}}";
    is_int(mcp_unsupported_pick(e, strlen(e)), 0);
    e = "{\"error\":{\"code\":-32600,\"data\":{\"supported\":[\"2026-07-28\"]}}}";
    is_int(mcp_unsupported_pick(e, strlen(e)), 0);
    is_int(mcp_unsupported_pick("{\"error\":{\"code\":-32022", 22), 0); /* cut short */
}

static int headers_of(const char *tool_json, char **out)
{
    cJSON *t = cJSON_Parse(tool_json), *map = NULL;
    int n = mcp_tool_param_headers(t, &map);
    *out = map ? print(map) : NULL;
    cJSON_Delete(t);
    return n;
}

static void test_param_headers(void)
{
    char *m;
    is_int(headers_of("{\"name\":\"t\",\"inputSchema\":{\"properties\":{\"region\":{\"type\":\"string\",\"x-mcp-header\":"
                      "\"Region\"},\"n\":{\"type\":\"integer\",\"x-mcp-header\":\"Priority\"},\"q\":{\"type\":\"string\"}}}}",
                      &m),
           2);
    is_str(m, "{\"region\":\"Region\",\"n\":\"Priority\"}");
    cJSON_free(m);
    is_int(headers_of("{\"name\":\"t\",\"inputSchema\":{\"properties\":{\"q\":{\"type\":\"string\"}}}}", &m), 0);
    ok(m == NULL);
    static const char *const bad[] = {
        "{\"v\":{\"type\":\"string\",\"x-mcp-header\":\"\"}}",
        "{\"v\":{\"type\":\"object\",\"x-mcp-header\":\"Data\"}}",
        "{\"v\":{\"type\":\"array\",\"x-mcp-header\":\"Items\"}}",
        "{\"v\":{\"type\":\"null\",\"x-mcp-header\":\"Nil\"}}",
        "{\"v\":{\"type\":\"number\",\"x-mcp-header\":\"Score\"}}",
        "{\"v\":{\"x-mcp-header\":\"NoType\"}}",
        "{\"a\":{\"type\":\"string\",\"x-mcp-header\":\"Region\"},\"b\":{\"type\":\"string\",\"x-mcp-header\":\"Region\"}}",
        "{\"a\":{\"type\":\"string\",\"x-mcp-header\":\"MyField\"},\"b\":{\"type\":\"string\",\"x-mcp-header\":\"myfield\"}}",
        "{\"v\":{\"type\":\"string\",\"x-mcp-header\":\"My Region\"}}",
        "{\"v\":{\"type\":\"string\",\"x-mcp-header\":\"Region:Primary\"}}",
        "{\"v\":{\"type\":\"string\",\"x-mcp-header\":\"R\xc3\xa9gion\"}}",
        "{\"v\":{\"type\":\"string\",\"x-mcp-header\":\"Region\\t1\"}}",
        "{\"v\":{\"type\":\"string\",\"x-mcp-header\":7}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char tool[512];
        snprintf(tool, sizeof(tool), "{\"name\":\"t\",\"inputSchema\":{\"properties\":%s}}", bad[i]);
        if (!ok(headers_of(tool, &m) == -1))
            printf("#   %s\n", bad[i]);
        ok(m == NULL);
    }

    static const struct {
        const char *json, *want; /* want NULL: no header */
    } vals[] = {
        {"\"us-west1\"", "us-west1"},
        {"\"us west 1\"", "us west 1"},
        {"42", "42"},
        {"-7", "-7"},
        {"3.5", "3.5"},
        {"true", "true"},
        {"false", "false"},
        {"\"Hello, \xe4\xb8\x96\xe7\x95\x8c\"", "=?base64?SGVsbG8sIOS4lueVjA==?="},
        {"\" padded \"", "=?base64?IHBhZGRlZCA=?="},
        {"\"line1\\nline2\"", "=?base64?bGluZTEKbGluZTI=?="},
        {"\"\\tindented\"", "=?base64?CWluZGVudGVk?="},
        {"\"\"", "=?base64?" "?="},
        {"null", NULL},
        {"{}", NULL},
        {"[1]", NULL},
    };
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        cJSON *v = cJSON_Parse(vals[i].json);
        struct buf b = BUF_INIT(BUF_UNBOUNDED);
        bool sent = mcp_param_header_value(v, &b);
        buf_append(&b, "", 1);
        if (!ok(sent == (vals[i].want != NULL)) || (sent && !is_str(b.data, vals[i].want)))
            printf("#   value %s\n", vals[i].json);
        buf_free(&b);
        cJSON_Delete(v);
    }
}

int main(void)
{
    subtest("stream state", test_stream_state);
    subtest("answers to a server", test_answers);
    subtest("x-mcp-header", test_param_headers);
    subtest("stdio lines", test_lines);
    subtest("response parser", test_parser);
    subtest("results", test_results);
    return done_testing();
}
