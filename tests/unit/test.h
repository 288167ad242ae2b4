/* test.h: a tiny TAP harness (after h2o's picotest). One executable per module; ctest runs each.
 *
 *   static void test_append(void) { struct buf b = BUF_INIT(8); ok(buf_append(&b, "x", 1) == 0); ... }
 *   int main(void) { subtest("append", test_append); return done_testing(); }
 *
 * ok() records the expression text and location on failure; done_testing() returns non-zero when any check
 * failed or when no check ran at all (a test that asserts nothing fails). */
#ifndef AGENTD_TEST_H
#define AGENTD_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks, test_failures;
static const char *test_current = "";

#define ok(cond) test_ok_((cond) ? 1 : 0, #cond, __FILE__, __LINE__)
#define is_int(a, b) test_is_int_((long long)(a), (long long)(b), #a, __FILE__, __LINE__)
#define is_str(a, b) test_is_str_((a), (b), #a, __FILE__, __LINE__)

static inline int test_ok_(int pass, const char *expr, const char *file, int line)
{
    test_checks++;
    if (!pass) {
        test_failures++;
        printf("not ok %d - %s: %s (%s:%d)\n", test_checks, test_current, expr, file, line);
    }
    return pass;
}

static inline int test_is_int_(long long a, long long b, const char *expr, const char *file, int line)
{
    int pass = test_ok_(a == b, expr, file, line);
    if (!pass)
        printf("#   got %lld, expected %lld\n", a, b);
    return pass;
}

static inline int test_is_str_(const char *a, const char *b, const char *expr, const char *file, int line)
{
    int pass = test_ok_(a && b && strcmp(a, b) == 0, expr, file, line);
    if (!pass)
        printf("#   got \"%s\", expected \"%s\"\n", a ? a : "(null)", b ? b : "(null)");
    return pass;
}

static inline void subtest(const char *name, void (*fn)(void))
{
    const char *saved = test_current;
    int before = test_failures, checks = test_checks;
    test_current = name;
    fn();
    printf("%s %s (%d checks)\n", test_failures == before ? "ok" : "not ok", name, test_checks - checks);
    test_current = saved;
}

static inline int done_testing(void)
{
    printf("1..%d\n", test_checks);
    if (test_checks == 0) {
        printf("# no checks ran\n");
        return 1;
    }
    if (test_failures)
        printf("# %d of %d checks failed\n", test_failures, test_checks);
    return test_failures ? 1 : 0;
}

#endif
