/* libFuzzer target: a streamed LLM step read back into one chat.completion (agent/run_stream.h). The first byte
 * picks the size of the pieces the stream arrives in and the bound; the verdict, the completion and the text
 * given as it came must be the same as when the bytes arrive in one piece; the text given must be the
 * completion's content; a completion must be a JSON object. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/run_stream.h"
#include "common/buf.h"

static void on_text(void *ud, const char *t, size_t n)
{
    buf_append(ud, t, n);
}

static int parse(const char *s, size_t n, size_t step, size_t max, struct buf *out, struct buf *text)
{
    struct run_stream rs;
    run_stream_init(&rs, max, on_text, text);
    for (size_t i = 0; i < n; i += step)
        if (run_stream_feed(&rs, s + i, i + step <= n ? step : n - i) != 0)
            break;
    int rc = run_stream_completion(&rs, out);
    if (rc == 0 && (text->len != rs.content.len || (text->len && memcmp(text->data, rs.content.data, text->len))))
        abort();
    run_stream_free(&rs);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 31) + 1;
    size_t max = (data[0] & 32) ? 64 : 1 << 16;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct buf a = BUF_INIT(BUF_UNBOUNDED), b = BUF_INIT(BUF_UNBOUNDED);
    struct buf ta = BUF_INIT(BUF_UNBOUNDED), tb = BUF_INIT(BUF_UNBOUNDED);
    int ra = parse(s, n, step, max, &a, &ta);
    int rb = parse(s, n, n ? n : 1, max, &b, &tb);
    if (ra != rb || a.len != b.len || (a.len && memcmp(a.data, b.data, a.len)))
        abort();
    if (ra == 0) {
        cJSON *o = cJSON_ParseWithLength(a.data, a.len);
        if (!cJSON_IsObject(o))
            abort();
        cJSON_Delete(o);
    }
    buf_free(&a);
    buf_free(&b);
    buf_free(&ta);
    buf_free(&tb);
    return 0;
}
