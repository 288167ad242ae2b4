/* responses.c: the OpenAI Responses API wire format (responses.h). Pure functions: requests are validated and
 * translated to the canonical chat shape, chat completions and chat deltas become Responses objects and events,
 * and an upstream's own Responses body or stream gives up its usage. */
#include "gateway/usage.h"
#include "gateway/responses.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"

/* ---------- small helpers ---------- */

/* A param path or a name, cut to its buffer (gw_error.param is 64 bytes anyway). */
static void pset(char *b, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pset(char *b, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, n, fmt, ap);
    va_end(ap);
}
#define PSET(b, ...) pset((b), sizeof(b), __VA_ARGS__)

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *get_str(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool absent(const cJSON *v)
{
    return v == NULL || cJSON_IsNull(v);
}

static const char *json_type_name(const cJSON *v)
{
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    return "null";
}

#define DROPPED_MAX 512 /* bytes of the x-agentd-dropped-fields list; "..." ends a list that would pass it */

static void note(struct buf *dropped, const char *what)
{
    if (dropped == NULL)
        return;
    /* bounded, so noting stays linear in the request */
    if (dropped->len >= 3 && memcmp(dropped->data + dropped->len - 3, "...", 3) == 0)
        return;
    size_t n = strlen(what);
    if (n == 0) { /* a member named "" */
        what = "\"\"";
        n = 2;
    }
    const char *p = dropped->data;
    while (p && (p = strstr(p, what)) != NULL) { /* the same name once */
        bool start = p == dropped->data || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ',';
        if (start && end)
            return;
        p += n;
    }
    if (dropped->len)
        buf_append_str(dropped, ", ");
    buf_append_str(dropped, dropped->len + n > DROPPED_MAX ? "..." : what);
}

/* ---------- a set of call ids (linear: one hash insert / look-up per item) ---------- */

struct idset {
    const char **slot;
    size_t cap, n;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void idset_add(struct idset *set, const char *id)
{
    if ((set->n + 1) * 2 > set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 64;
        const char **ns = xcalloc(ncap, sizeof(*ns));
        for (size_t i = 0; i < set->cap; i++)
            if (set->slot[i]) {
                size_t j = hash_str(set->slot[i]) & (ncap - 1);
                while (ns[j])
                    j = (j + 1) & (ncap - 1);
                ns[j] = set->slot[i];
            }
        xfree(set->slot);
        set->slot = ns;
        set->cap = ncap;
    }
    size_t j = hash_str(id) & (set->cap - 1);
    while (set->slot[j]) {
        if (strcmp(set->slot[j], id) == 0)
            return;
        j = (j + 1) & (set->cap - 1);
    }
    set->slot[j] = id;
    set->n++;
}

static bool idset_has(const struct idset *set, const char *id)
{
    if (set->cap == 0)
        return false;
    size_t j = hash_str(id) & (set->cap - 1);
    while (set->slot[j]) {
        if (strcmp(set->slot[j], id) == 0)
            return true;
        j = (j + 1) & (set->cap - 1);
    }
    return false;
}

/* ---------- head: the fields policy needs, without a tree ---------- */

static int bad(struct gw_error *err, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(struct gw_error *err, const char *param, const char *fmt, ...)
{
    gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    if (param)
        snprintf(err->param, sizeof(err->param), "%s", param);
    return -1;
}

int responses_parse_head(const char *body, size_t len, struct responses_head *h, struct gw_error *err)
{
    static const char *const keys[] = {"model", "stream", "store", "max_output_tokens", "previous_response_id",
                                       "input"};
    enum { K_MODEL, K_STREAM, K_STORE, K_MAX, K_PREV, K_INPUT, K_N };
    struct jval f[K_N];
    size_t off = 0;
    const char *msg = NULL;
    memset(h, 0, sizeof(*h));
    h->store = true;
    h->max_output_tokens = -1;
    if (jscan_fields(body, len, keys, f, K_N, &off, &msg) != 0) {
        if (msg && strcmp(msg, "duplicate member") == 0)
            return bad(err, NULL, "a member appears more than once in the request body (duplicate member at byte %zu)",
                       off);
        return bad(err, NULL, "We could not parse the JSON body of your request: %s at byte %zu",
                   msg ? msg : "not a JSON object", off);
    }
    if (f[K_MODEL].type == J_NONE)
        return bad(err, "model", "Missing required parameter: 'model'.");
    struct buf m = BUF_INIT(sizeof(h->model) - 1);
    if (f[K_MODEL].type != J_STRING || jval_str(&f[K_MODEL], &m) != 0 || m.len == 0) {
        buf_free(&m);
        return bad(err, "model", "'model' must be a non-empty string of at most 255 characters.");
    }
    memcpy(h->model, m.data, m.len + 1);
    buf_free(&m);
    if (f[K_STREAM].type != J_NONE && f[K_STREAM].type != J_NULL && jval_bool(&f[K_STREAM], &h->stream) != 0)
        return bad(err, "stream", "Invalid type for 'stream': expected a boolean.");
    if (f[K_STORE].type != J_NONE && f[K_STORE].type != J_NULL && jval_bool(&f[K_STORE], &h->store) != 0)
        return bad(err, "store", "Invalid type for 'store': expected a boolean.");
    if (f[K_MAX].type != J_NONE && f[K_MAX].type != J_NULL) {
        int64_t n;
        if (jval_i64(&f[K_MAX], &n) != 0 || n < 1 || n > 100000000)
            return bad(err, "max_output_tokens", "'max_output_tokens' must be an integer between 1 and 100000000.");
        h->max_output_tokens = n;
    }
    if (f[K_PREV].type != J_NONE && f[K_PREV].type != J_NULL) {
        struct buf p = BUF_INIT(RESPONSES_MAX_ID);
        if (f[K_PREV].type != J_STRING || jval_str(&f[K_PREV], &p) != 0 || p.len == 0) {
            buf_free(&p);
            return bad(err, "previous_response_id",
                       "'previous_response_id' must be a response id (a non-empty string of at most %d characters).",
                       RESPONSES_MAX_ID);
        }
        memcpy(h->previous_response_id, p.data, p.len + 1);
        buf_free(&p);
    }
    if (f[K_INPUT].type != J_NONE && f[K_INPUT].type != J_STRING && f[K_INPUT].type != J_ARRAY)
        return bad(err, "input", "Invalid type for 'input': expected a string or an array of input items.");
    return 0;
}

/* ---------- request -> canonical chat ---------- */

struct xl {
    cJSON *msgs;
    struct buf *dropped;
    struct gw_error *err;
    struct idset calls;
    int nitems;
};

/* Built-in (hosted) tools and the items they produce: run by OpenAI itself, so a chat upstream cannot. */
static const char *const builtin_tools[] = {
    "web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26", "file_search",
    "code_interpreter", "computer_use_preview", "computer_use", "computer", "image_generation", "mcp", "local_shell",
    "shell", "apply_patch", "custom", "namespace", "tool_search", NULL};
static const char *const builtin_items[] = {
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "code_interpreter_call",
    "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
    "mcp_call", "custom_tool_call", "custom_tool_call_output", "tool_search_call", "tool_search_output",
    "compaction", NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static cJSON *last_msg(struct xl *x)
{
    /* cJSON keeps the last element in child->prev: O(1), where counting the list would make translation
     * quadratic */
    return x->msgs->child ? x->msgs->child->prev : NULL;
}

/* One content part of a user/system/developer message -> a chat part (appended to parts) or text. */
static int user_part(struct xl *x, const cJSON *p, const char *param, cJSON *parts)
{
    char pp[64];
    const char *type = get_str(p, "type");
    if (!cJSON_IsObject(p) || type == NULL) {
        PSET(pp, "%s.type", param);
        return bad(x->err, pp, "Invalid content part at '%s': expected an object with a 'type'.", param);
    }
    if (strcmp(type, "input_text") == 0 || strcmp(type, "output_text") == 0 || strcmp(type, "text") == 0) {
        const char *t = get_str(p, "text");
        if (t == NULL) {
            PSET(pp, "%s.text", param);
            return bad(x->err, pp, "Missing required parameter: '%s.text'.", param);
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "type", "text");
        cJSON_AddStringToObject(c, "text", t);
        cJSON_AddItemToArray(parts, c);
        return 0;
    }
    if (strcmp(type, "refusal") == 0) {
        const char *t = get_str(p, "refusal");
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "type", "text");
        cJSON_AddStringToObject(c, "text", t ? t : "");
        cJSON_AddItemToArray(parts, c);
        return 0;
    }
    if (strcmp(type, "input_image") == 0) {
        const char *url = get_str(p, "image_url");
        if (url == NULL) {
            PSET(pp, "%s.image_url", param);
            if (get_str(p, "file_id"))
                return bad(x->err, pp,
                           "input_image with a file_id needs OpenAI's file store; this model's deployment is "
                           "translated: send the image as image_url (a URL or a base64 data URL).");
            return bad(x->err, pp, "Missing required parameter: '%s.image_url'.", param);
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "type", "image_url");
        cJSON *iu = cJSON_AddObjectToObject(c, "image_url");
        cJSON_AddStringToObject(iu, "url", url);
        const char *detail = get_str(p, "detail");
        if (detail)
            cJSON_AddStringToObject(iu, "detail", detail);
        cJSON_AddItemToArray(parts, c);
        return 0;
    }
    if (strcmp(type, "input_file") == 0) {
        const char *data = get_str(p, "file_data");
        if (data == NULL) {
            PSET(pp, "%s.file_data", param);
            return bad(x->err, pp,
                       "input_file needs 'file_data' (a base64 data URL) on this model: file_id and file_url refer "
                       "to OpenAI's file store, which a translated deployment cannot read.");
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "type", "file");
        cJSON *f = cJSON_AddObjectToObject(c, "file");
        cJSON_AddStringToObject(f, "file_data", data);
        const char *name = get_str(p, "filename");
        if (name)
            cJSON_AddStringToObject(f, "filename", name);
        cJSON_AddItemToArray(parts, c);
        return 0;
    }
    if (strcmp(type, "input_audio") == 0) {
        const cJSON *ia = get(p, "input_audio");
        if (!cJSON_IsObject(ia)) {
            PSET(pp, "%s.input_audio", param);
            return bad(x->err, pp, "Missing required parameter: '%s.input_audio'.", param);
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "type", "input_audio");
        cJSON_AddItemToObject(c, "input_audio", cJSON_Duplicate(ia, 1));
        cJSON_AddItemToArray(parts, c);
        return 0;
    }
    PSET(pp, "%s.type", param);
    return bad(x->err, pp,
               "Invalid value: '%.64s'. Supported values are: 'input_text', 'input_image', 'input_file', "
               "'input_audio' and, for assistant messages, 'output_text' and 'refusal'.",
               type);
}

/* The text of chat parts (for roles whose chat content is a string). */
static char *parts_text(const cJSON *parts, const char *sep)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    const cJSON *p;
    bool first = true;
    cJSON_ArrayForEach(p, parts)
    {
        const char *t = get_str(p, "text");
        if (t == NULL)
            continue;
        if (!first)
            buf_append_str(&b, sep);
        buf_append_str(&b, t);
        first = false;
    }
    return buf_steal(&b, NULL);
}

static int message_item(struct xl *x, const cJSON *it, const char *param)
{
    char pp[64];
    const cJSON *rolev = get(it, "role");
    const char *role = cJSON_IsString(rolev) ? rolev->valuestring : NULL;
    if (role == NULL) {
        PSET(pp, "%s.role", param);
        return bad(x->err, pp, "Missing required parameter: '%s.role'.", param);
    }
    bool assistant = strcmp(role, "assistant") == 0;
    bool system = strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
    if (!assistant && !system && strcmp(role, "user") != 0) {
        PSET(pp, "%s.role", param);
        return bad(x->err, pp,
                   "Invalid value: '%.64s'. Supported values are: 'assistant', 'system', 'developer', and 'user'.",
                   role);
    }
    const cJSON *content = get(it, "content");
    PSET(pp, "%s.content", param);
    if (content == NULL)
        return bad(x->err, pp, "Missing required parameter: '%s.content'.", param);
    if (!cJSON_IsString(content) && !cJSON_IsArray(content))
        return bad(x->err, pp, "Invalid type for '%s.content': expected a string or an array of content parts, but got %s instead.",
                   param, json_type_name(content));
    cJSON *parts = NULL;
    if (cJSON_IsArray(content)) {
        parts = cJSON_CreateArray();
        const cJSON *p;
        int j = 0;
        cJSON_ArrayForEach(p, content)
        {
            char ppp[64];
            PSET(ppp, "%s.content[%d]", param, j++);
            const char *type = get_str(p, "type");
            if (!assistant && type && (strcmp(type, "output_text") == 0 || strcmp(type, "refusal") == 0)) {
                cJSON_Delete(parts);
                PSET(pp, "%s.type", ppp);
                return bad(x->err, pp, "Invalid value: '%s'. '%s' parts belong to assistant messages.", type, type);
            }
            if (user_part(x, p, ppp, parts) != 0) {
                cJSON_Delete(parts);
                return -1;
            }
        }
    }
    if (assistant) {
        char *text = parts ? parts_text(parts, "") : xstrdup(content->valuestring);
        cJSON_Delete(parts);
        /* function calls that follow it join this message (function_call_item) */
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", text);
        xfree(text);
        cJSON_AddItemToArray(x->msgs, m);
        return 0;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    if (parts == NULL) {
        cJSON_AddStringToObject(m, "content", content->valuestring);
    } else if (system) {
        char *text = parts_text(parts, "\n");
        cJSON_AddStringToObject(m, "content", text);
        xfree(text);
        cJSON_Delete(parts);
    } else {
        cJSON_AddItemToObject(m, "content", parts);
    }
    cJSON_AddItemToArray(x->msgs, m);
    return 0;
}

static int call_id_of(struct xl *x, const cJSON *it, const char *param, const char **out)
{
    char pp[64];
    PSET(pp, "%s.call_id", param);
    const cJSON *v = get(it, "call_id");
    if (v == NULL)
        return bad(x->err, pp, "Missing required parameter: '%s.call_id'.", param);
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) > RESPONSES_MAX_ID)
        return bad(x->err, pp, "Invalid '%s.call_id': expected a non-empty string of at most %d characters.", param,
                   RESPONSES_MAX_ID);
    *out = v->valuestring;
    return 0;
}

static int function_call_item(struct xl *x, const cJSON *it, const char *param)
{
    char pp[64];
    const char *call_id;
    if (call_id_of(x, it, param, &call_id) != 0)
        return -1;
    const char *name = get_str(it, "name");
    if (name == NULL || name[0] == '\0') {
        PSET(pp, "%s.name", param);
        return bad(x->err, pp, "Missing required parameter: '%s.name'.", param);
    }
    const cJSON *args = get(it, "arguments");
    if (!cJSON_IsString(args)) {
        PSET(pp, "%s.arguments", param);
        return bad(x->err, pp, "Missing required parameter: '%s.arguments' (a string of JSON).", param);
    }
    cJSON *last = last_msg(x);
    cJSON *tcs = NULL;
    const char *lrole = get_str(last, "role");
    if (lrole && strcmp(lrole, "assistant") == 0) {
        tcs = (cJSON *)get(last, "tool_calls");
        if (tcs == NULL)
            tcs = cJSON_AddArrayToObject(last, "tool_calls");
    } else {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddNullToObject(m, "content");
        tcs = cJSON_AddArrayToObject(m, "tool_calls");
        cJSON_AddItemToArray(x->msgs, m);
    }
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "id", call_id);
    cJSON_AddStringToObject(tc, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "name", name);
    cJSON_AddStringToObject(fn, "arguments", args->valuestring);
    cJSON_AddItemToArray(tcs, tc);
    return 0;
}

static int function_output_item(struct xl *x, const cJSON *it, const char *param)
{
    char pp[64];
    const char *call_id;
    if (call_id_of(x, it, param, &call_id) != 0)
        return -1;
    if (!idset_has(&x->calls, call_id)) {
        PSET(pp, "%s.call_id", param);
        return bad(x->err, pp,
                   "No tool call found for function call output with call_id %.128s (no function_call item with "
                   "that call_id in the input or in the previous response).",
                   call_id);
    }
    const cJSON *out = get(it, "output");
    PSET(pp, "%s.output", param);
    if (out == NULL)
        return bad(x->err, pp, "Missing required parameter: '%s.output'.", param);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "tool");
    cJSON_AddStringToObject(m, "tool_call_id", call_id);
    if (cJSON_IsString(out)) {
        cJSON_AddStringToObject(m, "content", out->valuestring);
    } else if (cJSON_IsArray(out)) {
        cJSON *parts = cJSON_CreateArray();
        const cJSON *p;
        int j = 0;
        cJSON_ArrayForEach(p, out)
        {
            char ppp[64];
            PSET(ppp, "%s.output[%d]", param, j++);
            const char *type = get_str(p, "type");
            if (type && strcmp(type, "input_text") != 0) {
                note(x->dropped, "function_call_output.output(non-text parts)");
                continue;
            }
            if (user_part(x, p, ppp, parts) != 0) {
                cJSON_Delete(parts);
                cJSON_Delete(m);
                return -1;
            }
        }
        char *text = parts_text(parts, "\n");
        cJSON_AddStringToObject(m, "content", text);
        xfree(text);
        cJSON_Delete(parts);
    } else {
        cJSON_Delete(m);
        return bad(x->err, pp, "Invalid type for '%s.output': expected a string or an array of content parts, but got %s instead.",
                   param, json_type_name(out));
    }
    cJSON_AddItemToArray(x->msgs, m);
    return 0;
}

static int item_to_chat(struct xl *x, const cJSON *it, const char *param)
{
    char pp[64];
    if (!cJSON_IsObject(it))
        return bad(x->err, param, "Invalid type for '%s': expected an input item object, but got %s instead.", param,
                   json_type_name(it));
    const cJSON *tv = get(it, "type");
    if (tv != NULL && !cJSON_IsString(tv)) {
        PSET(pp, "%s.type", param);
        return bad(x->err, pp, "Invalid type for '%s.type': expected a string.", param);
    }
    const char *type = tv ? tv->valuestring : "message";
    if (strcmp(type, "message") == 0)
        return message_item(x, it, param);
    if (strcmp(type, "function_call") == 0)
        return function_call_item(x, it, param);
    if (strcmp(type, "function_call_output") == 0)
        return function_output_item(x, it, param);
    if (strcmp(type, "reasoning") == 0) {
        /* passed back by reasoning models' clients; a translated upstream cannot read OpenAI's reasoning */
        note(x->dropped, "input.reasoning");
        return 0;
    }
    if (in_list(type, builtin_items)) {
        char n[96];
        PSET(n, "input.%s", type);
        note(x->dropped, n);
        return 0;
    }
    PSET(pp, "%s.type", param);
    if (strcmp(type, "item_reference") == 0)
        return bad(x->err, pp,
                   "item_reference items are not supported on this model (its deployment is translated): send the "
                   "item itself, or continue with previous_response_id.");
    return bad(x->err, pp,
               "Invalid value: '%.64s'. Supported values are: 'message', 'function_call', 'function_call_output', "
               "'reasoning', and the built-in tool call items.",
               type);
}

/* First pass over history + input: the call ids of every function_call (an output may only answer one of
 * them), the item count bound, and the type of the input. */
static int collect_calls(struct xl *x, const cJSON *items)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        if (++x->nitems > RESPONSES_MAX_ITEMS)
            return bad(x->err, "input",
                       "The conversation has more than %d input items (previous responses included): too large.",
                       RESPONSES_MAX_ITEMS);
        const char *type = get_str(it, "type");
        const char *cid = get_str(it, "call_id");
        if (type && cid && strcmp(type, "function_call") == 0)
            idset_add(&x->calls, cid);
    }
    return 0;
}

static int tools_to_chat(struct xl *x, const cJSON *tools, cJSON *canon, struct idset *names)
{
    if (absent(tools))
        return 0;
    if (!cJSON_IsArray(tools))
        return bad(x->err, "tools", "Invalid type for 'tools': expected an array of tools, but got %s instead.",
                   json_type_name(tools));
    if (cJSON_GetArraySize(tools) > RESPONSES_MAX_TOOLS)
        return bad(x->err, "tools", "'tools' has more than %d tools.", RESPONSES_MAX_TOOLS);
    cJSON *out = cJSON_CreateArray();
    const cJSON *t;
    int i = 0;
    cJSON_ArrayForEach(t, tools)
    {
        char pp[64];
        PSET(pp, "tools[%d]", i);
        const char *type = get_str(t, "type");
        if (!cJSON_IsObject(t) || type == NULL) {
            cJSON_Delete(out);
            PSET(pp, "tools[%d].type", i);
            return bad(x->err, pp, "Missing required parameter: 'tools[%d].type'.", i);
        }
        i++;
        if (strcmp(type, "function") != 0) {
            /* hosted tools (coding agents send several on every request) and anything newer: not runnable here */
            char n[96];
            PSET(n, "tools.%.64s", type);
            note(x->dropped, n);
            continue;
        }
        const cJSON *name = get(t, "name");
        if (!cJSON_IsString(name) || name->valuestring[0] == '\0' || strlen(name->valuestring) > 128) {
            cJSON_Delete(out);
            PSET(pp, "tools[%d].name", i - 1);
            return bad(x->err, pp, "Missing required parameter: 'tools[%d].name' (a string of 1 to 128 characters).",
                       i - 1);
        }
        const cJSON *params = get(t, "parameters");
        if (!absent(params) && !cJSON_IsObject(params)) {
            cJSON_Delete(out);
            PSET(pp, "tools[%d].parameters", i - 1);
            return bad(x->err, pp, "Invalid type for 'tools[%d].parameters': expected a JSON schema object.", i - 1);
        }
        cJSON *ct = cJSON_CreateObject();
        cJSON_AddStringToObject(ct, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(ct, "function");
        cJSON_AddStringToObject(fn, "name", name->valuestring);
        const char *desc = get_str(t, "description");
        if (desc)
            cJSON_AddStringToObject(fn, "description", desc);
        if (cJSON_IsObject(params))
            cJSON_AddItemToObject(fn, "parameters", cJSON_Duplicate(params, 1));
        const cJSON *strict = get(t, "strict");
        if (cJSON_IsBool(strict))
            cJSON_AddBoolToObject(fn, "strict", cJSON_IsTrue(strict));
        cJSON_AddItemToArray(out, ct);
        idset_add(names, name->valuestring);
    }
    if (cJSON_GetArraySize(out) > 0)
        cJSON_AddItemToObject(canon, "tools", out);
    else
        cJSON_Delete(out);
    return 0;
}

static int tool_choice_to_chat(struct xl *x, const cJSON *tc, cJSON *canon, const struct idset *names)
{
    if (absent(tc))
        return 0;
    bool have_tools = get(canon, "tools") != NULL;
    if (cJSON_IsString(tc)) {
        const char *s = tc->valuestring;
        if (strcmp(s, "none") && strcmp(s, "auto") && strcmp(s, "required"))
            return bad(x->err, "tool_choice",
                       "Invalid value: '%.64s'. Supported values are: 'none', 'auto', and 'required'.", s);
        if (have_tools)
            cJSON_AddStringToObject(canon, "tool_choice", s);
        else if (strcmp(s, "required") == 0)
            note(x->dropped, "tool_choice");
        return 0;
    }
    const char *type = get_str(tc, "type");
    if (!cJSON_IsObject(tc) || type == NULL)
        return bad(x->err, "tool_choice",
                   "Invalid 'tool_choice': expected 'none', 'auto', 'required' or an object with a 'type'.");
    if (strcmp(type, "function") == 0) {
        const char *name = get_str(tc, "name");
        if (name == NULL)
            return bad(x->err, "tool_choice.name", "Missing required parameter: 'tool_choice.name'.");
        if (!idset_has(names, name))
            return bad(x->err, "tool_choice.name", "tool_choice names the function '%.128s', which is not in 'tools'.",
                       name);
        cJSON *o = cJSON_AddObjectToObject(canon, "tool_choice");
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name", name);
        return 0;
    }
    if (strcmp(type, "allowed_tools") == 0) {
        const char *mode = get_str(tc, "mode");
        if (mode == NULL || (strcmp(mode, "auto") && strcmp(mode, "required")))
            return bad(x->err, "tool_choice.mode", "Invalid value for 'tool_choice.mode': expected 'auto' or 'required'.");
        note(x->dropped, "tool_choice.tools");
        if (have_tools)
            cJSON_AddStringToObject(canon, "tool_choice", mode);
        return 0;
    }
    if (!in_list(type, builtin_tools))
        return bad(x->err, "tool_choice.type",
                   "Invalid value: '%.64s'. Supported values are: 'function', 'allowed_tools', and the built-in tool "
                   "types.",
                   type);
    /* forcing a built-in tool: the client would get something else than it asked for */
    return bad(x->err, "tool_choice",
               "tool_choice forces the built-in tool '%.64s', which this model's deployment cannot run (it is "
               "translated to a chat API): only function tools can be forced here.",
               type);
}

static int text_to_chat(struct xl *x, const cJSON *text, cJSON *canon)
{
    if (absent(text))
        return 0;
    if (!cJSON_IsObject(text))
        return bad(x->err, "text", "Invalid type for 'text': expected an object.");
    const cJSON *verb = get(text, "verbosity");
    if (!absent(verb))
        note(x->dropped, "text.verbosity");
    const cJSON *fmt = get(text, "format");
    if (absent(fmt))
        return 0;
    const char *type = get_str(fmt, "type");
    if (!cJSON_IsObject(fmt) || type == NULL)
        return bad(x->err, "text.format.type", "Missing required parameter: 'text.format.type'.");
    if (strcmp(type, "text") == 0)
        return 0;
    if (strcmp(type, "json_object") == 0) {
        cJSON_AddStringToObject(cJSON_AddObjectToObject(canon, "response_format"), "type", "json_object");
        return 0;
    }
    if (strcmp(type, "json_schema") != 0)
        return bad(x->err, "text.format.type",
                   "Invalid value: '%.64s'. Supported values are: 'text', 'json_object', and 'json_schema'.", type);
    const char *name = get_str(fmt, "name");
    if (name == NULL || name[0] == '\0')
        return bad(x->err, "text.format.name", "Missing required parameter: 'text.format.name'.");
    const cJSON *schema = get(fmt, "schema");
    if (!cJSON_IsObject(schema))
        return bad(x->err, "text.format.schema", "Missing required parameter: 'text.format.schema' (an object).");
    cJSON *rf = cJSON_AddObjectToObject(canon, "response_format");
    cJSON_AddStringToObject(rf, "type", "json_schema");
    cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
    cJSON_AddStringToObject(js, "name", name);
    const char *desc = get_str(fmt, "description");
    if (desc)
        cJSON_AddStringToObject(js, "description", desc);
    cJSON_AddItemToObject(js, "schema", cJSON_Duplicate(schema, 1));
    const cJSON *strict = get(fmt, "strict");
    if (cJSON_IsBool(strict))
        cJSON_AddBoolToObject(js, "strict", cJSON_IsTrue(strict));
    return 0;
}

static int number_in(struct xl *x, const cJSON *req, const char *k, double lo, double hi, cJSON *canon)
{
    const cJSON *v = get(req, k);
    if (absent(v))
        return 0;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return bad(x->err, k, "'%s' must be a number between %g and %g.", k, lo, hi);
    cJSON_AddNumberToObject(canon, k, v->valuedouble);
    return 0;
}

static int metadata_check(struct xl *x, const cJSON *md)
{
    if (absent(md))
        return 0;
    if (!cJSON_IsObject(md))
        return bad(x->err, "metadata", "Invalid type for 'metadata': expected an object of strings.");
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, md)
    {
        if (++n > 16)
            return bad(x->err, "metadata", "'metadata' has more than 16 pairs.");
        if (strlen(v->string) > 64)
            return bad(x->err, "metadata", "'metadata' keys are at most 64 characters.");
        if (!cJSON_IsString(v) || strlen(v->valuestring) > 512)
            return bad(x->err, "metadata", "'metadata' values are strings of at most 512 characters.");
    }
    return 0;
}

/* Top-level members: consumed here, handled by agentd, or ignored and noted. */
static const char *const known_top[] = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
    "max_output_tokens", "metadata", "store", "include", "prompt_cache_key", "previous_response_id", "stream",
    "stream_options", "temperature", "top_p", "user", "safety_identifier", "truncation", "background",
    "conversation", "prompt", "service_tier", "top_logprobs", "max_tool_calls", "prompt_cache_retention", NULL};

cJSON *responses_to_chat(const cJSON *req, const cJSON *history, struct buf *dropped, struct gw_error *err)
{
    struct xl x = {.dropped = dropped, .err = err};
    struct idset names = {0};
    cJSON *canon = NULL;
    if (!cJSON_IsObject(req)) {
        bad(err, NULL, "The request body must be a JSON object.");
        return NULL;
    }
    const char *model = get_str(req, "model");
    if (model == NULL) {
        bad(err, "model", "Missing required parameter: 'model'.");
        return NULL;
    }
    const cJSON *v;
    cJSON_ArrayForEach(v, req)
    {
        if (!in_list(v->string, known_top)) {
            char n[96];
            PSET(n, "%.64s", v->string);
            note(dropped, n);
        }
    }
    /* things only OpenAI's own service holds */
    if (cJSON_IsTrue(get(req, "background"))) {
        bad(err, "background", "background responses are not supported on this model: its deployment is translated "
                               "to a chat API. Send the request without 'background'.");
        return NULL;
    }
    if (!absent(get(req, "conversation"))) {
        bad(err, "conversation", "'conversation' refers to OpenAI's Conversations API, which this model's deployment "
                                 "does not have: continue with previous_response_id.");
        return NULL;
    }
    if (!absent(get(req, "prompt"))) {
        bad(err, "prompt", "'prompt' (a stored prompt template) lives on OpenAI's service, which this model's "
                           "deployment is not: send the instructions and input instead.");
        return NULL;
    }
    const cJSON *input = get(req, "input");
    if (input != NULL && !cJSON_IsString(input) && !cJSON_IsArray(input)) {
        bad(err, "input", "Invalid type for 'input': expected a string or an array of input items, but got %s instead.",
            json_type_name(input));
        return NULL;
    }
    if (history != NULL && !cJSON_IsArray(history)) {
        bad(err, "previous_response_id", "the stored conversation of previous_response_id is unreadable.");
        return NULL;
    }
    const cJSON *instructions = get(req, "instructions");
    if (!absent(instructions) && !cJSON_IsString(instructions)) {
        bad(err, "instructions", "Invalid type for 'instructions': expected a string.");
        return NULL;
    }
    if (metadata_check(&x, get(req, "metadata")) != 0)
        return NULL;
    const cJSON *inc = get(req, "include");
    if (!absent(inc)) {
        if (!cJSON_IsArray(inc)) {
            bad(err, "include", "Invalid type for 'include': expected an array of strings.");
            return NULL;
        }
        const cJSON *s;
        cJSON_ArrayForEach(s, inc)
        {
            if (!cJSON_IsString(s)) {
                bad(err, "include", "Invalid type for 'include': expected an array of strings.");
                return NULL;
            }
        }
        if (cJSON_GetArraySize(inc) > 0)
            note(dropped, "include");
    }
    static const char *const str_fields[] = {"prompt_cache_key", "user", "safety_identifier", "service_tier",
                                             "truncation", "prompt_cache_retention", NULL};
    for (size_t i = 0; str_fields[i]; i++) {
        const cJSON *s = get(req, str_fields[i]);
        if (!absent(s) && !cJSON_IsString(s)) {
            bad(err, str_fields[i], "Invalid type for '%s': expected a string.", str_fields[i]);
            return NULL;
        }
    }
    const cJSON *ptc = get(req, "parallel_tool_calls");
    if (!absent(ptc) && !cJSON_IsBool(ptc)) {
        bad(err, "parallel_tool_calls", "Invalid type for 'parallel_tool_calls': expected a boolean.");
        return NULL;
    }

    canon = cJSON_CreateObject();
    cJSON_AddStringToObject(canon, "model", model);
    x.msgs = cJSON_AddArrayToObject(canon, "messages");
    if (cJSON_IsString(instructions) && instructions->valuestring[0]) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", instructions->valuestring);
        cJSON_AddItemToArray(x.msgs, m);
    }
    if (history && collect_calls(&x, history) != 0)
        goto fail;
    if (cJSON_IsArray(input) && collect_calls(&x, input) != 0)
        goto fail;
    if (history) {
        int i = 0;
        cJSON_ArrayForEach(v, history)
        {
            char pp[64];
            PSET(pp, "previous_response_id[%d]", i++);
            if (item_to_chat(&x, v, pp) != 0)
                goto fail;
        }
    }
    if (cJSON_IsString(input)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(x.msgs, m);
    } else if (cJSON_IsArray(input)) {
        int i = 0;
        cJSON_ArrayForEach(v, input)
        {
            char pp[64];
            PSET(pp, "input[%d]", i++);
            if (item_to_chat(&x, v, pp) != 0)
                goto fail;
        }
    }
    bool any = false;
    cJSON_ArrayForEach(v, x.msgs)
    {
        const char *r = get_str(v, "role");
        if (r && strcmp(r, "system") && strcmp(r, "developer"))
            any = true;
    }
    if (!any) {
        bad(err, "input", "'input' must contain at least one message or item (instructions alone are not a turn).");
        goto fail;
    }
    if (tools_to_chat(&x, get(req, "tools"), canon, &names) != 0 ||
        tool_choice_to_chat(&x, get(req, "tool_choice"), canon, &names) != 0 ||
        text_to_chat(&x, get(req, "text"), canon) != 0)
        goto fail;
    if (cJSON_IsBool(ptc) && get(canon, "tools"))
        cJSON_AddBoolToObject(canon, "parallel_tool_calls", cJSON_IsTrue(ptc));
    const cJSON *reasoning = get(req, "reasoning");
    if (!absent(reasoning)) {
        if (!cJSON_IsObject(reasoning)) {
            bad(err, "reasoning", "Invalid type for 'reasoning': expected an object.");
            goto fail;
        }
        const cJSON *effort = get(reasoning, "effort");
        if (!absent(effort)) {
            static const char *const efforts[] = {"none", "minimal", "low", "medium", "high", "xhigh", NULL};
            if (!cJSON_IsString(effort) || !in_list(effort->valuestring, efforts)) {
                bad(err, "reasoning.effort",
                    "Invalid value for 'reasoning.effort': expected one of 'none', 'minimal', 'low', 'medium', "
                    "'high', 'xhigh'.");
                goto fail;
            }
            cJSON_AddStringToObject(canon, "reasoning_effort", effort->valuestring);
        }
        if (!absent(get(reasoning, "summary")) || !absent(get(reasoning, "generate_summary")))
            note(dropped, "reasoning.summary");
    }
    const cJSON *mot = get(req, "max_output_tokens");
    if (!absent(mot)) {
        if (!cJSON_IsNumber(mot) || mot->valuedouble < 1 || mot->valuedouble > 100000000 ||
            mot->valuedouble != floor(mot->valuedouble)) {
            bad(err, "max_output_tokens", "'max_output_tokens' must be an integer between 1 and 100000000.");
            goto fail;
        }
        cJSON_AddNumberToObject(canon, "max_tokens", mot->valuedouble);
    }
    if (number_in(&x, req, "temperature", 0, 2, canon) != 0 || number_in(&x, req, "top_p", 0, 1, canon) != 0)
        goto fail;
    const char *user = get_str(req, "safety_identifier");
    if (user == NULL)
        user = get_str(req, "user");
    if (user)
        cJSON_AddStringToObject(canon, "user", user);
    static const char *const ignored[] = {"top_logprobs", "max_tool_calls", "service_tier", "prompt_cache_retention",
                                          NULL};
    for (size_t i = 0; ignored[i]; i++)
        if (!absent(get(req, ignored[i])))
            note(dropped, ignored[i]);
    const cJSON *stream = get(req, "stream");
    if (cJSON_IsTrue(stream))
        cJSON_AddBoolToObject(canon, "stream", 1);
    xfree(x.calls.slot);
    xfree(names.slot);
    return canon;
fail:
    xfree(x.calls.slot);
    xfree(names.slot);
    cJSON_Delete(canon);
    return NULL;
}

cJSON *responses_input_items(const cJSON *req)
{
    const cJSON *input = get(req, "input");
    if (cJSON_IsArray(input))
        return cJSON_Duplicate(input, 1);
    cJSON *a = cJSON_CreateArray();
    if (cJSON_IsString(input)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "type", "message");
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(a, m);
    }
    return a;
}

/* ---------- the Response object ---------- */

static void add_copy_or(cJSON *o, const char *k, const cJSON *v, cJSON *dflt)
{
    if (!absent(v)) {
        cJSON_AddItemToObject(o, k, cJSON_Duplicate(v, 1));
        cJSON_Delete(dflt);
    } else {
        cJSON_AddItemToObject(o, k, dflt ? dflt : cJSON_CreateNull());
    }
}

cJSON *responses_skeleton(const cJSON *req, const char *id, int64_t created, const char *model)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "object", "response");
    cJSON_AddNumberToObject(r, "created_at", (double)created);
    cJSON_AddStringToObject(r, "status", "in_progress");
    cJSON_AddBoolToObject(r, "background", 0);
    cJSON_AddNullToObject(r, "error");
    cJSON_AddNullToObject(r, "incomplete_details");
    add_copy_or(r, "instructions", get(req, "instructions"), NULL);
    add_copy_or(r, "max_output_tokens", get(req, "max_output_tokens"), NULL);
    add_copy_or(r, "max_tool_calls", get(req, "max_tool_calls"), NULL);
    cJSON_AddStringToObject(r, "model", model);
    cJSON_AddArrayToObject(r, "output");
    add_copy_or(r, "parallel_tool_calls", get(req, "parallel_tool_calls"), cJSON_CreateTrue());
    add_copy_or(r, "previous_response_id", get(req, "previous_response_id"), NULL);
    add_copy_or(r, "prompt_cache_key", get(req, "prompt_cache_key"), NULL);
    const cJSON *rq = get(req, "reasoning");
    cJSON *reasoning = cJSON_AddObjectToObject(r, "reasoning");
    add_copy_or(reasoning, "effort", get(rq, "effort"), NULL);
    add_copy_or(reasoning, "summary", get(rq, "summary"), NULL);
    add_copy_or(r, "safety_identifier", get(req, "safety_identifier"), NULL);
    cJSON_AddStringToObject(r, "service_tier", "default");
    const cJSON *store = get(req, "store");
    cJSON_AddBoolToObject(r, "store", absent(store) || cJSON_IsTrue(store));
    add_copy_or(r, "temperature", get(req, "temperature"), cJSON_CreateNumber(1));
    cJSON *text = cJSON_AddObjectToObject(r, "text");
    const cJSON *tq = get(req, "text");
    cJSON *deffmt = cJSON_CreateObject();
    cJSON_AddStringToObject(deffmt, "type", "text");
    add_copy_or(text, "format", get(tq, "format"), deffmt);
    add_copy_or(text, "verbosity", get(tq, "verbosity"), cJSON_CreateString("medium"));
    add_copy_or(r, "tool_choice", get(req, "tool_choice"), cJSON_CreateString("auto"));
    add_copy_or(r, "tools", get(req, "tools"), cJSON_CreateArray());
    add_copy_or(r, "top_logprobs", get(req, "top_logprobs"), cJSON_CreateNumber(0));
    add_copy_or(r, "top_p", get(req, "top_p"), cJSON_CreateNumber(1));
    add_copy_or(r, "truncation", get(req, "truncation"), cJSON_CreateString("disabled"));
    cJSON_AddNullToObject(r, "usage");
    add_copy_or(r, "user", get(req, "user"), NULL);
    add_copy_or(r, "metadata", get(req, "metadata"), cJSON_CreateObject());
    return r;
}

cJSON *responses_usage_json(const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", (double)u->input);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "input_tokens_details"), "cached_tokens",
                            (double)u->cached_input);
    cJSON_AddNumberToObject(o, "output_tokens", (double)u->output);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "output_tokens_details"), "reasoning_tokens",
                            (double)u->reasoning);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->input + u->output));
    return o;
}

static void replace(cJSON *o, const char *k, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(o, k))
        cJSON_ReplaceItemInObjectCaseSensitive(o, k, v);
    else
        cJSON_AddItemToObject(o, k, v);
}

void responses_finish(cJSON *resp, enum finish f, const struct usage *u)
{
    const char *reason = f == FINISH_LENGTH ? "max_output_tokens" : f == FINISH_CONTENT_FILTER ? "content_filter" : NULL;
    replace(resp, "status", cJSON_CreateString(reason ? "incomplete" : "completed"));
    if (reason) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "reason", reason);
        replace(resp, "incomplete_details", d);
    }
    replace(resp, "usage", u && u->known ? responses_usage_json(u) : cJSON_CreateNull());
}

/* "resp_XYZ" -> "XYZ": item ids share the response's suffix. */
static const char *id_suffix(const char *id)
{
    return strncmp(id, "resp_", 5) == 0 ? id + 5 : id;
}

static cJSON *message_output(const char *id, const char *text, const char *refusal, bool done)
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

static cJSON *call_output(const char *id, const char *call_id, const char *name, const char *args, bool done)
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

cJSON *responses_from_chat(const cJSON *req, const cJSON *completion, const struct usage *u, const char *id,
                           int64_t created, const char *model)
{
    cJSON *r = responses_skeleton(req, id, created, model);
    cJSON *output = cJSON_GetObjectItemCaseSensitive(r, "output");
    const cJSON *choice = cJSON_GetArrayItem(get(completion, "choices"), 0);
    const cJSON *msg = get(choice, "message");
    const char *sfx = id_suffix(id);
    char iid[RESPONSES_MAX_ID + 64];
    const char *text = get_str(msg, "content");
    const char *refusal = get_str(msg, "refusal");
    if ((text && text[0]) || refusal) {
        snprintf(iid, sizeof(iid), "msg_%s", sfx);
        cJSON_AddItemToArray(output, message_output(iid, text && text[0] ? text : NULL, refusal, true));
    }
    const cJSON *tc;
    int n = 0;
    cJSON_ArrayForEach(tc, get(msg, "tool_calls"))
    {
        const cJSON *fn = get(tc, "function");
        const char *args = get_str(fn, "arguments");
        snprintf(iid, sizeof(iid), "fc_%s_%d", sfx, n++);
        cJSON_AddItemToArray(output, call_output(iid, get_str(tc, "id") ? get_str(tc, "id") : iid,
                                                 get_str(fn, "name") ? get_str(fn, "name") : "", args ? args : "{}",
                                                 true));
    }
    const char *fr = get_str(choice, "finish_reason");
    responses_finish(r, fr ? gw_finish_from_openai(fr) : FINISH_STOP, u);
    return r;
}

void responses_append_output(cJSON *history, const cJSON *resp)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, get(resp, "output"))
    {
        const char *type = get_str(it, "type");
        if (type && (strcmp(type, "message") == 0 || strcmp(type, "function_call") == 0))
            cJSON_AddItemToArray(history, cJSON_Duplicate(it, 1));
    }
}

/* ---------- streaming encoder ---------- */

/* Every event is written straight into the output from the stream's state, as the chat stream writers do: no
 * tree is built or printed per event. The Response object's fixed part (every field but status, error,
 * incomplete_details, output and usage, i.e. the request parameters it echoes) is written once, when the stream
 * starts, from the skeleton; each response.* event copies it and splices the variable fields in. The tree of
 * the final Response is built only when asked for (responses_stream_response: the store). The events mean
 * exactly what the tree-built ones did (tests/unit/gateway/test_responses_stream.c compares both). */

struct rs_tool {
    int index;        /* chat tool_index */
    int output_index;
    char *item_id;
    char *call_id, *name;
    struct buf args;
    bool open;
};

struct rs_msg {
    char id[RESPONSES_MAX_ID + 64];
    struct buf text;
};

/* The Response's fields that change as the stream goes (spliced into the fixed part). */
enum rs_var { RV_STATUS, RV_ERROR, RV_INCOMPLETE, RV_OUTPUT, RV_USAGE, RV_COUNT };
static const char *const rs_var_key[RV_COUNT] = {"status", "error", "incomplete_details", "output", "usage"};

struct rs_item {
    bool tool;        /* tools[ref] or msgs[ref] */
    int ref;
};

struct responses_stream {
    cJSON *resp;      /* the skeleton; completed into the final Response only by responses_stream_response */
    bool resp_final;
    /* responses_stream_start: the request, to build the skeleton only when the final Response is asked for */
    const cJSON *req;
    int64_t created;
    char *model;
    char id[RESPONSES_MAX_ID + 1]; /* the response id (item ids share its suffix) */
    int64_t seq;
    bool started, ended;
    int next_output;  /* output_index of the next item */
    int text_output;  /* the open message item's output_index; -1: none open */
    struct rs_msg *msgs;
    int nmsg, capmsg;
    struct rs_tool *tools;
    int ntools, captools;
    struct rs_item *items; /* by output_index */
    int capitems;
    enum finish finish;
    struct usage usage;   /* from the deltas */
    /* the Response's variable fields */
    const char *status;   /* "in_progress", "completed", "incomplete", "failed" */
    const char *incomplete_reason; /* NULL: incomplete_details null */
    bool failed;
    char *err_code, *err_message;
    struct usage final_usage; /* known: usage written */
    /* the fixed part: frag with the variable fields' places (the value of seg[i].var goes at seg[i].at) */
    struct buf frag;
    struct {
        size_t at;
        enum rs_var var;
    } seg[RV_COUNT];
    int nseg;
};

static void write_json_number(struct buf *out, double d)
{
    if (!isfinite(d)) { /* as cJSON prints it */
        buf_append_str(out, "null");
        return;
    }
    if (d == floor(d) && fabs(d) < 9007199254740992.0) { /* 2^53: exact as an integer */
        buf_append_i64(out, (int64_t)d);
        return;
    }
    char tmp[40];
    snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        snprintf(tmp, sizeof(tmp), "%.17g", d);
    buf_append_str(out, tmp);
}

/* A (request) value as JSON, as cJSON_PrintUnformatted would (same values; recursion bounded by cJSON's nesting
 * limit on the parsed request). */
static void write_json_value(struct buf *out, const cJSON *v)
{
    if (cJSON_IsFalse(v))
        buf_append_str(out, "false");
    else if (cJSON_IsTrue(v))
        buf_append_str(out, "true");
    else if (cJSON_IsNumber(v))
        write_json_number(out, v->valuedouble);
    else if (cJSON_IsString(v))
        buf_append_json_cstr(out, v->valuestring ? v->valuestring : "");
    else if (cJSON_IsRaw(v) && v->valuestring)
        buf_append_str(out, v->valuestring);
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);
        buf_append_char(out, obj ? '{' : '[');
        const cJSON *c;
        bool first = true;
        cJSON_ArrayForEach(c, v)
        {
            if (!first)
                buf_append_char(out, ',');
            first = false;
            if (obj) {
                buf_append_json_cstr(out, c->string ? c->string : "");
                buf_append_char(out, ':');
            }
            write_json_value(out, c);
        }
        buf_append_char(out, obj ? '}' : ']');
    } else
        buf_append_str(out, "null");
}

static void seg_add(struct responses_stream *s, enum rs_var var)
{
    s->seg[s->nseg].at = s->frag.len;
    s->seg[s->nseg].var = var;
    s->nseg++;
}

struct responses_stream *responses_stream_new(cJSON *skeleton)
{
    struct responses_stream *s = xcalloc(1, sizeof(*s));
    s->resp = skeleton;
    s->seq = -1;
    s->text_output = -1;
    s->status = "in_progress";
    const char *id = get_str(skeleton, "id");
    snprintf(s->id, sizeof(s->id), "%s", id ? id : "");
    /* the fixed part of the Response, once */
    buf_init(&s->frag, BUF_UNBOUNDED);
    buf_append_char(&s->frag, '{');
    bool seen[RV_COUNT] = {false};
    const cJSON *c;
    cJSON_ArrayForEach(c, skeleton)
    {
        if (s->frag.len > 1)
            buf_append_char(&s->frag, ',');
        buf_append_json_cstr(&s->frag, c->string ? c->string : "");
        buf_append_char(&s->frag, ':');
        int var = -1;
        for (int i = 0; i < RV_COUNT && c->string; i++)
            if (!seen[i] && strcmp(c->string, rs_var_key[i]) == 0)
                var = i;
        if (var >= 0) {
            seen[var] = true;
            seg_add(s, (enum rs_var)var);
        } else {
            write_json_value(&s->frag, c);
        }
    }
    for (int i = 0; i < RV_COUNT; i++) /* a skeleton without one of them: at the end, as replace() would */
        if (!seen[i]) {
            if (s->frag.len > 1)
                buf_append_char(&s->frag, ',');
            buf_append_json_cstr(&s->frag, rs_var_key[i]);
            buf_append_char(&s->frag, ':');
            seg_add(s, (enum rs_var)i);
        }
    buf_append_char(&s->frag, '}');
    return s;
}

static void frag_key(struct responses_stream *s, const char *key)
{
    if (s->frag.len > 1)
        buf_append_char(&s->frag, ',');
    buf_append_char(&s->frag, '"');
    buf_append_str(&s->frag, key);
    buf_append_str(&s->frag, "\":");
}

/* The request's value, or dflt (JSON text) when it is absent or null: as add_copy_or */
static void write_value_or(struct buf *out, const cJSON *v, const char *dflt)
{
    if (!absent(v))
        write_json_value(out, v);
    else
        buf_append_str(out, dflt);
}

static void frag_copy_or(struct responses_stream *s, const char *key, const cJSON *v, const char *dflt)
{
    frag_key(s, key);
    write_value_or(&s->frag, v, dflt);
}

static void frag_var(struct responses_stream *s, const char *key, enum rs_var var)
{
    frag_key(s, key);
    seg_add(s, var);
}

/* The fixed part written from the request, field by field as responses_skeleton builds it (same order, same
 * defaults: test_responses_stream compares the two). */
struct responses_stream *responses_stream_start(const cJSON *req, const char *id, int64_t created,
                                                const char *model)
{
    struct responses_stream *s = xcalloc(1, sizeof(*s));
    s->req = req;
    s->created = created;
    s->model = xstrdup(model);
    s->seq = -1;
    s->text_output = -1;
    s->status = "in_progress";
    snprintf(s->id, sizeof(s->id), "%s", id);
    struct buf *f = &s->frag;
    buf_init(f, BUF_UNBOUNDED);
    buf_append_char(f, '{');
    frag_key(s, "id");
    buf_append_json_cstr(f, id);
    frag_key(s, "object");
    buf_append_str(f, "\"response\"");
    frag_key(s, "created_at");
    write_json_number(f, (double)created);
    frag_var(s, "status", RV_STATUS);
    frag_key(s, "background");
    buf_append_str(f, "false");
    frag_var(s, "error", RV_ERROR);
    frag_var(s, "incomplete_details", RV_INCOMPLETE);
    frag_copy_or(s, "instructions", get(req, "instructions"), "null");
    frag_copy_or(s, "max_output_tokens", get(req, "max_output_tokens"), "null");
    frag_copy_or(s, "max_tool_calls", get(req, "max_tool_calls"), "null");
    frag_key(s, "model");
    buf_append_json_cstr(f, model);
    frag_var(s, "output", RV_OUTPUT);
    frag_copy_or(s, "parallel_tool_calls", get(req, "parallel_tool_calls"), "true");
    frag_copy_or(s, "previous_response_id", get(req, "previous_response_id"), "null");
    frag_copy_or(s, "prompt_cache_key", get(req, "prompt_cache_key"), "null");
    const cJSON *rq = get(req, "reasoning");
    frag_key(s, "reasoning");
    buf_append_str(f, "{\"effort\":");
    write_value_or(f, get(rq, "effort"), "null");
    buf_append_str(f, ",\"summary\":");
    write_value_or(f, get(rq, "summary"), "null");
    buf_append_char(f, '}');
    frag_copy_or(s, "safety_identifier", get(req, "safety_identifier"), "null");
    frag_key(s, "service_tier");
    buf_append_str(f, "\"default\"");
    const cJSON *store = get(req, "store");
    frag_key(s, "store");
    buf_append_str(f, absent(store) || cJSON_IsTrue(store) ? "true" : "false");
    frag_copy_or(s, "temperature", get(req, "temperature"), "1");
    const cJSON *tq = get(req, "text");
    frag_key(s, "text");
    buf_append_str(f, "{\"format\":");
    write_value_or(f, get(tq, "format"), "{\"type\":\"text\"}");
    buf_append_str(f, ",\"verbosity\":");
    write_value_or(f, get(tq, "verbosity"), "\"medium\"");
    buf_append_char(f, '}');
    frag_copy_or(s, "tool_choice", get(req, "tool_choice"), "\"auto\"");
    frag_copy_or(s, "tools", get(req, "tools"), "[]");
    frag_copy_or(s, "top_logprobs", get(req, "top_logprobs"), "0");
    frag_copy_or(s, "top_p", get(req, "top_p"), "1");
    frag_copy_or(s, "truncation", get(req, "truncation"), "\"disabled\"");
    frag_var(s, "usage", RV_USAGE);
    frag_copy_or(s, "user", get(req, "user"), "null");
    frag_copy_or(s, "metadata", get(req, "metadata"), "{}");
    buf_append_char(f, '}');
    return s;
}

void responses_stream_free(struct responses_stream *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->ntools; i++) {
        xfree(s->tools[i].item_id);
        xfree(s->tools[i].call_id);
        xfree(s->tools[i].name);
        buf_free(&s->tools[i].args);
    }
    for (int i = 0; i < s->nmsg; i++)
        buf_free(&s->msgs[i].text);
    xfree(s->msgs);
    xfree(s->items);
    xfree(s->tools);
    xfree(s->err_code);
    xfree(s->err_message);
    buf_free(&s->frag);
    cJSON_Delete(s->resp);
    xfree(s->model);
    xfree(s);
}

int64_t responses_stream_seq(const struct responses_stream *s)
{
    return s->seq;
}

/* "event: TYPE\ndata: {"type":"TYPE","sequence_number":N," ... the caller closes with event_end */
static void event_begin(struct responses_stream *s, struct buf *out, const char *type)
{
    s->seq++;
    buf_append_str(out, "event: ");
    buf_append_str(out, type);
    buf_append_str(out, "\ndata: {\"type\":\"");
    buf_append_str(out, type);
    buf_append_str(out, "\",\"sequence_number\":");
    buf_append_i64(out, s->seq);
}

static void event_end(struct buf *out)
{
    buf_append_str(out, "}\n\n");
}

/* A message output item: content [] while in progress, the one output_text part when done. */
static void write_msg_item(struct buf *out, const struct rs_msg *m, bool done)
{
    buf_append_str(out, "{\"id\":");
    buf_append_json_cstr(out, m->id);
    if (done) {
        buf_append_str(out, ",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\","
                            "\"annotations\":[],\"logprobs\":[],\"text\":");
        buf_append_json_str(out, m->text.data, m->text.len);
        buf_append_str(out, "}],\"role\":\"assistant\"}");
    } else {
        buf_append_str(out, ",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}");
    }
}

static void write_call_item(struct buf *out, const struct rs_tool *t, bool done)
{
    buf_append_str(out, "{\"id\":");
    buf_append_json_cstr(out, t->item_id);
    buf_append_str(out, done ? ",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":"
                             : ",\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":");
    if (done)
        buf_append_json_str(out, t->args.data, t->args.len);
    else
        buf_append_str(out, "\"\"");
    buf_append_str(out, ",\"call_id\":");
    buf_append_json_cstr(out, t->call_id);
    buf_append_str(out, ",\"name\":");
    buf_append_json_cstr(out, t->name);
    buf_append_char(out, '}');
}

static void write_usage(struct buf *out, const struct usage *u)
{
    buf_append_str(out, "{\"input_tokens\":");
    buf_append_i64(out, u->input);
    buf_append_str(out, ",\"input_tokens_details\":{\"cached_tokens\":");
    buf_append_i64(out, u->cached_input);
    buf_append_str(out, "},\"output_tokens\":");
    buf_append_i64(out, u->output);
    buf_append_str(out, ",\"output_tokens_details\":{\"reasoning_tokens\":");
    buf_append_i64(out, u->reasoning);
    buf_append_str(out, "},\"total_tokens\":");
    buf_append_i64(out, u->input + u->output);
    buf_append_char(out, '}');
}

static void write_var(const struct responses_stream *s, enum rs_var var, struct buf *out)
{
    switch (var) {
    case RV_STATUS:
        buf_append_char(out, '"');
        buf_append_str(out, s->status);
        buf_append_char(out, '"');
        break;
    case RV_ERROR:
        if (!s->failed) {
            buf_append_str(out, "null");
            break;
        }
        buf_append_str(out, "{\"code\":");
        buf_append_json_cstr(out, s->err_code);
        buf_append_str(out, ",\"message\":");
        buf_append_json_cstr(out, s->err_message);
        buf_append_char(out, '}');
        break;
    case RV_INCOMPLETE:
        if (s->incomplete_reason) {
            buf_append_str(out, "{\"reason\":\"");
            buf_append_str(out, s->incomplete_reason);
            buf_append_str(out, "\"}");
        } else {
            buf_append_str(out, "null");
        }
        break;
    case RV_OUTPUT: /* the items join the Response at the end, in output order */
        buf_append_char(out, '[');
        for (int i = 0, n = 0; s->ended && i < s->next_output && i < s->capitems; i++) {
            const struct rs_item *it = &s->items[i];
            if (it->ref < 0)
                continue;
            if (n++)
                buf_append_char(out, ',');
            if (it->tool)
                write_call_item(out, &s->tools[it->ref], true);
            else
                write_msg_item(out, &s->msgs[it->ref], true);
        }
        buf_append_char(out, ']');
        break;
    case RV_USAGE:
        if (s->final_usage.known)
            write_usage(out, &s->final_usage);
        else
            buf_append_str(out, "null");
        break;
    case RV_COUNT: break;
    }
}

static void event_response(struct responses_stream *s, struct buf *out, const char *type)
{
    event_begin(s, out, type);
    buf_append_str(out, ",\"response\":");
    size_t from = 0;
    for (int i = 0; i < s->nseg; i++) {
        buf_append(out, s->frag.data + from, s->seg[i].at - from);
        write_var(s, s->seg[i].var, out);
        from = s->seg[i].at;
    }
    buf_append(out, s->frag.data + from, s->frag.len - from);
    event_end(out);
}

/* "...,"output_index":N,"item":" (the caller writes the item and closes) */
static void item_event_begin(struct responses_stream *s, struct buf *out, const char *type, int output_index)
{
    event_begin(s, out, type);
    buf_append_str(out, ",\"output_index\":");
    buf_append_i64(out, output_index);
    buf_append_str(out, ",\"item\":");
}

static void start(struct responses_stream *s, struct buf *out)
{
    if (s->started)
        return;
    s->started = true;
    event_response(s, out, "response.created");
    event_response(s, out, "response.in_progress");
}

static void keep_item(struct responses_stream *s, int output_index, bool tool, int ref)
{
    if (output_index >= s->capitems) {
        int ncap = s->capitems ? s->capitems * 2 : 8;
        while (ncap <= output_index)
            ncap *= 2;
        s->items = xrealloc(s->items, (size_t)ncap * sizeof(*s->items));
        for (int i = s->capitems; i < ncap; i++)
            s->items[i] = (struct rs_item){.tool = false, .ref = -1};
        s->capitems = ncap;
    }
    s->items[output_index] = (struct rs_item){.tool = tool, .ref = ref};
}

static struct rs_msg *open_msg(struct responses_stream *s)
{
    return &s->msgs[s->nmsg - 1];
}

static void text_open(struct responses_stream *s, struct buf *out)
{
    if (s->text_output >= 0)
        return;
    s->text_output = s->next_output++;
    if (s->nmsg == s->capmsg) {
        s->capmsg = s->capmsg ? s->capmsg * 2 : 2;
        s->msgs = xrealloc(s->msgs, (size_t)s->capmsg * sizeof(*s->msgs));
    }
    struct rs_msg *m = &s->msgs[s->nmsg];
    if (s->nmsg == 0)
        snprintf(m->id, sizeof(m->id), "msg_%s", id_suffix(s->id));
    else
        snprintf(m->id, sizeof(m->id), "msg_%s_%d", id_suffix(s->id), s->nmsg);
    buf_init(&m->text, BUF_UNBOUNDED);
    s->nmsg++;
    item_event_begin(s, out, "response.output_item.added", s->text_output);
    write_msg_item(out, m, false);
    event_end(out);
    event_begin(s, out, "response.content_part.added");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, m->id);
    buf_append_str(out, ",\"output_index\":");
    buf_append_i64(out, s->text_output);
    buf_append_str(out, ",\"content_index\":0,"
                        "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}");
    event_end(out);
}

static void text_close(struct responses_stream *s, struct buf *out)
{
    if (s->text_output < 0)
        return;
    const struct rs_msg *m = open_msg(s);
    event_begin(s, out, "response.output_text.done");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, m->id);
    buf_append_str(out, ",\"output_index\":");
    buf_append_i64(out, s->text_output);
    buf_append_str(out, ",\"content_index\":0,\"text\":");
    buf_append_json_str(out, m->text.data, m->text.len);
    buf_append_str(out, ",\"logprobs\":[]");
    event_end(out);
    event_begin(s, out, "response.content_part.done");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, m->id);
    buf_append_str(out, ",\"output_index\":");
    buf_append_i64(out, s->text_output);
    buf_append_str(out, ",\"content_index\":0,"
                        "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":");
    buf_append_json_str(out, m->text.data, m->text.len);
    buf_append_char(out, '}');
    event_end(out);
    item_event_begin(s, out, "response.output_item.done", s->text_output);
    write_msg_item(out, m, true);
    event_end(out);
    keep_item(s, s->text_output, false, s->nmsg - 1);
    s->text_output = -1;
}

static struct rs_tool *tool_find(struct responses_stream *s, int index)
{
    for (int i = s->ntools - 1; i >= 0; i--) /* the latest first: arguments follow their start */
        if (s->tools[i].index == index)
            return &s->tools[i];
    return NULL;
}

static void tool_close(struct responses_stream *s, struct rs_tool *t, struct buf *out)
{
    if (!t->open)
        return;
    t->open = false;
    event_begin(s, out, "response.function_call_arguments.done");
    buf_append_str(out, ",\"item_id\":");
    buf_append_json_cstr(out, t->item_id);
    buf_append_str(out, ",\"output_index\":");
    buf_append_i64(out, t->output_index);
    buf_append_str(out, ",\"name\":");
    buf_append_json_cstr(out, t->name);
    buf_append_str(out, ",\"arguments\":");
    buf_append_json_str(out, t->args.data, t->args.len);
    event_end(out);
    item_event_begin(s, out, "response.output_item.done", t->output_index);
    write_call_item(out, t, true);
    event_end(out);
    keep_item(s, t->output_index, true, (int)(t - s->tools));
}

void responses_stream_delta(struct responses_stream *s, const struct chat_delta *d, struct buf *out)
{
    if (s->ended)
        return;
    start(s, out);
    switch (d->kind) {
    case DELTA_TEXT: {
        if (d->text.n == 0)
            return;
        text_open(s, out);
        struct rs_msg *m = open_msg(s);
        buf_append(&m->text, d->text.p, d->text.n);
        event_begin(s, out, "response.output_text.delta");
        buf_append_str(out, ",\"item_id\":");
        buf_append_json_cstr(out, m->id);
        buf_append_str(out, ",\"output_index\":");
        buf_append_i64(out, s->text_output);
        buf_append_str(out, ",\"content_index\":0,\"delta\":");
        buf_append_json_str(out, d->text.p, d->text.n);
        buf_append_str(out, ",\"logprobs\":[]");
        event_end(out);
        break;
    }
    case DELTA_TOOL_START: {
        if (s->ntools >= RESPONSES_MAX_TOOLS)
            return;
        /* items are sequential: the text before a call is one message */
        text_close(s, out);
        if (s->ntools == s->captools) {
            s->captools = s->captools ? s->captools * 2 : 4;
            s->tools = xrealloc(s->tools, (size_t)s->captools * sizeof(*s->tools));
        }
        struct rs_tool *t = &s->tools[s->ntools];
        memset(t, 0, sizeof(*t));
        t->index = d->tool_index;
        t->output_index = s->next_output++;
        char iid[RESPONSES_MAX_ID + 64];
        snprintf(iid, sizeof(iid), "fc_%s_%d", id_suffix(s->id), s->ntools);
        t->item_id = xstrdup(iid);
        t->call_id = d->tool_id.n ? str_dup(d->tool_id) : xstrdup(iid);
        t->name = str_dup(d->tool_name);
        buf_init(&t->args, BUF_UNBOUNDED);
        t->open = true;
        s->ntools++;
        item_event_begin(s, out, "response.output_item.added", t->output_index);
        write_call_item(out, t, false);
        event_end(out);
        break;
    }
    case DELTA_TOOL_ARGS: {
        struct rs_tool *t = tool_find(s, d->tool_index);
        if (t == NULL || !t->open || d->text.n == 0)
            return;
        buf_append(&t->args, d->text.p, d->text.n);
        event_begin(s, out, "response.function_call_arguments.delta");
        buf_append_str(out, ",\"item_id\":");
        buf_append_json_cstr(out, t->item_id);
        buf_append_str(out, ",\"output_index\":");
        buf_append_i64(out, t->output_index);
        buf_append_str(out, ",\"delta\":");
        buf_append_json_str(out, d->text.p, d->text.n);
        event_end(out);
        break;
    }
    case DELTA_FINISH: s->finish = d->finish; break;
    case DELTA_USAGE: s->usage = d->usage; break;
    }
}

void responses_stream_end(struct responses_stream *s, const struct usage *u, const struct gw_error *err,
                          struct buf *out)
{
    if (s->ended)
        return;
    start(s, out);
    s->ended = true;
    text_close(s, out);
    for (int i = 0; i < s->ntools; i++)
        tool_close(s, &s->tools[i], out);
    const struct usage *use = u && (u->known || u->invalid) ? u : &s->usage;
    if (use->known)
        s->final_usage = *use;
    if (err) {
        s->status = "failed";
        s->failed = true;
        s->err_code = xstrdup(err->code[0] ? err->code : err->status >= 500 ? "server_error" : "invalid_request_error");
        s->err_message = xstrdup(err->message);
        event_response(s, out, "response.failed");
        return;
    }
    enum finish f = s->finish ? s->finish : FINISH_STOP;
    s->incomplete_reason = f == FINISH_LENGTH ? "max_output_tokens" : f == FINISH_CONTENT_FILTER ? "content_filter" : NULL;
    s->status = s->incomplete_reason ? "incomplete" : "completed";
    event_response(s, out, s->incomplete_reason ? "response.incomplete" : "response.completed");
}

const cJSON *responses_stream_response(struct responses_stream *s)
{
    if (s->resp == NULL) /* responses_stream_start: the skeleton now */
        s->resp = responses_skeleton(s->req, s->id, s->created, s->model ? s->model : "");
    if (!s->ended || s->resp_final)
        return s->resp;
    s->resp_final = true;
    cJSON *output = cJSON_GetObjectItemCaseSensitive(s->resp, "output");
    if (output == NULL)
        output = cJSON_AddArrayToObject(s->resp, "output");
    for (int i = 0; i < s->next_output && i < s->capitems; i++) {
        const struct rs_item *it = &s->items[i];
        if (it->ref < 0)
            continue;
        if (it->tool) {
            const struct rs_tool *t = &s->tools[it->ref];
            cJSON_AddItemToArray(output, call_output(t->item_id, t->call_id, t->name,
                                                     t->args.data ? t->args.data : "", true));
        } else {
            const struct rs_msg *m = &s->msgs[it->ref];
            cJSON_AddItemToArray(output, message_output(m->id, m->text.data ? m->text.data : "", NULL, true));
        }
    }
    replace(s->resp, "status", cJSON_CreateString(s->status));
    if (s->failed) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "code", s->err_code);
        cJSON_AddStringToObject(e, "message", s->err_message);
        replace(s->resp, "error", e);
    }
    if (s->incomplete_reason) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "reason", s->incomplete_reason);
        replace(s->resp, "incomplete_details", d);
    }
    replace(s->resp, "usage", s->final_usage.known ? responses_usage_json(&s->final_usage) : cJSON_CreateNull());
    return s->resp;
}

/* ---------- pass-through decoders ---------- */

int responses_usage_object(const char *obj, size_t len, struct usage *u)
{
    static const char *const keys[] = {"input_tokens", "output_tokens", "input_tokens_details",
                                       "output_tokens_details"};
    struct jval f[4], v;
    memset(u, 0, sizeof(*u));
    if (jscan_fields(obj, len, keys, f, 4, NULL, NULL) != 0)
        return -1;
    u->known = f[0].type != J_NONE || f[1].type != J_NONE;
    u->input = usage_read_jval(u, &f[0]);
    u->output = usage_read_jval(u, &f[1]);
    if (f[2].type == J_OBJECT && jscan_get(f[2].raw.p, f[2].raw.n, "cached_tokens", &v) == 0)
        u->cached_input = usage_read_jval(u, &v);
    if (f[3].type == J_OBJECT && jscan_get(f[3].raw.p, f[3].raw.n, "reasoning_tokens", &v) == 0)
        u->reasoning = usage_read_jval(u, &v);
    if (!u->known)
        u->invalid = false;
    usage_check(u, NULL);
    return u->known || u->invalid ? 0 : -1;
}

int responses_extract_usage(const char *body, size_t len, struct usage *u)
{
    struct jval v;
    memset(u, 0, sizeof(*u));
    if (jscan_validate(body, len, NULL, NULL) != 0 || jscan_get(body, len, "usage", &v) != 0 || v.type != J_OBJECT)
        return -1;
    return responses_usage_object(v.raw.p, v.raw.n, u);
}

static bool terminal_type(struct str t)
{
    return str_eq_cstr(t, "response.completed") || str_eq_cstr(t, "response.incomplete") ||
           str_eq_cstr(t, "response.failed");
}

int responses_decode_event(struct str event, struct str data, struct usage *u, struct gw_error *err)
{
    memset(u, 0, sizeof(*u));
    struct str type = event;
    struct buf tb = BUF_INIT(64);
    bool need_scan = type.n == 0 || str_eq_cstr(type, "message");
    if (!need_scan && !terminal_type(type) && !str_eq_cstr(type, "error")) {
        buf_free(&tb);
        return RESP_EV_OTHER; /* relayed unscanned */
    }
    static const char *const keys[] = {"type", "response", "message", "code"};
    struct jval f[4];
    size_t off = 0;
    const char *msg = NULL;
    if (jscan_fields(data.p, data.n, keys, f, 4, &off, &msg) != 0) {
        buf_free(&tb);
        if (need_scan && !jscan_may_have_object(data.p, data.n, (const char *const[]){"response", "usage", NULL}))
            return RESP_EV_OTHER; /* cannot carry usage: relayed as is */
        gw_error_set(err, 502, GW_ERR_API, "upstream sent a malformed Responses stream event (%s at byte %zu)",
                     msg ? msg : "not a JSON object", off);
        err->from_upstream = true;
        return -1;
    }
    if (need_scan) {
        if (f[0].type != J_STRING || jval_str(&f[0], &tb) != 0) {
            buf_free(&tb);
            return RESP_EV_OTHER;
        }
        type = str_make(tb.data, tb.len);
    }
    int rc = RESP_EV_OTHER;
    if (str_eq_cstr(type, "error")) {
        struct buf m = BUF_INIT(900);
        if (f[2].type == J_STRING)
            jval_str(&f[2], &m);
        gw_error_set(err, 502, GW_ERR_API, "upstream stream error: %.*s", (int)m.len, m.data ? m.data : "");
        err->from_upstream = true;
        buf_free(&m);
        rc = -1;
    } else if (terminal_type(type)) {
        rc = RESP_EV_TERMINAL;
        struct jval uv;
        if (f[1].type == J_OBJECT && jscan_get(f[1].raw.p, f[1].raw.n, "usage", &uv) == 0 && uv.type == J_OBJECT)
            responses_usage_object(uv.raw.p, uv.raw.n, u);
    }
    buf_free(&tb);
    return rc;
}
