/* db_pg.c: the PostgreSQL connection, migrations and health shared by the *_pg.c backends (db_pg.h). */
#include "store/db_pg.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"

static struct {
    pthread_mutex_t mu;
    char *url;
    bool down;
    char why[320];
    _Atomic bool migrated;
    _Atomic int version;
} P = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The schema, one step per version, never edited once released: a change is a new step. Applied in order, each
 * recorded in schema_migrations in the same transaction. Table names match the SQLite backends' where they can;
 * "user" is quoted (a reserved word here). */
static const char *const migrations[] = {
    /* 1: keys, the spend ledger, stored responses and threads, agent runs */
    "CREATE TABLE keys_records ("
    " id TEXT PRIMARY KEY, seq BIGSERIAL, hash BYTEA NOT NULL UNIQUE, hint TEXT NOT NULL, name TEXT NOT NULL,"
    " \"user\" TEXT NOT NULL, team TEXT NOT NULL, tags TEXT NOT NULL, models TEXT NOT NULL,"
    " expires_at BIGINT NOT NULL, budget_usd DOUBLE PRECISION NOT NULL, budget_window INTEGER NOT NULL,"
    " budget_tokens BIGINT NOT NULL, rpm BIGINT NOT NULL, tpm BIGINT NOT NULL, caller_attribution BOOLEAN NOT NULL,"
    " created_at BIGINT NOT NULL, revoked_at BIGINT NOT NULL, max_concurrent BIGINT NOT NULL DEFAULT 0);"
    /* bumped in the same transaction as every key write: what version() polls */
    "CREATE TABLE keys_version (id INTEGER PRIMARY KEY CHECK (id = 1), v BIGINT NOT NULL);"
    "INSERT INTO keys_version VALUES (1, 0);"
    /* the HMAC pepper of key secrets: one per cluster, so every replica checks the same hashes */
    "CREATE TABLE keys_pepper (id INTEGER PRIMARY KEY CHECK (id = 1), pepper BYTEA NOT NULL);"
    "CREATE TABLE ledger_exchanges ("
    " id BIGSERIAL PRIMARY KEY, ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL, key_id TEXT NOT NULL,"
    " \"user\" TEXT NOT NULL, team TEXT NOT NULL, workflow TEXT NOT NULL, model TEXT NOT NULL,"
    " deployment TEXT NOT NULL, provider TEXT NOT NULL, input_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL,"
    " cache_write_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL,"
    " cost_nusd BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, priced BOOLEAN NOT NULL,"
    " price_version TEXT NOT NULL, status INTEGER NOT NULL, incomplete BOOLEAN NOT NULL, attempts INTEGER NOT NULL,"
    " latency_us BIGINT NOT NULL, ttft_us BIGINT NOT NULL, saved_nusd BIGINT);"
    "CREATE INDEX ledger_exchanges_ts ON ledger_exchanges(ts_ms);"
    "CREATE TABLE ledger_evaluations ("
    " id BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL, ts_ms BIGINT NOT NULL, model TEXT NOT NULL,"
    " workflow TEXT NOT NULL, name TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, label TEXT NOT NULL);"
    "CREATE INDEX ledger_evaluations_request ON ledger_evaluations(request_id);"
    "CREATE TABLE store_records ("
    " kind TEXT NOT NULL, id TEXT NOT NULL, seq BIGSERIAL, created BIGINT NOT NULL, expires BIGINT NOT NULL,"
    " bytes BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (kind, id));"
    "CREATE INDEX store_records_created ON store_records(created, seq);"
    "CREATE INDEX store_records_expires ON store_records(expires);"
    /* the bytes and records kept, maintained by every change (a put never sums the table) */
    "CREATE TABLE store_usage (id INTEGER PRIMARY KEY CHECK (id = 1), bytes BIGINT NOT NULL, records BIGINT NOT NULL);"
    "INSERT INTO store_usage VALUES (1, 0, 0);"
    "CREATE TABLE agent_runs (id TEXT PRIMARY KEY, agent TEXT NOT NULL, status TEXT NOT NULL, limit_name TEXT,"
    " input TEXT, messages TEXT, output TEXT, error TEXT, key_id TEXT, \"user\" TEXT, team TEXT, workflow TEXT,"
    " created_ms BIGINT, updated_ms BIGINT, steps BIGINT, input_tokens BIGINT, output_tokens BIGINT,"
    " cost_usd DOUBLE PRECISION);"
    "CREATE INDEX agent_runs_status ON agent_runs(status);"
    "CREATE INDEX agent_runs_created ON agent_runs(created_ms);"
    "CREATE TABLE agent_steps (run_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT, name TEXT, call_id TEXT,"
    " state TEXT, request TEXT, result TEXT, t_start_ms BIGINT, t_end_ms BIGINT, PRIMARY KEY (run_id, seq));"
    "CREATE TABLE agent_defs (name TEXT PRIMARY KEY, json TEXT NOT NULL);",
    /* 2: a key's /mcp tool allow and deny lists (JSON arrays of names or prefixes) */
    "ALTER TABLE keys_records ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '[]';"
    "ALTER TABLE keys_records ADD COLUMN mcp_deny TEXT NOT NULL DEFAULT '[]';",
    /* 3: a run's event log (agent_store.h), what GET /v1/runs/{id}/events numbers for Last-Event-ID */
    "CREATE TABLE agent_events (run_id TEXT NOT NULL, ev BIGINT NOT NULL, seq BIGINT NOT NULL, state TEXT NOT NULL,"
    " PRIMARY KEY (run_id, ev));",
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))
/* pg_advisory_xact_lock's key: "agentd" in ASCII, so another application's locks are unlikely to collide */
#define MIGRATION_LOCK "110357889295460"

static void mark(bool ok, const char *why)
{
    pthread_mutex_lock(&P.mu);
    if (ok && P.down)
        log_info("database reachable again");
    else if (!ok && !P.down)
        log_warn("database unreachable: %s", why);
    P.down = !ok;
    if (!ok)
        snprintf(P.why, sizeof(P.why), "%s", why);
    pthread_mutex_unlock(&P.mu);
}

void db_pg_ok(void)
{
    mark(true, NULL);
}

bool db_pg_healthy(char *why, size_t n)
{
    pthread_mutex_lock(&P.mu);
    bool ok = !P.down;
    if (!ok && why && n)
        snprintf(why, n, "%s", P.why);
    pthread_mutex_unlock(&P.mu);
    return ok;
}

bool db_pg_enabled(void)
{
    pthread_mutex_lock(&P.mu);
    bool on = P.url != NULL;
    pthread_mutex_unlock(&P.mu);
    return on;
}

void db_pg_reset(void)
{
    pthread_mutex_lock(&P.mu);
    xfree(P.url);
    P.url = NULL;
    P.down = false;
    pthread_mutex_unlock(&P.mu);
    atomic_store(&P.migrated, false);
}

const char *db_pg_text(const PGresult *r, int i, int j)
{
    return PQgetisnull(r, i, j) ? "" : PQgetvalue(r, i, j);
}

int64_t db_pg_i64(const PGresult *r, int i, int j)
{
    return PQgetisnull(r, i, j) ? 0 : strtoll(PQgetvalue(r, i, j), NULL, 10);
}

/* libpq's messages end with a newline; one line in logs and /ready. */
static void one_line(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ')
        s[--n] = '\0';
}

int db_pg_fail(PGconn **c, PGresult *r, const char *what, struct buf *err)
{
    char msg[300];
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (m == NULL || *m == '\0')
        m = *c ? PQerrorMessage(*c) : "no connection";
    snprintf(msg, sizeof(msg), "%s", m && *m ? m : "unknown error");
    one_line(msg);
    buf_printf(err, "database: %s: %s", what, msg);
    PQclear(r);
    if (*c == NULL || PQstatus(*c) != CONNECTION_OK) {
        mark(false, msg);
        db_pg_close(c);
    }
    return -1;
}

int db_pg_cmd(PGconn **c, const char *sql, struct buf *err)
{
    PGresult *r = PQexec(*c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        return db_pg_fail(c, r, "command", err);
    PQclear(r);
    return 0;
}

void db_pg_close(PGconn **c)
{
    if (*c)
        PQfinish(*c);
    *c = NULL;
}

/* The missing steps, under the lock, in one transaction. */
static int migrate(PGconn **c, struct buf *err)
{
    if (db_pg_cmd(c, "BEGIN", err) != 0)
        return -1;
    if (db_pg_cmd(c, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")", err) != 0 ||
        db_pg_cmd(c,
                  "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                  " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                  err) != 0)
        goto fail;
    PGresult *r = PQexec(*c, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_pg_fail(c, r, "reading schema_migrations", err);
        goto fail;
    }
    int have = (int)db_pg_i64(r, 0, 0);
    PQclear(r);
    if (have > NMIGRATIONS) {
        buf_printf(err, "database: schema version %d is newer than this agentd knows (%d): upgrade agentd", have,
                   NMIGRATIONS);
        goto fail;
    }
    for (int v = have + 1; v <= NMIGRATIONS; v++) {
        char ins[96];
        snprintf(ins, sizeof(ins), "INSERT INTO schema_migrations (version) VALUES (%d)", v);
        if (db_pg_cmd(c, migrations[v - 1], err) != 0 || db_pg_cmd(c, ins, err) != 0)
            goto fail;
    }
    if (db_pg_cmd(c, "COMMIT", err) != 0)
        return -1;
    for (int v = have + 1; v <= NMIGRATIONS; v++)
        log_info("database: applied migration %d", v);
    atomic_store(&P.version, NMIGRATIONS);
    return 0;
fail:
    if (*c)
        PQclear(PQexec(*c, "ROLLBACK"));
    return -1;
}

int db_pg_schema_version(void)
{
    return atomic_load(&P.version);
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *connect_url(const char *url)
{
    /* connect_timeout first: the URL's own, when it has one, overrides it (expand_dbname) */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"5", "agentd", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c)
        PQsetNoticeProcessor(c, quiet, NULL); /* "already exists, skipping" and the like: not for stderr */
    return c;
}

int db_pg_conn(PGconn **c, struct buf *err)
{
    if (*c && PQstatus(*c) == CONNECTION_OK)
        return 0;
    db_pg_close(c);
    pthread_mutex_lock(&P.mu);
    char *url = P.url ? xstrdup(P.url) : NULL;
    pthread_mutex_unlock(&P.mu);
    if (url == NULL) {
        buf_printf(err, "database: no DATABASE_URL");
        return -1;
    }
    *c = connect_url(url);
    xfree(url);
    if (*c == NULL || PQstatus(*c) != CONNECTION_OK)
        return db_pg_fail(c, NULL, "connect", err);
    if (!atomic_load(&P.migrated)) {
        if (migrate(c, err) != 0) {
            db_pg_close(c);
            return -1;
        }
        atomic_store(&P.migrated, true);
    }
    db_pg_ok();
    return 0;
}

/* Whether a failed connection's message says the server refused us (a configuration error), rather than that it
 * could not be reached (a fault that passes). */
static bool refused(const char *msg)
{
    static const char *const words[] = {"authentication failed", "password", "no pg_hba.conf entry",
                                        "does not exist", "permission denied", "SSL", "certificate",
                                        "unsupported"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(msg, words[i]))
            return true;
    return false;
}

int db_pg_configure(const char *url, bool check, struct buf *err)
{
    db_pg_reset();
    if (url == NULL || *url == '\0')
        return 0;
    if (check) {
        char *perr = NULL;
        PQconninfoOption *o = PQconninfoParse(url, &perr);
        if (o == NULL) {
            char m[300];
            snprintf(m, sizeof(m), "%s", perr ? perr : "out of memory");
            one_line(m);
            buf_printf(err, "DATABASE_URL (store.database_url) is not a valid PostgreSQL URL: %s", m);
            PQfreemem(perr);
            return -1;
        }
        PQconninfoFree(o);
    }
    pthread_mutex_lock(&P.mu);
    P.url = xstrdup(url);
    pthread_mutex_unlock(&P.mu);
    if (!check)
        return 0;
    PGconn *c = connect_url(url);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        char m[300];
        snprintf(m, sizeof(m), "%s", c ? PQerrorMessage(c) : "out of memory");
        one_line(m);
        db_pg_close(&c);
        if (strstr(m, "invalid") != NULL) { /* a value libpq reads only when it connects (a port, an option) */
            buf_printf(err, "DATABASE_URL (store.database_url) is not a valid PostgreSQL URL: %s", m);
            db_pg_reset();
            return -1;
        }
        if (refused(m)) {
            buf_printf(err, "DATABASE_URL (store.database_url): the database refused the connection: %s", m);
            db_pg_reset();
            return -1;
        }
        mark(false, m); /* merely down: /ready says so until it answers */
        return 0;
    }
    struct buf merr = BUF_INIT(1024);
    int rc = migrate(&c, &merr);
    if (rc == 0) {
        atomic_store(&P.migrated, true);
        db_pg_ok();
    } else if (c != NULL) { /* the server answered and refused the schema: that will not pass by itself */
        buf_printf(err, "DATABASE_URL (store.database_url): cannot apply the migrations: %s",
                   merr.data ? merr.data : "?");
        db_pg_reset();
    } else {
        rc = 0; /* the connection went away in the middle: the next connection migrates */
    }
    buf_free(&merr);
    db_pg_close(&c);
    return rc;
}
