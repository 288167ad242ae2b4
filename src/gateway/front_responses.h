/* front_responses.h: what the Responses front door (front_responses.c, `front_responses` in front.h) shares
 * with its pass-through provider and the HTTP handlers of /v1/responses/{id}. */
#ifndef AGENTD_FRONT_RESPONSES_H
#define AGENTD_FRONT_RESPONSES_H

#include <cjson/cJSON.h>
#include <stddef.h>

struct deployment;
struct exchange;
struct provider_ops;

/* A fresh response id: "resp_" + 32 random hex digits (never the client's x-request-id: ids name stored data). */
void front_responses_new_id(char *out, size_t size);
/* The provider that serves /v1/responses on dep: provider_openai_responses (pass-through) for OpenAI and Azure
 * OpenAI, else the deployment's own (translation). */
const struct provider_ops *front_responses_provider(const struct deployment *dep);
/* The stored conversation the request continues (previous_response_id), or NULL. */
const cJSON *front_responses_history(const struct exchange *ex);
/* A pass-through deployment answered with response id (not NUL-terminated, n bytes): when the request had store
 * true, the id is recorded (kind "response_dep": {"model", "dep"}) so that GET / DELETE /v1/responses/{id} can go to
 * the deployment that holds it. body/len: a complete response body (its "id" is read), or NULL with id given. */
void front_responses_passthrough_id(struct exchange *ex, const struct deployment *dep, const char *body, size_t len);

#endif
