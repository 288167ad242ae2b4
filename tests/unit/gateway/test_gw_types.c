/* Upstream-reported usage (issue 15 item 2): one rule for every provider and path. A token count is a JSON number
 * holding a whole value in [0, gateway.max_usage_tokens]; anything else makes the whole usage "not reported".
 * fuzz_openai once found a 2e101 completion_tokens reaching a double-to-int64 conversion; later a 1e300 clamped to
 * 1e15 was billed $3e9, and negative counts made the token counter go down. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/providers/anthropic.h"
#include "gateway/wire_openai.h"
#include "gateway/gw_types.h"
#include "telemetry/metrics.h"
#include "test.h"

static const struct usage_limits lim = {1000};

static void test_count_rule(void)
{
    ok(usage_count_ok(true, 0, &lim));
    ok(usage_count_ok(true, 42, &lim));
    ok(usage_count_ok(true, 1000, &lim)); /* the bound itself is allowed */
    ok(!usage_count_ok(true, 1001, &lim));
    ok(!usage_count_ok(true, 42.5, &lim));
    ok(!usage_count_ok(true, -5, &lim));
    ok(!usage_count_ok(true, -0.5, &lim));
    ok(!usage_count_ok(true, NAN, &lim));
    ok(!usage_count_ok(true, INFINITY, &lim));
    ok(!usage_count_ok(true, -INFINITY, &lim));
    ok(!usage_count_ok(true, 1e300, &lim));
    ok(!usage_count_ok(true, 9.3e18, &lim)); /* past INT64_MAX */
    ok(!usage_count_ok(false, 12, &lim));    /* "12": not a number */
    ok(usage_count_ok(true, -0.0, &lim));    /* -0 is zero */
}

static void test_validate(void)
{
    struct usage u = {.input = 10, .output = 5, .known = true};
    ok(usage_validate(&u, &lim));
    is_int(u.input, 10);
    is_int(u.output, 5);
    ok(!u.invalid);

    /* a sum past the bound (Gemini prompt + tool prompt, Bedrock input + cache) drops the usage */
    u = (struct usage){.input = 1001, .output = 1, .known = true};
    ok(!usage_validate(&u, &lim));
    ok(u.invalid);
    ok(!u.known);
    is_int(u.input, 0);
    is_int(u.output, 0);

    u = (struct usage){.input = 1, .reasoning = -1, .known = true};
    ok(!usage_validate(&u, &lim));
    ok(u.invalid);

    /* a flagged field drops the rest, even the plausible counts */
    u = (struct usage){.input = 7, .output = 3, .known = true, .invalid = true};
    ok(!usage_validate(&u, &lim));
    is_int(u.input, 0);
    is_int(u.output, 0);
    ok(!u.known);

    /* nothing reported stays nothing reported, not flagged */
    u = (struct usage){0};
    ok(!usage_validate(&u, &lim));
    ok(!u.invalid);
}

/* The same text read through cJSON (translated paths) and through jscan (passthrough paths) gives the same count
 * and the same verdict. */
static void test_readers_agree(void)
{
    static const char *const lits[] = {"0",  "12",    "12.0",     "1e3",       "1.5",  "-5",
                                       "-0", "1e300", "\"12\"",   "null",      "true", "[]",
                                       "{}", "1E+2",  "10000001", "9999999.5", "1e7"};
    struct usage_limits saved = usage_limits_get();
    usage_limits_set(&(struct usage_limits){10000000});
    for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
        char doc[128];
        snprintf(doc, sizeof(doc), "{\"n\":%s}", lits[i]);
        cJSON *t = cJSON_Parse(doc);
        ok(t != NULL);
        struct usage a = {0}, b = {0};
        int64_t va = usage_read_json(&a, cJSON_GetObjectItemCaseSensitive(t, "n"));
        struct jval v;
        ok(jscan_get(doc, strlen(doc), "n", &v) == 0);
        int64_t vb = usage_read_jval(&b, &v);
        if (va != vb || a.invalid != b.invalid)
            printf("# %s: cJSON %lld/%d, jscan %lld/%d\n", lits[i], (long long)va, a.invalid, (long long)vb, b.invalid);
        is_int(va, vb);
        is_int(a.invalid, b.invalid);
        cJSON_Delete(t);
    }
    /* and the verdicts themselves */
    struct usage u = {0};
    cJSON *t = cJSON_Parse("{\"a\":12,\"b\":null}");
    is_int(usage_read_json(&u, cJSON_GetObjectItemCaseSensitive(t, "a")), 12);
    is_int(usage_read_json(&u, cJSON_GetObjectItemCaseSensitive(t, "b")), 0); /* null: absent */
    is_int(usage_read_json(&u, cJSON_GetObjectItemCaseSensitive(t, "c")), 0); /* absent */
    ok(!u.invalid);
    cJSON_Delete(t);
    usage_limits_set(&saved);
}

/* Whole bodies: OpenAI's passthrough reader (jscan) and its translated decoder (cJSON), Anthropic's likewise. */
static void test_bodies_agree(void)
{
    static const char *const vals[] = {"7", "1e300", "-5", "1.5", "\"12\"", "1e3"};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},"
                 "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":%s}}",
                 vals[i]);
        struct usage pass, tr;
        wire_openai_extract_usage(body, strlen(body), &pass);
        struct gw_error err;
        cJSON *t = wire_openai_decode_completion(body, strlen(body), &tr, &err);
        ok(t != NULL);
        cJSON_Delete(t);
        is_int(pass.known, tr.known);
        is_int(pass.invalid, tr.invalid);
        is_int(pass.input, tr.input);
        is_int(pass.output, tr.output);
        bool plausible = strcmp(vals[i], "7") == 0 || strcmp(vals[i], "1e3") == 0;
        is_int(pass.known, plausible);
        is_int(pass.invalid, !plausible);
        is_int(pass.output, plausible ? (strcmp(vals[i], "7") == 0 ? 7 : 1000) : 0);
        is_int(pass.input, plausible ? 3 : 0); /* the whole usage goes, not just the bad field */

        snprintf(body, sizeof(body),
                 "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[{\"type\":"
                 "\"text\",\"text\":\"hi\"}],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":3,"
                 "\"output_tokens\":%s}}",
                 vals[i]);
        struct usage ap, at = {0};
        anthropic_extract_usage(body, strlen(body), &ap);
        char model[64];
        t = anthropic_message_to_canonical(body, strlen(body), "chatcmpl-1", "m", 1, "", &at, model, sizeof(model),
                                           &err);
        ok(t != NULL);
        /* the canonical response the client sees carries the validated numbers, never the upstream's */
        const cJSON *cu = cJSON_GetObjectItemCaseSensitive(t, "usage");
        is_int(cJSON_GetObjectItemCaseSensitive(cu, "completion_tokens")->valuedouble, at.output);
        cJSON_Delete(t);
        is_int(ap.known, at.known);
        is_int(ap.invalid, at.invalid);
        is_int(ap.input, at.input);
        is_int(ap.output, at.output);
        is_int(ap.known, plausible);
        is_int(ap.input, pass.input);
        is_int(ap.output, pass.output);
    }
}

/* Anthropic streams report usage twice (message_start, message_delta): a bad count in either drops it for good. */
static void test_anthropic_sticky(void)
{
    struct usage u = {0};
    struct anthropic_usage au = {0};
    const char *start = "{\"input_tokens\":10,\"output_tokens\":-5}";
    ok(anthropic_usage_scan(start, strlen(start), &au) == 0);
    ok(au.invalid);
    anthropic_usage_apply(&au, &u);
    ok(u.invalid);
    ok(!u.known);
    struct anthropic_usage later = {0};
    const char *delta = "{\"output_tokens\":20}";
    ok(anthropic_usage_scan(delta, strlen(delta), &later) == 0);
    ok(!later.invalid);
    anthropic_usage_apply(&later, &u);
    ok(!u.known);
    is_int(u.output, 0);
}

static size_t count_in(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* usage_check counts a dropped usage once per attempt, with the deployment; copies are not counted again. */
static void test_check_counts_once(void)
{
    usage_metrics_register();
    struct usage u = {.input = 3, .output = 1, .known = true, .invalid = true};
    ok(!usage_check(&u, "dep-a"));
    struct usage copy = u;
    ok(!usage_check(&copy, "dep-a"));
    ok(!usage_check(&u, "dep-a"));
    struct usage fresh = {.output = -1, .known = true};
    ok(!usage_check(&fresh, NULL)); /* an extractor without a deployment validates only */
    ok(fresh.invalid);
    ok(!usage_check(&fresh, "dep-a")); /* the take point counts it */
    struct usage good = {.input = 3, .known = true};
    ok(usage_check(&good, "dep-a"));
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    metrics_render(&out);
    ok(out.data && count_in(out.data, "agentd_gateway_usage_invalid_total{deployment=\"dep-a\"} 2") == 1);
    buf_free(&out);
}

/* Counters only go up: a negative or NaN add is ignored (gauges still go both ways). */
static const char *const no_labels[] = {NULL};
static struct metric_def m_c = METRIC_DEF("test_guard_total", "t", METRIC_COUNTER, no_labels);
static struct metric_def m_g = METRIC_DEF("test_guard_gauge", "t", METRIC_GAUGE, no_labels);

static void test_counter_guard(void)
{
    metrics_register(&m_c);
    metrics_register(&m_g);
    metrics_add(&m_c, NULL, 5);
    metrics_add(&m_c, NULL, -3);
    metrics_add(&m_c, NULL, NAN);
    metrics_add(&m_c, NULL, INFINITY);
    metrics_add(&m_c, NULL, 1);
    ok(metrics_sum(&m_c, NULL) == 6);
    metrics_add(&m_g, NULL, 5);
    metrics_add(&m_g, NULL, -3);
    ok(metrics_sum(&m_g, NULL) == 2);
}

/* A body the front validated is spliced without validating it again (the passthrough hot path): the bytes out must
 * be the ones the validating splice writes, for every shape of stream_options and surrounding whitespace. */
static void test_splice_validated(void)
{
    static const char *const bodies[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"q\\\" \\\\\"}]}",
        " \n{\"messages\":[],\"model\" : \"m\",\"stream_options\":{}}\n",
        "{\"model\":\"m\",\"stream_options\":{\"include_usage\":false,\"x\":[1,{\"a\":\"}\"}]}}",
        "{\"model\":\"m\",\"stream_options\":null,\"tools\":[{\"type\":\"function\"}]}",
        "{\"model\":\"m\",\"stream_options\":{\"y\":1}}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        for (int force = 0; force < 2; force++) {
            struct buf a = BUF_INIT(BUF_UNBOUNDED), b = BUF_INIT(BUF_UNBOUNDED);
            size_t n = strlen(bodies[i]);
            ok(wire_openai_splice_request(bodies[i], n, "up-\"model", force, &a) == 0);
            ok(wire_openai_splice_validated(bodies[i], n, "up-\"model", force, &b) == 0);
            ok(a.len == b.len && a.len > 0 && memcmp(a.data, b.data, a.len) == 0);
            ok(strstr(b.data ? b.data : "", "\"model\":\"up-\\\"model\"") != NULL ||
                   strstr(b.data ? b.data : "", "\"model\" : \"up-\\\"model\"") != NULL);
            buf_free(&a);
            buf_free(&b);
        }
    /* still refused: no model, a model that is not a string, a duplicate model */
    static const char *const bad[] = {"{\"messages\":[]}", "{\"model\":3}", "{\"model\":\"a\",\"model\":\"b\"}", "[]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct buf b = BUF_INIT(BUF_UNBOUNDED);
        ok(wire_openai_splice_validated(bad[i], strlen(bad[i]), "x", false, &b) != 0);
        buf_free(&b);
    }
}

int main(void)
{
    subtest("one rule for a count", test_count_rule);
    subtest("usage_validate", test_validate);
    subtest("cJSON and jscan readers agree", test_readers_agree);
    subtest("passthrough and translated bodies agree", test_bodies_agree);
    subtest("anthropic: a dropped usage stays dropped", test_anthropic_sticky);
    subtest("usage_check counts once", test_check_counts_once);
    subtest("counters only go up", test_counter_guard);
    subtest("splicing a validated body writes what the validating splice writes", test_splice_validated);
    metrics_shutdown();
    return done_testing();
}
