#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "policy/budget.h"
#include "policy/ledger.h"
#include "test.h"

#define NOW 1796385600LL /* 2026-12-04 12:00:00 UTC */

static struct ledger_row row(const char *key, const char *team, const char *model, int64_t ts_s, int64_t in,
                             int64_t out, int64_t nusd, bool incomplete)
{
    struct ledger_row r = {.ts_ms = ts_s * 1000, .input_tokens = in, .output_tokens = out, .cost_nusd = nusd,
                           .incomplete = incomplete, .status = 200, .attempts = 1, .priced = true};
    snprintf(r.request_id, sizeof(r.request_id), "req-%lld-%lld", (long long)ts_s, (long long)in);
    snprintf(r.key_id, sizeof(r.key_id), "%s", key);
    snprintf(r.team, sizeof(r.team), "%s", team);
    snprintf(r.model, sizeof(r.model), "%s", model);
    snprintf(r.price_version, sizeof(r.price_version), "v1");
    return r;
}

static char dir[64];

static void test_write_report_rebuild(void)
{
    struct buf err = BUF_INIT(1024);
    ok(ledger_start(&(struct ledger_options){.data_dir = dir, .batch_ms = 20}, &err) == 0);
    struct ledger_row rows[] = {
        row("k1", "t1", "gpt-4o", NOW - 60, 100, 10, 1000, false),
        row("k1", "t1", "gpt-4o", NOW - 30, 200, 20, 2000, true),
        row("k2", "t1", "mock", NOW - 2 * 86400, 300, 30, 4000, false), /* earlier this week, not today */
        row("k2", "t2", "mock", NOW - 40 * 86400, 1, 1, 8000, false),   /* last month */
    };
    for (size_t i = 0; i < 4; i++)
        ok(ledger_enqueue(&rows[i]));
    ledger_stop(); /* flushes */
    struct ledger_stats st;
    ledger_get_stats(&st);
    ok(st.written >= 4);
    is_int(st.backlog, 0);
    ok(!ledger_enqueue(&rows[0])); /* stopped */

    struct ledger_store *s = ledger_sqlite_ops.open(dir, true, &err);
    ok(s != NULL);
    struct ledger_sum *sum = NULL;
    size_t n = 0;
    ok(ledger_sqlite_ops.report(s, LG_KEY, (NOW - 7 * 86400) * 1000, &sum, &n, &err) == 0);
    is_int(n, 2);
    is_str(sum[0].group, "k2"); /* largest cost first */
    is_int(sum[0].cost_nusd, 4000);
    is_str(sum[1].group, "k1");
    is_int(sum[1].requests, 2);
    is_int(sum[1].input_tokens, 300);
    is_int(sum[1].output_tokens, 30);
    is_int(sum[1].incomplete, 1);
    xfree(sum);
    ok(ledger_sqlite_ops.report(s, LG_DAY, 0, &sum, &n, &err) == 0);
    is_int(n, 3);
    ok(strcmp(sum[0].group, "2026-10-25") == 0);
    xfree(sum);
    ledger_sqlite_ops.close(s);

    struct budget *b = budget_new();
    ok(ledger_rebuild_budgets(dir, NULL, b, NOW, &err) == 0);
    struct budget_state bs;
    budget_get(b, BUDGET_KEY, "k1", BUDGET_DAY, NOW, &bs);
    is_int(bs.spent_nusd, 3000);
    is_int(bs.spent_tokens, 330);
    budget_get(b, BUDGET_KEY, "k2", BUDGET_DAY, NOW, &bs);
    is_int(bs.spent_nusd, 0);
    budget_get(b, BUDGET_KEY, "k2", BUDGET_WEEK, NOW, &bs);
    is_int(bs.spent_nusd, 4000);
    budget_get(b, BUDGET_KEY, "k2", BUDGET_TOTAL, NOW, &bs);
    is_int(bs.spent_nusd, 12000);
    budget_get(b, BUDGET_TEAM, "t1", BUDGET_MONTH, NOW, &bs);
    is_int(bs.spent_nusd, 7000);
    budget_free(b);
    buf_free(&err);
}

/* A store that refuses its first writes: the batch is kept and retried, nothing lost. */
static _Atomic int refusals;
static _Atomic long appended;
static struct ledger_store *fake_open(const char *d, bool ro, struct buf *e)
{
    (void)d, (void)ro, (void)e;
    return (struct ledger_store *)xcalloc(1, 8);
}
static int fake_append(struct ledger_store *s, const struct ledger_row *r, size_t n, struct buf *e)
{
    (void)s, (void)r;
    if (atomic_fetch_sub(&refusals, 1) > 0) {
        buf_printf(e, "database is locked");
        return -1;
    }
    atomic_fetch_add(&appended, (long)n);
    return 0;
}
static void fake_close(struct ledger_store *s)
{
    xfree(s);
}
static const struct ledger_store_ops fake_ops = {.name = "fake", .open = fake_open, .append = fake_append,
                                                 .close = fake_close};

static void test_retry_and_full_queue(void)
{
    struct buf err = BUF_INIT(1024);
    atomic_store(&refusals, 3);
    ok(ledger_start(&(struct ledger_options){.data_dir = dir, .ops = &fake_ops, .batch_ms = 5, .queue_max = 10},
                   &err) == 0);
    struct ledger_stats st0;
    ledger_get_stats(&st0);
    struct ledger_row r = row("k", "t", "m", NOW, 1, 1, 1, false);
    int accepted = 0;
    for (int i = 0; i < 40; i++)
        accepted += ledger_enqueue(&r);
    ok(accepted >= 10 && accepted < 40); /* the queue holds 10; the writer may take some meanwhile */
    ledger_stop();
    struct ledger_stats st;
    ledger_get_stats(&st);
    is_int(atomic_load(&appended), accepted); /* every accepted row was written despite the refusals */
    is_int(st.dropped - st0.dropped, 40 - accepted);
    ok(st.failures - st0.failures >= 3);
    ok(!st.failing);
    buf_free(&err);
}

/* The queue keeps rows packed (policy/ledger.c): what the store is handed is field for field what was queued,
 * strings at their longest, empty, and an evaluation row, in order. */
static struct ledger_row got[8];
static _Atomic int ngot;
static int capture_append(struct ledger_store *s, const struct ledger_row *r, size_t n, struct buf *e)
{
    (void)s, (void)e;
    for (size_t i = 0; i < n; i++) {
        int k = atomic_fetch_add(&ngot, 1);
        if (k < 8)
            got[k] = r[i];
    }
    return 0;
}
static const struct ledger_store_ops capture_ops = {.name = "capture", .open = fake_open, .append = capture_append,
                                                    .close = fake_close};

static void fill(char *s, size_t cap, char c)
{
    memset(s, c, cap - 1);
    s[cap - 1] = '\0';
}

static void same_row(const struct ledger_row *a, const struct ledger_row *b)
{
    is_str(a->request_id, b->request_id);
    is_str(a->key_id, b->key_id);
    is_str(a->user, b->user);
    is_str(a->team, b->team);
    is_str(a->workflow, b->workflow);
    is_str(a->model, b->model);
    is_str(a->deployment, b->deployment);
    is_str(a->provider, b->provider);
    is_str(a->price_version, b->price_version);
    is_str(a->eval_name, b->eval_name);
    is_str(a->eval_label, b->eval_label);
    is_int(a->ts_ms, b->ts_ms);
    is_int(a->input_tokens, b->input_tokens);
    is_int(a->cached_tokens, b->cached_tokens);
    is_int(a->cache_write_tokens, b->cache_write_tokens);
    is_int(a->output_tokens, b->output_tokens);
    is_int(a->reasoning_tokens, b->reasoning_tokens);
    is_int(a->cost_nusd, b->cost_nusd);
    is_int(a->status, b->status);
    is_int(a->incomplete, b->incomplete);
    is_int(a->priced, b->priced);
    is_int(a->attempts, b->attempts);
    is_int(a->latency_us, b->latency_us);
    is_int(a->ttft_us, b->ttft_us);
    is_int(a->saved_nusd, b->saved_nusd);
    is_int(a->evaluation, b->evaluation);
    ok(a->eval_score == b->eval_score);
}

static void test_queue_keeps_every_field(void)
{
    struct ledger_row full = {.ts_ms = 1796385600123, .input_tokens = 1, .cached_tokens = 2,
                              .cache_write_tokens = 3, .output_tokens = 4, .reasoning_tokens = 5,
                              .cost_nusd = INT64_MAX, .status = 499, .incomplete = true, .priced = true,
                              .attempts = 7, .latency_us = 8, .ttft_us = 9, .saved_nusd = 10};
    fill(full.request_id, sizeof(full.request_id), 'r');
    fill(full.key_id, sizeof(full.key_id), 'k');
    fill(full.user, sizeof(full.user), 'u');
    fill(full.team, sizeof(full.team), 't');
    fill(full.workflow, sizeof(full.workflow), 'w');
    fill(full.model, sizeof(full.model), 'm');
    fill(full.deployment, sizeof(full.deployment), 'd');
    fill(full.provider, sizeof(full.provider), 'p');
    fill(full.price_version, sizeof(full.price_version), 'v');
    struct ledger_row empty = {.ts_ms = -1, .status = 200, .latency_us = -5};
    struct ledger_row eval = {.ts_ms = 42, .evaluation = true, .eval_score = 0.125};
    snprintf(eval.request_id, sizeof(eval.request_id), "req-e");
    fill(eval.eval_name, sizeof(eval.eval_name), 'n');
    fill(eval.eval_label, sizeof(eval.eval_label), 'l');
    struct ledger_row odd = full; /* an odd total length: the next record starts aligned */
    snprintf(odd.user, sizeof(odd.user), "abc");
    snprintf(odd.team, sizeof(odd.team), "%s", "");
    const struct ledger_row *in[] = {&full, &empty, &eval, &odd, &full};
    struct buf err = BUF_INIT(1024);
    atomic_store(&ngot, 0);
    ok(ledger_start(&(struct ledger_options){.data_dir = dir, .ops = &capture_ops, .batch_ms = 10000}, &err) == 0);
    for (size_t i = 0; i < 5; i++)
        ok(ledger_enqueue(in[i]));
    ledger_stop(); /* one batch, written at the stop */
    is_int(atomic_load(&ngot), 5);
    for (size_t i = 0; i < 5; i++)
        same_row(&got[i], in[i]);
    buf_free(&err);
}

/* Spend rows go to SQLite 32 to a statement (store/ledger_sqlite.c): runs longer and shorter than that, broken by
 * an evaluation row, all arrive once, in order, every column in place. */
static void test_many_rows_in_order(void)
{
    char sub[96], path[128];
    snprintf(sub, sizeof(sub), "%s/many", dir);
    ok(mkdir(sub, 0700) == 0);
    struct buf err = BUF_INIT(1024);
    ok(ledger_start(&(struct ledger_options){.data_dir = sub, .batch_ms = 10000}, &err) == 0);
    int nspend = 0;
    for (int i = 0; i < 110; i++) {
        if (i == 33 || i == 34 || i == 100) { /* runs of 33, 65 and 9 spend rows */
            struct ledger_row e = {.ts_ms = NOW * 1000, .evaluation = true, .eval_score = i};
            snprintf(e.request_id, sizeof(e.request_id), "req-%d", nspend - 1);
            snprintf(e.eval_name, sizeof(e.eval_name), "judge-%d", i);
            ok(ledger_enqueue(&e));
            continue;
        }
        struct ledger_row r = row("k", "t", "m", NOW, 1000 + nspend, nspend, 7 * nspend, nspend % 2);
        snprintf(r.request_id, sizeof(r.request_id), "req-%d", nspend);
        r.attempts = nspend % 3 + 1;
        r.saved_nusd = nspend % 5 == 0 ? nspend : 0;
        r.ttft_us = nspend;
        ok(ledger_enqueue(&r));
        nspend++;
    }
    ledger_stop(); /* one batch */
    snprintf(path, sizeof(path), "%s/ledger.db", sub);
    sqlite3 *db = NULL;
    ok(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ok(sqlite3_prepare_v2(db,
                          "SELECT request_id, input_tokens, output_tokens, cost_nusd, incomplete, attempts,"
                          " saved_nusd, ttft_us, key_id, team, model FROM ledger_exchanges ORDER BY id",
                          -1, &st, NULL) == SQLITE_OK);
    int i = 0, bad = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char want[32];
        snprintf(want, sizeof(want), "req-%d", i);
        bool good = strcmp((const char *)sqlite3_column_text(st, 0), want) == 0 &&
                    sqlite3_column_int64(st, 1) == 1000 + i && sqlite3_column_int64(st, 2) == i &&
                    sqlite3_column_int64(st, 3) == 7 * i && sqlite3_column_int(st, 4) == i % 2 &&
                    sqlite3_column_int(st, 5) == i % 3 + 1 &&
                    (i % 5 == 0 ? sqlite3_column_int64(st, 6) == i : sqlite3_column_type(st, 6) == SQLITE_NULL) &&
                    sqlite3_column_int64(st, 7) == i && strcmp((const char *)sqlite3_column_text(st, 8), "k") == 0 &&
                    strcmp((const char *)sqlite3_column_text(st, 9), "t") == 0 &&
                    strcmp((const char *)sqlite3_column_text(st, 10), "m") == 0;
        if (!good && bad++ == 0)
            printf("# row %d differs\n", i);
        i++;
    }
    sqlite3_finalize(st);
    is_int(i, 107);
    is_int(bad, 0);
    ok(sqlite3_prepare_v2(db, "SELECT request_id, name FROM ledger_evaluations ORDER BY id", -1, &st, NULL) ==
       SQLITE_OK);
    const char *evs[][2] = {{"req-32", "judge-33"}, {"req-32", "judge-34"}, {"req-97", "judge-100"}};
    int ne = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ne < 3) {
            is_str((const char *)sqlite3_column_text(st, 0), evs[ne][0]);
            is_str((const char *)sqlite3_column_text(st, 1), evs[ne][1]);
        }
        ne++;
    }
    is_int(ne, 3);
    sqlite3_finalize(st);
    sqlite3_close(db);
    buf_free(&err);
}

/* A ledger.db written before evaluations existed (schema version 0, no ledger_evaluations): it opens, keeps its
 * rows, is migrated in place, and takes evaluation rows keyed by an old row's request id. */
static void test_old_schema_and_evaluations(void)
{
    char old[96], path[128];
    snprintf(old, sizeof(old), "%s/old", dir);
    ok(mkdir(old, 0700) == 0);
    snprintf(path, sizeof(path), "%s/ledger.db", old);
    sqlite3 *db = NULL;
    ok(sqlite3_open(path, &db) == SQLITE_OK);
    ok(sqlite3_exec(db,
                    "CREATE TABLE ledger_exchanges ("
                    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL, key_id TEXT NOT NULL,"
                    " user TEXT NOT NULL, team TEXT NOT NULL, workflow TEXT NOT NULL, model TEXT NOT NULL,"
                    " deployment TEXT NOT NULL, provider TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
                    " cached_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
                    " reasoning_tokens INTEGER NOT NULL, cost_nusd INTEGER NOT NULL, cost_usd REAL NOT NULL,"
                    " priced INTEGER NOT NULL, price_version TEXT NOT NULL, status INTEGER NOT NULL,"
                    " incomplete INTEGER NOT NULL, attempts INTEGER NOT NULL, latency_us INTEGER NOT NULL,"
                    " ttft_us INTEGER NOT NULL);"
                    "INSERT INTO ledger_exchanges VALUES (1, 1796385000000, 'req-old', 'k9', '', 't9', 'wf', 'gpt-4o',"
                    " 'd', 'openai', 10, 0, 0, 5, 0, 7000, 0.000007, 1, 'v1', 200, 0, 1, 100, 0);",
                    NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    struct buf err = BUF_INIT(1024);
    /* read-only, before any migration: the report works and there are no evaluations (not an error) */
    struct ledger_store *s = ledger_sqlite_ops.open(old, true, &err);
    ok(s != NULL);
    struct ledger_eval *ev = NULL;
    size_t n = 99;
    ok(ledger_sqlite_ops.evaluations(s, NULL, &ev, &n, &err) == 0);
    is_int(n, 0);
    ledger_sqlite_ops.close(s);

    ok(ledger_start(&(struct ledger_options){.data_dir = old, .batch_ms = 20}, &err) == 0);
    struct ledger_row e = {.ts_ms = NOW * 1000, .evaluation = true, .eval_score = 0.75};
    snprintf(e.request_id, sizeof(e.request_id), "req-old");
    snprintf(e.model, sizeof(e.model), "gpt-4o");
    snprintf(e.eval_name, sizeof(e.eval_name), "judge");
    snprintf(e.eval_label, sizeof(e.eval_label), "pass");
    ok(ledger_enqueue(&e));
    struct ledger_row e2 = e;
    snprintf(e2.eval_name, sizeof(e2.eval_name), "relevance");
    e2.eval_score = 0.5;
    ok(ledger_enqueue(&e2));
    struct ledger_row r = row("k9", "t9", "gpt-4o", NOW, 1, 1, 1000, false);
    ok(ledger_enqueue(&r));
    ledger_stop();

    s = ledger_sqlite_ops.open(old, true, &err);
    ok(s != NULL);
    struct ledger_sum *sum = NULL;
    ok(ledger_sqlite_ops.report(s, LG_KEY, 0, &sum, &n, &err) == 0);
    is_int(n, 1); /* the old row and the new one; evaluation rows are not exchanges */
    is_int(sum[0].requests, 2);
    is_int(sum[0].cost_nusd, 8000);
    xfree(sum);
    ok(ledger_sqlite_ops.evaluations(s, "req-old", &ev, &n, &err) == 0);
    is_int(n, 2);
    is_str(ev[0].name, "judge");
    is_str(ev[0].label, "pass");
    ok(ev[0].score == 0.75);
    is_str(ev[1].name, "relevance");
    xfree(ev);
    ok(ledger_sqlite_ops.evaluations(s, "req-other", &ev, &n, &err) == 0);
    is_int(n, 0);
    xfree(ev);
    ledger_sqlite_ops.close(s);

    ok(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ok(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK);
    ok(sqlite3_step(st) == SQLITE_ROW);
    is_int(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    buf_free(&err);
}

/* A ledger.db written before saved_nusd existed (the first schema, verbatim): read-only it reports nothing saved;
 * opened for writing it gains the column (old rows NULL), takes a cache hit's row and sums the saving; a second
 * open finds the column and changes nothing. */
static void test_old_schema_and_saving(void)
{
    char odir[96];
    snprintf(odir, sizeof(odir), "%s/old-saving", dir);
    ok(mkdir(odir, 0700) == 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/ledger.db", odir);
    sqlite3 *db = NULL;
    ok(sqlite3_open(path, &db) == SQLITE_OK);
    ok(sqlite3_exec(db,
                    "CREATE TABLE ledger_exchanges ("
                    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL, key_id TEXT NOT NULL,"
                    " user TEXT NOT NULL, team TEXT NOT NULL, workflow TEXT NOT NULL, model TEXT NOT NULL,"
                    " deployment TEXT NOT NULL, provider TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
                    " cached_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
                    " reasoning_tokens INTEGER NOT NULL, cost_nusd INTEGER NOT NULL, cost_usd REAL NOT NULL,"
                    " priced INTEGER NOT NULL, price_version TEXT NOT NULL, status INTEGER NOT NULL, incomplete INTEGER "
                    "NOT NULL, attempts INTEGER NOT NULL, latency_us INTEGER NOT NULL, ttft_us INTEGER NOT NULL);"
                    "INSERT INTO ledger_exchanges VALUES (1, 1796385000000, 'req-old', 'k1', '', '', '', 'gpt-4o', 'd',"
                    " 'openai', 10, 0, 0, 5, 0, 7000, 0.000007, 1, 'v1', 200, 0, 1, 1000, 0);",
                    NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    struct buf err = BUF_INIT(1024);
    struct ledger_sum *sum = NULL;
    size_t n = 0;
    struct ledger_store *s = ledger_sqlite_ops.open(odir, true, &err);
    ok(s != NULL);
    ok(ledger_sqlite_ops.report(s, LG_KEY, 0, &sum, &n, &err) == 0);
    is_int(n, 1);
    if (n == 1) {
        is_int(sum[0].cost_nusd, 7000);
        is_int(sum[0].saved_nusd, 0);
    }
    xfree(sum);
    ledger_sqlite_ops.close(s);

    for (int pass = 0; pass < 2; pass++) { /* the second open: already migrated */
        s = ledger_sqlite_ops.open(odir, false, &err);
        if (!ok(s != NULL))
            printf("#   %s\n", err.data ? err.data : "");
        if (s == NULL)
            break;
        struct ledger_row hit = row("k1", "", "gpt-4o", NOW - 10, 10, 5, 0, false);
        hit.saved_nusd = 7000;
        ok(ledger_sqlite_ops.append(s, &hit, 1, &err) == 0);
        ok(ledger_sqlite_ops.report(s, LG_KEY, 0, &sum, &n, &err) == 0);
        is_int(n, 1);
        if (n == 1) {
            is_int(sum[0].requests, 2 + pass);
            is_int(sum[0].cost_nusd, 7000); /* the hit cost nothing */
            is_int(sum[0].saved_nusd, 7000 * (1 + pass));
        }
        xfree(sum);
        ledger_sqlite_ops.close(s);
    }
    /* the old row's saving is NULL, not 0: nothing is claimed for rows written before the column */
    ok(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ok(sqlite3_prepare_v2(db, "SELECT count(*) FROM ledger_exchanges WHERE saved_nusd IS NULL", -1, &st, NULL) ==
       SQLITE_OK);
    ok(sqlite3_step(st) == SQLITE_ROW);
    is_int(sqlite3_column_int64(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    buf_free(&err);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/agentd-ledger-test-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    subtest("write, report, rebuild budgets", test_write_report_rebuild);
    subtest("retry and a full queue", test_retry_and_full_queue);
    subtest("the queue hands the store every field as queued", test_queue_keeps_every_field);
    subtest("runs of spend rows, longer and shorter than one statement, in order", test_many_rows_in_order);
    subtest("an old-schema ledger.db, and evaluation rows", test_old_schema_and_evaluations);
    subtest("an old-schema ledger.db is migrated; a cache hit's saving is summed", test_old_schema_and_saving);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return done_testing();
}
