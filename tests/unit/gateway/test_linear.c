/* Linear translation (issue 15, item 1): for each front door (OpenAI chat, Anthropic messages) and each provider
 * that translates for it (anthropic, gemini, bedrock, openai when the client speaks Anthropic, mock), the worst
 * shapes we know (alternating roles, thousands of tool calls and results, parallel calls, many content parts,
 * big and deep tool schemas, duplicate schema keys, many stop sequences, streamed events, big upstream
 * responses) are built at N and 2N bytes and run through what a worker does with them: the front door's parse,
 * its translation to the canonical request, the provider's encoding (or the mock's reply), and, the other way,
 * the provider's decoding of a response or of stream events and the front door's writing of it. Each must
 * complete, and doubling the input must at most about double the CPU time (checked as <= 3x on the minimum
 * of a few runs, so that a noisy machine does not flake; a quadratic path gives 4x).
 *
 * Bench mode (figures, not a test): AGENTD_LINEAR_BENCH=1,4,16 prints the worst CPU time per front x provider
 * pair at those sizes in MiB, each shape in a child process killed after AGENTD_LINEAR_CAP seconds (default
 * 60). AGENTD_LINEAR_KIB sets N for the test (default 256). */
#include "gateway/front.h"
#include "gateway/providers/mock.c"

#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway/providers/anthropic.h"
#include "gateway/exchange.h"
#include "net/http.h"
#include "test.h"

enum { F_OPENAI, F_ANTHROPIC, F_N };
enum { P_ANTHROPIC, P_GEMINI, P_BEDROCK, P_OPENAI, P_MOCK, P_N };
static const char *const front_names[F_N] = {"openai-chat", "anthropic-messages"};
static const char *const prov_names[P_N] = {"anthropic", "gemini", "bedrock", "openai", "mock"};

static const struct provider_ops *prov_of(int p)
{
    switch (p) {
    case P_ANTHROPIC: return &provider_anthropic;
    case P_GEMINI: return &provider_gemini;
    case P_BEDROCK: return &provider_bedrock;
    case P_OPENAI: return &provider_openai;
    default: return &provider_mock;
    }
}

/* The pairs that translate: an OpenAI client to an OpenAI upstream, and an Anthropic client to Anthropic, are
 * passthrough (bytes spliced, no tree). */
static bool translates(int f, int p)
{
    return !((f == F_OPENAI && p == P_OPENAI) || (f == F_ANTHROPIC && p == P_ANTHROPIC));
}

/* ---------- shapes: request bodies ---------- */

enum shape {
    S_TURNS,     /* alternating user / assistant messages */
    S_TOOLS,     /* assistant calls a tool, the tool answers, again and again */
    S_PARALLEL,  /* one assistant turn with thousands of calls, then all their results */
    S_PARTS,     /* one user message of many content parts */
    S_SCHEMA,    /* a tool schema with many properties, all required, and deep nesting */
    S_DUPKEYS,   /* a tool schema naming the same keywords over and over */
    S_STOPS,     /* many stop sequences and a long last message (the mock applies them) */
    S_CALLS,     /* many tools and a last message full of CALL directives (the mock reads them) */
    S_RESPONSE,  /* a big upstream response: many text blocks and tool calls */
    S_STREAM,    /* many upstream stream events */
    S_N
};
static const char *const shape_names[S_N] = {"turns", "tools", "parallel", "parts",    "schema",
                                             "dupkeys", "stops", "calls",  "response", "stream"};

static void open_body(int f, struct buf *b)
{
    buf_append_str(b, "{\"model\":\"m\",\"max_tokens\":16,");
    (void)f;
}

static void tools_def(int f, struct buf *b, int ntools)
{
    buf_append_str(b, "\"tools\":[");
    for (int i = 0; i < ntools; i++) {
        if (i)
            buf_append_char(b, ',');
        if (f == F_OPENAI)
            buf_printf(b,
                       "{\"type\":\"function\",\"function\":{\"name\":\"f%d\",\"parameters\":{\"type\":\"object\","
                       "\"properties\":{\"x\":{\"type\":\"string\"}}}}}",
                       i);
        else
            buf_printf(b, "{\"name\":\"f%d\",\"input_schema\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":"
                          "\"string\"}}}}",
                       i);
    }
    buf_append_str(b, "]");
}

/* Messages whose serialized size reaches `size`. */
static void build_request(int f, enum shape s, size_t size, struct buf *b)
{
    buf_reset(b);
    open_body(f, b);
    bool oa = f == F_OPENAI;
    switch (s) {
    case S_TURNS:
        buf_append_str(b, "\"messages\":[");
        for (int i = 0; b->len < size; i++)
            buf_printf(b, "%s{\"role\":\"user\",\"content\":\"u%d\"},{\"role\":\"assistant\",\"content\":\"a\"}",
                       i ? "," : "", i);
        buf_append_str(b, ",{\"role\":\"user\",\"content\":\"end\"}]}");
        break;
    case S_TOOLS:
        tools_def(f, b, 1);
        buf_append_str(b, ",\"messages\":[{\"role\":\"user\",\"content\":\"go\"}");
        for (int i = 0; b->len < size; i++) {
            if (oa)
                buf_printf(b,
                           ",{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_%d\",\"type\":"
                           "\"function\",\"function\":{\"name\":\"f0\",\"arguments\":\"{}\"}}]},"
                           "{\"role\":\"tool\",\"tool_call_id\":\"call_%d\",\"content\":\"r\"}",
                           i, i);
            else
                buf_printf(b,
                           ",{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"call_%d\",\"name\":"
                           "\"f0\",\"input\":{}}]},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
                           "\"tool_use_id\":\"call_%d\",\"content\":\"r\"}]}",
                           i, i);
        }
        buf_append_str(b, "]}");
        break;
    case S_PARALLEL: {
        tools_def(f, b, 1);
        buf_append_str(b, ",\"messages\":[{\"role\":\"user\",\"content\":\"go\"},");
        /* half the body for the calls, half for the results */
        int n = (int)(size / 2 / (oa ? 90 : 70));
        if (n < 1)
            n = 1;
        buf_append_str(b, oa ? "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                             : "{\"role\":\"assistant\",\"content\":[");
        for (int i = 0; i < n; i++)
            buf_printf(b,
                       oa ? "%s{\"id\":\"call_%d\",\"type\":\"function\",\"function\":{\"name\":\"f0\",\"arguments\":"
                            "\"{}\"}}"
                          : "%s{\"type\":\"tool_use\",\"id\":\"call_%d\",\"name\":\"f0\",\"input\":{}}",
                       i ? "," : "", i);
        buf_append_str(b, "]}");
        if (oa) {
            for (int i = 0; i < n; i++)
                buf_printf(b, ",{\"role\":\"tool\",\"tool_call_id\":\"call_%d\",\"content\":\"r\"}", i);
        } else {
            buf_append_str(b, ",{\"role\":\"user\",\"content\":[");
            for (int i = 0; i < n; i++)
                buf_printf(b, "%s{\"type\":\"tool_result\",\"tool_use_id\":\"call_%d\",\"content\":\"r\"}",
                           i ? "," : "", i);
            buf_append_str(b, "]}");
        }
        buf_append_str(b, "]}");
        break;
    }
    case S_PARTS:
        buf_append_str(b, "\"messages\":[{\"role\":\"user\",\"content\":[");
        for (int i = 0; b->len < size; i++)
            buf_printf(b, "%s{\"type\":\"text\",\"text\":\"p%d\"}", i ? "," : "", i);
        buf_append_str(b, "]}]}");
        break;
    case S_SCHEMA:
    case S_DUPKEYS: {
        buf_append_str(b, oa ? "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f0\",\"parameters\":"
                             : "\"tools\":[{\"name\":\"f0\",\"input_schema\":");
        /* deep but allowed nesting first */
        buf_append_str(b, "{\"type\":\"object\",\"properties\":{");
        for (int d = 0; d < 20; d++)
            buf_append_str(b, "\"n\":{\"type\":\"object\",\"properties\":{");
        buf_append_str(b, "\"leaf\":{\"type\":\"string\"}");
        for (int d = 0; d < 20; d++)
            buf_append_str(b, "}}");
        if (s == S_SCHEMA) {
            int n = (int)(size / 40);
            for (int i = 0; i < n; i++)
                buf_printf(b, ",\"p%d\":{\"type\":\"string\"}", i);
            buf_append_str(b, "},\"required\":[\"n\"");
            for (int i = 0; i < n; i++)
                buf_printf(b, ",\"p%d\"", i);
            buf_append_str(b, "]}");
        } else {
            buf_append_str(b, ",\"d\":{");
            int n = (int)(size / 2 / 14);
            for (int i = 0; i < n; i++)
                buf_printf(b, "%s\"title\":\"t\"", i ? "," : "");
            for (int i = 0; i < n; i++)
                buf_append_str(b, ",\"enum\":[\"a\"]");
            buf_append_str(b, "}}}");
        }
        buf_append_str(b, oa ? "}}]," : "}],");
        buf_append_str(b, "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
        break;
    }
    case S_STOPS: {
        buf_append_str(b, oa ? "\"stop\":[" : "\"stop_sequences\":[");
        int n = (int)(size / 2 / 8);
        for (int i = 0; i < n; i++)
            buf_printf(b, "%s\"zq%d\"", i ? "," : "", i % 100000);
        buf_append_str(b, "],\"messages\":[{\"role\":\"user\",\"content\":\"");
        size_t target = b->len + size / 2;
        while (b->len < target)
            buf_append_str(b, "word ");
        buf_append_str(b, "\"}]}");
        break;
    }
    case S_CALLS: {
        int n = (int)(size / 2 / 120);
        tools_def(f, b, n > 0 ? n : 1);
        buf_append_str(b, ",\"messages\":[{\"role\":\"user\",\"content\":\"");
        size_t target = b->len + size / 2;
        while (b->len < target)
            buf_append_str(b, "CALL nope {} CALL f0 {");
        buf_append_str(b, "\"}]}");
        break;
    }
    default: break;
    }
}

/* ---------- shapes: upstream responses and stream events ---------- */

static void build_response(int p, size_t size, struct buf *b)
{
    buf_reset(b);
    switch (p) {
    case P_ANTHROPIC:
        buf_append_str(b, "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[");
        for (int i = 0; b->len < size; i++)
            buf_printf(b,
                       "%s{\"type\":\"text\",\"text\":\"t%d\"},{\"type\":\"tool_use\",\"id\":\"tu_%d\",\"name\":\"f\","
                       "\"input\":{\"a\":[1,{\"b\":2}]}}",
                       i ? "," : "", i, i);
        buf_append_str(b, "],\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}");
        break;
    case P_GEMINI:
        buf_append_str(b, "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[");
        for (int i = 0; b->len < size; i++)
            buf_printf(b, "%s{\"text\":\"t%d\"},{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":[1,{\"b\":2}]}}}",
                       i ? "," : "", i);
        buf_append_str(b, "]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":1,"
                          "\"candidatesTokenCount\":1}}");
        break;
    case P_BEDROCK:
        buf_append_str(b, "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[");
        for (int i = 0; b->len < size; i++)
            buf_printf(b,
                       "%s{\"text\":\"t%d\"},{\"toolUse\":{\"toolUseId\":\"tu_%d\",\"name\":\"f\",\"input\":{\"a\":"
                       "[1,{\"b\":2}]}}}",
                       i ? "," : "", i, i);
        buf_append_str(b, "]}},\"stopReason\":\"tool_use\",\"usage\":{\"inputTokens\":1,\"outputTokens\":1}}");
        break;
    default:
        buf_append_str(b, "{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[{\"index\":0,"
                          "\"message\":{\"role\":\"assistant\",\"content\":\"hello\",\"tool_calls\":[");
        for (int i = 0; b->len < size; i++)
            buf_printf(b,
                       "%s{\"id\":\"call_%d\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                       "\"{\\\"a\\\":[1,{\\\"b\\\":2}]}\"}}",
                       i ? "," : "", i);
        buf_append_str(b, "]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":1,"
                          "\"completion_tokens\":1}}");
        break;
    }
}

/* Stream events, NUL-separated pairs "event\0data\0", of about `size` bytes in all. */
static void build_stream(int p, size_t size, struct buf *b)
{
    buf_reset(b);
#define EV(e, d) (buf_append(b, e, strlen(e) + 1), buf_append(b, d, strlen(d) + 1))
    char d[512];
    switch (p) {
    case P_ANTHROPIC:
        EV("message_start", "{\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}");
        for (int i = 0; b->len < size; i++) {
            int idx = i % ANTHROPIC_MAX_BLOCKS;
            snprintf(d, sizeof(d),
                     "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":{\"type\":\"tool_use\",\"id\":"
                     "\"tu_%d\",\"name\":\"f\",\"input\":{}}}",
                     idx, i);
            EV("content_block_start", d);
            snprintf(d, sizeof(d),
                     "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"input_json_delta\","
                     "\"partial_json\":\"{}\"}}",
                     idx);
            EV("content_block_delta", d);
            snprintf(d, sizeof(d), "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"text_delta\","
                                   "\"text\":\"x\"}}",
                     idx);
            EV("content_block_delta", d);
        }
        EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":"
                            "{\"output_tokens\":1}}");
        EV("message_stop", "{\"type\":\"message_stop\"}");
        break;
    case P_GEMINI:
        for (int i = 0; b->len < size; i++)
            EV("", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"},{\"functionCall\":{\"name\":\"f\","
                   "\"args\":{}}}]}}]}");
        EV("", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"y\"}]},\"finishReason\":\"STOP\"}],"
               "\"usageMetadata\":{\"promptTokenCount\":1,\"candidatesTokenCount\":1}}");
        break;
    case P_BEDROCK:
        EV("messageStart", "{\"role\":\"assistant\"}");
        for (int i = 0; b->len < size; i++) {
            snprintf(d, sizeof(d),
                     "{\"contentBlockIndex\":%d,\"start\":{\"toolUse\":{\"toolUseId\":\"tu_%d\",\"name\":\"f\"}}}",
                     i % 1000, i);
            if (i < 1000)
                EV("contentBlockStart", d);
            snprintf(d, sizeof(d), "{\"contentBlockIndex\":%d,\"delta\":{\"toolUse\":{\"input\":\"{}\"}}}", i % 1000);
            EV("contentBlockDelta", d);
            EV("contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"x\"}}");
        }
        EV("messageStop", "{\"stopReason\":\"tool_use\"}");
        EV("metadata", "{\"usage\":{\"inputTokens\":1,\"outputTokens\":1}}");
        break;
    default:
        for (int i = 0; b->len < size; i++) {
            snprintf(d, sizeof(d),
                     "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\",\"tool_calls\":[{\"index\":%d,\"id\":"
                     "\"c%d\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
                     i % 200, i);
            EV("", d);
        }
        EV("", "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":"
               "{\"prompt_tokens\":1,\"completion_tokens\":1}}");
        EV("", "[DONE]");
        break;
    }
#undef EV
}

/* ---------- one run ---------- */

static const struct front_ops *front_ops_of(int f)
{
    return f == F_OPENAI ? &front_openai_chat : &front_anthropic;
}

struct rig {
    struct exchange ex;
    struct deployment dep;
    struct attempt a;
};

static void rig_init(struct rig *r, int f, int p, const struct buf *body)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->ex.rq.request_id, sizeof(r->ex.rq.request_id), "req-linear");
    r->ex.front = f == F_OPENAI ? FRONT_OPENAI_CHAT : FRONT_ANTHROPIC_MESSAGES;
    r->ex.fops = front_ops_of(f);
    r->ex.rq.body = body ? str_make(body->data, body->len) : str_make("{}", 2);
    r->ex.rq.max_tokens = -1;
    r->ex.done = true; /* stream deltas are decoded, not written to a client */
    snprintf(r->ex.id, sizeof(r->ex.id), "id-linear");
    snprintf(r->ex.rq.model_name, sizeof(r->ex.rq.model_name), "m");
    r->dep.prov = prov_of(p);
    r->dep.label = "linear:deployment";
    r->dep.model = "upstream-model";
    r->dep.base_url = "http://127.0.0.1:9";
    r->dep.api_key = "k";
    r->dep.region = "us-east-1";
    r->dep.aws_access_key_id = "AKIDEXAMPLE";
    r->dep.aws_secret_access_key = "secret";
    r->a.ex = &r->ex;
    r->a.dep = &r->dep;
    r->a.prov = prov_of(p);
    r->a.op = OP_CHAT;
    r->a.passthrough = !translates(f, p);
    r->ex.att = &r->a;
}

static void rig_free(struct rig *r)
{
    if (r->a.prov->free_state && r->a.prov != &provider_mock)
        r->a.prov->free_state(&r->a);
    cJSON_Delete(r->ex.canon);
    cJSON_Delete(r->ex.rq.client_tree);
}

/* Parse, translate, encode (or compose the mock's reply and write it). 0 when it all went through. */
static int run_request(int f, int p, const struct buf *body, char *why, size_t whysize)
{
    struct rig r;
    rig_init(&r, f, p, body);
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    int rc = -1;
    if (front_ops_of(f)->parse(&r.ex.rq, &err) != 0) {
        snprintf(why, whysize, "parse: %.300s", err.message);
        goto out;
    }
    if (p == P_MOCK) {
        const cJSON *canon = ex_attempt_canonical(&r.a, &err);
        if (canon == NULL) {
            snprintf(why, whysize, "to_canonical: %.300s", err.message);
            goto out;
        }
        struct mock_state *s = xcalloc(1, sizeof(*s));
        buf_init(&s->reply, BUF_UNBOUNDED);
        compose(s, &r.a, canon);
        cJSON *resp = completion_json(s, &r.a);
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        rc = front_ops_of(f)->write_response(&r.ex, resp, &out, &err);
        if (rc != 0)
            snprintf(why, whysize, "write_response: %.300s", err.message);
        buf_free(&out);
        cJSON_Delete(resp);
        state_free_now(s);
        goto out;
    }
    struct up_request up;
    up_request_init(&up);
    rc = r.a.prov->encode_request(&r.a, &up, &err);
    if (rc != 0)
        snprintf(why, whysize, "encode: %.300s", err.message);
    up_request_free(&up);
out:
    rig_free(&r);
    return rc;
}

static int run_response(int f, int p, const struct buf *body, char *why, size_t whysize)
{
    struct rig r;
    rig_init(&r, f, p, NULL);
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    cJSON *resp = NULL;
    int rc = r.a.prov->decode_response(&r.a, body->data, body->len, &resp, &err);
    if (rc != 0 || resp == NULL) {
        snprintf(why, whysize, "decode: %.300s", err.message);
        rig_free(&r);
        return -1;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    rc = front_ops_of(f)->write_response(&r.ex, resp, &out, &err);
    if (rc != 0)
        snprintf(why, whysize, "write_response: %.300s", err.message);
    buf_free(&out);
    cJSON_Delete(resp);
    rig_free(&r);
    return rc;
}

static int run_stream(int f, int p, const struct buf *events, char *why, size_t whysize)
{
    struct rig r;
    rig_init(&r, f, p, NULL);
    r.a.stream = true;
    struct gw_error err;
    int rc = 0;
    for (size_t off = 0; off < events->len && rc >= 0;) {
        const char *e = events->data + off;
        const char *d = e + strlen(e) + 1;
        off = (size_t)(d + strlen(d) + 1 - events->data);
        struct stream_event ev = {str_from(e), str_from(d), false};
        memset(&err, 0, sizeof(err));
        rc = r.a.prov->decode_stream_event(&r.a, &ev, &err);
    }
    if (rc < 0)
        snprintf(why, whysize, "stream: %.300s", err.message);
    /* the front door's writer, for as many deltas */
    struct exchange wex;
    memset(&wex, 0, sizeof(wex));
    snprintf(wex.id, sizeof(wex.id), "id");
    snprintf(wex.rq.model_name, sizeof(wex.rq.model_name), "m");
    wex.fops = front_ops_of(f);
    wex.fstate = wex.fops->stream_new ? wex.fops->stream_new() : NULL;
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    size_t n = events->len / 64;
    for (size_t i = 0; i < n; i++) {
        struct chat_delta d = {.kind = i % 3 == 0 ? DELTA_TEXT : i % 3 == 1 ? DELTA_TOOL_START : DELTA_TOOL_ARGS,
                               .text = STR_LIT("{}"),
                               .tool_index = (int)(i % 300),
                               .tool_id = STR_LIT("id"),
                               .tool_name = STR_LIT("f")};
        front_ops_of(f)->stream_delta(&wex, &d, &out);
        if (out.len > (1u << 20))
            buf_reset(&out);
    }
    front_ops_of(f)->stream_end(&wex, NULL, &out);
    if (wex.fstate)
        wex.fops->stream_free(wex.fstate);
    buf_free(&out);
    rig_free(&r);
    return rc < 0 ? -1 : 0;
}

static bool applies(int f, int p, enum shape s)
{
    /* The OpenAI door refuses more than 4 stop sequences (as OpenAI does), so that shape cannot reach the mock. */
    if (f == F_OPENAI && s == S_STOPS)
        return false;
    if (!translates(f, p))
        return false;
    if ((s == S_STOPS || s == S_CALLS) && p != P_MOCK)
        return false; /* only the mock does work per stop sequence / directive */
    if ((s == S_RESPONSE || s == S_STREAM) && p == P_MOCK)
        return false; /* the mock's reply is part of the request shapes */
    return true;
}

/* Builds the input of size n and runs it once; CPU seconds, or -1 with why. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double run_once(int f, int p, enum shape s, const struct buf *in, char *why, size_t whysize)
{
    double t0 = cpu_now();
    int rc = s == S_RESPONSE ? run_response(f, p, in, why, whysize)
             : s == S_STREAM ? run_stream(f, p, in, why, whysize)
                             : run_request(f, p, in, why, whysize);
    double t = cpu_now() - t0;
    return rc == 0 ? t : -1;
}

static void build(int f, int p, enum shape s, size_t n, struct buf *in)
{
    if (s == S_RESPONSE)
        build_response(p, n, in);
    else if (s == S_STREAM)
        build_stream(p, n, in);
    else
        build_request(f, s, n, in);
}

static int warmup = 1; /* an untimed run first (the heap grows to its size) */

/* min of `runs` runs */
static double measure(int f, int p, enum shape s, size_t n, int runs, char *why, size_t whysize)
{
    struct buf in = BUF_INIT(BUF_UNBOUNDED);
    build(f, p, s, n, &in);
    double best = -1;
    char scratch[8];
    if (runs > 1 && warmup && run_once(f, p, s, &in, scratch, sizeof(scratch)) < 0)
        runs = 1; /* a warm-up (the heap grows to its size); a failure is reported by the run below */
    for (int i = 0; i < runs; i++) {
        double t = run_once(f, p, s, &in, why, whysize);
        if (t < 0) {
            best = -1;
            break;
        }
        if (best < 0 || t < best)
            best = t;
    }
    buf_free(&in);
    return best;
}

/* ---------- the test ---------- */

static double measure_capped(int f, int p, enum shape s, size_t n, int runs, int cap, char *why, size_t whysize);

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(UNDER_ASAN)
#define UNDER_ASAN 1
#endif
#ifdef UNDER_ASAN
enum { DEFAULT_KIB = 128, RUNS = 2, WARMUP = 0 }; /* ~10 s in all; quadratic paths show from about 64 KiB */
#else
enum { DEFAULT_KIB = 256, RUNS = 3, WARMUP = 1 };
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static size_t test_n(void)
{
    const char *e = getenv("AGENTD_LINEAR_KIB");
    long k = e ? atol(e) : 0;
    return (size_t)(k > 0 ? k : DEFAULT_KIB) * 1024;
}

/* AGENTD_LINEAR_ONLY=front,provider,shape (names) runs one case (profiling). */
static bool selected(int f, int p, int s)
{
    const char *e = getenv("AGENTD_LINEAR_ONLY");
    if (e == NULL || *e == '\0')
        return true;
    char want[128];
    snprintf(want, sizeof(want), "%s,%s,%s", front_names[f], prov_names[p], shape_names[s]);
    return strcmp(e, want) == 0;
}

static void test_pairs(void)
{
    size_t n = test_n();
    warmup = WARMUP;
    bool timed = !RUNNING_ON_VALGRIND;
    int runs = RUNS;
    if (!timed) { /* under valgrind: every case must go through (and be clean); its clock says nothing */
        n = 8 * 1024;
        runs = 1;
        warmup = 0;
    }
    for (int f = 0; f < F_N; f++)
        for (int p = 0; p < P_N; p++)
            for (int s = 0; s < S_N; s++) {
                if (!applies(f, p, (enum shape)s) || !selected(f, p, s))
                    continue;
                char why[600] = "";
                double t1 = measure_capped(f, p, (enum shape)s, n, runs, 60, why, sizeof(why));
                double t2 = t1 < 0 || !timed ? t1 : measure_capped(f, p, (enum shape)s, 2 * n, runs, 60, why,
                                                                   sizeof(why));
                bool done = t1 >= 0 && t2 >= 0;
                if (!ok(done))
                    printf("#   %s -> %s, %s: did not go through: %s\n", front_names[f], prov_names[p], shape_names[s],
                           why);
                if (!done)
                    continue;
                /* below a few milliseconds the clock's noise is all there is to see; a ratio over the bound is
                 * measured again, and each size keeps its fastest time: a machine busy with other work, or a
                 * child whose heap took the slow path (times here are bimodal under ASan: 64 or 95 ms for the
                 * same case), inflates some measurements, a quadratic path every one */
                double ratio = t2 / (t1 > 1e-4 ? t1 : 1e-4);
                for (int again = 0; timed && again < 4 && t2 >= 0.005 && ratio > 3.0; again++) {
                    double u1 = measure_capped(f, p, (enum shape)s, n, runs, 60, why, sizeof(why));
                    double u2 = u1 < 0 ? -1 : measure_capped(f, p, (enum shape)s, 2 * n, runs, 60, why, sizeof(why));
                    if (u1 > 0 && u1 < t1)
                        t1 = u1;
                    if (u2 >= 0 && u2 < t2)
                        t2 = u2;
                    ratio = t2 / (t1 > 1e-4 ? t1 : 1e-4);
                }
                /* still over: one more doubling decides. A quadratic path costs 4x again from 2n to 4n; a step
                 * in the allocator's behaviour between n and 2n (seen: the same parent's children all slow at
                 * 256 KiB, 3.3x, and 2x on the next doubling) does not repeat */
                if (timed && t2 >= 0.005 && ratio > 3.0) {
                    double t4 = measure_capped(f, p, (enum shape)s, 4 * n, runs, 60, why, sizeof(why));
                    if (t4 >= 0 && t4 / t2 <= 3.0) {
                        printf("#   %s -> %s, %s: x%.2f from %zu to %zu KiB, x%.2f on the next doubling: linear\n",
                               front_names[f], prov_names[p], shape_names[s], ratio, n / 1024, 2 * n / 1024,
                               t4 / t2);
                        ratio = t4 / t2;
                    }
                }
                bool linear = !timed || t2 < 0.005 || ratio <= 3.0;
                if (!ok(linear) || getenv("AGENTD_LINEAR_VERBOSE"))
                    printf("#   %s -> %s, %s: %.1f ms at %zu KiB, %.1f ms at %zu KiB (x%.2f)\n", front_names[f],
                           prov_names[p], shape_names[s], t1 * 1e3, n / 1024, t2 * 1e3, 2 * n / 1024, ratio);
            }
}

/* measure() in a child process: every case starts from a fresh heap (what earlier cases left in the allocator
 * otherwise shows up as time), and one that runs away is killed after cap seconds (-3). */
static double measure_capped(int f, int p, enum shape s, size_t n, int runs, int cap, char *why, size_t whysize)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -2;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        alarm((unsigned)cap);
        /* keep freed memory in the process: the runs after the warm-up then measure translation, not the
         * kernel's page faults (costly and noisy in a VM) */
        mallopt(M_MMAP_THRESHOLD, 1 << 30);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        char w[600] = "";
        double t = measure(f, p, s, n, runs, w, sizeof(w));
        if (write(fd[1], &t, sizeof(t)) != (ssize_t)sizeof(t) || write(fd[1], w, sizeof(w)) != (ssize_t)sizeof(w))
            _exit(1);
        _exit(0);
    }
    close(fd[1]);
    double t = -3;
    char w[600] = "";
    if (read(fd[0], &t, sizeof(t)) != (ssize_t)sizeof(t))
        t = -3; /* killed by the alarm */
    else if (read(fd[0], w, sizeof(w)) == (ssize_t)sizeof(w))
        snprintf(why, whysize, "%.500s", w);
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    if (t == -3)
        snprintf(why, whysize, "killed after %d s", cap);
    return t;
}

/* ---------- bench mode ---------- */

static void bench(const char *sizes)
{
    const char *c = getenv("AGENTD_LINEAR_CAP");
    int cap = c && atoi(c) > 0 ? atoi(c) : 60;
    printf("# worst CPU seconds per front x provider (worst shape in brackets); '>%d' = killed at the cap\n", cap);
    char list[256];
    snprintf(list, sizeof(list), "%s", sizes);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        size_t n = (size_t)atol(tok) << 20;
        for (int f = 0; f < F_N; f++)
            for (int p = 0; p < P_N; p++) {
                if (!translates(f, p))
                    continue;
                double worst = 0;
                int wshape = -1;
                bool killed = false;
                for (int s = 0; s < S_N; s++) {
                    if (!applies(f, p, (enum shape)s))
                        continue;
                    char why[600];
                    double t = measure_capped(f, p, (enum shape)s, n, 1, cap, why, sizeof(why));
                    if (getenv("AGENTD_LINEAR_VERBOSE"))
                        printf("#     %s -> %s %s %s MiB: %.3f\n", front_names[f], prov_names[p], shape_names[s], tok,
                               t);
                    if (t == -3) {
                        killed = true;
                        wshape = s;
                        break;
                    }
                    if (t > worst) {
                        worst = t;
                        wshape = s;
                    }
                }
                if (killed)
                    printf("%-19s -> %-9s %3s MiB: >%d s [%s]\n", front_names[f], prov_names[p], tok, cap,
                           shape_names[wshape]);
                else
                    printf("%-19s -> %-9s %3s MiB: %8.3f s [%s]\n", front_names[f], prov_names[p], tok, worst,
                           wshape >= 0 ? shape_names[wshape] : "-");
                fflush(stdout);
            }
    }
}

int main(void)
{
    const char *b = getenv("AGENTD_LINEAR_BENCH");
    if (b && *b) {
        bench(b);
        return 0;
    }
    subtest("every front x provider pair translates in linear time", test_pairs);
    return done_testing();
}
