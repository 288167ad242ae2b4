/* Unit tests: cloud credential parsers (STS XML, container JSON, Entra ID / IMDS JSON), helpers, and source
 * selection and sharing (gateway/cloud_creds.h). The fetch-and-refresh thread is exercised end to end by
 * tests/integration/cloud_creds.test.mjs against fakes of the token endpoints. */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/cloud_creds.h"
#include "gateway/gw_types.h"
#include "gateway/provider_ids.h"
#include "test.h"

static const char STS_OK[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>\n"
    "    <Audience>sts.amazonaws.com</Audience>\n"
    "    <AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId>"
    "</AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <SessionToken>FQoGZXIvYXdzE+/Token=&amp;more</SessionToken>\n"
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"
    "      <Expiration>2026-12-04T18:00:00Z</Expiration>\n"
    "      <AccessKeyId>ASIAEXAMPLE123</AccessKeyId>\n"
    "    </Credentials>\n"
    "    <Provider>arn:aws:iam::1:oidc-provider/x</Provider>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

static const char STS_ERR[] =
    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
    "<Message>Couldn&apos;t retrieve verification key from your identity provider</Message></Error>\n"
    "  <RequestId>r-2</RequestId>\n</ErrorResponse>\n";

static void test_sts(void)
{
    struct cc_creds c;
    char err[512];
    ok(cc_aws_parse_sts(STS_OK, strlen(STS_OK), &c, err, sizeof(err)) == 0);
    is_str(c.access_key_id, "ASIAEXAMPLE123");
    is_str(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
    is_str(c.session_token, "FQoGZXIvYXdzE+/Token=&more");
    is_int(c.expires_at, 1796407200); /* 2026-12-04T18:00:00Z */
    ok(c.token == NULL);
    cc_creds_clear(&c);
    ok(c.access_key_id == NULL);

    ok(cc_aws_parse_sts(STS_ERR, strlen(STS_ERR), &c, err, sizeof(err)) == -1);
    ok(strstr(err, "InvalidIdentityToken") != NULL);
    ok(strstr(err, "Couldn't retrieve verification key") != NULL);
    ok(c.access_key_id == NULL);

    /* missing pieces, truncation, markup inside text, bad expiration */
    static const char *const bad[] = {
        "",
        "<Credentials><AccessKeyId>A</AccessKeyId></Credentials>",
        "<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T"
        "</SessionToken><Expiration>tomorrow</Expiration></Credentials>",
        "<Credentials><AccessKeyId>A<b/></AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T"
        "</SessionToken><Expiration>2026-12-04T18:00:00Z</Expiration></Credentials>",
        "<Credentials><AccessKeyId>A&bogus;</AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T"
        "</SessionToken><Expiration>2026-12-04T18:00:00Z</Expiration></Credentials>",
        "<Credentials><AccessKeyId>ASIA",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ok(cc_aws_parse_sts(bad[i], strlen(bad[i]), &c, err, sizeof(err)) == -1);
        ok(err[0] != '\0');
        ok(c.access_key_id == NULL && c.secret_access_key == NULL && c.session_token == NULL);
    }
    static const char num[] = "<Credentials><AccessKeyId>A&#65;&#x42;</AccessKeyId><SecretAccessKey>S"
                              "</SecretAccessKey><SessionToken>T</SessionToken><Expiration>"
                              "2026-12-04T18:00:00.123+01:00</Expiration></Credentials>";
    ok(cc_aws_parse_sts(num, strlen(num), &c, err, sizeof(err)) == 0);
    is_str(c.access_key_id, "AAB");
    is_int(c.expires_at, 1796407200 - 3600);
    cc_creds_clear(&c);
}

static void test_container(void)
{
    struct cc_creds c;
    char err[512];
    static const char okj[] = "{\"AccessKeyId\":\"ASIACONT\",\"SecretAccessKey\":\"sec\\/ret\",\"Token\":\"tok\","
                              "\"AccountId\":\"123\",\"Expiration\":\"2026-12-04T18:00:00Z\"}";
    ok(cc_aws_parse_container(okj, strlen(okj), &c, err, sizeof(err)) == 0);
    is_str(c.access_key_id, "ASIACONT");
    is_str(c.secret_access_key, "sec/ret");
    is_str(c.session_token, "tok");
    is_int(c.expires_at, 1796407200);
    cc_creds_clear(&c);
    static const char e1[] = "{\"Code\":\"AccessDenied\",\"Message\":\"Service account token cannot be empty\"}";
    ok(cc_aws_parse_container(e1, strlen(e1), &c, err, sizeof(err)) == -1);
    ok(strstr(err, "AccessDenied: Service account token cannot be empty") != NULL);
    static const char e2[] = "{\"AccessKeyId\":\"A\"";
    ok(cc_aws_parse_container(e2, strlen(e2), &c, err, sizeof(err)) == -1);
    ok(strstr(err, "invalid JSON") != NULL);
    ok(c.access_key_id == NULL);
    static const char e3[] = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":\"soon\"}";
    ok(cc_aws_parse_container(e3, strlen(e3), &c, err, sizeof(err)) == -1);
    ok(c.access_key_id == NULL);
}

static void test_azure(void)
{
    struct cc_creds c;
    char err[512];
    static const char entra[] =
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,\"access_token\":\"eyJ0.eyJ1.sig\"}";
    ok(cc_azure_parse_token(entra, strlen(entra), 1000, &c, err, sizeof(err)) == 0);
    is_str(c.token, "eyJ0.eyJ1.sig");
    is_int(c.expires_at, 1000 + 3599);
    ok(c.access_key_id == NULL);
    cc_creds_clear(&c);
    static const char imds[] = "{\"access_token\":\"eyJimds\",\"client_id\":\"c\",\"expires_in\":\"86399\","
                               "\"expires_on\":\"1796407200\",\"ext_expires_in\":\"86399\",\"not_before\":"
                               "\"1796320800\",\"resource\":\"https://cognitiveservices.azure.com\","
                               "\"token_type\":\"Bearer\"}";
    ok(cc_azure_parse_token(imds, strlen(imds), 1000, &c, err, sizeof(err)) == 0);
    is_str(c.token, "eyJimds");
    is_int(c.expires_at, 1796407200);
    cc_creds_clear(&c);
    static const char aad[] = "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS700211: No matching "
                              "federated identity record found\",\"error_codes\":[700211]}";
    ok(cc_azure_parse_token(aad, strlen(aad), 1000, &c, err, sizeof(err)) == -1);
    is_str(err, "invalid_client: AADSTS700211: No matching federated identity record found");
    ok(c.token == NULL);
    static const char *const bad[] = {
        "{\"access_token\":\"x\"}",                                      /* no expiry */
        "{\"access_token\":\"x y\",\"expires_in\":10}",                  /* not header-safe */
        "{\"access_token\":\"x\",\"expires_in\":\"1h\"}",                /* not a number */
        "{\"access_token\":\"x\",\"expires_in\":\"77777777777777777402\"}", /* past int64 (fuzz_cloud_creds) */
        "{\"access_token\":\"x\",\"expires_in\":10,\"token_type\":\"pop\"}",
        "{\"expires_in\":10}",
        "[1]",
        "{\"access_token\":\"x\",\"expires_in\":10",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ok(cc_azure_parse_token(bad[i], strlen(bad[i]), 1000, &c, err, sizeof(err)) == -1);
        ok(err[0] != '\0');
        ok(c.token == NULL);
    }
}

static void test_helpers(void)
{
    int64_t t;
    ok(cc_parse_iso8601("1970-01-01T00:00:00Z", 20, &t) == 0 && t == 0);
    ok(cc_parse_iso8601("2026-12-04T18:00:00.5Z", 22, &t) == 0 && t == 1796407200);
    ok(cc_parse_iso8601("2026-12-04T18:00:00-00:30", 25, &t) == 0 && t == 1796407200 + 1800);
    ok(cc_parse_iso8601("2026-12-04T18:00:00", 19, &t) == -1); /* no zone */
    ok(cc_parse_iso8601("2026-13-04T18:00:00Z", 20, &t) == -1);
    ok(cc_parse_iso8601("2026-12-04T18:00:00Zx", 21, &t) == -1);
    ok(cc_parse_iso8601("2026", 4, &t) == -1);
    struct buf b = BUF_INIT(1024);
    cc_form_encode(&b, "a b+c/d=e~f_g.h-i&");
    is_str(b.data, "a%20b%2Bc%2Fd%3De~f_g.h-i%26");
    buf_free(&b);
    char *env[] = {"A=1", "AB=2", "EMPTY=", NULL};
    is_str(cc_env(env, "A"), "1");
    is_str(cc_env(env, "AB"), "2");
    ok(cc_env(env, "EMPTY") == NULL);
    ok(cc_env(env, "B") == NULL);
}

static void test_sources(void)
{
    char why[512];
    struct cc_source *s1, *s2, *s3;
    struct cc_dep_info bedrock = {.provider = PROVIDER_BEDROCK, .region = "us-west-2"};
    struct cc_dep_info azure = {.provider = PROVIDER_AZURE_OPENAI};
    struct cc_dep_info openai = {.provider = PROVIDER_OPENAI};
    char *none[] = {NULL};
    char *wi[] = {"AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t", "AWS_ROLE_ARN=arn:aws:iam::1:role/r",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:1/creds", NULL};
    char *ct[] = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/x", NULL};
    char *ct_bad[] = {"AWS_CONTAINER_CREDENTIALS_FULL_URI=http://example.com/creds", NULL};

    /* auto: a static key wins; nothing in the environment: no source; otherwise the SDK chain's order */
    ok(cc_source_get(CC_AUTH_AUTO, true, wi, &bedrock, &s1, why, sizeof(why)) == 1 && s1 == NULL);
    ok(cc_source_get(CC_AUTH_AUTO, false, none, &bedrock, &s1, why, sizeof(why)) == 1 && s1 == NULL);
    ok(cc_source_get(CC_AUTH_AUTO, false, wi, &openai, &s1, why, sizeof(why)) == 1 && s1 == NULL);
    ok(cc_source_get(CC_AUTH_AUTO, false, wi, &bedrock, &s1, why, sizeof(why)) == 0 && s1 != NULL);
    is_str(cc_source_kind(s1), "aws_web_identity");
    ok(cc_source_get(CC_AUTH_AWS_WEB_IDENTITY, true, wi, &bedrock, &s2, why, sizeof(why)) == 0);
    ok(s2 == s1); /* same kind and parameters: shared */
    ok(cc_source_get(CC_AUTH_AUTO, false, ct, &bedrock, &s3, why, sizeof(why)) == 0);
    is_str(cc_source_kind(s3), "aws_container");
    ok(s3 != s1);

    /* explicit kinds: missing environment, wrong cloud, not built in */
    ok(cc_source_get(CC_AUTH_AWS_WEB_IDENTITY, false, ct, &bedrock, &s2, why, sizeof(why)) == -1 && s2 == NULL);
    ok(strstr(why, "AWS_WEB_IDENTITY_TOKEN_FILE") != NULL);
    ok(cc_source_get(CC_AUTH_AWS_CONTAINER, false, ct_bad, &bedrock, &s2, why, sizeof(why)) == -1);
    ok(strstr(why, "must be https") != NULL);
    ok(cc_source_get(CC_AUTH_AZURE_MANAGED_IDENTITY, false, none, &bedrock, &s2, why, sizeof(why)) == -1);
    ok(strstr(why, "does not apply") != NULL);
    ok(cc_source_get(CC_AUTH_AZURE_WORKLOAD_IDENTITY, false, none, &azure, &s2, why, sizeof(why)) == -1);
    ok(strstr(why, "AZURE_FEDERATED_TOKEN_FILE") != NULL);
    ok(cc_source_get(CC_AUTH_AUTO, false, none, &azure, &s2, why, sizeof(why)) == 1); /* IMDS is never guessed */
    ok(cc_source_get(CC_AUTH_API_KEY, false, wi, &bedrock, &s2, why, sizeof(why)) == 1 && s2 == NULL);

    /* no credentials thread here: a request gets a typed answer at once, never a wait */
    struct cc_snap *snap = (struct cc_snap *)1;
    ok(cc_acquire(s1, &snap, why, sizeof(why)) == CC_PENDING && snap == NULL);
    struct gw_error e;
    memset(&e, 0, sizeof(e));
    cc_error_set(&e, "bedrock:x", s1, CC_PENDING, why);
    is_int(e.status, 503);
    is_str(e.code, "upstream_credentials_unavailable");
    ok(strstr(e.message, "aws_web_identity credentials are not available yet") != NULL);
    ok(e.retryable);

    cc_source_put(s1);
    cc_source_put(s1);
    cc_source_put(s3);
    cc_source_put(NULL);
}

int main(void)
{
    subtest("sts", test_sts);
    subtest("container", test_container);
    subtest("azure", test_azure);
    subtest("helpers", test_helpers);
    subtest("sources", test_sources);
    return done_testing();
}
