/* libFuzzer target: the line framer of MCP stdio servers (agent/mcp_stdio.h). The first byte picks the line
 * limit and the size of the pieces the rest arrives in; the lines (and their truncated flags) must be the same as
 * when the bytes arrive in one piece, none may be longer than the limit, none empty, none hold a '\n'. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/mcp_stdio.h"
#include "common/buf.h"

struct acc {
    struct buf out;
    size_t max;
};

static int on_line(void *ud, const char *s, size_t n, bool truncated)
{
    struct acc *a = ud;
    if (n == 0 || n > a->max || memchr(s, '\n', n))
        abort();
    buf_append(&a->out, truncated ? "T" : "L", 1);
    buf_append_u64(&a->out, n);
    buf_append(&a->out, ":", 1);
    buf_append(&a->out, s, n);
    return 0;
}

static void frame(const char *s, size_t n, size_t max, size_t step, struct acc *a)
{
    buf_init(&a->out, BUF_UNBOUNDED);
    a->max = max;
    struct mcp_lines l;
    mcp_lines_init(&l, max);
    for (size_t i = 0; i < n; i += step)
        (void)mcp_lines_feed(&l, s + i, i + step <= n ? step : n - i, on_line, a);
    mcp_lines_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max = (size_t)(data[0] & 15) * 8 + 1;
    size_t step = (size_t)(data[0] >> 4) + 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct acc a, b;
    frame(s, n, max, step, &a);
    frame(s, n, max, n ? n : 1, &b);
    if (a.out.len != b.out.len || (a.out.len && memcmp(a.out.data, b.out.data, a.out.len) != 0))
        abort();
    buf_free(&a.out);
    buf_free(&b.out);
    return 0;
}
