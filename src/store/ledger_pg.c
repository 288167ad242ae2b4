/* ledger_pg.c: the spend ledger in PostgreSQL (ledger.h; schema in db_pg.c): ledger_exchanges and
 * ledger_evaluations, the SQLite backend's columns. A batch is one transaction; when the server is away the append
 * fails, and the writer (policy/ledger.c) keeps the rows, bounded by ledger.queue_max, and retries. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "store/db_pg.h"
#include "store/ledger.h"

struct ledger_store {
    PGconn *c;
};

static const char *const group_sql[LG_COUNT] = {
    "key_id", "\"user\"", "team", "workflow", "model",
    "to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"};

static struct ledger_store *pg_open(const char *data_dir, bool readonly, struct buf *err)
{
    (void)data_dir;
    (void)readonly;
    (void)err;
    return xcalloc(1, sizeof(struct ledger_store)); /* connects on the first operation */
}

static void pg_close(struct ledger_store *s)
{
    if (s == NULL)
        return;
    db_pg_close(&s->c);
    xfree(s);
}

static const char insert_sql[] =
    "INSERT INTO ledger_exchanges (ts_ms, request_id, key_id, \"user\", team, workflow, model, deployment, provider,"
    " input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nusd, cost_usd, priced,"
    " price_version, status, incomplete, attempts, latency_us, ttft_us, saved_nusd)"
    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24)";
static const char insert_eval_sql[] =
    "INSERT INTO ledger_evaluations (request_id, ts_ms, model, workflow, name, score, label)"
    " VALUES ($1,$2,$3,$4,$5,$6,$7)";

static int insert_row(struct ledger_store *s, const struct ledger_row *r, struct buf *err)
{
    char n[16][32];
    PGresult *res;
    if (r->evaluation) {
        snprintf(n[0], 32, "%" PRId64, r->ts_ms);
        snprintf(n[1], 32, "%.17g", r->eval_score);
        const char *v[7] = {r->request_id, n[0], r->model, r->workflow, r->eval_name, n[1], r->eval_label};
        res = PQexecParams(s->c, insert_eval_sql, 7, NULL, v, NULL, NULL, 0);
    } else {
        int64_t nums[] = {r->ts_ms,         r->input_tokens,  r->cached_tokens, r->cache_write_tokens,
                          r->output_tokens, r->reasoning_tokens, r->cost_nusd,  r->status,
                          r->attempts,      r->latency_us,    r->ttft_us,       r->saved_nusd};
        for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
            snprintf(n[i], 32, "%" PRId64, nums[i]);
        snprintf(n[12], 32, "%.17g", (double)r->cost_nusd / 1e9);
        const char *v[24] = {n[0],         r->request_id, r->key_id,    r->user,     r->team,
                             r->workflow,  r->model,      r->deployment, r->provider, n[1],
                             n[2],         n[3],          n[4],         n[5],        n[6],
                             n[12],        r->priced ? "true" : "false", r->price_version, n[7],
                             r->incomplete ? "true" : "false", n[8], n[9], n[10],
                             r->saved_nusd > 0 ? n[11] : NULL};
        res = PQexecParams(s->c, insert_sql, 24, NULL, v, NULL, NULL, 0);
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return db_pg_fail(&s->c, res, "ledger append", err);
    PQclear(res);
    return 0;
}

static int pg_append(struct ledger_store *s, const struct ledger_row *rows, size_t n, struct buf *err)
{
    if (db_pg_conn(&s->c, err) != 0 || db_pg_cmd(&s->c, "BEGIN", err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (insert_row(s, &rows[i], err) != 0) {
            if (s->c)
                PQclear(PQexec(s->c, "ROLLBACK"));
            return -1;
        }
    }
    if (db_pg_cmd(&s->c, "COMMIT", err) != 0)
        return -1;
    db_pg_ok();
    return 0;
}

static int pg_report(struct ledger_store *s, enum ledger_group g, int64_t since_ms, struct ledger_sum **out,
                     size_t *n, struct buf *err)
{
    *out = NULL;
    *n = 0;
    if (g >= LG_COUNT)
        return -1;
    if (db_pg_conn(&s->c, err) != 0)
        return -1;
    char sql[600];
    snprintf(sql, sizeof(sql),
             "SELECT %s, count(*), sum(input_tokens), sum(output_tokens), sum(cost_nusd),"
             " sum(CASE WHEN incomplete THEN 1 ELSE 0 END), coalesce(sum(saved_nusd), 0)"
             " FROM ledger_exchanges WHERE ts_ms >= $1 GROUP BY 1 ORDER BY 5 DESC, 1",
             group_sql[g]);
    char since[32];
    snprintf(since, sizeof(since), "%" PRId64, since_ms);
    const char *v[1] = {since};
    PGresult *res = PQexecParams(s->c, sql, 1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return db_pg_fail(&s->c, res, "ledger report", err);
    int rows = PQntuples(res);
    *out = xcalloc((size_t)rows + 1, sizeof(**out));
    for (int i = 0; i < rows; i++) {
        struct ledger_sum *r = &(*out)[i];
        snprintf(r->group, sizeof(r->group), "%s", db_pg_text(res, i, 0));
        r->requests = db_pg_i64(res, i, 1);
        r->input_tokens = db_pg_i64(res, i, 2);
        r->output_tokens = db_pg_i64(res, i, 3);
        r->cost_nusd = db_pg_i64(res, i, 4);
        r->incomplete = db_pg_i64(res, i, 5);
        r->saved_nusd = db_pg_i64(res, i, 6);
    }
    *n = (size_t)rows;
    PQclear(res);
    db_pg_ok();
    return 0;
}

static int pg_evaluations(struct ledger_store *s, const char *request_id, struct ledger_eval **out, size_t *n,
                          struct buf *err)
{
    *out = NULL;
    *n = 0;
    if (db_pg_conn(&s->c, err) != 0)
        return -1;
    const char *v[1] = {request_id};
    PGresult *res = PQexecParams(s->c,
                                 request_id ? "SELECT request_id, name, label, score, ts_ms FROM ledger_evaluations"
                                              " WHERE request_id = $1 ORDER BY id"
                                            : "SELECT request_id, name, label, score, ts_ms FROM ledger_evaluations"
                                              " ORDER BY id",
                                 request_id ? 1 : 0, NULL, request_id ? v : NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return db_pg_fail(&s->c, res, "ledger evaluations", err);
    int rows = PQntuples(res);
    *out = xcalloc((size_t)rows + 1, sizeof(**out));
    for (int i = 0; i < rows; i++) {
        struct ledger_eval *e = &(*out)[i];
        snprintf(e->request_id, sizeof(e->request_id), "%s", db_pg_text(res, i, 0));
        snprintf(e->name, sizeof(e->name), "%s", db_pg_text(res, i, 1));
        snprintf(e->label, sizeof(e->label), "%s", db_pg_text(res, i, 2));
        e->score = strtod(db_pg_text(res, i, 3), NULL);
        e->ts_ms = db_pg_i64(res, i, 4);
    }
    *n = (size_t)rows;
    PQclear(res);
    db_pg_ok();
    return 0;
}

const struct ledger_store_ops ledger_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .append = pg_append,
    .report = pg_report,
    .evaluations = pg_evaluations,
    .close = pg_close,
};
