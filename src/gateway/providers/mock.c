/* mock.c: the offline, deterministic model. It is agentd's embedded default and the test workhorse; what it
 * answers is documented in docs/mock.md and must stay stable:
 *
 *  - the reply to a conversation is "echo: " + the text of the last user message (text parts joined by one
 *    space, an image counts as "[image]", audio as "[audio]");
 *  - after tool results (the last messages have role "tool") it is "echo: tool result: " + their texts;
 *  - when tools are defined and the last user message contains "CALL <tool> <json object>" naming a defined
 *    tool, it answers with that tool call (one per CALL) and finish_reason "tool_calls";
 *  - a script: when the last user message is several steps separated by lines "---", the step played is the
 *    number of assistant messages since that user message; a step with CALL directives calls those tools, any
 *    other step is answered with its own text (so a test writes a whole multi-step agent run); past the last
 *    step the rules above and below apply;
 *  - "mock:words=N" in the last user message makes the reply N words long ("w1 w2 ... wN");
 *  - "mock:error=STATUS" makes the call fail with that HTTP status (429 carries Retry-After: 1);
 *  - max_tokens cuts the reply after that many words (finish_reason "length"); stop sequences cut before the
 *    first match;
 *  - usage: input tokens = ceil(bytes of all message texts / 4), at least 1; output tokens = words of the reply
 *    + (1 + ceil(bytes of arguments / 4)) per tool call, at least 1.
 *  Latency, time to first token, chunk cadence and words per chunk come from the deployment's `mock:` settings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/alloc.h"
#include "config/config.h"
#include "gateway/registry.h"
#include "gateway/provider.h"
#include "gateway/providers/canon.h"

struct mock_call {
    char *name;
    char *args; /* compact JSON */
    char id[40];
};

struct mock_state {
    uv_timer_t timer;
    struct attempt *a;      /* NULL once the attempt is gone (the timer may still be closing) */
    struct buf reply;       /* the reply text */
    struct mock_call calls[16];
    int ncalls;
    enum finish finish;
    struct usage usage;
    /* streaming cursor */
    size_t pos;             /* next byte of reply to send */
    int step;               /* 0: before first chunk, 1: text, 2: tool calls, 3: finish */
    bool closing;
};

static void part_text(const cJSON *content, struct buf *out)
{
    if (cJSON_IsString(content)) {
        buf_append_str(out, content->valuestring);
        return;
    }
    const cJSON *part;
    bool first = true;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "";
        const char *piece = NULL;
        if (strcmp(t, "text") == 0) {
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
            piece = cJSON_IsString(tx) ? tx->valuestring : "";
        } else if (strcmp(t, "image_url") == 0 || strcmp(t, "image") == 0) {
            piece = "[image]";
        } else if (strcmp(t, "input_audio") == 0) {
            piece = "[audio]";
        }
        if (piece) {
            if (!first)
                buf_append_char(out, ' ');
            buf_append_str(out, piece);
            first = false;
        }
    }
}

/* The names of the defined tools, so that each CALL directive costs one lookup, not a walk of the tools. */
static void tool_names(const cJSON *tools, struct canon_map *names)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (cJSON_IsString(n))
            canon_map_put(names, n->valuestring, strlen(n->valuestring), n);
    }
}

/* Arguments that do not parse as a JSON object are skipped, but each such try may read to the end of the text:
 * after this many the rest of the text is not searched (the work stays linear in the text). */
#define MOCK_MAX_BAD_ARGS 16

/* Finds "CALL name {json}" directives. */
static void find_calls(struct mock_state *s, const char *text, const cJSON *tools, const char *reqid)
{
    struct canon_map names;
    canon_map_init(&names);
    tool_names(tools, &names);
    int bad = 0;
    const char *p = text;
    while ((p = strstr(p, "CALL ")) != NULL && s->ncalls < 16 && bad < MOCK_MAX_BAD_ARGS) {
        p += 5;
        char name[128];
        size_t nlen = 0;
        while (p[nlen] && p[nlen] != ' ' && nlen < sizeof(name))
            nlen++;
        const char *name_end = p + nlen;
        if (nlen == 0 || nlen >= sizeof(name) || *name_end != ' ')
            continue;
        memcpy(name, p, nlen);
        name[nlen] = '\0';
        const char *brace = name_end + 1;
        if (*brace != '{' || !canon_map_has(&names, name, nlen))
            continue;
        const char *end_ptr = NULL;
        cJSON *args = cJSON_ParseWithOpts(brace, &end_ptr, 0);
        if (!cJSON_IsObject(args)) {
            cJSON_Delete(args);
            bad++;
            continue;
        }
        char *compact = cJSON_PrintUnformatted(args);
        cJSON_Delete(args);
        struct mock_call *c = &s->calls[s->ncalls];
        c->name = xstrdup(name);
        c->args = xstrdup(compact);
        cJSON_free(compact);
        snprintf(c->id, sizeof(c->id), "call_%.12s%d", reqid, s->ncalls);
        s->ncalls++;
        p = end_ptr ? end_ptr : brace + 1;
    }
    canon_map_free(&names);
}

static int count_words(const char *s)
{
    int n = 0;
    bool in = false;
    for (; *s; s++) {
        bool sp = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
        if (!sp && !in)
            n++;
        in = !sp;
    }
    return n;
}

static long directive(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return -1;
    p += strlen(key);
    long v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    return digits ? v : -1;
}

/* The steps of a script: text separated by lines that are exactly "---". Returns how many steps there are and
 * sets *out to step k (STR_NULL past the last). One pass over the text. */
static int script_step(const char *text, int k, struct str *out)
{
    *out = STR_NULL;
    int n = 0;
    const char *start = text;
    for (const char *p = text;; p++) {
        bool sep = (p == text || p[-1] == '\n') && strncmp(p, "---", 3) == 0 && (p[3] == '\n' || p[3] == '\0');
        if (*p == '\0' || sep) {
            const char *end = p;
            if (sep && end > start && end[-1] == '\n')
                end--;
            if (!(sep && p == text)) {
                if (n == k)
                    *out = str_make(start, (size_t)(end - start));
                n++;
            }
            if (*p == '\0')
                break;
            p += 3;
            start = *p ? p + 1 : p;
            if (*p == '\0')
                break;
        }
    }
    return n;
}

static void state_free_now(struct mock_state *s)
{
    for (int i = 0; i < s->ncalls; i++) {
        xfree(s->calls[i].name);
        xfree(s->calls[i].args);
    }
    buf_free(&s->reply);
    xfree(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    state_free_now(h->data);
}

static void mock_free_state(struct attempt *a)
{
    struct mock_state *s = a->pstate;
    if (s == NULL)
        return;
    a->pstate = NULL;
    s->a = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

/* Stop sequences applied (OpenAI takes at most 4); the others are ignored. */
#define MOCK_MAX_STOPS 16

/* Builds the reply from the canonical request. Returns 0, or the HTTP status asked for by mock:error. */
static int compose(struct mock_state *s, struct attempt *a, const cJSON *req)
{
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(req, "messages");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    struct buf all = BUF_INIT(BUF_UNBOUNDED);
    struct buf last_user = BUF_INIT(BUF_UNBOUNDED);
    struct buf tool_results = BUF_INIT(BUF_UNBOUNDED);
    int assistants_since_user = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        struct buf t = BUF_INIT(BUF_UNBOUNDED);
        part_text(content, &t);
        const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        const cJSON *tc;
        cJSON_ArrayForEach(tc, tcs)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *ar = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            if (cJSON_IsString(n))
                buf_append_str(&t, n->valuestring);
            if (cJSON_IsString(ar))
                buf_append_str(&t, ar->valuestring);
        }
        buf_append(&all, t.data ? t.data : "", t.len);
        bool is_tool = cJSON_IsString(role) && strcmp(role->valuestring, "tool") == 0;
        if (is_tool) {
            if (tool_results.len)
                buf_append_char(&tool_results, ' ');
            buf_append(&tool_results, t.data ? t.data : "", t.len);
        } else {
            buf_reset(&tool_results);
        }
        if (cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0)
            assistants_since_user++;
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0) {
            assistants_since_user = 0;
            buf_reset(&last_user);
            buf_append(&last_user, t.data ? t.data : "", t.len);
        }
        buf_free(&t);
    }
    const char *u = last_user.data ? last_user.data : "";
    long err_status = directive(u, "mock:error=");
    long words = directive(u, "mock:words=");
    s->usage.input = (int64_t)((all.len + 3) / 4);
    if (s->usage.input < 1)
        s->usage.input = 1;
    s->usage.known = true;
    s->finish = FINISH_STOP;
    /* A script: the last user message is steps separated by lines "---"; the step played is the number of
     * assistant messages since that user message. A step with CALL directives calls those tools, any other
     * step answers its own text. Past the last step the usual rules apply. */
    struct str step = STR_NULL;
    int nsteps = script_step(u, assistants_since_user, &step);
    if (nsteps > 1 && step.p) {
        struct buf st = BUF_INIT(BUF_UNBOUNDED);
        buf_append(&st, step.p, step.n);
        buf_append(&st, "", 0);
        if (cJSON_IsArray(tools))
            find_calls(s, st.data, tools, ex_attempt_request_id(a));
        if (s->ncalls)
            s->finish = FINISH_TOOL_CALLS;
        else
            buf_append(&s->reply, st.data, st.len);
        buf_free(&st);
    } else if (tool_results.len) {
        buf_append_str(&s->reply, "echo: tool result: ");
        buf_append(&s->reply, tool_results.data, tool_results.len);
    } else {
        if (cJSON_IsArray(tools))
            find_calls(s, u, tools, ex_attempt_request_id(a));
        if (s->ncalls) {
            s->finish = FINISH_TOOL_CALLS;
        } else if (words > 0) {
            for (long i = 1; i <= words && i <= 1000000; i++)
                buf_printf(&s->reply, i > 1 ? " w%ld" : "w%ld", i);
        } else {
            buf_append_str(&s->reply, "echo: ");
            buf_append_str(&s->reply, u);
        }
    }
    /* stop sequences cut before the first match */
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(req, "stop");
    const cJSON *st;
    cJSON *single = NULL;
    if (cJSON_IsString(stop)) {
        single = cJSON_CreateArray();
        cJSON_AddItemToArray(single, cJSON_CreateString(stop->valuestring));
        stop = single;
    }
    int nstop = 0;
    cJSON_ArrayForEach(st, stop)
    {
        if (nstop++ == MOCK_MAX_STOPS)
            break; /* each one is a search of the reply */
        if (!cJSON_IsString(st) || !st->valuestring[0] || !s->reply.data)
            continue;
        char *hit = strstr(s->reply.data, st->valuestring);
        if (hit) {
            s->reply.len = (size_t)(hit - s->reply.data);
            s->reply.data[s->reply.len] = '\0';
        }
    }
    cJSON_Delete(single);
    /* max_tokens cuts after that many words */
    int64_t max = ex_attempt_max_tokens(a);
    if (max > 0 && s->ncalls == 0 && s->reply.data && count_words(s->reply.data) > max) {
        int seen = 0;
        bool in = false;
        size_t i = 0;
        for (; i < s->reply.len; i++) {
            bool sp = s->reply.data[i] == ' ';
            if (!sp && !in && ++seen > max)
                break;
            in = !sp;
        }
        while (i > 0 && s->reply.data[i - 1] == ' ')
            i--;
        s->reply.len = i;
        s->reply.data[i] = '\0';
        s->finish = FINISH_LENGTH;
    }
    int64_t out = s->reply.data ? count_words(s->reply.data) : 0;
    for (int i = 0; i < s->ncalls; i++)
        out += 1 + (int64_t)((strlen(s->calls[i].args) + 3) / 4);
    s->usage.output = out < 1 ? 1 : out;
    buf_free(&all);
    buf_free(&last_user);
    buf_free(&tool_results);
    return err_status >= 400 && err_status <= 599 ? (int)err_status : 0;
}

static cJSON *completion_json(struct mock_state *s, struct attempt *a)
{
    cJSON *tcs = NULL;
    if (s->ncalls) {
        tcs = cJSON_CreateArray();
        for (int i = 0; i < s->ncalls; i++) {
            cJSON *tc = cJSON_CreateObject();
            cJSON_AddStringToObject(tc, "id", s->calls[i].id);
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", s->calls[i].name);
            cJSON_AddStringToObject(fn, "arguments", s->calls[i].args);
            cJSON_AddItemToArray(tcs, tc);
        }
    }
    /* with tool calls the content is null, whatever the reply text */
    return canon_completion(a, s->ncalls ? NULL : (s->reply.data ? s->reply.data : ""), tcs, s->finish, &s->usage);
}

/* ---- embeddings ---- */

/* The text is hashed once (FNV-1a); each dimension is that hash mixed with its index, so that the work is the
 * text's length plus the dimensions, not their product. */
static void embed_one(const char *text, size_t len, int dims, float *v)
{
    uint64_t h0 = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h0 ^= (unsigned char)text[i];
        h0 *= 1099511628211ull;
    }
    double norm = 0;
    for (int d = 0; d < dims; d++) {
        uint64_t h = h0 ^ (uint64_t)(d + 1) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        v[d] = (float)((double)(h % 20001) / 10000.0 - 1.0);
        norm += (double)v[d] * v[d];
    }
    norm = sqrt(norm);
    for (int d = 0; d < dims && norm > 0; d++)
        v[d] = (float)(v[d] / norm);
}

static int run_embeddings(struct attempt *a)
{
    struct gw_error err;
    const cJSON *req = ex_attempt_canonical(a, &err);
    if (req == NULL) {
        ex_attempt_fail(a, &err);
        return -1;
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(req, "input");
    const cJSON *dims_j = cJSON_GetObjectItemCaseSensitive(req, "dimensions");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(req, "encoding_format");
    int dims = cJSON_IsNumber(dims_j) ? dims_j->valueint : 16;
    if (dims < 1 || dims > 8192)
        dims = 16;
    bool base64 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(r, "data");
    size_t chars = 0;
    cJSON *one = NULL;
    if (!cJSON_IsArray(input)) {
        one = cJSON_CreateArray();
        cJSON_AddItemToArray(one, cJSON_Duplicate(input, 1));
        input = one;
    }
    const cJSON *it;
    int idx = 0;
    float *v = xcalloc((size_t)dims, sizeof(float));
    cJSON_ArrayForEach(it, input)
    {
        char *text = cJSON_IsString(it) ? it->valuestring : NULL;
        char *printed = text ? NULL : cJSON_PrintUnformatted(it); /* token arrays: hash their JSON */
        const char *t = text ? text : printed;
        size_t len = strlen(t);
        chars += len;
        embed_one(t, len, dims, v);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "object", "embedding");
        cJSON_AddNumberToObject(e, "index", idx++);
        if (base64) {
            struct buf b = BUF_INIT(BUF_UNBOUNDED);
            buf_append_base64(&b, v, (size_t)dims * sizeof(float), false);
            cJSON_AddStringToObject(e, "embedding", b.data);
            buf_free(&b);
        } else {
            cJSON *arr = cJSON_AddArrayToObject(e, "embedding");
            for (int d = 0; d < dims; d++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber(v[d]));
        }
        cJSON_AddItemToArray(data, e);
        if (printed)
            cJSON_free(printed);
    }
    xfree(v);
    cJSON_Delete(one);
    cJSON_AddStringToObject(r, "model", ex_attempt_public_model(a));
    int64_t in = (int64_t)((chars + 3) / 4);
    if (in < 1)
        in = 1;
    cJSON *u = cJSON_AddObjectToObject(r, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)in);
    cJSON_AddNumberToObject(u, "total_tokens", (double)in);
    a->usage = (struct usage){.input = in, .known = true};
    ex_attempt_complete(a, r);
    return 0;
}

/* ---- chat ---- */

static void emit_next(struct mock_state *s);

static void on_tick(uv_timer_t *t)
{
    struct mock_state *s = t->data;
    if (s->a)
        emit_next(s);
}

static void schedule(struct mock_state *s, int64_t ms)
{
    if (ms <= 0) {
        emit_next(s);
        return;
    }
    uv_timer_start(&s->timer, on_tick, (uint64_t)ms, 0);
}

/* One step of the stream: a chunk of words, then tool calls, then the finish. */
static void emit_next(struct mock_state *s)
{
    for (;;) {
        struct attempt *a = s->a;
        if (a == NULL)
            return;
        const struct config_mock *cm = a->dep->mock;
        int64_t words_per_chunk = cm && cm->chunk_words > 0 ? cm->chunk_words : 1;
        int64_t interval = cm ? cm->chunk_interval_ms : 0;
        if (s->step == 0)
            s->step = s->reply.len ? 1 : 2;
        if (s->step == 1) {
            size_t start = s->pos, i = s->pos;
            int64_t w = 0;
            while (i < s->reply.len) {
                while (i < s->reply.len && s->reply.data[i] == ' ')
                    i++;
                while (i < s->reply.len && s->reply.data[i] != ' ')
                    i++;
                if (++w >= words_per_chunk)
                    break;
            }
            s->pos = i;
            struct chat_delta d = {.kind = DELTA_TEXT, .text = str_make(s->reply.data + start, i - start)};
            ex_attempt_delta(a, &d);
            if (s->a == NULL)
                return;
            if (s->pos >= s->reply.len)
                s->step = 2;
            if (interval > 0) {
                uv_timer_start(&s->timer, on_tick, (uint64_t)interval, 0);
                return;
            }
            continue;
        }
        if (s->step == 2) {
            for (int i = 0; i < s->ncalls && s->a; i++) {
                struct chat_delta d = {.kind = DELTA_TOOL_START,
                                       .tool_index = i,
                                       .tool_id = str_from(s->calls[i].id),
                                       .tool_name = str_from(s->calls[i].name)};
                ex_attempt_delta(a, &d);
                size_t n = strlen(s->calls[i].args), half = n / 2;
                struct chat_delta f1 = {.kind = DELTA_TOOL_ARGS, .tool_index = i,
                                        .text = str_make(s->calls[i].args, half)};
                struct chat_delta f2 = {.kind = DELTA_TOOL_ARGS, .tool_index = i,
                                        .text = str_make(s->calls[i].args + half, n - half)};
                if (s->a)
                    ex_attempt_delta(a, &f1);
                if (s->a)
                    ex_attempt_delta(a, &f2);
            }
            if (s->a == NULL)
                return;
            s->step = 3;
            continue;
        }
        struct chat_delta fin = {.kind = DELTA_FINISH, .finish = s->finish};
        ex_attempt_delta(a, &fin);
        if (s->a == NULL)
            return;
        a->usage = s->usage;
        struct chat_delta u = {.kind = DELTA_USAGE, .usage = s->usage};
        ex_attempt_delta(a, &u);
        if (s->a == NULL)
            return;
        ex_attempt_stream_end(a); /* frees the attempt and, through free_state, this state */
        return;
    }
}

static void on_latency_done(uv_timer_t *t)
{
    struct mock_state *s = t->data;
    struct attempt *a = s->a;
    if (a == NULL)
        return;
    if (a->stream) {
        /* the input count is known before the first token: front doors that report it up front (Anthropic's
         * message_start) send it; the final usage follows at the end as usual */
        struct chat_delta u = {.kind = DELTA_USAGE, .usage = {.input = s->usage.input, .known = true}};
        ex_attempt_delta(a, &u);
        if (s->a == NULL)
            return;
        const struct config_mock *cm = a->dep->mock;
        schedule(s, cm ? cm->ttft_ms : 0);
        return;
    }
    a->usage = s->usage;
    ex_attempt_complete(a, completion_json(s, a));
}

static int mock_run(struct attempt *a)
{
    if (a->op == OP_EMBEDDINGS)
        return run_embeddings(a);
    struct gw_error err;
    const cJSON *req = ex_attempt_canonical(a, &err);
    if (req == NULL) {
        ex_attempt_fail(a, &err);
        return -1;
    }
    struct mock_state *s = xcalloc(1, sizeof(*s));
    s->a = a;
    buf_init(&s->reply, BUF_UNBOUNDED);
    uv_timer_init(ex_attempt_loop(a), &s->timer);
    s->timer.data = s;
    a->pstate = s;
    int status = compose(s, a, req);
    if (status) {
        gw_error_set(&err, status, gw_err_type_for_status(status), "mock: error %d requested by the prompt", status);
        err.retryable = status == 429 || status >= 500;
        if (status == 429)
            err.retry_after_ms = 1000;
        ex_attempt_fail(a, &err);
        return -1;
    }
    const struct config_mock *cm = a->dep->mock;
    int64_t latency = cm ? cm->latency_ms : 0;
    if (latency > 0) {
        uv_timer_start(&s->timer, on_latency_done, (uint64_t)latency, 0);
        return 0;
    }
    on_latency_done(&s->timer);
    return 0;
}

const struct provider_ops provider_mock = {
    .name = "mock",
    .wire = WIRE_NONE,
    .framing = FRAMING_SSE,
    .supports_embeddings = true,
    .run_local = mock_run,
    .free_state = mock_free_state,
};
