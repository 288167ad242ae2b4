/* Placeholder until providers/anthropic.c and wire_anthropic.c land (being written in parallel). */
#include "gateway/front.h"
#include "gateway/provider.h"

static int not_yet(struct attempt *a, struct up_request *r, struct gw_error *err)
{
    (void)a;
    (void)r;
    gw_error_set(err, 501, GW_ERR_API, "provider not implemented yet");
    return -1;
}

const struct provider_ops provider_anthropic = {.name = "anthropic", .wire = WIRE_ANTHROPIC, .encode_request = not_yet};

static int front_not_yet(struct exchange *ex, struct gw_error *err)
{
    (void)ex;
    gw_error_set(err, 501, GW_ERR_API, "the Anthropic front door is not implemented yet");
    return -1;
}

static void error_body(struct exchange *ex, const struct gw_error *err, struct buf *out)
{
    (void)ex;
    buf_append_str(out, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":");
    buf_append_json_cstr(out, err->message);
    buf_append_str(out, "}}");
}

const struct front_ops front_anthropic = {.name = "anthropic", .wire = WIRE_ANTHROPIC, .parse = front_not_yet,
                                          .error_body = error_body};
