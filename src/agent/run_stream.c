/* run_stream.c: a streamed LLM step read back into one chat.completion (run_stream.h). */
#include "agent/run_stream.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

static int fail(struct run_stream *s, const char *why)
{
    if (!s->failed) {
        s->failed = true;
        snprintf(s->why, sizeof(s->why), "%s", why);
    }
    return -1;
}

static int64_t count_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15 ? (int64_t)v->valuedouble : 0;
}

static int take(struct run_stream *s, size_t n)
{
    if (n > s->max - s->used)
        return fail(s, "the streamed answer is too large");
    s->used += n;
    return 0;
}

static int piece(struct run_stream *s, struct buf *b, const cJSON *v, bool append)
{
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return 0;
    size_t n = strlen(v->valuestring);
    if (take(s, n) != 0)
        return -1;
    if (!append)
        b->len = 0;
    buf_append(b, v->valuestring, n);
    return 0;
}

static int tool_delta(struct run_stream *s, const cJSON *tc)
{
    const cJSON *idx = cJSON_GetObjectItemCaseSensitive(tc, "index");
    if (!cJSON_IsNumber(idx) || idx->valuedouble < 0 || idx->valuedouble >= RUN_STREAM_MAX_CALLS)
        return fail(s, "a streamed tool call has no usable index");
    int i = (int)idx->valuedouble;
    if (i >= s->ncalls) {
        s->calls = xrealloc(s->calls, (size_t)(i + 1) * sizeof(*s->calls));
        for (int k = s->ncalls; k <= i; k++) {
            buf_init(&s->calls[k].id, BUF_UNBOUNDED);
            buf_init(&s->calls[k].name, BUF_UNBOUNDED);
            buf_init(&s->calls[k].args, BUF_UNBOUNDED);
        }
        s->ncalls = i + 1;
    }
    struct run_stream_call *c = &s->calls[i];
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    if (piece(s, &c->id, cJSON_GetObjectItemCaseSensitive(tc, "id"), false) != 0 ||
        piece(s, &c->name, cJSON_GetObjectItemCaseSensitive(fn, "name"), false) != 0 ||
        piece(s, &c->args, cJSON_GetObjectItemCaseSensitive(fn, "arguments"), true) != 0)
        return -1;
    return 0;
}

static int on_chunk(struct run_stream *s, const cJSON *m)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(m, "error");
    if (err) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        char why[240];
        snprintf(why, sizeof(why), "the model's stream ended with an error: %s",
                 cJSON_IsString(msg) ? msg->valuestring : "(no message)");
        return fail(s, why);
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(m, "usage");
    if (cJSON_IsObject(usage)) {
        s->has_usage = true;
        s->prompt_tokens = count_of(usage, "prompt_tokens");
        s->completion_tokens = count_of(usage, "completion_tokens");
    }
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m, "choices"), 0);
    if (!cJSON_IsObject(ch))
        return 0;
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
    if (cJSON_IsString(fr))
        snprintf(s->finish, sizeof(s->finish), "%s", fr->valuestring);
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    if (cJSON_IsString(content)) {
        size_t n = strlen(content->valuestring);
        if (take(s, n) != 0)
            return -1;
        s->has_content = true;
        buf_append(&s->content, content->valuestring, n);
        if (n && s->on_text)
            s->on_text(s->ud, content->valuestring, n);
    }
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
    const cJSON *tc;
    if (cJSON_IsArray(tcs))
        cJSON_ArrayForEach(tc, tcs)
        {
            if (tool_delta(s, tc) != 0)
                return -1;
        }
    return 0;
}

static int on_event(const struct sse_event *ev, void *ud)
{
    struct run_stream *s = ud;
    if (s->failed)
        return -1;
    if (ev->data.n == 0 || (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0))
        return 0;
    cJSON *m = cJSON_ParseWithLength(ev->data.p, ev->data.n);
    int rc = cJSON_IsObject(m) ? on_chunk(s, m) : fail(s, "the model's stream has an event that is not a JSON object");
    cJSON_Delete(m);
    return rc;
}

void run_stream_init(struct run_stream *s, size_t max, run_stream_text_fn *on_text, void *ud)
{
    memset(s, 0, sizeof(*s));
    s->max = max;
    buf_init(&s->content, BUF_UNBOUNDED);
    s->on_text = on_text;
    s->ud = ud;
    sse_parser_init(&s->sp, max + 4096, on_event, s);
}

int run_stream_feed(struct run_stream *s, const char *data, size_t len)
{
    if (s->failed)
        return -1;
    int rc = sse_feed(&s->sp, data, len);
    if (rc == -1 && !s->failed)
        fail(s, "an event of the model's stream is too large");
    return s->failed ? -1 : 0;
}

int run_stream_completion(struct run_stream *s, struct buf *out)
{
    sse_finish(&s->sp);
    if (s->failed)
        return -1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "chat.completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (s->has_content)
        cJSON_AddStringToObject(msg, "content", s->content.data ? s->content.data : "");
    else
        cJSON_AddNullToObject(msg, "content");
    if (s->ncalls > 0) {
        cJSON *arr = cJSON_AddArrayToObject(msg, "tool_calls");
        for (int i = 0; i < s->ncalls; i++) {
            const struct run_stream_call *c = &s->calls[i];
            cJSON *o1 = cJSON_CreateObject();
            cJSON_AddStringToObject(o1, "id", c->id.data ? c->id.data : "");
            cJSON_AddStringToObject(o1, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(o1, "function");
            cJSON_AddStringToObject(fn, "name", c->name.data ? c->name.data : "");
            cJSON_AddStringToObject(fn, "arguments", c->args.data ? c->args.data : "");
            cJSON_AddItemToArray(arr, o1);
        }
    }
    cJSON_AddStringToObject(ch, "finish_reason", s->finish[0] ? s->finish : "stop");
    cJSON_AddItemToArray(choices, ch);
    if (s->has_usage) {
        cJSON *u = cJSON_AddObjectToObject(o, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", (double)s->prompt_tokens);
        cJSON_AddNumberToObject(u, "completion_tokens", (double)s->completion_tokens);
        cJSON_AddNumberToObject(u, "total_tokens", (double)(s->prompt_tokens + s->completion_tokens));
    }
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    buf_append_str(out, t);
    cJSON_free(t);
    return 0;
}

void run_stream_free(struct run_stream *s)
{
    sse_parser_free(&s->sp);
    buf_free(&s->content);
    for (int i = 0; i < s->ncalls; i++) {
        buf_free(&s->calls[i].id);
        buf_free(&s->calls[i].name);
        buf_free(&s->calls[i].args);
    }
    xfree(s->calls);
    s->calls = NULL;
    s->ncalls = 0;
}
