/* log.h: JSON lines on stderr, one object per line:
 *   {"time":"…Z","level":"info","msg":"…","request_id":"…", …fields}
 *
 * The level is checked before any argument is evaluated (redis serverLog, curl infof), so a disabled
 * debug line costs one compare. A line is assembled in a stack buffer and written with one write(2),
 * so lines from different threads never interleave. Secrets are never passed to the logger. */
#ifndef AGENTD_LOG_H
#define AGENTD_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LL_DEBUG = 0, LL_INFO, LL_WARN, LL_ERROR, LL_FATAL, LL_OFF };

extern int log_min_level;

int log_level_parse(const char *name); /* -1 when unknown */
const char *log_level_name(int level);
/* Line format: JSON objects (default) or "TIME LEVEL message key=value ..." for a terminal. */
enum { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };
void log_set_format(int format);
/* Where lines go (default stderr); tests point it elsewhere. */
void log_set_fd(int fd);

void log_emit(int level, const char *request_id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_at(lvl, ...)                                                                                  \
    do {                                                                                                  \
        if ((lvl) >= log_min_level)                                                                       \
            log_emit((lvl), NULL, __VA_ARGS__);                                                           \
    } while (0)
#define log_debug(...) log_at(LL_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LL_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LL_WARN, __VA_ARGS__)
#define log_error(...) log_at(LL_ERROR, __VA_ARGS__)
/* The P-variants append ": strerror(errno)" (nsjail PLOG_E). */
#define log_perror(...)                                                                                   \
    do {                                                                                                  \
        if (LL_ERROR >= log_min_level)                                                                    \
            log_emit_errno(LL_ERROR, __VA_ARGS__);                                                        \
    } while (0)
void log_emit_errno(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A structured line with fields: begin, add fields, end. Fixed 4 KiB buffer; fields past it are dropped and
 * the line is marked "truncated":true. */
struct log_line {
    char buf[4096];
    size_t len;
    bool truncated;
    bool has_trace; /* log_field_trace was called: the tap gets the ids */
    int level;
    uint8_t trace_id[16], span_id[8];
};
bool log_begin(struct log_line *l, int level, const char *msg); /* false when the level is disabled */
void log_field_str(struct log_line *l, const char *key, const char *val, size_t n);
void log_field_cstr(struct log_line *l, const char *key, const char *val);
void log_field_int(struct log_line *l, const char *key, int64_t val);
void log_field_uint(struct log_line *l, const char *key, uint64_t val);
void log_field_double(struct log_line *l, const char *key, double val);
void log_field_bool(struct log_line *l, const char *key, bool val);
/* The line belongs to a traced operation: writes "trace_id" and "span_id" (hex) and hands the ids to the tap. */
void log_field_trace(struct log_line *l, const uint8_t trace_id[16], const uint8_t span_id[8]);
void log_end(struct log_line *l);

/* A second destination for every line written (OTLP logs: telemetry/otlp.c): called by the writing thread with
 * the line (no newline) and the trace ids when the line has them (else NULL). It must not block, and lines it
 * writes itself are not handed back (a per-thread guard). Set at start-up before workers run; NULL: none. */
typedef void log_tap_fn(int level, const char *line, size_t n, const uint8_t *trace_id, const uint8_t *span_id);
void log_set_tap(log_tap_fn *fn);
/* The calling thread's lines are not handed to the tap (the exporter's own thread). */
void log_tap_suppress(bool on);

/* Batching for event-loop threads: lines below LL_WARN are collected in a per-thread buffer and written with
 * one write(2) when the loop calls log_batch_flush (once per turn) or the buffer fills; warnings and errors
 * flush at once, in order. Turning it on saves a system call per access line. */
void log_batch_enable(void);
void log_batch_flush(void);
void log_batch_disable(void); /* flushes and frees the buffer (thread exit) */

#endif
