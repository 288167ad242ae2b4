/* agent_store.h: durable agent runs (agent/run.c), behind an ops struct (DESIGN §4): the embedded backend is one
 * SQLite database in the data dir, agents.db (WAL); with DATABASE_URL the same tables live in PostgreSQL
 * (agent_pg.c: agent_runs, agent_steps, agent_defs), so any replica can resume a run. The SQLite schema:
 *
 *   runs(id PK, agent, status, limit_name, input, messages, output, error, key_id, user, team, workflow,
 *        created_ms, updated_ms, steps, input_tokens, output_tokens, cost_usd)
 *   steps(run_id, seq, kind, name, call_id, state, request, result, t_start_ms, t_end_ms)  PK (run_id, seq)
 *   agent_defs(name PK, json)   definitions added through /admin/agents
 *   events(run_id, ev, seq, state)  PK (run_id, ev)
 *
 * events is the run's event log (what GET /v1/runs/{id}/events numbers, so a client can resume with
 * Last-Event-ID): a commit appends, in its own transaction, one row per step whose state it changes (seq, the new
 * state) and one when the run ends (seq -1, the final status); ev counts from 1 per run, in commit order.
 *
 * A commit writes a run row and any number of step rows in one transaction, so what a restart reads is always a
 * state the run loop was in. Plain blocking calls: the run loop calls them on the libuv thread pool, never on a
 * worker loop; one connection serialised by a mutex. */
#ifndef AGENTD_AGENT_STORE_H
#define AGENTD_AGENT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct agent_store;

struct as_run {
    char id[48], agent[72], status[24], limit_name[24];
    char key_id[48], user[132], team[132], workflow[132];
    char *input, *messages, *output, *error; /* JSON text / text; NULL: none */
    int64_t created_ms, updated_ms, steps, input_tokens, output_tokens;
    double cost_usd;
};

struct as_step {
    int64_t seq;
    char kind[8];        /* "llm" or "tool" */
    char name[80];       /* the model, or the tool */
    char call_id[96];    /* the tool call's id */
    char state[16];      /* "done", "pending", "started", "interrupted", ... (a tool outcome name) */
    char *request, *result;
    int64_t t_start_ms, t_end_ms;
};

/* Opens (creating) dir/agents.db; NULL with err. memory: nothing on disk (tests). */
struct agent_store *agent_store_open(const char *dir, bool memory, char *err, size_t errlen);
void agent_store_close(struct agent_store *s);

/* One transaction: the run row (when run is not NULL) and the steps of run_id (inserted or replaced). 0 or -1. */
int agent_store_commit(struct agent_store *s, const char *run_id, const struct as_run *run, const struct as_step *steps,
                       size_t n, char *err, size_t errlen);
/* 0 with *out filled (free with as_run_free), 1 when there is no such run, -1 on error. */
int agent_store_get(struct agent_store *s, const char *id, struct as_run *out, char *err, size_t errlen);
/* The run's steps in order (free each with as_step_free, then the array); an LLM step's request is not read
 * (NULL): it is the whole conversation up to it, kept for audit. */
int agent_store_steps(struct agent_store *s, const char *id, struct as_step **out, size_t *n, char *err,
                      size_t errlen);
struct as_event {
    int64_t ev, seq;     /* seq -1: the run ended (state is its status) */
    char state[16];      /* as as_step.state (a run status fits too: "limit_exceeded") */
};
/* The run's events numbered after `after`, in order, at most limit (*out: free it); *last: the run's newest event
 * number (0: none), which no returned event passes. */
int agent_store_events(struct agent_store *s, const char *id, int64_t after, size_t limit, struct as_event **out,
                       size_t *n, int64_t *last, char *err, size_t errlen);
/* Not queued or running. */
bool as_status_final(const char *status);
/* Runs, newest first, at most limit; agent and status filter when not NULL/"". */
int agent_store_list(struct agent_store *s, const char *agent, const char *status, size_t limit, struct as_run **out,
                     size_t *n, char *err, size_t errlen);
/* Ids of runs that are neither finished nor failed (queued, running): what a restart resumes. */
int agent_store_unfinished(struct agent_store *s, struct as_run **out, size_t *n, char *err, size_t errlen);

/* Definitions added at run time (JSON text). */
int agent_store_def_put(struct agent_store *s, const char *name, const char *json, char *err, size_t errlen);
int agent_store_def_del(struct agent_store *s, const char *name, char *err, size_t errlen); /* 1: none */
/* Every definition: names[i], jsons[i] (free each, then the arrays). */
int agent_store_def_list(struct agent_store *s, char ***names, char ***jsons, size_t *n, char *err, size_t errlen);

/* A backend: the calls above on its own handle (b). */
struct agent_store_ops {
    const char *name;
    void *(*open)(const char *dir, bool memory, char *err, size_t errlen);
    void (*close)(void *b);
    int (*commit)(void *b, const char *run_id, const struct as_run *run, const struct as_step *steps, size_t n,
                  char *err, size_t errlen);
    int (*get)(void *b, const char *id, struct as_run *out, char *err, size_t errlen);
    int (*steps)(void *b, const char *id, struct as_step **out, size_t *n, char *err, size_t errlen);
    int (*events)(void *b, const char *id, int64_t after, size_t limit, struct as_event **out, size_t *n,
                  int64_t *last, char *err, size_t errlen);
    int (*list)(void *b, const char *agent, const char *status, size_t limit, struct as_run **out, size_t *n,
                char *err, size_t errlen);
    int (*unfinished)(void *b, struct as_run **out, size_t *n, char *err, size_t errlen);
    int (*def_put)(void *b, const char *name, const char *json, char *err, size_t errlen);
    int (*def_del)(void *b, const char *name, char *err, size_t errlen);
    int (*def_list)(void *b, char ***names, char ***jsons, size_t *n, char *err, size_t errlen);
};
extern const struct agent_store_ops agent_store_sqlite;
extern const struct agent_store_ops agent_store_pg;

void as_run_free(struct as_run *r);
void as_step_free(struct as_step *s);

#endif
