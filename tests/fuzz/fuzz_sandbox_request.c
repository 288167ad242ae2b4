/* libFuzzer: the body of POST /v1/sandbox/runs (sbx_service_parse_request). Whatever it accepts must be a spec the
 * sandbox validates; whatever it refuses must say why; everything frees cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(1024);
    char param[64];
    int rc = sbx_service_parse_request((const char *)data, size, &js, &err, param, sizeof(param));
    if (rc == SBX_SVC_OK) {
        struct buf e2 = BUF_INIT(1024);
        if (sbx_spec_validate(&js.spec, &e2) != 0)
            abort(); /* accepted, so it must run */
        buf_free(&e2);
    } else if (rc != SBX_SVC_INVALID || err.len == 0 || strlen(param) >= sizeof(param)) {
        abort(); /* a refusal says why */
    }
    sbx_json_spec_free(&js);
    buf_free(&err);
    return 0;
}
