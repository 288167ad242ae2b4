/* cloud_aws.c: AWS credential sources for Bedrock (cloud_creds.h).
 *
 * aws_web_identity (IRSA on EKS, any OIDC federation): the projected service-account token in
 * AWS_WEB_IDENTITY_TOKEN_FILE (read again at every refresh: the kubelet rotates it) is exchanged for temporary
 * credentials by STS AssumeRoleWithWebIdentity (an unsigned query-API POST; XML answer) for AWS_ROLE_ARN, session
 * name AWS_ROLE_SESSION_NAME (default agentd-<time>). Endpoint: AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL, else
 * the regional https://sts.{region}.amazonaws.com (region: AWS_REGION, AWS_DEFAULT_REGION, the deployment's).
 *   args: 0 token file, 1 role ARN, 2 session name ("" = generated), 3 endpoint URL.
 *
 * aws_container (EKS Pod Identity, ECS task roles): GET AWS_CONTAINER_CREDENTIALS_FULL_URI, or
 * http://169.254.170.2 + AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, with the Authorization header from
 * AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read at every refresh; EKS Pod Identity rotates it) or
 * AWS_CONTAINER_AUTHORIZATION_TOKEN. JSON answer {AccessKeyId, SecretAccessKey, Token, Expiration}. As in the
 * SDKs, a full URI must be https or http to a loopback or the container-credentials addresses.
 *   args: 0 URL, 1 token file, 2 token. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/cloud_creds.h"

/* ---------- STS XML ---------- */

/* The text of the first <name>...</name> in [p, p+n), or -1. Linear (memmem is two-way in glibc). */
static int xml_elem(const char *p, size_t n, const char *name, const char **start, size_t *len)
{
    char open[64], close[64];
    int ol = snprintf(open, sizeof(open), "<%s>", name);
    int cl = snprintf(close, sizeof(close), "</%s>", name);
    const char *a = memmem(p, n, open, (size_t)ol);
    if (a == NULL)
        return -1;
    a += ol;
    const char *b = memmem(a, n - (size_t)(a - p), close, (size_t)cl);
    if (b == NULL)
        return -1;
    *start = a;
    *len = (size_t)(b - a);
    return 0;
}

/* XML text with the five predefined entities and numeric references (ASCII only) resolved. NULL if malformed. */
static char *xml_text(const char *s, size_t n)
{
    struct buf b = BUF_INIT(CC_HTTP_MAX_BODY);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '<') {
            buf_free(&b);
            return NULL;
        }
        if (s[i] != '&') {
            buf_append_char(&b, s[i]);
            continue;
        }
        const char *semi = memchr(s + i, ';', n - i < 12 ? n - i : 12);
        if (semi == NULL) {
            buf_free(&b);
            return NULL;
        }
        size_t el = (size_t)(semi - (s + i)) + 1;
        static const struct { const char *e; char c; } ents[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        char c = 0;
        for (size_t k = 0; k < 5; k++)
            if (strlen(ents[k].e) == el && memcmp(ents[k].e, s + i, el) == 0)
                c = ents[k].c;
        if (c == 0 && el > 3 && s[i + 1] == '#') {
            unsigned v = 0;
            bool hex = s[i + 2] == 'x';
            for (size_t k = i + (hex ? 3 : 2); k < i + el - 1; k++) {
                char d = s[k];
                int dv = d >= '0' && d <= '9' ? d - '0'
                         : hex && d >= 'a' && d <= 'f' ? d - 'a' + 10
                         : hex && d >= 'A' && d <= 'F' ? d - 'A' + 10
                                                        : -1;
                if (dv < 0) {
                    v = 0;
                    break;
                }
                v = v * (hex ? 16u : 10u) + (unsigned)dv;
            }
            if (v >= 0x20 && v < 0x7f)
                c = (char)v;
        }
        if (c == 0) {
            buf_free(&b);
            return NULL;
        }
        buf_append_char(&b, c);
        i += el - 1;
    }
    if (b.data == NULL)
        return xstrdup("");
    return buf_steal(&b, NULL);
}

static char *xml_get(const char *p, size_t n, const char *name)
{
    const char *s;
    size_t l;
    return xml_elem(p, n, name, &s, &l) == 0 ? xml_text(s, l) : NULL;
}

int cc_aws_parse_sts(const char *body, size_t len, struct cc_creds *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *s;
    size_t l;
    if (xml_elem(body, len, "Error", &s, &l) == 0) {
        char *code = xml_get(s, l, "Code"), *msg = xml_get(s, l, "Message");
        snprintf(err, errlen, "STS AssumeRoleWithWebIdentity failed: %s: %s", code ? code : "error",
                 msg ? msg : "(no message)");
        xfree(code);
        xfree(msg);
        return -1;
    }
    if (xml_elem(body, len, "Credentials", &s, &l) != 0) {
        snprintf(err, errlen, "STS answered without <Credentials>");
        return -1;
    }
    out->access_key_id = xml_get(s, l, "AccessKeyId");
    out->secret_access_key = xml_get(s, l, "SecretAccessKey");
    out->session_token = xml_get(s, l, "SessionToken");
    char *exp = xml_get(s, l, "Expiration");
    int rc = 0;
    if (!out->access_key_id || !*out->access_key_id || !out->secret_access_key || !*out->secret_access_key ||
        !out->session_token || !*out->session_token) {
        snprintf(err, errlen, "STS answered without AccessKeyId, SecretAccessKey or SessionToken");
        rc = -1;
    } else if (exp == NULL || cc_parse_iso8601(exp, strlen(exp), &out->expires_at) != 0) {
        snprintf(err, errlen, "STS answered without a valid Expiration");
        rc = -1;
    }
    xfree(exp);
    if (rc != 0)
        cc_creds_clear(out);
    return rc;
}

/* ---------- container endpoint JSON ---------- */

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

int cc_aws_parse_container(const char *body, size_t len, struct cc_creds *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    static const char *const keys[] = {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "message",
                                       "Message", "code", "Code"};
    struct jval v[8];
    size_t off;
    const char *why;
    if (jscan_fields(body, len, keys, v, 8, &off, &why) != 0) {
        snprintf(err, errlen, "the container credentials endpoint answered invalid JSON (%s at byte %zu)", why,
                 off);
        return -1;
    }
    out->access_key_id = jstr(&v[0]);
    out->secret_access_key = jstr(&v[1]);
    out->session_token = jstr(&v[2]);
    char *exp = jstr(&v[3]);
    int rc = 0;
    if (!out->access_key_id || !out->secret_access_key) {
        char *m = jstr(v[4].type ? &v[4] : &v[5]), *c = jstr(v[6].type ? &v[6] : &v[7]);
        if (m || c)
            snprintf(err, errlen, "the container credentials endpoint failed: %s%s%s", c ? c : "",
                     c && m ? ": " : "", m ? m : "");
        else
            snprintf(err, errlen, "the container credentials endpoint answered without AccessKeyId/SecretAccessKey");
        xfree(m);
        xfree(c);
        rc = -1;
    } else if (exp && cc_parse_iso8601(exp, strlen(exp), &out->expires_at) != 0) {
        snprintf(err, errlen, "the container credentials endpoint answered an invalid Expiration");
        rc = -1;
    }
    xfree(exp);
    if (rc != 0)
        cc_creds_clear(out);
    return rc;
}

/* ---------- sources ---------- */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static int wi_configure(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen)
{
    const char *file = cc_env(env, "AWS_WEB_IDENTITY_TOKEN_FILE"), *role = cc_env(env, "AWS_ROLE_ARN");
    if (file == NULL || role == NULL) {
        snprintf(why, whylen, "aws_web_identity needs AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN");
        return 1;
    }
    spec->arg[0] = xstrdup(file);
    spec->arg[1] = xstrdup(role);
    spec->arg[2] = xstrdup(cc_env(env, "AWS_ROLE_SESSION_NAME") ? cc_env(env, "AWS_ROLE_SESSION_NAME") : "");
    const char *ep = cc_env(env, "AWS_ENDPOINT_URL_STS");
    if (ep == NULL)
        ep = cc_env(env, "AWS_ENDPOINT_URL");
    if (ep) {
        spec->arg[3] = xstrdup(ep);
    } else {
        const char *region = cc_env(env, "AWS_REGION");
        if (region == NULL)
            region = cc_env(env, "AWS_DEFAULT_REGION");
        if (region == NULL)
            region = dep->region;
        char url[256];
        if (region)
            snprintf(url, sizeof(url), "https://sts.%s.amazonaws.com", region);
        else
            snprintf(url, sizeof(url), "https://sts.amazonaws.com");
        spec->arg[3] = xstrdup(url);
    }
    return 0;
}

static int wi_fetch(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen)
{
    struct buf tok = BUF_INIT(65536 + 1), form = BUF_INIT(1 << 18), resp = BUF_INIT(CC_HTTP_MAX_BODY + 1),
               url = BUF_INIT(4096);
    int rc = -1;
    if (cc_read_file(spec->arg[0], &tok, err, errlen) != 0)
        goto out;
    char session[64];
    if (spec->arg[2] && *spec->arg[2])
        snprintf(session, sizeof(session), "%s", spec->arg[2]);
    else
        snprintf(session, sizeof(session), "agentd-%lld", (long long)time(NULL));
    buf_append_str(&form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=");
    cc_form_encode(&form, spec->arg[1]);
    buf_append_str(&form, "&RoleSessionName=");
    cc_form_encode(&form, session);
    buf_append_str(&form, "&WebIdentityToken=");
    cc_form_encode(&form, tok.data);
    buf_append_str(&url, spec->arg[3]);
    if (url.len == 0 || url.data[url.len - 1] != '/')
        buf_append_char(&url, '/');
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded; charset=utf-8",
                                       "Accept: text/xml", NULL};
    int status;
    char terr[256];
    if (cc_http("POST", url.data, hdrs, form.data, form.len, CC_HTTP_TIMEOUT_MS, &status, &resp, terr,
                sizeof(terr)) != 0) {
        snprintf(err, errlen, "STS %s: %s", url.data, terr);
        goto out;
    }
    char perr[400];
    if (cc_aws_parse_sts(resp.data ? resp.data : "", resp.len, out, perr, sizeof(perr)) != 0) {
        if (status >= 200 && status < 300)
            snprintf(err, errlen, "STS %s: %s", url.data, perr);
        else if (strstr(perr, "failed:"))
            snprintf(err, errlen, "%s (HTTP %d from %s)", perr, status, url.data);
        else {
            char brief[201];
            cc_brief_body(brief, sizeof(brief), &resp);
            snprintf(err, errlen, "STS %s answered HTTP %d: %s", url.data, status, brief);
        }
        goto out;
    }
    if (status < 200 || status >= 300) {
        cc_creds_clear(out);
        snprintf(err, errlen, "STS %s answered HTTP %d", url.data, status);
        goto out;
    }
    rc = 0;
out:
    buf_free_secret(&tok);
    buf_free_secret(&form);
    buf_free(&resp);
    buf_free(&url);
    return rc;
}

const struct cc_kind cc_kind_aws_web_identity = {
    .name = "aws_web_identity",
    .configure = wi_configure,
    .fetch = wi_fetch,
};

/* http is allowed to loopback and the container-credentials addresses only (as in the SDKs). */
static bool container_url_ok(const char *u)
{
    if (strncmp(u, "https://", 8) == 0)
        return true;
    static const char *const ok[] = {"http://127.", "http://localhost:", "http://localhost/", "http://[::1]",
                                     "http://169.254.170.2:", "http://169.254.170.2/", "http://169.254.170.23:",
                                     "http://169.254.170.23/", "http://[fd00:ec2::23]"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strncmp(u, ok[i], strlen(ok[i])) == 0)
            return true;
    return strcmp(u, "http://169.254.170.2") == 0 || strcmp(u, "http://169.254.170.23") == 0;
}

static int ct_configure(struct cc_spec *spec, char **env, const struct cc_dep_info *dep, char *why, size_t whylen)
{
    (void)dep;
    const char *rel = cc_env(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = cc_env(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (rel) {
        char url[2048];
        snprintf(url, sizeof(url), "http://169.254.170.2%s%s", rel[0] == '/' ? "" : "/", rel);
        spec->arg[0] = xstrdup(url);
    } else if (full) {
        if (!container_url_ok(full)) {
            snprintf(why, whylen,
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback address or "
                     "169.254.170.2 / 169.254.170.23");
            return -1;
        }
        spec->arg[0] = xstrdup(full);
    } else {
        snprintf(why, whylen,
                 "aws_container needs AWS_CONTAINER_CREDENTIALS_FULL_URI or AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
        return 1;
    }
    spec->arg[1] = dup_or_null(cc_env(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));
    spec->arg[2] = dup_or_null(cc_env(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    return 0;
}

static int ct_fetch(const struct cc_spec *spec, struct cc_creds *out, char *err, size_t errlen)
{
    struct buf tok = BUF_INIT(65536 + 1), auth = BUF_INIT(65536 + 64), resp = BUF_INIT(CC_HTTP_MAX_BODY + 1);
    int rc = -1;
    const char *hdrs[3] = {"Accept: application/json", NULL, NULL};
    if (spec->arg[1]) {
        if (cc_read_file(spec->arg[1], &tok, err, errlen) != 0)
            goto out;
    } else if (spec->arg[2]) {
        buf_append_str(&tok, spec->arg[2]);
    }
    if (tok.len) {
        if (memchr(tok.data, '\n', tok.len) || memchr(tok.data, '\r', tok.len)) {
            snprintf(err, errlen, "the container authorization token contains a line break");
            goto out;
        }
        buf_printf(&auth, "Authorization: %s", tok.data);
        hdrs[1] = auth.data;
    }
    int status;
    char terr[256];
    if (cc_http("GET", spec->arg[0], hdrs, NULL, 0, CC_HTTP_TIMEOUT_MS, &status, &resp, terr, sizeof(terr)) != 0) {
        snprintf(err, errlen, "container credentials endpoint %s: %s", spec->arg[0], terr);
        goto out;
    }
    char perr[400];
    int prc = cc_aws_parse_container(resp.data ? resp.data : "", resp.len, out, perr, sizeof(perr));
    if (status < 200 || status >= 300) {
        cc_creds_clear(out);
        char brief[201];
        cc_brief_body(brief, sizeof(brief), &resp);
        snprintf(err, errlen, "container credentials endpoint %s answered HTTP %d: %s", spec->arg[0], status,
                 prc != 0 && strstr(perr, "failed:") ? perr : brief);
        goto out;
    }
    if (prc != 0) {
        snprintf(err, errlen, "%s (%s)", perr, spec->arg[0]);
        goto out;
    }
    rc = 0;
out:
    buf_free_secret(&tok);
    buf_free_secret(&auth);
    buf_free(&resp);
    return rc;
}

const struct cc_kind cc_kind_aws_container = {
    .name = "aws_container",
    .configure = ct_configure,
    .fetch = ct_fetch,
};
