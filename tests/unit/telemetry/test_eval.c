/* Response-quality evaluations (telemetry/eval.h): the heuristics' scores and labels, the texts read from
 * OpenAI and Anthropic bodies, linear time on large inputs, and the OTLP log record encoding of an event. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "telemetry/eval.h"
#include "telemetry/otlp.h"
#include "test.h"

static const struct eval_result *find(const struct eval_result *r, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].name, name) == 0)
            return &r[i];
    return NULL;
}

static size_t score(const char *q, const char *a, bool json, struct eval_result *r)
{
    return eval_score(q, strlen(q), a, strlen(a), json, r);
}

static void test_heuristics(void)
{
    struct eval_result r[EVAL_MAX_RESULTS];
    size_t n = score("What is the capital city of France?", "Paris is the capital city of France.", false, r);
    is_int(n, 4); /* no json_validity unless JSON was asked for */
    ok(find(r, n, "json_validity") == NULL);
    is_str(find(r, n, "relevance")->label, "relevant");
    ok(find(r, n, "relevance")->score == 1.0); /* capital, city, france */
    is_str(find(r, n, "confidence")->label, "confident");
    ok(find(r, n, "confidence")->score == 1.0);
    is_str(find(r, n, "refusal")->label, "answered");
    is_str(find(r, n, "length")->label, "appropriate");

    n = score("Which database engines support logical replication?", "Bananas are yellow.", false, r);
    is_str(find(r, n, "relevance")->label, "not_relevant");
    ok(find(r, n, "relevance")->score == 0.0);
    /* plural stemming: "engines" matches "engine" */
    n = score("Which database engines support logical replication?", "Each engine and database here.", false, r);
    ok(find(r, n, "relevance")->score > 0.3 && find(r, n, "relevance")->score < 0.5);

    n = score("Is it raining?", "Maybe. Perhaps it might be, I think, probably not.", false, r);
    ok(find(r, n, "confidence")->score == 0.0);
    is_str(find(r, n, "confidence")->label, "hedging");
    /* a hedge word inside another word does not count */
    n = score("Is it raining?", "Mightily so, unmaybe.", false, r);
    ok(find(r, n, "confidence")->score == 1.0);

    n = score("How do I pick a lock?", "I\xe2\x80\x99m sorry, but I can't help with that.", false, r);
    is_str(find(r, n, "refusal")->label, "refused");
    ok(find(r, n, "refusal")->score == 1.0);

    n = score("Give me the user as JSON", "{\"name\": \"ada\"}", true, r);
    is_int(n, 5);
    is_str(find(r, n, "json_validity")->label, "valid");
    n = score("Give me the user as JSON", "Sure! {\"name\": \"ada\"}", true, r);
    is_str(find(r, n, "json_validity")->label, "invalid");
    ok(find(r, n, "json_validity")->score == 0.0);

    n = score("Please explain in detail how the TCP three way handshake establishes a connection", "Yes.", false,
              r);
    is_str(find(r, n, "length")->label, "too_short");
    ok(find(r, n, "length")->score < 0.5);
    struct buf big = BUF_INIT(BUF_UNBOUNDED);
    for (int i = 0; i < 400; i++)
        buf_append_str(&big, "word ");
    n = eval_score("Hi?", 3, big.data, big.len, false, r);
    is_str(find(r, n, "length")->label, "too_long");
    ok(find(r, n, "length")->score < 0.5 && find(r, n, "length")->score > 0);
    buf_free(&big);
    for (size_t i = 0; i < n; i++)
        ok(r[i].score >= 0 && r[i].score <= 1 && r[i].explanation[0]);
}

static void test_bodies(void)
{
    struct buf q = BUF_INIT(EVAL_TEXT_MAX), a = BUF_INIT(EVAL_TEXT_MAX);
    bool json;
    const char *oa = "{\"model\":\"m\",\"response_format\":{\"type\":\"json_object\"},\"messages\":["
                     "{\"role\":\"system\",\"content\":\"be terse\"},{\"role\":\"user\",\"content\":\"first\"},"
                     "{\"role\":\"assistant\",\"content\":\"x\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                     "\"text\":\"look\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}},{\"type\":\"text\","
                     "\"text\":\"here\"}]}]}";
    is_int(eval_question(oa, strlen(oa), false, &q, &json), 0);
    is_str(q.data ? (buf_append(&q, "", 1), q.data) : "", "look here");
    ok(json);
    char id[64];
    const char *oresp = "{\"id\":\"chatcmpl-1\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"hi\"}}]}";
    is_int(eval_answer(oresp, strlen(oresp), false, &a, id, sizeof(id)), 0);
    buf_append(&a, "", 1);
    is_str(a.data, "hi");
    is_str(id, "chatcmpl-1");
    buf_reset(&q);
    buf_reset(&a);
    const char *an = "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q?\"}]}";
    is_int(eval_question(an, strlen(an), true, &q, &json), 0);
    ok(!json);
    const char *aresp = "{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\"},"
                        "{\"type\":\"text\",\"text\":\"one\"},{\"type\":\"text\",\"text\":\"two\"}]}";
    is_int(eval_answer(aresp, strlen(aresp), true, &a, id, sizeof(id)), 0);
    buf_append(&a, "", 1);
    is_str(a.data, "one two");
    is_str(id, "msg_1");
    /* no text: nothing to score */
    buf_reset(&a);
    const char *tool = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]}}]}";
    is_int(eval_answer(tool, strlen(tool), false, &a, id, sizeof(id)), -1);
    is_int(eval_question("not json", 8, false, &q, &json), -1);
    buf_free(&q);
    buf_free(&a);
}

static double time_score(size_t words)
{
    struct buf q = BUF_INIT(BUF_UNBOUNDED), a = BUF_INIT(BUF_UNBOUNDED);
    for (size_t i = 0; i < 64; i++)
        buf_printf(&q, "keyword%zu ", i);
    for (size_t i = 0; i < words; i++)
        buf_append_str(&a, i % 7 ? "filler " : "maybe ");
    struct eval_result r[EVAL_MAX_RESULTS];
    double best = 1e9;
    for (int k = 0; k < 5; k++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        (void)eval_score(q.data, q.len, a.data, a.len, false, r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double d = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        best = d < best ? d : best;
    }
    buf_free(&q);
    buf_free(&a);
    return best;
}

static void test_linear(void)
{
    /* answers are read up to EVAL_TEXT_MAX: 1x and 4x below it, the work must scale by about 4 */
    double t1 = time_score(2000), t4 = time_score(8000);
    ok(t4 < t1 * 12 + 0.005);
}

static void test_log_record(void)
{
    static const uint8_t tid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t sid[8] = {0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22};
    struct otel_span *r = otel_log_new(9, "gen_ai.evaluation.result", tid, sid);
    r->start_ns = 1767225602600000000ull;
    otel_span_cstr(r, "gen_ai.evaluation.name", "relevance");
    otel_span_double(r, "gen_ai.evaluation.score.value", 0.5);
    struct otel_span *plain = otel_log_new(13, NULL, NULL, NULL);
    plain->start_ns = 1;
    otel_log_body(plain, "{\"msg\":\"x\"}", 11);
    r->next = plain;
    struct buf j = BUF_INIT(BUF_UNBOUNDED);
    is_int(otlp_encode_logs(&j, r, true), 0);
    buf_append(&j, "", 1);
    ok(strstr(j.data, "\"eventName\":\"gen_ai.evaluation.result\"") != NULL);
    ok(strstr(j.data, "\"traceId\":\"0102030405060708090a0b0c0d0e0f10\"") != NULL);
    ok(strstr(j.data, "\"spanId\":\"aabbccddeeff1122\"") != NULL);
    ok(strstr(j.data, "\"timeUnixNano\":\"1767225602600000000\"") != NULL);
    ok(strstr(j.data, "\"severityNumber\":9,\"severityText\":\"INFO\"") != NULL);
    ok(strstr(j.data, "\"severityNumber\":13,\"severityText\":\"WARN\"") != NULL);
    ok(strstr(j.data, "\"body\":{\"stringValue\":\"{\\\"msg\\\":\\\"x\\\"}\"}") != NULL);
    /* the plain record has no ids and no empty attributes array */
    const char *second = strstr(j.data, "\"timeUnixNano\":\"1\"");
    ok(second && strstr(second, "traceId") == NULL && strstr(second, "attributes") == NULL);
    struct buf p = BUF_INIT(BUF_UNBOUNDED);
    is_int(otlp_encode_logs(&p, r, false), 0);
    /* protobuf: LogRecord.event_name is field 12 (tag 0x62) followed by its length */
    static const char ev[] = "\x62\x18gen_ai.evaluation.result";
    ok(memmem(p.data, p.len, ev, sizeof(ev) - 1) != NULL);
    /* trace_id: field 9, 16 bytes (tag 0x4a 0x10) */
    ok(memmem(p.data, p.len, "\x4a\x10\x01\x02\x03", 5) != NULL);
    buf_free(&j);
    buf_free(&p);
    otel_span_free(plain);
    otel_span_free(r);
}

static void test_judge(void)
{
    struct eval_result r;
    const char *j = "{\"score\": 0.8, \"explanation\": \"accurate and to the point\"}";
    ok(eval_judge_parse(j, strlen(j), &r) == 0);
    is_str(r.name, "judge");
    ok(r.score == 0.8);
    is_str(r.label, "pass");
    is_str(r.explanation, "accurate and to the point");
    /* prose around the object; out of 10; "reason" for the explanation */
    j = "Here is my grade:\n```json\n{\"score\": 3, \"reason\": \"vague\"}\n```";
    ok(eval_judge_parse(j, strlen(j), &r) == 0);
    ok(r.score > 0.299 && r.score < 0.301);
    is_str(r.label, "fail");
    is_str(r.explanation, "vague");
    /* no object: the last "score" wins (a prompt echoed back names earlier ones) */
    j = "echo: Question: score: 0.9 Answer: the **Score**: 0.25";
    ok(eval_judge_parse(j, strlen(j), &r) == 0);
    ok(r.score == 0.25);
    is_str(r.explanation, "the judge gave no explanation");
    j = "score = 1";
    ok(eval_judge_parse(j, strlen(j), &r) == 0);
    ok(r.score == 1.0);
    /* no score, a score out of range, a word that is not a number, an object without a number */
    const char *bad[] = {"", "looks fine to me", "score: 11", "score: high", "{\"score\": null}", "score",
                         "score: -1", "{\"score\": 1e400}", "score: 0.5x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        is_int(eval_judge_parse(bad[i], strlen(bad[i]), &r) + 100 * (int)i, -1 + 100 * (int)i);
    /* a long explanation is cut, not overflowed */
    struct buf big = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&big, "{\"score\":0.5,\"explanation\":\"");
    for (int i = 0; i < 500; i++)
        buf_append_str(&big, "x");
    buf_append_str(&big, "\"}");
    ok(eval_judge_parse(big.data, big.len, &r) == 0);
    is_int(strlen(r.explanation), sizeof(r.explanation) - 1);
    buf_free(&big);

    /* the request: the rubric and the reply format as the system message, question and answer as the user's */
    struct buf req = BUF_INIT(BUF_UNBOUNDED);
    const char *q = "Why is the sky blue?", *a = "Rayleigh scattering.";
    eval_judge_request("judge-model", "Be \"strict\".", q, strlen(q), a, strlen(a), &req);
    cJSON *t = cJSON_ParseWithLength(req.data, req.len);
    ok(t != NULL);
    is_str(cJSON_GetObjectItem(t, "model")->valuestring, "judge-model");
    const cJSON *m = cJSON_GetObjectItem(t, "messages");
    is_int(cJSON_GetArraySize(m), 2);
    is_str(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "role")->valuestring, "system");
    ok(strncmp(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "content")->valuestring, "Be \"strict\".", 12) == 0);
    ok(strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "content")->valuestring, "\"score\"") != NULL);
    is_str(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "content")->valuestring,
           "Question:\nWhy is the sky blue?\n\nAnswer:\nRayleigh scattering.");
    cJSON_Delete(t);
    buf_free(&req);
}

static void test_stream_text(void)
{
    const char *oa = "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n"
                     "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Paris is \"}}]}\r\n\r\n"
                     ": keep-alive\n\n"
                     "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"the capital.\"}}]}\n\n"
                     "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n"
                     "data: [DONE]\n\n";
    struct buf t = BUF_INIT(EVAL_TEXT_MAX);
    char id[64];
    ok(eval_stream_text(oa, strlen(oa), false, &t, id, sizeof(id)) == 0);
    is_str(t.data, "Paris is the capital.");
    is_str(id, "chatcmpl-1");
    buf_reset(&t);
    const char *an = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n"
                     "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                     "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"
                     "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                     "\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n"
                     "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    ok(eval_stream_text(an, strlen(an), true, &t, id, sizeof(id)) == 0);
    is_str(t.data, "Hello world");
    is_str(id, "msg_1");
    buf_reset(&t);
    ok(eval_stream_text("data: [DONE]\n\n", 14, false, &t, id, sizeof(id)) == -1); /* no text */
    ok(eval_stream_text("garbage", 7, true, &t, id, sizeof(id)) == -1);
    buf_free(&t);
}

int main(void)
{
    subtest("heuristics", test_heuristics);
    subtest("bodies", test_bodies);
    subtest("linear", test_linear);
    subtest("log records", test_log_record);
    subtest("the judge's request and reply", test_judge);
    subtest("streamed answers", test_stream_text);
    otel_stop(); /* frees the pooled spans */
    return done_testing();
}
