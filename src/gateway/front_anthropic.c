/* front_anthropic.c: the Anthropic Messages front door (POST /v1/messages): validation the way Anthropic validates,
 * the translation of a Messages request to the canonical (OpenAI chat) request, and the writers of everything an
 * Anthropic client receives: messages, the SSE event sequence, errors. The provider side of the format is in
 * providers/anthropic.c; the rules are in docs/gateway-anthropic.md. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/usage.h"
#include "gateway/front_anthropic.h"
#include "gateway/providers/anthropic.h"
#include "gateway/anthropic_threads.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/providers/canon.h"
#include "net/sse.h"

static struct athread *thread_of(const struct exchange *ex);

/* ---------- validation (jscan only: no tree is built to admit a request) ---------- */

/* JSON paths for error messages ("messages.3.content.1.text"); a truncated path is still a useful message. */
static void pathf(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

static bool absent(const struct jval *v)
{
    return v->type == J_NONE;
}

static bool present(const struct jval *v)
{
    return v->type != J_NONE && v->type != J_NULL;
}

static const char *const block_types[] = {"text",       "image",           "document",
                                          "tool_use",   "tool_result",     "thinking",
                                          "redacted_thinking", "search_result", "server_tool_use",
                                          "web_search_tool_result", "container_upload", NULL};

/* Tool ids are kept NUL-separated in a buffer: the previous assistant turn's tool_use ids must all be answered by
 * tool_result blocks in the next user turn, and every tool_result must answer one of them (Anthropic's rule).
 * The ids of a finished list go into a hash map for the lookups: a turn of thousands of parallel calls must not
 * cost a scan of the list per result. The map's keys point into the list, which is not appended to meanwhile. */
static void id_map(const struct buf *ids, struct canon_map *m)
{
    canon_map_free(m);
    canon_map_init(m);
    for (size_t off = 0; off < ids->len;) {
        size_t n = strlen(ids->data + off);
        canon_map_put(m, ids->data + off, n, ids->data + off);
        off += n + 1;
    }
}

static void id_add(struct buf *ids, const struct buf *id)
{
    buf_append(ids, id->data ? id->data : "", id->len);
    buf_append_char(ids, '\0');
}

struct vstate {
    struct gw_error *err;
    int nmsgs, i, k;
    bool assistant;
    bool continued; /* a thread `continue` turn: the conversation before these messages is held by the thread */
    bool first_turn; /* no user or assistant message seen yet */
    struct buf prev_uses, cur_uses, results;
    struct canon_map prev_map; /* prev_uses as a map */
    struct buf tmp;
};

static int check_string(const struct jval *v, const char *where, struct gw_error *err)
{
    if (absent(v))
        return gw_bad_request(err, NULL, "%s: Field required", where);
    if (v->type != J_STRING)
        return gw_bad_request(err, NULL, "%s: Input should be a valid string", where);
    return 0;
}

static int check_source(const struct jval *src, const char *where, bool document, struct gw_error *err)
{
    char w[160];
    pathf(w, sizeof(w), "%s.source", where);
    if (absent(src))
        return gw_bad_request(err, NULL, "%s: Field required", w);
    if (src->type != J_OBJECT)
        return gw_bad_request(err, NULL, "%s: Input should be a valid dictionary or object to extract fields from", w);
    static const char *const keys[] = {"type", "media_type", "data", "url", "file_id", "content"};
    struct jval f[6];
    if (jscan_fields(src->raw.p, src->raw.n, keys, f, 6, NULL, NULL) != 0)
        return gw_bad_request(err, NULL, "%s: invalid object", w);
    char fw[200];
    if (jval_is_str(&f[0], "base64")) {
        pathf(fw, sizeof(fw), "%s.base64.media_type", w);
        if (check_string(&f[1], fw, err) != 0)
            return -1;
        bool ok = document ? jval_is_str(&f[1], "application/pdf")
                           : jval_is_str(&f[1], "image/jpeg") || jval_is_str(&f[1], "image/png") ||
                                 jval_is_str(&f[1], "image/gif") || jval_is_str(&f[1], "image/webp");
        if (!ok)
            return gw_bad_request(err, NULL, "%s: Input should be %s", fw,
                                  document ? "'application/pdf'"
                                           : "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'");
        pathf(fw, sizeof(fw), "%s.base64.data", w);
        return check_string(&f[2], fw, err);
    }
    if (jval_is_str(&f[0], "url")) {
        pathf(fw, sizeof(fw), "%s.url.url", w);
        return check_string(&f[3], fw, err);
    }
    if (jval_is_str(&f[0], "file")) {
        pathf(fw, sizeof(fw), "%s.file.file_id", w);
        return check_string(&f[4], fw, err);
    }
    if (document && jval_is_str(&f[0], "text")) {
        pathf(fw, sizeof(fw), "%s.text.data", w);
        return check_string(&f[2], fw, err);
    }
    if (document && jval_is_str(&f[0], "content")) {
        if (f[5].type != J_STRING && f[5].type != J_ARRAY)
            return gw_bad_request(err, NULL, "%s.content.content: Field required", w);
        return 0;
    }
    return gw_bad_request(err, NULL,
                          "%s: Input tag found using 'type' does not match any of the expected tags: 'base64', 'url', "
                          "'file'%s",
                          w, document ? ", 'text', 'content'" : "");
}

static int check_text_block(const struct jval *b, const char *where, struct gw_error *err)
{
    struct jval t;
    char w[200];
    pathf(w, sizeof(w), "%s.text", where);
    if (jscan_get(b->raw.p, b->raw.n, "text", &t) != 0)
        t.type = J_NONE;
    return check_string(&t, w, err);
}

/* tool_result content: a string or blocks of text / image / search_result / document. */
struct tr_state {
    const char *where;
    struct gw_error *err;
    int k;
};

static int on_tool_result_part(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    struct tr_state *st = ud;
    char w[200];
    pathf(w, sizeof(w), "%s.content.%d", st->where, st->k++);
    if (v->type != J_OBJECT)
        return gw_bad_request(st->err, NULL, "%s: Input should be a valid dictionary or object to extract fields from",
                              w);
    struct jval t, src;
    if (jscan_get(v->raw.p, v->raw.n, "type", &t) != 0)
        t.type = J_NONE;
    if (jval_is_str(&t, "text"))
        return check_text_block(v, w, st->err);
    if (jval_is_str(&t, "image") || jval_is_str(&t, "document")) {
        if (jscan_get(v->raw.p, v->raw.n, "source", &src) != 0)
            src.type = J_NONE;
        return check_source(&src, w, jval_is_str(&t, "document"), st->err);
    }
    if (jval_is_str(&t, "search_result"))
        return 0;
    return gw_bad_request(st->err, NULL,
                          "%s: Input tag found using 'type' does not match any of the expected tags: 'text', 'image', "
                          "'search_result', 'document'",
                          w);
}

static int on_block(struct str key, const struct jval *b, void *ud)
{
    (void)key;
    struct vstate *vs = ud;
    struct gw_error *err = vs->err;
    char w[96];
    pathf(w, sizeof(w), "messages.%d.content.%d", vs->i, vs->k++);
    if (b->type != J_OBJECT)
        return gw_bad_request(err, NULL, "%s: Input should be a valid dictionary or object to extract fields from", w);
    static const char *const keys[] = {"type", "text", "source", "id", "name", "input", "tool_use_id", "content",
                                       "is_error"};
    enum { B_TYPE, B_TEXT, B_SOURCE, B_ID, B_NAME, B_INPUT, B_TUID, B_CONTENT, B_ISERR, B_N };
    struct jval f[B_N];
    if (jscan_fields(b->raw.p, b->raw.n, keys, f, B_N, NULL, NULL) != 0)
        return gw_bad_request(err, NULL, "%s: invalid object", w);
    int t = -1;
    for (int i = 0; block_types[i]; i++)
        if (jval_is_str(&f[B_TYPE], block_types[i]))
            t = i;
    if (t < 0)
        return gw_bad_request(
            err, NULL,
            "%s: Input tag found using 'type' does not match any of the expected tags: 'text', 'image', "
            "'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking', 'search_result', "
            "'server_tool_use', 'web_search_tool_result', 'container_upload'",
            w);
    char fw[128];
    switch (t) {
    case 0: /* text */
        pathf(fw, sizeof(fw), "%s.text", w);
        return check_string(&f[B_TEXT], fw, err);
    case 1: /* image */
    case 2: /* document */
        return check_source(&f[B_SOURCE], w, t == 2, err);
    case 3: /* tool_use */
        if (!vs->assistant)
            return gw_bad_request(err, NULL, "%s: tool_use blocks can only be in assistant messages", w);
        pathf(fw, sizeof(fw), "%s.id", w);
        if (check_string(&f[B_ID], fw, err) != 0)
            return -1;
        pathf(fw, sizeof(fw), "%s.name", w);
        if (check_string(&f[B_NAME], fw, err) != 0)
            return -1;
        if (absent(&f[B_INPUT]))
            return gw_bad_request(err, NULL, "%s.input: Field required", w);
        if (f[B_INPUT].type != J_OBJECT)
            return gw_bad_request(err, NULL, "%s.input: Input should be a valid dictionary", w);
        buf_reset(&vs->tmp);
        if (jval_str(&f[B_ID], &vs->tmp) != 0)
            return gw_bad_request(err, NULL, "%s.id: invalid string", w);
        id_add(&vs->cur_uses, &vs->tmp);
        return 0;
    case 4: { /* tool_result */
        if (vs->assistant)
            return gw_bad_request(err, NULL, "%s: tool_result blocks can only be in user messages", w);
        pathf(fw, sizeof(fw), "%s.tool_use_id", w);
        if (check_string(&f[B_TUID], fw, err) != 0)
            return -1;
        buf_reset(&vs->tmp);
        if (jval_str(&f[B_TUID], &vs->tmp) != 0)
            return gw_bad_request(err, NULL, "%s.tool_use_id: invalid string", w);
        /* on a continued thread the first turn answers tool_use blocks of the held reply */
        if (!(vs->continued && vs->first_turn) &&
            !canon_map_has(&vs->prev_map, vs->tmp.data ? vs->tmp.data : "", vs->tmp.len))
            return gw_bad_request(
                err, NULL,
                "%s: unexpected `tool_use_id` found in `tool_result` blocks: %.*s. Each `tool_result` "
                "block must have a corresponding `tool_use` block in the previous message.",
                w, (int)(vs->tmp.len > 200 ? 200 : vs->tmp.len), vs->tmp.data ? vs->tmp.data : "");
        id_add(&vs->results, &vs->tmp);
        if (present(&f[B_ISERR]) && f[B_ISERR].type != J_TRUE && f[B_ISERR].type != J_FALSE)
            return gw_bad_request(err, NULL, "%s.is_error: Input should be a valid boolean", w);
        if (present(&f[B_CONTENT])) {
            if (f[B_CONTENT].type == J_ARRAY) {
                struct tr_state st = {w, err, 0};
                return jscan_each(&f[B_CONTENT], on_tool_result_part, &st) != 0 ? -1 : 0;
            }
            if (f[B_CONTENT].type != J_STRING)
                return gw_bad_request(err, NULL, "%s.content: Input should be a valid string or list", w);
        }
        return 0;
    }
    default:
        return 0; /* other Anthropic block types: relayed to Anthropic as they are */
    }
}

static int check_pairing(struct vstate *vs)
{
    /* every tool_use of the previous assistant turn needs its tool_result in this turn */
    struct canon_map answered = {0};
    if (vs->prev_uses.len)
        id_map(&vs->results, &answered);
    for (size_t off = 0; off < vs->prev_uses.len;) {
        size_t n = strlen(vs->prev_uses.data + off);
        if (!canon_map_has(&answered, vs->prev_uses.data + off, n)) {
            canon_map_free(&answered);
            return gw_bad_request(
                vs->err, NULL,
                "messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: "
                "%.*s. Each `tool_use` block must have a corresponding `tool_result` block in the next "
                "message.",
                vs->i, (int)(n > 200 ? 200 : n), vs->prev_uses.data + off);
        }
        off += n + 1;
    }
    canon_map_free(&answered);
    return 0;
}

static int on_system_block(struct str key, const struct jval *b, void *ud)
{
    (void)key;
    int *k = ud;
    struct jval t, tx;
    if (b->type != J_OBJECT || jscan_get(b->raw.p, b->raw.n, "type", &t) != 0 || !jval_is_str(&t, "text") ||
        jscan_get(b->raw.p, b->raw.n, "text", &tx) != 0 || tx.type != J_STRING)
        return -1;
    (*k)++;
    return 0;
}

static int on_message(struct str key, const struct jval *m, void *ud)
{
    (void)key;
    struct vstate *vs = ud;
    struct gw_error *err = vs->err;
    int i = vs->i;
    if (m->type != J_OBJECT)
        return gw_bad_request(err, NULL, "messages.%d: Input should be a valid dictionary", i);
    static const char *const keys[] = {"role", "content"};
    struct jval f[2];
    if (jscan_fields(m->raw.p, m->raw.n, keys, f, 2, NULL, NULL) != 0)
        return gw_bad_request(err, NULL, "messages.%d: invalid object", i);
    if (jval_is_str(&f[0], "system")) {
        /* a mid-conversation system message: text only; it stands between turns without breaking the tool_use /
         * tool_result pairing of the turns around it */
        if (absent(&f[1]))
            return gw_bad_request(err, NULL, "messages.%d.content: Field required", i);
        if (f[1].type == J_ARRAY) {
            int k = 0;
            if (jscan_each(&f[1], on_system_block, &k) != 0)
                return gw_bad_request(err, NULL,
                                      "messages.%d.content.%d: a system message holds text blocks (type 'text' with a "
                                      "string 'text')",
                                      i, k);
        } else if (f[1].type != J_STRING) {
            return gw_bad_request(err, NULL, "messages.%d.content: Input should be a valid string or list", i);
        }
        vs->i++;
        return 0;
    }
    bool user = jval_is_str(&f[0], "user");
    vs->assistant = jval_is_str(&f[0], "assistant");
    if (!user && !vs->assistant)
        return gw_bad_request(err, NULL, "messages.%d.role: Input should be 'user' or 'assistant'", i);
    if (absent(&f[1]))
        return gw_bad_request(err, NULL, "messages.%d.content: Field required", i);
    bool final_assistant = vs->assistant && i == vs->nmsgs - 1;
    buf_reset(&vs->cur_uses);
    buf_reset(&vs->results);
    if (f[1].type == J_STRING) {
        if (f[1].raw.n == 2 && !final_assistant)
            return gw_bad_request(err, NULL,
                                  "messages.%d: all messages must have non-empty content except for the optional "
                                  "final assistant message",
                                  i);
    } else if (f[1].type == J_ARRAY) {
        struct str in = str_make(f[1].raw.p + 1, f[1].raw.n - 2);
        bool blank = true;
        for (size_t j = 0; j < in.n && blank; j++)
            blank = in.p[j] == ' ' || in.p[j] == '\t' || in.p[j] == '\n' || in.p[j] == '\r';
        if (blank && !final_assistant)
            return gw_bad_request(err, NULL,
                                  "messages.%d: all messages must have non-empty content except for the optional "
                                  "final assistant message",
                                  i);
        vs->k = 0;
        if (jscan_each(&f[1], on_block, vs) != 0)
            return -1;
    } else {
        return gw_bad_request(err, NULL, "messages.%d.content: Input should be a valid string or list", i);
    }
    vs->first_turn = false;
    if (check_pairing(vs) != 0)
        return -1;
    /* the ids this turn asked for are the ones the next turn must answer */
    struct buf t = vs->prev_uses;
    vs->prev_uses = vs->cur_uses;
    vs->cur_uses = t;
    id_map(&vs->prev_uses, &vs->prev_map);
    vs->i++;
    return 0;
}

static int count_each(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    (void)v;
    (*(int *)ud)++;
    return 0;
}

static int check_messages(const struct jval *msgs, bool continued, struct gw_error *err)
{
    if (absent(msgs))
        return gw_bad_request(err, NULL, "messages: Field required");
    if (msgs->type != J_ARRAY)
        return gw_bad_request(err, NULL, "messages: Input should be a valid list");
    struct vstate vs = {.err = err, .continued = continued, .first_turn = true};
    jscan_each(msgs, count_each, &vs.nmsgs);
    if (vs.nmsgs == 0 && continued)
        return 0; /* resumes an unfinished reply the thread holds (pause_turn) */
    if (vs.nmsgs == 0)
        return gw_bad_request(err, NULL, "messages: at least one message is required");
    size_t cap = msgs->raw.n + 16; /* ids come out of this body: it bounds them */
    buf_init(&vs.prev_uses, cap);
    buf_init(&vs.cur_uses, cap);
    buf_init(&vs.results, cap);
    buf_init(&vs.tmp, cap);
    int rc = jscan_each(msgs, on_message, &vs) != 0 ? -1 : 0;
    if (rc == 0 && vs.prev_uses.len) {
        vs.i = vs.nmsgs - 1;
        size_t n = strlen(vs.prev_uses.data);
        rc = gw_bad_request(
            err, NULL,
            "messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %.*s. "
            "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
            vs.i, (int)(n > 200 ? 200 : n), vs.prev_uses.data);
    }
    canon_map_free(&vs.prev_map);
    buf_free(&vs.prev_uses);
    buf_free(&vs.cur_uses);
    buf_free(&vs.results);
    buf_free(&vs.tmp);
    return rc;
}

static bool tool_name_ok(const struct jval *v)
{
    if (v->type != J_STRING || v->raw.n < 3 || v->raw.n > 130)
        return false;
    for (size_t i = 1; i + 1 < v->raw.n; i++) {
        char c = v->raw.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int on_tool(struct str key, const struct jval *t, void *ud)
{
    (void)key;
    struct tr_state *st = ud;
    int k = st->k++;
    if (t->type != J_OBJECT)
        return gw_bad_request(st->err, NULL,
                              "tools.%d: Input should be a valid dictionary or object to extract fields from", k);
    static const char *const keys[] = {"name", "type", "input_schema", "description"};
    struct jval f[4];
    if (jscan_fields(t->raw.p, t->raw.n, keys, f, 4, NULL, NULL) != 0)
        return gw_bad_request(st->err, NULL, "tools.%d: invalid object", k);
    if (absent(&f[0]))
        return gw_bad_request(st->err, NULL, "tools.%d.name: Field required", k);
    bool custom = absent(&f[1]) || f[1].type == J_NULL || jval_is_str(&f[1], "custom");
    if (!custom)
        return f[0].type == J_STRING
                   ? 0
                   : gw_bad_request(st->err, NULL, "tools.%d.name: Input should be a valid string", k);
    if (!tool_name_ok(&f[0]))
        return gw_bad_request(st->err, NULL,
                              "tools.%d.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'", k);
    if (absent(&f[2]))
        return gw_bad_request(st->err, NULL, "tools.%d.custom.input_schema: Field required", k);
    if (f[2].type != J_OBJECT)
        return gw_bad_request(st->err, NULL, "tools.%d.custom.input_schema: Input should be a valid dictionary", k);
    if (present(&f[3]) && f[3].type != J_STRING)
        return gw_bad_request(st->err, NULL, "tools.%d.custom.description: Input should be a valid string", k);
    return 0;
}

static int on_stop_sequence(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    (void)ud;
    return v->type == J_STRING ? 0 : -1;
}

static int check_number(const struct jval *v, const char *name, double lo, double hi, struct gw_error *err)
{
    if (!present(v))
        return 0;
    double d;
    if (jval_double(v, &d) != 0)
        return gw_bad_request(err, NULL, "%s: Input should be a valid number", name);
    if (d < lo)
        return gw_bad_request(err, NULL, "%s: Input should be greater than or equal to %g", name, lo);
    if (d > hi)
        return gw_bad_request(err, NULL, "%s: Input should be less than or equal to %g", name, hi);
    return 0;
}

/* Duplicate top-level keys. JSON leaves their meaning open: agentd (jscan, cJSON) reads the first, Anthropic's
 * servers the last. A request naming "model" twice would be routed, priced and limited as one model and run as
 * another, so a duplicate of any field read here is refused. */
struct dup_state {
    const char *const *keys;
    size_t nkeys;
    int counts[16];
    int dup;
};

static int on_top_member(struct str key, const struct jval *v, void *ud)
{
    (void)v;
    struct dup_state *d = ud;
    struct jval k = {J_STRING, key};
    for (size_t i = 0; i < d->nkeys; i++)
        if (jval_is_str(&k, d->keys[i]) && ++d->counts[i] > 1) {
            d->dup = (int)i;
            return 1;
        }
    return 0;
}

static int check_duplicates(struct str body, const char *const *keys, size_t nkeys, struct gw_error *err)
{
    while (body.n && (body.p[0] == ' ' || body.p[0] == '\t' || body.p[0] == '\n' || body.p[0] == '\r'))
        body = str_make(body.p + 1, body.n - 1);
    while (body.n && (body.p[body.n - 1] == ' ' || body.p[body.n - 1] == '\t' || body.p[body.n - 1] == '\n' ||
                      body.p[body.n - 1] == '\r'))
        body.n--;
    struct jval top = {J_OBJECT, body};
    struct dup_state d = {keys, nkeys < 16 ? nkeys : 16, {0}, -1};
    if (jscan_each(&top, on_top_member, &d) > 0)
        return gw_bad_request(err, NULL, "%s: the request body names this field more than once", keys[d.dup]);
    return 0;
}

static int anthropic_parse(struct ex_request *ex, struct gw_error *err)
{
    static const char *const keys[] = {"model",       "max_tokens", "messages", "system", "tools",
                                       "tool_choice", "stream",     "stop_sequences", "temperature", "top_p",
                                       "top_k",       "metadata",   "thread"};
    enum { K_MODEL, K_MAX, K_MSGS, K_SYSTEM, K_TOOLS, K_CHOICE, K_STREAM, K_STOP, K_TEMP, K_TOPP, K_TOPK, K_META,
           K_THREAD, K_N };
    struct jval f[K_N];
    size_t off;
    const char *msg;
    if (jscan_fields(ex->body.p, ex->body.n, keys, f, K_N, &off, &msg) != 0) {
        /* jscan refuses a duplicate of a field it reads; say which one, as Anthropic-style clients expect */
        if (strcmp(msg, "duplicate member") == 0 && check_duplicates(ex->body, keys, K_N, err) != 0)
            return -1;
        return gw_bad_request(err, NULL, "There was an issue with your request body: invalid JSON (%s at byte %zu)",
                              msg, off);
    }

    /* model */
    if (absent(&f[K_MODEL]))
        return gw_bad_request(err, NULL, "model: Field required");
    struct buf m = BUF_INIT(sizeof(ex->model_name) - 1);
    if (f[K_MODEL].type != J_STRING || jval_str(&f[K_MODEL], &m) != 0 || m.len == 0 ||
        memchr(m.data, '\0', m.len) != NULL) {
        buf_free(&m);
        return gw_bad_request(err, NULL, "model: Input should be a valid string of 1 to 255 characters");
    }
    memcpy(ex->model_name, m.data, m.len + 1);
    buf_free(&m);

    /* max_tokens: required by Anthropic, and the reservation policy relies on it */
    int64_t max;
    if (absent(&f[K_MAX]))
        return gw_bad_request(err, NULL, "max_tokens: Field required");
    if (jval_i64(&f[K_MAX], &max) != 0)
        return gw_bad_request(err, NULL, "max_tokens: Input should be a valid integer");
    if (max < 1)
        return gw_bad_request(err, NULL, "max_tokens: Input should be greater than or equal to 1");
    ex->max_tokens = max;

    enum athread_mode tmode;
    char tid[ATHREAD_MAX_ID + 1];
    if (athread_check(&f[K_THREAD], &tmode, tid, err) != 0)
        return -1;
    if (check_messages(&f[K_MSGS], tmode == ATHREAD_CONTINUE, err) != 0)
        return -1;

    if (present(&f[K_SYSTEM])) {
        if (f[K_SYSTEM].type == J_ARRAY) {
            int k = 0;
            if (jscan_each(&f[K_SYSTEM], on_system_block, &k) != 0)
                return gw_bad_request(err, NULL,
                                      "system.%d: Input should be a valid dictionary or object with type 'text' and "
                                      "a string 'text'",
                                      k);
        } else if (f[K_SYSTEM].type != J_STRING) {
            return gw_bad_request(err, NULL, "system: Input should be a valid string or list of text blocks");
        }
    }

    if (present(&f[K_TOOLS])) {
        if (f[K_TOOLS].type != J_ARRAY)
            return gw_bad_request(err, NULL, "tools: Input should be a valid list");
        struct tr_state st = {"tools", err, 0};
        if (jscan_each(&f[K_TOOLS], on_tool, &st) != 0)
            return -1;
    }

    if (present(&f[K_CHOICE])) {
        if (f[K_CHOICE].type != J_OBJECT)
            return gw_bad_request(err, NULL,
                                  "tool_choice: Input should be a valid dictionary or object to extract fields from");
        static const char *const ck[] = {"type", "name", "disable_parallel_tool_use"};
        struct jval c[3];
        if (jscan_fields(f[K_CHOICE].raw.p, f[K_CHOICE].raw.n, ck, c, 3, NULL, NULL) != 0)
            return gw_bad_request(err, NULL, "tool_choice: invalid object");
        if (!jval_is_str(&c[0], "auto") && !jval_is_str(&c[0], "any") && !jval_is_str(&c[0], "tool") &&
            !jval_is_str(&c[0], "none"))
            return gw_bad_request(err, NULL,
                                  "tool_choice: Input tag found using 'type' does not match any of the expected tags: "
                                  "'auto', 'any', 'tool', 'none'");
        if (jval_is_str(&c[0], "tool") && c[1].type != J_STRING)
            return gw_bad_request(err, NULL, "tool_choice.tool.name: Field required");
        if (present(&c[2]) && c[2].type != J_TRUE && c[2].type != J_FALSE)
            return gw_bad_request(err, NULL, "tool_choice.disable_parallel_tool_use: Input should be a valid boolean");
    }

    ex->stream = false;
    if (present(&f[K_STREAM]) && jval_bool(&f[K_STREAM], &ex->stream) != 0)
        return gw_bad_request(err, NULL, "stream: Input should be a valid boolean");

    if (present(&f[K_STOP]) &&
        (f[K_STOP].type != J_ARRAY || jscan_each(&f[K_STOP], on_stop_sequence, NULL) != 0))
        return gw_bad_request(err, NULL, "stop_sequences: Input should be a valid list of strings");

    if (check_number(&f[K_TEMP], "temperature", 0, 1, err) != 0 || check_number(&f[K_TOPP], "top_p", 0, 1, err) != 0)
        return -1;
    if (present(&f[K_TOPK])) {
        int64_t k;
        if (jval_i64(&f[K_TOPK], &k) != 0)
            return gw_bad_request(err, NULL, "top_k: Input should be a valid integer");
        if (k < 0)
            return gw_bad_request(err, NULL, "top_k: Input should be greater than or equal to 0");
    }

    if (present(&f[K_META])) {
        if (f[K_META].type != J_OBJECT)
            return gw_bad_request(err, NULL, "metadata: Input should be a valid dictionary");
        struct jval uid;
        if (jscan_get(f[K_META].raw.p, f[K_META].raw.n, "user_id", &uid) == 0 && present(&uid) &&
            (uid.type != J_STRING || uid.raw.n > 258))
            return gw_bad_request(err, NULL,
                                  "metadata.user_id: Input should be a valid string of at most 256 characters");
    }
    ex->client_include_usage = false;
    return 0;
}

/* ---------- request: Messages -> canonical chat request ---------- */

static int xlate_error(struct gw_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int xlate_error(struct gw_error *err, const char *fmt, ...)
{
    gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

/* What a translation leaves out (canon.h: x-agentd-dropped-fields), and whether it carried a cache_control marker. */
struct drops {
    char *list;
    size_t size;
    bool cache_marked;
};

static void drop(struct drops *d, const char *name)
{
    if (d && d->list)
        canon_dropped_add(d->list, d->size, name);
}

static bool has_cache_control(const cJSON *o)
{
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(o, "cache_control");
    return cc && !cJSON_IsNull(cc);
}

/* cache_control on a block, a system block or a tool: carried onto the canonical item made from it (canon.h:
 * CANON_CACHE_CONTROL), where a provider with an equivalent places its own marker (Bedrock: a cachePoint) and the
 * others list it as dropped. */
static void carry_cache_control(struct drops *d, cJSON *item, const cJSON *o)
{
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(o, "cache_control");
    if (cc == NULL || cJSON_IsNull(cc) || item == NULL)
        return;
    if (!cJSON_HasObjectItem(item, CANON_CACHE_CONTROL))
        cJSON_AddItemToObject(item, CANON_CACHE_CONTROL, cJSON_Duplicate(cc, 1));
    if (d)
        d->cache_marked = true;
}

/* cache_control on a block the canonical form has no place for: its marker goes with it. */
static void drop_cache_control(struct drops *d, const cJSON *o)
{
    if (has_cache_control(o))
        drop(d, "cache_control");
}

/* A content block type the canonical form has no place for. */
static void drop_block(struct drops *d, const char *type)
{
    char name[96];
    snprintf(name, sizeof(name), "messages.content.%.60s", type);
    drop(d, name);
}

static cJSON *text_part(const char *text)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "text");
    cJSON_AddStringToObject(p, "text", text);
    return p;
}

/* image / document block -> an OpenAI content part; NULL with err when it cannot be expressed. */
static cJSON *media_part(const cJSON *b, bool document, int i, int k, struct gw_error *err)
{
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
    const char *type = canon_str(src, "type");
    type = type ? type : "";
    if (strcmp(type, "base64") == 0) {
        const char *mt = canon_str(src, "media_type"), *data = canon_str(src, "data");
        struct buf url = BUF_INIT(BUF_UNBOUNDED);
        buf_printf(&url, "data:%s;base64,%s", mt ? mt : "application/octet-stream", data ? data : "");
        cJSON *p = cJSON_CreateObject();
        if (document) {
            cJSON_AddStringToObject(p, "type", "file");
            cJSON *file = cJSON_AddObjectToObject(p, "file");
            const char *title = canon_str(b, "title");
            cJSON_AddStringToObject(file, "filename", title ? title : "document.pdf");
            cJSON_AddStringToObject(file, "file_data", url.data);
        } else {
            cJSON_AddStringToObject(p, "type", "image_url");
            cJSON *iu = cJSON_AddObjectToObject(p, "image_url");
            cJSON_AddStringToObject(iu, "url", url.data);
        }
        buf_free(&url);
        return p;
    }
    if (!document && strcmp(type, "url") == 0) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "image_url");
        cJSON *iu = cJSON_AddObjectToObject(p, "image_url");
        const char *u = canon_str(src, "url");
        cJSON_AddStringToObject(iu, "url", u ? u : "");
        return p;
    }
    if (document && strcmp(type, "text") == 0) {
        const char *data = canon_str(src, "data");
        return text_part(data ? data : "");
    }
    xlate_error(err,
                "messages.%d.content.%d: a %s with a '%s' source can only be sent to Anthropic models (this model is "
                "served by another provider)",
                i, k, document ? "document" : "image", type);
    return NULL;
}

/* Text of a tool_result's content (string or blocks) -> the content of an OpenAI tool message. Images inside a
 * tool result have no place in an OpenAI tool message and are dropped (documented). A cache_control inside the
 * result marks the tool message m as a whole (Bedrock has no cache point inside a tool result). */
static cJSON *tool_result_content(const cJSON *b, cJSON *m, struct drops *d)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "content");
    bool is_error = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "is_error"));
    if (cJSON_IsArray(c)) {
        cJSON *parts = cJSON_CreateArray();
        if (is_error)
            cJSON_AddItemToArray(parts, text_part("Error:"));
        const cJSON *p;
        cJSON_ArrayForEach(p, c)
        {
            const char *t = canon_str(p, "type");
            const char *tx = canon_str(p, "text");
            carry_cache_control(d, m, p);
            if (t && strcmp(t, "text") == 0 && tx)
                cJSON_AddItemToArray(parts, text_part(tx));
            else if (t) {
                char n[80];
                snprintf(n, sizeof(n), "tool_result.%.60s", t); /* an image in a tool result has no OpenAI place */
                drop_block(d, n);
            }
        }
        if (parts->child == NULL) {
            cJSON_Delete(parts);
            return cJSON_CreateString("");
        }
        return parts;
    }
    const char *s = cJSON_IsString(c) ? c->valuestring : "";
    if (!is_error)
        return cJSON_CreateString(s);
    /* OpenAI tool messages have no error flag: the model is told in the text */
    struct buf t = BUF_INIT(BUF_UNBOUNDED);
    buf_printf(&t, "Error: %s", s);
    cJSON *r = cJSON_CreateString(t.data);
    buf_free(&t);
    return r;
}

static int add_user(cJSON *msgs, const cJSON *content, int i, struct drops *d, struct gw_error *err)
{
    if (cJSON_IsString(content)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", content->valuestring);
        cJSON_AddItemToArray(msgs, m);
        return 0;
    }
    /* tool results become tool messages, in order, ahead of the rest of the turn (OpenAI wants them right after
     * the assistant message that called the tools) */
    cJSON *parts = cJSON_CreateArray();
    const cJSON *b;
    int k = 0;
    cJSON_ArrayForEach(b, content)
    {
        const char *t = canon_str(b, "type");
        t = t ? t : "";
        if (strcmp(t, "tool_result") == 0) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "tool");
            const char *id = canon_str(b, "tool_use_id");
            cJSON_AddStringToObject(m, "tool_call_id", id ? id : "");
            cJSON_AddItemToObject(m, "content", tool_result_content(b, m, d));
            carry_cache_control(d, m, b);
            cJSON_AddItemToArray(msgs, m);
        } else if (strcmp(t, "text") == 0) {
            const char *tx = canon_str(b, "text");
            cJSON *p = text_part(tx ? tx : "");
            carry_cache_control(d, p, b);
            cJSON_AddItemToArray(parts, p);
        } else if (strcmp(t, "image") == 0 || strcmp(t, "document") == 0) {
            cJSON *p = media_part(b, t[0] == 'd', i, k, err);
            if (p == NULL) {
                cJSON_Delete(parts);
                return -1;
            }
            carry_cache_control(d, p, b);
            cJSON_AddItemToArray(parts, p);
        } else {
            drop_cache_control(d, b);
            drop_block(d, t); /* search_result, container_upload, ...: Anthropic-only */
        }
        k++;
    }
    if (parts->child == NULL) {
        cJSON_Delete(parts);
        return 0;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddItemToObject(m, "content", parts);
    cJSON_AddItemToArray(msgs, m);
    return 0;
}

static void add_assistant(cJSON *msgs, const cJSON *content, struct drops *d)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    if (cJSON_IsString(content)) {
        cJSON_AddStringToObject(m, "content", content->valuestring);
        cJSON_AddItemToArray(msgs, m);
        return;
    }
    cJSON *texts = cJSON_CreateArray();
    cJSON *calls = cJSON_CreateArray();
    bool marked_text = false; /* a text part with a cache marker keeps the array form (the marker needs a place) */
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const char *t = canon_str(b, "type");
        t = t ? t : "";
        if (strcmp(t, "text") == 0) {
            const char *tx = canon_str(b, "text");
            if (tx && tx[0]) {
                cJSON *p = text_part(tx);
                carry_cache_control(d, p, b);
                marked_text = marked_text || has_cache_control(b);
                cJSON_AddItemToArray(texts, p);
            } else {
                drop_cache_control(d, b);
            }
        } else if (strcmp(t, "tool_use") == 0) {
            cJSON *tc = cJSON_CreateObject();
            const char *id = canon_str(b, "id"), *name = canon_str(b, "name");
            cJSON_AddStringToObject(tc, "id", id ? id : "");
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", name ? name : "");
            const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
            char *args = input ? cJSON_PrintUnformatted(input) : NULL;
            cJSON_AddStringToObject(fn, "arguments", args ? args : "{}");
            if (args)
                cJSON_free(args);
            carry_cache_control(d, tc, b);
            cJSON_AddItemToArray(calls, tc);
        } else {
            drop_cache_control(d, b);
            drop_block(d, t); /* thinking / redacted_thinking / server tool blocks: Anthropic-only */
        }
    }
    if (texts->child && texts->child->next == NULL && !marked_text) {
        cJSON_AddStringToObject(m, "content", canon_str(texts->child, "text"));
        cJSON_Delete(texts);
    } else if (texts->child) {
        cJSON_AddItemToObject(m, "content", texts);
    } else {
        cJSON_Delete(texts);
        if (calls->child)
            cJSON_AddNullToObject(m, "content");
        else
            cJSON_AddStringToObject(m, "content", "");
    }
    if (calls->child)
        cJSON_AddItemToObject(m, "tool_calls", calls);
    else
        cJSON_Delete(calls);
    cJSON_AddItemToArray(msgs, m);
}

/* A system message (top-level `system`, or a `role: "system"` message) -> a canonical system message. */
static void add_system(cJSON *msgs, const cJSON *system, struct drops *d)
{
    if (cJSON_IsString(system)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system->valuestring);
        cJSON_AddItemToArray(msgs, m);
    } else if (cJSON_IsArray(system) && system->child) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON *parts = cJSON_AddArrayToObject(m, "content");
        const cJSON *b;
        cJSON_ArrayForEach(b, system)
        {
            const char *tx = canon_str(b, "text");
            cJSON *p = text_part(tx ? tx : "");
            carry_cache_control(d, p, b);
            cJSON_AddItemToArray(parts, p);
        }
        cJSON_AddItemToArray(msgs, m);
    }
}

/* output_config.format (and the older beta `output_format`): Anthropic structured output -> response_format
 * json_schema, which every translating provider maps (OpenAI as is, Gemini responseSchema, Anthropic emulation).
 * Other output_config members (effort, ...) have no canonical place and are dropped. */
static void add_output_format(cJSON *c, const cJSON *req, struct drops *d)
{
    const cJSON *oc = cJSON_GetObjectItemCaseSensitive(req, "output_config");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(req, "output_format");
    const cJSON *it;
    if (!cJSON_IsObject(oc))
        oc = NULL;
    cJSON_ArrayForEach(it, oc)
    {
        if (it->string && strcmp(it->string, "format") == 0) {
            if (!cJSON_IsNull(it) && (fmt == NULL || cJSON_IsNull(fmt)))
                fmt = it;
        } else if (it->string && !cJSON_IsNull(it)) {
            char name[96];
            snprintf(name, sizeof(name), "output_config.%.64s", it->string);
            drop(d, name);
        }
    }
    const char *type = canon_str(fmt, "type");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(fmt, "schema");
    if (type && strcmp(type, "json_schema") == 0 && cJSON_IsObject(schema)) {
        cJSON *rf = cJSON_AddObjectToObject(c, "response_format");
        cJSON_AddStringToObject(rf, "type", "json_schema");
        cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
        cJSON_AddStringToObject(js, "name", "response");
        cJSON_AddItemToObject(js, "schema", cJSON_Duplicate(schema, 1));
    } else if (fmt && !cJSON_IsNull(fmt)) {
        drop(d, "output_config.format");
    }
}

/* Top-level fields translation does not map: listed, never refused. */
static void drop_unmapped(const cJSON *req, struct drops *d)
{
    static const char *const mapped[] = {"model",    "max_tokens",  "messages",      "system",         "tools",
                                         "tool_choice", "stop_sequences", "temperature", "top_p",       "top_k",
                                         "stream",   "metadata",    "output_config", "output_format", "thread", NULL};
    const cJSON *it;
    cJSON_ArrayForEach(it, req)
    {
        bool known = false;
        for (size_t i = 0; mapped[i] && it->string; i++)
            known = known || strcmp(mapped[i], it->string) == 0;
        if (!known && it->string && !cJSON_IsNull(it))
            drop(d, it->string); /* thinking, context_management, service_tier, container, mcp_servers, ... */
    }
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(req, "metadata");
    if (!cJSON_IsObject(md))
        md = NULL;
    cJSON_ArrayForEach(it, md)
    if (it->string && strcmp(it->string, "user_id") != 0)
        drop(d, "metadata");
}

cJSON *front_anthropic_request_to_canonical(const cJSON *req, char *dropped, size_t dropped_size, struct gw_error *err)
{
    if (!cJSON_IsObject(req)) {
        xlate_error(err, "The request body must be a JSON object");
        return NULL;
    }
    const cJSON *thread = cJSON_GetObjectItemCaseSensitive(req, "thread");
    if (thread && !cJSON_IsNull(thread)) {
        /* Never silent loss: a thread the target cannot hold is refused with the error the SDKs fall back on
         * (they resend the whole conversation without `thread`). */
        xlate_error(err,
                    "thread: message threads are held only by Anthropic deployments and this model is served by "
                    "another provider; send the full conversation without `thread`");
        snprintf(err->code, sizeof(err->code), "thread_unsupported_request");
        return NULL;
    }
    struct drops dd = {.list = dropped, .size = dropped_size, .cache_marked = false}, *d = &dd;
    drop_unmapped(req, d);
    cJSON *c = cJSON_CreateObject();
    const char *model = canon_str(req, "model");
    cJSON_AddStringToObject(c, "model", model ? model : "");
    cJSON *msgs = cJSON_AddArrayToObject(c, "messages");

    add_system(msgs, cJSON_GetObjectItemCaseSensitive(req, "system"), d);

    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(req, "messages"))
    {
        const char *role = canon_str(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (role && strcmp(role, "assistant") == 0) {
            add_assistant(msgs, content, d);
        } else if (role && strcmp(role, "system") == 0) {
            add_system(msgs, content, d); /* where it stands: OpenAI-style targets keep the position */
        } else if (add_user(msgs, content, i, d, err) != 0) {
            cJSON_Delete(c);
            return NULL;
        }
        i++;
    }

    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    if (cJSON_IsArray(tools) && tools->child) {
        cJSON *ot = cJSON_AddArrayToObject(c, "tools");
        const cJSON *t;
        int k = 0;
        cJSON_ArrayForEach(t, tools)
        {
            const char *type = canon_str(t, "type");
            if (type && strcmp(type, "custom") != 0) {
                /* a server tool (web search, code execution, ...) only Anthropic runs: dropped and listed, unless
                 * tool_choice forces it (the answer would not be what the client asked for) */
                const cJSON *ch = cJSON_GetObjectItemCaseSensitive(req, "tool_choice");
                const char *forced = canon_str(ch, "type") && strcmp(canon_str(ch, "type"), "tool") == 0
                                         ? canon_str(ch, "name")
                                         : NULL;
                const char *tname = canon_str(t, "name");
                if (forced && tname && strcmp(forced, tname) == 0) {
                    xlate_error(err,
                                "tools.%d: the Anthropic server tool '%s' can only be used with Anthropic models (this "
                                "model is served by another provider)",
                                k, type);
                    cJSON_Delete(c);
                    return NULL;
                }
                char name[96];
                snprintf(name, sizeof(name), "tools.%.80s", type);
                drop(d, name);
                k++;
                continue;
            }
            cJSON *o = cJSON_CreateObject();
            carry_cache_control(d, o, t);
            cJSON_AddStringToObject(o, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(o, "function");
            const char *name = canon_str(t, "name"), *desc = canon_str(t, "description");
            cJSON_AddStringToObject(fn, "name", name ? name : "");
            if (desc)
                cJSON_AddStringToObject(fn, "description", desc);
            const cJSON *schema = cJSON_GetObjectItemCaseSensitive(t, "input_schema");
            cJSON_AddItemToObject(fn, "parameters",
                                  schema ? cJSON_Duplicate(schema, 1) : cJSON_Parse("{\"type\":\"object\"}"));
            cJSON_AddItemToArray(ot, o);
            k++;
        }
        if (cJSON_GetArraySize(ot) == 0)
            cJSON_DeleteItemFromObjectCaseSensitive(c, "tools"); /* only server tools: none for the target */
    }
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(req, "tool_choice");
    if (cJSON_IsObject(choice) && cJSON_GetObjectItemCaseSensitive(c, "tools")) { /* OpenAI: no tool_choice alone */
        const char *type = canon_str(choice, "type");
        type = type ? type : "auto";
        if (strcmp(type, "any") == 0) {
            cJSON_AddStringToObject(c, "tool_choice", "required");
        } else if (strcmp(type, "none") == 0) {
            cJSON_AddStringToObject(c, "tool_choice", "none");
        } else if (strcmp(type, "tool") == 0) {
            cJSON *tc = cJSON_AddObjectToObject(c, "tool_choice");
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            const char *name = canon_str(choice, "name");
            cJSON_AddStringToObject(fn, "name", name ? name : "");
        } else {
            cJSON_AddStringToObject(c, "tool_choice", "auto");
        }
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(choice, "disable_parallel_tool_use")))
            cJSON_AddFalseToObject(c, "parallel_tool_calls");
    }

    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, "max_tokens");
    if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(c, "max_tokens", v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(req, "stop_sequences");
    if (cJSON_IsArray(v) && v->child)
        cJSON_AddItemToObject(c, "stop", cJSON_Duplicate(v, 1));
    static const char *const numeric[] = {"temperature", "top_p", "top_k"};
    for (size_t k = 0; k < 3; k++) {
        v = cJSON_GetObjectItemCaseSensitive(req, numeric[k]);
        if (cJSON_IsNumber(v))
            cJSON_AddNumberToObject(c, numeric[k], v->valuedouble);
    }
    const char *user = canon_str(cJSON_GetObjectItemCaseSensitive(req, "metadata"), "user_id");
    if (user)
        cJSON_AddStringToObject(c, "user", user);
    add_output_format(c, req, d);
    v = cJSON_GetObjectItemCaseSensitive(req, "stream");
    if (cJSON_IsTrue(v))
        cJSON_AddTrueToObject(c, "stream");
    if (dd.cache_marked) /* canon.h: the providers without an equivalent list it as dropped */
        cJSON_AddTrueToObject(c, CANON_CACHE_CONTROL);
    return c;
}

static cJSON *anthropic_to_canonical(struct ex_request *ex, struct gw_error *err)
{
    if (athread_translatable(thread_of((struct exchange *)((char *)ex - offsetof(struct exchange, rq))), err) != 0)
        return NULL;
    /* the tree's strings are C strings: a \u0000 would cut one short without a word */
    char key[64];
    if (canon_json_has_nul(ex->body.p, ex->body.n, key, sizeof(key)))
        return canon_nul_refused(err, key), NULL;
    if (ex->client_tree == NULL)
        ex->client_tree = cJSON_ParseWithLength(ex->body.p, ex->body.n);
    if (ex->client_tree == NULL) {
        xlate_error(err, "There was an issue with your request body: invalid JSON");
        return NULL;
    }
    return front_anthropic_request_to_canonical(ex->client_tree, ex->dropped_fields, sizeof(ex->dropped_fields), err);
}

/* ---------- responses: canonical chat.completion -> Anthropic message ---------- */

void front_anthropic_usage_append(struct buf *out, const struct usage *u)
{
    int64_t uncached = u->input - u->cached_input - u->cache_write;
    if (uncached < 0)
        uncached = 0;
    buf_printf(out,
               "{\"input_tokens\":%lld,\"cache_creation_input_tokens\":%lld,\"cache_read_input_tokens\":%lld,"
               "\"output_tokens\":%lld}",
               (long long)uncached, (long long)u->cache_write, (long long)u->cached_input, (long long)u->output);
}

static int64_t num(struct usage *u, const cJSON *o, const char *k)
{
    return usage_read_json(u, cJSON_GetObjectItemCaseSensitive(o, k));
}

/* Tool-call arguments (a JSON string) as a compact object; anything that is not a JSON object becomes {}. */
static void append_input(struct buf *out, const char *args)
{
    cJSON *t = args ? cJSON_Parse(args) : NULL;
    if (cJSON_IsObject(t)) {
        char *s = cJSON_PrintUnformatted(t);
        buf_append_str(out, s ? s : "{}");
        if (s)
            cJSON_free(s);
    } else {
        buf_append_str(out, "{}");
    }
    cJSON_Delete(t);
}

int front_anthropic_message_from_canonical(const cJSON *resp, const char *id, const char *model, const struct usage *usage,
                                     struct buf *out, struct gw_error *err)
{
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    if (!cJSON_IsObject(msg)) {
        gw_error_set(err, 502, GW_ERR_API, "the upstream response has no message to relay");
        return -1;
    }
    buf_append_str(out, "{\"id\":");
    buf_append_json_cstr(out, id);
    buf_append_str(out, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    buf_append_json_cstr(out, model);
    buf_append_str(out, ",\"content\":[");
    int nblocks = 0;
    struct buf text = BUF_INIT(BUF_UNBOUNDED);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(content)) {
        buf_append_str(&text, content->valuestring);
    } else if (cJSON_IsArray(content)) {
        const cJSON *p;
        cJSON_ArrayForEach(p, content)
        {
            const char *tx = canon_str(p, "text");
            if (tx)
                buf_append_str(&text, tx);
        }
    }
    const char *refusal = canon_str(msg, "refusal");
    if (text.len == 0 && refusal)
        buf_append_str(&text, refusal);
    if (text.len) {
        buf_append_str(out, "{\"type\":\"text\",\"text\":");
        buf_append_json_str(out, text.data, text.len);
        buf_append_str(out, "}");
        nblocks++;
    }
    buf_free(&text);
    bool any_tool = false;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls"))
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const char *tid = canon_str(tc, "id"), *name = canon_str(fn, "name");
        if (nblocks++)
            buf_append_char(out, ',');
        buf_append_str(out, "{\"type\":\"tool_use\",\"id\":");
        buf_append_json_cstr(out, tid ? tid : "");
        buf_append_str(out, ",\"name\":");
        buf_append_json_cstr(out, name ? name : "");
        buf_append_str(out, ",\"input\":");
        append_input(out, canon_str(fn, "arguments"));
        buf_append_str(out, "}");
        any_tool = true;
    }
    const char *fr = canon_str(choice, "finish_reason");
    enum finish f = fr ? gw_finish_from_openai(fr) : (any_tool ? FINISH_TOOL_CALLS : FINISH_STOP);
    if (refusal && !cJSON_IsString(content))
        f = FINISH_CONTENT_FILTER;
    buf_append_str(out, "],\"stop_reason\":");
    buf_append_json_cstr(out, gw_finish_anthropic(f));
    buf_append_str(out, ",\"stop_sequence\":null,\"usage\":");
    struct usage u;
    if (usage && usage->known) {
        u = *usage;
    } else {
        const cJSON *cu = cJSON_GetObjectItemCaseSensitive(resp, "usage");
        memset(&u, 0, sizeof(u));
        u.input = num(&u, cu, "prompt_tokens");
        u.output = num(&u, cu, "completion_tokens");
        u.cached_input = num(&u, cJSON_GetObjectItemCaseSensitive(cu, "prompt_tokens_details"), "cached_tokens");
        usage_check(&u, NULL); /* the upstream's numbers, held to the one rule (zeros if implausible) */
    }
    front_anthropic_usage_append(out, &u);
    buf_append_str(out, "}");
    return 0;
}

static int anthropic_write_response(struct exchange *ex, const cJSON *resp, struct buf *out, struct gw_error *err)
{
    const struct usage *u = ex->att && ex->att->usage.known ? &ex->att->usage : NULL;
    size_t at = out->len;
    if (front_anthropic_message_from_canonical(resp, ex->id, ex->rq.model_name, u, out, err) != 0)
        return -1;
    struct athread *t = thread_of(ex);
    if (t) { /* the thread keeps the reply as the client got it */
        cJSON *m = cJSON_ParseWithLength(out->data + at, out->len - at);
        athread_keep(ex, t, m);
        cJSON_Delete(m);
    }
    return 0;
}

/* ---------- streaming: deltas -> Anthropic's SSE event sequence ----------
 *
 *   message_start, then per content block: content_block_start, content_block_delta*, content_block_stop,
 *   then message_delta (stop_reason + usage), message_stop.
 * Blocks are opened in the order their first delta arrives and one is open at a time: text after a tool call, or
 * a second tool call, closes the open block first. The finish reason is held until the end, because OpenAI-style
 * upstreams send usage after their finish chunk and message_delta carries both. */

static void ev_begin(struct buf *out, const char *name)
{
    buf_printf(out, "event: %s\ndata: ", name);
}

static void ev_end(struct buf *out)
{
    buf_append_str(out, "\n\n");
}

/* What the Anthropic stream writer has sent so far (ex->fstate). */
struct anthropic_fstate {
    bool started;             /* message_start sent */
    int open_block;           /* index of the open content block, -1 none */
    int open_block_kind;      /* 0 text, 1 tool_use */
    int next_block;           /* next content block index */
    int tool_block[256];      /* block index of tool call i (-1: not started) */
    enum finish finish;       /* held until the end (usage arrives after the finish reason) */
    bool finished;
    struct athread *thread;   /* a message thread (anthropic_threads.h), or NULL */
};

static void *anthropic_fstate_new(void)
{
    return xcalloc(1, sizeof(struct anthropic_fstate));
}

static void anthropic_fstate_free(void *p)
{
    struct anthropic_fstate *fs = p;
    if (fs)
        athread_free(fs->thread);
    xfree(fs);
}

/* The front's state: the stream writer's, and a thread's also for complete responses. */
static struct anthropic_fstate *fstate_of(struct exchange *ex)
{
    if (ex->fstate == NULL)
        ex->fstate = anthropic_fstate_new();
    return ex->fstate;
}

static struct athread *thread_of(const struct exchange *ex)
{
    const struct anthropic_fstate *fs = ex->fstate;
    return fs ? fs->thread : NULL;
}

/* The front's stage: a message thread is looked up (anthropic_threads.c). */
static int anthropic_prepare(struct exchange *ex)
{
    /* most requests have no thread: no state and no second scan of the body for them (parse validated the member;
     * a key spelled with escapes is still refused by the translation, never dropped) */
    if (ex->rq.body.n == 0 || memmem(ex->rq.body.p, ex->rq.body.n, "\"thread\"", 8) == NULL)
        return EX_CONTINUE;
    return athread_prepare(ex, &fstate_of(ex)->thread);
}

static void stream_start(struct exchange *ex, struct buf *out)
{
    struct anthropic_fstate *fs = ex->fstate;
    if (fs->started)
        return;
    fs->started = true;
    fs->open_block = -1;
    fs->next_block = 0;
    for (size_t i = 0; i < sizeof(fs->tool_block) / sizeof(fs->tool_block[0]); i++)
        fs->tool_block[i] = -1;
    ev_begin(out, "message_start");
    buf_append_str(out, "{\"type\":\"message_start\",\"message\":{\"id\":");
    buf_append_json_cstr(out, ex->id);
    buf_append_str(out, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    buf_append_json_cstr(out, ex->rq.model_name);
    buf_append_str(out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
    /* what is known now (an upstream that reports input usage up front), else an estimate (request bytes / 4):
     * clients such as LangChain read input tokens only here. message_delta carries the provider's totals. */
    struct usage u = ex->usage;
    u.output = 0;
    if (u.input <= 0) /* a continued thread's estimate counts the conversation it holds too */
        u.input = (int64_t)(ex->rq.body.n + athread_held_bytes(thread_of(ex)) + 3) / 4;
    front_anthropic_usage_append(out, &u);
    buf_append_str(out, "}}");
    ev_end(out);
}

static void block_stop(struct exchange *ex, struct buf *out)
{
    struct anthropic_fstate *fs = ex->fstate;
    if (fs->open_block < 0)
        return;
    ev_begin(out, "content_block_stop");
    buf_printf(out, "{\"type\":\"content_block_stop\",\"index\":%d}", fs->open_block);
    ev_end(out);
    fs->open_block = -1;
}

static int tool_slot(int tool_index)
{
    int n = (int)(sizeof(((struct anthropic_fstate *)0)->tool_block) / sizeof(int));
    return tool_index >= 0 && tool_index < n ? tool_index : -1;
}

static void stream_delta_write(struct exchange *ex, const struct chat_delta *d, struct buf *out)
{
    struct anthropic_fstate *fs = ex->fstate;
    switch (d->kind) {
    case DELTA_TEXT:
        if (d->text.n == 0)
            return;
        stream_start(ex, out);
        if (fs->open_block < 0 || fs->open_block_kind != 0) {
            block_stop(ex, out);
            fs->open_block = fs->next_block++;
            fs->open_block_kind = 0;
            ev_begin(out, "content_block_start");
            buf_printf(out,
                       "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":{\"type\":\"text\","
                       "\"text\":\"\"}}",
                       fs->open_block);
            ev_end(out);
        }
        ev_begin(out, "content_block_delta");
        buf_printf(out, "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"text_delta\",\"text\":",
                   fs->open_block);
        buf_append_json_str(out, d->text.p, d->text.n);
        buf_append_str(out, "}}");
        ev_end(out);
        break;
    case DELTA_TOOL_START: {
        int slot = tool_slot(d->tool_index);
        if (slot < 0)
            return; /* beyond the tool calls one message can carry here (64) */
        stream_start(ex, out);
        if (fs->tool_block[slot] >= 0)
            return; /* already started (a repeated id/name fragment) */
        block_stop(ex, out);
        fs->open_block = fs->next_block++;
        fs->open_block_kind = 1;
        fs->tool_block[slot] = fs->open_block;
        ev_begin(out, "content_block_start");
        buf_printf(out, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":{\"type\":\"tool_use\",\"id\":",
                   fs->open_block);
        buf_append_json_str(out, d->tool_id.p, d->tool_id.n);
        buf_append_str(out, ",\"name\":");
        buf_append_json_str(out, d->tool_name.p, d->tool_name.n);
        buf_append_str(out, ",\"input\":{}}}");
        ev_end(out);
        break;
    }
    case DELTA_TOOL_ARGS: {
        int slot = tool_slot(d->tool_index);
        if (slot < 0 || d->text.n == 0)
            return;
        stream_start(ex, out);
        if (fs->tool_block[slot] < 0) {
            /* arguments before the call's start: open it without id/name rather than lose them */
            struct chat_delta st = {.kind = DELTA_TOOL_START, .tool_index = d->tool_index};
            stream_delta_write(ex, &st, out);
        }
        /* Upstreams send one call's arguments before the next call starts; should a late fragment of an earlier
         * call still arrive, it goes to that call's block by index (the SDKs accumulate by index). */
        ev_begin(out, "content_block_delta");
        buf_printf(out,
                   "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"input_json_delta\","
                   "\"partial_json\":",
                   fs->tool_block[slot]);
        buf_append_json_str(out, d->text.p, d->text.n);
        buf_append_str(out, "}}");
        ev_end(out);
        break;
    }
    case DELTA_FINISH:
        fs->finish = d->finish; /* held: message_delta goes out at the end, with the usage */
        break;
    case DELTA_USAGE:
        break; /* the exchange keeps it in ex->usage */
    }
}

static void anthropic_stream_delta(struct exchange *ex, const struct chat_delta *d, struct buf *out)
{
    stream_delta_write(ex, d, out);
    athread_delta(thread_of(ex), d); /* a thread keeps the reply */
}

void front_anthropic_error_json(struct buf *out, const struct gw_error *err, const char *request_id)
{
    buf_append_str(out, "{\"type\":\"error\",\"error\":{\"type\":");
    buf_append_json_cstr(out, gw_err_type_anthropic(err->type));
    buf_append_str(out, ",\"message\":");
    buf_append_json_cstr(out, err->message);
    if (!err->from_upstream && strncmp(err->code, "thread_", 7) == 0) {
        /* the machine-readable cause the SDKs branch on (error.details.error_code) */
        buf_append_str(out, ",\"details\":{\"error_code\":");
        buf_append_json_cstr(out, err->code);
        buf_append_str(out, "}");
    }
    buf_append_str(out, "}");
    if (request_id) {
        buf_append_str(out, ",\"request_id\":");
        buf_append_json_cstr(out, request_id);
    }
    buf_append_str(out, "}");
}

static const char *req_id(const struct exchange *ex)
{
    return ex->rq.request_id[0] ? ex->rq.request_id : NULL;
}

static void anthropic_stream_end(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    if (err) {
        ev_begin(out, "error");
        front_anthropic_error_json(out, err, req_id(ex));
        ev_end(out);
        return;
    }
    struct anthropic_fstate *fs = ex->fstate;
    stream_start(ex, out);
    block_stop(ex, out);
    enum finish f = fs->finish;
    if (f == FINISH_NONE) {
        f = FINISH_STOP;
        for (size_t i = 0; i < sizeof(fs->tool_block) / sizeof(fs->tool_block[0]); i++)
            if (fs->tool_block[i] >= 0)
                f = FINISH_TOOL_CALLS;
    }
    fs->finished = true;
    ev_begin(out, "message_delta");
    buf_append_str(out, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
    buf_append_json_cstr(out, gw_finish_anthropic(f));
    buf_append_str(out, ",\"stop_sequence\":null},\"usage\":");
    front_anthropic_usage_append(out, &ex->usage);
    buf_append_str(out, "}");
    ev_end(out);
    ev_begin(out, "message_stop");
    buf_append_str(out, "{\"type\":\"message_stop\"}");
    ev_end(out);
    athread_keep(ex, fs->thread, NULL);
}

static void anthropic_forward_event(struct exchange *ex, const struct stream_event *ev, struct buf *out)
{
    (void)ex;
    if (ev->event.n) {
        buf_append_str(out, "event: ");
        buf_append(out, ev->event.p, ev->event.n);
        buf_append_char(out, '\n');
    }
    sse_append_raw(out, ev->data.p, ev->data.n);
}

static void anthropic_error_body(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    front_anthropic_error_json(out, err, req_id(ex));
}

const struct front_ops front_anthropic = {
    .name = "anthropic",
    .wire = WIRE_ANTHROPIC,
    .parse = anthropic_parse,
    .to_canonical = anthropic_to_canonical,
    .stream_new = anthropic_fstate_new,
    .stream_free = anthropic_fstate_free,
    .write_response = anthropic_write_response,
    .stream_delta = anthropic_stream_delta,
    .stream_end = anthropic_stream_end,
    .forward_event = anthropic_forward_event,
    .error_body = anthropic_error_body,
    .prepare = anthropic_prepare,
};
