/* code_exec.c: the `code_exec` tool. The model's code runs through the sandbox service (sandbox/service.h) on the
 * run's own worker loop: the same warm pool, admission queue, ceilings and metrics as POST /v1/sandbox/runs, and
 * nothing here blocks (the zygote starts the run; its end comes back on the loop).
 *
 * Arguments: {"language": "python"|"sh"|"bash"|"shell"|"javascript"|"node", "code": "...", "stdin": "...",
 * "files": [{"name": "data.csv", "content": "..." | "content_base64": "...", "mode": 420}]}: the files are placed
 * in /work before the code starts, read by the sandbox service's own request parser (names checked, at most
 * SBX_MAX_FILES, all together at most sandbox.service.max_files_bytes).
 * Limits: the wall clock is the agent's tool_timeout less a tenth (at most 1 s), so the sandbox's own deadline,
 * which keeps the partial output, fires before the run's tool timer, stdout and stderr are each capped at tool_output_bytes,
 * memory, CPU and pids come from the agent's `limits.code_memory`, `code_cpu`, `code_pids` (0: the service's
 * defaults); every one is clamped to the service's ceilings. No network (the sandbox has only "none").
 *
 * The model gets the run's result as JSON: {"reason","exit_code","signal","wall_ms","stdout","stderr",
 * "stdout_truncated","stderr_truncated"} (+ "error" when the sandbox could not be set up). Exit 0 is `ok`; any
 * other end (a non-zero exit, a signal, a limit) is a tool `error` carrying the same JSON, so the model sees what
 * happened and decides. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_config.h"
#include "agent/tools.h"
#include "common/alloc.h"
#include "sandbox/sbx_json.h"
#include "sandbox/service.h"

struct code_exec {
    bool early;           /* a struct early (answered without the sandbox) */
    struct tool_exec *te; /* NULL once cancelled: the job's callback then only frees this */
    struct sbx_service_job *job;
};

/* -1 when the model named something we do not run. */
static int lang_of(const char *s)
{
    if (strcmp(s, "bash") == 0 || strcmp(s, "shell") == 0)
        return SBX_LANG_SH;
    if (strcmp(s, "javascript") == 0)
        return SBX_LANG_NODE;
    return sbx_lang_parse(s);
}

static uint64_t clamp(uint64_t v, uint64_t ceiling)
{
    return ceiling && v > ceiling ? ceiling : v;
}

/* The output files as ,"files":[...],"files_truncated":bool in at most cap bytes: a file whose JSON does not fit
 * is left out and marked by files_truncated (the model can print a part of it instead). */
static void files_json(const struct sbx_result *res, size_t cap, struct buf *b)
{
    if (!res->files_collected)
        return;
    bool cut = res->files_truncated;
    struct buf one = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(b, ",\"files\":[");
    size_t n = 0;
    for (size_t i = 0; i < res->nfiles; i++) {
        buf_reset(&one);
        sbx_json_outfile(&res->files[i], &one);
        if (b->len + one.len + 1 + 32 > cap) {
            cut = true;
            continue;
        }
        if (n++)
            buf_append_char(b, ',');
        buf_append(b, one.data, one.len);
    }
    buf_free(&one);
    buf_printf(b, "],\"files_truncated\":%s", cut ? "true" : "false");
}

static void result_json1(const struct sbx_result *res, size_t out_n, bool out_cut, size_t err_n, bool err_cut,
                         const struct buf *files, struct buf *b)
{
    buf_reset(b);
    buf_printf(b, "{\"reason\":\"%s\",\"exit_code\":", sbx_reason_name(res->reason));
    if (res->exit_code >= 0)
        buf_printf(b, "%d", res->exit_code);
    else
        buf_append_str(b, "null");
    buf_printf(b, ",\"signal\":");
    if (res->term_signal)
        buf_printf(b, "%d", res->term_signal);
    else
        buf_append_str(b, "null");
    buf_printf(b, ",\"wall_ms\":%.1f,\"stdout\":", (double)res->wall_us / 1000);
    sbx_json_append_utf8(b, res->out.data ? res->out.data : "", out_n);
    buf_append_str(b, ",\"stderr\":");
    sbx_json_append_utf8(b, res->err.data ? res->err.data : "", err_n);
    buf_printf(b, ",\"stdout_truncated\":%s,\"stderr_truncated\":%s", out_cut ? "true" : "false",
               err_cut ? "true" : "false");
    if (res->reason == SBX_REASON_ERROR) {
        buf_append_str(b, ",\"error\":");
        buf_append_json_cstr(b, res->error);
    }
    if (files->len)
        buf_append(b, files->data, files->len);
    buf_append_str(b, "}");
}

/* The result as JSON that fits in cap bytes where it can: stdout and stderr are cut (the longer first) and marked
 * truncated, so that the model gets valid JSON rather than a JSON text cut by the run's own truncation. A few
 * passes at most: cutting d bytes of a text shortens its JSON by about d (escapes make it more). */
static void result_json(const struct sbx_result *res, size_t cap, struct buf *b)
{
    size_t out_n = res->out.len, err_n = res->err.len;
    bool out_cut = res->out_truncated, err_cut = res->err_truncated;
    /* Files get at most half the room; stdout and stderr are cut to what is left. */
    struct buf files = BUF_INIT(BUF_UNBOUNDED);
    files_json(res, cap / 2, &files);
    for (int pass = 0;; pass++) {
        result_json1(res, out_n, out_cut, err_n, err_cut, &files, b);
        if (b->len <= cap || (out_n == 0 && err_n == 0) || pass == 8) {
            buf_free(&files);
            return;
        }
        size_t over = b->len - cap + 16;
        size_t *n = out_n >= err_n ? &out_n : &err_n;
        *(n == &out_n ? &out_cut : &err_cut) = true;
        *n -= over < *n ? over : *n;
    }
}

static void on_job_done(struct sbx_service_job *job, struct sbx_result *res, uint64_t queue_us, void *ud)
{
    (void)job;
    (void)queue_us;
    struct code_exec *s = ud;
    struct tool_exec *te = s->te;
    xfree(s);
    if (te == NULL)
        return; /* cancelled: done is never called */
    te->state = NULL;
    enum tool_outcome o = TOOL_ERROR;
    if (res->reason == SBX_REASON_EXIT && res->exit_code == 0)
        o = TOOL_OK;
    else if (res->reason == SBX_REASON_KILLED)
        o = TOOL_CANCELLED; /* the loop is closing (the daemon stops) */
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    result_json(res, te->def && te->def->limits.tool_output_bytes > 0 ? (size_t)te->def->limits.tool_output_bytes : 65536,
                &b);
    buf_append(&b, "", 0);
    te->done(te, o, b.data, b.len);
    buf_free(&b);
}

/* The answer of a call that never reached the sandbox: after a zero timer, never from inside start(). */
struct early {
    struct code_exec base; /* base.early = true; base.te */
    uv_timer_t t;
    enum tool_outcome o;
    char msg[384];
};

static void early_closed(uv_handle_t *h)
{
    xfree(h->data);
}

static void early_fire(uv_timer_t *t)
{
    struct early *e = t->data;
    struct tool_exec *te = e->base.te;
    uv_close((uv_handle_t *)&e->t, early_closed);
    if (te) {
        te->state = NULL;
        te->done(te, e->o, e->msg, strlen(e->msg));
    }
}

static void answer_early(struct tool_exec *te, enum tool_outcome o, const char *msg)
{
    struct early *e = xcalloc(1, sizeof(*e));
    e->base.early = true;
    e->base.te = te;
    e->o = o;
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
    uv_timer_init(te->loop, &e->t);
    e->t.data = e;
    te->state = &e->base;
    uv_timer_start(&e->t, early_fire, 0, 0);
}

void code_exec_start(struct tool_exec *te)
{
    if (!sbx_service_started()) {
        answer_early(te, TOOL_UNAVAILABLE,
                     "code_exec is not available: the sandbox service is off in this daemon "
                     "(sandbox.service.enabled: false, or the host cannot make sandboxes)");
        return;
    }
    cJSON *a = cJSON_Parse(te->args);
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(a, "language");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "code");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(a, "stdin");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(a, "files");
    int lang = cJSON_IsString(l) ? lang_of(l->valuestring) : -1;
    if (!cJSON_IsObject(a) || lang <= 0 || !cJSON_IsString(c) || (in && !cJSON_IsString(in)) ||
        (files && !cJSON_IsArray(files))) {
        cJSON_Delete(a);
        answer_early(te, TOOL_BAD_ARGS,
                     "the arguments must be {\"language\": \"python\"|\"sh\"|\"javascript\", \"code\": \"...\"} "
                     "(optional \"stdin\": a string, \"files\": [{\"name\", \"content\" or \"content_base64\"}])");
        return;
    }
    /* The sandbox service's own request (what POST /v1/sandbox/runs takes), so that files are read and checked
     * by the one parser: only the fields the model may set (no network, no limits: those are the agent's). */
    cJSON *rq = cJSON_CreateObject();
    cJSON_AddStringToObject(rq, "language", sbx_lang_name((enum sbx_lang)lang));
    cJSON_AddStringToObject(rq, "code", c->valuestring);
    if (in)
        cJSON_AddStringToObject(rq, "stdin", in->valuestring);
    const cJSON *f;
    cJSON *rfiles = files ? cJSON_AddArrayToObject(rq, "files") : NULL;
    cJSON_ArrayForEach(f, files)
    {
        cJSON *g = cJSON_CreateObject();
        static const char *const keep[] = {"name", "content", "content_base64", "mode"};
        for (size_t k = 0; k < sizeof(keep) / sizeof(keep[0]); k++) {
            const cJSON *v = cJSON_IsObject(f) ? cJSON_GetObjectItemCaseSensitive(f, keep[k]) : NULL;
            if (v)
                cJSON_AddItemToObject(g, keep[k], cJSON_Duplicate(v, true));
        }
        cJSON_AddItemToArray(rfiles, g);
    }
    cJSON_Delete(a);
    char *rtext = cJSON_PrintUnformatted(rq);
    cJSON_Delete(rq);
    struct sbx_json_spec js;
    struct buf perr = BUF_INIT(512);
    char param[64];
    int prc = sbx_service_parse_request(rtext, strlen(rtext), &js, &perr, param, sizeof(param));
    cJSON_free(rtext);
    if (prc != SBX_SVC_OK) {
        char msg[384];
        snprintf(msg, sizeof(msg), "the code was refused: %s", perr.data && perr.len ? perr.data : "?");
        buf_free(&perr);
        sbx_json_spec_free(&js);
        answer_early(te, TOOL_BAD_ARGS, msg);
        return;
    }
    buf_free(&perr);
    struct sbx_spec spec = js.spec;
    const struct sbx_service_opts *so = sbx_service_options();
    const struct sbx_limits *ceil = so ? &so->ceiling : NULL;
    if (te->def) {
        const struct agent_limits *al = &te->def->limits;
        if (al->tool_timeout_ms > 1) /* a tenth (at most 1 s) before the run's own timer: the output is kept */
            spec.limits.wall_ms = (uint64_t)(al->tool_timeout_ms - (al->tool_timeout_ms / 10 < 1000 ? al->tool_timeout_ms / 10 : 1000));
        if (al->tool_output_bytes > 0)
            spec.limits.stdout_max = spec.limits.stderr_max = (uint64_t)al->tool_output_bytes;
        if (al->code_memory_bytes > 0)
            spec.limits.memory_bytes = (uint64_t)al->code_memory_bytes;
        if (al->code_cpu_ms > 0)
            spec.limits.cpu_ms = (uint64_t)al->code_cpu_ms;
        if (al->code_pids > 0)
            spec.limits.pids = (uint32_t)al->code_pids;
        /* The agent's choice, never the model's (sandbox.egress.enabled must allow it, else the run is refused). */
        if (te->def->code_network == SBX_NET_EGRESS)
            spec.net = SBX_NET_EGRESS;
    }
    if (ceil) {
        spec.limits.wall_ms = clamp(spec.limits.wall_ms, ceil->wall_ms);
        spec.limits.stdout_max = clamp(spec.limits.stdout_max, ceil->stdout_max);
        spec.limits.stderr_max = clamp(spec.limits.stderr_max, ceil->stderr_max);
        spec.limits.memory_bytes = clamp(spec.limits.memory_bytes, ceil->memory_bytes);
        spec.limits.cpu_ms = clamp(spec.limits.cpu_ms, ceil->cpu_ms);
        spec.limits.pids = (uint32_t)clamp(spec.limits.pids, ceil->pids);
    }
    struct code_exec *s = xcalloc(1, sizeof(*s));
    s->te = te;
    struct buf err = BUF_INIT(512);
    int rc = sbx_service_submit(te->loop, &spec, on_job_done, s, &s->job, &err); /* copies the spec */
    sbx_json_spec_free(&js);
    if (rc != SBX_SVC_OK) {
        xfree(s);
        char msg[384];
        snprintf(msg, sizeof(msg), "%s: %s",
                 rc == SBX_SVC_BUSY          ? "the sandbox is busy, try again later"
                 : rc == SBX_SVC_UNAVAILABLE ? "the sandbox is not available"
                                             : "the code was refused",
                 err.data && err.len ? err.data : "?");
        buf_free(&err);
        answer_early(te, rc == SBX_SVC_INVALID ? TOOL_BAD_ARGS : rc == SBX_SVC_BUSY ? TOOL_ERROR : TOOL_UNAVAILABLE,
                     msg);
        return;
    }
    buf_free(&err);
    te->state = s;
}

void code_exec_cancel(struct tool_exec *te)
{
    struct code_exec *s = te->state;
    if (s == NULL)
        return;
    te->state = NULL;
    s->te = NULL;
    if (s->early)
        return; /* its zero timer still fires and closes it */
    sbx_service_cancel(s->job); /* its callback fires (maybe from inside) and frees s */
}
