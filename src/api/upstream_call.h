/* upstream_call.h: one request forwarded to a deployment from a route outside the spine (token counts, stored
 * pass-through responses), its answer collected (bounded) and handed back on the loop. The client going away
 * cancels the transfer; the callback then never runs. */
#ifndef AGENTD_UPSTREAM_CALL_H
#define AGENTD_UPSTREAM_CALL_H

#include <stddef.h>

#include "net/http.h"
#include "net/upstream_types.h"

/* status: the upstream's HTTP status, or 0 when the transfer failed (err says why, in words for logs); body and len
 * are the response body (valid during the call only). The callback must answer req. */
typedef void upstream_call_cb(struct http_req *req, int status, const char *body, size_t len, const char *err,
                              void *ud);

/* Starts r (its contents move into the transfer) for req, with a body bound of max_body bytes (more is a failure).
 * Returns 0, or -1 when nothing could be started (req is not answered, ud is the caller's). On 0 the callback runs
 * exactly once unless the client went away; ud_free (may be NULL) then frees ud in its place. */
int upstream_call(struct http_req *req, struct up_request *r, size_t max_body, upstream_call_cb *cb,
                  void (*ud_free)(void *ud), void *ud);

#endif
