/* eval.c: response-quality evaluations (eval.h). */
#include "telemetry/eval.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <strings.h>
#include <uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/str.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "policy/auth.h"
#include "policy/ledger.h"
#include "telemetry/metrics.h"
#include "telemetry/otel_config.h"
#include "telemetry/otlp.h"
#include "telemetry/trace.h"

#define EVAL_QUEUE_MAX 256
#define MAX_KEYWORDS 64
#define KEYWORD_MAX 32

/* ---------- heuristics ---------- */

static const char *const stopwords[] = {
    "about", "above", "after", "again", "also", "been", "being", "below", "between", "both", "could", "does",
    "doing", "down", "during", "each", "from", "further", "have", "having", "here", "into", "just", "like",
    "more", "most", "much", "only", "other", "over", "please", "same", "should", "some", "such", "than", "that",
    "their", "them", "then", "there", "these", "they", "this", "those", "through", "under", "until", "very",
    "want", "were", "what", "when", "where", "which", "while", "will", "with", "would", "your", "yours", "tell",
    "explain", "give", "know", "make", "need", "help", "thanks", "thank"};

static const char *const hedges[] = {"maybe", "perhaps", "possibly", "probably", "might", "not sure",
                                     "i think", "i believe", "it seems", "seems to", "unclear", "i guess",
                                     "could be", "not certain", "hard to say", "likely"};

static const char *const refusals[] = {"i can't help", "i cannot help", "i can't assist", "i cannot assist",
                                       "i can't provide", "i cannot provide", "i'm sorry, but", "i am sorry, but",
                                       "i'm unable to", "i am unable to", "i won't", "i will not",
                                       "as an ai", "i'm not able to", "i am not able to", "i must decline"};

static bool is_word(unsigned char c)
{
    return isalnum(c) || c >= 0x80; /* UTF-8 letters count as word bytes */
}

/* Lower-cases at most EVAL_TEXT_MAX bytes of s into dst (NUL-terminated); apostrophes normalised to '. */
static size_t lower_copy(char *dst, const char *s, size_t n)
{
    if (n > EVAL_TEXT_MAX)
        n = EVAL_TEXT_MAX;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 && (unsigned char)s[i + 2] == 0x99) {
            dst[k++] = '\''; /* ’ */
            i += 2;
            continue;
        }
        dst[k++] = (char)tolower(c);
    }
    dst[k] = '\0';
    return k;
}

static size_t count_words(const char *s, size_t n)
{
    size_t w = 0;
    bool in = false;
    for (size_t i = 0; i < n; i++) {
        bool c = is_word((unsigned char)s[i]);
        if (c && !in)
            w++;
        in = c;
    }
    return w;
}

/* Occurrences of any phrase at word starts (linear: a fixed, short phrase list). */
static size_t count_phrases(const char *s, size_t n, const char *const *ph, size_t nph, size_t *first)
{
    size_t hits = 0;
    *first = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && is_word((unsigned char)s[i - 1]))
            continue;
        for (size_t k = 0; k < nph; k++) {
            size_t m = strlen(ph[k]);
            if (i + m <= n && memcmp(s + i, ph[k], m) == 0 &&
                (i + m == n || !is_word((unsigned char)s[i + m]) || !is_word((unsigned char)ph[k][m - 1]))) {
                if (*first == SIZE_MAX)
                    *first = i;
                hits++;
                break;
            }
        }
    }
    return hits;
}

static bool stopword(const char *w, size_t n)
{
    for (size_t i = 0; i < ARRAY_LEN(stopwords); i++)
        if (strlen(stopwords[i]) == n && memcmp(stopwords[i], w, n) == 0)
            return true;
    return false;
}

/* A crude stem: drop a plural 's' (not "ss"). */
static size_t stem(const char *w, size_t n)
{
    return n > 4 && w[n - 1] == 's' && w[n - 2] != 's' ? n - 1 : n;
}

struct kw {
    char w[KEYWORD_MAX];
    size_t n;
    bool seen;
};

static size_t keywords(const char *s, size_t n, struct kw *kws)
{
    size_t nk = 0;
    for (size_t i = 0; i < n && nk < MAX_KEYWORDS;) {
        if (!is_word((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && is_word((unsigned char)s[j]))
            j++;
        size_t len = stem(s + i, j - i);
        if (len >= 4 && len < KEYWORD_MAX && !stopword(s + i, j - i)) {
            bool dup = false;
            for (size_t k = 0; k < nk && !dup; k++)
                dup = kws[k].n == len && memcmp(kws[k].w, s + i, len) == 0;
            if (!dup) {
                memcpy(kws[nk].w, s + i, len);
                kws[nk].n = len;
                kws[nk].seen = false;
                nk++;
            }
        }
        i = j;
    }
    return nk;
}

static void result(struct eval_result *r, const char *name, double score, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void result(struct eval_result *r, const char *name, double score, const char *label, const char *fmt, ...)
{
    r->name = name;
    r->score = score < 0 ? 0 : score > 1 ? 1 : score;
    r->label = label;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->explanation, sizeof(r->explanation), fmt, ap);
    va_end(ap);
}

size_t eval_score(const char *question, size_t qn, const char *answer, size_t an, bool json_requested,
                  struct eval_result out[EVAL_MAX_RESULTS])
{
    char *q = xmalloc((qn > EVAL_TEXT_MAX ? EVAL_TEXT_MAX : qn) + 1);
    char *a = xmalloc((an > EVAL_TEXT_MAX ? EVAL_TEXT_MAX : an) + 1);
    qn = lower_copy(q, question, qn);
    size_t raw_an = an;
    an = lower_copy(a, answer, an);
    size_t nres = 0;

    /* length: a short question may get a short answer; a long one deserves some substance; nobody asked for a
     * book (the bounds grow with the question) */
    size_t qw = count_words(q, qn), aw = count_words(a, an);
    size_t lo = qw >= 8 ? 5 : 1, hi = 150 + 20 * qw;
    if (hi > 2000)
        hi = 2000;
    if (aw < lo)
        result(&out[nres++], "length", (double)aw / (double)lo, "too_short", "%zu words for a %zu-word question",
               aw, qw);
    else if (aw > hi)
        result(&out[nres++], "length", (double)hi / (double)aw, "too_long",
               "%zu words for a %zu-word question (more than %zu)", aw, qw, hi);
    else
        result(&out[nres++], "length", 1.0, "appropriate", "%zu words for a %zu-word question", aw, qw);

    /* relevance: the question's keywords (4+ letters, not stop words) found in the answer */
    struct kw *kws = xmalloc(MAX_KEYWORDS * sizeof(*kws));
    size_t nk = keywords(q, qn, kws), found = 0;
    for (size_t i = 0; i < an && found < nk;) {
        if (!is_word((unsigned char)a[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < an && is_word((unsigned char)a[j]))
            j++;
        size_t len = stem(a + i, j - i);
        for (size_t k = 0; k < nk; k++)
            if (!kws[k].seen && kws[k].n == len && memcmp(kws[k].w, a + i, len) == 0) {
                kws[k].seen = true;
                found++;
            }
        i = j;
    }
    xfree(kws);
    if (nk == 0) {
        result(&out[nres++], "relevance", 1.0, "relevant", "the question has no keywords to match");
    } else {
        double r = (double)found / (double)nk;
        result(&out[nres++], "relevance", r, r >= 0.5 ? "relevant" : r >= 0.2 ? "partially_relevant" : "not_relevant",
               "%zu of the question's %zu keywords in the answer", found, nk);
    }

    /* confidence: hedging words lower it */
    size_t first;
    size_t h = count_phrases(a, an, hedges, ARRAY_LEN(hedges), &first);
    double c = 1.0 - 0.25 * (double)h;
    result(&out[nres++], "confidence", c, c >= 0.75 ? "confident" : "hedging", "%zu hedging words", h);

    /* refusal: a refusal phrase near the start of the answer */
    size_t rf = count_phrases(a, an < 300 ? an : 300, refusals, ARRAY_LEN(refusals), &first);
    if (rf)
        result(&out[nres++], "refusal", 1.0, "refused", "a refusal phrase at byte %zu", first);
    else
        result(&out[nres++], "refusal", 0.0, "answered", "no refusal phrase");

    /* json_validity: only when the request asked for JSON */
    if (json_requested) {
        cJSON *j = cJSON_ParseWithLength(answer, raw_an);
        bool ok = j != NULL && (cJSON_IsObject(j) || cJSON_IsArray(j));
        cJSON_Delete(j);
        result(&out[nres++], "json_validity", ok ? 1.0 : 0.0, ok ? "valid" : "invalid",
               ok ? "the answer parses as a JSON document" : "the answer is not a JSON object or array");
    }
    xfree(q);
    xfree(a);
    return nres;
}

/* ---------- bodies ---------- */

static void append_text(struct buf *out, const char *s)
{
    if (!s || !*s)
        return;
    size_t n = strlen(s);
    if (out->len + n + 1 > EVAL_TEXT_MAX)
        n = out->len + 1 < EVAL_TEXT_MAX ? EVAL_TEXT_MAX - out->len - 1 : 0;
    if (n == 0)
        return;
    if (out->len)
        buf_append(out, " ", 1);
    buf_append(out, s, n);
}

/* A message content: a string, or parts with text (OpenAI {type:text,text}, Anthropic {type:text,text}). */
static void content_text(const cJSON *content, struct buf *out)
{
    if (cJSON_IsString(content)) {
        append_text(out, content->valuestring);
        return;
    }
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0 && cJSON_IsString(text))
            append_text(out, text->valuestring);
    }
}

int eval_question(const char *body, size_t n, bool anthropic, struct buf *out, bool *json_requested)
{
    *json_requested = false;
    cJSON *root = cJSON_ParseWithLength(body, n);
    if (!root)
        return -1;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    const cJSON *last = NULL, *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0)
            last = m;
    }
    if (last)
        content_text(cJSON_GetObjectItemCaseSensitive(last, "content"), out);
    if (!anthropic) {
        const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
        *json_requested = cJSON_IsString(type) && (strcmp(type->valuestring, "json_object") == 0 ||
                                                   strcmp(type->valuestring, "json_schema") == 0);
    }
    cJSON_Delete(root);
    return out->len ? 0 : -1;
}

int eval_answer(const char *body, size_t n, bool anthropic, struct buf *out, char *id, size_t id_cap)
{
    if (id_cap)
        id[0] = '\0';
    cJSON *root = cJSON_ParseWithLength(body, n);
    if (!root)
        return -1;
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (cJSON_IsString(jid) && id_cap)
        snprintf(id, id_cap, "%s", jid->valuestring);
    if (anthropic) {
        content_text(cJSON_GetObjectItemCaseSensitive(root, "content"), out);
    } else {
        const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(choices, 0), "message");
        content_text(cJSON_GetObjectItemCaseSensitive(msg, "content"), out);
    }
    cJSON_Delete(root);
    return out->len ? 0 : -1;
}

/* ---------- the judge: request and reply ---------- */

static const char judge_format[] =
    "\n\nReply with only a JSON object and nothing else: {\"score\": <a number from 0 (worst) to 1 (best)>, "
    "\"explanation\": \"<one short sentence>\"}";

void eval_judge_request(const char *model, const char *rubric, const char *question, size_t qn, const char *answer,
                        size_t an, struct buf *out)
{
    if (qn > EVAL_TEXT_MAX)
        qn = EVAL_TEXT_MAX;
    if (an > EVAL_TEXT_MAX)
        an = EVAL_TEXT_MAX;
    struct buf sys = BUF_INIT(BUF_UNBOUNDED), user = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&sys, rubric && *rubric ? rubric : "Grade the answer.");
    buf_append_str(&sys, judge_format);
    buf_append_str(&user, "Question:\n");
    buf_append(&user, question, qn);
    buf_append_str(&user, "\n\nAnswer:\n");
    buf_append(&user, answer, an);
    buf_append_str(out, "{\"model\":");
    buf_append_json_cstr(out, model);
    buf_append_str(out, ",\"temperature\":0,\"max_tokens\":300,\"messages\":[{\"role\":\"system\",\"content\":");
    buf_append_json_str(out, sys.data, sys.len);
    buf_append_str(out, "},{\"role\":\"user\",\"content\":");
    buf_append_json_str(out, user.data, user.len);
    buf_append_str(out, "}]}");
    buf_free(&sys);
    buf_free(&user);
}

/* A score as the judge wrote it: 0..1, or out of 10. -1 when neither. */
static double judge_scale(double v)
{
    if (!isfinite(v) || v < 0 || v > 10)
        return -1;
    return v > 1 ? v / 10 : v;
}

int eval_judge_parse(const char *text, size_t n, struct eval_result *out)
{
    if (n > EVAL_TEXT_MAX)
        n = EVAL_TEXT_MAX;
    double score = -1;
    char expl[sizeof(out->explanation)] = "";
    /* a JSON object: from the first '{' to the last '}' */
    const char *open = memchr(text, '{', n);
    const char *close = NULL;
    for (size_t i = n; open && i > (size_t)(open - text); i--)
        if (text[i - 1] == '}') {
            close = text + i - 1;
            break;
        }
    if (open && close) {
        cJSON *j = cJSON_ParseWithLength(open, (size_t)(close - open) + 1);
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "score");
        if (cJSON_IsNumber(sc))
            score = judge_scale(sc->valuedouble);
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "explanation");
        if (!cJSON_IsString(ex))
            ex = cJSON_GetObjectItemCaseSensitive(j, "reason");
        if (score >= 0 && cJSON_IsString(ex))
            snprintf(expl, sizeof(expl), "%s", ex->valuestring);
        cJSON_Delete(j);
    }
    if (score < 0) { /* the last "score" followed by ':' or '=' and a number */
        size_t last = SIZE_MAX;
        for (size_t i = 0; i + 5 <= n; i++)
            if (strncasecmp(text + i, "score", 5) == 0)
                last = i;
        if (last == SIZE_MAX)
            return -1;
        size_t i = last + 5;
        while (i < n && (text[i] == '"' || text[i] == ' ' || text[i] == '*'))
            i++;
        if (i >= n || (text[i] != ':' && text[i] != '='))
            return -1;
        i++;
        while (i < n && (text[i] == ' ' || text[i] == '"' || text[i] == '*'))
            i++;
        char num[32];
        size_t k = 0;
        while (i < n && k + 1 < sizeof(num) && (isdigit((unsigned char)text[i]) || text[i] == '.'))
            num[k++] = text[i++];
        num[k] = '\0';
        char *end;
        double v = strtod(num, &end);
        if (k == 0 || end == num || *end != '\0' || (i < n && (isalnum((unsigned char)text[i]) || text[i] == '.')))
            return -1; /* "0.5x", "1e400", a number longer than any score */
        score = judge_scale(v);
        if (score < 0)
            return -1;
    }
    result(out, "judge", score, score >= 0.5 ? "pass" : "fail", "%s", expl[0] ? expl : "the judge gave no explanation");
    return 0;
}

/* ---------- streamed answers ---------- */

int eval_stream_text(const char *sse, size_t n, bool anthropic, struct buf *out, char *id, size_t id_cap)
{
    if (id_cap)
        id[0] = '\0';
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(sse + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - sse) : n;
        const char *line = sse + i;
        size_t len = end - i;
        i = end + 1;
        if (len < 5 || memcmp(line, "data:", 5) != 0)
            continue;
        line += 5;
        len -= 5;
        while (len && *line == ' ')
            line++, len--;
        while (len && line[len - 1] == '\r')
            len--;
        if (len == 0 || line[0] != '{')
            continue; /* [DONE] */
        cJSON *j = cJSON_ParseWithLength(line, len);
        if (!j)
            continue;
        if (anthropic) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
            if (cJSON_IsString(type) && strcmp(type->valuestring, "message_start") == 0) {
                const cJSON *mid = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "message"), "id");
                if (cJSON_IsString(mid) && id_cap && !id[0])
                    snprintf(id, id_cap, "%s", mid->valuestring);
            } else if (cJSON_IsString(type) && strcmp(type->valuestring, "content_block_delta") == 0) {
                const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delta");
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "text");
                if (cJSON_IsString(t) && out->len + strlen(t->valuestring) < EVAL_TEXT_MAX)
                    buf_append_str(out, t->valuestring);
            }
        } else {
            const cJSON *jid = cJSON_GetObjectItemCaseSensitive(j, "id");
            if (cJSON_IsString(jid) && id_cap && !id[0])
                snprintf(id, id_cap, "%s", jid->valuestring);
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "delta");
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "content");
            if (cJSON_IsString(t) && out->len + strlen(t->valuestring) < EVAL_TEXT_MAX)
                buf_append_str(out, t->valuestring);
        }
        cJSON_Delete(j);
    }
    return out->len ? 0 : -1;
}

/* ---------- rates ---------- */

struct rate {
    char *key; /* "workflow:<name>", a model name, or "*" */
    double rate;
};

struct judge_call;

static struct {
    struct rate *rates;
    size_t nrates;
    bool started, stop, closing;
    pthread_t thread;
    pthread_mutex_t lock;
    struct job *head, *tail;
    size_t queued;
    /* the thread's own loop: the judge's exchanges run on it */
    uv_loop_t loop;
    uv_async_t wake;
    void *tw;               /* the transport's worker on this loop */
    struct judge_call *cur; /* the judge call in flight (one at a time) */
    char *judge, *rubric;
    double budget_usd;
    int64_t budget_tokens;
    bool exhausted_logged;
    int64_t stream_max;
    struct principal who; /* the judge's exchanges: workflow "evaluation" */
    /* written by the thread, read by eval_judge_stats */
    pthread_mutex_t stats_lock;
    struct eval_judge_stats stats;
} E = {.lock = PTHREAD_MUTEX_INITIALIZER, .stats_lock = PTHREAD_MUTEX_INITIALIZER};

static void rate_cb(const char *k, const char *v, void *ud)
{
    (void)ud;
    E.rates = xrealloc(E.rates, (E.nrates + 1) * sizeof(*E.rates));
    E.rates[E.nrates].key = xstrdup(k);
    E.rates[E.nrates].rate = strtod(v, NULL);
    E.nrates++;
}

static double lookup(const char *key)
{
    for (size_t i = 0; i < E.nrates; i++)
        if (strcmp(E.rates[i].key, key) == 0)
            return E.rates[i].rate;
    return -1;
}

double eval_rate(const char *model, const char *workflow)
{
    if (!E.started)
        return 0;
    if (workflow && *workflow) {
        char k[80];
        snprintf(k, sizeof(k), "workflow:%s", workflow);
        double r = lookup(k);
        if (r >= 0)
            return r;
    }
    double r = model ? lookup(model) : -1;
    if (r >= 0)
        return r;
    r = lookup("*");
    return r >= 0 ? r : 0;
}

bool eval_is_judge(const struct principal *p)
{
    return p != NULL && p == &E.who;
}

void eval_judge_stats(struct eval_judge_stats *out)
{
    pthread_mutex_lock(&E.stats_lock);
    *out = E.stats;
    pthread_mutex_unlock(&E.stats_lock);
}

/* ---------- the thread ---------- */

struct job {
    struct job *next;
    bool anthropic, stream;
    char model[256], workflow[64], response_id[96], request_id[72];
    uint8_t trace_id[16], span_id[8];
    size_t request_len, response_len;
    char data[]; /* request then response */
};

static const double score_buckets[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1};
static const char *const score_labels[] = {"evaluation", "model", "workflow", NULL};
static const char *const score_otel_labels[] = {"gen_ai.evaluation.name", "gen_ai.request.model", "agent.workflow",
                                                NULL};
static struct metric_def eval_score_metric = {
    .name = "agentd_evaluation_score", .help = "Response-quality evaluation scores (0..1), by evaluation.",
    .kind = METRIC_HISTOGRAM, .labels = score_labels, .buckets = score_buckets,
    .nbuckets = ARRAY_LEN(score_buckets), .otel_name = "agentd.evaluation.score", .unit = "1",
    .otel_labels = score_otel_labels};
static const char *const drop_labels[] = {"reason", NULL};
static struct metric_def eval_dropped = METRIC_DEF(
    "agentd_evaluations_dropped_total", "Sampled responses not evaluated (queue_full, no_text).", METRIC_COUNTER,
    drop_labels);
static const char *const judge_labels[] = {"outcome", NULL};
static struct metric_def judge_calls = METRIC_DEF(
    "agentd_evaluation_judge_calls_total",
    "LLM judge calls by outcome: ok, unparsed (no score in the reply), error (the judge's exchange failed), "
    "budget_exhausted (skipped: telemetry.evaluation_budget_*), stopping (skipped at shutdown).",
    METRIC_COUNTER, judge_labels);
static struct metric_def judge_cost = METRIC_DEF("agentd_evaluation_judge_cost_usd_total",
                                                 "What the LLM judge's calls cost, USD (its evaluation budget).",
                                                 METRIC_COUNTER, NULL);
static struct metric_def judge_tokens = METRIC_DEF("agentd_evaluation_judge_tokens_total",
                                                   "Tokens (input + output) the LLM judge's calls used.",
                                                   METRIC_COUNTER, NULL);

static void emit(const struct job *j, const struct eval_result *r)
{
    const char *wf = j->workflow[0] ? j->workflow : "none";
    metrics_observe(&eval_score_metric, (const char *[]){r->name, j->model, wf}, r->score);
    static const uint8_t zero[16];
    bool traced = memcmp(j->trace_id, zero, 16) != 0;
    if (otel_logs_on()) {
        struct otel_span *ev = otel_log_new(9, "gen_ai.evaluation.result", traced ? j->trace_id : NULL,
                                            traced ? j->span_id : NULL);
        otel_span_cstr(ev, "gen_ai.evaluation.name", r->name);
        otel_span_double(ev, "gen_ai.evaluation.score.value", r->score);
        otel_span_cstr(ev, "gen_ai.evaluation.score.label", r->label);
        otel_span_cstr(ev, "gen_ai.evaluation.explanation", r->explanation);
        if (j->response_id[0])
            otel_span_cstr(ev, "gen_ai.response.id", j->response_id);
        otel_span_cstr(ev, "gen_ai.request.model", j->model);
        if (j->workflow[0])
            otel_span_cstr(ev, "agent.workflow", j->workflow);
        otel_log_submit(ev);
    }
    struct log_line l;
    if (log_begin(&l, LL_INFO, "evaluation")) {
        if (traced)
            log_field_trace(&l, j->trace_id, j->span_id);
        log_field_cstr(&l, "evaluation", r->name);
        log_field_double(&l, "score", r->score);
        log_field_cstr(&l, "label", r->label);
        log_field_cstr(&l, "explanation", r->explanation);
        log_field_cstr(&l, "response_id", j->response_id);
        log_field_cstr(&l, "model", j->model);
        log_end(&l);
    }
    if (j->request_id[0]) { /* the exchange's ledger row gets the score (a no-op when there is no ledger) */
        struct ledger_row row = {.ts_ms = (int64_t)(time_wall_us() / 1000), .evaluation = true, .eval_score = r->score};
        snprintf(row.request_id, sizeof(row.request_id), "%s", j->request_id);
        snprintf(row.model, sizeof(row.model), "%.*s", (int)sizeof(row.model) - 1, j->model);
        snprintf(row.workflow, sizeof(row.workflow), "%s", j->workflow);
        snprintf(row.eval_name, sizeof(row.eval_name), "%s", r->name);
        snprintf(row.eval_label, sizeof(row.eval_label), "%s", r->label);
        ledger_enqueue(&row);
    }
}

/* ---- the judge's call: through the gateway's transport (eval_set_transport), on this thread's loop ---- */

static const struct eval_transport *transport;

void eval_set_transport(const struct eval_transport *t)
{
    transport = t;
}

struct judge_call {
    struct job *job;
    struct buf body;
    void *handle; /* the transport's, until done */
};

static double header_number(const struct buf *h, const char *name)
{
    if (h->data == NULL)
        return 0;
    const char *p = h->data;
    size_t n = strlen(name);
    while ((p = strstr(p, name)) != NULL) {
        if ((p == h->data || p[-1] == '\n') && p[n] == ':') {
            double v = strtod(p + n + 1, NULL);
            return isfinite(v) && v > 0 ? v : 0;
        }
        p += n;
    }
    return 0;
}

static void judge_count(const char *outcome)
{
    metrics_inc(&judge_calls, (const char *[]){outcome});
}

static void pump(void);

static void judge_done(void *ud, int status, const struct buf *hdrs, const struct buf *resp)
{
    struct judge_call *c = ud;
    double usd = header_number(hdrs, "x-agentd-cost-usd");
    int64_t tokens = (int64_t)(header_number(hdrs, "x-agentd-input-tokens") +
                               header_number(hdrs, "x-agentd-output-tokens"));
    pthread_mutex_lock(&E.stats_lock);
    E.stats.spent_usd += usd;
    E.stats.spent_tokens += tokens;
    E.stats.calls++;
    pthread_mutex_unlock(&E.stats_lock);
    if (usd > 0)
        metrics_add(&judge_cost, NULL, usd);
    if (tokens > 0)
        metrics_add(&judge_tokens, NULL, (double)tokens);
    struct buf text = BUF_INIT(EVAL_TEXT_MAX);
    char id[8];
    struct eval_result r;
    if (status != 200) {
        judge_count("error");
        log_warn("evaluation: the judge (%s) answered %d for response %s", E.judge, status, c->job->response_id);
    } else if (eval_answer(resp->data ? resp->data : "", resp->len, false, &text, id, sizeof(id)) != 0 ||
               eval_judge_parse(text.data, text.len, &r) != 0) {
        judge_count("unparsed");
    } else {
        judge_count("ok");
        emit(c->job, &r);
    }
    buf_free(&text);
    buf_free(&c->body);
    xfree(c->job);
    xfree(c);
    E.cur = NULL;
    uv_async_send(&E.wake); /* the next job, outside this exchange's end */
}

static bool budget_left(void)
{
    pthread_mutex_lock(&E.stats_lock);
    bool ok = (E.budget_usd <= 0 || E.stats.spent_usd < E.budget_usd) &&
              (E.budget_tokens <= 0 || E.stats.spent_tokens < E.budget_tokens);
    if (!ok)
        E.stats.skipped_budget++;
    double usd = E.stats.spent_usd;
    int64_t tok = E.stats.spent_tokens;
    pthread_mutex_unlock(&E.stats_lock);
    if (!ok && !E.exhausted_logged) {
        E.exhausted_logged = true;
        log_warn("evaluation: the judge's budget is spent ($%.6f, %lld tokens; telemetry.evaluation_budget_usd / "
                 "evaluation_budget_tokens): judging stops until restart",
                 usd, (long long)tok);
    }
    return ok;
}

/* Starts the judge's exchange for j (taken over). false: not started (j is the caller's to free). */
static bool judge_start(struct job *j, const struct buf *q, const struct buf *a)
{
    if (!budget_left()) {
        judge_count("budget_exhausted");
        return false;
    }
    struct judge_call *c = xcalloc(1, sizeof(*c));
    c->job = j;
    c->body = (struct buf)BUF_INIT(BUF_UNBOUNDED);
    eval_judge_request(E.judge, E.rubric, q->data, q->len, a->data, a->len, &c->body);
    char tp[TRACEPARENT_LEN + 1] = "";
    static const uint8_t zero[16];
    if (memcmp(j->trace_id, zero, 16) != 0) /* the judge's spans join the evaluated exchange's trace */
        trace_format_traceparent(tp, j->trace_id, j->span_id, 1);
    static _Atomic uint64_t seq;
    char rid[72];
    snprintf(rid, sizeof(rid), "eval-%llu-%.40s", (unsigned long long)atomic_fetch_add(&seq, 1) + 1, j->request_id);
    E.cur = c;
    void *h = transport->submit(E.tw, c->body.data, c->body.len, tp, rid, &E.who, judge_done, c);
    if (h) /* else judge_done has run (and freed c) */
        c->handle = h;
    return true;
}

/* Scores j with the heuristics; true when the judge should see it (q and a hold the texts). */
static bool run_job(struct job *j, struct buf *q, struct buf *a)
{
    char id[sizeof(j->response_id)];
    bool json = false;
    int rc = eval_question(j->data, j->request_len, j->anthropic, q, &json);
    if (rc == 0)
        rc = j->stream ? eval_stream_text(j->data + j->request_len, j->response_len, j->anthropic, a, id, sizeof(id))
                       : eval_answer(j->data + j->request_len, j->response_len, j->anthropic, a, id, sizeof(id));
    if (rc != 0) {
        metrics_inc(&eval_dropped, (const char *[]){"no_text"});
        return false;
    }
    if (id[0]) /* the id the client saw in the body */
        memcpy(j->response_id, id, sizeof(id));
    struct eval_result res[EVAL_MAX_RESULTS];
    size_t n = eval_score(q->data, q->len, a->data, a->len, json, res);
    for (size_t i = 0; i < n; i++)
        emit(j, &res[i]);
    return true;
}

/* Takes queued jobs while no judge call is in flight. On the thread's loop. */
static void pump(void)
{
    while (E.cur == NULL) {
        pthread_mutex_lock(&E.lock);
        struct job *j = E.head;
        if (j) {
            E.head = j->next;
            if (!E.head)
                E.tail = NULL;
            E.queued--;
        }
        bool stop = E.stop;
        pthread_mutex_unlock(&E.lock);
        if (!j) {
            if (stop && !E.closing) { /* stopping and nothing left: the loop ends */
                E.closing = true;
                uv_close((uv_handle_t *)&E.wake, NULL);
                if (E.tw)
                    transport->close(E.tw);
                E.tw = NULL;
            }
            return;
        }
        struct buf q = BUF_INIT(EVAL_TEXT_MAX), a = BUF_INIT(EVAL_TEXT_MAX);
        bool started = false;
        if (run_job(j, &q, &a) && E.judge) {
            if (stop)
                judge_count("stopping");
            else
                started = judge_start(j, &q, &a);
        }
        buf_free(&q);
        buf_free(&a);
        if (!started)
            xfree(j);
    }
}

static void on_wake(uv_async_t *h)
{
    (void)h;
    if (E.cur && E.cur->handle) {
        pthread_mutex_lock(&E.lock);
        bool stop = E.stop;
        pthread_mutex_unlock(&E.lock);
        if (stop)
            transport->cancel(E.cur->handle); /* shutting down: the judge call in flight ends (counted as an error) */
    }
    pump();
}

static void *eval_main(void *arg)
{
    (void)arg;
    log_tap_suppress(true); /* the events go out as records of their own */
    uv_run(&E.loop, UV_RUN_DEFAULT);
    return NULL;
}

bool eval_submit(const struct eval_job_in *in)
{
    if (!E.started)
        return false;
    pthread_mutex_lock(&E.lock);
    bool full = E.queued >= EVAL_QUEUE_MAX || E.stop;
    if (!full)
        E.queued++; /* the slot is ours; the copy is made outside the lock */
    pthread_mutex_unlock(&E.lock);
    if (full) {
        metrics_inc(&eval_dropped, (const char *[]){"queue_full"});
        return false;
    }
    struct job *j = xmalloc(sizeof(*j) + in->request_len + in->response_len);
    memset(j, 0, sizeof(*j));
    j->anthropic = in->anthropic;
    j->stream = in->stream;
    snprintf(j->model, sizeof(j->model), "%s", in->model ? in->model : "");
    snprintf(j->workflow, sizeof(j->workflow), "%s", in->workflow ? in->workflow : "");
    snprintf(j->response_id, sizeof(j->response_id), "%s", in->response_id ? in->response_id : "");
    snprintf(j->request_id, sizeof(j->request_id), "%s", in->request_id ? in->request_id : "");
    memcpy(j->trace_id, in->trace_id, 16);
    memcpy(j->span_id, in->span_id, 8);
    j->request_len = in->request_len;
    j->response_len = in->response_len;
    memcpy(j->data, in->request, in->request_len);
    memcpy(j->data + in->request_len, in->response, in->response_len);
    pthread_mutex_lock(&E.lock);
    if (E.tail)
        E.tail->next = j;
    else
        E.head = j;
    E.tail = j;
    pthread_mutex_unlock(&E.lock);
    uv_async_send(&E.wake);
    return true;
}

int64_t eval_stream_max(void)
{
    return E.started ? E.stream_max : 0;
}

int eval_start(const struct config *cfg)
{
    metrics_register(&eval_score_metric);
    metrics_register(&eval_dropped);
    metrics_register(&judge_calls);
    metrics_register(&judge_cost);
    metrics_register(&judge_tokens);
    const char *spec = cfg->telemetry.evaluations;
    if (E.started || !spec || !*spec)
        return 0;
    if (otel_parse_kv_list(spec, rate_cb, NULL) != 0)
        return -1; /* checked when the configuration was read */
    bool any = false;
    for (size_t i = 0; i < E.nrates; i++)
        any = any || E.rates[i].rate > 0;
    if (!any)
        return 0;
    E.stop = E.closing = false;
    E.exhausted_logged = false;
    memset(&E.stats, 0, sizeof(E.stats));
    const char *judge = cfg->telemetry.evaluation_judge;
    E.judge = judge && *judge ? xstrdup(judge) : NULL;
    E.rubric = xstrdup(cfg->telemetry.evaluation_rubric ? cfg->telemetry.evaluation_rubric : "");
    E.budget_usd = cfg->telemetry.evaluation_budget_usd;
    E.budget_tokens = cfg->telemetry.evaluation_budget_tokens;
    E.stream_max = cfg->telemetry.evaluation_stream_max_bytes;
    memset(&E.who, 0, sizeof(E.who));
    E.who.key_id = E.who.key_name = E.who.user = E.who.team = "";
    E.who.workflow = "evaluation";
    if (uv_loop_init(&E.loop) != 0 || uv_async_init(&E.loop, &E.wake, on_wake) != 0) {
        log_error("telemetry: cannot start the evaluation loop");
        return -1;
    }
    if (E.judge && !transport) {
        log_warn("telemetry: evaluation_judge is set but no gateway is running: no LLM judge");
        xfree(E.judge);
        E.judge = NULL;
    }
    E.tw = E.judge ? transport->open(&E.loop, cfg) : NULL;
    if (pthread_create(&E.thread, NULL, eval_main, NULL) != 0) {
        log_error("telemetry: cannot start the evaluation thread");
        return -1;
    }
    E.started = true;
    log_info("telemetry: evaluating sampled responses (%s)%s%s", spec, E.judge ? "; judge: " : "",
             E.judge ? E.judge : "");
    return 0;
}

void eval_stop(void)
{
    if (E.started) {
        pthread_mutex_lock(&E.lock);
        E.stop = true;
        pthread_mutex_unlock(&E.lock);
        uv_async_send(&E.wake);
        pthread_join(E.thread, NULL);
        uv_loop_close(&E.loop);
        E.started = false;
    }
    for (size_t i = 0; i < E.nrates; i++)
        xfree(E.rates[i].key);
    xfree(E.rates);
    E.rates = NULL;
    E.nrates = 0;
    xfree(E.judge);
    xfree(E.rubric);
    E.judge = E.rubric = NULL;
}
