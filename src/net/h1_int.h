/* h1_int.h: private to the native upstream client (net/h1client.c and net/h1_tls.c): its hosts, connections and
 * the calls between the connection machinery and the TLS layer. Nothing outside those two files includes it, and
 * it includes nothing of theirs (no include cycle: h1client.c -> h1_int.h -> h1_resp.h). */
#ifndef AGENTD_H1_INT_H
#define AGENTD_H1_INT_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/buf.h"
#include "net/h1_resp.h"
#include "net/upstream_types.h"

#define H1_MAX_ADDRS 8 /* addresses of a name tried in order */
#define READ_BUF_SIZE (64 * 1024)
#define TLS_PLAIN_SIZE (16 * 1024) /* one TLS record's worth of plaintext per SSL_read */
#define DEFAULT_CONNECT_TIMEOUT_MS 10000

enum conn_state {
    CONN_NEW,        /* no socket yet: waiting for addresses */
    CONN_CONNECTING, /* uv_tcp_connect in flight */
    CONN_HANDSHAKE,  /* TLS handshake in flight */
    CONN_ACTIVE,     /* connected, carrying a transfer */
    CONN_IDLE,       /* connected, in the pool */
    CONN_CLOSING,    /* handles closing; freed by the last close callback */
};

struct h1dns;
struct h1conn;

/* A (scheme, host, port) key: the pool, the resolved addresses and the proxy decision for it. Hosts live as long
 * as the client (their number is bounded by the configured deployments). */
struct h1host {
    struct h1host *next;
    char *name; /* NUL-terminated, without brackets */
    size_t name_len;
    char *authority; /* the Host header value */
    size_t authority_len;
    uint16_t port;
    bool tls, ipv6, numeric;
    bool proxied; /* a proxy from the environment applies: libcurl's business */
    struct sockaddr_storage addrs[H1_MAX_ADDRS];
    int naddrs;
    uint64_t addrs_expire_ms; /* uv_now; numeric hosts never expire */
    SSL_SESSION *session;     /* the last TLS session the server gave us, to resume on new connections */
    struct h1dns *lookup;     /* in flight */
    struct h1conn *waiting;   /* connections waiting for it */
    struct h1conn *idle;      /* pooled connections, most recently used first */
    unsigned nidle;
    unsigned inflight; /* transfers running to this host */
    unsigned peak;     /* the most running at once since peak_ms */
    uint64_t peak_ms;
};

struct h1dns {
    uv_getaddrinfo_t req;
    struct h1client *c;
    struct h1host *host; /* NULL once the client is closing */
};

/* One socket's life. A connection carries at most one transfer at a time; the transfer's own state (deadlines,
 * the parser, the retry flag) lives here too, and moves to a fresh connection on a retry or a failover to the
 * next address. */
struct h1conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the transfer's deadlines, or the idle timeout in the pool, or a deferred failure */
    uv_connect_t creq;
    uv_write_t wreq;
    struct h1client *c;
    struct h1host *host;
    struct h1conn *prev, *next;   /* c->conns */
    struct h1conn *lprev, *lnext; /* the list in *lhead (a host's idle or waiting list), if any */
    struct h1conn **lhead;
    enum conn_state state;
    int closes_pending;
    struct up_xfer *x;
    struct h1_resp resp;
    SSL *ssl;        /* https: TLS on memory BIOs between the socket and the parser */
    struct buf head; /* the request head, built once per transfer */
    uint64_t t0_ms;  /* the transfer's start (uv_now) */
    uint64_t due_ms; /* when the timer fires (uv_now), UINT64_MAX when it is stopped */
    uint64_t idle_since_ms;
    uint64_t rx;     /* response bytes (plaintext) received for the current transfer */
    unsigned addr_i; /* address being tried */
    int last_err;    /* of the last failed connect */
    unsigned nreq;   /* requests sent on this connection */
    unsigned writes; /* uv_writes in flight */
    bool reading;
    bool retried;   /* the transfer was already sent again once */
    bool tls_bad;   /* TLS itself failed: the session is not worth resuming */
    bool fail_soon; /* a failure found while starting: reported from the timer, never inside h1_start */
    enum up_result fail_result; /* ... and what it was */
};

struct h1client {
    uv_loop_t *loop;
    char *rbuf; /* one read buffer per loop: read callbacks consume their bytes before returning */
    char *tbuf; /* and one for TLS plaintext */
    SSL_CTX *ssl_ctx;
    bool ssl_ctx_failed;
    char *ca_file;
    struct h1host *hosts;
    struct h1conn *conns; /* not closing */
    unsigned nconns, nidle;
    int closing_conns; /* closes still running */
    int lookups;       /* getaddrinfo requests not yet returned */
    bool closing;
    char *http_proxy, *https_proxy, *all_proxy, *no_proxy;
    uint64_t connects, reuses, retries;
    uint64_t idle_timeout_ms;
};

/* ---- h1client.c, for the TLS layer ---- */

/* libc's words for a libuv error ("Connection refused"), as curl reports them. */
const char *h1_err_text(int uverr);
/* The transfer failed with result (msg for logs): the connection is closed. */
void h1_xfer_fail(struct h1conn *k, enum up_result result, const char *msg);
/* What the parser said about k's transfer (H1_RESP_*). Returns true while the transfer runs on k and wants more. */
bool h1_conn_after_parse(struct h1conn *k, int st);
/* The peer ended the byte stream (a TCP FIN, or a TLS close_notify). */
void h1_conn_eof(struct h1conn *k);
/* Sends the request (the handshake is done). */
void h1_conn_send(struct h1conn *k);
void h1_conn_read_start(struct h1conn *k);
/* A write (plain or TLS) completed with status. */
void h1_on_write_done(struct h1conn *k, int status);

/* ---- h1_tls.c: https through OpenSSL on memory BIOs over the connection's libuv stream ---- */

/* TCP is up: starts the handshake (SNI and the name or address to verify, ALPN http/1.1, TLS 1.2 or later). */
void h1_tls_start(struct h1conn *k);
/* Ciphertext from the socket for k's transfer (handshake or response). */
void h1_tls_input(struct h1conn *k, const char *data, size_t len);
/* Bytes on a pooled connection: true when they keep it usable (a late session ticket, a key update). */
bool h1_tls_idle_input(struct h1conn *k, const char *data, size_t len);
/* Decrypts what is buffered and parses it. Returns true while the transfer wants more input. */
bool h1_tls_drain(struct h1conn *k);
/* Encrypts the request into the write BIO. Returns 0, or -1 with x->errbuf set (a TLS failure). */
int h1_tls_write(struct h1conn *k, const uv_buf_t *b, unsigned nb);
/* Sends what OpenSSL queued. Returns 0 or a uv error. */
int h1_tls_flush(struct h1conn *k);
/* OpenSSL holds decrypted bytes not read yet. */
bool h1_tls_pending(const struct h1conn *k);
/* The connection's handles are closed: frees its TLS state (keeping the session resumable unless TLS failed). */
void h1_tls_conn_free(struct h1conn *k);
/* The client is freed: its TLS context and the hosts' sessions. */
void h1_tls_client_free(struct h1client *c);

#endif
