/* Strings keep their bytes (issue 15, item 8). A translated request is rebuilt from a cJSON tree, whose strings
 * are C strings: "before\u0000after" reached the upstream as "before". Each translated path (an OpenAI client to
 * the anthropic, gemini, bedrock and mock providers; an Anthropic client to openai, gemini, bedrock) must refuse
 * such a string with a 400 invalid_request_error rather than cut it, including inside tool-call arguments (JSON
 * in a string, parsed again); text that merely looks like the escape ("\\u0000") goes through byte for byte. */
#include <string.h>

#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/registry.h"
#include "gateway/providers/canon.h"
#include "test.h"

struct rig {
    struct exchange ex;
    struct deployment dep;
    struct attempt a;
};

static void rig_init(struct rig *r, bool anthropic_front, const struct provider_ops *prov, const char *body)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->ex.rq.request_id, sizeof(r->ex.rq.request_id), "req-nul");
    r->ex.front = anthropic_front ? FRONT_ANTHROPIC_MESSAGES : FRONT_OPENAI_CHAT;
    r->ex.fops = anthropic_front ? &front_anthropic : &front_openai_chat;
    r->ex.rq.body = str_from(body);
    r->ex.rq.max_tokens = -1;
    r->ex.done = true;
    r->dep.prov = prov;
    r->dep.label = "nul:deployment";
    r->dep.model = "upstream-model";
    r->dep.base_url = "http://127.0.0.1:9";
    r->dep.api_key = "k";
    r->dep.region = "us-east-1";
    r->dep.aws_access_key_id = "AKIDEXAMPLE";
    r->dep.aws_secret_access_key = "secret";
    r->a.ex = &r->ex;
    r->a.dep = &r->dep;
    r->a.prov = prov;
    r->a.op = OP_CHAT;
}

static void rig_free(struct rig *r)
{
    if (r->a.prov->free_state)
        r->a.prov->free_state(&r->a);
    cJSON_Delete(r->ex.canon);
    cJSON_Delete(r->ex.rq.client_tree);
}

/* Parses as the front door does, then encodes for the provider (the mock: builds the canonical request, which is
 * all it reads). 0 with the upstream body in out, or -1 with err. */
static int encode(bool anthropic_front, const struct provider_ops *prov, const char *body, struct buf *out,
                  struct gw_error *err)
{
    struct rig r;
    rig_init(&r, anthropic_front, prov, body);
    memset(err, 0, sizeof(*err));
    const struct front_ops *fr = anthropic_front ? &front_anthropic : &front_openai_chat;
    int rc = fr->parse(&r.ex.rq, err);
    if (!ok(rc == 0))
        printf("#   parse refused: %s\n", err->message);
    if (rc == 0 && prov == &provider_mock) {
        const cJSON *c = ex_attempt_canonical(&r.a, err);
        rc = c ? 0 : -1;
        if (c) {
            char *s = cJSON_PrintUnformatted(c);
            buf_append_str(out, s);
            cJSON_free(s);
        }
    } else if (rc == 0) {
        struct up_request up;
        up_request_init(&up);
        rc = prov->encode_request(&r.a, &up, err);
        if (rc == 0)
            buf_append(out, up.body.data ? up.body.data : "", up.body.len);
        up_request_free(&up);
    }
    rig_free(&r);
    return rc;
}

struct path {
    bool anthropic_front;
    const struct provider_ops *prov;
};

static const struct path paths[] = {
    {false, &provider_anthropic}, {false, &provider_gemini}, {false, &provider_bedrock}, {false, &provider_mock},
    {true, &provider_openai},     {true, &provider_gemini},  {true, &provider_bedrock},  {true, &provider_mock},
};

static const char *front_name(const struct path *p)
{
    return p->anthropic_front ? "anthropic" : "openai";
}

static void test_nul_refused(void)
{
    static const char openai_body[] =
        "{\"model\":\"m\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"before\\u0000after\"}]}";
    static const char anthropic_body[] =
        "{\"model\":\"m\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"before\\u0000after\"}]}";
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const struct path *p = &paths[i];
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        struct gw_error err;
        int rc = encode(p->anthropic_front, p->prov, p->anthropic_front ? anthropic_body : openai_body, &out, &err);
        if (!ok(rc == -1))
            printf("#   %s -> %s sent upstream: %.*s\n", front_name(p), p->prov->name, (int)out.len, out.data);
        is_int(err.status, 400);
        is_int(err.type, GW_ERR_INVALID_REQUEST);
        ok(strstr(err.message, "NUL") != NULL);
        is_str(err.param, "messages");
        buf_free(&out);
    }
}

/* "\\u0000" in JSON is a backslash and "u0000": six characters, no NUL, kept as they are. */
static void test_lookalike_kept(void)
{
    static const char body[] =
        "{\"model\":\"m\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"before\\\\u0000after\"}]}";
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const struct path *p = &paths[i];
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        struct gw_error err;
        int rc = encode(p->anthropic_front, p->prov, body, &out, &err);
        if (!ok(rc == 0))
            printf("#   %s -> %s refused: %s\n", front_name(p), p->prov->name, err.message);
        if (!ok(out.data && strstr(out.data, "before\\\\u0000after") != NULL))
            printf("#   %s -> %s sent: %.*s\n", front_name(p), p->prov->name, (int)out.len, out.data);
        buf_free(&out);
    }
}

/* Tool-call arguments are JSON inside a string: their \u0000 is written \\u0000 in the body, and becomes a NUL only
 * when the providers parse the arguments. */
static void test_nul_in_arguments(void)
{
    static const char body[] =
        "{\"model\":\"m\",\"max_tokens\":8,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}}}],\"messages\":["
        "{\"role\":\"user\",\"content\":\"go\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\\\"before\\\\u0000after\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"ok\"}]}";
    const struct provider_ops *provs[] = {&provider_anthropic, &provider_gemini, &provider_bedrock};
    for (size_t i = 0; i < 3; i++) {
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        struct gw_error err;
        int rc = encode(false, provs[i], body, &out, &err);
        if (!ok(rc == -1))
            printf("#   openai -> %s sent upstream: %.*s\n", provs[i]->name, (int)out.len, out.data);
        is_int(err.status, 400);
        ok(strstr(err.message, "NUL") != NULL);
        buf_free(&out);
    }
}

static void test_scanner(void)
{
    char key[64];
    ok(!canon_json_has_nul("{\"a\":\"x\\\\u0000\"}", 16, key, sizeof(key)));
    ok(canon_json_has_nul("{\"a\":\"x\\u0000\"}", 15, key, sizeof(key)));
    is_str(key, "a");
    ok(canon_json_has_nul("{\"a\":1,\"bb\":[{\"c\":\"\\u0000\"}]}", 28, key, sizeof(key)));
    is_str(key, "bb");
    ok(canon_json_has_nul("{\"k\\u0000\":1}", 13, key, sizeof(key)));
    ok(!canon_json_has_nul("{\"a\":\"\\u00001\"}", 11, key, sizeof(key))); /* text cut inside the escape */
    ok(!canon_json_has_nul("{\"a\":\"\\u0001\"}", 14, key, sizeof(key)));
    ok(canon_json_has_nul("[\"\\u0000\"]", 10, NULL, 0));
}

int main(void)
{
    subtest("scanner", test_scanner);
    subtest("a NUL in a translated request is refused on every path", test_nul_refused);
    subtest("text that looks like the escape keeps its bytes", test_lookalike_kept);
    subtest("a NUL inside tool-call arguments is refused", test_nul_in_arguments);
    return done_testing();
}
