/* cloud_google.h: Google token sources (cloud_google.c) for Vertex AI: the pure parts, for unit tests and fuzz
 * targets (the key file parser, the JWT, the metadata URL), and the two cloud_creds kinds. */
#ifndef AGENTD_CLOUD_GOOGLE_H
#define AGENTD_CLOUD_GOOGLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "gateway/cloud_creds.h"

#define CC_GOOGLE_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define CC_GOOGLE_TOKEN_URI "https://oauth2.googleapis.com/token"
#define CC_GOOGLE_JWT_LIFETIME_S 3600 /* the longest Google's token endpoint accepts */

/* What agentd reads of a service-account key file (malloc'd strings; private_key_id may be NULL). */
struct cc_google_sa {
    char *client_email, *private_key, *private_key_id, *token_uri;
};
/* Parses a key file's JSON. 0, or -1 with err (not JSON, "type" other than service_account, a field missing). */
int cc_google_parse_sa(const char *json, size_t len, struct cc_google_sa *sa, char *err, size_t errlen);
/* Frees the strings, wiping the private key. */
void cc_google_sa_free(struct cc_google_sa *sa);
/* Appends the signed JWT bearer assertion (RS256) for the key at wall time now (seconds). 0, or -1 with err (the
 * private key is not a PEM RSA key). */
int cc_google_jwt(const struct cc_google_sa *sa, int64_t now, struct buf *out, char *err, size_t errlen);
/* http://{host or metadata.google.internal}/computeMetadata/v1/instance/service-accounts/default/token */
void cc_google_metadata_url(const char *host, struct buf *out);

#endif
