/* libFuzzer target: the evaluation heuristics and body readers (telemetry/eval.c). The first byte splits the
 * input into a question and an answer. Checks: every score is within 0..1 with a label, nothing reads past the
 * input (ASan), the body readers never fail on garbage other than by returning -1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "telemetry/eval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 256 * 1024)
        return 0;
    size_t split = (size_t)data[0] * (size - 1) / 255;
    char *q = malloc(split ? split : 1), *a = malloc(size - 1 - split ? size - 1 - split : 1);
    memcpy(q, data + 1, split);
    memcpy(a, data + 1 + split, size - 1 - split);
    struct eval_result r[EVAL_MAX_RESULTS];
    size_t n = eval_score(q, split, a, size - 1 - split, data[0] & 1, r);
    if (n < 4 || n > EVAL_MAX_RESULTS)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!(r[i].score >= 0 && r[i].score <= 1) || !r[i].label || !r[i].name)
            abort();
    struct buf t = BUF_INIT(EVAL_TEXT_MAX);
    bool json;
    char id[32];
    (void)eval_question(q, split, data[0] & 2, &t, &json);
    if (t.len > EVAL_TEXT_MAX)
        abort();
    buf_reset(&t);
    (void)eval_answer(a, size - 1 - split, data[0] & 2, &t, id, sizeof(id));
    buf_free(&t);
    free(q);
    free(a);
    return 0;
}
