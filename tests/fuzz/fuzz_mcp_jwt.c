/* libFuzzer target: the JWKS parser and the JWT verifier (src/mcp/mcp_jwt.c). Input: a JWKS document, a NUL byte,
 * a compact token (no NUL: the whole input is tried as both). The token is verified against the input's key set
 * when it parses, else against a fixed one (an RSA, a P-256 and a P-384 key). Checks: a parsed set has 1..32 keys
 * and a refused one leaves nothing allocated (LSan) and says why; an accepted token has a non-empty sub and an
 * exp not in the past; jwt_verify never answers OK without a key set. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcp/mcp_jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

static struct jwks *fixed;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    if (fixed == NULL) {
        char e[256];
        if (jwks_parse(JWKS, strlen(JWKS), &fixed, e, sizeof(e)) != 0)
            abort();
    }
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    size_t jl = nul ? (size_t)(nul - s) : size;
    const char *tok = nul ? nul + 1 : s;
    size_t tl = nul ? size - jl - 1 : size;

    struct jwks *ks = (struct jwks *)1;
    char err[256] = "";
    if (jwks_parse(s, jl, &ks, err, sizeof(err)) == 0) {
        if (ks == NULL || jwks_count(ks) == 0 || jwks_count(ks) > JWKS_MAX_KEYS)
            abort();
    } else if (ks != NULL || err[0] == '\0') {
        abort();
    }
    struct jwt_expect e = {.issuer = "https://iss.test", .audience = "http://h/mcp", .team_claim = "org",
                           .now = 1950000000, .leeway = 60};
    struct jwt_claims c;
    enum jwt_result r = jwt_verify(ks ? ks : fixed, tok, tl, &e, &c);
    if (r == JWT_OK && (c.sub[0] == '\0' || c.exp + 60 < e.now))
        abort();
    if (jwt_verify(NULL, tok, tl, &e, &c) == JWT_OK)
        abort();
    (void)jwt_looks_like((struct str){tok, tl});
    (void)jwt_result_name(r);
    jwks_release(ks);
    return 0;
}
