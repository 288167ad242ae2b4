/* tools.c: the built-in tools (tools.h). Every tool answers from a callback on the run's loop, never from inside
 * its start(), so the run loop has one shape for all of them. */
#include "agent/tools.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/macros.h"

const char *tool_outcome_name(enum tool_outcome o)
{
    static const char *const n[] = {"ok",          "error",       "timeout",  "cancelled",
                                    "interrupted", "unavailable", "bad_args"};
    _Static_assert(ARRAY_LEN(n) == TOOL_OUTCOMES, "one name per outcome");
    return (unsigned)o < TOOL_OUTCOMES ? n[o] : "?";
}

/* ---- a timer that answers later: echo, wait, and the tools that are not available ---- */

struct timed {
    uv_timer_t t;
    struct tool_exec *te; /* NULL once cancelled */
    enum tool_outcome o;
    char *text;
};

static void timed_closed(uv_handle_t *h)
{
    struct timed *s = h->data;
    xfree(s->text);
    xfree(s);
}

static void timed_fire(uv_timer_t *t)
{
    struct timed *s = t->data;
    struct tool_exec *te = s->te;
    s->te = NULL;
    uv_close((uv_handle_t *)&s->t, timed_closed);
    if (te) {
        te->state = NULL;
        te->done(te, s->o, s->text, strlen(s->text));
    }
}

static void answer_after(struct tool_exec *te, uint64_t ms, enum tool_outcome o, char *text)
{
    struct timed *s = xcalloc(1, sizeof(*s));
    s->te = te;
    s->o = o;
    s->text = text;
    uv_timer_init(te->loop, &s->t);
    s->t.data = s;
    te->state = s;
    uv_timer_start(&s->t, timed_fire, ms, 0);
}

static void timed_cancel(struct tool_exec *te)
{
    struct timed *s = te->state;
    if (s == NULL)
        return;
    te->state = NULL;
    s->te = NULL;
    uv_timer_stop(&s->t);
    uv_close((uv_handle_t *)&s->t, timed_closed);
}

#define MAX_WAIT_MS 3600000.0

static void echo_start(struct tool_exec *te)
{
    cJSON *a = cJSON_Parse(te->args);
    if (!cJSON_IsObject(a)) {
        cJSON_Delete(a);
        answer_after(te, 0, TOOL_BAD_ARGS, xstrdup("the arguments must be a JSON object"));
        return;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(a, "delay_ms");
    double ms = cJSON_IsNumber(d) && d->valuedouble > 0 ? d->valuedouble : 0;
    cJSON_DeleteItemFromObjectCaseSensitive(a, "delay_ms");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(a, "text");
    char *out = cJSON_IsString(t) ? xstrdup(t->valuestring) : NULL;
    if (out == NULL) {
        char *s = cJSON_PrintUnformatted(a);
        out = xstrdup(s);
        cJSON_free(s);
    }
    cJSON_Delete(a);
    answer_after(te, (uint64_t)(ms > MAX_WAIT_MS ? MAX_WAIT_MS : ms), TOOL_OK, out);
}

static void wait_start(struct tool_exec *te)
{
    cJSON *a = cJSON_Parse(te->args);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(a, "ms");
    if (!cJSON_IsNumber(m) || m->valuedouble < 0 || m->valuedouble > MAX_WAIT_MS) {
        cJSON_Delete(a);
        answer_after(te, 0, TOOL_BAD_ARGS, xstrdup("'ms' must be a number from 0 to 3600000"));
        return;
    }
    uint64_t ms = (uint64_t)m->valuedouble;
    cJSON_Delete(a);
    char text[64];
    snprintf(text, sizeof(text), "waited %llu ms", (unsigned long long)ms);
    answer_after(te, ms, TOOL_OK, xstrdup(text));
}

static const struct agent_tool tools[] = {
    {"echo", "Answers its arguments (the value of 'text' when there is one). 'delay_ms' delays the answer.",
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"},\"delay_ms\":{\"type\":\"number\"}}}", true,
     echo_start, timed_cancel},
    {"wait", "Waits 'ms' milliseconds, then answers.",
     "{\"type\":\"object\",\"properties\":{\"ms\":{\"type\":\"number\"}},\"required\":[\"ms\"]}", false, wait_start,
     timed_cancel},
    {"code_exec",
     "Runs Python, shell (sh) or JavaScript (node) code in a sandbox without network access and answers its "
     "result as JSON: reason, exit_code, stdout, stderr, truncation.",
     "{\"type\":\"object\",\"properties\":{\"language\":{\"type\":\"string\",\"enum\":[\"python\",\"sh\","
     "\"javascript\"]},\"code\":{\"type\":\"string\"},\"stdin\":{\"type\":\"string\"}},"
     "\"required\":[\"language\",\"code\"]}",
     false, code_exec_start, code_exec_cancel},
    {"http_fetch", "Fetches a URL the agent is allowed to fetch.",
     "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\"},\"method\":{\"type\":\"string\",\"enum\":["
     "\"GET\",\"POST\"]},\"body\":{\"type\":\"string\"}},\"required\":[\"url\"]}",
     true, http_fetch_start, http_fetch_cancel},
};

const struct agent_tool *agent_tool_find(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_LEN(tools); i++)
        if (strcmp(tools[i].name, name) == 0)
            return &tools[i];
    return NULL;
}

const char *agent_tool_names(void)
{
    return "echo, wait, code_exec, http_fetch";
}
