#include "policy/budget.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"

#define STRIPES 64
#define BUCKETS 1024 /* per stripe */

struct budget_cell {
    struct budget_cell *next;
    uint64_t hash;
    enum budget_scope scope;
    enum budget_window window;
    int64_t start;            /* window start the spent figures belong to */
    int64_t spent_nusd, spent_tokens;
    int64_t reserved_nusd, reserved_tokens;
    int64_t alerted_start;    /* soft budget: the window it was reported crossed in; -1 none */
    char name[];
};

struct stripe {
    pthread_mutex_t mu;
    struct budget_cell *b[BUCKETS];
} __attribute__((aligned(64)));

struct budget {
    struct stripe s[STRIPES];
    _Atomic size_t ncells;
};

const char *budget_scope_name(enum budget_scope s)
{
    static const char *const n[] = {"key", "user", "team", "workflow"};
    return s < BUDGET_SCOPES ? n[s] : "?";
}

const char *budget_window_name(enum budget_window w)
{
    static const char *const n[] = {"total", "day", "week", "month"};
    return w < BUDGET_WINDOWS ? n[w] : "?";
}

/* ---- calendar windows (UTC) ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 -> civil date (Howard Hinnant's algorithm), and back. */
static void civil(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t budget_window_start(enum budget_window w, int64_t now)
{
    int64_t day = floor_div(now, 86400);
    switch (w) {
    case BUDGET_DAY: return day * 86400;
    case BUDGET_WEEK: return (day - ((day + 3) % 7 + 7) % 7) * 86400; /* 1970-01-01 was a Thursday */
    case BUDGET_MONTH: {
        int64_t y;
        int m, d;
        civil(day, &y, &m, &d);
        return days_from_civil(y, m, 1) * 86400;
    }
    default: return 0;
    }
}

int64_t budget_window_end(enum budget_window w, int64_t now)
{
    switch (w) {
    case BUDGET_DAY: return budget_window_start(w, now) + 86400;
    case BUDGET_WEEK: return budget_window_start(w, now) + 7 * 86400;
    case BUDGET_MONTH: {
        int64_t y;
        int m, d;
        civil(floor_div(now, 86400), &y, &m, &d);
        return days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * 86400;
    }
    default: return INT64_MAX;
    }
}

/* ---- the table ---- */

struct budget *budget_new(void)
{
    struct budget *b = xcalloc(1, sizeof(*b));
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&b->s[i].mu, NULL);
    return b;
}

void budget_free(struct budget *b)
{
    if (b == NULL)
        return;
    for (int i = 0; i < STRIPES; i++) {
        for (int j = 0; j < BUCKETS; j++)
            for (struct budget_cell *c = b->s[i].b[j], *n; c; c = n) {
                n = c->next;
                xfree(c);
            }
        pthread_mutex_destroy(&b->s[i].mu);
    }
    xfree(b);
}

static uint64_t cell_hash(enum budget_scope s, enum budget_window w, const char *name, size_t len)
{
    uint64_t h = 14695981039346656037ULL ^ ((uint64_t)s << 8 | (uint64_t)w);
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

/* Under the stripe's lock. NULL when the table is full. */
static struct budget_cell *cell_get(struct budget *b, uint64_t h, enum budget_scope s, enum budget_window w,
                                    const char *name, size_t len)
{
    struct stripe *st = &b->s[h % STRIPES];
    struct budget_cell **head = &st->b[(h / STRIPES) % BUCKETS];
    for (struct budget_cell *c = *head; c; c = c->next)
        if (c->hash == h && c->scope == s && c->window == w && strncmp(c->name, name, len) == 0 && !c->name[len])
            return c;
    if (atomic_fetch_add_explicit(&b->ncells, 1, memory_order_relaxed) >= BUDGET_MAX_CELLS) {
        atomic_fetch_sub_explicit(&b->ncells, 1, memory_order_relaxed);
        return NULL;
    }
    struct budget_cell *c = xcalloc(1, sizeof(*c) + len + 1);
    c->hash = h;
    c->scope = s;
    c->window = w;
    c->alerted_start = -1;
    memcpy(c->name, name, len);
    c->next = *head;
    *head = c;
    return c;
}

/* The cell's figures belong to the window in force at now. */
static void roll(struct budget_cell *c, int64_t now)
{
    int64_t start = budget_window_start(c->window, now);
    if (c->start != start) {
        c->start = start;
        c->spent_nusd = c->spent_tokens = 0;
    }
}

static int64_t sat_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int64_t nonneg(int64_t v)
{
    return v > 0 ? v : 0;
}

/* Locks the distinct stripes of idx[0..n) in ascending order (no deadlock between decisions). */
static int lock_set(struct budget *b, const uint64_t *hashes, int n, int *order)
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
        pthread_mutex_lock(&b->s[order[i]].mu);
    return m;
}

static void unlock_set(struct budget *b, const int *order, int m)
{
    for (int i = m - 1; i >= 0; i--)
        pthread_mutex_unlock(&b->s[order[i]].mu);
}

void budget_reserve(struct budget *b, const struct budget_limit *l, int n, const struct budget_ask *a,
                    struct budget_hold *h, struct budget_decision *d)
{
    int64_t in = nonneg(a->input_tokens), want = nonneg(a->max_tokens);
    *d = (struct budget_decision){.verdict = BUDGET_OK, .max_tokens = a->max_tokens, .which = -1,
                                  .retry_after = -1, .soft_crossed = -1};
    h->n = 0;
    if (n <= 0)
        return;
    if (n > BUDGET_MAX_LIMITS) {
        d->verdict = BUDGET_BAD;
        return;
    }
    const struct price *pr[BUDGET_MAX_LIMITS];
    uint64_t hs[BUDGET_MAX_LIMITS];
    size_t lens[BUDGET_MAX_LIMITS];
    for (int i = 0; i < n; i++) {
        lens[i] = l[i].name ? strnlen(l[i].name, BUDGET_NAME_MAX + 1) : 0;
        if (lens[i] > BUDGET_NAME_MAX) {
            d->verdict = BUDGET_BAD;
            return;
        }
        hs[i] = cell_hash(l[i].scope, l[i].window, l[i].name ? l[i].name : "", lens[i]);
        /* the price this budget charges at: the model's, or for an unpriced model what `unpriced` says */
        pr[i] = a->price;
        if (pr[i] == NULL && l[i].usd_nusd > 0 && !l[i].soft) {
            if (l[i].unpriced == BUDGET_UNPRICED_DENY) {
                d->verdict = BUDGET_UNPRICED;
                d->which = i;
                return;
            }
            if (l[i].unpriced == BUDGET_UNPRICED_RESERVE_MAX)
                pr[i] = a->max_price;
        }
    }
    int order[BUDGET_MAX_LIMITS];
    int m = lock_set(b, hs, n, order);
    struct budget_cell *cells[BUDGET_MAX_LIMITS];
    int64_t out = want;
    for (int i = 0; i < n; i++) {
        cells[i] = cell_get(b, hs[i], l[i].scope, l[i].window, l[i].name ? l[i].name : "", lens[i]);
        if (cells[i] == NULL) {
            unlock_set(b, order, m);
            d->verdict = BUDGET_BAD;
            return;
        }
        roll(cells[i], a->now);
    }
    /* what every hard budget lets this request produce; the first that cannot cover even one token refuses */
    for (int i = 0; i < n; i++) {
        if (l[i].soft)
            continue;
        const struct budget_cell *c = cells[i];
        int64_t fit = out;
        bool input_fits = true; /* a request without output (embeddings) is refused on its input alone */
        if (l[i].usd_nusd > 0 && pr[i]) {
            int64_t avail = l[i].usd_nusd - c->spent_nusd - c->reserved_nusd;
            if (price_worst_nusd(pr[i], in, out) > avail)
                fit = avail < 0 ? 0 : price_output_affordable(pr[i], in, avail);
            if (fit > out)
                fit = out;
            input_fits = price_worst_nusd(pr[i], in, 0) <= avail;
        }
        if (l[i].tokens > 0) {
            int64_t avail = l[i].tokens - c->spent_tokens - c->reserved_tokens - in;
            if (avail < fit)
                fit = avail < 0 ? 0 : avail;
            input_fits = input_fits && avail >= 0;
        }
        bool short_ = fit < out;
        if (!input_fits || (short_ && (!l[i].clamp || fit < 1))) {
            unlock_set(b, order, m);
            d->verdict = BUDGET_REFUSED;
            d->which = i;
            int64_t end = budget_window_end(l[i].window, a->now);
            d->retry_after = end == INT64_MAX ? -1 : end - a->now;
            return;
        }
        out = fit;
    }
    /* admitted: hold the worst case at `out` in every cell */
    for (int i = 0; i < n; i++) {
        struct budget_cell *c = cells[i];
        int64_t nusd = pr[i] ? price_worst_nusd(pr[i], in, out) : 0;
        int64_t tok = sat_add(in, out);
        c->reserved_nusd = sat_add(c->reserved_nusd, nusd);
        c->reserved_tokens = sat_add(c->reserved_tokens, tok);
        if (l[i].soft && d->soft_crossed < 0 && c->alerted_start != c->start &&
            ((l[i].usd_nusd > 0 && sat_add(c->spent_nusd, c->reserved_nusd) > l[i].usd_nusd) ||
             (l[i].tokens > 0 && sat_add(c->spent_tokens, c->reserved_tokens) > l[i].tokens))) {
            c->alerted_start = c->start;
            d->soft_crossed = i;
        }
        h->v[h->n].cell = c;
        h->v[h->n].price = pr[i];
        h->v[h->n].nusd = nusd;
        h->v[h->n].tokens = tok;
        h->v[h->n].limit_nusd = l[i].usd_nusd;
        h->v[h->n].hard = !l[i].soft;
        h->n++;
    }
    unlock_set(b, order, m);
    d->max_tokens = out;
    if (out < want)
        d->verdict = BUDGET_CLAMPED;
    d->reserved_nusd = a->price ? price_worst_nusd(a->price, in, out) : 0;
    d->reserved_tokens = sat_add(in, out);
}

void budget_settle(struct budget *b, struct budget_hold *h, const struct price_tokens *used,
                   const struct price *actual, int64_t now)
{
    if (h->n <= 0)
        return;
    uint64_t hs[BUDGET_MAX_LIMITS];
    for (int i = 0; i < h->n; i++)
        hs[i] = h->v[i].cell->hash;
    int order[BUDGET_MAX_LIMITS];
    int m = lock_set(b, hs, h->n, order);
    int64_t tok = sat_add(nonneg(used->input), nonneg(used->output));
    for (int i = 0; i < h->n; i++) {
        struct budget_cell *c = h->v[i].cell;
        roll(c, now);
        c->reserved_nusd = nonneg(c->reserved_nusd - h->v[i].nusd);
        c->reserved_tokens = nonneg(c->reserved_tokens - h->v[i].tokens);
        const struct price *p = h->v[i].price ? (actual ? actual : h->v[i].price) : NULL;
        c->spent_nusd = sat_add(c->spent_nusd, p ? price_cost_nusd(p, used) : 0);
        c->spent_tokens = sat_add(c->spent_tokens, tok);
    }
    unlock_set(b, order, m);
    h->n = 0;
}

int budget_topup(struct budget *b, struct budget_hold *h, const struct price *p, int64_t in, int64_t out,
                 int64_t now, int *which)
{
    *which = -1;
    if (h->n <= 0)
        return 0;
    int64_t need = p ? price_worst_nusd(p, nonneg(in), nonneg(out)) : 0;
    uint64_t hs[BUDGET_MAX_LIMITS] = {0};
    for (int i = 0; i < h->n; i++)
        hs[i] = h->v[i].cell->hash;
    int order[BUDGET_MAX_LIMITS];
    int m = lock_set(b, hs, h->n, order);
    for (int i = 0; i < h->n; i++) { /* all or nothing: check every hard budget first */
        struct budget_cell *c = h->v[i].cell;
        if (h->v[i].price == NULL || !h->v[i].hard || h->v[i].limit_nusd <= 0)
            continue;
        roll(c, now);
        if (p == NULL) { /* a USD budget cannot price it */
            *which = i;
            break;
        }
        int64_t extra = need - h->v[i].nusd;
        int64_t avail = h->v[i].limit_nusd - c->spent_nusd - c->reserved_nusd;
        if (extra > 0 && extra > avail) {
            *which = i;
            break;
        }
    }
    if (*which < 0)
        for (int i = 0; i < h->n; i++) {
            if (h->v[i].price == NULL || p == NULL || need <= h->v[i].nusd)
                continue;
            struct budget_cell *c = h->v[i].cell;
            c->reserved_nusd = sat_add(c->reserved_nusd, need - h->v[i].nusd);
            h->v[i].nusd = need;
        }
    unlock_set(b, order, m);
    return *which < 0 ? 0 : -1;
}

void budget_seed(struct budget *b, enum budget_scope s, const char *name, enum budget_window w, int64_t at,
                 int64_t nusd, int64_t tokens, int64_t now)
{
    size_t len = name ? strnlen(name, BUDGET_NAME_MAX + 1) : 0;
    if (len > BUDGET_NAME_MAX || at < budget_window_start(w, now))
        return;
    uint64_t hs = cell_hash(s, w, name ? name : "", len);
    struct stripe *st = &b->s[hs % STRIPES];
    pthread_mutex_lock(&st->mu);
    struct budget_cell *c = cell_get(b, hs, s, w, name ? name : "", len);
    if (c) {
        roll(c, now);
        c->spent_nusd = sat_add(c->spent_nusd, nonneg(nusd));
        c->spent_tokens = sat_add(c->spent_tokens, nonneg(tokens));
    }
    pthread_mutex_unlock(&st->mu);
}

void budget_get(struct budget *b, enum budget_scope s, const char *name, enum budget_window w, int64_t now,
                struct budget_state *out)
{
    *out = (struct budget_state){.window_start = budget_window_start(w, now), .window_end = budget_window_end(w, now)};
    size_t len = name ? strnlen(name, BUDGET_NAME_MAX + 1) : 0;
    if (len > BUDGET_NAME_MAX)
        return;
    uint64_t hs = cell_hash(s, w, name ? name : "", len);
    struct stripe *st = &b->s[hs % STRIPES];
    pthread_mutex_lock(&st->mu);
    for (struct budget_cell *c = st->b[(hs / STRIPES) % BUCKETS]; c; c = c->next)
        if (c->hash == hs && c->scope == s && c->window == w && strncmp(c->name, name ? name : "", len) == 0 &&
            !c->name[len]) {
            roll(c, now);
            out->spent_nusd = c->spent_nusd;
            out->spent_tokens = c->spent_tokens;
            out->reserved_nusd = c->reserved_nusd;
            out->reserved_tokens = c->reserved_tokens;
            break;
        }
    pthread_mutex_unlock(&st->mu);
}
