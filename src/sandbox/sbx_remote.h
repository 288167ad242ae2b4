/* sbx_remote.h: `agentd sandbox run --daemon URL`: one run through a daemon's POST /v1/sandbox/runs, over a
 * plain blocking HTTP/1.1 connection (the CLI is a single-shot, single-threaded program). http:// only. */
#ifndef AGENTD_SBX_REMOTE_H
#define AGENTD_SBX_REMOTE_H

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

/* Sends spec to base_url (e.g. "http://127.0.0.1:8000", with or without a path prefix) with key as a bearer token
 * (NULL: none). 0 with the HTTP status in *status and the response body in *body (the result JSON, or the
 * daemon's error JSON), or -1 with err (bad URL, connection, timeout, malformed response). */
int sbx_remote_run(const char *base_url, const char *key, const struct sbx_spec *spec, int *status, struct buf *body,
                   struct buf *err);

/* Splits "http://host[:port][/prefix]" (host may be "[v6]"). 0 or -1. Exposed for the tests. */
int sbx_remote_parse_url(const char *url, char *host, size_t hostcap, int *port, char *prefix, size_t prefixcap);

#endif
