#include "gateway/providers/canon.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/timeutil.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"

int canon_data_url(const char *url, struct str *mime, struct str *data)
{
    if (url == NULL || strncmp(url, "data:", 5) != 0)
        return -1;
    const char *p = url + 5;
    const char *comma = strchr(p, ',');
    if (comma == NULL)
        return -1;
    const char *semi = memchr(p, ';', (size_t)(comma - p));
    *mime = str_make(p, (size_t)((semi ? semi : comma) - p));
    /* ";base64" must be the last parameter */
    if (comma - p < 7 || memcmp(comma - 7, ";base64", 7) != 0)
        return -1;
    *data = str_from(comma + 1);
    return 0;
}

void canon_content_text(const cJSON *content, const char *sep, struct buf *out)
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
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(text) && (!cJSON_IsString(type) || strcmp(type->valuestring, "text") == 0)) {
            if (!first)
                buf_append_str(out, sep);
            buf_append_str(out, text->valuestring);
            first = false;
        }
    }
}

cJSON *canon_parse_args(const cJSON *arguments)
{
    if (arguments == NULL || cJSON_IsNull(arguments))
        return cJSON_CreateObject();
    if (cJSON_IsObject(arguments)) /* some clients send an object rather than a string */
        return cJSON_Duplicate(arguments, 1);
    if (!cJSON_IsString(arguments))
        return NULL;
    struct str s = str_trim(str_from(arguments->valuestring));
    if (s.n == 0)
        return cJSON_CreateObject();
    cJSON *t = cJSON_ParseWithLength(s.p, s.n);
    if (!cJSON_IsObject(t)) {
        cJSON_Delete(t);
        return NULL;
    }
    return t;
}

static _Thread_local uint64_t id_rng;

void canon_tool_call_id(char *out, size_t size)
{
    if (id_rng == 0)
        id_rng = time_mono_ns() ^ ((uint64_t)(uintptr_t)&id_rng << 16) ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
    uint64_t v[2];
    for (int i = 0; i < 2; i++) {
        id_rng ^= id_rng << 13;
        id_rng ^= id_rng >> 7;
        id_rng ^= id_rng << 17;
        v[i] = id_rng;
    }
    snprintf(out, size, "call_%016llx%08llx", (unsigned long long)v[0], (unsigned long long)(v[1] >> 32));
}

const char *canon_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

cJSON *canon_completion(struct attempt *a, const char *text, cJSON *tool_calls, enum finish finish,
                        const struct usage *u)
{
    char id[96];
    snprintf(id, sizeof(id), "chatcmpl-%s", ex_attempt_request_id(a));
    return canon_completion_json(id, (int64_t)time(NULL), ex_attempt_public_model(a), text, tool_calls, finish, u);
}

cJSON *canon_usage_json(const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->input);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->output);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->input + u->output));
    cJSON *pd = cJSON_AddObjectToObject(o, "prompt_tokens_details");
    cJSON_AddNumberToObject(pd, "cached_tokens", (double)u->cached_input);
    cJSON *cd = cJSON_AddObjectToObject(o, "completion_tokens_details");
    cJSON_AddNumberToObject(cd, "reasoning_tokens", (double)u->reasoning);
    return o;
}

cJSON *canon_completion_json(const char *id, int64_t created, const char *model, const char *text,
                             cJSON *tool_calls, enum finish finish, const struct usage *u)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "object", "chat.completion");
    cJSON_AddNumberToObject(r, "created", (double)created);
    cJSON_AddStringToObject(r, "model", model);
    cJSON *choices = cJSON_AddArrayToObject(r, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(c, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    bool has_tools = tool_calls && tool_calls->child != NULL;
    if (has_tools && (text == NULL || *text == '\0'))
        cJSON_AddNullToObject(msg, "content");
    else
        cJSON_AddStringToObject(msg, "content", text ? text : "");
    if (has_tools)
        cJSON_AddItemToObject(msg, "tool_calls", tool_calls);
    else
        cJSON_Delete(tool_calls);
    cJSON_AddNullToObject(msg, "refusal");
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", gw_finish_openai(finish == FINISH_NONE ? FINISH_STOP : finish));
    struct usage none = {0};
    cJSON_AddItemToObject(r, "usage", canon_usage_json(u ? u : &none));
    cJSON_AddNullToObject(r, "system_fingerprint");
    return r;
}

void canon_malformed(struct attempt *a, struct gw_error *err, const char *what)
{
    gw_error_set(err, 502, GW_ERR_API, "upstream %s returned %s", a->dep ? a->dep->label : a->prov->name, what);
    err->from_upstream = true;
    err->retryable = true;
}

void canon_dropped_add(char *list, size_t size, const char *name)
{
    size_t n = strlen(name), len = strnlen(list, size);
    if (n == 0 || len >= size)
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e || name[i] == ',')
            return; /* a client's field name that cannot stand in a header list (control bytes, spaces, commas) */
    /* find the place in sorted order; an equal entry means it is listed already */
    size_t at = len;
    for (size_t off = 0; off < len;) {
        const char *comma = memchr(list + off, ',', len - off);
        size_t e = comma ? (size_t)(comma - list) : len;
        size_t en = e - off;
        int c = strncmp(list + off, name, en < n ? en : n);
        if (c == 0 && en == n)
            return;
        if (c > 0 || (c == 0 && en > n)) {
            at = off;
            break;
        }
        off = e + 1;
    }
    size_t add = n + (len ? 1 : 0);
    if (len + add + 1 > size)
        return;
    if (at == len) {
        if (len)
            list[len++] = ',';
        memcpy(list + len, name, n + 1);
        return;
    }
    memmove(list + at + n + 1, list + at, len - at + 1);
    memcpy(list + at, name, n);
    list[at + n] = ',';
}

static bool listed(const char *const *names, const char *k)
{
    for (size_t i = 0; names && names[i]; i++)
        if (strcmp(names[i], k) == 0)
            return true;
    return false;
}

/* The name an Anthropic client used for a canonical field front_anthropic_request_to_canonical produced. */
static const char *anthropic_name(const char *k)
{
    static const char *const map[][2] = {{"user", "metadata"},
                                         {"parallel_tool_calls", "tool_choice.disable_parallel_tool_use"},
                                         {"stop", "stop_sequences"},
                                         {"response_format", "output_config.format"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i][0], k) == 0)
            return map[i][1];
    return k;
}

int canon_note_unread(struct attempt *a, const cJSON *canon, const char *const *read, struct gw_error *err)
{
    /* n: the front doors refuse n > 1 for every translated model, so what is left asks for nothing */
    static const char *const always[] = {"model", "messages", "stream", "stream_options", "n", NULL};
    struct exchange *ex = a->ex;
    const cJSON *it;
    cJSON_ArrayForEach(it, canon)
    {
        const char *k = it->string;
        if (k == NULL || listed(always, k) || listed(read, k))
            continue;
        if (ex->front == FRONT_OPENAI_CHAT) {
            bool audio = strcmp(k, "audio") == 0 && !cJSON_IsNull(it);
            const cJSON *mod;
            if (strcmp(k, "modalities") == 0)
                cJSON_ArrayForEach(mod, it) if (cJSON_IsString(mod) && strcmp(mod->valuestring, "audio") == 0)
                    audio = true;
            if (audio) {
                gw_bad_request(err, k, "audio output is not supported by model %s (provider %s); remove '%s'",
                               ex->rq.model_name, a->prov->name, k);
                return -1;
            }
            if (cJSON_IsNull(it))
                continue; /* an explicit null asks for nothing */
            canon_dropped_add(ex->rq.dropped_fields, sizeof(ex->rq.dropped_fields), k);
        } else {
            canon_dropped_add(ex->rq.dropped_fields, sizeof(ex->rq.dropped_fields), anthropic_name(k));
        }
    }
    return 0;
}

const cJSON *canon_cache_marker(const cJSON *item)
{
    const cJSON *cc = cJSON_IsObject(item) ? cJSON_GetObjectItemCaseSensitive(item, CANON_CACHE_CONTROL) : NULL;
    return cc && !cJSON_IsNull(cc) && !cJSON_IsFalse(cc) ? cc : NULL;
}

static void strip_each(cJSON *arr)
{
    cJSON *it;
    cJSON_ArrayForEach(it, arr)
    if (cJSON_IsObject(it))
        cJSON_DeleteItemFromObjectCaseSensitive(it, CANON_CACHE_CONTROL);
}

void canon_strip_cache_control(cJSON *canon)
{
    if (!cJSON_IsObject(canon) || !cJSON_HasObjectItem(canon, CANON_CACHE_CONTROL))
        return; /* the flag is there whenever any marker is */
    cJSON_DeleteItemFromObjectCaseSensitive(canon, CANON_CACHE_CONTROL);
    cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(canon, "messages"))
    {
        if (!cJSON_IsObject(m))
            continue;
        cJSON_DeleteItemFromObjectCaseSensitive(m, CANON_CACHE_CONTROL);
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsArray(content))
            strip_each(content);
        strip_each(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"));
    }
    strip_each(cJSON_GetObjectItemCaseSensitive(canon, "tools"));
}

void canon_array_splice(cJSON *dst, cJSON *src)
{
    cJSON *first = src->child;
    if (first == NULL)
        return;
    cJSON *last = first->prev; /* cJSON: the first item's prev is the last item */
    src->child = NULL;
    if (dst->child == NULL) {
        dst->child = first;
        return;
    }
    cJSON *tail = dst->child->prev;
    tail->next = first;
    first->prev = tail;
    dst->child->prev = last;
}

/* ---------- hash map ---------- */

static uint64_t map_seed;
static pthread_once_t map_seed_once = PTHREAD_ONCE_INIT;

static void map_seed_init(void)
{
    uint64_t s = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&s, sizeof(s), 1, f) != 1)
            s = 0;
        fclose(f);
    }
    map_seed = s ^ time_mono_ns() ^ ((uint64_t)(uintptr_t)&map_seed << 20) ^ 0x243f6a8885a308d3ull;
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t map_hash(const char *k, size_t n)
{
    uint64_t h = map_seed ^ (n * 0x9e3779b97f4a7c15ull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, k + i, 8);
        h = mix(h ^ w) + 0x9e3779b97f4a7c15ull;
    }
    uint64_t w = 0;
    memcpy(&w, k + i, n - i);
    return mix(h ^ w ^ map_seed);
}

void canon_map_init(struct canon_map *m)
{
    pthread_once(&map_seed_once, map_seed_init);
    memset(m, 0, sizeof(*m));
}

void canon_map_free(struct canon_map *m)
{
    xfree(m->v);
    memset(m, 0, sizeof(*m));
}

static struct canon_map_ent *map_slot(const struct canon_map *m, const char *key, size_t klen)
{
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)map_hash(key, klen) & mask;; i = (i + 1) & mask) {
        struct canon_map_ent *e = &m->v[i];
        if (e->key == NULL || (e->klen == klen && memcmp(e->key, key, klen) == 0))
            return e;
    }
}

void canon_map_put(struct canon_map *m, const char *key, size_t klen, const void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct canon_map old = *m;
        m->cap = old.cap ? old.cap * 2 : 16;
        m->v = xcalloc(m->cap, sizeof(*m->v));
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.v[i].key) {
                *map_slot(m, old.v[i].key, old.v[i].klen) = old.v[i];
                m->n++;
            }
        xfree(old.v);
    }
    struct canon_map_ent *e = map_slot(m, key, klen);
    if (e->key == NULL)
        m->n++;
    *e = (struct canon_map_ent){key, klen, val};
}

const void *canon_map_get(const struct canon_map *m, const char *key, size_t klen)
{
    if (m->cap == 0)
        return NULL;
    const struct canon_map_ent *e = map_slot(m, key, klen);
    return e->key ? e->val : NULL;
}

bool canon_map_has(const struct canon_map *m, const char *key, size_t klen)
{
    return m->cap && map_slot(m, key, klen)->key != NULL;
}

/* ---------- NUL in client strings ---------- */

bool canon_json_has_nul(const char *p, size_t n, char *key, size_t keysize)
{
    int depth = 0;
    bool in_str = false;
    size_t str_start = 0;
    struct str cand = STR_NULL, top = STR_NULL; /* the last string closed at depth 1, the member being read */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\') {
                if (i + 5 < n && p[i + 1] == 'u' && memcmp(p + i + 2, "0000", 4) == 0) {
                    if (key && keysize) {
                        struct str k = depth == 1 && top.p == NULL ? str_make(p + str_start, i - str_start) : top;
                        snprintf(key, keysize, "%.*s", (int)(k.n < keysize ? k.n : keysize - 1), k.p ? k.p : "");
                    }
                    return true;
                }
                i++; /* the escaped character (a \uXXXX's digits are plain characters) */
            } else if (c == '"') {
                in_str = false;
                if (depth == 1)
                    cand = str_make(p + str_start, i - str_start);
            }
            continue;
        }
        switch (c) {
        case '"':
            in_str = true;
            str_start = i + 1;
            break;
        case '{':
        case '[': depth++; break;
        case '}':
        case ']': depth--; break;
        case ':':
            if (depth == 1)
                top = cand;
            break;
        case ',':
            if (depth == 1)
                top = STR_NULL;
            break;
        default: break;
        }
    }
    return false;
}

int canon_nul_refused(struct gw_error *err, const char *key)
{
    return gw_bad_request(err, key && *key ? key : NULL,
                          "%s%sa string contains the NUL character (\\u0000): the request is translated for this "
                          "model's provider, and the string would be cut at the NUL; remove it or escape it "
                          "differently",
                          key && *key ? key : "", key && *key ? ": " : "");
}
