/* trace.c: W3C traceparent / tracestate parsing and id generation (trace.h). */
#include "telemetry/trace.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is invalid in traceparent */
}

static int parse_hex(const char *s, uint8_t *out, size_t nbytes)
{
    unsigned any = 0;
    for (size_t i = 0; i < nbytes; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
        any |= out[i];
    }
    return any ? 0 : -1; /* all zero is invalid */
}

int trace_parse_traceparent(const char *s, size_t n, struct trace_parent *out)
{
    /* optional whitespace around the value (OWS) */
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n < TRACEPARENT_LEN)
        return -1;
    int v1 = hexval(s[0]), v2 = hexval(s[1]);
    if (v1 < 0 || v2 < 0)
        return -1;
    int version = v1 << 4 | v2;
    if (version == 0xff)
        return -1;
    if (version == 0 && n != TRACEPARENT_LEN)
        return -1;
    /* a higher version: the first 55 characters as version 00, followed by nothing or '-' */
    if (version > 0 && n > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-')
        return -1;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -1;
    struct trace_parent tp;
    if (parse_hex(s + 3, tp.trace_id, 16) != 0 || parse_hex(s + 36, tp.span_id, 8) != 0)
        return -1;
    int f1 = hexval(s[53]), f2 = hexval(s[54]);
    if (f1 < 0 || f2 < 0)
        return -1;
    tp.flags = (uint8_t)((f1 << 4 | f2) & 0x01);
    *out = tp;
    return 0;
}

static bool key_char(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return !first && (c == '_' || c == '-' || c == '*' || c == '/' || c == '@');
}

bool trace_tracestate_valid(const char *s, size_t n)
{
    if (n > TRACESTATE_MAX)
        return false;
    size_t members = 0, i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i < n && s[i] == ',') { /* empty members are allowed */
            i++;
            continue;
        }
        if (i == n)
            break;
        size_t k = i;
        while (i < n && key_char(s[i], i == k))
            i++;
        if (i == k || i - k > 256 || i >= n || s[i] != '=')
            return false;
        i++;
        size_t v = i;
        while (i < n && s[i] != ',' && s[i] >= 0x20 && s[i] <= 0x7e && s[i] != '=')
            i++;
        size_t vend = i;
        while (vend > v && (s[vend - 1] == ' ' || s[vend - 1] == '\t'))
            vend--;
        if (vend == v || vend - v > 256)
            return false;
        if (i < n && s[i] != ',')
            return false;
        if (++members > 32)
            return false;
    }
    return true;
}

void trace_hex(char *dst, const uint8_t *id, size_t n)
{
    /* two digits a byte from one table look-up (every request formats its traceparent) */
    static const char hx2[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                              "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
                              "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                              "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                              "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
                              "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                              "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                              "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (size_t i = 0; i < n; i++)
        memcpy(dst + 2 * i, hx2 + 2 * id[i], 2);
    dst[2 * n] = '\0';
}

void trace_format_traceparent(char dst[TRACEPARENT_LEN + 1], const uint8_t trace_id[16], const uint8_t span_id[8],
                              uint8_t flags)
{
    memcpy(dst, "00-", 3);
    trace_hex(dst + 3, trace_id, 16);
    dst[35] = '-';
    trace_hex(dst + 36, span_id, 8);
    dst[52] = '-';
    dst[53] = '0';
    dst[54] = (flags & 1) ? '1' : '0';
    dst[55] = '\0';
}

/* splitmix64 per thread, seeded once from the kernel */
static _Thread_local uint64_t rng_state;
static _Thread_local int rng_seeded;

static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&rng_state;
        }
        rng_state = seed;
        rng_seeded = 1;
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t n)
{
    do {
        uint64_t any = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = rng_next();
            size_t k = n - i < 8 ? n - i : 8;
            memcpy(p + i, &r, k);
            any |= r;
        }
        if (any)
            return;
    } while (1);
}

void trace_new_trace_id(uint8_t id[16])
{
    fill_random(id, 16);
}

void trace_new_span_id(uint8_t id[8])
{
    fill_random(id, 8);
}

/* The TraceIdRatioBased rule: the lower 8 bytes of the trace id as an integer, below ratio * 2^64. */
static bool ratio_sample(double ratio, const uint8_t trace_id[16])
{
    if (ratio >= 1.0)
        return true;
    if (ratio <= 0.0)
        return false;
    uint64_t v = 0;
    for (int i = 8; i < 16; i++)
        v = v << 8 | trace_id[i];
    return (double)(v >> 11) < ratio * (double)(1ull << 53);
}

bool trace_sample(enum trace_sampler s, double ratio, const uint8_t trace_id[16], const struct trace_parent *parent)
{
    switch (s) {
    case SAMPLER_ALWAYS_ON:
        return true;
    case SAMPLER_ALWAYS_OFF:
        return false;
    case SAMPLER_TRACEIDRATIO:
        return ratio_sample(ratio, trace_id);
    case SAMPLER_PARENTBASED_ALWAYS_ON:
        return parent ? (parent->flags & 1) != 0 : true;
    case SAMPLER_PARENTBASED_ALWAYS_OFF:
        return parent ? (parent->flags & 1) != 0 : false;
    case SAMPLER_PARENTBASED_TRACEIDRATIO:
        return parent ? (parent->flags & 1) != 0 : ratio_sample(ratio, trace_id);
    }
    return false;
}
