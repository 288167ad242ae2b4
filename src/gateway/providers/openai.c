/* openai.c: api.openai.com (or OPENAI_BASE_URL): Bearer key, /v1/chat/completions, /v1/embeddings. */
#include "gateway/providers/openai_family.h"

static int encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    return openai_family_encode(a, r, err, FLAVOR_OPENAI);
}

const struct provider_ops provider_openai = {
    .name = "openai",
    .wire = WIRE_OPENAI,
    .framing = FRAMING_SSE,
    .supports_embeddings = true,
    .encode_request = encode,
    .decode_response = openai_family_decode_response,
    .decode_stream_event = openai_family_decode_stream_event,
    .extract_usage = openai_family_extract_usage,
    .map_error = openai_family_map_error,
};
