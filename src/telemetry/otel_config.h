/* otel_config.h: the `telemetry:` section (OpenTelemetry export). Every setting also reads its standard OTEL_*
 * environment variable; its plain struct, struct config_telemetry, is in config/config.h. */
#ifndef AGENTD_OTEL_CONFIG_H
#define AGENTD_OTEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "config/schema.h"

enum { OTEL_PROTO_HTTP_PROTOBUF, OTEL_PROTO_HTTP_JSON };
enum { OTEL_COMPRESSION_NONE, OTEL_COMPRESSION_GZIP };
enum { OTEL_RESPONSE_HEADER_TRACEPARENT, OTEL_RESPONSE_HEADER_NONE };

extern const struct cfg_schema otel_config_schema;

/* Parses a "k1=v1,k2=v2" list (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES: W3C-baggage style, values
 * percent-decoded, optional whitespace). fn gets each pair (NUL-terminated copies); returns 0, or -1 when the
 * list is malformed. */
int otel_parse_kv_list(const char *s, void (*fn)(const char *k, const char *v, void *ud), void *ud);

#endif
