/* libFuzzer target: what the Vertex AI provider reads or builds itself (providers/vertex.c); the Gemini and
 * Anthropic codecs under it have their own targets. The first byte picks: a :predict embeddings answer; an error
 * body (Google's google.rpc.Status or Anthropic's, told apart by its shape); a canonical request encoded for a
 * Gemini model (chat, embeddings, count) and for a Claude model (chat, count). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/exchange.h"
#include "gateway/provider.h"
#include "gateway/providers/vertex.h"
#include "gateway/registry.h"

static struct exchange ex;
static struct deployment dep;

static void setup(struct attempt *a, const struct provider_ops *ops, const char *model, enum op op)
{
    memset(&ex, 0, sizeof(ex));
    snprintf(ex.rq.request_id, sizeof(ex.rq.request_id), "fuzz");
    ex.done = true;
    ex.rq.max_tokens = -1;
    snprintf(ex.rq.model_name, sizeof(ex.rq.model_name), "m");
    dep = (struct deployment){.prov = ops, .label = "vertex-ai:m", .model = (char *)model, .project = "p",
                              .region = "us-east5", .base_url = "http://127.0.0.1:9", .api_key = "ya29.t"};
    memset(a, 0, sizeof(*a));
    a->ex = &ex;
    a->dep = &dep;
    a->prov = ops;
    a->op = op;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 1 << 20)
        return 0;
    int mode = data[0] % 3;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct attempt a;
    struct gw_error err;
    cJSON *out = NULL;
    if (mode == 0) {
        setup(&a, &provider_vertex, "text-embedding-005", OP_EMBEDDINGS);
        ex.canon = cJSON_Parse("{\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}");
        if (provider_vertex.decode_response(&a, s, n, &out, &err) == 0 &&
            !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(out, "data")))
            abort();
        provider_vertex.free_state(&a);
    } else if (mode == 1) {
        setup(&a, &provider_vertex_anthropic, "claude-x@1", OP_CHAT);
        memset(&err, 0, sizeof(err));
        provider_vertex_anthropic.map_error(&a, 400 + (int)(n % 200), s, n, &err);
        if (err.status < 400 || err.status > 599)
            abort();
        provider_vertex_anthropic.free_state(&a);
    } else {
        static const struct {
            const struct provider_ops *ops;
            const char *model;
            enum op op;
        } cases[] = {{&provider_vertex, "gemini-2.5-flash", OP_CHAT},
                     {&provider_vertex, "text-embedding-005", OP_EMBEDDINGS},
                     {&provider_vertex_anthropic, "claude-x@1", OP_CHAT}};
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            setup(&a, cases[i].ops, cases[i].model, cases[i].op);
            ex.canon = cJSON_ParseWithLength(s, n);
            if (ex.canon == NULL)
                break;
            struct up_request r;
            up_request_init(&r);
            if (cases[i].ops->encode_request(&a, &r, &err) == 0 && cases[i].ops == &provider_vertex_anthropic) {
                /* the body Vertex gets never names the model, always the Vertex version */
                cJSON *b = cJSON_ParseWithLength(r.body.data, r.body.len);
                if (!b || cJSON_GetObjectItemCaseSensitive(b, "model") ||
                    !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(b, "anthropic_version")))
                    abort();
                cJSON_Delete(b);
            }
            up_request_free(&r);
            up_request_init(&r);
            cases[i].ops->encode_count(a.dep, ex.canon, &r, &err);
            up_request_free(&r);
            cases[i].ops->free_state(&a);
            cJSON_Delete(ex.canon);
            ex.canon = NULL;
        }
    }
    cJSON_Delete(out);
    cJSON_Delete(ex.canon);
    ex.canon = NULL;
    return 0;
}
