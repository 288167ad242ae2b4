/* libFuzzer target: loading a saved response cache (cache.persist, DATA_DIR/cache.bin). Any bytes: no crash, no
 * read out of bounds, the byte limit held, and what was loaded saves back to an image that loads the same
 * answers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cache.h"

static uint64_t clock_fn(void *ud)
{
    (void)ud;
    return 1000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const int64_t limit = 1 << 16;
    struct rcache *c = rcache_new(limit, clock_fn, NULL);
    long n = rcache_load(c, data, size, 4096);
    struct rc_stats st;
    rcache_stats(c, &st);
    if (st.bytes > limit || (n < 0 && st.entries != 0))
        abort();
    struct buf img = BUF_INIT(BUF_UNBOUNDED);
    rcache_save(c, &img);
    struct rcache *d = rcache_new(limit, clock_fn, NULL);
    if (rcache_load(d, img.data, img.len, 4096) != st.entries)
        abort();
    struct rc_stats st2;
    rcache_stats(d, &st2);
    if (st2.bytes != st.bytes)
        abort();
    rcache_free(d);
    rcache_free(c);
    buf_free(&img);
    return 0;
}
