/* gemini.c: the Google Gemini API (generativelanguage.googleapis.com, or GEMINI_BASE_URL):
 *   POST {base}/v1beta/models/{model}:generateContent, :streamGenerateContent?alt=sse (SSE),
 *   :embedContent / :batchEmbedContents; the key travels in x-goog-api-key.
 * A translating provider: the canonical (OpenAI chat shaped) request becomes a GenerateContentRequest, the
 * response a canonical chat.completion, stream chunks struct chat_delta. The rules, and what is dropped and why,
 * are in docs/gateway-gemini-bedrock.md. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/registry.h"
#include "gateway/providers/canon.h"
#include "gateway/providers/gemini.h"
#include "gateway/redact.h"
#include "gateway/sigv4.h"

/* Stream decoder state. emit is a seam for tests and fuzzers (NULL: deltas go to the client). */
struct gemini_stream {
    void (*emit)(void *ud, const struct chat_delta *d);
    void *emit_ud;
    int ntools;
    bool finished;
};

static struct gemini_stream *stream_state(struct attempt *a)
{
    if (a->pstate == NULL)
        a->pstate = xcalloc(1, sizeof(struct gemini_stream));
    return a->pstate;
}

static void emit(struct attempt *a, const struct chat_delta *d)
{
    struct gemini_stream *st = a->pstate;
    if (st && st->emit)
        st->emit(st->emit_ud, d);
    else
        ex_attempt_delta(a, d);
}

static void gemini_free_state(struct attempt *a)
{
    xfree(a->pstate);
    a->pstate = NULL;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* ---------- thought signatures ----------
 * Gemini 2.5+ returns an opaque thoughtSignature on functionCall parts and (Gemini 3) refuses a later turn whose
 * function calls come back without it. OpenAI's format has nowhere to keep it, but clients echo tool-call ids
 * verbatim, so the signature rides in the id: "call_<24 hex>_ts_<base64url signature>". */

#define TS_MARK "_ts_"

static void tool_id_with_signature(const char *sig, struct buf *out)
{
    char id[40];
    canon_tool_call_id(id, sizeof(id));
    buf_append_str(out, id);
    if (sig && *sig) {
        buf_append_str(out, TS_MARK);
        for (const char *p = sig; *p; p++) {
            char c = *p == '+' ? '-' : *p == '/' ? '_' : *p;
            if (c != '=')
                buf_append_char(out, c);
        }
    }
}

/* The signature carried by an id made above, as standard base64, or -1. */
static int signature_from_id(const char *id, struct buf *out)
{
    size_t n = id ? strlen(id) : 0;
    if (n <= CANON_TOOL_ID_LEN + 4 || strncmp(id, "call_", 5) != 0 || memcmp(id + CANON_TOOL_ID_LEN, TS_MARK, 4) != 0)
        return -1;
    const char *s = id + CANON_TOOL_ID_LEN + 4;
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        char c = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
        buf_append_char(out, c);
    }
    while (out->len % 4)
        buf_append_char(out, '=');
    return 0;
}

/* ---------- request: JSON schema -> Gemini Schema ----------
 * Gemini accepts an OpenAPI 3.0 subset. Kept: type, format (enum, date-time, int32, int64, float, double),
 * title, description, nullable, enum (strings), properties, required, items, anyOf, minItems, maxItems,
 * minProperties, maxProperties, minLength, maxLength, pattern, minimum, maximum, example, default,
 * propertyOrdering. Rewritten: type ["x","null"] -> type x + nullable; const -> enum [const]; oneOf -> anyOf;
 * allOf with one member -> merged; local $ref (#/$defs/.., #/definitions/..) -> inlined (depth-bounded).
 * Everything else ($schema, $id, $defs, additionalProperties, patternProperties, exclusiveMinimum, multipleOf,
 * uniqueItems, examples, not, if/then/else, readOnly, ...) is stripped: Gemini rejects unknown schema fields. */

#define SCHEMA_MAX_DEPTH 24
/* Inlining $ref can multiply a schema (a definition used twice, which uses another twice, ...): the output may
 * hold at most this many nodes, or SCHEMA_BUDGET_FACTOR times the input's, whichever is more. A reference to a
 * schema that contains it (recursion, "#" above all) cannot be inlined at all: both are refused with a 400. */
#define SCHEMA_MIN_BUDGET 16384
#define SCHEMA_BUDGET_FACTOR 8

struct schema_cx {
    const cJSON *root;
    const cJSON *active[SCHEMA_MAX_DEPTH + 2]; /* the $ref targets being expanded (the root first) */
    int nactive;
    long budget; /* output nodes left */
    enum { SCHEMA_OK, SCHEMA_RECURSIVE, SCHEMA_TOO_BIG } failed;
    char ref[64]; /* the offending $ref */
};

static cJSON *clean_schema(const cJSON *s, struct schema_cx *cx, int depth);

static long count_nodes(const cJSON *t)
{
    long n = 1;
    for (const cJSON *c = t ? t->child : NULL; c; c = c->next)
        n += count_nodes(c);
    return n;
}

static void schema_cx_init(struct schema_cx *cx, const cJSON *root)
{
    memset(cx, 0, sizeof(*cx));
    cx->root = root;
    cx->active[cx->nactive++] = root;
    long in = count_nodes(root);
    cx->budget = in > SCHEMA_MIN_BUDGET / SCHEMA_BUDGET_FACTOR ? in * SCHEMA_BUDGET_FACTOR : SCHEMA_MIN_BUDGET;
}

/* Takes n nodes from the budget; false (and the schema refused) when it is spent. */
static bool spend(struct schema_cx *cx, long n)
{
    cx->budget -= n;
    if (cx->budget < 0 && cx->failed == SCHEMA_OK)
        cx->failed = SCHEMA_TOO_BIG;
    return cx->failed == SCHEMA_OK;
}

/* A copy of a value kept as it is (example, default, ...), paid for by its size. */
static cJSON *dup_paid(const cJSON *v, struct schema_cx *cx)
{
    return spend(cx, count_nodes(v)) ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();
}

/* A 400 naming where the schema was (param) when cleaning it failed; 0 when it did not. */
static int schema_refused(const struct schema_cx *cx, struct gw_error *err, const char *param, const char *what)
{
    if (cx->failed == SCHEMA_RECURSIVE)
        return gw_bad_request(err, param,
                              "%s: the schema's $ref '%s' refers to a schema that contains it; recursive schemas "
                              "cannot be sent to provider gemini (its schemas are inlined)",
                              what, cx->ref);
    if (cx->failed == SCHEMA_TOO_BIG)
        return gw_bad_request(err, param,
                              "%s: the schema grows past %d nodes (and %d times its own size) when its $ref "
                              "references are inlined for provider gemini",
                              what, SCHEMA_MIN_BUDGET, SCHEMA_BUDGET_FACTOR);
    return 0;
}

static const cJSON *resolve_ref(const char *ref, const cJSON *root)
{
    const char *name = NULL;
    const cJSON *defs = NULL;
    if (strncmp(ref, "#/$defs/", 8) == 0) {
        name = ref + 8;
        defs = get(root, "$defs");
    } else if (strncmp(ref, "#/definitions/", 14) == 0) {
        name = ref + 14;
        defs = get(root, "definitions");
    } else if (strcmp(ref, "#") == 0) {
        return root;
    }
    return name ? get(defs, name) : NULL;
}

static void set_type(cJSON *out, const cJSON *type)
{
    if (cJSON_IsString(type)) {
        cJSON_AddStringToObject(out, "type", type->valuestring);
        return;
    }
    /* ["string", "null"] */
    const cJSON *t;
    const char *first = NULL;
    int nonnull = 0;
    bool nullable = false;
    cJSON_ArrayForEach(t, type)
    {
        if (!cJSON_IsString(t))
            continue;
        if (strcmp(t->valuestring, "null") == 0) {
            nullable = true;
        } else {
            if (!first)
                first = t->valuestring;
            nonnull++;
        }
    }
    if (nonnull == 1) {
        cJSON_AddStringToObject(out, "type", first);
    } else if (nonnull > 1) {
        cJSON *any = cJSON_AddArrayToObject(out, "anyOf");
        cJSON_ArrayForEach(t, type)
        {
            if (cJSON_IsString(t) && strcmp(t->valuestring, "null") != 0) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "type", t->valuestring);
                cJSON_AddItemToArray(any, o);
            }
        }
    }
    if (nullable)
        cJSON_AddBoolToObject(out, "nullable", 1);
}

static bool format_supported(const char *f)
{
    static const char *const ok[] = {"enum", "date-time", "int32", "int64", "float", "double"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strcmp(f, ok[i]) == 0)
            return true;
    return false;
}

/* Moves from's members that out lacks into out. Both are cleaned schemas: a few keywords each, so the lookups
 * are bounded. */
static void merge_into(cJSON *out, cJSON *from)
{
    cJSON *it = from->child;
    while (it) {
        cJSON *next = it->next;
        if (!cJSON_HasObjectItem(out, it->string)) {
            cJSON *d = cJSON_DetachItemViaPointer(from, it);
            cJSON_AddItemToObject(out, d->string, d);
        }
        it = next;
    }
    cJSON_Delete(from);
}

/* Gemini enums are strings: numbers are written as strings, other values dropped. */
static void add_enum(cJSON *out, const cJSON *values, bool is_const, struct schema_cx *cx)
{
    cJSON *e = cJSON_CreateArray();
    const cJSON *v;
    for (v = is_const ? values : (cJSON_IsArray(values) ? values->child : NULL); v; v = is_const ? NULL : v->next) {
        if (!spend(cx, 1))
            break;
        if (cJSON_IsString(v)) {
            cJSON_AddItemToArray(e, cJSON_CreateString(v->valuestring));
        } else if (cJSON_IsNumber(v)) {
            char numbuf[64];
            snprintf(numbuf, sizeof(numbuf), "%.17g", v->valuedouble);
            cJSON_AddItemToArray(e, cJSON_CreateString(numbuf));
        }
    }
    if (e->child)
        cJSON_AddItemToObject(out, "enum", e);
    else
        cJSON_Delete(e);
}

/* The schema keywords kept; the first of a repeated keyword wins (as cJSON_GetObjectItem reads it), and the bit
 * set keeps a schema that repeats one keyword thousands of times from costing a lookup per repeat. */
enum {
    KW_TYPE, KW_FORMAT, KW_TITLE, KW_DESCRIPTION, KW_PATTERN, KW_NULLABLE, KW_EXAMPLE, KW_DEFAULT, KW_MIN_ITEMS,
    KW_MAX_ITEMS, KW_MIN_PROPS, KW_MAX_PROPS, KW_MIN_LEN, KW_MAX_LEN, KW_MINIMUM, KW_MAXIMUM, KW_ENUM, KW_CONST,
    KW_PROPERTIES, KW_ITEMS, KW_ANYOF, KW_ONEOF, KW_ALLOF, KW_ORDERING, KW_N
};
static const char *const keywords[KW_N] = {
    "type",     "format",   "title",         "description",   "pattern",   "nullable", "example",
    "default",  "minItems", "maxItems",      "minProperties", "maxProperties", "minLength", "maxLength",
    "minimum",  "maximum",  "enum",          "const",         "properties", "items",   "anyOf",
    "oneOf",    "allOf",    "propertyOrdering"};

static int keyword(const char *k)
{
    for (int i = 0; i < KW_N; i++)
        if (strcmp(k, keywords[i]) == 0)
            return i;
    return -1;
}

static cJSON *clean_schema(const cJSON *s, struct schema_cx *cx, int depth)
{
    cJSON *out = cJSON_CreateObject();
    if (!cJSON_IsObject(s) || depth > SCHEMA_MAX_DEPTH || !spend(cx, 1))
        return out;
    const char *ref = canon_str(s, "$ref");
    if (ref) {
        const cJSON *target = resolve_ref(ref, cx->root);
        if (target) {
            for (int i = 0; i < cx->nactive; i++)
                if (cx->active[i] == target) {
                    if (cx->failed == SCHEMA_OK) {
                        cx->failed = SCHEMA_RECURSIVE;
                        snprintf(cx->ref, sizeof(cx->ref), "%s", ref);
                    }
                    return out;
                }
            if (cx->nactive < (int)(sizeof(cx->active) / sizeof(cx->active[0]))) {
                cJSON_Delete(out);
                cx->active[cx->nactive++] = target;
                out = clean_schema(target, cx, depth + 1);
                cx->nactive--;
            }
        }
        const char *desc = canon_str(s, "description");
        if (desc && !cJSON_HasObjectItem(out, "description"))
            cJSON_AddStringToObject(out, "description", desc);
        return out;
    }
    bool seen[KW_N] = {false};
    struct canon_map props_seen;
    canon_map_init(&props_seen);
    const cJSON *it;
    cJSON_ArrayForEach(it, s)
    {
        if (!spend(cx, 1))
            break;
        const char *k = it->string;
        int kw = keyword(k);
        if (kw < 0 || seen[kw])
            continue; /* anything else is stripped; a repeated keyword is read once */
        seen[kw] = true;
        switch (kw) {
        case KW_TYPE: set_type(out, it); break;
        case KW_FORMAT:
            if (cJSON_IsString(it) && format_supported(it->valuestring))
                cJSON_AddStringToObject(out, "format", it->valuestring);
            break;
        case KW_TITLE:
        case KW_DESCRIPTION:
        case KW_PATTERN:
            if (cJSON_IsString(it))
                cJSON_AddItemToObject(out, k, cJSON_Duplicate(it, 1));
            break;
        case KW_NULLABLE:
            if (cJSON_IsBool(it) && !cJSON_HasObjectItem(out, "nullable"))
                cJSON_AddItemToObject(out, k, cJSON_Duplicate(it, 1));
            break;
        case KW_EXAMPLE:
        case KW_DEFAULT: cJSON_AddItemToObject(out, k, dup_paid(it, cx)); break;
        case KW_MIN_ITEMS:
        case KW_MAX_ITEMS:
        case KW_MIN_PROPS:
        case KW_MAX_PROPS:
        case KW_MIN_LEN:
        case KW_MAX_LEN:
        case KW_MINIMUM:
        case KW_MAXIMUM:
            if (cJSON_IsNumber(it))
                cJSON_AddItemToObject(out, k, cJSON_Duplicate(it, 1));
            break;
        case KW_ENUM:
        case KW_CONST:
            if (!cJSON_HasObjectItem(out, "enum"))
                add_enum(out, it, kw == KW_CONST, cx);
            break;
        case KW_PROPERTIES: {
            if (!cJSON_IsObject(it) || it->child == NULL)
                break; /* Gemini: "properties should be non-empty for OBJECT type" */
            cJSON *props = cJSON_AddObjectToObject(out, "properties");
            const cJSON *p;
            cJSON_ArrayForEach(p, it)
            {
                size_t n = strlen(p->string);
                if (canon_map_has(&props_seen, p->string, n))
                    continue; /* a property named twice: the first one */
                canon_map_put(&props_seen, p->string, n, p);
                cJSON_AddItemToObject(props, p->string, clean_schema(p, cx, depth + 1));
            }
            break;
        }
        case KW_ITEMS: {
            const cJSON *item = cJSON_IsArray(it) ? it->child : it;
            cJSON_AddItemToObject(out, "items", clean_schema(item, cx, depth + 1));
            break;
        }
        case KW_ANYOF:
        case KW_ONEOF: {
            if (!cJSON_IsArray(it) || cJSON_HasObjectItem(out, "anyOf"))
                break;
            cJSON *any = cJSON_AddArrayToObject(out, "anyOf");
            const cJSON *sub;
            cJSON_ArrayForEach(sub, it)
            {
                /* {"type":"null"} members become nullable */
                const char *t = canon_str(sub, "type");
                if (t && strcmp(t, "null") == 0 && sub->child && sub->child->next == NULL) {
                    if (!cJSON_HasObjectItem(out, "nullable"))
                        cJSON_AddBoolToObject(out, "nullable", 1);
                    continue;
                }
                cJSON_AddItemToArray(any, clean_schema(sub, cx, depth + 1));
            }
            break;
        }
        case KW_ALLOF:
            if (cJSON_IsArray(it) && it->child && it->child->next == NULL)
                merge_into(out, clean_schema(it->child, cx, depth + 1));
            break;
        case KW_ORDERING:
            if (cJSON_IsArray(it))
                cJSON_AddItemToObject(out, k, dup_paid(it, cx));
            break;
        default: break;
        }
    }
    canon_map_free(&props_seen);
    /* required: only names that are properties (Gemini checks), the schema's own or merged from allOf */
    const cJSON *req = get(s, "required");
    const cJSON *props = get(out, "properties");
    if (cJSON_IsArray(req) && props) {
        struct canon_map have;
        canon_map_init(&have);
        for (const cJSON *p = props->child; p; p = p->next)
            canon_map_put(&have, p->string, strlen(p->string), p);
        cJSON *r = cJSON_CreateArray();
        const cJSON *name;
        cJSON_ArrayForEach(name, req)
        {
            if (!spend(cx, 1))
                break;
            if (cJSON_IsString(name) && canon_map_has(&have, name->valuestring, strlen(name->valuestring)))
                cJSON_AddItemToArray(r, cJSON_CreateString(name->valuestring));
        }
        canon_map_free(&have);
        if (r->child)
            cJSON_AddItemToObject(out, "required", r);
        else
            cJSON_Delete(r);
    }
    /* a single anyOf member is that member */
    cJSON *any = cJSON_GetObjectItemCaseSensitive(out, "anyOf");
    if (any && any->child && any->child->next == NULL && !cJSON_HasObjectItem(out, "type")) {
        cJSON *only = cJSON_DetachItemViaPointer(any, any->child);
        cJSON_DeleteItemFromObjectCaseSensitive(out, "anyOf");
        merge_into(out, only);
    } else if (any && any->child == NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(out, "anyOf");
    }
    return out;
}

/* ---------- request: messages -> contents ---------- */

static const char *mime_from_url(const char *url, const char *fallback)
{
    static const struct {
        const char *ext, *mime;
    } map[] = {{".png", "image/png"},   {".jpg", "image/jpeg"},  {".jpeg", "image/jpeg"}, {".gif", "image/gif"},
               {".webp", "image/webp"}, {".heic", "image/heic"}, {".heif", "image/heif"}, {".pdf", "application/pdf"},
               {".mp3", "audio/mp3"},   {".wav", "audio/wav"},   {".mp4", "video/mp4"},   {".txt", "text/plain"}};
    const char *end = url + strcspn(url, "?#");
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t n = strlen(map[i].ext);
        if ((size_t)(end - url) > n && strncasecmp(end - n, map[i].ext, n) == 0)
            return map[i].mime;
    }
    return fallback;
}

static cJSON *inline_part(struct str mime, struct str data)
{
    cJSON *p = cJSON_CreateObject();
    cJSON *in = cJSON_AddObjectToObject(p, "inlineData");
    char *m = str_dup(mime), *d = str_dup(data);
    cJSON_AddStringToObject(in, "mimeType", m);
    cJSON_AddStringToObject(in, "data", d);
    xfree(m);
    xfree(d);
    return p;
}

/* An image/file URL: a data: URL goes inline, anything else by reference (fileData). */
static cJSON *url_part(const char *url, const char *fallback_mime)
{
    struct str mime, data;
    if (canon_data_url(url, &mime, &data) == 0)
        return inline_part(mime, data);
    if (strncmp(url, "data:", 5) == 0)
        return NULL;
    cJSON *p = cJSON_CreateObject();
    cJSON *fd = cJSON_AddObjectToObject(p, "fileData");
    cJSON_AddStringToObject(fd, "mimeType", mime_from_url(url, fallback_mime));
    cJSON_AddStringToObject(fd, "fileUri", url);
    return p;
}

static int user_parts(const cJSON *content, cJSON *parts, int mi, struct gw_error *err)
{
    if (cJSON_IsString(content)) {
        if (content->valuestring[0]) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "text", content->valuestring);
            cJSON_AddItemToArray(parts, p);
        }
        return 0;
    }
    if (content == NULL || cJSON_IsNull(content))
        return 0;
    if (!cJSON_IsArray(content))
        return gw_bad_request(err, "messages", "messages[%d].content must be a string or an array of parts", mi);
    const cJSON *part;
    int pi = 0;
    cJSON_ArrayForEach(part, content)
    {
        const char *type = canon_str(part, "type");
        cJSON *p = NULL;
        if (type == NULL) {
            return gw_bad_request(err, "messages", "messages[%d].content[%d] has no type", mi, pi);
        } else if (strcmp(type, "text") == 0) {
            const char *text = canon_str(part, "text");
            if (text && *text) {
                p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "text", text);
            }
        } else if (strcmp(type, "image_url") == 0) {
            const cJSON *iu = get(part, "image_url");
            const char *url = cJSON_IsString(iu) ? iu->valuestring : canon_str(iu, "url");
            if (url == NULL || (p = url_part(url, "image/jpeg")) == NULL)
                return gw_bad_request(err, "messages",
                                      "messages[%d].content[%d]: image_url must be an http(s) URL or a base64 data URL",
                                      mi, pi);
        } else if (strcmp(type, "input_audio") == 0) {
            const cJSON *ia = get(part, "input_audio");
            const char *data = canon_str(ia, "data"), *fmt = canon_str(ia, "format");
            if (data == NULL || fmt == NULL)
                return gw_bad_request(err, "messages", "messages[%d].content[%d]: input_audio needs data and format",
                                      mi, pi);
            char mime[64];
            snprintf(mime, sizeof(mime), "audio/%s", fmt);
            p = inline_part(str_from(mime), str_from(data));
        } else if (strcmp(type, "file") == 0) {
            const cJSON *f = get(part, "file");
            const char *fdata = canon_str(f, "file_data");
            if (fdata == NULL || (p = url_part(fdata, "application/pdf")) == NULL)
                return gw_bad_request(err, "messages",
                                      "messages[%d].content[%d]: file parts need file_data as a base64 data URL "
                                      "(file_id is not supported by provider gemini)",
                                      mi, pi);
        } else {
            return gw_bad_request(err, "messages",
                                  "messages[%d].content[%d]: part type '%s' is not supported by "
                                  "provider gemini",
                                  mi, pi, type);
        }
        if (p)
            cJSON_AddItemToArray(parts, p);
        pi++;
    }
    return 0;
}

/* ids: tool-call id -> function name of the assistant turns so far (the latest wins), for the tool results that
 * follow: Gemini's functionResponse needs the name. A map, because looking back through the conversation for
 * every result made a long agent loop quadratic. */
static int assistant_parts(const cJSON *m, cJSON *parts, int mi, struct canon_map *ids, struct gw_error *err)
{
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    canon_content_text(get(m, "content"), "", &text);
    if (text.len) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "text", text.data);
        cJSON_AddItemToArray(parts, p);
    }
    buf_free(&text);
    const cJSON *tc;
    int ti = 0;
    cJSON *legacy = NULL;
    const cJSON *calls = get(m, "tool_calls");
    if (!cJSON_IsArray(calls) && cJSON_IsObject(get(m, "function_call"))) {
        /* the deprecated single function_call */
        legacy = cJSON_CreateArray();
        cJSON *one = cJSON_CreateObject();
        cJSON_AddItemToObject(one, "function", cJSON_Duplicate(get(m, "function_call"), 1));
        cJSON_AddItemToArray(legacy, one);
        calls = legacy;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, get(m, "tool_calls"))
    {
        const char *tid = canon_str(c, "id");
        const char *tname = canon_str(get(c, "function"), "name");
        if (tid && tname)
            canon_map_put(ids, tid, strlen(tid), tname);
    }
    int rc = 0;
    cJSON_ArrayForEach(tc, calls)
    {
        const cJSON *fn = get(tc, "function");
        const char *name = canon_str(fn, "name");
        const char *astr = canon_str(fn, "arguments");
        if (astr && canon_json_has_nul(astr, strlen(astr), NULL, 0)) {
            /* arguments are JSON in a string: a \u0000 in them would be cut when they are parsed */
            rc = canon_nul_refused(err, "messages");
            break;
        }
        cJSON *args = canon_parse_args(get(fn, "arguments"));
        if (name == NULL || args == NULL) {
            cJSON_Delete(args);
            rc = gw_bad_request(err, "messages",
                                "messages[%d].tool_calls[%d]: a function name and JSON-object arguments are required",
                                mi, ti);
            break;
        }
        cJSON *p = cJSON_CreateObject();
        cJSON *fc = cJSON_AddObjectToObject(p, "functionCall");
        cJSON_AddStringToObject(fc, "name", name);
        cJSON_AddItemToObject(fc, "args", args);
        struct buf sig = BUF_INIT(64 * 1024);
        if (signature_from_id(canon_str(tc, "id"), &sig) == 0 && sig.len)
            cJSON_AddStringToObject(p, "thoughtSignature", sig.data);
        buf_free(&sig);
        cJSON_AddItemToArray(parts, p);
        ti++;
    }
    cJSON_Delete(legacy);
    return rc;
}

static int tool_result_part(const struct canon_map *ids, const cJSON *m, cJSON *parts, int mi, struct gw_error *err)
{
    const char *role = canon_str(m, "role");
    const char *name = NULL;
    if (strcmp(role, "function") == 0) {
        name = canon_str(m, "name");
    } else {
        const char *id = canon_str(m, "tool_call_id");
        if (id == NULL)
            return gw_bad_request(err, "messages", "messages[%d]: a tool message needs tool_call_id", mi);
        name = canon_map_get(ids, id, strlen(id));
        if (name == NULL)
            name = canon_str(m, "name");
        if (name == NULL)
            return gw_bad_request(err, "messages",
                                  "messages[%d]: tool_call_id '%s' does not match a tool call of an earlier assistant "
                                  "message (Gemini needs the function name)",
                                  mi, id);
    }
    if (name == NULL)
        return gw_bad_request(err, "messages", "messages[%d]: a function message needs a name", mi);
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    canon_content_text(get(m, "content"), " ", &text);
    cJSON *p = cJSON_CreateObject();
    cJSON *fr = cJSON_AddObjectToObject(p, "functionResponse");
    cJSON_AddStringToObject(fr, "name", name);
    cJSON *resp = cJSON_AddObjectToObject(fr, "response");
    cJSON_AddStringToObject(resp, "output", text.data ? text.data : "");
    buf_free(&text);
    cJSON_AddItemToArray(parts, p);
    return 0;
}

static int add_tools(const cJSON *canon, cJSON *req, struct gw_error *err)
{
    const cJSON *tools = get(canon, "tools");
    if (!cJSON_IsArray(tools) || tools->child == NULL)
        return 0;
    cJSON *decls = cJSON_CreateArray();
    const cJSON *t;
    int i = 0;
    cJSON_ArrayForEach(t, tools)
    {
        const char *type = canon_str(t, "type");
        const cJSON *fn = get(t, "function");
        const char *name = canon_str(fn, "name");
        if ((type && strcmp(type, "function") != 0) || name == NULL) {
            cJSON_Delete(decls);
            return gw_bad_request(err, "tools",
                                  "tools[%d]: only function tools with a name are supported by provider "
                                  "gemini",
                                  i);
        }
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "name", name);
        const char *desc = canon_str(fn, "description");
        if (desc)
            cJSON_AddStringToObject(d, "description", desc);
        const cJSON *params = get(fn, "parameters");
        if (cJSON_IsObject(params)) {
            struct schema_cx cx;
            schema_cx_init(&cx, params);
            cJSON *clean = clean_schema(params, &cx, 0);
            if (cx.failed != SCHEMA_OK) {
                char param[64], what[160];
                snprintf(param, sizeof(param), "tools[%d].function.parameters", i);
                snprintf(what, sizeof(what), "tools[%d] (function '%.64s')", i, name);
                cJSON_Delete(clean);
                cJSON_Delete(d);
                cJSON_Delete(decls);
                return schema_refused(&cx, err, param, what);
            }
            /* a function without parameters has none, rather than an empty OBJECT Gemini would reject */
            if (cJSON_HasObjectItem(clean, "properties"))
                cJSON_AddItemToObject(d, "parameters", clean);
            else
                cJSON_Delete(clean);
        }
        cJSON_AddItemToArray(decls, d);
        i++;
    }
    cJSON *tarr = cJSON_AddArrayToObject(req, "tools");
    cJSON *tobj = cJSON_CreateObject();
    cJSON_AddItemToObject(tobj, "functionDeclarations", decls);
    cJSON_AddItemToArray(tarr, tobj);

    const cJSON *tc = get(canon, "tool_choice");
    const char *mode = NULL;
    const char *only = NULL;
    if (cJSON_IsString(tc)) {
        if (strcmp(tc->valuestring, "none") == 0)
            mode = "NONE";
        else if (strcmp(tc->valuestring, "required") == 0)
            mode = "ANY";
        else if (strcmp(tc->valuestring, "auto") == 0)
            mode = "AUTO";
        else
            return gw_bad_request(err, "tool_choice", "tool_choice must be none, auto, required or a function");
    } else if (cJSON_IsObject(tc)) {
        only = canon_str(get(tc, "function"), "name");
        if (only == NULL)
            return gw_bad_request(err, "tool_choice", "tool_choice.function.name is required");
        mode = "ANY";
    }
    if (mode) {
        cJSON *cfg = cJSON_AddObjectToObject(req, "toolConfig");
        cJSON *fcc = cJSON_AddObjectToObject(cfg, "functionCallingConfig");
        cJSON_AddStringToObject(fcc, "mode", mode);
        if (only) {
            cJSON *names = cJSON_AddArrayToObject(fcc, "allowedFunctionNames");
            cJSON_AddItemToArray(names, cJSON_CreateString(only));
        }
    }
    return 0;
}

static void copy_number(const cJSON *from, const char *k, cJSON *to, const char *tk)
{
    const cJSON *v = get(from, k);
    if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(to, tk, v->valuedouble);
}

/* max_tokens: the exchange's (ex_attempt_max_tokens), -1 when the client set none. */
static int add_generation_config(const cJSON *canon, int64_t max_tokens, cJSON *req, struct gw_error *err)
{
    cJSON *gc = cJSON_CreateObject();
    if (max_tokens > 0)
        cJSON_AddNumberToObject(gc, "maxOutputTokens", (double)max_tokens);
    copy_number(canon, "temperature", gc, "temperature");
    copy_number(canon, "top_p", gc, "topP");
    copy_number(canon, "top_k", gc, "topK");
    copy_number(canon, "n", gc, "candidateCount");
    copy_number(canon, "seed", gc, "seed");
    copy_number(canon, "presence_penalty", gc, "presencePenalty");
    copy_number(canon, "frequency_penalty", gc, "frequencyPenalty");
    const cJSON *stop = get(canon, "stop");
    if (cJSON_IsString(stop)) {
        cJSON *a = cJSON_AddArrayToObject(gc, "stopSequences");
        cJSON_AddItemToArray(a, cJSON_CreateString(stop->valuestring));
    } else if (cJSON_IsArray(stop) && stop->child) {
        cJSON_AddItemToObject(gc, "stopSequences", cJSON_Duplicate(stop, 1));
    }
    const cJSON *rf = get(canon, "response_format");
    const char *rft = canon_str(rf, "type");
    if (rft && strcmp(rft, "json_object") == 0) {
        cJSON_AddStringToObject(gc, "responseMimeType", "application/json");
    } else if (rft && strcmp(rft, "json_schema") == 0) {
        const cJSON *schema = get(get(rf, "json_schema"), "schema");
        if (!cJSON_IsObject(schema)) {
            cJSON_Delete(gc);
            return gw_bad_request(err, "response_format", "response_format.json_schema.schema must be an object");
        }
        cJSON_AddStringToObject(gc, "responseMimeType", "application/json");
        struct schema_cx cx;
        schema_cx_init(&cx, schema);
        cJSON *clean = clean_schema(schema, &cx, 0);
        if (cx.failed != SCHEMA_OK) {
            cJSON_Delete(clean);
            cJSON_Delete(gc);
            return schema_refused(&cx, err, "response_format", "response_format.json_schema.schema");
        }
        cJSON_AddItemToObject(gc, "responseSchema", clean);
    } else if (rft && strcmp(rft, "text") != 0) {
        cJSON_Delete(gc);
        return gw_bad_request(err, "response_format", "response_format type '%s' is not supported", rft);
    }
    if (gc->child)
        cJSON_AddItemToObject(req, "generationConfig", gc);
    else
        cJSON_Delete(gc);
    return 0;
}

const char *const gemini_read_fields[] = {"max_completion_tokens", "max_tokens", "stop", "temperature", "top_p",
                                          "top_k", "n", "seed", "presence_penalty", "frequency_penalty",
                                          "tools", "response_format", "tool_choice", NULL};

/* Canonical chat request -> GenerateContentRequest. NULL with err (400) when it cannot be expressed. */
cJSON *gemini_build_generate(const cJSON *canon, int64_t max_tokens, struct gw_error *err)
{
    const cJSON *msgs = get(canon, "messages");
    if (!cJSON_IsArray(msgs) || msgs->child == NULL) {
        gw_bad_request(err, "messages", "'messages' must be a non-empty array");
        return NULL;
    }
    cJSON *req = cJSON_CreateObject();
    cJSON *contents = cJSON_AddArrayToObject(req, "contents");
    cJSON *sys_parts = NULL;
    cJSON *cur_parts = NULL;
    const char *cur_role = NULL;
    struct canon_map ids;
    canon_map_init(&ids);
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
            struct buf t = BUF_INIT(BUF_UNBOUNDED);
            canon_content_text(get(m, "content"), "\n", &t);
            if (t.len) {
                if (sys_parts == NULL) {
                    cJSON *si = cJSON_AddObjectToObject(req, "systemInstruction");
                    sys_parts = cJSON_AddArrayToObject(si, "parts");
                }
                cJSON *p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "text", t.data);
                cJSON_AddItemToArray(sys_parts, p);
            }
            buf_free(&t);
            mi++;
            continue;
        }
        const char *grole = strcmp(role, "assistant") == 0 ? "model" : "user";
        cJSON *parts = cJSON_CreateArray();
        int rc;
        if (strcmp(role, "user") == 0)
            rc = user_parts(get(m, "content"), parts, mi, err);
        else if (strcmp(role, "assistant") == 0)
            rc = assistant_parts(m, parts, mi, &ids, err);
        else if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0)
            rc = tool_result_part(&ids, m, parts, mi, err);
        else
            rc = gw_bad_request(err, "messages", "messages[%d]: unknown role '%s'", mi, role);
        if (rc != 0) {
            cJSON_Delete(parts);
            goto fail;
        }
        mi++;
        if (parts->child == NULL) {
            cJSON_Delete(parts); /* Gemini refuses empty parts; an empty message says nothing anyway */
            continue;
        }
        if (cur_parts && strcmp(cur_role, grole) == 0) {
            /* consecutive turns of one role (tool results of parallel calls, above all) are one Content */
            canon_array_splice(cur_parts, parts);
            cJSON_Delete(parts);
            continue;
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "role", grole);
        cJSON_AddItemToObject(c, "parts", parts);
        cJSON_AddItemToArray(contents, c);
        cur_parts = parts;
        cur_role = grole;
    }
    if (contents->child == NULL) {
        gw_bad_request(err, "messages", "the request has no user or assistant content for Gemini to answer");
        goto fail;
    }
    if (add_tools(canon, req, err) != 0 || add_generation_config(canon, max_tokens, req, err) != 0)
        goto fail;
    canon_map_free(&ids);
    return req;
fail:
    canon_map_free(&ids);
    cJSON_Delete(req);
    return NULL;
}

/* Embeddings: a string -> embedContent; an array of strings -> batchEmbedContents. */
static cJSON *build_embed(const cJSON *canon, const char *resource, bool *batch, struct gw_error *err)
{
    const cJSON *input = get(canon, "input");
    const cJSON *dims = get(canon, "dimensions");
    if (cJSON_IsString(input)) {
        *batch = false;
        cJSON *req = cJSON_CreateObject();
        cJSON *parts = cJSON_AddArrayToObject(cJSON_AddObjectToObject(req, "content"), "parts");
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "text", input->valuestring);
        cJSON_AddItemToArray(parts, p);
        if (cJSON_IsNumber(dims))
            cJSON_AddNumberToObject(req, "outputDimensionality", dims->valuedouble);
        return req;
    }
    if (!cJSON_IsArray(input) || input->child == NULL) {
        gw_bad_request(err, "input", "'input' must be a string or a non-empty array of strings");
        return NULL;
    }
    *batch = true;
    cJSON *req = cJSON_CreateObject();
    cJSON *reqs = cJSON_AddArrayToObject(req, "requests");
    const cJSON *it;
    cJSON_ArrayForEach(it, input)
    {
        if (!cJSON_IsString(it)) {
            cJSON_Delete(req);
            gw_bad_request(err, "input", "provider gemini embeds text only: token-array input is not supported");
            return NULL;
        }
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "model", resource);
        cJSON *parts = cJSON_AddArrayToObject(cJSON_AddObjectToObject(r, "content"), "parts");
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "text", it->valuestring);
        cJSON_AddItemToArray(parts, p);
        if (cJSON_IsNumber(dims))
            cJSON_AddNumberToObject(r, "outputDimensionality", dims->valuedouble);
        cJSON_AddItemToArray(reqs, r);
    }
    return req;
}

/* "models/<id>" unless the deployment names another resource ("tunedModels/x"). */
static void model_resource(const char *model, struct buf *out)
{
    if (strchr(model, '/') == NULL)
        buf_append_str(out, "models/");
    buf_append_str(out, model);
}

static int gemini_encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    const struct deployment *d = a->dep;
    const cJSON *canon = ex_attempt_canonical(a, err);
    if (canon == NULL)
        return -1;
    struct buf resource = BUF_INIT(4096);
    model_resource(d->model, &resource);
    cJSON *body;
    const char *method;
    bool batch = false;
    if (a->op == OP_EMBEDDINGS) {
        body = build_embed(canon, resource.data, &batch, err);
        method = batch ? "batchEmbedContents" : "embedContent";
    } else {
        body = canon_note_unread(a, canon, gemini_read_fields, err) == 0
                   ? gemini_build_generate(canon, ex_attempt_max_tokens(a), err)
                   : NULL;
        method = a->stream ? "streamGenerateContent" : "generateContent";
    }
    if (body == NULL) {
        buf_free(&resource);
        return -1;
    }
    r->method = "POST";
    buf_printf(&r->url, "%s/%s/", d->base_url, d->api_version ? d->api_version : "v1beta");
    sigv4_uri_encode(resource.data, resource.len, true, &r->url);
    buf_printf(&r->url, ":%s%s", method, a->stream && a->op == OP_CHAT ? "?alt=sse" : "");
    buf_free(&resource);
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", a->stream ? "text/event-stream" : "application/json");
    if (d->api_key)
        up_request_header(r, "x-goog-api-key", d->api_key);
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, s);
    cJSON_free(s);
    return 0;
}

/* models/{m}:countTokens with the whole GenerateContentRequest (system instruction and tools count too). */
static int gemini_encode_count(const struct deployment *d, const cJSON *canon, struct up_request *r,
                               struct gw_error *err)
{
    cJSON *gen = gemini_build_generate(canon, -1, err);
    if (gen == NULL)
        return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(gen, "generationConfig");
    struct buf resource = BUF_INIT(4096);
    model_resource(d->model, &resource);
    cJSON_AddStringToObject(gen, "model", resource.data);
    cJSON *body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "generateContentRequest", gen);
    r->method = "POST";
    buf_printf(&r->url, "%s/%s/", d->base_url, d->api_version ? d->api_version : "v1beta");
    sigv4_uri_encode(resource.data, resource.len, true, &r->url);
    buf_append_str(&r->url, ":countTokens");
    buf_free(&resource);
    up_request_header(r, "Content-Type", "application/json");
    up_request_header(r, "Accept", "application/json");
    if (d->api_key)
        up_request_header(r, "x-goog-api-key", d->api_key);
    for (size_t i = 0; i < d->nheaders; i++)
        buf_printf(&r->headers, "%s\n", d->headers[i]);
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not encode the upstream request");
        return -1;
    }
    buf_append_str(&r->body, s);
    cJSON_free(s);
    return 0;
}

static int gemini_decode_count(const char *body, size_t len, int64_t *n)
{
    struct jval v;
    return jscan_get(body, len, "totalTokens", &v) == 0 && jval_i64(&v, n) == 0 && *n >= 0 ? 0 : -1;
}

/* ---------- responses ---------- */

/* A token count, by the one rule for upstream usage (gw_types.h): absent -> 0, implausible -> u->invalid. */
static int64_t num(struct usage *u, const cJSON *o, const char *k)
{
    return usage_read_json(u, get(o, k));
}

/* usageMetadata -> usage. Thought tokens are billed as output: they count in output and in reasoning. False when
 * there is none, or it is dropped as implausible (u->invalid; the caller counts it with the deployment). */
static bool usage_from(const cJSON *t, struct usage *u)
{
    memset(u, 0, sizeof(*u));
    const cJSON *um = get(t, "usageMetadata");
    if (!cJSON_IsObject(um))
        return false;
    u->known = true;
    u->input = num(u, um, "promptTokenCount") + num(u, um, "toolUsePromptTokenCount");
    u->reasoning = num(u, um, "thoughtsTokenCount");
    u->output = num(u, um, "candidatesTokenCount") + u->reasoning;
    u->cached_input = num(u, um, "cachedContentTokenCount");
    return usage_check(u, NULL);
}

static enum finish map_finish(const char *fr, bool has_tools)
{
    if (fr == NULL)
        return FINISH_NONE;
    if (strcmp(fr, "MAX_TOKENS") == 0)
        return FINISH_LENGTH;
    if (strcmp(fr, "SAFETY") == 0 || strcmp(fr, "RECITATION") == 0 || strcmp(fr, "BLOCKLIST") == 0 ||
        strcmp(fr, "PROHIBITED_CONTENT") == 0 || strcmp(fr, "SPII") == 0 || strcmp(fr, "IMAGE_SAFETY") == 0 ||
        strcmp(fr, "IMAGE_PROHIBITED_CONTENT") == 0)
        return FINISH_CONTENT_FILTER;
    /* STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, FINISH_REASON_UNSPECIFIED, ... */
    return has_tools ? FINISH_TOOL_CALLS : FINISH_STOP;
}

static void note_model(struct attempt *a, const cJSON *t)
{
    const char *mv = canon_str(t, "modelVersion");
    if (mv && !a->response_model[0])
        snprintf(a->response_model, sizeof(a->response_model), "%s", mv);
}

/* A functionCall part -> an OpenAI tool call object. */
static cJSON *tool_call_json(const cJSON *part)
{
    const cJSON *fc = get(part, "functionCall");
    const char *name = canon_str(fc, "name");
    if (name == NULL)
        return NULL;
    struct buf id = BUF_INIT(BUF_UNBOUNDED);
    const char *gid = canon_str(fc, "id");
    if (gid && *gid)
        buf_append_str(&id, gid);
    else
        tool_id_with_signature(canon_str(part, "thoughtSignature"), &id);
    const cJSON *args = get(fc, "args");
    char *js = cJSON_IsObject(args) ? cJSON_PrintUnformatted(args) : NULL;
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "id", id.data);
    cJSON_AddStringToObject(tc, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "name", name);
    cJSON_AddStringToObject(fn, "arguments", js ? js : "{}");
    if (js)
        cJSON_free(js);
    buf_free(&id);
    return tc;
}

static void gemini_error_from(int status, const cJSON *e, struct gw_error *err);

static int decode_embeddings(struct attempt *a, cJSON *t, cJSON **out, struct gw_error *err)
{
    struct gw_error ignore;
    const cJSON *canon = ex_attempt_canonical(a, &ignore);
    const char *fmt = canon_str(canon, "encoding_format");
    bool b64 = fmt && strcmp(fmt, "base64") == 0;
    cJSON *list;
    cJSON *single = NULL;
    const cJSON *embs = get(t, "embeddings");
    if (cJSON_IsArray(embs)) {
        list = (cJSON *)embs;
    } else if (cJSON_IsObject(get(t, "embedding"))) {
        single = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(single, cJSON_GetObjectItemCaseSensitive(t, "embedding"));
        list = single;
    } else {
        canon_malformed(a, err, "a malformed embeddings response");
        cJSON_Delete(t);
        return -1;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(r, "data");
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *values = get(e, "values");
        if (!cJSON_IsArray(values)) {
            cJSON_Delete(r);
            cJSON_Delete(single);
            cJSON_Delete(t);
            canon_malformed(a, err, "an embedding without values");
            return -1;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "embedding");
        cJSON_AddNumberToObject(o, "index", i++);
        if (b64) {
            /* float32 little-endian, as OpenAI encodes it */
            int n = cJSON_GetArraySize(values);
            unsigned char *bytes = xcalloc((size_t)n + 1, 4);
            const cJSON *v;
            int k = 0;
            cJSON_ArrayForEach(v, values)
            {
                double dv = cJSON_IsNumber(v) ? v->valuedouble : 0.0;
                float f = dv > FLT_MAX ? FLT_MAX : dv < -FLT_MAX ? -FLT_MAX : (float)dv;
                uint32_t bits;
                memcpy(&bits, &f, 4);
                bytes[4 * k] = (unsigned char)bits;
                bytes[4 * k + 1] = (unsigned char)(bits >> 8);
                bytes[4 * k + 2] = (unsigned char)(bits >> 16);
                bytes[4 * k + 3] = (unsigned char)(bits >> 24);
                k++;
            }
            struct buf b = BUF_INIT(BUF_UNBOUNDED);
            buf_append_base64(&b, bytes, (size_t)n * 4, false);
            cJSON_AddStringToObject(o, "embedding", b.data ? b.data : "");
            buf_free(&b);
            xfree(bytes);
        } else {
            cJSON_AddItemToObject(o, "embedding", cJSON_Duplicate(values, 1));
        }
        cJSON_AddItemToArray(data, o);
    }
    cJSON_Delete(single);
    cJSON_AddStringToObject(r, "model", ex_attempt_public_model(a));
    /* Gemini's embedding responses carry no token counts (newer ones may: usageMetadata). Without them the
     * input is estimated at 4 bytes per token and marked as not reported. */
    if (!usage_from(t, &a->usage)) {
        /* counts an implausible usageMetadata; then the estimate */
        usage_check(&a->usage, a->dep ? a->dep->label : NULL);
        memset(&a->usage, 0, sizeof(a->usage));
        const cJSON *input = get(canon, "input");
        const cJSON *s;
        if (cJSON_IsString(input)) {
            a->usage.input = (int64_t)(strlen(input->valuestring) + 3) / 4;
        } else {
            cJSON_ArrayForEach(s, input)
            {
                if (cJSON_IsString(s))
                    a->usage.input += (int64_t)(strlen(s->valuestring) + 3) / 4;
            }
        }
    }
    a->usage.output = 0;
    cJSON *u = cJSON_AddObjectToObject(r, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)a->usage.input);
    cJSON_AddNumberToObject(u, "total_tokens", (double)a->usage.input);
    cJSON_Delete(t);
    *out = r;
    return 0;
}

static int gemini_decode_response(struct attempt *a, const char *body, size_t len, cJSON **out, struct gw_error *err)
{
    *out = NULL;
    cJSON *t = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(t)) {
        cJSON_Delete(t);
        canon_malformed(a, err, "invalid JSON");
        return -1;
    }
    if (a->op == OP_EMBEDDINGS)
        return decode_embeddings(a, t, out, err);
    usage_from(t, &a->usage);
    usage_check(&a->usage, a->dep ? a->dep->label : NULL);
    note_model(a, t);
    const cJSON *cands = get(t, "candidates");
    const cJSON *cand = cJSON_IsArray(cands) ? cands->child : NULL;
    enum finish fin;
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    cJSON *tcs = cJSON_CreateArray();
    if (cand == NULL) {
        const char *block = canon_str(get(t, "promptFeedback"), "blockReason");
        if (block == NULL && !cJSON_IsArray(cands)) {
            buf_free(&text);
            cJSON_Delete(tcs);
            cJSON_Delete(t);
            canon_malformed(a, err, "a response without candidates");
            return -1;
        }
        fin = block ? FINISH_CONTENT_FILTER : FINISH_STOP; /* the prompt itself was blocked */
    } else {
        const cJSON *part;
        cJSON_ArrayForEach(part, get(get(cand, "content"), "parts"))
        {
            const char *tx = canon_str(part, "text");
            if (tx && !cJSON_IsTrue(get(part, "thought"))) {
                buf_append_str(&text, tx);
            } else if (get(part, "functionCall")) {
                cJSON *tc = tool_call_json(part);
                if (tc)
                    cJSON_AddItemToArray(tcs, tc);
            }
        }
        fin = map_finish(canon_str(cand, "finishReason"), tcs->child != NULL);
    }
    *out = canon_completion(a, text.data ? text.data : "", tcs, fin, &a->usage);
    buf_free(&text);
    cJSON_Delete(t);
    return 0;
}

static int gemini_decode_stream_event(struct attempt *a, const struct stream_event *ev, struct gw_error *err)
{
    struct gemini_stream *st = stream_state(a);
    struct str data = str_trim(ev->data);
    if (data.n == 0)
        return EV_CONSUMED;
    cJSON *t = cJSON_ParseWithLength(data.p, data.n);
    if (!cJSON_IsObject(t)) {
        cJSON_Delete(t);
        canon_malformed(a, err, "a malformed stream event");
        return -1;
    }
    const cJSON *e = get(t, "error");
    if (cJSON_IsObject(e)) {
        const cJSON *code = get(e, "code");
        gemini_error_from(cJSON_IsNumber(code) ? code->valueint : 500, e, err);
        cJSON_Delete(t);
        return -1;
    }
    note_model(a, t);
    const cJSON *cand = cJSON_GetArrayItem(get(t, "candidates"), 0);
    const cJSON *part;
    cJSON_ArrayForEach(part, get(get(cand, "content"), "parts"))
    {
        const char *tx = canon_str(part, "text");
        if (tx && !cJSON_IsTrue(get(part, "thought"))) {
            struct chat_delta d = {.kind = DELTA_TEXT, .text = str_from(tx)};
            if (d.text.n)
                emit(a, &d);
        } else if (get(part, "functionCall")) {
            /* Gemini sends a function call whole, in one part */
            cJSON *tc = tool_call_json(part);
            if (tc == NULL)
                continue;
            const cJSON *fn = get(tc, "function");
            struct chat_delta d = {.kind = DELTA_TOOL_START,
                                   .tool_index = st->ntools,
                                   .tool_id = str_from(canon_str(tc, "id")),
                                   .tool_name = str_from(canon_str(fn, "name"))};
            emit(a, &d);
            struct chat_delta args = {
                .kind = DELTA_TOOL_ARGS, .tool_index = st->ntools, .text = str_from(canon_str(fn, "arguments"))};
            emit(a, &args);
            st->ntools++;
            cJSON_Delete(tc);
        }
    }
    struct usage u;
    bool have = usage_from(t, &u);
    if (u.invalid) {
        u.invalid_noted = a->usage.invalid_noted; /* usageMetadata rides on every chunk: count the attempt once */
        usage_check(&u, a->dep ? a->dep->label : NULL);
        a->usage = u;
    } else if (have) {
        a->usage = u;
        struct chat_delta d = {.kind = DELTA_USAGE, .usage = u};
        emit(a, &d);
    }
    const char *fr = canon_str(cand, "finishReason");
    const char *block = cand ? NULL : canon_str(get(t, "promptFeedback"), "blockReason");
    if ((fr || block) && !st->finished) {
        /* the last chunk carries finishReason: Gemini has no other terminal event */
        st->finished = true;
        struct chat_delta d = {.kind = DELTA_FINISH,
                               .finish = block ? FINISH_CONTENT_FILTER : map_finish(fr, st->ntools > 0)};
        emit(a, &d);
        a->stream_done = true;
    }
    cJSON_Delete(t);
    return EV_CONSUMED;
}

/* ---------- errors ---------- */

/* google.rpc.Duration JSON: "37s", "1.5s". */
static long duration_ms(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || v < 0 || v > 86400 || *end != 's')
        return -1;
    return (long)ceil(v * 1000);
}

static void gemini_error_from(int status, const cJSON *e, struct gw_error *err)
{
    const char *gstatus = canon_str(e, "status");
    const char *msg = canon_str(e, "message");
    static const struct {
        const char *name;
        int status;
        bool retryable;
    } map[] = {
        {"INVALID_ARGUMENT", 400, false},  {"FAILED_PRECONDITION", 400, false},
        {"OUT_OF_RANGE", 400, false},      {"UNAUTHENTICATED", 401, false},
        {"PERMISSION_DENIED", 403, false}, {"NOT_FOUND", 404, false},
        {"ALREADY_EXISTS", 409, false},    {"ABORTED", 409, true},
        {"RESOURCE_EXHAUSTED", 429, true}, {"CANCELLED", 499, true},
        {"INTERNAL", 500, true},           {"UNKNOWN", 500, true},
        {"DATA_LOSS", 500, true},          {"UNIMPLEMENTED", 501, false},
        {"UNAVAILABLE", 503, true},        {"DEADLINE_EXCEEDED", 504, true},
    };
    int st = status;
    bool retryable = status == 429 || status == 408 || status >= 500;
    for (size_t i = 0; gstatus && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(gstatus, map[i].name) == 0) {
            st = map[i].status;
            retryable = map[i].retryable;
        }
    if (st < 400 || st > 599)
        st = 502;
    gw_error_set(err, st, gw_err_type_for_status(st), "%s", msg ? msg : "upstream gemini returned an error");
    err->from_upstream = true;
    err->retryable = retryable;
    if (gstatus)
        snprintf(err->code, sizeof(err->code), "%s", gstatus);
    const cJSON *det;
    cJSON_ArrayForEach(det, get(e, "details"))
    {
        const char *type = canon_str(det, "@type");
        if (type == NULL)
            continue;
        if (strstr(type, "google.rpc.RetryInfo")) {
            const char *delay = canon_str(det, "retryDelay");
            if (delay)
                err->retry_after_ms = duration_ms(delay);
        } else if (strstr(type, "google.rpc.ErrorInfo")) {
            const char *reason = canon_str(det, "reason");
            /* Google answers a wrong key with 400 INVALID_ARGUMENT; it is an authentication failure */
            if (reason && (strcmp(reason, "API_KEY_INVALID") == 0 || strcmp(reason, "API_KEY_EXPIRED") == 0)) {
                err->status = 401;
                err->type = GW_ERR_AUTHENTICATION;
                err->retryable = false;
                snprintf(err->code, sizeof(err->code), "%s", reason);
            }
        }
    }
}

static void gemini_map_error(struct attempt *a, int status, const char *body, size_t len, struct gw_error *err)
{
    cJSON *t = cJSON_ParseWithLength(body, len);
    /* some front ends answer with a one-element array */
    const cJSON *root = cJSON_IsArray(t) ? cJSON_GetArrayItem(t, 0) : t;
    const cJSON *e = get(root, "error");
    if (cJSON_IsObject(e)) {
        gemini_error_from(status, e, err);
    } else {
        gw_error_set(err, status, gw_err_type_for_status(status), "upstream %s returned HTTP %d",
                     a->dep ? a->dep->label : "gemini", status);
        err->from_upstream = true;
        err->retryable = status == 429 || status == 408 || status >= 500;
    }
    cJSON_Delete(t);
    ex_attempt_scrub_error(a, err); /* no key quoted back; a 401/403 is agentd's failure (502) */
}

static int gemini_extract_usage(const char *body, size_t len, struct usage *u)
{
    cJSON *t = cJSON_ParseWithLength(body, len);
    int rc = usage_from(t, u) ? 0 : -1;
    cJSON_Delete(t);
    return rc;
}

const struct provider_ops provider_gemini = {
    .name = "gemini",
    .wire = WIRE_NONE,
    .framing = FRAMING_SSE,
    .supports_embeddings = true,
    .encode_request = gemini_encode,
    .decode_response = gemini_decode_response,
    .decode_stream_event = gemini_decode_stream_event,
    .extract_usage = gemini_extract_usage,
    .map_error = gemini_map_error,
    .free_state = gemini_free_state,
    .encode_count = gemini_encode_count,
    .decode_count = gemini_decode_count,
};
