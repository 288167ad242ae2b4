/* count_translated.c: exact token counts from translated deployments (count_translated.h). */
#include "api/count_translated.h"

#include <stdio.h>
#include <string.h>

#include "api/gw_http.h"
#include "api/upstream_call.h"
#include "common/alloc.h"
#include "common/log.h"
#include "gateway/gw_types.h"
#include "gateway/registry.h"
#include "gateway/provider.h"

const struct deployment *count_translated_dep(const struct model_entry *m)
{
    for (size_t i = 0; m && i < m->ndeps; i++) {
        const struct deployment *d = &m->deps[i];
        if (!d->missing_key && d->prov && d->prov->encode_count && d->prov->decode_count)
            return d;
    }
    return NULL;
}

static void reply(struct http_req *req, enum count_shape shape, int64_t n, bool exact)
{
    char out[160];
    int len = shape == COUNT_ANTHROPIC
                  ? snprintf(out, sizeof(out), "{\"input_tokens\":%lld%s}", (long long)n,
                             exact ? "" : ",\"estimated\":true")
                  : snprintf(out, sizeof(out), "{\"object\":\"response.input_tokens\",\"input_tokens\":%lld%s}",
                             (long long)n, exact ? "" : ",\"estimated\":true");
    http_resp_header(req, "x-agentd-token-count", exact ? "exact" : "estimate");
    gw_count_answer(req, 200, out, (size_t)len, NULL);
}

void count_reply_estimate(struct http_req *req, enum count_shape shape, int64_t estimate)
{
    reply(req, shape, estimate, false);
}

struct tcall {
    const struct provider_ops *prov;
    enum count_shape shape;
    int64_t estimate;
    char label[128];
};

static void on_counted(struct http_req *req, int status, const char *body, size_t len, const char *emsg, void *ud)
{
    struct tcall *c = ud;
    int64_t n;
    if (status >= 200 && status < 300 && c->prov->decode_count(body, len, &n) == 0) {
        http_resp_header(req, "x-agentd-deployment", c->label);
        reply(req, c->shape, n, true);
    } else {
        char why[96];
        if (status == 0)
            snprintf(why, sizeof(why), "upstream failed");
        else
            snprintf(why, sizeof(why), "upstream HTTP %d", status);
        log_info("token count by %s fell back to the estimate: %s %s", c->label, why, status == 0 ? emsg : "");
        http_resp_header(req, "x-agentd-count-fallback", why);
        reply(req, c->shape, c->estimate, false);
    }
    xfree(c);
}

void count_translated(struct http_req *req, const struct deployment *d, const cJSON *canon, enum count_shape shape,
                      int64_t estimate)
{
    struct up_request r;
    up_request_init(&r);
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    if (d->prov->encode_count(d, canon, &r, &err) != 0) {
        /* a request the provider's count cannot express (e.g. Gemini without contents): the estimate */
        up_request_free(&r);
        http_resp_header(req, "x-agentd-count-fallback", "not expressible");
        reply(req, shape, estimate, false);
        return;
    }
    struct tcall *c = xcalloc(1, sizeof(*c));
    c->prov = d->prov;
    c->shape = shape;
    c->estimate = estimate;
    snprintf(c->label, sizeof(c->label), "%s", d->label);
    if (upstream_call(req, &r, 1 << 20, on_counted, xfree, c) != 0) {
        xfree(c);
        http_resp_header(req, "x-agentd-count-fallback", "upstream unavailable");
        reply(req, shape, estimate, false);
    }
    up_request_free(&r);
}
