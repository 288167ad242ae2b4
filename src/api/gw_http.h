/* gw_http.h: the gateway's HTTP door: route handlers that turn an http_req into an ex_request plus an HTTP sink
 * (gw_http.c), and GET /v1/models. */
#ifndef AGENTD_GW_HTTP_H
#define AGENTD_GW_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct http_req;
struct front_ops;
struct model_entry;
struct deployment;
struct gw_error;

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

/* A token count through the spine: authenticate, route and admit run as for any request (401/403/404/429/503 in
 * the format of front), then count(req, model) does the count and answers with gw_count_answer or
 * gw_count_fail. The caller validated the body (a 400 is its own) and names the model. */
typedef void gw_count_fn(struct http_req *req, const struct model_entry *m);
void gw_submit_counted(struct http_req *req, const struct front_ops *front, const char *model, gw_count_fn *count);
/* The count's answer: status and a JSON body in the caller's format; dep: the deployment that counted, or NULL. */
void gw_count_answer(struct http_req *req, int status, const char *body, size_t len, const struct deployment *dep);
/* The count failed with e, answered in the front's format: true; false when req is not a counted exchange. */
bool gw_count_fail(struct http_req *req, const struct gw_error *e);

#endif
