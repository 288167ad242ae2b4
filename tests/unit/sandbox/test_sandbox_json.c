/* Specs in JSON (an agent's tool call) and results printed as JSON. */
#include <cjson/cJSON.h>
#include <string.h>

#include "common/alloc.h"
#include "sandbox/sbx_json.h"
#include "test.h"

static int parse(const char *text, struct sbx_json_spec *js, struct buf *err)
{
    buf_reset(err);
    return sbx_json_parse_spec(text, strlen(text), js, err);
}

static void test_spec(void)
{
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(512);
    ok(parse("{\"id\":\"r1\",\"lang\":\"python\",\"code\":\"print(1)\",\"env\":{\"A\":\"1\"},\"stdin\":\"in\","
             "\"files\":[{\"name\":\"d.txt\",\"content\":\"xyz\",\"mode\":384},"
             "{\"name\":\"b.bin\",\"content_base64\":\"AAEC/w==\"}],"
             "\"timeout_s\":2.5,\"limits\":{\"memory_mb\":64,\"pids\":16,\"stdout_max\":100},\"net\":\"none\"}",
             &js, &err) == 0);
    is_str(js.id, "r1");
    is_int(js.spec.lang, SBX_LANG_PYTHON);
    is_str(js.spec.code, "print(1)");
    is_int(js.spec.envc, 1);
    is_str(js.spec.env[0], "A=1");
    is_int(js.spec.stdin_len, 2);
    is_int(js.spec.nfiles, 2);
    is_int(js.spec.files[0].mode, 0600);
    is_int(js.spec.files[1].len, 4);
    ok(memcmp(js.spec.files[1].data, "\x00\x01\x02\xff", 4) == 0);
    is_int(js.spec.limits.wall_ms, 2500);
    is_int(js.spec.limits.memory_bytes, 64u << 20);
    is_int(js.spec.limits.pids, 16);
    is_int(js.spec.limits.stdout_max, 100);
    is_int(js.spec.limits.nofile, 64); /* untouched default */
    sbx_json_spec_free(&js);

    ok(parse("{\"argv\":[\"/bin/echo\",\"hi\"],\"env\":[\"X=y\"],\"id\":7}", &js, &err) == 0);
    is_str(js.id, "7");
    is_int(js.spec.argc, 2);
    is_str(js.spec.env[0], "X=y");
    sbx_json_spec_free(&js);
    buf_free(&err);
}

static void test_refused(void)
{
    static const char *const bad[] = {
        "",
        "[]",
        "nope",
        "{}", /* nothing to run */
        "{\"argv\":[\"/bin/true\"],\"bogus\":1}",
        "{\"argv\":[\"/bin/true\"],\"limits\":{\"wall\":1}}",
        "{\"argv\":[\"/bin/true\"],\"limits\":{\"pids\":-1}}",
        "{\"argv\":[\"/bin/true\"],\"limits\":{\"pids\":1.5}}",
        "{\"argv\":[\"/bin/true\"],\"limits\":{\"memory_mb\":1e300}}",
        "{\"argv\":[\"/bin/true\"],\"timeout_s\":0}",
        "{\"argv\":[\"/bin/true\"],\"net\":\"host\"}",
        "{\"lang\":\"cobol\",\"code\":\"x\"}",
        "{\"argv\":[1]}",
        "{\"argv\":[\"/bin/true\"],\"argv\":[\"/bin/false\"]}",
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"name\":\"../etc/passwd\",\"content\":\"x\"}]}",
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"name\":\"a//b\",\"content\":\"x\"}]}", /* an empty part */
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"name\":\".bashrc\",\"content\":\"x\"}]}",
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"content\":\"x\"}]}",
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"name\":\"x\",\"content_base64\":\"!!!!\"}]}",
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"name\":\"x\",\"content_base64\":\"====\"}]}",
        "{\"argv\":[\"/bin/true\"],\"files\":[{\"name\":\"x\",\"mode\":4095}]}",
        "{\"argv\":[\"/bin/true\"],\"env\":{\"1X\":\"y\"}}",
        "{\"argv\":[\"/bin/true\"],\"env\":{\"X\":1}}",
        "{\"code\":\"print(1)\"}",
    };
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(512);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = parse(bad[i], &js, &err);
        if (!ok(rc == -1))
            printf("#   accepted: %s\n", bad[i]);
        ok(err.len > 0);
        sbx_json_spec_free(&js);
    }
    buf_free(&err);
}

static void test_result(void)
{
    struct sbx_result r;
    memset(&r, 0, sizeof(r));
    buf_init(&r.out, 1024);
    buf_init(&r.err, 1024);
    r.reason = SBX_REASON_SIGNAL;
    r.exit_code = -1;
    r.term_signal = 11;
    r.wall_us = 1500;
    snprintf(r.cgroup, sizeof(r.cgroup), "v1");
    (void)buf_append(&r.out, "ok \"quoted\"\n", 12);
    (void)buf_append(&r.err, "bad \xff\xfe utf8", sizeof("bad \xff\xfe utf8") - 1);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    sbx_json_result(&r, "job-1", &out);
    cJSON *j = cJSON_Parse(out.data);
    ok(j != NULL);
    is_str(cJSON_GetObjectItem(j, "id")->valuestring, "job-1");
    is_str(cJSON_GetObjectItem(j, "reason")->valuestring, "signal");
    ok(cJSON_IsNull(cJSON_GetObjectItem(j, "exit_code")));
    is_int(cJSON_GetObjectItem(j, "signal")->valueint, 11);
    is_str(cJSON_GetObjectItem(j, "signal_name")->valuestring, "SIGSEGV");
    is_str(cJSON_GetObjectItem(j, "stdout")->valuestring, "ok \"quoted\"\n");
    ok(cJSON_GetObjectItem(j, "stdout_base64") == NULL);
    is_str(cJSON_GetObjectItem(j, "stderr")->valuestring, "bad \xef\xbf\xbd\xef\xbf\xbd utf8");
    is_str(cJSON_GetObjectItem(j, "stderr_base64")->valuestring, "YmFkIP/+IHV0Zjg=");
    ok(cJSON_GetObjectItem(j, "wall_ms")->valuedouble == 1.5);
    ok(cJSON_IsNull(cJSON_GetObjectItem(j, "error")));
    cJSON_Delete(j);
    buf_free(&out);
    sbx_result_free(&r);

    /* Overlong encodings and surrogates are not valid UTF-8. */
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    ok(!sbx_json_append_utf8(&b, "\xc0\xaf", 2));
    buf_reset(&b);
    ok(!sbx_json_append_utf8(&b, "\xed\xa0\x80", 3));
    buf_reset(&b);
    ok(sbx_json_append_utf8(&b, "\xf0\x9f\x98\x80 \xc3\xa9", 7));
    buf_free(&b);
}

int main(void)
{
    subtest("spec from JSON", test_spec);
    subtest("refused specs", test_refused);
    subtest("result as JSON", test_result);
    return done_testing();
}
