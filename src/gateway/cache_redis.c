/* cache_redis.c: the response cache's shared tier in Redis (cache.h, docs/cache.md "In Redis"). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/alloc.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/cache.h"
#include "store/redis.h"
#include "telemetry/metrics.h"

#define CRD_MAGIC "AGc1"
#define CRD_HDR (4 + 1 + 6 * 8)
#define CRD_MAX_LOOKUPS 4096           /* queued look-ups; more are skipped (misses) */
#define CRD_MAX_STORE_BYTES (64 << 20) /* queued stores; more are dropped */
#define CRD_RETRY_MS 1000              /* Redis down: at most one connect attempt a second */

static const char *const op_labels[] = {"op", "result", NULL};
static struct metric_def m_redis = METRIC_DEF(
    "agentd_cache_redis_total",
    "The response cache's Redis tier: look-ups (op=get: hit, miss, error, skipped) and stores (op=set: ok, error, "
    "dropped). error and skipped are misses served from the provider, never errors to the caller.",
    METRIC_COUNTER, op_labels);

struct sjob {
    char key[256]; /* prefix (< 160) + "c:" + 64 hex */
    struct buf val;
    uint64_t ttl_ms;
    struct sjob *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool started, stop;
    struct crd_lookup *lk, **lk_tail;
    size_t nlk;
    struct sjob *st, **st_tail;
    size_t st_bytes;
    struct redis_url url;
    int timeout_ms;
    char prefix[160];
    struct redis *conn;
    _Atomic bool down;
    _Atomic uint64_t retry_at_ms;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void crd_init(void)
{
    metrics_register(&m_redis);
}

bool crd_enabled(const struct config *cfg)
{
    const char *u = cfg->cluster.redis_url;
    return cfg->cache.backend != CACHE_BACKEND_MEMORY && u && u[0];
}

static uint64_t now_ms(void)
{
    return time_mono_us() / 1000;
}

static void put_i64(uint8_t *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static int64_t get_i64(const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    return (int64_t)u;
}

void crd_encode(struct buf *out, const struct rc_meta *m, const void *data, size_t len)
{
    uint8_t h[CRD_HDR];
    memcpy(h, CRD_MAGIC, 4);
    h[4] = (uint8_t)((m->stream ? 1 : 0) | (m->usage.known ? 2 : 0));
    const int64_t v[6] = {m->usage.input,       m->usage.output,    m->usage.cached_input,
                          m->usage.cache_write, m->usage.reasoning, m->cost_nusd};
    for (int i = 0; i < 6; i++)
        put_i64(h + 5 + 8 * i, v[i]);
    buf_append(out, h, sizeof(h));
    buf_append(out, data, len);
}

int crd_decode(const void *val, size_t n, struct rc_meta *m, size_t *body_off)
{
    const uint8_t *p = val;
    if (n <= CRD_HDR || memcmp(p, CRD_MAGIC, 4) != 0 || p[4] > 3)
        return -1;
    int64_t v[6];
    for (int i = 0; i < 6; i++) {
        v[i] = get_i64(p + 5 + 8 * i);
        if (v[i] < 0)
            return -1;
    }
    memset(m, 0, sizeof(*m));
    m->stream = p[4] & 1;
    m->usage.known = (p[4] & 2) != 0;
    m->usage.input = v[0];
    m->usage.output = v[1];
    m->usage.cached_input = v[2];
    m->usage.cache_write = v[3];
    m->usage.reasoning = v[4];
    m->cost_nusd = v[5];
    *body_off = CRD_HDR;
    return 0;
}

static void key_of(char *out, size_t n, const uint8_t *key)
{
    static const char hex[] = "0123456789abcdef";
    char h[CACHE_KEY_LEN * 2 + 1];
    for (int i = 0; i < CACHE_KEY_LEN; i++) {
        h[2 * i] = hex[key[i] >> 4];
        h[2 * i + 1] = hex[key[i] & 15];
    }
    h[CACHE_KEY_LEN * 2] = '\0';
    snprintf(out, n, "%sc:%s", R.prefix, h);
}

static void finish_lookup(struct crd_lookup *l, const char *result)
{
    metrics_inc(&m_redis, (const char *[]){"get", result});
    l->done(l);
}

static void fail_all(struct crd_lookup *lk, struct sjob *st, const char *why)
{
    while (lk) {
        struct crd_lookup *n = lk->next;
        lk->hit = false;
        finish_lookup(lk, why);
        lk = n;
    }
    while (st) {
        struct sjob *n = st->next;
        metrics_inc(&m_redis, (const char *[]){"set", "error"});
        buf_free(&st->val);
        xfree(st);
        st = n;
    }
}

static void mark_down(const char *why)
{
    if (!atomic_exchange(&R.down, true))
        log_warn("cache: Redis unreachable (%s): the shared cache is skipped until it answers", why);
    atomic_store(&R.retry_at_ms, now_ms() + CRD_RETRY_MS);
}

/* One pass: every queued look-up and store in one pipelined round trip. */
static void pass(struct crd_lookup *lk, struct sjob *st)
{
    struct buf err = BUF_INIT(512);
    if (R.conn == NULL) {
        if (now_ms() < atomic_load(&R.retry_at_ms)) {
            fail_all(lk, st, "skipped");
            buf_free(&err);
            return;
        }
        R.conn = redis_connect(&R.url, R.timeout_ms, &err);
        if (R.conn == NULL) {
            mark_down(err.data ? err.data : "connect failed");
            fail_all(lk, st, "error");
            buf_free(&err);
            return;
        }
        if (atomic_exchange(&R.down, false))
            log_info("cache: Redis answers again: the shared cache is back");
    }
    char key[256]; /* prefix (< 160) + "c:" + 64 hex */
    for (struct crd_lookup *l = lk; l; l = l->next) {
        key_of(key, sizeof(key), l->key);
        const char *g[2] = {"GET", key}, *t[2] = {"PTTL", key};
        redis_append(R.conn, 2, g);
        redis_append(R.conn, 2, t);
    }
    for (struct sjob *s = st; s; s = s->next) {
        char px[24];
        snprintf(px, sizeof(px), "%llu", (unsigned long long)s->ttl_ms);
        const char *a[5] = {"SET", s->key, s->val.data, "PX", px};
        const size_t lens[5] = {3, strlen(s->key), s->val.len, 2, strlen(px)};
        redis_append_bin(R.conn, 5, a, lens);
    }
    bool broken = false;
    struct redis_reply rep;
    while (lk) {
        struct crd_lookup *l = lk;
        lk = l->next;
        l->hit = false;
        if (broken || redis_read_bulk(R.conn, &rep, &l->body, &err) != 0) {
            broken = true;
            finish_lookup(l, "error");
            continue;
        }
        bool got = rep.type == REDIS_R_STATUS;
        if (redis_read(R.conn, &rep, &err) != 0) {
            broken = true;
            finish_lookup(l, "error");
            continue;
        }
        size_t off;
        if (got && rep.type == REDIS_R_INT && rep.i > 0 && crd_decode(l->body.data, l->body.len, &l->meta, &off) == 0) {
            memmove(l->body.data, l->body.data + off, l->body.len - off);
            l->body.len -= off;
            l->ttl_left_ms = (uint64_t)rep.i;
            l->hit = true;
            finish_lookup(l, "hit");
        } else {
            buf_reset(&l->body);
            finish_lookup(l, "miss");
        }
    }
    while (st) {
        struct sjob *s = st;
        st = s->next;
        bool ok = !broken && redis_read(R.conn, &rep, &err) == 0;
        broken = !ok;
        metrics_inc(&m_redis, (const char *[]){"set", ok && rep.type != REDIS_R_ERROR ? "ok" : "error"});
        buf_free(&s->val);
        xfree(s);
    }
    if (broken) {
        mark_down(err.data ? err.data : "connection lost");
        redis_close(R.conn);
        R.conn = NULL;
    }
    buf_free(&err);
}

static void *thread_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&R.mu);
    for (;;) {
        while (!R.stop && R.lk == NULL && R.st == NULL)
            pthread_cond_wait(&R.cv, &R.mu);
        if (R.lk == NULL && R.st == NULL)
            break; /* stopping, nothing left */
        struct crd_lookup *lk = R.lk;
        struct sjob *st = R.st;
        R.lk = NULL;
        R.lk_tail = &R.lk;
        R.nlk = 0;
        R.st = NULL;
        R.st_tail = &R.st;
        R.st_bytes = 0;
        pthread_mutex_unlock(&R.mu);
        pass(lk, st);
        pthread_mutex_lock(&R.mu);
    }
    pthread_mutex_unlock(&R.mu);
    if (R.conn)
        redis_close(R.conn);
    R.conn = NULL;
    return NULL;
}

/* With R.mu held. */
static bool ensure_started(const struct config *cfg)
{
    if (R.started)
        return !R.stop;
    struct buf err = BUF_INIT(256);
    int rc = redis_url_parse(cfg->cluster.redis_url, &R.url, &err); /* checked at start: this does not fail */
    buf_free(&err);
    if (rc != 0)
        return false;
    R.timeout_ms = (int)cfg->cluster.redis_timeout_ms;
    snprintf(R.prefix, sizeof(R.prefix), "%s", cfg->cluster.key_prefix ? cfg->cluster.key_prefix : "");
    R.lk_tail = &R.lk;
    R.st_tail = &R.st;
    if (pthread_create(&R.th, NULL, thread_main, NULL) != 0)
        return false;
    R.started = true;
    return true;
}

static bool known_down(void)
{
    return atomic_load(&R.down) && now_ms() < atomic_load(&R.retry_at_ms);
}

int crd_lookup(const struct config *cfg, struct crd_lookup *l)
{
    if (known_down()) {
        metrics_inc(&m_redis, (const char *[]){"get", "skipped"});
        return -1;
    }
    pthread_mutex_lock(&R.mu);
    bool ok = ensure_started(cfg) && R.nlk < CRD_MAX_LOOKUPS;
    if (ok) {
        l->next = NULL;
        *R.lk_tail = l;
        R.lk_tail = &l->next;
        R.nlk++;
        pthread_cond_signal(&R.cv);
    }
    pthread_mutex_unlock(&R.mu);
    if (!ok)
        metrics_inc(&m_redis, (const char *[]){"get", "skipped"});
    return ok ? 0 : -1;
}

void crd_store(const struct config *cfg, const uint8_t key[CACHE_KEY_LEN], const void *data, size_t len,
               const struct rc_meta *meta, uint64_t ttl_ms)
{
    if (known_down() || ttl_ms == 0) {
        metrics_inc(&m_redis, (const char *[]){"set", "dropped"});
        return;
    }
    struct sjob *s = xcalloc(1, sizeof(*s));
    s->ttl_ms = ttl_ms;
    buf_init(&s->val, BUF_UNBOUNDED);
    crd_encode(&s->val, meta, data, len);
    pthread_mutex_lock(&R.mu);
    bool ok = ensure_started(cfg) && R.st_bytes + s->val.len <= CRD_MAX_STORE_BYTES;
    if (ok) {
        key_of(s->key, sizeof(s->key), key);
        R.st_bytes += s->val.len;
        *R.st_tail = s;
        R.st_tail = &s->next;
        pthread_cond_signal(&R.cv);
    }
    pthread_mutex_unlock(&R.mu);
    if (!ok) {
        metrics_inc(&m_redis, (const char *[]){"set", "dropped"});
        buf_free(&s->val);
        xfree(s);
    }
}

void crd_stop(void)
{
    pthread_mutex_lock(&R.mu);
    bool join = R.started && !R.stop;
    R.stop = true;
    pthread_cond_signal(&R.cv);
    pthread_mutex_unlock(&R.mu);
    if (join)
        pthread_join(R.th, NULL);
}
