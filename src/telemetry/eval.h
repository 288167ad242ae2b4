/* eval.h: response-quality evaluations (issue 10, item 6), scored off the request path.
 *
 * A sampled fraction of completed responses (telemetry.evaluations: per workflow, per model, or "*") is copied
 * to a bounded queue when the exchange settles; one background thread scores it with the seed's heuristics
 * (length for the question, relevance by keyword overlap, confidence from hedging words) plus JSON validity when
 * a JSON format was asked for and refusal detection. Each score becomes a `gen_ai.evaluation.result` event (an
 * OTLP log record with the trace id and the evaluated attempt span's id), an observation of the
 * agentd_evaluation_score histogram, and an `evaluation` log line. A full queue drops and counts
 * (agentd_evaluations_dropped_total); the worker never waits.
 *
 * The LLM judge (telemetry.evaluation_judge): the same thread then asks a configured model, through agentd's own
 * gateway (ex_submit() on the thread's own loop, an in-process sink: no HTTP), to grade the answer against
 * telemetry.evaluation_rubric; its reply is parsed (eval_judge_parse) into a `judge` score. One judge call at a
 * time. The judge's exchanges run as workflow `evaluation` (their cost is in the ledger and the spend reports
 * under it) and are never themselves evaluated. Its spend since start is held to telemetry.evaluation_budget_usd
 * and evaluation_budget_tokens: past either, judging stops and each skipped answer is counted
 * (agentd_evaluation_judge_calls_total{outcome="budget_exhausted"}); the heuristics go on.
 *
 * Every score also goes to the spend ledger (when it runs) as an evaluation row for the exchange's request id
 * (store/ledger.h: the side table ledger_evaluations). */
#ifndef AGENTD_EVAL_H
#define AGENTD_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

/* The judge's way into the gateway, which sits above telemetry: gateway/observers.c has it
 * (eval_gateway_transport); the daemon installs it before eval_start. Without one there is no LLM judge. */
struct buf;
struct principal;
struct uv_loop_s;
typedef void (*eval_judge_done_fn)(void *ud, int status, const struct buf *hdrs, const struct buf *body);
struct eval_transport {
    void *(*open)(struct uv_loop_s *loop, const struct config *cfg); /* the per-loop state (a gateway worker) */
    void (*close)(void *worker);
    /* Sends an OpenAI chat request body as principal who, with a traceparent ("": none) and a request id. done is
     * called exactly once, on the loop, perhaps before this returns (then it returns NULL); else the handle is
     * valid until done, for cancel. */
    void *(*submit)(void *worker, const char *body, size_t n, const char *traceparent, const char *request_id,
                    const struct principal *who, eval_judge_done_fn done, void *ud);
    void (*cancel)(void *handle); /* done follows, with a status >= 400 */
};
void eval_set_transport(const struct eval_transport *t);

/* Starts the thread when cfg->telemetry.evaluations names a rate above 0. 0, or -1. */
int eval_start(const struct config *cfg);
/* Scores what is queued, then stops the thread. Safe when never started. */
void eval_stop(void);

/* The sampling rate for a response of this model in this workflow ("" for none): workflow:<name> first, then
 * the model, then "*"; 0 when evaluations are off. */
double eval_rate(const char *model, const char *workflow);

/* One completed response to score (copied: the caller keeps nothing alive). */
struct eval_job_in {
    bool anthropic;                     /* the bodies are Anthropic Messages, else OpenAI chat */
    const char *request, *response;     /* the client's request body and the response it got */
    size_t request_len, response_len;
    const char *model, *workflow, *response_id;
    const char *request_id;             /* the exchange's (its ledger row's) request id */
    bool stream;                        /* response is the SSE stream the client received (eval_stream_text) */
    uint8_t trace_id[16], span_id[8];   /* the evaluated span; all zero: none */
};
/* Queues a copy for the thread. false when it was dropped (queue full or not started). */
bool eval_submit(const struct eval_job_in *in);

/* ---- the heuristics (pure, for the unit tests) ---- */

#define EVAL_MAX_RESULTS 6
struct eval_result {
    const char *name;     /* gen_ai.evaluation.name: length, relevance, confidence, json_validity, refusal, judge */
    double score;         /* 0..1 */
    const char *label;    /* low-cardinality gen_ai.evaluation.score.label */
    char explanation[160];
};
/* Scores an answer to a question. json_requested adds json_validity. Returns the number of results. Linear in
 * the sizes (at most EVAL_TEXT_MAX bytes of each are read). */
#define EVAL_TEXT_MAX (64 * 1024)
size_t eval_score(const char *question, size_t qn, const char *answer, size_t an, bool json_requested,
                  struct eval_result out[EVAL_MAX_RESULTS]);

/* The last user message's text and whether a JSON answer was requested, from a request body; the answer text and
 * its id (gen_ai.response.id, "" when none) from a response body. Text parts are joined with a space into out (bounded by EVAL_TEXT_MAX). 0, or -1 when the body
 * has no such text. */
struct buf;
int eval_question(const char *body, size_t n, bool anthropic, struct buf *out, bool *json_requested);
int eval_answer(const char *body, size_t n, bool anthropic, struct buf *out, char *id, size_t id_cap);

/* ---- the LLM judge (pure parts, for the unit tests and the fuzz target) ---- */

/* The judge's request: an OpenAI chat body for model, the rubric and the reply format as the system message, the
 * question and the answer (each cut at EVAL_TEXT_MAX) as the user message. */
void eval_judge_request(const char *model, const char *rubric, const char *question, size_t qn, const char *answer,
                        size_t an, struct buf *out);
/* Reads the judge's reply text: a JSON object {"score": 0..1, "explanation": "..."} (anywhere in the text), or
 * else the last "score" followed by ':' or '=' and a number. A score above 1 and at most 10 is read as out of 10.
 * Fills *out (name "judge", label pass/fail at 0.5). 0, or -1 when no score can be read. Linear in n. */
int eval_judge_parse(const char *text, size_t n, struct eval_result *out);

/* Whether p is the judge's own principal (its exchanges are not evaluated). */
struct principal;
bool eval_is_judge(const struct principal *p);

/* The text of an SSE stream as the client received it (OpenAI chat chunks' choices[0].delta.content, or
 * Anthropic content_block_delta text_delta), joined into out (bounded by EVAL_TEXT_MAX); the response id from
 * the first chunk or message_start. 0, or -1 when there is no text. Linear in n. */
int eval_stream_text(const char *sse, size_t n, bool anthropic, struct buf *out, char *id, size_t id_cap);

/* telemetry.evaluation_stream_max_bytes while evaluations run, else 0. */
int64_t eval_stream_max(void);

/* The judge's spend so far (for tests and /metrics): USD and tokens; calls made. */
struct eval_judge_stats {
    double spent_usd;
    int64_t spent_tokens;
    uint64_t calls, skipped_budget;
};
void eval_judge_stats(struct eval_judge_stats *out);

#endif
