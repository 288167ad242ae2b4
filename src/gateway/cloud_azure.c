/* cloud_azure.c: Microsoft Entra ID tokens for Azure OpenAI (cloud_creds.h); sent as Authorization: Bearer.
 *
 * azure_workload_identity (AKS workload identity): the federated token in AZURE_FEDERATED_TOKEN_FILE (read again
 * at every refresh) is the client assertion of an OAuth 2.0 client-credentials grant:
 *   POST {AZURE_AUTHORITY_HOST, default https://login.microsoftonline.com}/{AZURE_TENANT_ID}/oauth2/v2.0/token
 *   client_id=AZURE_CLIENT_ID&grant_type=client_credentials&scope=https://cognitiveservices.azure.com/.default
 *   &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<token>
 * answer {"token_type","expires_in","access_token"} or {"error","error_description"}.
 *   args: 0 token file, 1 client id, 2 token URL.
 *
 * azure_managed_identity (VM / VMSS / AKS node identity through IMDS):
 *   GET {AZURE_POD_IDENTITY_AUTHORITY_HOST, default http://169.254.169.254}/metadata/identity/oauth2/token
 *       ?api-version=2018-02-01&resource=https://cognitiveservices.azure.com[&client_id=AZURE_CLIENT_ID]
 *   with the header Metadata: true; answer as above, with "expires_on" (epoch seconds, a string) too.
 * (AZURE_POD_IDENTITY_AUTHORITY_HOST is the IMDS override the Azure identity libraries read.)
 *   args: 0 the full token URL. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/cloud_creds.h"

#define AZURE_SCOPE "https://cognitiveservices.azure.com/.default"
#define AZURE_RESOURCE "https://cognitiveservices.azure.com"

static char *jstr(const struct jval *v)
{
    if (v->type != J_STRING)
        return NULL;
    struct buf b = BUF_INIT(CC_HTTP_MAX_BODY);
    if (jval_str(v, &b) != 0 || b.len == 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

/* A number, or a string of digits (IMDS sends "3599"). */
static int jnum(const struct jval *v, int64_t *out)
{
    if (v->type == J_NUMBER)
        return jval_i64(v, out);
    if (v->type != J_STRING || v->raw.n < 3 || v->raw.n > 22)
        return -1;
    int64_t n = 0;
    for (size_t i = 1; i + 1 < v->raw.n; i++) {
        char c = v->raw.p[i];
        if (c < '0' || c > '9' || n > (INT64_MAX - (c - '0')) / 10)
            return -1; /* not digits, or past int64 (20 digits fit the length check) */
        n = n * 10 + (c - '0');
    }
    *out = n;
    return 0;
}

int cc_azure_parse_token(const char *body, size_t len, int64_t now, struct cc_creds *out, char *err,
                         size_t errlen)
{
    memset(out, 0, sizeof(*out));
    static const char *const keys[] = {"access_token", "expires_in", "expires_on", "error", "error_description",
                                       "token_type"};
    struct jval v[6];
    size_t off;
    const char *why;
    if (jscan_fields(body, len, keys, v, 6, &off, &why) != 0) {
        snprintf(err, errlen, "the token endpoint answered invalid JSON (%s at byte %zu)", why, off);
        return -1;
    }
    if (v[3].type != J_NONE) {
        char *e = jstr(&v[3]), *d = jstr(&v[4]);
        if (e == NULL && v[3].type == J_OBJECT) { /* some Azure front doors: {"error":{"code","message"}} */
            struct jval c, m;
            if (jscan_get(v[3].raw.p, v[3].raw.n, "code", &c) == 0)
                e = jstr(&c);
            if (jscan_get(v[3].raw.p, v[3].raw.n, "message", &m) == 0)
                d = jstr(&m);
        }
        snprintf(err, errlen, "%s%s%s", e ? e : "error", d ? ": " : "", d ? d : "");
        xfree(e);
        xfree(d);
        return -1;
    }
    out->token = jstr(&v[0]);
    if (out->token == NULL) {
        snprintf(err, errlen, "the token endpoint answered without access_token");
        return -1;
    }
    for (const char *p = out->token; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
            snprintf(err, errlen, "the access_token contains characters not allowed in a header");
            cc_creds_clear(out);
            return -1;
        }
    char *tt = jstr(&v[5]);
    bool bearer = tt == NULL || strcasecmp(tt, "Bearer") == 0;
    xfree(tt);
    if (!bearer) {
        snprintf(err, errlen, "the token endpoint answered a token_type other than Bearer");
        cc_creds_clear(out);
        return -1;
    }
    int64_t n;
    if (v[2].type != J_NONE && jnum(&v[2], &n) == 0 && n > 0) {
        out->expires_at = n;
    } else if (v[1].type != J_NONE && jnum(&v[1], &n) == 0 && n > 0 && n < 100LL * 365 * 86400) {
        out->expires_at = now + n;
    } else {
        snprintf(err, errlen, "the token endpoint answered without a valid expires_in / expires_on");
        cc_creds_clear(out);
        return -1;
    }
    return 0;
}

int cc_oauth_token(const char *what, const char *method, const char *url, const char *const *hdrs,
                   const struct buf *form, struct cc_creds *out, char *err, size_t errlen)
{
    struct buf resp = BUF_INIT(CC_HTTP_MAX_BODY + 1);
    int status, rc = -1;
    char terr[256];
    if (cc_http(method, url, hdrs, form ? form->data : NULL, form ? form->len : 0, CC_HTTP_TIMEOUT_MS, &status,
                &resp, terr, sizeof(terr)) != 0) {
        snprintf(err, errlen, "%s %s: %s", what, url, terr);
        goto out;
    }
    char perr[400];
    int prc = cc_azure_parse_token(resp.data ? resp.data : "", resp.len, (int64_t)time(NULL), out, perr,
                                   sizeof(perr));
    if (status < 200 || status >= 300) {
        cc_creds_clear(out);
        char brief[201];
        cc_brief_body(brief, sizeof(brief), &resp);
        snprintf(err, errlen, "%s %s answered HTTP %d: %s", what, url, status,
                 prc != 0 && strncmp(perr, "the token endpoint", 18) != 0 ? perr : brief);
        goto out;
    }
    if (prc != 0) {
        snprintf(err, errlen, "%s %s: %s", what, url, perr);
        goto out;
    }
    rc = 0;
out:
    buf_free(&resp);
    return rc;
}

static int wl_configure(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen)
{
    (void)dep;
    const char *file = cc_env(env, "AZURE_FEDERATED_TOKEN_FILE"), *client = cc_env(env, "AZURE_CLIENT_ID"),
               *tenant = cc_env(env, "AZURE_TENANT_ID"), *host = cc_env(env, "AZURE_AUTHORITY_HOST");
    if (file == NULL || client == NULL || tenant == NULL) {
        snprintf(why, whylen,
                 "azure_workload_identity needs AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID");
        return 1;
    }
    if (host == NULL)
        host = "https://login.microsoftonline.com/";
    size_t hl = strlen(host);
    while (hl && host[hl - 1] == '/')
        hl--;
    struct buf url = BUF_INIT(4096);
    buf_append(&url, host, hl);
    buf_append_char(&url, '/');
    cc_form_encode(&url, tenant);
    buf_append_str(&url, "/oauth2/v2.0/token");
    spec->arg[0] = xstrdup(file);
    spec->arg[1] = xstrdup(client);
    spec->arg[2] = buf_steal(&url, NULL);
    return 0;
}

static int wl_fetch(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen)
{
    struct buf tok = BUF_INIT(65536 + 1), form = BUF_INIT(1 << 18);
    int rc = -1;
    if (cc_read_file(spec->arg[0], &tok, err, errlen) != 0)
        goto out;
    buf_append_str(&form, "client_id=");
    cc_form_encode(&form, spec->arg[1]);
    buf_append_str(&form, "&grant_type=client_credentials&scope=");
    cc_form_encode(&form, AZURE_SCOPE);
    buf_append_str(&form, "&client_assertion_type=");
    cc_form_encode(&form, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    buf_append_str(&form, "&client_assertion=");
    cc_form_encode(&form, tok.data);
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                       "Accept: application/json", NULL};
    rc = cc_oauth_token("Entra ID token endpoint", "POST", spec->arg[2], hdrs, &form, out, err, errlen);
out:
    buf_free_secret(&tok);
    buf_free_secret(&form);
    return rc;
}

const struct cc_kind cc_kind_azure_workload_identity = {
    .name = "azure_workload_identity",
    .configure = wl_configure,
    .fetch = wl_fetch,
};

static int mi_configure(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen)
{
    (void)dep;
    (void)why;
    (void)whylen;
    const char *host = cc_env(env, "AZURE_POD_IDENTITY_AUTHORITY_HOST");
    if (host == NULL)
        host = "http://169.254.169.254";
    size_t hl = strlen(host);
    while (hl && host[hl - 1] == '/')
        hl--;
    struct buf url = BUF_INIT(4096);
    buf_append(&url, host, hl);
    buf_append_str(&url, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=");
    cc_form_encode(&url, AZURE_RESOURCE);
    const char *client = cc_env(env, "AZURE_CLIENT_ID");
    if (client) {
        buf_append_str(&url, "&client_id=");
        cc_form_encode(&url, client);
    }
    spec->arg[0] = buf_steal(&url, NULL);
    return 0;
}

static int mi_fetch(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen)
{
    static const char *const hdrs[] = {"Metadata: true", "Accept: application/json", NULL};
    return cc_oauth_token("IMDS token endpoint", "GET", spec->arg[0], hdrs, NULL, out, err, errlen);
}

const struct cc_kind cc_kind_azure_managed_identity = {
    .name = "azure_managed_identity",
    .configure = mi_configure,
    .fetch = mi_fetch,
};
