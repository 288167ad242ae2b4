/* run.h: agent runs (docs/agents.md). A run lives on the worker loop that started it and never blocks it:
 *
 *   LLM step (ex_submit with an in-process sink: keys, budgets, retries, the ledger and traces apply)
 *     -> tool calls, up to limits.max_parallel_tools at once, each with a timeout and a typed outcome
 *     -> tool results -> next LLM step ... until a final answer, a limit, a cancel or an error.
 *
 * Durable: every step is committed to the agent store (store/agent_store.h, on the libuv thread pool) before the
 * next one starts. At start-up worker 0 resumes the runs the store says were queued or running: a completed tool
 * call is not run again; one that was in flight is run again only when its tool is idempotent, else the model is
 * told it was interrupted. Statuses: queued, running, succeeded, failed, cancelled, limit_exceeded (with `limit`:
 * max_steps, max_tokens, max_usd or deadline). */
#ifndef AGENTD_AGENT_RUN_H
#define AGENTD_AGENT_RUN_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "agent/agent_config.h"
#include "common/buf.h"
#include "common/str.h"
#include "store/agent_store.h"

struct config;
struct gateway_worker;
struct principal;

#define RUN_ID_MAX 48
#define RUNS_MAX_ACTIVE 1024 /* runs queued or running in this process; past it a new run is refused (429) */
#define RUN_INPUT_MAX_MESSAGES 256

/* POST /v1/agents/{name}/runs: {"input": "text" | [messages], "wait": bool}. */
struct run_request {
    cJSON *messages; /* the input as chat messages (role user / assistant), owned */
    bool wait;
};
/* 0, or -1 with a message and the field at fault (param, "" when none). */
int run_request_parse(const char *body, size_t len, struct run_request *out, char *msg, size_t msglen, char *param,
                      size_t paramlen);
void run_request_free(struct run_request *rq);

/* Process-wide: opens the store in data_dir (memory: tests), loads the definitions added through /admin/agents.
 * 0, or -1 with err (runs then answer 503). */
int agents_start(const char *data_dir, bool memory, char *err, size_t errlen);
void agents_stop(void);
struct agent_store *agents_store(void); /* NULL when agents_start failed */

/* Each worker loop at start; worker 0 resumes the unfinished runs. cfg: the snapshot resumed runs use. */
void agents_worker_init(uv_loop_t *loop, struct gateway_worker *gw, int worker_id);
/* The loop is draining: its runs stop where they are (their last committed step stays, a restart resumes them). */
void agents_worker_drain(uv_loop_t *loop);

/* Called once the run has finished and its final state is committed (id: the run's). */
typedef void run_finished_fn(void *ud, const char *id);

/* Starts a run of def on this loop for the caller who (may be NULL), whose key secret (may be empty) is kept in
 * memory only, to authenticate each step. Takes over rq->messages. On success 0 and id_out; the run's first state
 * is committed before it calls the model. finished (may be NULL) is called on this loop when the run ends, or
 * (when_started) as soon as its first state is committed (so that a GET of the id finds it).
 * -1 with a status (429 when RUNS_MAX_ACTIVE are active, 503 without a store) and a message. */
int run_start(uv_loop_t *loop, struct gateway_worker *gw, struct config *cfg, const struct config_agent *def,
              struct run_request *rq, const struct principal *who, struct str secret, char id_out[RUN_ID_MAX],
              run_finished_fn *finished, void *ud, bool when_started, int *status, char *msg, size_t msglen);
/* The waiter (ud) of a run is gone: finished is not called for it. On the run's loop. */
void run_forget_waiter(const char *id, void *ud);
/* Any thread: asks the live run to stop (it ends `cancelled`). 0 when it was live, 1 when it is not. */
int run_cancel(const char *id);
/* Any thread: an events stream opens (+1) or closes (-1) on the run. While one is open the run's LLM steps are
 * streamed and their content text is kept for run_stream_read. */
void run_watch(const char *id, int delta);
/* Any thread: the content text the run's current LLM step has streamed past *off (appended to out). *step is the
 * step the caller read last; when the run is on another step, *step becomes it and reading starts at 0. true when
 * text was appended. */
bool run_stream_read(const char *id, int64_t *step, size_t *off, struct buf *out);
/* Runs queued or running in this process (the queue depth metric). */
long runs_active(void);

/* The definition of an agent: the configuration's, else one added through /admin/agents. false when none;
 * out is a copy (agent_def_free). */
bool agents_lookup(const struct config *cfg, const char *name, struct config_agent *out);
/* /admin/agents: the runtime definitions (the caller holds no lock). def_put replaces; del: 1 when none. */
int agents_def_put(const struct config_agent *def, char *err, size_t errlen);
int agents_def_del(const char *name, char *err, size_t errlen);
cJSON *agents_defs_json(const struct config *cfg); /* every definition, each with "source" */

/* The API's JSON of a run (GET /v1/runs/{id}); steps may be NULL (lists). */
cJSON *run_to_json(const struct as_run *r, const struct as_step *steps, size_t n);

/* Checks value against a JSON Schema subset (type, properties, required, items, enum). "" or why not. */
const char *json_schema_check(const cJSON *schema, const cJSON *value, char *why, size_t n);

#endif
