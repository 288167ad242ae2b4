/* Gemini provider: canonical request -> GenerateContentRequest (golden trees), the schema subset, tool-result
 * names, thought signatures riding in tool-call ids, URLs and headers, embeddings; responses, stream chunks and
 * errors -> canonical forms. */
#include "gateway/providers/gemini.c"

#include "xlate_fixture.h"

static void stream_fixture(struct fx *f)
{
    struct gemini_stream *st = xcalloc(1, sizeof(*st));
    st->emit = fx_emit;
    st->emit_ud = &f->log;
    f->a.pstate = st;
}

/* Replaces every tool-call id (random) with "ID" after checking its shape. */
static void normalize_ids(cJSON *resp)
{
    cJSON *tcs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0),
                                         "message"),
        "tool_calls");
    cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        ok(cJSON_IsString(id) && strncmp(id->valuestring, "call_", 5) == 0 &&
           strlen(id->valuestring) >= CANON_TOOL_ID_LEN);
        cJSON_ReplaceItemInObjectCaseSensitive(tc, "id", cJSON_CreateString("ID"));
    }
}

static void test_encode_basic(void)
{
    struct fx f;
    fx_init(&f, &provider_gemini,
            "{\"model\":\"public-model\",\"messages\":["
            "{\"role\":\"system\",\"content\":\"You are terse.\"},"
            "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Answer in English.\"}]},"
            "{\"role\":\"user\",\"content\":\"hello\"},"
            "{\"role\":\"assistant\",\"content\":\"hi\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0K\"}},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.webp?x=1\"}}]},"
            "{\"role\":\"user\",\"content\":\"and more\"}],"
            "\"max_completion_tokens\":100,\"temperature\":0.2,\"top_p\":0.9,\"top_k\":40,\"stop\":\"END\","
            "\"seed\":7,\"presence_penalty\":0.5,\"n\":1,\"response_format\":{\"type\":\"json_object\"},"
            "\"user\":\"u1\",\"stream\":false}",
            false, OP_CHAT);
    f.dep.model = "gemini-2.5-flash";
    struct up_request r;
    struct gw_error err;
    cJSON *body = fx_encode(&f, &r, &err);
    is_json(body, "{\"contents\":["
                  "{\"role\":\"user\",\"parts\":[{\"text\":\"hello\"}]},"
                  "{\"role\":\"model\",\"parts\":[{\"text\":\"hi\"}]},"
                  "{\"role\":\"user\",\"parts\":[{\"text\":\"look\"},"
                  "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"iVBORw0K\"}},"
                  "{\"fileData\":{\"mimeType\":\"image/webp\",\"fileUri\":\"https://example.com/cat.webp?x=1\"}},"
                  "{\"text\":\"and more\"}]}],"
                  "\"systemInstruction\":{\"parts\":[{\"text\":\"You are terse.\"},{\"text\":\"Answer in English.\"}]},"
                  "\"generationConfig\":{\"maxOutputTokens\":100,\"temperature\":0.2,\"topP\":0.9,\"topK\":40,"
                  "\"candidateCount\":1,\"seed\":7,\"presencePenalty\":0.5,\"stopSequences\":[\"END\"],"
                  "\"responseMimeType\":\"application/json\"}}");
    is_str(r.url.data, "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent");
    is_str(fx_header(&r, "x-goog-api-key"), "test-key");
    is_str(fx_header(&r, "Content-Type"), "application/json");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
}

static void test_encode_urls(void)
{
    static const char canon[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    struct fx f;
    struct up_request r;
    struct gw_error err;
    cJSON *body;
    /* streaming: SSE */
    fx_init(&f, &provider_gemini, canon, true, OP_CHAT);
    f.dep.model = "gemini-2.5-pro";
    body = fx_encode(&f, &r, &err);
    is_str(r.url.data, "http://127.0.0.1:9/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
    is_str(fx_header(&r, "Accept"), "text/event-stream");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
    /* api_version and another resource kind; odd characters are encoded */
    fx_init(&f, &provider_gemini, canon, false, OP_CHAT);
    f.dep.model = "tunedModels/my model";
    f.dep.api_version = "v1";
    body = fx_encode(&f, &r, &err);
    is_str(r.url.data, "http://127.0.0.1:9/v1/tunedModels/my%20model:generateContent");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
}

static void test_encode_tools(void)
{
    struct fx f;
    fx_init(&f, &provider_gemini,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"weather in Paris and Rome?\"},"
            "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
            "{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
            "\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
            "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":\"sunny\"},"
            "{\"role\":\"tool\",\"tool_call_id\":\"call_b\",\"content\":[{\"type\":\"text\",\"text\":\"noon\"}]},"
            "{\"role\":\"user\",\"content\":\"thanks\"}],"
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
            "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
            "\"required\":[\"city\"],\"additionalProperties\":false},\"strict\":true}},"
            "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{\"type\":\"object\","
            "\"properties\":{}}}}],"
            "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}",
            false, OP_CHAT);
    struct up_request r;
    struct gw_error err;
    cJSON *body = fx_encode(&f, &r, &err);
    /* parallel calls in one model turn, their results (named) and the next user text in one user turn */
    is_json(body, "{\"contents\":["
                  "{\"role\":\"user\",\"parts\":[{\"text\":\"weather in Paris and Rome?\"}]},"
                  "{\"role\":\"model\",\"parts\":["
                  "{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"}}},"
                  "{\"functionCall\":{\"name\":\"get_time\",\"args\":{}}}]},"
                  "{\"role\":\"user\",\"parts\":["
                  "{\"functionResponse\":{\"name\":\"get_weather\",\"response\":{\"output\":\"sunny\"}}},"
                  "{\"functionResponse\":{\"name\":\"get_time\",\"response\":{\"output\":\"noon\"}}},"
                  "{\"text\":\"thanks\"}]}],"
                  "\"tools\":[{\"functionDeclarations\":["
                  "{\"name\":\"get_weather\",\"description\":\"Weather\",\"parameters\":{\"type\":\"object\","
                  "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}},"
                  "{\"name\":\"get_time\"}]}],"
                  "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\",\"allowedFunctionNames\":"
                  "[\"get_weather\"]}}}");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);

    /* tool_choice strings */
    static const char *const choices[][2] = {{"\"none\"", "NONE"}, {"\"auto\"", "AUTO"}, {"\"required\"", "ANY"}};
    for (int i = 0; i < 3; i++) {
        char canon[512];
        snprintf(canon, sizeof(canon),
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                 "\"function\":{\"name\":\"f\"}}],\"tool_choice\":%s}",
                 choices[i][0]);
        fx_init(&f, &provider_gemini, canon, false, OP_CHAT);
        body = fx_encode(&f, &r, &err);
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(body, "toolConfig"),
                                             "functionCallingConfig"),
            "mode");
        is_str(cJSON_IsString(mode) ? mode->valuestring : NULL, choices[i][1]);
        cJSON_Delete(body);
        up_request_free(&r);
        fx_free(&f);
    }
}

static void expect_400(const char *canon, const char *msg_part)
{
    struct fx f;
    fx_init(&f, &provider_gemini, canon, false, OP_CHAT);
    struct up_request r;
    struct gw_error err;
    cJSON *body = fx_encode(&f, &r, &err);
    ok(body == NULL);
    is_int(err.status, 400);
    if (!ok(strstr(err.message, msg_part) != NULL))
        printf("#   message \"%s\" lacks \"%s\"\n", err.message, msg_part);
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
}

/* The schema bomb (issue 15): properties that each $ref the root multiplied the schema at every level down to
 * the depth bound: 235 bytes cost 3 s and 545 MB, four properties more than 90 s and 2.9 GB. Recursion is
 * refused, and so is a schema that inlining would grow past its budget (a chain of definitions each used twice). */
static void test_schema_bomb(void)
{
    static const char *const bombs[] = {
        /* the reported shape: three properties, each the root again */
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
        "\"function\":{\"name\":\"bomb\",\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#\"},"
        "\"b\":{\"$ref\":\"#\"},\"c\":{\"$ref\":\"#\"}}}}}]}",
        /* four, through a definition */
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
        "\"function\":{\"name\":\"bomb\",\"parameters\":{\"$defs\":{\"N\":{\"type\":\"object\",\"properties\":{"
        "\"a\":{\"$ref\":\"#/$defs/N\"},\"b\":{\"$ref\":\"#/$defs/N\"},\"c\":{\"$ref\":\"#/$defs/N\"},"
        "\"d\":{\"$ref\":\"#/$defs/N\"}}}},\"$ref\":\"#/$defs/N\"}}}]}",
    };
    for (size_t i = 0; i < sizeof(bombs) / sizeof(bombs[0]); i++) {
        struct fx f;
        fx_init(&f, &provider_gemini, bombs[i], false, OP_CHAT);
        struct up_request r;
        struct gw_error err;
        cJSON *body = fx_encode(&f, &r, &err);
        ok(body == NULL);
        is_int(err.status, 400);
        is_int(err.type, GW_ERR_INVALID_REQUEST);
        is_str(err.param, "tools[0].function.parameters");
        ok(strstr(err.message, "'bomb'") != NULL && strstr(err.message, "recursive") != NULL);
        cJSON_Delete(body);
        up_request_free(&r);
        fx_free(&f);
    }
    /* no recursion, but each definition uses the next twice: 2^20 nodes from a few hundred bytes */
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{"
                       "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"$defs\":{");
    for (int d = 0; d < 20; d++)
        buf_printf(&b, "%s\"D%d\":{\"type\":\"object\",\"properties\":{\"l\":{\"$ref\":\"#/$defs/D%d\"},\"r\":{\"$ref\":"
                       "\"#/$defs/D%d\"}}}",
                   d ? "," : "", d, d + 1, d + 1);
    buf_append_str(&b, ",\"D20\":{\"type\":\"string\"}},\"$ref\":\"#/$defs/D0\"}}}}");
    struct fx f;
    fx_init(&f, &provider_gemini, b.data, false, OP_CHAT);
    struct up_request r;
    struct gw_error err;
    cJSON *body = fx_encode(&f, &r, &err);
    ok(body == NULL);
    is_int(err.status, 400);
    is_str(err.param, "response_format");
    ok(strstr(err.message, "grows past") != NULL);
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
    buf_free(&b);
    /* a schema that fits (a few levels of it) still goes through */
    b = (struct buf)BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{"
                       "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"$defs\":{");
    for (int d = 0; d < 6; d++)
        buf_printf(&b, "%s\"D%d\":{\"type\":\"object\",\"properties\":{\"l\":{\"$ref\":\"#/$defs/D%d\"},\"r\":{\"$ref\":"
                       "\"#/$defs/D%d\"}}}",
                   d ? "," : "", d, d + 1, d + 1);
    buf_append_str(&b, ",\"D6\":{\"type\":\"string\"}},\"$ref\":\"#/$defs/D0\"}}}}");
    fx_init(&f, &provider_gemini, b.data, false, OP_CHAT);
    body = fx_encode(&f, &r, &err);
    ok(body != NULL);
    ok(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(body, "generationConfig"), "responseSchema"));
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
    buf_free(&b);
}

static void test_encode_refusals(void)
{
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"tool_call_id\":\"nope\","
               "\"content\":\"r\"}]}",
               "does not match a tool call");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
               "\"data:image/png,notbase64\"}}]}]}",
               "base64 data URL");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"refusal\",\"refusal\":\"x\"}]}]}",
               "not supported by provider gemini");
    expect_400("{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\","
               "\"arguments\":\"[1,2]\"}}]}]}",
               "JSON-object arguments");
    expect_400("{\"messages\":[{\"role\":\"system\",\"content\":\"only a system prompt\"}]}", "no user or assistant");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"web_search\"}]}",
               "only function tools");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\"}}",
               "json_schema.schema");
}

static void test_schema_subset(void)
{
    cJSON *s = cJSON_Parse(
        "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\",\"additionalProperties\":false,"
        "\"$defs\":{\"Unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"],\"description\":\"unit\"}},"
        "\"properties\":{"
        "\"when\":{\"type\":\"string\",\"format\":\"date-time\"},"
        "\"site\":{\"type\":\"string\",\"format\":\"uri\",\"minLength\":3},"
        "\"note\":{\"type\":[\"string\",\"null\"]},"
        "\"unit\":{\"$ref\":\"#/$defs/Unit\"},"
        "\"level\":{\"enum\":[1,2,\"x\",null]},"
        "\"kind\":{\"const\":\"fixed\"},"
        "\"either\":{\"oneOf\":[{\"type\":\"integer\",\"exclusiveMinimum\":0},{\"type\":\"null\"}]},"
        "\"both\":{\"allOf\":[{\"type\":\"number\",\"maximum\":5,\"multipleOf\":0.5}]},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"examples\":[\"a\"]},\"uniqueItems\":true,"
        "\"maxItems\":4},"
        "\"free\":{\"type\":\"object\",\"properties\":{},\"patternProperties\":{\"^x\":{}}},"
        "\"additionalProperties\":{\"type\":\"boolean\",\"title\":\"a property with a keyword's name\"}},"
        "\"required\":[\"when\",\"ghost\"]}");
    struct schema_cx cx;
    schema_cx_init(&cx, s);
    cJSON *c = clean_schema(s, &cx, 0);
    is_int(cx.failed, SCHEMA_OK);
    is_json(c, "{\"type\":\"object\",\"properties\":{"
               "\"when\":{\"type\":\"string\",\"format\":\"date-time\"},"
               "\"site\":{\"type\":\"string\",\"minLength\":3},"
               "\"note\":{\"type\":\"string\",\"nullable\":true},"
               "\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"],\"description\":\"unit\"},"
               "\"level\":{\"enum\":[\"1\",\"2\",\"x\"]},"
               "\"kind\":{\"enum\":[\"fixed\"]},"
               "\"either\":{\"nullable\":true,\"type\":\"integer\"},"
               "\"both\":{\"type\":\"number\",\"maximum\":5},"
               "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":4},"
               "\"free\":{\"type\":\"object\"},"
               "\"additionalProperties\":{\"type\":\"boolean\",\"title\":\"a property with a keyword's name\"}},"
               "\"required\":[\"when\"]}");
    cJSON_Delete(c);
    cJSON_Delete(s);
    /* a self-referencing schema cannot be inlined: refused, naming the reference */
    s = cJSON_Parse("{\"$defs\":{\"N\":{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#/$defs/N\"}}}},"
                    "\"$ref\":\"#/$defs/N\"}");
    schema_cx_init(&cx, s);
    c = clean_schema(s, &cx, 0);
    is_int(cx.failed, SCHEMA_RECURSIVE);
    is_str(cx.ref, "#/$defs/N");
    cJSON_Delete(c);
    cJSON_Delete(s);
    /* a definition used twice is inlined twice: that is not recursion */
    s = cJSON_Parse("{\"$defs\":{\"U\":{\"type\":\"string\"}},\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":"
                    "\"#/$defs/U\"},\"b\":{\"$ref\":\"#/$defs/U\"}}}");
    schema_cx_init(&cx, s);
    c = clean_schema(s, &cx, 0);
    is_int(cx.failed, SCHEMA_OK);
    is_json(c, "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{\"type\":\"string\"}}}");
    cJSON_Delete(c);
    cJSON_Delete(s);
    /* several non-null types: anyOf */
    s = cJSON_Parse("{\"type\":[\"string\",\"integer\"]}");
    schema_cx_init(&cx, s);
    c = clean_schema(s, &cx, 0);
    is_json(c, "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}");
    cJSON_Delete(c);
    cJSON_Delete(s);
}

static void test_thought_signature(void)
{
    struct fx f;
    fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
    struct gw_error err;
    cJSON *resp = fx_decode(&f,
                            "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":"
                            "\"f\",\"args\":{\"a\":1}},\"thoughtSignature\":\"ab+/cd==\"}]},\"finishReason\":\"STOP\"}]}",
                            &err);
    const cJSON *tc = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0),
                                             "message"),
            "tool_calls"),
        0);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tc, "id"));
    ok(id && strlen(id) == CANON_TOOL_ID_LEN + 4 + 6 && strcmp(id + CANON_TOOL_ID_LEN, "_ts_ab-_cd") == 0);
    char canon[1024];
    snprintf(canon, sizeof(canon),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":"
             "\"%s\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"%s\",\"content\":\"done\"}]}",
             id ? id : "", id ? id : "");
    cJSON_Delete(resp);
    fx_free(&f);
    fx_init(&f, &provider_gemini, canon, false, OP_CHAT);
    struct up_request r;
    cJSON *body = fx_encode(&f, &r, &err);
    is_json(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "contents"), 1),
                                             "parts"),
            "[{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}},\"thoughtSignature\":\"ab+/cd==\"}]");
    is_json(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "contents"), 2),
                                             "parts"),
            "[{\"functionResponse\":{\"name\":\"f\",\"response\":{\"output\":\"done\"}}}]");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
}

static void test_decode_text(void)
{
    struct fx f;
    fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
    struct gw_error err;
    cJSON *resp = fx_stable(fx_decode(
        &f,
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"thinking...\",\"thought\":true},{\"text\":\"Hello \"},"
        "{\"text\":\"there\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],"
        "\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":5,\"totalTokenCount\":23,"
        "\"cachedContentTokenCount\":4,\"thoughtsTokenCount\":8},\"modelVersion\":\"gemini-2.5-flash-001\","
        "\"responseId\":\"r1\"}",
        &err));
    is_json(resp, "{\"id\":\"chatcmpl-req-test-1\",\"object\":\"chat.completion\",\"model\":\"public-model\","
                  "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello there\","
                  "\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                  "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":13,\"total_tokens\":23,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":4},"
                  "\"completion_tokens_details\":{\"reasoning_tokens\":8}},\"system_fingerprint\":null}");
    ok(f.a.usage.known);
    is_int(f.a.usage.input, 10);
    is_int(f.a.usage.output, 13);
    is_int(f.a.usage.reasoning, 8);
    is_int(f.a.usage.cached_input, 4);
    is_str(f.a.response_model, "gemini-2.5-flash-001");
    cJSON_Delete(resp);
    fx_free(&f);
}

static void test_decode_tools_and_finish(void)
{
    struct fx f;
    struct gw_error err;
    fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
    cJSON *resp = fx_stable(fx_decode(
        &f,
        "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":"
        "\"Paris\"}}},{\"functionCall\":{\"name\":\"get_time\",\"args\":{}}}],\"role\":\"model\"},"
        "\"finishReason\":\"STOP\"}]}",
        &err));
    normalize_ids(resp);
    is_json(resp, "{\"id\":\"chatcmpl-req-test-1\",\"object\":\"chat.completion\",\"model\":\"public-model\","
                  "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                  "{\"id\":\"ID\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
                  "\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
                  "{\"id\":\"ID\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}],"
                  "\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],"
                  "\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":0},"
                  "\"completion_tokens_details\":{\"reasoning_tokens\":0}},\"system_fingerprint\":null}");
    ok(!f.a.usage.known);
    cJSON_Delete(resp);
    fx_free(&f);

    static const char *const finishes[][2] = {{"MAX_TOKENS", "length"},      {"SAFETY", "content_filter"},
                                              {"RECITATION", "content_filter"}, {"OTHER", "stop"},
                                              {"MALFORMED_FUNCTION_CALL", "stop"}};
    for (int i = 0; i < 5; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"finishReason\":\"%s\"}]}",
                 finishes[i][0]);
        fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
        resp = fx_decode(&f, body, &err);
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0), "finish_reason");
        is_str(cJSON_GetStringValue(fr), finishes[i][1]);
        cJSON_Delete(resp);
        fx_free(&f);
    }
    /* a blocked prompt: no candidates, a block reason */
    fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
    resp = fx_decode(&f, "{\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":3}}",
                     &err);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    is_str(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")), "content_filter");
    is_int(f.a.usage.input, 3);
    cJSON_Delete(resp);
    fx_free(&f);
}

static void test_decode_malformed(void)
{
    static const char *const bodies[] = {"{\"candidates\":[{\"content\":", "[1,2]", "{\"nothing\":true}", ""};
    for (int i = 0; i < 4; i++) {
        struct fx f;
        struct gw_error err;
        fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
        cJSON *resp = fx_decode(&f, bodies[i], &err);
        ok(resp == NULL);
        is_int(err.status, 502);
        ok(err.retryable);
        fx_free(&f);
    }
}

static void test_stream(void)
{
    struct fx f;
    struct gw_error err;
    fx_init(&f, &provider_gemini, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},"
                            "\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":7},\"modelVersion\":\"g-1\"}",
                    false, &err),
           EV_CONSUMED);
    ok(!f.a.stream_done);
    is_int(fx_event(&f, "", "  ", false, &err), EV_CONSUMED);
    is_int(fx_event(&f, "", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},"
                            "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":7,"
                            "\"candidatesTokenCount\":2,\"thoughtsTokenCount\":3}}",
                    false, &err),
           EV_CONSUMED);
    ok(f.a.stream_done);
    is_str(f.log.data, "text:Hel\nusage:7/0/0/0/0\ntext:lo\nusage:7/5/0/0/3\nfinish:stop\n");
    is_int(f.a.usage.output, 5);
    is_str(f.a.response_model, "g-1");
    fx_free(&f);

    /* a function call arrives whole, with the finish reason */
    fx_init(&f, &provider_gemini, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "", "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":"
                            "{\"q\":\"x\"}}},{\"functionCall\":{\"name\":\"g\",\"args\":{}}}],\"role\":\"model\"},"
                            "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":4,"
                            "\"candidatesTokenCount\":6}}",
                    false, &err),
           EV_CONSUMED);
    ok(f.a.stream_done);
    /* ids are random: check the shape, then the rest */
    struct buf want = BUF_INIT(BUF_UNBOUNDED);
    const char *p = f.log.data;
    ok(strncmp(p, "tool:0:call_", 12) == 0);
    const char *nl = strchr(p, '\n');
    ok(nl && strncmp(nl - 2, ":f", 2) == 0);
    p = nl ? nl + 1 : "";
    ok(strncmp(p, "args:0:{\"q\":\"x\"}\ntool:1:call_", 29) == 0);
    nl = strchr(p + 17, '\n');
    p = nl ? nl + 1 : "";
    is_str(p, "args:1:{}\nusage:4/6/0/0/0\nfinish:tool_calls\n");
    buf_free(&want);
    fx_free(&f);

    /* no finish reason: the stream is not done (the exchange reports it as cut short) */
    fx_init(&f, &provider_gemini, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"partial\"}]}}]}", false, &err),
           EV_CONSUMED);
    ok(!f.a.stream_done);
    fx_free(&f);

    /* a blocked prompt ends the stream */
    fx_init(&f, &provider_gemini, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "", "{\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"}}", false, &err),
           EV_CONSUMED);
    ok(f.a.stream_done);
    is_str(f.log.data, "finish:content_filter\n");
    fx_free(&f);
}

static void test_stream_errors(void)
{
    struct fx f;
    struct gw_error err;
    fx_init(&f, &provider_gemini, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "", "{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":"
                            "\"UNAVAILABLE\"}}",
                    false, &err),
           -1);
    is_int(err.status, 503);
    ok(err.retryable);
    is_str(err.message, "The model is overloaded.");
    is_int(fx_event(&f, "", "{\"candidates\":[", false, &err), -1);
    is_int(err.status, 502);
    fx_free(&f);
}

static void map_err(int status, const char *body, struct gw_error *err)
{
    struct fx f;
    fx_init(&f, &provider_gemini, NULL, false, OP_CHAT);
    memset(err, 0, sizeof(*err));
    provider_gemini.map_error(&f.a, status, body, strlen(body), err);
    fx_free(&f);
}

static void test_errors(void)
{
    struct gw_error err;
    map_err(429,
            "{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"You exceeded your current quota\",\n"
            "    \"status\": \"RESOURCE_EXHAUSTED\",\n    \"details\": [{\"@type\": "
            "\"type.googleapis.com/google.rpc.QuotaFailure\", \"violations\": []}, {\"@type\": "
            "\"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"37s\"}]\n  }\n}\n",
            &err);
    is_int(err.status, 429);
    is_int(err.type, GW_ERR_RATE_LIMIT);
    ok(err.retryable);
    is_int(err.retry_after_ms, 37000);
    is_str(err.code, "RESOURCE_EXHAUSTED");
    is_str(err.message, "You exceeded your current quota");
    ok(err.from_upstream);

    map_err(429, "{\"error\":{\"code\":429,\"message\":\"q\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
                 "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"1.5s\"}]}}",
            &err);
    is_int(err.retry_after_ms, 1500);

    map_err(400, "{\"error\":{\"code\":400,\"message\":\"API key not valid.\",\"status\":\"INVALID_ARGUMENT\","
                 "\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"API_KEY_INVALID\"}]}}",
            &err);
    /* Google's answer to a wrong key is agentd's failure: 502, never an error blaming the client's key */
    is_int(err.status, 502);
    is_int(err.type, GW_ERR_API);
    ok(err.retryable);

    static const struct {
        int http;
        const char *status;
        int want;
        bool retry;
        enum gw_err_type type;
    } cases[] = {
        {400, "INVALID_ARGUMENT", 400, false, GW_ERR_INVALID_REQUEST},
        {403, "PERMISSION_DENIED", 502, true, GW_ERR_API},
        {401, "UNAUTHENTICATED", 502, true, GW_ERR_API},
        {404, "NOT_FOUND", 404, false, GW_ERR_NOT_FOUND},
        {503, "UNAVAILABLE", 503, true, GW_ERR_OVERLOADED},
        {500, "INTERNAL", 500, true, GW_ERR_API},
        {504, "DEADLINE_EXCEEDED", 504, true, GW_ERR_TIMEOUT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"m\",\"status\":\"%s\"}}", cases[i].http,
                 cases[i].status);
        map_err(cases[i].http, body, &err);
        is_int(err.status, cases[i].want);
        is_int(err.retryable, cases[i].retry);
        is_int(err.type, cases[i].type);
        is_int(err.retry_after_ms, -1);
    }
    /* Google's HTML 502 page */
    map_err(502, "<!DOCTYPE html><title>Error 502 (Server Error)!!1</title>", &err);
    is_int(err.status, 502);
    ok(err.retryable);
    ok(strstr(err.message, "HTTP 502") != NULL);
}

static void test_embeddings(void)
{
    struct fx f;
    struct up_request r;
    struct gw_error err;
    fx_init(&f, &provider_gemini, "{\"model\":\"e\",\"input\":\"hello\",\"dimensions\":4}", false, OP_EMBEDDINGS);
    f.dep.model = "gemini-embedding-001";
    cJSON *body = fx_encode(&f, &r, &err);
    is_str(r.url.data, "http://127.0.0.1:9/v1beta/models/gemini-embedding-001:embedContent");
    is_json(body, "{\"content\":{\"parts\":[{\"text\":\"hello\"}]},\"outputDimensionality\":4}");
    cJSON_Delete(body);
    up_request_free(&r);
    cJSON *resp = fx_decode(&f, "{\"embedding\":{\"values\":[0.5,-0.25,1,0]}}", &err);
    is_json(resp, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.5,-0.25,1,0]}],"
                  "\"model\":\"public-model\",\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}");
    ok(!f.a.usage.known);
    cJSON_Delete(resp);
    fx_free(&f);

    fx_init(&f, &provider_gemini, "{\"model\":\"e\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}", false,
            OP_EMBEDDINGS);
    f.dep.model = "text-embedding-004";
    body = fx_encode(&f, &r, &err);
    is_str(r.url.data, "http://127.0.0.1:9/v1beta/models/text-embedding-004:batchEmbedContents");
    is_json(body, "{\"requests\":[{\"model\":\"models/text-embedding-004\",\"content\":{\"parts\":[{\"text\":\"a\"}]}},"
                  "{\"model\":\"models/text-embedding-004\",\"content\":{\"parts\":[{\"text\":\"b\"}]}}]}");
    cJSON_Delete(body);
    up_request_free(&r);
    resp = fx_decode(&f, "{\"embeddings\":[{\"values\":[1.0]},{\"values\":[-2.0,0.5]}]}", &err);
    /* float32 little-endian: 1.0 = 00 00 80 3f; -2.0 = 00 00 00 c0, 0.5 = 00 00 00 3f */
    is_json(resp, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":\"AACAPw==\"},"
                  "{\"object\":\"embedding\",\"index\":1,\"embedding\":\"AAAAwAAAAD8=\"}],"
                  "\"model\":\"public-model\",\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}");
    cJSON_Delete(resp);
    /* an empty vector encodes as "" (found by fuzz_gemini: the base64 buffer was not terminated) */
    resp = fx_decode(&f, "{\"embeddings\":[{\"values\":[]}]}", &err);
    is_str(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
               cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "data"), 0), "embedding")),
           "");
    cJSON_Delete(resp);
    /* absurd token counts make the usage "not reported" (found by fuzz_gemini: UB converting 1e71 to int64;
     * issue 15: never bill an implausible count) */
    {
        struct fx g;
        fx_init(&g, &provider_gemini, NULL, false, OP_CHAT);
        cJSON *r2 = fx_decode(&g, "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":2.4e71,"
                                  "\"candidatesTokenCount\":-5}}", &err);
        is_int(g.a.usage.input, 0);
        is_int(g.a.usage.output, 0);
        ok(!g.a.usage.known);
        ok(g.a.usage.invalid);
        cJSON_Delete(r2);
        fx_free(&g);
    }
    /* a response without vectors */
    ok(fx_decode(&f, "{\"embeddings\":[{\"nope\":1}]}", &err) == NULL);
    is_int(err.status, 502);
    fx_free(&f);

    fx_init(&f, &provider_gemini, "{\"model\":\"e\",\"input\":[[1,2,3]]}", false, OP_EMBEDDINGS);
    body = fx_encode(&f, &r, &err);
    ok(body == NULL);
    is_int(err.status, 400);
    ok(strstr(err.message, "token-array") != NULL);
    up_request_free(&r);
    fx_free(&f);
}

int main(void)
{
    subtest("encode: messages, parts, generation config", test_encode_basic);
    subtest("encode: URLs and headers", test_encode_urls);
    subtest("encode: tools, tool results, tool_choice", test_encode_tools);
    subtest("encode: refusals", test_encode_refusals);
    subtest("encode: JSON schema -> Gemini schema", test_schema_subset);
    subtest("encode: the schema bomb is refused", test_schema_bomb);
    subtest("thought signatures ride in tool-call ids", test_thought_signature);
    subtest("decode: text and usage", test_decode_text);
    subtest("decode: tool calls and finish reasons", test_decode_tools_and_finish);
    subtest("decode: malformed bodies", test_decode_malformed);
    subtest("stream: chunks to deltas", test_stream);
    subtest("stream: error event and malformed chunk", test_stream_errors);
    subtest("errors", test_errors);
    subtest("embeddings", test_embeddings);
    return done_testing();
}
