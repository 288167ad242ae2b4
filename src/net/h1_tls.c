/* h1_tls.c: https for the native upstream client: OpenSSL on memory BIOs between the connection's libuv stream
 * (ciphertext in from the socket, out through uv_write) and the response parser. One SSL_CTX per client (the
 * system store plus up_options.ca_file), sessions resumed per host. A TLS failure ends the transfer with UP_E_TLS. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "net/h1_int.h"

struct tls_wreq {
    uv_write_t w;
    char data[];
};

static void on_tls_write(uv_write_t *req, int status)
{
    struct h1conn *k = req->data;
    xfree(req); /* struct tls_wreq starts with its uv_write_t */
    h1_on_write_done(k, status);
}

/* Sends what OpenSSL queued in the write BIO: at once if the socket takes it, a copy of the rest queued. Returns
 * 0 or a uv error. */
int h1_tls_flush(struct h1conn *k)
{
    BIO *wb = SSL_get_wbio(k->ssl);
    char *p = NULL;
    long n = BIO_get_mem_data(wb, &p);
    if (n <= 0)
        return 0;
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    int done = uv_try_write((uv_stream_t *)&k->tcp, &b, 1); /* UV_EAGAIN while earlier bytes are queued */
    if (done < 0 && done != UV_EAGAIN) {
        (void)BIO_reset(wb);
        return done;
    }
    size_t off = done > 0 ? (size_t)done : 0;
    if (off == (size_t)n) {
        (void)BIO_reset(wb);
        return 0;
    }
    struct tls_wreq *w = xmalloc(sizeof(*w) + (size_t)n - off);
    memcpy(w->data, p + off, (size_t)n - off);
    (void)BIO_reset(wb);
    w->w.data = k;
    b = uv_buf_init(w->data, (unsigned)((size_t)n - off));
    int rc = uv_write(&w->w, (uv_stream_t *)&k->tcp, &b, 1, on_tls_write);
    if (rc != 0) {
        xfree(w);
        return rc;
    }
    k->writes++;
    return 0;
}

/* Why TLS failed, in curl's words where it has them, into x->errbuf. */
static void tls_errmsg(struct h1conn *k, const char *what)
{
    struct up_xfer *x = k->x;
    k->tls_bad = true;
    long vr = SSL_get_verify_result(k->ssl);
    unsigned long e = ERR_peek_last_error();
    if (vr != X509_V_OK) {
        snprintf(x->errbuf, sizeof(x->errbuf), "SSL certificate problem: %s", X509_verify_cert_error_string(vr));
    } else if (e) {
        char tmp[160];
        ERR_error_string_n(e, tmp, sizeof(tmp));
        snprintf(x->errbuf, sizeof(x->errbuf), "%s: %s", what, tmp);
    } else {
        snprintf(x->errbuf, sizeof(x->errbuf), "%s", what);
    }
    ERR_clear_error();
}

static void tls_fail(struct h1conn *k, const char *what)
{
    tls_errmsg(k, what);
    h1_xfer_fail(k, UP_E_TLS, k->x->errbuf);
}

static void tls_handshake(struct h1conn *k)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(k->ssl);
    int e = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(k->ssl, rc);
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
        tls_fail(k, "TLS connect error");
        return;
    }
    int wrc = h1_tls_flush(k);
    if (wrc != 0) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Send failure: %s", h1_err_text(wrc));
        h1_xfer_fail(k, UP_E_TLS, k->x->errbuf); /* during the handshake, as curl's SSL connect error */
        return;
    }
    if (e == SSL_ERROR_WANT_READ)
        return;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(k->ssl, &alpn, &alpn_len);
    if (alpn_len && !(alpn_len == 8 && memcmp(alpn, "http/1.1", 8) == 0)) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "TLS connect error: the server chose ALPN %.*s", (int)alpn_len,
                 (const char *)alpn);
        h1_xfer_fail(k, UP_E_TLS, k->x->errbuf);
        return;
    }
    k->state = CONN_ACTIVE;
    h1_conn_send(k);
}

/* Decrypts what the read BIO holds and parses it. Returns true while the transfer wants more input. */
bool h1_tls_drain(struct h1conn *k)
{
    char *plain = k->c->tbuf;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(k->ssl, plain, TLS_PLAIN_SIZE);
        if (n > 0) {
            k->rx += (uint64_t)n;
            if (!h1_conn_after_parse(k, h1_resp_feed(&k->resp, plain, (size_t)n)))
                return false;
            continue;
        }
        int e = SSL_get_error(k->ssl, n);
        int wrc = h1_tls_flush(k); /* a key update or a renegotiation may have something to say */
        if (e == SSL_ERROR_WANT_READ && wrc == 0)
            return true;
        if (e == SSL_ERROR_ZERO_RETURN) {
            h1_conn_eof(k);
            return false;
        }
        if (wrc != 0) {
            snprintf(k->x->errbuf, sizeof(k->x->errbuf), "Send failure: %s", h1_err_text(wrc));
            h1_xfer_fail(k, k->x->headers_done ? UP_E_RESET : UP_E_RESET_BEFORE_HEADERS, k->x->errbuf);
            return false;
        }
        tls_fail(k, "TLS receive error");
        return false;
    }
}

/* Ciphertext from the socket. */
void h1_tls_input(struct h1conn *k, const char *data, size_t len)
{
    BIO_write(SSL_get_rbio(k->ssl), data, (int)len); /* a memory BIO takes it all */
    if (k->state == CONN_HANDSHAKE)
        tls_handshake(k);
    else
        h1_tls_drain(k);
}

/* Bytes on a pooled TLS connection: a late session ticket or a key update keeps it; application data, an
 * alert or close_notify ends it. */
bool h1_tls_idle_input(struct h1conn *k, const char *data, size_t len)
{
    BIO_write(SSL_get_rbio(k->ssl), data, (int)len);
    ERR_clear_error();
    int n = SSL_read(k->ssl, k->c->tbuf, TLS_PLAIN_SIZE);
    bool keep = n <= 0 && SSL_get_error(k->ssl, n) == SSL_ERROR_WANT_READ && h1_tls_flush(k) == 0;
    ERR_clear_error();
    return keep;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct h1conn *k = SSL_get_app_data(ssl);
    if (k == NULL || k->state == CONN_CLOSING)
        return 0;
    struct h1host *h = k->host;
    if (h->session)
        SSL_SESSION_free(h->session);
    h->session = sess;
    return 1; /* the reference is ours now */
}

/* One TLS context per loop, made at the first https transfer: the system store plus gateway.ca_file. */
static SSL_CTX *client_ssl_ctx(struct h1client *c)
{
    if (c->ssl_ctx || c->ssl_ctx_failed)
        return c->ssl_ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        c->ssl_ctx_failed = true;
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle pooled connections keep no 34 KiB of buffers */
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        log_warn("upstream TLS: the system certificate store could not be loaded");
    if (c->ca_file && SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1) {
        log_error("upstream TLS: cannot load gateway.ca_file %s", c->ca_file);
        SSL_CTX_free(ctx);
        ERR_clear_error();
        c->ssl_ctx_failed = true;
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    ERR_clear_error();
    c->ssl_ctx = ctx;
    return ctx;
}

/* TCP is up: start the handshake (SNI and the name or address to verify, ALPN http/1.1, TLS 1.2 or later). */
void h1_tls_start(struct h1conn *k)
{
    struct h1host *h = k->host;
    SSL_CTX *ctx = client_ssl_ctx(k->c);
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (ssl == NULL) {
        snprintf(k->x->errbuf, sizeof(k->x->errbuf), "TLS connect error: %s",
                 k->c->ca_file ? "cannot load gateway.ca_file" : "cannot set up TLS");
        h1_xfer_fail(k, UP_E_TLS, k->x->errbuf);
        return;
    }
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rb, -1); /* empty means "wait for more", not end of stream */
    SSL_set_bio(ssl, rb, wb);
    SSL_set_connect_state(ssl);
    SSL_set_app_data(ssl, k);
    k->ssl = ssl;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = 1;
    if (h->numeric) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, h->name); /* no SNI for addresses (RFC 6066) */
    } else {
        ok = SSL_set_tlsext_host_name(ssl, h->name) == 1 && X509_VERIFY_PARAM_set1_host(param, h->name, h->name_len);
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    if (!ok || SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1) != 0) {
        tls_fail(k, "TLS connect error");
        return;
    }
    if (h->session)
        SSL_set_session(ssl, h->session);
    k->state = CONN_HANDSHAKE;
    h1_conn_read_start(k);
    tls_handshake(k);
}

int h1_tls_write(struct h1conn *k, const uv_buf_t *b, unsigned nb)
{
    ERR_clear_error();
    for (unsigned i = 0; i < nb; i++) {
        if (SSL_write(k->ssl, b[i].base, (int)b[i].len) <= 0) {
            tls_errmsg(k, "TLS send error");
            return -1;
        }
    }
    return 0;
}

bool h1_tls_pending(const struct h1conn *k)
{
    return k->ssl && SSL_pending(k->ssl) > 0;
}

void h1_tls_conn_free(struct h1conn *k)
{
    if (k->ssl == NULL)
        return;
    /* OpenSSL marks the session not resumable when a connection ends without close_notify, as most keep-alive
     * connections do (idle timeouts, the server's own). Only a TLS failure should cost the next connection its
     * resumption. */
    if (!k->tls_bad && SSL_is_init_finished(k->ssl)) {
        SSL_set_quiet_shutdown(k->ssl, 1);
        SSL_shutdown(k->ssl);
    }
    SSL_free(k->ssl);
    k->ssl = NULL;
    ERR_clear_error();
}

void h1_tls_client_free(struct h1client *c)
{
    for (struct h1host *h = c->hosts; h; h = h->next) {
        if (h->session)
            SSL_SESSION_free(h->session);
        h->session = NULL;
    }
    if (c->ssl_ctx)
        SSL_CTX_free(c->ssl_ctx);
    c->ssl_ctx = NULL;
}
