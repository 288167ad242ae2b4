/* libFuzzer: a run spec in JSON, as an agent's tool call carries it. Whatever parses must validate, survive the
 * wire round trip unchanged, and free cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "sandbox/sbx_json.h"
#include "sandbox/sbx_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(1024);
    if (sbx_json_parse_spec((const char *)data, size, &js, &err) == 0) {
        struct buf w = BUF_INIT(BUF_UNBOUNDED);
        struct sbx_wire_spec ws;
        struct buf err2 = BUF_INIT(1024);
        if (sbx_wire_encode_spec(&js.spec, &w) == 0) {
            if (sbx_wire_decode_spec(w.data, w.len, &ws, &err2) != 0)
                abort(); /* a valid spec must survive the round trip */
            if (ws.spec.argc != js.spec.argc || ws.spec.nfiles != js.spec.nfiles || ws.spec.envc != js.spec.envc ||
                memcmp(&ws.spec.limits, &js.spec.limits, sizeof(ws.spec.limits)) != 0)
                abort();
            for (size_t i = 0; i < ws.spec.nfiles; i++)
                if (ws.spec.files[i].len != js.spec.files[i].len ||
                    memcmp(ws.spec.files[i].data, js.spec.files[i].data, ws.spec.files[i].len) != 0)
                    abort();
            sbx_wire_spec_free(&ws);
        }
        buf_free(&w);
        buf_free(&err2);
    }
    sbx_json_spec_free(&js);
    buf_free(&err);
    return 0;
}
