/* openai_compatible.c: any server that speaks OpenAI's API (vLLM, Ollama, llama.cpp server, LM Studio, ...),
 * addressed by base_url (including its /v1); the key is optional. */
#include "gateway/providers/openai_family.h"

static int encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    return openai_family_encode(a, r, err, FLAVOR_COMPATIBLE);
}

const struct provider_ops provider_openai_compatible = {
    .name = "openai-compatible",
    .wire = WIRE_OPENAI,
    .framing = FRAMING_SSE,
    .supports_embeddings = true,
    .encode_request = encode,
    .decode_response = openai_family_decode_response,
    .decode_stream_event = openai_family_decode_stream_event,
    .extract_usage = openai_family_extract_usage,
    .map_error = openai_family_map_error,
};
