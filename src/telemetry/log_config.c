/* log_config.c: the schema of the `log:` section. It sits with telemetry rather than beside common/log.c because
 * common/ is below the configuration engine and must not include it. */
#include "telemetry/log_config.h"

#include <stddef.h>

#include "common/log.h"
#include "common/macros.h"
#include "config/config.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
_Static_assert(ARRAY_LEN(log_levels) == CONFIG_LOG_ERROR + 2, "one name per CONFIG_LOG_*");

static const char *const log_formats[] = {"json", "text", NULL};
_Static_assert(LOG_FORMAT_JSON == 0 && LOG_FORMAT_TEXT == 1, "one name per LOG_FORMAT_*");

#define LOFF(f) offsetof(struct config_log, f)
static const struct cfg_field log_fields[] = {
    {.key = "level", .type = CFG_ENUM, .off = LOFF(level), .enums = log_levels, .def = "info",
     .help = "lowest level written"},
    {.key = "access", .type = CFG_BOOL, .off = LOFF(access), .def = "true", .help = "one line per HTTP request"},
    {.key = "llm", .type = CFG_BOOL, .off = LOFF(llm), .def = "true",
     .help = "one line per gateway request: model, deployment, tokens, cost, timings"},
    {.key = "format", .type = CFG_ENUM, .off = LOFF(format), .enums = log_formats, .def = "json",
     .help = "json: one JSON object per line (for collectors); text: time level message key=value (for a terminal)"},
};

const struct cfg_schema log_config_schema = {.name = "log", .fields = log_fields, .nfields = ARRAY_LEN(log_fields)};
