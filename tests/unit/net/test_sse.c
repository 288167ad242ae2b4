#include <string.h>

#include "net/sse.h"
#include "test.h"

struct got {
    char events[16][64];
    char data[16][128];
    int n;
};

static int on_ev(const struct sse_event *e, void *ud)
{
    struct got *g = ud;
    if (g->n < 16) {
        snprintf(g->events[g->n], 64, "%.*s", STR_FMT(e->event));
        snprintf(g->data[g->n], 128, "%.*s", STR_FMT(e->data));
    }
    g->n++;
    return 0;
}

static void feed_bytes(struct sse_parser *p, const char *s)
{
    for (size_t i = 0; s[i]; i++)
        sse_feed(p, s + i, 1); /* worst-case fragmentation */
}

static void test_basic(void)
{
    struct got g = {0};
    struct sse_parser p;
    sse_parser_init(&p, 1024, on_ev, &g);
    const char *s = ": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
    ok(sse_feed(&p, s, strlen(s)) == 0);
    is_int(g.n, 3);
    is_str(g.events[0], "message_start");
    is_str(g.data[0], "{\"a\":1}");
    is_str(g.data[1], "line1\nline2");
    is_str(g.events[2], "");
    is_str(g.data[2], "[DONE]");
    sse_parser_free(&p);
}

static void test_fragmented_crlf(void)
{
    struct got g = {0};
    struct sse_parser p;
    sse_parser_init(&p, 1024, on_ev, &g);
    feed_bytes(&p, "event: x\r\ndata: one\r\n\r\ndata:two\r\rdata: three\n\n");
    is_int(g.n, 3);
    is_str(g.events[0], "x");
    is_str(g.data[0], "one");
    is_str(g.data[1], "two");   /* no space after the colon */
    is_str(g.data[2], "three"); /* lone CR line ends */
    is_str(g.events[1], "");    /* the event name does not leak into the next event */
    sse_parser_free(&p);
}

static void test_limits_and_finish(void)
{
    struct got g = {0};
    struct sse_parser p;
    sse_parser_init(&p, 16, on_ev, &g);
    ok(sse_feed(&p, "data: 0123456789012345678901234\n\n", 33) == -1); /* event larger than the bound */
    sse_parser_free(&p);
    sse_parser_init(&p, 1024, on_ev, &g);
    g.n = 0;
    ok(sse_feed(&p, "data: partial", 13) == 0);
    sse_finish(&p);
    is_int(g.n, 0); /* an unterminated event is dropped */
    sse_parser_free(&p);
}

static void test_bom(void)
{
    struct got g = {0};
    struct sse_parser p;
    sse_parser_init(&p, 1024, on_ev, &g);
    feed_bytes(&p, "\xef\xbb\xbf" "data: x\n\n"); /* BOM split byte by byte */
    is_int(g.n, 1);
    is_str(g.data[0], "x");
    sse_parser_free(&p);
}

static void test_write(void)
{
    struct buf b = BUF_INIT(1024);
    ok(sse_append_event(&b, "ping", "a\nb", 3) == 0);
    is_str(b.data, "event: ping\ndata: a\ndata: b\n\n");
    buf_free(&b);
}

int main(void)
{
    subtest("basic", test_basic);
    subtest("fragmented, CRLF and CR", test_fragmented_crlf);
    subtest("limits and finish", test_limits_and_finish);
    subtest("BOM split across reads", test_bom);
    subtest("write", test_write);
    return done_testing();
}
