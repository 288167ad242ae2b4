#include "common/timeutil.h"

#include <stdio.h>
#include <time.h>

static uint64_t ts_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t time_mono_us(void)
{
    return ts_us(CLOCK_MONOTONIC);
}

uint64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t time_wall_us(void)
{
    return ts_us(CLOCK_REALTIME);
}

uint64_t time_thread_cpu_us(void)
{
    return ts_us(CLOCK_THREAD_CPUTIME_ID);
}

uint64_t time_process_cpu_us(void)
{
    return ts_us(CLOCK_PROCESS_CPUTIME_ID);
}

size_t time_format_iso(char *dst, size_t dstsize, uint64_t wall_us)
{
    time_t secs = (time_t)(wall_us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(dst, dstsize, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(wall_us % 1000000u));
    return n < 0 ? 0 : (size_t)n;
}
