/* count_translated.h: a token count by a translated deployment's own counting API (provider_ops.encode_count:
 * Anthropic count_tokens for OpenAI-shaped clients, Gemini countTokens, Bedrock CountTokens), answered in the
 * caller's front door's shape. When the provider cannot count this request (it refuses, fails, or answers
 * without a count) the caller gets the marked estimate it would have had, so a count never fails for want of
 * the provider's. */
#ifndef AGENTD_COUNT_TRANSLATED_H
#define AGENTD_COUNT_TRANSLATED_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "net/http.h"

struct deployment;
struct model_entry;

enum count_shape {
    COUNT_ANTHROPIC, /* {"input_tokens":N} */
    COUNT_RESPONSES, /* {"object":"response.input_tokens","input_tokens":N} */
};

/* The first deployment of m, with its credentials, whose provider counts (encode_count), or NULL. */
const struct deployment *count_translated_dep(const struct model_entry *m);

/* Answers req with the marked estimate (x-agentd-token-count: estimate, "estimated": true). */
void count_reply_estimate(struct http_req *req, enum count_shape shape, int64_t estimate);

/* Counts canon on d and answers req in shape (x-agentd-token-count: exact), or with the estimate when the
 * provider does not answer a count (x-agentd-token-count: estimate and x-agentd-count-fallback: why). */
void count_translated(struct http_req *req, const struct deployment *d, const cJSON *canon, enum count_shape shape,
                      int64_t estimate);

#endif
