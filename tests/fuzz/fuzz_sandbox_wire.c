/* libFuzzer: the bytes a sandbox child decodes its run from, and the messages between pool, zygote and child. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "sandbox/sbx_json.h"
#include "sandbox/sbx_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sbx_wire_spec ws;
    struct sbx_exit e;
    struct sbx_msg_hdr h;
    const void *body;
    size_t blen;
    struct buf err = BUF_INIT(1024);
    /* Copy: the decoder must not read a byte past what it was given (ASan watches the heap copy's end). */
    char *copy = xmemdup(data, size);
    if (sbx_wire_decode_spec(copy, size, &ws, &err) == 0) {
        struct buf w = BUF_INIT(BUF_UNBOUNDED);
        if (sbx_wire_encode_spec(&ws.spec, &w) != 0 || w.len != size || memcmp(w.data, copy, size) != 0)
            abort(); /* decoding is exact: re-encoding gives the same bytes */
        buf_free(&w);
        sbx_wire_spec_free(&ws);
    }
    if (sbx_wire_decode_exit(copy, size, &e) == 0) {
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        struct sbx_result r;
        memset(&r, 0, sizeof(r));
        r.reason = (enum sbx_reason)e.reason;
        r.exit_code = e.exit_code;
        r.term_signal = e.term_signal;
        memcpy(r.error, e.error, sizeof(r.error));
        memcpy(r.cgroup, e.cgroup, sizeof(r.cgroup));
        buf_init(&r.out, 0);
        buf_init(&r.err, 0);
        sbx_json_result(&r, NULL, &out);
        buf_free(&out);
    }
    struct sbx_wire_offer o;
    if (sbx_wire_decode_offer(copy, size, &o) == 0) {
        struct buf w = BUF_INIT(BUF_UNBOUNDED);
        sbx_wire_encode_offer(&o, &w);
        if (w.len != size || memcmp(w.data, copy, size) != 0)
            abort(); /* an offer is read exactly: re-encoding gives the same bytes */
        buf_free(&w);
    }
    (void)sbx_wire_msg_parse(copy, size, &h, &body, &blen);
    struct buf j = BUF_INIT(BUF_UNBOUNDED);
    (void)sbx_json_append_utf8(&j, copy, size);
    buf_free(&j);
    xfree(copy);
    buf_free(&err);
    return 0;
}
