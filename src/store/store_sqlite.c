/* store_sqlite.c: the embedded store backend: one SQLite database (WAL) in the data dir, agentd.db.
 *
 *   records(kind, id, created, expires, bytes, data)   PRIMARY KEY (kind, id)
 *
 * Bounds (store.h): a put first drops expired records, then evicts the oldest records until the new one fits in
 * max_bytes. The bytes kept are counted once at open and tracked by every change, so a put never sums the table.
 * One connection, serialised by a mutex: calls come from the libuv thread pool, several at a time. */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "store/store.h"

struct sq {
    sqlite3 *db;
    pthread_mutex_t mu;
    int64_t max_bytes;
    int64_t bytes, records;
    sqlite3_stmt *put, *get, *del, *size_of, *expire, *oldest, *sum;
};

static void sq_err(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "store: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static void sq_close(void *p)
{
    struct sq *s = p;
    if (s == NULL)
        return;
    sqlite3_stmt *all[] = {s->put, s->get, s->del, s->size_of, s->expire, s->oldest, s->sum};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    xfree(s);
}

static int prepare(struct sq *s, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        sq_err(s->db, "prepare", err, errlen);
        return -1;
    }
    return 0;
}

static void *sq_open(const struct store_options *o, char *err, size_t errlen)
{
    char path[4096];
    if (o->memory) {
        snprintf(path, sizeof(path), ":memory:");
    } else {
        if (o->dir == NULL || o->dir[0] == '\0') {
            snprintf(err, errlen, "store: no data dir (server.data_dir)");
            return NULL;
        }
        if (mkdir(o->dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "store: cannot create the data dir %s: %s", o->dir, strerror(errno));
            return NULL;
        }
        if ((size_t)snprintf(path, sizeof(path), "%s/agentd.db", o->dir) >= sizeof(path)) {
            snprintf(err, errlen, "store: the data dir path is too long");
            return NULL;
        }
    }
    struct sq *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->max_bytes = o->max_bytes;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sq_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, 5000);
    static const char *const ddl =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS records ("
        " kind TEXT NOT NULL, id TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL,"
        " bytes INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (kind, id));"
        "CREATE INDEX IF NOT EXISTS records_created ON records(created);"
        "CREATE INDEX IF NOT EXISTS records_expires ON records(expires);";
    char *msg = NULL;
    if (sqlite3_exec(s->db, ddl, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "store: cannot create the schema in %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sq_close(s);
        return NULL;
    }
    if (prepare(s,
                "INSERT INTO records(kind,id,created,expires,bytes,data) VALUES(?1,?2,?3,?4,?5,?6) "
                "ON CONFLICT(kind,id) DO UPDATE SET created=?3, expires=?4, bytes=?5, data=?6",
                &s->put, err, errlen) ||
        prepare(s, "SELECT data, expires FROM records WHERE kind=?1 AND id=?2", &s->get, err, errlen) ||
        prepare(s, "DELETE FROM records WHERE kind=?1 AND id=?2", &s->del, err, errlen) ||
        prepare(s, "SELECT bytes FROM records WHERE kind=?1 AND id=?2", &s->size_of, err, errlen) ||
        prepare(s, "DELETE FROM records WHERE expires <= ?1", &s->expire, err, errlen) ||
        prepare(s, "SELECT kind, id, bytes FROM records ORDER BY created, rowid LIMIT 64", &s->oldest, err, errlen) ||
        prepare(s, "SELECT COALESCE(SUM(bytes),0), COUNT(*) FROM records", &s->sum, err, errlen)) {
        sq_close(s);
        return NULL;
    }
    if (sqlite3_step(s->sum) == SQLITE_ROW) {
        s->bytes = sqlite3_column_int64(s->sum, 0);
        s->records = sqlite3_column_int64(s->sum, 1);
    }
    sqlite3_reset(s->sum);
    return s;
}

static void recount(struct sq *s)
{
    if (sqlite3_step(s->sum) == SQLITE_ROW) {
        s->bytes = sqlite3_column_int64(s->sum, 0);
        s->records = sqlite3_column_int64(s->sum, 1);
    }
    sqlite3_reset(s->sum);
}

/* Bytes of one record, or -1 when absent. */
static int64_t size_of(struct sq *s, const char *kind, const char *id)
{
    sqlite3_bind_text(s->size_of, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->size_of, 2, id, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(s->size_of) == SQLITE_ROW ? sqlite3_column_int64(s->size_of, 0) : -1;
    sqlite3_reset(s->size_of);
    sqlite3_clear_bindings(s->size_of);
    return n;
}

static int delete_one(struct sq *s, const char *kind, const char *id)
{
    sqlite3_bind_text(s->del, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->del, 2, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s->del);
    int changed = sqlite3_changes(s->db);
    sqlite3_reset(s->del);
    sqlite3_clear_bindings(s->del);
    return rc == SQLITE_DONE ? changed : -1;
}

/* Makes room for `need` bytes (the record under kind/id, if present, is replaced and does not count). */
static int make_room(struct sq *s, int64_t now, int64_t need, int64_t replaced)
{
    sqlite3_bind_int64(s->expire, 1, now);
    int rc = sqlite3_step(s->expire);
    int dropped = sqlite3_changes(s->db);
    sqlite3_reset(s->expire);
    if (rc != SQLITE_DONE)
        return -1;
    if (dropped > 0)
        recount(s);
    if (s->max_bytes <= 0)
        return 0;
    while (s->bytes - replaced + need > s->max_bytes && s->records > 0) {
        /* the oldest few at a time: one scan of the index per batch */
        char kinds[64][STORE_MAX_ID + 1], ids[64][STORE_MAX_ID + 1];
        int64_t sizes[64];
        int n = 0;
        int64_t freed = 0;
        while (n < 64 && s->bytes - replaced - freed + need > s->max_bytes && sqlite3_step(s->oldest) == SQLITE_ROW) {
            snprintf(kinds[n], sizeof(kinds[n]), "%s", (const char *)sqlite3_column_text(s->oldest, 0));
            snprintf(ids[n], sizeof(ids[n]), "%s", (const char *)sqlite3_column_text(s->oldest, 1));
            sizes[n] = sqlite3_column_int64(s->oldest, 2);
            freed += sizes[n];
            n++;
        }
        sqlite3_reset(s->oldest);
        if (n == 0)
            break;
        for (int i = 0; i < n; i++)
            if (delete_one(s, kinds[i], ids[i]) > 0) {
                s->bytes -= sizes[i];
                s->records--;
            }
    }
    return 0;
}

/* One record inside the caller's transaction, under s->mu. */
static int put_locked(struct sq *s, const struct store_rec *r, char *err, size_t errlen)
{
    int64_t old = size_of(s, r->kind, r->id);
    if (make_room(s, r->created_ms, (int64_t)r->len, old > 0 ? old : 0) != 0) {
        sq_err(s->db, "evict", err, errlen);
        return STORE_ERROR;
    }
    old = size_of(s, r->kind, r->id); /* eviction may have taken it */
    sqlite3_bind_text(s->put, 1, r->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put, 2, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->put, 3, r->created_ms);
    sqlite3_bind_int64(s->put, 4, r->expires_ms);
    sqlite3_bind_int64(s->put, 5, (int64_t)r->len);
    sqlite3_bind_blob(s->put, 6, r->len ? r->data : "", (int)r->len, SQLITE_STATIC);
    int rc = sqlite3_step(s->put);
    sqlite3_reset(s->put);
    sqlite3_clear_bindings(s->put);
    if (rc != SQLITE_DONE) {
        sq_err(s->db, "insert", err, errlen);
        return STORE_ERROR;
    }
    if (old >= 0) {
        s->bytes += (int64_t)r->len - old;
    } else {
        s->bytes += (int64_t)r->len;
        s->records++;
    }
    return STORE_OK;
}

static int sq_put_many(void *p, const struct store_rec *recs, size_t n, char *err, size_t errlen)
{
    struct sq *s = p;
    pthread_mutex_lock(&s->mu);
    int ret = STORE_OK;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        sq_err(s->db, "begin", err, errlen);
        ret = STORE_ERROR;
        goto out;
    }
    for (size_t i = 0; i < n && ret == STORE_OK; i++)
        ret = put_locked(s, &recs[i], err, errlen);
    if (ret == STORE_OK && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sq_err(s->db, "commit", err, errlen);
        ret = STORE_ERROR;
    }
    if (ret != STORE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        recount(s); /* the counters moved with statements that were rolled back */
    }
out:
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static int sq_put(void *p, const char *kind, const char *id, int64_t created_ms, int64_t expires_ms,
                  const void *data, size_t len, char *err, size_t errlen)
{
    struct store_rec r = {kind, id, created_ms, expires_ms, data, len};
    return sq_put_many(p, &r, 1, err, errlen);
}

static int sq_get(void *p, const char *kind, const char *id, int64_t now_ms, struct buf *out, char *err,
                  size_t errlen)
{
    struct sq *s = p;
    pthread_mutex_lock(&s->mu);
    sqlite3_bind_text(s->get, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->get, 2, id, -1, SQLITE_STATIC);
    int ret;
    int rc = sqlite3_step(s->get);
    if (rc == SQLITE_ROW) {
        int64_t expires = sqlite3_column_int64(s->get, 1);
        if (expires <= now_ms) {
            ret = STORE_NOT_FOUND;
        } else {
            const void *d = sqlite3_column_blob(s->get, 0);
            int n = sqlite3_column_bytes(s->get, 0);
            ret = buf_append(out, d ? d : "", (size_t)n) == 0 ? STORE_OK : STORE_ERROR;
            if (ret != STORE_OK)
                snprintf(err, errlen, "store: the record does not fit the caller's buffer");
        }
    } else if (rc == SQLITE_DONE) {
        ret = STORE_NOT_FOUND;
    } else {
        sq_err(s->db, "select", err, errlen);
        ret = STORE_ERROR;
    }
    sqlite3_reset(s->get);
    sqlite3_clear_bindings(s->get);
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static int sq_del(void *p, const char *kind, const char *id, char *err, size_t errlen)
{
    struct sq *s = p;
    pthread_mutex_lock(&s->mu);
    int64_t old = size_of(s, kind, id);
    int n = delete_one(s, kind, id);
    int ret;
    if (n < 0) {
        sq_err(s->db, "delete", err, errlen);
        ret = STORE_ERROR;
    } else if (n == 0) {
        ret = STORE_NOT_FOUND;
    } else {
        s->bytes -= old > 0 ? old : 0;
        s->records--;
        ret = STORE_OK;
    }
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static int sq_stats(void *p, int64_t *bytes, int64_t *records)
{
    struct sq *s = p;
    pthread_mutex_lock(&s->mu);
    *bytes = s->bytes;
    *records = s->records;
    pthread_mutex_unlock(&s->mu);
    return STORE_OK;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .put = sq_put,
    .get = sq_get,
    .del = sq_del,
    .put_many = sq_put_many,
    .stats = sq_stats,
    .close = sq_close,
};
