/* keys_sqlite.c: key records in SQLite (WAL) in DATA_DIR/agentd.db, table keys_records (see keys_store.h). Tags
 * and models are stored as JSON text; the secret's hash is a unique blob. */
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "store/keys_store.h"

struct keys_store {
    sqlite3 *db;
    uint64_t own_changes; /* data_version does not move for this connection's own commits */
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS keys_records ("
    " id TEXT PRIMARY KEY,"
    " hash BLOB NOT NULL UNIQUE,"
    " hint TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " user TEXT NOT NULL,"
    " team TEXT NOT NULL,"
    " tags TEXT NOT NULL,"
    " models TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " budget_usd REAL NOT NULL,"
    " budget_window INTEGER NOT NULL,"
    " budget_tokens INTEGER NOT NULL,"
    " rpm INTEGER NOT NULL,"
    " tpm INTEGER NOT NULL,"
    " caller_attribution INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " revoked_at INTEGER NOT NULL)";

/* Columns added after the first release. A file written by an older agentd lacks them: sq_open adds each one
 * that is missing (ALTER TABLE ... ADD COLUMN with a default, so old rows read as "no limit"). */
static const struct {
    const char *name, *ddl;
} added_columns[] = {
    {"max_concurrent", "ALTER TABLE keys_records ADD COLUMN max_concurrent INTEGER NOT NULL DEFAULT 0"},
    {"mcp_tools", "ALTER TABLE keys_records ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '[]'"},
    {"mcp_deny", "ALTER TABLE keys_records ADD COLUMN mcp_deny TEXT NOT NULL DEFAULT '[]'"},
};

#define COLS                                                                                                        \
    "id, hash, hint, name, user, team, tags, models, expires_at, budget_usd, budget_window, budget_tokens, rpm, "  \
    "tpm, caller_attribution, created_at, revoked_at, max_concurrent, mcp_tools, mcp_deny"

static void db_err(struct buf *err, sqlite3 *db, const char *what)
{
    buf_printf(err, "key store: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static bool has_column(sqlite3 *db, const char *col)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('keys_records') WHERE name=?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, col, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

/* Adds the columns an older file lacks. Two processes opening the same old file at once may both try: the loser's
 * ALTER fails with "duplicate column", which is checked again and not an error. */
static int migrate(sqlite3 *db, struct buf *err)
{
    for (size_t i = 0; i < sizeof(added_columns) / sizeof(added_columns[0]); i++) {
        if (has_column(db, added_columns[i].name))
            continue;
        char *msg = NULL;
        if (sqlite3_exec(db, added_columns[i].ddl, NULL, NULL, &msg) != SQLITE_OK &&
            !has_column(db, added_columns[i].name)) {
            buf_printf(err, "key store: adding column %s: %s", added_columns[i].name,
                       msg ? msg : sqlite3_errmsg(db));
            sqlite3_free(msg);
            return -1;
        }
        sqlite3_free(msg);
    }
    return 0;
}

static struct keys_store *sq_open(const char *data_dir, struct buf *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/agentd.db", data_dir) >= sizeof(path)) {
        buf_printf(err, "key store: data dir path too long");
        return NULL;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        db_err(err, db, path);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        buf_printf(err, "key store: %s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    if (migrate(db, err) != 0) {
        sqlite3_close(db);
        return NULL;
    }
    struct keys_store *s = xcalloc(1, sizeof(*s));
    s->db = db;
    return s;
}

static void sq_close(struct keys_store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
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

static char *models_json(const struct key_record *r)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < r->nmodels; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(r->models[i]));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
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

/* Binds r to ?1..?20 in COLS order. */
static void bind_record(sqlite3_stmt *st, const struct key_record *r, char **tj, char **mj, char **aj, char **dj)
{
    *tj = tags_json(r);
    *mj = models_json(r);
    *aj = names_json(r->mcp_tools, r->nmcp_tools);
    *dj = names_json(r->mcp_deny, r->nmcp_deny);
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, r->hash, KEY_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->hint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->name ? r->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->user ? r->user : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->team ? r->team : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, *tj ? *tj : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, *mj ? *mj : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, r->expires_at);
    sqlite3_bind_double(st, 10, r->budget_usd);
    sqlite3_bind_int(st, 11, (int)r->budget_window);
    sqlite3_bind_int64(st, 12, r->budget_tokens);
    sqlite3_bind_int64(st, 13, r->rpm);
    sqlite3_bind_int64(st, 14, r->tpm);
    sqlite3_bind_int(st, 15, r->caller_attribution ? 1 : 0);
    sqlite3_bind_int64(st, 16, r->created_at);
    sqlite3_bind_int64(st, 17, r->revoked_at);
    sqlite3_bind_int64(st, 18, r->max_concurrent);
    sqlite3_bind_text(st, 19, *aj ? *aj : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 20, *dj ? *dj : "[]", -1, SQLITE_STATIC);
}

static int write_record(struct keys_store *s, const char *sql, const struct key_record *r, struct buf *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_err(err, s->db, "prepare");
        return -1;
    }
    char *tj = NULL, *mj = NULL, *aj = NULL, *dj = NULL;
    bind_record(st, r, &tj, &mj, &aj, &dj);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    cJSON_free(tj);
    cJSON_free(mj);
    cJSON_free(aj);
    cJSON_free(dj);
    if (rc != SQLITE_DONE) {
        db_err(err, s->db, "write");
        return -1;
    }
    s->own_changes++;
    return changed > 0 ? 0 : 1;
}

static int sq_insert(struct keys_store *s, const struct key_record *r, struct buf *err)
{
    int rc = write_record(s, "INSERT INTO keys_records (" COLS ") VALUES "
                             "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20)", r, err);
    return rc == 0 ? 0 : -1;
}

static int sq_update(struct keys_store *s, const struct key_record *r, struct buf *err)
{
    return write_record(s,
                        "UPDATE keys_records SET hash=?2, hint=?3, name=?4, user=?5, team=?6, tags=?7, models=?8, "
                        "expires_at=?9, budget_usd=?10, budget_window=?11, budget_tokens=?12, rpm=?13, tpm=?14, "
                        "caller_attribution=?15, created_at=?16, revoked_at=?17, max_concurrent=?18, mcp_tools=?19, mcp_deny=?20 WHERE id=?1",
                        r, err);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* A JSON array of strings (mcp_tools, mcp_deny) into *v; 0, or -1 when it is not an array. */
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

/* A row in COLS order into r. Stored JSON that does not parse is an error (the file was edited by hand). */
static int read_row(sqlite3_stmt *st, struct key_record *r, struct buf *err)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", col_text(st, 0));
    if (sqlite3_column_bytes(st, 1) != KEY_HASH_LEN) {
        buf_printf(err, "key store: key %s has a malformed hash", r->id);
        return -1;
    }
    memcpy(r->hash, sqlite3_column_blob(st, 1), KEY_HASH_LEN);
    snprintf(r->hint, sizeof(r->hint), "%s", col_text(st, 2));
    r->name = xstrdup(col_text(st, 3));
    r->user = xstrdup(col_text(st, 4));
    r->team = xstrdup(col_text(st, 5));
    cJSON *tags = cJSON_Parse(col_text(st, 6));
    cJSON *models = cJSON_Parse(col_text(st, 7));
    int rc = 0;
    if (!cJSON_IsObject(tags) || !cJSON_IsArray(models)) {
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
        r->models = xcalloc((size_t)cJSON_GetArraySize(models) + 1, sizeof(char *));
        cJSON_ArrayForEach(t, models)
        {
            if (cJSON_IsString(t))
                r->models[r->nmodels++] = xstrdup(t->valuestring);
        }
    }
    cJSON_Delete(tags);
    cJSON_Delete(models);
    r->expires_at = sqlite3_column_int64(st, 8);
    r->budget_usd = sqlite3_column_double(st, 9);
    int w = sqlite3_column_int(st, 10);
    r->budget_window = (w >= KEY_WINDOW_TOTAL && w <= KEY_WINDOW_MONTH) ? (enum key_window)w : KEY_WINDOW_TOTAL;
    r->budget_tokens = sqlite3_column_int64(st, 11);
    r->rpm = sqlite3_column_int64(st, 12);
    r->tpm = sqlite3_column_int64(st, 13);
    r->caller_attribution = sqlite3_column_int(st, 14) != 0;
    r->created_at = sqlite3_column_int64(st, 15);
    r->revoked_at = sqlite3_column_int64(st, 16);
    r->max_concurrent = sqlite3_column_int64(st, 17);
    if (rc == 0 && (read_names(col_text(st, 18), &r->mcp_tools, &r->nmcp_tools) != 0 ||
                    read_names(col_text(st, 19), &r->mcp_deny, &r->nmcp_deny) != 0)) {
        buf_printf(err, "key store: key %s has malformed mcp_tools or mcp_deny", r->id);
        rc = -1;
    }
    if (rc != 0)
        key_record_free(r);
    return rc;
}

static int sq_get(struct keys_store *s, const char *id, struct key_record *out, struct buf *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT " COLS " FROM keys_records WHERE id=?1", -1, &st, NULL) != SQLITE_OK) {
        db_err(err, s->db, "prepare");
        return -1;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW)
        ret = read_row(st, out, err);
    else if (rc == SQLITE_DONE)
        ret = 1;
    else {
        db_err(err, s->db, "read");
        ret = -1;
    }
    sqlite3_finalize(st);
    return ret;
}

void keys_records_free(struct key_record *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        key_record_free(&v[i]);
    xfree(v);
}

static int sq_list(struct keys_store *s, struct key_record **out, size_t *n, struct buf *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT " COLS " FROM keys_records ORDER BY rowid", -1, &st, NULL) != SQLITE_OK) {
        db_err(err, s->db, "prepare");
        return -1;
    }
    size_t cap = 0;
    struct key_record *v = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof(*v));
        }
        if (read_row(st, &v[*n], err) != 0) {
            rc = SQLITE_ERROR;
            break;
        }
        (*n)++;
    }
    if (rc != SQLITE_DONE) {
        if (rc != SQLITE_ERROR || err->len == 0)
            db_err(err, s->db, "list");
        sqlite3_finalize(st);
        keys_records_free(v, *n);
        *n = 0;
        return -1;
    }
    sqlite3_finalize(st);
    *out = v;
    return 0;
}

static int sq_version(struct keys_store *s, uint64_t *v)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = (uint64_t)sqlite3_column_int64(st, 0) + (s->own_changes << 32);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

const struct keys_store_ops keys_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .insert = sq_insert,
    .update = sq_update,
    .get = sq_get,
    .list = sq_list,
    .version = sq_version,
};
