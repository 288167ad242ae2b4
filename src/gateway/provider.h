/* provider.h: the interface every upstream provider implements, and the attempt it works on.
 *
 * An attempt is one try of one deployment for an exchange. The exchange owns the flow (plan, retries, relay,
 * settle); a provider only translates: it encodes the upstream request, decodes a complete response, decodes
 * one streamed event, and maps an error response. Usage extraction is part of decoding (a->usage).
 *
 * Passthrough: when the client's wire format is the provider's own (an OpenAI client to an OpenAI-style
 * upstream, an Anthropic client to Anthropic), a->passthrough is set and the provider works on the client's
 * bytes directly: the request body is spliced (model name, stream options) rather than rebuilt, a complete
 * response is relayed as received after its usage is read, and stream events are forwarded as they are. */
#ifndef AGENTD_PROVIDER_H
#define AGENTD_PROVIDER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "gateway/gw_types.h"
#include "net/upstream.h"

struct attempt;
struct deployment;
struct exchange;

enum wire { WIRE_NONE = 0, WIRE_OPENAI, WIRE_ANTHROPIC, WIRE_OPENAI_RESPONSES };
enum framing { FRAMING_SSE, FRAMING_AWS_EVENTSTREAM };
enum op { OP_CHAT, OP_EMBEDDINGS };

/* One upstream stream event after framing: SSE (event name + data) or an AWS event-stream message
 * (event = ":event-type" or ":exception-type", data = the JSON payload, is_exception set). */
struct stream_event {
    struct str event;
    struct str data;
    bool is_exception;
};

/* What decode_stream_event did with an event in passthrough mode. */
enum { EV_CONSUMED = 0, EV_FORWARD = 1, EV_DROP = 2 };

struct provider_ops {
    const char *name;
    enum wire wire;         /* client format this provider speaks natively (passthrough), or WIRE_NONE */
    enum framing framing;
    bool supports_embeddings;

    /* Fills r (method, URL, headers incl. auth, body) for a->ex's request. Returns 0, or -1 with err set
     * (a request this provider cannot express: 400). */
    int (*encode_request)(struct attempt *a, struct up_request *r, struct gw_error *err);
    /* A complete 2xx body: sets a->usage and *out to a canonical chat.completion (or embeddings list) tree.
     * In passthrough mode it may leave *out NULL: the body is relayed as is. -1 with err on a malformed body. */
    int (*decode_response)(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err);
    /* One stream event: calls ex_attempt_delta() for what it carries, updates a->usage, sets a->stream_done on the
     * terminal event. Returns EV_CONSUMED (translated), EV_FORWARD / EV_DROP (passthrough), or -1 with err. */
    int (*decode_stream_event)(struct attempt *a, const struct stream_event *ev, struct gw_error *err);
    /* Reads token usage out of a complete response body (the provider's own JSON shape). 0 when found. */
    int (*extract_usage)(const char *body, size_t len, struct usage *u);
    /* A non-2xx response (status, body as received): fills err with the provider's message, type, retry hint. */
    void (*map_error)(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err);
    /* In-process providers (mock) run here instead of over HTTP; they report through ex_attempt_delta,
     * ex_attempt_complete and ex_attempt_fail. */
    int (*run_local)(struct attempt *a);
    /* Releases what the provider hung on a->pstate. */
    void (*free_state)(struct attempt *a);
    /* Optional: the provider's own token count (POST /v1/messages/count_tokens, /v1/responses/input_tokens on a
     * translated deployment). encode_count fills r for the input of the canonical request canon on d (no
     * exchange); decode_count reads the input-token count out of the endpoint's 2xx body. 0, or -1 (with err). */
    int (*encode_count)(const struct deployment *d, const cJSON *canon, struct up_request *r, struct gw_error *err);
    int (*decode_count)(const char *body, size_t len, int64_t *input_tokens);
};

struct attempt {
    struct exchange *ex;
    const struct deployment *dep;
    const struct provider_ops *prov;
    enum op op;
    bool passthrough;
    bool stream;              /* the upstream call streams */
    struct up_xfer *xfer;
    int status;
    struct buf resp;          /* buffered body: a non-stream response, or an error */
    struct usage usage;
    bool stream_done;         /* the terminal event arrived */
    bool any_output;          /* a delta or forwarded event reached the client */
    bool ev_checked;          /* passthrough: the decoder found the current event structurally sound (its one scan
                               * of the bytes, jscan_event_scan, or a full validation): the relay does not check it
                               * again. Cleared before each event. */
    void *pstate;             /* provider state (stream decoder) */
    void *framing_state;      /* SSE or event-stream parser */
    uint64_t t_start_us, t_headers_us, t_first_token_us, t_done_us;
    struct gw_error err;      /* why this attempt failed, when agentd itself aborted it (decode, size) */
    bool has_err;
    int err_result;           /* enum attempt_result of that abort */
    uint64_t up_us;           /* the transfer's own duration, once it is done */
    bool up_us_known;
    char upstream_request_id[128];
    char response_model[256]; /* model the upstream says it used */
    char upstream_error_type[128]; /* error responses: x-amzn-ErrorType as received (for map_error) */
    /* resilience (exchange.c, dep_health.c) */
    bool started;             /* observers were told it started (it counts as in flight) */
    bool breaker_probe;       /* it holds a half-open probe slot of its deployment's breaker */
    uint64_t t_attempt_us;    /* when it started (kept after the end, unlike t_start_us) */
};

/* ---- what providers call ---- */

/* The client's request: its JSON body and, when translating, the canonical chat request tree. */
struct str ex_attempt_client_body(const struct attempt *a);
/* Canonical request (OpenAI chat shape), built on first use from the client's format. NULL on failure (err). */
const cJSON *ex_attempt_canonical(struct attempt *a, struct gw_error *err);
/* The client asked for a stream / the public model name / the requested max output tokens (-1 if none). */
bool ex_attempt_client_stream(const struct attempt *a);
bool ex_attempt_client_include_usage(const struct attempt *a);
const char *ex_attempt_public_model(const struct attempt *a);
int64_t ex_attempt_max_tokens(const struct attempt *a);
/* Default max_tokens for providers that require one. */
int64_t ex_attempt_default_max_tokens(const struct attempt *a);
const char *ex_attempt_request_id(const struct attempt *a);
/* The response id the client sees ("chatcmpl-..." / "msg_...") and its creation time (Unix seconds). */
const char *ex_attempt_response_id(const struct attempt *a);
int64_t ex_attempt_created(const struct attempt *a);
/* A header of the client's request (e.g. anthropic-beta, for passthrough), or NULL. */
const struct str *ex_attempt_client_header(const struct attempt *a, const char *name);

/* Streaming output (translation mode). */
void ex_attempt_delta(struct attempt *a, const struct chat_delta *d);
/* Local providers: a complete response / a failure. */
void ex_attempt_complete(struct attempt *a, cJSON *resp);
void ex_attempt_fail(struct attempt *a, const struct gw_error *err);
/* An error the upstream returned, scrubbed of every secret agentd knows; a 401/403 becomes agentd's own 502
 * (redact_upstream_error with the attempt's configuration and deployment). */
void ex_attempt_scrub_error(const struct attempt *a, struct gw_error *err);
/* Local providers: the stream has ended (after its deltas). */
void ex_attempt_stream_end(struct attempt *a);
struct uv_loop_s *ex_attempt_loop(const struct attempt *a);

/* ---- the providers ---- */
extern const struct provider_ops provider_mock;
extern const struct provider_ops provider_openai;
extern const struct provider_ops provider_azure_openai;
extern const struct provider_ops provider_openai_compatible;
extern const struct provider_ops provider_anthropic;
extern const struct provider_ops provider_gemini;
extern const struct provider_ops provider_bedrock;
extern const struct provider_ops provider_vertex; /* Gemini models; Claude: vertex_provider_for */
/* Vertex AI (providers/vertex.h): the ops for a deployment's model (Claude models are Anthropic's), and the
 * default endpoint of a location. */
const struct provider_ops *vertex_provider_for(const char *model);
void vertex_base_url(const char *location, struct buf *out);
extern const struct provider_ops provider_openai_responses; /* a front's choice (front_ops.provider_for) */

/* Indexed by PROVIDER_*. */
const struct provider_ops *provider_by_id(int id);

#endif
