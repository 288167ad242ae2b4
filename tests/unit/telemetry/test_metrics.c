#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "telemetry/metrics.h"
#include "test.h"

static const char *const labels[] = {"code", NULL};
static struct metric_def m_req = METRIC_DEF("test_requests_total", "Requests.", METRIC_COUNTER, labels);
static const double buckets[] = {0.1, 1, 10};
static struct metric_def m_lat = METRIC_HISTOGRAM_DEF("test_latency_seconds", "Latency.", NULL, buckets);

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++)
        metrics_inc(&m_req, (const char *[]){i % 2 ? "200" : "500"});
    metrics_observe(&m_lat, NULL, 0.05);
    metrics_observe(&m_lat, NULL, 5);
    return NULL;
}

static void test_threads_sum(void)
{
    metrics_register(&m_req);
    metrics_register(&m_lat);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* Four thread shards, summed at scrape time. */
    ok(metrics_sum(&m_req, (const char *[]){"200"}) == 20000);
    ok(metrics_sum(&m_req, NULL) == 40000);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    metrics_render(&out);
    ok(strstr(out.data, "# TYPE test_requests_total counter\n") != NULL);
    ok(strstr(out.data, "test_requests_total{code=\"200\"} 20000\n") != NULL);
    ok(strstr(out.data, "test_latency_seconds_bucket{le=\"0.1\"} 4\n") != NULL);
    ok(strstr(out.data, "test_latency_seconds_bucket{le=\"1\"} 4\n") != NULL);
    ok(strstr(out.data, "test_latency_seconds_bucket{le=\"10\"} 8\n") != NULL);
    ok(strstr(out.data, "test_latency_seconds_bucket{le=\"+Inf\"} 8\n") != NULL);
    ok(strstr(out.data, "test_latency_seconds_count 8\n") != NULL);
    ok(strstr(out.data, "test_latency_seconds_sum 20.2\n") != NULL);
    buf_free(&out);
}

/* Series are found by the label pointers first: a buffer reused with other contents must still count apart. */
static void test_reused_label_buffer(void)
{
    char v[8];
    for (int i = 0; i < 10; i++) {
        strcpy(v, i % 2 ? "x1" : "x2");
        metrics_inc(&m_req, (const char *[]){v});
    }
    is_int(metrics_sum(&m_req, (const char *[]){"x1"}), 5);
    is_int(metrics_sum(&m_req, (const char *[]){"x2"}), 5);
    metrics_inc(&m_req, (const char *[]){"x1"}); /* same contents, another pointer */
    is_int(metrics_sum(&m_req, (const char *[]){"x1"}), 6);
}

/* Exemplars: the latest traced observation per bucket, shown in OpenMetrics only, in the family's Prometheus
 * unit; a scraper reading while a writer updates never sees a torn exemplar. */
static struct metric_def m_ms = METRIC_HISTOGRAM_DEF("test_duration_seconds", "Duration.", NULL, buckets);
static const uint8_t tid_a[16] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
                                  0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
static const uint8_t tid_b[16] = {0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb,
                                  0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb};
static const uint8_t sid[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static _Atomic int writing;
static atomic_long written;

static void *ex_writer(void *arg)
{
    (void)arg;
    struct metric_series *s = metrics_series(&m_ms, NULL);
    for (int i = 0; atomic_load(&writing); i++) {
        metrics_series_observe_ex(s, 5, i % 2 ? tid_a : tid_b, sid); /* the le="10" bucket, 0.01 shown */
        atomic_fetch_add(&written, 1);
        sched_yield(); /* under valgrind (one thread at a time) the reader then mostly finds the slot between writes */
    }
    return NULL;
}

static void test_exemplars(void)
{
    m_ms.exemplars = true;
    m_ms.prom_div = 1000;
    metrics_register(&m_ms);
    struct metric_series *s = metrics_series(&m_ms, NULL);
    /* recorded in ms, shown in s: bounds 0.1 1 10 are le 0.0001 0.001 0.01 */
    metrics_series_observe(s, 0.05); /* no exemplar */
    metrics_series_observe_ex(s, 0.5, tid_a, sid);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    metrics_render_openmetrics(&out);
    ok(strstr(out.data, "test_duration_seconds_bucket{le=\"0.0001\"} 1\n") != NULL);
    ok(strstr(out.data, "test_duration_seconds_bucket{le=\"0.001\"} 2 # {trace_id=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
                        "span_id=\"0102030405060708\"} 0.0005 ") != NULL);
    ok(strstr(out.data, "# TYPE test_requests counter\n") != NULL); /* OpenMetrics: no _total on the family */
    ok(strstr(out.data, "\ntest_requests_total{") != NULL);
    size_t n = out.len;
    ok(n > 6 && strcmp(out.data + n - 6, "# EOF\n") == 0);
    buf_reset(&out);
    metrics_render(&out);
    buf_append(&out, "", 1);
    ok(strstr(out.data, "trace_id") == NULL); /* the 0.0.4 text has no exemplars */
    ok(strstr(out.data, "test_duration_seconds_sum 0.00055\n") != NULL);
    buf_free(&out);
    /* torn reads: a writer flips between two trace ids; every rendered exemplar is one of them, whole */
    atomic_store(&writing, 1);
    pthread_t t;
    pthread_create(&t, NULL, ex_writer, NULL);
    /* the readers start once the writer has written (valgrind runs one thread at a time: without this the loop
     * below could finish before the writer is first scheduled) */
    while (atomic_load(&written) == 0)
        sched_yield();
    int bad = 0, seen = 0;
    for (int k = 0; k < 300; k++) {
        struct buf o = BUF_INIT(BUF_UNBOUNDED);
        metrics_render_openmetrics(&o);
        buf_append(&o, "", 1);
        const char *p = strstr(o.data, "test_duration_seconds_bucket{le=\"0.01\"}");
        const char *e = p ? strstr(p, "trace_id=\"") : NULL;
        seen += e != NULL;
        if (e && strncmp(e + 10, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", 33) != 0 &&
            strncmp(e + 10, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"", 33) != 0)
            bad++;
        buf_free(&o);
    }
    atomic_store(&writing, 0);
    pthread_join(t, NULL);
    is_int(bad, 0);
    ok(seen > 0);
}

static void test_escape_and_cardinality(void)
{
    metrics_inc(&m_req, (const char *[]){"a\"b\\c\nd"});
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    metrics_render(&out);
    ok(strstr(out.data, "test_requests_total{code=\"a\\\"b\\\\c\\nd\"} 1\n") != NULL);
    buf_free(&out);
    char v[32];
    for (int i = 0; i < METRICS_MAX_SERIES_PER_FAMILY + 50; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        metrics_inc(&m_req, (const char *[]){v});
    }
    ok(metrics_sum(&m_req, (const char *[]){"other"}) > 0); /* folded past the cap */
    metrics_shutdown();
}

/* A memo keeps the series of its key; another key, or metrics_shutdown (the epoch), starts it over, and keys too
 * long to keep fall back to a lookup per series. Counts land on the right label set either way. */
static void test_memo(void)
{
    metrics_register(&m_req);
    static struct metrics_memo memo;
    char v[8] = "m1";
    for (int i = 0; i < 6; i++) {
        strcpy(v, i < 4 ? "m1" : "m2"); /* the same buffer, other contents */
        bool ok1 = metrics_memo_use(&memo, 0, (const char *[]){v}, 1);
        ok(ok1);
        metrics_series_add(metrics_memo_series(&memo, ok1, 0, &m_req, (const char *[]){v}), 1);
    }
    is_int(metrics_sum(&m_req, (const char *[]){"m1"}), 4);
    is_int(metrics_sum(&m_req, (const char *[]){"m2"}), 2);
    struct metric_series *kept = memo.s[0];
    ok(kept != NULL);
    ok(metrics_memo_use(&memo, 0, (const char *[]){"m2"}, 1) && memo.s[0] == kept); /* a hit keeps it */
    ok(metrics_memo_use(&memo, 1, (const char *[]){"m2"}, 1) && memo.s[0] == NULL);  /* the tag is in the key */
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    bool ok2 = metrics_memo_use(&memo, 0, (const char *[]){big}, 1);
    ok(!ok2);
    metrics_series_add(metrics_memo_series(&memo, ok2, 0, &m_req, (const char *[]){"m3"}), 1);
    ok(memo.s[0] == NULL);
    is_int(metrics_sum(&m_req, (const char *[]){"m3"}), 1);
    ok(metrics_memo_use(&memo, 0, (const char *[]){"m1"}, 1));
    metrics_series_add(metrics_memo_series(&memo, true, 0, &m_req, (const char *[]){"m1"}), 1);
    uint64_t e = metrics_epoch();
    metrics_shutdown(); /* frees the series the memo points at */
    ok(metrics_epoch() != e);
    metrics_register(&m_req);
    bool ok3 = metrics_memo_use(&memo, 0, (const char *[]){"m1"}, 1);
    ok(ok3 && memo.s[0] == NULL); /* same key, new epoch: looked up again, not the freed series */
    metrics_series_add(metrics_memo_series(&memo, ok3, 0, &m_req, (const char *[]){"m1"}), 1);
    is_int(metrics_sum(&m_req, (const char *[]){"m1"}), 1);
    metrics_shutdown();
}

int main(void)
{
    subtest("per-thread shards summed", test_threads_sum);
    subtest("a reused label buffer", test_reused_label_buffer);
    subtest("exemplars and OpenMetrics", test_exemplars);
    subtest("escaping and cardinality cap", test_escape_and_cardinality);
    subtest("a memo of series per key", test_memo);
    return done_testing();
}
