#include "gateway/providers/mock_config.h"

#include <stddef.h>

#include "common/macros.h"

#define MOFF(f) offsetof(struct config_mock, f)

static const struct cfg_field mock_fields[] = {
    {.key = "latency", .type = CFG_DURATION, .off = MOFF(latency_ms), .min = 0, .max = 600000, .def = "0ms",
     .flags = CFG_NO_ENV, .help = "mock: delay before the response or the first chunk"},
    {.key = "ttft", .type = CFG_DURATION, .off = MOFF(ttft_ms), .min = 0, .max = 600000, .def = "0ms",
     .flags = CFG_NO_ENV, .help = "mock: extra delay before the first streamed token"},
    {.key = "chunk_interval", .type = CFG_DURATION, .off = MOFF(chunk_interval_ms), .min = 0, .max = 60000,
     .def = "0ms", .flags = CFG_NO_ENV, .help = "mock: delay between streamed chunks"},
    {.key = "chunk_words", .type = CFG_INT, .off = MOFF(chunk_words), .min = 1, .max = 100000, .def = "1",
     .flags = CFG_NO_ENV, .help = "mock: words per streamed chunk"},
};

const struct cfg_schema mock_config_schema = {
    .name = "mock", .fields = mock_fields, .nfields = ARRAY_LEN(mock_fields)};
