/* The OpenAI chat front door checks the types of the fields it knows, as OpenAI's API does (issue 15 item 7):
 * a wrong type is a 400 invalid_request_error naming the field in `param`; what OpenAI accepts (newer fields,
 * null for optional ones, unknown fields) passes. */
#include <string.h>

#include "common/alloc.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "test.h"

static int parse(const char *body, struct gw_error *err)
{
    struct ex_request *rq = xcalloc(1, sizeof(*rq));
    rq->body = str_from(body);
    rq->max_tokens = -1;
    memset(err, 0, sizeof(*err));
    int rc = front_openai_chat.parse(rq, err);
    xfree(rq);
    return rc;
}

#define MSG_USER "{\"role\":\"user\",\"content\":\"hi\"}"

/* body with the given extra top-level members (JSON text without braces) and messages array */
static const char *body_with(char *buf, size_t cap, const char *extra, const char *messages)
{
    snprintf(buf, cap, "{\"model\":\"m\",\"messages\":%s%s%s}", messages ? messages : "[" MSG_USER "]",
             extra && *extra ? "," : "", extra ? extra : "");
    return buf;
}

static void refused(const char *extra, const char *messages, const char *param)
{
    char b[4096];
    struct gw_error err;
    const char *body = body_with(b, sizeof(b), extra, messages);
    int rc = parse(body, &err);
    if (!is_int(rc, -1)) {
        printf("#   accepted: %s\n", body);
        return;
    }
    is_int(err.status, 400);
    is_int(err.type, GW_ERR_INVALID_REQUEST);
    if (!is_str(err.param, param))
        printf("#   body: %s\n#   message: %s\n", body, err.message);
}

static void accepted(const char *extra, const char *messages)
{
    char b[4096];
    struct gw_error err;
    const char *body = body_with(b, sizeof(b), extra, messages);
    if (!is_int(parse(body, &err), 0))
        printf("#   refused: %s\n#   message: %s (param %s)\n", body, err.message, err.param);
}

static void test_top_level(void)
{
    refused("\"stop\":1", NULL, "stop");
    refused("\"stop\":[\"a\",2]", NULL, "stop");
    refused("\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", NULL, "stop");
    refused("\"tools\":[1]", NULL, "tools[0]");
    refused("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\"}]", NULL,
            "tools[1].function");
    refused("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":3}}]", NULL, "tools[0].function.name");
    refused("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"\"}}]", NULL, "tools[0].function.name");
    refused("\"tools\":[{\"function\":{\"name\":\"f\"}}]", NULL, "tools[0].type");
    refused("\"tool_choice\":3", NULL, "tool_choice");
    refused("\"tool_choice\":\"sometimes\"", NULL, "tool_choice");
    refused("\"tool_choice\":{\"type\":1}", NULL, "tool_choice.type");
    refused("\"tool_choice\":{\"type\":\"function\",\"function\":{}}", NULL, "tool_choice.function.name");
    refused("\"response_format\":\"json\"", NULL, "response_format");
    refused("\"response_format\":{\"type\":null}", NULL, "response_format.type");
    refused("\"user\":42", NULL, "user");
    refused("\"logit_bias\":[1]", NULL, "logit_bias");
    refused("\"logit_bias\":{\"50256\":\"-100\"}", NULL, "logit_bias");
    refused("\"parallel_tool_calls\":\"yes\"", NULL, "parallel_tool_calls");
    refused("\"presence_penalty\":\"1\"", NULL, "presence_penalty");
    refused("\"presence_penalty\":2.5", NULL, "presence_penalty");
    refused("\"frequency_penalty\":-3", NULL, "frequency_penalty");
    refused("\"seed\":1.5", NULL, "seed");
    refused("\"seed\":\"7\"", NULL, "seed");
    refused("\"logprobs\":1", NULL, "logprobs");
    refused("\"top_logprobs\":21", NULL, "top_logprobs");
    refused("\"top_logprobs\":-1", NULL, "top_logprobs");
    refused("\"top_logprobs\":true", NULL, "top_logprobs");
}

static void test_messages(void)
{
    refused(NULL, "[]", "messages");
    refused(NULL, "[ \n\r\t ]", "messages");
    refused(NULL, "[" MSG_USER ",2]", "messages[1]");
    refused(NULL, "[{\"role\":\"us\\u0065r\",\"content\":3}]", "messages[0].content"); /* escaped role still known */
    refused(NULL, "[{\"content\":\"x\"}]", "messages[0].role");
    refused(NULL, "[{\"role\":\"robot\",\"content\":\"x\"}]", "messages[0].role");
    refused(NULL, "[{\"role\":\"user\",\"content\":5}]", "messages[0].content");
    refused(NULL, "[{\"role\":\"user\",\"content\":{\"type\":\"text\"}}]", "messages[0].content");
    refused(NULL, "[{\"role\":\"user\"}]", "messages[0].content");
    refused(NULL, "[{\"role\":\"user\",\"content\":null}]", "messages[0].content");
    refused(NULL, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":7}]}]",
            "messages[0].content[1].type");
    refused(NULL, "[{\"role\":\"user\",\"content\":[\"plain\"]}]", "messages[0].content[0]");
    refused(NULL,
            "[" MSG_USER ",{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
            "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
            "{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"content\":\"42\"}]",
            "messages[3].tool_call_id");
    refused(NULL, "[{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":1}]", "messages[0].tool_call_id");
    /* escaped quotes and backslash runs inside strings do not end them early (the second pass skips strings) */
    refused(NULL, "[{\"role\":\"user\",\"content\":\"a\\\"b\\\\\\\\\"},{\"role\":\"tool\",\"x\":\"\\\\\",\"content\":\"}\\\"\"}]",
            "messages[1].tool_call_id");
    accepted(NULL, "[{\"role\":\"user\",\"content\":\"\\\\\\\"\\\\\"},{\"role\":\"tool\",\"tool_call_id\":\"\\\\\",\"content\":\"\\\"\"}]");
    /* a member read twice: parsers disagree on which copy wins */
    refused(NULL, "[" MSG_USER ",{\"role\":\"user\",\"role\":\"tool\",\"content\":\"x\"}]", "messages[1]");
    refused(NULL, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"type\":\"x\"}]}]", "messages[0].content");
    refused(NULL, "[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":{\"id\":\"c1\"}}]",
            "messages[0].tool_calls");
}

static void test_accepts_what_openai_accepts(void)
{
    /* null for every optional field, the newer fields, unknown fields */
    accepted("\"stop\":null,\"tools\":null,\"tool_choice\":null,\"response_format\":null,\"user\":null,"
             "\"logit_bias\":null,\"parallel_tool_calls\":null,\"presence_penalty\":null,\"frequency_penalty\":null,"
             "\"seed\":null,\"logprobs\":null,\"top_logprobs\":null",
             NULL);
    accepted("\"stop\":\"END\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
             "{\"type\":\"object\"},\"strict\":true}},{\"type\":\"custom\",\"custom\":{\"name\":\"g\"}}],"
             "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"s\",\"schema\":{}}},"
             "\"user\":\"u-1\",\"logit_bias\":{\"50256\":-100,\"1\":2.5},\"parallel_tool_calls\":false,"
             "\"presence_penalty\":-2,\"frequency_penalty\":2,\"seed\":-42,\"logprobs\":true,\"top_logprobs\":20",
             NULL);
    accepted("\"stop\":[\"a\",\"b\",\"c\",\"d\"],\"tool_choice\":\"required\"", NULL);
    accepted("\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"auto\",\"tools\":[]}}", NULL);
    accepted("\"max_completion_tokens\":100,\"reasoning_effort\":\"low\",\"store\":false,\"metadata\":{\"k\":\"v\"},"
             "\"prediction\":{\"type\":\"content\",\"content\":\"x\"},\"audio\":{\"voice\":\"alloy\",\"format\":\"wav\"},"
             "\"modalities\":[\"text\"],\"web_search_options\":{},\"service_tier\":\"auto\",\"verbosity\":\"low\","
             "\"prompt_cache_key\":\"k\",\"safety_identifier\":\"s\",\"some_future_field\":{\"x\":[1]}",
             NULL);
    accepted(NULL,
             "[{\"role\":\"developer\",\"content\":\"be brief\"},{\"role\":\"system\",\"content\":[{\"type\":\"text\","
             "\"text\":\"s\"}]},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":"
             "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AA==\"}}]},"
             "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
             "\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"},"
             "{\"role\":\"assistant\",\"content\":null,\"refusal\":null},"
             "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":[{\"type\":\"text\",\"text\":\"42\"}]},"
             "{\"role\":\"function\",\"name\":\"f\",\"content\":null},{\"role\":\"user\",\"content\":\"\"}]");
}

/* A conversation of 20k messages is checked message by message (one jscan pass each, no tree) and an error in
 * the last one is still found and named. */
static void test_large(void)
{
    size_t n = 20000;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"model\":\"m\",\"messages\":[");
    for (size_t i = 0; i < n; i++)
        buf_append_str(&b, i ? ",{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}"
                             : "{\"role\":\"user\",\"content\":\"x\"}");
    buf_append_str(&b, ",{\"role\":\"tool\",\"content\":\"x\"}]}");
    struct gw_error err;
    is_int(parse(b.data, &err), -1);
    is_str(err.param, "messages[20000].tool_call_id");
    buf_free(&b);
}

int main(void)
{
    subtest("top-level fields are type-checked", test_top_level);
    subtest("messages are type-checked", test_messages);
    subtest("what OpenAI accepts passes", test_accepts_what_openai_accepts);
    subtest("a late error in a large conversation", test_large);
    return done_testing();
}
