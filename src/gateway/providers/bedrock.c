/* bedrock.c: AWS Bedrock runtime through the Converse API:
 *   POST {base}/model/{modelId}/converse, /model/{modelId}/converse-stream (AWS event-stream framing),
 * signed with SigV4 (service "bedrock", the deployment's region) by sigv4.c. A translating provider: the
 * canonical (OpenAI chat shaped) request becomes a Converse request, the response a canonical chat.completion,
 * stream events struct chat_delta. Rules and what is unsupported: docs/gateway-gemini-bedrock.md. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/registry.h"
#include "gateway/providers/canon.h"
#include "gateway/redact.h"
#include "gateway/cloud_creds.h"
#include "gateway/sigv4.h"

#define BEDROCK_MAX_BLOCKS 1024 /* content blocks tracked in one streamed message */
#define TOOL_ID_MAX 64          /* Bedrock: toolUseId [a-zA-Z0-9_-]{1,64} */

struct block_map {
    int block, tool;
};

/* Stream decoder state. emit is a seam for tests and fuzzers (NULL: deltas go to the client). */
struct bedrock_stream {
    void (*emit)(void *ud, const struct chat_delta *d);
    void *emit_ud;
    int ntools;
    struct block_map *map; /* content block index -> tool index */
    int nmap, capmap;
    bool finished;
};

static struct bedrock_stream *stream_state(struct attempt *a)
{
    if (a->pstate == NULL)
        a->pstate = xcalloc(1, sizeof(struct bedrock_stream));
    return a->pstate;
}

static void emit(struct attempt *a, const struct chat_delta *d)
{
    struct bedrock_stream *st = a->pstate;
    if (st && st->emit)
        st->emit(st->emit_ud, d);
    else
        ex_attempt_delta(a, d);
}

static void bedrock_free_state(struct attempt *a)
{
    struct bedrock_stream *st = a->pstate;
    if (st)
        xfree(st->map);
    xfree(st);
    a->pstate = NULL;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* ---------- request ---------- */

/* Tool ids must match [a-zA-Z0-9_-]{1,64}. Ids minted elsewhere (another provider's, a client's own) that do not
 * are replaced by a stable digest, the same for the toolUse and its toolResult. */
static void tool_id(const char *id, char out[TOOL_ID_MAX + 1])
{
    size_t n = id ? strlen(id) : 0;
    bool okid = n > 0 && n <= TOOL_ID_MAX;
    for (size_t i = 0; okid && i < n; i++) {
        char c = id[i];
        okid = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    if (okid) {
        memcpy(out, id, n + 1);
        return;
    }
    char hex[65];
    sigv4_sha256_hex(id ? id : "", n, hex);
    snprintf(out, TOOL_ID_MAX + 1, "tooluse_h%.40s", hex);
}

static const char *image_format(struct str mime)
{
    if (str_eq_nocase_cstr(mime, "image/png"))
        return "png";
    if (str_eq_nocase_cstr(mime, "image/jpeg") || str_eq_nocase_cstr(mime, "image/jpg"))
        return "jpeg";
    if (str_eq_nocase_cstr(mime, "image/gif"))
        return "gif";
    if (str_eq_nocase_cstr(mime, "image/webp"))
        return "webp";
    return NULL;
}

static const char *image_format_of_url(const char *url)
{
    const char *end = url + strcspn(url, "?#");
    const char *dot = end;
    while (dot > url && dot[-1] != '.' && dot[-1] != '/')
        dot--;
    if (dot == url || dot[-1] != '.')
        return NULL;
    size_t n = (size_t)(end - dot);
    if (n == 3 && strncasecmp(dot, "png", 3) == 0)
        return "png";
    if ((n == 3 && strncasecmp(dot, "jpg", 3) == 0) || (n == 4 && strncasecmp(dot, "jpeg", 4) == 0))
        return "jpeg";
    if (n == 3 && strncasecmp(dot, "gif", 3) == 0)
        return "gif";
    if (n == 4 && strncasecmp(dot, "webp", 4) == 0)
        return "webp";
    return NULL;
}

static const char *document_format(struct str mime)
{
    static const struct {
        const char *mime, *fmt;
    } map[] = {
        {"application/pdf", "pdf"},
        {"text/csv", "csv"},
        {"application/msword", "doc"},
        {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"},
        {"application/vnd.ms-excel", "xls"},
        {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"},
        {"text/html", "html"},
        {"text/plain", "txt"},
        {"text/markdown", "md"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (str_eq_nocase_cstr(mime, map[i].mime))
            return map[i].fmt;
    return NULL;
}

static cJSON *bytes_source(struct str data)
{
    cJSON *src = cJSON_CreateObject();
    char *d = str_dup(data);
    cJSON_AddStringToObject(src, "bytes", d);
    xfree(d);
    return src;
}

static cJSON *text_block(const char *text)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "text", text);
    return b;
}

/* An Anthropic cache_control carried on a canonical item (canon.h) -> a Converse cachePoint block appended to
 * blocks right after the item's own block(s): the same prefix is cached. The ttl travels when Converse knows it
 * (5m, 1h); a marker with nothing before it in blocks has nothing to cache and is left out. */
static void cache_point(const cJSON *item, cJSON *blocks)
{
    const cJSON *cc = canon_cache_marker(item);
    if (cc == NULL || blocks == NULL || blocks->child == NULL)
        return;
    cJSON *b = cJSON_CreateObject();
    cJSON *cp = cJSON_AddObjectToObject(b, "cachePoint");
    cJSON_AddStringToObject(cp, "type", "default");
    const char *ttl = canon_str(cc, "ttl");
    if (ttl && (strcmp(ttl, "5m") == 0 || strcmp(ttl, "1h") == 0))
        cJSON_AddStringToObject(cp, "ttl", ttl);
    cJSON_AddItemToArray(blocks, b);
}

/* Bedrock document names: alphanumerics, single spaces, hyphens, parentheses, square brackets; unique. */
static void document_name(const char *filename, int n, char *out, size_t size)
{
    size_t j = 0;
    for (const char *p = filename; p && *p && *p != '.' && j + 1 < size && j < 200; p++) {
        char c = *p;
        bool okc = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '(' ||
                   c == ')' || c == '[' || c == ']';
        if (c == ' ' && j > 0 && out[j - 1] != ' ')
            out[j++] = ' ';
        else if (okc)
            out[j++] = c;
    }
    while (j > 0 && out[j - 1] == ' ')
        j--;
    out[j] = '\0';
    if (j == 0)
        snprintf(out, size, "document-%d", n + 1);
    else if (n > 0 && j + 8 < size)
        snprintf(out + j, size - j, " (%d)", n + 1);
}

static int user_blocks(const cJSON *content, cJSON *blocks, int mi, struct gw_error *err)
{
    if (cJSON_IsString(content)) {
        if (content->valuestring[0])
            cJSON_AddItemToArray(blocks, text_block(content->valuestring));
        return 0;
    }
    if (content == NULL || cJSON_IsNull(content))
        return 0;
    if (!cJSON_IsArray(content))
        return gw_bad_request(err, "messages", "messages[%d].content must be a string or an array of parts", mi);
    const cJSON *part;
    int pi = 0, ndocs = 0;
    cJSON_ArrayForEach(part, content)
    {
        const char *type = canon_str(part, "type");
        if (type == NULL)
            return gw_bad_request(err, "messages", "messages[%d].content[%d] has no type", mi, pi);
        if (strcmp(type, "text") == 0) {
            const char *text = canon_str(part, "text");
            if (text && *text)
                cJSON_AddItemToArray(blocks, text_block(text));
        } else if (strcmp(type, "image_url") == 0) {
            const cJSON *iu = get(part, "image_url");
            const char *url = cJSON_IsString(iu) ? iu->valuestring : canon_str(iu, "url");
            struct str mime, data;
            const char *fmt = NULL;
            cJSON *src = NULL;
            if (url && canon_data_url(url, &mime, &data) == 0) {
                fmt = image_format(mime);
                src = fmt ? bytes_source(data) : NULL;
            } else if (url && strncmp(url, "s3://", 5) == 0) {
                fmt = image_format_of_url(url);
                if (fmt) {
                    src = cJSON_CreateObject();
                    cJSON_AddStringToObject(cJSON_AddObjectToObject(src, "s3Location"), "uri", url);
                }
            }
            if (src == NULL)
                return gw_bad_request(err, "messages",
                                      "messages[%d].content[%d]: provider bedrock takes images as base64 data URLs "
                                      "(png, jpeg, gif, webp) or s3:// URLs; agentd does not fetch http URLs",
                                      mi, pi);
            cJSON *b = cJSON_CreateObject();
            cJSON *img = cJSON_AddObjectToObject(b, "image");
            cJSON_AddStringToObject(img, "format", fmt);
            cJSON_AddItemToObject(img, "source", src);
            cJSON_AddItemToArray(blocks, b);
        } else if (strcmp(type, "file") == 0) {
            const cJSON *f = get(part, "file");
            const char *fdata = canon_str(f, "file_data");
            struct str mime, data;
            const char *fmt = NULL;
            if (fdata && canon_data_url(fdata, &mime, &data) == 0)
                fmt = document_format(mime);
            if (fmt == NULL)
                return gw_bad_request(err, "messages",
                                      "messages[%d].content[%d]: provider bedrock takes files as base64 data URLs of "
                                      "pdf, csv, doc, docx, xls, xlsx, html, txt or md",
                                      mi, pi);
            char name[220];
            document_name(canon_str(f, "filename"), ndocs++, name, sizeof(name));
            cJSON *b = cJSON_CreateObject();
            cJSON *doc = cJSON_AddObjectToObject(b, "document");
            cJSON_AddStringToObject(doc, "format", fmt);
            cJSON_AddStringToObject(doc, "name", name);
            cJSON_AddItemToObject(doc, "source", bytes_source(data));
            cJSON_AddItemToArray(blocks, b);
        } else {
            return gw_bad_request(err, "messages",
                                  "messages[%d].content[%d]: part type '%s' is not supported by "
                                  "provider bedrock",
                                  mi, pi, type);
        }
        cache_point(part, blocks);
        pi++;
    }
    return 0;
}

/* Names of the tools a conversation uses, for the toolConfig Bedrock requires whenever tool blocks appear. */
struct names {
    char *v[64];
    int n;
};

static void names_add(struct names *ns, const char *name)
{
    for (int i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], name) == 0)
            return;
    if (ns->n < 64)
        ns->v[ns->n++] = xstrdup(name);
}

static void names_free(struct names *ns)
{
    for (int i = 0; i < ns->n; i++)
        xfree(ns->v[i]);
    ns->n = 0;
}

static int assistant_blocks(const cJSON *m, cJSON *blocks, int mi, struct names *used, struct gw_error *err)
{
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    canon_content_text(get(m, "content"), "", &text);
    if (str_trim(str_make(text.data ? text.data : "", text.len)).n)
        cJSON_AddItemToArray(blocks, text_block(text.data));
    buf_free(&text);
    /* the text parts travel as one block: a marker on any of them caches through it */
    const cJSON *part, *marked = NULL, *parts = get(m, "content");
    if (!cJSON_IsArray(parts))
        parts = NULL;
    cJSON_ArrayForEach(part, parts)
    if (canon_cache_marker(part))
        marked = part;
    cache_point(marked, blocks);
    if (get(m, "function_call") && !get(m, "tool_calls"))
        return gw_bad_request(err, "messages",
                              "messages[%d]: the deprecated function_call is not supported by provider "
                              "bedrock; use tool_calls",
                              mi);
    const cJSON *tc;
    int ti = 0;
    cJSON_ArrayForEach(tc, get(m, "tool_calls"))
    {
        const cJSON *fn = get(tc, "function");
        const char *name = canon_str(fn, "name");
        const char *id = canon_str(tc, "id");
        const char *astr = canon_str(fn, "arguments");
        if (astr && canon_json_has_nul(astr, strlen(astr), NULL, 0)) {
            /* arguments are JSON in a string: a \u0000 in them would be cut when they are parsed */
            return canon_nul_refused(err, "messages");
        }
        cJSON *args = canon_parse_args(get(fn, "arguments"));
        if (name == NULL || id == NULL || args == NULL) {
            cJSON_Delete(args);
            return gw_bad_request(err, "messages",
                                  "messages[%d].tool_calls[%d]: an id, a function name and JSON-object arguments are "
                                  "required",
                                  mi, ti);
        }
        char tid[TOOL_ID_MAX + 1];
        tool_id(id, tid);
        cJSON *b = cJSON_CreateObject();
        cJSON *tu = cJSON_AddObjectToObject(b, "toolUse");
        cJSON_AddStringToObject(tu, "toolUseId", tid);
        cJSON_AddStringToObject(tu, "name", name);
        cJSON_AddItemToObject(tu, "input", args);
        cJSON_AddItemToArray(blocks, b);
        cache_point(tc, blocks);
        names_add(used, name);
        ti++;
    }
    return 0;
}

static int tool_result_block(const cJSON *m, cJSON *blocks, int mi, struct gw_error *err)
{
    const char *id = canon_str(m, "tool_call_id");
    if (id == NULL)
        return gw_bad_request(err, "messages", "messages[%d]: a tool message needs tool_call_id", mi);
    char tid[TOOL_ID_MAX + 1];
    tool_id(id, tid);
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    canon_content_text(get(m, "content"), " ", &text);
    cJSON *b = cJSON_CreateObject();
    cJSON *tr = cJSON_AddObjectToObject(b, "toolResult");
    cJSON_AddStringToObject(tr, "toolUseId", tid);
    cJSON *content = cJSON_AddArrayToObject(tr, "content");
    /* Bedrock refuses blank text blocks: an empty result still says that it is empty */
    cJSON_AddItemToArray(content, text_block(text.len ? text.data : "(empty)"));
    buf_free(&text);
    cJSON_AddItemToArray(blocks, b);
    cache_point(m, blocks);
    return 0;
}

static cJSON *tool_spec(const char *name, const char *desc, const cJSON *params)
{
    cJSON *t = cJSON_CreateObject();
    cJSON *spec = cJSON_AddObjectToObject(t, "toolSpec");
    cJSON_AddStringToObject(spec, "name", name);
    if (desc && *desc)
        cJSON_AddStringToObject(spec, "description", desc);
    cJSON *schema = cJSON_AddObjectToObject(spec, "inputSchema");
    if (cJSON_IsObject(params)) {
        cJSON_AddItemToObject(schema, "json", cJSON_Duplicate(params, 1));
    } else {
        cJSON *j = cJSON_AddObjectToObject(schema, "json");
        cJSON_AddStringToObject(j, "type", "object");
        cJSON_AddObjectToObject(j, "properties");
    }
    return t;
}

static int add_tool_config(const cJSON *canon, cJSON *req, const struct names *used, struct gw_error *err)
{
    const cJSON *tools = get(canon, "tools");
    const cJSON *tc = get(canon, "tool_choice");
    bool none = cJSON_IsString(tc) && strcmp(tc->valuestring, "none") == 0;
    bool have_tools = cJSON_IsArray(tools) && tools->child != NULL;
    /* Bedrock has no "none": the tools are left out, unless the conversation holds tool blocks, which require a
     * toolConfig (then the model may still call a tool). */
    if ((!have_tools || none) && used->n == 0)
        return 0;
    cJSON *cfg = cJSON_AddObjectToObject(req, "toolConfig");
    cJSON *arr = cJSON_AddArrayToObject(cfg, "tools");
    if (have_tools) {
        const cJSON *t;
        int i = 0;
        cJSON_ArrayForEach(t, tools)
        {
            const char *type = canon_str(t, "type");
            const cJSON *fn = get(t, "function");
            const char *name = canon_str(fn, "name");
            if ((type && strcmp(type, "function") != 0) || name == NULL)
                return gw_bad_request(err, "tools",
                                      "tools[%d]: only function tools with a name are supported by "
                                      "provider bedrock",
                                      i);
            cJSON_AddItemToArray(arr, tool_spec(name, canon_str(fn, "description"), get(fn, "parameters")));
            cache_point(t, arr);
            i++;
        }
    }
    /* tools the history used but the request no longer defines */
    for (int i = 0; i < used->n; i++) {
        bool defined = false;
        const cJSON *t;
        cJSON_ArrayForEach(t, arr)
        {
            const char *n = canon_str(get(t, "toolSpec"), "name");
            if (n && strcmp(n, used->v[i]) == 0)
                defined = true;
        }
        if (!defined)
            cJSON_AddItemToArray(arr, tool_spec(used->v[i], NULL, NULL));
    }
    if (none || tc == NULL || cJSON_IsNull(tc))
        return 0;
    cJSON *choice = cJSON_CreateObject();
    if (cJSON_IsString(tc) && strcmp(tc->valuestring, "auto") == 0) {
        cJSON_AddObjectToObject(choice, "auto");
    } else if (cJSON_IsString(tc) && strcmp(tc->valuestring, "required") == 0) {
        cJSON_AddObjectToObject(choice, "any");
    } else if (cJSON_IsObject(tc) && canon_str(get(tc, "function"), "name")) {
        cJSON_AddStringToObject(cJSON_AddObjectToObject(choice, "tool"), "name",
                                canon_str(get(tc, "function"), "name"));
    } else {
        cJSON_Delete(choice);
        return gw_bad_request(err, "tool_choice", "tool_choice must be none, auto, required or a function");
    }
    cJSON_AddItemToObject(cfg, "toolChoice", choice);
    return 0;
}

/* max_tokens: the exchange's (ex_attempt_max_tokens), -1 when the client set none. */
static int add_inference_config(const cJSON *canon, int64_t max_tokens, cJSON *req, struct gw_error *err)
{
    cJSON *ic = cJSON_CreateObject();
    if (max_tokens > 0)
        cJSON_AddNumberToObject(ic, "maxTokens", (double)max_tokens);
    const cJSON *temp = get(canon, "temperature");
    if (cJSON_IsNumber(temp)) /* OpenAI allows 0..2, Converse 0..1 */
        cJSON_AddNumberToObject(ic, "temperature", temp->valuedouble > 1 ? 1 : temp->valuedouble);
    const cJSON *top_p = get(canon, "top_p");
    if (cJSON_IsNumber(top_p))
        cJSON_AddNumberToObject(ic, "topP", top_p->valuedouble);
    const cJSON *stop = get(canon, "stop");
    if (cJSON_IsString(stop)) {
        cJSON_AddItemToArray(cJSON_AddArrayToObject(ic, "stopSequences"), cJSON_CreateString(stop->valuestring));
    } else if (cJSON_IsArray(stop) && stop->child) {
        cJSON_AddItemToObject(ic, "stopSequences", cJSON_Duplicate(stop, 1));
    }
    if (ic->child)
        cJSON_AddItemToObject(req, "inferenceConfig", ic);
    else
        cJSON_Delete(ic);
    const char *rft = canon_str(get(canon, "response_format"), "type");
    if (rft && strcmp(rft, "json_schema") == 0)
        return gw_bad_request(err, "response_format",
                              "response_format json_schema is not supported by provider bedrock (Converse has no "
                              "structured output); use tools, or json_object");
    return 0;
}

/* A system message's text -> Converse system blocks: one block, its parts joined by newlines, split after each
 * part with a cache marker so that the cachePoint follows exactly the text it caches. */
static void system_blocks(const cJSON *content, cJSON *system)
{
    struct buf t = BUF_INIT(BUF_UNBOUNDED);
    if (!cJSON_IsArray(content)) {
        canon_content_text(content, "\n", &t);
        if (t.len)
            cJSON_AddItemToArray(system, text_block(t.data));
        buf_free(&t);
        return;
    }
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const char *type = canon_str(part, "type"), *text = canon_str(part, "text");
        if (type && strcmp(type, "text") == 0 && text) {
            if (t.len)
                buf_append(&t, "\n", 1);
            buf_append_str(&t, text);
        }
        if (canon_cache_marker(part) && t.len) {
            cJSON_AddItemToArray(system, text_block(t.data));
            buf_reset(&t);
            cache_point(part, system);
        }
    }
    if (t.len)
        cJSON_AddItemToArray(system, text_block(t.data));
    buf_free(&t);
}

/* Canonical chat request -> Converse request. NULL with err (400) when it cannot be expressed. */
static cJSON *build_converse(const cJSON *canon, int64_t max_tokens, struct gw_error *err)
{
    const cJSON *msgs = get(canon, "messages");
    if (!cJSON_IsArray(msgs) || msgs->child == NULL) {
        gw_bad_request(err, "messages", "'messages' must be a non-empty array");
        return NULL;
    }
    struct names used = {0};
    cJSON *req = cJSON_CreateObject();
    cJSON *messages = cJSON_AddArrayToObject(req, "messages");
    cJSON *system = NULL;
    cJSON *cur = NULL;
    const char *cur_role = NULL;
    const cJSON *m;
    int mi = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = canon_str(m, "role");
        if (role == NULL) {
            gw_bad_request(err, "messages", "messages[%d] has no role", mi);
            goto fail;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            if (system == NULL)
                system = cJSON_AddArrayToObject(req, "system");
            system_blocks(get(m, "content"), system);
            mi++;
            continue;
        }
        const char *brole = strcmp(role, "assistant") == 0 ? "assistant" : "user";
        cJSON *blocks = cJSON_CreateArray();
        int rc;
        if (strcmp(role, "user") == 0)
            rc = user_blocks(get(m, "content"), blocks, mi, err);
        else if (strcmp(role, "assistant") == 0)
            rc = assistant_blocks(m, blocks, mi, &used, err);
        else if (strcmp(role, "tool") == 0)
            rc = tool_result_block(m, blocks, mi, err);
        else
            rc = gw_bad_request(err, "messages", "messages[%d]: role '%s' is not supported by provider bedrock", mi,
                                role);
        if (rc != 0) {
            cJSON_Delete(blocks);
            goto fail;
        }
        mi++;
        if (blocks->child == NULL) {
            cJSON_Delete(blocks); /* Bedrock refuses empty content */
            continue;
        }
        if (cur && strcmp(cur_role, brole) == 0) {
            /* Converse wants strictly alternating turns: consecutive messages of one role (parallel tool results
             * above all) merge into one */
            canon_array_splice(cJSON_GetObjectItemCaseSensitive(cur, "content"), blocks);
            cJSON_Delete(blocks);
            continue;
        }
        if (cur == NULL && strcmp(brole, "assistant") == 0) {
            /* Converse conversations start with a user turn; an assistant opening (a greeting) gets a minimal one */
            cJSON *u = cJSON_CreateObject();
            cJSON_AddStringToObject(u, "role", "user");
            cJSON_AddItemToArray(cJSON_AddArrayToObject(u, "content"), text_block("."));
            cJSON_AddItemToArray(messages, u);
        }
        cur = cJSON_CreateObject();
        cJSON_AddStringToObject(cur, "role", brole);
        cJSON_AddItemToObject(cur, "content", blocks);
        cJSON_AddItemToArray(messages, cur);
        cur_role = brole;
    }
    if (cur == NULL) {
        gw_bad_request(err, "messages", "the request has no user or assistant content for Bedrock to answer");
        goto fail;
    }
    if (system && system->child == NULL)
        cJSON_DeleteItemFromObjectCaseSensitive(req, "system"); /* system messages without text */
    if (add_inference_config(canon, max_tokens, req, err) != 0 || add_tool_config(canon, req, &used, err) != 0)
        goto fail;
    names_free(&used);
    return req;
fail:
    names_free(&used);
    cJSON_Delete(req);
    return NULL;
}

/* "https://host[:port][/prefix]" -> authority (Host) and path prefix. */
static int split_base(const char *base, struct buf *host, struct buf *prefix)
{
    const char *p = strstr(base, "://");
    if (p == NULL)
        return -1;
    p += 3;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at)
        p = at + 1;
    if (end == p)
        return -1;
    buf_append(host, p, (size_t)(end - p));
    buf_append_str(prefix, slash ? slash : "");
    return 0;
}

/* URL, Host and the SigV4 signature of a POST of r->body to {base_url}/model/{model}{suffix}. */
static int sign_post(const struct deployment *d, struct up_request *r, const char *suffix, const char *accept,
                     struct gw_error *err)
{
    int rc = -1;
    struct buf host = BUF_INIT(1024), path = BUF_INIT(8192), mpath = BUF_INIT(8192);
    if (split_base(d->base_url, &host, &path) != 0) {
        gw_error_set(err, 500, GW_ERR_API, "deployment %s: base_url is not an absolute URL", d->label);
        goto out;
    }
    buf_append_str(&mpath, "/model/");
    sigv4_uri_encode(d->model, strlen(d->model), false, &mpath); /* ':' -> %3A, '/' (ARNs) -> %2F */
    buf_append_str(&mpath, suffix);
    buf_append(&path, mpath.data, mpath.len); /* the path as sent: base_url's own path, then ours */
    r->method = "POST";
    buf_printf(&r->url, "%s%s", d->base_url, mpath.data);
    up_request_header(r, "Host", host.data);
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", accept);
    static const char *const names[] = {"content-type"};
    static const char *const values[] = {"application/json"};
    /* A cloud identity (web identity, container credentials: cloud_creds.h) wins over the static keys; its
     * snapshot is held only while signing. */
    struct cc_snap *snap = NULL;
    if (d->creds) {
        char why[600];
        enum cc_status st = cc_acquire(d->creds, &snap, why, sizeof(why));
        if (st != CC_OK) {
            cc_error_set(err, d->label, d->creds, st, why);
            goto out;
        }
    }
    struct sigv4_params sp = {
        .access_key_id = snap ? snap->c.access_key_id : d->aws_access_key_id,
        .secret_access_key = snap ? snap->c.secret_access_key : d->aws_secret_access_key,
        .session_token = snap ? snap->c.session_token : d->aws_session_token,
        .region = d->region ? d->region : "us-east-1",
        .service = "bedrock",
        .method = "POST",
        .host = host.data,
        .path = path.data,
        .header_names = names,
        .header_values = values,
        .nheaders = 1,
        .body = r->body.data,
        .body_len = r->body.len,
        .now = time(NULL),
        .content_sha256_header = true,
    };
    int signed_rc = sigv4_sign(&sp, &r->headers, NULL, NULL);
    cc_release(snap);
    if (signed_rc != 0) {
        gw_error_set(err, 500, GW_ERR_API, "deployment %s: could not sign the request", d->label);
        goto out;
    }
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
    rc = 0;
out:
    buf_free(&host);
    buf_free(&path);
    buf_free(&mpath);
    return rc;
}

/* CountTokens: POST /model/{id}/count-tokens with the Converse input (messages, system, toolConfig). */
static int bedrock_encode_count(const struct deployment *d, const cJSON *canon, struct up_request *r,
                                struct gw_error *err)
{
    if (d->creds == NULL && (d->aws_access_key_id == NULL || d->aws_secret_access_key == NULL)) {
        gw_error_set(err, 503, GW_ERR_OVERLOADED, "deployment %s has no AWS credentials", d->label);
        return -1;
    }
    cJSON *conv = build_converse(canon, -1, err);
    if (conv == NULL)
        return -1;
    cJSON *keep = cJSON_CreateObject();
    static const char *const fields[] = {"messages", "system", "toolConfig"};
    for (size_t i = 0; i < 3; i++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(conv, fields[i]);
        if (v)
            cJSON_AddItemToObject(keep, fields[i], v);
    }
    cJSON_Delete(conv);
    cJSON *body = cJSON_CreateObject();
    cJSON *input = cJSON_AddObjectToObject(body, "input");
    cJSON_AddItemToObject(input, "converse", keep);
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, s);
    cJSON_free(s);
    return sign_post(d, r, "/count-tokens", "application/json", err);
}

static int bedrock_decode_count(const char *body, size_t len, int64_t *n)
{
    struct jval v;
    return jscan_get(body, len, "inputTokens", &v) == 0 && jval_i64(&v, n) == 0 && *n >= 0 ? 0 : -1;
}

static int bedrock_encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    if (a->op == OP_EMBEDDINGS) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST,
                     "model does not support embeddings: deployment %s (provider bedrock) serves chat through "
                     "Converse only",
                     d->label);
        snprintf(err->param, sizeof(err->param), "model");
        return -1;
    }
    if (d->creds == NULL && (d->aws_access_key_id == NULL || d->aws_secret_access_key == NULL)) {
        gw_error_set(err, 503, GW_ERR_OVERLOADED,
                     "deployment %s has no AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)", d->label);
        return -1;
    }
    const cJSON *canon = ex_attempt_canonical(a, err);
    if (canon == NULL)
        return -1;
    static const char *const read[] = {"max_completion_tokens", "max_tokens", "stop", "temperature", "top_p",
                                       "tools", "response_format", "tool_choice", CANON_CACHE_CONTROL, NULL};
    if (canon_note_unread(a, canon, read, err) != 0)
        return -1;
    cJSON *body = build_converse(canon, ex_attempt_max_tokens(a), err);
    if (body == NULL)
        return -1;
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, s);
    cJSON_free(s);

    return sign_post(d, r, a->stream ? "/converse-stream" : "/converse",
                     a->stream ? "application/vnd.amazon.eventstream" : "application/json", err);
}

/* ---------- responses ---------- */

/* A token count, by the one rule for upstream usage (gw_types.h): absent -> 0, implausible -> out->invalid. */
static int64_t num(struct usage *u, const cJSON *o, const char *k)
{
    return usage_read_json(u, get(o, k));
}

/* Bedrock's inputTokens leaves out cache reads and writes; usage.input counts the whole prompt. False when there
 * is none, or it is dropped as implausible (out->invalid; the caller counts it with the deployment). */
static bool usage_from(const cJSON *u, struct usage *out)
{
    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(u))
        return false;
    out->known = true;
    out->cached_input = num(out, u, "cacheReadInputTokens");
    out->cache_write = num(out, u, "cacheWriteInputTokens");
    out->input = num(out, u, "inputTokens") + out->cached_input + out->cache_write;
    out->output = num(out, u, "outputTokens");
    return usage_check(out, NULL);
}

static enum finish map_stop(const char *s)
{
    if (s == NULL)
        return FINISH_NONE;
    if (strcmp(s, "tool_use") == 0)
        return FINISH_TOOL_CALLS;
    if (strcmp(s, "max_tokens") == 0 || strcmp(s, "model_context_window_exceeded") == 0)
        return FINISH_LENGTH;
    if (strcmp(s, "content_filtered") == 0 || strcmp(s, "guardrail_intervened") == 0)
        return FINISH_CONTENT_FILTER;
    return FINISH_STOP; /* end_turn, stop_sequence */
}

static int bedrock_decode_response(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err)
{
    *out = NULL;
    cJSON *t = cJSON_ParseWithLength(body, len);
    const cJSON *content = get(get(get(t, "output"), "message"), "content");
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(t);
        canon_malformed(a, err, "a malformed Converse response");
        return -1;
    }
    usage_from(get(t, "usage"), &a->usage);
    usage_check(&a->usage, a->dep ? a->dep->label : NULL);
    snprintf(a->response_model, sizeof(a->response_model), "%s", a->dep ? a->dep->model : "");
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    cJSON *tcs = cJSON_CreateArray();
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const char *tx = canon_str(b, "text");
        const cJSON *tu = get(b, "toolUse");
        if (tx) {
            buf_append_str(&text, tx);
        } else if (cJSON_IsObject(tu) && canon_str(tu, "toolUseId") && canon_str(tu, "name")) {
            const cJSON *input = get(tu, "input");
            char *js = input ? cJSON_PrintUnformatted(input) : NULL;
            cJSON *tc = cJSON_CreateObject();
            cJSON_AddStringToObject(tc, "id", canon_str(tu, "toolUseId"));
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", canon_str(tu, "name"));
            cJSON_AddStringToObject(fn, "arguments", js ? js : "{}");
            if (js)
                cJSON_free(js);
            cJSON_AddItemToArray(tcs, tc);
        }
        /* reasoningContent, citationsContent, ...: not relayed */
    }
    enum finish fin = map_stop(canon_str(t, "stopReason"));
    if (fin == FINISH_NONE)
        fin = tcs->child ? FINISH_TOOL_CALLS : FINISH_STOP;
    *out = canon_completion(a, text.data ? text.data : "", tcs, fin, &a->usage);
    buf_free(&text);
    cJSON_Delete(t);
    return 0;
}

static int tool_of_block(struct bedrock_stream *st, int block)
{
    for (int i = st->nmap - 1; i >= 0; i--)
        if (st->map[i].block == block)
            return st->map[i].tool;
    return -1;
}

/* An in-stream exception (or a ":message-type: error" message): type and JSON payload -> err. */
static void stream_exception(struct attempt *a, struct str type, struct str data, struct gw_error *err)
{
    static const struct {
        const char *name;
        int status;
        bool retryable;
    } map[] = {
        {"throttlingException", 429, true},       {"serviceUnavailableException", 503, true},
        {"internalServerException", 500, true},   {"modelTimeoutException", 408, true},
        {"modelStreamErrorException", 502, true}, {"validationException", 400, false},
        {"accessDeniedException", 403, false},    {"resourceNotFoundException", 404, false},
        {"modelNotReadyException", 429, true},    {"serviceQuotaExceededException", 429, true},
    };
    int status = 502;
    bool retryable = true;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (str_eq_nocase_cstr(type, map[i].name)) {
            status = map[i].status;
            retryable = map[i].retryable;
        }
    cJSON *t = cJSON_ParseWithLength(data.p, data.n);
    const char *msg = canon_str(t, "message");
    if (msg == NULL)
        msg = canon_str(t, "Message");
    char *raw = msg || cJSON_IsObject(t) ? NULL : str_dup(data);
    gw_error_set(err, status, gw_err_type_for_status(status), "upstream %s: %.*s: %s",
                 a->dep ? a->dep->label : "bedrock", STR_FMT(type),
                 msg           ? msg
                 : raw && *raw ? raw
                               : "stream error");
    err->from_upstream = true;
    err->retryable = retryable;
    snprintf(err->code, sizeof(err->code), "%.*s", STR_FMT(type));
    xfree(raw);
    cJSON_Delete(t);
}

static int bedrock_decode_stream_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    struct bedrock_stream *st = stream_state(a);
    if (ev->is_exception) {
        stream_exception(a, ev->event, ev->data, err);
        return -1;
    }
    cJSON *t = cJSON_ParseWithLength(ev->data.p, ev->data.n);
    if (!cJSON_IsObject(t)) {
        cJSON_Delete(t);
        canon_malformed(a, err, "a malformed stream event");
        return -1;
    }
    int rc = EV_CONSUMED;
    const cJSON *bi = get(t, "contentBlockIndex");
    int block = cJSON_IsNumber(bi) ? bi->valueint : 0;
    if (str_eq_cstr(ev->event, "contentBlockStart")) {
        const cJSON *tu = get(get(t, "start"), "toolUse");
        const char *id = canon_str(tu, "toolUseId"), *name = canon_str(tu, "name");
        if (id && name) {
            if (st->nmap == BEDROCK_MAX_BLOCKS) {
                canon_malformed(a, err, "a stream with too many content blocks");
                rc = -1;
                goto out;
            }
            if (st->nmap == st->capmap) {
                st->capmap = st->capmap ? st->capmap * 2 : 8;
                st->map = xrealloc(st->map, (size_t)st->capmap * sizeof(*st->map));
            }
            st->map[st->nmap++] = (struct block_map){block, st->ntools};
            struct chat_delta d = {.kind = DELTA_TOOL_START,
                                   .tool_index = st->ntools,
                                   .tool_id = str_from(id),
                                   .tool_name = str_from(name)};
            st->ntools++;
            emit(a, &d);
        }
    } else if (str_eq_cstr(ev->event, "contentBlockDelta")) {
        const cJSON *delta = get(t, "delta");
        const char *tx = canon_str(delta, "text");
        const char *input = canon_str(get(delta, "toolUse"), "input");
        if (tx && *tx) {
            struct chat_delta d = {.kind = DELTA_TEXT, .text = str_from(tx)};
            emit(a, &d);
        } else if (input) {
            int tool = tool_of_block(st, block);
            if (tool < 0) {
                canon_malformed(a, err, "tool input for a content block that did not start a tool call");
                rc = -1;
                goto out;
            }
            struct chat_delta d = {.kind = DELTA_TOOL_ARGS, .tool_index = tool, .text = str_from(input)};
            if (d.text.n)
                emit(a, &d);
        }
        /* reasoningContent deltas: not relayed */
    } else if (str_eq_cstr(ev->event, "messageStop")) {
        if (!st->finished) {
            st->finished = true;
            enum finish f = map_stop(canon_str(t, "stopReason"));
            if (f == FINISH_NONE)
                f = st->ntools ? FINISH_TOOL_CALLS : FINISH_STOP;
            struct chat_delta d = {.kind = DELTA_FINISH, .finish = f};
            emit(a, &d);
        }
        /* The answer is complete here. Bedrock sends the metadata event (usage) right after; a stream cut
         * between the two still delivered everything, only without usage. */
        a->stream_done = true;
    } else if (str_eq_cstr(ev->event, "metadata")) {
        struct usage u;
        if (usage_from(get(t, "usage"), &u)) {
            a->usage = u;
            struct chat_delta d = {.kind = DELTA_USAGE, .usage = u};
            emit(a, &d);
        } else if (u.invalid) {
            usage_check(&u, a->dep ? a->dep->label : NULL);
            a->usage = u;
        }
        a->stream_done = true;
    }
    /* messageStart, contentBlockStop and unknown events carry nothing to relay */
out:
    cJSON_Delete(t);
    return rc;
}

/* ---------- errors ---------- */

static void bedrock_map_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err)
{
    static const struct {
        const char *name;
        int status;
        bool retryable;
        const char *hint;
    } map[] = {
        {"ValidationException", 400, false, NULL},
        {"SerializationException", 400, false, NULL},
        {"AccessDeniedException", 403, false, NULL},
        {"ResourceNotFoundException", 404, false, NULL},
        {"ModelTimeoutException", 408, true, NULL},
        {"ThrottlingException", 429, true, NULL},
        {"ModelNotReadyException", 429, true, NULL},
        {"ServiceQuotaExceededException", 429, true, NULL},
        {"ModelErrorException", 502, true, NULL},
        {"InternalServerException", 500, true, NULL},
        {"ServiceUnavailableException", 503, true, NULL},
        {"InvalidSignatureException", 403, false,
         "AWS rejected agentd's request signature: check AWS_SECRET_ACCESS_KEY (and the deployment's region)"},
        {"IncompleteSignatureException", 403, false, "AWS rejected agentd's request signature"},
        {"UnrecognizedClientException", 403, false,
         "AWS does not recognise the credentials: check AWS_ACCESS_KEY_ID / AWS_SESSION_TOKEN"},
        {"MissingAuthenticationTokenException", 403, false, "the request reached AWS unsigned"},
        {"ExpiredTokenException", 403, false, "the AWS session token (AWS_SESSION_TOKEN) has expired"},
    };
    cJSON *t = cJSON_ParseWithLength(body, len);
    /* x-amzn-ErrorType: "ThrottlingException:http://internal.amazon.com/coral/..."; the body's "__type" may be
     * "namespace#ThrottlingException" */
    char type[128] = "";
    if (a->upstream_error_type[0]) {
        snprintf(type, sizeof(type), "%s", a->upstream_error_type);
    } else if (canon_str(t, "__type")) {
        const char *ty = canon_str(t, "__type");
        const char *hash = strrchr(ty, '#');
        snprintf(type, sizeof(type), "%s", hash ? hash + 1 : ty);
    }
    type[strcspn(type, ":")] = '\0';
    const char *msg = canon_str(t, "message");
    if (msg == NULL)
        msg = canon_str(t, "Message");
    int st = status;
    bool retryable = status == 429 || status == 408 || status >= 500;
    const char *hint = NULL;
    for (size_t i = 0; type[0] && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(type, map[i].name) == 0) {
            st = map[i].status;
            retryable = map[i].retryable;
            hint = map[i].hint;
        }
    if (st < 400 || st > 599)
        st = 502;
    /* AWS's signature messages go on with the canonical request: the first line says it all */
    int mlen = msg ? (int)strcspn(msg, "\n") : 0;
    const char *label = a->dep ? a->dep->label : "bedrock";
    if (hint)
        gw_error_set(err, st, gw_err_type_for_status(st), "upstream %s: %s (%s: %.*s)", label, hint, type, mlen,
                     msg ? msg : "");
    else if (msg)
        gw_error_set(err, st, gw_err_type_for_status(st), "%.*s", mlen, msg);
    else
        gw_error_set(err, st, gw_err_type_for_status(st), "upstream %s returned HTTP %d%s%s", label, status,
                     type[0] ? " " : "", type);
    err->from_upstream = true;
    err->retryable = retryable;
    if (type[0])
        str_lcpy(err->code, type, sizeof(err->code));
    cJSON_Delete(t);
    ex_attempt_scrub_error(a, err); /* no credential quoted back; a 401/403 is agentd's failure (502) */
}

static int bedrock_extract_usage(const char *body, size_t len, struct usage *u)
{
    cJSON *t = cJSON_ParseWithLength(body, len);
    int rc = usage_from(get(t, "usage"), u) ? 0 : -1;
    cJSON_Delete(t);
    return rc;
}

const struct provider_ops provider_bedrock = {
    .name = "bedrock",
    .wire = WIRE_NONE,
    .framing = FRAMING_AWS_EVENTSTREAM,
    .supports_embeddings = false,
    .encode_request = bedrock_encode,
    .decode_response = bedrock_decode_response,
    .decode_stream_event = bedrock_decode_stream_event,
    .extract_usage = bedrock_extract_usage,
    .map_error = bedrock_map_error,
    .free_state = bedrock_free_state,
    .encode_count = bedrock_encode_count,
    .decode_count = bedrock_decode_count,
};
