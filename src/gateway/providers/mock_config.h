/* mock_config.h: the offline mock model's knobs (see docs/mock.md), a deployment's `mock:` map. */
#ifndef AGENTD_MOCK_CONFIG_H
#define AGENTD_MOCK_CONFIG_H

#include <stdint.h>

#include "config/schema.h"

struct config_mock {
    int64_t latency_ms;        /* before the response (non-stream) or the first chunk (stream) */
    int64_t ttft_ms;           /* stream: extra wait before the first content chunk */
    int64_t chunk_interval_ms; /* stream: between chunks */
    int64_t chunk_words;       /* stream: words per chunk */
};

/* Offsets relative to struct config_mock; mounted as a CFG_MAP by gateway/gw_config.c. */
extern const struct cfg_schema mock_config_schema;

#endif
