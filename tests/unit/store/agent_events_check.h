/* agent_events_check.h: the agent store's event log (agent_store.h), checked the same way on each backend
 * (test_agent_events.c: SQLite; test_store_pg.c: PostgreSQL). Included by one test file each. */
#ifndef AGENTD_TEST_AGENT_EVENTS_CHECK_H
#define AGENTD_TEST_AGENT_EVENTS_CHECK_H

#include "common/alloc.h"
#include "store/agent_store.h"
#include "test.h"

static void check_agent_events(struct agent_store *s, const char *id)
{
    char err[256];
    struct as_run r = {0};
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.agent, sizeof(r.agent), "calc");
    snprintf(r.status, sizeof(r.status), "running");
    struct as_step st[3] = {{.seq = 0, .kind = "llm", .name = "mock", .state = "done"},
                            {.seq = 1, .kind = "tool", .name = "echo", .call_id = "c1", .state = "pending"},
                            {.seq = 2, .kind = "tool", .name = "echo", .call_id = "c2", .state = "pending"}};
    struct as_event *ev;
    size_t n;
    int64_t last;
    is_int(agent_store_events(s, id, 0, 10, &ev, &n, &last, err, sizeof(err)), 0);
    ok(n == 0 && last == 0); /* a run with no commit yet */
    xfree(ev);
    /* the first commit: the LLM step and its two calls, pending (one event each; the run's start is none) */
    is_int(agent_store_commit(s, id, &r, st, 3, err, sizeof(err)), 0);
    /* the calls start (the second one first), the first one's commit written twice: no second event */
    snprintf(st[2].state, sizeof(st[2].state), "started");
    is_int(agent_store_commit(s, id, NULL, &st[2], 1, err, sizeof(err)), 0);
    snprintf(st[1].state, sizeof(st[1].state), "started");
    is_int(agent_store_commit(s, id, NULL, &st[1], 1, err, sizeof(err)), 0);
    is_int(agent_store_commit(s, id, NULL, &st[1], 1, err, sizeof(err)), 0);
    snprintf(st[2].state, sizeof(st[2].state), "ok");
    is_int(agent_store_commit(s, id, &r, &st[2], 1, err, sizeof(err)), 0); /* still running: no run event */
    snprintf(st[1].state, sizeof(st[1].state), "interrupted");
    snprintf(r.status, sizeof(r.status), "failed");
    is_int(agent_store_commit(s, id, &r, &st[1], 1, err, sizeof(err)), 0); /* ends: the step's, then the run's */
    is_int(agent_store_commit(s, id, &r, NULL, 0, err, sizeof(err)), 0);   /* the same end again: nothing */
    static const struct {
        int64_t seq;
        const char *state;
    } want[] = {{0, "done"},    {1, "pending"}, {2, "pending"},     {2, "started"},
                {1, "started"}, {2, "ok"},      {1, "interrupted"}, {-1, "failed"}};
    is_int(agent_store_events(s, id, 0, 100, &ev, &n, &last, err, sizeof(err)), 0);
    is_int(n, 8);
    is_int(last, 8);
    for (size_t i = 0; i < n && i < 8; i++) {
        is_int(ev[i].ev, (int64_t)i + 1);
        is_int(ev[i].seq, want[i].seq);
        is_str(ev[i].state, want[i].state);
    }
    xfree(ev);
    /* after a number, at most limit; the newest number whatever the window */
    is_int(agent_store_events(s, id, 3, 2, &ev, &n, &last, err, sizeof(err)), 0);
    ok(n == 2 && last == 8 && ev[0].ev == 4 && ev[1].ev == 5);
    xfree(ev);
    is_int(agent_store_events(s, id, 8, 10, &ev, &n, &last, err, sizeof(err)), 0);
    ok(n == 0 && last == 8);
    xfree(ev);
    /* another run's log is its own */
    is_int(agent_store_events(s, "run_other", 0, 10, &ev, &n, &last, err, sizeof(err)), 0);
    ok(n == 0 && last == 0);
    xfree(ev);
}

#endif
