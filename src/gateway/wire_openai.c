/* wire_openai.c: the OpenAI Chat Completions wire format as a codec: usage, request splicing, error mapping,
 * canonical encode and decode. Shared by the OpenAI front door (front_openai.c) and the OpenAI-family providers
 * (OpenAI, Azure OpenAI, OpenAI-compatible servers). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "gateway/providers/canon.h"
#include "net/sse.h"
#include "gateway/wire_openai.h"

static bool usage_from_tree(const cJSON *o, struct usage *u)
{
    memset(u, 0, sizeof(*u));
    if (!cJSON_IsObject(o))
        return false;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(o, "completion_tokens");
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, "input_tokens"); /* embeddings of some compatible servers */
    const cJSON *pd = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens_details");
    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(o, "completion_tokens_details");
    u->known = pt || ct || it;
    u->input = usage_read_json(u, pt ? pt : it);
    u->output = usage_read_json(u, ct);
    if (cJSON_IsObject(pd))
        u->cached_input = usage_read_json(u, cJSON_GetObjectItemCaseSensitive(pd, "cached_tokens"));
    if (cJSON_IsObject(cd))
        u->reasoning = usage_read_json(u, cJSON_GetObjectItemCaseSensitive(cd, "reasoning_tokens"));
    if (!u->known)
        u->invalid = false; /* no counts at all: not reported, nothing to flag */
    return usage_check(u, NULL);
}

/* One member of a usage's details object; the text was validated with the usage, so it is not checked again
 * (a duplicate falls back to the first copy, as a validating look-up reads it). */
static bool detail_get(const struct jval *obj, const char *key, struct jval *v)
{
    const char *keys[1] = {key};
    if (jscan_fields_trusted(obj, keys, v, 1) == 0)
        return v->type != J_NONE;
    return jscan_get(obj->raw.p, obj->raw.n, key, v) == 0;
}

/* trusted: span is an object value out of text validated already (a jval jscan_fields returned) */
static int usage_from_span(struct str span, bool trusted, struct usage *u)
{
    struct jval v;
    memset(u, 0, sizeof(*u));
    static const char *const keys[] = {"prompt_tokens", "completion_tokens", "prompt_tokens_details",
                                       "completion_tokens_details", "input_tokens"};
    struct jval f[5];
    const struct jval obj = {J_OBJECT, span};
    if (trusted ? jscan_fields_trusted(&obj, keys, f, 5) != 0 : jscan_fields(span.p, span.n, keys, f, 5, NULL, NULL) != 0)
        return -1;
    u->known = f[0].type != J_NONE || f[1].type != J_NONE || f[4].type != J_NONE;
    u->input = usage_read_jval(u, f[0].type != J_NONE ? &f[0] : &f[4]);
    u->output = usage_read_jval(u, &f[1]);
    if (f[2].type == J_OBJECT && detail_get(&f[2], "cached_tokens", &v))
        u->cached_input = usage_read_jval(u, &v);
    if (f[3].type == J_OBJECT && detail_get(&f[3], "reasoning_tokens", &v))
        u->reasoning = usage_read_jval(u, &v);
    if (!u->known)
        u->invalid = false;
    usage_check(u, NULL);
    return u->known || u->invalid ? 0 : -1;
}

int wire_openai_usage_object(const char *obj, size_t len, struct usage *u)
{
    return usage_from_span(str_make(obj, len), true, u);
}

int wire_openai_extract_usage(const char *body, size_t len, struct usage *u)
{
    struct jval v;
    memset(u, 0, sizeof(*u));
    if (jscan_get(body, len, "usage", &v) != 0 || v.type != J_OBJECT)
        return -1;
    return usage_from_span(v.raw, true, u);
}


void wire_openai_usage_append(struct buf *b, const struct usage *u)
{
    buf_printf(b,
               "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
               "\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
               "\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}",
               (long long)u->input, (long long)u->output, (long long)(u->input + u->output),
               (long long)u->cached_input, (long long)u->reasoning);
}

/* ---------- request splicing (passthrough) ---------- */

struct edit {
    size_t off, del;
    const char *ins;
    size_t ins_len;
};

static int apply_edits(const char *body, size_t len, struct edit *e, int n, struct buf *out)
{
    /* edits are sorted by offset and never overlap */
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (buf_append(out, body + pos, e[i].off - pos) != 0 || buf_append(out, e[i].ins, e[i].ins_len) != 0)
            return -1;
        pos = e[i].off + e[i].del;
    }
    return buf_append(out, body + pos, len - pos);
}

static int splice_body(const char *body, size_t len, const char *model, bool force_include_usage, bool validated,
                       struct buf *out)
{
    static const char *const keys[] = {"model", "stream_options"};
    struct jval f[2];
    if (validated) {
        /* the front's parse validated these bytes: only the two members are looked for */
        size_t at = 0;
        while (at < len && (body[at] == ' ' || body[at] == '\t' || body[at] == '\n' || body[at] == '\r'))
            at++;
        struct jval obj = {J_OBJECT, str_make(body + at, len - at)};
        if (at == len || body[at] != '{' || jscan_fields_trusted(&obj, keys, f, 2) != 0)
            return -1;
    } else if (jscan_fields(body, len, keys, f, 2, NULL, NULL) != 0) {
        return -1;
    }
    if (f[0].type != J_STRING)
        return -1;
    struct buf mq = BUF_INIT(BUF_UNBOUNDED);
    buf_append_json_cstr(&mq, model);
    struct edit e[3];
    int n = 0;
    e[n++] = (struct edit){(size_t)(f[0].raw.p - body), f[0].raw.n, mq.data, mq.len};
    static const char add_opts[] = ",\"stream_options\":{\"include_usage\":true}";
    if (force_include_usage) {
        if (f[1].type == J_OBJECT) {
            struct jval iu;
            if (jscan_get(f[1].raw.p, f[1].raw.n, "include_usage", &iu) == 0)
                e[n++] = (struct edit){(size_t)(iu.raw.p - body), iu.raw.n, "true", 4};
            else {
                /* insert as the object's first member */
                const char *brace = f[1].raw.p;
                bool empty = true;
                for (const char *q = brace + 1; q < f[1].raw.p + f[1].raw.n - 1; q++)
                    if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
                        empty = false;
                e[n++] = (struct edit){(size_t)(brace + 1 - body), 0, empty ? "\"include_usage\":true" :
                                                                            "\"include_usage\":true,",
                                       empty ? 20u : 21u};
            }
        } else if (f[1].type == J_NONE || f[1].type == J_NULL) {
            if (f[1].type == J_NULL) {
                e[n++] = (struct edit){(size_t)(f[1].raw.p - body), f[1].raw.n, "{\"include_usage\":true}", 22};
            } else {
                /* before the closing brace of the top-level object */
                size_t close = len;
                while (close > 0 && body[close - 1] != '}')
                    close--;
                e[n++] = (struct edit){close - 1, 0, add_opts, sizeof(add_opts) - 1};
            }
        }
    }
    /* sort (at most 3) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && e[j].off < e[j - 1].off; j--) {
            struct edit t = e[j];
            e[j] = e[j - 1];
            e[j - 1] = t;
        }
    int rc = apply_edits(body, len, e, n, out);
    buf_free(&mq);
    return rc;
}

int wire_openai_splice_request(const char *body, size_t len, const char *model, bool force_include_usage,
                               struct buf *out)
{
    return splice_body(body, len, model, force_include_usage, false, out);
}

int wire_openai_splice_validated(const char *body, size_t len, const char *model, bool force_include_usage,
                                 struct buf *out)
{
    return splice_body(body, len, model, force_include_usage, true, out);
}

/* ---------- provider side ---------- */

void wire_openai_map_error(int status, const char *body, size_t len, struct gw_error *err)
{
    gw_error_set(err, status, gw_err_type_for_status(status), "upstream returned HTTP %d", status);
    err->from_upstream = true;
    cJSON *t = cJSON_ParseWithLength(body, len);
    const cJSON *e = t ? cJSON_GetObjectItemCaseSensitive(t, "error") : NULL;
    if (cJSON_IsObject(e)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "param");
        if (cJSON_IsString(m))
            snprintf(err->message, sizeof(err->message), "%s", m->valuestring);
        if (cJSON_IsString(c))
            snprintf(err->code, sizeof(err->code), "%s", c->valuestring);
        else if (cJSON_IsNumber(c))
            snprintf(err->code, sizeof(err->code), "%d", c->valueint);
        if (cJSON_IsString(p))
            snprintf(err->param, sizeof(err->param), "%s", p->valuestring);
    } else if (cJSON_IsString(e)) { /* some compatible servers: {"error": "text"} */
        snprintf(err->message, sizeof(err->message), "%s", e->valuestring);
    } else if (t && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(t, "detail"))) { /* vLLM/FastAPI */
        snprintf(err->message, sizeof(err->message), "%s", cJSON_GetObjectItemCaseSensitive(t, "detail")->valuestring);
    } else if (t && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(t, "message"))) {
        snprintf(err->message, sizeof(err->message), "%s", cJSON_GetObjectItemCaseSensitive(t, "message")->valuestring);
    }
    /* A 429 for an exhausted quota will not clear by retrying. */
    err->retryable = (status == 429 && strcmp(err->code, "insufficient_quota") != 0) || status == 408 ||
                     status >= 500;
    cJSON_Delete(t);
}

int wire_openai_encode_canonical(const cJSON *canon, const char *model, bool stream, struct buf *out)
{
    cJSON *t = cJSON_Duplicate(canon, 1);
    if (t == NULL)
        return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(t, "model");
    cJSON_AddStringToObject(t, "model", model);
    cJSON_DeleteItemFromObjectCaseSensitive(t, "stream");
    cJSON_DeleteItemFromObjectCaseSensitive(t, "stream_options");
    cJSON_DeleteItemFromObjectCaseSensitive(t, "top_k"); /* canonical extension (Anthropic clients): OpenAI refuses it */
    canon_strip_cache_control(t); /* canonical extension (Anthropic clients): OpenAI caches prefixes by itself */
    if (stream) {
        cJSON_AddBoolToObject(t, "stream", 1);
        cJSON *so = cJSON_AddObjectToObject(t, "stream_options");
        cJSON_AddBoolToObject(so, "include_usage", 1);
    }
    char *s = cJSON_PrintUnformatted(t);
    cJSON_Delete(t);
    if (s == NULL)
        return -1;
    buf_append_str(out, s);
    cJSON_free(s);
    return 0;
}

cJSON *wire_openai_decode_completion(const char *body, size_t len, struct usage *u, struct gw_error *err)
{
    cJSON *t = cJSON_ParseWithLength(body, len);
    const cJSON *choices = t ? cJSON_GetObjectItemCaseSensitive(t, "choices") : NULL;
    if (!cJSON_IsArray(choices)) {
        cJSON_Delete(t);
        gw_error_set(err, 502, GW_ERR_API, "upstream returned a malformed chat completion");
        err->from_upstream = true;
        return NULL;
    }
    usage_from_tree(cJSON_GetObjectItemCaseSensitive(t, "usage"), u);
    return t;
}

/* The general decoder: a tree, for the chunks the scanner below leaves to it (tool calls, errors, duplicate keys). */
static int decode_chunk_tree(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    cJSON *t = cJSON_ParseWithLength(ev->data.p, ev->data.n);
    if (t == NULL) {
        gw_error_set(err, 502, GW_ERR_API, "upstream sent a malformed stream event");
        err->from_upstream = true;
        return -1;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(t, "error");
    if (e && !cJSON_IsNull(e)) {
        char *s = cJSON_PrintUnformatted(t);
        wire_openai_map_error(500, s, strlen(s), err);
        cJSON_free(s);
        cJSON_Delete(t);
        err->status = 502;
        return -1;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(t, "model");
    if (cJSON_IsString(model) && !a->response_model[0])
        snprintf(a->response_model, sizeof(a->response_model), "%s", model->valuestring);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "choices"), 0);
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    if (cJSON_IsString(content) && content->valuestring[0]) {
        struct chat_delta d = {.kind = DELTA_TEXT, .text = str_from(content->valuestring)};
        ex_attempt_delta(a, &d);
    }
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
    const cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(tc, "index");
        int index = cJSON_IsNumber(idx) ? idx->valueint : 0;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (cJSON_IsString(id) || cJSON_IsString(name)) {
            struct chat_delta d = {.kind = DELTA_TOOL_START,
                                   .tool_index = index,
                                   .tool_id = str_from(cJSON_IsString(id) ? id->valuestring : ""),
                                   .tool_name = str_from(cJSON_IsString(name) ? name->valuestring : "")};
            ex_attempt_delta(a, &d);
        }
        if (cJSON_IsString(args) && args->valuestring[0]) {
            struct chat_delta d = {.kind = DELTA_TOOL_ARGS, .tool_index = index, .text = str_from(args->valuestring)};
            ex_attempt_delta(a, &d);
        }
    }
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    if (cJSON_IsString(fr)) {
        struct chat_delta d = {.kind = DELTA_FINISH, .finish = gw_finish_from_openai(fr->valuestring)};
        ex_attempt_delta(a, &d);
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(t, "usage");
    struct usage u;
    usage_from_tree(usage, &u);
    if (u.known || u.invalid) {
        usage_check(&u, a->dep ? a->dep->label : NULL);
        a->usage = u;
        if (u.known) {
            struct chat_delta d = {.kind = DELTA_USAGE, .usage = u};
            ex_attempt_delta(a, &d);
        }
    }
    cJSON_Delete(t);
    return EV_CONSUMED;
}

static int first_elem_fields(const struct jval *elem, const struct jval *fields, void *ud)
{
    (void)fields;
    *(struct jval *)ud = *elem;
    return 1;
}

/* A string value's bytes: pointed at in place when it holds no escape, else unescaped into scratch. */
static struct str jval_text(const struct jval *v, struct buf *scratch)
{
    struct str in = str_make(v->raw.p + 1, v->raw.n - 2);
    if (memchr(in.p, '\\', in.n) == NULL)
        return in;
    if (jval_str(v, scratch) != 0)
        return STR_NULL;
    return str_make(scratch->data, scratch->len);
}

int wire_openai_scan_chunk(struct str data, struct buf *scratch, struct openai_chunk *c)
{
    static const char *const top_keys[] = {"error", "model", "choices", "usage"};
    static const char *const choice_keys[] = {"delta", "finish_reason"};
    static const char *const delta_keys[] = {"content", "tool_calls"};
    struct jval top[4], ch[2] = {{0}}, dl[2] = {{0}}, choice = {0};
    memset(c, 0, sizeof(*c));
    buf_reset(scratch);
    if (jscan_fields(data.p, data.n, top_keys, top, 4, NULL, NULL) != 0)
        return -1; /* malformed, or a duplicate key */
    if (top[0].type != J_NONE && top[0].type != J_NULL)
        return -1;
    /* choices[0] and its delta come out of text the first scan validated: read without validating again */
    if (top[2].type == J_ARRAY && jscan_each_fields(&top[2], choice_keys, ch, 2, first_elem_fields, &choice) < 0)
        return -1;
    if (ch[0].type == J_OBJECT && jscan_fields_trusted(&ch[0], delta_keys, dl, 2) != 0)
        return -1;
    if (dl[1].type != J_NONE && dl[1].type != J_NULL)
        return -1; /* tool calls */
    if (top[1].type == J_STRING) {
        struct buf mb = BUF_INIT(BUF_UNBOUNDED);
        struct str m = jval_text(&top[1], &mb);
        if (m.p != NULL)
            snprintf(c->model, sizeof(c->model), "%.*s", (int)m.n, m.p);
        buf_free(&mb);
    }
    if (dl[0].type == J_STRING && dl[0].raw.n > 2)
        c->text = jval_text(&dl[0], scratch);
    if (ch[1].type == J_STRING) {
        struct buf fb = BUF_INIT(64);
        struct str f = jval_text(&ch[1], &fb);
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)(f.p ? f.n : 0), f.p ? f.p : "");
        c->finish = gw_finish_from_openai(name);
        c->has_finish = true;
        buf_free(&fb);
    }
    if (top[3].type == J_OBJECT)
        usage_from_span(top[3].raw, true, &c->usage);
    return 0;
}

/* A chat.completion.chunk -> deltas. Text chunks, nearly every event of a stream, are read by one validating scan
 * with no tree (wire_openai_scan_chunk); every field is found before the first delta is emitted, so a chunk the
 * scan declines (tool calls, an error, a duplicate key, malformed) goes to the tree decoder whole, once. */
int wire_openai_decode_chunk(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    if (str_eq_cstr(str_trim(ev->data), "[DONE]")) {
        a->stream_done = true;
        return EV_CONSUMED;
    }
    struct openai_chunk c;
    struct buf scratch = BUF_INIT(BUF_UNBOUNDED);
    if (wire_openai_scan_chunk(ev->data, &scratch, &c) != 0) {
        buf_free(&scratch);
        return decode_chunk_tree(a, ev, err);
    }
    if (c.model[0] && !a->response_model[0])
        snprintf(a->response_model, sizeof(a->response_model), "%s", c.model);
    if (c.text.p != NULL && c.text.n > 0) {
        struct chat_delta d = {.kind = DELTA_TEXT, .text = c.text};
        ex_attempt_delta(a, &d);
    }
    buf_free(&scratch);
    if (c.has_finish) {
        struct chat_delta d = {.kind = DELTA_FINISH, .finish = c.finish};
        ex_attempt_delta(a, &d);
    }
    if (c.usage.known || c.usage.invalid) {
        usage_check(&c.usage, a->dep ? a->dep->label : NULL);
        a->usage = c.usage;
        if (c.usage.known) {
            struct chat_delta d = {.kind = DELTA_USAGE, .usage = c.usage};
            ex_attempt_delta(a, &d);
        }
    }
    return EV_CONSUMED;
}

/* An OpenAI error object {"error":{"message","type","param","code"}}, param and code null when unset: the body of
 * every OpenAI-format error agentd writes (chat, embeddings and Responses fronts). */
void wire_openai_error_json(const struct gw_error *err, struct buf *out)
{
    buf_append_str(out, "{\"error\":{\"message\":");
    buf_append_json_cstr(out, err->message);
    buf_append_str(out, ",\"type\":");
    buf_append_json_cstr(out, gw_err_type_openai(err->type));
    buf_append_str(out, ",\"param\":");
    if (err->param[0])
        buf_append_json_cstr(out, err->param);
    else
        buf_append_str(out, "null");
    buf_append_str(out, ",\"code\":");
    if (err->code[0])
        buf_append_json_cstr(out, err->code);
    else
        buf_append_str(out, "null");
    buf_append_str(out, "}}");
}
