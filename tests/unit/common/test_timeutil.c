/* HTTP dates (Retry-After): the three forms RFC 9110 §5.6.7 makes recipients accept, the edges of the calendar,
 * and what must be refused; formatting and parsing agree over the whole range. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "common/timeutil.h"
#include "test.h"

static int64_t parse(const char *s)
{
    int64_t t = -12345;
    return time_parse_http_date(s, strlen(s), &t) == 0 ? t : -1;
}

static void test_forms(void)
{
    /* RFC 9110's own example, in its three spellings */
    is_int(parse("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    is_int(parse("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
    is_int(parse("Sun Nov  6 08:49:37 1994"), 784111777);
    is_int(parse("Thu Nov 26 08:49:37 2026"), 1795682977);
    is_int(parse("  Thu, 01 Jan 1970 00:00:00 GMT  "), 0);
    is_int(parse("Thursday, 01-Jan-70 00:00:00 GMT"), 0);
    is_int(parse("Monday, 01-Jan-69 00:00:00 GMT"), parse("Tue, 01 Jan 2069 00:00:00 GMT")); /* two-digit years */
    is_int(parse("Fri, 31 Dec 9999 23:59:59 GMT"), 253402300799);
    is_int(parse("Tue, 29 Feb 2028 12:00:00 GMT"), 1835438400);
    is_int(parse("Wed, 31 Dec 2025 23:59:60 GMT"), parse("Wed, 31 Dec 2025 23:59:59 GMT")); /* leap second */
    is_int(parse("Mon, 30 Nov 2026 00:00:00 GMT"), parse("Fri, 30 Nov 2026 00:00:00 GMT")); /* weekday slip */
}

static void test_refused(void)
{
    const char *bad[] = {
        "",
        "120",
        "Sun, 06 Nov 1994 08:49:37",         /* no zone */
        "Sun, 06 Nov 1994 08:49:37 UTC",     /* only GMT */
        "Sun, 06 Nov 1994 08:49:37 GMT x",   /* trailing */
        "Sun, 6 Nov 1994 08:49:37 GMT",      /* two-digit day */
        "Sun, 06 nov 1994 08:49:37 GMT",     /* case */
        "Sun, 06 Nov 94 08:49:37 GMT",       /* four-digit year */
        "Sun, 31 Nov 1994 08:49:37 GMT",     /* no such day */
        "Sun, 29 Feb 2100 08:49:37 GMT",     /* not a leap year */
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1969 08:49:37 GMT",     /* before the epoch */
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun,06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",           /* asctime pads the day with a space */
        "Sunday, 06-Nov-1994 08:49:37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t t = 7;
        ok(time_parse_http_date(bad[i], strlen(bad[i]), &t) == -1 && t == 7);
    }
    int64_t t;
    ok(time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT\0", 30, &t) == -1); /* an embedded NUL */
}

static void test_format_roundtrip(void)
{
    char b[40];
    is_int(time_format_http_date(b, sizeof(b), 784111777), 29);
    is_str(b, "Sun, 06 Nov 1994 08:49:37 GMT");
    is_int(time_format_http_date(b, 29, 0), 0);
    is_int(time_format_http_date(b, sizeof(b), -1), 0);
    is_int(time_format_http_date(b, sizeof(b), 253402300800), 0);
    /* against the C library's calendar, every ~116 days (and a few seconds) over 1970-9999 */
    for (int64_t t = 0; t < 253402300800; t += 10000019) {
        ok(time_format_http_date(b, sizeof(b), t) == 29);
        time_t tt = (time_t)t;
        struct tm tm;
        char ref[40];
        gmtime_r(&tt, &tm);
        strftime(ref, sizeof(ref), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (strcmp(b, ref) != 0 || parse(b) != t) {
            is_str(b, ref);
            is_int(parse(b), t);
            break;
        }
    }
}

int main(void)
{
    subtest("three forms", test_forms);
    subtest("refused", test_refused);
    subtest("format and parse agree", test_format_roundtrip);
    return done_testing();
}
