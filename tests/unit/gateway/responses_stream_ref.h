/* responses_stream_ref.h: the Responses stream encoder as it was before the direct writers (commit f5ae3dd of
 * src/gateway/responses.c): every Response and output item built as a cJSON tree and printed. Kept, renamed
 * ref_*, only as the oracle of test_responses_stream.c's differential test: the direct writers must produce
 * the same events (same fields and values, same sequence numbers) for every input. Not compiled into agentd. */
#ifndef AGENTD_TEST_RESPONSES_STREAM_REF_H
#define AGENTD_TEST_RESPONSES_STREAM_REF_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "gateway/responses.h"

static const char *ref_get_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void ref_replace(cJSON *o, const char *k, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(o, k))
        cJSON_ReplaceItemInObjectCaseSensitive(o, k, v);
    else
        cJSON_AddItemToObject(o, k, v);
}

static const char *ref_id_suffix(const char *id)
{
    return strncmp(id, "resp_", 5) == 0 ? id + 5 : id;
}

static cJSON *ref_message_output(const char *id, const char *text, const char *refusal, bool done)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "status", done ? "completed" : "in_progress");
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    if (text) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "output_text");
        cJSON_AddArrayToObject(p, "annotations");
        cJSON_AddArrayToObject(p, "logprobs");
        cJSON_AddStringToObject(p, "text", text);
        cJSON_AddItemToArray(content, p);
    }
    if (refusal) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "refusal");
        cJSON_AddStringToObject(p, "refusal", refusal);
        cJSON_AddItemToArray(content, p);
    }
    cJSON_AddStringToObject(m, "role", "assistant");
    return m;
}
static cJSON *ref_call_output(const char *id, const char *call_id, const char *name, const char *args, bool done)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "type", "function_call");
    cJSON_AddStringToObject(c, "status", done ? "completed" : "in_progress");
    cJSON_AddStringToObject(c, "arguments", args);
    cJSON_AddStringToObject(c, "call_id", call_id);
    cJSON_AddStringToObject(c, "name", name);
    return c;
}

struct ref_tool {
    int index;        /* chat tool_index */
    int output_index;
    char *item_id;
    char *call_id, *name;
    struct buf args;
    bool open;
};

struct ref_stream {
    cJSON *resp;      /* the Response; output items are added as they close */
    int64_t seq;
    bool started, ended;
    int next_output;  /* output_index of the next item */
    /* the open message item, if any */
    int text_output;  /* -1: none open */
    char text_id[RESPONSES_MAX_ID + 64];
    struct buf text;
    int nmsg;
    struct ref_tool *tools;
    int ntools, captools;
    enum finish finish;
    struct usage usage;
    /* items in output order (closed ones) are appended to resp->output in order of output_index */
    cJSON **items;    /* by output_index */
    int capitems;
};

static struct ref_stream *ref_stream_new(cJSON *skeleton)
{
    struct ref_stream *s = xcalloc(1, sizeof(*s));
    s->resp = skeleton;
    s->seq = -1;
    s->text_output = -1;
    buf_init(&s->text, BUF_UNBOUNDED);
    return s;
}

static void ref_stream_free(struct ref_stream *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->ntools; i++) {
        xfree(s->tools[i].item_id);
        xfree(s->tools[i].call_id);
        xfree(s->tools[i].name);
        buf_free(&s->tools[i].args);
    }
    for (int i = 0; i < s->next_output && i < s->capitems; i++)
        cJSON_Delete(s->items[i]);
    xfree(s->items);
    xfree(s->tools);
    buf_free(&s->text);
    cJSON_Delete(s->resp);
    xfree(s);
}

static const cJSON *ref_stream_response(const struct ref_stream *s)
{
    return s->resp;
}

static int64_t ref_stream_seq(const struct ref_stream *s)
{
    return s->seq;
}

/* "event: TYPE\ndata: {"type":"TYPE","sequence_number":N," ... the caller closes with event_end */
static void ref_event_begin(struct ref_stream *s, struct buf *out, const char *type)
{
    s->seq++;
    buf_append_str(out, "event: ");
    buf_append_str(out, type);
    buf_append_str(out, "\ndata: {\"type\":\"");
    buf_append_str(out, type);
    buf_append_str(out, "\",\"sequence_number\":");
    buf_append_i64(out, s->seq);
}

static void ref_event_end(struct buf *out)
{
    buf_append_str(out, "}\n\n");
}

static void ref_event_json(struct buf *out, const char *key, const cJSON *v)
{
    char *j = cJSON_PrintUnformatted(v);
    buf_append_str(out, ",\"");
    buf_append_str(out, key);
    buf_append_str(out, "\":");
    buf_append_str(out, j ? j : "null");
    cJSON_free(j);
}

static void ref_event_response(struct ref_stream *s, struct buf *out, const char *type)
{
    ref_event_begin(s, out, type);
    ref_event_json(out, "response", s->resp);
    ref_event_end(out);
}

static void ref_item_event(struct ref_stream *s, struct buf *out, const char *type, int output_index,
                       const cJSON *item)
{
    ref_event_begin(s, out, type);
    buf_append_str(out, ",\"output_index\":");
    buf_append_i64(out, output_index);
    ref_event_json(out, "item", item);
    ref_event_end(out);
}

static void ref_start(struct ref_stream *s, struct buf *out)
{
    if (s->started)
        return;
    s->started = true;
    ref_event_response(s, out, "response.created");
    ref_event_response(s, out, "response.in_progress");
}

static void ref_keep_item(struct ref_stream *s, int output_index, cJSON *item)
{
    if (output_index >= s->capitems) {
        int ncap = s->capitems ? s->capitems * 2 : 8;
        while (ncap <= output_index)
            ncap *= 2;
        s->items = xrealloc(s->items, (size_t)ncap * sizeof(*s->items));
        memset(s->items + s->capitems, 0, (size_t)(ncap - s->capitems) * sizeof(*s->items));
        s->capitems = ncap;
    }
    cJSON_Delete(s->items[output_index]);
    s->items[output_index] = item;
}

static void ref_text_open(struct ref_stream *s, struct buf *out)
{
    if (s->text_output >= 0)
        return;
    s->text_output = s->next_output++;
    const char *id = ref_get_str(s->resp, "id");
    if (s->nmsg == 0)
        snprintf(s->text_id, sizeof(s->text_id), "msg_%s", ref_id_suffix(id ? id : ""));
    else
        snprintf(s->text_id, sizeof(s->text_id), "msg_%s_%d", ref_id_suffix(id ? id : ""), s->nmsg);
    s->nmsg++;
    buf_reset(&s->text);
    cJSON *item = ref_message_output(s->text_id, NULL, NULL, false);
    ref_item_event(s, out, "response.output_item.added", s->text_output, item);
    cJSON_Delete(item);
    ref_event_begin(s, out, "response.content_part.added");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, s->text_id);
    buf_printf(out, ",\"output_index\":%d,\"content_index\":0,"
                    "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}",
               s->text_output);
    ref_event_end(out);
}

static void ref_text_close(struct ref_stream *s, struct buf *out)
{
    if (s->text_output < 0)
        return;
    ref_event_begin(s, out, "response.output_text.done");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, s->text_id);
    buf_printf(out, ",\"output_index\":%d,\"content_index\":0,\"text\":", s->text_output);
    buf_append_json_str(out, s->text.data ? s->text.data : "", s->text.len);
    buf_append_str(out, ",\"logprobs\":[]");
    ref_event_end(out);
    ref_event_begin(s, out, "response.content_part.done");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, s->text_id);
    buf_printf(out, ",\"output_index\":%d,\"content_index\":0,"
                    "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":",
               s->text_output);
    buf_append_json_str(out, s->text.data ? s->text.data : "", s->text.len);
    buf_append_str(out, "}");
    ref_event_end(out);
    cJSON *item = ref_message_output(s->text_id, s->text.data ? s->text.data : "", NULL, true);
    ref_item_event(s, out, "response.output_item.done", s->text_output, item);
    ref_keep_item(s, s->text_output, item);
    s->text_output = -1;
    buf_reset(&s->text);
}

static struct ref_tool *ref_tool_find(struct ref_stream *s, int index)
{
    for (int i = s->ntools - 1; i >= 0; i--) /* the latest first: arguments follow their start */
        if (s->tools[i].index == index)
            return &s->tools[i];
    return NULL;
}

static void ref_tool_close(struct ref_stream *s, struct ref_tool *t, struct buf *out)
{
    if (!t->open)
        return;
    t->open = false;
    ref_event_begin(s, out, "response.function_call_arguments.done");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, t->item_id);
    buf_printf(out, ",\"output_index\":%d,\"name\":", t->output_index);
    buf_append_json_cstr(out, t->name);
    buf_append_str(out, ",\"arguments\":");
    buf_append_json_str(out, t->args.data ? t->args.data : "", t->args.len);
    ref_event_end(out);
    cJSON *item = ref_call_output(t->item_id, t->call_id, t->name, t->args.data ? t->args.data : "", true);
    ref_item_event(s, out, "response.output_item.done", t->output_index, item);
    ref_keep_item(s, t->output_index, item);
}

static void ref_stream_delta(struct ref_stream *s, const struct chat_delta *d, struct buf *out)
{
    if (s->ended)
        return;
    ref_start(s, out);
    switch (d->kind) {
    case DELTA_TEXT:
        if (d->text.n == 0)
            return;
        ref_text_open(s, out);
        buf_append(&s->text, d->text.p, d->text.n);
        ref_event_begin(s, out, "response.output_text.delta");
        buf_append_str(out, ",\"item_id\":");
        buf_append_json_cstr(out, s->text_id);
        buf_printf(out, ",\"output_index\":%d,\"content_index\":0,\"delta\":", s->text_output);
        buf_append_json_str(out, d->text.p, d->text.n);
        buf_append_str(out, ",\"logprobs\":[]");
        ref_event_end(out);
        break;
    case DELTA_TOOL_START: {
        if (s->ntools >= RESPONSES_MAX_TOOLS)
            return;
        /* items are sequential: the text before a call is one message */
        ref_text_close(s, out);
        if (s->ntools == s->captools) {
            s->captools = s->captools ? s->captools * 2 : 4;
            s->tools = xrealloc(s->tools, (size_t)s->captools * sizeof(*s->tools));
        }
        struct ref_tool *t = &s->tools[s->ntools];
        memset(t, 0, sizeof(*t));
        t->index = d->tool_index;
        t->output_index = s->next_output++;
        const char *id = ref_get_str(s->resp, "id");
        char iid[RESPONSES_MAX_ID + 64];
        snprintf(iid, sizeof(iid), "fc_%s_%d", ref_id_suffix(id ? id : ""), s->ntools);
        t->item_id = xstrdup(iid);
        t->call_id = d->tool_id.n ? str_dup(d->tool_id) : xstrdup(iid);
        t->name = str_dup(d->tool_name);
        buf_init(&t->args, BUF_UNBOUNDED);
        t->open = true;
        s->ntools++;
        cJSON *item = ref_call_output(t->item_id, t->call_id, t->name, "", false);
        ref_item_event(s, out, "response.output_item.added", t->output_index, item);
        cJSON_Delete(item);
        break;
    }
    case DELTA_TOOL_ARGS: {
        struct ref_tool *t = ref_tool_find(s, d->tool_index);
        if (t == NULL || !t->open || d->text.n == 0)
            return;
        buf_append(&t->args, d->text.p, d->text.n);
        ref_event_begin(s, out, "response.function_call_arguments.delta");
        buf_append_str(out, ",\"item_id\":");
        buf_append_json_cstr(out, t->item_id);
        buf_printf(out, ",\"output_index\":%d,\"delta\":", t->output_index);
        buf_append_json_str(out, d->text.p, d->text.n);
        ref_event_end(out);
        break;
    }
    case DELTA_FINISH: s->finish = d->finish; break;
    case DELTA_USAGE: s->usage = d->usage; break;
    }
}

static void ref_stream_end(struct ref_stream *s, const struct usage *u, const struct gw_error *err,
                          struct buf *out)
{
    if (s->ended)
        return;
    ref_start(s, out);
    s->ended = true;
    ref_text_close(s, out);
    for (int i = 0; i < s->ntools; i++)
        ref_tool_close(s, &s->tools[i], out);
    cJSON *output = cJSON_GetObjectItemCaseSensitive(s->resp, "output");
    for (int i = 0; i < s->next_output && i < s->capitems; i++)
        if (s->items[i]) {
            cJSON_AddItemToArray(output, s->items[i]);
            s->items[i] = NULL;
        }
    const struct usage *use = u && (u->known || u->invalid) ? u : &s->usage;
    if (err) {
        ref_replace(s->resp, "status", cJSON_CreateString("failed"));
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "code", err->code[0] ? err->code : err->status >= 500 ? "server_error" : "invalid_request_error");
        cJSON_AddStringToObject(e, "message", err->message);
        ref_replace(s->resp, "error", e);
        ref_replace(s->resp, "usage", use->known ? responses_usage_json(use) : cJSON_CreateNull());
        ref_event_response(s, out, "response.failed");
        return;
    }
    responses_finish(s->resp, s->finish ? s->finish : FINISH_STOP, use);
    const char *status = ref_get_str(s->resp, "status");
    ref_event_response(s, out, status && strcmp(status, "incomplete") == 0 ? "response.incomplete" : "response.completed");
}

#endif
