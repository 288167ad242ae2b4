/* libFuzzer target: the native upstream client's response path (net/h1_resp.c h1_resp_*), fed arbitrary bytes as
 * an upstream response, exactly as the connection feeds what the socket delivers. The first four input bytes seed
 * how the rest is split into reads, when on_data answers PAUSE (resumed at once, so the held bytes and the stash
 * are exercised), and whether the transfer is cancelled or aborted from inside a callback. Checks: no callback
 * after the end or after a cancel, on_headers at most once and before any body, the stored headers within their
 * bound, and (unless cancelled or aborted) the same outcome, status and headers as one unfragmented, unpaused parse
 * of the same bytes, and for a complete response the same body bytes, trailers and reusability. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "net/h1_resp.h"

struct run {
    struct up_xfer x;
    struct h1_resp r;
    uint32_t rng;
    bool fragment, pauses;   /* what this run may do */
    int cancel_at, abort_at; /* on the n-th data call (0: never) */
    int headers, datas, npause;
    uint64_t hash;     /* of the body bytes accepted */
    uint64_t hdr_hash; /* of the stored headers as on_headers saw them */
    size_t body;
    bool ended, stopped;
};

static uint32_t next(struct run *rn)
{
    rn->rng ^= rn->rng << 13;
    rn->rng ^= rn->rng >> 17;
    rn->rng ^= rn->rng << 5;
    return rn->rng;
}

static void on_h(struct up_xfer *x, void *ud)
{
    struct run *rn = ud;
    if (rn->ended || rn->stopped || rn->headers || rn->datas)
        abort();
    rn->headers++;
    if (x->status < 200 || x->status > 599 || x->resp_headers.len > H1_RESP_HEADERS_MAX)
        abort();
    rn->hdr_hash = 14695981039346656037ull;
    for (size_t i = 0; i < x->resp_headers.len; i++)
        rn->hdr_hash = (rn->hdr_hash ^ (unsigned char)x->resp_headers.data[i]) * 1099511628211ull;
}

static int on_d(struct up_xfer *x, const char *data, size_t len, void *ud)
{
    struct run *rn = ud;
    if (rn->ended || rn->stopped || !rn->headers || len == 0)
        abort();
    rn->datas++;
    if (rn->cancel_at && rn->datas == rn->cancel_at) {
        x->cancelled = true; /* what upstream_cancel does from inside a callback */
        rn->stopped = true;
        return UP_DATA_OK;
    }
    if (rn->abort_at && rn->datas == rn->abort_at) {
        rn->stopped = true;
        return UP_DATA_ABORT;
    }
    if (rn->pauses && rn->npause < 256 && (next(rn) & 3) == 0) {
        rn->npause++;
        return UP_DATA_PAUSE; /* the same bytes must come again */
    }
    for (size_t i = 0; i < len; i++)
        rn->hash = (rn->hash ^ (unsigned char)data[i]) * 1099511628211ull;
    rn->body += len;
    return UP_DATA_OK;
}

static void run_init(struct run *rn, uint32_t seed)
{
    memset(rn, 0, sizeof(*rn));
    rn->rng = seed | 1;
    rn->hash = 14695981039346656037ull;
    buf_init(&rn->x.resp_headers, H1_RESP_HEADERS_MAX);
    rn->x.cb.on_headers = on_h;
    rn->x.cb.on_data = on_d;
    rn->x.ud = rn;
    h1_resp_init(&rn->r, &rn->x);
}

static void run_free(struct run *rn)
{
    h1_resp_free(&rn->r);
    buf_free(&rn->x.resp_headers);
}

/* Feeds s the way a connection would; returns the final H1_RESP_* state. */
static int drive(struct run *rn, const char *s, size_t n)
{
    int st = H1_RESP_MORE;
    size_t off = 0;
    while (off < n && st == H1_RESP_MORE) {
        size_t step = n - off;
        if (rn->fragment) {
            uint32_t v = next(rn);
            step = (v & 1) ? 1 + (v >> 8) % 8 : 1 + (v >> 8) % 512;
            if (step > n - off)
                step = n - off;
        }
        st = h1_resp_feed(&rn->r, s + off, step);
        off += step;
        while (st == H1_RESP_PAUSED)
            st = h1_resp_resume(&rn->r);
    }
    if (st == H1_RESP_MORE)
        st = h1_resp_eof(&rn->r);
    rn->ended = true;
    if (st == H1_RESP_FAILED && rn->r.error == NULL)
        abort();
    if (st == H1_RESP_CANCELLED && !rn->x.cancelled)
        abort();
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t seed = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
    const char *s = (const char *)data + 4;
    size_t n = size - 4;

    struct run whole;
    run_init(&whole, seed);
    int st1 = drive(&whole, s, n);

    struct run parts;
    run_init(&parts, seed);
    parts.fragment = true;
    parts.pauses = (seed & 0x100) != 0;
    if ((seed & 0x3000) == 0x1000)
        parts.cancel_at = 1 + (int)((seed >> 16) % 4);
    else if ((seed & 0x3000) == 0x2000)
        parts.abort_at = 1 + (int)((seed >> 16) % 4);
    int st2 = drive(&parts, s, n);

    if (!parts.stopped) {
        /* What a caller can act on must not depend on how the bytes arrived. (Partial headers or body bytes
         * before a failure may: http-parser hands data over at the end of each read.) */
        if (st1 != st2 || whole.headers != parts.headers || whole.x.status != parts.x.status)
            abort();
        if (whole.hdr_hash != parts.hdr_hash)
            abort();
        size_t hl = whole.x.resp_headers.len;
        if (st1 == H1_RESP_COMPLETE && (whole.body != parts.body || whole.hash != parts.hash ||
                                        whole.r.keep_alive != parts.r.keep_alive || hl != parts.x.resp_headers.len ||
                                        (hl && memcmp(whole.x.resp_headers.data, parts.x.resp_headers.data, hl) != 0)))
            abort();
        if (st1 == H1_RESP_FAILED && strcmp(whole.r.error, parts.r.error) != 0)
            abort();
    }
    run_free(&whole);
    run_free(&parts);
    return 0;
}
