/* gemini.h: the pieces of the Gemini codec (providers/gemini.c) that Vertex AI shares (providers/vertex.c): the
 * GenerateContentRequest body is the same on both, only the URL and the credential differ. Responses, stream
 * chunks, token counts and errors are decoded by provider_gemini's own ops. */
#ifndef AGENTD_GATEWAY_PROVIDERS_GEMINI_H
#define AGENTD_GATEWAY_PROVIDERS_GEMINI_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "gateway/gw_types.h"

/* The canonical fields the GenerateContentRequest carries (for canon_note_unread), NULL-terminated. */
extern const char *const gemini_read_fields[];

/* Canonical chat request -> GenerateContentRequest (max_tokens < 0: none). NULL with err (400) when it cannot be
 * expressed. */
cJSON *gemini_build_generate(const cJSON *canon, int64_t max_tokens, struct gw_error *err);

#endif
