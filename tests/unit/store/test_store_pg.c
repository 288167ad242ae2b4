/* test_store_pg.c: the PostgreSQL backends below the interfaces. The URL checks need no server. The rest needs an
 * empty database named by AGENTD_TEST_DATABASE_URL: tests/integration/postgres.test.mjs starts a real PostgreSQL
 * and runs this binary against a fresh database; without the variable (plain ctest) those parts are skipped.
 * Covers what the daemon-level tests cannot see: the store's byte bound and expiry (the SQLite backend's rules),
 * the shared pepper, the version counter, and the ledger's report. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "store/agent_events_check.h"
#include "store/agent_store.h"
#include "store/db_pg.h"
#include "store/keys_store.h"
#include "store/ledger.h"
#include "store/store.h"
#include "test.h"

static int64_t fake_now = 1000000;
static int64_t fake_clock(void)
{
    return fake_now;
}

static void test_urls(void)
{
    struct buf err = BUF_INIT(4096);
    is_int(db_pg_configure("postgresql://a@127.0.0.1:5432/db?no_such_option=1", true, &err), -1);
    ok(err.data && strstr(err.data, "not a valid PostgreSQL URL"));
    ok(!db_pg_enabled());
    buf_reset(&err);
    is_int(db_pg_configure("host=127.0.0.1 port=notaport dbname=x", true, &err), -1);
    ok(err.data && strstr(err.data, "not a valid PostgreSQL URL"));
    buf_reset(&err);
    /* nothing listens on port 1: down, not a configuration error; the reason is kept for /ready */
    is_int(db_pg_configure("postgresql://a:secret@127.0.0.1:1/db?connect_timeout=2", true, &err), 0);
    ok(db_pg_enabled());
    char why[400];
    ok(!db_pg_healthy(why, sizeof(why)));
    ok(strstr(why, "127.0.0.1") != NULL || strstr(why, "refused") != NULL);
    ok(strstr(why, "secret") == NULL);
    /* a handle's operation fails with a message, and does not crash */
    PGconn *c = NULL;
    buf_reset(&err);
    is_int(db_pg_conn(&c, &err), -1);
    ok(c == NULL && err.len > 0);
    db_pg_reset();
    is_int(db_pg_configure("", true, &err), 0);
    ok(!db_pg_enabled());
    buf_free(&err);
}

static void test_records(void)
{
    store_set_clock_for_tests(fake_clock);
    struct store_options o = {.max_bytes = 100, .max_age_ms = 0};
    struct store *s = store_new(&store_pg_ops, &o);
    char err[256];
    char blob[40];
    memset(blob, 'x', sizeof(blob));
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    is_int(store_get_sync(s, "response", "r0", &out, err, sizeof(err)), STORE_NOT_FOUND);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", i);
        fake_now++;
        is_int(store_put_sync(s, "response", id, blob, sizeof(blob), 0, err, sizeof(err)), STORE_OK);
        int64_t bytes = -1, records = -1;
        is_int(store_stats_sync(s, &bytes, &records), STORE_OK);
        ok(bytes <= 100 && bytes > 0);
    }
    /* the newest two are kept, the oldest went first */
    is_int(store_get_sync(s, "response", "r9", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == sizeof(blob) && memcmp(out.data, blob, sizeof(blob)) == 0);
    is_int(store_get_sync(s, "response", "r8", &out, err, sizeof(err)), STORE_OK);
    is_int(store_get_sync(s, "response", "r7", &out, err, sizeof(err)), STORE_NOT_FOUND);
    is_int(store_get_sync(s, "response", "r0", &out, err, sizeof(err)), STORE_NOT_FOUND);
    /* replacing a record counts its bytes once */
    fake_now++;
    is_int(store_put_sync(s, "response", "r9", "short", 5, 0, err, sizeof(err)), STORE_OK);
    int64_t bytes, records;
    is_int(store_stats_sync(s, &bytes, &records), STORE_OK);
    is_int(bytes, 45);
    is_int(records, 2);
    /* binary data round-trips */
    const char bin[] = {'a', '\0', 'b', '\xff'};
    is_int(store_put_sync(s, "thread", "t", bin, sizeof(bin), 0, err, sizeof(err)), STORE_OK);
    buf_reset(&out);
    is_int(store_get_sync(s, "thread", "t", &out, err, sizeof(err)), STORE_OK);
    ok(out.len == sizeof(bin) && memcmp(out.data, bin, sizeof(bin)) == 0);
    is_int(store_delete_sync(s, "thread", "t", err, sizeof(err)), STORE_OK);
    is_int(store_delete_sync(s, "thread", "t", err, sizeof(err)), STORE_NOT_FOUND);
    is_int(store_stats_sync(s, &bytes, &records), STORE_OK);
    is_int(bytes, 45);
    store_free(s);
    /* expiry: gone at its time, and the next put drops it from the counts */
    struct store_options o2 = {.max_bytes = 0, .max_age_ms = 1000};
    s = store_new(&store_pg_ops, &o2);
    is_int(store_put_sync(s, "response", "e1", "1", 1, 500, err, sizeof(err)), STORE_OK);
    fake_now += 600;
    is_int(store_get_sync(s, "response", "e1", &out, err, sizeof(err)), STORE_NOT_FOUND);
    is_int(store_put_sync(s, "response", "e2", "2", 1, 0, err, sizeof(err)), STORE_OK);
    is_int(store_get_sync(s, "response", "r8", &out, err, sizeof(err)), STORE_OK); /* no expiry of its own */
    is_int(store_stats_sync(s, &bytes, &records), STORE_OK);
    is_int(records, 3); /* r8, r9, e2 */
    store_free(s);
    buf_free(&out);
    store_set_clock_for_tests(NULL);
}

static void test_keys(void)
{
    struct buf err = BUF_INIT(4096);
    struct keys_store *a = keys_store_pg.open("/nonexistent", &err);
    struct keys_store *b = keys_store_pg.open("/nonexistent", &err);
    ok(a && b);
    uint8_t p1[32], p2[32];
    is_int(keys_store_pg.pepper(a, p1, &err), 0);
    is_int(keys_store_pg.pepper(b, p2, &err), 0);
    ok(memcmp(p1, p2, 32) == 0); /* one pepper for every process sharing the database */
    uint64_t v0 = 0, v1 = 0, v2 = 0;
    is_int(keys_store_pg.version(b, &v0), 0);
    struct key_record r = {0};
    snprintf(r.id, sizeof(r.id), "key_0123456789abcdef");
    memset(r.hash, 7, sizeof(r.hash));
    snprintf(r.hint, sizeof(r.hint), "sk-agentd-abc");
    r.name = (char *)"n";
    r.budget_usd = 1.25;
    r.rpm = 10;
    char *tools[] = {(char *)"search", (char *)"fs_*"};
    r.mcp_tools = tools;
    r.nmcp_tools = 2;
    is_int(keys_store_pg.insert(a, &r, &err), 0);
    is_int(keys_store_pg.version(b, &v1), 0);
    ok(v1 != v0); /* another handle sees the change */
    is_int(keys_store_pg.insert(a, &r, &err), -1); /* a duplicate id */
    is_int(keys_store_pg.version(b, &v2), 0);
    is_int(v2, v1); /* a failed write changes nothing */
    struct key_record got;
    is_int(keys_store_pg.get(b, r.id, &got, &err), 0);
    is_str(got.name, "n");
    ok(got.budget_usd == 1.25 && got.rpm == 10 && memcmp(got.hash, r.hash, sizeof(r.hash)) == 0);
    is_int(got.nmcp_tools, 2);
    is_str(got.nmcp_tools == 2 ? got.mcp_tools[1] : "", "fs_*");
    is_int(got.nmcp_deny, 0);
    key_record_free(&got);
    is_int(keys_store_pg.get(b, "key_none", &got, &err), 1);
    r.revoked_at = 5;
    is_int(keys_store_pg.update(a, &r, &err), 0);
    snprintf(r.id, sizeof(r.id), "key_ffffffffffffffff");
    is_int(keys_store_pg.update(a, &r, &err), 1);
    struct key_record *all;
    size_t n;
    is_int(keys_store_pg.list(b, &all, &n, &err), 0);
    is_int(n, 1);
    is_int(all[0].revoked_at, 5);
    keys_records_free(all, n);
    keys_store_pg.close(a);
    keys_store_pg.close(b);
    buf_free(&err);
}

static void test_ledger(void)
{
    struct buf err = BUF_INIT(4096);
    struct ledger_store *s = ledger_pg_ops.open(NULL, false, &err);
    struct ledger_row rows[3];
    memset(rows, 0, sizeof(rows));
    for (int i = 0; i < 3; i++) {
        rows[i].ts_ms = 1700000000000LL + i;
        snprintf(rows[i].request_id, sizeof(rows[i].request_id), "req-%d", i);
        snprintf(rows[i].user, sizeof(rows[i].user), "%s", i < 2 ? "alice" : "bob");
        rows[i].input_tokens = 10;
        rows[i].output_tokens = 20;
        rows[i].cost_nusd = 1000 * (i + 1);
        rows[i].status = 200;
    }
    rows[2].evaluation = true;
    snprintf(rows[2].eval_name, sizeof(rows[2].eval_name), "judge");
    rows[2].eval_score = 0.5;
    is_int(ledger_pg_ops.append(s, rows, 3, &err), 0);
    struct ledger_sum *sum;
    size_t n;
    is_int(ledger_pg_ops.report(s, LG_USER, 0, &sum, &n, &err), 0);
    is_int(n, 1); /* the evaluation row is not spend */
    is_str(sum[0].group, "alice");
    is_int(sum[0].requests, 2);
    is_int(sum[0].cost_nusd, 3000);
    xfree(sum);
    is_int(ledger_pg_ops.report(s, LG_DAY, 0, &sum, &n, &err), 0);
    is_int(n, 1);
    is_str(sum[0].group, "2023-11-14");
    xfree(sum);
    struct ledger_eval *ev;
    is_int(ledger_pg_ops.evaluations(s, "req-2", &ev, &n, &err), 0);
    is_int(n, 1);
    is_str(ev[0].name, "judge");
    xfree(ev);
    ledger_pg_ops.close(s);
    buf_free(&err);
}

static void test_agents(void)
{
    char err[256];
    struct agent_store *s = agent_store_open("/nonexistent", false, err, sizeof(err)); /* the database, not the dir */
    ok(s != NULL);
    struct as_run r = {0};
    snprintf(r.id, sizeof(r.id), "run_1");
    snprintf(r.agent, sizeof(r.agent), "calc");
    snprintf(r.status, sizeof(r.status), "running");
    r.input = (char *)"hi";
    r.messages = (char *)"[]";
    r.created_ms = 5;
    r.cost_usd = 0.25;
    struct as_step st[2] = {{.seq = 1, .kind = "llm", .name = "mock", .state = "done"},
                            {.seq = 2, .kind = "tool", .name = "echo", .call_id = "c1", .state = "started"}};
    st[0].request = (char *)"{\"conversation\":1}";
    st[1].request = (char *)"{\"text\":\"x\"}";
    is_int(agent_store_commit(s, "run_1", &r, st, 2, err, sizeof(err)), 0);
    struct as_run got;
    is_int(agent_store_get(s, "run_1", &got, err, sizeof(err)), 0);
    is_str(got.status, "running");
    is_str(got.messages, "[]");
    ok(got.cost_usd == 0.25 && got.output == NULL && got.limit_name[0] == '\0');
    as_run_free(&got);
    is_int(agent_store_get(s, "run_none", &got, err, sizeof(err)), 1);
    struct as_step *steps;
    size_t n;
    is_int(agent_store_steps(s, "run_1", &steps, &n, err, sizeof(err)), 0);
    is_int(n, 2);
    ok(steps[0].request == NULL); /* an LLM step's request is not read back */
    is_str(steps[1].request, "{\"text\":\"x\"}");
    is_str(steps[1].state, "started");
    for (size_t i = 0; i < n; i++)
        as_step_free(&steps[i]);
    xfree(steps);
    struct as_run *runs;
    is_int(agent_store_unfinished(s, &runs, &n, err, sizeof(err)), 0);
    is_int(n, 1);
    for (size_t i = 0; i < n; i++)
        as_run_free(&runs[i]);
    xfree(runs);
    /* the run ends: a replaced row, not a second one */
    snprintf(r.status, sizeof(r.status), "succeeded");
    r.output = (char *)"done";
    st[1].state[0] = '\0';
    snprintf(st[1].state, sizeof(st[1].state), "done");
    is_int(agent_store_commit(s, "run_1", &r, &st[1], 1, err, sizeof(err)), 0);
    is_int(agent_store_unfinished(s, &runs, &n, err, sizeof(err)), 0);
    is_int(n, 0);
    xfree(runs);
    is_int(agent_store_list(s, "calc", "succeeded", 10, &runs, &n, err, sizeof(err)), 0);
    is_int(n, 1);
    is_str(runs[0].output, "done");
    for (size_t i = 0; i < n; i++)
        as_run_free(&runs[i]);
    xfree(runs);
    check_agent_events(s, "run_events");
    is_int(agent_store_def_put(s, "a1", "{\"x\":1}", err, sizeof(err)), 0);
    is_int(agent_store_def_put(s, "a1", "{\"x\":2}", err, sizeof(err)), 0);
    char **names, **jsons;
    is_int(agent_store_def_list(s, &names, &jsons, &n, err, sizeof(err)), 0);
    is_int(n, 1);
    is_str(jsons[0], "{\"x\":2}");
    for (size_t i = 0; i < n; i++) {
        xfree(names[i]);
        xfree(jsons[i]);
    }
    xfree(names);
    xfree(jsons);
    is_int(agent_store_def_del(s, "a1", err, sizeof(err)), 0);
    is_int(agent_store_def_del(s, "a1", err, sizeof(err)), 1);
    agent_store_close(s);
}

int main(void)
{
    subtest("urls", test_urls);
    const char *url = getenv("AGENTD_TEST_DATABASE_URL");
    if (url && *url) {
        struct buf err = BUF_INIT(4096);
        ok(db_pg_configure(url, true, &err) == 0 && db_pg_healthy(NULL, 0));
        is_int(db_pg_schema_version(), 3);
        buf_free(&err);
        subtest("records", test_records);
        subtest("keys", test_keys);
        subtest("ledger", test_ledger);
        subtest("agents", test_agents);
        db_pg_reset();
    }
    return done_testing();
}
