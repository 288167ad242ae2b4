/* Token counts from providers' JSON: whatever number arrives, the ledger gets a sane integer (fuzz_openai found a
 * 2e101 completion_tokens reaching a double-to-int64 conversion). */
#include <math.h>
#include <stdint.h>

#include "gateway/gw_types.h"
#include "test.h"

static void test_usage_count(void)
{
    is_int(usage_count(0), 0);
    is_int(usage_count(42), 42);
    is_int(usage_count(42.9), 42);
    is_int(usage_count(-5), 0);
    is_int(usage_count(NAN), 0);
    is_int(usage_count(-INFINITY), 0);
    is_int(usage_count(INFINITY), 1000000000000000LL);
    is_int(usage_count(2.11111e+101), 1000000000000000LL);
    is_int(usage_count(9.3e18), 1000000000000000LL); /* past INT64_MAX */
    is_int(usage_count(999999999999999.0), 999999999999999LL);
    is_int(usage_count(5e15), 1000000000000000LL); /* the cap, not just the int64 range */
}

int main(void)
{
    subtest("usage_count", test_usage_count);
    return done_testing();
}
