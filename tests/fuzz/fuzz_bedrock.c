/* libFuzzer target: the Bedrock provider's decoders and encoder on arbitrary bytes. The first byte picks what the
 * rest is: a complete Converse response, a ConverseStream body (AWS event-stream frames, parsed by the real
 * eventstream_parser and decoded event by event), an error body (first line: the x-amzn-ErrorType value), or a canonical
 * request to translate and sign. */
#include "gateway/providers/bedrock.c"

#include <stdint.h>
#include <stdlib.h>

#include "gateway/exchange.h"
#include "net/http.h"

#include "gateway/eventstream.h"

static void sink(void *ud, const struct chat_delta *d)
{
    (void)ud;
    if ((d->text.n && d->text.p == NULL) || d->tool_index < 0)
        abort();
}

static struct exchange ex;
static struct deployment dep;

static void setup(struct attempt *a, bool stream)
{
    memset(&ex, 0, sizeof(ex));
    snprintf(ex.rq.request_id, sizeof(ex.rq.request_id), "fuzz");
    ex.done = true;
    ex.rq.max_tokens = -1;
    snprintf(ex.rq.model_name, sizeof(ex.rq.model_name), "m");
    dep = (struct deployment){.prov = &provider_bedrock, .label = "bedrock:m",
                              .model = "anthropic.claude-3-5-haiku-20241022-v1:0",
                              .base_url = "http://127.0.0.1:9", .region = "us-east-1",
                              .aws_access_key_id = "AKIAFAKEEXAMPLE00000",
                              .aws_secret_access_key = "fakeSecretAccessKey/EXAMPLE+0123456789ab"};
    memset(a, 0, sizeof(*a));
    a->ex = &ex;
    a->dep = &dep;
    a->prov = &provider_bedrock;
    a->op = OP_CHAT;
    a->stream = stream;
    struct bedrock_stream *st = xcalloc(1, sizeof(*st));
    st->emit = sink;
    a->pstate = st;
}

static int on_message(const struct eventstream_message *m, void *ud)
{
    struct attempt *a = ud;
    struct stream_event ev = {m->event_type, m->payload, m->is_exception};
    struct gw_error err;
    return provider_bedrock.decode_stream_event(a, &ev, &err) < 0 ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int mode = data[0] % 4;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct attempt a;
    struct gw_error err;
    cJSON *out = NULL;
    setup(&a, mode == 1);
    switch (mode) {
    case 0:
        provider_bedrock.decode_response(&a, s, n, &out, &err);
        break;
    case 1: {
        struct eventstream_parser p;
        eventstream_parser_init(&p, 4096, on_message, &a);
        size_t piece = n ? (size_t)(unsigned char)s[0] % 32 + 1 : 1;
        for (size_t off = 0; off < n; off += piece)
            if (eventstream_feed(&p, s + off, n - off < piece ? n - off : piece) != 0)
                break;
        eventstream_parser_free(&p);
        break;
    }
    case 2: {
        const char *nl = memchr(s, '\n', n);
        size_t hl = nl ? (size_t)(nl - s) : 0;
        snprintf(a.upstream_error_type, sizeof(a.upstream_error_type), "%.*s", (int)(hl < 127 ? hl : 127), s);
        size_t off = nl ? hl + 1 : 0;
        provider_bedrock.map_error(&a, 400 + (int)(n % 200), s + off, n - off, &err);
        break;
    }
    default: {
        int64_t count = -1; /* the count endpoint's answer: a count >= 0, or refused */
        if (provider_bedrock.decode_count(s, n, &count) == 0 && count < 0)
            __builtin_trap();
        ex.canon = cJSON_ParseWithLength(s, n);
        if (ex.canon) {
            struct up_request r;
            up_request_init(&r);
            provider_bedrock.encode_request(&a, &r, &err);
            up_request_free(&r);
            up_request_init(&r); /* the same request for the provider's token count */
            provider_bedrock.encode_count(a.dep, ex.canon, &r, &err);
            up_request_free(&r);
        }
        break;
    }
    }
    cJSON_Delete(out);
    cJSON_Delete(ex.canon);
    ex.canon = NULL;
    provider_bedrock.free_state(&a);
    return 0;
}
