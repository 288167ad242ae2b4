/* sigv4.h: AWS Signature Version 4, header form (what the AWS SDKs send to Bedrock runtime).
 *
 *   CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n
 *                      HexSHA256(payload)
 *   StringToSign     = "AWS4-HMAC-SHA256" \n AmzDate \n Date/Region/Service/aws4_request \n
 *                      HexSHA256(CanonicalRequest)
 *   Signature        = Hex(HMAC(HMAC(HMAC(HMAC(HMAC("AWS4" + secret, Date), Region), Service), "aws4_request"),
 *                                StringToSign))
 *
 * We sign ourselves (OpenSSL HMAC-SHA256) rather than with CURLOPT_AWS_SIGV4: libcurl before 8.9 puts the path
 * into the canonical request as sent (encoded once), but every AWS service except S3 encodes the path a second
 * time, so Bedrock model ids with ':' ("...-v1:0" travels as "...-v1%3A0", is signed as "...-v1%253A0") fail.
 * See docs/gateway-gemini-bedrock.md. */
#ifndef AGENTD_SIGV4_H
#define AGENTD_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/buf.h"

struct sigv4_params {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL: none; else sent and signed as x-amz-security-token */
    const char *region;
    const char *service;
    const char *method;
    const char *host;  /* the Host header value exactly as sent (with ":port" when not default) */
    const char *path;  /* the request path as sent on the wire (already percent-encoded); "" = "/" */
    const char *query; /* the raw query string without '?', or NULL */
    /* Further headers to sign (content-type, ...); the caller sends them. Names any case. */
    const char *const *header_names;
    const char *const *header_values;
    size_t nheaders;
    const void *body;
    size_t body_len;
    time_t now;                 /* signing time, UTC seconds since the epoch */
    bool single_encode_path;    /* S3 only: the canonical URI is the path as sent; all others encode it again */
    bool content_sha256_header; /* also send and sign x-amz-content-sha256 */
};

/* Signs the request described by p. Appends to headers_out the lines to send, "Name: value\n" each:
 * X-Amz-Date, X-Amz-Content-Sha256 (when asked), X-Amz-Security-Token (with a session token) and Authorization.
 * The caller sends Host (= p->host) and the extra headers itself. When canonical_out / sts_out are not NULL the
 * canonical request and the string to sign are appended there (tests, debugging). Returns 0, or -1 when a
 * required field is missing or a buffer limit is hit. Secret-derived keys are wiped before returning. */
int sigv4_sign(const struct sigv4_params *p, struct buf *headers_out, struct buf *canonical_out, struct buf *sts_out);

/* The canonical URI of a path as sent: normalised ("." and ".." resolved, empty segments dropped) and each byte
 * outside A-Z a-z 0-9 - _ . ~ / percent-encoded (again) unless single_encode. */
int sigv4_canonical_uri(const char *path, bool single_encode, struct buf *out);
/* The canonical query: parameters decoded, re-encoded strictly, sorted by name then value. */
int sigv4_canonical_query(const char *query, struct buf *out);
/* Percent-encodes s (n bytes) with the SigV4 rules (unreserved bytes kept, '/' kept when keep_slash). */
int sigv4_uri_encode(const char *s, size_t n, bool keep_slash, struct buf *out);
/* Lowercase hex SHA-256 of data into hex[65]. */
void sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
