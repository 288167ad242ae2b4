/* libFuzzer target: the SSE parser, fed the input in pieces whose sizes come from the input itself, and checked
 * against a second parse of the same bytes in one piece (events must not depend on fragmentation). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/sse.h"

struct acc {
    uint64_t hash;
    int n;
};

static int on_ev(const struct sse_event *e, void *ud)
{
    struct acc *a = ud;
    for (size_t i = 0; i < e->data.n; i++)
        a->hash = (a->hash ^ (unsigned char)e->data.p[i]) * 1099511628211ull;
    for (size_t i = 0; i < e->event.n; i++)
        a->hash = (a->hash ^ (unsigned char)e->event.p[i]) * 1099511628211ull;
    a->hash ^= 0xff;
    a->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned step = data[0] % 7 + 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct acc a = {14695981039346656037ull, 0}, b = a;
    struct sse_parser p1, p2;
    sse_parser_init(&p1, 4096, on_ev, &a);
    sse_parser_init(&p2, 4096, on_ev, &b);
    int r1 = 0;
    for (size_t i = 0; i < n && r1 == 0; i += step)
        r1 = sse_feed(&p1, s + i, i + step <= n ? step : n - i);
    int r2 = sse_feed(&p2, s, n);
    if (r1 == 0 && r2 == 0 && (a.n != b.n || a.hash != b.hash))
        abort();
    sse_finish(&p1);
    sse_parser_free(&p1);
    sse_parser_free(&p2);
    return 0;
}
