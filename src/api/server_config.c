/* server_config.c: the schema of the `server:` section (listeners, workers, limits and timeouts of the HTTP
 * server). The daemon turns it into the HTTP server's options. */
#include "api/server_config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/macros.h"
#include "config/config.h"

#define SOFF(f) offsetof(struct config_server, f)

/* After every source: flags and the environment can make the two listeners collide as well as the file. */
static void finish(struct cfg_ctx *ctx, void *obj, const char *path)
{
    const struct config_server *s = obj;
    if (s->listen && s->ops_listen && strcmp(s->listen, s->ops_listen) == 0 && strstr(s->listen, ":0") == NULL) {
        char fpath[256];
        snprintf(fpath, sizeof(fpath), "%s.ops_listen", path);
        cfg_error_at(ctx, NULL, fpath, "must differ from %s.listen (%s)", path, s->listen);
    }
}

static const struct cfg_field server_limits_fields[] = {
    {.key = "header_bytes", .type = CFG_SIZE, .off = SOFF(max_header_bytes), .min = 1024, .max = 65536,
     .def = "16KiB", .help = "request line + headers; larger requests get 431"},
    {.key = "body_bytes", .type = CFG_SIZE, .off = SOFF(max_body_bytes), .min = 1024, .max = 1LL << 30,
     .def = "16MiB", .help = "request body; larger requests get 413"},
    {.key = "connections", .type = CFG_INT, .off = SOFF(max_connections), .min = 1, .max = 1000000,
     .def = "10000", .help = "open client connections; past it new ones get 503 and are closed"},
    {.key = "pipeline", .type = CFG_INT, .off = SOFF(max_pipeline), .min = 1, .max = 128, .def = "16",
     .help = "parsed requests queued on one connection before reading pauses"},
};
static const struct cfg_schema server_limits_schema = {
    .name = "limits", .fields = server_limits_fields, .nfields = ARRAY_LEN(server_limits_fields)};

static const struct cfg_field server_timeouts_fields[] = {
    {.key = "header", .type = CFG_DURATION, .off = SOFF(header_timeout_ms), .min = 10, .max = 600000,
     .def = "10s", .help = "first byte of a request to the end of its headers; else 408"},
    {.key = "body", .type = CFG_DURATION, .off = SOFF(body_timeout_ms), .min = 10, .max = 3600000,
     .def = "60s", .help = "end of headers to the end of the body; else 408"},
    {.key = "idle", .type = CFG_DURATION, .off = SOFF(idle_timeout_ms), .min = 10, .max = 86400000,
     .def = "75s", .help = "keep-alive connection with no request"},
    {.key = "drain_grace", .type = CFG_DURATION, .off = SOFF(drain_grace_ms), .min = 0, .max = 3600000,
     .def = "30s", .help = "in-flight requests may finish for this long after SIGTERM"},
    {.key = "drain_delay", .type = CFG_DURATION, .off = SOFF(drain_delay_ms), .min = 0, .max = 600000,
     .def = "0s", .help = "after SIGTERM /ready is 503 for this long before the API listener closes"},
    {.key = "health_stall", .type = CFG_DURATION, .off = SOFF(health_stall_ms), .min = 100, .max = 600000,
     .def = "10s", .help = "/health fails when a worker loop has not turned for this long"},
};
static const struct cfg_schema server_timeouts_schema = {
    .name = "timeouts", .fields = server_timeouts_fields, .nfields = ARRAY_LEN(server_timeouts_fields)};

static const struct cfg_field server_fields[] = {
    {.key = "listen", .type = CFG_ADDR, .off = SOFF(listen), .def = "0.0.0.0:8000", .flags = CFG_RESTART,
     .help = "API listener"},
    {.key = "ops_listen", .type = CFG_ADDR, .off = SOFF(ops_listen), .def = "0.0.0.0:8080",
     .flags = CFG_RESTART, .help = "probes and metrics listener"},
    {.key = "workers", .type = CFG_INT, .off = SOFF(workers), .min = 0, .max = 256, .def = "0",
     .flags = CFG_RESTART, .help = "worker threads; 0 = CPUs available (cgroup quota respected)"},
    {.key = "data_dir", .type = CFG_STRING, .off = SOFF(data_dir), .max = 4096, .def = "./data",
     .flags = CFG_RESTART, .help = "SQLite database and local state"},
    {.key = "environment", .type = CFG_STRING, .off = SOFF(environment), .max = 64, .def = "development",
     .env_alias = "ENVIRONMENT", .help = "deployment environment name, reported in logs and metrics"},
    {.key = "backlog", .type = CFG_INT, .off = SOFF(backlog), .min = 1, .max = 65535, .def = "1024",
     .flags = CFG_RESTART, .help = "listen(2) backlog"},
    /* these two group keys; their fields live in struct config_server itself (.off = 0) */
    {.key = "limits", .type = CFG_MAP, .sub = &server_limits_schema},
    {.key = "timeouts", .type = CFG_MAP, .sub = &server_timeouts_schema},
    {.key = "debug_routes", .type = CFG_BOOL, .off = SOFF(debug_routes), .def = "false", .flags = CFG_RESTART,
     .help = "test-only routes /debug/echo, /debug/sleep, /debug/stall; never enable in production"},
};
const struct cfg_schema server_config_schema = {
    .name = "server", .fields = server_fields, .nfields = ARRAY_LEN(server_fields), .finish = finish};
