/* sandbox_http.c: POST /v1/sandbox/runs. Authenticated with a virtual key (auth.mode keys) and rate limited by
 * the key's rpm and the `ratelimits:` entries for keys, users and teams (requests only: a run has no tokens),
 * then parsed (sbx_service_parse_request) and submitted to the worker loop's pool (sandbox/service.h). The
 * answer is the run's result JSON, as `agentd sandbox run` prints it; bad input is a 400 in OpenAI's error
 * format with the offending field in `param`. A client that goes away cancels its run. */
#include "api/sandbox_http.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/worker.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "net/http.h"
#include "policy/auth.h"
#include "policy/govern_config.h"
#include "policy/ratelimit.h"
#include "sandbox/sandbox_config.h"
#include "sandbox/service.h"

static struct ratelimit *R;

bool sandbox_http_init(const struct config *cfg, unsigned loops)
{
    if (!cfg->sandbox.service.enabled)
        return false;
    struct sbx_service_opts o;
    sandbox_config_service_opts(cfg, loops, &o);
    struct buf err = BUF_INIT(1024);
    int rc = sbx_service_start(&o, &err);
    if (rc != 0)
        log_error("sandbox service not started: %s", err.data ? err.data : "?");
    buf_free(&err);
    if (rc != 0)
        return false;
    R = rl_new();
    return true;
}

void sandbox_http_shutdown(void)
{
    sbx_service_stop();
    rl_free(R);
    R = NULL;
}

void sandbox_http_worker_start(struct worker *w)
{
    if (!sbx_service_started() || !w->cfg->sandbox.service.prewarm)
        return;
    struct buf err = BUF_INIT(1024);
    if (sbx_service_loop_open(&w->loop, &err) != SBX_SVC_OK)
        log_error("sandbox pool of worker %d not started (runs will retry): %s", w->id, err.data ? err.data : "?");
    buf_free(&err);
}

void sandbox_http_worker_stop(struct worker *w)
{
    sbx_service_loop_close(&w->loop);
}

/* {"error":{"message","type","param","code"}} */
static void respond_error(struct http_req *req, int status, const char *type, const char *code, const char *param,
                          const char *message)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    (void)buf_append_str(&b, "{\"error\":{\"message\":");
    (void)buf_append_json_cstr(&b, message);
    (void)buf_append_str(&b, ",\"type\":");
    (void)buf_append_json_cstr(&b, type);
    (void)buf_append_str(&b, ",\"param\":");
    if (param && param[0])
        (void)buf_append_json_cstr(&b, param);
    else
        (void)buf_append_str(&b, "null");
    (void)buf_append_str(&b, ",\"code\":");
    if (code)
        (void)buf_append_json_cstr(&b, code);
    else
        (void)buf_append_str(&b, "null");
    (void)buf_append_str(&b, "}}");
    http_respond(req, status, "application/json", b.data, b.len);
    buf_free(&b);
}

/* Who is calling: 0 and *out (may be NULL: anonymous under auth.mode none), or -1 after a 401. */
static int authenticate(struct http_req *req, const struct principal **out)
{
    *out = NULL;
    struct str secret = auth_secret_from(http_req_header(req, "authorization"), http_req_header(req, "x-api-key"),
                                         http_req_header(req, "api-key"));
    bool need = keyring_armed() && auth_mode_effective(req->cfg) == AUTH_MODE_KEYS;
    if (!need && !(keyring_armed() && auth_looks_like_key(secret)))
        return 0;
    struct auth_input in = {.secret = secret};
    enum auth_result r = auth_check(&in, (int64_t)time(NULL), out);
    if (r == AUTH_OK || r == AUTH_MODEL_DENIED)
        return 0;
    respond_error(req, 401, "authentication_error", "invalid_api_key", NULL,
                  "Invalid or missing API key. Pass an agentd virtual key as `Authorization: Bearer <key>`, "
                  "`x-api-key` or `api-key`.");
    return -1;
}

/* The request limits that apply to this caller: 0, or -1 after a 429. */
static int rate_limit(struct http_req *req, const struct principal *p)
{
    const struct key_record *key = p ? p->key : NULL;
    struct rl_limit rl[RL_MAX_LIMITS];
    int n = 0;
    const struct config_ratelimit *cr = req->cfg->ratelimits.items;
    for (size_t i = 0; p && i < req->cfg->ratelimits.n && n < RL_MAX_LIMITS; i++) {
        if (cr[i].rpm <= 0 || (cr[i].scope != RL_KEY && cr[i].scope != RL_USER && cr[i].scope != RL_TEAM))
            continue;
        const char *name = cr[i].scope == RL_KEY ? p->key_id : cr[i].scope == RL_USER ? p->user : p->team;
        if (name[0] == '\0' || (strcmp(cr[i].name, "*") != 0 && strcmp(cr[i].name, name) != 0))
            continue;
        rl[n++] = (struct rl_limit){(enum rl_scope)cr[i].scope, name, cr[i].rpm, 0};
    }
    if (key && key->rpm > 0 && n < RL_MAX_LIMITS)
        rl[n++] = (struct rl_limit){RL_KEY, key->id, key->rpm, 0};
    if (n == 0 || R == NULL)
        return 0;
    struct rl_hold h;
    struct rl_decision d;
    rl_admit(R, rl, n, 0, (int64_t)(time_mono_us() / 1000), &h, &d);
    if (d.allowed)
        return 0;
    if (d.bad) {
        respond_error(req, 503, "server_error", "overloaded", NULL, "rate limit table full or a name too long");
        return -1;
    }
    char msg[512];
    (void)snprintf(msg, sizeof(msg), "rate limit reached for %s '%s': %lld requests per minute; retry after %lld ms",
                   rl_scope_name(rl[d.which].scope), rl[d.which].name, (long long)rl[d.which].rpm,
                   (long long)d.retry_after_ms);
    http_resp_headerf(req, "Retry-After", "%lld", (long long)(d.retry_after_ms + 999) / 1000);
    respond_error(req, 429, "rate_limit_error", "rate_limit_exceeded", NULL, msg);
    return -1;
}

struct call {
    struct http_req *req;
    struct sbx_service_job *job;
};

static void on_abort(struct http_req *req, void *ud)
{
    (void)req;
    struct call *c = ud;
    if (c->job)
        sbx_service_cancel(c->job); /* on_done still fires and makes the (discarded) terminal call */
}

static void on_done(struct sbx_service_job *job, struct sbx_result *res, uint64_t queue_us, void *ud)
{
    (void)job;
    struct call *c = ud;
    struct http_req *req = c->req;
    xfree(c);
    req->on_abort = NULL;
    if (res->reason == SBX_REASON_ERROR) { /* the sandbox could not be set up: nothing of the program ran */
        char msg[400];
        (void)snprintf(msg, sizeof(msg), "the sandbox could not start the run: %s", res->error);
        respond_error(req, 500, "server_error", "sandbox_error", NULL, msg);
        return;
    }
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    sbx_json_result(res, NULL, &b);
    /* one more figure than the CLI's: the time the run waited for a slot */
    if (b.len > 0 && b.data[b.len - 1] == '}') {
        b.len--;
        (void)buf_printf(&b, ",\"queue_ms\":%.3f}", (double)queue_us / 1000.0);
    }
    http_respond(req, 200, "application/json", b.data, b.len);
    buf_free(&b);
}

void sandbox_http_runs(struct http_req *req)
{
    if (!sbx_service_started()) {
        respond_error(req, 404, "invalid_request_error", "not_found", NULL, "the sandbox service is disabled");
        return;
    }
    const struct principal *p;
    if (authenticate(req, &p) != 0)
        return;
    int rl = rate_limit(req, p);
    principal_release(p);
    if (rl != 0)
        return;
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(1024);
    char param[64];
    if (sbx_service_parse_request(req->body.data ? req->body.data : "", req->body.len, &js, &err, param,
                                  sizeof(param)) != SBX_SVC_OK) {
        respond_error(req, 400, "invalid_request_error", "invalid_sandbox_request", param,
                      err.data ? err.data : "invalid request");
        sbx_json_spec_free(&js);
        buf_free(&err);
        return;
    }
    struct call *c = xcalloc(1, sizeof(*c));
    c->req = req;
    int rc = sbx_service_submit(http_server_loop(req->server), &js.spec, on_done, c, &c->job, &err);
    sbx_json_spec_free(&js);
    if (rc != SBX_SVC_OK) {
        xfree(c);
        const char *msg = err.data ? err.data : "the sandbox could not take the run";
        if (rc == SBX_SVC_BUSY) {
            http_resp_header(req, "Retry-After", "1");
            respond_error(req, 429, "rate_limit_error", "sandbox_busy", NULL, msg);
        } else if (rc == SBX_SVC_INVALID) {
            respond_error(req, 400, "invalid_request_error", "invalid_sandbox_request", NULL, msg);
        } else {
            respond_error(req, 503, "server_error", "sandbox_unavailable", NULL, msg);
        }
        buf_free(&err);
        return;
    }
    buf_free(&err);
    req->on_abort = on_abort;
    req->abort_ud = c;
}
