/* front.h: a front door: the wire format a client speaks to agentd (OpenAI Chat Completions, Anthropic
 * Messages, OpenAI Embeddings). The exchange calls these to read the client's request and to write every byte
 * the client receives: complete responses, stream events, errors, all in the client's own format. */
#ifndef AGENTD_FRONT_H
#define AGENTD_FRONT_H

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "gateway/gw_types.h"
#include "gateway/provider.h"

struct deployment;
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
    /* Optional: the front's own stage, after authenticate: returns an enum ex_next (exchange.h; a look-up that
     * waits returns EX_WAIT and calls ex_resume from its callback). */
    int (*prepare)(struct exchange *ex);
    /* Optional: response header lines ("Name: value\r\n") the front adds to the gateway's. */
    void (*headers)(struct exchange *ex, struct buf *h);
    /* Optional: the provider that serves this front on dep (dep->prov when NULL): a front with its own upstream
     * API (Responses) passes through to the deployments that speak it. */
    const struct provider_ops *(*provider_for)(const struct exchange *ex, const struct deployment *dep);
};

extern const struct front_ops front_openai_chat;
extern const struct front_ops front_openai_embeddings;
extern const struct front_ops front_anthropic;
extern const struct front_ops front_responses; /* front_responses.c */

#endif
