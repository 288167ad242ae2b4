/* libFuzzer target: the rate-limit reset hints an upstream sends (x-ratelimit-reset-*: "6m0s", "20ms", "1.5"),
 * parsed by ratelimit_reset_ms (gateway/resilience.h) from a header value of at most 63 bytes. The value is -1 or
 * a wait of at most a day; the parse is linear and never reads past the string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/resilience.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char v[64]; /* what exchange.c reads a header into */
    if (size >= sizeof(v))
        size = sizeof(v) - 1;
    memcpy(v, data, size);
    v[size] = '\0';
    int64_t ms = ratelimit_reset_ms(v);
    if (!(ms == -1 || (ms >= 0 && ms <= 86400000)))
        abort();
    return 0;
}
