/* agent_pg.c: durable agent runs in PostgreSQL (agent_store.h; schema in db_pg.c): agent_runs, agent_steps,
 * agent_defs and agent_events (the event log), the SQLite backend's columns. A commit is one transaction, as
 * there. One connection per store, serialised by a mutex (the run loop calls on the libuv pool).
 *
 * Ownership across replicas: a process holds a session advisory lock on each run it is running (taken by the
 * commit that makes it queued or running, dropped by the one that ends it). unfinished() returns only the runs
 * whose lock it can take, so a replica that restarts resumes the runs of processes that died (their sessions,
 * and locks, ended with them) and leaves alone those a live replica is running. A connection that breaks loses
 * its locks: the next commit of each run takes it again. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common/alloc.h"
#include "store/agent_store.h"
#include "store/db_pg.h"

struct apg {
    PGconn *c;
    PGconn *locked_on; /* the connection the held locks belong to */
    pthread_mutex_t mu;
    char **held; /* ids of the runs whose lock this connection holds */
    size_t nheld, capheld;
};

/* pg_try_advisory_lock(int, int): agentd's runs namespace ('agnt') and the id's hash */
#define RUN_LOCK_NS "1634168436"

static int fail_out(struct buf *e, char *err, size_t errlen)
{
    snprintf(err, errlen, "agent store: %s", e->data ? e->data : "database error");
    buf_free(e);
    return -1;
}

static void *pg_open(const char *dir, bool memory, char *err, size_t errlen)
{
    (void)dir;
    (void)memory;
    (void)err;
    (void)errlen;
    struct apg *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    return s; /* connects on the first operation */
}

static void forget_held(struct apg *s)
{
    for (size_t i = 0; i < s->nheld; i++)
        xfree(s->held[i]);
    s->nheld = 0;
}

static void pg_close(void *p)
{
    struct apg *s = p;
    if (s == NULL)
        return;
    forget_held(s);
    xfree(s->held);
    db_pg_close(&s->c);
    pthread_mutex_destroy(&s->mu);
    xfree(s);
}

static PGresult *q(struct apg *s, const char *sql, int n, const char *const *v, ExecStatusType want, struct buf *e)
{
    PGresult *r = PQexecParams(s->c, sql, n, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        db_pg_fail(&s->c, r, "query", e);
        return NULL;
    }
    return r;
}

/* After db_pg_conn: a new connection holds none of the old one's locks. */
static void check_conn(struct apg *s)
{
    if (s->c != s->locked_on) {
        forget_held(s);
        s->locked_on = s->c;
    }
}

static ssize_t held_at(const struct apg *s, const char *id)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (strcmp(s->held[i], id) == 0)
            return (ssize_t)i;
    return -1;
}

/* Takes the run's lock unless held already: true when this process holds it afterwards. */
static bool claim(struct apg *s, const char *id)
{
    if (held_at(s, id) >= 0)
        return true;
    const char *v[1] = {id};
    PGresult *r = PQexecParams(s->c, "SELECT pg_try_advisory_lock(" RUN_LOCK_NS ", hashtext($1))", 1, NULL, v, NULL,
                               NULL, 0);
    bool got = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && db_pg_text(r, 0, 0)[0] == 't';
    PQclear(r);
    if (got) {
        if (s->nheld == s->capheld) {
            s->capheld = s->capheld ? s->capheld * 2 : 16;
            s->held = xrealloc(s->held, s->capheld * sizeof(char *));
        }
        s->held[s->nheld++] = xstrdup(id);
    }
    return got;
}

static void release(struct apg *s, const char *id)
{
    ssize_t i = held_at(s, id);
    if (i < 0)
        return;
    const char *v[1] = {id};
    PQclear(PQexecParams(s->c, "SELECT pg_advisory_unlock(" RUN_LOCK_NS ", hashtext($1))", 1, NULL, v, NULL, NULL, 0));
    xfree(s->held[i]);
    s->held[i] = s->held[--s->nheld];
}

static bool unfinished_status(const char *status)
{
    return strcmp(status, "queued") == 0 || strcmp(status, "running") == 0;
}

static int put_run(struct apg *s, const struct as_run *r, struct buf *e)
{
    char n[6][32];
    snprintf(n[0], 32, "%" PRId64, r->created_ms);
    snprintf(n[1], 32, "%" PRId64, r->updated_ms);
    snprintf(n[2], 32, "%" PRId64, r->steps);
    snprintf(n[3], 32, "%" PRId64, r->input_tokens);
    snprintf(n[4], 32, "%" PRId64, r->output_tokens);
    snprintf(n[5], 32, "%.17g", r->cost_usd);
    const char *v[18] = {r->id,      r->agent,    r->status, r->limit_name[0] ? r->limit_name : NULL,
                         r->input,   r->messages, r->output, r->error,
                         r->key_id,  r->user,     r->team,   r->workflow,
                         n[0],       n[1],        n[2],      n[3],
                         n[4],       n[5]};
    PGresult *res = q(s,
                      "INSERT INTO agent_runs (id, agent, status, limit_name, input, messages, output, error, key_id,"
                      " \"user\", team, workflow, created_ms, updated_ms, steps, input_tokens, output_tokens, cost_usd)"
                      " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"
                      " ON CONFLICT (id) DO UPDATE SET agent=$2, status=$3, limit_name=$4, input=$5, messages=$6,"
                      " output=$7, error=$8, key_id=$9, \"user\"=$10, team=$11, workflow=$12, created_ms=$13,"
                      " updated_ms=$14, steps=$15, input_tokens=$16, output_tokens=$17, cost_usd=$18",
                      18, v, PGRES_COMMAND_OK, e);
    PQclear(res);
    return res ? 0 : -1;
}

static int put_step(struct apg *s, const char *run_id, const struct as_step *p, struct buf *e)
{
    char n[3][32];
    snprintf(n[0], 32, "%" PRId64, p->seq);
    snprintf(n[1], 32, "%" PRId64, p->t_start_ms);
    snprintf(n[2], 32, "%" PRId64, p->t_end_ms);
    const char *v[10] = {run_id, n[0], p->kind, p->name, p->call_id, p->state, p->request, p->result, n[1], n[2]};
    PGresult *res = q(s,
                      "INSERT INTO agent_steps (run_id, seq, kind, name, call_id, state, request, result, t_start_ms,"
                      " t_end_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (run_id, seq) DO UPDATE SET"
                      " kind=$3, name=$4, call_id=$5, state=$6, request=$7, result=$8, t_start_ms=$9, t_end_ms=$10",
                      10, v, PGRES_COMMAND_OK, e);
    PQclear(res);
    return res ? 0 : -1;
}

/* Appends the run's next event when the state differs from the stored one (seq -1: the run's status), in one
 * statement (agent_store.h: the event log). */
static int log_event(struct apg *s, const char *run_id, int64_t seq, const char *state, struct buf *e)
{
    char n[32];
    snprintf(n, sizeof(n), "%" PRId64, seq);
    const char *v[3] = {run_id, n, state};
    PGresult *res = q(s,
                      seq < 0 ? "INSERT INTO agent_events (run_id, ev, seq, state) SELECT $1::text,"
                                " COALESCE((SELECT MAX(ev) FROM agent_events WHERE run_id = $1::text), 0) + 1,"
                                " $2::bigint, $3::text WHERE NOT EXISTS (SELECT 1 FROM agent_runs"
                                " WHERE id = $1::text AND status = $3::text)"
                              : "INSERT INTO agent_events (run_id, ev, seq, state) SELECT $1::text,"
                                " COALESCE((SELECT MAX(ev) FROM agent_events WHERE run_id = $1::text), 0) + 1,"
                                " $2::bigint, $3::text WHERE NOT EXISTS (SELECT 1 FROM agent_steps"
                                " WHERE run_id = $1::text AND seq = $2::bigint AND state = $3::text)",
                      3, v, PGRES_COMMAND_OK, e);
    PQclear(res);
    return res ? 0 : -1;
}

static int pg_commit(void *p, const char *run_id, const struct as_run *run, const struct as_step *steps, size_t n,
                     char *err, size_t errlen)
{
    struct apg *s = p;
    struct buf e = BUF_INIT(1024);
    pthread_mutex_lock(&s->mu);
    int rc = db_pg_conn(&s->c, &e) == 0 && db_pg_cmd(&s->c, "BEGIN", &e) == 0 ? 0 : -1;
    bool begun = rc == 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = log_event(s, run_id, steps[i].seq, steps[i].state, &e);
    if (rc == 0 && run && as_status_final(run->status))
        rc = log_event(s, run_id, -1, run->status, &e);
    if (rc == 0 && run)
        rc = put_run(s, run, &e);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = put_step(s, run_id, &steps[i], &e);
    if (rc == 0)
        rc = db_pg_cmd(&s->c, "COMMIT", &e);
    if (rc != 0 && begun && s->c)
        PQclear(PQexec(s->c, "ROLLBACK"));
    if (rc == 0) {
        db_pg_ok();
        check_conn(s);
        if (run && unfinished_status(run->status))
            claim(s, run->id);
        else if (run)
            release(s, run->id);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0)
        return fail_out(&e, err, errlen);
    buf_free(&e);
    return 0;
}

static char *dup_or_null(const PGresult *r, int i, int j)
{
    return PQgetisnull(r, i, j) ? NULL : xstrdup(PQgetvalue(r, i, j));
}

#define RUN_COLS                                                                                                   \
    "id, agent, status, limit_name, input, messages, output, error, key_id, \"user\", team, workflow, created_ms," \
    " updated_ms, steps, input_tokens, output_tokens, cost_usd"

static void read_run(const PGresult *res, int i, struct as_run *r, bool with_messages)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", db_pg_text(res, i, 0));
    snprintf(r->agent, sizeof(r->agent), "%s", db_pg_text(res, i, 1));
    snprintf(r->status, sizeof(r->status), "%s", db_pg_text(res, i, 2));
    snprintf(r->limit_name, sizeof(r->limit_name), "%s", db_pg_text(res, i, 3));
    r->input = dup_or_null(res, i, 4);
    r->messages = with_messages ? dup_or_null(res, i, 5) : NULL;
    r->output = dup_or_null(res, i, 6);
    r->error = dup_or_null(res, i, 7);
    snprintf(r->key_id, sizeof(r->key_id), "%s", db_pg_text(res, i, 8));
    snprintf(r->user, sizeof(r->user), "%s", db_pg_text(res, i, 9));
    snprintf(r->team, sizeof(r->team), "%s", db_pg_text(res, i, 10));
    snprintf(r->workflow, sizeof(r->workflow), "%s", db_pg_text(res, i, 11));
    r->created_ms = db_pg_i64(res, i, 12);
    r->updated_ms = db_pg_i64(res, i, 13);
    r->steps = db_pg_i64(res, i, 14);
    r->input_tokens = db_pg_i64(res, i, 15);
    r->output_tokens = db_pg_i64(res, i, 16);
    r->cost_usd = strtod(db_pg_text(res, i, 17), NULL);
}

/* Runs a query under the lock: the result, or NULL with e filled. */
static PGresult *locked_q(struct apg *s, const char *sql, int n, const char *const *v, struct buf *e)
{
    if (db_pg_conn(&s->c, e) != 0)
        return NULL;
    PGresult *r = q(s, sql, n, v, PGRES_TUPLES_OK, e);
    if (r)
        db_pg_ok();
    return r;
}

static int pg_get(void *p, const char *id, struct as_run *out, char *err, size_t errlen)
{
    struct apg *s = p;
    struct buf e = BUF_INIT(1024);
    const char *v[1] = {id};
    pthread_mutex_lock(&s->mu);
    PGresult *r = locked_q(s, "SELECT " RUN_COLS " FROM agent_runs WHERE id = $1", 1, v, &e);
    pthread_mutex_unlock(&s->mu);
    if (r == NULL)
        return fail_out(&e, err, errlen);
    int rc = PQntuples(r) == 0 ? 1 : 0;
    if (rc == 0)
        read_run(r, 0, out, true);
    PQclear(r);
    buf_free(&e);
    return rc;
}

static int pg_steps(void *p, const char *id, struct as_step **out, size_t *n, char *err, size_t errlen)
{
    struct apg *s = p;
    struct buf e = BUF_INIT(1024);
    *out = NULL;
    *n = 0;
    const char *v[1] = {id};
    pthread_mutex_lock(&s->mu);
    PGresult *r = locked_q(s,
                           "SELECT seq, kind, name, call_id, state, CASE WHEN kind = 'llm' THEN NULL ELSE request END,"
                           " result, t_start_ms, t_end_ms FROM agent_steps WHERE run_id = $1 ORDER BY seq",
                           1, v, &e);
    pthread_mutex_unlock(&s->mu);
    if (r == NULL)
        return fail_out(&e, err, errlen);
    int rows = PQntuples(r);
    *out = xcalloc((size_t)rows + 1, sizeof(**out));
    for (int i = 0; i < rows; i++) {
        struct as_step *st = &(*out)[i];
        st->seq = db_pg_i64(r, i, 0);
        snprintf(st->kind, sizeof(st->kind), "%s", db_pg_text(r, i, 1));
        snprintf(st->name, sizeof(st->name), "%s", db_pg_text(r, i, 2));
        snprintf(st->call_id, sizeof(st->call_id), "%s", db_pg_text(r, i, 3));
        snprintf(st->state, sizeof(st->state), "%s", db_pg_text(r, i, 4));
        st->request = dup_or_null(r, i, 5);
        st->result = dup_or_null(r, i, 6);
        st->t_start_ms = db_pg_i64(r, i, 7);
        st->t_end_ms = db_pg_i64(r, i, 8);
    }
    *n = (size_t)rows;
    PQclear(r);
    buf_free(&e);
    return 0;
}

static int pg_events(void *p, const char *id, int64_t after, size_t limit, struct as_event **out, size_t *n,
                     int64_t *last, char *err, size_t errlen)
{
    struct apg *s = p;
    struct buf e = BUF_INIT(1024);
    *out = NULL;
    *n = 0;
    *last = 0;
    char a[32], l[32];
    snprintf(a, sizeof(a), "%" PRId64, after);
    snprintf(l, sizeof(l), "%zu", limit);
    const char *v[3] = {id, a, l};
    /* one statement, one snapshot: the newest number with each row, the rows no later than it */
    pthread_mutex_lock(&s->mu);
    PGresult *r = locked_q(s,
                           "SELECT m.last, e.ev, e.seq, e.state FROM (SELECT COALESCE(MAX(ev), 0) AS last FROM"
                           " agent_events WHERE run_id = $1::text) m LEFT JOIN LATERAL (SELECT ev, seq, state FROM"
                           " agent_events WHERE run_id = $1::text AND ev > $2::bigint ORDER BY ev LIMIT $3::bigint) e"
                           " ON true",
                           3, v, &e);
    pthread_mutex_unlock(&s->mu);
    if (r == NULL)
        return fail_out(&e, err, errlen);
    int rows = PQntuples(r);
    *out = xcalloc((size_t)rows + 1, sizeof(**out));
    for (int i = 0; i < rows; i++) {
        *last = db_pg_i64(r, i, 0);
        if (PQgetisnull(r, i, 1))
            continue; /* no event after `after`: the one row of the left join */
        struct as_event *ev = &(*out)[(*n)++];
        ev->ev = db_pg_i64(r, i, 1);
        ev->seq = db_pg_i64(r, i, 2);
        snprintf(ev->state, sizeof(ev->state), "%s", db_pg_text(r, i, 3));
    }
    PQclear(r);
    buf_free(&e);
    return 0;
}

static int list_where(struct apg *s, const char *sql, int nv, const char *const *v, bool with_messages,
                      struct as_run **out, size_t *n, char *err, size_t errlen)
{
    struct buf e = BUF_INIT(1024);
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    PGresult *r = locked_q(s, sql, nv, v, &e);
    pthread_mutex_unlock(&s->mu);
    if (r == NULL)
        return fail_out(&e, err, errlen);
    int rows = PQntuples(r);
    *out = xcalloc((size_t)rows + 1, sizeof(**out));
    for (int i = 0; i < rows; i++)
        read_run(r, i, &(*out)[i], with_messages);
    *n = (size_t)rows;
    PQclear(r);
    buf_free(&e);
    return 0;
}

static int pg_list(void *p, const char *agent, const char *status, size_t limit, struct as_run **out, size_t *n,
                   char *err, size_t errlen)
{
    char lim[32];
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *v[3] = {agent ? agent : "", status ? status : "", lim};
    return list_where(p,
                      "SELECT " RUN_COLS " FROM agent_runs WHERE ($1 = '' OR agent = $1) AND ($2 = '' OR status = $2)"
                      " ORDER BY created_ms DESC, id DESC LIMIT $3",
                      3, v, false, out, n, err, errlen);
}

/* The unfinished runs no live process holds, each now held by this one. */
static int pg_unfinished(void *p, struct as_run **out, size_t *n, char *err, size_t errlen)
{
    struct apg *s = p;
    if (list_where(s,
                   "SELECT " RUN_COLS " FROM agent_runs WHERE status IN ('queued', 'running')"
                   " ORDER BY created_ms LIMIT 100000",
                   0, NULL, true, out, n, err, errlen) != 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    check_conn(s);
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (s->c && claim(s, (*out)[i].id))
            (*out)[k++] = (*out)[i];
        else
            as_run_free(&(*out)[i]); /* a live replica runs it */
    }
    *n = k;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int exec_cmd(struct apg *s, const char *sql, int nv, const char *const *v, int *changed, char *err,
                    size_t errlen)
{
    struct buf e = BUF_INIT(1024);
    pthread_mutex_lock(&s->mu);
    PGresult *r = NULL;
    if (db_pg_conn(&s->c, &e) == 0)
        r = q(s, sql, nv, v, PGRES_COMMAND_OK, &e);
    if (r) {
        *changed = (int)strtol(PQcmdTuples(r), NULL, 10);
        db_pg_ok();
    }
    PQclear(r);
    pthread_mutex_unlock(&s->mu);
    if (r == NULL)
        return fail_out(&e, err, errlen);
    buf_free(&e);
    return 0;
}

static int pg_def_put(void *p, const char *name, const char *json, char *err, size_t errlen)
{
    const char *v[2] = {name, json};
    int changed;
    return exec_cmd(p, "INSERT INTO agent_defs (name, json) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET json = $2",
                    2, v, &changed, err, errlen);
}

static int pg_def_del(void *p, const char *name, char *err, size_t errlen)
{
    const char *v[1] = {name};
    int changed = 0;
    if (exec_cmd(p, "DELETE FROM agent_defs WHERE name = $1", 1, v, &changed, err, errlen) != 0)
        return -1;
    return changed ? 0 : 1;
}

static int pg_def_list(void *p, char ***names, char ***jsons, size_t *n, char *err, size_t errlen)
{
    struct apg *s = p;
    struct buf e = BUF_INIT(1024);
    *names = *jsons = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    PGresult *r = locked_q(s, "SELECT name, json FROM agent_defs ORDER BY name", 0, NULL, &e);
    pthread_mutex_unlock(&s->mu);
    if (r == NULL)
        return fail_out(&e, err, errlen);
    int rows = PQntuples(r);
    if (rows > 0) {
        *names = xcalloc((size_t)rows, sizeof(char *));
        *jsons = xcalloc((size_t)rows, sizeof(char *));
    }
    for (int i = 0; i < rows; i++) {
        (*names)[i] = xstrdup(db_pg_text(r, i, 0));
        (*jsons)[i] = xstrdup(db_pg_text(r, i, 1));
    }
    *n = (size_t)rows;
    PQclear(r);
    buf_free(&e);
    return 0;
}

const struct agent_store_ops agent_store_pg = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .commit = pg_commit,
    .get = pg_get,
    .steps = pg_steps,
    .events = pg_events,
    .list = pg_list,
    .unfinished = pg_unfinished,
    .def_put = pg_def_put,
    .def_del = pg_def_del,
    .def_list = pg_def_list,
};
