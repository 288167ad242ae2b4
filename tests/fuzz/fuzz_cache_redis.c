/* libFuzzer target: the response cache's Redis value decoder (gateway/cache_redis.c). A value read from Redis is
 * not trusted (another writer, another version): it decodes or is refused, never read past its end; what decodes
 * has non-negative counts and the body starts inside the value; encoding what was decoded gives the value back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    uint8_t *v = malloc(size ? size : 1); /* exact size: ASan sees any read past the end */
    if (size)
        memcpy(v, data, size);
    struct rc_meta m;
    size_t off = 0;
    if (crd_decode(v, size, &m, &off) == 0) {
        if (off == 0 || off >= size || m.cost_nusd < 0 || m.usage.input < 0 || m.usage.output < 0 ||
            m.usage.cached_input < 0 || m.usage.cache_write < 0 || m.usage.reasoning < 0)
            abort();
        struct buf b = BUF_INIT(BUF_UNBOUNDED);
        crd_encode(&b, &m, v + off, size - off);
        if (b.len != size || memcmp(b.data, v, size) != 0)
            abort();
        buf_free(&b);
    }
    free(v);
    return 0;
}
