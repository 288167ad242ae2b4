/* libFuzzer target: the Gemini provider's decoders and encoder on arbitrary bytes. The first byte picks what the
 * rest is: a complete generateContent / embeddings response, a sequence of SSE data payloads (one per line), an
 * error body, or a canonical request to translate (schemas, tools, parts). */
#include "gateway/providers/gemini.c"

#include <stdint.h>

#include "gateway/exchange.h"
#include "net/http.h"

static void sink(void *ud, const struct chat_delta *d)
{
    (void)ud;
    /* touch what a front door would read */
    volatile size_t n = d->text.n + d->tool_id.n + d->tool_name.n;
    if (d->text.n && d->text.p == NULL)
        abort();
    (void)n;
}

static struct exchange ex;
static struct deployment dep;

static void setup(struct attempt *a, enum op op, bool stream)
{
    memset(&ex, 0, sizeof(ex));
    snprintf(ex.rq.request_id, sizeof(ex.rq.request_id), "fuzz");
    ex.done = true;
    ex.rq.max_tokens = -1;
    snprintf(ex.rq.model_name, sizeof(ex.rq.model_name), "m");
    dep = (struct deployment){.prov = &provider_gemini, .label = "gemini:m", .model = "gemini-2.5-flash",
                              .base_url = "http://127.0.0.1:9", .api_key = "k"};
    memset(a, 0, sizeof(*a));
    a->ex = &ex;
    a->dep = &dep;
    a->prov = &provider_gemini;
    a->op = op;
    a->stream = stream;
    struct gemini_stream *st = xcalloc(1, sizeof(*st));
    st->emit = sink;
    a->pstate = st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int mode = data[0] % 5;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct attempt a;
    struct gw_error err;
    cJSON *out = NULL;
    setup(&a, mode == 1 ? OP_EMBEDDINGS : OP_CHAT, mode == 2);
    switch (mode) {
    case 0:
        provider_gemini.decode_response(&a, s, n, &out, &err);
        break;
    case 1:
        ex.canon = cJSON_Parse("{\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}");
        provider_gemini.decode_response(&a, s, n, &out, &err);
        break;
    case 2: {
        size_t start = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i == n || s[i] == '\n') {
                struct stream_event ev = {STR_NULL, str_make(s + start, i - start), false};
                if (provider_gemini.decode_stream_event(&a, &ev, &err) < 0)
                    break;
                start = i + 1;
            }
        }
        break;
    }
    case 3: {
        provider_gemini.map_error(&a, 400 + (int)(n % 200), s, n, &err);
        int64_t count = -1; /* the count endpoint's answer: a count >= 0, or refused */
        if (provider_gemini.decode_count(s, n, &count) == 0 && count < 0)
            __builtin_trap();
        break;
    }
    default: {
        ex.canon = cJSON_ParseWithLength(s, n);
        if (ex.canon) {
            struct up_request r;
            up_request_init(&r);
            provider_gemini.encode_request(&a, &r, &err);
            up_request_free(&r);
            up_request_init(&r); /* the same request for the provider's token count */
            provider_gemini.encode_count(a.dep, ex.canon, &r, &err);
            up_request_free(&r);
            a.op = OP_EMBEDDINGS;
            up_request_init(&r);
            provider_gemini.encode_request(&a, &r, &err);
            up_request_free(&r);
        }
        break;
    }
    }
    cJSON_Delete(out);
    cJSON_Delete(ex.canon);
    ex.canon = NULL;
    provider_gemini.free_state(&a);
    return 0;
}
