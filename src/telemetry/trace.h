/* trace.h: W3C Trace Context (traceparent / tracestate) and the trace state of one exchange.
 *
 * A gateway request continues the client's trace when it sent a valid `traceparent`, else starts a new one; an
 * invalid header is ignored (a new trace starts), never an error. The exchange's SERVER span and each attempt's
 * CLIENT span get ids here; the attempt's span id goes upstream in the `traceparent` agentd sends. */
#ifndef AGENTD_TRACE_H
#define AGENTD_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACEPARENT_LEN 55       /* "00-" 32 "-" 16 "-" 2 */
#define TRACESTATE_MAX 512       /* longer tracestate values are not propagated */

struct trace_parent {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;               /* bit 0: sampled (other bits cleared) */
};

/* Parses a traceparent header value (version 00, or a higher version read as 00 per the spec). 0, or -1 when
 * it is malformed (wrong length or separators, upper case or non-hex, all-zero ids, version ff). Linear. */
int trace_parse_traceparent(const char *s, size_t n, struct trace_parent *out);
/* Checks a tracestate value: at most 32 comma-separated key=value members and TRACESTATE_MAX bytes. */
bool trace_tracestate_valid(const char *s, size_t n);
/* Writes "00-<trace>-<span>-<flags>" (TRACEPARENT_LEN bytes + NUL) into dst. */
void trace_format_traceparent(char dst[TRACEPARENT_LEN + 1], const uint8_t trace_id[16], const uint8_t span_id[8],
                              uint8_t flags);
void trace_hex(char *dst, const uint8_t *id, size_t n); /* 2n lowercase hex digits + NUL */

/* Fresh random ids (never all zero), from a per-thread generator seeded from getrandom. */
void trace_new_trace_id(uint8_t id[16]);
void trace_new_span_id(uint8_t id[8]);

enum trace_sampler {
    SAMPLER_ALWAYS_ON,
    SAMPLER_ALWAYS_OFF,
    SAMPLER_TRACEIDRATIO,
    SAMPLER_PARENTBASED_ALWAYS_ON,
    SAMPLER_PARENTBASED_ALWAYS_OFF,
    SAMPLER_PARENTBASED_TRACEIDRATIO,
};
/* The sampling decision for a new root or a continued trace (parent NULL: root). */
bool trace_sample(enum trace_sampler s, double ratio, const uint8_t trace_id[16], const struct trace_parent *parent);

/* The trace state an exchange carries (struct exchange.trace). */
struct ex_trace {
    bool active;                 /* ids are set (telemetry is on) */
    bool sampled;                /* spans are recorded and exported */
    bool remote_parent;          /* continued from the client's traceparent */
    uint8_t trace_id[16];
    uint8_t server_span_id[8];   /* the SERVER span of the request */
    uint8_t parent_span_id[8];   /* the client's span (remote_parent) */
    uint8_t attempt_span_id[8];  /* the attempt in flight */
    char traceparent[TRACEPARENT_LEN + 1]; /* the server span's, formatted once for the upstream and the client */
    uint64_t start_ns;           /* wall clock of the request's start */
    uint64_t attempt_start_ns;   /* wall clock of the attempt's start */
    char tracestate[TRACESTATE_MAX + 1];
    char workflow[64];           /* agent.workflow: the client's x-agentd-workflow header, or "" */
};

#endif
