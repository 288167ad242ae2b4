/* eventstream.h: the AWS event-stream binary framing (application/vnd.amazon.eventstream) that Bedrock's
 * ConverseStream uses: each message is
 *   total length (u32 BE) | headers length (u32 BE) | prelude CRC32 | headers | payload | message CRC32
 * with headers as name-length (u8), name, value type (u8), value. Parsed incrementally, CRCs checked, sizes
 * bounded. */
#ifndef AGENTD_EVENTSTREAM_H
#define AGENTD_EVENTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"

struct eventstream_message {
    struct str message_type;   /* ":message-type": "event", "exception", "error" */
    struct str event_type;     /* ":event-type", or ":exception-type" / ":error-code" for failures */
    struct str content_type;
    struct str error_message;  /* ":error-message" (error messages) */
    struct str payload;        /* for an error message without payload: error_message */
    bool is_exception;
};

typedef int eventstream_message_fn(const struct eventstream_message *m, void *ud);

struct eventstream_parser {
    struct buf pending;  /* bytes of an incomplete message */
    size_t max_message;
    eventstream_message_fn *fn;
    void *ud;
};

void eventstream_parser_init(struct eventstream_parser *p, size_t max_message, eventstream_message_fn *fn, void *ud);
void eventstream_parser_free(struct eventstream_parser *p);
/* Feeds bytes as they arrive (any split). Calls fn once per complete message, whose strings point into the
 * input or the parser's buffer and are valid only during the call. Returns 0, the callback's non-zero value
 * (parsing stops there), or -1 on a framing/CRC error or a message larger than max_message; after a non-zero
 * return the parser must not be fed again. The parser buffers at most one incomplete message. */
int eventstream_feed(struct eventstream_parser *p, const char *data, size_t len);

uint32_t eventstream_crc32(uint32_t crc, const void *data, size_t len);
/* Encodes one message with string headers (for tests and fakes written in C). */
int eventstream_encode(struct buf *out, const char *const *header_names, const char *const *header_values, size_t nheaders,
              const void *payload, size_t payload_len);

#endif
