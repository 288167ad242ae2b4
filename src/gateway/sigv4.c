#include "gateway/sigv4.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/str.h"

#define SIGV4_MAX_HEADERS 32

static const char hexdig[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data ? data : (const void *)"", len, md);
    to_hex(md, sizeof(md), hex);
}

static int hmac(const void *key, size_t klen, const void *data, size_t dlen, unsigned char out[32])
{
    unsigned int olen = 0;
    if (HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &olen) == NULL || olen != 32)
        return -1;
    return 0;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '~';
}

int sigv4_uri_encode(const char *s, size_t n, bool keep_slash, struct buf *out)
{
    static const char HEX[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            if (buf_append_char(out, (char)c) != 0)
                return -1;
        } else {
            char e[3] = {'%', HEX[c >> 4], HEX[c & 15]};
            if (buf_append(out, e, 3) != 0)
                return -1;
        }
    }
    return 0;
}

int sigv4_canonical_uri(const char *path, bool single_encode, struct buf *out)
{
    if (path == NULL || *path == '\0')
        return buf_append_char(out, '/');
    if (single_encode)
        return buf_append_str(out, path);
    /* Normalise: segments "" and "." vanish, ".." removes the previous one; a trailing '/' stays. */
    size_t n = strlen(path);
    struct {
        const char *p;
        size_t n;
    } *segs = xcalloc(n / 2 + 2, sizeof(*segs));
    size_t nseg = 0;
    const char *p = path;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
            /* skip */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (nseg)
                nseg--;
        } else {
            segs[nseg].p = p;
            segs[nseg].n = len;
            nseg++;
        }
        if (!e)
            break;
        p = e + 1;
    }
    int rc = 0;
    if (path[0] == '/' || nseg == 0)
        rc |= buf_append_char(out, '/');
    for (size_t i = 0; i < nseg && rc == 0; i++) {
        if (i)
            rc |= buf_append_char(out, '/');
        rc |= sigv4_uri_encode(segs[i].p, segs[i].n, false, out);
    }
    if (rc == 0 && nseg && n > 1 && path[n - 1] == '/')
        rc |= buf_append_char(out, '/');
    xfree(segs);
    return rc ? -1 : 0;
}

/* Percent-decodes s[0..n) into out; an invalid escape is kept as is. */
static int pct_decode(const char *s, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && str_hexval(s[i + 1]) >= 0 && str_hexval(s[i + 2]) >= 0) {
            char c = (char)(str_hexval(s[i + 1]) * 16 + str_hexval(s[i + 2]));
            if (buf_append_char(out, c) != 0)
                return -1;
            i += 2;
        } else if (buf_append_char(out, s[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

struct qparam {
    char *k, *v; /* encoded */
};

static int qparam_cmp(const struct qparam *a, const struct qparam *b)
{
    int c = strcmp(a->k, b->k);
    return c ? c : strcmp(a->v, b->v);
}

int sigv4_canonical_query(const char *query, struct buf *out)
{
    if (query == NULL || *query == '\0')
        return 0;
    size_t cap = 1;
    for (const char *q = query; *q; q++)
        cap += *q == '&';
    struct qparam *ps = xcalloc(cap, sizeof(*ps));
    size_t np = 0;
    int rc = 0;
    const char *p = query;
    while (rc == 0) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len) {
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            struct buf dk = BUF_INIT(BUF_UNBOUNDED), dv = BUF_INIT(BUF_UNBOUNDED);
            struct buf ek = BUF_INIT(BUF_UNBOUNDED), ev = BUF_INIT(BUF_UNBOUNDED);
            rc |= pct_decode(p, klen, &dk);
            if (eq)
                rc |= pct_decode(eq + 1, len - klen - 1, &dv);
            bool skip = dk.data && strcmp(dk.data, "X-Amz-Signature") == 0;
            rc |= sigv4_uri_encode(dk.data ? dk.data : "", dk.len, false, &ek);
            rc |= sigv4_uri_encode(dv.data ? dv.data : "", dv.len, false, &ev);
            buf_append(&ek, "", 0);
            buf_append(&ev, "", 0);
            if (!skip && rc == 0) {
                ps[np].k = buf_steal(&ek, NULL);
                ps[np].v = buf_steal(&ev, NULL);
                np++;
            }
            buf_free(&dk);
            buf_free(&dv);
            buf_free(&ek);
            buf_free(&ev);
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    for (size_t i = 1; i < np; i++)
        for (size_t j = i; j > 0 && qparam_cmp(&ps[j], &ps[j - 1]) < 0; j--) {
            struct qparam t = ps[j];
            ps[j] = ps[j - 1];
            ps[j - 1] = t;
        }
    for (size_t i = 0; i < np; i++) {
        if (rc == 0)
            rc |= buf_printf(out, "%s%s=%s", i ? "&" : "", ps[i].k, ps[i].v) < 0 ? -1 : 0;
        xfree(ps[i].k);
        xfree(ps[i].v);
    }
    xfree(ps);
    return rc ? -1 : 0;
}

struct hdr {
    char *name; /* lowercase */
    struct buf value;
};

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Adds a header, trimming the value and collapsing runs of spaces; a repeated name joins with ','. */
static int hdr_add(struct hdr *h, size_t *nh, const char *name, const char *value)
{
    char *lname = xstrdup(name);
    lower(lname);
    size_t i;
    for (i = 0; i < *nh; i++)
        if (strcmp(h[i].name, lname) == 0)
            break;
    if (i == *nh) {
        if (*nh == SIGV4_MAX_HEADERS) {
            xfree(lname);
            return -1;
        }
        h[i].name = lname;
        buf_init(&h[i].value, 16 * 1024);
        buf_append(&h[i].value, "", 0);
        (*nh)++;
    } else {
        xfree(lname);
        if (buf_append_char(&h[i].value, ',') != 0)
            return -1;
    }
    const char *v = value ? value : "";
    while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
        v++;
    size_t start = h[i].value.len;
    bool space = false;
    for (; *v; v++) {
        bool ws = *v == ' ' || *v == '\t' || *v == '\r' || *v == '\n';
        if (ws) {
            space = true;
            continue;
        }
        if (space && h[i].value.len > start && buf_append_char(&h[i].value, ' ') != 0)
            return -1;
        space = false;
        if (buf_append_char(&h[i].value, *v) != 0)
            return -1;
    }
    return 0;
}

static void fmt_amz_date(time_t t, char out[17])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

int sigv4_sign(const struct sigv4_params *p, struct buf *headers_out, struct buf *canonical_out, struct buf *sts_out)
{
    if (!p->access_key_id || !p->secret_access_key || !p->region || !p->service || !p->method || !p->host)
        return -1;
    int rc = -1;
    struct hdr h[SIGV4_MAX_HEADERS];
    size_t nh = 0;
    struct buf creq = BUF_INIT(BUF_UNBOUNDED), sts = BUF_INIT(BUF_UNBOUNDED), signed_names = BUF_INIT(BUF_UNBOUNDED);
    struct buf key0 = BUF_INIT(4096);
    unsigned char k[32], k2[32], sig[32];
    char amz_date[17], payload_hash[65], creq_hash[65], sig_hex[65];
    fmt_amz_date(p->now, amz_date);
    sigv4_sha256_hex(p->body, p->body_len, payload_hash);

    if (hdr_add(h, &nh, "host", p->host) != 0 || hdr_add(h, &nh, "x-amz-date", amz_date) != 0)
        goto out;
    if (p->content_sha256_header && hdr_add(h, &nh, "x-amz-content-sha256", payload_hash) != 0)
        goto out;
    if (p->session_token && *p->session_token && hdr_add(h, &nh, "x-amz-security-token", p->session_token) != 0)
        goto out;
    for (size_t i = 0; i < p->nheaders; i++)
        if (hdr_add(h, &nh, p->header_names[i], p->header_values[i]) != 0)
            goto out;
    for (size_t i = 1; i < nh; i++)
        for (size_t j = i; j > 0 && strcmp(h[j].name, h[j - 1].name) < 0; j--) {
            struct hdr t = h[j];
            h[j] = h[j - 1];
            h[j - 1] = t;
        }

    /* canonical request */
    buf_printf(&creq, "%s\n", p->method);
    if (sigv4_canonical_uri(p->path, p->single_encode_path, &creq) != 0)
        goto out;
    buf_append_char(&creq, '\n');
    if (sigv4_canonical_query(p->query, &creq) != 0)
        goto out;
    buf_append_char(&creq, '\n');
    for (size_t i = 0; i < nh; i++) {
        buf_printf(&creq, "%s:%s\n", h[i].name, h[i].value.data ? h[i].value.data : "");
        buf_printf(&signed_names, "%s%s", i ? ";" : "", h[i].name);
    }
    buf_append_char(&creq, '\n');
    buf_append(&creq, signed_names.data, signed_names.len);
    buf_append_char(&creq, '\n');
    if (buf_append_str(&creq, payload_hash) != 0)
        goto out;

    /* string to sign */
    char date[9];
    memcpy(date, amz_date, 8);
    date[8] = '\0';
    sigv4_sha256_hex(creq.data, creq.len, creq_hash);
    if (buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date, p->region, p->service,
                   creq_hash) < 0)
        goto out;

    /* signing key and signature */
    if (buf_printf(&key0, "AWS4%s", p->secret_access_key) < 0 || hmac(key0.data, key0.len, date, 8, k) != 0 ||
        hmac(k, 32, p->region, strlen(p->region), k2) != 0 || hmac(k2, 32, p->service, strlen(p->service), k) != 0 ||
        hmac(k, 32, "aws4_request", 12, k2) != 0 || hmac(k2, 32, sts.data, sts.len, sig) != 0)
        goto out;
    to_hex(sig, 32, sig_hex);

    buf_printf(headers_out, "X-Amz-Date: %s\n", amz_date);
    if (p->content_sha256_header)
        buf_printf(headers_out, "X-Amz-Content-Sha256: %s\n", payload_hash);
    if (p->session_token && *p->session_token)
        buf_printf(headers_out, "X-Amz-Security-Token: %s\n", p->session_token);
    if (buf_printf(headers_out,
                   "Authorization: AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                   "Signature=%s\n",
                   p->access_key_id, date, p->region, p->service, signed_names.data, sig_hex) < 0)
        goto out;
    if (canonical_out)
        buf_append(canonical_out, creq.data, creq.len);
    if (sts_out)
        buf_append(sts_out, sts.data, sts.len);
    rc = 0;
out:
    if (key0.data)
        OPENSSL_cleanse(key0.data, key0.cap);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(k2, sizeof(k2));
    buf_free(&key0);
    for (size_t i = 0; i < nh; i++) {
        xfree(h[i].name);
        buf_free(&h[i].value);
    }
    buf_free(&creq);
    buf_free(&sts);
    buf_free(&signed_names);
    return rc;
}
