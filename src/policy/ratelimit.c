#include "policy/ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"

#define STRIPES 64
#define BUCKETS 1024
#define PERIOD_NS 60000000000LL /* one minute */

struct rl_cell {
    struct rl_cell *next;
    uint64_t hash;
    enum rl_scope scope;
    bool tokens;
    int64_t tat_ns; /* theoretical arrival time */
    char name[];
};

struct stripe {
    pthread_mutex_t mu;
    struct rl_cell *b[BUCKETS];
} __attribute__((aligned(64)));

struct ratelimit {
    struct stripe s[STRIPES];
    _Atomic size_t ncells;
};

const char *rl_scope_name(enum rl_scope s)
{
    static const char *const n[] = {"key", "user", "team", "model", "deployment"};
    return s < RL_SCOPES ? n[s] : "?";
}

struct ratelimit *rl_new(void)
{
    struct ratelimit *r = xcalloc(1, sizeof(*r));
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&r->s[i].mu, NULL);
    return r;
}

void rl_free(struct ratelimit *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < STRIPES; i++) {
        for (int j = 0; j < BUCKETS; j++)
            for (struct rl_cell *c = r->s[i].b[j], *n; c; c = n) {
                n = c->next;
                xfree(c);
            }
        pthread_mutex_destroy(&r->s[i].mu);
    }
    xfree(r);
}

static uint64_t cell_hash(enum rl_scope s, bool tokens, const char *name, size_t len)
{
    uint64_t h = 14695981039346656037ULL ^ ((uint64_t)s << 8 | (uint64_t)tokens);
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static struct rl_cell *cell_get(struct ratelimit *r, uint64_t h, enum rl_scope s, bool tokens, const char *name,
                                size_t len)
{
    struct stripe *st = &r->s[h % STRIPES];
    struct rl_cell **head = &st->b[(h / STRIPES) % BUCKETS];
    for (struct rl_cell *c = *head; c; c = c->next)
        if (c->hash == h && c->scope == s && c->tokens == tokens && strncmp(c->name, name, len) == 0 &&
            !c->name[len])
            return c;
    if (atomic_fetch_add_explicit(&r->ncells, 1, memory_order_relaxed) >= RL_MAX_CELLS) {
        atomic_fetch_sub_explicit(&r->ncells, 1, memory_order_relaxed);
        return NULL;
    }
    struct rl_cell *c = xcalloc(1, sizeof(*c) + len + 1);
    c->hash = h;
    c->scope = s;
    c->tokens = tokens;
    c->tat_ns = INT64_MIN / 2;
    memcpy(c->name, name, len);
    c->next = *head;
    *head = c;
    return c;
}

static int lock_set(struct ratelimit *r, const uint64_t *hashes, int n, int *order)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        int s = (int)(hashes[i] % STRIPES), j = m;
        bool dup = false;
        for (int k = 0; k < m && !dup; k++)
            dup = order[k] == s;
        if (dup)
            continue;
        while (j > 0 && order[j - 1] > s) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = s;
        m++;
    }
    for (int i = 0; i < m; i++)
        pthread_mutex_lock(&r->s[order[i]].mu);
    return m;
}

static void unlock_set(struct ratelimit *r, const int *order, int m)
{
    for (int i = m - 1; i >= 0; i--)
        pthread_mutex_unlock(&r->s[order[i]].mu);
}

/* The emission interval of `cost` units at `limit` per minute, rounded up (never more permissive than the limit). */
static int64_t interval(int64_t cost, int64_t limit)
{
    if (cost <= 0)
        return 0;
    __int128 t = (__int128)cost * PERIOD_NS;
    __int128 v = (t + limit - 1) / limit;
    return v > (__int128)INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)v;
}

void rl_admit(struct ratelimit *r, const struct rl_limit *l, int n, int64_t tokens, int64_t now_ms,
              struct rl_hold *h, struct rl_decision *d)
{
    *d = (struct rl_decision){.allowed = true, .which = -1};
    h->n = 0;
    if (tokens < 0)
        tokens = 0;
    /* one cell per (limit, kind) given */
    struct {
        int lim;
        bool tok;
        uint64_t hash;
        size_t len;
        struct rl_cell *cell;
        int64_t new_tat;
    } c[2 * RL_MAX_LIMITS];
    int nc = 0;
    if (n > RL_MAX_LIMITS) {
        *d = (struct rl_decision){.bad = true, .which = -1};
        return;
    }
    for (int i = 0; i < n; i++) {
        size_t len = l[i].name ? strnlen(l[i].name, RL_NAME_MAX + 1) : 0;
        if (len > RL_NAME_MAX) {
            *d = (struct rl_decision){.bad = true, .which = i};
            return;
        }
        for (int k = 0; k < 2; k++) {
            int64_t lim = k ? l[i].tpm : l[i].rpm;
            if (lim <= 0)
                continue;
            c[nc].lim = i;
            c[nc].tok = k;
            c[nc].len = len;
            c[nc].hash = cell_hash(l[i].scope, k, l[i].name ? l[i].name : "", len);
            nc++;
        }
    }
    if (nc == 0)
        return;
    uint64_t hs[2 * RL_MAX_LIMITS];
    for (int i = 0; i < nc; i++)
        hs[i] = c[i].hash;
    int order[2 * RL_MAX_LIMITS];
    int m = lock_set(r, hs, nc, order);
    int64_t now = now_ms * 1000000;
    int64_t best_req = INT64_MAX, best_tok = INT64_MAX;
    for (int i = 0; i < nc; i++) {
        const struct rl_limit *li = &l[c[i].lim];
        c[i].cell = cell_get(r, c[i].hash, li->scope, c[i].tok, li->name ? li->name : "", c[i].len);
        if (c[i].cell == NULL) {
            unlock_set(r, order, m);
            *d = (struct rl_decision){.bad = true, .which = c[i].lim};
            return;
        }
        int64_t lim = c[i].tok ? li->tpm : li->rpm;
        int64_t cost = c[i].tok ? tokens : 1;
        int64_t base = c[i].cell->tat_ns > now ? c[i].cell->tat_ns : now;
        c[i].new_tat = base + interval(cost, lim);
        int64_t ahead = c[i].new_tat - now;
        /* what the headers report: the tightest limit of each kind, as it stands after this request */
        int64_t remaining = ahead > PERIOD_NS ? (PERIOD_NS - (base - now)) / interval(1, lim)
                                              : (PERIOD_NS - ahead) / interval(1, lim);
        if (remaining < 0)
            remaining = 0;
        if (c[i].tok ? remaining < best_tok : remaining < best_req) {
            if (c[i].tok) {
                best_tok = remaining;
                d->limit_tokens = lim;
                d->remaining_tokens = remaining;
                d->reset_tokens_ms = ((ahead > PERIOD_NS ? base - now : ahead) + 999999) / 1000000;
            } else {
                best_req = remaining;
                d->limit_requests = lim;
                d->remaining_requests = remaining;
                d->reset_requests_ms = ((ahead > PERIOD_NS ? base - now : ahead) + 999999) / 1000000;
            }
        }
        if (ahead > PERIOD_NS && d->allowed) {
            d->allowed = false;
            d->which = c[i].lim;
            d->which_tokens = c[i].tok;
            /* a token reservation above the whole limit never fits: try again in a minute (it will not help) */
            int64_t wait = cost > lim ? PERIOD_NS : ahead - PERIOD_NS;
            d->retry_after_ms = (wait + 999999) / 1000000;
        }
    }
    if (d->allowed)
        for (int i = 0; i < nc; i++) {
            c[i].cell->tat_ns = c[i].new_tat;
            if (c[i].tok) {
                h->v[h->n].cell = c[i].cell;
                h->v[h->n].tokens = tokens;
                h->v[h->n].tpm = l[c[i].lim].tpm;
                h->n++;
            }
        }
    unlock_set(r, order, m);
}

void rl_settle(struct ratelimit *r, struct rl_hold *h, int64_t actual_tokens)
{
    if (actual_tokens < 0)
        actual_tokens = 0;
    for (int i = 0; i < h->n; i++) {
        struct rl_cell *cell = h->v[i].cell;
        int64_t tpm = h->v[i].tpm;
        int64_t delta = interval(actual_tokens, tpm) - interval(h->v[i].tokens, tpm);
        struct stripe *st = &r->s[cell->hash % STRIPES];
        pthread_mutex_lock(&st->mu);
        cell->tat_ns += delta; /* both terms are bounded (interval caps at INT64_MAX/4): no overflow */
        pthread_mutex_unlock(&st->mu);
    }
    h->n = 0;
}

void rl_peek(struct ratelimit *r, const struct rl_limit *l, int64_t now_ms, struct rl_peek *out)
{
    *out = (struct rl_peek){-1, -1, 0, 0};
    size_t len = l->name ? strnlen(l->name, RL_NAME_MAX + 1) : 0;
    if (len > RL_NAME_MAX)
        return;
    int64_t now = now_ms * 1000000;
    for (int k = 0; k < 2; k++) {
        int64_t lim = k ? l->tpm : l->rpm;
        if (lim <= 0)
            continue;
        uint64_t h = cell_hash(l->scope, k, l->name ? l->name : "", len);
        struct stripe *st = &r->s[h % STRIPES];
        int64_t tat = INT64_MIN / 2;
        pthread_mutex_lock(&st->mu);
        for (struct rl_cell *c = st->b[(h / STRIPES) % BUCKETS]; c; c = c->next)
            if (c->hash == h && c->scope == l->scope && c->tokens == (bool)k &&
                strncmp(c->name, l->name ? l->name : "", len) == 0 && !c->name[len]) {
                tat = c->tat_ns;
                break;
            }
        pthread_mutex_unlock(&st->mu);
        int64_t ahead = tat > now ? tat - now : 0;
        int64_t rem = ahead >= PERIOD_NS ? 0 : (PERIOD_NS - ahead) / interval(1, lim);
        if (rem > lim)
            rem = lim;
        int64_t reset = (ahead + 999999) / 1000000;
        if (k) {
            out->remaining_tokens = rem;
            out->reset_tokens_ms = reset;
        } else {
            out->remaining_requests = rem;
            out->reset_requests_ms = reset;
        }
    }
}

/* OpenAI writes durations as "1s", "6m0s", "20ms". */
static void duration(struct buf *out, int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    if (ms < 1000)
        buf_printf(out, "%lldms", (long long)ms);
    else if (s < 60)
        buf_printf(out, "%llds", (long long)s);
    else
        buf_printf(out, "%lldm%llds", (long long)(s / 60), (long long)(s % 60));
}

static void rfc3339(struct buf *out, int64_t wall_ms)
{
    time_t t = (time_t)((wall_ms + 999) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
    buf_append_str(out, s);
}

void rl_headers(struct buf *out, const struct rl_decision *d, bool anthropic, int64_t now_wall_ms)
{
    const struct {
        const char *kind;
        int64_t lim, rem, reset;
    } k[] = {{"requests", d->limit_requests, d->remaining_requests, d->reset_requests_ms},
             {"tokens", d->limit_tokens, d->remaining_tokens, d->reset_tokens_ms}};
    for (int i = 0; i < 2; i++) {
        if (k[i].lim <= 0)
            continue;
        if (anthropic) {
            buf_printf(out, "anthropic-ratelimit-%s-limit: %lld\r\n", k[i].kind, (long long)k[i].lim);
            buf_printf(out, "anthropic-ratelimit-%s-remaining: %lld\r\n", k[i].kind, (long long)k[i].rem);
            buf_printf(out, "anthropic-ratelimit-%s-reset: ", k[i].kind);
            rfc3339(out, now_wall_ms + k[i].reset);
            buf_append_str(out, "\r\n");
        } else {
            buf_printf(out, "x-ratelimit-limit-%s: %lld\r\n", k[i].kind, (long long)k[i].lim);
            buf_printf(out, "x-ratelimit-remaining-%s: %lld\r\n", k[i].kind, (long long)k[i].rem);
            buf_printf(out, "x-ratelimit-reset-%s: ", k[i].kind);
            duration(out, k[i].reset);
            buf_append_str(out, "\r\n");
        }
    }
}
