/* mcp_jwt.h: JWT access tokens on /mcp (docs/mcp.md, "JWT access tokens"), the alternative to a virtual key.
 *
 * A token is a JWS in compact form signed by the configured issuer (mcp.jwt.issuer) with RS256/384/512 or
 * ES256/384; its keys come from a JWKS document (mcp.jwt.jwks_file or mcp.jwt.jwks_url) that a thread of its own
 * loads at start-up, every mcp.jwt.jwks_refresh and, when a token names an unknown `kid`, at most once per
 * mcp.jwt.jwks_min_refresh: workers never read a file or the network, they only take a reference to the current
 * key set. `alg` none and every HMAC alg are refused, as is an alg that does not match the key's type. */
#ifndef AGENTD_MCP_JWT_H
#define AGENTD_MCP_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "common/str.h"

struct config;

#define JWT_MAX_TOKEN 16384     /* bytes of a compact token */
#define JWKS_MAX_DOC (256 * 1024)
#define JWKS_MAX_KEYS 32
#define JWT_CLAIM_MAX 256        /* sub and the team claim, bytes (longer: refused) */

struct jwks; /* a parsed key set, immutable, reference-counted */

/* Parses a JWKS document (RFC 7517: {"keys":[...]}): RSA keys (n, e) and EC keys on P-256 / P-384 (x, y); keys
 * with "use" other than "sig", or of another type, are skipped. 0 with *out (at least one key), or -1 with err. */
int jwks_parse(const char *json, size_t n, struct jwks **out, char *err, size_t errn);
size_t jwks_count(const struct jwks *ks);
void jwks_ref(struct jwks *ks);
void jwks_release(struct jwks *ks); /* NULL is fine */

enum jwt_result {
    JWT_OK,
    JWT_MALFORMED,      /* not three base64url parts, header or payload not a JSON object, too long */
    JWT_BAD_ALG,        /* none, HMAC, unknown, or not the key's type */
    JWT_UNKNOWN_KID,    /* no key of the set has this kid (asks the key set to be refreshed) */
    JWT_BAD_SIGNATURE,
    JWT_BAD_ISSUER,
    JWT_BAD_AUDIENCE,
    JWT_EXPIRED,        /* exp missing or past (with the leeway) */
    JWT_NOT_YET_VALID,  /* nbf or iat in the future (with the leeway) */
    JWT_NO_SUBJECT,     /* sub missing, not a string, empty or too long */
    JWT_NO_KEYS,        /* no key set loaded (yet) */
};
const char *jwt_result_name(enum jwt_result r);

struct jwt_expect {
    const char *issuer;     /* `iss` must equal it */
    const char *audience;   /* `aud` (a string, or an array) must contain it */
    const char *team_claim; /* NULL/"": no team */
    int64_t now, leeway;    /* unix seconds */
};
struct jwt_claims {
    char sub[JWT_CLAIM_MAX + 1];
    char team[JWT_CLAIM_MAX + 1]; /* "" when absent (or not a string) */
    char key_id[40];              /* "jwt:" and 32 hex digits of SHA-256(iss "\n" sub): the caller's key id */
    int64_t exp;
};

/* Verifies a compact token against ks (NULL: JWT_NO_KEYS). out is filled only for JWT_OK. Linear in n. */
enum jwt_result jwt_verify(const struct jwks *ks, const char *tok, size_t n, const struct jwt_expect *e,
                           struct jwt_claims *out);

/* True when s has the shape of a compact JWS (three dot-separated base64url parts, the first starting "eyJ"):
 * such a bearer token is checked as a JWT, anything else as a virtual key. */
int jwt_looks_like(struct str s);

/* ---- the process's key set (mcp.jwt) ---- */

/* Loads the key set once (so that the first request finds it) and starts the refresh thread, when mcp.jwt.issuer
 * is set; nothing otherwise. Before the workers. */
void mcp_jwt_start(const struct config *cfg);
void mcp_jwt_stop(void);
/* Checks a token with the current key set; on JWT_UNKNOWN_KID or JWT_NO_KEYS asks the thread for a refresh. */
enum jwt_result mcp_jwt_check(const struct config *cfg, struct str token, const char *audience,
                              struct jwt_claims *out);

#endif
