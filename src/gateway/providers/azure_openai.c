/* azure_openai.c: Azure OpenAI: https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT/...?api-version=V,
 * key in the api-key header, or an Entra ID token (workload or managed identity, gateway/cloud_creds.h) in
 * Authorization: Bearer. Bodies are OpenAI's (plus content-filter annotations, relayed as they are). */
#include "gateway/providers/openai_family.h"

#include "gateway/cloud_creds.h"
#include "gateway/gw_types.h"
#include "gateway/registry.h"

int azure_openai_auth(const struct deployment *d, struct up_request *r, struct gw_error *err)
{
    if (d->creds == NULL) {
        if (d->api_key)
            up_request_header(r, "api-key", d->api_key);
        return 0;
    }
    struct cc_snap *snap;
    char why[600];
    enum cc_status st = cc_acquire(d->creds, &snap, why, sizeof(why));
    if (st != CC_OK) {
        cc_error_set(err, d->label, d->creds, st, why);
        return -1;
    }
    buf_append_str(&r->headers, "Authorization: Bearer ");
    buf_append_str(&r->headers, snap->c.token);
    buf_append(&r->headers, "\n", 1);
    cc_release(snap);
    return 0;
}

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
