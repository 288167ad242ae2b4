/* Bedrock (Converse) provider: canonical request -> Converse request (golden trees: turns merged and alternating,
 * tool use/results, images and documents, inference and tool config), URL encoding and SigV4 headers, responses,
 * stream events (deltas, terminal events, exceptions) and errors from x-amzn-ErrorType. */
#include "gateway/providers/bedrock.c"

#include "gateway/front_anthropic.h"
#include "xlate_fixture.h"

static void stream_fixture(struct fx *f)
{
    struct bedrock_stream *st = xcalloc(1, sizeof(*st));
    st->emit = fx_emit;
    st->emit_ud = &f->log;
    f->a.pstate = st;
}

static void creds(struct fx *f)
{
    f->dep.aws_access_key_id = "AKIAFAKEEXAMPLE00000";
    f->dep.aws_secret_access_key = "fakeSecretAccessKey/EXAMPLE+0123456789ab";
    f->dep.model = "anthropic.claude-3-5-haiku-20241022-v1:0";
}

static void test_encode_conversation(void)
{
    struct fx f;
    fx_init(&f, &provider_bedrock,
            "{\"messages\":["
            "{\"role\":\"system\",\"content\":\"You are terse.\"},"
            "{\"role\":\"assistant\",\"content\":\"Hi! How can I help?\"},"
            "{\"role\":\"user\",\"content\":\"weather in Paris and Rome?\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"see\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/4AAQ\"}},"
            "{\"type\":\"file\",\"file\":{\"filename\":\"Q3 report.v2.pdf\",\"file_data\":"
            "\"data:application/pdf;base64,JVBERi0x\"}}]},"
            "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
            "{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
            "\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
            "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
            "\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":\"sunny\"},"
            "{\"role\":\"tool\",\"tool_call_id\":\"call_b\",\"content\":\"\"},"
            "{\"role\":\"developer\",\"content\":\"Be nice.\"}],"
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
            "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
            "\"additionalProperties\":false}}}],\"tool_choice\":\"required\","
            "\"max_tokens\":200,\"temperature\":1.5,\"top_p\":0.8,\"stop\":[\"END\",\"STOP\"]}",
            false, OP_CHAT);
    creds(&f);
    struct up_request r;
    struct gw_error err;
    cJSON *body = fx_encode(&f, &r, &err);
    is_json(body, "{\"messages\":["
                  "{\"role\":\"user\",\"content\":[{\"text\":\".\"}]},"
                  "{\"role\":\"assistant\",\"content\":[{\"text\":\"Hi! How can I help?\"}]},"
                  "{\"role\":\"user\",\"content\":[{\"text\":\"weather in Paris and Rome?\"},{\"text\":\"see\"},"
                  "{\"image\":{\"format\":\"jpeg\",\"source\":{\"bytes\":\"/9j/4AAQ\"}}},"
                  "{\"document\":{\"format\":\"pdf\",\"name\":\"Q3 report\",\"source\":{\"bytes\":\"JVBERi0x\"}}}]},"
                  "{\"role\":\"assistant\",\"content\":["
                  "{\"toolUse\":{\"toolUseId\":\"call_a\",\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}},"
                  "{\"toolUse\":{\"toolUseId\":\"call_b\",\"name\":\"get_weather\",\"input\":{\"city\":\"Rome\"}}}]},"
                  "{\"role\":\"user\",\"content\":["
                  "{\"toolResult\":{\"toolUseId\":\"call_a\",\"content\":[{\"text\":\"sunny\"}]}},"
                  "{\"toolResult\":{\"toolUseId\":\"call_b\",\"content\":[{\"text\":\"(empty)\"}]}}]}],"
                  "\"system\":[{\"text\":\"You are terse.\"},{\"text\":\"Be nice.\"}],"
                  "\"inferenceConfig\":{\"maxTokens\":200,\"temperature\":1,\"topP\":0.8,"
                  "\"stopSequences\":[\"END\",\"STOP\"]},"
                  "\"toolConfig\":{\"tools\":[{\"toolSpec\":{\"name\":\"get_weather\",\"description\":\"Weather\","
                  "\"inputSchema\":{\"json\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
                  "\"additionalProperties\":false}}}}],\"toolChoice\":{\"any\":{}}}}");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);
}

/* An Anthropic client's cache_control, carried through the canonical form: a cachePoint right after each marked
 * system block, content block, tool use, tool result and tool (the same cached prefixes), the ttl when Converse has
 * it; "cache_control" is then not listed as dropped. Without markers nothing changes (test_encode_conversation). */
static void test_encode_cache_points(void)
{
    const char *anth =
        "{\"model\":\"m\",\"max_tokens\":64,"
        "\"system\":[{\"type\":\"text\",\"text\":\"rules\",\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"1h\"}},"
        "{\"type\":\"text\",\"text\":\"today\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"long doc\","
        "\"cache_control\":{\"type\":\"ephemeral\"}},{\"type\":\"text\",\"text\":\"q1\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"checking\",\"cache_control\":{\"type\":"
        "\"ephemeral\"}},{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{},"
        "\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"7d\"}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"r\",\"cache_control\":{\"type\":\"ephemeral\"}}]},{\"type\":\"text\","
        "\"text\":\"q2\"}]}],"
        "\"tools\":[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"},\"cache_control\":{\"type\":\"ephemeral\"}},"
        "{\"name\":\"g\",\"input_schema\":{\"type\":\"object\"}}]}";
    cJSON *req = cJSON_Parse(anth);
    char dropped[256] = "";
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    cJSON *canon = front_anthropic_request_to_canonical(req, dropped, sizeof(dropped), &err);
    cJSON_Delete(req);
    is_str(dropped, "");
    char *ctext = canon ? cJSON_PrintUnformatted(canon) : NULL;
    cJSON_Delete(canon);
    struct fx f;
    fx_init(&f, &provider_bedrock, ctext ? ctext : "{}", false, OP_CHAT);
    cJSON_free(ctext);
    creds(&f);
    struct up_request r;
    cJSON *b = fx_encode(&f, &r, &err);
    const char *cp = "{\"cachePoint\":{\"type\":\"default\"}}";
    char want[2048];
    snprintf(want, sizeof(want),
             "{\"messages\":["
             "{\"role\":\"user\",\"content\":[{\"text\":\"long doc\"},%s,{\"text\":\"q1\"}]},"
             "{\"role\":\"assistant\",\"content\":[{\"text\":\"checking\"},%s,"
             "{\"toolUse\":{\"toolUseId\":\"t1\",\"name\":\"f\",\"input\":{}}},%s]},"
             "{\"role\":\"user\",\"content\":[{\"toolResult\":{\"toolUseId\":\"t1\",\"content\":[{\"text\":\"r\"}]}},"
             "%s,{\"text\":\"q2\"}]}],"
             "\"system\":[{\"text\":\"rules\"},{\"cachePoint\":{\"type\":\"default\",\"ttl\":\"1h\"}},"
             "{\"text\":\"today\"}],"
             "\"inferenceConfig\":{\"maxTokens\":64},"
             "\"toolConfig\":{\"tools\":[{\"toolSpec\":{\"name\":\"f\",\"inputSchema\":{\"json\":{\"type\":\"object\"}}}},"
             "%s,{\"toolSpec\":{\"name\":\"g\",\"inputSchema\":{\"json\":{\"type\":\"object\"}}}}]}}",
             cp, cp, cp, cp, cp);
    is_json(b, want);
    is_str(f.ex.rq.dropped_fields, "");
    cJSON_Delete(b);
    up_request_free(&r);
    fx_free(&f);
}

static void test_encode_url_and_signature(void)
{
    struct fx f;
    fx_init(&f, &provider_bedrock, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", true, OP_CHAT);
    creds(&f);
    f.dep.base_url = "https://bedrock-runtime.eu-west-3.amazonaws.com";
    f.dep.region = "eu-west-3";
    f.dep.aws_session_token = "FwoGZXIvYXdzEXAMPLEtoken";
    struct up_request r;
    struct gw_error err;
    cJSON *body = fx_encode(&f, &r, &err);
    ok(body != NULL);
    is_str(r.url.data, "https://bedrock-runtime.eu-west-3.amazonaws.com/model/"
                       "anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream");
    is_str(fx_header(&r, "Host"), "bedrock-runtime.eu-west-3.amazonaws.com");
    is_str(fx_header(&r, "Accept"), "application/vnd.amazon.eventstream");
    is_str(fx_header(&r, "X-Amz-Security-Token"), "FwoGZXIvYXdzEXAMPLEtoken");
    char hash[65];
    sigv4_sha256_hex(r.body.data, r.body.len, hash);
    is_str(fx_header(&r, "X-Amz-Content-Sha256"), hash);
    char auth_copy[1024];
    snprintf(auth_copy, sizeof(auth_copy), "%s", fx_header(&r, "Authorization") ? fx_header(&r, "Authorization") : "");
    const char *auth = auth_copy;
    ok(auth && strncmp(auth, "AWS4-HMAC-SHA256 Credential=AKIAFAKEEXAMPLE00000/", 49) == 0);
    ok(auth && strstr(auth, "/eu-west-3/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;"
                            "x-amz-date;x-amz-security-token, Signature=") != NULL);
    /* recompute the signature from the request as sent: it must match (double-encoded path) */
    const char *date = fx_header(&r, "X-Amz-Date");
    struct tm tm = {0};
    ok(date && strptime(date, "%Y%m%dT%H%M%SZ", &tm) != NULL);
    ok(strlen(auth) > 100);
    static const char *const hn[] = {"content-type"};
    static const char *const hv[] = {"application/json"};
    struct sigv4_params sp = {.access_key_id = f.dep.aws_access_key_id,
                              .secret_access_key = f.dep.aws_secret_access_key,
                              .session_token = f.dep.aws_session_token,
                              .region = "eu-west-3",
                              .service = "bedrock",
                              .method = "POST",
                              .host = "bedrock-runtime.eu-west-3.amazonaws.com",
                              .path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream",
                              .header_names = hn,
                              .header_values = hv,
                              .nheaders = 1,
                              .body = r.body.data,
                              .body_len = r.body.len,
                              .now = timegm(&tm),
                              .content_sha256_header = true};
    struct buf h = BUF_INIT(BUF_UNBOUNDED), creq = BUF_INIT(BUF_UNBOUNDED);
    sigv4_sign(&sp, &h, &creq, NULL);
    char want[1100]; /* "Authorization: " + a header value of up to 1023 bytes */
    snprintf(want, sizeof(want), "Authorization: %s\n", auth ? auth : "");
    if (!ok(strstr(h.data, want) != NULL))
        printf("#   recomputed:\n%s#   sent: %s", h.data, want);
    ok(strstr(creq.data, "/model/anthropic.claude-3-5-haiku-20241022-v1%253A0/converse-stream\n") != NULL);
    buf_free(&h);
    buf_free(&creq);
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);

    /* a base URL with a path prefix (a proxy): the prefix is part of the signed path; ARNs keep '/' encoded */
    fx_init(&f, &provider_bedrock, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", false, OP_CHAT);
    creds(&f);
    f.dep.model = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0";
    f.dep.base_url = "http://user@127.0.0.1:8080/proxy";
    body = fx_encode(&f, &r, &err);
    is_str(r.url.data, "http://user@127.0.0.1:8080/proxy/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
                       "inference-profile%2Fus.amazon.nova-pro-v1%3A0/converse");
    is_str(fx_header(&r, "Host"), "127.0.0.1:8080");
    cJSON_Delete(body);
    up_request_free(&r);
    fx_free(&f);

    /* no credentials, embeddings: refused before any I/O */
    fx_init(&f, &provider_bedrock, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", false, OP_CHAT);
    body = fx_encode(&f, &r, &err);
    ok(body == NULL);
    is_int(err.status, 503);
    up_request_free(&r);
    fx_free(&f);
    fx_init(&f, &provider_bedrock, "{\"model\":\"e\",\"input\":\"x\"}", false, OP_EMBEDDINGS);
    creds(&f);
    body = fx_encode(&f, &r, &err);
    ok(body == NULL);
    is_int(err.status, 400);
    ok(strstr(err.message, "model does not support embeddings") != NULL);
    up_request_free(&r);
    fx_free(&f);
}

static cJSON *encode_canon(const char *canon, struct gw_error *err)
{
    struct fx f;
    fx_init(&f, &provider_bedrock, canon, false, OP_CHAT);
    creds(&f);
    struct up_request r;
    cJSON *body = fx_encode(&f, &r, err);
    up_request_free(&r);
    fx_free(&f);
    return body;
}

static void test_encode_tool_config(void)
{
    struct gw_error err;
    /* tool_choice none drops the tools ... */
    cJSON *b = encode_canon("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                            "\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"none\"}",
                            &err);
    ok(b && !cJSON_HasObjectItem(b, "toolConfig"));
    cJSON_Delete(b);
    /* ... unless the history has tool blocks, which need a toolConfig; tools used there but no longer defined
     * are declared with an open schema */
    b = encode_canon("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":"
                     "[{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"old\",\"arguments\":\"{}\"}}]},"
                     "{\"role\":\"tool\",\"tool_call_id\":\"t1\",\"content\":\"r\"}],"
                     "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
                     "\"object\"}}}],\"tool_choice\":\"none\"}",
                     &err);
    is_json(cJSON_GetObjectItemCaseSensitive(b, "toolConfig"),
            "{\"tools\":[{\"toolSpec\":{\"name\":\"f\",\"inputSchema\":{\"json\":{\"type\":\"object\"}}}},"
            "{\"toolSpec\":{\"name\":\"old\",\"inputSchema\":{\"json\":{\"type\":\"object\",\"properties\":{}}}}}]}");
    cJSON_Delete(b);
    b = encode_canon("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                     "\"function\":{\"name\":\"f\"}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
                     "\"f\"}}}",
                     &err);
    is_json(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "toolConfig"), "toolChoice"),
            "{\"tool\":{\"name\":\"f\"}}");
    cJSON_Delete(b);
    b = encode_canon("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                     "\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"auto\"}",
                     &err);
    is_json(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "toolConfig"), "toolChoice"),
            "{\"auto\":{}}");
    cJSON_Delete(b);
    /* ids Bedrock would refuse are replaced consistently in the toolUse and its toolResult */
    b = encode_canon("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":"
                     "[{\"id\":\"call_0123456789abcdef01234567_ts_AbCd-_efGHijklmnopqrstuvwxyz0123456789\","
                     "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                     "{\"role\":\"tool\",\"tool_call_id\":"
                     "\"call_0123456789abcdef01234567_ts_AbCd-_efGHijklmnopqrstuvwxyz0123456789\",\"content\":\"r\"}]}",
                     &err);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(b, "messages");
    const char *use = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 1), "content"), 0), "toolUse"),
        "toolUseId"));
    const char *res = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 2), "content"), 0),
            "toolResult"),
        "toolUseId"));
    ok(use && res && strcmp(use, res) == 0 && strlen(use) <= 64 && strncmp(use, "tooluse_h", 9) == 0);
    cJSON_Delete(b);
}

static void expect_400(const char *canon, const char *msg_part)
{
    struct gw_error err;
    cJSON *b = encode_canon(canon, &err);
    ok(b == NULL);
    is_int(err.status, 400);
    if (!ok(strstr(err.message, msg_part) != NULL))
        printf("#   message \"%s\" lacks \"%s\"\n", err.message, msg_part);
    cJSON_Delete(b);
}

/* Fields Converse cannot carry: ignored and listed (x-agentd-dropped-fields), never a 400, unless dropping them
 * changes the answer (audio output). */
static void test_encode_dropped_fields(void)
{
    struct fx f;
    fx_init(&f, &provider_bedrock,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"user\",\"content\":\"x\"}],"
            "\"max_completion_tokens\":9,\"reasoning_effort\":\"low\",\"store\":false,\"metadata\":{\"k\":\"v\"},"
            "\"prediction\":{\"type\":\"content\",\"content\":\"p\"},\"parallel_tool_calls\":true,\"service_tier\":null,"
            "\"modalities\":[\"text\"],\"n\":1}",
            false, OP_CHAT);
    creds(&f);
    struct up_request r;
    struct gw_error err;
    cJSON *b = fx_encode(&f, &r, &err);
    ok(b != NULL);
    is_str(f.ex.rq.dropped_fields, "metadata,modalities,parallel_tool_calls,prediction,reasoning_effort,store");
    is_int((int)cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "inferenceConfig"), "maxTokens")
               ->valuedouble,
           9);
    cJSON_Delete(b);
    up_request_free(&r);
    fx_free(&f);
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"modalities\":[\"text\",\"audio\"]}",
               "audio output is not supported");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"audio\":{\"voice\":\"alloy\"}}",
               "audio output is not supported");
}

static void test_encode_refusals(void)
{
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
               "\"https://example.com/cat.png\"}}]}]}",
               "does not fetch http URLs");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
               "\"data:image/bmp;base64,Qk0=\"}}]}]}",
               "png, jpeg, gif, webp");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{}}]}]}",
               "not supported by provider bedrock");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\","
               "\"json_schema\":{\"schema\":{}}}}",
               "json_schema is not supported");
    expect_400("{\"messages\":[{\"role\":\"function\",\"name\":\"f\",\"content\":\"x\"}]}", "role 'function'");
    expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"content\":\"r\"}]}",
               "needs tool_call_id");
    expect_400("{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "no user or assistant");
    /* s3 images go by reference */
    struct gw_error err;
    cJSON *b = encode_canon("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
                            "{\"url\":\"s3://bucket/a/b.PNG\"}}]}]}",
                            &err);
    is_json(cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(b, "messages"), 0), "content"),
            "[{\"image\":{\"format\":\"png\",\"source\":{\"s3Location\":{\"uri\":\"s3://bucket/a/b.PNG\"}}}}]");
    cJSON_Delete(b);
}

static void test_decode(void)
{
    struct fx f;
    struct gw_error err;
    fx_init(&f, &provider_bedrock, NULL, false, OP_CHAT);
    creds(&f);
    cJSON *resp = fx_stable(fx_decode(
        &f,
        "{\"metrics\":{\"latencyMs\":12},\"output\":{\"message\":{\"content\":[{\"text\":\"Let me check. \"},"
        "{\"toolUse\":{\"toolUseId\":\"tooluse_abc\",\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}}],"
        "\"role\":\"assistant\"}},\"stopReason\":\"tool_use\",\"usage\":{\"inputTokens\":10,\"outputTokens\":7,"
        "\"totalTokens\":27,\"cacheReadInputTokens\":6,\"cacheWriteInputTokens\":4}}",
        &err));
    is_json(resp, "{\"id\":\"chatcmpl-req-test-1\",\"object\":\"chat.completion\",\"model\":\"public-model\","
                  "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Let me check. \","
                  "\"tool_calls\":[{\"id\":\"tooluse_abc\",\"type\":\"function\",\"function\":{\"name\":"
                  "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}],\"refusal\":null},"
                  "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],"
                  "\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":7,\"total_tokens\":27,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":6},"
                  "\"completion_tokens_details\":{\"reasoning_tokens\":0}},\"system_fingerprint\":null}");
    is_int(f.a.usage.input, 20);
    is_int(f.a.usage.cached_input, 6);
    is_int(f.a.usage.cache_write, 4);
    is_int(f.a.usage.output, 7);
    ok(f.a.usage.known);
    is_str(f.a.response_model, "anthropic.claude-3-5-haiku-20241022-v1:0");
    cJSON_Delete(resp);
    fx_free(&f);

    static const char *const stops[][2] = {{"end_turn", "stop"},
                                           {"stop_sequence", "stop"},
                                           {"max_tokens", "length"},
                                           {"content_filtered", "content_filter"},
                                           {"guardrail_intervened", "content_filter"},
                                           {"model_context_window_exceeded", "length"}};
    for (int i = 0; i < 6; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":\"x\"}]}},"
                 "\"stopReason\":\"%s\"}",
                 stops[i][0]);
        fx_init(&f, &provider_bedrock, NULL, false, OP_CHAT);
        resp = fx_decode(&f, body, &err);
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0), "finish_reason");
        is_str(cJSON_GetStringValue(fr), stops[i][1]);
        ok(!f.a.usage.known);
        cJSON_Delete(resp);
        fx_free(&f);
    }
    static const char *const bad[] = {"{\"output\":{\"message\":{\"content\":", "{\"output\":{}}", "null", ""};
    for (int i = 0; i < 4; i++) {
        fx_init(&f, &provider_bedrock, NULL, false, OP_CHAT);
        ok(fx_decode(&f, bad[i], &err) == NULL);
        is_int(err.status, 502);
        ok(err.retryable);
        fx_free(&f);
    }
}

static void test_stream(void)
{
    struct fx f;
    struct gw_error err;
    fx_init(&f, &provider_bedrock, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "messageStart", "{\"role\":\"assistant\",\"p\":\"abc\"}", false, &err), EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Checking\"},\"p\":\"a\"}",
                    false, &err),
           EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockStop", "{\"contentBlockIndex\":0}", false, &err), EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockStart", "{\"contentBlockIndex\":1,\"start\":{\"toolUse\":{\"toolUseId\":"
                                             "\"tooluse_1\",\"name\":\"f\"}}}",
                    false, &err),
           EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockDelta", "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":\"{\\\"a\"}}}",
                    false, &err),
           EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockDelta", "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":\"\\\":1}\"}}}",
                    false, &err),
           EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockStop", "{\"contentBlockIndex\":1}", false, &err), EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockStart", "{\"contentBlockIndex\":2,\"start\":{\"toolUse\":{\"toolUseId\":"
                                             "\"tooluse_2\",\"name\":\"g\"}}}",
                    false, &err),
           EV_CONSUMED);
    is_int(fx_event(&f, "contentBlockDelta", "{\"contentBlockIndex\":2,\"delta\":{\"toolUse\":{\"input\":\"{}\"}}}",
                    false, &err),
           EV_CONSUMED);
    is_int(fx_event(&f, "someFutureEvent", "{}", false, &err), EV_CONSUMED);
    ok(!f.a.stream_done);
    is_int(fx_event(&f, "messageStop", "{\"stopReason\":\"tool_use\"}", false, &err), EV_CONSUMED);
    ok(f.a.stream_done);
    ok(!f.a.usage.known);
    is_int(fx_event(&f, "metadata", "{\"usage\":{\"inputTokens\":5,\"outputTokens\":9,\"totalTokens\":16,"
                                    "\"cacheReadInputTokens\":2},\"metrics\":{\"latencyMs\":3}}",
                    false, &err),
           EV_CONSUMED);
    ok(f.a.usage.known);
    is_str(f.log.data, "text:Checking\ntool:0:tooluse_1:f\nargs:0:{\"a\nargs:0:\":1}\ntool:1:tooluse_2:g\n"
                       "args:1:{}\nfinish:tool_calls\nusage:7/9/2/0/0\n");
    fx_free(&f);

    /* metadata without a messageStop also ends the stream */
    fx_init(&f, &provider_bedrock, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "metadata", "{\"usage\":{\"inputTokens\":1,\"outputTokens\":1}}", false, &err), EV_CONSUMED);
    ok(f.a.stream_done);
    fx_free(&f);

    /* tool input for a block that never started a tool, malformed payloads */
    fx_init(&f, &provider_bedrock, NULL, true, OP_CHAT);
    stream_fixture(&f);
    is_int(fx_event(&f, "contentBlockDelta", "{\"contentBlockIndex\":4,\"delta\":{\"toolUse\":{\"input\":\"{}\"}}}",
                    false, &err),
           -1);
    is_int(err.status, 502);
    is_int(fx_event(&f, "contentBlockDelta", "{\"contentBlockIndex\":", false, &err), -1);
    is_int(err.status, 502);
    is_int(fx_event(&f, "contentBlockDelta", "[]", false, &err), -1);
    fx_free(&f);
}

static void test_stream_exceptions(void)
{
    static const struct {
        const char *type, *payload;
        int status;
        bool retry;
        const char *msg;
    } cases[] = {
        {"throttlingException", "{\"message\":\"Too many requests\"}", 429, true, "Too many requests"},
        {"modelStreamErrorException",
         "{\"message\":\"The model stream encountered an error.\",\"originalStatusCode\":500}", 502, true,
         "The model stream encountered an error."},
        {"validationException", "{\"message\":\"bad input\"}", 400, false, "bad input"},
        {"serviceUnavailableException", "{\"message\":\"busy\"}", 503, true, "busy"},
        {"internalServerException", "{}", 500, true, "stream error"},
        {"InternalFailure", "something broke", 502, true, "something broke"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fx f;
        struct gw_error err;
        fx_init(&f, &provider_bedrock, NULL, true, OP_CHAT);
        stream_fixture(&f);
        is_int(fx_event(&f, cases[i].type, cases[i].payload, true, &err), -1);
        is_int(err.status, cases[i].status);
        is_int(err.retryable, cases[i].retry);
        ok(err.from_upstream);
        is_str(err.code, cases[i].type);
        if (!ok(strstr(err.message, cases[i].msg) != NULL))
            printf("#   message: %s\n", err.message);
        fx_free(&f);
    }
}

static void map_err(const char *type_header, int status, const char *body, struct gw_error *err)
{
    struct fx f;
    fx_init(&f, &provider_bedrock, NULL, false, OP_CHAT);
    snprintf(f.a.upstream_error_type, sizeof(f.a.upstream_error_type), "%s", type_header ? type_header : "");
    memset(err, 0, sizeof(*err));
    provider_bedrock.map_error(&f.a, status, body, strlen(body), err);
    fx_free(&f);
}

static void test_errors(void)
{
    static const struct {
        const char *type;
        int http, want;
        bool retry;
        enum gw_err_type et;
    } cases[] = {
        {"ValidationException", 400, 400, false, GW_ERR_INVALID_REQUEST},
        /* AWS refusing agentd's credentials is agentd's failure: 502, never a 403 blaming the client (issue 15) */
        {"AccessDeniedException", 403, 502, true, GW_ERR_API},
        {"ResourceNotFoundException", 404, 404, false, GW_ERR_NOT_FOUND},
        {"ThrottlingException", 429, 429, true, GW_ERR_RATE_LIMIT},
        {"ModelTimeoutException", 408, 408, true, GW_ERR_TIMEOUT},
        {"ServiceUnavailableException", 503, 503, true, GW_ERR_OVERLOADED},
        {"ModelNotReadyException", 429, 429, true, GW_ERR_RATE_LIMIT},
        {"InternalServerException", 500, 500, true, GW_ERR_API},
        {"ModelErrorException", 424, 502, true, GW_ERR_API},
    };
    struct gw_error err;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char hdr[200];
        snprintf(hdr, sizeof(hdr), "%s:http://internal.amazon.com/coral/com.amazon.bedrock/", cases[i].type);
        map_err(hdr, cases[i].http, "{\"message\":\"the message\"}", &err);
        is_int(err.status, cases[i].want);
        is_int(err.retryable, cases[i].retry);
        is_int(err.type, cases[i].et);
        if (cases[i].http == 403) {
            is_str(err.code, "upstream_authentication_failed");
            ok(strstr(err.message, "upstream authentication failed at deployment") != NULL);
            ok(strstr(err.message, "the message") != NULL);
        } else {
            is_str(err.code, cases[i].type);
            is_str(err.message, "the message");
        }
        ok(err.from_upstream);
    }
    /* a wrong secret: a clear 502 that says what to check, without AWS's canonical-request dump */
    map_err("InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/", 403,
            "{\"message\":\"The request signature we calculated does not match the signature you provided. Check "
            "your AWS Secret Access Key and signing method.\\n\\nThe Canonical String for this request should have "
            "been\\n'POST\\n/model/x/converse'\"}",
            &err);
    is_int(err.status, 502);
    is_int(err.type, GW_ERR_API);
    ok(err.retryable); /* the next deployment has other credentials */
    ok(strstr(err.message, "AWS_SECRET_ACCESS_KEY") != NULL);
    ok(strstr(err.message, "The request signature we calculated does not match") != NULL);
    ok(strstr(err.message, "Canonical String") == NULL);
    map_err("UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/", 403,
            "{\"message\":\"The security token included in the request is invalid.\"}", &err);
    is_int(err.status, 502);
    ok(strstr(err.message, "AWS_ACCESS_KEY_ID") != NULL);
    /* no header: the body's __type; nothing at all: the status */
    map_err(NULL, 400, "{\"__type\":\"com.amazon.coral.validate#ValidationException\",\"message\":\"m\"}", &err);
    is_str(err.code, "ValidationException");
    is_int(err.status, 400);
    map_err(NULL, 502, "<html>bad gateway</html>", &err);
    is_int(err.status, 502);
    ok(err.retryable);
    ok(strstr(err.message, "HTTP 502") != NULL);
    /* 5xx statuses without a type: retryable */
    map_err(NULL, 503, "{\"message\":\"busy\"}", &err);
    is_int(err.status, 503);
    ok(err.retryable);
}

int main(void)
{
    subtest("encode: turns, blocks, system, inference and tool config", test_encode_conversation);
    subtest("encode: Anthropic cache_control -> cachePoint blocks", test_encode_cache_points);
    subtest("encode: URL encoding and SigV4 headers", test_encode_url_and_signature);
    subtest("encode: tool config corner cases", test_encode_tool_config);
    subtest("encode: refusals", test_encode_refusals);
    subtest("encode: dropped fields", test_encode_dropped_fields);
    subtest("decode: Converse responses", test_decode);
    subtest("stream: events to deltas", test_stream);
    subtest("stream: exceptions", test_stream_exceptions);
    subtest("errors from x-amzn-ErrorType", test_errors);
    return done_testing();
}
