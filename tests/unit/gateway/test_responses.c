/* test_responses.c: the Responses API codec (gateway/responses.h): request head, validation and translation to
 * the canonical chat request, the Response object, the stream encoder's event sequence, and the pass-through
 * decoders that must never lose usage. */
#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "gateway/responses.h"
#include "test.h"

static cJSON *J(const char *s)
{
    cJSON *t = cJSON_Parse(s);
    if (t == NULL)
        printf("# bad test JSON: %s\n", s);
    return t;
}

static char *S(const cJSON *t)
{
    return cJSON_PrintUnformatted(t);
}

/* Translates req (JSON text) with history (JSON text or NULL); returns the canonical JSON text (free it) or NULL
 * with err. */
static char *xlate(const char *req, const char *history, struct buf *dropped, struct gw_error *err)
{
    cJSON *r = J(req);
    cJSON *h = history ? J(history) : NULL;
    memset(err, 0, sizeof(*err));
    cJSON *c = responses_to_chat(r, h, dropped, err);
    char *s = c ? S(c) : NULL;
    cJSON_Delete(c);
    cJSON_Delete(r);
    cJSON_Delete(h);
    return s;
}

static void expect_400(const char *req, const char *history, const char *param, const char *needle)
{
    struct gw_error err;
    struct buf d = BUF_INIT(BUF_UNBOUNDED);
    char *s = xlate(req, history, &d, &err);
    ok(s == NULL);
    is_int(err.status, 400);
    is_str(err.param, param);
    if (needle && !ok(strstr(err.message, needle) != NULL))
        printf("#   message: %s\n", err.message);
    cJSON_free(s);
    buf_free(&d);
}

static void test_head(void)
{
    struct responses_head h;
    struct gw_error err;
    const char *b = "{\"model\":\"mock\",\"input\":\"hi\",\"stream\":true,\"store\":false,\"max_output_tokens\":50,"
                    "\"previous_response_id\":\"resp_1\"}";
    is_int(responses_parse_head(b, strlen(b), &h, &err), 0);
    is_str(h.model, "mock");
    ok(h.stream && !h.store);
    is_int(h.max_output_tokens, 50);
    is_str(h.previous_response_id, "resp_1");
    b = "{\"model\":\"mock\",\"input\":\"hi\"}";
    is_int(responses_parse_head(b, strlen(b), &h, &err), 0);
    ok(!h.stream && h.store);
    is_int(h.max_output_tokens, -1);
    is_str(h.previous_response_id, "");
    static const struct {
        const char *body, *param;
    } bad[] = {
        {"{\"input\":\"hi\"}", "model"},
        {"{\"model\":\"\",\"input\":\"hi\"}", "model"},
        {"{\"model\":\"m\",\"stream\":\"yes\"}", "stream"},
        {"{\"model\":\"m\",\"store\":1}", "store"},
        {"{\"model\":\"m\",\"max_output_tokens\":0}", "max_output_tokens"},
        {"{\"model\":\"m\",\"max_output_tokens\":1.5}", "max_output_tokens"},
        {"{\"model\":\"m\",\"previous_response_id\":7}", "previous_response_id"},
        {"{\"model\":\"m\",\"input\":{}}", "input"},
        {"{\"model\":\"m\",\"model\":\"n\"}", ""},
        {"[1]", ""},
        {"{\"model\":\"m\",", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&err, 0, sizeof(err));
        ok(responses_parse_head(bad[i].body, strlen(bad[i].body), &h, &err) == -1);
        is_int(err.status, 400);
        is_str(err.param, bad[i].param);
    }
    char longid[300] = "{\"model\":\"m\",\"previous_response_id\":\"";
    memset(longid + strlen(longid), 'x', 200);
    strcat(longid, "\"}");
    ok(responses_parse_head(longid, strlen(longid), &h, &err) == -1);
    is_str(err.param, "previous_response_id");
}

static void test_translate_basic(void)
{
    struct gw_error err;
    struct buf d = BUF_INIT(BUF_UNBOUNDED);
    char *s = xlate("{\"model\":\"m\",\"instructions\":\"be brief\",\"input\":\"hello\",\"max_output_tokens\":9,"
                    "\"temperature\":0.5,\"top_p\":0.9,\"store\":false,\"metadata\":{\"k\":\"v\"},"
                    "\"prompt_cache_key\":\"pk\",\"include\":[\"reasoning.encrypted_content\"],"
                    "\"reasoning\":{\"effort\":\"low\",\"summary\":\"auto\"},\"safety_identifier\":\"u1\","
                    "\"stream\":true,\"new_field_2027\":1}",
                    NULL, &d, &err);
    is_str(s, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
              "\"content\":\"hello\"}],\"reasoning_effort\":\"low\",\"max_tokens\":9,\"temperature\":0.5,"
              "\"top_p\":0.9,\"user\":\"u1\",\"stream\":true}");
    is_str(d.data, "new_field_2027, include, reasoning.summary");
    cJSON_free(s);
    buf_free(&d);
}

static void test_translate_items(void)
{
    struct gw_error err;
    struct buf d = BUF_INIT(BUF_UNBOUNDED);
    char *s = xlate(
        "{\"model\":\"m\",\"input\":["
        "{\"role\":\"developer\",\"content\":[{\"type\":\"input_text\",\"text\":\"rules\"}]},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"look\"},"
        "{\"type\":\"input_image\",\"image_url\":\"data:image/png;base64,AAAA\",\"detail\":\"low\"},"
        "{\"type\":\"input_file\",\"filename\":\"a.pdf\",\"file_data\":\"data:application/pdf;base64,BBBB\"}]},"
        "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[],\"encrypted_content\":\"xyz\"},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"ok\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"},"
        "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"g\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"one\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c2\",\"output\":[{\"type\":\"input_text\",\"text\":\"two\"}]},"
        "{\"type\":\"web_search_call\",\"id\":\"ws_1\",\"status\":\"completed\"}],"
        "\"tools\":[{\"type\":\"web_search\"},{\"type\":\"function\",\"name\":\"f\",\"description\":\"F\","
        "\"parameters\":{\"type\":\"object\"},\"strict\":true},{\"type\":\"code_interpreter\",\"container\":{}},"
        "{\"type\":\"function\",\"name\":\"g\"}],\"tool_choice\":\"required\",\"parallel_tool_calls\":false,"
        "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"out\",\"schema\":{\"type\":\"object\"},"
        "\"strict\":true}}}",
        NULL, &d, &err);
    if (!ok(s != NULL))
        printf("#   %s (%s)\n", err.message, err.param);
    is_str(s,
           "{\"model\":\"m\",\"messages\":["
           "{\"role\":\"developer\",\"content\":\"rules\"},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},{\"type\":\"image_url\","
           "\"image_url\":{\"url\":\"data:image/png;base64,AAAA\",\"detail\":\"low\"}},{\"type\":\"file\",\"file\":"
           "{\"file_data\":\"data:application/pdf;base64,BBBB\",\"filename\":\"a.pdf\"}}]},"
           "{\"role\":\"assistant\",\"content\":\"ok\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
           "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}},{\"id\":\"c2\",\"type\":\"function\","
           "\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"one\"},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"two\"}],"
           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"F\",\"parameters\":"
           "{\"type\":\"object\"},\"strict\":true}},{\"type\":\"function\",\"function\":{\"name\":\"g\"}}],"
           "\"tool_choice\":\"required\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
           "\"out\",\"schema\":{\"type\":\"object\"},\"strict\":true}},\"parallel_tool_calls\":false}");
    is_str(d.data, "input.reasoning, input.web_search_call, tools.web_search, tools.code_interpreter");
    cJSON_free(s);
    buf_free(&d);
}

static void test_translate_history(void)
{
    struct gw_error err;
    /* an output answering a call made in the previous response */
    const char *hist = "[{\"type\":\"message\",\"role\":\"user\",\"content\":\"weather?\"},"
                       "{\"id\":\"fc_1\",\"type\":\"function_call\",\"status\":\"completed\",\"call_id\":\"c9\","
                       "\"name\":\"wx\",\"arguments\":\"{}\"}]";
    char *s = xlate("{\"model\":\"m\",\"instructions\":\"new\",\"input\":[{\"type\":\"function_call_output\","
                    "\"call_id\":\"c9\",\"output\":\"sunny\"}]}",
                    hist, NULL, &err);
    is_str(s, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"new\"},{\"role\":\"user\","
              "\"content\":\"weather?\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c9\","
              "\"type\":\"function\",\"function\":{\"name\":\"wx\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
              "\"tool_call_id\":\"c9\",\"content\":\"sunny\"}]}");
    cJSON_free(s);
    /* the same without the history: an orphan */
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c9\",\"output\":\"x\"}]}",
               NULL, "input[0].call_id", "No tool call found");
}

static void test_translate_errors(void)
{
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"bogus\"}]}", NULL, "input[0].type", "Invalid value: 'bogus'");
    expect_400("{\"model\":\"m\",\"input\":[7]}", NULL, "input[0]", "expected an input item object");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"robot\",\"content\":\"x\"}]}", NULL, "input[0].role", "robot");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"user\"}]}", NULL, "input[0].content", "Missing");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":5}]}", NULL, "input[0].content", "a number");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_video\"}]}]}", NULL,
               "input[0].content[0].type", "input_video");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"output_text\",\"text\":\"x\"}]}]}",
               NULL, "input[0].content[0].type", "assistant");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"file_id\":\"f\"}]}]}",
               NULL, "input[0].content[0].image_url", "file_id");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"}]}", NULL,
               "input[0].call_id", "Missing");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"arguments\":\"{}\"}]}", NULL,
               "input[0].name", "Missing");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\",\"arguments\":{}}]}",
               NULL, "input[0].arguments", "Missing");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"x\"}]}", NULL, "input[0].type",
               "item_reference");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}],\"tool_choice\":{\"type\":"
               "\"web_search\"}}",
               NULL, "tool_choice", "built-in tool 'web_search'");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":"
               "{\"type\":\"function\",\"name\":\"g\"}}",
               NULL, "tool_choice.name", "'g'");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":\"sometimes\"}", NULL, "tool_choice", "sometimes");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\"}]}", NULL, "tools[0].name", "Missing");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"name\":\"f\"}]}", NULL, "tools[0].type", "Missing");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tools\":{}}", NULL, "tools", "array");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"schema\":{}}}}", NULL,
               "text.format.name", "Missing");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", NULL, "text.format.type",
               "yaml");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"reasoning\":{\"effort\":\"max\"}}", NULL, "reasoning.effort", NULL);
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"temperature\":3}", NULL, "temperature", NULL);
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"metadata\":{\"a\":1}}", NULL, "metadata", NULL);
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"background\":true}", NULL, "background", NULL);
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"conversation\":\"conv_1\"}", NULL, "conversation", NULL);
    expect_400("{\"model\":\"m\",\"instructions\":\"only\"}", NULL, "input", "at least one");
    expect_400("{\"model\":\"m\",\"input\":[]}", NULL, "input", "at least one");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"include\":[1]}", NULL, "include", NULL);
    /* a corrupt stored conversation is a 400 that names previous_response_id, not a crash */
    expect_400("{\"model\":\"m\",\"input\":\"x\"}", "[{\"type\":\"nope\"}]", "previous_response_id[0].type", NULL);
    /* oversize: more items than the bound, history included */
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"model\":\"m\",\"input\":[");
    for (int i = 0; i <= RESPONSES_MAX_ITEMS; i++)
        buf_append_str(&b, i ? ",\"\"" : "\"\"");
    buf_append_str(&b, "]}");
    expect_400(b.data, NULL, "input", "more than");
    buf_free(&b);
}

/* Validation walks input once: twice the items take about twice the time, not four times. */
static double time_items(int n)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"model\":\"m\",\"input\":[");
    for (int i = 0; i < n; i++)
        buf_printf(&b, "%s{\"type\":\"function_call\",\"call_id\":\"c%d\",\"name\":\"f\",\"arguments\":\"{}\"},"
                       "{\"type\":\"function_call_output\",\"call_id\":\"c%d\",\"output\":\"x\"}",
                   i ? "," : "", i, i);
    buf_append_str(&b, "]}");
    cJSON *r = J(b.data);
    struct gw_error err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cJSON *c = responses_to_chat(r, NULL, NULL, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ok(c != NULL);
    cJSON_Delete(c);
    cJSON_Delete(r);
    buf_free(&b);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static void test_linear(void)
{
    /* the best of five of each, interleaved, so that a busy machine does not decide */
    double small = 1e9, big = 1e9;
    for (int i = 0; i < 5; i++) {
        double a = time_items(1200), b = time_items(4800);
        small = a < small ? a : small;
        big = b < big ? b : big;
    }
    if (!ok(big < small * 10 + 0.005)) /* 4x the items: linear is ~4x, quadratic 16x */
        printf("#   1200 pairs: %.4fs, 4800 pairs: %.4fs\n", small, big);
}

static const char *const required_fields[] = {
    "id", "object", "created_at", "status", "error", "incomplete_details", "instructions", "max_output_tokens",
    "model", "output", "parallel_tool_calls", "previous_response_id", "reasoning", "store", "temperature", "text",
    "tool_choice", "tools", "top_p", "truncation", "usage", "metadata", NULL};

static void test_from_chat(void)
{
    cJSON *req = J("{\"model\":\"m\",\"input\":\"x\",\"instructions\":\"i\",\"store\":false}");
    cJSON *comp = J("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":"
                    "{\"role\":\"assistant\",\"content\":\"hi there\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
                    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":"
                    "\"tool_calls\"}]}");
    struct usage u = {.input = 10, .output = 5, .cached_input = 3, .reasoning = 2, .known = true};
    cJSON *r = responses_from_chat(req, comp, &u, "resp_abc", 1700000000, "m");
    for (int i = 0; required_fields[i]; i++)
        if (!ok(cJSON_HasObjectItem(r, required_fields[i])))
            printf("#   missing %s\n", required_fields[i]);
    is_str(cJSON_GetObjectItem(r, "object")->valuestring, "response");
    is_str(cJSON_GetObjectItem(r, "status")->valuestring, "completed");
    is_str(cJSON_GetObjectItem(r, "instructions")->valuestring, "i");
    ok(cJSON_IsFalse(cJSON_GetObjectItem(r, "store")));
    ok(cJSON_IsNull(cJSON_GetObjectItem(r, "previous_response_id")));
    cJSON *out = cJSON_GetObjectItem(r, "output");
    is_int(cJSON_GetArraySize(out), 2);
    char *o0 = S(cJSON_GetArrayItem(out, 0)), *o1 = S(cJSON_GetArrayItem(out, 1));
    is_str(o0, "{\"id\":\"msg_abc\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":"
               "\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"hi there\"}],\"role\":\"assistant\"}");
    is_str(o1, "{\"id\":\"fc_abc_0\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":"
               "\"{\\\"a\\\":1}\",\"call_id\":\"call_1\",\"name\":\"f\"}");
    char *us = S(cJSON_GetObjectItem(r, "usage"));
    is_str(us, "{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":5,"
               "\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":15}");
    /* the output continues a conversation */
    cJSON *hist = responses_input_items(req);
    responses_append_output(hist, r);
    is_int(cJSON_GetArraySize(hist), 3);
    struct gw_error err;
    cJSON *next = J("{\"model\":\"m\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"call_1\","
                    "\"output\":\"7\"}]}");
    cJSON *c = responses_to_chat(next, hist, NULL, &err);
    ok(c != NULL);
    cJSON_Delete(c);
    cJSON_Delete(next);
    cJSON_Delete(hist);
    cJSON_free(o0);
    cJSON_free(o1);
    cJSON_free(us);
    cJSON_Delete(r);
    /* length -> incomplete */
    cJSON_Delete(comp);
    comp = J("{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"cut\"},\"finish_reason\":\"length\"}]}");
    r = responses_from_chat(req, comp, &u, "resp_x", 1, "m");
    is_str(cJSON_GetObjectItem(r, "status")->valuestring, "incomplete");
    is_str(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "incomplete_details"), "reason")->valuestring,
           "max_output_tokens");
    cJSON_Delete(r);
    cJSON_Delete(comp);
    cJSON_Delete(req);
}

/* Splits SSE text into events; checks each "event:" name equals its data's type and that sequence numbers count
 * up from 0. Returns the event names joined by ' '. */
static char *check_events(const char *sse, cJSON **last)
{
    struct buf names = BUF_INIT(BUF_UNBOUNDED);
    const char *p = sse;
    int64_t want = 0;
    *last = NULL;
    while ((p = strstr(p, "event: ")) != NULL) {
        p += 7;
        const char *nl = strchr(p, '\n');
        char name[96];
        snprintf(name, sizeof(name), "%.*s", (int)(nl - p), p);
        ok(strncmp(nl + 1, "data: ", 6) == 0);
        const char *d = nl + 7;
        const char *end = strstr(d, "\n\n");
        cJSON *ev = cJSON_ParseWithLength(d, (size_t)(end - d));
        if (!ok(ev != NULL))
            break;
        is_str(cJSON_GetObjectItem(ev, "type")->valuestring, name);
        is_int(cJSON_GetObjectItem(ev, "sequence_number")->valuedouble, want);
        want++;
        if (names.len)
            buf_append_char(&names, ' ');
        buf_append_str(&names, name);
        cJSON_Delete(*last);
        *last = ev;
        p = end;
    }
    return buf_steal(&names, NULL);
}

static struct chat_delta text_d(const char *t)
{
    return (struct chat_delta){.kind = DELTA_TEXT, .text = str_from(t)};
}

static void test_stream(void)
{
    cJSON *req = J("{\"model\":\"m\",\"input\":\"x\",\"stream\":true}");
    struct responses_stream *s = responses_stream_new(responses_skeleton(req, "resp_s1", 5, "m"));
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    struct chat_delta d = text_d("Hel");
    responses_stream_delta(s, &d, &out);
    d = text_d("lo");
    responses_stream_delta(s, &d, &out);
    d = (struct chat_delta){.kind = DELTA_TOOL_START, .tool_index = 0, .tool_id = str_from("call_9"),
                            .tool_name = str_from("f")};
    responses_stream_delta(s, &d, &out);
    d = (struct chat_delta){.kind = DELTA_TOOL_ARGS, .tool_index = 0, .text = str_from("{\"a\":")};
    responses_stream_delta(s, &d, &out);
    d = (struct chat_delta){.kind = DELTA_TOOL_ARGS, .tool_index = 0, .text = str_from("1}")};
    responses_stream_delta(s, &d, &out);
    d = (struct chat_delta){.kind = DELTA_FINISH, .finish = FINISH_TOOL_CALLS};
    responses_stream_delta(s, &d, &out);
    struct usage u = {.input = 4, .output = 6, .reasoning = 1, .known = true};
    d = (struct chat_delta){.kind = DELTA_USAGE, .usage = u};
    responses_stream_delta(s, &d, &out);
    responses_stream_end(s, NULL, NULL, &out);
    cJSON *last;
    char *names = check_events(out.data, &last);
    is_str(names, "response.created response.in_progress response.output_item.added response.content_part.added "
                  "response.output_text.delta response.output_text.delta response.output_text.done "
                  "response.content_part.done response.output_item.done response.output_item.added "
                  "response.function_call_arguments.delta response.function_call_arguments.delta "
                  "response.function_call_arguments.done response.output_item.done response.completed");
    cJSON *resp = cJSON_GetObjectItem(last, "response");
    is_str(cJSON_GetObjectItem(resp, "status")->valuestring, "completed");
    is_int(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "usage"), "output_tokens")->valuedouble, 6);
    is_int(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "usage"), "output_tokens_details"),
                               "reasoning_tokens")
               ->valuedouble,
           1);
    cJSON *outp = cJSON_GetObjectItem(resp, "output");
    is_int(cJSON_GetArraySize(outp), 2);
    is_str(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetArrayItem(outp, 0) ? cJSON_GetObjectItem(cJSON_GetArrayItem(outp, 0), "content") : NULL, 0), "text")->valuestring,
           "Hello");
    is_str(cJSON_GetObjectItem(cJSON_GetArrayItem(outp, 1), "arguments")->valuestring, "{\"a\":1}");
    is_str(cJSON_GetObjectItem(cJSON_GetArrayItem(outp, 1), "call_id")->valuestring, "call_9");
    is_int(responses_stream_seq(s), 14);
    ok(responses_stream_response(s) != NULL);
    cJSON_Delete(last);
    xfree(names);
    responses_stream_free(s);

    /* max tokens: response.incomplete, usage from the exchange wins over deltas */
    s = responses_stream_new(responses_skeleton(req, "resp_s2", 5, "m"));
    buf_reset(&out);
    d = text_d("cut");
    responses_stream_delta(s, &d, &out);
    d = (struct chat_delta){.kind = DELTA_FINISH, .finish = FINISH_LENGTH};
    responses_stream_delta(s, &d, &out);
    struct usage u2 = {.input = 1, .output = 2, .known = true};
    responses_stream_end(s, &u2, NULL, &out);
    names = check_events(out.data, &last);
    ok(strstr(names, "response.output_item.done response.incomplete") != NULL);
    resp = cJSON_GetObjectItem(last, "response");
    is_str(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "incomplete_details"), "reason")->valuestring,
           "max_output_tokens");
    is_int(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "usage"), "output_tokens")->valuedouble, 2);
    cJSON_Delete(last);
    xfree(names);
    responses_stream_free(s);

    /* an upstream failure mid-stream: response.failed with the error */
    s = responses_stream_new(responses_skeleton(req, "resp_s3", 5, "m"));
    buf_reset(&out);
    d = text_d("par");
    responses_stream_delta(s, &d, &out);
    struct gw_error err;
    gw_error_set(&err, 502, GW_ERR_API, "upstream went away");
    responses_stream_end(s, NULL, &err, &out);
    names = check_events(out.data, &last);
    ok(strstr(names, "response.failed") != NULL);
    resp = cJSON_GetObjectItem(last, "response");
    is_str(cJSON_GetObjectItem(resp, "status")->valuestring, "failed");
    is_str(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "error"), "message")->valuestring, "upstream went away");
    cJSON_Delete(last);
    xfree(names);
    responses_stream_free(s);

    /* nothing at all: still created, in_progress, completed */
    s = responses_stream_new(responses_skeleton(req, "resp_s4", 5, "m"));
    buf_reset(&out);
    responses_stream_end(s, NULL, NULL, &out);
    names = check_events(out.data, &last);
    is_str(names, "response.created response.in_progress response.completed");
    cJSON_Delete(last);
    xfree(names);
    responses_stream_free(s);
    buf_free(&out);
    cJSON_Delete(req);
}

static void test_decode(void)
{
    struct usage u;
    struct gw_error err;
    const char *done = "{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_1\","
                       "\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"usage\"}]}],"
                       "\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":4},"
                       "\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":3},\"total_tokens\":19}}}";
    is_int(responses_decode_event(str_from("response.completed"), str_from(done), &u, &err), RESP_EV_TERMINAL);
    ok(u.known);
    is_int(u.input, 12);
    is_int(u.output, 7);
    is_int(u.cached_input, 4);
    is_int(u.reasoning, 3);
    /* no event name: the type inside says it */
    is_int(responses_decode_event(str_from(""), str_from(done), &u, &err), RESP_EV_TERMINAL);
    is_int(u.input, 12);
    const char *inc = "{\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"usage\":"
                      "{\"input_tokens\":2,\"output_tokens\":1}}}";
    is_int(responses_decode_event(str_from("response.incomplete"), str_from(inc), &u, &err), RESP_EV_TERMINAL);
    is_int(u.output, 1);
    /* content events are relayed unscanned, even when their bytes are odd */
    is_int(responses_decode_event(str_from("response.output_text.delta"), str_from("{not json"), &u, &err),
           RESP_EV_OTHER);
    ok(!u.known);
    /* a terminal event that is not JSON: never silently lost */
    is_int(responses_decode_event(str_from("response.completed"), str_from("{\"usage\":"), &u, &err), -1);
    is_int(err.status, 502);
    is_int(responses_decode_event(str_from("error"), str_from("{\"type\":\"error\",\"code\":\"x\",\"message\":\"boom\"}"),
                                  &u, &err),
           -1);
    ok(strstr(err.message, "boom") != NULL);
    /* implausible counts are not billed */
    const char *neg = "{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":-5,\"output_tokens\":1}}}";
    is_int(responses_decode_event(str_from("response.completed"), str_from(neg), &u, &err), RESP_EV_TERMINAL);
    ok(!u.known && u.invalid);
    /* a complete Response body */
    const char *body = "{\"id\":\"resp_1\",\"object\":\"response\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4,"
                       "\"input_tokens_details\":{\"cached_tokens\":1}}}";
    is_int(responses_extract_usage(body, strlen(body), &u), 0);
    is_int(u.input, 3);
    is_int(u.output, 4);
    is_int(u.cached_input, 1);
    is_int(responses_extract_usage("{\"id\":1}", 8, &u), -1);
}

int main(void)
{
    subtest("head", test_head);
    subtest("translate basic", test_translate_basic);
    subtest("translate items", test_translate_items);
    subtest("translate history", test_translate_history);
    subtest("translate errors", test_translate_errors);
    subtest("linear", test_linear);
    subtest("from chat", test_from_chat);
    subtest("stream", test_stream);
    subtest("decode", test_decode);
    return done_testing();
}
