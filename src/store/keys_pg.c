/* keys_pg.c: key records in PostgreSQL (keys_store.h; schema in db_pg.c): table keys_records, the same columns as
 * the SQLite backend. Every write bumps keys_version in its own transaction, so version() (one row read) sees any
 * replica's change at the next poll. The secret's pepper lives in keys_pepper, one for all replicas. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "store/db_pg.h"
#include "store/keys_store.h"

struct keys_store {
    PGconn *c;
};

#define COLS                                                                                                        \
    "id, hash, hint, name, \"user\", team, tags, models, expires_at, budget_usd, budget_window, budget_tokens, "  \
    "rpm, tpm, caller_attribution, created_at, revoked_at, max_concurrent, mcp_tools, mcp_deny"
#define NCOLS 20

static struct keys_store *pg_open(const char *data_dir, struct buf *err)
{
    (void)data_dir;
    (void)err;
    /* the connection is made by the first operation, and again after it breaks */
    return xcalloc(1, sizeof(struct keys_store));
}

static void pg_close(struct keys_store *s)
{
    if (!s)
        return;
    db_pg_close(&s->c);
    xfree(s);
}

static char *tags_json(const struct key_record *r)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < r->ntags; i++)
        cJSON_AddStringToObject(o, r->tags[i].k, r->tags[i].v);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *names_json(char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

/* A JSON array of strings (models, mcp_tools, mcp_deny) into *v; 0, or -1 when it is not an array. */
static int read_names(const char *json, char ***v, size_t *n)
{
    cJSON *a = cJSON_Parse(json);
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return -1;
    }
    *v = xcalloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(char *));
    const cJSON *t;
    cJSON_ArrayForEach(t, a)
    {
        if (cJSON_IsString(t))
            (*v)[(*n)++] = xstrdup(t->valuestring);
    }
    cJSON_Delete(a);
    return 0;
}

/* One write and the version bump in a transaction: 0, 1 when no row matched (update), -1 with err. */
static int write_record(struct keys_store *s, const char *sql, const struct key_record *r, struct buf *err)
{
    if (db_pg_conn(&s->c, err) != 0)
        return -1;
    char num[9][32], *tj = tags_json(r), *mj = names_json(r->models, r->nmodels);
    char *aj = names_json(r->mcp_tools, r->nmcp_tools), *dj = names_json(r->mcp_deny, r->nmcp_deny);
    snprintf(num[0], 32, "%" PRId64, (int64_t)r->expires_at);
    snprintf(num[1], 32, "%.17g", r->budget_usd);
    snprintf(num[2], 32, "%d", (int)r->budget_window);
    snprintf(num[3], 32, "%" PRId64, (int64_t)r->budget_tokens);
    snprintf(num[4], 32, "%" PRId64, (int64_t)r->rpm);
    snprintf(num[5], 32, "%" PRId64, (int64_t)r->tpm);
    snprintf(num[6], 32, "%" PRId64, (int64_t)r->created_at);
    snprintf(num[7], 32, "%" PRId64, (int64_t)r->revoked_at);
    snprintf(num[8], 32, "%" PRId64, (int64_t)r->max_concurrent);
    const char *v[NCOLS] = {r->id,    (const char *)r->hash, r->hint, r->name ? r->name : "",
                            r->user ? r->user : "", r->team ? r->team : "", tj ? tj : "{}", mj ? mj : "[]",
                            num[0],   num[1], num[2], num[3], num[4], num[5],
                            r->caller_attribution ? "true" : "false", num[6], num[7], num[8],
                            aj ? aj : "[]", dj ? dj : "[]"};
    int lens[NCOLS] = {0};
    int fmts[NCOLS] = {0};
    lens[1] = KEY_HASH_LEN;
    fmts[1] = 1;
    int rc = -1;
    if (db_pg_cmd(&s->c, "BEGIN", err) != 0)
        goto out;
    PGresult *res = PQexecParams(s->c, sql, NCOLS, NULL, v, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        db_pg_fail(&s->c, res, "key write", err);
        goto rollback;
    }
    int changed = (int)strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    if (db_pg_cmd(&s->c, "UPDATE keys_version SET v = v + 1 WHERE id = 1", err) != 0 ||
        db_pg_cmd(&s->c, "COMMIT", err) != 0)
        goto rollback;
    db_pg_ok();
    rc = changed > 0 ? 0 : 1;
    goto out;
rollback:
    if (s->c)
        PQclear(PQexec(s->c, "ROLLBACK"));
out:
    cJSON_free(tj);
    cJSON_free(mj);
    cJSON_free(aj);
    cJSON_free(dj);
    return rc;
}

static int pg_insert(struct keys_store *s, const struct key_record *r, struct buf *err)
{
    int rc = write_record(s, "INSERT INTO keys_records (" COLS ") VALUES "
                             "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)", r, err);
    return rc == 0 ? 0 : -1;
}

static int pg_update(struct keys_store *s, const struct key_record *r, struct buf *err)
{
    return write_record(s,
                        "UPDATE keys_records SET hash=$2, hint=$3, name=$4, \"user\"=$5, team=$6, tags=$7, models=$8, "
                        "expires_at=$9, budget_usd=$10, budget_window=$11, budget_tokens=$12, rpm=$13, tpm=$14, "
                        "caller_attribution=$15, created_at=$16, revoked_at=$17, max_concurrent=$18, mcp_tools=$19, "
                        "mcp_deny=$20 WHERE id=$1",
                        r, err);
}

/* Row i (COLS order) into r. */
static int read_row(const PGresult *res, int i, struct key_record *r, struct buf *err)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", db_pg_text(res, i, 0));
    size_t hl = 0;
    unsigned char *h = PQunescapeBytea((const unsigned char *)db_pg_text(res, i, 1), &hl);
    if (h == NULL || hl != KEY_HASH_LEN) {
        PQfreemem(h);
        buf_printf(err, "key store: key %s has a malformed hash", r->id);
        return -1;
    }
    memcpy(r->hash, h, KEY_HASH_LEN);
    PQfreemem(h);
    snprintf(r->hint, sizeof(r->hint), "%s", db_pg_text(res, i, 2));
    r->name = xstrdup(db_pg_text(res, i, 3));
    r->user = xstrdup(db_pg_text(res, i, 4));
    r->team = xstrdup(db_pg_text(res, i, 5));
    cJSON *tags = cJSON_Parse(db_pg_text(res, i, 6));
    int rc = 0;
    if (!cJSON_IsObject(tags) || read_names(db_pg_text(res, i, 7), &r->models, &r->nmodels) != 0) {
        buf_printf(err, "key store: key %s has malformed tags or models", r->id);
        rc = -1;
    } else {
        const cJSON *t;
        r->tags = xcalloc((size_t)cJSON_GetArraySize(tags) + 1, sizeof(*r->tags));
        cJSON_ArrayForEach(t, tags)
        {
            if (cJSON_IsString(t)) {
                r->tags[r->ntags].k = xstrdup(t->string);
                r->tags[r->ntags].v = xstrdup(t->valuestring);
                r->ntags++;
            }
        }
    }
    cJSON_Delete(tags);
    r->expires_at = db_pg_i64(res, i, 8);
    r->budget_usd = strtod(db_pg_text(res, i, 9), NULL);
    int64_t w = db_pg_i64(res, i, 10);
    r->budget_window = (w >= KEY_WINDOW_TOTAL && w <= KEY_WINDOW_MONTH) ? (enum key_window)w : KEY_WINDOW_TOTAL;
    r->budget_tokens = db_pg_i64(res, i, 11);
    r->rpm = db_pg_i64(res, i, 12);
    r->tpm = db_pg_i64(res, i, 13);
    r->caller_attribution = db_pg_text(res, i, 14)[0] == 't';
    r->created_at = db_pg_i64(res, i, 15);
    r->revoked_at = db_pg_i64(res, i, 16);
    r->max_concurrent = db_pg_i64(res, i, 17);
    if (rc == 0 && (read_names(db_pg_text(res, i, 18), &r->mcp_tools, &r->nmcp_tools) != 0 ||
                    read_names(db_pg_text(res, i, 19), &r->mcp_deny, &r->nmcp_deny) != 0)) {
        buf_printf(err, "key store: key %s has malformed mcp_tools or mcp_deny", r->id);
        rc = -1;
    }
    if (rc != 0)
        key_record_free(r);
    return rc;
}

static int pg_get(struct keys_store *s, const char *id, struct key_record *out, struct buf *err)
{
    if (db_pg_conn(&s->c, err) != 0)
        return -1;
    const char *v[1] = {id};
    PGresult *res = PQexecParams(s->c, "SELECT " COLS " FROM keys_records WHERE id=$1", 1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return db_pg_fail(&s->c, res, "key read", err);
    int rc = PQntuples(res) == 0 ? 1 : read_row(res, 0, out, err);
    PQclear(res);
    return rc;
}

static int pg_list(struct keys_store *s, struct key_record **out, size_t *n, struct buf *err)
{
    *out = NULL;
    *n = 0;
    if (db_pg_conn(&s->c, err) != 0)
        return -1;
    PGresult *res = PQexec(s->c, "SELECT " COLS " FROM keys_records ORDER BY seq");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return db_pg_fail(&s->c, res, "key list", err);
    int rows = PQntuples(res);
    struct key_record *v = xcalloc((size_t)rows + 1, sizeof(*v));
    for (int i = 0; i < rows; i++) {
        if (read_row(res, i, &v[*n], err) != 0) {
            PQclear(res);
            keys_records_free(v, *n);
            *n = 0;
            return -1;
        }
        (*n)++;
    }
    PQclear(res);
    db_pg_ok();
    *out = v;
    return 0;
}

static int pg_version(struct keys_store *s, uint64_t *v)
{
    struct buf err = BUF_INIT(1024);
    int rc = -1;
    if (db_pg_conn(&s->c, &err) == 0) {
        PGresult *res = PQexec(s->c, "SELECT v FROM keys_version WHERE id = 1");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            *v = (uint64_t)db_pg_i64(res, 0, 0);
            PQclear(res);
            db_pg_ok();
            rc = 0;
        } else {
            db_pg_fail(&s->c, res, "key version", &err);
        }
    }
    buf_free(&err);
    return rc;
}

static int pg_pepper(struct keys_store *s, uint8_t out[32], struct buf *err)
{
    if (db_pg_conn(&s->c, err) != 0)
        return -1;
    uint8_t fresh[32];
    if (RAND_bytes(fresh, sizeof(fresh)) != 1) {
        buf_printf(err, "no randomness for the key pepper");
        return -1;
    }
    /* the first process to get here sets it; the others read the winner's */
    const char *v[1] = {(const char *)fresh};
    int lens[1] = {32}, fmts[1] = {1};
    PGresult *res = PQexecParams(s->c,
                                 "WITH ins AS (INSERT INTO keys_pepper VALUES (1, $1) ON CONFLICT (id) DO NOTHING"
                                 " RETURNING pepper) SELECT pepper FROM ins UNION ALL"
                                 " SELECT pepper FROM keys_pepper WHERE id = 1",
                                 1, NULL, v, lens, fmts, 1);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0) {
        /* another process inserted it after this statement's snapshot was taken: read it now */
        PQclear(res);
        res = PQexecParams(s->c, "SELECT pepper FROM keys_pepper WHERE id = 1", 0, NULL, NULL, NULL, NULL, 1);
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1 || PQgetlength(res, 0, 0) != 32) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            PQclear(res);
            buf_printf(err, "database: the key pepper is missing or malformed");
            return -1;
        }
        return db_pg_fail(&s->c, res, "key pepper", err);
    }
    memcpy(out, PQgetvalue(res, 0, 0), 32);
    PQclear(res);
    db_pg_ok();
    return 0;
}

const struct keys_store_ops keys_store_pg = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .insert = pg_insert,
    .update = pg_update,
    .get = pg_get,
    .list = pg_list,
    .version = pg_version,
    .pepper = pg_pepper,
};
