/* front_openai.c: the client-facing OpenAI front doors, POST /v1/chat/completions and POST /v1/embeddings:
 * parse and check the request, turn it into the canonical form, and write responses, stream chunks and errors
 * in the OpenAI format. The codec it shares with the providers is wire_openai.c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/alloc.h"
#include "common/jscan.h"
#include "gateway/exchange.h"
#include "gateway/front.h"
#include "gateway/registry.h"
#include "gateway/providers/canon.h"
#include "net/sse.h"
#include "gateway/wire_openai.h"

/* ---------- front door: parse ---------- */

static int bad(struct gw_error *err, const char *param, const char *fmt, const char *arg)
{
    gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, fmt, arg);
    if (param)
        snprintf(err->param, sizeof(err->param), "%s", param);
    return -1;
}

static int parse_model(struct ex_request *ex, const struct jval *v, struct gw_error *err)
{
    if (v->type == J_NONE)
        return bad(err, "model", "you must provide a model parameter%s", "");
    struct buf m = BUF_INIT(sizeof(ex->model_name) - 1);
    if (v->type != J_STRING || jval_str(v, &m) != 0 || m.len == 0) {
        buf_free(&m);
        return bad(err, "model", "'model' must be a non-empty string of at most 255 characters%s", "");
    }
    memcpy(ex->model_name, m.data, m.len + 1);
    buf_free(&m);
    return 0;
}

static int parse_positive_int(const struct jval *v, const char *name, int64_t max, int64_t *out,
                              struct gw_error *err)
{
    if (v->type == J_NONE || v->type == J_NULL)
        return 0;
    int64_t n;
    if (jval_i64(v, &n) != 0 || n < 1 || n > max) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "'%s' must be an integer between 1 and %lld", name,
                     (long long)max);
        snprintf(err->param, sizeof(err->param), "%s", name);
        return -1;
    }
    *out = n;
    return 0;
}

static int check_number(const struct jval *v, const char *name, double lo, double hi, struct gw_error *err)
{
    if (v->type == J_NONE || v->type == J_NULL)
        return 0;
    double d;
    if (jval_double(v, &d) != 0 || d < lo || d > hi) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "'%s' must be a number between %g and %g", name, lo, hi);
        snprintf(err->param, sizeof(err->param), "%s", name);
        return -1;
    }
    return 0;
}

static int json_error(struct ex_request *ex, struct gw_error *err, size_t off, const char *msg)
{
    if (strcmp(msg, "duplicate member") == 0 && off < ex->body.n && ex->body.p[off] == '"') {
        /* name the field: jscan points at the second copy's key */
        const char *q = memchr(ex->body.p + off + 1, '"', ex->body.n - off - 1);
        size_t n = q ? (size_t)(q - ex->body.p - off - 1) : 0;
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST,
                     "'%.*s' appears more than once in the request body (duplicate member)", (int)(n > 64 ? 64 : n),
                     ex->body.p + off + 1);
        if (n < sizeof(err->param))
            snprintf(err->param, sizeof(err->param), "%.*s", (int)n, ex->body.p + off + 1);
        return -1;
    }
    gw_error_set(err, 400, GW_ERR_INVALID_REQUEST,
                 "We could not parse the JSON body of your request: %s at byte %zu", msg, off);
    return -1;
}

/* ---- type checks of the fields the door knows (as OpenAI's own API refuses them), linear and tree-free: one
 * jscan pass per message / tool / part on top of the body's own validation. Unknown fields still pass. ---- */

static bool given(const struct jval *v)
{
    return v->type != J_NONE && v->type != J_NULL;
}

/* 400 invalid_request_error naming the field, e.g. messages[3].tool_call_id */
static int bad_param(struct gw_error *err, const char *param, const char *what)
{
    gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "Invalid type for '%s': %s", param, what);
    str_lcpy(err->param, param, sizeof(err->param));
    return -1;
}

static int check_bool(const struct jval *v, const char *name, struct gw_error *err)
{
    if (given(v) && v->type != J_TRUE && v->type != J_FALSE)
        return bad_param(err, name, "expected a boolean");
    return 0;
}

static int check_int(const struct jval *v, const char *name, int64_t lo, int64_t hi, struct gw_error *err)
{
    int64_t n;
    if (!given(v))
        return 0;
    if (jval_i64(v, &n) != 0)
        return bad_param(err, name, "expected an integer");
    if (n < lo || n > hi) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "'%s' must be an integer between %lld and %lld", name,
                     (long long)lo, (long long)hi);
        str_lcpy(err->param, name, sizeof(err->param));
        return -1;
    }
    return 0;
}

struct stop_state {
    int n;
    bool bad;
};

static int on_stop(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    struct stop_state *st = ud;
    st->n++;
    if (v->type != J_STRING) {
        st->bad = true;
        return -1;
    }
    return 0;
}

static int check_stop(const struct jval *v, struct gw_error *err)
{
    if (!given(v) || v->type == J_STRING)
        return 0;
    if (v->type != J_ARRAY)
        return bad_param(err, "stop", "expected a string or an array of strings");
    struct stop_state st = {0, false};
    jscan_each(v, on_stop, &st);
    if (st.bad)
        return bad_param(err, "stop", "expected a string or an array of strings");
    if (st.n > 4) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "'stop' may hold at most 4 sequences (got %d)", st.n);
        snprintf(err->param, sizeof(err->param), "stop");
        return -1;
    }
    return 0;
}

static int on_logit_bias(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    (void)ud;
    return v->type == J_NUMBER ? 0 : -1;
}

/* Errors name the field as OpenAI does ("messages[3].tool_call_id"); the name is formatted only when there is
 * an error (formatting it per message was most of the cost of these checks: callgrind). */
static int fail_at(struct gw_error *err, bool missing, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(struct gw_error *err, bool missing, const char *what, const char *fmt, ...)
{
    char param[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(param, sizeof(param), fmt, ap);
    va_end(ap);
    if (missing)
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "Missing required parameter: '%s'", param);
    else
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "Invalid type for '%s': %s", param, what);
    str_lcpy(err->param, param, sizeof(err->param));
    return 1; /* non-zero and not jscan's -1: the error is set */
}

/* {"name": string} inside a function/custom tool or tool_choice: tools[i].function.name (tool < 0: tool_choice).
 * fn, custom: the object's "function" and "custom" members. */
static int check_named(const struct jval *type, const struct jval *fn, const struct jval *custom, int tool,
                       struct gw_error *err)
{
    bool is_fn = jval_is_str(type, "function");
    if (!is_fn && !jval_is_str(type, "custom"))
        return 0; /* other types: not ours to judge (OpenAI adds them) */
    const char *kind = is_fn ? "function" : "custom";
    const struct jval *o = is_fn ? fn : custom;
    struct jval name;
    if (o->type != J_OBJECT)
        return tool >= 0 ? fail_at(err, false, "expected an object", "tools[%d].%s", tool, kind)
                         : fail_at(err, false, "expected an object", "tool_choice.%s", kind);
    if (jscan_get(o->raw.p, o->raw.n, "name", &name) != 0 || name.type != J_STRING || name.raw.n <= 2)
        return tool >= 0 ? fail_at(err, false, "expected a non-empty string", "tools[%d].%s.name", tool, kind)
                         : fail_at(err, false, "expected a non-empty string", "tool_choice.%s.name", kind);
    return 0;
}

struct idx_state {
    int i;
    int msg; /* for content parts: the message's index */
    struct gw_error *err;
};

static const char *const tool_keys[] = {"type", "function", "custom"};

static int on_tool_item(const struct jval *t, const struct jval *f, void *ud)
{
    struct idx_state *st = ud;
    int i = st->i++;
    if (t->type != J_OBJECT)
        return fail_at(st->err, false, "expected an object", "tools[%d]", i);
    if (f[0].type != J_STRING)
        return fail_at(st->err, false, "expected a string ('function')", "tools[%d].type", i);
    return check_named(&f[0], &f[1], &f[2], i, st->err);
}

static int check_tool_choice(const struct jval *v, struct gw_error *err)
{
    if (!given(v))
        return 0;
    if (v->type == J_STRING) {
        if (jval_is_str(v, "none") || jval_is_str(v, "auto") || jval_is_str(v, "required"))
            return 0;
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST,
                     "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object");
        snprintf(err->param, sizeof(err->param), "tool_choice");
        return 1; /* non-zero and not jscan's -1: the error is set */
    }
    if (v->type != J_OBJECT)
        return bad_param(err, "tool_choice", "expected a string or an object");
    struct jval f[3];
    if (jscan_fields(v->raw.p, v->raw.n, tool_keys, f, 3, NULL, NULL) != 0 || f[0].type != J_STRING)
        return bad_param(err, "tool_choice.type", "expected a string");
    return check_named(&f[0], &f[1], &f[2], -1, err) ? -1 : 0;
}

static int on_part(const struct jval *p, const struct jval *type, void *ud)
{
    struct idx_state *st = ud;
    int i = st->i++;
    if (p->type != J_OBJECT)
        return fail_at(st->err, false, "expected a content part object", "messages[%d].content[%d]", st->msg, i);
    if (type->type != J_STRING)
        return fail_at(st->err, false, "expected a string", "messages[%d].content[%d].type", st->msg, i);
    return 0;
}

enum role { ROLE_UNKNOWN, ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL, ROLE_FUNCTION };

/* Compared on the raw bytes first (a role is never escaped in practice: jval_is_str's strlen per candidate was a
 * visible cost per message), with jval_is_str for a role spelled with escapes. */
static enum role role_of(const struct jval *r)
{
    static const char *const names[] = {NULL, "system", "developer", "user", "assistant", "tool", "function"};
    if (r->type != J_STRING)
        return ROLE_UNKNOWN;
    bool escaped = memchr(r->raw.p, '\\', r->raw.n) != NULL;
    for (int i = 1; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
        size_t n = strlen(names[i]);
        if (escaped ? jval_is_str(r, names[i]) : (r->raw.n == n + 2 && memcmp(r->raw.p + 1, names[i], n) == 0))
            return (enum role)i;
    }
    return ROLE_UNKNOWN;
}

static const char *const type_key[] = {"type"};
static const char *const message_keys[] = {"role", "content", "tool_call_id", "tool_calls"};
enum { M_ROLE, M_CONTENT, M_TCID, M_TCALLS, M_COUNT };

static int on_message(const struct jval *m, const struct jval *f, void *ud)
{
    struct idx_state *st = ud;
    int i = st->i++;
    if (m->type != J_OBJECT)
        return fail_at(st->err, false, "expected a message object", "messages[%d]", i);
    if (f[M_ROLE].type == J_NONE)
        return fail_at(st->err, true, NULL, "messages[%d].role", i);
    enum role role = role_of(&f[M_ROLE]);
    if (role == ROLE_UNKNOWN) {
        gw_error_set(st->err, 400, GW_ERR_INVALID_REQUEST,
                     "Invalid value for 'messages[%d].role': expected one of system, developer, user, assistant, "
                     "tool",
                     i);
        snprintf(st->err->param, sizeof(st->err->param), "messages[%d].role", i);
        return 1;
    }
    bool assistant = role == ROLE_ASSISTANT, tool = role == ROLE_TOOL, function = role == ROLE_FUNCTION;
    /* content: a string or an array of parts; null (or absent) only for assistant (tool calls) and function */
    const struct jval *c = &f[M_CONTENT];
    if (!given(c)) {
        if (!assistant && !function)
            return fail_at(st->err, true, NULL, "messages[%d].content", i);
    } else if (c->type == J_ARRAY) {
        struct idx_state ps = {0, i, st->err};
        struct jval type;
        int rc = jscan_each_fields(c, type_key, &type, 1, on_part, &ps);
        if (rc != 0)
            return rc > 0 ? rc : fail_at(st->err, false, "a member appears twice", "messages[%d].content", i);
    } else if (c->type != J_STRING) {
        return fail_at(st->err, false, "expected a string or an array of content parts", "messages[%d].content", i);
    }
    if (tool) {
        if (f[M_TCID].type == J_NONE)
            return fail_at(st->err, true, NULL, "messages[%d].tool_call_id", i);
        if (f[M_TCID].type != J_STRING)
            return fail_at(st->err, false, "expected a string", "messages[%d].tool_call_id", i);
    }
    if (given(&f[M_TCALLS]) && f[M_TCALLS].type != J_ARRAY)
        return fail_at(st->err, false, "expected an array", "messages[%d].tool_calls", i);
    return 0;
}

static int openai_chat_parse(struct ex_request *ex, struct gw_error *err)
{
    static const char *const keys[] = {"model",       "messages", "stream", "stream_options", "max_tokens",
                                       "max_completion_tokens", "n",   "tools",  "temperature",   "top_p",
                                       "stop", "tool_choice", "response_format", "user", "logit_bias",
                                       "parallel_tool_calls", "presence_penalty", "frequency_penalty", "seed",
                                       "logprobs", "top_logprobs"};
    enum {
        K_MODEL, K_MESSAGES, K_STREAM, K_OPTS, K_MAX, K_MAXC, K_N, K_TOOLS, K_TEMP, K_TOPP,
        K_STOP, K_TCHOICE, K_RFMT, K_USER, K_LBIAS, K_PTC, K_PPEN, K_FPEN, K_SEED, K_LOGPROBS, K_TOPLP,
        K_COUNT
    };
    struct jval f[K_COUNT];
    size_t off;
    const char *msg;
    if (jscan_fields(ex->body.p, ex->body.n, keys, f, K_COUNT, &off, &msg) != 0)
        return json_error(ex, err, off, msg);
    ex->validated = ex->body;
    if (parse_model(ex, &f[K_MODEL], err) != 0)
        return -1;
    if (f[K_MESSAGES].type == J_NONE)
        return bad(err, "messages", "'messages' is a required property%s", "");
    if (f[K_MESSAGES].type != J_ARRAY)
        return bad(err, "messages", "'messages' must be an array of message objects%s", "");
    {
        /* non-empty (every element is checked below) */
        struct str inner = str_trim(str_make(f[K_MESSAGES].raw.p + 1, f[K_MESSAGES].raw.n - 2));
        if (inner.n == 0)
            return bad(err, "messages", "'messages' must contain at least one message%s", "");
    }
    if (f[K_STREAM].type != J_NONE && f[K_STREAM].type != J_NULL && jval_bool(&f[K_STREAM], &ex->stream) != 0)
        return bad(err, "stream", "'stream' must be a boolean%s", "");
    if (f[K_OPTS].type != J_NONE && f[K_OPTS].type != J_NULL) {
        if (f[K_OPTS].type != J_OBJECT)
            return bad(err, "stream_options", "'stream_options' must be an object%s", "");
        if (!ex->stream)
            return bad(err, "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.%s",
                       "");
        struct jval iu;
        if (jscan_get(f[K_OPTS].raw.p, f[K_OPTS].raw.n, "include_usage", &iu) == 0)
            jval_bool(&iu, &ex->client_include_usage);
    }
    ex->max_tokens = -1;
    if (parse_positive_int(&f[K_MAX], "max_tokens", 100000000, &ex->max_tokens, err) != 0 ||
        parse_positive_int(&f[K_MAXC], "max_completion_tokens", 100000000, &ex->max_tokens, err) != 0)
        return -1;
    int64_t n = 1;
    if (parse_positive_int(&f[K_N], "n", 128, &n, err) != 0)
        return -1;
    if (f[K_TOOLS].type != J_NONE && f[K_TOOLS].type != J_NULL && f[K_TOOLS].type != J_ARRAY)
        return bad(err, "tools", "'tools' must be an array%s", "");
    if (check_number(&f[K_TEMP], "temperature", 0, 2, err) != 0 || check_number(&f[K_TOPP], "top_p", 0, 1, err) != 0)
        return -1;
    if (given(&f[K_TOOLS])) {
        struct idx_state ts = {0, 0, err};
        struct jval tf[3];
        int rc = jscan_each_fields(&f[K_TOOLS], tool_keys, tf, 3, on_tool_item, &ts);
        if (rc != 0)
            return rc > 0 ? -1 : bad_param(err, "tools", "a member appears twice");
    }
    if (check_stop(&f[K_STOP], err) != 0 || check_tool_choice(&f[K_TCHOICE], err) != 0)
        return -1;
    if (given(&f[K_RFMT])) {
        struct jval t;
        if (f[K_RFMT].type != J_OBJECT)
            return bad_param(err, "response_format", "expected an object");
        if (jscan_get(f[K_RFMT].raw.p, f[K_RFMT].raw.n, "type", &t) != 0 || t.type != J_STRING)
            return bad_param(err, "response_format.type", "expected a string");
    }
    if (given(&f[K_USER]) && f[K_USER].type != J_STRING)
        return bad_param(err, "user", "expected a string");
    /* The end-user id for attribution and spans, without a second scan of the body later (an escaped one is left
     * to the reader that unescapes it). */
    ex->user = STR_NULL;
    ex->user_checked = true;
    if (f[K_USER].type == J_STRING) {
        struct str u = str_make(f[K_USER].raw.p + 1, f[K_USER].raw.n - 2);
        if (memchr(u.p, '\\', u.n) == NULL)
            ex->user = u;
        else
            ex->user_checked = false;
    }
    if (given(&f[K_LBIAS]) &&
        (f[K_LBIAS].type != J_OBJECT || jscan_each(&f[K_LBIAS], on_logit_bias, NULL) != 0))
        return bad_param(err, "logit_bias", "expected an object mapping token ids to numbers");
    if (check_bool(&f[K_PTC], "parallel_tool_calls", err) != 0 || check_bool(&f[K_LOGPROBS], "logprobs", err) != 0)
        return -1;
    if (check_number(&f[K_PPEN], "presence_penalty", -2, 2, err) != 0 ||
        check_number(&f[K_FPEN], "frequency_penalty", -2, 2, err) != 0)
        return -1;
    if (check_int(&f[K_SEED], "seed", INT64_MIN, INT64_MAX, err) != 0 ||
        check_int(&f[K_TOPLP], "top_logprobs", 0, 20, err) != 0)
        return -1;
    /* Last, the largest: every message, in one pass each. */
    struct idx_state ms = {0, 0, err};
    struct jval mf[M_COUNT];
    int rc = jscan_each_fields(&f[K_MESSAGES], message_keys, mf, M_COUNT, on_message, &ms);
    if (rc > 0)
        return -1;
    if (rc < 0) {
        fail_at(err, false, "a member appears twice", "messages[%d]", ms.i);
        return -1;
    }
    if (ms.i == 0)
        return bad(err, "messages", "'messages' must contain at least one message%s", "");
    return 0;
}

/* Translation builds a tree, whose strings are C strings: a \u0000 would cut one short without a word. */
static int refuse_nul(const struct ex_request *ex, struct gw_error *err)
{
    char key[64];
    if (canon_json_has_nul(ex->body.p, ex->body.n, key, sizeof(key)))
        return canon_nul_refused(err, key);
    return 0;
}

static cJSON *openai_to_canonical(struct ex_request *ex, struct gw_error *err)
{
    if (refuse_nul(ex, err) != 0)
        return NULL;
    cJSON *t = cJSON_ParseWithLength(ex->body.p, ex->body.n);
    if (t == NULL) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "We could not parse the JSON body of your request.");
        return NULL;
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(t, "n");
    if (cJSON_IsNumber(n) && n->valuedouble > 1) {
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "'n' greater than 1 is not supported for model %s",
                     ex->model_name);
        snprintf(err->param, sizeof(err->param), "n");
        cJSON_Delete(t);
        return NULL;
    }
    /* Validate what translation relies on: messages are objects with a known role. */
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(t, "messages");
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role) ||
            (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "developer") &&
             strcmp(role->valuestring, "user") && strcmp(role->valuestring, "assistant") &&
             strcmp(role->valuestring, "tool") && strcmp(role->valuestring, "function"))) {
            gw_error_set(err, 400, GW_ERR_INVALID_REQUEST,
                         "messages[%d]: expected an object with 'role' one of system, developer, user, assistant, "
                         "tool",
                         i);
            snprintf(err->param, sizeof(err->param), "messages");
            cJSON_Delete(t);
            return NULL;
        }
        i++;
    }
    return t;
}

/* ---------- front door: responses ---------- */

static int openai_write_response(struct exchange *ex, const cJSON *resp, struct buf *out, struct gw_error *err)
{
    (void)ex;
    char *s = cJSON_PrintUnformatted(resp);
    if (s == NULL) {
        gw_error_set(err, 500, GW_ERR_API, "could not serialise the response");
        return -1;
    }
    buf_append_str(out, s);
    cJSON_free(s);
    return 0;
}

static void chunk_begin(struct exchange *ex, struct buf *out)
{
    buf_append_str(out, "data: {\"id\":");
    buf_append_json_cstr(out, ex->id);
    buf_printf(out, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":", (long long)ex->created);
    buf_append_json_cstr(out, ex->rq.model_name);
    buf_append_str(out, ",\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{");
}

static void chunk_end(struct buf *out, const char *finish)
{
    buf_append_str(out, "},\"logprobs\":null,\"finish_reason\":");
    if (finish)
        buf_printf(out, "\"%s\"", finish);
    else
        buf_append_str(out, "null");
    buf_append_str(out, "}]}\n\n");
}

/* What the OpenAI stream writer has sent so far (ex->fstate). */
struct openai_fstate {
    bool role_sent; /* first chunk with the role */
    bool finished;
};

static void *openai_fstate_new(void)
{
    return xcalloc(1, sizeof(struct openai_fstate));
}

static void openai_fstate_free(void *fs)
{
    xfree(fs);
}

static void openai_stream_delta(struct exchange *ex, const struct chat_delta *d, struct buf *out)
{
    struct openai_fstate *fs = ex->fstate;
    if (!fs->role_sent) {
        fs->role_sent = true;
        chunk_begin(ex, out);
        buf_append_str(out, "\"role\":\"assistant\",\"content\":\"\",\"refusal\":null");
        chunk_end(out, NULL);
    }
    switch (d->kind) {
    case DELTA_TEXT:
        if (d->text.n == 0)
            return;
        chunk_begin(ex, out);
        buf_append_str(out, "\"content\":");
        buf_append_json_str(out, d->text.p, d->text.n);
        chunk_end(out, NULL);
        break;
    case DELTA_TOOL_START:
        chunk_begin(ex, out);
        buf_printf(out, "\"tool_calls\":[{\"index\":%d,\"id\":", d->tool_index);
        buf_append_json_str(out, d->tool_id.p, d->tool_id.n);
        buf_append_str(out, ",\"type\":\"function\",\"function\":{\"name\":");
        buf_append_json_str(out, d->tool_name.p, d->tool_name.n);
        buf_append_str(out, ",\"arguments\":\"\"}}]");
        chunk_end(out, NULL);
        break;
    case DELTA_TOOL_ARGS:
        if (d->text.n == 0)
            return;
        chunk_begin(ex, out);
        buf_printf(out, "\"tool_calls\":[{\"index\":%d,\"function\":{\"arguments\":", d->tool_index);
        buf_append_json_str(out, d->text.p, d->text.n);
        buf_append_str(out, "}}]");
        chunk_end(out, NULL);
        break;
    case DELTA_FINISH:
        if (fs->finished)
            return;
        fs->finished = true;
        chunk_begin(ex, out);
        chunk_end(out, gw_finish_openai(d->finish));
        break;
    case DELTA_USAGE:
        break; /* written once, at the end */
    }
}

static void openai_stream_end(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    if (err) {
        /* OpenAI reports a failure inside a stream as a data event carrying an error object. */
        buf_append_str(out, "data: ");
        wire_openai_error_json(err, out);
        buf_append_str(out, "\n\n");
    } else {
        struct openai_fstate *fs = ex->fstate;
        if (!fs->role_sent) {
            struct chat_delta none = {.kind = DELTA_TEXT};
            openai_stream_delta(ex, &none, out);
        }
        if (!fs->finished) {
            struct chat_delta fin = {.kind = DELTA_FINISH, .finish = FINISH_STOP};
            openai_stream_delta(ex, &fin, out);
        }
        if (ex->rq.client_include_usage) {
            buf_append_str(out, "data: {\"id\":");
            buf_append_json_cstr(out, ex->id);
            buf_printf(out, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                       (long long)ex->created);
            buf_append_json_cstr(out, ex->rq.model_name);
            buf_append_str(out, ",\"system_fingerprint\":null,\"choices\":[],\"usage\":");
            wire_openai_usage_append(out, &ex->usage);
            buf_append_str(out, "}\n\n");
        }
    }
    buf_append_str(out, "data: [DONE]\n\n");
}

static void openai_forward_event(struct exchange *ex, const struct stream_event *ev, struct buf *out)
{
    (void)ex;
    if (ev->event.n && !str_eq_cstr(ev->event, "message")) {
        buf_append_str(out, "event: ");
        buf_append(out, ev->event.p, ev->event.n);
        buf_append_char(out, '\n');
    }
    sse_append_raw(out, ev->data.p, ev->data.n);
}

static void openai_error_body(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    (void)ex;
    wire_openai_error_json(err, out);
}

const struct front_ops front_openai_chat = {
    .name = "openai",
    .wire = WIRE_OPENAI,
    .parse = openai_chat_parse,
    .to_canonical = openai_to_canonical,
    .stream_new = openai_fstate_new,
    .stream_free = openai_fstate_free,
    .write_response = openai_write_response,
    .stream_delta = openai_stream_delta,
    .stream_end = openai_stream_end,
    .forward_event = openai_forward_event,
    .error_body = openai_error_body,
};

/* ---------- embeddings front door ---------- */

static int openai_embed_parse(struct ex_request *ex, struct gw_error *err)
{
    static const char *const keys[] = {"model", "input", "encoding_format", "dimensions"};
    struct jval f[4];
    size_t off;
    const char *msg;
    if (jscan_fields(ex->body.p, ex->body.n, keys, f, 4, &off, &msg) != 0)
        return json_error(ex, err, off, msg);
    if (parse_model(ex, &f[0], err) != 0)
        return -1;
    if (f[1].type != J_STRING && f[1].type != J_ARRAY)
        return bad(err, "input", "'input' is required: a string, an array of strings, or an array of token arrays%s",
                   "");
    if (f[1].type == J_STRING && f[1].raw.n == 2)
        return bad(err, "input", "'input' must not be empty%s", "");
    if (f[2].type != J_NONE && !jval_is_str(&f[2], "float") && !jval_is_str(&f[2], "base64"))
        return bad(err, "encoding_format", "'encoding_format' must be 'float' or 'base64'%s", "");
    int64_t dims = 0;
    if (parse_positive_int(&f[3], "dimensions", 100000, &dims, err) != 0)
        return -1;
    ex->max_tokens = -1;
    ex->stream = false;
    return 0;
}

static cJSON *openai_embed_to_canonical(struct ex_request *ex, struct gw_error *err)
{
    if (refuse_nul(ex, err) != 0)
        return NULL;
    cJSON *t = cJSON_ParseWithLength(ex->body.p, ex->body.n);
    if (t == NULL)
        gw_error_set(err, 400, GW_ERR_INVALID_REQUEST, "We could not parse the JSON body of your request.");
    return t;
}

const struct front_ops front_openai_embeddings = {
    .name = "openai-embeddings",
    .wire = WIRE_OPENAI,
    .parse = openai_embed_parse,
    .to_canonical = openai_embed_to_canonical,
    .stream_new = openai_fstate_new,
    .stream_free = openai_fstate_free,
    .write_response = openai_write_response,
    .stream_delta = openai_stream_delta,
    .stream_end = openai_stream_end,
    .forward_event = openai_forward_event,
    .error_body = openai_error_body,
};
