#include "api/me.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/str.h"
#include "config/config.h"
#include "gateway/front_anthropic.h"
#include "gateway/govern.h"
#include "gateway/gw_types.h"
#include "policy/auth.h"

static void unauthorized(struct http_req *req)
{
    static const char msg[] =
        "Invalid or missing API key. Pass an agentd virtual key as `Authorization: Bearer <key>`, `x-api-key` or "
        "`api-key`.";
    if (!http_req_header(req, "anthropic-version")) {
        http_respond_error(req, 401, "authentication_error", "invalid_api_key", msg);
        return;
    }
    struct gw_error e = {.status = 401, .type = GW_ERR_AUTHENTICATION, .retry_after_ms = -1};
    str_lcpy(e.message, msg, sizeof(e.message));
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    front_anthropic_error_json(&b, &e, req->request_id);
    http_respond(req, 401, "application/json", b.data, b.len);
    buf_free(&b);
}

void me_handle(struct http_req *req)
{
    struct auth_input in = {.secret = auth_secret_from(http_req_header(req, "authorization"),
                                                       http_req_header(req, "x-api-key"),
                                                       http_req_header(req, "api-key")),
                            .request_id = req->request_id,
                            .route = "/v1/me"};
    const struct str *wf = http_req_header(req, "x-agentd-workflow");
    if (wf)
        in.workflow = *wf;
    const struct principal *p = NULL;
    if (!keyring_armed() || auth_check(&in, (int64_t)time(NULL), &p) != AUTH_OK || p == NULL || p->key == NULL) {
        principal_release(p);
        unauthorized(req);
        return;
    }
    cJSON *o = govern_me_json(req->cfg, p);
    principal_release(p);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    http_resp_header(req, "Cache-Control", "no-store");
    http_respond(req, 200, "application/json", s, strlen(s));
    cJSON_free(s);
}
