/* libFuzzer target: the pass-through Responses stream decoder over SSE framing (every event of an upstream
 * stream, as the relay sees it), plus the complete-body usage reader, and the translation-side encoder driven by
 * deltas taken from the same bytes. Checks: usage that is reported is plausible (never negative), a malformed
 * event is an error with a message, and the encoder's output is a well-formed event sequence whose sequence
 * numbers count up from 0. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/responses.h"
#include "net/sse.h"

static int on_ev(const struct sse_event *e, void *ud)
{
    (void)ud;
    struct usage u;
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    int rc = responses_decode_event(e->event, e->data, &u, &err);
    if (rc < 0 && err.message[0] == '\0')
        abort();
    if (u.known && (u.input < 0 || u.output < 0 || u.cached_input < 0 || u.reasoning < 0))
        abort();
    return 0;
}

static void encode(const uint8_t *d, size_t n)
{
    cJSON *req = cJSON_CreateObject();
    struct responses_stream *s = responses_stream_new(responses_skeleton(req, "resp_f", 1, "m"));
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    for (size_t i = 0; i + 2 <= n; i += 2) {
        struct chat_delta cd = {.kind = (enum delta_kind)(d[i] % 5), .tool_index = d[i + 1] % 4};
        size_t len = d[i + 1] % 8;
        if (i + 2 + len > n)
            len = n - i - 2;
        cd.text = str_make((const char *)d + i + 2, len);
        cd.tool_id = str_make((const char *)d + i + 2, len / 2);
        cd.tool_name = str_make("f", 1);
        cd.finish = (enum finish)(d[i + 1] % 5);
        cd.usage.input = d[i + 1];
        cd.usage.known = true;
        responses_stream_delta(s, &cd, &out);
        i += len;
    }
    responses_stream_end(s, NULL, NULL, &out);
    /* every data line is JSON with the next sequence number */
    int64_t want = 0;
    const char *p = out.data;
    while (p && (p = strstr(p, "\ndata: ")) != NULL) {
        p += 7;
        const char *end = strstr(p, "\n\n");
        if (end == NULL)
            abort();
        cJSON *ev = cJSON_ParseWithLength(p, (size_t)(end - p));
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(ev, "sequence_number");
        if (!cJSON_IsNumber(seq) || (int64_t)seq->valuedouble != want)
            abort();
        want++;
        cJSON_Delete(ev);
        p = end;
    }
    if (want != responses_stream_seq(s) + 1)
        abort();
    buf_free(&out);
    responses_stream_free(s);
    cJSON_Delete(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    struct sse_parser p;
    sse_parser_init(&p, 1 << 16, on_ev, NULL);
    if (sse_feed(&p, (const char *)data, size) == 0)
        sse_finish(&p);
    sse_parser_free(&p);
    struct usage u;
    if (responses_extract_usage((const char *)data, size, &u) == 0 && u.known && (u.input < 0 || u.output < 0))
        abort();
    encode(data, size);
    return 0;
}
