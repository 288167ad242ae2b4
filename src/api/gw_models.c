/* gw_models.c: GET /v1/models/{id} (both official SDKs' models.retrieve). One configured model in OpenAI's shape
 * ({id, object, created, owned_by}), or Anthropic's ({type, id, display_name, created_at}) when the client sends
 * anthropic-version, as GET /v1/models does; an unknown id is a 404 in the same client's error format. */
#include <time.h>

#include "api/gw_http.h"
#include "common/buf.h"
#include "common/str.h"
#include "gateway/front_anthropic.h"
#include "gateway/providers/anthropic.h"
#include "gateway/gw_types.h"
#include "gateway/registry.h"
#include "net/http.h"

/* The id after the route's prefix, percent-decoded ("openai%2Fgpt-4o" names "openai/gpt-4o"). -1 when it is
 * empty, too long or not valid percent-encoding. */
static int model_id(struct str path, char *out, size_t size)
{
    static const char *const prefixes[] = {"/v1/models/", "/models/"};
    for (size_t i = 0; i < 2; i++) {
        struct str p = str_from(prefixes[i]);
        if (!str_starts_with(path, p))
            continue;
        size_t n = 0;
        for (size_t k = p.n; k < path.n; k++) {
            char c = path.p[k];
            if (c == '%') {
                if (k + 2 >= path.n)
                    return -1;
                int v = 0;
                for (int j = 1; j <= 2; j++) {
                    char h = path.p[k + (size_t)j];
                    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                                   : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0)
                        return -1;
                    v = v * 16 + d;
                }
                c = (char)v;
                k += 2;
            }
            if (c == '\0' || n + 1 >= size)
                return -1;
            out[n++] = c;
        }
        out[n] = '\0';
        return n ? 0 : -1;
    }
    return -1;
}

void gw_handle_model_get(struct http_req *req)
{
    bool anthropic = http_req_header(req, "anthropic-version") != NULL;
    char id[256];
    const struct model_entry *m = NULL;
    bool named = model_id(req->path, id, sizeof(id)) == 0;
    if (named)
        m = registry_find(registry_of(req->cfg), str_from(id));
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    if (m == NULL) {
        struct gw_error e;
        gw_error_set(&e, 404, GW_ERR_NOT_FOUND, "The model `%s` does not exist. GET /v1/models lists the models "
                     "served here.", named ? id : "");
        if (anthropic) {
            front_anthropic_error_json(&b, &e, req->request_id);
            http_respond(req, 404, "application/json", b.data, b.len);
        } else {
            /* OpenAI answers an unknown model with invalid_request_error / model_not_found */
            http_respond_error(req, 404, "invalid_request_error", "model_not_found", e.message);
        }
        buf_free(&b);
        return;
    }
    if (anthropic) {
        buf_append_str(&b, "{\"type\":\"model\",\"id\":");
        buf_append_json_cstr(&b, m->name);
        buf_append_str(&b, ",\"display_name\":");
        buf_append_json_cstr(&b, m->name);
        buf_append_str(&b, ",\"created_at\":\"1970-01-01T00:00:00Z\"}");
    } else {
        buf_append_str(&b, "{\"id\":");
        buf_append_json_cstr(&b, m->name);
        buf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":", (long long)time(NULL));
        buf_append_json_cstr(&b, m->ndeps ? provider_names[m->deps[0].provider] : "agentd");
        buf_append_str(&b, "}");
    }
    http_respond(req, 200, "application/json", b.data, b.len);
    buf_free(&b);
}
