/* sse.h: Server-Sent Events (WHATWG HTML §9.2) parsing, incremental and bounded.
 *
 * Upstream LLM streams arrive in arbitrary TCP fragments; sse_feed takes whatever arrived and calls back once
 * per complete event. Lines may end in LF, CRLF or CR (a CR at the end of one fragment and LF at the start of the
 * next count as one line end). An event larger than max_event bytes is an error, never a growing buffer. */
#ifndef AGENTD_SSE_H
#define AGENTD_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/str.h"

struct sse_event {
    struct str event; /* "" when the stream gave no event: field (the type is then "message") */
    struct str data;  /* data lines joined with '\n' */
    struct str id;
    long retry_ms;    /* -1 when absent */
};

/* Return non-zero to stop parsing; sse_feed then returns that value. */
typedef int sse_event_fn(const struct sse_event *ev, void *ud);

struct sse_parser {
    struct buf line;   /* partial line */
    struct buf data;   /* data of the event being built */
    struct buf event;
    struct buf id;
    long retry_ms;
    bool has_data;
    bool saw_cr;       /* last byte was CR: a following LF belongs to the same line end */
    bool bom_checked;
    unsigned char bom_seen;  /* leading bytes that matched a UTF-8 BOM so far (it may arrive split) */
    size_t max_event;
    sse_event_fn *fn;
    void *ud;
};

void sse_parser_init(struct sse_parser *p, size_t max_event, sse_event_fn *fn, void *ud);
void sse_parser_free(struct sse_parser *p);
/* Returns 0, the callback's non-zero value, or -1 when an event exceeds max_event. */
int sse_feed(struct sse_parser *p, const char *data, size_t len);
/* End of stream: an event without its terminating blank line is discarded, as the spec says. */
void sse_finish(struct sse_parser *p);

/* Writing: appends "event: NAME\n" (when name) + "data: ..." (one line per data line) + "\n". */
int sse_append_event(struct buf *out, const char *name, const char *data, size_t len);
/* Appends "data: ..." lines + "\n" for data (no event line). */
static inline int sse_append_raw(struct buf *out, const char *data, size_t len)
{
    return sse_append_event(out, NULL, data, len);
}

#endif
