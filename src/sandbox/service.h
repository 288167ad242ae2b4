/* service.h: the sandbox as a service inside the daemon. One warm pool (a zygote, sbx.h) per worker loop, runs
 * admitted against per-loop limits (running at once, then a bounded queue), and the request format of
 * `POST /v1/sandbox/runs` (docs/sandbox-service.md). The HTTP route (api/sandbox_http.c) and the agents'
 * `code_exec` tool both submit through here, so both get the same pool, limits, ceilings and metrics.
 *
 *   // process-wide, main thread, before the worker loops start (the daemon does this from `sandbox:` config)
 *   struct sbx_service_opts o; sbx_service_opts_init(&o); o.warm = 2; sbx_service_start(&o, &err);
 *   // on a worker loop's thread: its pool starts warming now (else on the first submit)
 *   sbx_service_loop_open(loop, &err);
 *   // anywhere on that thread, any number of times
 *   struct sbx_spec spec; sbx_service_spec_init(&spec);     // the service's default limits
 *   spec.lang = SBX_LANG_PYTHON; spec.code = src; spec.code_len = n; spec.limits.wall_ms = 5000;
 *   struct sbx_service_job *job;
 *   int rc = sbx_service_submit(loop, &spec, on_done, ud, &job, &err); // 0, or SBX_SVC_* < 0 (cb never called)
 *   sbx_service_cancel(job);                                // optional; on_done still fires once (KILLED)
 *   // on_done(job, &result, ud): exactly once, on the loop; result freed after it returns (buf_steal to keep)
 *   sbx_service_loop_close(loop);  // when the loop stops: queued and running jobs end KILLED, zygote stopped
 *   sbx_service_stop();            // main thread, after every loop closed
 *
 * Never blocks the loop: runs are started by the zygote (a separate single-threaded process) and watched on
 * pipes and timers of the loop. The spec is copied at submit (queued jobs keep their own copy). */
#ifndef AGENTD_SBX_SERVICE_H
#define AGENTD_SBX_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "sandbox/sbx_egress.h"
#include "sandbox/sbx_json.h"
#include "sandbox/sbx_spec.h"

#define SBX_SVC_EGRESS_PORTS_MAX 64

struct sbx_service_opts {
    unsigned warm;              /* children kept ready per worker loop (each loop has its own zygote) */
    unsigned max_running;       /* runs going at once per loop; more wait in the queue */
    unsigned max_queued;        /* runs waiting per loop; more are refused with SBX_SVC_BUSY */
    unsigned loops;             /* loops expected to open (the daemon's workers): the uid range is split between them
                                 * so that no two runs of the process share a host uid (0 or 1: one slice) */
    const char *exe;            /* the agentd binary for the zygote; NULL: /proc/self/exe (copied) */
    struct sbx_config cfg;      /* uid range, cgroup mode and parent (cgroup_parent copied) */
    struct sbx_limits defaults; /* limits of a request that names none; see sbx_service_spec_init */
    struct sbx_limits ceiling;  /* the most a request may ask for; 0 = the sandbox's own maxima */
    size_t max_code_bytes;      /* largest `code` accepted */
    size_t max_stdin_bytes;     /* largest stdin accepted */
    size_t max_files_bytes;     /* all files together */
    uint32_t output_files;      /* output files returned per run, at most (0: none are collected) */
    uint64_t output_files_bytes; /* their content together, at most */
    bool egress_enabled;         /* runs may ask for network "egress" (else 400) */
    struct sbx_egress_policy egress; /* its policy; allow_hosts and ports copied at start */
    uint16_t egress_ports[SBX_SVC_EGRESS_PORTS_MAX]; /* storage egress.ports may point into */
};

/* Errors of sbx_service_submit and sbx_service_parse_request (err has the sentence). */
enum {
    SBX_SVC_OK = 0,
    SBX_SVC_INVALID = -1,     /* the spec or request is refused (400) */
    SBX_SVC_BUSY = -2,        /* this loop's queue is full (429) */
    SBX_SVC_UNAVAILABLE = -3, /* the service is not started, or the pool could not be made (503) */
};

struct sbx_service_job;
/* Exactly once per accepted job, on its loop. res and its buffers are freed after the callback returns (steal
 * them with buf_steal to keep). queue_us: time spent waiting for a free slot. The job is dead afterwards. */
typedef void sbx_service_done_fn(struct sbx_service_job *job, struct sbx_result *res, uint64_t queue_us, void *ud);

void sbx_service_opts_init(struct sbx_service_opts *o);
/* Process-wide. 0, or -1 with err. Idempotent per process until sbx_service_stop. */
int sbx_service_start(const struct sbx_service_opts *o, struct buf *err);
void sbx_service_stop(void);
bool sbx_service_started(void);
/* The options in force (NULL before start). */
const struct sbx_service_opts *sbx_service_options(void);

/* On loop's own thread: creates this loop's pool (spawns its zygote, starts warming). SBX_SVC_OK or an error.
 * A thread serves one loop at a time. */
int sbx_service_loop_open(uv_loop_t *loop, struct buf *err);
/* On loop's thread: every job of the loop ends (queued and running: KILLED, callbacks fire), the zygote stops.
 * Run the loop afterwards to let the handles close. No-op for a loop that never opened. */
void sbx_service_loop_close(uv_loop_t *loop);

/* sbx_spec_init with the service's default limits (the sandbox's own before start). */
void sbx_service_spec_init(struct sbx_spec *spec);
/* Checks the spec against the ceilings, then starts it (or queues it). *out may be NULL. */
int sbx_service_submit(uv_loop_t *loop, const struct sbx_spec *spec, sbx_service_done_fn *cb, void *ud,
                       struct sbx_service_job **out, struct buf *err);
/* Kills a running job or drops a queued one (its place in the queue is free at once); the callback still fires,
 * once, with KILLED (a queued job's from the loop, never from inside this call; a running job's normally from the
 * loop too, but from inside this call if the zygote is found dead while sending). Idempotent until the callback. */
void sbx_service_cancel(struct sbx_service_job *job);

struct sbx_service_stats {
    unsigned running, queued, ready; /* this loop's */
};
void sbx_service_stats(uv_loop_t *loop, struct sbx_service_stats *st);

/* The body of POST /v1/sandbox/runs (docs/sandbox-service.md):
 *   {"language": "python"|"sh"|"node", "code": "..."}, or {"language": ..., "args": ["-c", "pass"]} (the
 *   interpreter's arguments instead of a snippet), or {"command": ["/bin/true", ...]}
 *   + "stdin" | "stdin_base64", "files": [{"name","content"|"content_base64","mode"}], "env": {...},
 *     "limits": {"timeout_ms","cpu_ms","memory_mb","pids","stdout_max","stderr_max",...}, "timeout_s", "network"
 * into out (free with sbx_json_spec_free, also after failure), defaults from the service, checked against its
 * ceilings. SBX_SVC_OK, or SBX_SVC_INVALID with the sentence in err and the offending field in param ("" when
 * none: the body as a whole). */
int sbx_service_parse_request(const char *body, size_t len, struct sbx_json_spec *out, struct buf *err, char *param,
                              size_t param_cap);

/* The other way round: spec as a request body (what `agentd sandbox run --daemon URL` sends): limits only where
 * they differ from the sandbox's defaults, bytes of stdin and files in base64. -1 with err when the spec cannot
 * be said in JSON (a NUL byte in the code). */
int sbx_service_request_json(const struct sbx_spec *spec, struct buf *out, struct buf *err);

#endif
