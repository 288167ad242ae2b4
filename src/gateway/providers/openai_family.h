/* openai_family.h: what OpenAI, Azure OpenAI and OpenAI-compatible servers share: the wire format and the
 * codec. Each provider file supplies only its URL and authentication. */
#ifndef AGENTD_OPENAI_FAMILY_H
#define AGENTD_OPENAI_FAMILY_H

#include "gateway/provider.h"

enum openai_flavor { FLAVOR_OPENAI, FLAVOR_AZURE, FLAVOR_COMPATIBLE };

/* Azure OpenAI's credential header (azure_openai.c): Authorization: Bearer <Entra ID token> when the deployment
 * has a cloud identity (gateway/cloud_creds.h), else api-key. -1 with err (503) when the token is not available. */
struct deployment;
int azure_openai_auth(const struct deployment *d, struct up_request *r, struct gw_error *err);
int openai_family_encode(struct attempt *a, struct up_request *r, struct gw_error *err, enum openai_flavor flavor);
int openai_family_decode_response(struct attempt *a, const char *body, size_t len, cJSON **out,
                                  struct gw_error *err);
int openai_family_decode_stream_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err);
int openai_family_extract_usage(const char *body, size_t len, struct usage *u);
void openai_family_map_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err);

#endif
