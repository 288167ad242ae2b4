/* gw_http.h: the gateway's HTTP door: route handlers that turn an http_req into an ex_request plus an HTTP sink
 * (gw_http.c), and GET /v1/models. */
#ifndef AGENTD_GW_HTTP_H
#define AGENTD_GW_HTTP_H

struct http_req;

void gw_handle_chat_completions(struct http_req *req);
void gw_handle_messages(struct http_req *req);
void gw_handle_embeddings(struct http_req *req);
void gw_handle_models(struct http_req *req);

#endif
