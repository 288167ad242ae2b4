#include <pthread.h>
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

int main(void)
{
    subtest("per-thread shards summed", test_threads_sum);
    subtest("a reused label buffer", test_reused_label_buffer);
    subtest("escaping and cardinality cap", test_escape_and_cardinality);
    return done_testing();
}
