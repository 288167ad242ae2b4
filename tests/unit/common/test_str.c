#include <stdint.h>

#include "common/alloc.h"
#include "common/str.h"
#include "test.h"

static void test_numbers(void)
{
    uint64_t u;
    int64_t i;
    double d;
    ok(str_to_u64(STR_LIT("0"), &u) == 0 && u == 0);
    ok(str_to_u64(STR_LIT("18446744073709551615"), &u) == 0 && u == UINT64_MAX);
    ok(str_to_u64(STR_LIT("18446744073709551616"), &u) == -1); /* overflow */
    ok(str_to_u64(STR_LIT(""), &u) == -1);
    ok(str_to_u64(STR_LIT("12a"), &u) == -1);
    ok(str_to_u64(STR_LIT("-1"), &u) == -1);
    ok(str_to_i64(STR_LIT("-9223372036854775808"), &i) == 0 && i == INT64_MIN);
    ok(str_to_i64(STR_LIT("9223372036854775808"), &i) == -1);
    ok(str_to_i64(STR_LIT("+42"), &i) == 0 && i == 42);
    ok(str_to_double(STR_LIT("1.5e3"), &d) == 0 && d == 1500.0);
    ok(str_to_double(STR_LIT("nan"), &d) == -1);
    ok(str_to_double(STR_LIT("1e999"), &d) == -1);
}

static void test_compare(void)
{
    ok(str_eq_nocase(STR_LIT("Content-Type"), STR_LIT("content-type")));
    ok(!str_eq_nocase(STR_LIT("Content-Type"), STR_LIT("content-typ")));
    ok(str_list_has_token(STR_LIT("keep-alive, Upgrade"), "upgrade"));
    ok(!str_list_has_token(STR_LIT("keep-alive, Upgraded"), "upgrade"));
    struct str t = str_trim(STR_LIT("  \tx y \t"));
    ok(str_eq_cstr(t, "x y"));
    char buf[4];
    is_int(str_lcpy(buf, "abcdef", sizeof(buf)), 6);
    is_str(buf, "abc");
    char *p = str_dup(STR_LIT("dup"));
    is_str(p, "dup");
    xfree(p);
}

int main(void)
{
    subtest("numbers", test_numbers);
    subtest("compare", test_compare);
    return done_testing();
}
