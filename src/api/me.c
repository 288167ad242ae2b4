#include "api/me.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

#include "api/gw_http.h"
#include "common/buf.h"
#include "common/str.h"
#include "config/config.h"
#include "gateway/govern.h"
#include "gateway/gw_types.h"
#include "policy/auth.h"

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
        gw_respond_unauthorized(req);
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
