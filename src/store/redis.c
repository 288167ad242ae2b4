#include "store/redis.h"

#include <ctype.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

struct redis {
    redisContext *c;
};

static int hexv(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes s[0..n) into dst (size cap, NUL-terminated). -1 on a bad escape or when it does not fit. */
static int pct_decode(const char *s, size_t n, char *dst, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n) /* fewer than two characters follow */
                return -1;
            int h = hexv(s[i + 1]), l = hexv(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = h * 16 + l;
            i += 2;
        }
        if (c == 0 || k + 1 >= cap)
            return -1;
        dst[k++] = (char)c;
    }
    dst[k] = '\0';
    return 0;
}

int redis_url_parse(const char *s, struct redis_url *u, struct buf *err)
{
    memset(u, 0, sizeof(*u));
    u->port = 6379;
    size_t n = strnlen(s, REDIS_URL_MAX + 1);
    if (n > REDIS_URL_MAX) {
        buf_printf(err, "longer than %d characters", REDIS_URL_MAX);
        return -1;
    }
    if (n >= 9 && strncmp(s, "rediss://", 9) == 0) {
        buf_printf(err, "rediss:// (TLS) is not supported by this build's hiredis; use redis:// on a trusted network");
        return -1;
    }
    if (n < 8 || strncmp(s, "redis://", 8) != 0) {
        buf_printf(err, "must start with redis://");
        return -1;
    }
    const char *p = s + 8, *end = s + n;
    /* authority ends at '/', or the end */
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *aend = slash ? slash : end;
    const char *at = NULL;
    for (const char *q = p; q < aend; q++)
        if (*q == '@')
            at = q; /* the last '@': a password may hold a raw '@' only percent-encoded, but be lenient */
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (pct_decode(p, (size_t)(uend - p), u->user, sizeof(u->user)) != 0) {
            buf_printf(err, "bad user name (percent-encoding or length)");
            return -1;
        }
        if (colon) {
            if (pct_decode(colon + 1, (size_t)(at - colon - 1), u->pass, sizeof(u->pass)) != 0) {
                buf_printf(err, "bad password (percent-encoding or length)");
                return -1;
            }
            u->has_pass = true;
        }
        p = at + 1;
    }
    const char *hend;
    const char *portp = NULL;
    if (p < aend && *p == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', (size_t)(aend - p));
        if (rb == NULL) {
            buf_printf(err, "unclosed '[' in the host");
            return -1;
        }
        if ((size_t)(rb - p - 1) >= sizeof(u->host) || rb == p + 1) {
            buf_printf(err, "bad host");
            return -1;
        }
        memcpy(u->host, p + 1, (size_t)(rb - p - 1));
        hend = rb + 1;
        if (hend < aend) {
            if (*hend != ':') {
                buf_printf(err, "unexpected text after the host");
                return -1;
            }
            portp = hend + 1;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(aend - p));
        hend = colon ? colon : aend;
        if (hend == p || (size_t)(hend - p) >= sizeof(u->host)) {
            buf_printf(err, "no host");
            return -1;
        }
        for (const char *q = p; q < hend; q++)
            if (!(isalnum((unsigned char)*q) || *q == '.' || *q == '-' || *q == '_')) {
                buf_printf(err, "bad character in the host");
                return -1;
            }
        memcpy(u->host, p, (size_t)(hend - p));
        if (colon)
            portp = colon + 1;
    }
    if (portp) {
        long v = 0;
        if (portp == aend) {
            buf_printf(err, "empty port");
            return -1;
        }
        for (const char *q = portp; q < aend; q++) {
            if (!isdigit((unsigned char)*q) || v > 65535) {
                buf_printf(err, "bad port");
                return -1;
            }
            v = v * 10 + (*q - '0');
        }
        if (v < 1 || v > 65535) {
            buf_printf(err, "port out of range (1..65535)");
            return -1;
        }
        u->port = (int)v;
    }
    if (slash && slash + 1 < end) {
        long v = 0;
        for (const char *q = slash + 1; q < end; q++) {
            if (!isdigit((unsigned char)*q) || v > 100000) {
                buf_printf(err, "bad database number (redis://host:port/N)");
                return -1;
            }
            v = v * 10 + (*q - '0');
        }
        if (v > 100000) {
            buf_printf(err, "bad database number (redis://host:port/N)");
            return -1;
        }
        u->db = (int)v;
    }
    return 0;
}

void redis_close(struct redis *r)
{
    if (r == NULL)
        return;
    if (r->c)
        redisFree(r->c);
    xfree(r);
}

static int simple(struct redis *r, struct buf *err, const char *what, int argc, const char **argv)
{
    redis_append(r, argc, argv);
    struct redis_reply rep;
    if (redis_read(r, &rep, err) != 0)
        return -1;
    if (rep.type == REDIS_R_ERROR) {
        buf_printf(err, "%s: %s", what, rep.s);
        return -1;
    }
    return 0;
}

struct redis *redis_connect(const struct redis_url *u, int timeout_ms, struct buf *err)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
    if (c == NULL) {
        buf_printf(err, "out of memory");
        return NULL;
    }
    if (c->err) {
        buf_printf(err, "connect %s:%d: %s", u->host, u->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    struct redis *r = xcalloc(1, sizeof(*r));
    r->c = c;
    if (u->has_pass) {
        const char *argv[3] = {"AUTH", u->user[0] ? u->user : u->pass, u->pass};
        if (simple(r, err, "AUTH", u->user[0] ? 3 : 2, argv) != 0)
            goto fail;
    }
    if (u->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        if (simple(r, err, "SELECT", 2, argv) != 0)
            goto fail;
    }
    return r;
fail:
    redis_close(r);
    return NULL;
}

void redis_append(struct redis *r, int argc, const char **argv)
{
    redisAppendCommandArgv(r->c, argc, argv, NULL);
}

void redis_append_bin(struct redis *r, int argc, const char **argv, const size_t *lens)
{
    redisAppendCommandArgv(r->c, argc, argv, lens);
}

static void copy_s(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

static int read_reply(struct redis *r, struct redis_reply *out, struct buf *bulk, struct buf *err);

int redis_read(struct redis *r, struct redis_reply *out, struct buf *err)
{
    return read_reply(r, out, NULL, err);
}

int redis_read_bulk(struct redis *r, struct redis_reply *out, struct buf *bulk, struct buf *err)
{
    return read_reply(r, out, bulk, err);
}

static int read_reply(struct redis *r, struct redis_reply *out, struct buf *bulk, struct buf *err)
{
    memset(out, 0, sizeof(*out));
    void *v = NULL;
    if (redisGetReply(r->c, &v) != REDIS_OK || v == NULL) {
        buf_printf(err, "%s", r->c->errstr[0] ? r->c->errstr : "connection lost");
        return -1;
    }
    redisReply *rep = v;
    switch (rep->type) {
    case REDIS_REPLY_INTEGER:
        out->type = REDIS_R_INT;
        out->i = rep->integer;
        break;
    case REDIS_REPLY_ARRAY:
        out->type = REDIS_R_ARRAY;
        for (size_t i = 0; i < rep->elements && out->n < 4; i++) {
            const redisReply *e = rep->element[i];
            out->a[out->n++] = e->type == REDIS_REPLY_INTEGER ? e->integer
                               : e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10)
                                                                : 0;
        }
        break;
    case REDIS_REPLY_ERROR:
        out->type = REDIS_R_ERROR;
        copy_s(out->s, sizeof(out->s), rep->str, rep->len);
        break;
    case REDIS_REPLY_NIL: out->type = REDIS_R_NIL; break;
    case REDIS_REPLY_STRING:
        if (bulk) { /* the whole value, within the buffer's limit (a larger one reads as nil) */
            out->type = buf_append(bulk, rep->str, rep->len) == 0 ? REDIS_R_STATUS : REDIS_R_NIL;
            if (out->type == REDIS_R_NIL)
                buf_reset(bulk);
            break;
        }
        /* fall through */
    default:
        out->type = REDIS_R_STATUS;
        copy_s(out->s, sizeof(out->s), rep->str ? rep->str : "", rep->str ? rep->len : 0);
        break;
    }
    freeReplyObject(rep);
    return 0;
}
