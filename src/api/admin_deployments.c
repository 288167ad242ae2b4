#include "api/admin_deployments.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/admin_keys.h"
#include "common/buf.h"
#include "common/str.h"
#include "config/config.h"
#include "gateway/exchange.h"

void admin_deployments(struct http_req *req)
{
    if (!admin_guard(req, "/admin/deployments"))
        return;
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    health_observer_deployments_json(req->cfg, &out);
    http_respond(req, 200, "application/json", out.data, out.len);
    buf_free(&out);
}
