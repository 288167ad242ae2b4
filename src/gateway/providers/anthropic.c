/* anthropic.c: Anthropic's Messages API as an upstream (api.anthropic.com or ANTHROPIC_BASE_URL).
 *
 * Passthrough (an Anthropic client): the client's bytes go up with only "model" spliced, and responses and stream
 * events come back as they are; usage is read on the way with jscan (message_start: input and cache counters,
 * message_delta: output). Translation (any other client): the canonical request is rebuilt as a Messages request
 * and the message / its events are decoded into the canonical completion / deltas. Rules and their reasons:
 * docs/gateway-anthropic.md. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/providers/anthropic.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "gateway/provider.h"
#include "gateway/providers/canon.h"
#include "gateway/redact.h"

/* ---------- usage and stop reasons ---------- */

static const char *const usage_keys[] = {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                         "cache_creation_input_tokens"};
static int usage_from_fields(const struct jval *f, struct anthropic_usage *au);

int anthropic_usage_scan(const char *obj, size_t len, struct anthropic_usage *au)
{
    struct jval f[4];
    if (jscan_fields(obj, len, usage_keys, f, 4, NULL, NULL) != 0)
        return -1;
    return usage_from_fields(f, au);
}

/* A usage object out of validated text (a stream event jscan_fields took whole): its members without a second
 * validation. */
static int usage_scan_trusted(const struct jval *obj, struct anthropic_usage *au)
{
    struct jval f[4];
    if (jscan_fields_trusted(obj, usage_keys, f, 4) != 0)
        return -1;
    return usage_from_fields(f, au);
}

static int usage_from_fields(const struct jval *f, struct anthropic_usage *au)
{
    /* absent and null fields stay as they were; anything else is read by the one rule (gw_types.h) */
    struct usage chk = {0};
    int64_t *dst[] = {&au->input_tokens, &au->output_tokens, &au->cache_read, &au->cache_creation};
    bool *has[] = {&au->has_input, &au->has_output, &au->has_cache_read, &au->has_cache_creation};
    for (int i = 0; i < 4; i++)
        if (f[i].type != J_NONE && f[i].type != J_NULL) {
            *dst[i] = usage_read_jval(&chk, &f[i]);
            *has[i] = true;
        }
    if (chk.invalid)
        au->invalid = true;
    return 0;
}

static int64_t nonneg(int64_t v)
{
    return v < 0 ? 0 : v;
}

void anthropic_usage_apply(const struct anthropic_usage *au, struct usage *u)
{
    if (u->invalid)
        return; /* dropped earlier in this message: later counts cannot make it whole again */
    if (au->invalid) {
        u->invalid = true;
        usage_check(u, NULL);
        return;
    }
    /* u->input is the whole prompt: rebuild it from the uncached part and the cache counters seen so far */
    int64_t uncached = nonneg(u->input - u->cached_input - u->cache_write);
    if (au->has_input)
        uncached = nonneg(au->input_tokens);
    if (au->has_cache_read)
        u->cached_input = nonneg(au->cache_read);
    if (au->has_cache_creation)
        u->cache_write = nonneg(au->cache_creation);
    u->input = uncached + u->cached_input + u->cache_write;
    if (au->has_output)
        u->output = nonneg(au->output_tokens);
    if (au->has_input || au->has_output || au->has_cache_read || au->has_cache_creation)
        u->known = true;
    usage_check(u, NULL); /* the sums are held to the bound too */
}

int anthropic_extract_usage(const char *body, size_t len, struct usage *u)
{
    struct jval v;
    memset(u, 0, sizeof(*u));
    if (jscan_get(body, len, "usage", &v) != 0 || v.type != J_OBJECT)
        return -1;
    struct anthropic_usage au = {0};
    if (anthropic_usage_scan(v.raw.p, v.raw.n, &au) != 0)
        return -1;
    anthropic_usage_apply(&au, u);
    return u->known || u->invalid ? 0 : -1;
}

enum finish anthropic_finish_from(struct str s)
{
    if (str_eq_cstr(s, "max_tokens") || str_eq_cstr(s, "model_context_window_exceeded"))
        return FINISH_LENGTH;
    if (str_eq_cstr(s, "tool_use"))
        return FINISH_TOOL_CALLS;
    if (str_eq_cstr(s, "refusal"))
        return FINISH_CONTENT_FILTER;
    return FINISH_STOP; /* end_turn, stop_sequence, pause_turn */
}

/* ---------- errors ---------- */

static enum gw_err_type type_from_anthropic(const struct jval *t, int status)
{
    static const struct {
        const char *name;
        enum gw_err_type type;
    } map[] = {
        {"invalid_request_error", GW_ERR_INVALID_REQUEST}, {"authentication_error", GW_ERR_AUTHENTICATION},
        {"permission_error", GW_ERR_PERMISSION},           {"billing_error", GW_ERR_PERMISSION},
        {"not_found_error", GW_ERR_NOT_FOUND},             {"request_too_large", GW_ERR_TOO_LARGE},
        {"rate_limit_error", GW_ERR_RATE_LIMIT},           {"api_error", GW_ERR_API},
        {"overloaded_error", GW_ERR_OVERLOADED},           {"timeout_error", GW_ERR_TIMEOUT},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (jval_is_str(t, map[i].name))
            return map[i].type;
    return gw_err_type_for_status(status);
}

/* Reads {"error":{"type","message"}} (the whole error body, or an `error` stream event's data). */
static void read_error_object(const char *body, size_t len, int status, struct gw_error *err)
{
    struct jval e;
    if (jscan_validate(body, len, NULL, NULL) != 0 || jscan_get(body, len, "error", &e) != 0 || e.type != J_OBJECT)
        return;
    static const char *const keys[] = {"type", "message"};
    struct jval f[2];
    if (jscan_fields(e.raw.p, e.raw.n, keys, f, 2, NULL, NULL) != 0)
        return;
    err->type = type_from_anthropic(&f[0], status);
    struct buf m = BUF_INIT(sizeof(err->message) - 1);
    if (f[1].type == J_STRING && jval_str(&f[1], &m) == 0 && m.len)
        memcpy(err->message, m.data, m.len + 1);
    buf_free(&m);
    if (f[0].type == J_STRING) {
        struct buf c = BUF_INIT(sizeof(err->code) - 1);
        if (jval_str(&f[0], &c) == 0 && c.len)
            memcpy(err->code, c.data, c.len + 1);
        buf_free(&c);
    }
}

void anthropic_map_error(int status, const char *body, size_t len, struct gw_error *err)
{
    gw_error_set(err, status, gw_err_type_for_status(status), "upstream returned HTTP %d", status);
    err->from_upstream = true;
    read_error_object(body, len, status, err);
    /* Anthropic's own advice (x-should-retry): rate limits, overload, server errors and timeouts pass */
    err->retryable = status == 429 || status == 408 || status == 409 || status >= 500;
}

/* ---------- request splicing (passthrough) ---------- */

int anthropic_splice_model(const char *body, size_t len, const char *model, struct buf *out)
{
    struct jval m;
    static const char *const keys[] = {"model"};
    if (jscan_fields(body, len, keys, &m, 1, NULL, NULL) != 0 || m.type != J_STRING)
        return -1;
    size_t off = (size_t)(m.raw.p - body);
    if (buf_append(out, body, off) != 0 || buf_append_json_cstr(out, model) != 0 ||
        buf_append(out, body + off + m.raw.n, len - off - m.raw.n) != 0)
        return -1;
    return 0;
}

/* ---------- request: canonical -> Messages ---------- */

static cJSON *text_block(const char *text)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "text");
    cJSON_AddStringToObject(b, "text", text);
    return b;
}

/* "data:<media type>;base64,<data>" -> a base64 source; -1 when url is not such a data URL. */
static int data_url_source(const char *url, cJSON *src)
{
    if (strncmp(url, "data:", 5) != 0)
        return -1;
    const char *semi = strstr(url, ";base64,");
    if (semi == NULL)
        return -1;
    char *mt = xstrndup(url + 5, (size_t)(semi - (url + 5)));
    cJSON_AddStringToObject(src, "type", "base64");
    cJSON_AddStringToObject(src, "media_type", mt);
    cJSON_AddStringToObject(src, "data", semi + 8);
    xfree(mt);
    return 0;
}

/* One OpenAI content part of a user message -> an Anthropic block (NULL to skip, *failed on error). */
static cJSON *part_block(const cJSON *p, int i, struct gw_error *err, bool *failed)
{
    const char *type = canon_str(p, "type");
    type = type ? type : "";
    if (strcmp(type, "text") == 0) {
        const char *t = canon_str(p, "text");
        return t && t[0] ? text_block(t) : NULL; /* Anthropic refuses empty text blocks */
    }
    if (strcmp(type, "image_url") == 0) {
        const cJSON *iu = cJSON_GetObjectItemCaseSensitive(p, "image_url");
        const char *url = cJSON_IsString(iu) ? iu->valuestring : canon_str(iu, "url");
        if (url == NULL) {
            *failed = true;
            gw_bad_request(err, NULL, "messages[%d]: image_url has no url", i);
            return NULL;
        }
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "image");
        cJSON *src = cJSON_AddObjectToObject(b, "source");
        if (data_url_source(url, src) != 0) {
            if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
                cJSON_Delete(b);
                *failed = true;
                gw_bad_request(err, NULL, "messages[%d]: image_url must be an http(s) URL or a base64 data URL", i);
                return NULL;
            }
            cJSON_AddStringToObject(src, "type", "url");
            cJSON_AddStringToObject(src, "url", url);
        }
        return b;
    }
    if (strcmp(type, "file") == 0) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(p, "file");
        const char *data = canon_str(f, "file_data");
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "document");
        cJSON *src = cJSON_AddObjectToObject(b, "source");
        if (data == NULL || data_url_source(data, src) != 0) {
            cJSON_Delete(b);
            *failed = true;
            gw_bad_request(
                err, NULL,
                "messages[%d]: file parts need file_data as a base64 data URL for Anthropic models (file ids "
                "are OpenAI's)",
                i);
            return NULL;
        }
        const char *name = canon_str(f, "filename");
        if (name)
            cJSON_AddStringToObject(b, "title", name);
        return b;
    }
    *failed = true;
    gw_bad_request(err, NULL, "messages[%d]: content parts of type '%s' cannot be sent to Anthropic models", i, type);
    return NULL;
}

/* Appends blocks to the conversation, merging into the previous message when the role repeats (consecutive tool
 * results and a following user message become one user turn, as Anthropic wants). Takes ownership of blocks.
 * *last is the conversation's last message (NULL at first): kept by the caller, because asking cJSON for it walks
 * the whole list, which made a long conversation quadratic. */
static void push(cJSON *msgs, cJSON **last, const char *role, cJSON *blocks)
{
    if (blocks->child == NULL) {
        cJSON_Delete(blocks);
        return;
    }
    const char *lr = canon_str(*last, "role");
    if (lr && strcmp(lr, role) == 0) {
        canon_array_splice(cJSON_GetObjectItemCaseSensitive(*last, "content"), blocks);
        cJSON_Delete(blocks);
        return;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddItemToObject(m, "content", blocks);
    cJSON_AddItemToArray(msgs, m);
    *last = m;
}

/* Text of a content value (string or parts) appended as text blocks. */
static void text_blocks(const cJSON *content, cJSON *blocks)
{
    if (cJSON_IsString(content)) {
        if (content->valuestring[0])
            cJSON_AddItemToArray(blocks, text_block(content->valuestring));
        return;
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, content)
    {
        const char *t = canon_str(p, "text");
        if (t == NULL)
            t = canon_str(p, "refusal");
        if (t && t[0])
            cJSON_AddItemToArray(blocks, text_block(t));
    }
}

static int convert_messages(const cJSON *canon, cJSON *out, struct gw_error *err)
{
    cJSON *system = cJSON_CreateArray();
    cJSON *msgs = cJSON_CreateArray();
    cJSON *last = NULL;
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(canon, "messages"))
    {
        const char *role = canon_str(m, "role");
        role = role ? role : "";
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            text_blocks(content, system);
        } else if (strcmp(role, "user") == 0) {
            cJSON *blocks = cJSON_CreateArray();
            if (cJSON_IsString(content)) {
                text_blocks(content, blocks);
            } else {
                const cJSON *p;
                cJSON_ArrayForEach(p, content)
                {
                    bool failed = false;
                    cJSON *b = part_block(p, i, err, &failed);
                    if (failed) {
                        cJSON_Delete(blocks);
                        goto fail;
                    }
                    if (b)
                        cJSON_AddItemToArray(blocks, b);
                }
            }
            push(msgs, &last, "user", blocks);
        } else if (strcmp(role, "assistant") == 0) {
            cJSON *blocks = cJSON_CreateArray();
            text_blocks(content, blocks);
            const cJSON *tc;
            int k = 0;
            cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(m, "tool_calls"))
            {
                const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
                const char *args = canon_str(fn, "arguments");
                if (args && canon_json_has_nul(args, strlen(args), NULL, 0)) {
                    /* arguments are JSON in a string: a \u0000 in them would be cut when they are parsed */
                    cJSON_Delete(blocks);
                    canon_nul_refused(err, "messages");
                    goto fail;
                }
                cJSON *input = args && args[0] ? cJSON_Parse(args) : cJSON_CreateObject();
                if (!cJSON_IsObject(input)) {
                    cJSON_Delete(input);
                    cJSON_Delete(blocks);
                    gw_bad_request(err, NULL,
                                   "messages[%d].tool_calls[%d].function.arguments must be a JSON object for Anthropic "
                                   "models",
                                   i, k);
                    goto fail;
                }
                cJSON *b = cJSON_CreateObject();
                cJSON_AddStringToObject(b, "type", "tool_use");
                const char *id = canon_str(tc, "id"), *name = canon_str(fn, "name");
                cJSON_AddStringToObject(b, "id", id ? id : "");
                cJSON_AddStringToObject(b, "name", name ? name : "");
                cJSON_AddItemToObject(b, "input", input);
                cJSON_AddItemToArray(blocks, b);
                k++;
            }
            push(msgs, &last, "assistant", blocks);
        } else if (strcmp(role, "tool") == 0) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "tool_result");
            const char *id = canon_str(m, "tool_call_id");
            cJSON_AddStringToObject(b, "tool_use_id", id ? id : "");
            if (cJSON_IsString(content)) {
                if (content->valuestring[0])
                    cJSON_AddStringToObject(b, "content", content->valuestring);
            } else if (cJSON_IsArray(content)) {
                cJSON *parts = cJSON_CreateArray();
                text_blocks(content, parts);
                if (parts->child)
                    cJSON_AddItemToObject(b, "content", parts);
                else
                    cJSON_Delete(parts);
            }
            cJSON *blocks = cJSON_CreateArray();
            cJSON_AddItemToArray(blocks, b);
            push(msgs, &last, "user", blocks);
        } else {
            gw_bad_request(err, NULL,
                           "messages[%d]: role '%s' cannot be sent to Anthropic models (use tool messages with "
                           "tool_call_id)",
                           i, role);
            goto fail;
        }
        i++;
    }
    if (system->child && system->child->next == NULL)
        cJSON_AddStringToObject(out, "system", canon_str(system->child, "text"));
    else if (system->child)
        cJSON_AddItemToObject(out, "system", system), system = NULL;
    cJSON_Delete(system);
    cJSON_AddItemToObject(out, "messages", msgs);
    return 0;
fail:
    cJSON_Delete(system);
    cJSON_Delete(msgs);
    return -1;
}

static bool tool_named(const cJSON *tools, const char *name)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const char *n = canon_str(t, "name");
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

static bool name_pattern_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

cJSON *anthropic_request_from_canonical(const cJSON *canon, const char *model, bool stream,
                                        int64_t default_max_tokens, char *json_tool, size_t json_tool_size,
                                        struct gw_error *err)
{
    if (json_tool_size)
        json_tool[0] = '\0';
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "model", model);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(canon, "max_completion_tokens");
    if (!cJSON_IsNumber(v))
        v = cJSON_GetObjectItemCaseSensitive(canon, "max_tokens");
    cJSON_AddNumberToObject(out, "max_tokens", cJSON_IsNumber(v) ? v->valuedouble : (double)default_max_tokens);
    if (convert_messages(canon, out, err) != 0) {
        cJSON_Delete(out);
        return NULL;
    }

    v = cJSON_GetObjectItemCaseSensitive(canon, "stop");
    if (cJSON_IsString(v)) {
        cJSON *a = cJSON_AddArrayToObject(out, "stop_sequences");
        cJSON_AddItemToArray(a, cJSON_CreateString(v->valuestring));
    } else if (cJSON_IsArray(v) && v->child) {
        cJSON *a = cJSON_AddArrayToObject(out, "stop_sequences");
        const cJSON *s;
        cJSON_ArrayForEach(s, v)
        if (cJSON_IsString(s))
            cJSON_AddItemToArray(a, cJSON_CreateString(s->valuestring));
    }
    v = cJSON_GetObjectItemCaseSensitive(canon, "temperature");
    if (cJSON_IsNumber(v)) /* OpenAI's range is 0..2, Anthropic's 0..1 */
        cJSON_AddNumberToObject(out, "temperature", v->valuedouble > 1 ? 1 : v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(canon, "top_p");
    if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(out, "top_p", v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(canon, "top_k");
    if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(out, "top_k", v->valuedouble);
    const char *user = canon_str(canon, "user");
    if (user) {
        cJSON *md = cJSON_AddObjectToObject(out, "metadata");
        cJSON_AddStringToObject(md, "user_id", user);
    }

    /* tools */
    cJSON *tools = NULL;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(canon, "tools"))
    {
        const char *type = canon_str(t, "type");
        if (type && strcmp(type, "function") != 0) {
            gw_bad_request(err, NULL, "tools: tools of type '%s' cannot be sent to Anthropic models", type);
            cJSON_Delete(out);
            return NULL;
        }
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const char *name = canon_str(fn, "name"), *desc = canon_str(fn, "description");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name ? name : "");
        if (desc)
            cJSON_AddStringToObject(o, "description", desc);
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        cJSON_AddItemToObject(o, "input_schema", cJSON_IsObject(params)
                                                     ? cJSON_Duplicate(params, 1)
                                                     : cJSON_Parse("{\"type\":\"object\",\"properties\":{}}"));
        if (tools == NULL)
            tools = cJSON_AddArrayToObject(out, "tools");
        cJSON_AddItemToArray(tools, o);
    }
    bool client_tools = tools != NULL;

    /* response_format: emulated with a tool the model is made to call (see the docs for why) */
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(canon, "response_format");
    const char *rft = canon_str(rf, "type");
    if (rft && (strcmp(rft, "json_schema") == 0 || strcmp(rft, "json_object") == 0)) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        const char *sname = canon_str(js, "name");
        const char *name = sname && name_pattern_ok(sname) && !tool_named(tools, sname) ? sname : "json_response";
        if (tool_named(tools, name))
            name = "agentd_json_response";
        snprintf(json_tool, json_tool_size, "%s", name);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        struct buf d = BUF_INIT(BUF_UNBOUNDED);
        buf_append_str(&d, "Give your final answer by calling this tool: its input is the JSON response.");
        const char *sdesc = canon_str(js, "description");
        if (sdesc)
            buf_printf(&d, " %s", sdesc);
        cJSON_AddStringToObject(o, "description", d.data);
        buf_free(&d);
        cJSON_AddItemToObject(o, "input_schema",
                              cJSON_IsObject(schema) ? cJSON_Duplicate(schema, 1) : cJSON_Parse("{\"type\":\"object\"}"));
        if (tools == NULL)
            tools = cJSON_AddArrayToObject(out, "tools");
        cJSON_AddItemToArray(tools, o);
    }

    /* tool_choice */
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(canon, "tool_choice");
    const cJSON *ptc = cJSON_GetObjectItemCaseSensitive(canon, "parallel_tool_calls");
    cJSON *choice = NULL;
    if (client_tools) {
        const char *s = cJSON_IsString(tc) ? tc->valuestring : NULL;
        const char *fname = canon_str(cJSON_GetObjectItemCaseSensitive(tc, "function"), "name");
        choice = cJSON_CreateObject();
        if (s && strcmp(s, "required") == 0) {
            cJSON_AddStringToObject(choice, "type", "any");
        } else if (s && strcmp(s, "none") == 0) {
            cJSON_AddStringToObject(choice, "type", "none");
        } else if (cJSON_IsObject(tc) && fname) {
            cJSON_AddStringToObject(choice, "type", "tool");
            cJSON_AddStringToObject(choice, "name", fname);
        } else if (tc != NULL || cJSON_IsFalse(ptc)) {
            cJSON_AddStringToObject(choice, "type", "auto");
        } else {
            cJSON_Delete(choice);
            choice = NULL;
        }
        if (choice && cJSON_IsFalse(ptc) && strcmp(canon_str(choice, "type"), "none") != 0)
            cJSON_AddTrueToObject(choice, "disable_parallel_tool_use");
    } else if (json_tool[0]) {
        choice = cJSON_CreateObject();
        cJSON_AddStringToObject(choice, "type", "tool");
        cJSON_AddStringToObject(choice, "name", json_tool);
    }
    if (choice)
        cJSON_AddItemToObject(out, "tool_choice", choice);
    if (stream)
        cJSON_AddTrueToObject(out, "stream");
    return out;
}

/* ---------- response: Messages -> canonical ---------- */

cJSON *anthropic_message_to_canonical(const char *body, size_t len, const char *id, const char *model,
                                      int64_t created, const char *json_tool, struct usage *u,
                                      char *response_model, size_t response_model_size, struct gw_error *err)
{
    memset(u, 0, sizeof(*u));
    cJSON *t = cJSON_ParseWithLength(body, len);
    const cJSON *content = t ? cJSON_GetObjectItemCaseSensitive(t, "content") : NULL;
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(t);
        gw_error_set(err, 502, GW_ERR_API, "upstream returned a malformed message");
        err->from_upstream = true;
        return NULL;
    }
    const char *um = canon_str(t, "model");
    if (um && response_model)
        snprintf(response_model, response_model_size, "%s", um);
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(t, "usage");
    if (cJSON_IsObject(usage)) {
        char *s = cJSON_PrintUnformatted(usage);
        struct anthropic_usage au = {0};
        if (s && anthropic_usage_scan(s, strlen(s), &au) == 0)
            anthropic_usage_apply(&au, u);
        if (s)
            cJSON_free(s);
    }
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    cJSON *calls = cJSON_CreateArray();
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const char *type = canon_str(b, "type");
        type = type ? type : "";
        if (strcmp(type, "text") == 0) {
            const char *tx = canon_str(b, "text");
            if (tx)
                buf_append_str(&text, tx);
        } else if (strcmp(type, "tool_use") == 0) {
            const char *name = canon_str(b, "name"), *tid = canon_str(b, "id");
            const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
            char *args = input ? cJSON_PrintUnformatted(input) : NULL;
            if (json_tool && json_tool[0] && name && strcmp(name, json_tool) == 0) {
                buf_append_str(&text, args ? args : "{}");
            } else {
                cJSON *tc = cJSON_CreateObject();
                cJSON_AddStringToObject(tc, "id", tid ? tid : "");
                cJSON_AddStringToObject(tc, "type", "function");
                cJSON *fn = cJSON_AddObjectToObject(tc, "function");
                cJSON_AddStringToObject(fn, "name", name ? name : "");
                cJSON_AddStringToObject(fn, "arguments", args ? args : "{}");
                cJSON_AddItemToArray(calls, tc);
            }
            if (args)
                cJSON_free(args);
        }
        /* thinking, redacted_thinking, server tool blocks: not representable in a chat completion */
    }
    const char *sr = canon_str(t, "stop_reason");
    enum finish f = anthropic_finish_from(str_from(sr ? sr : "end_turn"));
    bool any_calls = calls->child != NULL;
    if (f == FINISH_TOOL_CALLS && !any_calls)
        f = FINISH_STOP; /* only the emulated response_format tool was called */
    cJSON *r = canon_completion_json(id, created, model, text.data ? text.data : "", calls, f, u);
    buf_free(&text);
    cJSON_Delete(t);
    return r;
}

/* ---------- stream events ---------- */

enum { BLOCK_OTHER = -1, BLOCK_TEXT = -2, BLOCK_JSON = -3 };

void anthropic_stream_init(struct anthropic_stream *s, bool passthrough, anthropic_delta_fn *emit, void *ud)
{
    memset(s, 0, sizeof(*s));
    s->passthrough = passthrough;
    s->emit = emit;
    s->ud = ud;
    buf_init(&s->text, BUF_UNBOUNDED);
}

void anthropic_stream_free(struct anthropic_stream *s)
{
    xfree(s->blocks);
    s->blocks = NULL;
    buf_free(&s->text);
}

static void emit(struct anthropic_stream *s, const struct chat_delta *d)
{
    if (s->emit && !s->passthrough)
        s->emit(s->ud, d);
}

static int malformed(struct gw_error *err, const char *what)
{
    gw_error_set(err, 502, GW_ERR_API, "upstream sent a malformed stream event (%s)", what);
    err->from_upstream = true;
    return -1;
}

static int block_index(const struct jval *v, int64_t *idx)
{
    return jval_i64(v, idx) == 0 && *idx >= 0 && *idx < ANTHROPIC_MAX_BLOCKS ? 0 : -1;
}

static void set_block(struct anthropic_stream *s, int64_t idx, int kind)
{
    if ((size_t)idx >= s->nblocks) {
        size_t n = s->nblocks ? s->nblocks : 8;
        while (n <= (size_t)idx)
            n *= 2;
        s->blocks = xrealloc(s->blocks, n * sizeof(int));
        for (size_t i = s->nblocks; i < n; i++)
            s->blocks[i] = BLOCK_OTHER;
        s->nblocks = n;
    }
    s->blocks[idx] = kind;
}

static int block_kind(const struct anthropic_stream *s, int64_t idx)
{
    return (size_t)idx < s->nblocks ? s->blocks[idx] : BLOCK_OTHER;
}

/* An unescaped string value into s->text; the returned str lives until the next call. */
static struct str text_of(struct anthropic_stream *s, const struct jval *v)
{
    buf_reset(&s->text);
    if (v->type != J_STRING || jval_str(v, &s->text) != 0)
        return STR_NULL;
    return str_make(s->text.data ? s->text.data : "", s->text.len);
}

static void read_usage(struct anthropic_stream *s, const struct jval *uv)
{
    if (uv->type != J_OBJECT)
        return;
    struct anthropic_usage au = {0};
    if (usage_scan_trusted(uv, &au) == 0) /* uv is out of an event jscan_fields validated */
        anthropic_usage_apply(&au, &s->usage);
}

int anthropic_stream_event(struct anthropic_stream *s, struct str event, struct str data, struct gw_error *err)
{
    int fwd = s->passthrough ? 1 : 0;
    s->checked = false;
    s->untouched = true;
    if (str_eq_cstr(event, "ping"))
        return fwd;
    /* Relayed as received: content events carry nothing agentd reads in passthrough, unless the bytes may hold
     * a usage, message or error object (whatever the event line says), which then get the full scan below. The
     * one pass that tells (jscan_event_scan) also makes the relay's malformed-event check (s->checked); a broken
     * event goes the way it went before that pass: the full scan when it may hold one of them, else the relay's
     * own check. */
    static const char *const wanted[] = {"usage", "message", "error", NULL};
    if (s->passthrough && str_starts_with(event, STR_LIT("content_block_"))) {
        unsigned hits;
        if (jscan_event_scan(data.p, data.n, wanted, &hits) == 0) {
            s->checked = true;
            if (hits == 0)
                return fwd;
        } else if (!jscan_may_have_object(data.p, data.n, wanted)) {
            return fwd;
        }
    }
    s->untouched = false;
    static const char *const keys[] = {"type", "index", "delta", "content_block", "message", "usage", "error"};
    enum { F_TYPE, F_INDEX, F_DELTA, F_BLOCK, F_MESSAGE, F_USAGE, F_ERROR, F_N };
    struct jval f[F_N];
    if (jscan_fields(data.p, data.n, keys, f, F_N, NULL, NULL) != 0)
        return malformed(err, "invalid JSON");
    s->checked = true; /* validated whole */
    struct buf tb = BUF_INIT(64);
    struct str type = event;
    if (f[F_TYPE].type == J_STRING && jval_str(&f[F_TYPE], &tb) == 0)
        type = str_make(tb.data ? tb.data : "", tb.len);
    char tname[64];
    snprintf(tname, sizeof(tname), "%.*s", (int)type.n, type.p ? type.p : "");
    buf_free(&tb);

    if (strcmp(tname, "error") == 0) {
        gw_error_set(err, 502, GW_ERR_API, "upstream reported an error in the stream");
        err->from_upstream = true;
        read_error_object(data.p, data.n, 500, err);
        switch (err->type) {
        case GW_ERR_OVERLOADED: err->status = 529; break;
        case GW_ERR_RATE_LIMIT: err->status = 429; break;
        case GW_ERR_INVALID_REQUEST: err->status = 400; break;
        default: err->status = err->type == GW_ERR_TIMEOUT ? 504 : 502; break;
        }
        err->retryable = err->status >= 500 || err->status == 429;
        return -1;
    }
    if (strcmp(tname, "message_start") == 0) {
        if (f[F_MESSAGE].type != J_OBJECT)
            return malformed(err, "message_start without a message");
        static const char *const mk[] = {"model", "usage"};
        struct jval m[2];
        if (jscan_fields_trusted(&f[F_MESSAGE], mk, m, 2) != 0) /* validated with the event */
            return malformed(err, "message_start");
        struct str model = text_of(s, &m[0]);
        if (model.p)
            snprintf(s->model, sizeof(s->model), "%.*s", (int)model.n, model.p);
        read_usage(s, &m[1]);
        s->started = true;
        return fwd;
    }
    if (strcmp(tname, "message_delta") == 0) {
        read_usage(s, &f[F_USAGE]);
        if (!s->passthrough && f[F_DELTA].type == J_OBJECT) {
            struct jval sr;
            if (jscan_get(f[F_DELTA].raw.p, f[F_DELTA].raw.n, "stop_reason", &sr) == 0 && sr.type == J_STRING) {
                struct str r = text_of(s, &sr);
                enum finish fin = anthropic_finish_from(r);
                if (fin == FINISH_TOOL_CALLS && s->ntools == 0)
                    fin = FINISH_STOP; /* only the emulated response_format tool was called */
                struct chat_delta d = {.kind = DELTA_FINISH, .finish = fin};
                emit(s, &d);
            }
        }
        if (s->usage.known) {
            struct chat_delta d = {.kind = DELTA_USAGE, .usage = s->usage};
            emit(s, &d);
        }
        return fwd;
    }
    if (strcmp(tname, "message_stop") == 0) {
        s->done = true;
        return fwd;
    }
    if (s->passthrough)
        return fwd; /* content events are relayed as they are */

    int64_t idx;
    if (strcmp(tname, "content_block_start") == 0) {
        if (block_index(&f[F_INDEX], &idx) != 0 || f[F_BLOCK].type != J_OBJECT)
            return malformed(err, "content_block_start");
        static const char *const bk[] = {"type", "id", "name", "text"};
        struct jval b[4];
        if (jscan_fields(f[F_BLOCK].raw.p, f[F_BLOCK].raw.n, bk, b, 4, NULL, NULL) != 0)
            return malformed(err, "content_block_start");
        if (jval_is_str(&b[0], "tool_use")) {
            if (s->json_tool[0] && jval_is_str(&b[2], s->json_tool)) {
                set_block(s, idx, BLOCK_JSON);
                return 0;
            }
            struct buf id = BUF_INIT(BUF_UNBOUNDED);
            jval_str(&b[1], &id);
            struct str name = text_of(s, &b[2]);
            int tool = s->ntools++;
            set_block(s, idx, tool);
            struct chat_delta d = {.kind = DELTA_TOOL_START,
                                   .tool_index = tool,
                                   .tool_id = str_make(id.data ? id.data : "", id.len),
                                   .tool_name = name.p ? name : STR_LIT("")};
            emit(s, &d);
            buf_free(&id);
        } else if (jval_is_str(&b[0], "text")) {
            set_block(s, idx, BLOCK_TEXT);
            struct str tx = text_of(s, &b[3]);
            if (tx.n) {
                struct chat_delta d = {.kind = DELTA_TEXT, .text = tx};
                emit(s, &d);
            }
        } else {
            set_block(s, idx, BLOCK_OTHER); /* thinking, server tools: not representable in chat deltas */
        }
        return 0;
    }
    if (strcmp(tname, "content_block_delta") == 0) {
        if (block_index(&f[F_INDEX], &idx) != 0 || f[F_DELTA].type != J_OBJECT)
            return malformed(err, "content_block_delta");
        static const char *const dk[] = {"type", "text", "partial_json"};
        struct jval d3[3];
        if (jscan_fields(f[F_DELTA].raw.p, f[F_DELTA].raw.n, dk, d3, 3, NULL, NULL) != 0)
            return malformed(err, "content_block_delta");
        int kind = block_kind(s, idx);
        if (jval_is_str(&d3[0], "text_delta")) {
            struct str tx = text_of(s, &d3[1]);
            if (tx.n) {
                struct chat_delta d = {.kind = DELTA_TEXT, .text = tx};
                emit(s, &d);
            }
        } else if (jval_is_str(&d3[0], "input_json_delta")) {
            struct str pj = text_of(s, &d3[2]);
            if (pj.n && kind == BLOCK_JSON) {
                struct chat_delta d = {.kind = DELTA_TEXT, .text = pj};
                emit(s, &d);
            } else if (pj.n && kind >= 0) {
                struct chat_delta d = {.kind = DELTA_TOOL_ARGS, .tool_index = kind, .text = pj};
                emit(s, &d);
            }
        }
        /* thinking_delta, signature_delta, citations_delta: dropped */
        return 0;
    }
    return 0; /* content_block_stop, and event types added later */
}

/* ---------- token counts (a translated request: another front door's client) ---------- */

static int anthropic_encode_count(const struct deployment *d, const cJSON *canon, struct up_request *r,
                                  struct gw_error *err)
{
    char json_tool[130];
    cJSON *req = anthropic_request_from_canonical(canon, d->model, false, 1, json_tool, sizeof(json_tool), err);
    if (req == NULL)
        return -1;
    static const char *const not_counted[] = {"max_tokens", "stream", "stop_sequences", "temperature", "top_p",
                                              "top_k", "metadata"};
    for (size_t i = 0; i < sizeof(not_counted) / sizeof(not_counted[0]); i++)
        cJSON_DeleteItemFromObjectCaseSensitive(req, not_counted[i]);
    char *txt = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (txt == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, txt);
    cJSON_free(txt);
    r->method = "POST";
    buf_printf(&r->url, "%s/v1/messages/count_tokens", d->base_url);
    if (d->api_key)
        up_request_header(r, "x-api-key", d->api_key);
    up_request_header(r, "anthropic-version", d->api_version ? d->api_version : "2023-06-01");
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", "application/json");
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
    return 0;
}

static int anthropic_decode_count(const char *body, size_t len, int64_t *n)
{
    struct jval v;
    return jscan_get(body, len, "input_tokens", &v) == 0 && jval_i64(&v, n) == 0 && *n >= 0 ? 0 : -1;
}

/* ---------- the provider ---------- */

static void on_delta(void *ud, const struct chat_delta *d)
{
    ex_attempt_delta(ud, d);
}

struct anthropic_stream *anthropic_attempt_state(struct attempt *a)
{
    if (a->pstate == NULL) {
        struct anthropic_stream *s = xmalloc(sizeof(*s));
        anthropic_stream_init(s, a->passthrough, on_delta, a);
        a->pstate = s;
    }
    return a->pstate;
}

static int encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    struct anthropic_stream *s = anthropic_attempt_state(a);
    if (a->op != OP_CHAT) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "Anthropic models do not serve embeddings");
        return -1;
    }
    r->method = "POST";
    buf_printf(&r->url, "%s/v1/messages", d->base_url);
    if (d->api_key)
        up_request_header(r, "x-api-key", d->api_key);
    up_request_header(r, "anthropic-version", d->api_version ? d->api_version : "2023-06-01");
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", a->stream ? "text/event-stream" : "application/json");
    if (a->passthrough) {
        /* betas change what the body means; the body is the client's, so are its betas */
        const struct str *beta = ex_attempt_client_header(a, "anthropic-beta");
        if (beta && beta->n < 1024 && memchr(beta->p, '\r', beta->n) == NULL && memchr(beta->p, '\n', beta->n) == NULL)
            buf_printf(&r->headers, "anthropic-beta: %.*s\n", (int)beta->n, beta->p);
    }
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
    if (a->passthrough) {
        struct str body = ex_attempt_client_body(a);
        if (anthropic_splice_model(body.p, body.n, d->model, &r->body) != 0) {
            gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "request body is not a JSON object with a model");
            return -1;
        }
        return 0;
    }
    const cJSON *canon = ex_attempt_canonical(a, err);
    if (canon == NULL)
        return -1;
    static const char *const read[] = {"max_completion_tokens", "max_tokens", "stop", "temperature", "top_p",
                                       "top_k", "user", "tools", "response_format", "tool_choice",
                                       "parallel_tool_calls", NULL};
    if (canon_note_unread(a, canon, read, err) != 0)
        return -1;
    int64_t max = ex_attempt_max_tokens(a);
    cJSON *req = anthropic_request_from_canonical(canon, d->model, a->stream,
                                                  max > 0 ? max : ex_attempt_default_max_tokens(a), s->json_tool,
                                                  sizeof(s->json_tool), err);
    if (req == NULL)
        return -1;
    char *txt = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (txt == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, txt);
    cJSON_free(txt);
    return 0;
}

static int decode_response(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err)
{
    *out = NULL;
    struct anthropic_stream *s = anthropic_attempt_state(a);
    if (a->passthrough) {
        size_t off;
        const char *msg;
        if (jscan_validate(body, len, &off, &msg) != 0) {
            gw_error_set(err, 502, GW_ERR_API, "upstream %s returned invalid JSON (%s at byte %zu)", a->dep->label,
                         msg, off);
            err->from_upstream = true;
            err->retryable = true;
            return -1;
        }
        anthropic_extract_usage(body, len, &a->usage);
        usage_check(&a->usage, a->dep ? a->dep->label : NULL);
        struct jval m;
        struct buf mb = BUF_INIT(sizeof(a->response_model) - 1);
        if (jscan_get(body, len, "model", &m) == 0 && jval_str(&m, &mb) == 0 && mb.len)
            memcpy(a->response_model, mb.data, mb.len + 1);
        buf_free(&mb);
        return 0;
    }
    cJSON *t = anthropic_message_to_canonical(body, len, ex_attempt_response_id(a), ex_attempt_public_model(a), ex_attempt_created(a),
                                              s->json_tool, &a->usage, a->response_model,
                                              sizeof(a->response_model), err);
    if (t == NULL) {
        err->retryable = true;
        return -1;
    }
    usage_check(&a->usage, a->dep ? a->dep->label : NULL);
    *out = t;
    return 0;
}

static int decode_stream_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    struct anthropic_stream *s = anthropic_attempt_state(a);
    int rc = anthropic_stream_event(s, ev->event, ev->data, err);
    a->ev_checked = s->checked;
    if (rc >= 0 && s->untouched)
        return rc == 1 ? EV_FORWARD : EV_CONSUMED; /* nothing read: usage, model and the terminal flag as they were */
    /* counts a dropped usage once: the flag stays in s->usage */
    usage_check(&s->usage, a->dep ? a->dep->label : NULL);
    if (s->usage.known || s->usage.invalid)
        a->usage = s->usage;
    if (s->model[0] && !a->response_model[0])
        snprintf(a->response_model, sizeof(a->response_model), "%s", s->model);
    a->stream_done = s->done;
    if (rc < 0) {
        if (!a->passthrough && err->status == 529)
            err->status = 503; /* 529 is Anthropic's own; OpenAI clients know 503 */
        return -1;
    }
    return rc == 1 ? EV_FORWARD : EV_CONSUMED;
}

static int extract_usage(const char *body, size_t len, struct usage *u)
{
    return anthropic_extract_usage(body, len, u);
}

static void map_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err)
{
    anthropic_map_error(status, body, len, err);
    /* 529 overloaded is Anthropic's own status: its SDKs know it, OpenAI clients and most proxies do not */
    if (status == 529 && !a->passthrough)
        err->status = 503;
    ex_attempt_scrub_error(a, err); /* no key quoted back; a 401/403 is agentd's failure (502) */
}

static void free_state(struct attempt *a)
{
    struct anthropic_stream *s = a->pstate;
    if (s == NULL)
        return;
    anthropic_stream_free(s);
    xfree(s);
    a->pstate = NULL;
}

const struct provider_ops provider_anthropic = {
    .name = "anthropic",
    .wire = WIRE_ANTHROPIC,
    .framing = FRAMING_SSE,
    .supports_embeddings = false,
    .encode_request = encode,
    .decode_response = decode_response,
    .decode_stream_event = decode_stream_event,
    .extract_usage = extract_usage,
    .map_error = map_error,
    .free_state = free_state,
    .encode_count = anthropic_encode_count,
    .decode_count = anthropic_decode_count,
};
