/* h1_resp.h: the HTTP/1.1 response parser of agentd's upstream client (net/h1client.h), one per connection, fed
 * the bytes the socket delivers (plaintext, after TLS). http-parser does the framing (Content-Length, chunked and
 * close-delimited bodies); this adds what a relay needs: 1xx skipped, a status outside 100-599 refused, the final
 * response's headers kept within H1_RESP_HEADERS_MAX, and pause/resume that redelivers the held bytes. It calls
 * the transfer's on_headers and on_data, never on_done: the connection decides how the transfer ends. Fuzzed by
 * tests/fuzz/fuzz_h1response.c. */
#ifndef AGENTD_H1_RESP_H
#define AGENTD_H1_RESP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "net/upstream_types.h"

#define H1_RESP_HEADERS_MAX (64 * 1024)

struct h1_resp {
    http_parser p;
    struct up_xfer *x;
    struct buf pending; /* body bytes on_data answered PAUSE to: delivered again by h1_resp_resume */
    struct buf stash;   /* bytes read but not parsed when the transfer paused */
    const char *error;  /* why the response failed (a literal or x->errbuf); NULL while fine */
    enum up_result result; /* ... and its code (UP_E_PROTOCOL, UP_E_TOO_LARGE, UP_E_RESET, ...) */
    uint8_t hstate;     /* 0 between headers, 1 in a name, 2 in a value */
    bool complete;      /* the final response ended */
    bool keep_alive;    /* ... and the connection may carry another request */
    bool trailing;      /* ... and bytes followed it in the same read (so it may not) */
};

enum {
    H1_RESP_MORE,      /* everything parsed; feed more */
    H1_RESP_PAUSED,    /* on_data said PAUSE: stop reading, call h1_resp_resume later */
    H1_RESP_COMPLETE,  /* the final response ended (r->keep_alive, r->trailing say whether to reuse) */
    H1_RESP_FAILED,    /* r->error */
    H1_RESP_CANCELLED, /* the transfer was cancelled inside a callback */
};

/* (Re)starts the parser for a transfer, keeping the buffers' allocations. */
void h1_resp_init(struct h1_resp *r, struct up_xfer *x);
void h1_resp_free(struct h1_resp *r);
/* Parses bytes from the socket (not while paused). Calls on_headers and on_data, never on_done. Returns
 * H1_RESP_*. */
int h1_resp_feed(struct h1_resp *r, const char *data, size_t len);
/* The peer closed the connection: completes a close-delimited body (H1_RESP_COMPLETE), otherwise sets r->error
 * and r->result (H1_RESP_FAILED). */
int h1_resp_eof(struct h1_resp *r);
/* Resumes a paused transfer: delivers the held bytes again, then parses the stash. Returns H1_RESP_*. */
int h1_resp_resume(struct h1_resp *r);

#endif
