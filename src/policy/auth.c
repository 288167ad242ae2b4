/* auth.c: the keyring (an immutable snapshot swapped whole, refreshed by a thread) and the key check of the hot
 * path. See auth.h. */
#include "policy/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "store/keys_store.h"
#include "telemetry/metrics.h"

struct key_snapshot {
    _Atomic long refs;
    struct key_record *recs;
    size_t n;
    uint32_t *slots; /* open addressing on the hash's first 4 bytes: index + 1, 0 = empty */
    uint32_t mask;
};

static struct {
    pthread_mutex_t lock;          /* guards `current` while a reference is taken or it is replaced */
    struct key_snapshot *current;
    struct key_hasher hasher;
    _Atomic uint64_t generation;
    _Atomic bool armed;
    /* refresh thread */
    pthread_mutex_t tlock;         /* the thread's own: the stop flag and its timed wait */
    pthread_t thread;
    pthread_cond_t cond;
    bool running, stop;
    int poll_ms;
    char *data_dir;
    bool have_pepper;
    uint64_t seen;                 /* the store's version the first snapshot was read at */
    const struct keys_store_ops *ops;
    struct keys_store *store;
} K = {.lock = PTHREAD_MUTEX_INITIALIZER, .tlock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static uint32_t hash_slot(const uint8_t *h)
{
    uint32_t v;
    memcpy(&v, h, sizeof(v)); /* an HMAC: already uniform */
    return v;
}

static struct key_snapshot *snapshot_build(struct key_record *recs, size_t n)
{
    struct key_snapshot *s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->recs = recs;
    s->n = n;
    uint32_t cap = 8;
    while (cap < 2 * n + 8)
        cap *= 2;
    s->mask = cap - 1;
    s->slots = xcalloc(cap, sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t j = hash_slot(recs[i].hash) & s->mask;
        while (s->slots[j])
            j = (j + 1) & s->mask;
        s->slots[j] = (uint32_t)i + 1;
    }
    return s;
}

static void snapshot_unref(struct key_snapshot *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    keys_records_free(s->recs, s->n);
    xfree(s->slots);
    xfree(s);
}

static struct key_snapshot *snapshot_acquire(uint64_t *gen)
{
    pthread_mutex_lock(&K.lock);
    struct key_snapshot *s = K.current;
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    if (gen)
        *gen = atomic_load_explicit(&K.generation, memory_order_relaxed);
    pthread_mutex_unlock(&K.lock);
    return s;
}

/* ---------- the per-thread view ----------
 *
 * Each thread that looks keys up keeps one reference on the snapshot it last saw (a holder), and principals
 * count against their thread's holder without touching shared memory: a look-up reads one shared word (the
 * generation) and writes nothing shared, so workers do not contend. When the generation moves, the thread takes
 * the new snapshot and retires the old holder, which is freed (dropping its snapshot reference) when its last
 * principal is released. Principals are released on the thread that made them (an exchange lives on one loop). */
struct holder {
    struct key_snapshot *snap;
    uint64_t gen;
    long users;   /* principals made from this holder and not yet released */
    bool retired; /* no longer the thread's current view */
};

static _Thread_local struct holder *tl_view;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void holder_drop(struct holder *h)
{
    snapshot_unref(h->snap);
    xfree(h);
}

static void holder_retire(struct holder *h)
{
    if (h == NULL)
        return;
    if (h->users == 0)
        holder_drop(h);
    else
        h->retired = true;
}

static void tl_exit(void *arg)
{
    (void)arg;
    holder_retire(tl_view);
    tl_view = NULL;
}

static void tl_key_init(void)
{
    pthread_key_create(&tl_key, tl_exit);
}

static struct holder *view(void)
{
    uint64_t g = atomic_load_explicit(&K.generation, memory_order_acquire);
    struct holder *h = tl_view;
    if (h && h->gen == g)
        return h;
    pthread_once(&tl_once, tl_key_init);
    pthread_setspecific(tl_key, (void *)1); /* so the thread's exit releases its view */
    holder_retire(h);
    h = xcalloc(1, sizeof(*h));
    h->snap = snapshot_acquire(&h->gen);
    tl_view = h;
    return h;
}

static const struct key_record *snapshot_find(const struct key_snapshot *s, const uint8_t h[KEY_HASH_LEN])
{
    for (uint32_t j = hash_slot(h) & s->mask;; j = (j + 1) & s->mask) {
        uint32_t i = s->slots[j];
        if (i == 0)
            return NULL;
        if (key_hash_eq(s->recs[i - 1].hash, h))
            return &s->recs[i - 1];
    }
}

void keyring_set_pepper(const uint8_t pepper[32])
{
    key_hasher_init(&K.hasher, pepper);
}

bool keyring_armed(void)
{
    return atomic_load_explicit(&K.armed, memory_order_relaxed);
}

void keyring_install(struct key_record *recs, size_t n)
{
    atomic_store(&K.armed, true);
    struct key_snapshot *s = snapshot_build(recs, n);
    pthread_mutex_lock(&K.lock);
    struct key_snapshot *old = K.current;
    K.current = s;
    atomic_fetch_add_explicit(&K.generation, 1, memory_order_release);
    pthread_mutex_unlock(&K.lock);
    snapshot_unref(old);
}

uint64_t keyring_generation(void)
{
    return atomic_load(&K.generation);
}

size_t keyring_size(void)
{
    struct key_snapshot *s = snapshot_acquire(NULL);
    size_t n = s ? s->n : 0;
    snapshot_unref(s);
    return n;
}

/* ---------- the check ---------- */

struct str auth_secret_from(const struct str *authorization, const struct str *x_api_key, const struct str *api_key)
{
    if (authorization) {
        struct str v = str_trim(*authorization);
        if (v.n > 7 && strncasecmp(v.p, "bearer ", 7) == 0)
            return str_trim(str_make(v.p + 7, v.n - 7));
        if (v.n) /* another scheme (Basic ...): a key presented in a form we do not take */
            return v;
    }
    if (x_api_key && str_trim(*x_api_key).n)
        return str_trim(*x_api_key);
    if (api_key && str_trim(*api_key).n)
        return str_trim(*api_key);
    return STR_NULL;
}

static void copy_text(char *dst, struct str s)
{
    size_t n = s.n > KEY_TEXT_MAX ? KEY_TEXT_MAX : s.n;
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s.p[i] >= 0x20 && s.p[i] != 0x7f) /* log lines and labels stay one line */
            dst[j++] = s.p[i];
    dst[j] = '\0';
}

bool auth_looks_like_key(struct str s)
{
    size_t pl = sizeof(KEY_SECRET_PREFIX) - 1;
    return s.n > pl && memcmp(s.p, KEY_SECRET_PREFIX, pl) == 0;
}

/* ---- refusals: metric and audit line ---- */

static const char *const reason_names[AUTH_R_COUNT] = {"no_key",  "malformed",         "unknown",  "revoked",
                                                       "expired", "model_not_allowed", "admin_key"};
static const char *const reason_labels[] = {"reason", NULL};
static struct metric_def m_refused = METRIC_DEF(
    "agentd_auth_refused_total", "Requests refused by authentication, by reason (the client is told less).",
    METRIC_COUNTER, reason_labels);
static bool metrics_on;

const char *auth_reason_name(enum auth_reason r)
{
    return (unsigned)r < AUTH_R_COUNT ? reason_names[r] : "?";
}

void auth_metrics_register(void)
{
    if (metrics_on)
        return;
    metrics_register(&m_refused);
    metrics_on = true;
}

void auth_refused(enum auth_reason r, const char *key_id, const char *request_id, const char *route)
{
    if (metrics_on)
        metrics_inc(&m_refused, (const char *[]){auth_reason_name(r)});
    struct log_line l;
    if (!log_begin(&l, LL_INFO, "auth refused"))
        return;
    log_field_cstr(&l, "reason", auth_reason_name(r));
    if (key_id && *key_id)
        log_field_cstr(&l, "key_id", key_id);
    if (request_id && *request_id)
        log_field_cstr(&l, "request_id", request_id);
    if (route && *route)
        log_field_cstr(&l, "route", route);
    log_end(&l);
}

static enum auth_result refuse(const struct auth_input *in, enum auth_reason why, const char *key_id)
{
    auth_refused(why, key_id, in->request_id, in->route);
    return why == AUTH_R_NO_KEY ? AUTH_NO_KEY : why == AUTH_R_MODEL_DENIED ? AUTH_MODEL_DENIED : AUTH_BAD_KEY;
}

enum auth_result auth_check(const struct auth_input *in, int64_t now, const struct principal **out)
{
    *out = NULL;
    if (in->secret.n == 0)
        return refuse(in, AUTH_R_NO_KEY, NULL);
    if (in->secret.n > KEY_SECRET_MAX || !auth_looks_like_key(in->secret))
        return refuse(in, AUTH_R_MALFORMED, NULL);
    uint8_t h[KEY_HASH_LEN];
    key_hash(&K.hasher, in->secret.p, in->secret.n, h);
    struct holder *v = view();
    const struct key_record *r = v->snap ? snapshot_find(v->snap, h) : NULL;
    if (r == NULL)
        return refuse(in, AUTH_R_UNKNOWN, NULL);
    if (!key_active(r, now))
        return refuse(in, r->revoked_at ? AUTH_R_REVOKED : AUTH_R_EXPIRED, r->id);
    if (in->model.n && !key_model_allowed(r, in->model.p, in->model.n))
        return refuse(in, AUTH_R_MODEL_DENIED, r->id);
    struct principal *p = xmalloc(sizeof(*p));
    v->users++;
    p->key = r;
    p->holder = v;
    p->key_id = r->id;
    p->key_name = r->name;
    p->team = r->team;
    p->user = r->user;
    const char *wf = key_tag(r, "workflow");
    p->workflow = wf ? wf : "";
    if (r->caller_attribution) {
        struct str u = in->user;
        if (u.n == 0 && in->caller_user)
            u = in->caller_user(in->ud);
        if (u.n) {
            copy_text(p->user_buf, u);
            p->user = p->user_buf;
        }
        if (in->workflow.n) {
            copy_text(p->workflow_buf, in->workflow);
            p->workflow = p->workflow_buf;
        }
    }
    *out = p;
    return AUTH_OK;
}

void principal_release(const struct principal *cp)
{
    if (cp == NULL || cp->holder == NULL)
        return;
    struct principal *p = (struct principal *)cp;
    struct holder *h = p->holder;
    if (--h->users == 0 && h->retired)
        holder_drop(h);
    xfree(p);
}

/* ---------- refresh thread ---------- */

static int load_from_store(struct buf *err)
{
    struct key_record *recs;
    size_t n;
    if (K.ops->list(K.store, &recs, &n, err) != 0)
        return -1;
    keyring_install(recs, n);
    return 0;
}

/* Pepper, store and first snapshot, whichever are still missing: 0, or -1 with err. */
static int connect_store(struct buf *err)
{
    if (K.store == NULL && (K.store = K.ops->open(K.data_dir, err)) == NULL)
        return -1;
    if (!K.have_pepper) {
        /* the store's pepper when it keeps one (shared by replicas), else the data dir's file */
        uint8_t pepper[32];
        if ((K.ops->pepper ? K.ops->pepper(K.store, pepper, err) : key_pepper_load(K.data_dir, pepper, err)) != 0) {
            K.ops->close(K.store);
            K.store = NULL;
            return -1;
        }
        keyring_set_pepper(pepper);
        OPENSSL_cleanse(pepper, sizeof(pepper));
        K.have_pepper = true;
    }
    /* The version first: a change committed between it and the load is loaded again, never missed. */
    if (K.ops->version(K.store, &K.seen) != 0 || load_from_store(err) != 0) {
        if (err->len == 0)
            buf_printf(err, "key store: cannot read its version");
        K.ops->close(K.store);
        K.store = NULL;
        return -1;
    }
    return 0;
}

static void *refresh_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "agentd-keys");
    uint64_t seen = K.seen;
    bool failing = K.store == NULL; /* keyring_start's caller has reported why */
    pthread_mutex_lock(&K.tlock);
    while (!K.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)K.poll_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        int rc = 0;
        while (!K.stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&K.cond, &K.tlock, &ts);
        if (K.stop)
            break;
        pthread_mutex_unlock(&K.tlock);
        uint64_t v = 0;
        struct buf err = BUF_INIT(4096);
        if (K.store == NULL) { /* the start could not reach the store: keep trying */
            if (connect_store(&err) == 0) {
                seen = K.seen;
                log_info("key store available: %zu keys", keyring_size());
                failing = false;
            }
        } else if (K.ops->version(K.store, &v) == 0 && v != seen) {
            if (load_from_store(&err) == 0) {
                seen = v;
                if (failing)
                    log_info("key store readable again");
                failing = false;
            } else if (!failing) {
                log_error("cannot reload keys (the previous set stays in force): %s", err.data ? err.data : "?");
                failing = true;
            }
        }
        buf_free(&err);
        pthread_mutex_lock(&K.tlock);
    }
    pthread_mutex_unlock(&K.tlock);
    return NULL;
}

int keyring_start(const char *data_dir, const struct keys_store_ops *ops, int poll_ms, struct buf *err)
{
    atomic_store(&K.armed, true); /* from here on, a failure refuses keys; it never lets requests in */
    K.ops = ops;
    K.data_dir = xstrdup(data_dir);
    K.have_pepper = false;
    int rc = connect_store(err); /* on failure the thread keeps trying; until then every key is refused */
    K.poll_ms = poll_ms > 0 ? poll_ms : 250;
    K.stop = false;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&K.cond);
    pthread_cond_init(&K.cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&K.thread, NULL, refresh_main, NULL) != 0) {
        buf_printf(err, "cannot start the key refresh thread");
        return -1;
    }
    K.running = true;
    return rc;
}

void keyring_stop(void)
{
    if (K.running) {
        pthread_mutex_lock(&K.tlock);
        K.stop = true;
        pthread_cond_signal(&K.cond);
        pthread_mutex_unlock(&K.tlock);
        pthread_join(K.thread, NULL);
        K.running = false;
    }
    if (K.store) {
        K.ops->close(K.store);
        K.store = NULL;
    }
    xfree(K.data_dir);
    K.data_dir = NULL;
    pthread_mutex_lock(&K.lock);
    struct key_snapshot *old = K.current;
    K.current = NULL;
    atomic_fetch_add_explicit(&K.generation, 1, memory_order_release);
    pthread_mutex_unlock(&K.lock);
    snapshot_unref(old);
    /* The calling thread's view (other threads release theirs when they exit). */
    holder_retire(tl_view);
    tl_view = NULL;
}
