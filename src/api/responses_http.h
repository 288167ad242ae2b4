/* responses_http.h: the Responses API routes beside POST /v1/responses (responses_http.c). */
#ifndef AGENTD_RESPONSES_HTTP_H
#define AGENTD_RESPONSES_HTTP_H

struct http_req;

/* /v1/responses/{id} (GET, DELETE), /v1/responses/{id}/input_items (GET), /v1/responses/input_tokens (POST). */
void responses_http_item(struct http_req *req);

#endif
