/* The scanned decoder of OpenAI stream chunks (wire_openai_scan_chunk): text chunks are read without a tree, and
 * whatever it accepts must mean exactly what a full parse (cJSON) says the chunk means. Checked on realistic chunks
 * with every kind of escape, on the shapes it must decline (tool calls, errors, duplicate keys, malformed), and on
 * 20,000 deterministic mutations of them, where every accepted input is compared against the tree. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/gw_types.h"
#include "gateway/wire_openai.h"
#include "test.h"

/* What the chunk means, read from a tree (the reference). */
struct ref {
    char model[256];
    char text[4096];
    bool has_text;
    bool has_finish;
    enum finish finish;
};

static bool ref_decode(const char *s, size_t n, struct ref *r)
{
    memset(r, 0, sizeof(*r));
    cJSON *t = cJSON_ParseWithLength(s, n);
    if (t == NULL)
        return false;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(t, "model");
    if (cJSON_IsString(m))
        snprintf(r->model, sizeof(r->model), "%s", m->valuestring);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "choices"), 0);
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    if (cJSON_IsString(content) && content->valuestring[0]) {
        r->has_text = true;
        snprintf(r->text, sizeof(r->text), "%s", content->valuestring);
    }
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    if (cJSON_IsString(fr)) {
        r->has_finish = true;
        r->finish = gw_finish_from_openai(fr->valuestring);
    }
    cJSON_Delete(t);
    return true;
}

/* 1 when the scan accepted and agrees with the tree, 0 when it declined, -1 when it accepted and disagrees. */
static int compare(const char *s, size_t n)
{
    struct buf scratch = BUF_INIT(BUF_UNBOUNDED);
    struct openai_chunk c;
    int rc = wire_openai_scan_chunk(str_make(s, n), &scratch, &c);
    if (rc != 0) {
        buf_free(&scratch);
        return 0;
    }
    struct ref r;
    int verdict = 1;
    if (!ref_decode(s, n, &r)) {
        verdict = -1; /* the scan accepted what a parser refuses */
    } else {
        /* cJSON strings end at an escaped NUL: compare up to it */
        size_t tn = c.text.p ? strnlen(c.text.p, c.text.n) : 0;
        bool has_text = c.text.p != NULL && c.text.n > 0 && tn > 0;
        if (has_text != r.has_text || (has_text && (strlen(r.text) != tn || memcmp(r.text, c.text.p, tn) != 0)))
            verdict = -1;
        if (strcmp(c.model, r.model) != 0 || c.has_finish != r.has_finish ||
            (c.has_finish && c.finish != r.finish))
            verdict = -1;
    }
    if (verdict < 0)
        printf("# disagreement on: %.*s\n", (int)n, s);
    buf_free(&scratch);
    return verdict;
}

static const char *const corpus[] = {
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}",
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hello, world\"},\"finish_reason\":null}]}",
    "{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"line\\nbreak \\\"quoted\\\" back\\\\slash \\/ tab\\t\"}}]}",
    "{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"caf\\u00e9 \\ud83d\\ude00 \\u4e2d\"}}]}",
    "{\"model\":\"mod\\u0065l-\\\"x\\\"\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
    "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}",
    "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}",
    "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}",
    "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
    "{\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46,"
    "\"prompt_tokens_details\":{\"cached_tokens\":5},\"completion_tokens_details\":{\"reasoning_tokens\":7}}}",
    "{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":null,\"tool_calls\":null}}],\"usage\":null,\"error\":null}",
    "{\"choices\":[{\"delta\":null}]}",
    "{\"choices\":[1,2]}",
    "{\"choices\":{\"delta\":{\"content\":\"not an array\"}}}",
    "{\"choices\":[{\"delta\":{\"content\":42}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"first\"}},{\"delta\":{\"content\":\"second\"}}]}",
    "  {\"choices\":[{\"delta\":{\"content\":\"spaces around\"}}]}  ",
};

/* Shapes the scan must decline, so the tree decoder handles them whole. */
static const char *const declined[] = {
    ("{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\","
     "\"arguments\":\"\"}}]}}]}"),
    "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}",
    "{\"model\":\"a\",\"model\":\"b\",\"choices\":[]}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"unterminated}}]}",
    "[1,2,3]",
    "",
};

static void test_corpus(void)
{
    for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++)
        is_int(compare(corpus[i], strlen(corpus[i])), 1); /* accepted (the fast path is taken) and agrees */
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        is_int(compare(declined[i], strlen(declined[i])), 0);
}

static void test_fields(void)
{
    struct buf scratch = BUF_INIT(BUF_UNBOUNDED);
    struct openai_chunk c;
    const char *s = corpus[3];
    ok(wire_openai_scan_chunk(str_make(s, strlen(s)), &scratch, &c) == 0);
    ok(c.text.n == strlen("caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xb8\xad") &&
       memcmp(c.text.p, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xb8\xad", c.text.n) == 0);
    s = corpus[1];
    ok(wire_openai_scan_chunk(str_make(s, strlen(s)), &scratch, &c) == 0);
    ok(c.text.p >= s && c.text.p < s + strlen(s)); /* no escape: pointed at in place, nothing copied */
    is_str(c.model, "gpt-4o");
    ok(!c.has_finish);
    s = corpus[9];
    ok(wire_openai_scan_chunk(str_make(s, strlen(s)), &scratch, &c) == 0);
    ok(c.usage.known);
    is_int(c.usage.input, 12);
    is_int(c.usage.output, 34);
    is_int(c.usage.cached_input, 5);
    is_int(c.usage.reasoning, 7);
    /* an escaped NUL keeps its bytes (the tree decoder stops there) */
    s = "{\"choices\":[{\"delta\":{\"content\":\"before\\u0000after\"}}]}";
    ok(wire_openai_scan_chunk(str_make(s, strlen(s)), &scratch, &c) == 0);
    ok(c.text.n == 12 && memcmp(c.text.p, "before\0after", 12) == 0);
    buf_free(&scratch);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void test_mutations(void)
{
    static const char alphabet[] = "{}[]\":,\\u0nlt9-. aez";
    char s[1024];
    int accepted = 0, disagreements = 0;
    const size_t ncorpus = sizeof(corpus) / sizeof(corpus[0]);
    for (int i = 0; i < 20000; i++) {
        const char *base = corpus[next() % ncorpus];
        size_t n = strlen(base);
        memcpy(s, base, n);
        int edits = 1 + (int)(next() % 3);
        for (int e = 0; e < edits && n > 0; e++) {
            size_t at = next() % n;
            switch (next() % 3) {
            case 0: s[at] = alphabet[next() % (sizeof(alphabet) - 1)]; break;
            case 1: memmove(s + at, s + at + 1, n - at - 1); n--; break;
            default:
                if (n + 1 < sizeof(s)) {
                    memmove(s + at + 1, s + at, n - at);
                    s[at] = alphabet[next() % (sizeof(alphabet) - 1)];
                    n++;
                }
            }
        }
        int v = compare(s, n);
        accepted += v == 1;
        disagreements += v < 0;
    }
    is_int(disagreements, 0);
    ok(accepted > 1000); /* the comparison ran on many accepted inputs, not only on refusals */
}

int main(void)
{
    subtest("corpus: accepted and equal to the tree; declined shapes", test_corpus);
    subtest("fields", test_fields);
    subtest("20000 mutations: whatever the scan accepts, the tree reads the same", test_mutations);
    return done_testing();
}
