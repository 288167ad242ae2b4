/* test_responses_stream.c: the Responses stream encoder's direct writers (gateway/responses.c) against the
 * tree-built encoder they replaced (responses_stream_ref.h), fed the same chat deltas: the same events in the
 * same order, each event's JSON equal once parsed (fields, order and values), the same sequence numbers, and the
 * same final Response (the one the store keeps). The corpus: unicode, every escape, control bytes, tool calls
 * (several, interleaved with text, unknown indexes, no call id), every finish (stop, length, content_filter,
 * tool_calls), usage from the deltas or the exchange or none, streams cut by an error, empty streams, and
 * requests echoing every parameter the Response carries (instructions, tools, text.format, reasoning, metadata,
 * numbers that are not integers); then a few hundred random streams over random bytes. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/responses.h"
#include "test.h"
#include "gateway/responses_stream_ref.h"

static int cases;

struct evs {
    int n;
    char *name[4096];
    cJSON *data[4096];
};

/* Splits an SSE text into (name, parsed data); a malformed event fails the test. */
static void split(const char *sse, size_t len, struct evs *e)
{
    e->n = 0;
    const char *p = sse, *end = sse + len;
    while (p < end && e->n < 4096) {
        if (!ok(strncmp(p, "event: ", 7) == 0))
            return;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!ok(nl != NULL && strncmp(nl + 1, "data: ", 6) == 0))
            return;
        const char *d = nl + 7;
        const char *stop = strstr(d, "\n\n");
        if (!ok(stop != NULL))
            return;
        e->name[e->n] = xstrndup(p + 7, (size_t)(nl - p - 7));
        e->data[e->n] = cJSON_ParseWithLength(d, (size_t)(stop - d));
        if (!ok(e->data[e->n] != NULL))
            printf("#   unparsable event: %.*s\n", (int)(stop - d > 300 ? 300 : stop - d), d);
        e->n++;
        p = stop + 2;
    }
}

static void evs_free(struct evs *e)
{
    for (int i = 0; i < e->n; i++) {
        xfree(e->name[i]);
        cJSON_Delete(e->data[i]);
    }
    e->n = 0;
}

/* Equal as parsed JSON, member order included: both reprinted by cJSON. */
static bool same_json(const cJSON *a, const cJSON *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(b);
    bool same = x && y && strcmp(x, y) == 0 && cJSON_Compare(a, b, true);
    if (!same)
        printf("#   new: %.600s\n#   old: %.600s\n", x ? x : "(null)", y ? y : "(null)");
    cJSON_free(x);
    cJSON_free(y);
    return same;
}

enum op_kind { OP_DELTA, OP_END };
struct op {
    enum op_kind kind;
    struct chat_delta d;
    bool with_usage, with_err;
    struct usage u;
};

/* Runs ops through both encoders and compares everything. from_request: the direct encoder started with
 * responses_stream_start (the front door's way, no skeleton tree) instead of responses_stream_new. */
static void run_one(const char *label, const char *req_json, const struct op *ops, int nops, bool from_request)
{
    cJSON *req = cJSON_Parse(req_json);
    if (!ok(req != NULL)) {
        printf("#   %s: bad request JSON\n", label);
        return;
    }
    struct responses_stream *s =
        from_request ? responses_stream_start(req, "resp_T3st", 1733300000, "gpt-x")
                     : responses_stream_new(responses_skeleton(req, "resp_T3st", 1733300000, "gpt-x"));
    struct ref_stream *r = ref_stream_new(responses_skeleton(req, "resp_T3st", 1733300000, "gpt-x"));
    struct buf a = BUF_INIT(BUF_UNBOUNDED), b = BUF_INIT(BUF_UNBOUNDED);
    struct gw_error err;
    gw_error_set(&err, 502, GW_ERR_API, "upstream \"went\" away\n\xe2\x9c\x97 \x01");
    bool ended = false;
    for (int i = 0; i < nops; i++) {
        if (ops[i].kind == OP_DELTA) {
            responses_stream_delta(s, &ops[i].d, &a);
            ref_stream_delta(r, &ops[i].d, &b);
        } else {
            responses_stream_end(s, ops[i].with_usage ? &ops[i].u : NULL, ops[i].with_err ? &err : NULL, &a);
            ref_stream_end(r, ops[i].with_usage ? &ops[i].u : NULL, ops[i].with_err ? &err : NULL, &b);
            ended = true;
        }
    }
    if (!ended) {
        responses_stream_end(s, NULL, NULL, &a);
        ref_stream_end(r, NULL, NULL, &b);
    }
    struct evs *ea = xcalloc(1, sizeof(*ea)), *eb = xcalloc(1, sizeof(*eb));
    split(a.data, a.len, ea);
    split(b.data, b.len, eb);
    bool good = ea->n == eb->n;
    for (int i = 0; good && i < ea->n; i++) {
        if (strcmp(ea->name[i], eb->name[i]) != 0 || !same_json(ea->data[i], eb->data[i])) {
            printf("#   %s: event %d (%s vs %s) differs\n", label, i, ea->name[i], eb->name[i]);
            good = false;
        }
    }
    if (ea->n != eb->n)
        printf("#   %s: %d events, the tree-built encoder %d\n", label, ea->n, eb->n);
    if (!ok(good))
        printf("#   case %s (%s)\n", label, from_request ? "responses_stream_start" : "responses_stream_new");
    is_int(responses_stream_seq(s), ref_stream_seq(r));
    /* the final Response (what the store keeps) */
    if (!ok(same_json(responses_stream_response(s), ref_stream_response(r))))
        printf("#   %s: final Response differs\n", label);
    evs_free(ea);
    evs_free(eb);
    xfree(ea);
    xfree(eb);
    buf_free(&a);
    buf_free(&b);
    responses_stream_free(s);
    ref_stream_free(r);
    cJSON_Delete(req);
}

static void run_case(const char *label, const char *req_json, const struct op *ops, int nops)
{
    cases++;
    run_one(label, req_json, ops, nops, false);
    run_one(label, req_json, ops, nops, true);
}

static struct op text(const char *t)
{
    return (struct op){.kind = OP_DELTA, .d = {.kind = DELTA_TEXT, .text = str_from(t)}};
}
static struct op tstart(int idx, const char *id, const char *name)
{
    return (struct op){.kind = OP_DELTA,
                       .d = {.kind = DELTA_TOOL_START, .tool_index = idx, .tool_id = str_from(id),
                             .tool_name = str_from(name)}};
}
static struct op targs(int idx, const char *t)
{
    return (struct op){.kind = OP_DELTA, .d = {.kind = DELTA_TOOL_ARGS, .tool_index = idx, .text = str_from(t)}};
}
static struct op fin(enum finish f)
{
    return (struct op){.kind = OP_DELTA, .d = {.kind = DELTA_FINISH, .finish = f}};
}
static struct op usage_d(int64_t in, int64_t out, int64_t cached, int64_t reasoning)
{
    struct usage u = {.input = in, .output = out, .cached_input = cached, .reasoning = reasoning, .known = true};
    return (struct op){.kind = OP_DELTA, .d = {.kind = DELTA_USAGE, .usage = u}};
}
static struct op end(bool with_err, const struct usage *u)
{
    struct op o = {.kind = OP_END, .with_err = with_err, .with_usage = u != NULL};
    if (u)
        o.u = *u;
    return o;
}

#define RUN(label, req, ...)                                                                                       \
    do {                                                                                                           \
        const struct op ops_[] = {__VA_ARGS__};                                                                    \
        run_case(label, req, ops_, (int)(sizeof(ops_) / sizeof(ops_[0])));                                         \
    } while (0)

static const char *const REQ_MIN = "{\"model\":\"m\",\"input\":\"x\",\"stream\":true}";
static const char *const REQ_FULL =
    "{\"model\":\"m\",\"input\":\"x\",\"stream\":true,\"store\":false,\"instructions\":\"Be \\\"terse\\\"\\n\\t"
    "caf\\u00e9 \\ud83c\\udf0d \\u0001 </script>\",\"max_output_tokens\":256,\"temperature\":0.7,\"top_p\":0.35,"
    "\"top_logprobs\":3,\"parallel_tool_calls\":false,\"previous_response_id\":\"resp_prev\",\"prompt_cache_key\":"
    "\"k\\u00ff\",\"user\":\"u-1\",\"safety_identifier\":\"s\",\"truncation\":\"auto\",\"max_tool_calls\":4,"
    "\"reasoning\":{\"effort\":\"high\",\"summary\":\"auto\"},\"text\":{\"format\":{\"type\":\"json_schema\","
    "\"name\":\"out\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\","
    "\"minimum\":-1.5e-7,\"maximum\":1e300}},\"required\":[\"a\"],\"additionalProperties\":false}},"
    "\"verbosity\":\"low\"},\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"Weather "
    "in \\\"a\\\" city\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[]},\"strict\":null}],\"tool_choice\":{\"type\":\"function\",\"name\":\"get_weather\"},"
    "\"metadata\":{\"k1\":\"v\\\\1\",\"\\u65e5\":\"\\u672c\"},\"include\":[\"reasoning.encrypted_content\"]}";

static void test_corpus(void)
{
    struct usage u_end = {.input = 12, .output = 34, .cached_input = 5, .reasoning = 7, .known = true};
    struct usage u_bad = {.invalid = true};
    struct usage u_none = {0};
    RUN("empty", REQ_MIN, end(false, NULL));
    RUN("empty full request", REQ_FULL, end(false, NULL));
    RUN("text", REQ_MIN, text("Hel"), text("lo"), fin(FINISH_STOP), usage_d(4, 6, 0, 1));
    RUN("unicode", REQ_FULL, text("h\xc3\xa9llo "), text("\xf0\x9f\x8c\x8d \xe6\x97\xa5\xe6\x9c\xac"),
        text("\xe2\x80\xa8\xe2\x80\xa9 \xef\xbb\xbf"), fin(FINISH_STOP), usage_d(1, 2, 0, 0));
    RUN("escapes", REQ_MIN, text("quote \" backslash \\ slash / nl \n cr \r tab \t bs \b ff \f"),
        text("\x01\x02\x1b\x1f\x7f </script> \\u0000 \\\""), fin(FINISH_STOP));
    RUN("tool call", REQ_FULL, tstart(0, "call_9", "get_weather"), targs(0, "{\"city\":"), targs(0, "\"Paris \\\"x\\\"\"}"),
        fin(FINISH_TOOL_CALLS), usage_d(4, 6, 2, 1));
    RUN("text then tools", REQ_MIN, text("Let me check.\n"), tstart(0, "call_a", "f"), targs(0, "{}"),
        tstart(1, "", "g\"name"), targs(1, "{\"q\":\"\xc3\xa9\\n\"}"), targs(7, "{\"lost\":1}"), targs(0, ""),
        fin(FINISH_TOOL_CALLS));
    RUN("text after tool (second message)", REQ_MIN, text("one"), tstart(0, "c0", "f"), targs(0, "{\"a\":1}"),
        text("two"), text(" \"three\""), tstart(1, "c1", "f"), text("four"), fin(FINISH_STOP),
        end(false, &u_end));
    RUN("length: incomplete", REQ_FULL, text("cut"), fin(FINISH_LENGTH), end(false, &u_end));
    RUN("content filter: incomplete", REQ_MIN, text("bad"), fin(FINISH_CONTENT_FILTER), usage_d(1, 1, 0, 0));
    RUN("usage from the exchange wins", REQ_MIN, text("x"), usage_d(1, 1, 0, 0), end(false, &u_end));
    RUN("invalid usage from the exchange", REQ_MIN, text("x"), usage_d(1, 1, 0, 0), end(false, &u_bad));
    RUN("no usage at all", REQ_MIN, text("x"), end(false, &u_none));
    RUN("cut mid-text", REQ_FULL, text("par"), text("tial \xe2\x9c\x93"), end(true, NULL));
    RUN("cut mid-tool", REQ_MIN, text("a"), tstart(0, "c", "f"), targs(0, "{\"a\":"), end(true, &u_end));
    RUN("cut before anything", REQ_MIN, end(true, NULL));
    RUN("deltas after the end are ignored", REQ_MIN, text("a"), end(false, NULL), text("b"), end(true, NULL));
    RUN("empty deltas", REQ_MIN, text(""), targs(0, "x"), fin(FINISH_STOP));
    RUN("request echo: odd values", "{\"model\":\"m\",\"input\":\"x\",\"temperature\":1.0000000000000002,"
                                    "\"top_p\":0.1,\"metadata\":{},\"tools\":[],\"instructions\":null,"
                                    "\"max_output_tokens\":9007199254740993,\"reasoning\":{\"effort\":null},"
                                    "\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":null}}",
        text("ok"));
    RUN("request echo: partial objects", "{\"model\":\"m\",\"input\":\"x\",\"store\":true,\"reasoning\":{\"summary\":"
                                        "\"concise\"},\"text\":{\"verbosity\":\"high\"},\"tool_choice\":\"none\","
                                        "\"metadata\":null,\"user\":\"\\u2028\"}",
        text("ok"), fin(FINISH_LENGTH));
}

/* Random streams: random bytes (no NUL: a chat delta's text never carries one, the decoders refuse it), random
 * tool indexes and finishes, sometimes cut. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void test_random(void)
{
    static char pool[64][48];
    for (int round = 0; round < 300; round++) {
        struct op ops[40];
        int n = 0;
        int nops = 1 + (int)(next() % 38);
        for (int i = 0; i < nops; i++) {
            char *t = pool[i % 64];
            size_t len = next() % (sizeof(pool[0]) - 1);
            for (size_t j = 0; j < len; j++) {
                uint32_t k = next() % 10;
                t[j] = (char)(k < 5 ? ' ' + next() % 95 : k < 7 ? 1 + next() % 31 : k < 8 ? '"' : k < 9 ? '\\'
                                                                                                  : 0x80 + next() % 128);
            }
            t[len] = '\0';
            switch (next() % 8) {
            case 0: ops[n++] = tstart((int)(next() % 3), next() % 2 ? t : "", t); break;
            case 1: case 2: ops[n++] = targs((int)(next() % 3), t); break;
            case 3: ops[n++] = fin((enum finish)(next() % 5)); break;
            case 4: ops[n++] = usage_d(next() % 100, next() % 100, next() % 10, next() % 10); break;
            default: ops[n++] = text(t); break;
            }
        }
        struct usage u = {.input = next() % 50, .output = next() % 50, .known = next() % 2 == 0};
        if (next() % 3 == 0)
            ops[n++] = end(next() % 2 == 0, next() % 2 ? &u : NULL);
        char label[32];
        snprintf(label, sizeof(label), "random %d", round);
        run_case(label, round % 2 ? REQ_FULL : REQ_MIN, ops, n);
    }
}

int main(void)
{
    subtest("corpus", test_corpus);
    subtest("random streams", test_random);
    printf("# %d streams compared\n", cases);
    ok(cases == 320);
    return done_testing();
}
