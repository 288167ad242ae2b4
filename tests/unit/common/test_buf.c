#include "common/alloc.h"
#include "common/buf.h"
#include "test.h"

static void test_limits(void)
{
    struct buf b = BUF_INIT(8);
    ok(buf_append(&b, "12345678", 8) == 0);
    is_int(b.len, 8);
    ok(buf_append(&b, "9", 1) == -1); /* one past max fails */
    is_int(b.len, 8);                 /* and leaves the buffer as it was */
    is_str(b.data, "12345678");
    buf_consume(&b, 3);
    is_str(b.data, "45678");
    ok(buf_printf(&b, "%d", 123) == 0);
    is_str(b.data, "45678123");
    ok(buf_printf(&b, "%d", 4) == -1);
    buf_free(&b);
}

static void test_json_escape(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    ok(buf_append_json_str(&b, "a\"b\\c\n\x01", 7) == 0);
    is_str(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    buf_reset(&b);
    ok(buf_append_json_cstr(&b, "plain") == 0);
    is_str(b.data, "\"plain\"");
    buf_free(&b);
    struct buf small = BUF_INIT(4);
    ok(buf_append_json_cstr(&small, "toolong") == -1);
    buf_free(&small);
}

static void test_steal(void)
{
    struct buf b = BUF_INIT(100);
    size_t n = 99;
    char *p = buf_steal(&b, &n);
    is_int(n, 0);
    is_str(p, "");
    xfree(p);
    buf_append_str(&b, "xy");
    p = buf_steal(&b, &n);
    is_int(n, 2);
    is_str(p, "xy");
    ok(b.data == NULL);
    xfree(p);
}

int main(void)
{
    subtest("limits", test_limits);
    subtest("json escape", test_json_escape);
    subtest("steal", test_steal);
    return done_testing();
}
