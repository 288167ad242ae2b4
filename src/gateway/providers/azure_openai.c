/* azure_openai.c: Azure OpenAI: https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT/...?api-version=V,
 * key in the api-key header. Bodies are OpenAI's (plus content-filter annotations, relayed as they are). */
#include "gateway/providers/openai_family.h"

static int encode(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    return openai_family_encode(a, r, err, FLAVOR_AZURE);
}

const struct provider_ops provider_azure_openai = {
    .name = "azure-openai",
    .wire = WIRE_OPENAI,
    .framing = FRAMING_SSE,
    .supports_embeddings = true,
    .encode_request = encode,
    .decode_response = openai_family_decode_response,
    .decode_stream_event = openai_family_decode_stream_event,
    .extract_usage = openai_family_extract_usage,
    .map_error = openai_family_map_error,
};
