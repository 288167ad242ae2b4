/* cloud_google.c: Google OAuth access tokens for Vertex AI (cloud_creds.h kinds); sent as Authorization: Bearer.
 *
 * google_service_account: a service-account key file (the deployment's `credentials_file`, else
 * GOOGLE_APPLICATION_CREDENTIALS), read again at every refresh (a rotated Secret is picked up). A JWT signed
 * RS256 with the key's private_key,
 *   header {"alg":"RS256","typ":"JWT","kid":private_key_id}
 *   claims {"iss":client_email,"scope":"https://www.googleapis.com/auth/cloud-platform","aud":token_uri,
 *           "iat":now,"exp":now+3600}
 * is exchanged at the key's token_uri (default https://oauth2.googleapis.com/token):
 *   POST grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
 * answer {"access_token","expires_in","token_type":"Bearer"} or {"error","error_description"}.
 *   args: 0 the key file's path.
 *
 * google_metadata (GKE Workload Identity, GCE, Cloud Run): the metadata server's token of the attached service
 * account,
 *   GET http://{GCE_METADATA_HOST, default metadata.google.internal}/computeMetadata/v1/instance/
 *       service-accounts/default/token   with Metadata-Flavor: Google
 * answered as above. (GCE_METADATA_HOST is the override Google's own client libraries read.)
 *   args: 0 the full token URL. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/cloud_creds.h"
#include "gateway/cloud_google.h"

/* ---------- the key file ---------- */

static char *jstr(const struct jval *v, size_t max)
{
    if (v->type != J_STRING)
        return NULL;
    struct buf b = BUF_INIT(max);
    if (jval_str(v, &b) != 0 || b.len == 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

static void wipe_free(char *s)
{
    if (s) {
        volatile char *p = s;
        while (*p)
            *p++ = 0;
    }
    xfree(s);
}

void cc_google_sa_free(struct cc_google_sa *sa)
{
    xfree(sa->client_email);
    wipe_free(sa->private_key);
    xfree(sa->private_key_id);
    xfree(sa->token_uri);
    memset(sa, 0, sizeof(*sa));
}

int cc_google_parse_sa(const char *json, size_t len, struct cc_google_sa *sa, char *err, size_t errlen)
{
    memset(sa, 0, sizeof(*sa));
    static const char *const keys[] = {"type", "client_email", "private_key", "private_key_id", "token_uri"};
    struct jval v[5];
    size_t off;
    const char *why;
    if (jscan_fields(json, len, keys, v, 5, &off, &why) != 0) {
        snprintf(err, errlen, "not a JSON object (%s at byte %zu)", why, off);
        return -1;
    }
    if (v[0].type != J_NONE && !jval_is_str(&v[0], "service_account")) {
        snprintf(err, errlen, "not a service-account key (\"type\" is not \"service_account\")");
        return -1;
    }
    sa->client_email = jstr(&v[1], 1024);
    sa->private_key = jstr(&v[2], 16384);
    sa->private_key_id = jstr(&v[3], 256);
    sa->token_uri = v[4].type == J_NONE ? xstrdup(CC_GOOGLE_TOKEN_URI) : jstr(&v[4], 2048);
    const char *missing = sa->client_email == NULL ? "client_email"
                          : sa->private_key == NULL ? "private_key"
                          : sa->token_uri == NULL   ? "token_uri"
                                                    : NULL;
    if (missing == NULL && strncmp(sa->token_uri, "https://", 8) != 0 && strncmp(sa->token_uri, "http://", 7) != 0)
        missing = "token_uri (an http(s) URL)";
    if (missing) {
        snprintf(err, errlen, "the key has no valid %s", missing);
        cc_google_sa_free(sa);
        return -1;
    }
    return 0;
}

/* ---------- the JWT ---------- */

int cc_google_jwt(const struct cc_google_sa *sa, int64_t now, struct buf *out, char *err, size_t errlen)
{
    struct buf hdr = BUF_INIT(BUF_UNBOUNDED), claims = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&hdr, "{\"alg\":\"RS256\",\"typ\":\"JWT\"");
    if (sa->private_key_id) {
        buf_append_str(&hdr, ",\"kid\":");
        buf_append_json_cstr(&hdr, sa->private_key_id);
    }
    buf_append_char(&hdr, '}');
    buf_append_str(&claims, "{\"iss\":");
    buf_append_json_cstr(&claims, sa->client_email);
    buf_append_str(&claims, ",\"scope\":\"" CC_GOOGLE_SCOPE "\",\"aud\":");
    buf_append_json_cstr(&claims, sa->token_uri);
    buf_printf(&claims, ",\"iat\":%lld,\"exp\":%lld}", (long long)now, (long long)now + CC_GOOGLE_JWT_LIFETIME_S);
    size_t start = out->len;
    buf_append_base64(out, hdr.data, hdr.len, true);
    buf_append_char(out, '.');
    buf_append_base64(out, claims.data, claims.len, true);
    buf_free(&hdr);
    buf_free(&claims);

    int rc = -1;
    BIO *bio = BIO_new_mem_buf(sa->private_key, -1);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        snprintf(err, errlen, "the key's private_key is not a PEM RSA private key");
    } else if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
               EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)out->data + start, out->len - start) != 1 ||
               siglen > sizeof(sig) ||
               EVP_DigestSign(md, sig, &siglen, (const unsigned char *)out->data + start, out->len - start) != 1) {
        snprintf(err, errlen, "could not sign the JWT with the key's private_key");
    } else {
        buf_append_char(out, '.');
        buf_append_base64(out, sig, siglen, true);
        rc = 0;
    }
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    BIO_free(bio);
    if (rc != 0)
        out->len = start;
    return rc;
}

/* ---------- the kinds ---------- */

static int read_sa(const char *path, struct cc_google_sa *sa, char *err, size_t errlen)
{
    struct buf f = BUF_INIT(65536 + 1);
    char ferr[300];
    int rc = cc_read_file(path, &f, ferr, sizeof(ferr));
    if (rc != 0) {
        snprintf(err, errlen, "service-account key %s: %s", path, ferr);
    } else if ((rc = cc_google_parse_sa(f.data ? f.data : "", f.len, sa, ferr, sizeof(ferr))) != 0) {
        snprintf(err, errlen, "service-account key %s: %s", path, ferr);
    }
    buf_free_secret(&f);
    return rc;
}

static int sa_configure(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen)
{
    const char *path = dep && dep->credentials_file && *dep->credentials_file
                           ? dep->credentials_file
                           : cc_env(env, "GOOGLE_APPLICATION_CREDENTIALS");
    if (path == NULL) {
        snprintf(why, whylen, "google_service_account needs credentials_file or GOOGLE_APPLICATION_CREDENTIALS");
        return 1;
    }
    /* a key that cannot be used is a configuration error now, not a 503 on every request later */
    struct cc_google_sa sa;
    if (read_sa(path, &sa, why, whylen) != 0)
        return -1;
    cc_google_sa_free(&sa);
    spec->arg[0] = xstrdup(path);
    return 0;
}

static int sa_fetch(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen)
{
    struct cc_google_sa sa;
    if (read_sa(spec->arg[0], &sa, err, errlen) != 0)
        return -1;
    struct buf jwt = BUF_INIT(BUF_UNBOUNDED), form = BUF_INIT(BUF_UNBOUNDED);
    int rc = -1;
    char jerr[200];
    if (cc_google_jwt(&sa, (int64_t)time(NULL), &jwt, jerr, sizeof(jerr)) != 0) {
        snprintf(err, errlen, "service-account key %s: %s", spec->arg[0], jerr);
        goto out;
    }
    buf_append_str(&form, "grant_type=");
    cc_form_encode(&form, "urn:ietf:params:oauth:grant-type:jwt-bearer");
    buf_append_str(&form, "&assertion=");
    buf_append(&form, jwt.data, jwt.len); /* base64url and dots: nothing to encode */
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
                                       NULL};
    rc = cc_oauth_token("Google token endpoint", "POST", sa.token_uri, hdrs, &form, out, err, errlen);
out:
    buf_free_secret(&jwt);
    buf_free_secret(&form);
    cc_google_sa_free(&sa);
    return rc;
}

const struct cc_kind cc_kind_google_service_account = {
    .name = "google_service_account",
    .configure = sa_configure,
    .fetch = sa_fetch,
};

void cc_google_metadata_url(const char *host, struct buf *out)
{
    const char *h = host && *host ? host : "metadata.google.internal";
    if (strncmp(h, "http://", 7) == 0)
        h += 7;
    size_t n = strlen(h);
    while (n && h[n - 1] == '/')
        n--;
    buf_append_str(out, "http://");
    buf_append(out, h, n);
    buf_append_str(out, "/computeMetadata/v1/instance/service-accounts/default/token");
}

static int md_configure(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen)
{
    (void)dep;
    (void)why;
    (void)whylen;
    /* the metadata server cannot be detected from the environment: `auto` ends here, as Google's own default
     * credentials do, and a machine without one gets a clear 503 */
    struct buf url = BUF_INIT(4096);
    cc_google_metadata_url(cc_env(env, "GCE_METADATA_HOST"), &url);
    spec->arg[0] = buf_steal(&url, NULL);
    return 0;
}

static int md_fetch(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen)
{
    static const char *const hdrs[] = {"Metadata-Flavor: Google", "Accept: application/json", NULL};
    return cc_oauth_token("GCE metadata server", "GET", spec->arg[0], hdrs, NULL, out, err, errlen);
}

const struct cc_kind cc_kind_google_metadata = {
    .name = "google_metadata",
    .configure = md_configure,
    .fetch = md_fetch,
};
