/* run_stream.h: an LLM step of a run streamed (so that GET /v1/runs/{id}/events can show its tokens as they come):
 * the OpenAI chat.completion.chunk stream the step's exchange writes to the run's sink is read back into the one
 * chat.completion the run loop reads when the step ends, so the answer is the same as unstreamed.
 *
 * Pure and bounded (fuzzed by tests/fuzz/fuzz_run_stream.c): content and each tool call's arguments together are
 * at most max bytes, at most RUN_STREAM_MAX_CALLS tool calls (by index); past either the stream is refused. */
#ifndef AGENTD_AGENT_RUN_STREAM_H
#define AGENTD_AGENT_RUN_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "net/sse.h"

struct cJSON;

#define RUN_STREAM_MAX_CALLS 64

/* Called with each piece of content text as it arrives. */
typedef void run_stream_text_fn(void *ud, const char *text, size_t len);

struct run_stream {
    struct sse_parser sp;
    size_t max, used;
    struct buf content;
    bool has_content;
    struct run_stream_call {
        struct buf id, name, args; /* appended as fragments arrive: linear whatever the fragmentation */
    } *calls;              /* by index, ncalls of them */
    int ncalls;
    char finish[32];
    bool has_usage;
    int64_t prompt_tokens, completion_tokens;
    bool failed;           /* an error event, a chunk that is not JSON, or a bound passed */
    char why[256];
    run_stream_text_fn *on_text;
    void *ud;
};

void run_stream_init(struct run_stream *s, size_t max, run_stream_text_fn *on_text, void *ud);
/* 0, or -1 once the stream failed (why says how). */
int run_stream_feed(struct run_stream *s, const char *data, size_t len);
/* The chat.completion the stream amounts to (JSON text appended to out); -1 (why) when it failed. */
int run_stream_completion(struct run_stream *s, struct buf *out);
void run_stream_free(struct run_stream *s);

#endif
