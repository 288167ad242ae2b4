/* cache_hit: the cost of a response-cache hit and the memory of a full cache (issue 14 item 5: "a cache hit
 * served in under 50 µs of CPU on one core; the cache at its byte limit keeps RSS within 5% of that limit plus the
 * baseline").
 *
 * Part 1 runs whole exchanges through the spine in-process (the front's parse, the cache stage's key and lookup,
 * the replay, the end with its observers: metrics and the `llm` log line, written to /dev/null), into a sink that
 * only counts bytes: no socket, so the figure is agentd's own work for a hit, not the kernel's. One miss fills the
 * entry (the mock model answers), then N identical requests are hits; the figure is the thread's CPU time per hit.
 * For a short chat request (~200 B), a 4 KiB one and a 32 KiB one; streamed and not.
 *
 * Part 2 fills a store with a 256 MiB limit with 8 KiB answers, twice over (so half are evicted), and reports RSS
 * before and after against the limit.
 *
 * Build (after a Release build in build/):
 *   cc -O2 -D_GNU_SOURCE -Isrc bench/cache_hit.c build/libagentd_core.a \
 *      $(pkg-config --libs libcjson libcrypto libuv yaml-0.1 libseccomp sqlite3 libssl zlib) -lhttp_parser -lpthread -lm -ldl \
 *      -o build/cache_hit && build/cache_hit 2>/dev/null
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "config/config.h"
#include "gateway/cache.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/gw_config.h"
#include "gateway/registry.h"

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

struct counter {
    int status, ends;
    size_t bytes;
    struct buf hdrs;
};

static void c_head(void *s, int status, const struct buf *hdrs, bool stream)
{
    (void)stream;
    struct counter *c = s;
    c->status = status;
    buf_reset(&c->hdrs);
    buf_append(&c->hdrs, hdrs->data ? hdrs->data : "", hdrs->len);
}
static int c_write(void *s, const void *d, size_t n)
{
    (void)d;
    ((struct counter *)s)->bytes += n;
    return 0;
}
static void c_end(void *s)
{
    ((struct counter *)s)->ends++;
}
static const struct ex_sink_ops counter_ops = {.head = c_head, .write = c_write, .end = c_end};

static uv_loop_t loop;
static struct gateway_worker *gw;
static struct config *cfg;

static void one(const char *body, size_t n, struct counter *c)
{
    static int seq;
    struct ex_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.body = str_make(body, n);
    rq.max_tokens = -1;
    snprintf(rq.request_id, sizeof(rq.request_id), "bench-%d", ++seq);
    rq.cfg = cfg;
    int ends = c->ends;
    ex_submit(gw, &front_openai_chat, &rq, &counter_ops, c);
    while (c->ends == ends && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    uv_run(&loop, UV_RUN_NOWAIT); /* the exchange's deadline timer closes */
}

static void bench_hits(size_t prompt_bytes, bool stream, int n)
{
    struct buf body = BUF_INIT(BUF_UNBOUNDED);
    buf_printf(&body, "{\"model\":\"m\",\"stream\":%s,\"temperature\":0,\"messages\":[{\"role\":\"system\","
                      "\"content\":\"You are terse.\"},{\"role\":\"user\",\"content\":\"",
               stream ? "true" : "false");
    for (size_t i = 0; body.len < prompt_bytes; i++)
        buf_printf(&body, "word%zu ", i % 1000);
    buf_append_str(&body, "\"}]}");
    struct counter c = {0};
    c.hdrs = (struct buf)BUF_INIT(BUF_UNBOUNDED);
    one(body.data, body.len, &c); /* the miss */
    if (!strstr(c.hdrs.data ? c.hdrs.data : "", "x-agentd-cache: miss")) {
        fprintf(stderr, "first exchange was not a miss\n");
        exit(1);
    }
    size_t answer = c.bytes;
    one(body.data, body.len, &c);
    if (!strstr(c.hdrs.data ? c.hdrs.data : "", "x-agentd-cache: hit")) {
        fprintf(stderr, "second exchange was not a hit\n");
        exit(1);
    }
    for (int i = 0; i < n / 10; i++) /* warm-up */
        one(body.data, body.len, &c);
    uint64_t t0 = cpu_ns();
    for (int i = 0; i < n; i++)
        one(body.data, body.len, &c);
    uint64_t t1 = cpu_ns();
    printf("hit  request %6zu B  answer %6zu B  %-9s  %8.2f us CPU per hit (%d hits)\n", body.len, answer,
           stream ? "streamed" : "complete", (double)(t1 - t0) / n / 1000.0, n);
    buf_free(&body);
    buf_free(&c.hdrs);
}

static uint64_t clock0(void *ud)
{
    (void)ud;
    return 1;
}

static void bench_rss(void)
{
    const int64_t limit = 256LL << 20;
    const size_t entry = 8192;
    char *data = xmalloc(entry);
    memset(data, 'x', entry);
    long before = rss_kib();
    struct rcache *c = rcache_new(limit, clock0, NULL);
    struct rc_meta m = {0};
    size_t n = (size_t)(2 * limit / (int64_t)rcache_entry_cost(entry));
    for (size_t i = 0; i < n; i++) {
        uint8_t key[CACHE_KEY_LEN] = {0};
        memcpy(key, &i, sizeof(i));
        key[31] = 1;
        data[0] = (char)i;
        rcache_put(c, key, data, entry, &m, 1000000);
    }
    struct rc_stats st;
    rcache_stats(c, &st);
    long after = rss_kib();
    double grown = (double)(after - before) * 1024.0;
    printf("rss  limit %lld MiB, %zu answers of %zu B put, %lld kept (%lld B accounted): RSS %ld -> %ld KiB, grew "
           "%.1f MiB = %.1f%% of the limit\n",
           (long long)(limit >> 20), n, entry, (long long)st.entries, (long long)st.bytes, before, after,
           grown / 1048576.0, 100.0 * grown / (double)limit);
    rcache_free(c);
    xfree(data);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    char path[] = "/tmp/agentd-bench-cache-XXXXXX";
    int fd = mkstemp(path);
    static const char yaml[] = "log: {level: info}\ncache: {enabled: true}\nmodels:\n  - name: m\n    provider: mock\n";
    if (fd < 0 || write(fd, yaml, sizeof(yaml) - 1) != (ssize_t)(sizeof(yaml) - 1))
        return 1;
    close(fd);
    struct config_flags flags = {.config_path = path};
    char *env[] = {NULL};
    struct buf errs = BUF_INIT(1 << 16);
    uv_loop_init(&loop);
    ex_global_init();
    cache_init();
    cfg = config_load(&flags, env, &errs);
    unlink(path);
    if (cfg == NULL || registry_attach(cfg, env, &errs) != 0) {
        fprintf(stderr, "config: %.*s\n", (int)errs.len, errs.data ? errs.data : "");
        return 1;
    }
    buf_free(&errs);
    gw = ex_worker_new(&loop, gw_config_up_options(cfg));
    bench_hits(200, false, n);
    bench_hits(4096, false, n);
    bench_hits(32768, false, n / 4);
    bench_hits(200, true, n);
    bench_hits(4096, true, n);
    ex_worker_free(gw);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    cache_cleanup();
    config_unref(cfg);
    bench_rss();
    return 0;
}
