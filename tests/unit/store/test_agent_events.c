/* test_agent_events.c: the SQLite agent store's event log (what GET /v1/runs/{id}/events numbers), on disk and
 * across a reopen (a restart reads the same numbers). */
#include <stdlib.h>
#include <unistd.h>

#include "store/agent_events_check.h"

static void test_sqlite(void)
{
    char err[256];
    struct agent_store *s = agent_store_open(NULL, true, err, sizeof(err));
    ok(s != NULL);
    check_agent_events(s, "run_1");
    agent_store_close(s);
}

static void test_reopen(void)
{
    char dir[] = "/tmp/agentd-agent-events-XXXXXX";
    ok(mkdtemp(dir) != NULL);
    char err[256];
    struct agent_store *s = agent_store_open(dir, false, err, sizeof(err));
    ok(s != NULL);
    check_agent_events(s, "run_1");
    agent_store_close(s);
    s = agent_store_open(dir, false, err, sizeof(err));
    struct as_event *ev;
    size_t n;
    int64_t last;
    is_int(agent_store_events(s, "run_1", 6, 10, &ev, &n, &last, err, sizeof(err)), 0);
    ok(n == 2 && last == 8 && ev[1].seq == -1);
    xfree(ev);
    agent_store_close(s);
    char p[128];
    snprintf(p, sizeof(p), "rm -rf '%s'", dir);
    ok(system(p) == 0);
}

int main(void)
{
    subtest("the event log (SQLite)", test_sqlite);
    subtest("the event log survives a reopen", test_reopen);
    return done_testing();
}
