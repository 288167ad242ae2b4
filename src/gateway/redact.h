/* redact.h: the secrets agentd knows, scrubbed out of any upstream text before it is relayed or logged.
 *
 * Upstreams and the proxies in front of them quote credentials back ("Incorrect API key provided: sk-..."), often
 * truncated ("sk-proj-abc...wxyz"). The set holds every secret of one configuration (deployment API keys, the values
 * of secret-looking extra headers, AWS credentials); it is built once with the model registry, so scrubbing a
 * message allocates nothing per secret. Matching: a secret of REDACT_MIN_LEN bytes or more is replaced wherever it
 * occurs; one longer than REDACT_FRAGMENT_ABOVE bytes also wherever REDACT_MIN_LEN or more of its leading or
 * trailing bytes occur. Shorter secrets are not matched (they would blank ordinary words); keys are never that
 * short in practice. Linear in the text for each secret. */
#ifndef AGENTD_REDACT_H
#define AGENTD_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "gateway/gw_types.h"

#define REDACT_MIN_LEN 8
#define REDACT_FRAGMENT_ABOVE 12
#define REDACT_MARK "[REDACTED]"

struct redact_set;

struct redact_set *redact_set_new(void);
void redact_set_free(struct redact_set *rs);
/* Adds a copy of secret (NULL, empty, too short and duplicates are ignored). */
void redact_set_add(struct redact_set *rs, const char *secret);
/* An extra header "Name: value": its value (and, for "Scheme token", the token) when the name is secret by the rule
 * `config print` masks with (gw_config_header_is_secret). */
void redact_set_add_header(struct redact_set *rs, const char *line);
size_t redact_set_count(const struct redact_set *rs);

/* Appends text to out with every known secret replaced by REDACT_MARK. Returns how many spans were replaced. */
size_t redact_append(const struct redact_set *rs, const char *text, size_t n, struct buf *out);
/* The same in place on a NUL-terminated string of capacity cap (the result is cut to fit; no secret byte
 * survives the cut, as matching happens first). */
size_t redact_cstr(const struct redact_set *rs, char *s, size_t cap);

/* An error an upstream returned: its message, code and param are scrubbed; a 401/403 (the upstream refusing
 * agentd's own credentials, never the client's) becomes a 502 api_error (code upstream_authentication_failed)
 * naming the deployment, retryable on the next deployment. rs and deployment may be NULL. */
void redact_upstream_error(const struct redact_set *rs, const char *deployment, struct gw_error *err);

#endif
