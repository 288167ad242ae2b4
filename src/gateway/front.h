/* front.h: a front door: the wire format a client speaks to agentd (OpenAI Chat Completions, Anthropic
 * Messages, OpenAI Embeddings). The exchange calls these to read the client's request and to write every byte
 * the client receives: complete responses, stream events, errors, all in the client's own format. */
#ifndef AGENTD_FRONT_H
#define AGENTD_FRONT_H

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "gateway/gw_types.h"
#include "gateway/provider.h"

struct exchange;
struct ex_request;

struct front_ops {
    const char *name;
    enum wire wire;
    /* Validates ex->body and fills ex->model_name, ex->stream, ex->max_tokens, ex->client_include_usage of the
     * request. Only the top-level fields policy needs are read here (no tree); -1 with err (400) when invalid. */
    int (*parse)(struct ex_request *ex, struct gw_error *err);
    /* The canonical (OpenAI chat shaped) request, for providers that translate. NULL with err when the request
     * cannot be expressed. The result is owned by the exchange. */
    cJSON *(*to_canonical)(struct ex_request *ex, struct gw_error *err);
    /* The front's stream writer state (what has been sent so far), behind ex->fstate. NULL new: none. */
    void *(*stream_new)(void);
    void (*stream_free)(void *fstate);
    /* A complete canonical response (chat.completion) -> the client's body. */
    int (*write_response)(struct exchange *ex, const cJSON *resp, struct buf *out, struct gw_error *err);
    /* Streaming, translation mode: one delta -> zero or more events appended to out. */
    void (*stream_delta)(struct exchange *ex, const struct chat_delta *d, struct buf *out);
    /* End of the stream: terminal events, or (err != NULL) the format's in-stream error event. */
    void (*stream_end)(struct exchange *ex, const struct gw_error *err, struct buf *out);
    /* Streaming, passthrough mode: an upstream event relayed as is. */
    void (*forward_event)(struct exchange *ex, const struct stream_event *ev, struct buf *out);
    /* An error body in the client's format (the status comes from err->status). */
    void (*error_body)(struct exchange *ex, const struct gw_error *err, struct buf *out);
};

extern const struct front_ops front_openai_chat;
extern const struct front_ops front_openai_embeddings;
extern const struct front_ops front_anthropic;

/* ---- OpenAI wire helpers shared by the front door and the OpenAI-family providers (wire_openai.c) ---- */

/* usage {prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens,
 * completion_tokens_details.reasoning_tokens} out of a chat.completion / chunk / embeddings body, validated
 * (gw_types.h). 0 when the body reports counts: u->known, or u->invalid when they are implausible. */
int openai_extract_usage(const char *body, size_t len, struct usage *u);
/* The same, given the usage object itself. */
int openai_usage_object(const char *obj, size_t len, struct usage *u);
/* The client body with "model" replaced and, for streams, stream_options.include_usage forced true.
 * Works on bytes (no tree). */
int openai_splice_request(const char *body, size_t len, const char *model, bool force_include_usage,
                          struct buf *out);
/* A chat.completion.chunk event -> deltas (translation mode); sets a->stream_done on "[DONE]". */
int openai_decode_chunk(struct attempt *a, const struct stream_event *ev, struct gw_error *err);
/* OpenAI-shaped error body -> err. */
void openai_map_error(int status, const char *body, size_t len, struct gw_error *err);
/* Canonical chat request -> an OpenAI request body for `model` (translation mode: used when the client spoke
 * another format). */
int openai_encode_canonical(const cJSON *canon, const char *model, bool stream, struct buf *out);
/* Builds the canonical chat.completion from a complete OpenAI response (validates its shape). */
cJSON *openai_decode_completion(const char *body, size_t len, struct usage *u, struct gw_error *err);
/* Usage as OpenAI's JSON object. */
cJSON *openai_usage_json(const struct usage *u);

#endif
