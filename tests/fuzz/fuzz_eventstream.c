/* libFuzzer target: the AWS event-stream parser on arbitrary bytes. The first byte chooses how the rest is split
 * into reads; the messages delivered (and the final verdict) must be the same as when the bytes arrive in one
 * read, and every string handed to the callback must lie inside the message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/eventstream.h"

struct digest {
    uint32_t crc;
    int n;
};

static int on_msg(const struct eventstream_message *m, void *ud)
{
    struct digest *d = ud;
    const struct str parts[] = {m->message_type, m->event_type, m->content_type, m->payload};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (parts[i].n && parts[i].p == NULL)
            abort();
        d->crc = eventstream_crc32(d->crc, parts[i].p ? parts[i].p : "", parts[i].n);
        d->crc = eventstream_crc32(d->crc, "|", 1);
    }
    d->crc = eventstream_crc32(d->crc, m->is_exception ? "x" : "e", 1);
    d->n++;
    return 0;
}

static int run(const uint8_t *data, size_t size, size_t piece, struct digest *d)
{
    struct eventstream_parser p;
    eventstream_parser_init(&p, 2048, on_msg, d);
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        /* each read in its own allocation, so reads past it are caught */
        char *copy = xmalloc(n ? n : 1);
        memcpy(copy, data + off, n);
        rc = eventstream_feed(&p, copy, n);
        xfree(copy);
        if (p.pending.len > 2048)
            abort(); /* the parser holds at most one message */
    }
    eventstream_parser_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t piece = (size_t)data[0] % 64 + 1;
    data++;
    size--;
    struct digest whole = {0, 0}, split = {0, 0};
    int rc_whole = run(data, size, size ? size : 1, &whole);
    int rc_split = run(data, size, piece, &split);
    if (rc_whole != rc_split || whole.n != split.n || whole.crc != split.crc)
        abort();
    return 0;
}
