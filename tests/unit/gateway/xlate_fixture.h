/* xlate_fixture.h: an attempt without a server, for the unit tests of translating providers (Gemini, Bedrock).
 * The exchange holds a ready canonical request, so ex_attempt_canonical() returns it, and writes to a loopback sink
 * (no HTTP request); streamed deltas are recorded as text lines through the providers' emit seam. */
#ifndef AGENTD_TEST_XLATE_FIXTURE_H
#define AGENTD_TEST_XLATE_FIXTURE_H

#include <cjson/cJSON.h>

#include "common/alloc.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "loopback.h"
#include "test.h"

struct fx {
    struct loopback sink;
    struct exchange ex;
    struct deployment dep;
    struct attempt a;
    struct buf log; /* one line per delta */
};

static void fx_emit(void *ud, const struct chat_delta *d)
{
    struct buf *b = ud;
    switch (d->kind) {
    case DELTA_TEXT: buf_printf(b, "text:%.*s\n", STR_FMT(d->text)); break;
    case DELTA_TOOL_START:
        buf_printf(b, "tool:%d:%.*s:%.*s\n", d->tool_index, STR_FMT(d->tool_id), STR_FMT(d->tool_name));
        break;
    case DELTA_TOOL_ARGS: buf_printf(b, "args:%d:%.*s\n", d->tool_index, STR_FMT(d->text)); break;
    case DELTA_FINISH: buf_printf(b, "finish:%s\n", gw_finish_openai(d->finish)); break;
    case DELTA_USAGE:
        buf_printf(b, "usage:%lld/%lld/%lld/%lld/%lld\n", (long long)d->usage.input, (long long)d->usage.output,
                   (long long)d->usage.cached_input, (long long)d->usage.cache_write, (long long)d->usage.reasoning);
        break;
    }
}

/* canon: the canonical request as JSON text (NULL for none). */
static void fx_init(struct fx *f, const struct provider_ops *prov, const char *canon, bool stream, enum op op)
{
    memset(f, 0, sizeof(*f));
    lb_init(&f->sink);
    f->ex.sink_ops = &loopback_ops;
    f->ex.sink = &f->sink;
    snprintf(f->ex.rq.request_id, sizeof(f->ex.rq.request_id), "req-test-1");
    f->ex.rq.max_tokens = -1;
    f->ex.rq.stream = stream;
    snprintf(f->ex.rq.model_name, sizeof(f->ex.rq.model_name), "public-model");
    f->ex.canon = canon ? cJSON_Parse(canon) : NULL;
    if (canon && f->ex.canon == NULL)
        printf("# fixture: canonical request does not parse: %s\n", canon);
    /* what the front's parse would have set: the one max_tokens (max_completion_tokens wins) */
    const cJSON *mx = f->ex.canon ? cJSON_GetObjectItemCaseSensitive(f->ex.canon, "max_completion_tokens") : NULL;
    if (!cJSON_IsNumber(mx) && f->ex.canon)
        mx = cJSON_GetObjectItemCaseSensitive(f->ex.canon, "max_tokens");
    if (cJSON_IsNumber(mx))
        f->ex.rq.max_tokens = (int64_t)mx->valuedouble;
    f->dep.prov = prov;
    f->dep.label = "test:deployment";
    f->dep.model = "test-model";
    f->dep.base_url = "http://127.0.0.1:9";
    f->dep.api_key = "test-key";
    f->dep.region = "us-east-1";
    f->a.ex = &f->ex;
    f->a.dep = &f->dep;
    f->a.prov = prov;
    f->a.op = op;
    f->a.stream = stream;
    buf_init(&f->log, BUF_UNBOUNDED);
    buf_append(&f->log, "", 0);
}

static void fx_free(struct fx *f)
{
    if (f->a.prov->free_state)
        f->a.prov->free_state(&f->a);
    cJSON_Delete(f->ex.canon);
    buf_free(&f->log);
    lb_free(&f->sink);
}

static int is_json_(const cJSON *got, const char *want, const char *file, int line)
{
    cJSON *w = cJSON_Parse(want);
    if (w == NULL) {
        printf("# bad expected JSON at %s:%d\n", file, line);
        return test_ok_(0, "expected JSON parses", file, line);
    }
    int pass = test_ok_(got && cJSON_Compare(got, w, 1), "JSON trees equal", file, line);
    if (!pass) {
        char *g = got ? cJSON_PrintUnformatted(got) : NULL;
        char *e = cJSON_PrintUnformatted(w);
        printf("#   got      %s\n#   expected %s\n", g ? g : "(null)", e);
        cJSON_free(g);
        cJSON_free(e);
    }
    cJSON_Delete(w);
    return pass;
}
#define is_json(got, want) is_json_((got), (want), __FILE__, __LINE__)

/* Encodes through the provider; returns the upstream body as a tree (NULL when encoding failed). */
static cJSON *fx_encode(struct fx *f, struct up_request *r, struct gw_error *err)
{
    up_request_init(r);
    memset(err, 0, sizeof(*err));
    if (f->a.prov->encode_request(&f->a, r, err) != 0)
        return NULL;
    return cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
}

/* The value of a "Name: value" line in an up_request's headers (case-sensitive name), or NULL. */
static const char *fx_header(const struct up_request *r, const char *name)
{
    static char out[2048];
    size_t n = strlen(name);
    const char *p = r->headers.data;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            size_t len = nl ? (size_t)(nl - v) : strlen(v);
            if (len >= sizeof(out))
                len = sizeof(out) - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return out;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* Feeds one stream event through the provider. */
static int fx_event(struct fx *f, const char *event, const char *data, bool is_exception, struct gw_error *err)
{
    struct stream_event ev = {str_from(event ? event : ""), str_from(data), is_exception};
    memset(err, 0, sizeof(*err));
    return f->a.prov->decode_stream_event(&f->a, &ev, err);
}

/* Decodes a complete response body into a canonical tree (NULL on failure). */
static cJSON *fx_decode(struct fx *f, const char *body, struct gw_error *err)
{
    cJSON *out = NULL;
    memset(err, 0, sizeof(*err));
    if (f->a.prov->decode_response(&f->a, body, strlen(body), &out, err) != 0)
        return NULL;
    return out;
}

/* Drops the fields of a canonical completion that vary per run (created), for golden comparisons. */
static cJSON *fx_stable(cJSON *resp)
{
    if (resp)
        cJSON_DeleteItemFromObjectCaseSensitive(resp, "created");
    return resp;
}

#endif
