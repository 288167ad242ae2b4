/* Vertex AI: which publisher a model is, the endpoint of a location, the model URLs, the Anthropic body change
 * (providers/vertex.c); the Google token sources' pure parts (cloud_google.c): the service-account key parser,
 * the JWT bearer assertion (decoded back and its RS256 signature verified with the public key of a key made here)
 * and the metadata URL. */
#include "test.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/alloc.h"
#include "gateway/cloud_google.h"
#include "gateway/providers/vertex.h"

static void test_publisher(void)
{
    const char *id;
    is_int(vertex_publisher("gemini-2.5-flash", &id), VERTEX_PUB_GOOGLE);
    is_str(id, "gemini-2.5-flash");
    is_int(vertex_publisher("claude-sonnet-4-5@20250929", &id), VERTEX_PUB_ANTHROPIC);
    is_str(id, "claude-sonnet-4-5@20250929");
    is_int(vertex_publisher("anthropic/some-future-model", &id), VERTEX_PUB_ANTHROPIC);
    is_str(id, "some-future-model");
    is_int(vertex_publisher("google/claude-lookalike", &id), VERTEX_PUB_GOOGLE);
    is_str(id, "claude-lookalike");
}

static void test_urls(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    vertex_base_url("global", &b);
    is_str(b.data, "https://aiplatform.googleapis.com");
    b.len = 0;
    vertex_base_url(NULL, &b);
    is_str(b.data, "https://aiplatform.googleapis.com");
    b.len = 0;
    vertex_base_url("us-central1", &b);
    is_str(b.data, "https://us-central1-aiplatform.googleapis.com");
    b.len = 0;
    ok(vertex_model_url("https://us-east5-aiplatform.googleapis.com", NULL, "my-proj", "us-east5",
                        "claude-sonnet-4-5@20250929", "streamRawPredict", false, &b) == 0);
    is_str(b.data, "https://us-east5-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-east5/publishers/"
                   "anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict");
    b.len = 0;
    ok(vertex_model_url("http://127.0.0.1:9", "v1beta1", "p", "global", "gemini-2.5-pro", "streamGenerateContent",
                        true, &b) == 0);
    is_str(b.data, "http://127.0.0.1:9/v1beta1/projects/p/locations/global/publishers/google/models/"
                   "gemini-2.5-pro:streamGenerateContent?alt=sse");
    b.len = 0;
    ok(vertex_model_url("http://h", NULL, "p", "global", "anthropic/count-tokens", "rawPredict", false, &b) == 0);
    is_str(b.data, "http://h/v1/projects/p/locations/global/publishers/anthropic/models/count-tokens:rawPredict");
    b.len = 0; /* path segments cannot be escaped from */
    ok(vertex_model_url("http://h", NULL, "p/../x", "l?", "m#/..", "generateContent", false, &b) == 0);
    is_str(b.data, "http://h/v1/projects/p%2F..%2Fx/locations/l%3F/publishers/google/models/m%23%2F..:generateContent");
    b.len = 0;
    ok(vertex_model_url("http://h", NULL, NULL, "global", "m", "generateContent", false, &b) == -1);
    ok(vertex_model_url("http://h", NULL, "p", "", "m", "generateContent", false, &b) == -1);
    ok(vertex_model_url("http://h", NULL, "p", "global", "anthropic/", "rawPredict", false, &b) == -1);
    buf_free(&b);
}

static void test_anthropic_body(void)
{
    cJSON *j = cJSON_Parse("{\"model\":\"vc\",\"anthropic_version\":\"x\",\"max_tokens\":5,\"messages\":[]}");
    ok(vertex_anthropic_body(j, false) == 0);
    char *s = cJSON_PrintUnformatted(j);
    is_str(s, "{\"max_tokens\":5,\"messages\":[],\"anthropic_version\":\"vertex-2023-10-16\"}");
    cJSON_free(s);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"model\":\"claude-x\",\"messages\":[]}");
    ok(vertex_anthropic_body(j, true) == 0);
    s = cJSON_PrintUnformatted(j);
    is_str(s, "{\"model\":\"claude-x\",\"messages\":[],\"anthropic_version\":\"vertex-2023-10-16\"}");
    cJSON_free(s);
    cJSON_Delete(j);
    j = cJSON_Parse("[1]");
    ok(vertex_anthropic_body(j, false) == -1);
    cJSON_Delete(j);
}

static char *rsa_pem(EVP_PKEY **key)
{
    *key = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, *key, NULL, NULL, 0, NULL, NULL);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *out = xmalloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static void json_escaped_pem(struct buf *b, const char *pem)
{
    for (const char *p = pem; *p; p++) {
        if (*p == '\n')
            buf_append_str(b, "\\n");
        else
            buf_append(b, p, 1);
    }
}

static void test_parse_sa(void)
{
    struct cc_google_sa sa;
    char err[256];
    const char *good = "{\"type\":\"service_account\",\"project_id\":\"p\",\"private_key_id\":\"abc\","
                       "\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nMII\\n-----END PRIVATE KEY-----\\n\","
                       "\"client_email\":\"sa@p.iam.gserviceaccount.com\",\"token_uri\":\"http://127.0.0.1:1/token\"}";
    ok(cc_google_parse_sa(good, strlen(good), &sa, err, sizeof(err)) == 0);
    is_str(sa.client_email, "sa@p.iam.gserviceaccount.com");
    is_str(sa.private_key_id, "abc");
    is_str(sa.token_uri, "http://127.0.0.1:1/token");
    is_str(sa.private_key, "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n");
    cc_google_sa_free(&sa);
    const char *no_uri = "{\"private_key\":\"k\",\"client_email\":\"e\"}";
    ok(cc_google_parse_sa(no_uri, strlen(no_uri), &sa, err, sizeof(err)) == 0);
    is_str(sa.token_uri, "https://oauth2.googleapis.com/token");
    ok(sa.private_key_id == NULL);
    cc_google_sa_free(&sa);
    const char *user = "{\"type\":\"authorized_user\",\"private_key\":\"k\",\"client_email\":\"e\"}";
    ok(cc_google_parse_sa(user, strlen(user), &sa, err, sizeof(err)) == -1);
    ok(strstr(err, "service_account") != NULL);
    const char *no_key = "{\"type\":\"service_account\",\"client_email\":\"e\"}";
    ok(cc_google_parse_sa(no_key, strlen(no_key), &sa, err, sizeof(err)) == -1);
    ok(strstr(err, "private_key") != NULL);
    const char *bad_uri = "{\"private_key\":\"k\",\"client_email\":\"e\",\"token_uri\":\"file:///etc/passwd\"}";
    ok(cc_google_parse_sa(bad_uri, strlen(bad_uri), &sa, err, sizeof(err)) == -1);
    ok(cc_google_parse_sa("{", 1, &sa, err, sizeof(err)) == -1);
    ok(cc_google_parse_sa("[]", 2, &sa, err, sizeof(err)) == -1);
}

static int b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    size_t o = 0;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p = strchr(tab, s[i]);
        if (p == NULL || s[i] == '\0')
            return -1;
        v = v << 6 | (unsigned)(p - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(v >> bits);
        }
    }
    return (int)o;
}

static void test_jwt(void)
{
    EVP_PKEY *key;
    char *pem = rsa_pem(&key);
    struct buf file = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&file, "{\"type\":\"service_account\",\"private_key_id\":\"kid-1\",\"private_key\":\"");
    json_escaped_pem(&file, pem);
    buf_append_str(&file, "\",\"client_email\":\"sa@p.iam.gserviceaccount.com\",\"token_uri\":\"https://oauth2.googleapis.com/token\"}");
    struct cc_google_sa sa;
    char err[256];
    ok(cc_google_parse_sa(file.data, file.len, &sa, err, sizeof(err)) == 0);
    struct buf jwt = BUF_INIT(BUF_UNBOUNDED);
    ok(cc_google_jwt(&sa, 1796400000, &jwt, err, sizeof(err)) == 0);
    char *d1 = jwt.data ? strchr(jwt.data, '.') : NULL;
    char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    ok(d1 && d2 && strchr(d2 + 1, '.') == NULL);
    if (d1 && d2) {
        unsigned char dec[2048];
        int n = b64url_decode(jwt.data, (size_t)(d1 - jwt.data), dec, sizeof(dec) - 1);
        ok(n > 0);
        dec[n > 0 ? n : 0] = '\0';
        is_str((char *)dec, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"kid-1\"}");
        n = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), dec, sizeof(dec) - 1);
        ok(n > 0);
        dec[n > 0 ? n : 0] = '\0';
        is_str((char *)dec, "{\"iss\":\"sa@p.iam.gserviceaccount.com\",\"scope\":\"https://www.googleapis.com/auth/"
                            "cloud-platform\",\"aud\":\"https://oauth2.googleapis.com/token\",\"iat\":1796400000,"
                            "\"exp\":1796403600}");
        n = b64url_decode(d2 + 1, strlen(d2 + 1), dec, sizeof(dec));
        is_int(n, 256);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        ok(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1);
        ok(EVP_DigestVerify(md, dec, (size_t)n, (const unsigned char *)jwt.data, (size_t)(d2 - jwt.data)) == 1);
        /* one flipped byte of the signed part: the signature no longer verifies */
        jwt.data[5] ^= 1;
        EVP_MD_CTX_free(md);
        md = EVP_MD_CTX_new();
        ok(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1);
        ok(EVP_DigestVerify(md, dec, (size_t)n, (const unsigned char *)jwt.data, (size_t)(d2 - jwt.data)) != 1);
        EVP_MD_CTX_free(md);
    }
    cc_google_sa_free(&sa);
    /* not a key: an error, nothing appended */
    const char *bad = "{\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n\","
                      "\"client_email\":\"e\"}";
    ok(cc_google_parse_sa(bad, strlen(bad), &sa, err, sizeof(err)) == 0);
    jwt.len = 0;
    ok(cc_google_jwt(&sa, 1, &jwt, err, sizeof(err)) == -1);
    is_int(jwt.len, 0);
    ok(strstr(err, "PEM RSA") != NULL);
    cc_google_sa_free(&sa);
    buf_free(&jwt);
    buf_free(&file);
    xfree(pem);
    EVP_PKEY_free(key);
}

static void test_metadata_url(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    cc_google_metadata_url(NULL, &b);
    is_str(b.data, "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token");
    b.len = 0;
    cc_google_metadata_url("127.0.0.1:8089", &b);
    is_str(b.data, "http://127.0.0.1:8089/computeMetadata/v1/instance/service-accounts/default/token");
    b.len = 0;
    cc_google_metadata_url("http://169.254.169.254/", &b);
    is_str(b.data, "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token");
    buf_free(&b);
}

int main(void)
{
    subtest("publisher", test_publisher);
    subtest("urls", test_urls);
    subtest("anthropic body", test_anthropic_body);
    subtest("service-account key", test_parse_sa);
    subtest("jwt", test_jwt);
    subtest("metadata url", test_metadata_url);
    return done_testing();
}
