/* Unit tests of the Anthropic wire format: front-door validation, request translation both ways (golden trees),
 * response translation both ways, the stream writer's exact event sequence, the upstream stream decoder, error
 * mapping and usage semantics (Anthropic's input_tokens excludes cache reads and writes). */
#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "gateway/front_anthropic.h"
#include "gateway/providers/anthropic.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/providers/canon.h"
#include "test.h"

/* ---- helpers ---- */

static int is_json_(const cJSON *got, const char *want, const char *file, int line)
{
    cJSON *w = cJSON_Parse(want);
    if (w == NULL) {
        printf("# bad expected JSON at %s:%d\n", file, line);
        return test_ok_(0, "expected JSON parses", file, line);
    }
    int pass = test_ok_(got && cJSON_Compare(got, w, 1), "JSON trees equal", file, line);
    if (!pass) {
        char *g = got ? cJSON_PrintUnformatted(got) : NULL;
        char *e = cJSON_PrintUnformatted(w);
        printf("#   got      %s\n#   expected %s\n", g ? g : "(null)", e);
        cJSON_free(g);
        cJSON_free(e);
    }
    cJSON_Delete(w);
    return pass;
}
#define is_json(got, want) is_json_((got), (want), __FILE__, __LINE__)

static int is_json_text_(const char *got, size_t len, const char *want, const char *file, int line)
{
    cJSON *g = cJSON_ParseWithLength(got ? got : "", len);
    int pass = is_json_(g, want, file, line);
    cJSON_Delete(g);
    return pass;
}
#define is_json_text(got, len, want) is_json_text_((got), (len), (want), __FILE__, __LINE__)

static struct exchange *new_ex(const char *body)
{
    struct exchange *ex = xcalloc(1, sizeof(*ex));
    ex->rq.body = str_from(body);
    ex->rq.max_tokens = -1;
    ex->fops = &front_anthropic;
    ex->fstate = front_anthropic.stream_new();
    snprintf(ex->id, sizeof(ex->id), "msg_test1");
    return ex;
}

static void free_ex(struct exchange *ex)
{
    cJSON_Delete(ex->rq.client_tree);
    cJSON_Delete(ex->canon);
    front_anthropic.stream_free(ex->fstate);
    xfree(ex);
}

/* ---- front door: parse ---- */

static int parse_body(const char *body, struct gw_error *err, struct exchange **keep)
{
    struct exchange *ex = new_ex(body);
    int rc = front_anthropic.parse(&ex->rq, err);
    if (keep)
        *keep = ex;
    else
        free_ex(ex);
    return rc;
}

static void expect_invalid(const char *body, const char *msg_part)
{
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    int rc = parse_body(body, &err, NULL);
    if (!is_int(rc, -1))
        printf("#   body accepted: %s\n", body);
    is_int(err.status, 400);
    is_int(err.type, GW_ERR_INVALID_REQUEST);
    if (!ok(strstr(err.message, msg_part) != NULL))
        printf("#   message \"%s\" lacks \"%s\"\n", err.message, msg_part);
}

static void test_parse(void)
{
    struct gw_error err;
    struct exchange *ex;
    const char *good = "{\"model\":\"claude-x\",\"max_tokens\":256,\"stream\":true,"
                       "\"system\":[{\"type\":\"text\",\"text\":\"be brief\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
                       "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
                       "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"AA==\"}}]},"
                       "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":"
                       "[{\"type\":\"text\",\"text\":\"ok\"}],\"is_error\":false}]}],"
                       "\"tools\":[{\"name\":\"f\",\"description\":\"d\",\"input_schema\":{\"type\":\"object\"}},"
                       "{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],"
                       "\"tool_choice\":{\"type\":\"tool\",\"name\":\"f\"},\"stop_sequences\":[\"END\"],"
                       "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":5,\"metadata\":{\"user_id\":\"u1\"},"
                       "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024},\"future_field\":1}";
    ok(parse_body(good, &err, &ex) == 0);
    is_str(ex->rq.model_name, "claude-x");
    is_int(ex->rq.max_tokens, 256);
    ok(ex->rq.stream);
    free_ex(ex);
    /* the optional final assistant message may be empty (prefill) */
    ok(parse_body("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
                  "{\"role\":\"assistant\",\"content\":\"\"}]}",
                  &err, NULL) == 0);

    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[", "invalid JSON");
    expect_invalid("[]", "invalid JSON");
    /* agentd reads the first of duplicate keys, Anthropic the last: refused, not guessed */
    expect_invalid("{\"model\":\"cheap\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                   "\"mod\\u0065l\":\"dear\"}",
                   "model: the request body names this field more than once");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"max_tokens\":500000,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "max_tokens: the request body names this field more than once");
    expect_invalid("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model: Field required");
    expect_invalid("{\"model\":7,\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model:");
    expect_invalid("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens: Field required");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":\"5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "max_tokens: Input should be a valid integer");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "max_tokens: Input should be a valid integer");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "greater than or equal to 1");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5}", "messages: Field required");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":{}}", "messages: Input should be a valid list");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[ ]}", "at least one message");
    /* mid-conversation system messages: text only, and they do not break tool_use / tool_result pairing */
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                   "{\"role\":\"system\",\"content\":5}]}",
                   "messages.1.content: Input should be a valid string or list");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                   "{\"role\":\"system\",\"content\":[{\"type\":\"image\"}]}]}",
                   "messages.1.content.0: a system message holds text blocks");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                   "{\"role\":\"system\"}]}",
                   "messages.1.content: Field required");
    {
        struct gw_error e2;
        ok(parse_body("{\"model\":\"m\",\"max_tokens\":5,\"messages\":["
                      "{\"role\":\"user\",\"content\":\"x\"},"
                      "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]},"
                      "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"now be terse\","
                      "\"cache_control\":{\"type\":\"ephemeral\"}}]},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":\"r\"}]}]}",
                      &e2, NULL) == 0);
    }
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}",
                   "messages.0.role");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\"}]}", "messages.0.content: Field required");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}", "non-empty");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[]}]}", "non-empty");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}",
                   "messages.0.content.0: Input tag");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
                   "messages.0.content.0.text: Field required");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
                   "\"source\":{\"type\":\"base64\",\"media_type\":\"image/bmp\",\"data\":\"x\"}}]}]}",
                   "media_type");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_use\","
                   "\"id\":\"a\",\"name\":\"f\",\"input\":{}}]}]}",
                   "tool_use blocks can only be in assistant messages");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                   "\"content\":[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}}]},{\"role\":\"user\","
                   "\"content\":\"no result\"}]}",
                   "without `tool_result`");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
                   "\"tool_use_id\":\"zz\",\"content\":\"x\"}]}]}",
                   "unexpected `tool_use_id`");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"system\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "system:");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"system\":[{\"type\":\"image\"}],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "system.0");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"tools\":[{\"name\":\"f\"}],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "tools.0.custom.input_schema: Field required");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"tools\":[{\"name\":\"a b\",\"input_schema\":{}}],"
                   "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "String should match pattern");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"tool_choice\":{\"type\":\"required\"},"
                   "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "tool_choice");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"tool_choice\":{\"type\":\"tool\"},"
                   "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "tool_choice.tool.name");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "stream: Input should be a valid boolean");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"stop_sequences\":[1],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "stop_sequences");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"temperature\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "temperature: Input should be less than or equal to 1");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"top_k\":-1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "top_k");
    expect_invalid("{\"model\":\"m\",\"max_tokens\":5,\"metadata\":{\"user_id\":5},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "metadata.user_id");
}

static void test_error_body(void)
{
    struct exchange *ex = new_ex("{}");
    struct gw_error err;
    gw_error_set(&err, 529, GW_ERR_OVERLOADED, "Overloaded");
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic.error_body(ex, &err, &out);
    is_json_text(out.data, out.len, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
    buf_reset(&out);
    front_anthropic_error_json(&out, &err, "req_1");
    is_json_text(out.data, out.len,
                 "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},\"request_id\":\"req_1\"}");
    buf_free(&out);
    free_ex(ex);
}

/* ---- request translation: Anthropic -> canonical ---- */

static void test_to_canonical(void)
{
    const char *body =
        "{\"model\":\"claude-x\",\"max_tokens\":300,\"stream\":true,"
        "\"system\":[{\"type\":\"text\",\"text\":\"be brief\"},{\"type\":\"text\",\"text\":\"be kind\"}],"
        "\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
        "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBO\"}},"
        "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x/y.jpg\"}}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"s\"},"
        "{\"type\":\"text\",\"text\":\"calling\"},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get\",\"input\":{\"city\":\"Paris\",\"n\":[1,2]}},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":\"sunny\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_2\",\"is_error\":true,\"content\":[{\"type\":\"text\",\"text\":\"boom\"}]},"
        "{\"type\":\"text\",\"text\":\"thanks\"}]}],"
        "\"tools\":[{\"name\":\"get\",\"description\":\"weather\",\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}],"
        "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true},"
        "\"stop_sequences\":[\"END\",\"STOP\"],\"temperature\":0.25,\"top_p\":0.5,\"top_k\":40,"
        "\"metadata\":{\"user_id\":\"user-7\"}}";
    struct exchange *ex = new_ex(body);
    struct gw_error err;
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    cJSON *c = front_anthropic.to_canonical(&ex->rq, &err);
    is_json(c, "{\"model\":\"claude-x\",\"messages\":["
               "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"be brief\"},{\"type\":\"text\",\"text\":\"be kind\"}]},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
               "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBO\"}},"
               "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.jpg\"}}]},"
               "{\"role\":\"assistant\",\"content\":\"calling\",\"tool_calls\":["
               "{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\",\\\"n\\\":[1,2]}\"}},"
               "{\"id\":\"toolu_2\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{}\"}}]},"
               "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"sunny\"},"
               "{\"role\":\"tool\",\"tool_call_id\":\"toolu_2\",\"content\":[{\"type\":\"text\",\"text\":\"Error:\"},{\"type\":\"text\",\"text\":\"boom\"}]},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"thanks\"}]}],"
               "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"description\":\"weather\","
               "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}],"
               "\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"max_tokens\":300,"
               "\"stop\":[\"END\",\"STOP\"],\"temperature\":0.25,\"top_p\":0.5,\"top_k\":40,\"user\":\"user-7\",\"stream\":true}");
    cJSON_Delete(c);
    free_ex(ex);

    /* plain strings, the other tool_choice forms, string tool_result with is_error */
    static const struct {
        const char *choice, *want;
    } choices[] = {
        {"{\"type\":\"auto\"}", "\"auto\""},
        {"{\"type\":\"none\"}", "\"none\""},
        {"{\"type\":\"tool\",\"name\":\"get\"}", "{\"type\":\"function\",\"function\":{\"name\":\"get\"}}"},
    };
    for (size_t i = 0; i < sizeof(choices) / sizeof(choices[0]); i++) {
        char b[1024], w[1024];
        snprintf(b, sizeof(b),
                 "{\"model\":\"m\",\"max_tokens\":10,\"system\":\"sys\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
                 "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"get\",\"input\":{\"x\":1}}]},"
                 "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\",\"content\":\"bad\",\"is_error\":true}]}],"
                 "\"tools\":[{\"name\":\"get\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":%s}",
                 choices[i].choice);
        snprintf(w, sizeof(w),
                 "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"q\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\","
                 "\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"a\",\"content\":\"Error: bad\"}],"
                 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{\"type\":\"object\"}}}],"
                 "\"tool_choice\":%s,\"max_tokens\":10}",
                 choices[i].want);
        ex = new_ex(b);
        ok(front_anthropic.parse(&ex->rq, &err) == 0);
        c = front_anthropic.to_canonical(&ex->rq, &err);
        is_json(c, w);
        cJSON_Delete(c);
        free_ex(ex);
    }

    /* tool_choice without tools: OpenAI refuses it, so it is not carried */
    ex = new_ex("{\"model\":\"m\",\"max_tokens\":10,\"tool_choice\":{\"type\":\"any\"},"
                "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}");
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    c = front_anthropic.to_canonical(&ex->rq, &err);
    is_json(c, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":10}");
    cJSON_Delete(c);
    free_ex(ex);

    /* an Anthropic server tool cannot run elsewhere: dropped and listed, unless tool_choice forces it */
    ex = new_ex("{\"model\":\"m\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                "\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}]}");
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    c = front_anthropic.to_canonical(&ex->rq, &err);
    is_json(c, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":10}");
    is_str(ex->rq.dropped_fields, "tools.web_search_20250305");
    cJSON_Delete(c);
    free_ex(ex);
    ex = new_ex("{\"model\":\"m\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                "\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],"
                "\"tool_choice\":{\"type\":\"tool\",\"name\":\"web_search\"}}");
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    c = front_anthropic.to_canonical(&ex->rq, &err);
    ok(c == NULL);
    is_int(err.status, 400);
    ok(strstr(err.message, "web_search_20250305") != NULL);
    free_ex(ex);
}

/* Today's client shapes: every field the Messages API accepts is accepted; translation maps what it can, and lists
 * the rest in x-agentd-dropped-fields (sorted, each once). */
static void test_client_shapes(void)
{
    const char *body =
        "{\"model\":\"m\",\"max_tokens\":64,\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048},"
        "\"context_management\":{\"edits\":[{\"type\":\"clear_tool_uses_20250919\"}]},"
        "\"output_config\":{\"effort\":\"high\",\"format\":{\"type\":\"json_schema\","
        "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]}}},"
        "\"service_tier\":\"auto\",\"metadata\":{\"user_id\":\"u1\"},\"some_future_field\":{\"x\":1},\"inference_geo\":null,"
        "\"system\":[{\"type\":\"text\",\"text\":\"sys\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"sig\"},"
        "{\"type\":\"redacted_thinking\",\"data\":\"xyz\"},{\"type\":\"text\",\"text\":\"a\"}]},"
        "{\"role\":\"system\",\"content\":\"be terse now\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q2\"}]}]}";
    struct exchange *ex = new_ex(body);
    struct gw_error err;
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    cJSON *c = front_anthropic.to_canonical(&ex->rq, &err);
    /* the cache marker travels on the canonical part, flagged at top level (canon.h: CANON_CACHE_CONTROL); the
     * provider lists it as dropped when it has no equivalent */
    is_json(c, "{\"model\":\"m\",\"messages\":["
               "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"sys\","
               "\"cache_control\":{\"type\":\"ephemeral\"}}]},"
               "{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"},"
               "{\"role\":\"system\",\"content\":\"be terse now\"},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q2\"}]}],"
               "\"max_tokens\":64,\"user\":\"u1\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
               "{\"name\":\"response\",\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},"
               "\"required\":[\"a\"]}}},\"cache_control\":true}");
    is_str(ex->rq.dropped_fields, "context_management,messages.content.redacted_thinking,"
                               "messages.content.thinking,output_config.effort,service_tier,some_future_field,thinking");
    cJSON_Delete(c);
    free_ex(ex);

    /* the beta's older spelling of structured output */
    ex = new_ex("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                "\"output_format\":{\"type\":\"json_schema\",\"schema\":{\"type\":\"object\"}}}");
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    c = front_anthropic.to_canonical(&ex->rq, &err);
    is_str(canon_str(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "response_format"),
                                                      "json_schema"),
                     "name"),
           "response");
    is_str(ex->rq.dropped_fields, "");
    cJSON_Delete(c);
    free_ex(ex);

    /* a message thread cannot be held by a translated deployment: the error the SDKs fall back on, never loss */
    ex = new_ex("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                "\"thread\":{\"type\":\"continue\",\"previous_message_id\":\"msg_1\"}}");
    ok(front_anthropic.parse(&ex->rq, &err) == 0);
    ok(front_anthropic.to_canonical(&ex->rq, &err) == NULL);
    is_int(err.status, 400);
    is_str(err.code, "thread_unsupported_request");
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic.error_body(ex, &err, &out);
    cJSON *eb = cJSON_ParseWithLength(out.data, out.len);
    is_str(canon_str(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(eb, "error"), "details"),
                     "error_code"),
           "thread_unsupported_request");
    cJSON_Delete(eb);
    buf_free(&out);
    free_ex(ex);
}

static void test_dropped_list(void)
{
    char l[24] = "";
    canon_dropped_add(l, sizeof(l), "thinking");
    canon_dropped_add(l, sizeof(l), "audio");
    canon_dropped_add(l, sizeof(l), "thinking");
    canon_dropped_add(l, sizeof(l), "thin");
    is_str(l, "audio,thin,thinking");
    canon_dropped_add(l, sizeof(l), "zzzzz"); /* does not fit: left out, the list stays whole */
    is_str(l, "audio,thin,thinking");
    canon_dropped_add(l, sizeof(l), "");
    canon_dropped_add(l, sizeof(l), "a\r\nx: y");
    canon_dropped_add(l, sizeof(l), "a,b");
    is_str(l, "audio,thin,thinking");
}

/* ---- request translation: canonical -> Anthropic ---- */

static void test_from_canonical(void)
{
    cJSON *canon = cJSON_Parse(
        "{\"model\":\"public\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"You are terse.\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"No emojis.\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"see\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://img/x.png\",\"detail\":\"high\"}}]},"
        "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"cold\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":\"text\",\"text\":\"warm\"}]},"
        "{\"role\":\"user\",\"content\":\"and now?\"}],"
        "\"max_completion_tokens\":77,\"max_tokens\":5,\"stop\":\"END\",\"temperature\":1.6,\"top_p\":0.9,"
        "\"user\":\"u-1\",\"seed\":3,\"presence_penalty\":0.1,"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"description\":\"weather\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}],"
        "\"tool_choice\":\"required\",\"parallel_tool_calls\":false}");
    struct gw_error err;
    char jt[130];
    cJSON *a = anthropic_request_from_canonical(canon, "claude-up", true, 4096, jt, sizeof(jt), &err);
    is_json(a, "{\"model\":\"claude-up\",\"max_tokens\":77,"
               "\"system\":[{\"type\":\"text\",\"text\":\"You are terse.\"},{\"type\":\"text\",\"text\":\"No emojis.\"}],"
               "\"messages\":["
               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"see\"},"
               "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/jpeg\",\"data\":\"/9j/\"}},"
               "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://img/x.png\"}}]},"
               "{\"role\":\"assistant\",\"content\":["
               "{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get\",\"input\":{\"city\":\"Oslo\"}},"
               "{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":\"get\",\"input\":{}}]},"
               "{\"role\":\"user\",\"content\":["
               "{\"type\":\"tool_result\",\"tool_use_id\":\"call_1\",\"content\":\"cold\"},"
               "{\"type\":\"tool_result\",\"tool_use_id\":\"call_2\",\"content\":[{\"type\":\"text\",\"text\":\"warm\"}]},"
               "{\"type\":\"text\",\"text\":\"and now?\"}]}],"
               "\"stop_sequences\":[\"END\"],\"temperature\":1,\"top_p\":0.9,\"metadata\":{\"user_id\":\"u-1\"},"
               "\"tools\":[{\"name\":\"get\",\"description\":\"weather\",\"input_schema\":{\"type\":\"object\","
               "\"properties\":{\"city\":{\"type\":\"string\"}}}},"
               "{\"name\":\"noargs\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}}],"
               "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true},\"stream\":true}");
    is_str(jt, "");
    cJSON_Delete(a);
    cJSON_Delete(canon);

    /* defaults: no max tokens -> the default; one system message -> a string; tool_choice forms */
    canon = cJSON_Parse("{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"}],"
                        "\"stop\":[\"a\",\"b\"],"
                        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
                        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}");
    a = anthropic_request_from_canonical(canon, "c", false, 4096, jt, sizeof(jt), &err);
    is_json(a, "{\"model\":\"c\",\"max_tokens\":4096,\"system\":\"s\",\"messages\":[{\"role\":\"user\",\"content\":"
               "[{\"type\":\"text\",\"text\":\"hi\"}]}],\"stop_sequences\":[\"a\",\"b\"],"
               "\"tools\":[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],"
               "\"tool_choice\":{\"type\":\"tool\",\"name\":\"f\"}}");
    cJSON_Delete(a);
    cJSON_Delete(canon);

    /* response_format json_schema: emulated with a forced tool */
    canon = cJSON_Parse("{\"messages\":[{\"role\":\"user\",\"content\":\"give json\"}],\"max_tokens\":50,"
                        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"answer\","
                        "\"schema\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}}}}}}");
    a = anthropic_request_from_canonical(canon, "c", false, 4096, jt, sizeof(jt), &err);
    is_str(jt, "answer");
    is_json(cJSON_GetObjectItem(a, "tools"),
            "[{\"name\":\"answer\",\"description\":\"Give your final answer by calling this tool: its input is the JSON "
            "response.\",\"input_schema\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}}}}]");
    is_json(cJSON_GetObjectItem(a, "tool_choice"), "{\"type\":\"tool\",\"name\":\"answer\"}");
    cJSON_Delete(a);
    cJSON_Delete(canon);
    /* ... colliding with a client tool: renamed, and the client's tool_choice stays */
    canon = cJSON_Parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"answer\"}}],"
                        "\"response_format\":{\"type\":\"json_object\"}}");
    a = anthropic_request_from_canonical(canon, "c", false, 10, jt, sizeof(jt), &err);
    is_str(jt, "json_response");
    is_int(cJSON_GetArraySize(cJSON_GetObjectItem(a, "tools")), 2);
    ok(cJSON_GetObjectItem(a, "tool_choice") == NULL);
    cJSON_Delete(a);
    cJSON_Delete(canon);

    /* what cannot be expressed */
    static const char *const bad[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{}}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://x\"}}]}]}",
        "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
        "{\"messages\":[{\"role\":\"function\",\"name\":\"f\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\",\"file\":{\"file_id\":\"file-1\"}}]}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        canon = cJSON_Parse(bad[i]);
        a = anthropic_request_from_canonical(canon, "c", false, 10, jt, sizeof(jt), &err);
        ok(a == NULL);
        is_int(err.status, 400);
        cJSON_Delete(a);
        cJSON_Delete(canon);
    }
}

static void test_splice(void)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    const char *body = "{ \"max_tokens\" : 5, \"model\" :\t\"cla\\u0075de\" , \"messages\":[{\"model\":\"inner\"}]}";
    ok(anthropic_splice_model(body, strlen(body), "claude-haiku-4-5", &out) == 0);
    is_str(out.data, "{ \"max_tokens\" : 5, \"model\" :\t\"claude-haiku-4-5\" , \"messages\":[{\"model\":\"inner\"}]}");
    buf_reset(&out);
    ok(anthropic_splice_model("{\"model\":3}", 11, "x", &out) != 0);
    ok(anthropic_splice_model("{\"model\":\"a\"", 12, "x", &out) != 0);
    buf_free(&out);
}

/* ---- responses ---- */

static void test_message_to_canonical(void)
{
    const char *msg = "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5-20251001\","
                      "\"content\":[{\"type\":\"thinking\",\"thinking\":\"...\",\"signature\":\"x\"},"
                      "{\"type\":\"text\",\"text\":\"Let me \"},{\"type\":\"text\",\"text\":\"check.\"},"
                      "{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"get\",\"input\":{\"city\":\"Rome\"}}],"
                      "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
                      "\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":20,"
                      "\"output_tokens\":7}}";
    struct usage u;
    struct gw_error err;
    char rm[64];
    cJSON *c = anthropic_message_to_canonical(msg, strlen(msg), "chatcmpl-x", "public", 1700000000, "", &u, rm,
                                              sizeof(rm), &err);
    is_json(c, "{\"id\":\"chatcmpl-x\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"public\","
               "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Let me check.\","
               "\"tool_calls\":[{\"id\":\"toolu_9\",\"type\":\"function\",\"function\":{\"name\":\"get\","
               "\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}],\"refusal\":null},\"logprobs\":null,"
               "\"finish_reason\":\"tool_calls\"}],"
               "\"usage\":{\"prompt_tokens\":130,\"completion_tokens\":7,\"total_tokens\":137,"
               "\"prompt_tokens_details\":{\"cached_tokens\":100},\"completion_tokens_details\":{\"reasoning_tokens\":0}},"
               "\"system_fingerprint\":null}");
    /* usage semantics: canonical input includes cache reads and writes */
    is_int(u.input, 130);
    is_int(u.cached_input, 100);
    is_int(u.cache_write, 20);
    is_int(u.output, 7);
    ok(u.known);
    is_str(rm, "claude-haiku-4-5-20251001");
    cJSON_Delete(c);

    /* the emulated response_format tool becomes the text; stop_reason tool_use becomes stop */
    const char *js = "{\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"answer\",\"input\":{\"x\":1}}],"
                     "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}";
    c = anthropic_message_to_canonical(js, strlen(js), "id", "m", 1, "answer", &u, NULL, 0, &err);
    is_json(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0),
            "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"{\\\"x\\\":1}\",\"refusal\":null},"
            "\"logprobs\":null,\"finish_reason\":\"stop\"}");
    cJSON_Delete(c);

    static const struct {
        const char *reason, *want;
    } reasons[] = {{"end_turn", "stop"},      {"stop_sequence", "stop"}, {"max_tokens", "length"},
                   {"refusal", "content_filter"}, {"pause_turn", "stop"}, {"model_context_window_exceeded", "length"}};
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        char b[256];
        snprintf(b, sizeof(b), "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"stop_reason\":\"%s\"}",
                 reasons[i].reason);
        c = anthropic_message_to_canonical(b, strlen(b), "id", "m", 1, "", &u, NULL, 0, &err);
        is_str(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0) ?
                   cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0),
                                                            "finish_reason"))
                   : NULL,
               reasons[i].want);
        ok(!u.known); /* no usage reported */
        cJSON_Delete(c);
    }
    ok(anthropic_message_to_canonical("{\"content\":5}", 13, "id", "m", 1, "", &u, NULL, 0, &err) == NULL);
    is_int(err.status, 502);
    ok(anthropic_message_to_canonical("<html>", 6, "id", "m", 1, "", &u, NULL, 0, &err) == NULL);
}

static void test_message_from_canonical(void)
{
    cJSON *resp = cJSON_Parse(
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"gpt\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"Sure.\",\"tool_calls\":["
        "{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"q\\\": [1, 2]}\"}},"
        "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"bad\",\"arguments\":\"not json\"}}]},"
        "\"finish_reason\":\"tool_calls\"}],"
        "\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":30}}}");
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    struct gw_error err;
    ok(front_anthropic_message_from_canonical(resp, "msg_x", "claude", NULL, &out, &err) == 0);
    is_json_text(out.data, out.len,
                 "{\"id\":\"msg_x\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":["
                 "{\"type\":\"text\",\"text\":\"Sure.\"},"
                 "{\"type\":\"tool_use\",\"id\":\"call_a\",\"name\":\"get\",\"input\":{\"q\":[1,2]}},"
                 "{\"type\":\"tool_use\",\"id\":\"call_b\",\"name\":\"bad\",\"input\":{}}],"
                 "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
                 "\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":30,"
                 "\"output_tokens\":9}}");
    /* the attempt's usage, when known, wins: it carries cache writes */
    struct usage u = {.input = 100, .output = 4, .cached_input = 60, .cache_write = 25, .known = true};
    buf_reset(&out);
    ok(front_anthropic_message_from_canonical(resp, "msg_x", "claude", &u, &out, &err) == 0);
    cJSON *t = cJSON_ParseWithLength(out.data, out.len);
    is_json(cJSON_GetObjectItem(t, "usage"), "{\"input_tokens\":15,\"cache_creation_input_tokens\":25,"
                                             "\"cache_read_input_tokens\":60,\"output_tokens\":4}");
    cJSON_Delete(t);
    cJSON_Delete(resp);

    resp = cJSON_Parse("{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"cut\"},\"finish_reason\":\"length\"}]}");
    buf_reset(&out);
    ok(front_anthropic_message_from_canonical(resp, "m1", "c", NULL, &out, &err) == 0);
    t = cJSON_ParseWithLength(out.data, out.len);
    is_str(cJSON_GetStringValue(cJSON_GetObjectItem(t, "stop_reason")), "max_tokens");
    cJSON_Delete(t);
    cJSON_Delete(resp);
    resp = cJSON_Parse("{\"choices\":[]}");
    ok(front_anthropic_message_from_canonical(resp, "m1", "c", NULL, &out, &err) != 0);
    cJSON_Delete(resp);
    buf_free(&out);
}

/* ---- the stream writer: exact event sequence ---- */

#define EV(name, json) "event: " name "\ndata: " json "\n\n"

static void test_stream_writer(void)
{
    /* 35 request bytes: message_start estimates ceil(35 / 4) = 9 input tokens while the upstream has said none */
    struct exchange *ex = new_ex("{\"model\":\"claude\",\"max_tokens\":100}");
    snprintf(ex->rq.model_name, sizeof(ex->rq.model_name), "claude");
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    const struct front_ops *f = &front_anthropic;
    struct chat_delta d[] = {
        {.kind = DELTA_TEXT, .text = STR_LIT("Hel")},
        {.kind = DELTA_TEXT, .text = STR_LIT("lo \"x\"")},
        {.kind = DELTA_TOOL_START, .tool_index = 0, .tool_id = STR_LIT("call_0"), .tool_name = STR_LIT("get")},
        {.kind = DELTA_TOOL_ARGS, .tool_index = 0, .text = STR_LIT("{\"a\":")},
        {.kind = DELTA_TOOL_ARGS, .tool_index = 0, .text = STR_LIT("1}")},
        {.kind = DELTA_TEXT, .text = STR_LIT("and")},
        {.kind = DELTA_TOOL_START, .tool_index = 1, .tool_id = STR_LIT("call_1"), .tool_name = STR_LIT("put")},
        {.kind = DELTA_TOOL_ARGS, .tool_index = 1, .text = STR_LIT("{}")},
        {.kind = DELTA_TEXT, .text = STR_LIT("")}, /* empty fragments open nothing */
        {.kind = DELTA_FINISH, .finish = FINISH_TOOL_CALLS},
    };
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        f->stream_delta(ex, &d[i], &out);
    /* the finish is held: nothing about it yet */
    ok(strstr(out.data, "message_delta") == NULL);
    /* usage arrives after the finish (OpenAI-style upstreams), then the end */
    ex->usage = (struct usage){.input = 40, .output = 12, .cached_input = 30, .cache_write = 4, .known = true};
    f->stream_end(ex, NULL, &out);
    is_str(out.data,
           EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_test1\",\"type\":\"message\","
                               "\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,"
                               "\"stop_sequence\":null,\"usage\":{\"input_tokens\":9,\"cache_creation_input_tokens\":0,"
                               "\"cache_read_input_tokens\":0,\"output_tokens\":0}}}")
           EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
           EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}")
           EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo \\\"x\\\"\"}}")
           EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}")
           EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_0\",\"name\":\"get\",\"input\":{}}}")
           EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}")
           EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}")
           EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}")
           EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
           EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\",\"text\":\"and\"}}")
           EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}")
           EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"put\",\"input\":{}}}")
           EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}")
           EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":3}")
           EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},"
                               "\"usage\":{\"input_tokens\":6,\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":30,\"output_tokens\":12}}")
           EV("message_stop", "{\"type\":\"message_stop\"}"));
    buf_free(&out);
    free_ex(ex);

    /* nothing streamed at all: still a well-formed message; no finish given -> end_turn */
    ex = new_ex("{}");
    snprintf(ex->rq.model_name, sizeof(ex->rq.model_name), "m");
    f->stream_end(ex, NULL, &out);
    ok(strstr(out.data, "event: message_start\n") == out.data);
    ok(strstr(out.data, "content_block") == NULL);
    ok(strstr(out.data, "\"stop_reason\":\"end_turn\"") != NULL);
    ok(strstr(out.data, "event: message_stop\n") != NULL);
    buf_free(&out);
    free_ex(ex);

    /* an error mid-stream: Anthropic's error event */
    ex = new_ex("{}");
    struct chat_delta t = {.kind = DELTA_TEXT, .text = STR_LIT("partial")};
    f->stream_delta(ex, &t, &out);
    buf_reset(&out);
    struct gw_error err;
    gw_error_set(&err, 502, GW_ERR_API, "upstream ended the stream before its final event");
    f->stream_end(ex, &err, &out);
    is_str(out.data, EV("error", "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream ended the "
                                 "stream before its final event\"}}"));
    buf_free(&out);
    free_ex(ex);

    /* passthrough relays the event as it came */
    ex = new_ex("{}");
    struct stream_event ev = {STR_LIT("content_block_delta"), STR_LIT("{\"type\":\"content_block_delta\"}"), false};
    f->forward_event(ex, &ev, &out);
    is_str(out.data, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n");
    buf_free(&out);
    free_ex(ex);
}

/* ---- the upstream stream decoder ---- */

struct collected {
    char log[4096];
    struct usage usage;
    enum finish finish;
};

static void collect(void *ud, const struct chat_delta *d)
{
    struct collected *c = ud;
    size_t n = strlen(c->log);
    switch (d->kind) {
    case DELTA_TEXT: snprintf(c->log + n, sizeof(c->log) - n, "T(%.*s)", (int)d->text.n, d->text.p); break;
    case DELTA_TOOL_START:
        snprintf(c->log + n, sizeof(c->log) - n, "S%d(%.*s,%.*s)", d->tool_index, (int)d->tool_id.n, d->tool_id.p,
                 (int)d->tool_name.n, d->tool_name.p);
        break;
    case DELTA_TOOL_ARGS: snprintf(c->log + n, sizeof(c->log) - n, "A%d(%.*s)", d->tool_index, (int)d->text.n, d->text.p); break;
    case DELTA_FINISH:
        c->finish = d->finish;
        snprintf(c->log + n, sizeof(c->log) - n, "F(%s)", gw_finish_openai(d->finish));
        break;
    case DELTA_USAGE:
        c->usage = d->usage;
        snprintf(c->log + n, sizeof(c->log) - n, "U");
        break;
    }
}

static int feed(struct anthropic_stream *s, const char *event, const char *data, struct gw_error *err)
{
    return anthropic_stream_event(s, str_from(event), str_from(data), err);
}

static const char *const upstream_events[][2] = {
    {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
                      "\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                      "\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":5,"
                      "\"output_tokens\":1}}}"},
    {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}"},
    {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"},
    {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"},
    {"ping", "{\"type\":\"ping\"}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\u00e9\"}}"},
    {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}"},
    {"content_block_start", "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"get\",\"input\":{}}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\"}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}"},
    {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}"},
    {"content_block_start", "{\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"put\",\"input\":{}}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}"},
    {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":3}"},
    {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}"},
    {"message_stop", "{\"type\":\"message_stop\"}"},
};

static void test_stream_decoder(void)
{
    struct collected c;
    memset(&c, 0, sizeof(c));
    struct anthropic_stream s;
    struct gw_error err;
    anthropic_stream_init(&s, false, collect, &c);
    size_t n = sizeof(upstream_events) / sizeof(upstream_events[0]);
    for (size_t i = 0; i < n; i++) {
        is_int(feed(&s, upstream_events[i][0], upstream_events[i][1], &err), 0);
        ok(s.done == (i == n - 1));
    }
    is_str(c.log, "T(Hi \xc3\xa9)S0(toolu_a,get)A0({\"q\":)A0(1})S1(toolu_b,put)A1({})F(tool_calls)U");
    is_str(s.model, "claude-haiku-4-5");
    /* usage semantics: input = uncached + cache reads + cache writes; output from message_delta */
    is_int(c.usage.input, 17);
    is_int(c.usage.cached_input, 5);
    is_int(c.usage.cache_write, 2);
    is_int(c.usage.output, 42);
    ok(c.usage.known);
    anthropic_stream_free(&s);

    /* passthrough: everything is forwarded, nothing emitted, usage still read */
    memset(&c, 0, sizeof(c));
    anthropic_stream_init(&s, true, collect, &c);
    for (size_t i = 0; i < n; i++)
        is_int(feed(&s, upstream_events[i][0], upstream_events[i][1], &err), 1);
    is_str(c.log, "");
    ok(s.done);
    is_int(s.usage.input, 17);
    is_int(s.usage.output, 42);
    anthropic_stream_free(&s);

    /* message_delta may restate the cumulative input counters (newer API versions): they overwrite */
    anthropic_stream_init(&s, true, NULL, NULL);
    feed(&s, "message_start", upstream_events[0][1], &err);
    feed(&s, "message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                              "\"usage\":{\"input_tokens\":11,\"cache_read_input_tokens\":6,\"output_tokens\":3}}", &err);
    is_int(s.usage.input, 19);
    is_int(s.usage.cached_input, 6);
    is_int(s.usage.cache_write, 2);
    is_int(s.usage.output, 3);
    anthropic_stream_free(&s);

    /* the emulated response_format tool streams as text and finishes as stop */
    memset(&c, 0, sizeof(c));
    anthropic_stream_init(&s, false, collect, &c);
    snprintf(s.json_tool, sizeof(s.json_tool), "answer");
    feed(&s, "content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"answer\",\"input\":{}}}", &err);
    feed(&s, "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":1}\"}}", &err);
    feed(&s, "message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":2}}", &err);
    is_str(c.log, "T({\"x\":1})F(stop)U");
    anthropic_stream_free(&s);

    /* an error event: the upstream's type and message, 529 kept for overloaded */
    anthropic_stream_init(&s, true, NULL, NULL);
    is_int(feed(&s, "error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", &err), -1);
    is_int(err.status, 529);
    is_int(err.type, GW_ERR_OVERLOADED);
    is_str(err.message, "Overloaded");
    ok(err.retryable);
    /* malformed events: in passthrough a content event is relayed unscanned (the client gets the upstream's
     * bytes, as through any proxy), but one that may carry usage, a message or an error is scanned and refused */
    is_int(feed(&s, "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,", &err), 1);
    is_int(feed(&s, "content_block_delta", "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":", &err), -1);
    is_int(err.status, 502);
    is_int(feed(&s, "message_delta", "{\"type\":\"message_delta\",", &err), -1);
    is_int(err.status, 502);
    anthropic_stream_free(&s);
    anthropic_stream_init(&s, false, collect, &c);
    is_int(feed(&s, "content_block_start", "{\"type\":\"content_block_start\",\"index\":99999,\"content_block\":{\"type\":\"text\"}}", &err), -1);
    is_int(feed(&s, "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{}}", &err), -1);
    is_int(feed(&s, "message_start", "{\"type\":\"message_start\"}", &err), -1);
    anthropic_stream_free(&s);
}

/* ---- usage and errors ---- */

static void test_usage(void)
{
    struct usage u;
    const char *body = "{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"cache_read_input_tokens\":1000,"
                       "\"cache_creation_input_tokens\":200,\"output_tokens\":9,\"service_tier\":\"standard\"}}";
    ok(anthropic_extract_usage(body, strlen(body), &u) == 0);
    is_int(u.input, 1203);
    is_int(u.cached_input, 1000);
    is_int(u.cache_write, 200);
    is_int(u.output, 9);
    /* and back: input_tokens is the uncached part, never negative */
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic_usage_append(&out, &u);
    is_str(out.data, "{\"input_tokens\":3,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":1000,"
                     "\"output_tokens\":9}");
    ok(anthropic_extract_usage("{\"id\":\"m\"}", 10, &u) != 0);
    ok(!u.known);
    buf_reset(&out);
    struct usage odd = {.input = 5, .cached_input = 10, .output = 1};
    front_anthropic_usage_append(&out, &odd);
    ok(strstr(out.data, "\"input_tokens\":0,") != NULL);
    buf_free(&out);
}

static void test_map_error(void)
{
    struct gw_error err;
    static const struct {
        int status;
        const char *body;
        enum gw_err_type type;
        bool retryable;
        const char *message;
    } cases[] = {
        {400, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"max_tokens: Field required\"}}",
         GW_ERR_INVALID_REQUEST, false, "max_tokens: Field required"},
        {401, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"},\"request_id\":\"r\"}",
         GW_ERR_AUTHENTICATION, false, "invalid x-api-key"},
        {403, "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":\"no\"}}", GW_ERR_PERMISSION, false, "no"},
        {404, "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"model: x\"}}", GW_ERR_NOT_FOUND, false, "model: x"},
        {413, "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\",\"message\":\"big\"}}", GW_ERR_TOO_LARGE, false, "big"},
        {429, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}", GW_ERR_RATE_LIMIT, true, "slow down"},
        {500, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}", GW_ERR_API, true, "Internal server error"},
        {529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", GW_ERR_OVERLOADED, true, "Overloaded"},
        {502, "<html><body>502 Bad Gateway</body></html>", GW_ERR_API, true, "upstream returned HTTP 502"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        anthropic_map_error(cases[i].status, cases[i].body, strlen(cases[i].body), &err);
        is_int(err.status, cases[i].status);
        is_int(err.type, cases[i].type);
        is_int(err.retryable, cases[i].retryable);
        is_str(err.message, cases[i].message);
        ok(err.from_upstream);
    }
    /* the provider op: 529 stays for Anthropic clients (passthrough), 503 for the others */
    struct attempt a = {.passthrough = true};
    const char *ov = cases[7].body;
    provider_anthropic.map_error(&a, 529, ov, strlen(ov), &err);
    is_int(err.status, 529);
    a.passthrough = false;
    provider_anthropic.map_error(&a, 529, ov, strlen(ov), &err);
    is_int(err.status, 503);
    is_int(err.type, GW_ERR_OVERLOADED);
}

int main(void)
{
    subtest("parse validates like Anthropic", test_parse);
    subtest("error body", test_error_body);
    subtest("Anthropic request -> canonical", test_to_canonical);
    subtest("today's client shapes", test_client_shapes);
    subtest("dropped-field list", test_dropped_list);
    subtest("canonical -> Anthropic request", test_from_canonical);
    subtest("passthrough model splice", test_splice);
    subtest("Anthropic message -> canonical", test_message_to_canonical);
    subtest("canonical -> Anthropic message", test_message_from_canonical);
    subtest("stream writer event sequence", test_stream_writer);
    subtest("upstream stream decoder", test_stream_decoder);
    subtest("usage semantics", test_usage);
    subtest("error mapping", test_map_error);
    return done_testing();
}
