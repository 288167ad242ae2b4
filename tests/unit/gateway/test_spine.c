/* test_spine.c: the exchange's spine through a loopback sink, with no socket: routing, a stage that waits and
 * resumes, attempt outcomes (mock success, mock error, the request deadline), observers called exactly once per
 * exchange and per attempt, and a client that goes away mid-stream. Runs on a real libuv loop; every wait is a
 * wait on the event (the sink's end), never a sleep. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/gw_config.h"
#include "gateway/registry.h"
#include "loopback.h"
#include "telemetry/metrics.h"
#include "test.h"

static uv_loop_t loop;
static struct gateway_worker *gw;
static struct config *cfg;

/* ---- a counting observer ---- */

static struct {
    int settles, attempts;
    int by_result[AO_COUNT];
    int last_status;
    int last_attempt_status;
    const struct exchange *last_ex;
} C;

static void count_attempt(const struct exchange *ex, const struct attempt *a, const struct attempt_outcome *o)
{
    (void)a;
    C.attempts++;
    C.by_result[o->result]++;
    C.last_attempt_status = o->status;
    C.last_ex = ex;
}

static void count_settle(const struct exchange *ex, const struct ex_outcome *o)
{
    C.settles++;
    C.last_status = o->status;
    C.last_ex = ex;
}

static const struct ex_observer counter = {.name = "test", .on_attempt_end = count_attempt, .on_settle = count_settle};

static void reset_counts(void)
{
    memset(&C, 0, sizeof(C));
}

/* ---- helpers ---- */

static struct exchange *submit(struct loopback *lb, const struct front_ops *f, const char *body)
{
    static int n;
    struct ex_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.body = str_from(body);
    rq.max_tokens = -1;
    snprintf(rq.request_id, sizeof(rq.request_id), "spine-%d", ++n);
    rq.cfg = cfg;
    return ex_submit(gw, f, &rq, &loopback_ops, lb);
}

/* Turns the loop until the sink has had its end() (or nothing is left to run). */
static void run_until_end(struct loopback *lb)
{
    while (lb->ends == 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
}

/* Lets closing handles (exchanges' deadline timers, the mock's timers) finish. */
static void settle_loop(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static long header_long(const struct loopback *lb, const char *name)
{
    const char *v = lb_header(lb, name);
    return v ? strtol(v, NULL, 10) : -1;
}

/* ---- route ---- */

static void test_route(void)
{
    struct loopback lb;
    lb_init(&lb);
    reset_counts();
    struct exchange *ex = submit(&lb, &front_openai_chat,
                                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    ok(ex == NULL); /* ended at once */
    is_int(lb.heads, 1);
    is_int(lb.ends, 1);
    is_int(lb.status, 404);
    ok(!lb.stream);
    ok(strstr(lb.body.data, "\"code\":\"model_not_found\"") != NULL);
    is_int(C.settles, 1);
    is_int(C.attempts, 0);
    lb_free(&lb);

    /* Anthropic's door answers in its own format, with request-id */
    lb_init(&lb);
    reset_counts();
    submit(&lb, &front_anthropic,
           "{\"model\":\"nope\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    is_int(lb.status, 404);
    ok(strstr(lb.body.data, "\"type\":\"error\"") != NULL);
    ok(lb_header(&lb, "request-id") != NULL);
    is_int(C.settles, 1);
    lb_free(&lb);

    /* a found model goes all the way: mock success, complete response */
    lb_init(&lb);
    reset_counts();
    submit(&lb, &front_openai_chat, "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}");
    run_until_end(&lb);
    is_int(lb.status, 200);
    ok(!lb.stream);
    is_int(lb.writes, 1);
    ok(strstr(lb.body.data, "echo: hello") != NULL);
    is_str(lb_header(&lb, "x-agentd-model"), "fast");
    is_str(lb_header(&lb, "x-agentd-attempts"), "1");
    ok(lb_header(&lb, "x-agentd-deployment") != NULL);
    ok(lb_header(&lb, "x-agentd-cost-usd") != NULL);
    ok(lb_header(&lb, "x-agentd-input-tokens") != NULL);
    is_int(C.settles, 1);
    is_int(C.attempts, 1);
    is_int(C.by_result[AO_OK], 1);
    lb_free(&lb);
    settle_loop();
}

/* ---- attempt outcomes ---- */

static void test_outcomes(void)
{
    struct loopback lb;

    /* a streamed mock success ends with [DONE] */
    lb_init(&lb);
    reset_counts();
    submit(&lb, &front_openai_chat,
           "{\"model\":\"fast\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"one two\"}]}");
    run_until_end(&lb);
    is_int(lb.status, 200);
    ok(lb.stream);
    is_int(lb.heads, 1);
    ok(lb.body.len > 14 && strcmp(lb.body.data + lb.body.len - 14, "data: [DONE]\n\n") == 0);
    is_int(C.attempts, 1);
    is_int(C.by_result[AO_OK], 1);
    is_int(C.settles, 1);
    lb_free(&lb);

    /* the mock's error: an HTTP status outcome, Retry-After passed on */
    lb_init(&lb);
    reset_counts();
    submit(&lb, &front_openai_chat,
           "{\"model\":\"erring\",\"messages\":[{\"role\":\"user\",\"content\":\"mock:error=429\"}]}");
    run_until_end(&lb);
    is_int(lb.status, 429);
    is_str(lb_header(&lb, "retry-after"), "1");
    is_str(lb_header(&lb, "retry-after-ms"), "1000");
    is_int(C.attempts, 1);
    is_int(C.by_result[AO_HTTP_STATUS], 1);
    is_int(C.last_attempt_status, 429);
    is_int(C.settles, 1);
    is_int(C.last_status, 429);
    lb_free(&lb);

    /* the request deadline cuts a hung attempt: counted once, and the wait is not agentd's overhead */
    lb_init(&lb);
    reset_counts();
    struct exchange *ex = submit(&lb, &front_openai_chat,
                                 "{\"model\":\"slow\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    ok(ex != NULL);
    is_int(lb.heads, 0);
    run_until_end(&lb);
    is_int(lb.status, 504);
    is_int(C.attempts, 1);
    is_int(C.by_result[AO_CANCELLED_DEADLINE], 1);
    is_int(C.settles, 1);
    long overhead = header_long(&lb, "x-agentd-overhead-us");
    ok(overhead >= 0 && overhead < 100000); /* the deadline is 300 ms, all of it spent waiting on the mock */
    if (overhead >= 100000)
        printf("#   x-agentd-overhead-us %ld for a 300 ms wait\n", overhead);
    lb_free(&lb);
    settle_loop();
}

/* ---- a stage that waits ---- */

static int waits;
static uv_timer_t wait_timer;
static struct exchange *waiting;

static void on_wait_done(uv_timer_t *t)
{
    (void)t;
    struct exchange *ex = waiting;
    waiting = NULL;
    ex_resume(ex); /* ignored when the exchange ended meanwhile */
    ex_unref(ex);
}

static enum ex_next waiting_stage(struct exchange *ex, void *ud)
{
    (void)ud;
    waits++;
    ex_ref(ex);
    waiting = ex;
    uv_timer_start(&wait_timer, on_wait_done, 5, 0);
    return EX_WAIT;
}

static void test_wait_and_resume(void)
{
    ok(ex_stage_plug("route", waiting_stage, NULL) == -1); /* only pass-through stages are pluggable */
    ok(ex_stage_plug("authenticate", waiting_stage, NULL) == 0);
    uv_timer_init(&loop, &wait_timer);

    struct loopback lb;
    lb_init(&lb);
    reset_counts();
    waits = 0;
    struct exchange *ex = submit(&lb, &front_openai_chat,
                                 "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"later\"}]}");
    ok(ex != NULL);
    is_int(waits, 1);
    is_int(lb.heads, 0); /* nothing answered while the stage waits */
    is_int(C.attempts, 0);
    run_until_end(&lb);
    is_int(lb.status, 200);
    ok(strstr(lb.body.data, "echo: later") != NULL);
    is_int(C.attempts, 1);
    is_int(C.settles, 1);
    lb_free(&lb);

    /* the client goes away while the stage waits: 499, no attempt, the late resume is ignored */
    lb_init(&lb);
    reset_counts();
    ex = submit(&lb, &front_openai_chat, "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    ok(ex != NULL);
    ex_cancel(ex);
    is_int(lb.ends, 1);
    is_int(C.settles, 1);
    is_int(C.last_status, 499);
    while (waiting && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    ok(waiting == NULL);
    is_int(C.settles, 1);
    is_int(C.attempts, 0);
    lb_free(&lb);

    ex_stage_plug("authenticate", NULL, NULL);
    uv_close((uv_handle_t *)&wait_timer, NULL);
    settle_loop();
}

/* ---- the client goes away mid-stream ---- */

static uv_timer_t cancel_timer;

static void on_cancel(uv_timer_t *t)
{
    struct loopback *lb = t->data;
    if (lb->ex)
        ex_cancel(lb->ex);
}

static void cancel_after_first_write(struct loopback *lb)
{
    if (lb->writes == 1) {
        cancel_timer.data = lb;
        uv_timer_start(&cancel_timer, on_cancel, 0, 0);
    }
}

static void test_cancel_mid_stream(void)
{
    uv_timer_init(&loop, &cancel_timer);
    struct loopback lb;
    lb_init(&lb);
    lb.on_write = cancel_after_first_write;
    reset_counts();
    struct exchange *ex = submit(&lb, &front_anthropic,
                                 "{\"model\":\"streamy\",\"max_tokens\":100,\"stream\":true,"
                                 "\"messages\":[{\"role\":\"user\",\"content\":\"mock:words=40\"}]}");
    ok(ex != NULL);
    run_until_end(&lb);
    is_int(lb.heads, 1);
    is_int(lb.status, 200); /* the stream had started */
    ok(lb.stream);
    is_int(lb.ends, 1);
    ok(strstr(lb.body.data, "message_start") != NULL);
    ok(strstr(lb.body.data, "message_stop") == NULL); /* cut, not finished */
    is_int(C.settles, 1);
    is_int(C.last_status, 499);
    is_int(C.attempts, 1);
    is_int(C.by_result[AO_CANCELLED_CLIENT], 1);
    uv_close((uv_handle_t *)&cancel_timer, NULL);
    settle_loop();
    /* nothing more happens for this exchange: the mock's timers died with the attempt */
    int settles = C.settles, attempts = C.attempts;
    while (uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    is_int(C.settles, settles);
    is_int(C.attempts, attempts);
    lb_free(&lb);
}

static struct config *load_config(void)
{
    char path[] = "/tmp/agentd-test-spine-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    static const char yaml[] = "gateway:\n"
                               "  request_timeout: 300ms\n"
                               "models:\n"
                               "  - name: fast\n"
                               "    provider: mock\n"
                               "  - name: erring\n" /* its 429 puts it in a cool-down: not the others' */
                               "    provider: mock\n"
                               "  - name: slow\n"
                               "    provider: mock\n"
                               "    mock: {latency: 60s}\n"
                               "  - name: streamy\n"
                               "    provider: mock\n"
                               "    mock: {chunk_interval: 2ms}\n";
    if (write(fd, yaml, sizeof(yaml) - 1) != (ssize_t)(sizeof(yaml) - 1)) {
        close(fd);
        unlink(path);
        return NULL;
    }
    close(fd);
    struct config_flags flags = {0};
    flags.config_path = path;
    char *env[] = {NULL};
    struct buf errs = BUF_INIT(1 << 16);
    struct config *c = config_load(&flags, env, &errs);
    if (c == NULL)
        printf("# config: %.*s\n", (int)errs.len, errs.data ? errs.data : "");
    else
        registry_attach(c, env, &errs);
    buf_free(&errs);
    unlink(path);
    return c;
}

/* ---- the worker's recycled exchanges ---- */

static void note_ex(struct loopback *lb) /* on_write: the exchange is still bound */
{
    lb->ud = lb->ex;
}

static void hold_ex(struct loopback *lb)
{
    lb->ud = lb->ex;
    ex_ref(lb->ex); /* a reference still out when the worker goes (as a closing timer's would be) */
}

/* An exchange is recycled on its worker; and its last reference may drop after ex_worker_free (its timers close
 * on the loop's next turn): the worker then lives until that release, and nothing is kept or leaked (ASan). */
static void test_recycled_and_worker_freed_first(void)
{
    struct gateway_worker *main_gw = gw;
    gw = ex_worker_new(&loop, gw_config_up_options(cfg));
    const char *body = "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";
    struct loopback lb;
    lb_init(&lb);
    lb.on_write = note_ex;
    reset_counts();
    submit(&lb, &front_openai_chat, body);
    run_until_end(&lb);
    is_int(lb.status, 200);
    const void *first = lb.ud;
    ok(first != NULL);
    settle_loop(); /* its timers have closed: the exchange is released, kept as a spare */
    lb_free(&lb);

    lb_init(&lb);
    lb.on_write = hold_ex;
    submit(&lb, &front_openai_chat, body);
    run_until_end(&lb);
    ok(lb.ud == first); /* the spare, not a new block */
    is_int(lb.status, 200);
    ok(strstr(lb.body.data, "echo: hello") != NULL);
    is_int(C.settles, 2);
    settle_loop();
    ex_worker_free(gw); /* one exchange is still referenced */
    gw = main_gw;
    ex_unref(lb.ud); /* the last release: frees the exchange, then the worker */
    lb_free(&lb);
}

int main(void)
{
    uv_loop_init(&loop);
    ex_global_init();
    ex_observer_add(&counter);
    cfg = load_config();
    if (!ok(cfg != NULL))
        return done_testing();
    gw = ex_worker_new(&loop, gw_config_up_options(cfg));
    subtest("route", test_route);
    subtest("outcomes", test_outcomes);
    subtest("wait and resume", test_wait_and_resume);
    subtest("cancel mid-stream", test_cancel_mid_stream);
    subtest("recycled exchanges; a worker freed before an exchange's last release", test_recycled_and_worker_freed_first);
    ex_worker_free(gw);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    uv_loop_close(&loop);
    config_unref(cfg);
    ex_global_cleanup();
    metrics_shutdown();
    return done_testing();
}
