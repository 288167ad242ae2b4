/* W3C trace context (telemetry/trace.h), the samplers, and the OTEL_* key=value lists. */
#include <string.h>

#include "telemetry/otel_config.h"
#include "telemetry/trace.h"
#include "test.h"

static int tp(const char *s, struct trace_parent *out)
{
    return trace_parse_traceparent(s, strlen(s), out);
}

static void test_traceparent(void)
{
    struct trace_parent p;
    is_int(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &p), 0);
    ok(p.trace_id[0] == 0x4b && p.trace_id[15] == 0x36 && p.span_id[7] == 0xb7 && p.flags == 1);
    is_int(tp(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ", &p), 0);
    is_int(p.flags, 0);
    is_int(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &p), 0);
    is_int(p.flags, 1); /* unknown flag bits are dropped */
    /* a later version: the first 55 characters as 00, then '-' and anything */
    is_int(tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", &p), 0);
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  /* v00 with more */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    /* zero parent id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",     /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",    /* flags not hex */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",   /* later version, no '-' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(tp(bad[i], &p) == -1);
    char out[TRACEPARENT_LEN + 1];
    is_int(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &p), 0);
    trace_format_traceparent(out, p.trace_id, p.span_id, 1);
    is_str(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

static void test_tracestate(void)
{
    ok(trace_tracestate_valid("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 39));
    ok(trace_tracestate_valid("a@b=1 , c=2", 11));
    ok(trace_tracestate_valid("", 0));
    ok(!trace_tracestate_valid("Rojo=1", 6));  /* key in upper case */
    ok(!trace_tracestate_valid("rojo", 4));    /* no value */
    ok(!trace_tracestate_valid("rojo=", 5));   /* empty value */
    ok(!trace_tracestate_valid("a=b=c", 5));
    char many[400] = "";
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sk%d=v", i ? "," : "", i);
    ok(!trace_tracestate_valid(many, strlen(many))); /* 33 members */
}

static void test_ids_and_sampler(void)
{
    uint8_t a[16], b[16];
    trace_new_trace_id(a);
    trace_new_trace_id(b);
    ok(memcmp(a, b, 16) != 0);
    struct trace_parent sampled = {.flags = 1}, unsampled = {.flags = 0};
    ok(trace_sample(SAMPLER_ALWAYS_ON, 0, a, NULL));
    ok(!trace_sample(SAMPLER_ALWAYS_OFF, 1, a, &sampled));
    ok(!trace_sample(SAMPLER_TRACEIDRATIO, 0, a, NULL));
    ok(trace_sample(SAMPLER_TRACEIDRATIO, 1, a, NULL));
    ok(trace_sample(SAMPLER_PARENTBASED_TRACEIDRATIO, 0, a, &sampled));
    ok(!trace_sample(SAMPLER_PARENTBASED_TRACEIDRATIO, 1, a, &unsampled));
    ok(!trace_sample(SAMPLER_PARENTBASED_TRACEIDRATIO, 0, a, NULL));
    /* the ratio keeps about that fraction of random trace ids */
    int kept = 0;
    for (int i = 0; i < 10000; i++) {
        trace_new_trace_id(a);
        kept += trace_sample(SAMPLER_TRACEIDRATIO, 0.25, a, NULL);
    }
    ok(kept > 2200 && kept < 2800);
}

static char got[512];
static void collect(const char *k, const char *v, void *ud)
{
    (void)ud;
    snprintf(got + strlen(got), sizeof(got) - strlen(got), "[%s|%s]", k, v);
}

static void test_kv_lists(void)
{
    got[0] = '\0';
    is_int(otel_parse_kv_list("api-key=a%20b, x = 1 ,,service.name=svc", collect, NULL), 0);
    is_str(got, "[api-key|a b][x|1][service.name|svc]");
    ok(otel_parse_kv_list("novalue", NULL, NULL) == -1);
    ok(otel_parse_kv_list("=x", NULL, NULL) == -1);
    ok(otel_parse_kv_list("a=%zz", NULL, NULL) == -1);
    ok(otel_parse_kv_list("a=%0d%0ax", NULL, NULL) == -1); /* no line break into a header */
    ok(otel_parse_kv_list("a b=1", NULL, NULL) == -1);
    ok(otel_parse_kv_list("", NULL, NULL) == 0);
}

int main(void)
{
    subtest("traceparent", test_traceparent);
    subtest("tracestate", test_tracestate);
    subtest("ids and samplers", test_ids_and_sampler);
    subtest("key=value lists", test_kv_lists);
    return done_testing();
}
