/* admission.c: slots and the FIFO queue (admission.h). */
#include "gateway/admission.h"

#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "common/macros.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "telemetry/metrics.h"

/* ---- settings ---- */

#define AOFF(f) offsetof(struct config_admission, f)
static const struct cfg_field admission_fields[] = {
    {.key = "queue_size", .type = CFG_INT, .off = AOFF(queue_size), .min = 0, .max = 1000000, .def = "1000",
     .help = "requests that may wait for one of max_concurrent_requests' slots (one FIFO for the process); past "
             "it a request gets 503 with Retry-After at once. 0 = no queue"},
    {.key = "max_wait", .type = CFG_DURATION, .off = AOFF(max_wait_ms), .min = 0, .max = 86400000, .def = "30s",
     .help = "longest wait for a slot, never past request_timeout; then 503 with Retry-After"},
    {.key = "ready_high_water", .type = CFG_INT, .off = AOFF(ready_high_water), .min = 0, .max = 1000000,
     .def = "0", .help = "/ready answers 503 while more requests than this wait for a slot; 0 = never"},
    {.key = "retry_after", .type = CFG_DURATION, .off = AOFF(retry_after_ms), .min = 0, .max = 3600000,
     .def = "1s", .help = "Retry-After sent with an admission refusal (queue full, wait over, draining)"},
};

const struct cfg_schema admission_config_schema = {
    .name = "admission", .fields = admission_fields, .nfields = ARRAY_LEN(admission_fields)};

/* ---- metrics (the process-wide instance only) ---- */

static const double wait_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const char *const outcome_labels[] = {"outcome", NULL};
static const char *const reason_labels[] = {"reason", NULL};
static struct metric_def m_depth = METRIC_DEF(
    "agentd_admission_queue_depth",
    "LLM requests waiting for a slot of max_concurrent_requests (scale out on this: KEDA, HPA external metric).",
    METRIC_GAUGE, NULL);
static struct metric_def m_wait = METRIC_HISTOGRAM_DEF(
    "agentd_admission_wait_seconds",
    "Time a request waited in the admission queue, by how the wait ended (admitted, timeout, draining, "
    "cancelled).",
    outcome_labels, wait_buckets);
static struct metric_def m_refused =
    METRIC_DEF("agentd_admission_refused_total",
               "Requests refused by admission (503): queue_full, timeout (no slot within max_wait or the "
               "deadline), draining.",
               METRIC_COUNTER, reason_labels);
static struct metric_def m_key_depth = METRIC_DEF(
    "agentd_admission_key_queue_depth",
    "LLM requests waiting for a slot of their key's max_concurrent (all keys together; not a reason to scale out).",
    METRIC_GAUGE, NULL);
static bool key_metrics_on;  /* the families are registered (admission_global_init); guarded by keys_mu */
static pthread_mutex_t keys_mu = PTHREAD_MUTEX_INITIALIZER; /* the per-key table (below) */
static struct metric_def m_slots = METRIC_DEF(
    "agentd_admission_slots_in_use", "Slots of max_concurrent_requests held now.", METRIC_GAUGE, NULL);

/* ---- the core ---- */

void adm_init(struct admission *a, uint64_t (*clock_us)(void))
{
    *a = (struct admission){0};
    pthread_mutex_init(&a->mu, NULL);
    a->clock_us = clock_us ? clock_us : time_mono_us;
}

void adm_destroy(struct admission *a)
{
    pthread_mutex_destroy(&a->mu);
}

static void q_unlink(struct admission *a, struct adm_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        a->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        a->tail = w->prev;
    w->prev = w->next = NULL;
    a->queued--;
    if (a->metrics)
        metrics_add(&m_depth, NULL, -1);
    if (a->key_metrics)
        metrics_add(&m_key_depth, NULL, -1);
}

static void waited(struct admission *a, struct adm_waiter *w, uint64_t now, const char *outcome)
{
    w->waited_us = now > w->enq_us ? now - w->enq_us : 0;
    if (a->metrics)
        metrics_observe(&m_wait, (const char *[]){outcome}, (double)w->waited_us / 1e6);
}

static void post(struct adm_waiter *w); /* runs ready() on w's loop; called with the lock held */

enum adm_result adm_acquire(struct admission *a, struct adm_waiter *w, long slots, long queue_max)
{
    pthread_mutex_lock(&a->mu);
    a->slots = slots;
    /* A reload raised the limit while requests wait: the new slots go to them first. */
    long handed = 0;
    while (a->head && (slots <= 0 || a->inuse < slots)) {
        struct adm_waiter *h = a->head;
        q_unlink(a, h);
        waited(a, h, a->clock_us(), "admitted");
        h->state = ADM_W_GRANTED;
        a->inuse++;
        a->granted_after_wait++;
        handed++;
        post(h);
    }
    if (handed && a->metrics)
        metrics_add(&m_slots, NULL, (double)handed);
    /* A free slot is taken only when nobody waits: the queue is FIFO. */
    if (slots <= 0 || (a->inuse < slots && a->head == NULL)) {
        a->inuse++;
        a->granted_now++;
        pthread_mutex_unlock(&a->mu);
        if (a->metrics)
            metrics_add(&m_slots, NULL, 1);
        return ADM_GRANTED;
    }
    enum adm_result r;
    if (a->closed) {
        a->refused_draining++;
        r = ADM_DRAINING;
    } else if (a->queued >= queue_max) {
        a->refused_full++;
        r = ADM_QUEUE_FULL;
    } else {
        w->prev = a->tail;
        w->next = NULL;
        if (a->tail)
            a->tail->next = w;
        else
            a->head = w;
        a->tail = w;
        a->queued++;
        w->enq_us = a->clock_us();
        w->waited_us = 0;
        w->state = ADM_W_QUEUED;
        r = ADM_QUEUED;
    }
    pthread_mutex_unlock(&a->mu);
    if (a->key_metrics && r == ADM_QUEUED)
        metrics_add(&m_key_depth, NULL, 1);
    if (a->metrics) {
        if (r == ADM_QUEUED)
            metrics_add(&m_depth, NULL, 1);
        else
            metrics_inc(&m_refused, (const char *[]){r == ADM_DRAINING ? "draining" : "queue_full"});
    }
    return r;
}

void adm_release(struct admission *a)
{
    pthread_mutex_lock(&a->mu);
    /* A reload may have lowered the limit: the slot is handed over only while we are within it. */
    struct adm_waiter *w = a->head;
    if (w && (a->slots <= 0 || a->inuse <= a->slots)) {
        q_unlink(a, w);
        waited(a, w, a->clock_us(), "admitted");
        w->state = ADM_W_GRANTED;
        a->granted_after_wait++;
        post(w); /* the slot passes from the releaser to w: inuse is unchanged */
        pthread_mutex_unlock(&a->mu);
        return;
    }
    a->inuse--;
    pthread_mutex_unlock(&a->mu);
    if (a->metrics)
        metrics_add(&m_slots, NULL, -1);
}

bool adm_cancel(struct admission *a, struct adm_waiter *w, bool timed_out)
{
    pthread_mutex_lock(&a->mu);
    bool queued = w->state == ADM_W_QUEUED;
    if (queued) {
        q_unlink(a, w);
        waited(a, w, a->clock_us(), timed_out ? "timeout" : "cancelled");
        w->state = ADM_W_IDLE;
        if (timed_out)
            a->refused_timeout++;
        else
            a->cancelled++;
    }
    pthread_mutex_unlock(&a->mu);
    if (queued && timed_out && a->metrics)
        metrics_inc(&m_refused, (const char *[]){"timeout"});
    return queued;
}

static void keys_close(bool closed);

void adm_close(struct admission *a)
{
    if (a == &admission_global)
        keys_close(true); /* the keys' queues drain with the process's (their waiters get 503 too) */
    pthread_mutex_lock(&a->mu);
    a->closed = true;
    uint64_t now = a->clock_us();
    while (a->head) {
        struct adm_waiter *w = a->head;
        q_unlink(a, w);
        waited(a, w, now, "draining");
        w->state = ADM_W_REFUSED;
        a->refused_draining++;
        if (a->metrics)
            metrics_inc(&m_refused, (const char *[]){"draining"});
        post(w);
    }
    pthread_mutex_unlock(&a->mu);
}

void adm_reopen(struct admission *a)
{
    if (a == &admission_global)
        keys_close(false);
    pthread_mutex_lock(&a->mu);
    a->closed = false;
    pthread_mutex_unlock(&a->mu);
}

long adm_queued(struct admission *a)
{
    pthread_mutex_lock(&a->mu);
    long n = a->queued;
    pthread_mutex_unlock(&a->mu);
    return n;
}

long adm_inuse(struct admission *a)
{
    pthread_mutex_lock(&a->mu);
    long n = a->inuse;
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* ---- loops: where a waiter's ready() runs ---- */

/* The loop's pending list has its own lock: the process's instance and every key's (adm_key_get) post to the same
 * loop, each under its own admission lock. Order: an admission's lock, then the loop's. (The unit test's waiters
 * have no loop.) */
struct adm_loop {
    uv_async_t async;
    pthread_mutex_t mu;
    struct adm_waiter *head, *tail;
    bool dead;
};

static void post(struct adm_waiter *w)
{
    struct adm_loop *l = w->loop;
    if (l == NULL) { /* no loop (the unit test): run it here; it must not call back into the admission */
        w->ready(w);
        return;
    }
    w->pnext = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->tail)
        l->tail->pnext = w;
    else
        l->head = w;
    l->tail = w;
    if (!l->dead)
        uv_async_send(&l->async);
    pthread_mutex_unlock(&l->mu);
}

static struct adm_waiter *take_pending(struct adm_loop *l)
{
    pthread_mutex_lock(&l->mu);
    struct adm_waiter *w = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->mu);
    return w;
}

static void run_pending(struct adm_waiter *w)
{
    while (w) {
        struct adm_waiter *next = w->pnext;
        w->pnext = NULL;
        w->ready(w); /* may free w */
        w = next;
    }
}

static void on_async(uv_async_t *h)
{
    struct adm_loop *l = h->data;
    run_pending(take_pending(l));
}

struct adm_loop *adm_loop_new(uv_loop_t *loop)
{
    struct adm_loop *l = xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    uv_async_init(loop, &l->async, on_async);
    l->async.data = l;
    uv_unref((uv_handle_t *)&l->async); /* a waiting exchange keeps the loop alive with its own timer */
    return l;
}

static void on_loop_closed(uv_handle_t *h)
{
    struct adm_loop *l = h->data;
    pthread_mutex_destroy(&l->mu);
    xfree(l);
}

void adm_loop_free(struct adm_loop *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->dead = true;
    pthread_mutex_unlock(&l->mu);
    run_pending(take_pending(l));
    uv_close((uv_handle_t *)&l->async, on_loop_closed);
}

/* ---- the process's instance ---- */

/* Statically initialised: usable before ex_global_init (which only adds the metrics). */
struct admission admission_global = {.mu = PTHREAD_MUTEX_INITIALIZER, .clock_us = time_mono_us};

void admission_global_init(void)
{
    m_depth.otel_name = "agentd.admission.queue_depth";
    m_depth.unit = "{request}";
    m_wait.otel_name = "agentd.admission.wait";
    m_wait.unit = "s";
    m_refused.otel_name = "agentd.admission.refused";
    m_slots.otel_name = "agentd.admission.slots_in_use";
    metrics_register(&m_depth);
    metrics_register(&m_wait);
    metrics_register(&m_refused);
    metrics_register(&m_slots);
    m_key_depth.otel_name = "agentd.admission.key_queue_depth";
    m_key_depth.unit = "{request}";
    metrics_register(&m_key_depth);
    pthread_mutex_lock(&keys_mu);
    key_metrics_on = true;
    pthread_mutex_unlock(&keys_mu);
    pthread_mutex_lock(&admission_global.mu);
    admission_global.metrics = true;
    pthread_mutex_unlock(&admission_global.mu);
}

/* ---- one instance per virtual key with a max_concurrent ---- */

/* A chained hash table of the keys that have an exchange holding or waiting for one of their slots. An entry lives
 * while exchanges refer to it (adm_key_get .. adm_key_put): a key nobody is using costs nothing, so thousands of
 * keys used once each leave no trace. */
#define KEY_BUCKETS 256

struct adm_key {
    struct admission a; /* first: adm_key_put finds the entry from it */
    struct adm_key *next;
    unsigned long refs;
    char *id;
};

static struct adm_key *key_tab[KEY_BUCKETS];
static size_t key_count;
static bool keys_closed; /* draining: every key's queue refuses, a key instance made now is born closed */

/* Drain (adm_close / adm_reopen of the process's instance): every key's waiters are refused at once, as the
 * process's are, and no key queue takes new work. */
static void keys_close(bool closed)
{
    pthread_mutex_lock(&keys_mu);
    keys_closed = closed;
    for (size_t b = 0; b < KEY_BUCKETS; b++)
        for (struct adm_key *k = key_tab[b]; k; k = k->next) {
            if (closed)
                adm_close(&k->a);
            else
                adm_reopen(&k->a);
        }
    pthread_mutex_unlock(&keys_mu);
}

static size_t key_bucket(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % KEY_BUCKETS;
}

struct admission *adm_key_get(const char *key_id)
{
    size_t b = key_bucket(key_id);
    pthread_mutex_lock(&keys_mu);
    struct adm_key *k = key_tab[b];
    while (k && strcmp(k->id, key_id) != 0)
        k = k->next;
    if (k == NULL) {
        k = xcalloc(1, sizeof(*k));
        adm_init(&k->a, NULL);
        k->a.key_metrics = key_metrics_on;
        k->a.closed = keys_closed;
        k->id = xstrdup(key_id);
        k->next = key_tab[b];
        key_tab[b] = k;
        key_count++;
    }
    k->refs++;
    pthread_mutex_unlock(&keys_mu);
    return &k->a;
}

void adm_key_put(struct admission *a)
{
    if (a == NULL)
        return;
    struct adm_key *k = (struct adm_key *)a;
    pthread_mutex_lock(&keys_mu);
    if (--k->refs > 0) {
        pthread_mutex_unlock(&keys_mu);
        return;
    }
    struct adm_key **pp = &key_tab[key_bucket(k->id)];
    while (*pp != k)
        pp = &(*pp)->next;
    *pp = k->next;
    key_count--;
    pthread_mutex_unlock(&keys_mu);
    adm_destroy(&k->a);
    xfree(k->id);
    xfree(k);
}

size_t adm_key_count(void)
{
    pthread_mutex_lock(&keys_mu);
    size_t n = key_count;
    pthread_mutex_unlock(&keys_mu);
    return n;
}
