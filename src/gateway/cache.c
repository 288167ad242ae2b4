/* cache.c: the exact-match response cache (issue 14, docs/cache.md): the store, the key and the spine's
 * `cache` stage. See cache.h. */
#include "gateway/cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/routing.h"
#include "policy/auth.h"
#include "telemetry/metrics.h"

/* ======================= the store ======================= */

struct rc_entry {
    uint8_t key[CACHE_KEY_LEN];
    struct rc_entry *hnext;       /* hash chain */
    struct rc_entry *prev, *next; /* LRU list, most recent first (ready entries only) */
    bool pending;                 /* a claim: a leader is computing the answer */
    struct rc_waiter *waiters;    /* pending only */
    uint64_t expires_ms;
    struct rc_meta meta;
    size_t len;
    char data[];
};

struct rc_table {
    struct rc_entry **b;
    size_t nb, n;
};

struct rcache {
    pthread_mutex_t mu;
    struct rc_table ready, pending;
    struct rc_entry *lru_head, *lru_tail;
    int64_t max_bytes, bytes;
    struct rc_stats st;
    rc_clock_fn *clock;
    void *clock_ud;
};

size_t rcache_entry_cost(size_t len)
{
    return sizeof(struct rc_entry) + len;
}

static size_t rc_hash(const uint8_t *k)
{
    size_t h;
    memcpy(&h, k, sizeof(h)); /* the key is a SHA-256: any 8 bytes are uniform */
    return h;
}

static struct rc_entry **tab_slot(struct rc_table *t, const uint8_t *k)
{
    struct rc_entry **p = &t->b[rc_hash(k) & (t->nb - 1)];
    while (*p && memcmp((*p)->key, k, CACHE_KEY_LEN) != 0)
        p = &(*p)->hnext;
    return p;
}

static void tab_grow(struct rc_table *t)
{
    size_t nb = t->nb * 2;
    struct rc_entry **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->nb; i++)
        for (struct rc_entry *e = t->b[i], *nx; e; e = nx) {
            nx = e->hnext;
            size_t j = rc_hash(e->key) & (nb - 1);
            e->hnext = b[j];
            b[j] = e;
        }
    xfree(t->b);
    t->b = b;
    t->nb = nb;
}

static void tab_insert(struct rc_table *t, struct rc_entry *e)
{
    if (t->n >= t->nb)
        tab_grow(t);
    size_t j = rc_hash(e->key) & (t->nb - 1);
    e->hnext = t->b[j];
    t->b[j] = e;
    t->n++;
}

static void tab_init(struct rc_table *t)
{
    t->nb = 64;
    t->b = xcalloc(t->nb, sizeof(*t->b));
    t->n = 0;
}

static void lru_unlink(struct rcache *c, struct rc_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(struct rcache *c, struct rc_entry *e)
{
    e->prev = NULL;
    e->next = c->lru_head;
    if (c->lru_head)
        c->lru_head->prev = e;
    c->lru_head = e;
    if (c->lru_tail == NULL)
        c->lru_tail = e;
}

/* Removes a ready entry (from its table slot p) and frees it. */
static void ready_remove(struct rcache *c, struct rc_entry **p)
{
    struct rc_entry *e = *p;
    *p = e->hnext;
    c->ready.n--;
    lru_unlink(c, e);
    c->bytes -= (int64_t)rcache_entry_cost(e->len);
    xfree(e);
}

static void evict_to(struct rcache *c, int64_t limit)
{
    while (c->bytes > limit && c->lru_tail) {
        struct rc_entry *e = c->lru_tail;
        if (c->clock && e->expires_ms <= c->clock(c->clock_ud))
            c->st.expirations++;
        else
            c->st.evictions++;
        ready_remove(c, tab_slot(&c->ready, e->key));
    }
}

struct rcache *rcache_new(int64_t max_bytes, rc_clock_fn *clock, void *clock_ud)
{
    struct rcache *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    tab_init(&c->ready);
    tab_init(&c->pending);
    c->max_bytes = max_bytes;
    c->clock = clock;
    c->clock_ud = clock_ud;
    return c;
}

void rcache_free(struct rcache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->ready.nb; i++)
        for (struct rc_entry *e = c->ready.b[i], *nx; e; e = nx) {
            nx = e->hnext;
            xfree(e);
        }
    for (size_t i = 0; i < c->pending.nb; i++)
        for (struct rc_entry *e = c->pending.b[i], *nx; e; e = nx) {
            nx = e->hnext;
            xfree(e);
        }
    xfree(c->ready.b);
    xfree(c->pending.b);
    pthread_mutex_destroy(&c->mu);
    xfree(c);
}

void rcache_set_max(struct rcache *c, int64_t max_bytes)
{
    pthread_mutex_lock(&c->mu);
    c->max_bytes = max_bytes;
    evict_to(c, max_bytes);
    pthread_mutex_unlock(&c->mu);
}

enum rc_lookup rcache_lookup(struct rcache *c, const uint8_t key[CACHE_KEY_LEN], bool claim, struct rc_waiter *w,
                             struct buf *out, struct rc_meta *meta)
{
    enum rc_lookup r;
    pthread_mutex_lock(&c->mu);
    struct rc_entry **p = tab_slot(&c->ready, key);
    if (*p && (*p)->expires_ms <= c->clock(c->clock_ud)) {
        c->st.expirations++;
        ready_remove(c, p);
    }
    if (*p) {
        struct rc_entry *e = *p;
        if (buf_append(out, e->data, e->len) == 0) {
            *meta = e->meta;
            lru_unlink(c, e);
            lru_push_front(c, e);
            c->st.hits++;
            pthread_mutex_unlock(&c->mu);
            return RC_HIT;
        }
    }
    c->st.misses++;
    r = RC_MISS;
    if (claim) {
        struct rc_entry **q = tab_slot(&c->pending, key);
        if (*q && w) {
            w->next = (*q)->waiters;
            (*q)->waiters = w;
            r = RC_WAIT;
        } else if (*q == NULL) {
            struct rc_entry *e = xcalloc(1, sizeof(*e));
            memcpy(e->key, key, CACHE_KEY_LEN);
            e->pending = true;
            tab_insert(&c->pending, e);
            r = RC_LEADER;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

/* Takes the key's claim out of the table (under the lock); returns its waiters. */
static struct rc_waiter *claim_end(struct rcache *c, const uint8_t *key)
{
    struct rc_entry **q = tab_slot(&c->pending, key);
    if (*q == NULL)
        return NULL;
    struct rc_entry *e = *q;
    *q = e->hnext;
    c->pending.n--;
    struct rc_waiter *w = e->waiters;
    xfree(e);
    return w;
}

static void wake_all(struct rc_waiter *w)
{
    while (w) {
        struct rc_waiter *nx = w->next; /* wake() may free w */
        w->wake(w);
        w = nx;
    }
}

void rcache_put(struct rcache *c, const uint8_t key[CACHE_KEY_LEN], const void *data, size_t len,
                const struct rc_meta *meta, uint64_t ttl_ms)
{
    struct rc_entry *e = NULL;
    bool fits = (int64_t)rcache_entry_cost(len) <= c->max_bytes;
    if (fits) { /* allocated and filled outside the lock */
        e = xmalloc(sizeof(*e) + len);
        memset(e, 0, sizeof(*e));
        memcpy(e->key, key, CACHE_KEY_LEN);
        memcpy(e->data, data, len);
        e->len = len;
        e->meta = *meta;
    }
    pthread_mutex_lock(&c->mu);
    if (e && (int64_t)rcache_entry_cost(len) <= c->max_bytes) {
        e->expires_ms = c->clock(c->clock_ud) + ttl_ms;
        struct rc_entry **p = tab_slot(&c->ready, key);
        if (*p)
            ready_remove(c, p);
        tab_insert(&c->ready, e);
        lru_push_front(c, e);
        c->bytes += (int64_t)rcache_entry_cost(len);
        c->st.inserts++;
        evict_to(c, c->max_bytes);
        e = NULL;
    }
    struct rc_waiter *w = claim_end(c, key);
    pthread_mutex_unlock(&c->mu);
    xfree(e); /* the limit shrank meanwhile */
    wake_all(w);
}

void rcache_release(struct rcache *c, const uint8_t key[CACHE_KEY_LEN])
{
    pthread_mutex_lock(&c->mu);
    struct rc_waiter *w = claim_end(c, key);
    pthread_mutex_unlock(&c->mu);
    wake_all(w);
}

void rcache_stats(struct rcache *c, struct rc_stats *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    st->bytes = c->bytes;
    st->entries = (int64_t)c->ready.n;
    st->pending = (int64_t)c->pending.n;
    pthread_mutex_unlock(&c->mu);
}

/* ---- persistence ----
 * "agentd-cache-1\n", then per answer: key (32 bytes), remaining TTL in ms (u64), stream (u8), usage input,
 * output, cached_input, cache_write, reasoning (5 x i64), usage known (u8), cost_nusd (i64), length (u64), the
 * bytes. Integers in the host's byte order (the file is this host's own, like the ledger). */

#define RC_MAGIC "agentd-cache-1\n"
#define RC_REC_HEAD (CACHE_KEY_LEN + 8 + 1 + 5 * 8 + 1 + 8 + 8)

void rcache_save(struct rcache *c, struct buf *out)
{
    buf_append(out, RC_MAGIC, sizeof(RC_MAGIC) - 1);
    pthread_mutex_lock(&c->mu);
    uint64_t now = c->clock(c->clock_ud);
    for (const struct rc_entry *e = c->lru_tail; e; e = e->prev) {
        if (e->expires_ms <= now)
            continue;
        uint64_t ttl = e->expires_ms - now, len = e->len;
        uint8_t stream = e->meta.stream, known = e->meta.usage.known;
        const int64_t u[5] = {e->meta.usage.input, e->meta.usage.output, e->meta.usage.cached_input,
                              e->meta.usage.cache_write, e->meta.usage.reasoning};
        buf_append(out, e->key, CACHE_KEY_LEN);
        buf_append(out, &ttl, 8);
        buf_append(out, &stream, 1);
        buf_append(out, u, sizeof(u));
        buf_append(out, &known, 1);
        buf_append(out, &e->meta.cost_nusd, 8);
        buf_append(out, &len, 8);
        buf_append(out, e->data, e->len);
    }
    pthread_mutex_unlock(&c->mu);
}

long rcache_load(struct rcache *c, const void *data, size_t len, size_t max_entry)
{
    const unsigned char *p = data, *end = p + len;
    size_t ml = sizeof(RC_MAGIC) - 1;
    if (len < ml || memcmp(p, RC_MAGIC, ml) != 0)
        return -1;
    p += ml;
    long n = 0;
    while ((size_t)(end - p) >= RC_REC_HEAD) {
        const unsigned char *q = p;
        uint8_t key[CACHE_KEY_LEN];
        uint64_t ttl, blen;
        int64_t u[5], cost;
        uint8_t stream, known;
        memcpy(key, q, CACHE_KEY_LEN);
        q += CACHE_KEY_LEN;
        memcpy(&ttl, q, 8);
        q += 8;
        stream = *q++;
        memcpy(u, q, sizeof(u));
        q += sizeof(u);
        known = *q++;
        memcpy(&cost, q, 8);
        q += 8;
        memcpy(&blen, q, 8);
        q += 8;
        if (blen > max_entry || blen > (uint64_t)(end - q) || stream > 1 || known > 1 || ttl == 0 ||
            ttl > 366ULL * 86400 * 1000)
            break; /* not what rcache_save writes: the rest is not trusted */
        bool sane = cost >= 0;
        for (int i = 0; i < 5; i++)
            sane = sane && u[i] >= 0;
        if (!sane)
            break;
        struct rc_meta m = {.stream = stream != 0, .cost_nusd = cost};
        m.usage = (struct usage){.input = u[0], .output = u[1], .cached_input = u[2], .cache_write = u[3],
                                 .reasoning = u[4], .known = known != 0};
        rcache_put(c, key, q, (size_t)blen, &m, ttl);
        p = q + blen;
        n++;
    }
    return n;
}

/* ======================= the key ======================= */

/* The digest is fed through a small staging buffer (one EVP update per 4 KiB, not per token). */
struct hasher {
    EVP_MD_CTX *md;
    unsigned char stage[4096];
    size_t n;
};

static void h_put(struct hasher *h, const void *p, size_t n)
{
    if (h->n + n > sizeof(h->stage)) {
        EVP_DigestUpdate(h->md, h->stage, h->n);
        h->n = 0;
        if (n > sizeof(h->stage)) {
            EVP_DigestUpdate(h->md, p, n);
            return;
        }
    }
    memcpy(h->stage + h->n, p, n);
    h->n += n;
}

/* Type, then length-prefixed bytes: an injective encoding, so no two different requests share a stream. */
static void h_tagged(struct hasher *h, char tag, const void *p, size_t n)
{
    uint64_t len = n;
    h_put(h, &tag, 1);
    h_put(h, &len, sizeof(len));
    if (n)
        h_put(h, p, n);
}

/* By name; members with the same name (a duplicate key) keep their order, which decides which one a provider
 * reads. */
struct member {
    const cJSON *c;
    size_t pos;
};

static int cmp_keys(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int c = strcmp(x->c->string, y->c->string);
    return c ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

static bool ignored_field(const char *k)
{
    static const char *const ignored[] = {"model", "stream", "user", "metadata", "store", "prompt_cache_key",
                                          "safety_identifier", "service_tier"};
    for (size_t i = 0; i < ARRAY_LEN(ignored); i++)
        if (strcmp(k, ignored[i]) == 0)
            return true;
    return false;
}

/* cJSON bounds the depth (CJSON_NESTING_LIMIT), so the recursion is bounded too. */
static void h_value(struct hasher *h, const cJSON *v, bool top)
{
    if (cJSON_IsObject(v)) {
        size_t n = 0;
        for (const cJSON *c = v->child; c; c = c->next)
            n++;
        struct member *kids = n ? xmalloc(n * sizeof(*kids)) : NULL;
        size_t k = 0;
        for (const cJSON *c = v->child; c; c = c->next)
            if (!(top && ignored_field(c->string))) {
                kids[k].c = c;
                kids[k].pos = k;
                k++;
            }
        if (k > 1)
            qsort(kids, k, sizeof(*kids), cmp_keys);
        uint64_t cnt = k;
        h_tagged(h, '{', &cnt, sizeof(cnt));
        for (size_t i = 0; i < k; i++) {
            h_tagged(h, 'k', kids[i].c->string, strlen(kids[i].c->string));
            h_value(h, kids[i].c, false);
        }
        xfree(kids);
    } else if (cJSON_IsArray(v)) {
        uint64_t cnt = 0;
        for (const cJSON *c = v->child; c; c = c->next)
            cnt++;
        h_tagged(h, '[', &cnt, sizeof(cnt));
        for (const cJSON *c = v->child; c; c = c->next)
            h_value(h, c, false);
    } else if (cJSON_IsString(v)) {
        h_tagged(h, 's', v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == 0)
            d = 0; /* -0 and 0 are the same value */
        h_tagged(h, 'n', &d, sizeof(d));
    } else if (cJSON_IsBool(v)) {
        h_tagged(h, cJSON_IsTrue(v) ? 't' : 'f', NULL, 0);
    } else {
        h_tagged(h, '0', NULL, 0);
    }
}

int cache_key(const struct cache_key_input *in, uint8_t out[CACHE_KEY_LEN])
{
    cJSON *root = cJSON_ParseWithLength(in->body.p ? in->body.p : "", in->body.n);
    if (root == NULL || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    struct hasher *h = xmalloc(sizeof(*h));
    h->md = EVP_MD_CTX_new();
    h->n = 0;
    int rc = -1;
    if (h->md && EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) == 1) {
        h_tagged(h, 'v', "agentd-cache-1", 14);
        h_tagged(h, 'F', in->front, strlen(in->front));
        h_tagged(h, in->stream ? 'S' : 'C', NULL, 0);
        h_tagged(h, 'N', in->ns.p, in->ns.n);
        h_tagged(h, 'M', in->model.p, in->model.n);
        h_value(h, root, true);
        unsigned int len = 0;
        if (h->n)
            EVP_DigestUpdate(h->md, h->stage, h->n);
        if (EVP_DigestFinal_ex(h->md, out, &len) == 1 && len == CACHE_KEY_LEN)
            rc = 0;
    }
    EVP_MD_CTX_free(h->md);
    xfree(h);
    cJSON_Delete(root);
    return rc;
}

/* ======================= the stage ======================= */

static struct rcache *store;
static pthread_mutex_t store_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int64_t store_max; /* the limit the store runs with (a reload changes it) */

static const char *const result_labels[] = {"result", NULL};
static const char *const model_labels[] = {"model", NULL};
static struct metric_def m_requests = METRIC_DEF(
    "agentd_cache_requests_total", "Exchanges that consulted the response cache, by result (hit, miss, bypass).",
    METRIC_COUNTER, result_labels);
static struct metric_def m_saved = METRIC_DEF("agentd_cache_saved_usd_total",
                                              "USD the response cache saved: what the answers it replayed cost "
                                              "the first time.",
                                              METRIC_COUNTER, model_labels);
static struct metric_def m_coalesced = METRIC_DEF(
    "agentd_cache_coalesced_total", "Identical misses that waited for another exchange's answer instead of calling "
                                    "the provider.",
    METRIC_COUNTER, NULL);

static uint64_t wall_clock_ms(void *ud)
{
    (void)ud;
    return time_mono_us() / 1000;
}

struct rcache *cache_store(void)
{
    return store;
}

static struct rcache *store_for(const struct config_cache *cc)
{
    struct rcache *s = store;
    if (s == NULL) {
        pthread_mutex_lock(&store_mu);
        if (store == NULL) {
            store_max = cc->max_bytes;
            store = rcache_new(cc->max_bytes, wall_clock_ms, NULL);
        }
        s = store;
        pthread_mutex_unlock(&store_mu);
    }
    int64_t cur = store_max;
    if (cur != cc->max_bytes && atomic_compare_exchange_strong(&store_max, &cur, cc->max_bytes))
        rcache_set_max(s, cc->max_bytes);
    return s;
}

static void collect(struct buf *out, void *ud)
{
    (void)ud;
    struct rc_stats st = {0};
    if (store)
        rcache_stats(store, &st);
    buf_printf(out,
               "# HELP agentd_cache_bytes Bytes held by the response cache (entries and their headers).\n"
               "# TYPE agentd_cache_bytes gauge\nagentd_cache_bytes %lld\n"
               "# HELP agentd_cache_entries Answers held by the response cache.\n"
               "# TYPE agentd_cache_entries gauge\nagentd_cache_entries %lld\n"
               "# HELP agentd_cache_evictions_total Answers the response cache dropped for room (LRU).\n"
               "# TYPE agentd_cache_evictions_total counter\nagentd_cache_evictions_total %lld\n",
               (long long)st.bytes, (long long)st.entries, (long long)st.evictions);
}

static enum ex_next cache_stage(struct exchange *ex, void *ud);

void cache_init(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    metrics_register(&m_requests);
    metrics_register(&m_saved);
    metrics_register(&m_coalesced);
    metrics_add_collector(collect, NULL);
    crd_init();
    ex_stage_plug("cache", cache_stage, NULL);
}

static void cache_path(const struct config *cfg, char *path, size_t n)
{
    snprintf(path, n, "%s/cache.bin", cfg->server.data_dir);
}

int cache_save(const struct config *cfg)
{
    if (!cfg->cache.persist || store == NULL)
        return 0;
    char path[4096], tmp[4200];
    cache_path(cfg, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    rcache_save(store, &b);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* answers may hold anything: owner only */
    size_t off = 0;
    while (fd >= 0 && off < b.len) {
        ssize_t w = write(fd, b.data + off, b.len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int rc = fd >= 0 && off == b.len && fsync(fd) == 0 ? 0 : -1;
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc != 0) {
        log_perror("cache: cannot save %s", path);
        unlink(tmp);
    }
    buf_free(&b);
    return rc;
}

int cache_load(const struct config *cfg)
{
    if (!cfg->cache.persist)
        return 0;
    char path[4096];
    cache_path(cfg, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* nothing saved yet */
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) == 0 && st.st_size >= 0 && st.st_size <= cfg->cache.max_bytes * 2 + 4096) {
        size_t len = (size_t)st.st_size;
        char *data = xmalloc(len ? len : 1);
        size_t off = 0;
        while (off < len) {
            ssize_t r = read(fd, data + off, len - off);
            if (r <= 0)
                break;
            off += (size_t)r;
        }
        long n = off == len ? rcache_load(store_for(&cfg->cache), data, len, (size_t)cfg->cache.max_entry_bytes) : -1;
        if (n >= 0) {
            log_info("cache: loaded %ld answers from %s", n, path);
            rc = 0;
        }
        xfree(data);
    }
    close(fd);
    if (rc != 0)
        log_warn("cache: %s is not a saved cache (ignored)", path);
    return rc;
}

void cache_cleanup(void)
{
    crd_stop();
    rcache_free(store);
    store = NULL;
}

/* What this exchange does with the cache, decided once in the stage. */
struct cache_plan {
    bool lookup, store;
    uint64_t ttl_ms;
    uint8_t key[CACHE_KEY_LEN];
};

static const struct config_cache_model *model_override(const struct config_cache *cc, const char *model)
{
    const struct config_cache_model *m = cc->models.items;
    for (size_t i = 0; i < cc->models.n; i++)
        if (strcmp(m[i].name, model) == 0)
            return &m[i];
    return NULL;
}

static const struct str *header_of(const struct exchange *ex, const char *name)
{
    return ex->rq.header ? ex->rq.header(ex->rq.hctx, name) : NULL;
}

/* Cache-Control: a directive list ("no-cache", "no-store, max-age=0"); matched as whole tokens. */
static bool has_directive(const struct str *v, const char *d)
{
    size_t dl = strlen(d);
    const char *p = v->p, *end = v->p + v->n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *s = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t' && *p != '=')
            p++;
        if ((size_t)(p - s) == dl && str_eq_nocase(str_make(s, dl), str_make(d, dl)))
            return true;
        while (p < end && *p != ',')
            p++;
    }
    return false;
}

/* temperature absent counts as the provider's default (1 for both OpenAI and Anthropic): above zero. */
static bool temperature_zero(const struct exchange *ex)
{
    struct jval v;
    if (jscan_path(ex->rq.body.p, ex->rq.body.n, "temperature", &v) != 0 || v.type != J_NUMBER)
        return false;
    double d;
    return jval_double(&v, &d) == 0 && d == 0;
}

static struct str namespace_of(const struct exchange *ex, int scope)
{
    const struct principal *w = ex->rq.who;
    if (scope == CACHE_SCOPE_GLOBAL)
        return str_from("*global");
    if (w == NULL)
        return str_from("*anonymous");
    const char *s = scope == CACHE_SCOPE_TEAM ? w->team : w->key_id;
    return s && *s ? str_from(s) : str_from(scope == CACHE_SCOPE_TEAM ? "*no-team" : "*anonymous");
}

/* ---- recording a miss: a sink that forwards every byte and keeps a copy ---- */

struct recorder {
    const struct ex_sink_ops *ops;
    void *sink;
    struct exchange *ex;
    struct rcache *store;
    struct buf body;
    int status;
    bool overflow, leader, store_it, remote;
    uint64_t ttl_ms;
    uint8_t key[CACHE_KEY_LEN];
};

static void rec_head(void *sink, int status, const struct buf *hdrs, bool stream)
{
    struct recorder *r = sink;
    r->status = status;
    (void)stream;
    r->ops->head(r->sink, status, hdrs, stream);
}

static int rec_write(void *sink, const void *data, size_t len)
{
    struct recorder *r = sink;
    if (r->store_it && !r->overflow && buf_append(&r->body, data, len) != 0) {
        r->overflow = true; /* larger than cache.max_entry_bytes: relayed, not kept */
        buf_free(&r->body);
    }
    return r->ops->write(r->sink, data, len);
}

static size_t rec_pending(void *sink)
{
    struct recorder *r = sink;
    return r->ops->pending ? r->ops->pending(r->sink) : 0;
}

static void rec_end(void *sink)
{
    struct recorder *r = sink;
    struct exchange *ex = r->ex;
    /* Only a complete, successful answer is kept: a 200 that ended well, with no error event in a stream. */
    if (r->store_it && !r->overflow && r->status == 200 && ex->status == 200 && !ex->incomplete &&
        r->body.len > 0) {
        struct rc_meta m = {.stream = ex->rq.stream, .usage = ex->usage,
                            .cost_nusd = ex->priced ? (int64_t)(ex->cost_usd * 1e9 + 0.5) : 0};
        rcache_put(r->store, r->key, r->body.data, r->body.len, &m, r->ttl_ms);
        if (r->remote) /* the shared tier too: every replica's next look-up finds it */
            crd_store(ex->rq.cfg, r->key, r->body.data, r->body.len, &m, r->ttl_ms);
    } else if (r->leader) {
        rcache_release(r->store, r->key);
    }
    ex->sink_ops = r->ops;
    ex->sink = r->sink;
    r->ops->end(r->sink);
    buf_free(&r->body);
    xfree(r);
}

static const struct ex_sink_ops recorder_ops = {
    .head = rec_head, .write = rec_write, .end = rec_end, .pending = rec_pending};

static void record(struct exchange *ex, struct rcache *s, const struct cache_plan *cp, bool leader)
{
    struct recorder *r = xcalloc(1, sizeof(*r));
    r->ops = ex->sink_ops;
    r->sink = ex->sink;
    r->ex = ex;
    r->store = s;
    r->leader = leader;
    r->store_it = cp->store;
    r->ttl_ms = cp->ttl_ms;
    r->remote = crd_enabled(ex->rq.cfg);
    memcpy(r->key, cp->key, CACHE_KEY_LEN);
    buf_init(&r->body, (size_t)ex->rq.cfg->cache.max_entry_bytes);
    ex->sink_ops = &recorder_ops;
    ex->sink = r;
}

/* ---- a hit ---- */

static void replay(struct exchange *ex, const struct buf *b, const struct rc_meta *m)
{
    ex->cache_result = "hit";
    ex->cache_saved_nusd = m->cost_nusd;
    if (m->cost_nusd > 0)
        metrics_add(&m_saved, (const char *[]){ex->rq.model_name}, (double)m->cost_nusd / 1e9);
    metrics_inc(&m_requests, (const char *[]){"hit"});
    ex_reply_cached(ex, b->data, b->len, m->stream);
}

/* ---- waiting for an identical miss ---- */

struct cwait {
    struct rc_waiter w;
    uv_async_t async;
    struct exchange *ex;
    struct rcache *store;
    struct cache_plan cp;
};

static void cwait_closed(uv_handle_t *h)
{
    struct cwait *cw = h->data;
    ex_unref(cw->ex);
    xfree(cw);
}

static void cwait_unused_closed(uv_handle_t *h)
{
    xfree(h->data);
}

static void cwait_wake(struct rc_waiter *w)
{
    struct cwait *cw = (struct cwait *)w; /* w is the first member */
    uv_async_send(&cw->async);            /* any thread: the waiter goes on on its own loop */
}

static void cwait_fire(uv_async_t *h)
{
    struct cwait *cw = h->data;
    struct exchange *ex = cw->ex;
    if (!ex->done) {
        struct buf b = BUF_INIT(BUF_UNBOUNDED);
        struct rc_meta m;
        enum rc_lookup r = rcache_lookup(cw->store, cw->cp.key, true, &cw->w, &b, &m);
        if (r == RC_WAIT) { /* another leader took the claim over: wait for it (the handle stays open) */
            buf_free(&b);
            return;
        }
        if (r == RC_HIT) {
            replay(ex, &b, &m);
        } else { /* the leader failed: this one asks the provider (and leads, when it claimed) */
            ex->cache_result = "miss";
            metrics_inc(&m_requests, (const char *[]){"miss"});
            record(ex, cw->store, &cw->cp, r == RC_LEADER);
            ex_resume(ex);
        }
        buf_free(&b);
    }
    uv_close((uv_handle_t *)&cw->async, cwait_closed);
}

/* The in-process store missed (and Redis, when it is on): the claim, then wait for a leader or lead. */
static enum ex_next after_local_miss(struct exchange *ex, struct rcache *s, const struct cache_plan *cpp)
{
    const struct config_cache *cc = &ex->rq.cfg->cache;
    struct cache_plan cp = *cpp;
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct rc_meta m;
    enum rc_lookup r;
    struct cwait *cw = NULL;
    if (cc->coalesce) {
        cw = xcalloc(1, sizeof(*cw));
        cw->w.wake = cwait_wake;
        cw->ex = ex;
        cw->store = s;
        cw->cp = cp;
        uv_async_init(ex_worker_loop(ex->gw), &cw->async, cwait_fire);
        cw->async.data = cw;
    }
    r = rcache_lookup(s, cp.key, true, cw ? &cw->w : NULL, &b, &m);
    if (r == RC_WAIT) {
        metrics_inc(&m_coalesced, NULL);
        ex_ref(ex); /* released when the handle has closed */
        buf_free(&b);
        return EX_WAIT;
    }
    if (cw) {
        uv_close((uv_handle_t *)&cw->async, cwait_unused_closed);
    }
    if (r == RC_HIT) {
        replay(ex, &b, &m);
        buf_free(&b);
        return EX_END;
    }
    buf_free(&b);
    ex->cache_result = "miss";
    metrics_inc(&m_requests, (const char *[]){"miss"});
    record(ex, s, &cp, r == RC_LEADER);
    return EX_CONTINUE;
}

/* ---- the shared tier: a look-up in Redis, answered on the Redis thread, resumed on the exchange's loop ---- */

struct rwait {
    struct crd_lookup l; /* first member */
    uv_async_t async;
    struct exchange *ex;
    struct rcache *store;
    struct cache_plan cp;
};

static void rwait_closed(uv_handle_t *h)
{
    struct rwait *rw = h->data;
    ex_unref(rw->ex);
    buf_free(&rw->l.body);
    xfree(rw);
}

static void rwait_done(struct crd_lookup *l)
{
    struct rwait *rw = (struct rwait *)l;
    uv_async_send(&rw->async); /* from the Redis thread: the exchange goes on on its own loop */
}

static void rwait_fire(uv_async_t *h)
{
    struct rwait *rw = h->data;
    struct exchange *ex = rw->ex;
    if (!ex->done) {
        if (rw->l.hit) {
            /* the local tier keeps it too, for what Redis still gives it */
            uint64_t ttl = rw->l.ttl_left_ms < rw->cp.ttl_ms ? rw->l.ttl_left_ms : rw->cp.ttl_ms;
            if (rw->l.body.len <= (size_t)ex->rq.cfg->cache.max_entry_bytes)
                rcache_put(rw->store, rw->cp.key, rw->l.body.data, rw->l.body.len, &rw->l.meta, ttl);
            replay(ex, &rw->l.body, &rw->l.meta);
        } else if (after_local_miss(ex, rw->store, &rw->cp) == EX_CONTINUE) {
            ex_resume(ex);
        }
    }
    uv_close((uv_handle_t *)&rw->async, rwait_closed);
}

static void rwait_unused_closed(uv_handle_t *h)
{
    struct rwait *rw = h->data;
    buf_free(&rw->l.body);
    xfree(rw);
}

/* 0: the look-up is queued and the exchange waits; -1: skipped (Redis down), go on without it. */
static int remote_lookup(struct exchange *ex, struct rcache *s, const struct cache_plan *cp)
{
    struct rwait *rw = xcalloc(1, sizeof(*rw));
    memcpy(rw->l.key, cp->key, CACHE_KEY_LEN);
    rw->l.done = rwait_done;
    buf_init(&rw->l.body, (size_t)ex->rq.cfg->cache.max_entry_bytes + 64);
    rw->ex = ex;
    rw->store = s;
    rw->cp = *cp;
    uv_async_init(ex_worker_loop(ex->gw), &rw->async, rwait_fire);
    rw->async.data = rw;
    ex_ref(ex); /* released when the handle has closed */
    if (crd_lookup(ex->rq.cfg, &rw->l) == 0)
        return 0;
    ex_unref(ex);
    uv_close((uv_handle_t *)&rw->async, rwait_unused_closed);
    return -1;
}

static enum ex_next cache_stage(struct exchange *ex, void *ud)
{
    (void)ud;
    const struct config_cache *cc = &ex->rq.cfg->cache;
    if (!cc->enabled && cc->models.n == 0)
        return EX_CONTINUE;
    if (ex->front == FRONT_OPENAI_RESPONSES) /* stored, stateful responses: never from a cache */
        return EX_CONTINUE;
    const struct config_cache_model *mo = model_override(cc, ex->rq.model_name);
    if (!(mo ? mo->enabled : cc->enabled))
        return EX_CONTINUE;
    struct cache_plan cp = {.lookup = true, .store = true};
    cp.ttl_ms = (uint64_t)(mo && mo->ttl_ms > 0 ? mo->ttl_ms : cc->ttl_ms);
    const struct str *ccv = cc->honor_cache_control ? header_of(ex, "cache-control") : NULL;
    if (ccv && has_directive(ccv, "no-store"))
        cp.lookup = cp.store = false;
    else if (ccv && has_directive(ccv, "no-cache"))
        cp.lookup = false; /* a fresh answer, which replaces the stored one */
    if (cc->only_temperature_zero && !temperature_zero(ex))
        cp.lookup = cp.store = false;
    routing_apply(ex); /* the key holds the model after routing (the decision is taken once) */
    struct cache_key_input ki = {ex->fops->name, ex->rq.stream, namespace_of(ex, cc->scope),
                                 str_from(ex->rq.model_name), ex->rq.body};
    if ((cp.lookup || cp.store) && cache_key(&ki, cp.key) != 0)
        cp.lookup = cp.store = false;
    struct rcache *s = store_for(cc);
    if (!cp.lookup) {
        ex->cache_result = "bypass";
        metrics_inc(&m_requests, (const char *[]){"bypass"});
        if (cp.store)
            record(ex, s, &cp, false);
        return EX_CONTINUE;
    }
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    struct rc_meta m;
    /* The hit path first, with nothing to set up; a waiter is prepared only for a miss, and the lookup repeated
     * with the claim (an answer may have landed in between). */
    enum rc_lookup r = rcache_lookup(s, cp.key, false, NULL, &b, &m);
    if (r == RC_HIT) {
        replay(ex, &b, &m);
        buf_free(&b);
        return EX_END;
    }
    buf_free(&b);
    if (crd_enabled(ex->rq.cfg) && remote_lookup(ex, s, &cp) == 0)
        return EX_WAIT; /* rwait_fire goes on */
    return after_local_miss(ex, s, &cp);
}
