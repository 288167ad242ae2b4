/* libFuzzer target: the HTTP date parser behind Retry-After (common/timeutil.c). Checks: whatever it accepts is a
 * time in 1970-9999, its IMF-fixdate formatting parses back to the same second, and a refused input leaves the
 * output untouched. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256)
        return 0;
    int64_t t = -42;
    if (time_parse_http_date((const char *)data, size, &t) != 0) {
        if (t != -42)
            abort();
        return 0;
    }
    if (t < 0 || t >= 253402300800)
        abort();
    char b[40];
    size_t n = time_format_http_date(b, sizeof(b), t);
    int64_t back = -1;
    if (n != 29 || time_parse_http_date(b, n, &back) != 0 || back != t)
        abort();
    return 0;
}
