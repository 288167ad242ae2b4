/* libFuzzer target: the OpenAI wire codec on arbitrary bytes: the front door's request parse and splice, the
 * provider side's complete-response decode, stream-chunk decode, usage extraction and error mapping. */
#include <stdint.h>
#include <string.h>

#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/wire_openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct gw_error err;
    struct usage u;

    /* front door: parse, then splice (what passthrough sends upstream) */
    struct exchange ex;
    memset(&ex, 0, sizeof(ex));
    ex.rq.body = str_make(s, size);
    ex.done = true; /* deltas are decoded but not written anywhere */
    if (front_openai_chat.parse(&ex.rq, &err) == 0) {
        struct buf out = BUF_INIT(1 << 22);
        wire_openai_splice_request(s, size, "upstream-model", true, &out);
        buf_free(&out);
        cJSON *canon = front_openai_chat.to_canonical(&ex.rq, &err);
        if (canon) {
            struct buf enc = BUF_INIT(BUF_UNBOUNDED);
            wire_openai_encode_canonical(canon, "m", true, &enc);
            buf_free(&enc);
            cJSON_Delete(canon);
        }
    }
    memset(&ex, 0, sizeof(ex));
    ex.rq.body = str_make(s, size);
    front_openai_embeddings.parse(&ex.rq, &err);

    /* provider side */
    cJSON *resp = wire_openai_decode_completion(s, size, &u, &err);
    cJSON_Delete(resp);
    wire_openai_extract_usage(s, size, &u);
    wire_openai_map_error(429, s, size, &err);

    struct attempt a;
    memset(&a, 0, sizeof(a));
    memset(&ex, 0, sizeof(ex));
    ex.done = true;
    a.ex = &ex;
    struct stream_event ev = {STR_NULL, str_make(s, size), false};
    wire_openai_decode_chunk(&a, &ev, &err);

    /* the scanned chunk decoder accepts only what a full parser accepts (test_openai_chunk compares the fields) */
    struct openai_chunk c;
    struct buf scratch = BUF_INIT(BUF_UNBOUNDED);
    if (wire_openai_scan_chunk(str_make(s, size), &scratch, &c) == 0) {
        cJSON *t = cJSON_ParseWithLength(s, size);
        if (t == NULL)
            __builtin_trap();
        cJSON_Delete(t);
    }
    buf_free(&scratch);
    return 0;
}
