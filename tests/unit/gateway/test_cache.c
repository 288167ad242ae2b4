/* test_cache.c: the response cache's store and key (gateway/cache.h), with an injected clock: LRU order under
 * the byte limit, TTLs, replacement, claims that coalesce identical misses (waiters woken once, on put and on
 * release), a lowered limit, and a key that ignores what does not change the answer but nothing else. */
#include <string.h>

#include "gateway/cache.h"
#include "test.h"

static uint64_t now_ms;
static uint64_t clock_fn(void *ud)
{
    (void)ud;
    return now_ms;
}

static void key_of(uint8_t k[CACHE_KEY_LEN], int i)
{
    memset(k, 0, CACHE_KEY_LEN);
    k[0] = (uint8_t)i;
    k[1] = (uint8_t)(i >> 8);
    k[31] = 0x5a;
}

static const struct rc_meta meta0 = {.stream = false};

static bool has(struct rcache *c, int i)
{
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, i);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct rc_meta m;
    bool hit = rcache_lookup(c, k, false, NULL, &b, &m) == RC_HIT;
    buf_free(&b);
    return hit;
}

static void put(struct rcache *c, int i, size_t len, uint64_t ttl)
{
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, i);
    char data[4096];
    memset(data, 'a' + i % 26, sizeof(data));
    rcache_put(c, k, data, len, &meta0, ttl);
}

static void test_lru_and_limit(void)
{
    now_ms = 1000;
    size_t one = rcache_entry_cost(100);
    struct rcache *c = rcache_new((int64_t)(3 * one), clock_fn, NULL);
    put(c, 1, 100, 10000);
    put(c, 2, 100, 10000);
    put(c, 3, 100, 10000);
    ok(has(c, 1)); /* 1 is now the most recent: 2 goes first */
    put(c, 4, 100, 10000);
    ok(!has(c, 2));
    ok(has(c, 1) && has(c, 3) && has(c, 4));
    struct rc_stats st;
    rcache_stats(c, &st);
    is_int(st.entries, 3);
    is_int(st.bytes, (long long)(3 * one));
    is_int(st.evictions, 1);
    /* an answer larger than the whole limit is not kept, and evicts nothing */
    put(c, 5, 4000, 10000);
    ok(!has(c, 5));
    ok(has(c, 1) && has(c, 3) && has(c, 4));
    /* a lowered limit evicts at once, least recent first */
    ok(has(c, 3));
    ok(has(c, 1));
    rcache_set_max(c, (int64_t)(2 * one));
    ok(!has(c, 4) && has(c, 3) && has(c, 1));
    rcache_stats(c, &st);
    ok(st.bytes <= (int64_t)(2 * one));
    rcache_free(c);
}

static void test_ttl_and_replace(void)
{
    now_ms = 5000;
    struct rcache *c = rcache_new(1 << 20, clock_fn, NULL);
    put(c, 1, 10, 100);
    now_ms += 99;
    ok(has(c, 1));
    now_ms += 1;
    ok(!has(c, 1)); /* expired exactly at its TTL */
    struct rc_stats st;
    rcache_stats(c, &st);
    is_int(st.entries, 0);
    is_int(st.expirations, 1);
    is_int(st.bytes, 0);
    /* a second answer under the same key replaces the first (bytes counted once) */
    put(c, 2, 10, 1000);
    put(c, 2, 20, 1000);
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, 2);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct rc_meta m;
    is_int(rcache_lookup(c, k, false, NULL, &b, &m), RC_HIT);
    is_int(b.len, 20);
    buf_free(&b);
    rcache_stats(c, &st);
    is_int(st.entries, 1);
    is_int(st.bytes, (long long)rcache_entry_cost(20));
    rcache_free(c);
}

struct counting_waiter {
    struct rc_waiter w;
    int woken;
};

static void count_wake(struct rc_waiter *w)
{
    ((struct counting_waiter *)w)->woken++;
}

static void test_claims(void)
{
    now_ms = 1;
    struct rcache *c = rcache_new(1 << 20, clock_fn, NULL);
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, 7);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct rc_meta m;
    struct counting_waiter w1 = {{count_wake, NULL}, 0}, w2 = {{count_wake, NULL}, 0}, w3 = {{count_wake, NULL}, 0};
    is_int(rcache_lookup(c, k, true, &w1.w, &b, &m), RC_LEADER);
    is_int(rcache_lookup(c, k, true, &w2.w, &b, &m), RC_WAIT);
    is_int(rcache_lookup(c, k, true, &w3.w, &b, &m), RC_WAIT);
    is_int(rcache_lookup(c, k, true, NULL, &b, &m), RC_MISS); /* no waiter to register: go alone */
    is_int(rcache_lookup(c, k, false, NULL, &b, &m), RC_MISS);
    is_int(w2.woken + w3.woken, 0);
    struct rc_meta sm = {.stream = true, .usage = {.input = 3, .output = 4, .known = true}, .cost_nusd = 42};
    rcache_put(c, k, "data", 4, &sm, 1000);
    is_int(w1.woken, 0);
    is_int(w2.woken, 1);
    is_int(w3.woken, 1);
    is_int(rcache_lookup(c, k, true, &w1.w, &b, &m), RC_HIT);
    ok(b.len == 4 && memcmp(b.data, "data", 4) == 0);
    ok(m.stream && m.usage.output == 4 && m.cost_nusd == 42);
    buf_free(&b);
    /* a leader that fails releases its claim: its waiters wake, and the next lookup leads */
    uint8_t k2[CACHE_KEY_LEN];
    key_of(k2, 8);
    w2.woken = 0;
    is_int(rcache_lookup(c, k2, true, &w1.w, &b, &m), RC_LEADER);
    is_int(rcache_lookup(c, k2, true, &w2.w, &b, &m), RC_WAIT);
    rcache_release(c, k2);
    is_int(w2.woken, 1);
    rcache_release(c, k2); /* twice: nothing left to wake */
    is_int(w2.woken, 1);
    is_int(rcache_lookup(c, k2, true, &w2.w, &b, &m), RC_LEADER);
    struct rc_stats st;
    rcache_stats(c, &st);
    is_int(st.pending, 1);
    rcache_release(c, k2);
    rcache_stats(c, &st);
    is_int(st.pending, 0);
    buf_free(&b);
    rcache_free(c);
}

static void test_persist(void)
{
    now_ms = 100;
    struct rcache *c = rcache_new(1 << 20, clock_fn, NULL);
    put(c, 1, 10, 1000);
    put(c, 2, 20, 50);
    put(c, 3, 30, 1000);
    ok(has(c, 1)); /* 1 is the most recent now; 2 the least */
    now_ms += 60;  /* 2 has expired: not saved */
    struct buf img = BUF_INIT(BUF_UNBOUNDED);
    rcache_save(c, &img);
    rcache_free(c);
    struct rcache *d = rcache_new((int64_t)(2 * rcache_entry_cost(30)) + 8, clock_fn, NULL);
    is_int(rcache_load(d, img.data, img.len, 1 << 20), 2);
    ok(has(d, 1) && has(d, 3) && !has(d, 2));
    /* the remaining TTL came along: 1000 - 60 ms */
    now_ms += 939;
    ok(has(d, 1));
    now_ms += 1;
    ok(!has(d, 1));
    rcache_free(d);
    /* the order survives: with room for one, the most recent (1) is what stays */
    now_ms = 100;
    d = rcache_new((int64_t)rcache_entry_cost(30), clock_fn, NULL);
    is_int(rcache_load(d, img.data, img.len, 1 << 20), 2);
    ok(has(d, 1) && !has(d, 3));
    rcache_free(d);
    /* not an image; a truncated one loads what is whole; an entry above max_entry stops the load */
    d = rcache_new(1 << 20, clock_fn, NULL);
    is_int(rcache_load(d, "nope", 4, 1 << 20), -1);
    is_int(rcache_load(d, img.data, img.len - 1, 1 << 20), 1);
    is_int(rcache_load(d, img.data, img.len, 20), 0);
    rcache_free(d);
    buf_free(&img);
}

static int key(const char *front, bool stream, const char *ns, const char *model, const char *body,
               uint8_t out[CACHE_KEY_LEN])
{
    struct cache_key_input in = {front, stream, str_from(ns), str_from(model), str_from(body)};
    return cache_key(&in, out);
}

static void test_key(void)
{
    uint8_t a[CACHE_KEY_LEN], b[CACHE_KEY_LEN];
    const char *base = "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    is_int(key("openai", false, "k1", "m", base, a), 0);
    /* the same request: keys reordered, 0 spelled -0.0, fields that do not change the answer */
    is_int(key("openai", false, "k1", "m",
               "{\"messages\":[{\"content\":\"hi\",\"role\":\"user\"}],\"user\":\"u\",\"stream\":false,"
               "\"metadata\":{\"x\":1},\"temperature\":-0.0,\"model\":\"other\"}",
               b),
           0);
    ok(memcmp(a, b, CACHE_KEY_LEN) == 0);
    /* each of these changes the answer, or who may see it */
    key("openai", false, "k2", "m", base, b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    key("openai", false, "k1", "m2", base, b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    key("anthropic", false, "k1", "m", base, b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    key("openai", true, "k1", "m", base, b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    key("openai", false, "k1", "m",
        "{\"temperature\":0.1,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    key("openai", false, "k1", "m",
        "{\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[]}", b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    /* the ignored names are ignored only at the top: a message's own "user" or "model" counts */
    key("openai", false, "k1", "m",
        "{\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"model\":\"x\"}]}", b);
    ok(memcmp(a, b, CACHE_KEY_LEN) != 0);
    /* no ambiguity between a string and the bytes around it */
    uint8_t c[CACHE_KEY_LEN], d[CACHE_KEY_LEN];
    key("openai", false, "ab", "c", "{}", c);
    key("openai", false, "a", "bc", "{}", d);
    ok(memcmp(c, d, CACHE_KEY_LEN) != 0);
    key("openai", false, "", "", "{\"a\":[\"b\",\"c\"]}", c);
    key("openai", false, "", "", "{\"a\":[\"bc\"]}", d);
    ok(memcmp(c, d, CACHE_KEY_LEN) != 0);
    /* a duplicate name: its order is kept (a provider reads one of them), so the two orders differ */
    key("openai", false, "", "", "{\"a\":1,\"a\":2}", c);
    key("openai", false, "", "", "{\"a\":2,\"a\":1}", d);
    ok(memcmp(c, d, CACHE_KEY_LEN) != 0);
    /* not an object */
    ok(key("openai", false, "", "", "[1]", b) != 0);
    ok(key("openai", false, "", "", "{", b) != 0);
    ok(key("openai", false, "", "", "", b) != 0);
}

int main(void)
{
    subtest("LRU under the byte limit", test_lru_and_limit);
    subtest("TTL and replacement", test_ttl_and_replace);
    subtest("claims coalesce identical misses", test_claims);
    subtest("the key", test_key);
    subtest("saved and loaded", test_persist);
    return done_testing();
}
