#include "policy/lease.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "store/redis.h"

/* ---- configuration ---- */

static const char *const down_modes[] = {"closed", "open", NULL};

static void cluster_finish(struct cfg_ctx *ctx, void *obj, const char *path)
{
    const struct config_cluster *c = obj;
    if (c->redis_url && c->redis_url[0]) {
        struct redis_url u;
        struct buf err = BUF_INIT(512);
        if (redis_url_parse(c->redis_url, &u, &err) != 0)
            cfg_error_at(ctx, NULL, path ? path : "cluster", "redis_url (or REDIS_URL) is not a valid Redis URL: %s",
                         err.data ? err.data : "?");
        buf_free(&err);
    }
    if (c->lease_ttl_ms < 4 * c->sync_interval_ms)
        cfg_error_at(ctx, NULL, path ? path : "cluster",
                     "lease_ttl must be at least 4 sync_interval (a lease is renewed every third of its TTL)");
}

#define COFF(f) offsetof(struct config_cluster, f)
static const struct cfg_field cluster_fields[] = {
    {.key = "redis_url", .type = CFG_STRING, .off = COFF(redis_url), .max = REDIS_URL_MAX, .def = "",
     .env_alias = "REDIS_URL", .flags = CFG_RESTART | CFG_SECRET,
     .help = "redis://[[user]:password@]host[:port][/db]: budgets and rate limits shared by every replica through "
             "Redis leases (docs/cluster.md); the environment's REDIS_URL wins over this key. Empty: exact "
             "in-process counters (one replica)"},
    {.key = "on_redis_down", .type = CFG_ENUM, .off = COFF(on_redis_down), .enums = down_modes, .def = "closed",
     .flags = CFG_RESTART,
     .help = "when a request needs more than this replica's valid leases and Redis cannot be reached: closed "
             "refuses it (503, /ready not ready), open admits it by this replica's own counters (the shared cap "
             "no longer holds)"},
    {.key = "lease_ttl", .type = CFG_DURATION, .off = COFF(lease_ttl_ms), .min = 400, .max = 3600000, .def = "10s",
     .flags = CFG_RESTART,
     .help = "a replica's lease that Redis has not seen renewed for this long is recovered (a killed replica's "
             "slices become usable by the others); renewed every third of it"},
    {.key = "lease_slice", .type = CFG_DOUBLE, .off = COFF(lease_slice), .dmin = 0.0001, .dmax = 1, .def = "0.05",
     .flags = CFG_RESTART,
     .help = "the share of each shared limit one replica may hold at once (at least one request's reservation); "
             "it bounds the slack (docs/cluster.md)"},
    {.key = "sync_interval", .type = CFG_DURATION, .off = COFF(sync_interval_ms), .min = 5, .max = 60000,
     .def = "100ms", .flags = CFG_RESTART,
     .help = "how often the lease thread looks at the leases: tops up a slice below half, returns idle ones, "
             "renews them (every third of lease_ttl, carrying the settled spend); a request that waits for a "
             "lease wakes it at once"},
    {.key = "lease_idle", .type = CFG_DURATION, .off = COFF(lease_idle_ms), .min = 10, .max = 3600000,
     .def = "2s", .flags = CFG_RESTART, .help = "a slice unused for this long goes back to Redis"},
    {.key = "redis_timeout", .type = CFG_DURATION, .off = COFF(redis_timeout_ms), .min = 10, .max = 60000,
     .def = "1s", .flags = CFG_RESTART, .help = "connect and command timeout towards Redis"},
    {.key = "key_prefix", .type = CFG_STRING, .off = COFF(key_prefix), .max = 128, .def = "agentd:",
     .flags = CFG_RESTART, .help = "prefix of every Redis key agentd writes (several clusters may share a Redis)"},
};
const struct cfg_schema lease_config_schema = {
    .name = "cluster", .fields = cluster_fields, .nfields = ARRAY_LEN(cluster_fields), .finish = cluster_finish};

/* ---- the scripts (atomic in Redis) ---- */

/* A budget: HASH {spent, l:<replica> = lease, e:<replica> = its expiry (Redis ms)}. Reports `used` (spent grows,
 * the lease shrinks by it), returns `ret`, drops expired leases, grants up to `want` of what no one holds, and
 * renews this replica's lease. ARGV: replica, limit, used, ret, want, ttl_ms, expire_at (unix s; 0: never).
 * Returns {lease, grant, spent}. Numbers are written with %.0f (Lua's default %.14g would round them). */
static const char BUDGET_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local me = ARGV[1]\n"
    "local limit = tonumber(ARGV[2])\n"
    "local f = redis.call('HGETALL', KEYS[1])\n"
    "local spent, others, mine = 0, 0, 0\n"
    "local lease, exp = {}, {}\n"
    "for i = 1, #f, 2 do\n"
    "  local k, v = f[i], f[i + 1]\n"
    "  if k == 'spent' then spent = tonumber(v)\n"
    "  elseif string.sub(k, 1, 2) == 'l:' then lease[string.sub(k, 3)] = tonumber(v)\n"
    "  elseif string.sub(k, 1, 2) == 'e:' then exp[string.sub(k, 3)] = tonumber(v) end\n"
    "end\n"
    "for r, v in pairs(lease) do\n"
    "  if (exp[r] or 0) <= now then redis.call('HDEL', KEYS[1], 'l:' .. r, 'e:' .. r)\n"
    "  elseif r == me then mine = v\n"
    "  else others = others + v end\n"
    "end\n"
    "local used = tonumber(ARGV[3])\n"
    "spent = spent + used\n"
    "mine = mine - used\n"
    "if mine < 0 then mine = 0 end\n"
    "mine = mine - tonumber(ARGV[4])\n"
    "if mine < 0 then mine = 0 end\n"
    "local avail = limit - spent - others - mine\n"
    "local grant = tonumber(ARGV[5])\n"
    "if grant > avail then grant = avail end\n"
    "if grant < 0 then grant = 0 end\n"
    "mine = mine + grant\n"
    "if used > 0 then redis.call('HSET', KEYS[1], 'spent', string.format('%.0f', spent)) end\n"
    "if mine > 0 then\n"
    "  redis.call('HSET', KEYS[1], 'l:' .. me, string.format('%.0f', mine), 'e:' .. me,\n"
    "             string.format('%.0f', now + tonumber(ARGV[6])))\n"
    "else redis.call('HDEL', KEYS[1], 'l:' .. me, 'e:' .. me) end\n"
    "if tonumber(ARGV[7]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[7]) end\n"
    "return {mine, grant, spent}\n";

/* A rate: the cluster's GCRA cell (its theoretical arrival time, in us of Redis's clock). Charges an overdraft,
 * takes back `ret`, then grants up to `want` units that fit within the minute. ARGV: per minute, overdraft, ret,
 * want. Returns {grant, ms until the rest of want would fit}. */
static const char RATE_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = 60000000 / tonumber(ARGV[1])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "tat = tat + tonumber(ARGV[2]) * T - tonumber(ARGV[3]) * T\n"
    "if tat < now then tat = now end\n"
    "local want = tonumber(ARGV[4])\n"
    "local k = math.floor((now + 60000000 - tat) / T)\n"
    "if k > want then k = want end\n"
    "if k < 0 then k = 0 end\n"
    "tat = tat + k * T\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', 120000)\n"
    "local retry = 0\n"
    "if k < want then retry = math.ceil((tat + (want - k) * T - now - 60000000) / 1000) end\n"
    "return {k, retry}\n";

/* ---- cells ---- */

#define STRIPES 64
#define BUCKETS 256
#define KEY_MAX 600

struct lease_cell {
    struct lease_cell *next; /* bucket chain */
    uint64_t hash;
    pthread_mutex_t mu;
    enum lease_unit unit;
    int64_t limit, wend;
    /* under mu */
    int64_t granted;         /* held from Redis: the lease plus the use not yet reported */
    int64_t reserved, used;  /* taken now; settled and not yet reported */
    int64_t want;            /* what waiters are short of */
    int64_t max_amount;      /* the largest take asked (a lease is at least that) */
    bool refill;             /* below half a slice: top up on the next pass */
    int64_t valid_until_ms;  /* mono ms: the lease may be used until then */
    int64_t synced_ms;       /* mono ms of the last confirmation by Redis */
    int64_t last_use_ms;
    int64_t exhausted_ms;    /* Redis could not cover what was asked then (0: not) */
    int64_t retry_ms;
    size_t klen;
    char key[];
};

static struct {
    bool on;
    bool open;
    struct redis_url url;
    char replica[96];
    char prefix[130];
    int64_t ttl_ms, slice_ppm, sync_ms, idle_ms, timeout_ms;
    pthread_t th;
    bool started;
    pthread_mutex_t mu; /* kick, stop, waiters, all[], why */
    pthread_cond_t cv;
    bool kick, stop;
    struct lease_waiter *waiters;
    struct lease_cell **all;
    size_t nall, capall;
    struct {
        pthread_mutex_t mu;
        struct lease_cell *b[BUCKETS];
    } s[STRIPES];
    _Atomic bool down;
    _Atomic int nwaiters;
    char why[256];
    _Atomic uint64_t passes, commands, grants, waits;
    struct redis *conn;
    _Atomic int64_t last_ok_ms; /* mono ms of Redis's last answer */
    int64_t last_wake_ms;       /* the lease thread's own */
    char sha_budget[48], sha_rate[48];
} E = {.mu = PTHREAD_MUTEX_INITIALIZER}; /* cv: made in lease_start, on the monotonic clock */

static int64_t mono_ms(void)
{
    return (int64_t)(time_mono_us() / 1000);
}

bool lease_enabled(void)
{
    return E.on;
}

bool lease_fail_open(void)
{
    return E.open;
}

bool lease_redis_ok(char *why, size_t n)
{
    if (!E.on || !atomic_load(&E.down))
        return true;
    pthread_mutex_lock(&E.mu);
    snprintf(why, n, "%s", E.why);
    pthread_mutex_unlock(&E.mu);
    return false;
}

void lease_get_stats(struct lease_stats *s)
{
    s->passes = atomic_load(&E.passes);
    s->commands = atomic_load(&E.commands);
    s->grants = atomic_load(&E.grants);
    s->waits = atomic_load(&E.waits);
}

static void kick(void)
{
    pthread_mutex_lock(&E.mu);
    E.kick = true;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
}

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static const char *const unit_names[] = {"usd", "tok", "rpm", "tpm"};

struct lease_cell *lease_cell_get(enum lease_unit unit, const char *scope, const char *name, const char *window,
                                  int64_t wstart, int64_t wend, int64_t limit)
{
    if (!E.on || name == NULL || strnlen(name, 300) >= 300)
        return NULL;
    char key[KEY_MAX];
    int n = unit <= LEASE_BUDGET_TOKENS
                ? snprintf(key, sizeof(key), "%sb:%s:%s:%lld:%s:%s", E.prefix, scope, window, (long long)wstart,
                           unit_names[unit], name)
                : snprintf(key, sizeof(key), "%sr:%s:%s:%s", E.prefix, scope, unit_names[unit], name);
    if (n < 0 || (size_t)n >= sizeof(key))
        return NULL;
    uint64_t h = key_hash(key, (size_t)n);
    int si = (int)(h % STRIPES);
    pthread_mutex_lock(&E.s[si].mu);
    struct lease_cell **head = &E.s[si].b[(h / STRIPES) % BUCKETS], *c;
    for (c = *head; c; c = c->next)
        if (c->hash == h && c->klen == (size_t)n && memcmp(c->key, key, (size_t)n) == 0)
            break;
    if (c == NULL) {
        pthread_mutex_lock(&E.mu);
        if (E.nall >= LEASE_MAX_CELLS) {
            pthread_mutex_unlock(&E.mu);
            pthread_mutex_unlock(&E.s[si].mu);
            return NULL;
        }
        c = xcalloc(1, sizeof(*c) + (size_t)n + 1);
        pthread_mutex_init(&c->mu, NULL);
        c->hash = h;
        c->unit = unit;
        c->wend = wend;
        c->klen = (size_t)n;
        memcpy(c->key, key, (size_t)n);
        if (E.nall == E.capall) {
            E.capall = E.capall ? E.capall * 2 : 64;
            E.all = xrealloc(E.all, E.capall * sizeof(*E.all));
        }
        E.all[E.nall++] = c;
        pthread_mutex_unlock(&E.mu);
        c->next = *head;
        *head = c;
    }
    pthread_mutex_unlock(&E.s[si].mu);
    pthread_mutex_lock(&c->mu);
    c->limit = limit; /* a reload may change it */
    pthread_mutex_unlock(&c->mu);
    return c;
}

/* The most one replica may hold of c: the slice of its limit, at least one unit and at least the largest take. */
static int64_t max_lease(const struct lease_cell *c)
{
    int64_t s = (int64_t)((__int128)c->limit * E.slice_ppm / 1000000);
    if (s < 1)
        s = 1;
    return s > c->max_amount ? s : c->max_amount;
}

enum lease_take lease_take(struct lease_cell *c, int64_t amount)
{
    if (amount < 0)
        amount = 0;
    int64_t now = mono_ms();
    pthread_mutex_lock(&c->mu);
    c->last_use_ms = now;
    if (amount > c->max_amount)
        c->max_amount = amount;
    int64_t avail = c->granted - c->reserved - c->used;
    /* A budget lease is valid for 3/4 of the TTL after Redis confirmed it (Redis forgets it at the TTL); a rate
     * lease has no TTL in Redis (what it granted is spent in the cluster's GCRA cell) and is used while Redis
     * answers this replica at all */
    bool valid = c->unit <= LEASE_BUDGET_TOKENS ? now < c->valid_until_ms
                                                : c->valid_until_ms > 0 &&
                                                      now < atomic_load(&E.last_ok_ms) + E.ttl_ms * 3 / 4;
    if (valid && avail >= amount) {
        c->reserved += amount;
        bool low = !c->refill && avail - amount < max_lease(c) / 2;
        if (low)
            c->refill = true;
        pthread_mutex_unlock(&c->mu);
        if (low)
            kick();
        return LEASE_OK;
    }
    enum lease_take r;
    int64_t hold = E.sync_ms > 250 ? E.sync_ms : 250;
    if (atomic_load(&E.down))
        r = LEASE_DOWN;
    else if (c->exhausted_ms && now - c->exhausted_ms < hold)
        r = LEASE_EXHAUSTED;
    else {
        c->want += valid && avail > 0 ? amount - avail : amount;
        r = LEASE_WAIT;
    }
    pthread_mutex_unlock(&c->mu);
    if (r == LEASE_WAIT) {
        atomic_fetch_add(&E.waits, 1);
        kick();
    }
    return r;
}

void lease_settle(struct lease_cell *c, int64_t reserved, int64_t used)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->reserved -= reserved;
    if (c->reserved < 0)
        c->reserved = 0;
    if (used > 0)
        c->used += used;
    bool waiting = c->want > 0 && atomic_load_explicit(&E.nwaiters, memory_order_relaxed) > 0;
    pthread_mutex_unlock(&c->mu);
    if (waiting) /* requests wait for the room this settle made: report it and take more now */
        kick();
}

int64_t lease_retry_ms(struct lease_cell *c)
{
    pthread_mutex_lock(&c->mu);
    int64_t r = c->retry_ms;
    pthread_mutex_unlock(&c->mu);
    return r;
}

void lease_wait(struct lease_waiter *w)
{
    pthread_mutex_lock(&E.mu);
    w->next = E.waiters;
    E.waiters = w;
    atomic_fetch_add(&E.nwaiters, 1);
    E.kick = true;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
}

static void wake_all(void)
{
    pthread_mutex_lock(&E.mu);
    struct lease_waiter *w = E.waiters;
    E.waiters = NULL;
    atomic_store(&E.nwaiters, 0);
    pthread_mutex_unlock(&E.mu);
    while (w) {
        struct lease_waiter *n = w->next;
        w->wake(w);
        w = n;
    }
}

/* ---- the lease thread ---- */

static void set_down(const char *why)
{
    pthread_mutex_lock(&E.mu);
    bool was = atomic_load(&E.down);
    bool changed = strcmp(E.why, why) != 0;
    snprintf(E.why, sizeof(E.why), "%s", why);
    atomic_store(&E.down, true);
    pthread_mutex_unlock(&E.mu);
    if (!was || changed)
        log_warn("cluster: Redis at %s:%d unavailable: %s", E.url.host, E.url.port, why);
}

static void set_up(void)
{
    if (atomic_exchange(&E.down, false))
        log_info("cluster: Redis at %s:%d reachable, leases shared", E.url.host, E.url.port);
}

static int load_script(const char *src, char *sha, size_t n, struct buf *err)
{
    const char *argv[] = {"SCRIPT", "LOAD", src};
    redis_append(E.conn, 3, argv);
    struct redis_reply r;
    if (redis_read(E.conn, &r, err) != 0)
        return -1;
    atomic_fetch_add(&E.commands, 1);
    if (r.type != REDIS_R_STATUS) {
        buf_printf(err, "SCRIPT LOAD: %s", r.s);
        return -1;
    }
    size_t k = strnlen(r.s, n - 1);
    memcpy(sha, r.s, k);
    sha[k] = '\0';
    return 0;
}

static bool ensure_conn(void)
{
    if (E.conn)
        return true;
    struct buf err = BUF_INIT(512);
    E.conn = redis_connect(&E.url, (int)E.timeout_ms, &err);
    if (E.conn && (load_script(BUDGET_LUA, E.sha_budget, sizeof(E.sha_budget), &err) != 0 ||
                   load_script(RATE_LUA, E.sha_rate, sizeof(E.sha_rate), &err) != 0)) {
        redis_close(E.conn);
        E.conn = NULL;
    }
    if (E.conn == NULL)
        set_down(err.data ? err.data : "connect failed");
    buf_free(&err);
    return E.conn != NULL;
}

struct op {
    struct lease_cell *c;
    int64_t used, ret, want, overdraft;
    bool call;
};

static void fmt(char *dst, size_t n, int64_t v)
{
    snprintf(dst, n, "%lld", (long long)v);
}

/* One pass: decide under each cell's lock what to tell Redis, send it all in one pipeline, apply the replies. */
static void pass(bool final)
{
    atomic_fetch_add(&E.passes, 1);
    pthread_mutex_lock(&E.mu);
    size_t n = E.nall;
    struct lease_cell **cells = n ? xmalloc(n * sizeof(*cells)) : NULL;
    if (n)
        memcpy(cells, E.all, n * sizeof(*cells));
    pthread_mutex_unlock(&E.mu);
    struct op *ops = n ? xcalloc(n, sizeof(*ops)) : NULL;
    size_t nops = 0;
    int64_t now = mono_ms();
    for (size_t i = 0; i < n; i++) {
        struct lease_cell *c = cells[i];
        struct op o = {.c = c};
        bool budget = c->unit <= LEASE_BUDGET_TOKENS;
        pthread_mutex_lock(&c->mu);
        if (now - c->last_use_ms >= E.idle_ms)
            c->want = 0; /* no one asked for a while: no one waits */
        /* someone waits on a lease that is no longer valid here: Redis must confirm it again (a rate lease is
         * valid while Redis answers; a budget lease for 3/4 of its TTL), whatever else there is to ask */
        bool stale = c->want > 0 && (budget ? now >= c->valid_until_ms
                                            : c->valid_until_ms == 0 ||
                                                  now >= atomic_load(&E.last_ok_ms) + E.ttl_ms * 3 / 4);
        o.used = c->used;
        int64_t unused = c->granted - c->reserved - c->used;
        if (unused < 0)
            unused = 0;
        if (final || (c->reserved == 0 && c->want == 0 && now - c->last_use_ms >= E.idle_ms))
            o.ret = unused;
        int64_t held = c->granted - c->used; /* what Redis counts as this replica's lease after the report */
        if (held < 0)
            held = 0;
        int64_t need = c->want;
        if (c->refill && now - c->last_use_ms < E.idle_ms) {
            int64_t top = max_lease(c) - (held - o.ret);
            if (top > need)
                need = top;
        }
        if (!final && need > 0) {
            int64_t room = max_lease(c) - (held - o.ret);
            o.want = need < room ? need : room;
            if (o.want < 0)
                o.want = 0;
        }
        /* what the slice's cap keeps from being asked now waits for a settle to make room (lease_settle kicks) */
        c->want = c->want > o.want ? c->want - o.want : 0;
        c->refill = false;
        c->granted -= o.ret; /* from now on no request may take what goes back */
        if (!budget) {
            /* a rate lease is consumed as it is used: no report unless it was overdrawn (tokens over the
             * reservation); the unused rest is what may be returned */
            o.overdraft = c->used > c->granted ? c->used - c->granted : 0;
            if (o.overdraft == 0 && o.used > 0) {
                c->granted -= c->used;
                c->used = 0;
                o.used = 0;
            }
        }
        /* Settled use rides along with the calls a lease needs anyway (a refill, a return, the renewal every
         * third of the TTL): until then Redis still counts it inside this replica's lease, so no one else can
         * take it, and a replica that dies before reporting it loses at most its own lease (the stated slack). */
        bool renew = budget && (held > 0 || o.used > 0) && now - c->synced_ms >= E.ttl_ms / 3;
        o.call = o.ret > 0 || o.want > 0 || ((renew || stale) && !final) ||
                 (final && (o.used > 0 || o.overdraft > 0));
        pthread_mutex_unlock(&c->mu);
        if (o.call)
            ops[nops++] = o;
    }
    if (nops && ensure_conn()) {
        int64_t t_sent = mono_ms();
        for (size_t i = 0; i < nops; i++) {
            struct op *o = &ops[i];
            struct lease_cell *c = o->c;
            char a[5][24];
            if (c->unit <= LEASE_BUDGET_TOKENS) {
                char ttl[24], exp[24];
                fmt(a[0], sizeof(a[0]), c->limit);
                fmt(a[1], sizeof(a[1]), o->used);
                fmt(a[2], sizeof(a[2]), o->ret);
                fmt(a[3], sizeof(a[3]), o->want);
                fmt(ttl, sizeof(ttl), E.ttl_ms);
                fmt(exp, sizeof(exp), c->wend == INT64_MAX ? 0 : c->wend + 7 * 86400);
                const char *argv[] = {"EVALSHA", E.sha_budget, "1", c->key, E.replica, a[0], a[1], a[2], a[3],
                                      ttl, exp};
                redis_append(E.conn, (int)ARRAY_LEN(argv), argv);
            } else {
                fmt(a[0], sizeof(a[0]), c->limit);
                fmt(a[1], sizeof(a[1]), o->overdraft);
                fmt(a[2], sizeof(a[2]), o->ret);
                fmt(a[3], sizeof(a[3]), o->want);
                const char *argv[] = {"EVALSHA", E.sha_rate, "1", c->key, a[0], a[1], a[2], a[3]};
                redis_append(E.conn, (int)ARRAY_LEN(argv), argv);
            }
        }
        struct buf err = BUF_INIT(512);
        size_t done = 0;
        for (; done < nops; done++) {
            struct redis_reply r;
            if (redis_read(E.conn, &r, &err) != 0)
                break;
            atomic_fetch_add(&E.commands, 1);
            if (r.type != REDIS_R_ARRAY || r.n < 2) {
                buf_printf(&err, "lease script: %s", r.type == REDIS_R_ERROR ? r.s : "unexpected reply");
                break; /* NOSCRIPT (a flushed or restarted Redis) and the like: reconnect and reload */
            }
            struct op *o = &ops[done];
            struct lease_cell *c = o->c;
            pthread_mutex_lock(&c->mu);
            if (c->unit <= LEASE_BUDGET_TOKENS) {
                int64_t mine = r.a[0], grant = r.a[1];
                c->used -= o->used;
                /* Redis's word: its lease holds what this replica used since the snapshot (reported next pass);
                 * a lease it had dropped is gone here too */
                c->granted = mine;
                if (grant < o->want)
                    c->exhausted_ms = t_sent;
                else if (o->want > 0)
                    c->exhausted_ms = 0;
                if (grant > 0)
                    atomic_fetch_add(&E.grants, 1);
            } else {
                int64_t k = r.a[0];
                if (o->overdraft > 0) {
                    c->granted = 0;
                    c->used -= o->used;
                }
                c->granted += k;
                c->retry_ms = r.a[1];
                if (k < o->want)
                    c->exhausted_ms = t_sent;
                else if (o->want > 0)
                    c->exhausted_ms = 0;
                if (k > 0)
                    atomic_fetch_add(&E.grants, 1);
            }
            c->synced_ms = t_sent;
            c->valid_until_ms = t_sent + E.ttl_ms * 3 / 4;
            pthread_mutex_unlock(&c->mu);
        }
        if (done < nops) {
            /* the replies not read: those cells keep their figures and their wants come back next pass */
            for (size_t i = done; i < nops; i++) {
                pthread_mutex_lock(&ops[i].c->mu);
                ops[i].c->want += ops[i].want;
                pthread_mutex_unlock(&ops[i].c->mu);
            }
            set_down(err.data ? err.data : "connection lost");
            redis_close(E.conn);
            E.conn = NULL;
        } else {
            set_up();
            E.last_ok_ms = t_sent;
        }
        buf_free(&err);
    } else if (!nops && !final) {
        /* nothing to send: still learn whether Redis is there (/ready), at most every third of the TTL */
        if (E.conn == NULL) {
            if (ensure_conn()) {
                set_up();
                E.last_ok_ms = now;
            }
        } else if (now - E.last_ok_ms >= E.ttl_ms / 3) {
            const char *argv[] = {"PING"};
            struct redis_reply r;
            struct buf err = BUF_INIT(512);
            redis_append(E.conn, 1, argv);
            if (redis_read(E.conn, &r, &err) != 0) {
                set_down(err.data ? err.data : "connection lost");
                redis_close(E.conn);
                E.conn = NULL;
            } else {
                atomic_fetch_add(&E.commands, 1);
                E.last_ok_ms = now;
            }
            buf_free(&err);
        }
    }
    xfree(ops);
    xfree(cells);
    /* waiters try again when something may have changed: Redis answered, or is down; a pass that had nothing to
     * ask keeps them (else they would spin through the loop until a settle makes room) */
    /* and, as a safety net, at least every 10 passes' time: a wait never outlives a state this code missed */
    int64_t net = 10 * E.sync_ms > 500 ? 10 * E.sync_ms : 500;
    if (nops > 0 || atomic_load(&E.down) || final || now - E.last_wake_ms >= net) {
        E.last_wake_ms = now;
        wake_all();
    }
}

static void deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void *lease_thread(void *arg)
{
    (void)arg;
    /* kicked passes come at most every `gap`: the settles and waits of that time share one round trip */
    int64_t gap = E.sync_ms / 10 > 2 ? E.sync_ms / 10 : 2, last = 0;
    pthread_mutex_lock(&E.mu);
    while (!E.stop) {
        struct timespec ts;
        if (!E.kick) {
            deadline(&ts, atomic_load(&E.down) ? (E.sync_ms > 200 ? E.sync_ms : 200) : E.sync_ms);
            pthread_cond_timedwait(&E.cv, &E.mu, &ts);
        }
        int64_t since = mono_ms() - last;
        if (E.kick && since < gap && !E.stop) {
            deadline(&ts, gap - since);
            while (!E.stop && pthread_cond_timedwait(&E.cv, &E.mu, &ts) == 0)
                ;
        }
        if (E.stop)
            break;
        E.kick = false;
        pthread_mutex_unlock(&E.mu);
        last = mono_ms();
        pass(false);
        pthread_mutex_lock(&E.mu);
    }
    pthread_mutex_unlock(&E.mu);
    pass(true); /* settled spend reported, every unused slice returned */
    return NULL;
}

int lease_start(const struct config *cfg, struct buf *err)
{
    const struct config_cluster *cc = &cfg->cluster;
    if (E.started || cc->redis_url == NULL || cc->redis_url[0] == '\0')
        return 0;
    if (redis_url_parse(cc->redis_url, &E.url, err) != 0)
        return -1;
    E.open = cc->on_redis_down == 1;
    E.ttl_ms = cc->lease_ttl_ms;
    E.slice_ppm = (int64_t)(cc->lease_slice * 1e6 + 0.5);
    E.sync_ms = cc->sync_interval_ms;
    E.idle_ms = cc->lease_idle_ms;
    E.timeout_ms = cc->redis_timeout_ms;
    snprintf(E.prefix, sizeof(E.prefix), "%s", cc->key_prefix ? cc->key_prefix : "");
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    unsigned rnd = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&rnd, sizeof(rnd), 1, f) != 1)
            rnd = (unsigned)time_mono_us();
        fclose(f);
    }
    /* new at each start: a restarted replica never inherits the lease of the process it replaces */
    snprintf(E.replica, sizeof(E.replica), "%s-%d-%08x", host, (int)getpid(), rnd);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&E.s[i].mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the waits' deadlines are monotonic */
    pthread_cond_init(&E.cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(E.why, sizeof(E.why), "not connected yet");
    atomic_store(&E.down, true);
    E.stop = false;
    E.on = true;
    if (pthread_create(&E.th, NULL, lease_thread, NULL) != 0) {
        E.on = false;
        buf_printf(err, "cannot start the lease thread");
        return -1;
    }
    E.started = true;
    log_info("cluster: budgets and rate limits shared through Redis at %s:%d (replica %s, lease slice %.4g, "
             "ttl %lldms, on_redis_down %s)",
             E.url.host, E.url.port, E.replica, cc->lease_slice, (long long)E.ttl_ms, E.open ? "open" : "closed");
    return 0;
}

void lease_stop(void)
{
    if (!E.started)
        return;
    pthread_mutex_lock(&E.mu);
    E.stop = true;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
    pthread_join(E.th, NULL);
    pthread_cond_destroy(&E.cv);
    E.started = false;
    redis_close(E.conn);
    E.conn = NULL;
    for (size_t i = 0; i < E.nall; i++) {
        pthread_mutex_destroy(&E.all[i]->mu);
        xfree(E.all[i]);
    }
    xfree(E.all);
    E.all = NULL;
    E.nall = E.capall = 0;
    for (int i = 0; i < STRIPES; i++) {
        memset(E.s[i].b, 0, sizeof(E.s[i].b));
        pthread_mutex_destroy(&E.s[i].mu);
    }
    E.on = false;
}
