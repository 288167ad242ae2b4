/* JWT access tokens (src/mcp/mcp_jwt.c): JWKS parsing and token verification with fixed vectors minted by node:crypto
 * (RS256 / ES256 / ES384 keys; exp 2000000000, nbf 1900000000, iss https://iss.test, aud http://h/mcp, sub alice,
 * org blue). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcp/mcp_jwt.h"
#include "test.h"

static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"lV2mR6b49s_jlmOnjVPkZY6FkVoHHFG-r72axf6VID8eB6AStv8v6LFo7MUgkHDtL45Dxds3L"
    "kJ5mv5LzQKCCB6pmG4HUIW-qpAxFPBPd6I9co62mvkGpF1FjpQuNnqJRvFz_plD-7Jc005TNKwF4C4fWG5AZ70KfvdPClf20Ugn4"
    "eVPyKZr1gJtea5Oj1pla3Lp_f6RUqoyMO-z3O8-zrRuZQTlpw6ygS3lhu3EpovACj-YJHh21EFP-BlgeHReXvqGo5ya8nURPK606"
    "y8dEmA3YauG0Oft42NIAM46HHuF2v4o5MZf3BAupeC1BRIfX_StbPgKPVJafFHafBmJ6Q\",\"e\":\"AQAB\",\"kid\":\"r1\",\"use\":\""
    "sig\"},{\"kty\":\"EC\",\"x\":\"He_xfI24LM_410-2HGNcFf6Fh-eGJBA2auq1bpJbJ18\",\"y\":\"80oLzqhSL4AhsKmM8CNorWKdKCR"
    "-sD9MIPfbirdD82M\",\"crv\":\"P-256\",\"kid\":\"e1\",\"use\":\"sig\"},{\"kty\":\"EC\",\"x\":\"gg357nAWteoVxjfyQh60TcdKTiS"
    "PWumn8b0xuV0dV_gCaHJc5rfgK9YbkQDRlCQY\",\"y\":\"7k-KsYcEfdi4Tm6ytByabABUjIkPC0Ei4KttUr094BHzGVbehCs6lPtm"
    "zedynBA5\",\"crv\":\"P-384\",\"kid\":\"e384\",\"use\":\"sig\"},{\"kty\":\"RSA\",\"n\":\"tZGZ9Cl0tD3Mi4L-jurZ75P1J0v_CG_x"
    "M7yL94iycU8lbWVF5Hs2vfPVEGOaTH4P1P3-64G_5BjN_ewdqc1QMuPbE78KR8pE8cX_WHJXFOGTGFfKWpnJtEQDq2wWQfCYLskM"
    "NH2_QSyqh9B5jW314m4dp9I9TlvX2sQnx3FJ7HE\",\"e\":\"AQAB\",\"kid\":\"small\",\"use\":\"sig\"},{\"kty\":\"oct\",\"k\":\"c2V"
    "jcmV0\",\"kid\":\"hmac\"},{\"kty\":\"RSA\",\"n\":\"lV2mR6b49s_jlmOnjVPkZY6FkVoHHFG-r72axf6VID8eB6AStv8v6LFo7MUgk"
    "HDtL45Dxds3LkJ5mv5LzQKCCB6pmG4HUIW-qpAxFPBPd6I9co62mvkGpF1FjpQuNnqJRvFz_plD-7Jc005TNKwF4C4fWG5AZ70Kf"
    "vdPClf20Ugn4eVPyKZr1gJtea5Oj1pla3Lp_f6RUqoyMO-z3O8-zrRuZQTlpw6ygS3lhu3EpovACj-YJHh21EFP-BlgeHReXvqGo"
    "5ya8nURPK606y8dEmA3YauG0Oft42NIAM46HHuF2v4o5MZf3BAupeC1BRIfX_StbPgKPVJafFHafBmJ6Q\",\"e\":\"AQAB\",\"kid\":"
    "\"enc\",\"use\":\"enc\"}]}";
static const char T_RS[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InIxIn0.eyJpc3MiOiJodHRwczovL2lzcy50ZXN0IiwiYXVkIjoiaHR0cDovL2gvbWNwIiwi"
    "c3ViIjoiYWxpY2UiLCJvcmciOiJibHVlIiwiZXhwIjoyMDAwMDAwMDAwLCJuYmYiOjE5MDAwMDAwMDB9.P25LXBYFeDPCN7M02m3"
    "zWsN_aDY8kp8BR3fIvPF_-S3dPg_wFV0c4Tjx58kfqILyjlCpB2Wu2tM6fc2STqmzr5nYRdAaUvnZRwwCNlVF31VyJOdxS18pRqs"
    "GYHaTmBy__yS7eJjv0eETaTCCx_cyfAAzq8IMSoL2_GBYDuvPyekMgtHCWYrpNwlPl5qtQIwKAOD7xmWC-pf4O_LQICUX89_oKU2"
    "VgoTdjRkWfQD0oEGGGtAyqcXnb67udBWtgpgU2zxK8R2D8MzYp0fEnFJxht0R2P4ixR42bLmanp0eEtKA866adFwGsca1iE6VAO6"
    "HkmO3JWyAltx6-92uepKgUA";
static const char T_ES[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImUxIn0.eyJpc3MiOiJodHRwczovL2lzcy50ZXN0IiwiYXVkIjoiaHR0cDovL2gvbWNwIiwi"
    "c3ViIjoiYWxpY2UiLCJvcmciOiJibHVlIiwiZXhwIjoyMDAwMDAwMDAwLCJuYmYiOjE5MDAwMDAwMDB9.uhcr-m9DWm3xa2hgnxb"
    "mVkWzu8wImZhsEQ34jE-70i1qegIL_IFMx8UV9UfoFUOl4FZYrreGrlGZN-INgUzEcA";
static const char T_ES384[] =
    "eyJhbGciOiJFUzM4NCIsImtpZCI6ImUzODQifQ.eyJpc3MiOiJodHRwczovL2lzcy50ZXN0IiwiYXVkIjoiaHR0cDovL2gvbWNwI"
    "iwic3ViIjoiYWxpY2UiLCJvcmciOiJibHVlIiwiZXhwIjoyMDAwMDAwMDAwLCJuYmYiOjE5MDAwMDAwMDB9.bqwlP-1S_z5abgPE"
    "TsfKEWTVwXU28EC9sZf_sqVkq6s--411qC0rZP9L0I-CLl52UcpUE92dLsiv8ihNk2JyXVqzxgxtqnR2D5lCaoGA13przL1FeKRt"
    "H_V7w_3QVQe_";
static const char T_SMALL[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InNtYWxsIn0.eyJpc3MiOiJodHRwczovL2lzcy50ZXN0IiwiYXVkIjoiaHR0cDovL2gvbWNw"
    "Iiwic3ViIjoiYWxpY2UiLCJvcmciOiJibHVlIiwiZXhwIjoyMDAwMDAwMDAwLCJuYmYiOjE5MDAwMDAwMDB9.HizJJ0wpH8b2CU6"
    "8mtlDEoh_0iV2ZR0WItuBrRHP4YctlqauJfZVgFUAri2ff7N_HJ5M7zCOuiPhnRL2FYsYnKcTFse6Bsw6NJ6Az5ArsHM9XAzVaZE"
    "EUs2RrmLFyPYYfpJ263-JfalA_1ZzhCV01RBcviml8omB_0uqO6Wp1uA";
static const char T_NOKID[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lzcy50ZXN0IiwiYXVkIjoiaHR0cDovL2gvbWNwIiwic3ViIjoiYWxpY2U"
    "iLCJvcmciOiJibHVlIiwiZXhwIjoyMDAwMDAwMDAwLCJuYmYiOjE5MDAwMDAwMDB9.ew-nGIOmMrZE6fdKPAK9hXZFK9atlA934C"
    "XgIDJ2tNhX0quT6FDSInwN_RS6s2U_2UgJhvavvLEBAc0pdXxMq-EInniMp84pUMbYqff8hJmtuk2xiqEpvMrg3dSbRIl9C0lnJY"
    "IHx20BWiAm2fdG_iiFkGNKDw23WctrscUPaHoY7k9gROEjCS3Pcpc-JBnFgPAf02_l6jC8YXgT61N0xHGUedh6ONhBbk02556XpH"
    "B7pYOtlojXw6UHRJOCp13bvuJhqXOyKCeTnITZi068Vk11STQiwhFmwqiruAzjGJ7BR4wDpT_vTKiHG4vydm5oLWSYFhkMF9x6Pd"
    "ddXty7JA";
static const char T_ESKID_RS[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImUxIn0.eyJpc3MiOiJodHRwczovL2lzcy50ZXN0IiwiYXVkIjoiaHR0cDovL2gvbWNwIiwi"
    "c3ViIjoiYWxpY2UiLCJvcmciOiJibHVlIiwiZXhwIjoyMDAwMDAwMDAwLCJuYmYiOjE5MDAwMDAwMDB9.S-aMwhZ0BUZ1zXrzjsR"
    "ZbaBgru4hJxf5jN6UDjPzECBHih7IQvOl0eaNr-e2JWRGSXEaLV6kleb5aMAJFACS9I13G_pZQx9aZz6kmIIzVRRPTIjse1-Srwb"
    "HpP5l40UsKRIAw-z_2x8VB44E9umuVja2czViSLG7GUJikYAxJHSurlNcAdsItsn3MCC6CEvkb4ZKuV1Wa8KMqN8peTchWCTBhUe"
    "YPpKEqznqwicFsQ37FjZuMoowep9uhQNk4K_XFAAHG0bOBLnq7wIrzeRFcZRMtUFb18a5zSrCOzq92Nom9P-8KXo3SRQMUP7BMiy"
    "WHygekt4YH6wTmct9E-rugA";

static const int64_t NOW = 1950000000;

static struct jwks *load(void)
{
    struct jwks *ks = NULL;
    char err[256] = "";
    if (jwks_parse(JWKS, strlen(JWKS), &ks, err, sizeof(err)) != 0)
        fprintf(stderr, "jwks: %s\n", err);
    return ks;
}

static enum jwt_result check(const struct jwks *ks, const char *tok, const char *iss, const char *aud, int64_t now,
                             struct jwt_claims *c)
{
    struct jwt_expect e = {.issuer = iss, .audience = aud, .team_claim = "org", .now = now, .leeway = 60};
    struct jwt_claims tmp;
    return jwt_verify(ks, tok, strlen(tok), &e, c ? c : &tmp);
}
#define CHECK(tok) check(ks, tok, "https://iss.test", "http://h/mcp", NOW, NULL)

static void test_jwks(void)
{
    struct jwks *ks = load();
    ok(ks != NULL);
    /* r1, e1, e384; the 1024-bit RSA key, the oct key and the "use": "enc" key are skipped */
    is_int(jwks_count(ks), 3);
    jwks_release(ks);
    static const char *const bad[] = {
        "", "[]", "{}", "{\"keys\":{}}", "{\"keys\":[]}", "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
        /* a point not on P-256 */
        ("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
         "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}"),
        /* x too short, n not base64url */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!!!!\",\"e\":\"AQAB\"}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        ks = (struct jwks *)1;
        is_int(jwks_parse(bad[i], strlen(bad[i]), &ks, err, sizeof(err)), -1);
        ok(ks == NULL);
        ok(err[0] != '\0');
    }
}

static void test_valid(void)
{
    struct jwks *ks = load();
    struct jwt_claims c;
    is_int(check(ks, T_RS, "https://iss.test", "http://h/mcp", NOW, &c), JWT_OK);
    is_str(c.sub, "alice");
    is_str(c.team, "blue");
    is_int(c.exp, 2000000000);
    ok(strncmp(c.key_id, "jwt:", 4) == 0 && strlen(c.key_id) == 36);
    struct jwt_claims c2;
    is_int(check(ks, T_ES, "https://iss.test", "http://h/mcp", NOW, &c2), JWT_OK);
    is_str(c2.key_id, c.key_id); /* same iss and sub: same caller */
    is_int(CHECK(T_ES), JWT_OK);
    is_int(CHECK(T_ES384), JWT_OK);
    is_int(CHECK(T_NOKID), JWT_OK); /* no kid: every key of the alg's type is tried */
    ok(jwt_looks_like((struct str){T_RS, strlen(T_RS)}));
    ok(!jwt_looks_like((struct str){"sk-agentd-abc", 13}));
    ok(!jwt_looks_like((struct str){"eyJa.b", 6}));
    jwks_release(ks);
}

static void test_refused(void)
{
    struct jwks *ks = load();
    /* time: exp 2000000000, nbf 1900000000, leeway 60 */
    is_int(check(ks, T_RS, "https://iss.test", "http://h/mcp", 2000000060, NULL), JWT_OK);
    is_int(check(ks, T_RS, "https://iss.test", "http://h/mcp", 2000000061, NULL), JWT_EXPIRED);
    is_int(check(ks, T_RS, "https://iss.test", "http://h/mcp", 1899999940, NULL), JWT_OK);
    is_int(check(ks, T_RS, "https://iss.test", "http://h/mcp", 1899999939, NULL), JWT_NOT_YET_VALID);
    is_int(check(ks, T_RS, "https://other.test", "http://h/mcp", NOW, NULL), JWT_BAD_ISSUER);
    is_int(check(ks, T_RS, "https://iss.test", "http://h/other", NOW, NULL), JWT_BAD_AUDIENCE);
    is_int(check(NULL, T_RS, "https://iss.test", "http://h/mcp", NOW, NULL), JWT_NO_KEYS);
    is_int(CHECK(T_SMALL), JWT_UNKNOWN_KID);    /* its 1024-bit key was skipped */
    is_int(CHECK(T_ESKID_RS), JWT_BAD_ALG);     /* RS256 naming the EC key */

    /* a flipped signature byte, a flipped payload byte */
    char *t = strdup(T_ES);
    size_t n = strlen(t);
    t[n - 5] = t[n - 5] == 'A' ? 'B' : 'A';
    is_int(CHECK(t), JWT_BAD_SIGNATURE);
    free(t);
    t = strdup(T_RS);
    char *p = strchr(t, '.') + 3;
    *p = *p == 'A' ? 'B' : 'A';
    ok(CHECK(t) != JWT_OK);
    free(t);

    /* headers: none, HS256, unknown alg, crit, kid not a string; all with T_RS's payload and signature */
    const char *rest = strchr(T_RS, '.');
    static const char *const hdrs[] = {"eyJhbGciOiJub25lIn0",                    /* {"alg":"none"} */
                                       "eyJhbGciOiJIUzI1NiIsImtpZCI6InIxIn0",    /* {"alg":"HS256","kid":"r1"} */
                                       "eyJhbGciOiJQUzI1NiIsImtpZCI6InIxIn0",    /* {"alg":"PS256","kid":"r1"} */
                                       "eyJraWQiOiJyMSJ9"};                      /* {"kid":"r1"} */
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        char buf[4096];
        snprintf(buf, sizeof(buf), "%s%s", hdrs[i], rest);
        is_int(CHECK(buf), JWT_BAD_ALG);
    }
    char buf[4096];
    /* {"alg":"RS256","kid":"r1","crit":["x"]} and {"alg":"RS256","kid":1} */
    snprintf(buf, sizeof(buf), "%s%s", "eyJhbGciOiJSUzI1NiIsImtpZCI6InIxIiwiY3JpdCI6WyJ4Il19", rest);
    is_int(CHECK(buf), JWT_MALFORMED);
    snprintf(buf, sizeof(buf), "%s%s", "eyJhbGciOiJSUzI1NiIsImtpZCI6MX0", rest);
    is_int(CHECK(buf), JWT_MALFORMED);
    /* {"alg":"RS256","kid":"nope"} */
    snprintf(buf, sizeof(buf), "%s%s", "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUifQ", rest);
    is_int(CHECK(buf), JWT_UNKNOWN_KID);

    /* shape */
    static const char *const shapes[] = {"", "a", "a.b", "a.b.c.d", "eyJ.eyJ.", "!!.!!.!!", "e30.e30.AA==",
                                         "W10.e30.AAAA" /* [] header */};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        ok(CHECK(shapes[i]) == JWT_MALFORMED || CHECK(shapes[i]) == JWT_BAD_ALG);
    /* too long */
    char *big = malloc(JWT_MAX_TOKEN + 10);
    memset(big, 'A', JWT_MAX_TOKEN + 9);
    big[JWT_MAX_TOKEN + 9] = '\0';
    memcpy(big, T_RS, strlen(T_RS));
    is_int(CHECK(big), JWT_MALFORMED);
    free(big);
    jwks_release(ks);
}

int main(void)
{
    subtest("jwks", test_jwks);
    subtest("valid tokens", test_valid);
    subtest("refused tokens", test_refused);
    return done_testing();
}
