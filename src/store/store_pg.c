/* store_pg.c: stored responses and threads in PostgreSQL (store.h; schema in db_pg.c):
 *
 *   store_records(kind, id, seq, created, expires, bytes, data)   PRIMARY KEY (kind, id)
 *   store_usage(bytes, records)                                    one row, kept by every change
 *
 * The bounds are the SQLite backend's: a put drops expired records, then evicts the oldest until the new one fits
 * in max_bytes. A put locks the usage row, so replicas writing at once take turns and the counts stay exact;
 * nothing sums the table. One connection per store, serialised by a mutex (calls come from the libuv pool). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "store/db_pg.h"
#include "store/store.h"

struct pgs {
    PGconn *c;
    pthread_mutex_t mu;
    int64_t max_bytes;
};

static void copy_err(struct buf *b, char *err, size_t errlen)
{
    snprintf(err, errlen, "store: %s", b->data ? b->data : "database error");
    buf_free(b);
}

static void *pg_open(const struct store_options *o, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct pgs *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->max_bytes = o->max_bytes;
    return s; /* connects on the first operation */
}

static void pg_close(void *p)
{
    struct pgs *s = p;
    if (s == NULL)
        return;
    db_pg_close(&s->c);
    pthread_mutex_destroy(&s->mu);
    xfree(s);
}

/* A query with text parameters (the last one binary when blob_len >= 0): its result, or NULL with err. */
static PGresult *q(struct pgs *s, const char *sql, int n, const char *const *v, int blob_len, ExecStatusType want,
                   struct buf *err)
{
    int lens[8] = {0}, fmts[8] = {0};
    if (blob_len >= 0 && n > 0) {
        lens[n - 1] = blob_len;
        fmts[n - 1] = 1;
    }
    PGresult *r = PQexecParams(s->c, sql, n, NULL, v, lens, fmts, 0);
    if (PQresultStatus(r) != want) {
        db_pg_fail(&s->c, r, "query", err);
        return NULL;
    }
    return r;
}

static int cmd_i64(struct pgs *s, const char *sql, int n, const char *const *v, int64_t *a, int64_t *b,
                   struct buf *err)
{
    PGresult *r = q(s, sql, n, v, -1, PGRES_TUPLES_OK, err);
    if (r == NULL)
        return -1;
    *a = PQntuples(r) > 0 ? db_pg_i64(r, 0, 0) : -1;
    if (b)
        *b = PQntuples(r) > 0 ? db_pg_i64(r, 0, 1) : 0;
    PQclear(r);
    return 0;
}

/* One record inside the caller's transaction (the usage row locked, its values in *bytes, *records). */
static int put_locked(struct pgs *s, const struct store_rec *r, int64_t *bytes, int64_t *records, struct buf *err)
{
    char now[32], need[32], excess[32], created[32], expires[32];
    snprintf(now, sizeof(now), "%" PRId64, r->created_ms);
    const char *v1[] = {now};
    int64_t fb, fn;
    if (cmd_i64(s,
                "WITH d AS (DELETE FROM store_records WHERE expires <= $1 RETURNING bytes)"
                " SELECT coalesce(sum(bytes), 0), count(*) FROM d",
                1, v1, &fb, &fn, err) != 0)
        return -1;
    *bytes -= fb;
    *records -= fn;
    const char *v2[] = {r->kind, r->id};
    int64_t old;
    if (cmd_i64(s, "SELECT bytes FROM store_records WHERE kind = $1 AND id = $2", 2, v2, &old, NULL, err) != 0)
        return -1;
    while (s->max_bytes > 0 && *bytes - (old > 0 ? old : 0) + (int64_t)r->len > s->max_bytes && *records > 0) {
        /* the oldest few at a time, only as many as make room */
        snprintf(excess, sizeof(excess), "%" PRId64, *bytes - (old > 0 ? old : 0) + (int64_t)r->len - s->max_bytes);
        const char *v3[] = {excess, r->kind, r->id};
        if (cmd_i64(s,
                    "WITH o AS (SELECT kind, id, bytes, sum(bytes) OVER (ORDER BY created, seq) AS cum FROM"
                    " (SELECT kind, id, bytes, created, seq FROM store_records ORDER BY created, seq LIMIT 64) x),"
                    " d AS (DELETE FROM store_records t USING o WHERE t.kind = o.kind AND t.id = o.id"
                    " AND o.cum - o.bytes < $1::bigint RETURNING t.bytes, (t.kind = $2 AND t.id = $3) AS same)"
                    " SELECT coalesce(sum(bytes), 0), count(*), bool_or(same) FROM d",
                    3, v3, &fb, &fn, err) != 0)
            return -1;
        if (fn == 0)
            break;
        *bytes -= fb;
        *records -= fn;
        if (cmd_i64(s, "SELECT bytes FROM store_records WHERE kind = $1 AND id = $2", 2, v2, &old, NULL, err) != 0)
            return -1; /* eviction may have taken it */
    }
    snprintf(created, sizeof(created), "%" PRId64, r->created_ms);
    snprintf(expires, sizeof(expires), "%" PRId64, r->expires_ms);
    snprintf(need, sizeof(need), "%zu", r->len);
    const char *v4[] = {r->kind, r->id, created, expires, need, r->len ? r->data : ""};
    PGresult *res = q(s,
                      "INSERT INTO store_records (kind, id, created, expires, bytes, data) VALUES ($1,$2,$3,$4,$5,$6)"
                      " ON CONFLICT (kind, id) DO UPDATE SET created = $3, expires = $4, bytes = $5, data = $6,"
                      " seq = nextval(pg_get_serial_sequence('store_records', 'seq'))",
                      6, v4, (int)r->len, PGRES_COMMAND_OK, err);
    if (res == NULL)
        return -1;
    PQclear(res);
    if (old >= 0) {
        *bytes += (int64_t)r->len - old;
    } else {
        *bytes += (int64_t)r->len;
        (*records)++;
    }
    return 0;
}

static int set_usage(struct pgs *s, int64_t bytes, int64_t records, struct buf *err)
{
    char b[32], n[32];
    snprintf(b, sizeof(b), "%" PRId64, bytes < 0 ? 0 : bytes);
    snprintf(n, sizeof(n), "%" PRId64, records < 0 ? 0 : records);
    const char *v[] = {b, n};
    PGresult *r = q(s, "UPDATE store_usage SET bytes = $1, records = $2 WHERE id = 1", 2, v, -1, PGRES_COMMAND_OK,
                    err);
    PQclear(r);
    return r ? 0 : -1;
}

static int pg_put_many(void *p, const struct store_rec *recs, size_t n, char *err, size_t errlen)
{
    struct pgs *s = p;
    struct buf e = BUF_INIT(1024);
    pthread_mutex_lock(&s->mu);
    int ret = STORE_ERROR;
    int64_t bytes, records;
    if (db_pg_conn(&s->c, &e) != 0 || db_pg_cmd(&s->c, "BEGIN", &e) != 0)
        goto out;
    if (cmd_i64(s, "SELECT bytes, records FROM store_usage WHERE id = 1 FOR UPDATE", 0, NULL, &bytes, &records,
                &e) != 0)
        goto rollback;
    for (size_t i = 0; i < n; i++)
        if (put_locked(s, &recs[i], &bytes, &records, &e) != 0)
            goto rollback;
    if (set_usage(s, bytes, records, &e) != 0 || db_pg_cmd(&s->c, "COMMIT", &e) != 0)
        goto rollback;
    db_pg_ok();
    ret = STORE_OK;
    goto out;
rollback:
    if (s->c)
        PQclear(PQexec(s->c, "ROLLBACK"));
out:
    pthread_mutex_unlock(&s->mu);
    if (ret != STORE_OK)
        copy_err(&e, err, errlen);
    buf_free(&e);
    return ret;
}

static int pg_put(void *p, const char *kind, const char *id, int64_t created_ms, int64_t expires_ms, const void *data,
                  size_t len, char *err, size_t errlen)
{
    struct store_rec r = {kind, id, created_ms, expires_ms, data, len};
    return pg_put_many(p, &r, 1, err, errlen);
}

static int pg_get(void *p, const char *kind, const char *id, int64_t now_ms, struct buf *out, char *err,
                  size_t errlen)
{
    struct pgs *s = p;
    struct buf e = BUF_INIT(1024);
    pthread_mutex_lock(&s->mu);
    int ret = STORE_ERROR;
    char now[32];
    snprintf(now, sizeof(now), "%" PRId64, now_ms);
    const char *v[] = {kind, id, now};
    if (db_pg_conn(&s->c, &e) == 0) {
        PGresult *r = PQexecParams(s->c, "SELECT data FROM store_records WHERE kind = $1 AND id = $2 AND expires > $3",
                                   3, NULL, v, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            db_pg_fail(&s->c, r, "select", &e);
        } else {
            if (PQntuples(r) == 0) {
                ret = STORE_NOT_FOUND;
            } else if (buf_append(out, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0)) == 0) {
                ret = STORE_OK;
            } else {
                buf_printf(&e, "the record does not fit the caller's buffer");
            }
            PQclear(r);
            db_pg_ok();
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (ret == STORE_ERROR)
        copy_err(&e, err, errlen);
    buf_free(&e);
    return ret;
}

static int pg_del(void *p, const char *kind, const char *id, char *err, size_t errlen)
{
    struct pgs *s = p;
    struct buf e = BUF_INIT(1024);
    pthread_mutex_lock(&s->mu);
    int ret = STORE_ERROR;
    const char *v[] = {kind, id};
    int64_t b = 0, n = 0;
    if (db_pg_conn(&s->c, &e) == 0 &&
        cmd_i64(s,
                "WITH d AS (DELETE FROM store_records WHERE kind = $1 AND id = $2 RETURNING bytes),"
                " u AS (UPDATE store_usage SET bytes = bytes - (SELECT coalesce(sum(bytes), 0) FROM d),"
                " records = records - (SELECT count(*) FROM d) WHERE id = 1)"
                " SELECT coalesce(sum(bytes), 0), count(*) FROM d",
                2, v, &b, &n, &e) == 0) {
        db_pg_ok();
        ret = n > 0 ? STORE_OK : STORE_NOT_FOUND;
    }
    pthread_mutex_unlock(&s->mu);
    if (ret == STORE_ERROR)
        copy_err(&e, err, errlen);
    buf_free(&e);
    return ret;
}

static int pg_stats(void *p, int64_t *bytes, int64_t *records)
{
    struct pgs *s = p;
    struct buf e = BUF_INIT(1024);
    pthread_mutex_lock(&s->mu);
    int ret = STORE_ERROR;
    if (db_pg_conn(&s->c, &e) == 0 &&
        cmd_i64(s, "SELECT bytes, records FROM store_usage WHERE id = 1", 0, NULL, bytes, records, &e) == 0)
        ret = STORE_OK;
    pthread_mutex_unlock(&s->mu);
    buf_free(&e);
    return ret;
}

const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .put = pg_put,
    .get = pg_get,
    .del = pg_del,
    .put_many = pg_put_many,
    .stats = pg_stats,
    .close = pg_close,
};
