#include "gateway/eventstream.h"

#include <pthread.h>
#include <string.h>

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t eventstream_crc32(uint32_t crc, const void *data, size_t len)
{
    /* Worker threads parse streams concurrently: the table is built exactly once, with a barrier. */
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint16_t be16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

void eventstream_parser_init(struct eventstream_parser *p, size_t max_message, eventstream_message_fn *fn, void *ud)
{
    buf_init(&p->pending, max_message);
    p->max_message = max_message;
    p->fn = fn;
    p->ud = ud;
}

void eventstream_parser_free(struct eventstream_parser *p)
{
    buf_free(&p->pending);
}

/* Value sizes by header type: 0 true, 1 false, 2 byte, 3 short, 4 int, 5 long, 6 bytes, 7 string, 8 timestamp,
 * 9 uuid. */
static int parse_headers(const unsigned char *h, size_t n, struct eventstream_message *m)
{
    size_t i = 0;
    while (i < n) {
        size_t nlen = h[i++];
        if (nlen == 0 || i + nlen + 1 > n)
            return -1;
        const char *name = (const char *)h + i;
        i += nlen;
        unsigned type = h[i++];
        size_t vlen;
        const unsigned char *v = h + i;
        switch (type) {
        case 0: case 1: vlen = 0; break;
        case 2: vlen = 1; break;
        case 3: vlen = 2; break;
        case 4: vlen = 4; break;
        case 5: case 8: vlen = 8; break;
        case 9: vlen = 16; break;
        case 6: case 7:
            if (i + 2 > n)
                return -1;
            vlen = be16(h + i);
            i += 2;
            v = h + i;
            break;
        default: return -1;
        }
        if (i + vlen > n)
            return -1;
        if (type == 7) {
            struct str val = str_make((const char *)v, vlen);
            struct str nm = str_make(name, nlen);
            if (str_eq_cstr(nm, ":message-type"))
                m->message_type = val;
            else if (str_eq_cstr(nm, ":event-type"))
                m->event_type = val;
            else if (str_eq_cstr(nm, ":exception-type") || str_eq_cstr(nm, ":error-code"))
                m->event_type = val;
            else if (str_eq_cstr(nm, ":content-type"))
                m->content_type = val;
            else if (str_eq_cstr(nm, ":error-message"))
                m->error_message = val;
        }
        i += vlen;
    }
    return 0;
}

/* The total length a message announces, once its 12-byte prelude is there: 0 while incomplete, -1 when the
 * prelude is invalid (bad CRC, impossible lengths, larger than the limit). */
static long prelude_total(const struct eventstream_parser *ps, const unsigned char *p, size_t len)
{
    if (len < 12)
        return 0;
    uint32_t total = be32(p), hlen = be32(p + 4);
    if (total < 16 || total > ps->max_message || hlen > total - 16)
        return -1;
    if (eventstream_crc32(0, p, 8) != be32(p + 8))
        return -1;
    return (long)total;
}

/* Parses one complete message at p (len bytes available). Returns bytes used, 0 if incomplete, -1 on error. */
static long one(struct eventstream_parser *ps, const unsigned char *p, size_t len, int *cb_rc)
{
    long t = prelude_total(ps, p, len);
    if (t <= 0)
        return t;
    size_t total = (size_t)t, hlen = be32(p + 4);
    if (len < total)
        return 0;
    if (eventstream_crc32(0, p, total - 4) != be32(p + total - 4))
        return -1;
    struct eventstream_message m;
    memset(&m, 0, sizeof(m));
    if (parse_headers(p + 12, hlen, &m) != 0)
        return -1;
    m.payload = str_make((const char *)p + 12 + hlen, total - 16 - hlen);
    m.is_exception = m.message_type.n && !str_eq_cstr(m.message_type, "event");
    /* ":message-type: error" carries its text in a header and usually no payload. */
    if (m.payload.n == 0 && str_eq_cstr(m.message_type, "error"))
        m.payload = m.error_message;
    *cb_rc = ps->fn(&m, ps->ud);
    return (long)total;
}

int eventstream_feed(struct eventstream_parser *ps, const char *data, size_t len)
{
    const unsigned char *in = (const unsigned char *)data;
    int rc = 0;
    /* A message split across reads: take only the bytes it still needs, so the pending buffer never holds more
     * than one message (max_message) however large the read that completes it. */
    while (ps->pending.len) {
        const unsigned char *p = (const unsigned char *)ps->pending.data;
        long t = prelude_total(ps, p, ps->pending.len);
        if (t < 0)
            return -1;
        size_t need = t == 0 ? 12 - ps->pending.len : (size_t)t - ps->pending.len;
        size_t take = need < len ? need : len;
        if (buf_append(&ps->pending, in, take) != 0)
            return -1;
        in += take;
        len -= take;
        if (take < need)
            return 0; /* still incomplete, all input used */
        if (t == 0)
            continue; /* the prelude is complete now: learn the total */
        long u = one(ps, (const unsigned char *)ps->pending.data, ps->pending.len, &rc);
        buf_reset(&ps->pending);
        if (u <= 0)
            return -1;
        if (rc)
            return rc;
    }
    size_t used = 0;
    for (;;) {
        long u = one(ps, in + used, len - used, &rc);
        if (u < 0)
            return -1;
        if (u == 0)
            break;
        used += (size_t)u;
        if (rc)
            return rc;
    }
    if (used < len && buf_append(&ps->pending, in + used, len - used) != 0)
        return -1;
    return 0;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

int eventstream_encode(struct buf *out, const char *const *names, const char *const *values, size_t nheaders,
              const void *payload, size_t payload_len)
{
    struct buf h = BUF_INIT(65536);
    for (size_t i = 0; i < nheaders; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        unsigned char hdr[4] = {(unsigned char)nl};
        if (nl > 255 || vl > 65535 || buf_append(&h, hdr, 1) != 0 || buf_append(&h, names[i], nl) != 0)
            goto fail;
        unsigned char tv[3] = {7, (unsigned char)(vl >> 8), (unsigned char)vl};
        if (buf_append(&h, tv, 3) != 0 || buf_append(&h, values[i], vl) != 0)
            goto fail;
    }
    if (payload_len > (size_t)UINT32_MAX - 16 - h.len)
        goto fail;
    uint32_t total = (uint32_t)(16 + h.len + payload_len);
    unsigned char prelude[12];
    put32(prelude, total);
    put32(prelude + 4, (uint32_t)h.len);
    put32(prelude + 8, eventstream_crc32(0, prelude, 8));
    size_t start = out->len;
    if (buf_append(out, prelude, 12) != 0 || buf_append(out, h.data, h.len) != 0 ||
        buf_append(out, payload, payload_len) != 0)
        goto fail;
    unsigned char crc[4];
    put32(crc, eventstream_crc32(0, out->data + start, out->len - start));
    if (buf_append(out, crc, 4) != 0)
        goto fail;
    buf_free(&h);
    return 0;
fail:
    buf_free(&h);
    return -1;
}
