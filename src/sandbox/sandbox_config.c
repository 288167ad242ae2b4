/* sandbox_config.c: the `sandbox:` section: the host-level settings of the daemon's sandbox pools and the limits
 * of the sandbox service (POST /v1/sandbox/runs and the agents' code_exec tool). Every setting needs a restart:
 * pools and their zygotes are made once per worker. */
#include "sandbox/sandbox_config.h"

#include <stddef.h>
#include <string.h>

#include "common/macros.h"
#include "common/str.h"
#include "sandbox/sbx_egress.h"

static const char *const cgroup_modes[] = {"auto", "required", "off", NULL};
_Static_assert(SBX_CGROUP_AUTO == 0 && SBX_CGROUP_REQUIRED == 1 && SBX_CGROUP_OFF == 2, "cgroup_modes order");

#define SVOFF(f) offsetof(struct config_sandbox_service, f)
static const struct cfg_field service_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = SVOFF(enabled), .def = "true", .flags = CFG_RESTART,
     .help = "serve POST /v1/sandbox/runs (and code execution for agents); false: 404"},
    {.key = "prewarm", .type = CFG_BOOL, .off = SVOFF(prewarm), .def = "false", .flags = CFG_RESTART,
     .help = "start each worker's zygote and warm children when the worker starts, not on its first run"},
    {.key = "warm", .type = CFG_INT, .off = SVOFF(warm), .min = 0, .max = 256, .def = "2", .flags = CFG_RESTART,
     .help = "sandbox children kept ready (namespaces made, set-up done) per worker"},
    {.key = "warm_python", .type = CFG_INT, .off = SVOFF(warm_python), .min = 0, .max = 256, .def = "1",
     .flags = CFG_RESTART,
     .help = "warm Python interpreters kept ready per worker besides `warm` (each used by one Python run, then "
             "gone); 0: Python runs start the interpreter cold"},
    {.key = "max_running", .type = CFG_INT, .off = SVOFF(max_running), .min = 1, .max = 1024, .def = "8",
     .flags = CFG_RESTART, .help = "runs going at once per worker; more wait in the queue"},
    {.key = "max_queued", .type = CFG_INT, .off = SVOFF(max_queued), .min = 0, .max = 100000, .def = "64",
     .flags = CFG_RESTART, .help = "runs waiting per worker; more get 429 sandbox_busy"},
    {.key = "max_code_bytes", .type = CFG_SIZE, .off = SVOFF(max_code_bytes), .min = 1, .max = 64LL << 20,
     .def = "1MiB", .flags = CFG_RESTART, .help = "largest `code` a request may carry (else 400)"},
    {.key = "max_stdin_bytes", .type = CFG_SIZE, .off = SVOFF(max_stdin_bytes), .min = 1, .max = 64LL << 20,
     .def = "8MiB", .flags = CFG_RESTART, .help = "largest stdin a request may carry (else 400)"},
    {.key = "max_files_bytes", .type = CFG_SIZE, .off = SVOFF(max_files_bytes), .min = 1, .max = 64LL << 20,
     .def = "16MiB", .flags = CFG_RESTART, .help = "all files of a request together (else 400)"},
    {.key = "output_files", .type = CFG_INT, .off = SVOFF(output_files), .min = 0, .max = 4096, .def = "64",
     .flags = CFG_RESTART,
     .help = "files a run left in /work returned with its result, at most (more: files_truncated); 0: none"},
    {.key = "output_files_bytes", .type = CFG_SIZE, .off = SVOFF(output_files_bytes), .min = 0, .max = 64LL << 20,
     .def = "1MiB", .flags = CFG_RESTART,
     .help = "content of the returned files together, at most (a file past it is left out: files_truncated)"},
    {.key = "timeout", .type = CFG_DURATION, .off = SVOFF(timeout_ms), .min = 1, .max = 86400000, .def = "10s",
     .flags = CFG_RESTART, .help = "wall-clock limit of a run that names none"},
    {.key = "max_timeout", .type = CFG_DURATION, .off = SVOFF(max_timeout_ms), .min = 1, .max = 86400000,
     .def = "60s", .flags = CFG_RESTART, .help = "the longest wall-clock limit a request may ask for (else 400)"},
    {.key = "memory", .type = CFG_SIZE, .off = SVOFF(memory_bytes), .min = 1 << 20, .max = 1LL << 40,
     .def = "256MiB", .flags = CFG_RESTART, .help = "memory limit of a run that names none"},
    {.key = "max_memory", .type = CFG_SIZE, .off = SVOFF(max_memory_bytes), .min = 1 << 20, .max = 1LL << 40,
     .def = "1GiB", .flags = CFG_RESTART, .help = "the most memory a request may ask for (else 400)"},
    {.key = "output_bytes", .type = CFG_SIZE, .off = SVOFF(output_bytes), .min = 0, .max = 256LL << 20,
     .def = "1MiB", .flags = CFG_RESTART,
     .help = "stdout and stderr kept of a run that names no cap; one byte more ends it (output_cap)"},
    {.key = "max_output_bytes", .type = CFG_SIZE, .off = SVOFF(max_output_bytes), .min = 1, .max = 256LL << 20,
     .def = "8MiB", .flags = CFG_RESTART, .help = "the largest stdout_max/stderr_max a request may ask for"},
    {.key = "max_pids", .type = CFG_INT, .off = SVOFF(max_pids), .min = 1, .max = 65536, .def = "256",
     .flags = CFG_RESTART, .help = "the most processes a request may ask for"},
};

static const struct cfg_schema service_schema = {
    .name = "sandbox.service", .fields = service_fields, .nfields = ARRAY_LEN(service_fields)};

#define EGOFF(f) offsetof(struct config_sandbox_egress, f)
static const struct cfg_field egress_fields[] = {
    {.key = "enabled", .type = CFG_BOOL, .off = EGOFF(enabled), .def = "false", .flags = CFG_RESTART,
     .help = "runs may ask for network \"egress\": out through a proxy that applies this policy; false: 400"},
    {.key = "allow_hosts", .type = CFG_STRLIST, .off = EGOFF(allow_hosts), .flags = CFG_RESTART,
     .help = "host names runs may reach: example.com, or *.example.com for any name under it; empty: any host"},
    {.key = "ports", .type = CFG_STRLIST, .off = EGOFF(ports), .def = "[80, 443]", .flags = CFG_RESTART,
     .help = "destination ports runs may reach"},
    {.key = "allow_private_networks", .type = CFG_BOOL, .off = EGOFF(allow_private_networks), .def = "false",
     .flags = CFG_RESTART,
     .help = "let runs reach private, loopback and link-local addresses too (an internal mirror); false: only "
             "public addresses, checked after DNS"},
    {.key = "max_bytes", .type = CFG_SIZE, .off = EGOFF(max_bytes), .min = 0, .max = 1LL << 40, .def = "256MiB",
     .flags = CFG_RESTART, .help = "bytes through the proxy per run, both ways; past it every connection is cut"},
    {.key = "max_connections", .type = CFG_INT, .off = EGOFF(max_connections), .min = 1, .max = 4096, .def = "32",
     .flags = CFG_RESTART, .help = "connections open at once per run (more: 503)"},
    {.key = "connect_timeout", .type = CFG_DURATION, .off = EGOFF(connect_timeout_ms), .min = 1, .max = 600000,
     .def = "10s", .flags = CFG_RESTART, .help = "resolving and connecting, per connection (then 504)"},
    {.key = "idle_timeout", .type = CFG_DURATION, .off = EGOFF(idle_timeout_ms), .min = 1, .max = 86400000,
     .def = "60s", .flags = CFG_RESTART, .help = "a connection with no byte either way for this long is closed"},
};

/* A port number, 1..65535, digits only. */
static int port_of(const char *s, uint16_t *out)
{
    uint64_t v;
    if (str_to_u64(str_from(s), &v) != 0 || v < 1 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* Ports are numbers 1..65535; host patterns what the proxy can match (sbx_egress_host_pattern_ok). */
static void egress_finish(struct cfg_ctx *ctx, void *obj, const char *path)
{
    const struct config_sandbox_egress *e = obj;
    uint16_t port;
    if (e->ports.n > SBX_SVC_EGRESS_PORTS_MAX)
        cfg_error_at(ctx, NULL, path, "ports: at most %d", SBX_SVC_EGRESS_PORTS_MAX);
    for (size_t i = 0; i < e->ports.n; i++)
        if (port_of(e->ports.v[i], &port) != 0)
            cfg_error_at(ctx, NULL, path, "ports: \"%s\" is not a port number (1-65535)", e->ports.v[i]);
    for (size_t i = 0; i < e->allow_hosts.n; i++)
        if (!sbx_egress_host_pattern_ok(e->allow_hosts.v[i]))
            cfg_error_at(ctx, NULL, path, "allow_hosts: \"%s\" is not a host name or *.name", e->allow_hosts.v[i]);
}

static const struct cfg_schema egress_schema = {.name = "sandbox.egress",
                                                .fields = egress_fields,
                                                .nfields = ARRAY_LEN(egress_fields),
                                                .finish = egress_finish};

#define SBOFF(f) offsetof(struct config_sandbox, f)
static const struct cfg_field sandbox_fields[] = {
    {.key = "uid_base", .type = CFG_INT, .off = SBOFF(uid_base), .min = 1, .max = 4000000000LL,
     .def = "1000000000", .flags = CFG_RESTART,
     .help = "first host uid runs map to (each live run has its own; inside a user-namespaced pod use e.g. 10000)"},
    {.key = "uid_count", .type = CFG_INT, .off = SBOFF(uid_count), .min = 1, .max = 65536, .def = "1024",
     .flags = CFG_RESTART, .help = "host uids available to runs, split between the workers"},
    {.key = "cgroup", .type = CFG_ENUM, .off = SBOFF(cgroup), .enums = cgroup_modes, .def = "auto",
     .flags = CFG_RESTART,
     .help = "auto: cgroup limits per run when the host offers them; required: refuse runs without; off: rlimits only"},
    {.key = "cgroup_parent", .type = CFG_STRING, .off = SBOFF(cgroup_parent), .def = "", .flags = CFG_RESTART,
     .help = "cgroup (from the hierarchy root) to make run groups under; empty: <agentd's cgroup>/agentd-sandbox"},
    {.key = "service", .type = CFG_MAP, .off = SBOFF(service), .sub = &service_schema},
    {.key = "egress", .type = CFG_MAP, .off = SBOFF(egress), .sub = &egress_schema},
};

const struct cfg_schema sandbox_config_schema = {
    .name = "sandbox", .fields = sandbox_fields, .nfields = ARRAY_LEN(sandbox_fields)};

void sandbox_config_service_opts(const struct config *cfg, unsigned loops, struct sbx_service_opts *o)
{
    const struct config_sandbox *s = &cfg->sandbox;
    const struct config_sandbox_service *v = &s->service;
    sbx_service_opts_init(o);
    o->warm = (unsigned)v->warm;
    o->cfg.warm_python = (unsigned)v->warm_python;
    o->max_running = (unsigned)v->max_running;
    o->max_queued = (unsigned)v->max_queued;
    o->loops = loops;
    o->cfg.uid_base = (uint32_t)s->uid_base;
    o->cfg.uid_count = (uint32_t)s->uid_count;
    o->cfg.cgroup_mode = (enum sbx_cgroup_mode)s->cgroup;
    o->cfg.cgroup_parent = s->cgroup_parent && s->cgroup_parent[0] ? s->cgroup_parent : NULL;
    o->max_code_bytes = (size_t)v->max_code_bytes;
    o->max_stdin_bytes = (size_t)v->max_stdin_bytes;
    o->max_files_bytes = (size_t)v->max_files_bytes;
    o->output_files = (uint32_t)v->output_files;
    o->output_files_bytes = (uint64_t)v->output_files_bytes;
    o->defaults.wall_ms = (uint64_t)v->timeout_ms;
    o->defaults.memory_bytes = (uint64_t)v->memory_bytes;
    o->defaults.stdout_max = o->defaults.stderr_max = (uint64_t)v->output_bytes;
    o->ceiling.wall_ms = (uint64_t)v->max_timeout_ms;
    o->ceiling.memory_bytes = (uint64_t)v->max_memory_bytes;
    o->ceiling.stdout_max = o->ceiling.stderr_max = (uint64_t)v->max_output_bytes;
    o->ceiling.pids = (uint32_t)v->max_pids;
    const struct config_sandbox_egress *e = &s->egress;
    o->egress_enabled = e->enabled;
    o->egress.allow_hosts = (const char *const *)e->allow_hosts.v;
    o->egress.n_allow_hosts = e->allow_hosts.n;
    for (size_t i = 0; i < e->ports.n && i < SBX_SVC_EGRESS_PORTS_MAX; i++) /* checked at load (egress_finish) */
        if (port_of(e->ports.v[i], &o->egress_ports[o->egress.n_ports]) == 0)
            o->egress.n_ports++;
    o->egress.ports = o->egress_ports;
    o->egress.allow_private_networks = e->allow_private_networks;
    o->egress.max_bytes = (uint64_t)e->max_bytes;
    o->egress.max_connections = (uint32_t)e->max_connections;
    o->egress.connect_timeout_ms = (uint32_t)e->connect_timeout_ms;
    o->egress.idle_timeout_ms = (uint32_t)e->idle_timeout_ms;
}
