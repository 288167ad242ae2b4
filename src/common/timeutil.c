#include "common/timeutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
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

/* ---------- HTTP dates ---------- */

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const wdays_long[7] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                          "Saturday"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

struct dscan {
    const char *p, *end;
};

static bool lit(struct dscan *d, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, w, n) != 0)
        return false;
    d->p += n;
    return true;
}

/* nmin to nmax decimal digits into *v. */
static bool digits(struct dscan *d, int nmin, int nmax, int *v)
{
    int n = 0, x = 0;
    while (n < nmax && d->p < d->end && *d->p >= '0' && *d->p <= '9') {
        x = x * 10 + (*d->p - '0');
        d->p++;
        n++;
    }
    if (n < nmin)
        return false;
    *v = x;
    return true;
}

static bool month(struct dscan *d, int *m)
{
    for (int i = 0; i < 12; i++)
        if (lit(d, months[i])) {
            *m = i + 1;
            return true;
        }
    return false;
}

static bool hms(struct dscan *d, int *h, int *mi, int *sec)
{
    return digits(d, 2, 2, h) && lit(d, ":") && digits(d, 2, 2, mi) && lit(d, ":") && digits(d, 2, 2, sec);
}

int time_parse_http_date(const char *s, size_t len, int64_t *out)
{
    struct dscan d = {s, s + len};
    while (d.p < d.end && *d.p == ' ')
        d.p++;
    while (d.end > d.p && d.end[-1] == ' ')
        d.end--;
    int wd = -1, day = 0, mon = 0, year = 0, h = 0, mi = 0, sec = 0;
    bool ok = false;
    for (int i = 0; i < 7 && wd < 0; i++)
        if (lit(&d, wdays_long[i]))
            wd = i + 7; /* RFC 850 */
        else if (lit(&d, wdays[i]))
            wd = i;
    if (wd < 0)
        return -1;
    if (wd >= 7) { /* Sunday, 06-Nov-94 08:49:37 GMT */
        ok = lit(&d, ", ") && digits(&d, 2, 2, &day) && lit(&d, "-") && month(&d, &mon) && lit(&d, "-") &&
             digits(&d, 2, 2, &year) && lit(&d, " ") && hms(&d, &h, &mi, &sec) && lit(&d, " GMT");
        year += year < 70 ? 2000 : 1900;
        wd -= 7;
    } else if (lit(&d, ", ")) { /* Sun, 06 Nov 1994 08:49:37 GMT */
        ok = digits(&d, 2, 2, &day) && lit(&d, " ") && month(&d, &mon) && lit(&d, " ") && digits(&d, 4, 4, &year) &&
             lit(&d, " ") && hms(&d, &h, &mi, &sec) && lit(&d, " GMT");
    } else if (lit(&d, " ")) { /* Sun Nov  6 08:49:37 1994 */
        ok = month(&d, &mon) && lit(&d, " ") && (lit(&d, " ") ? digits(&d, 1, 1, &day) : digits(&d, 2, 2, &day)) &&
             lit(&d, " ") && hms(&d, &h, &mi, &sec) && lit(&d, " ") && digits(&d, 4, 4, &year);
    }
    if (!ok || d.p != d.end || year < 1970 || h > 23 || mi > 59 || sec > 60 || day < 1)
        return -1;
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (day > mdays[mon - 1] + (mon == 2 && leap(year)))
        return -1;
    int64_t days = days_from_civil(year, (unsigned)mon, (unsigned)day);
    (void)wd; /* a wrong weekday is the sender's slip; the date itself is what counts (as curl does) */
    *out = days * 86400 + h * 3600 + mi * 60 + (sec == 60 ? 59 : sec);
    return 0;
}

size_t time_format_http_date(char *dst, size_t dstsize, int64_t epoch)
{
    if (dstsize < 30 || epoch < 0 || epoch >= 253402300800) /* 10000-01-01 */
        return 0;
    int64_t days = epoch / 86400, rem = epoch % 86400;
    /* civil_from_days */
    int64_t z = days + 719468, era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = (int64_t)yoe + era * 400 + (m <= 2);
    int n = snprintf(dst, dstsize, "%s, %02u %s %04lld %02d:%02d:%02d GMT", wdays[(days + 4) % 7], d, months[m - 1],
                     (long long)y, (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60));
    return n > 0 && (size_t)n < dstsize ? (size_t)n : 0;
}
