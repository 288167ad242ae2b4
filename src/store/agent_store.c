/* agent_store.c: durable agent runs (agent_store.h): the backend chosen at open, and the embedded one, SQLite. */
#include "store/agent_store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "store/db_pg.h"

/* The statements of a commit, prepared once (under mu, reset after each use). */
enum { SQ_PUT_RUN, SQ_PUT_STEP, SQ_EVENT_STEP, SQ_EVENT_RUN, SQ_NSTMT };

struct agent_store_sq {
    sqlite3 *db;
    pthread_mutex_t mu;
    sqlite3_stmt *stmt[SQ_NSTMT];
};

static const char *const stmt_sql[SQ_NSTMT] = {
    [SQ_PUT_RUN] = "INSERT OR REPLACE INTO runs(id, agent, status, limit_name, input, messages, output, error, key_id,"
                   " user, team, workflow, created_ms, updated_ms, steps, input_tokens, output_tokens, cost_usd)"
                   " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [SQ_PUT_STEP] = "INSERT OR REPLACE INTO steps(run_id, seq, kind, name, call_id, state, request, result,"
                    " t_start_ms, t_end_ms) VALUES(?,?,?,?,?,?,?,?,?,?)",
    /* the run's next event (its last number + 1) when the state differs from the stored one: one statement */
    [SQ_EVENT_STEP] = "INSERT INTO events(run_id, ev, seq, state) SELECT ?1, COALESCE((SELECT MAX(ev) FROM events"
                      " WHERE run_id = ?1), 0) + 1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM steps"
                      " WHERE run_id = ?1 AND seq = ?2 AND state = ?3)",
    [SQ_EVENT_RUN] = "INSERT INTO events(run_id, ev, seq, state) SELECT ?1, COALESCE((SELECT MAX(ev) FROM events"
                     " WHERE run_id = ?1), 0) + 1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM runs"
                     " WHERE id = ?1 AND status = ?3)",
};

/* A commit's statement, ready to bind (NULL when it cannot be prepared). */
static sqlite3_stmt *stmt(struct agent_store_sq *s, int k)
{
    if (s->stmt[k] == NULL &&
        sqlite3_prepare_v3(s->db, stmt_sql[k], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[k], NULL) != SQLITE_OK)
        return NULL;
    return s->stmt[k];
}

/* Steps a commit's statement once and makes it ready for the next use: 0 or -1. */
static int run_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static void sq_close(void *sp);

static int fail(struct agent_store_sq *s, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "agent store: %s: %s", what, s && s->db ? sqlite3_errmsg(s->db) : "out of memory");
    return -1;
}

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS runs(id TEXT PRIMARY KEY, agent TEXT NOT NULL, status TEXT NOT NULL,"
    " limit_name TEXT, input TEXT, messages TEXT, output TEXT, error TEXT, key_id TEXT, user TEXT, team TEXT,"
    " workflow TEXT, created_ms INTEGER, updated_ms INTEGER, steps INTEGER, input_tokens INTEGER,"
    " output_tokens INTEGER, cost_usd REAL);"
    "CREATE INDEX IF NOT EXISTS runs_status ON runs(status);"
    "CREATE INDEX IF NOT EXISTS runs_created ON runs(created_ms);"
    "CREATE TABLE IF NOT EXISTS steps(run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT, name TEXT,"
    " call_id TEXT, state TEXT, request TEXT, result TEXT, t_start_ms INTEGER, t_end_ms INTEGER,"
    " PRIMARY KEY(run_id, seq));"
    "CREATE TABLE IF NOT EXISTS agent_defs(name TEXT PRIMARY KEY, json TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events(run_id TEXT NOT NULL, ev INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " state TEXT NOT NULL, PRIMARY KEY(run_id, ev)) WITHOUT ROWID;";

static void *sq_open(const char *dir, bool memory, char *err, size_t errlen)
{
    char path[4096];
    if (memory) {
        snprintf(path, sizeof(path), ":memory:");
    } else {
        if (dir == NULL || dir[0] == '\0') {
            snprintf(err, errlen, "agent store: no data dir (server.data_dir)");
            return NULL;
        }
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "agent store: cannot create %s: %s", dir, strerror(errno));
            return NULL;
        }
        if ((size_t)snprintf(path, sizeof(path), "%s/agents.db", dir) >= sizeof(path)) {
            snprintf(err, errlen, "agent store: the data dir path is too long");
            return NULL;
        }
    }
    struct agent_store_sq *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK || sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        fail(s, "open", err, errlen);
        sq_close(s);
        return NULL;
    }
    return s;
}

static void sq_close(void *sp)
{
    struct agent_store_sq *s = sp;
    if (s == NULL)
        return;
    for (int k = 0; k < SQ_NSTMT; k++)
        sqlite3_finalize(s->stmt[k]);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    xfree(s);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static int put_run(struct agent_store_sq *s, const struct as_run *r)
{
    sqlite3_stmt *st = stmt(s, SQ_PUT_RUN);
    if (st == NULL)
        return -1;
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->agent);
    bind_text(st, 3, r->status);
    bind_text(st, 4, r->limit_name[0] ? r->limit_name : NULL);
    bind_text(st, 5, r->input);
    bind_text(st, 6, r->messages);
    bind_text(st, 7, r->output);
    bind_text(st, 8, r->error);
    bind_text(st, 9, r->key_id);
    bind_text(st, 10, r->user);
    bind_text(st, 11, r->team);
    bind_text(st, 12, r->workflow);
    sqlite3_bind_int64(st, 13, r->created_ms);
    sqlite3_bind_int64(st, 14, r->updated_ms);
    sqlite3_bind_int64(st, 15, r->steps);
    sqlite3_bind_int64(st, 16, r->input_tokens);
    sqlite3_bind_int64(st, 17, r->output_tokens);
    sqlite3_bind_double(st, 18, r->cost_usd);
    return run_stmt(st);
}

static int put_step(struct agent_store_sq *s, const char *run_id, const struct as_step *p)
{
    sqlite3_stmt *st = stmt(s, SQ_PUT_STEP);
    if (st == NULL)
        return -1;
    bind_text(st, 1, run_id);
    sqlite3_bind_int64(st, 2, p->seq);
    bind_text(st, 3, p->kind);
    bind_text(st, 4, p->name);
    bind_text(st, 5, p->call_id);
    bind_text(st, 6, p->state);
    bind_text(st, 7, p->request);
    bind_text(st, 8, p->result);
    sqlite3_bind_int64(st, 9, p->t_start_ms);
    sqlite3_bind_int64(st, 10, p->t_end_ms);
    return run_stmt(st);
}

/* Appends the run's next event when the state differs from the stored one (seq -1: the run's status). */
static int log_event(struct agent_store_sq *s, const char *run_id, int64_t seq, const char *state)
{
    sqlite3_stmt *st = stmt(s, seq < 0 ? SQ_EVENT_RUN : SQ_EVENT_STEP);
    if (st == NULL)
        return -1;
    bind_text(st, 1, run_id);
    sqlite3_bind_int64(st, 2, seq);
    bind_text(st, 3, state);
    return run_stmt(st);
}

static int sq_commit(void *sp, const char *run_id, const struct as_run *run, const struct as_step *steps,
                       size_t n, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    pthread_mutex_lock(&s->mu);
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    /* the event log first (it compares with the rows as they were): each step whose state changes, then the run
     * when it ends, after its steps */
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = log_event(s, run_id, steps[i].seq, steps[i].state);
    if (rc == 0 && run && as_status_final(run->status))
        rc = log_event(s, run_id, -1, run->status);
    if (rc == 0 && run)
        rc = put_run(s, run);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = put_step(s, run_id, &steps[i]);
    if (rc == 0)
        rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rc != 0) {
        fail(s, "commit", err, errlen);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? xstrdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t n)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

#define RUN_COLS                                                                                                   \
    "id, agent, status, limit_name, input, messages, output, error, key_id, user, team, workflow, created_ms,"     \
    " updated_ms, steps, input_tokens, output_tokens, cost_usd"

static void read_run(sqlite3_stmt *st, struct as_run *r, bool with_messages)
{
    memset(r, 0, sizeof(*r));
    col_copy(st, 0, r->id, sizeof(r->id));
    col_copy(st, 1, r->agent, sizeof(r->agent));
    col_copy(st, 2, r->status, sizeof(r->status));
    col_copy(st, 3, r->limit_name, sizeof(r->limit_name));
    r->input = col_dup(st, 4);
    r->messages = with_messages ? col_dup(st, 5) : NULL;
    r->output = col_dup(st, 6);
    r->error = col_dup(st, 7);
    col_copy(st, 8, r->key_id, sizeof(r->key_id));
    col_copy(st, 9, r->user, sizeof(r->user));
    col_copy(st, 10, r->team, sizeof(r->team));
    col_copy(st, 11, r->workflow, sizeof(r->workflow));
    r->created_ms = sqlite3_column_int64(st, 12);
    r->updated_ms = sqlite3_column_int64(st, 13);
    r->steps = sqlite3_column_int64(st, 14);
    r->input_tokens = sqlite3_column_int64(st, 15);
    r->output_tokens = sqlite3_column_int64(st, 16);
    r->cost_usd = sqlite3_column_double(st, 17);
}

static int sq_get(void *sp, const char *id, struct as_run *out, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "SELECT " RUN_COLS " FROM runs WHERE id = ?", -1, &st, NULL) == SQLITE_OK) {
        bind_text(st, 1, id);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) {
            read_run(st, out, true);
            rc = 0;
        } else if (r == SQLITE_DONE) {
            rc = 1;
        }
        sqlite3_finalize(st);
    }
    if (rc < 0)
        fail(s, "get", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int sq_steps(void *sp, const char *id, struct as_step **out, size_t *n, char *err,
                      size_t errlen)
{
    struct agent_store_sq *s = sp;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    /* an LLM step's request (the whole conversation so far) is kept for audit but not read back */
    static const char sql[] = "SELECT seq, kind, name, call_id, state, CASE WHEN kind = 'llm' THEN NULL ELSE request END,"
                              " result, t_start_ms, t_end_ms FROM steps WHERE run_id = ? ORDER BY seq";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK) {
        bind_text(st, 1, id);
        size_t cap = 0;
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = xrealloc(*out, cap * sizeof(**out));
            }
            struct as_step *p = &(*out)[(*n)++];
            memset(p, 0, sizeof(*p));
            p->seq = sqlite3_column_int64(st, 0);
            col_copy(st, 1, p->kind, sizeof(p->kind));
            col_copy(st, 2, p->name, sizeof(p->name));
            col_copy(st, 3, p->call_id, sizeof(p->call_id));
            col_copy(st, 4, p->state, sizeof(p->state));
            p->request = col_dup(st, 5);
            p->result = col_dup(st, 6);
            p->t_start_ms = sqlite3_column_int64(st, 7);
            p->t_end_ms = sqlite3_column_int64(st, 8);
        }
        rc = r == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    if (rc < 0)
        fail(s, "steps", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int sq_events(void *sp, const char *id, int64_t after, size_t limit, struct as_event **out, size_t *n,
                     int64_t *last, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    *out = NULL;
    *n = 0;
    *last = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(ev), 0) FROM events WHERE run_id = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        bind_text(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW) {
            *last = sqlite3_column_int64(st, 0);
            rc = 0;
        }
        sqlite3_finalize(st);
    }
    if (rc == 0) {
        rc = -1;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT ev, seq, state FROM events WHERE run_id = ? AND ev > ? AND ev <= ?"
                               " ORDER BY ev LIMIT ?",
                               -1, &st, NULL) == SQLITE_OK) {
            bind_text(st, 1, id);
            sqlite3_bind_int64(st, 2, after);
            sqlite3_bind_int64(st, 3, *last); /* what *last says, even when a commit lands meanwhile */
            sqlite3_bind_int64(st, 4, (int64_t)limit);
            *out = xcalloc(limit ? limit : 1, sizeof(**out));
            int r;
            while ((r = sqlite3_step(st)) == SQLITE_ROW && *n < limit) {
                struct as_event *e = &(*out)[(*n)++];
                e->ev = sqlite3_column_int64(st, 0);
                e->seq = sqlite3_column_int64(st, 1);
                col_copy(st, 2, e->state, sizeof(e->state));
            }
            rc = r == SQLITE_DONE || r == SQLITE_ROW ? 0 : -1;
            sqlite3_finalize(st);
        }
    }
    if (rc < 0)
        fail(s, "events", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int list_where(struct agent_store_sq *s, const char *sql, const char *a1, const char *a2, int64_t limit,
                      bool with_messages, struct as_run **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK) {
        bind_text(st, 1, a1 ? a1 : "");
        bind_text(st, 2, a2 ? a2 : "");
        sqlite3_bind_int64(st, 3, limit);
        size_t cap = 0;
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = xrealloc(*out, cap * sizeof(**out));
            }
            read_run(st, &(*out)[(*n)++], with_messages);
        }
        rc = r == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    if (rc < 0)
        fail(s, "list", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int sq_list(void *sp, const char *agent, const char *status, size_t limit, struct as_run **out,
                     size_t *n, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    return list_where(s,
                      "SELECT " RUN_COLS " FROM runs WHERE (?1 = '' OR agent = ?1) AND (?2 = '' OR status = ?2)"
                      " ORDER BY created_ms DESC, id DESC LIMIT ?3",
                      agent, status, (int64_t)limit, false, out, n, err, errlen);
}

static int sq_unfinished(void *sp, struct as_run **out, size_t *n, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    return list_where(s,
                      "SELECT " RUN_COLS " FROM runs WHERE status IN ('queued', 'running') AND ?1 = ?2"
                      " ORDER BY created_ms LIMIT ?3",
                      "", "", 100000, true, out, n, err, errlen);
}

static int sq_def_put(void *sp, const char *name, const char *json, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO agent_defs(name, json) VALUES(?, ?)", -1, &st, NULL) ==
        SQLITE_OK) {
        bind_text(st, 1, name);
        bind_text(st, 2, json);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    if (rc < 0)
        fail(s, "def put", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int sq_def_del(void *sp, const char *name, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM agent_defs WHERE name = ?", -1, &st, NULL) == SQLITE_OK) {
        bind_text(st, 1, name);
        rc = sqlite3_step(st) == SQLITE_DONE ? (sqlite3_changes(s->db) ? 0 : 1) : -1;
        sqlite3_finalize(st);
    }
    if (rc < 0)
        fail(s, "def delete", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int sq_def_list(void *sp, char ***names, char ***jsons, size_t *n, char *err, size_t errlen)
{
    struct agent_store_sq *s = sp;
    *names = *jsons = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "SELECT name, json FROM agent_defs ORDER BY name", -1, &st, NULL) == SQLITE_OK) {
        size_t cap = 0;
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 8;
                *names = xrealloc(*names, cap * sizeof(char *));
                *jsons = xrealloc(*jsons, cap * sizeof(char *));
            }
            (*names)[*n] = col_dup(st, 0);
            (*jsons)[*n] = col_dup(st, 1);
            (*n)++;
        }
        rc = r == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    if (rc < 0)
        fail(s, "def list", err, errlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void as_run_free(struct as_run *r)
{
    xfree(r->input);
    xfree(r->messages);
    xfree(r->output);
    xfree(r->error);
    r->input = r->messages = r->output = r->error = NULL;
}

void as_step_free(struct as_step *s)
{
    xfree(s->request);
    xfree(s->result);
    s->request = s->result = NULL;
}

const struct agent_store_ops agent_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .commit = sq_commit,
    .get = sq_get,
    .steps = sq_steps,
    .events = sq_events,
    .list = sq_list,
    .unfinished = sq_unfinished,
    .def_put = sq_def_put,
    .def_del = sq_def_del,
    .def_list = sq_def_list,
};

/* ---------- the interface: whichever backend the process uses ---------- */

struct agent_store {
    const struct agent_store_ops *ops;
    void *b;
};

struct agent_store *agent_store_open(const char *dir, bool memory, char *err, size_t errlen)
{
    /* DATABASE_URL: the runs are the cluster's (any replica resumes them); memory (tests): SQLite in memory */
    const struct agent_store_ops *ops = !memory && db_pg_enabled() ? &agent_store_pg : &agent_store_sqlite;
    void *b = ops->open(dir, memory, err, errlen);
    if (b == NULL)
        return NULL;
    struct agent_store *s = xcalloc(1, sizeof(*s));
    s->ops = ops;
    s->b = b;
    return s;
}

void agent_store_close(struct agent_store *s)
{
    if (s == NULL)
        return;
    s->ops->close(s->b);
    xfree(s);
}

int agent_store_commit(struct agent_store *s, const char *run_id, const struct as_run *run, const struct as_step *steps,
                       size_t n, char *err, size_t errlen)
{
    return s->ops->commit(s->b, run_id, run, steps, n, err, errlen);
}

int agent_store_get(struct agent_store *s, const char *id, struct as_run *out, char *err, size_t errlen)
{
    return s->ops->get(s->b, id, out, err, errlen);
}

int agent_store_steps(struct agent_store *s, const char *id, struct as_step **out, size_t *n, char *err,
                      size_t errlen)
{
    return s->ops->steps(s->b, id, out, n, err, errlen);
}

int agent_store_events(struct agent_store *s, const char *id, int64_t after, size_t limit, struct as_event **out,
                       size_t *n, int64_t *last, char *err, size_t errlen)
{
    return s->ops->events(s->b, id, after, limit, out, n, last, err, errlen);
}

bool as_status_final(const char *status)
{
    return strcmp(status, "queued") != 0 && strcmp(status, "running") != 0;
}

int agent_store_list(struct agent_store *s, const char *agent, const char *status, size_t limit, struct as_run **out,
                     size_t *n, char *err, size_t errlen)
{
    return s->ops->list(s->b, agent, status, limit, out, n, err, errlen);
}

int agent_store_unfinished(struct agent_store *s, struct as_run **out, size_t *n, char *err, size_t errlen)
{
    return s->ops->unfinished(s->b, out, n, err, errlen);
}

int agent_store_def_put(struct agent_store *s, const char *name, const char *json, char *err, size_t errlen)
{
    return s->ops->def_put(s->b, name, json, err, errlen);
}

int agent_store_def_del(struct agent_store *s, const char *name, char *err, size_t errlen)
{
    return s->ops->def_del(s->b, name, err, errlen);
}

int agent_store_def_list(struct agent_store *s, char ***names, char ***jsons, size_t *n, char *err, size_t errlen)
{
    return s->ops->def_list(s->b, names, jsons, n, err, errlen);
}
