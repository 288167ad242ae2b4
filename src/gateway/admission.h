/* admission.h: how many LLM requests run at once, and a bounded FIFO queue for the rest (issue 9 item 6).
 *
 * `gateway.max_concurrent_requests` (MAX_CONCURRENT_REQUESTS) is a number of slots shared by every worker of the
 * process. A request that finds every slot taken waits in one FIFO queue (at most
 * `gateway.admission.queue_size` waiters) for up to `gateway.admission.max_wait`, never past its own deadline
 * (`gateway.request_timeout`). When a slot frees, the releasing thread hands it straight to the head of the
 * queue (the slot is never "free" in between, so a newcomer cannot overtake a waiter) and wakes the waiter's
 * worker loop; the waiter's exchange resumes at the stage after `admit`.
 *
 * Why process-wide and not per worker: the operator's number is the process's (one pod = one limit), and a
 * per-worker split would refuse a request on a busy worker while another worker's slots sit idle (SO_REUSEPORT
 * spreads connections, not load). The cost is one uncontended mutex lock at acquire and one at release; the
 * benchmark (bench/admission.sh) measures it.
 *
 * Drain: adm_close() refuses every queued waiter at once and makes the queue take no new work (a request that
 * finds a free slot still runs: the load balancer may not have noticed yet).
 *
 * The core (struct admission) takes its clock from the caller so that the unit test drives time by hand. */
#ifndef AGENTD_ADMISSION_H
#define AGENTD_ADMISSION_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/schema.h"

struct adm_waiter;
struct adm_loop;

/* Runs on the waiter's loop (or on the granting thread when the waiter has no loop: the unit test) once the
 * waiter was granted a slot (state ADM_W_GRANTED: it now holds one) or refused (ADM_W_REFUSED: the drain). */
typedef void adm_ready_fn(struct adm_waiter *w);

enum adm_wstate { ADM_W_IDLE, ADM_W_QUEUED, ADM_W_GRANTED, ADM_W_REFUSED };

struct adm_waiter {
    struct adm_waiter *prev, *next; /* the FIFO */
    struct adm_waiter *pnext;       /* the loop's list of waiters to call back */
    struct adm_loop *loop;          /* where ready() runs; NULL: on the granting thread */
    adm_ready_fn *ready;
    uint64_t enq_us;                /* when it joined the queue */
    uint64_t waited_us;             /* how long it waited (set when it leaves the queue) */
    enum adm_wstate state;          /* guarded by the admission's lock */
};

enum adm_result {
    ADM_GRANTED,    /* a slot is the caller's; adm_release() it when done */
    ADM_QUEUED,     /* w waits; ready() will run, unless adm_cancel() takes it out first */
    ADM_QUEUE_FULL, /* every slot taken and queue_size waiters already: refuse (503) */
    ADM_DRAINING,   /* every slot taken and the process is draining: refuse (503) */
};

struct admission {
    pthread_mutex_t mu;
    uint64_t (*clock_us)(void);
    bool metrics;            /* update the agentd_admission_* families (the process-wide instance) */
    bool key_metrics;        /* update agentd_admission_key_queue_depth (a key's instance) */
    long inuse;              /* slots held */
    long slots;              /* the last limit seen (0: unlimited) */
    long queued;
    bool closed;             /* draining */
    struct adm_waiter *head, *tail;
    /* counts (tests, /metrics) */
    uint64_t granted_now, granted_after_wait, refused_full, refused_draining, refused_timeout, cancelled;
};

void adm_init(struct admission *a, uint64_t (*clock_us)(void));
void adm_destroy(struct admission *a);
/* slots: 0 = unlimited (every request is granted at once, still counted); queue_max: 0 = no queue. */
enum adm_result adm_acquire(struct admission *a, struct adm_waiter *w, long slots, long queue_max);
/* Gives the caller's slot back, or hands it to the head of the queue (its ready() runs). */
void adm_release(struct admission *a);
/* Takes a queued waiter out (timed_out: its wait is over, counted as a refusal; else its client went away):
 * true. False when it was no longer queued (already granted or refused: its ready() runs or has run, and a
 * granted slot must be released). */
bool adm_cancel(struct admission *a, struct adm_waiter *w, bool timed_out);
/* Drain: refuses every queued waiter (ready() with ADM_W_REFUSED) and every later request that would queue. */
void adm_close(struct admission *a);
void adm_reopen(struct admission *a);
long adm_queued(struct admission *a);
long adm_inuse(struct admission *a);

/* ---- the process's instance, and the worker loops its waiters live on ---- */

extern struct admission admission_global;
/* Metric families and the process-wide instance (ex_global_init). */
void admission_global_init(void);

/* One per worker loop: ready() callbacks of that loop's waiters run there (woken by an async handle). */
struct adm_loop *adm_loop_new(uv_loop_t *loop);
/* Closes the async handle (freed asynchronously); callbacks still pending run now. */
void adm_loop_free(struct adm_loop *l);

/* ---- per-key limits (a virtual key's max_concurrent) ----
 *
 * The same mechanism per key: a key's own slots and FIFO (queue_size and max_wait from gateway.admission), taken
 * before the process's slot so that a key at its limit waits without holding one of the process's slots. The
 * instance is created on the first request of the key and freed when no exchange refers to it any more. */
struct admission *adm_key_get(const char *key_id); /* a reference: adm_key_put() it */
void adm_key_put(struct admission *a);              /* NULL: nothing */
size_t adm_key_count(void);                        /* instances alive (tests) */

/* gateway.admission: (struct config_admission lives in config/config.h) */
extern const struct cfg_schema admission_config_schema;

#endif
