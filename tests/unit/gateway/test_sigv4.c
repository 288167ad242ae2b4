/* SigV4 signer: the AWS SigV4 test-suite vectors (get-vanilla, post-vanilla, get-vanilla-query-order-key-case,
 * path normalisation cases) and a Bedrock-shaped request whose expected signature was computed by a second
 * implementation (tests/fakes/sigv4.mjs signSigV4, the one the fake Bedrock verifies with). */
#include "test.h"

#include "gateway/sigv4.h"

static const char *AKID = "AKIDEXAMPLE";
static const char *SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
#define T_20150830 ((time_t)1440938160) /* 2015-08-30T12:36:00Z */

static char *header_line(const struct buf *b, const char *name)
{
    static char out[1024];
    size_t n = strlen(name);
    const char *p = b->data;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 2;
            size_t len = nl ? (size_t)(nl - v) : strlen(v);
            if (len >= sizeof(out))
                len = sizeof(out) - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return out;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

static void suite_params(struct sigv4_params *p, const char *method, const char *path, const char *query)
{
    memset(p, 0, sizeof(*p));
    p->access_key_id = AKID;
    p->secret_access_key = SECRET;
    p->region = "us-east-1";
    p->service = "service";
    p->method = method;
    p->host = "example.amazonaws.com";
    p->path = path;
    p->query = query;
    p->now = T_20150830;
}

static void test_get_vanilla(void)
{
    struct sigv4_params p;
    suite_params(&p, "GET", "/", NULL);
    struct buf h = BUF_INIT(BUF_UNBOUNDED), creq = BUF_INIT(BUF_UNBOUNDED), sts = BUF_INIT(BUF_UNBOUNDED);
    is_int(sigv4_sign(&p, &h, &creq, &sts), 0);
    is_str(creq.data, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
                      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    is_str(sts.data, "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
                     "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
    is_str(header_line(&h, "Authorization"),
           "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
           "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    is_str(header_line(&h, "X-Amz-Date"), "20150830T123600Z");
    ok(header_line(&h, "X-Amz-Security-Token") == NULL);
    ok(header_line(&h, "X-Amz-Content-Sha256") == NULL);
    buf_free(&h);
    buf_free(&creq);
    buf_free(&sts);
}

static void test_post_vanilla(void)
{
    struct sigv4_params p;
    suite_params(&p, "POST", "/", NULL);
    struct buf h = BUF_INIT(BUF_UNBOUNDED);
    is_int(sigv4_sign(&p, &h, NULL, NULL), 0);
    is_str(header_line(&h, "Authorization"),
           "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
           "SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
    buf_free(&h);
}

static void test_query_order(void)
{
    struct sigv4_params p;
    suite_params(&p, "GET", "/", "Param2=value2&Param1=value1");
    struct buf h = BUF_INIT(BUF_UNBOUNDED);
    is_int(sigv4_sign(&p, &h, NULL, NULL), 0);
    is_str(header_line(&h, "Authorization"),
           "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
           "SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    buf_free(&h);
}

static void check_uri(const char *path, bool single, const char *want)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    is_int(sigv4_canonical_uri(path, single, &b), 0);
    is_str(b.data, want);
    buf_free(&b);
}

static void check_query(const char *q, const char *want)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    buf_append(&b, "", 0);
    is_int(sigv4_canonical_query(q, &b), 0);
    is_str(b.data, want);
    buf_free(&b);
}

static void test_canonical_parts(void)
{
    check_uri("/", false, "/");
    check_uri("", false, "/");
    check_uri("/example1/example2/../..", false, "/");
    check_uri("//example//", false, "/example/");
    check_uri("/example space/", false, "/example%20space/");
    check_uri("/a/./b/../c/", false, "/a/c/");
    /* the Bedrock case: the wire path is encoded once, the canonical URI twice */
    check_uri("/model/a%3Ab/converse", false, "/model/a%253Ab/converse");
    check_uri("/model/a%3Ab/converse", true, "/model/a%3Ab/converse");
    check_query("Param2=value2&Param1=value1", "Param1=value1&Param2=value2");
    check_query("b=2&a=3&a=1", "a=1&a=3&b=2");
    check_query("x=%7e%20y&X-Amz-Signature=zz", "x=~%20y");
    check_query("k", "k=");
    check_query("", "");
}

/* Expected values from tests/fakes/sigv4.mjs:
 *   signSigV4({accessKeyId:'AKIAFAKEEXAMPLE00000', secretAccessKey:'fakeSecretAccessKey/EXAMPLE+0123456789ab',
 *              sessionToken:'FwoGZXIvYXdzEXAMPLEtoken', region:'eu-west-3', service:'bedrock', host:'127.0.0.1:4567',
 *              method:'POST', rawPath:'/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse',
 *              headers:{'content-type':'application/json'}, body, contentSha256Header:true,
 *              date:new Date(Date.UTC(2026,10,28,15,2,58))}) */
static void bedrock_params(struct sigv4_params *p, const char *body, const char *const *hn, const char *const *hv)
{
    memset(p, 0, sizeof(*p));
    p->access_key_id = "AKIAFAKEEXAMPLE00000";
    p->secret_access_key = "fakeSecretAccessKey/EXAMPLE+0123456789ab";
    p->session_token = "FwoGZXIvYXdzEXAMPLEtoken";
    p->region = "eu-west-3";
    p->service = "bedrock";
    p->method = "POST";
    p->host = "127.0.0.1:4567";
    p->path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse";
    p->header_names = hn;
    p->header_values = hv;
    p->nheaders = 1;
    p->body = body;
    p->body_len = strlen(body);
    p->now = (time_t)1795878178; /* 2026-11-28T15:02:58Z */
    p->content_sha256_header = true;
}

static void test_bedrock_vector(void)
{
    static const char body[] = "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]}";
    static const char *const hn[] = {"Content-Type"};
    static const char *const hv[] = {"  application/json "};
    struct sigv4_params p;
    bedrock_params(&p, body, hn, hv);
    struct buf h = BUF_INIT(BUF_UNBOUNDED), creq = BUF_INIT(BUF_UNBOUNDED);
    is_int(sigv4_sign(&p, &h, &creq, NULL), 0);
    is_str(header_line(&h, "X-Amz-Date"), "20261128T150258Z");
    is_str(header_line(&h, "X-Amz-Content-Sha256"), "c3335e07d6e89650bf94cb98664be69f8774dbc3198df221f113db0a59ea14f0");
    is_str(header_line(&h, "X-Amz-Security-Token"), "FwoGZXIvYXdzEXAMPLEtoken");
    is_str(header_line(&h, "Authorization"),
           "AWS4-HMAC-SHA256 Credential=AKIAFAKEEXAMPLE00000/20261128/eu-west-3/bedrock/aws4_request, "
           "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
           "Signature=6526a5c05efc1b1de1aa721d53e2ba65bacc36cdc7e873b16b296a9b15e5ffb1");
    ok(strstr(creq.data, "\n/model/anthropic.claude-3-5-haiku-20241022-v1%253A0/converse\n") != NULL);
    ok(strstr(creq.data, "\ncontent-type:application/json\n") != NULL);

    /* What libcurl < 8.9 does (path encoded once) gives another signature: the reason we sign ourselves. */
    struct buf h2 = BUF_INIT(BUF_UNBOUNDED);
    p.single_encode_path = true;
    is_int(sigv4_sign(&p, &h2, NULL, NULL), 0);
    ok(strcmp(header_line(&h2, "Authorization") ? header_line(&h2, "Authorization") : "",
              "AWS4-HMAC-SHA256 Credential=AKIAFAKEEXAMPLE00000/20261128/eu-west-3/bedrock/aws4_request, "
              "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
              "Signature=6526a5c05efc1b1de1aa721d53e2ba65bacc36cdc7e873b16b296a9b15e5ffb1") != 0);
    /* A different secret changes the signature. */
    struct buf h3 = BUF_INIT(BUF_UNBOUNDED);
    p.single_encode_path = false;
    p.secret_access_key = "wrong";
    is_int(sigv4_sign(&p, &h3, NULL, NULL), 0);
    ok(strstr(header_line(&h3, "Authorization"), "6526a5c05efc1b1de1aa721d53e2ba65bacc36cdc7e873b16b296a9b15e5ffb1") ==
       NULL);
    buf_free(&h);
    buf_free(&h2);
    buf_free(&h3);
    buf_free(&creq);
}

static void test_missing_fields(void)
{
    struct sigv4_params p;
    suite_params(&p, "GET", "/", NULL);
    p.secret_access_key = NULL;
    struct buf h = BUF_INIT(BUF_UNBOUNDED);
    is_int(sigv4_sign(&p, &h, NULL, NULL), -1);
    is_int((long long)h.len, 0);
    buf_free(&h);
}

static void test_sha256(void)
{
    char hex[65];
    sigv4_sha256_hex("", 0, hex);
    is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sigv4_sha256_hex("abc", 3, hex);
    is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
    subtest("get-vanilla", test_get_vanilla);
    subtest("post-vanilla", test_post_vanilla);
    subtest("get-vanilla-query-order", test_query_order);
    subtest("canonical uri and query", test_canonical_parts);
    subtest("bedrock vector (second implementation)", test_bedrock_vector);
    subtest("missing fields", test_missing_fields);
    subtest("sha256", test_sha256);
    return done_testing();
}
