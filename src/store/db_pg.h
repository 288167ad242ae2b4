/* db_pg.h: what the PostgreSQL backends share (DESIGN §4, cluster mode): the process's database URL, one
 * connection per handle made and remade on demand, the versioned migrations and the database's health.
 * Only the store/ *_pg.c backends include this; code above the store asks store_config.h (store_backend_*) instead.
 *
 * Connections: a handle (keys_pg.c, ledger_pg.c, store_pg.c, agent_pg.c) owns one PGconn, used by one thread at
 * a time, and calls db_pg_conn before each operation: a connection that broke (the server restarted, the network
 * went away) is dropped and made again, so a server that was briefly away is used again without a restart.
 *
 * Migrations: the schema is a list of numbered steps; the first connection of the process applies the missing ones
 * in one transaction under pg_advisory_xact_lock, recording each in schema_migrations(version, applied_at), so
 * replicas starting at once migrate exactly once and a restart is a no-op.
 *
 * Health: every connection failure marks the database down with its reason; the next success marks it up. The
 * daemon's /ready reports it (store_backend_ready). */
#ifndef AGENTD_DB_PG_H
#define AGENTD_DB_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"

/* Sets the process's URL (copied; NULL or "": PostgreSQL off). With check, parses it and connects once: a URL that
 * does not parse, or a server that refuses it (authentication, no such database or role) is -1 with err; a server
 * that cannot be reached is 0 (the database is marked down with the reason, and the backends keep trying). A
 * successful check applies the migrations. */
int db_pg_configure(const char *url, bool check, struct buf *err);
bool db_pg_enabled(void);
/* Drops the URL (exit, tests). */
void db_pg_reset(void);

/* Makes *c usable: 0, or -1 with err (the database is then marked down). */
int db_pg_conn(PGconn **c, struct buf *err);
/* Closes *c (NULL is fine). */
void db_pg_close(PGconn **c);

/* A result that is not what was expected: formats "what: message" into err, clears r, and when the connection is
 * gone marks the database down and closes *c (the next db_pg_conn reconnects). Always -1. */
int db_pg_fail(PGconn **c, PGresult *r, const char *what, struct buf *err);
/* PQexec of a command that returns no rows: 0, or db_pg_fail. */
int db_pg_cmd(PGconn **c, const char *sql, struct buf *err);
/* Marks the database up (after a successful operation). */
void db_pg_ok(void);

/* true when the last operation reached the database; else false and the reason in why. */
bool db_pg_healthy(char *why, size_t n);

/* The applied migration versions (tests, `agentd version`). */
int db_pg_schema_version(void);

/* Text of column j in row i, "" when NULL. */
const char *db_pg_text(const PGresult *r, int i, int j);
int64_t db_pg_i64(const PGresult *r, int i, int j);

#endif
