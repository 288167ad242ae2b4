/* me.h: GET /v1/me on the API port: the calling key's own record (never its hash), the budgets and rate limits
 * that apply to it, and what is spent, reserved and left of each right now (gateway/govern.h govern_me_json).
 * Needs a valid virtual key whatever auth.mode says (there is no "me" without one): 401 otherwise, in the
 * caller's format (Anthropic's when it sends anthropic-version). */
#ifndef AGENTD_ME_H
#define AGENTD_ME_H

#include "net/http.h"

void me_handle(struct http_req *req);

#endif
