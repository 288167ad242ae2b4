/* ledger_sqlite.c: the spend ledger in SQLite (WAL), DATA_DIR/ledger.db: table ledger_exchanges, and since schema
 * version 1 the side table ledger_evaluations (evaluation scores by request id). */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "store/ledger.h"

/* Spend rows are inserted LEDGER_MANY at a time by one multi-row INSERT: per row, a statement's step, halt and
 * reset cost SQLite about as much as the row itself (callgrind: ~14,500 instructions a row one by one, issue 16
 * item 8). 32 x 24 parameters stays under SQLite's oldest limit of 999. */
#define LEDGER_MANY 32
#define LEDGER_COLS 24

struct ledger_store {
    sqlite3 *db;
    sqlite3_stmt *ins, *ins_many, *ins_eval;
};

static const char *const group_names[LG_COUNT] = {"key", "user", "team", "workflow", "model", "day"};
/* the SQL expression each grouping selects (fixed text, never from input) */
static const char *const group_sql[LG_COUNT] = {"key_id", "user", "team", "workflow", "model",
                                                "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')"};

const char *ledger_group_name(enum ledger_group g)
{
    return g < LG_COUNT ? group_names[g] : "?";
}

int ledger_group_parse(const char *s)
{
    for (int i = 0; s && i < LG_COUNT; i++)
        if (strcmp(s, group_names[i]) == 0)
            return i;
    return -1;
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS ledger_exchanges ("
    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL, key_id TEXT NOT NULL,"
    " user TEXT NOT NULL, team TEXT NOT NULL, workflow TEXT NOT NULL, model TEXT NOT NULL,"
    " deployment TEXT NOT NULL, provider TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
    " cached_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
    " reasoning_tokens INTEGER NOT NULL, cost_nusd INTEGER NOT NULL, cost_usd REAL NOT NULL,"
    " priced INTEGER NOT NULL, price_version TEXT NOT NULL, status INTEGER NOT NULL, incomplete INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, latency_us INTEGER NOT NULL, ttft_us INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ledger_exchanges_ts ON ledger_exchanges(ts_ms);";

/* Version 1: evaluation scores (telemetry/eval.h) in a side table, keyed by the exchange's request id: the score
 * arrives after the exchange's row was written, and an exchange may get several (one per evaluation). A ledger.db
 * from before has user_version 0 and gets the table when it is next opened for writing. */
#define LEDGER_SCHEMA_VERSION 1
static const char migrate_v1[] =
    "CREATE TABLE IF NOT EXISTS ledger_evaluations ("
    " id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, model TEXT NOT NULL,"
    " workflow TEXT NOT NULL, name TEXT NOT NULL, score REAL NOT NULL, label TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ledger_evaluations_request ON ledger_evaluations(request_id);"
    "PRAGMA user_version = 1;";

static const char insert_eval_sql[] =
    "INSERT INTO ledger_evaluations (request_id, ts_ms, model, workflow, name, score, label) VALUES (?,?,?,?,?,?,?)";

static int schema_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Brings the schema to LEDGER_SCHEMA_VERSION in one transaction (0, or -1 with *msg). */
static int migrate(sqlite3 *db, char **msg)
{
    int v = schema_version(db);
    if (v < 0) {
        *msg = sqlite3_mprintf("%s", sqlite3_errmsg(db));
        return -1;
    }
    if (v >= LEDGER_SCHEMA_VERSION)
        return 0;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, msg) != SQLITE_OK)
        return -1;
    if (sqlite3_exec(db, migrate_v1, NULL, NULL, msg) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return sqlite3_exec(db, "COMMIT", NULL, NULL, msg) == SQLITE_OK ? 0 : -1;
}

/* Columns added after the first schema, each by one guarded ALTER TABLE (migrate_columns): a ledger.db written by
 * an older agentd keeps working, its old rows reading NULL (sum() skips them). */
static const char *const added_columns[][2] = {
    /* a response-cache hit's row: cost_nusd 0, and here what the replayed answer cost when it was stored */
    {"saved_nusd", "INTEGER"},
};

static const char insert_sql[] =
    "INSERT INTO ledger_exchanges (ts_ms, request_id, key_id, user, team, workflow, model, deployment, provider,"
    " input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nusd, cost_usd, priced,"
    " price_version, status, incomplete, attempts, latency_us, ttft_us, saved_nusd)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static bool has_column(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('ledger_exchanges') WHERE name = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

static int migrate_columns(sqlite3 *db, char **msg)
{
    for (size_t i = 0; i < sizeof(added_columns) / sizeof(added_columns[0]); i++) {
        if (has_column(db, added_columns[i][0]))
            continue;
        char sql[160];
        snprintf(sql, sizeof(sql), "ALTER TABLE ledger_exchanges ADD COLUMN %s %s", added_columns[i][0],
                 added_columns[i][1]);
        if (sqlite3_exec(db, sql, NULL, NULL, msg) != SQLITE_OK)
            return -1;
    }
    return 0;
}

/* insert_sql with LEDGER_MANY rows of values. */
static int prepare_many(struct ledger_store *s)
{
    static const char row[] = ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    _Static_assert(sizeof(row) - 1 == 2 + 2 * LEDGER_COLS, "one row of values has LEDGER_COLS parameters");
    struct buf sql = BUF_INIT(BUF_UNBOUNDED);
    buf_append(&sql, insert_sql, sizeof(insert_sql) - 1);
    for (int i = 1; i < LEDGER_MANY; i++)
        buf_append(&sql, row, sizeof(row) - 1);
    int rc = sqlite3_prepare_v2(s->db, sql.data, (int)sql.len, &s->ins_many, NULL);
    buf_free(&sql);
    return rc;
}

static void close_store(struct ledger_store *s)
{
    if (s == NULL)
        return;
    sqlite3_finalize(s->ins);
    sqlite3_finalize(s->ins_many);
    sqlite3_finalize(s->ins_eval);
    sqlite3_close(s->db);
    xfree(s);
}

static struct ledger_store *open_store(const char *data_dir, bool readonly, struct buf *err)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/ledger.db", data_dir) >= (int)sizeof(path)) {
        buf_printf(err, "data dir path too long");
        return NULL;
    }
    if (!readonly && mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        buf_printf(err, "cannot create %s: %s", data_dir, strerror(errno));
        return NULL;
    }
    struct ledger_store *s = xcalloc(1, sizeof(*s));
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        buf_printf(err, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        close_store(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, readonly ? 2000 : 100);
    char *msg = NULL;
    if (!readonly && (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &msg) !=
                          SQLITE_OK ||
                      sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK || migrate(s->db, &msg) != 0 || migrate_columns(s->db, &msg) != 0 ||
                      sqlite3_prepare_v2(s->db, insert_sql, -1, &s->ins, NULL) != SQLITE_OK ||
                      prepare_many(s) != SQLITE_OK ||
                      sqlite3_prepare_v2(s->db, insert_eval_sql, -1, &s->ins_eval, NULL) != SQLITE_OK)) {
        buf_printf(err, "%s: %s", path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        close_store(s);
        return NULL;
    }
    return s;
}

/* Binds r's spend columns from parameter k on; returns the next parameter. */
static int bind_spend(sqlite3_stmt *st, int k, const struct ledger_row *r)
{
    sqlite3_bind_int64(st, k++, r->ts_ms);
    sqlite3_bind_text(st, k++, r->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->user, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->team, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->workflow, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->deployment, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, k++, r->provider, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, k++, r->input_tokens);
    sqlite3_bind_int64(st, k++, r->cached_tokens);
    sqlite3_bind_int64(st, k++, r->cache_write_tokens);
    sqlite3_bind_int64(st, k++, r->output_tokens);
    sqlite3_bind_int64(st, k++, r->reasoning_tokens);
    sqlite3_bind_int64(st, k++, r->cost_nusd);
    sqlite3_bind_double(st, k++, (double)r->cost_nusd / 1e9);
    sqlite3_bind_int(st, k++, r->priced);
    sqlite3_bind_text(st, k++, r->price_version, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, k++, r->status);
    sqlite3_bind_int(st, k++, r->incomplete);
    sqlite3_bind_int(st, k++, r->attempts);
    sqlite3_bind_int64(st, k++, r->latency_us);
    sqlite3_bind_int64(st, k++, r->ttft_us);
    if (r->saved_nusd > 0)
        sqlite3_bind_int64(st, k++, r->saved_nusd);
    else
        sqlite3_bind_null(st, k++);
    return k;
}

static int append(struct ledger_store *s, const struct ledger_row *rows, size_t n, struct buf *err)
{
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        buf_printf(err, "%s", sqlite3_errmsg(s->db));
        return -1;
    }
    for (size_t i = 0; i < n;) {
        const struct ledger_row *r = &rows[i];
        sqlite3_stmt *st;
        if (r->evaluation) {
            st = s->ins_eval;
            int k = 1;
            sqlite3_bind_text(st, k++, r->request_id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, k++, r->ts_ms);
            sqlite3_bind_text(st, k++, r->model, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, k++, r->workflow, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, k++, r->eval_name, -1, SQLITE_STATIC);
            sqlite3_bind_double(st, k++, r->eval_score);
            sqlite3_bind_text(st, k++, r->eval_label, -1, SQLITE_STATIC);
            i++;
        } else {
            /* LEDGER_MANY spend rows in a row: one statement; else this one alone (order is kept either way) */
            size_t m = 1;
            while (m < LEDGER_MANY && i + m < n && !rows[i + m].evaluation)
                m++;
            if (m == LEDGER_MANY) {
                st = s->ins_many;
                int k = 1;
                for (size_t j = 0; j < m; j++)
                    k = bind_spend(st, k, &rows[i + j]);
            } else {
                st = s->ins;
                bind_spend(st, 1, r);
                m = 1;
            }
            i += m;
        }
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            buf_printf(err, "%s", sqlite3_errmsg(s->db));
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        buf_printf(err, "%s", sqlite3_errmsg(s->db));
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int report(struct ledger_store *s, enum ledger_group g, int64_t since_ms, struct ledger_sum **out, size_t *n,
                  struct buf *err)
{
    *out = NULL;
    *n = 0;
    if (g >= LG_COUNT)
        return -1;
    char sql[512];
    /* a ledger.db from before saved_nusd, opened read-only (never migrated): nothing saved */
    snprintf(sql, sizeof(sql),
             "SELECT %s, count(*), sum(input_tokens), sum(output_tokens), sum(cost_nusd), sum(incomplete), %s"
             " FROM ledger_exchanges WHERE ts_ms >= ? GROUP BY 1 ORDER BY 5 DESC, 1",
             group_sql[g], has_column(s->db, "saved_nusd") ? "coalesce(sum(saved_nusd), 0)" : "0");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        /* a data dir with no ledger yet (a read-only open) has nothing to report */
        if (strstr(sqlite3_errmsg(s->db), "no such table"))
            return 0;
        buf_printf(err, "%s", sqlite3_errmsg(s->db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, since_ms);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        struct ledger_sum *r = &(*out)[(*n)++];
        memset(r, 0, sizeof(*r));
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(r->group, sizeof(r->group), "%s", t ? (const char *)t : "");
        r->requests = sqlite3_column_int64(st, 1);
        r->input_tokens = sqlite3_column_int64(st, 2);
        r->output_tokens = sqlite3_column_int64(st, 3);
        r->cost_nusd = sqlite3_column_int64(st, 4);
        r->incomplete = sqlite3_column_int64(st, 5);
        r->saved_nusd = sqlite3_column_int64(st, 6);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        buf_printf(err, "%s", sqlite3_errmsg(s->db));
        xfree(*out);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

static int evaluations(struct ledger_store *s, const char *request_id, struct ledger_eval **out, size_t *n,
                       struct buf *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    const char *sql = request_id ? "SELECT request_id, name, label, score, ts_ms FROM ledger_evaluations"
                                   " WHERE request_id = ? ORDER BY id"
                                 : "SELECT request_id, name, label, score, ts_ms FROM ledger_evaluations ORDER BY id";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        if (strstr(sqlite3_errmsg(s->db), "no such table")) /* an old ledger.db opened read-only */
            return 0;
        buf_printf(err, "%s", sqlite3_errmsg(s->db));
        return -1;
    }
    if (request_id)
        sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        struct ledger_eval *e = &(*out)[(*n)++];
        const unsigned char *t;
        t = sqlite3_column_text(st, 0);
        snprintf(e->request_id, sizeof(e->request_id), "%s", t ? (const char *)t : "");
        t = sqlite3_column_text(st, 1);
        snprintf(e->name, sizeof(e->name), "%s", t ? (const char *)t : "");
        t = sqlite3_column_text(st, 2);
        snprintf(e->label, sizeof(e->label), "%s", t ? (const char *)t : "");
        e->score = sqlite3_column_double(st, 3);
        e->ts_ms = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        buf_printf(err, "%s", sqlite3_errmsg(s->db));
        xfree(*out);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

const struct ledger_store_ops ledger_sqlite_ops = {
    .name = "sqlite",
    .open = open_store,
    .append = append,
    .report = report,
    .evaluations = evaluations,
    .close = close_store,
};
