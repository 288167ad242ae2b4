/* Placeholder until providers/gemini.c lands (being written in parallel). */
#include "gateway/provider.h"

static int not_yet(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    (void)a;
    (void)r;
    gw_error_set(err, 501, GW_ERR_API, "provider not implemented yet");
    return -1;
}

const struct provider_ops provider_gemini = {.name = "gemini", .encode_request = not_yet};
