/* test_admission.c: the admission queue (gateway/admission.h).
 *
 * The core runs on an injected clock with no loop: slots, FIFO order, no overtaking, the bound, cancel from the
 * middle, a cancel that races a grant, the drain, a lowered limit, unlimited mode and the measured waits. Then
 * the spine on a real loop with the process-wide instance: a request that waits resumes when the slot frees, a
 * client that leaves the queue, max_wait and the drain answered with 503 + Retry-After in the caller's format,
 * and ex_worker_end_all ending a running stream with its error event. Every wait is on the event (the
 * sink's end), never a sleep. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "gateway/admission.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/gw_config.h"
#include "gateway/registry.h"
#include "loopback.h"
#include "telemetry/metrics.h"
#include "test.h"

/* ---- the core, on a clock the test moves ---- */

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
    return fake_now;
}

struct tw {
    struct adm_waiter w;
    int id;
};
static int order[16], norder;
static enum adm_wstate last_state[16];

static void on_ready(struct adm_waiter *w)
{
    struct tw *t = (struct tw *)w;
    order[norder++] = t->id;
    last_state[t->id] = w->state;
}

static void tw_init(struct tw *t, int id)
{
    memset(t, 0, sizeof(*t));
    t->id = id;
    t->w.ready = on_ready;
}

static void reset_order(void)
{
    norder = 0;
    memset(order, 0, sizeof(order));
}

static void test_fifo(void)
{
    struct admission a;
    adm_init(&a, fake_clock);
    fake_now = 1000;
    reset_order();
    struct tw w[6];
    for (int i = 0; i < 6; i++)
        tw_init(&w[i], i);
    is_int(adm_acquire(&a, &w[0].w, 2, 3), ADM_GRANTED);
    is_int(adm_acquire(&a, &w[1].w, 2, 3), ADM_GRANTED);
    is_int(adm_acquire(&a, &w[2].w, 2, 3), ADM_QUEUED);
    fake_now = 2000;
    is_int(adm_acquire(&a, &w[3].w, 2, 3), ADM_QUEUED);
    is_int(adm_acquire(&a, &w[4].w, 2, 3), ADM_QUEUED);
    is_int(adm_acquire(&a, &w[5].w, 2, 3), ADM_QUEUE_FULL); /* the bound */
    is_int(adm_queued(&a), 3);
    is_int(a.refused_full, 1);
    fake_now = 5000;
    adm_release(&a); /* w0 done: the slot goes to w2, the first in line */
    is_int(norder, 1);
    is_int(order[0], 2);
    is_int(last_state[2], ADM_W_GRANTED);
    is_int(w[2].w.waited_us, 4000);
    is_int(adm_inuse(&a), 2); /* handed over, never free in between */
    /* A newcomer finds the queue non-empty: it waits behind, even if a slot were free for an instant. */
    tw_init(&w[5], 5);
    is_int(adm_acquire(&a, &w[5].w, 2, 3), ADM_QUEUED);
    fake_now = 6000;
    adm_release(&a);
    adm_release(&a);
    is_int(norder, 3);
    is_int(order[1], 3);
    is_int(order[2], 4);
    is_int(w[3].w.waited_us, 4000);
    adm_release(&a);
    is_int(order[3], 5);
    is_int(adm_queued(&a), 0);
    adm_release(&a);
    adm_release(&a);
    is_int(adm_inuse(&a), 0);
    is_int(a.granted_now, 2);
    is_int(a.granted_after_wait, 4);
    adm_destroy(&a);
}

static void test_cancel(void)
{
    struct admission a;
    adm_init(&a, fake_clock);
    fake_now = 0;
    reset_order();
    struct tw hold, w[3];
    tw_init(&hold, 9);
    for (int i = 0; i < 3; i++)
        tw_init(&w[i], i);
    is_int(adm_acquire(&a, &hold.w, 1, 10), ADM_GRANTED);
    for (int i = 0; i < 3; i++)
        is_int(adm_acquire(&a, &w[i].w, 1, 10), ADM_QUEUED);
    fake_now = 700;
    ok(adm_cancel(&a, &w[1].w, true)); /* from the middle: its wait is over */
    is_int(w[1].w.waited_us, 700);
    is_int(a.refused_timeout, 1);
    ok(!adm_cancel(&a, &w[1].w, false)); /* not queued any more */
    is_int(adm_queued(&a), 2);
    adm_release(&a);
    is_int(order[0], 0);
    ok(!adm_cancel(&a, &w[0].w, false)); /* granted already: the caller owns a slot and must release it */
    adm_release(&a);
    is_int(order[1], 2); /* w1 was skipped */
    ok(adm_cancel(&a, &w[2].w, false) == false);
    adm_release(&a);
    is_int(adm_inuse(&a), 0);
    is_int(norder, 2);
    adm_destroy(&a);
}

static void test_close(void)
{
    struct admission a;
    adm_init(&a, fake_clock);
    reset_order();
    struct tw w[4];
    for (int i = 0; i < 4; i++)
        tw_init(&w[i], i);
    is_int(adm_acquire(&a, &w[0].w, 2, 10), ADM_GRANTED);
    is_int(adm_acquire(&a, &w[1].w, 2, 10), ADM_GRANTED);
    is_int(adm_acquire(&a, &w[2].w, 2, 10), ADM_QUEUED);
    adm_close(&a); /* drain: every waiter is refused at once */
    is_int(norder, 1);
    is_int(last_state[2], ADM_W_REFUSED);
    is_int(adm_queued(&a), 0);
    is_int(adm_acquire(&a, &w[3].w, 2, 10), ADM_DRAINING); /* nothing new waits */
    adm_release(&a);
    tw_init(&w[3], 3);
    is_int(adm_acquire(&a, &w[3].w, 2, 10), ADM_GRANTED); /* a free slot still serves */
    adm_release(&a);
    adm_release(&a);
    is_int(adm_inuse(&a), 0);
    adm_reopen(&a);
    adm_destroy(&a);
}

static void test_limits(void)
{
    struct admission a;
    adm_init(&a, fake_clock);
    reset_order();
    struct tw w[5];
    for (int i = 0; i < 5; i++)
        tw_init(&w[i], i);
    /* unlimited: every request is granted, still counted */
    for (int i = 0; i < 3; i++)
        is_int(adm_acquire(&a, &w[i].w, 0, 0), ADM_GRANTED);
    is_int(adm_inuse(&a), 3);
    /* a reload lowers the limit to 1: a newcomer waits until the holders are within it */
    is_int(adm_acquire(&a, &w[3].w, 1, 5), ADM_QUEUED);
    adm_release(&a);
    is_int(norder, 0);
    adm_release(&a);
    is_int(norder, 0);
    adm_release(&a);
    is_int(norder, 1); /* the last of the three hands its slot over */
    is_int(adm_inuse(&a), 1);
    /* queue_max 0: no queue at all */
    is_int(adm_acquire(&a, &w[4].w, 1, 0), ADM_QUEUE_FULL);
    /* two wait; a reload raises the limit to 3: the next acquire hands the new slots to them first, in order */
    struct tw x[3];
    for (int i = 0; i < 3; i++)
        tw_init(&x[i], 10 + i);
    is_int(adm_acquire(&a, &x[0].w, 1, 5), ADM_QUEUED);
    is_int(adm_acquire(&a, &x[1].w, 1, 5), ADM_QUEUED);
    reset_order();
    is_int(adm_acquire(&a, &x[2].w, 3, 5), ADM_QUEUED); /* no overtaking: 1 + 2 granted = 3 */
    is_int(norder, 2);
    is_int(order[0], 10);
    is_int(order[1], 11);
    is_int(adm_inuse(&a), 3);
    adm_release(&a);
    is_int(order[2], 12);
    for (int i = 0; i < 3; i++)
        adm_release(&a);
    is_int(adm_inuse(&a), 0);
    adm_destroy(&a);
}

/* ---- the spine, on a loop, with the process-wide instance ---- */

static uv_loop_t loop;
static struct gateway_worker *gw;
static struct config *cfg;

static struct exchange *submit(struct loopback *lb, const struct front_ops *f, const char *body)
{
    static int n;
    struct ex_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.body = str_from(body);
    rq.max_tokens = -1;
    snprintf(rq.request_id, sizeof(rq.request_id), "adm-%d", ++n);
    rq.cfg = cfg;
    return ex_submit(gw, f, &rq, &loopback_ops, lb);
}

static void run_until_end(struct loopback *lb)
{
    while (lb->ends == 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
}

static void settle_loop(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
}

#define CHAT(model) "{\"model\":\"" model "\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
#define CHAT_STREAM(model)                                                                                        \
    "{\"model\":\"" model "\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"mock:words=500\"}]}"
#define MESSAGES(model)                                                                                           \
    "{\"model\":\"" model "\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

static int end_seq, a_end, b_end;
static void note_a(struct loopback *lb)
{
    (void)lb;
    a_end = ++end_seq;
}
static void note_b(struct loopback *lb)
{
    (void)lb;
    b_end = ++end_seq;
}

static void test_wait_resume(void)
{
    struct loopback a, b, c;
    lb_init(&a);
    lb_init(&b);
    lb_init(&c);
    a.on_end = note_a;
    b.on_end = note_b;
    end_seq = a_end = b_end = 0;
    ok(submit(&a, &front_openai_chat, CHAT("held")) != NULL); /* holds the only slot for 20 ms */
    ok(submit(&b, &front_openai_chat, CHAT("fast")) != NULL); /* waits for it */
    is_int(adm_queued(&admission_global), 1);
    is_int(a.heads + b.heads, 0);
    struct exchange *cx = submit(&c, &front_openai_chat, CHAT("fast"));
    is_int(adm_queued(&admission_global), 2);
    ex_cancel(cx); /* its client goes away while it waits */
    is_int(c.status, 499);
    is_int(adm_queued(&admission_global), 1);
    run_until_end(&b);
    is_int(a.status, 200);
    is_int(b.status, 200);
    ok(a_end == 1 && b_end == 2); /* b ran only once a gave its slot back */
    ok(strstr(b.body.data, "echo: hi") != NULL);
    settle_loop();
    is_int(adm_inuse(&admission_global), 0);
    lb_free(&a);
    lb_free(&b);
    lb_free(&c);
}

static void test_refusals(void)
{
    struct loopback a, b, c, d, e;
    lb_init(&a);
    lb_init(&b);
    lb_init(&c);
    lb_init(&d);
    lb_init(&e);
    struct exchange *ax = submit(&a, &front_openai_chat, CHAT("slow")); /* holds the slot */
    ok(ax != NULL);
    /* max_wait (40 ms) passes: 503, Retry-After from gateway.admission.retry_after */
    ok(submit(&b, &front_openai_chat, CHAT("fast")) != NULL);
    run_until_end(&b);
    is_int(b.status, 503);
    is_str(lb_header(&b, "retry-after"), "3");
    ok(strstr(b.body.data, "\"code\":\"overloaded\"") != NULL);
    ok(strstr(b.body.data, "freed within") != NULL);
    /* the queue (size 2) is full: refused at once, Anthropic-shaped on Anthropic's door */
    ok(submit(&c, &front_openai_chat, CHAT("fast")) != NULL);
    ok(submit(&e, &front_anthropic, MESSAGES("fast")) != NULL);
    ok(submit(&d, &front_anthropic, MESSAGES("fast")) == NULL);
    is_int(d.status, 503);
    ok(strstr(d.body.data, "\"type\":\"error\"") != NULL);
    ok(strstr(d.body.data, "queue is full") != NULL);
    /* the drain: the waiters are refused with a clear error, each in its caller's format */
    adm_close(&admission_global);
    run_until_end(&c);
    run_until_end(&e);
    is_int(c.status, 503);
    ok(strstr(c.body.data, "shutting down") != NULL);
    ok(strstr(c.body.data, "{\"error\":{") == c.body.data);
    is_int(e.status, 503);
    ok(strstr(e.body.data, "\"type\":\"overloaded_error\"") != NULL);
    ok(strstr(e.body.data, "shutting down") != NULL);
    adm_reopen(&admission_global);
    ex_cancel(ax);
    settle_loop();
    is_int(adm_inuse(&admission_global), 0);
    lb_free(&a);
    lb_free(&b);
    lb_free(&c);
    lb_free(&d);
    lb_free(&e);
}

static void end_all_after_first_write(struct loopback *lb)
{
    if (lb->writes != 1)
        return;
    struct gw_error err;
    gw_error_set(&err, 503, GW_ERR_OVERLOADED, "drain grace over");
    is_int(ex_worker_end_all(gw, &err), 1);
}

static void test_end_all(void)
{
    struct loopback s;
    lb_init(&s);
    s.on_write = end_all_after_first_write;
    submit(&s, &front_openai_chat, CHAT_STREAM("streamy")); /* may end before submit returns */
    run_until_end(&s);
    ok(s.stream);
    ok(strstr(s.body.data, "\"message\":\"drain grace over\"") != NULL);
    ok(strstr(s.body.data, "w500") == NULL);
    settle_loop();
    is_int(ex_worker_end_all(gw, NULL), 0);
    lb_free(&s);
}

static struct config *load_config(void)
{
    char path[] = "/tmp/agentd-test-admission-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    static const char yaml[] = "gateway:\n"
                               "  max_concurrent_requests: 1\n"
                               "  admission: {queue_size: 2, max_wait: 40ms, retry_after: 2500ms}\n"
                               "  request_timeout: 5s\n"
                               "models:\n"
                               "  - name: fast\n"
                               "    provider: mock\n"
                               "  - name: held\n"
                               "    provider: mock\n"
                               "    mock: {latency: 20ms}\n"
                               "  - name: slow\n"
                               "    provider: mock\n"
                               "    mock: {latency: 60s}\n"
                               "  - name: streamy\n"
                               "    provider: mock\n"
                               "    mock: {chunk_interval: 1ms}\n";
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

/* Per-key instances: one per key id while referenced, each its own slots, freed with the last reference. */
static void test_key_instances(void)
{
    is_int(adm_key_count(), 0);
    struct admission *a = adm_key_get("key_00000000000000aa");
    struct admission *a2 = adm_key_get("key_00000000000000aa");
    struct admission *b = adm_key_get("key_00000000000000bb");
    ok(a == a2 && a != b);
    is_int(adm_key_count(), 2);
    struct adm_waiter w = {0};
    is_int(adm_acquire(a, &w, 1, 0), ADM_GRANTED);
    is_int(adm_acquire(a, &w, 1, 0), ADM_QUEUE_FULL); /* the key's one slot is taken */
    is_int(adm_acquire(b, &w, 1, 0), ADM_GRANTED);    /* another key's is not */
    adm_release(a);
    adm_release(b);
    adm_key_put(a);
    adm_key_put(a2);
    is_int(adm_key_count(), 1);
    adm_key_put(b);
    is_int(adm_key_count(), 0);
    adm_key_put(NULL);
}

int main(void)
{
    subtest("per-key instances", test_key_instances);
    subtest("fifo", test_fifo);
    subtest("cancel", test_cancel);
    subtest("close", test_close);
    subtest("limits", test_limits);

    uv_loop_init(&loop);
    ex_global_init();
    cfg = load_config();
    if (!ok(cfg != NULL))
        return done_testing();
    gw = ex_worker_new(&loop, gw_config_up_options(cfg));
    subtest("wait and resume", test_wait_resume);
    subtest("refusals", test_refusals);
    subtest("end all", test_end_all);
    ex_worker_free(gw);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    uv_loop_close(&loop);
    config_unref(cfg);
    ex_global_cleanup();
    metrics_shutdown();
    return done_testing();
}
