/* vertex.h: Google Vertex AI (providers/vertex.c): which publisher a deployment's model belongs to, the URLs, the
 * body change Anthropic models need, and the two provider_ops (Gemini and Anthropic models). Pure functions here
 * are what the unit tests drive. */
#ifndef AGENTD_GATEWAY_PROVIDERS_VERTEX_H
#define AGENTD_GATEWAY_PROVIDERS_VERTEX_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "common/buf.h"
#include "gateway/provider.h"

enum { VERTEX_PUB_GOOGLE, VERTEX_PUB_ANTHROPIC };

/* The publisher of a model id: "anthropic/x" and "google/x" say it; otherwise "claude*" is Anthropic's and the
 * rest Google's. *id: the model id without the prefix. */
int vertex_publisher(const char *model, const char **id);
/* vertex_base_url (declared in provider.h): https://aiplatform.googleapis.com for "global" (or none), else
 * https://{location}-aiplatform.googleapis.com. */
/* {base}/{version}/projects/{project}/locations/{location}/publishers/{pub}/models/{id}:{method}[?alt=sse], the
 * path segments percent-encoded. -1 when the project, location or model is missing. */
int vertex_model_url(const char *base, const char *version, const char *project, const char *location,
                     const char *model, const char *method, bool sse, struct buf *out);
/* An Anthropic Messages body made Vertex's: "model" removed (unless keep_model: count-tokens wants it) and
 * "anthropic_version": "vertex-2023-10-16" set. 0, or -1 when it is not an object. */
int vertex_anthropic_body(cJSON *messages_body, bool keep_model);

/* vertex_provider_for (provider.h): provider_vertex for Gemini models, provider_vertex_anthropic for Claude. */
extern const struct provider_ops provider_vertex_anthropic;

#endif
