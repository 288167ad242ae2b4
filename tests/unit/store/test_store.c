/* test_store.c: the store interface over the SQLite backend: put/get/delete, expiry, the byte bound (oldest
 * first), persistence across a reopen, and the asynchronous calls on a loop. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "store/store.h"
#include "test.h"

static int64_t fake_now = 1000000;
static int64_t fake_clock(void)
{
    return fake_now;
}

static struct store *mem_store(int64_t max_bytes, int64_t max_age_ms)
{
    struct store_options o = {.memory = true, .max_bytes = max_bytes, .max_age_ms = max_age_ms};
    return store_new(&store_sqlite_ops, &o);
}

static void test_roundtrip(void)
{
    struct store *s = mem_store(0, 0);
    char err[256];
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    is_int(store_get_sync(s, "response", "resp_1", &out, err, sizeof(err)), STORE_NOT_FOUND);
    is_int(store_put_sync(s, "response", "resp_1", "{\"a\":1}", 7, 0, err, sizeof(err)), STORE_OK);
    is_int(store_get_sync(s, "response", "resp_1", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == 7 && memcmp(out.data, "{\"a\":1}", 7) == 0);
    /* kinds are separate name spaces */
    buf_reset(&out);
    is_int(store_get_sync(s, "thread", "resp_1", &out, err, sizeof(err)), STORE_NOT_FOUND);
    /* a put replaces */
    is_int(store_put_sync(s, "response", "resp_1", "xy", 2, 0, err, sizeof(err)), STORE_OK);
    int64_t bytes, records;
    store_stats_sync(s, &bytes, &records);
    is_int(bytes, 2);
    is_int(records, 1);
    is_int(store_delete_sync(s, "response", "resp_1", err, sizeof(err)), STORE_OK);
    is_int(store_delete_sync(s, "response", "resp_1", err, sizeof(err)), STORE_NOT_FOUND);
    store_stats_sync(s, &bytes, &records);
    is_int(bytes, 0);
    is_int(records, 0);
    /* bad names */
    is_int(store_put_sync(s, "response", "", "x", 1, 0, err, sizeof(err)), STORE_ERROR);
    char longid[STORE_MAX_ID + 2];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    is_int(store_put_sync(s, "response", longid, "x", 1, 0, err, sizeof(err)), STORE_ERROR);
    buf_free(&out);
    store_free(s);
}

static void test_expiry(void)
{
    store_set_clock_for_tests(fake_clock);
    struct store *s = mem_store(0, 1000);
    char err[256];
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    is_int(store_put_sync(s, "response", "a", "1", 1, 0, err, sizeof(err)), STORE_OK);
    is_int(store_put_sync(s, "response", "b", "2", 1, 500, err, sizeof(err)), STORE_OK);
    is_int(store_put_sync(s, "response", "c", "3", 1, 5000, err, sizeof(err)), STORE_OK); /* cut to max age */
    fake_now += 600;
    is_int(store_get_sync(s, "response", "a", &out, err, sizeof(err)), STORE_OK);
    is_int(store_get_sync(s, "response", "b", &out, err, sizeof(err)), STORE_NOT_FOUND);
    fake_now += 500;
    is_int(store_get_sync(s, "response", "a", &out, err, sizeof(err)), STORE_NOT_FOUND);
    is_int(store_get_sync(s, "response", "c", &out, err, sizeof(err)), STORE_NOT_FOUND);
    /* the next put drops what expired */
    is_int(store_put_sync(s, "response", "d", "4", 1, 0, err, sizeof(err)), STORE_OK);
    int64_t bytes, records;
    store_stats_sync(s, &bytes, &records);
    is_int(records, 1);
    buf_free(&out);
    store_free(s);
    store_set_clock_for_tests(NULL);
}

static void test_bound(void)
{
    store_set_clock_for_tests(fake_clock);
    struct store *s = mem_store(100, 0);
    char err[256];
    char blob[40];
    memset(blob, 'x', sizeof(blob));
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", i);
        fake_now++;
        is_int(store_put_sync(s, "response", id, blob, sizeof(blob), 0, err, sizeof(err)), STORE_OK);
        int64_t bytes, records;
        store_stats_sync(s, &bytes, &records);
        ok(bytes <= 100);
    }
    /* the newest two are kept, the oldest went first */
    is_int(store_get_sync(s, "response", "r9", &out, err, sizeof(err)), STORE_OK);
    is_int(store_get_sync(s, "response", "r8", &out, err, sizeof(err)), STORE_OK);
    is_int(store_get_sync(s, "response", "r7", &out, err, sizeof(err)), STORE_NOT_FOUND);
    is_int(store_get_sync(s, "response", "r0", &out, err, sizeof(err)), STORE_NOT_FOUND);
    /* one record past the bound is refused, and evicts nothing */
    char big[101];
    memset(big, 'y', sizeof(big));
    is_int(store_put_sync(s, "response", "big", big, sizeof(big), 0, err, sizeof(err)), STORE_TOO_LARGE);
    ok(strstr(err, "larger") != NULL);
    is_int(store_get_sync(s, "response", "r9", &out, err, sizeof(err)), STORE_OK);
    buf_free(&out);
    store_free(s);
    store_set_clock_for_tests(NULL);
}

static void test_persist(void)
{
    char dir[] = "/tmp/agentd-store-XXXXXX";
    ok(mkdtemp(dir) != NULL);
    char sub[64];
    snprintf(sub, sizeof(sub), "%s/data", dir); /* created by the store */
    struct store_options o = {.dir = sub, .max_bytes = 1 << 20, .max_age_ms = 60000};
    char err[256];
    struct store *s = store_new(&store_sqlite_ops, &o);
    is_int(store_put_sync(s, "thread", "t1", "hello", 5, 0, err, sizeof(err)), STORE_OK);
    store_free(s);
    s = store_new(&store_sqlite_ops, &o);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    is_int(store_get_sync(s, "thread", "t1", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == 5 && memcmp(out.data, "hello", 5) == 0);
    int64_t bytes, records;
    store_stats_sync(s, &bytes, &records);
    is_int(bytes, 5); /* counted again at open */
    store_free(s);
    buf_free(&out);
    /* an unusable data dir fails every call with a message, without retrying the open each time */
    struct store_options bad = {.dir = "/proc/agentd-no-such/x", .max_bytes = 0};
    s = store_new(&store_sqlite_ops, &bad);
    is_int(store_put_sync(s, "thread", "t1", "x", 1, 0, err, sizeof(err)), STORE_ERROR);
    ok(strstr(err, "data dir") != NULL);
    store_free(s);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ok(system(cmd) == 0);
}

struct async_state {
    int puts, gets, dels;
    int get_rc;
    char got[32];
};

static void on_put(void *ud, int rc, const char *err)
{
    (void)err;
    struct async_state *st = ud;
    ok(rc == STORE_OK);
    st->puts++;
}

static void on_get(void *ud, int rc, const char *data, size_t len, const char *err)
{
    (void)err;
    struct async_state *st = ud;
    st->get_rc = rc;
    if (rc == STORE_OK && len < sizeof(st->got)) {
        memcpy(st->got, data, len);
        st->got[len] = '\0';
    }
    st->gets++;
}

static void on_del(void *ud, int rc, const char *err)
{
    (void)err;
    struct async_state *st = ud;
    ok(rc == STORE_OK);
    st->dels++;
}

static void test_async(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = mem_store(0, 0);
    struct async_state st = {0};
    ok(store_put(s, &loop, "response", "x", "payload", 7, 0, on_put, &st) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(st.puts, 1);
    ok(store_get(s, &loop, "response", "x", on_get, &st) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(st.get_rc, STORE_OK);
    is_str(st.got, "payload");
    ok(store_delete(s, &loop, "response", "x", on_del, &st) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(st.dels, 1);
    ok(store_get(s, &loop, "response", "x", on_get, &st) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(st.get_rc, STORE_NOT_FOUND);
    is_int(st.gets, 2);
    ok(store_get(s, &loop, "response", "", on_get, &st) == -1); /* refused at once, no callback */
    /* read-your-writes: a get issued right after a put, before the loop ran, sees the record (sync and async) */
    ok(store_put(s, &loop, "response", "y", "fresh", 5, 0, on_put, &st) == 0);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    char err[256];
    is_int(store_get_sync(s, "response", "y", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == 5 && memcmp(out.data, "fresh", 5) == 0);
    ok(store_get(s, &loop, "response", "y", on_get, &st) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(st.get_rc, STORE_OK);
    is_str(st.got, "fresh");
    /* a delete right after a put wins */
    ok(store_put(s, &loop, "response", "z", "gone", 4, 0, on_put, &st) == 0);
    is_int(store_delete_sync(s, "response", "z", err, sizeof(err)), STORE_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    buf_reset(&out);
    is_int(store_get_sync(s, "response", "z", &out, err, sizeof(err)), STORE_NOT_FOUND);
    buf_free(&out);
    uv_loop_close(&loop);
    store_free(s);
}

/* Many puts queued at once: written in batches (one transaction each), every one of them, the last put of an id
 * winning. */
static void test_batches(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = mem_store(0, 0);
    struct async_state st = {0};
    char id[32], val[32];
    for (int i = 0; i < 600; i++) {
        snprintf(id, sizeof(id), "b%d", i % 500);
        snprintf(val, sizeof(val), "v%d", i);
        ok(store_put(s, &loop, "response", id, val, strlen(val), 0, on_put, &st) == 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(st.puts, 600);
    int64_t bytes, records;
    store_stats_sync(s, &bytes, &records);
    is_int(records, 500);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    char err[256];
    is_int(store_get_sync(s, "response", "b7", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == 4 && memcmp(out.data, "v507", 4) == 0);
    buf_reset(&out);
    is_int(store_get_sync(s, "response", "b499", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == 4 && memcmp(out.data, "v499", 4) == 0);
    buf_free(&out);
    uv_loop_close(&loop);
    store_free(s);
}

int main(void)
{
    subtest("roundtrip", test_roundtrip);
    subtest("expiry", test_expiry);
    subtest("bound", test_bound);
    subtest("persist", test_persist);
    subtest("async", test_async);
    subtest("batches", test_batches);
    return done_testing();
}
