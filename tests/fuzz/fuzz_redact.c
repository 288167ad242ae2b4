/* libFuzzer target: scrubbing secrets out of upstream text (gateway/redact.c). Input: a count byte, then for each
 * secret a length byte and its bytes, then the text. Whatever the text, no whole secret survives in a stretch of
 * output between marks, nor (for secrets past REDACT_FRAGMENT_ABOVE bytes) its first or last REDACT_MIN_LEN bytes;
 * and the walk stays linear (the per-input timeout). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/redact.h"

static const char *find(const char *h, size_t hn, const char *n, size_t nn)
{
    for (size_t i = 0; nn && i + nn <= hn; i++)
        if (memcmp(h + i, n, nn) == 0)
            return h + i;
    return NULL;
}

/* The pieces of out between marks must not contain n. */
static void check(const struct buf *out, const char *n, size_t nn)
{
    const char *p = out->data ? out->data : "", *end = p + out->len;
    size_t ml = strlen(REDACT_MARK);
    while (p < end) {
        const char *m = find(p, (size_t)(end - p), REDACT_MARK, ml);
        const char *stop = m ? m : end;
        if (find(p, (size_t)(stop - p), n, nn))
            abort();
        p = m ? m + ml : end;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t pos = 1, count = (size_t)(data[0] % 3) + 1;
    char secrets[3][64];
    size_t lens[3], have = 0;
    struct redact_set *rs = redact_set_new();
    for (size_t i = 0; i < count && pos < size; i++) {
        size_t len = (size_t)(data[pos++] % 48) + 1;
        if (len > size - pos)
            len = size - pos;
        memcpy(secrets[have], data + pos, len);
        secrets[have][len] = '\0';
        pos += len;
        if (strlen(secrets[have]) == len) { /* no NUL inside: a C string like the real ones */
            redact_set_add(rs, secrets[have]);
            lens[have++] = len;
        }
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    redact_append(rs, (const char *)data + pos, size - pos, &out);
    for (size_t i = 0; i < have; i++) {
        if (lens[i] < REDACT_MIN_LEN)
            continue;
        check(&out, secrets[i], lens[i]);
        if (lens[i] > REDACT_FRAGMENT_ABOVE) {
            check(&out, secrets[i], REDACT_MIN_LEN);
            check(&out, secrets[i] + lens[i] - REDACT_MIN_LEN, REDACT_MIN_LEN);
        }
    }
    buf_free(&out);
    redact_set_free(rs);
    return 0;
}
