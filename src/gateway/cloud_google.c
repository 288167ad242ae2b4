/* cloud_google.c: Google credentials for Vertex AI deployments (placeholder until the credentials framework). */
#include "gateway/providers/vertex.h"
#include "gateway/registry.h"

int vertex_cloud_bearer(const struct deployment *d, struct up_request *r, struct gw_error *err)
{
    (void)r;
    gw_error_set(err, 503, GW_ERR_OVERLOADED, "deployment %s: no Google credentials", d->label);
    err->retryable = true;
    return -1;
}
