#include "common/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/timeutil.h"
#include <time.h>

int log_min_level = LL_INFO;
static int log_fd = STDERR_FILENO;
static _Atomic int log_format = LOG_FORMAT_JSON;

void log_set_format(int format)
{
    atomic_store_explicit(&log_format, format == LOG_FORMAT_TEXT ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON,
                          memory_order_relaxed);
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal", "off"};

int log_level_parse(const char *name)
{
    for (int i = 0; i <= LL_OFF; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return LL_WARN;
    return -1;
}

const char *log_level_name(int level)
{
    return (level >= 0 && level <= LL_OFF) ? level_names[level] : "?";
}

void log_set_fd(int fd)
{
    log_fd = fd;
}

#define BATCH_MAX (64 * 1024)

static _Thread_local char *batch_buf;
static _Thread_local size_t batch_len;

static void write_all(const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(log_fd, p + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)w;
    }
}

void log_batch_enable(void)
{
    if (batch_buf == NULL)
        batch_buf = xmalloc(BATCH_MAX);
    batch_len = 0;
}

void log_batch_flush(void)
{
    if (batch_len) {
        write_all(batch_buf, batch_len);
        batch_len = 0;
    }
}

void log_batch_disable(void)
{
    log_batch_flush();
    xfree(batch_buf);
    batch_buf = NULL;
}

/* "2026-11-28T14:20:15" is the same for every line of a second: format it once per thread per second. */
static size_t format_time(char *dst)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[24];
    uint64_t us = time_wall_us();
    time_t sec = (time_t)(us / 1000000u);
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S.", &tm);
        cached_sec = sec;
    }
    memcpy(dst, cached, 20);
    unsigned frac = (unsigned)(us % 1000000u);
    for (int i = 25; i >= 20; i--) {
        dst[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    dst[26] = 'Z';
    return 27;
}

static void put(struct log_line *l, const char *s, size_t n)
{
    /* Keep 3 bytes for the closing "}\n" and NUL. */
    if (l->len + n + 3 > sizeof(l->buf)) {
        l->truncated = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_json_str(struct log_line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[6];
    size_t start_len = l->len;
    put(l, "\"", 1);
    /* bytes that need an escape: control characters, DEL, quote and backslash */
    static const unsigned char needs[256] = {
        [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x7f] = 1,
    };
    size_t run = 0; /* bytes that need no escape are copied in runs, not one by one */
    for (size_t i = 0; i < n && !l->truncated; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!needs[c])
            continue;
        put(l, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            put(l, tmp, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else {
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            put(l, tmp, 6);
        }
    }
    if (!l->truncated)
        put(l, s + run, n - run);
    put(l, "\"", 1);
    if (l->truncated) /* never leave a half string: drop the whole field value */
        l->len = start_len;
}

static void put_key(struct log_line *l, const char *key)
{
    put(l, ",", 1);
    put_json_str(l, key, strlen(key));
    put(l, ":", 1);
}

bool log_begin(struct log_line *l, int level, const char *msg)
{
    if (level < log_min_level)
        return false;
    l->len = 0;
    l->truncated = false;
    l->has_trace = false;
    l->level = level;
    char ts[40];
    size_t tn = format_time(ts);
    put(l, "{\"time\":\"", 9);
    put(l, ts, tn);
    put(l, "\",\"level\":\"", 11);
    put(l, level_names[level], strlen(level_names[level]));
    put(l, "\",\"msg\":", 8);
    put_json_str(l, msg, strlen(msg));
    return true;
}

/* A string field known to need no escapes. */
static void field_raw_str(struct log_line *l, const char *key, const char *val, size_t n)
{
    size_t mark = l->len;
    put_key(l, key);
    put(l, "\"", 1);
    put(l, val, n);
    put(l, "\"", 1);
    if (l->truncated)
        l->len = mark;
}

void log_field_str(struct log_line *l, const char *key, const char *val, size_t n)
{
    size_t mark = l->len;
    put_key(l, key);
    put_json_str(l, val ? val : "", val ? n : 0);
    if (l->truncated)
        l->len = mark;
}

void log_field_cstr(struct log_line *l, const char *key, const char *val)
{
    log_field_str(l, key, val, val ? strlen(val) : 0);
}

static void field_raw(struct log_line *l, const char *key, const char *txt, size_t n)
{
    size_t mark = l->len;
    put_key(l, key);
    put(l, txt, n);
    if (l->truncated)
        l->len = mark;
}

void log_field_int(struct log_line *l, const char *key, int64_t val)
{
    char tmp[32];
    size_t n = 0;
    if (val < 0) {
        tmp[n++] = '-';
        n += fmt_u64(tmp + 1, val == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-val);
    } else {
        n = fmt_u64(tmp, (uint64_t)val);
    }
    field_raw(l, key, tmp, n);
}

void log_field_uint(struct log_line *l, const char *key, uint64_t val)
{
    char tmp[32];
    field_raw(l, key, tmp, fmt_u64(tmp, val));
}

void log_field_double(struct log_line *l, const char *key, double val)
{
    if (val >= 0 && val < 1e9) {
        /* the common case (costs, ratios): fixed point with 10 decimals, trailing zeros trimmed, no printf */
        uint64_t units = (uint64_t)(val * 1e10 + 0.5);
        char tmp[40];
        size_t n = fmt_u64(tmp, units / 10000000000ull);
        uint64_t frac = units % 10000000000ull;
        if (frac) {
            tmp[n++] = '.';
            char digits[10];
            for (int i = 9; i >= 0; i--) {
                digits[i] = (char)('0' + frac % 10);
                frac /= 10;
            }
            int last = 9;
            while (last > 0 && digits[last] == '0')
                last--;
            memcpy(tmp + n, digits, (size_t)last + 1);
            n += (size_t)last + 1;
        }
        field_raw(l, key, tmp, n);
        return;
    }
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.10g", val);
    field_raw(l, key, tmp, (size_t)n);
}

void log_field_bool(struct log_line *l, const char *key, bool val)
{
    field_raw(l, key, val ? "true" : "false", val ? 4 : 5);
}

static log_tap_fn *_Atomic tap;
static _Thread_local bool tap_off;

void log_set_tap(log_tap_fn *fn)
{
    atomic_store(&tap, fn);
}

void log_tap_suppress(bool on)
{
    tap_off = on;
}

void log_field_trace(struct log_line *l, const uint8_t trace_id[16], const uint8_t span_id[8])
{
    static const char hx[] = "0123456789abcdef";
    char t[33], s[17];
    for (int i = 0; i < 16; i++) {
        t[2 * i] = hx[trace_id[i] >> 4];
        t[2 * i + 1] = hx[trace_id[i] & 15];
    }
    for (int i = 0; i < 8; i++) {
        s[2 * i] = hx[span_id[i] >> 4];
        s[2 * i + 1] = hx[span_id[i] & 15];
    }
    field_raw_str(l, "trace_id", t, 32);
    field_raw_str(l, "span_id", s, 16);
    memcpy(l->trace_id, trace_id, 16);
    memcpy(l->span_id, span_id, 8);
    l->has_trace = true;
}

/* One JSON string starting at p[0] == '"': returns the index just past its closing quote. */
static size_t json_str_end(const char *p, size_t n)
{
    size_t i = 1;
    while (i < n && p[i] != '"')
        i += p[i] == '\\' ? 2 : 1;
    return i < n ? i + 1 : n;
}

/* The JSON line this file wrote ({"time":"..","level":"..","msg":"..",key:scalar...}) as
 * "TIME LEVEL message key=value ...": string values are quoted (with their JSON escapes) when they hold a space,
 * '=', a quote or an escape, or are empty. One pass; never longer than the JSON form plus a few bytes. */
static size_t to_text(const char *j, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 1; /* past '{' */
    int field = 0;
    while (i < n && j[i] == '"' && o + 8 < cap) {
        size_t ke = json_str_end(j + i, n - i) + i; /* key "..." */
        const char *key = j + i + 1;
        size_t klen = ke - i - 2;
        i = ke + 1; /* ':' */
        size_t vs = i, ve;
        bool str = i < n && j[i] == '"';
        if (str) {
            ve = json_str_end(j + i, n - i) + i;
        } else {
            ve = i;
            while (ve < n && j[ve] != ',' && j[ve] != '}')
                ve++;
        }
        const char *v = j + vs;
        size_t vlen = ve - vs;
        if (str) { /* inner text */
            v++;
            vlen = vlen >= 2 ? vlen - 2 : 0;
        }
        bool quote = false;
        if (field >= 3) {
            if (o + klen + 2 >= cap)
                break;
            out[o++] = ' ';
            memcpy(out + o, key, klen);
            o += klen;
            out[o++] = '=';
            quote = str && vlen == 0;
            for (size_t k = 0; str && k < vlen && !quote; k++)
                quote = v[k] == ' ' || v[k] == '=' || v[k] == '\\' || v[k] == '"';
        } else if (field > 0) {
            out[o++] = ' ';
        }
        if (o + vlen + 2 >= cap)
            break;
        if (quote)
            out[o++] = '"';
        if (field == 1) { /* the level, upper case, padded to 5 */
            for (size_t k = 0; k < vlen; k++)
                out[o++] = (char)(v[k] >= 'a' && v[k] <= 'z' ? v[k] - 32 : v[k]);
            for (size_t k = vlen; k < 5; k++)
                out[o++] = ' ';
        } else if (field == 2) { /* the message, unescaped where it is simple */
            for (size_t k = 0; k < vlen; k++) {
                if (v[k] == '\\' && k + 1 < vlen && (v[k + 1] == '"' || v[k + 1] == '\\')) {
                    out[o++] = v[++k];
                } else if (v[k] == '\\' && k + 1 < vlen && v[k + 1] == 'n') {
                    out[o++] = ' ';
                    k++;
                } else {
                    out[o++] = v[k];
                }
            }
        } else {
            memcpy(out + o, v, vlen);
            o += vlen;
        }
        if (quote)
            out[o++] = '"';
        field++;
        i = ve + 1; /* past ',' or '}' */
    }
    return o;
}

void log_end(struct log_line *l)
{
    if (l->truncated && l->len + 20 < sizeof(l->buf)) {
        memcpy(l->buf + l->len, ",\"truncated\":true", 17);
        l->len += 17;
    }
    l->buf[l->len++] = '}';
    log_tap_fn *t = atomic_load_explicit(&tap, memory_order_acquire);
    if (t && !tap_off) {
        tap_off = true; /* whatever the tap logs stays local */
        t(l->level, l->buf, l->len, l->has_trace ? l->trace_id : NULL, l->has_trace ? l->span_id : NULL);
        tap_off = false;
    }
    char text[sizeof(l->buf) + 64];
    if (atomic_load_explicit(&log_format, memory_order_relaxed) == LOG_FORMAT_TEXT) {
        size_t tn = to_text(l->buf, l->len, text, sizeof(text) - 1);
        memcpy(l->buf, text, tn < sizeof(l->buf) - 1 ? tn : sizeof(l->buf) - 1);
        l->len = tn < sizeof(l->buf) - 1 ? tn : sizeof(l->buf) - 1;
    }
    l->buf[l->len++] = '\n';
    if (batch_buf && l->level < LL_WARN) {
        if (batch_len + l->len > BATCH_MAX)
            log_batch_flush();
        memcpy(batch_buf + batch_len, l->buf, l->len);
        batch_len += l->len;
        return;
    }
    log_batch_flush(); /* keep lines in order */
    write_all(l->buf, l->len);
}

static void vemit(int level, const char *request_id, int err, const char *fmt, va_list ap)
{
    char msg[2048];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        return;
    if (err && (size_t)n < sizeof(msg))
        snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(err));
    struct log_line l;
    if (!log_begin(&l, level, msg))
        return;
    if (request_id)
        log_field_cstr(&l, "request_id", request_id);
    log_end(&l);
}

void log_emit(int level, const char *request_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vemit(level, request_id, 0, fmt, ap);
    va_end(ap);
}

void log_emit_errno(int level, const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    vemit(level, NULL, err, fmt, ap);
    va_end(ap);
}
