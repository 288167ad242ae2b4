/* eval.c: response-quality evaluations (eval.h). */
#include "telemetry/eval.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/macros.h"
#include "config/config.h"
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

/* ---------- rates ---------- */

struct rate {
    char *key; /* "workflow:<name>", a model name, or "*" */
    double rate;
};

static struct {
    struct rate *rates;
    size_t nrates;
    bool started, stop;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;
    size_t queued;
} E = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

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

/* ---------- the thread ---------- */

struct job {
    struct job *next;
    bool anthropic;
    char model[256], workflow[64], response_id[96];
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
}

static void run_job(struct job *j)
{
    char id[sizeof(j->response_id)];
    struct buf q = BUF_INIT(EVAL_TEXT_MAX), a = BUF_INIT(EVAL_TEXT_MAX);
    bool json = false;
    if (eval_question(j->data, j->request_len, j->anthropic, &q, &json) != 0 ||
        eval_answer(j->data + j->request_len, j->response_len, j->anthropic, &a, id, sizeof(id)) != 0) {
        metrics_inc(&eval_dropped, (const char *[]){"no_text"});
    } else {
        if (id[0]) /* the id the client saw in the body */
            memcpy(j->response_id, id, sizeof(id));
        struct eval_result res[EVAL_MAX_RESULTS];
        size_t n = eval_score(q.data, q.len, a.data, a.len, json, res);
        for (size_t i = 0; i < n; i++)
            emit(j, &res[i]);
    }
    buf_free(&q);
    buf_free(&a);
}

static void *eval_main(void *arg)
{
    (void)arg;
    log_tap_suppress(true); /* the events go out as records of their own */
    pthread_mutex_lock(&E.lock);
    for (;;) {
        while (!E.head && !E.stop)
            pthread_cond_wait(&E.cond, &E.lock);
        struct job *j = E.head;
        if (!j)
            break; /* stopping, queue empty */
        E.head = j->next;
        if (!E.head)
            E.tail = NULL;
        E.queued--;
        pthread_mutex_unlock(&E.lock);
        run_job(j);
        xfree(j);
        pthread_mutex_lock(&E.lock);
    }
    pthread_mutex_unlock(&E.lock);
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
    snprintf(j->model, sizeof(j->model), "%s", in->model ? in->model : "");
    snprintf(j->workflow, sizeof(j->workflow), "%s", in->workflow ? in->workflow : "");
    snprintf(j->response_id, sizeof(j->response_id), "%s", in->response_id ? in->response_id : "");
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
    pthread_cond_signal(&E.cond);
    return true;
}

int eval_start(const struct config *cfg)
{
    metrics_register(&eval_score_metric);
    metrics_register(&eval_dropped);
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
    E.stop = false;
    if (pthread_create(&E.thread, NULL, eval_main, NULL) != 0) {
        log_error("telemetry: cannot start the evaluation thread");
        return -1;
    }
    E.started = true;
    log_info("telemetry: evaluating sampled responses (%s)", spec);
    return 0;
}

void eval_stop(void)
{
    if (E.started) {
        pthread_mutex_lock(&E.lock);
        E.stop = true;
        pthread_cond_broadcast(&E.cond);
        pthread_mutex_unlock(&E.lock);
        pthread_join(E.thread, NULL);
        E.started = false;
    }
    for (size_t i = 0; i < E.nrates; i++)
        xfree(E.rates[i].key);
    xfree(E.rates);
    E.rates = NULL;
    E.nrates = 0;
}
