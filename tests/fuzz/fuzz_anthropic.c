/* libFuzzer target: the Anthropic wire codec on arbitrary bytes.
 *  - front door: parse (jscan validation), to_canonical, the canonical -> Anthropic request rebuild, the model
 *    splice, and the canonical -> message writer;
 *  - provider: complete-message decode, usage extraction, error mapping;
 *  - the input as an SSE stream: every event through the upstream stream decoder (passthrough and translation),
 *    the translated deltas through the front door's stream writer.
 * Properties checked (trap on violation): what the writers produce is valid JSON / well-formed SSE whose data
 * are valid JSON, and a body the jscan-based parse admits is one cJSON can build a tree of. */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/front_anthropic.h"
#include "gateway/providers/anthropic.h"
#include "gateway/anthropic_threads.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/providers/canon.h"
#include "net/sse.h"

static void check_json(const char *p, size_t n)
{
    if (jscan_validate(p, n, NULL, NULL) != 0)
        __builtin_trap();
}

/* Every event the front door wrote is "event: NAME\ndata: JSON\n\n". */
static int check_event(const struct sse_event *ev, void *ud)
{
    (void)ud;
    if (ev->event.n == 0)
        __builtin_trap();
    check_json(ev->data.p, ev->data.n);
    return 0;
}

static void check_sse(const struct buf *out)
{
    struct sse_parser p;
    sse_parser_init(&p, BUF_UNBOUNDED, check_event, NULL);
    if (out->len && sse_feed(&p, out->data, out->len) != 0)
        __builtin_trap();
    sse_parser_free(&p);
}

struct run {
    struct anthropic_stream st;
    struct exchange *ex;
    struct buf out;
    int events;
};

static void on_delta(void *ud, const struct chat_delta *d)
{
    struct run *r = ud;
    if (d->kind == DELTA_USAGE)
        r->ex->usage = d->usage;
    front_anthropic.stream_delta(r->ex, d, &r->out);
}

static int on_event(const struct sse_event *e, void *ud)
{
    struct run *r = ud;
    struct gw_error err;
    if (++r->events > 256)
        return 1;
    anthropic_stream_event(&r->st, e->event, e->data, &err);
    return 0;
}

static void stream(const char *s, size_t size, bool passthrough)
{
    struct exchange *ex = xcalloc(1, sizeof(*ex));
    snprintf(ex->id, sizeof(ex->id), "msg_fuzz");
    snprintf(ex->rq.model_name, sizeof(ex->rq.model_name), "m");
    ex->fstate = front_anthropic.stream_new();
    struct run r = {.ex = ex, .out = BUF_INIT(BUF_UNBOUNDED)};
    anthropic_stream_init(&r.st, passthrough, on_delta, &r);
    if (!passthrough && size && (s[0] & 1))
        snprintf(r.st.json_tool, sizeof(r.st.json_tool), "answer");
    struct sse_parser p;
    sse_parser_init(&p, 1 << 20, on_event, &r);
    sse_feed(&p, s, size);
    sse_finish(&p);
    sse_parser_free(&p);
    front_anthropic.stream_end(ex, NULL, &r.out);
    check_sse(&r.out);
    anthropic_stream_free(&r.st);
    buf_free(&r.out);
    front_anthropic.stream_free(ex->fstate);
    xfree(ex);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct gw_error err;
    struct usage u;
    char jt[130];

    /* front door */
    struct exchange *ex = xcalloc(1, sizeof(*ex));
    ex->rq.body = str_make(s, size);
    snprintf(ex->id, sizeof(ex->id), "msg_fuzz");
    if (front_anthropic.parse(&ex->rq, &err) == 0) {
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        if (anthropic_splice_model(s, size, "upstream-model", &out) != 0)
            __builtin_trap(); /* parse admitted it: it has a string model */
        check_json(out.data, out.len);
        buf_free(&out);
        cJSON *canon = front_anthropic.to_canonical(&ex->rq, &err);
        /* jscan admitted it, so cJSON must read it; unless it holds a \u0000, refused before any tree (a tree's
         * C strings would cut it) */
        if (ex->rq.client_tree == NULL && !canon_json_has_nul(s, size, NULL, 0))
            __builtin_trap();
        if (canon == NULL && ex->rq.client_tree == NULL && err.status != 400)
            __builtin_trap();
        if (canon) {
            cJSON *back = anthropic_request_from_canonical(canon, "m", true, 100, jt, sizeof(jt), &err);
            cJSON_Delete(back);
            cJSON_Delete(canon);
        }
    } else {
        if (err.status != 400)
            __builtin_trap();
        struct buf eb = BUF_INIT(BUF_UNBOUNDED);
        front_anthropic.error_body(ex, &err, &eb);
        check_json(eb.data, eb.len);
        buf_free(&eb);
    }
    cJSON_Delete(ex->rq.client_tree);
    xfree(ex);

    /* the message-thread member (anthropic_threads.h): a 400 or a mode, and a continue names a bounded id */
    struct jval tv;
    if (jscan_get(s, size, "thread", &tv) == 0) {
        enum athread_mode tm;
        char tid[ATHREAD_MAX_ID + 1];
        if (athread_check(&tv, &tm, tid, &err) != 0) {
            if (err.status != 400)
                __builtin_trap();
        } else if (tm == ATHREAD_CONTINUE && (tid[0] == '\0' || strlen(tid) > ATHREAD_MAX_ID)) {
            __builtin_trap();
        }
    }

    /* arbitrary JSON as a canonical request and as a canonical response */
    cJSON *t = cJSON_ParseWithLength(s, size);
    if (t) {
        cJSON *req = anthropic_request_from_canonical(t, "m", false, 100, jt, sizeof(jt), &err);
        cJSON_Delete(req);
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        struct usage known = {.input = 5, .output = 7, .cached_input = 9, .known = true};
        /* cJSON takes invalid UTF-8 that the writers then carry over; the property holds for valid input */
        if (front_anthropic_message_from_canonical(t, "msg_x", "m", size & 1 ? &known : NULL, &out, &err) == 0 &&
            jscan_validate(s, size, NULL, NULL) == 0)
            check_json(out.data, out.len);
        buf_free(&out);
        cJSON_Delete(t);
    }

    /* provider side */
    char rm[64];
    cJSON *resp = anthropic_message_to_canonical(s, size, "id", "m", 1, size & 2 ? "answer" : "", &u, rm, sizeof(rm), &err);
    cJSON_Delete(resp);
    anthropic_extract_usage(s, size, &u);
    anthropic_map_error(529, s, size, &err);

    stream(s, size, false);
    stream(s, size, true);
    return 0;
}
