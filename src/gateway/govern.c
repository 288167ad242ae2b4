#include "gateway/govern.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/govern_lease.h"
#include "gateway/registry.h"
#include "gateway/provider.h"
#include "policy/auth.h"
#include "policy/alerts.h"
#include "policy/budget.h"
#include "policy/keys.h"
#include "policy/govern_config.h"
#include "policy/lease.h"
#include "policy/ledger.h"
#include "policy/ratelimit.h"
#include "telemetry/metrics.h"

_Static_assert((int)KEY_WINDOW_TOTAL == BUDGET_TOTAL && (int)KEY_WINDOW_DAY == BUDGET_DAY &&
                   (int)KEY_WINDOW_WEEK == BUDGET_WEEK && (int)KEY_WINDOW_MONTH == BUDGET_MONTH,
               "a key's budget window is a budget window");

/* What a governed exchange holds between admit and settle (ex->gov). */
struct govern_state {
    struct budget_hold bh;
    struct rl_hold rh;
    struct rl_hold dh;     /* the deployment limits of the attempt under way (govern_attempt_admit) */
    int64_t rl_tokens;     /* what the token limits reserve: input estimate + the output allowed */
    struct rl_decision rl; /* for the response headers */
    bool have_rl;
    int64_t input_est;
    int64_t max_out;        /* the output the reservation covers */
    char *body;             /* a rewritten body (max_tokens), owned */
    /* cluster mode (policy/lease.h): what this request took from the replica's leases */
    struct govern_lease_hold lr, lb; /* rate limits (tokens), budgets */
    bool rl_done;                    /* the rate limits are decided (admit ran again after a lease wait) */
};

static struct budget *B;
static struct ratelimit *R;

static const char *const spend_labels[] = {"key", "team", "model", NULL};
static const char *const token_labels[] = {"key", "team", "model", "kind", NULL};
static const char *const scope_labels[] = {"scope", NULL};
static struct metric_def m_spend =
    METRIC_DEF("agentd_spend_usd_total", "USD charged to the ledger.", METRIC_COUNTER, spend_labels);
static struct metric_def m_tokens =
    METRIC_DEF("agentd_spend_tokens_total", "Tokens charged to the ledger.", METRIC_COUNTER, token_labels);
static struct metric_def m_rl_refusals = METRIC_DEF(
    "agentd_ratelimit_refusals_total", "Requests refused by a rate limit, by its scope.", METRIC_COUNTER, scope_labels);
static struct metric_def m_budget_refusals = METRIC_DEF(
    "agentd_budget_refusals_total", "Requests refused by a hard budget, by its scope.", METRIC_COUNTER, scope_labels);
static struct metric_def m_budget_clamps = METRIC_DEF(
    "agentd_budget_clamps_total", "Requests whose max_tokens a budget lowered, by scope.", METRIC_COUNTER, NULL);
static struct metric_def m_cuts = METRIC_DEF("agentd_budget_stream_cuts_total",
                                             "Streams the gateway ended at the output their budget reservation covered.",
                                             METRIC_COUNTER, NULL);
static struct metric_def m_soft = METRIC_DEF("agentd_budget_soft_exceeded_total",
                                             "Soft budgets crossed (once per budget and window).", METRIC_COUNTER,
                                             scope_labels);

struct budget *govern_budget(void)
{
    return B;
}

/* Remaining ratio of every configured budget with a concrete name (a '*' budget has one cell per name and is
 * not listed). */
static void collect_budgets(struct buf *out, void *ud)
{
    (void)ud;
    struct config *cfg = config_acquire();
    if (cfg == NULL)
        return;
    buf_append_str(out, "# HELP agentd_budget_remaining_ratio Share of a budget left in its window (USD, else "
                        "tokens).\n# TYPE agentd_budget_remaining_ratio gauge\n");
    const struct config_budget *cb = cfg->budgets.items;
    int64_t now = (int64_t)(time_wall_us() / 1000000);
    for (size_t i = 0; i < cfg->budgets.n; i++) {
        if (strcmp(cb[i].name, "*") == 0)
            continue;
        struct budget_state st;
        budget_get(B, cb[i].scope, cb[i].name, cb[i].window, now, &st);
        double lim = cb[i].usd > 0 ? cb[i].usd * 1e9 : (double)cb[i].tokens;
        double used = cb[i].usd > 0 ? (double)(st.spent_nusd + st.reserved_nusd)
                                    : (double)(st.spent_tokens + st.reserved_tokens);
        double r = lim > 0 ? 1.0 - used / lim : 1.0;
        buf_printf(out, "agentd_budget_remaining_ratio{scope=\"%s\",name=\"", budget_scope_name(cb[i].scope));
        metrics_append_label_value(out, cb[i].name);
        buf_printf(out, "\",window=\"%s\"} %.6f\n", budget_window_name(cb[i].window), r < 0 ? 0 : r);
    }
    config_unref(cfg);
}

static const struct ex_observer govern_observer;
static bool govern_attempt_admit(struct exchange *ex, const struct deployment *dep, struct gw_error *err);

void govern_init(void)
{
    if (B)
        return;
    B = budget_new();
    R = rl_new();
    metrics_register(&m_spend);
    metrics_register(&m_tokens);
    metrics_register(&m_rl_refusals);
    metrics_register(&m_budget_refusals);
    metrics_register(&m_budget_clamps);
    metrics_register(&m_soft);
    metrics_register(&m_cuts);
    metrics_add_collector(collect_budgets, NULL);
    ledger_metrics_register();
    auth_metrics_register();
    ex_observer_add(&govern_observer);
    static const struct ex_policy hooks = {.admit = govern_admit,
                                           .headers = govern_headers,
                                           .fill_usage = govern_fill_usage,
                                           .release = govern_free,
                                           .attempt_admit = govern_attempt_admit};
    ex_policy_set(&hooks);
}

void govern_cleanup(void)
{
    lease_stop(); /* the workers have stopped: settled spend reported, unused slices returned */
    ledger_stop();
    budget_free(B);
    rl_free(R);
    B = NULL;
    R = NULL;
}

int govern_start(const struct config *cfg, struct buf *err)
{
    if (lease_start(cfg, err) != 0) /* cluster mode: budgets and rate limits shared through Redis leases */
        return -1;
    if (!cfg->ledger.enabled)
        return 0;
    int64_t now = (int64_t)(time_wall_us() / 1000000);
    if (ledger_rebuild_budgets(cfg->server.data_dir, NULL, B, now, err) != 0) {
        /* the writer starts anyway: a shared database that is down at start must not lose this process's rows
         * (they wait in the writer's bounded queue until it answers) */
        log_warn("budgets not rebuilt from the spend ledger, they count from zero: %s", err->data ? err->data : "?");
        buf_reset(err);
    }
    return ledger_start(&(struct ledger_options){.data_dir = cfg->server.data_dir,
                                                 .batch_ms = cfg->ledger.batch_interval_ms,
                                                 .queue_max = (size_t)cfg->ledger.queue_max},
                        err);
}

void govern_stop(void)
{
    ledger_stop();
}

bool govern_ledger_failing(size_t *backlog)
{
    struct ledger_stats s;
    ledger_get_stats(&s);
    if (backlog)
        *backlog = s.backlog;
    return s.running && s.failing;
}

/* ---- who ---- */

/* Copies s into dst[n], cut to fit (ledger text columns are bounded). */
static void snp(char *dst, size_t n, const char *s)
{
    size_t k = s ? strnlen(s, n - 1) : 0;
    if (k)
        memcpy(dst, s, k);
    dst[k] = '\0';
}


struct who {
    char key_id[40], user[LEDGER_TEXT], team[LEDGER_TEXT], workflow[LEDGER_TEXT];
};

static void copy_str(char *dst, size_t n, struct str s)
{
    size_t k = s.n < n - 1 ? s.n : n - 1;
    if (k)
        memcpy(dst, s.p, k);
    dst[k] = '\0';
}

/* Attribution: the principal authenticate set (key id, user, team, workflow). Without one (an anonymous caller
 * under auth.mode none) the request's own `user` (OpenAI) or metadata.user_id (Anthropic) and the
 * x-agentd-workflow header name the user and the workflow. The body was validated by the front's parse. */
static void who_of(const struct exchange *ex, struct who *w)
{
    memset(w, 0, sizeof(*w));
    const struct principal *p = ex->rq.who;
    if (p) { /* authenticate decided (keys, and what the key lets the caller say: policy/auth.h) */
        snp(w->key_id, sizeof(w->key_id), p->key_id);
        snp(w->user, sizeof(w->user), p->user);
        snp(w->team, sizeof(w->team), p->team);
        snp(w->workflow, sizeof(w->workflow), p->workflow);
        return;
    }
    copy_str(w->user, sizeof(w->user), ex->rq.user);
    if (w->user[0] == '\0' && !ex->rq.user_checked && ex->rq.body.n) {
        struct jval v;
        int rc = ex->front == FRONT_ANTHROPIC_MESSAGES
                     ? jscan_path(ex->rq.body.p, ex->rq.body.n, "metadata.user_id", &v)
                     : jscan_get(ex->rq.body.p, ex->rq.body.n, "user", &v);
        struct buf b = BUF_INIT(sizeof(w->user) - 1);
        if (rc == 0 && v.type == J_STRING && jval_str(&v, &b) == 0 && b.len)
            copy_str(w->user, sizeof(w->user), (struct str){b.data, b.len});
        buf_free(&b);
    }
    const struct str *wf = ex->rq.header ? ex->rq.header(ex->rq.hctx, "x-agentd-workflow") : NULL;
    if (wf)
        copy_str(w->workflow, sizeof(w->workflow), *wf);
}

static const char *who_name(const struct who *w, int scope)
{
    switch (scope) {
    case BUDGET_KEY: return w->key_id;
    case BUDGET_USER: return w->user;
    case BUDGET_TEAM: return w->team;
    case BUDGET_WORKFLOW: return w->workflow;
    default: return "";
    }
}

/* ---- admit ---- */

static int64_t input_estimate(const struct exchange *ex)
{
    /* A JSON body's bytes / 4, rounded up: English text is about 4 characters a token, and the JSON around it
     * only raises the estimate, so the reservation errs on the side of holding too much (released at settle). */
    return ((int64_t)ex->rq.body.n + 3) / 4;
}

/* The price to reserve at: the most expensive of the model's deployments (any of them may serve it); NULL when
 * one of them is unpriced. */
static const struct price *reserve_price(const struct exchange *ex, int64_t in, int64_t out)
{
    const struct price *best = NULL;
    int64_t worst = -1;
    for (size_t i = 0; i < ex->model->ndeps; i++) {
        const struct price *p = ex->model->deps[i].price;
        if (p == NULL)
            return NULL;
        int64_t c = price_worst_nusd(p, in, out);
        if (c > worst) {
            worst = c;
            best = p;
        }
    }
    return best;
}

/* Sets max_tokens (max_completion_tokens when the client used it; max_output_tokens on the Responses door) in the
 * body every provider reads. */
static int rewrite_max_tokens(struct exchange *ex, struct govern_state *g, int64_t max)
{
    cJSON *root = cJSON_ParseWithLength(ex->rq.body.p, ex->rq.body.n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    const char *field = ex->front == FRONT_OPENAI_RESPONSES ? "max_output_tokens"
                        : cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens") ? "max_completion_tokens"
                                                                                            : "max_tokens";
    cJSON_DeleteItemFromObjectCaseSensitive(root, field);
    cJSON_AddNumberToObject(root, field, (double)max);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (s == NULL)
        return -1;
    xfree(g->body);
    g->body = xstrdup(s);
    cJSON_free(s);
    ex->rq.body = (struct str){g->body, strlen(g->body)};
    if (ex->rq.client_tree) { /* built from the old body (the Responses front builds it before admit) */
        cJSON_Delete(ex->rq.client_tree);
        ex->rq.client_tree = cJSON_ParseWithLength(ex->rq.body.p, ex->rq.body.n);
    }
    ex->rq.max_tokens = max;
    return 0;
}

static struct govern_state *state(struct exchange *ex)
{
    if (ex->gov == NULL)
        ex->gov = xcalloc(1, sizeof(struct govern_state));
    return ex->gov;
}

enum ex_next govern_admit(struct exchange *ex)
{
    const struct config *cfg = ex->rq.cfg;
    const struct key_record *key = ex->rq.who ? ex->rq.who->key : NULL;
    bool key_limits = key && (key->budget_usd > 0 || key->budget_tokens > 0 || key->rpm > 0 || key->tpm > 0);
    if (cfg->budgets.n == 0 && cfg->ratelimits.n == 0 && !key_limits)
        return EX_CONTINUE;
    struct who w;
    who_of(ex, &w);
    bool embeddings = ex->front == FRONT_OPENAI_EMBEDDINGS;
    bool count = ex->rq.run != NULL; /* a token count: one request for the rate limits, 0 tokens, no reservation */
    int64_t in = count ? 0 : input_estimate(ex);
    int64_t out = count || embeddings ? 0 : ex->rq.max_tokens > 0 ? ex->rq.max_tokens : cfg->gateway.default_max_tokens;
    int64_t now_ms = (int64_t)(time_mono_us() / 1000);
    struct gw_error err;

    /* rate limits */
    struct rl_limit rl[RL_MAX_LIMITS];
    int nrl = 0;
    const struct config_ratelimit *cr = cfg->ratelimits.items;
    for (size_t i = 0; i < cfg->ratelimits.n && nrl < RL_MAX_LIMITS; i++) {
        const char *name = NULL;
        if (cr[i].scope == RL_MODEL)
            name = ex->rq.model_name;
        else if (cr[i].scope == RL_DEPLOYMENT)
            continue; /* counted on the deployment each attempt uses (govern_attempt_admit) */
        else
            name = who_name(&w, cr[i].scope == RL_KEY    ? BUDGET_KEY
                                : cr[i].scope == RL_USER ? BUDGET_USER
                                                         : BUDGET_TEAM);
        if (name[0] == '\0' || (strcmp(cr[i].name, "*") != 0 && strcmp(cr[i].name, name) != 0))
            continue;
        rl[nrl++] = (struct rl_limit){(enum rl_scope)cr[i].scope, name, cr[i].rpm, cr[i].tpm};
    }
    if (key && (key->rpm > 0 || key->tpm > 0) && nrl < RL_MAX_LIMITS) /* the key record's own limits */
        rl[nrl++] = (struct rl_limit){RL_KEY, key->id, key->rpm, key->tpm};
    struct govern_state *g = ex->gov;
    if (nrl > 0 && !(g && g->rl_done)) {
        g = state(ex);
        g->rl_tokens = in + out;
        int which;
        enum glease lr = govern_lease_rates(rl, nrl, in + out, &g->lr, &which);
        if (lr == GL_WAIT)
            return govern_lease_wait(ex);
        if (lr != GL_OK) {
            if (lr == GL_EXHAUSTED) {
                const struct rl_limit *l = &rl[which / 2];
                bool tok = which % 2 == 1;
                int64_t retry = govern_lease_retry_ms(l, tok);
                metrics_inc(&m_rl_refusals, (const char *[]){rl_scope_name(l->scope)});
                gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                             "rate limit reached for %s '%s' across the cluster: %lld %s per minute; retry after "
                             "%lld ms",
                             rl_scope_name(l->scope), l->name, (long long)(tok ? l->tpm : l->rpm),
                             tok ? "tokens" : "requests", (long long)(retry > 0 ? retry : 1000));
                snprintf(err.code, sizeof(err.code), "rate_limit_exceeded");
                err.retry_after_ms = retry > 0 ? retry : 1000;
            } else {
                gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                             lr == GL_DOWN ? "rate limits cannot be checked: the cluster's Redis is unreachable "
                                             "(cluster.on_redis_down: closed)"
                                           : "rate limit lease table full or a name too long");
                err.retry_after_ms = 1000;
            }
            ex_fail(ex, &err);
            return EX_END;
        }
        g->rl_done = true;
        rl_admit(R, rl, nrl, in + out, now_ms, &g->rh, &g->rl);
        g->have_rl = true;
        if (!g->rl.allowed) {
            govern_lease_settle(&g->lr, NULL, NULL);
            if (g->rl.bad)
                gw_error_set(&err, 503, GW_ERR_OVERLOADED, "rate limit table full or a name too long");
            else {
                const struct rl_limit *l = &rl[g->rl.which];
                metrics_inc(&m_rl_refusals, (const char *[]){rl_scope_name(l->scope)});
                gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                             "rate limit reached for %s '%s': %lld %s per minute; retry after %lld ms",
                             rl_scope_name(l->scope), l->name,
                             (long long)(g->rl.which_tokens ? l->tpm : l->rpm),
                             g->rl.which_tokens ? "tokens" : "requests", (long long)g->rl.retry_after_ms);
                snprintf(err.code, sizeof(err.code), "rate_limit_exceeded");
                err.retry_after_ms = g->rl.retry_after_ms;
            }
            ex_fail(ex, &err);
            return EX_END;
        }
    }

    if (count) /* it costs nothing: no budget applies (the ledger still gets its $0 row) */
        return EX_CONTINUE;
    /* budgets */
    struct budget_limit bl[BUDGET_MAX_LIMITS];
    int nbl = 0;
    const struct config_budget *cb = cfg->budgets.items;
    for (size_t i = 0; i < cfg->budgets.n && nbl < BUDGET_MAX_LIMITS; i++) {
        const char *name = who_name(&w, cb[i].scope);
        if (name[0] == '\0' || (strcmp(cb[i].name, "*") != 0 && strcmp(cb[i].name, name) != 0))
            continue;
        bl[nbl++] = (struct budget_limit){.scope = cb[i].scope,
                                          .name = name,
                                          .window = cb[i].window,
                                          .usd_nusd = (int64_t)(cb[i].usd * 1e9 + 0.5),
                                          .tokens = cb[i].tokens,
                                          .soft = cb[i].mode == 1,
                                          .clamp = cb[i].on_insufficient == 1,
                                          .unpriced = cb[i].unpriced};
    }
    if (key && (key->budget_usd > 0 || key->budget_tokens > 0) && nbl < BUDGET_MAX_LIMITS)
        bl[nbl++] = (struct budget_limit){.scope = BUDGET_KEY,
                                          .name = key->id,
                                          .window = (enum budget_window)key->budget_window, /* same order */
                                          .usd_nusd = (int64_t)(key->budget_usd * 1e9 + 0.5),
                                          .tokens = key->budget_tokens,
                                          .unpriced = BUDGET_UNPRICED_DENY};
    if (nbl == 0)
        return EX_CONTINUE;
    g = state(ex);
    struct budget_decision d;
    struct budget_ask a = {.price = reserve_price(ex, in, out),
                           .max_price = ex->reg && ex->reg->prices ? &ex->reg->prices->max : NULL,
                           .input_tokens = in,
                           .max_tokens = out,
                           .now = (int64_t)(time_wall_us() / 1000000)};
    budget_reserve(B, bl, nbl, &a, &g->bh, &d);
    enum glease lb = GL_OK;
    if (d.verdict == BUDGET_OK || d.verdict == BUDGET_CLAMPED) {
        int which;
        lb = govern_lease_budgets(bl, nbl, &g->bh, a.now, &g->lb, &which);
        if (lb != GL_OK) { /* the replica's leases cannot cover it: the local reservation goes back */
            budget_settle(B, &g->bh, &(struct price_tokens){0}, NULL, a.now);
            if (lb == GL_WAIT)
                return govern_lease_wait(ex);
            d.verdict = lb == GL_EXHAUSTED ? BUDGET_REFUSED : BUDGET_BAD;
            d.which = which;
            int64_t end = budget_window_end(bl[which].window, a.now);
            d.retry_after = end == INT64_MAX ? -1 : end - a.now;
        }
    }
    if (d.soft_crossed >= 0) {
        const struct budget_limit *l = &bl[d.soft_crossed];
        metrics_inc(&m_soft, (const char *[]){budget_scope_name(l->scope)});
        log_warn("soft budget exceeded: %s '%s' (%s window)", budget_scope_name(l->scope), l->name,
                 budget_window_name(l->window));
    }
    if (d.verdict == BUDGET_OK || d.verdict == BUDGET_CLAMPED) {
        g->input_est = in;
        g->max_out = d.max_tokens;
        if (ex->rq.stream && !embeddings)
            ex->out_cap = d.max_tokens; /* the relay ends the stream there (exchange.c cut_at_cap) */
        bool absent = ex->rq.max_tokens <= 0;
        if (!embeddings && (d.verdict == BUDGET_CLAMPED || absent)) {
            /* the upstream must not produce more than the reservation covers: the cap goes into the body */
            if (d.verdict == BUDGET_CLAMPED)
                metrics_inc(&m_budget_clamps, NULL);
            if (rewrite_max_tokens(ex, g, d.max_tokens) != 0)
                ex->rq.max_tokens = d.max_tokens;
        }
        return EX_CONTINUE;
    }
    if (g->rh.n) /* refused after the rate limits took their share: give the tokens back */
        rl_settle(R, &g->rh, 0);
    govern_lease_settle(&g->lr, NULL, NULL);
    const struct budget_limit *l = d.which >= 0 ? &bl[d.which] : NULL;
    if (d.verdict == BUDGET_UNPRICED) {
        gw_error_set(&err, 403, GW_ERR_PERMISSION,
                     "model `%s` has no price, and the USD budget of %s '%s' refuses unpriced models (unpriced: "
                     "deny); add it under prices:",
                     ex->rq.model_name, budget_scope_name(l->scope), l->name);
        snprintf(err.code, sizeof(err.code), "model_unpriced");
    } else if (d.verdict == BUDGET_REFUSED) {
        metrics_inc(&m_budget_refusals, (const char *[]){budget_scope_name(l->scope)});
        struct budget_state st;
        budget_get(B, l->scope, l->name, l->window, a.now, &st);
        if (lb == GL_EXHAUSTED)
            gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                         "budget exceeded: %s '%s' has %s%.6f per %s and the cluster's replicas have spent or leased "
                         "all of it; this request needs up to %s%.6f",
                         budget_scope_name(l->scope), l->name, l->usd_nusd > 0 && a.price ? "$" : "tokens ",
                         l->usd_nusd > 0 && a.price ? (double)l->usd_nusd / 1e9 : (double)l->tokens,
                         budget_window_name(l->window), l->usd_nusd > 0 && a.price ? "$" : "tokens ",
                         l->usd_nusd > 0 && a.price ? (double)price_worst_nusd(a.price, in, d.max_tokens) / 1e9
                                                    : (double)(in + d.max_tokens));
        else if (l->usd_nusd > 0 && a.price)
            gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                         "budget exceeded: %s '%s' has $%.6f per %s, $%.6f spent and $%.6f reserved; this request "
                         "needs up to $%.6f",
                         budget_scope_name(l->scope), l->name, (double)l->usd_nusd / 1e9,
                         budget_window_name(l->window), (double)st.spent_nusd / 1e9, (double)st.reserved_nusd / 1e9,
                         (double)price_worst_nusd(a.price, in, out) / 1e9);
        else
            gw_error_set(&err, 429, GW_ERR_RATE_LIMIT,
                         "budget exceeded: %s '%s' has %lld tokens per %s, %lld spent and %lld reserved; this "
                         "request needs up to %lld",
                         budget_scope_name(l->scope), l->name, (long long)l->tokens, budget_window_name(l->window),
                         (long long)st.spent_tokens, (long long)st.reserved_tokens, (long long)(in + out));
        snprintf(err.code, sizeof(err.code), "budget_exceeded");
        err.retry_after_ms = d.retry_after >= 0 ? d.retry_after * 1000 : -1;
    } else if (lb == GL_DOWN) {
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "budgets cannot be checked: the cluster's Redis is unreachable (cluster.on_redis_down: closed)");
        err.retry_after_ms = 1000;
    } else {
        gw_error_set(&err, 503, GW_ERR_OVERLOADED, "budget table full or a budget name too long");
    }
    ex_fail(ex, &err);
    return EX_END;
}

/* The rate limits of the deployment an attempt is about to use. Only the attempt that runs counts against its
 * deployment (a model with two deployments limited to N a minute each serves 2N); a deployment past its limit is
 * skipped like an unavailable one, and when none is left the request is refused (429) with the limit named. The
 * previous attempt of the same exchange (failed) keeps its request and gives back its tokens. */
static bool govern_attempt_admit(struct exchange *ex, const struct deployment *dep, struct gw_error *err)
{
    const struct config *cfg = ex->rq.cfg;
    /* A fallback model's deployment may be dearer than the reservation (made at the requested model's dearest):
     * top it up first, or skip the deployment when a hard budget cannot cover the difference. */
    int which;
    if (ex->gov && ex->gov->bh.n && ex->tier != ex->model &&
        budget_topup(B, &ex->gov->bh, dep->price, ex->gov->input_est, ex->gov->max_out,
                     (int64_t)(time_wall_us() / 1000000), &which) != 0) {
        gw_error_set(err, 429, GW_ERR_RATE_LIMIT,
                     "budget exceeded: fallback deployment '%s' (model %s) %s, and what is left of the budget "
                     "cannot cover the difference to this request's reservation",
                     dep->label, ex->tier ? ex->tier->name : "?", dep->price ? "costs more" : "has no price");
        snprintf(err->code, sizeof(err->code), "budget_exceeded");
        return false;
    }
    struct rl_limit rl[RL_MAX_LIMITS];
    int nrl = 0;
    const struct config_ratelimit *cr = cfg->ratelimits.items;
    for (size_t i = 0; i < cfg->ratelimits.n && nrl < RL_MAX_LIMITS; i++)
        if (cr[i].scope == RL_DEPLOYMENT && (strcmp(cr[i].name, "*") == 0 || strcmp(cr[i].name, dep->label) == 0))
            rl[nrl++] = (struct rl_limit){RL_DEPLOYMENT, dep->label, cr[i].rpm, cr[i].tpm};
    if (nrl == 0)
        return true;
    struct govern_state *g = state(ex);
    if (g->dh.n)
        rl_settle(R, &g->dh, 0);
    if (g->rl_tokens == 0) {
        bool embeddings = ex->front == FRONT_OPENAI_EMBEDDINGS;
        int64_t out = embeddings ? 0 : ex->rq.max_tokens > 0 ? ex->rq.max_tokens : cfg->gateway.default_max_tokens;
        g->rl_tokens = input_estimate(ex) + out;
    }
    struct rl_decision d;
    rl_admit(R, rl, nrl, g->rl_tokens, (int64_t)(time_mono_us() / 1000), &g->dh, &d);
    if (!g->have_rl || !d.allowed) { /* the headers: the request's own limits, or the one that refused */
        g->rl = d;
        g->have_rl = true;
    }
    if (d.allowed)
        return true;
    if (d.bad) {
        gw_error_set(err, 503, GW_ERR_OVERLOADED, "rate limit table full or a name too long");
        return false;
    }
    if (ex->iplan >= ex->nplan) /* the last deployment: the request is refused (a skip is not a refusal) */
        metrics_inc(&m_rl_refusals, (const char *[]){"deployment"});
    gw_error_set(err, 429, GW_ERR_RATE_LIMIT, "rate limit reached for deployment '%s': %lld %s per minute; retry after %lld ms",
                 dep->label, (long long)(d.which_tokens ? rl[d.which].tpm : rl[d.which].rpm),
                 d.which_tokens ? "tokens" : "requests", (long long)d.retry_after_ms);
    snprintf(err->code, sizeof(err->code), "rate_limit_exceeded");
    err->retry_after_ms = d.retry_after_ms;
    return false;
}

void govern_headers(const struct exchange *ex, struct buf *h)
{
    const struct govern_state *g = ex->gov;
    if (g && g->have_rl)
        rl_headers(h, &g->rl, ex->front == FRONT_ANTHROPIC_MESSAGES, (int64_t)(time_wall_us() / 1000));
}

void govern_fill_usage(struct exchange *ex)
{
    if (ex->usage.known)
        return;
    const struct govern_state *g = ex->gov;
    if (ex->cut_at_cap && g) {
        /* ended by the gateway at its reservation: charged exactly what was reserved */
        ex->usage.input = g->input_est;
        ex->usage.output = g->max_out;
        ex->incomplete = true;
        return;
    }
    bool cut = ex->status != 200;
    bool governed = g && g->max_out > 0; /* a budget holds a reservation for it */
    /* A complete answer with no (or an implausible) usage stays "not reported" (issue 15) unless a budget
     * governs it: a budget must not be drained for free by an upstream that reports nothing. */
    if (!cut && !governed)
        return;
    int64_t in = g && g->input_est ? g->input_est : ((int64_t)ex->rq.body.n + 3) / 4;
    if (ex->relayed_chars > 0 || ex->relayed_events > 0) {
        /* A stream: what was relayed was produced (and billed by the provider). Translated streams count
         * characters (4 a token, rounded up) and content deltas; a stream relayed as received (same wire format
         * both sides) is not scanned, and counts one token per content event it relayed (OpenAI chunks,
         * Anthropic content_block_delta, Responses *.delta; exchange.c content_event): providers send at least
         * one token per content event. The larger of the counts. */
        int64_t by_chars = (ex->relayed_chars + 3) / 4;
        ex->usage.input = in;
        ex->usage.output = by_chars > ex->content_events ? by_chars : ex->content_events;
        if (cut)
            ex->incomplete = true;
    } else if (!cut) {
        /* a complete governed answer without usage: the worst case that was reserved */
        ex->usage.input = in;
        ex->usage.output = g->max_out;
    }
}

void govern_free(struct exchange *ex)
{
    struct govern_state *g = ex->gov;
    if (g == NULL)
        return;
    if (g->bh.n) /* never settled (an exchange freed without an end): release what it held */
        budget_settle(B, &g->bh, &(struct price_tokens){0}, NULL, (int64_t)(time_wall_us() / 1000000));
    if (g->rh.n)
        rl_settle(R, &g->rh, 0);
    if (g->dh.n)
        rl_settle(R, &g->dh, 0);
    govern_lease_settle(&g->lb, NULL, NULL);
    govern_lease_settle(&g->lr, NULL, NULL);
    xfree(g->body);
    xfree(g);
    ex->gov = NULL;
}

/* Every budget that governs the caller of ex: the key's own (keys create --budget-*), then the configured ones that
 * match its key id, user, team or workflow ("*" budgets by the caller's name). */
typedef void budget_visit_fn(const struct budget_limit *l, void *ud);
static void each_budget(const struct exchange *ex, const struct who *w, budget_visit_fn *fn, void *ud)
{
    const struct config *cfg = ex->rq.cfg;
    const struct key_record *key = ex->rq.who ? ex->rq.who->key : NULL;
    if (key && (key->budget_usd > 0 || key->budget_tokens > 0)) {
        struct budget_limit l = {.scope = BUDGET_KEY,
                                 .name = key->id,
                                 .window = (enum budget_window)key->budget_window,
                                 .usd_nusd = (int64_t)(key->budget_usd * 1e9 + 0.5),
                                 .tokens = key->budget_tokens};
        fn(&l, ud);
    }
    const struct config_budget *cb = cfg->budgets.items;
    for (size_t i = 0; i < cfg->budgets.n; i++) {
        const char *name = who_name(w, cb[i].scope);
        if (name[0] == '\0' || (strcmp(cb[i].name, "*") != 0 && strcmp(cb[i].name, name) != 0))
            continue;
        struct budget_limit l = {.scope = cb[i].scope,
                                 .name = name,
                                 .window = cb[i].window,
                                 .usd_nusd = (int64_t)(cb[i].usd * 1e9 + 0.5),
                                 .tokens = cb[i].tokens};
        fn(&l, ud);
    }
}

/* The share of l used in its current window: spent (+ reserved when with_reserved) over the limit, USD when it
 * has one, else tokens; -1 when it has no limit. */
static double budget_used(const struct budget_limit *l, int64_t now, bool with_reserved)
{
    struct budget_state st;
    budget_get(B, l->scope, l->name, l->window, now, &st);
    if (l->usd_nusd > 0)
        return (double)(st.spent_nusd + (with_reserved ? st.reserved_nusd : 0)) / (double)l->usd_nusd;
    if (l->tokens > 0)
        return (double)(st.spent_tokens + (with_reserved ? st.reserved_tokens : 0)) / (double)l->tokens;
    return -1;
}

struct remaining_ctx {
    enum budget_scope scope;
    double least;
    int64_t now;
};

static void remaining_visit(const struct budget_limit *l, void *ud)
{
    struct remaining_ctx *c = ud;
    if (l->scope != c->scope)
        return;
    double used = budget_used(l, c->now, true);
    double left = used < 0 ? 1.0 : used > 1 ? 0.0 : 1.0 - used;
    if (left < c->least)
        c->least = left;
}

double govern_budget_remaining(const struct exchange *ex, bool team)
{
    struct who w;
    who_of(ex, &w);
    struct remaining_ctx c = {team ? BUDGET_TEAM : BUDGET_KEY, 1.0, (int64_t)(time_wall_us() / 1000000)};
    if (B)
        each_budget(ex, &w, remaining_visit, &c);
    return c.least;
}

/* ---- settle ---- */

/* Spend alerts (policy/alerts.h): the use of every budget that governs this caller, after its settle. */
struct alert_ctx {
    const struct config *cfg;
    int64_t now;
};

static void alert_visit(const struct budget_limit *l, void *ud)
{
    struct alert_ctx *c = ud;
    double used = budget_used(l, c->now, false);
    if (used < 0)
        return;
    bool usd = l->usd_nusd > 0;
    alerts_budget_use(c->cfg, budget_scope_name(l->scope), l->name, budget_window_name(l->window),
                      budget_window_start(l->window, c->now), used,
                      usd ? (double)l->usd_nusd / 1e9 : (double)l->tokens, usd ? "usd" : "tokens");
}

static void alert_budgets(const struct exchange *ex, const struct who *w, int64_t now_s)
{
    if (ex->rq.cfg->alerts.thresholds.n == 0 || B == NULL)
        return;
    struct alert_ctx c = {ex->rq.cfg, now_s};
    each_budget(ex, w, alert_visit, &c);
}

static void on_settle(const struct exchange *ex, const struct ex_outcome *o)
{
    struct govern_state *g = ex->gov;
    const struct deployment *dep = o->dep;
    struct price_tokens used = {ex->usage.input, ex->usage.cached_input, ex->usage.cache_write, ex->usage.output,
                                ex->usage.reasoning};
    uint64_t wall_us = time_wall_us(); /* once: a clock read costs ~200 ns on a VM's clock source */
    int64_t now_s = (int64_t)(wall_us / 1000000);
    if (g && g->bh.n) /* at the price of the deployment that served it (reserved at the dearest) */
        budget_settle(B, &g->bh, &used, dep ? dep->price : NULL, now_s);
    if (g && g->lb.n) /* cluster mode: the same charge, reported to Redis by the lease thread */
        govern_lease_settle(&g->lb, &used, dep ? dep->price : NULL);
    if (g && g->lr.n)
        govern_lease_settle(&g->lr, &used, NULL);
    if (g && g->rh.n)
        rl_settle(R, &g->rh, used.input + used.output);
    if (g && g->dh.n)
        rl_settle(R, &g->dh, used.input + used.output);
    if (ex->cut_at_cap)
        metrics_inc(&m_cuts, NULL);
    if (ex->model == NULL)
        return; /* not routed: nothing reached a provider */
    struct who w;
    who_of(ex, &w);
    const struct price *p = dep ? dep->price : NULL;
    bool hit = ex->cache_result && strcmp(ex->cache_result, "hit") == 0;
    struct ledger_row r = {
        .ts_ms = (int64_t)(wall_us / 1000),
        .input_tokens = used.input,
        .cached_tokens = used.cached_input,
        .cache_write_tokens = used.cache_write,
        .output_tokens = used.output,
        .reasoning_tokens = used.reasoning,
        .cost_nusd = price_cost_nusd(p, &used),
        .status = o->status,
        /* cut short, or charged an estimate because the provider reported no usage */
        .incomplete = ex->incomplete || (!ex->usage.known && (used.input > 0 || used.output > 0)),
        .priced = p != NULL || hit, /* a cache hit: priced, at $0 */
        .attempts = ex->attempts,
        .latency_us = (int64_t)o->total_us,
        .ttft_us = ex->t_first_token_us ? (int64_t)(ex->t_first_token_us - ex->t_start_us) : 0,
        .saved_nusd = hit ? ex->cache_saved_nusd : 0, /* a hit: $0 charged, and what it saved */
    };
    snp(r.request_id, sizeof(r.request_id), ex->rq.request_id);
    snp(r.key_id, sizeof(r.key_id), w.key_id);
    snp(r.user, sizeof(r.user), w.user);
    snp(r.team, sizeof(r.team), w.team);
    snp(r.workflow, sizeof(r.workflow), w.workflow);
    snp(r.model, sizeof(r.model), ex->rq.model_name);
    snp(r.deployment, sizeof(r.deployment), dep ? dep->label : "");
    snp(r.provider, sizeof(r.provider), dep ? dep->prov->name : hit ? "cache" : "");
    snp(r.price_version, sizeof(r.price_version), ex->reg && ex->reg->prices ? ex->reg->prices->version : "");
    ledger_enqueue(&r);
    alerts_note_spend(r.cost_nusd, r.ts_ms);
    alert_budgets(ex, &w, now_s);
    /* the three series, kept per thread for the last key, team and model (telemetry/metrics.h) */
    static _Thread_local struct metrics_memo memo;
    const char *model = ex->rq.model_name;
    bool ok = metrics_memo_use(&memo, 0, (const char *[]){w.key_id, w.team, model}, 3);
    if (r.cost_nusd > 0)
        metrics_series_add(metrics_memo_series(&memo, ok, 0, &m_spend, (const char *[]){w.key_id, w.team, model}),
                           (double)r.cost_nusd / 1e9);
    if (used.input > 0)
        metrics_series_add(
            metrics_memo_series(&memo, ok, 1, &m_tokens, (const char *[]){w.key_id, w.team, model, "input"}),
            (double)used.input);
    if (used.output > 0)
        metrics_series_add(
            metrics_memo_series(&memo, ok, 2, &m_tokens, (const char *[]){w.key_id, w.team, model, "output"}),
            (double)used.output);
}

static const struct ex_observer govern_observer = {.name = "govern", .on_settle = on_settle};

/* ---- GET /v1/me ---- */

static cJSON *budget_json(const struct budget_limit *l, const char *source, bool soft, int64_t now)
{
    struct budget_state st;
    budget_get(B, l->scope, l->name, l->window, now, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "scope", budget_scope_name(l->scope));
    cJSON_AddStringToObject(o, "name", l->name);
    cJSON_AddStringToObject(o, "window", budget_window_name(l->window));
    cJSON_AddStringToObject(o, "mode", soft ? "soft" : "hard");
    cJSON_AddStringToObject(o, "source", source);
    if (l->usd_nusd > 0) {
        int64_t left = l->usd_nusd - st.spent_nusd - st.reserved_nusd;
        cJSON_AddNumberToObject(o, "limit_usd", (double)l->usd_nusd / 1e9);
        cJSON_AddNumberToObject(o, "remaining_usd", (double)(left > 0 ? left : 0) / 1e9);
    } else {
        cJSON_AddNullToObject(o, "limit_usd");
        cJSON_AddNullToObject(o, "remaining_usd");
    }
    cJSON_AddNumberToObject(o, "spent_usd", (double)st.spent_nusd / 1e9);
    cJSON_AddNumberToObject(o, "reserved_usd", (double)st.reserved_nusd / 1e9);
    if (l->tokens > 0) {
        int64_t left = l->tokens - st.spent_tokens - st.reserved_tokens;
        cJSON_AddNumberToObject(o, "limit_tokens", (double)l->tokens);
        cJSON_AddNumberToObject(o, "remaining_tokens", (double)(left > 0 ? left : 0));
    } else {
        cJSON_AddNullToObject(o, "limit_tokens");
        cJSON_AddNullToObject(o, "remaining_tokens");
    }
    cJSON_AddNumberToObject(o, "spent_tokens", (double)st.spent_tokens);
    cJSON_AddNumberToObject(o, "reserved_tokens", (double)st.reserved_tokens);
    int64_t start = budget_window_start(l->window, now), end = budget_window_end(l->window, now);
    cJSON_AddNumberToObject(o, "window_start", (double)start);
    if (end == INT64_MAX)
        cJSON_AddNullToObject(o, "resets_at");
    else
        cJSON_AddNumberToObject(o, "resets_at", (double)end);
    return o;
}

static cJSON *limit_json(const struct rl_limit *l, const char *source, int64_t now_ms)
{
    struct rl_peek pk;
    rl_peek(R, l, now_ms, &pk);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "scope", rl_scope_name(l->scope));
    cJSON_AddStringToObject(o, "name", l->name);
    cJSON_AddStringToObject(o, "source", source);
    const struct {
        const char *lim, *rem, *reset;
        int64_t l, r, t;
    } k[] = {{"rpm", "remaining_requests", "reset_requests_ms", l->rpm, pk.remaining_requests, pk.reset_requests_ms},
             {"tpm", "remaining_tokens", "reset_tokens_ms", l->tpm, pk.remaining_tokens, pk.reset_tokens_ms}};
    for (int i = 0; i < 2; i++) {
        if (k[i].l > 0) {
            cJSON_AddNumberToObject(o, k[i].lim, (double)k[i].l);
            cJSON_AddNumberToObject(o, k[i].rem, (double)k[i].r);
            cJSON_AddNumberToObject(o, k[i].reset, (double)k[i].t);
        } else {
            cJSON_AddNullToObject(o, k[i].lim);
            cJSON_AddNullToObject(o, k[i].rem);
            cJSON_AddNullToObject(o, k[i].reset);
        }
    }
    return o;
}

cJSON *govern_me_json(const struct config *cfg, const struct principal *p)
{
    int64_t now = (int64_t)(time_wall_us() / 1000000);
    int64_t now_ms = (int64_t)(time_mono_us() / 1000);
    cJSON *o = key_to_json(p->key, now);
    struct who w;
    memset(&w, 0, sizeof(w));
    snp(w.key_id, sizeof(w.key_id), p->key_id);
    snp(w.user, sizeof(w.user), p->user);
    snp(w.team, sizeof(w.team), p->team);
    snp(w.workflow, sizeof(w.workflow), p->workflow);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "workflow");
    cJSON_AddStringToObject(o, "workflow", w.workflow);
    cJSON *budgets = cJSON_AddArrayToObject(o, "budgets");
    const struct key_record *key = p->key;
    if (B && (key->budget_usd > 0 || key->budget_tokens > 0)) {
        struct budget_limit l = {.scope = BUDGET_KEY,
                                 .name = key->id,
                                 .window = (enum budget_window)key->budget_window,
                                 .usd_nusd = (int64_t)(key->budget_usd * 1e9 + 0.5),
                                 .tokens = key->budget_tokens};
        cJSON_AddItemToArray(budgets, budget_json(&l, "key", false, now));
    }
    const struct config_budget *cb = cfg->budgets.items;
    for (size_t i = 0; B && i < cfg->budgets.n; i++) {
        const char *name = who_name(&w, cb[i].scope);
        if (name[0] == '\0' || (strcmp(cb[i].name, "*") != 0 && strcmp(cb[i].name, name) != 0))
            continue;
        struct budget_limit l = {.scope = cb[i].scope,
                                 .name = name,
                                 .window = cb[i].window,
                                 .usd_nusd = (int64_t)(cb[i].usd * 1e9 + 0.5),
                                 .tokens = cb[i].tokens};
        cJSON_AddItemToArray(budgets, budget_json(&l, "config", cb[i].mode == 1, now));
    }
    cJSON *limits = cJSON_AddArrayToObject(o, "rate_limits");
    if (R && (key->rpm > 0 || key->tpm > 0))
        cJSON_AddItemToArray(limits, limit_json(&(struct rl_limit){RL_KEY, key->id, key->rpm, key->tpm}, "key",
                                                now_ms));
    const struct config_ratelimit *cr = cfg->ratelimits.items;
    for (size_t i = 0; R && i < cfg->ratelimits.n; i++) {
        if (cr[i].scope != RL_KEY && cr[i].scope != RL_USER && cr[i].scope != RL_TEAM)
            continue; /* model and deployment limits are not the caller's */
        const char *name = who_name(&w, cr[i].scope == RL_KEY    ? BUDGET_KEY
                                        : cr[i].scope == RL_USER ? BUDGET_USER
                                                                 : BUDGET_TEAM);
        if (name[0] == '\0' || (strcmp(cr[i].name, "*") != 0 && strcmp(cr[i].name, name) != 0))
            continue;
        cJSON_AddItemToArray(limits, limit_json(&(struct rl_limit){(enum rl_scope)cr[i].scope, name, cr[i].rpm,
                                                                   cr[i].tpm},
                                                "config", now_ms));
    }
    return o;
}
