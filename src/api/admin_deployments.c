#include "api/admin_deployments.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/str.h"
#include "config/config.h"
#include "gateway/exchange.h"

/* The presented key against AGENTD_ADMIN_KEY, in time that depends only on the presented key's length. */
static bool authorized(const struct http_req *req)
{
    const char *want = getenv("AGENTD_ADMIN_KEY");
    if (want == NULL || strlen(want) < 16)
        return false; /* no admin API without a real admin key */
    const struct str *h = http_req_header(req, "authorization");
    struct str k = STR_NULL;
    if (h && h->n > 7 && strncasecmp(h->p, "Bearer ", 7) == 0)
        k = str_trim(str_make(h->p + 7, h->n - 7));
    else if ((h = http_req_header(req, "x-api-key")) != NULL)
        k = str_trim(*h);
    if (k.n == 0 || k.n > 256)
        return false;
    size_t wn = strlen(want);
    unsigned diff = k.n != wn;
    for (size_t i = 0; i < k.n; i++)
        diff |= (unsigned char)k.p[i] ^ (unsigned char)(i < wn ? want[i] : 0);
    return diff == 0;
}

void admin_deployments(struct http_req *req)
{
    if (!authorized(req)) {
        http_respond_error(req, 401, "authentication_error", "invalid_admin_key",
                           "a valid admin key is required (AGENTD_ADMIN_KEY, as Authorization: Bearer)");
        return;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    health_observer_deployments_json(req->cfg, &out);
    http_respond(req, 200, "application/json", out.data, out.len);
    buf_free(&out);
}
