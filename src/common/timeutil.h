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

#endif
