/* libFuzzer target: the LLM judge's reply parser and the streamed-answer reader (telemetry/eval.c). The first byte
 * picks the OpenAI or Anthropic stream format. Checks: a parsed score is within 0..1 with a pass/fail label and a
 * NUL-terminated explanation, the stream text stays within EVAL_TEXT_MAX, nothing reads past the input (ASan). */
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
    char *text = malloc(size - 1 ? size - 1 : 1);
    memcpy(text, data + 1, size - 1);
    struct eval_result r;
    if (eval_judge_parse(text, size - 1, &r) == 0) {
        if (!(r.score >= 0 && r.score <= 1) || strcmp(r.name, "judge") != 0 ||
            (strcmp(r.label, "pass") != 0 && strcmp(r.label, "fail") != 0) ||
            memchr(r.explanation, '\0', sizeof(r.explanation)) == NULL)
            abort();
    }
    struct buf t = BUF_INIT(EVAL_TEXT_MAX);
    char id[32];
    if (eval_stream_text(text, size - 1, data[0] & 1, &t, id, sizeof(id)) == 0 && t.len == 0)
        abort();
    if (t.len > EVAL_TEXT_MAX || memchr(id, '\0', sizeof(id)) == NULL)
        abort();
    buf_free(&t);
    free(text);
    return 0;
}
