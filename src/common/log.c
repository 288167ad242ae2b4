#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/timeutil.h"

int log_min_level = LL_INFO;
static int log_fd = STDERR_FILENO;

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
    for (size_t i = 0; i < n && !l->truncated; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            put(l, tmp, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            put(l, tmp, 6);
        } else {
            put(l, (const char *)&s[i], 1);
        }
    }
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
    l->level = level;
    char ts[40];
    size_t tn = time_format_iso(ts, sizeof(ts), time_wall_us());
    put(l, "{\"time\":\"", 9);
    put(l, ts, tn);
    put(l, "\",\"level\":\"", 11);
    put(l, level_names[level], strlen(level_names[level]));
    put(l, "\",\"msg\":", 8);
    put_json_str(l, msg, strlen(msg));
    return true;
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
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)val);
    field_raw(l, key, tmp, (size_t)n);
}

void log_field_uint(struct log_line *l, const char *key, uint64_t val)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)val);
    field_raw(l, key, tmp, (size_t)n);
}

void log_field_double(struct log_line *l, const char *key, double val)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.10g", val);
    field_raw(l, key, tmp, (size_t)n);
}

void log_field_bool(struct log_line *l, const char *key, bool val)
{
    field_raw(l, key, val ? "true" : "false", val ? 4 : 5);
}

void log_end(struct log_line *l)
{
    if (l->truncated && l->len + 20 < sizeof(l->buf)) {
        memcpy(l->buf + l->len, ",\"truncated\":true", 17);
        l->len += 17;
    }
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    ssize_t off = 0;
    while ((size_t)off < l->len) {
        ssize_t w = write(log_fd, l->buf + off, l->len - (size_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += w;
    }
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
