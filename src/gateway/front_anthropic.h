/* front_anthropic.h: what the Anthropic front door (front_anthropic.c) writes that other modules need too: usage
 * objects, whole messages and error bodies in the Anthropic format. */
#ifndef AGENTD_GATEWAY_FRONT_ANTHROPIC_H
#define AGENTD_GATEWAY_FRONT_ANTHROPIC_H

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "gateway/gw_types.h"

/* Appends {"input_tokens":..,"cache_creation_input_tokens":..,"cache_read_input_tokens":..,"output_tokens":..}
 * for u, input_tokens being the uncached part. */
void front_anthropic_usage_append(struct buf *out, const struct usage *u);
/* Canonical chat.completion -> Anthropic message body. usage: the attempt's usage when known (it carries cache
 * writes, which the canonical OpenAI usage cannot), else NULL to read the canonical usage. */
int front_anthropic_message_from_canonical(const cJSON *resp, const char *id, const char *model, const struct usage *usage,
                                           struct buf *out, struct gw_error *err);
/* Appends {"type":"error","error":{"type":..,"message":..},"request_id":..} (request_id omitted when NULL). */
void front_anthropic_error_json(struct buf *out, const struct gw_error *err, const char *request_id);
/* Anthropic Messages request (a tree) -> canonical OpenAI chat request. NULL with err (400) when the request
 * uses something the canonical form cannot carry (a `thread`: err->code "thread_unsupported_request"). Fields it
 * ignores are added to `dropped` (canon_dropped_add; NULL for none). */
cJSON *front_anthropic_request_to_canonical(const cJSON *req, char *dropped, size_t dropped_size, struct gw_error *err);

#endif
