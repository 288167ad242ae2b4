/* timeutil.h: clocks. Monotonic time for durations and deadlines, wall time only for logs and records. */
#ifndef AGENTD_TIMEUTIL_H
#define AGENTD_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

uint64_t time_mono_us(void);
uint64_t time_mono_ns(void);
uint64_t time_wall_us(void);
/* CPU time consumed by the calling thread / the whole process, in microseconds. */
uint64_t time_thread_cpu_us(void);
uint64_t time_process_cpu_us(void);
/* Writes "2026-11-28T14:20:15.123456Z" (28 bytes + NUL) for a wall-clock time in µs. */
size_t time_format_iso(char *dst, size_t dstsize, uint64_t wall_us);

/* Parses an HTTP date (RFC 9110 §5.6.7: the IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" and the two obsolete forms
 * a recipient must accept, RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" and asctime "Sun Nov  6 08:49:37 1994") into
 * seconds since the epoch. Years 1970-9999; two-digit years are 1970-2069. Surrounding spaces are allowed,
 * nothing else is. Returns 0, or -1 with *out untouched. */
int time_parse_http_date(const char *s, size_t len, int64_t *out);
/* Writes the IMF-fixdate for epoch seconds (29 bytes + NUL). Returns the length, or 0 if dstsize is too small or
 * the time is outside 1970-9999. */
size_t time_format_http_date(char *dst, size_t dstsize, int64_t epoch);

#endif
