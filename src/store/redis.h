/* redis.h: the small Redis client cluster mode needs (DESIGN §4), over Debian's libhiredis, blocking, with
 * timeouts. It is used from one dedicated thread only (policy/lease.c): never from a worker loop, so a blocking
 * client with bounded timeouts is the simplest correct choice (no event-loop adapter, no callbacks), and the
 * thread pipelines its commands so one round trip carries a whole pass.
 *
 * URLs: redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by default; user and password
 * percent-decoded). `rediss://` (TLS) and unix sockets are refused: the Debian hiredis (0.14) has no TLS. */
#ifndef AGENTD_REDIS_H
#define AGENTD_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define REDIS_URL_MAX 2048

struct redis_url {
    char host[256];
    int port;
    char user[256];
    char pass[512];
    bool has_pass;
    int db;
};

/* 0, or -1 with the reason in err (never echoes the password). Linear in the length; bounded (REDIS_URL_MAX). */
int redis_url_parse(const char *s, struct redis_url *u, struct buf *err);

struct redis;
/* Connects, authenticates and selects the db within timeout_ms (each command is bounded by it too). NULL with
 * the reason in err. */
struct redis *redis_connect(const struct redis_url *u, int timeout_ms, struct buf *err);
void redis_close(struct redis *r);

/* One reply, reduced to what the lease scripts return: an integer, an array of integers, a status, or an
 * error. */
struct redis_reply {
    int type;          /* REDIS_R_INT, REDIS_R_ARRAY, REDIS_R_STATUS (also bulk strings), REDIS_R_ERROR, REDIS_R_NIL */
    int64_t i;
    int64_t a[4];
    int n;             /* array elements in a[] (at most 4 kept) */
    char s[256];       /* status, bulk string or error text (cut) */
};
enum { REDIS_R_INT, REDIS_R_ARRAY, REDIS_R_STATUS, REDIS_R_ERROR, REDIS_R_NIL };

/* Queues one command (argv, as strings) into the pipeline. */
void redis_append(struct redis *r, int argc, const char **argv);
/* The same with explicit lengths: binary values (the response cache's answers). */
void redis_append_bin(struct redis *r, int argc, const char **argv, const size_t *lens);
/* Reads the next reply of the pipeline. 0, or -1 on a connection error (timeout, reset): the connection is then
 * unusable (redis_close it); err says why. */
int redis_read(struct redis *r, struct redis_reply *out, struct buf *err);

/* redis_read, and a bulk string reply's whole value appended to bulk (REDIS_R_STATUS); one above bulk's limit
 * reads as REDIS_R_NIL. */
int redis_read_bulk(struct redis *r, struct redis_reply *out, struct buf *bulk, struct buf *err);

#endif
