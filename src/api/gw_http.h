/* gw_http.h: the gateway's HTTP door: route handlers that turn an http_req into an ex_request plus an HTTP sink
 * (gw_http.c), and GET /v1/models. */
#ifndef AGENTD_GW_HTTP_H
#define AGENTD_GW_HTTP_H

struct http_req;

void gw_handle_chat_completions(struct http_req *req);
void gw_handle_messages(struct http_req *req);
void gw_handle_embeddings(struct http_req *req);
void gw_handle_responses(struct http_req *req); /* POST /v1/responses */
void gw_handle_models(struct http_req *req);
/* 401 for a missing or wrong virtual key on the routes outside the spine, in Anthropic's shape when the client
 * sends anthropic-version, else OpenAI's (the spine's authenticate stage answers its own routes). */
void gw_respond_unauthorized(struct http_req *req);
/* GET /v1/models/{id} (gw_models.c). */
void gw_handle_model_get(struct http_req *req);
/* POST /v1/messages/count_tokens: an estimate (gw_count_tokens.c). */
void gw_handle_count_tokens(struct http_req *req);

#endif
