/* libFuzzer target: the W3C traceparent and tracestate parsers and the OTEL_* key=value list parser
 * (telemetry/trace.c, telemetry/otel_config.c). Checks: an accepted traceparent has non-zero ids and a
 * sampled bit only, formats back to a header that parses to the same value, and a refused one leaves the
 * output untouched; the other parsers never read past their input (ASan). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/otel_config.h"
#include "telemetry/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    /* exact-size copy so ASan sees any overread */
    char *s = malloc(size ? size : 1);
    if (size)
        memcpy(s, data, size);
    struct trace_parent p, untouched;
    memset(&p, 0xa5, sizeof(p));
    untouched = p;
    if (trace_parse_traceparent(s, size, &p) == 0) {
        if (zero(p.trace_id, 16) || zero(p.span_id, 8) || (p.flags & ~1u))
            abort();
        char out[TRACEPARENT_LEN + 1];
        trace_format_traceparent(out, p.trace_id, p.span_id, p.flags);
        struct trace_parent q;
        if (trace_parse_traceparent(out, TRACEPARENT_LEN, &q) != 0 || memcmp(&p, &q, sizeof(p)) != 0)
            abort();
    } else if (memcmp(&p, &untouched, sizeof(p)) != 0) {
        abort();
    }
    (void)trace_tracestate_valid(s, size);
    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';
    (void)otel_parse_kv_list(z, NULL, NULL);
    free(z);
    free(s);
    return 0;
}
