/* mcp_jwt.c: JWT access tokens on /mcp (mcp_jwt.h). */
#include "mcp/mcp_jwt.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "config/config.h"
#include "gateway/cloud_creds.h"

/* ---- base64url (RFC 4648 §5, no padding: RFC 7515 §2) ---- */

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes n chars of s into out (room for n * 3 / 4 + 1 bytes); the length, or -1 when not base64url. */
static long b64url_decode(const char *s, size_t n, unsigned char *out)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) /* non-canonical trailing bits */
        return -1;
    return (long)o;
}

/* A base64url member of a JWK, decoded to a fresh buffer of at most max bytes. NULL when absent or invalid. */
static unsigned char *jwk_bytes(const cJSON *k, const char *name, size_t max, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(k, name);
    if (!cJSON_IsString(v))
        return NULL;
    size_t n = strlen(v->valuestring);
    if (n == 0 || n / 4 * 3 > max + 3)
        return NULL;
    unsigned char *b = xmalloc(n * 3 / 4 + 4);
    long l = b64url_decode(v->valuestring, n, b);
    if (l <= 0 || (size_t)l > max) {
        xfree(b);
        return NULL;
    }
    *len = (size_t)l;
    return b;
}

/* ---- JWKS ---- */

enum kty { KTY_RSA, KTY_EC256, KTY_EC384 };

struct jwk {
    char *kid; /* NULL when the JWK has none */
    char *alg; /* NULL when the JWK does not pin one */
    enum kty kty;
    EVP_PKEY *pkey;
};

struct jwks {
    atomic_int refs;
    size_t n;
    struct jwk keys[JWKS_MAX_KEYS];
};

static EVP_PKEY *pkey_from(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pk = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *pc = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    if (pc == NULL || EVP_PKEY_fromdata_init(pc) <= 0 || EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pk = NULL;
    EVP_PKEY_CTX_free(pc);
    OSSL_PARAM_free(params);
    return pk;
}

static EVP_PKEY *rsa_key(const cJSON *k)
{
    size_t nl = 0, el = 0;
    unsigned char *nb = jwk_bytes(k, "n", 1024, &nl); /* up to 8192-bit moduli */
    unsigned char *eb = jwk_bytes(k, "e", 8, &el);
    EVP_PKEY *pk = NULL;
    if (nb && eb) {
        BIGNUM *bn = BN_bin2bn(nb, (int)nl, NULL), *be = BN_bin2bn(eb, (int)el, NULL);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bn && be && bld && BN_num_bits(bn) >= 2048 && BN_is_odd(be) && !BN_is_one(be) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
            pk = pkey_from("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn);
        BN_free(be);
    }
    xfree(nb);
    xfree(eb);
    return pk;
}

static EVP_PKEY *ec_key(const cJSON *k, size_t clen, const char *group)
{
    size_t xl = 0, yl = 0;
    unsigned char *x = jwk_bytes(k, "x", clen, &xl), *y = jwk_bytes(k, "y", clen, &yl);
    EVP_PKEY *pk = NULL;
    if (x && y && xl == clen && yl == clen) {
        unsigned char pub[1 + 2 * 48];
        pub[0] = 0x04;
        memcpy(pub + 1, x, clen);
        memcpy(pub + 1 + clen, y, clen);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * clen))
            pk = pkey_from("EC", bld);
        OSSL_PARAM_BLD_free(bld);
    }
    xfree(x);
    xfree(y);
    return pk;
}

static char *opt_string(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && strlen(v->valuestring) <= JWT_CLAIM_MAX ? xstrdup(v->valuestring) : NULL;
}

int jwks_parse(const char *json, size_t n, struct jwks **out, char *err, size_t errn)
{
    *out = NULL;
    if (n > JWKS_MAX_DOC) {
        snprintf(err, errn, "the JWKS document exceeds %d bytes", JWKS_MAX_DOC);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(json, n);
    const cJSON *keys = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "keys") : NULL;
    if (!cJSON_IsArray(keys)) {
        snprintf(err, errn, "the JWKS document is not a JSON object with a \"keys\" array");
        cJSON_Delete(root);
        return -1;
    }
    struct jwks *ks = xcalloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    const cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        if (ks->n == JWKS_MAX_KEYS)
            break;
        const cJSON *kty = cJSON_GetObjectItemCaseSensitive(k, "kty");
        const cJSON *use = cJSON_GetObjectItemCaseSensitive(k, "use");
        const cJSON *crv = cJSON_GetObjectItemCaseSensitive(k, "crv");
        if (!cJSON_IsString(kty) || (use && (!cJSON_IsString(use) || strcmp(use->valuestring, "sig") != 0)))
            continue;
        struct jwk w = {0};
        if (strcmp(kty->valuestring, "RSA") == 0) {
            w.kty = KTY_RSA;
            w.pkey = rsa_key(k);
        } else if (strcmp(kty->valuestring, "EC") == 0 && cJSON_IsString(crv) &&
                   strcmp(crv->valuestring, "P-256") == 0) {
            w.kty = KTY_EC256;
            w.pkey = ec_key(k, 32, "P-256");
        } else if (strcmp(kty->valuestring, "EC") == 0 && cJSON_IsString(crv) &&
                   strcmp(crv->valuestring, "P-384") == 0) {
            w.kty = KTY_EC384;
            w.pkey = ec_key(k, 48, "P-384");
        }
        if (w.pkey == NULL)
            continue;
        w.kid = opt_string(k, "kid");
        w.alg = opt_string(k, "alg");
        ks->keys[ks->n++] = w;
    }
    cJSON_Delete(root);
    if (ks->n == 0) {
        snprintf(err, errn, "the JWKS document has no usable signing key (RSA >= 2048 bits, EC P-256 or P-384)");
        jwks_release(ks);
        return -1;
    }
    *out = ks;
    return 0;
}

size_t jwks_count(const struct jwks *ks)
{
    return ks ? ks->n : 0;
}

void jwks_ref(struct jwks *ks)
{
    atomic_fetch_add(&ks->refs, 1);
}

void jwks_release(struct jwks *ks)
{
    if (ks == NULL || atomic_fetch_sub(&ks->refs, 1) != 1)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
        xfree(ks->keys[i].kid);
        xfree(ks->keys[i].alg);
    }
    xfree(ks);
}

/* ---- tokens ---- */

const char *jwt_result_name(enum jwt_result r)
{
    static const char *const names[] = {"ok",           "malformed",       "bad_alg",     "unknown_kid",
                                        "bad_signature", "bad_issuer",     "bad_audience", "expired",
                                        "not_yet_valid", "no_subject",     "no_keys"};
    return (size_t)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

int jwt_looks_like(struct str s)
{
    if (s.n < 10 || s.n > JWT_MAX_TOKEN || strncmp(s.p, "eyJ", 3) != 0)
        return 0;
    int dots = 0;
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] == '.')
            dots++;
        else if (b64url_val((unsigned char)s.p[i]) < 0)
            return 0;
    return dots == 2;
}

struct alg {
    const char *name;
    enum kty kty;
    size_t ec_len; /* ES: bytes of r and of s */
    const EVP_MD *(*md)(void);
};
static const struct alg algs[] = {
    {"RS256", KTY_RSA, 0, EVP_sha256},   {"RS384", KTY_RSA, 0, EVP_sha384}, {"RS512", KTY_RSA, 0, EVP_sha512},
    {"ES256", KTY_EC256, 32, EVP_sha256}, {"ES384", KTY_EC384, 48, EVP_sha384},
};

static bool verify_with(const struct jwk *k, const struct alg *a, const char *data, size_t dn,
                        const unsigned char *sig, size_t sn)
{
    unsigned char *der = NULL;
    int derlen = 0;
    if (a->ec_len) { /* JWS carries r || s; EVP wants a DER ECDSA-Sig-Value */
        if (sn != 2 * a->ec_len)
            return false;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, (int)a->ec_len, NULL), *s = BN_bin2bn(sig + a->ec_len, (int)a->ec_len, NULL);
        if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
            r = s = NULL;
            derlen = i2d_ECDSA_SIG(es, &der);
        }
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        if (derlen <= 0)
            return false;
        sig = der;
        sn = (size_t)derlen;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    bool ok = m && EVP_DigestVerifyInit(m, NULL, a->md(), NULL, k->pkey) == 1 &&
              EVP_DigestVerify(m, sig, sn, (const unsigned char *)data, dn) == 1;
    EVP_MD_CTX_free(m);
    OPENSSL_free(der);
    return ok;
}

static cJSON *part_json(const char *s, size_t n)
{
    unsigned char *b = xmalloc(n * 3 / 4 + 4);
    long l = b64url_decode(s, n, b);
    cJSON *j = l > 0 ? cJSON_ParseWithLength((const char *)b, (size_t)l) : NULL;
    xfree(b);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = NULL;
    }
    return j;
}

static bool num_claim(const cJSON *p, const char *name, int64_t *v)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, name);
    if (!cJSON_IsNumber(c) || !(c->valuedouble > -1e15 && c->valuedouble < 1e15))
        return false;
    *v = (int64_t)c->valuedouble;
    return true;
}

static enum jwt_result claims(const cJSON *p, const struct jwt_expect *e, struct jwt_claims *out)
{
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(p, "iss");
    if (!cJSON_IsString(iss) || !e->issuer || strcmp(iss->valuestring, e->issuer) != 0)
        return JWT_BAD_ISSUER;
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(p, "aud"), *a;
    bool aud_ok = cJSON_IsString(aud) && e->audience && strcmp(aud->valuestring, e->audience) == 0;
    if (cJSON_IsArray(aud) && e->audience)
        cJSON_ArrayForEach(a, aud) aud_ok = aud_ok || (cJSON_IsString(a) && strcmp(a->valuestring, e->audience) == 0);
    if (!aud_ok)
        return JWT_BAD_AUDIENCE;
    int64_t exp, nbf;
    if (!num_claim(p, "exp", &exp) || e->now > exp + e->leeway)
        return JWT_EXPIRED;
    if (num_claim(p, "nbf", &nbf) && e->now + e->leeway < nbf)
        return JWT_NOT_YET_VALID;
    if (cJSON_GetObjectItemCaseSensitive(p, "nbf") && !num_claim(p, "nbf", &nbf))
        return JWT_MALFORMED;
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(p, "sub");
    if (!cJSON_IsString(sub) || sub->valuestring[0] == '\0' || strlen(sub->valuestring) > JWT_CLAIM_MAX)
        return JWT_NO_SUBJECT;
    memset(out, 0, sizeof(*out));
    snprintf(out->sub, sizeof(out->sub), "%s", sub->valuestring);
    out->exp = exp;
    unsigned char md[32];
    unsigned int mdl = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    bool hashed = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(h, iss->valuestring, strlen(iss->valuestring)) == 1 &&
                  EVP_DigestUpdate(h, "\n", 1) == 1 && EVP_DigestUpdate(h, out->sub, strlen(out->sub)) == 1 &&
                  EVP_DigestFinal_ex(h, md, &mdl) == 1;
    EVP_MD_CTX_free(h);
    if (!hashed)
        return JWT_MALFORMED;
    memcpy(out->key_id, "jwt:", 4);
    for (int i = 0; i < 16; i++)
        snprintf(out->key_id + 4 + 2 * i, 3, "%02x", md[i]);
    const cJSON *t = e->team_claim && e->team_claim[0] ? cJSON_GetObjectItemCaseSensitive(p, e->team_claim) : NULL;
    if (cJSON_IsString(t) && strlen(t->valuestring) <= JWT_CLAIM_MAX)
        snprintf(out->team, sizeof(out->team), "%s", t->valuestring);
    return JWT_OK;
}

enum jwt_result jwt_verify(const struct jwks *ks, const char *tok, size_t n, const struct jwt_expect *e,
                           struct jwt_claims *out)
{
    if (n > JWT_MAX_TOKEN)
        return JWT_MALFORMED;
    const char *d1 = memchr(tok, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok)) != NULL)
        return JWT_MALFORMED;
    cJSON *h = part_json(tok, (size_t)(d1 - tok));
    if (h == NULL)
        return JWT_MALFORMED;
    enum jwt_result r = JWT_OK;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(h, "kid");
    const struct alg *a = NULL;
    for (size_t i = 0; cJSON_IsString(alg) && i < sizeof(algs) / sizeof(algs[0]); i++)
        if (strcmp(alg->valuestring, algs[i].name) == 0)
            a = &algs[i];
    if (a == NULL)
        r = JWT_BAD_ALG; /* none, HS*, PS*, EdDSA, anything else */
    else if (cJSON_GetObjectItemCaseSensitive(h, "crit") || (kid && !cJSON_IsString(kid)))
        r = JWT_MALFORMED; /* no extension is understood (RFC 7515 §4.1.11) */
    else if (ks == NULL)
        r = JWT_NO_KEYS;
    cJSON *p = r == JWT_OK ? part_json(d1 + 1, (size_t)(d2 - d1 - 1)) : NULL;
    if (r == JWT_OK && p == NULL)
        r = JWT_MALFORMED;
    size_t sl = n - (size_t)(d2 + 1 - tok);
    unsigned char *sig = r == JWT_OK ? xmalloc(sl * 3 / 4 + 4) : NULL;
    long sn = sig ? b64url_decode(d2 + 1, sl, sig) : -1;
    if (r == JWT_OK && sn <= 0)
        r = JWT_MALFORMED;
    if (r == JWT_OK) {
        bool matched = false, good = false;
        for (size_t i = 0; i < ks->n && !good; i++) {
            const struct jwk *k = &ks->keys[i];
            if (kid && (k->kid == NULL || strcmp(k->kid, kid->valuestring) != 0))
                continue;
            if (k->kty != a->kty || (k->alg && strcmp(k->alg, a->name) != 0)) {
                if (kid)
                    matched = true; /* the named key is of another type: bad alg, not unknown */
                continue;
            }
            matched = true;
            good = verify_with(k, a, tok, (size_t)(d2 - tok), sig, (size_t)sn);
        }
        if (!matched)
            r = JWT_UNKNOWN_KID;
        else if (!good) {
            r = JWT_BAD_SIGNATURE;
            for (size_t i = 0; kid && i < ks->n; i++)
                if (ks->keys[i].kid && strcmp(ks->keys[i].kid, kid->valuestring) == 0 &&
                    (ks->keys[i].kty != a->kty || (ks->keys[i].alg && strcmp(ks->keys[i].alg, a->name) != 0)))
                    r = JWT_BAD_ALG;
        }
    }
    if (r == JWT_OK)
        r = claims(p, e, out);
    xfree(sig);
    cJSON_Delete(p);
    cJSON_Delete(h);
    return r;
}

/* ---- the process's key set ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static struct jwks *cur;
static bool running, stopping, wanted;
static pthread_t th;
static char *src_file, *src_url;
static int64_t refresh_ms, min_refresh_ms, last_load_ms;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads and parses the key set; installs it when good. On the refresh thread (or at start-up). */
static void load(void)
{
    struct buf b = BUF_INIT(JWKS_MAX_DOC + 1);
    char err[256] = "";
    int status = 200;
    int rc = src_file ? cc_read_file(src_file, &b, err, sizeof(err))
                      : cc_http("GET", src_url, (const char *const[]){"Accept: application/json", NULL}, NULL, 0,
                                10000, &status, &b, err, sizeof(err));
    if (rc == 0 && status != 200) {
        snprintf(err, sizeof(err), "HTTP status %d", status);
        rc = -1;
    }
    struct jwks *ks = NULL;
    if (rc == 0)
        rc = jwks_parse(b.data ? b.data : "", b.len, &ks, err, sizeof(err));
    buf_free(&b);
    if (rc != 0) {
        log_warn("mcp.jwt: cannot load the JWKS from %s (the previous keys stay): %s", src_file ? src_file : src_url,
                 err);
        return;
    }
    pthread_mutex_lock(&mu);
    struct jwks *old = cur;
    cur = ks;
    pthread_mutex_unlock(&mu);
    jwks_release(old);
    log_info("mcp.jwt: loaded %zu signing keys from %s", ks->n, src_file ? src_file : src_url);
}

static void *refresher(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!stopping) {
        int64_t now = mono_ms();
        int64_t at = wanted ? last_load_ms + min_refresh_ms : last_load_ms + refresh_ms;
        if (now < at) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t ns = ts.tv_nsec + (at - now) % 1000 * 1000000;
            ts.tv_sec += (at - now) / 1000 + ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&cv, &mu, &ts);
            continue;
        }
        wanted = false;
        last_load_ms = now;
        pthread_mutex_unlock(&mu);
        load();
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

void mcp_jwt_start(const struct config *cfg)
{
    const struct config_mcp_jwt *j = &cfg->mcp.jwt;
    if (running || j->issuer == NULL || j->issuer[0] == '\0')
        return;
    src_file = j->jwks_file && j->jwks_file[0] ? xstrdup(j->jwks_file) : NULL;
    src_url = src_file == NULL && j->jwks_url && j->jwks_url[0] ? xstrdup(j->jwks_url) : NULL;
    if (src_file == NULL && src_url == NULL)
        return; /* the schema refuses this */
    refresh_ms = j->jwks_refresh_ms;
    min_refresh_ms = j->jwks_min_refresh_ms;
    last_load_ms = mono_ms();
    load();
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    stopping = wanted = false;
    if (pthread_create(&th, NULL, refresher, NULL) != 0) {
        log_error("mcp.jwt: cannot start the JWKS refresh thread: %s", strerror(errno));
        return;
    }
    running = true;
}

void mcp_jwt_stop(void)
{
    if (running) {
        pthread_mutex_lock(&mu);
        stopping = true;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
        pthread_join(th, NULL);
        pthread_cond_destroy(&cv);
        running = false;
    }
    jwks_release(cur);
    cur = NULL;
    xfree(src_file);
    xfree(src_url);
    src_file = src_url = NULL;
}

enum jwt_result mcp_jwt_check(const struct config *cfg, struct str token, const char *audience,
                              struct jwt_claims *out)
{
    const struct config_mcp_jwt *j = &cfg->mcp.jwt;
    pthread_mutex_lock(&mu);
    struct jwks *ks = cur;
    if (ks)
        jwks_ref(ks);
    pthread_mutex_unlock(&mu);
    struct jwt_expect e = {.issuer = j->issuer,
                           .audience = j->audience && j->audience[0] ? j->audience : audience,
                           .team_claim = j->team_claim,
                           .now = (int64_t)time(NULL),
                           .leeway = j->leeway_ms / 1000};
    enum jwt_result r = jwt_verify(ks, token.p, token.n, &e, out);
    jwks_release(ks);
    if ((r == JWT_UNKNOWN_KID || r == JWT_NO_KEYS) && running) {
        pthread_mutex_lock(&mu);
        if (!wanted) {
            wanted = true;
            pthread_cond_signal(&cv);
        }
        pthread_mutex_unlock(&mu);
    }
    return r;
}
