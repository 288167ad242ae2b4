/* sbx.h: run agent-written code so that nothing it does reaches the host, the network, other runs or agentd.
 *
 * A run is one program (or a snippet in a named language) started in fresh user, PID, mount, network, IPC, UTS
 * and cgroup namespaces, on a minimal read-only root with a size-capped tmpfs work dir, unprivileged, without
 * capabilities, under no_new_privs, a seccomp filter, rlimits and cgroup limits, and a wall-clock deadline that
 * kills the whole process tree. docs/sandbox.md has the layering and what is not isolated.
 *
 * Runs are asynchronous on a libuv loop: sbx_run_start() returns at once and the callback gets the result
 * (exit code or signal, why it ended, wall/CPU time, peak memory, capped stdout/stderr). The processes are
 * created by a *pool*: either a zygote process (a fresh exec of agentd, single-threaded, that keeps
 * pre-forked children ready in their namespaces; required in a multi-threaded process such as the daemon) or,
 * in a single-threaded program such as the CLI, by the calling process itself.
 *
 *   struct sbx_pool_opts po; sbx_pool_opts_init(&po); po.zygote = true; po.warm = 4;
 *   struct sbx_pool *pool; sbx_pool_new(loop, &po, &pool);
 *   struct sbx_spec spec; sbx_spec_init(&spec); spec.lang = SBX_LANG_PYTHON; spec.code = "print(1)"; ...
 *   sbx_run_start(pool, &spec, on_done, ud, &run);      // on_done(run, &result, ud) later, exactly once
 *   ...
 *   sbx_pool_close(pool, on_closed, ud);
 *
 * A pool belongs to the loop it was created on and is used from that loop's thread only; a daemon with one loop
 * per worker gives each worker its own pool (and so its own zygote). The process must ignore SIGPIPE (agentd and
 * the CLI do): stdin is written to a pipe the program may close. A zygote that dies is replaced by the next run. */
#ifndef AGENTD_SBX_H
#define AGENTD_SBX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

struct sbx_pool_opts {
    bool zygote;     /* start runs from a zygote process (mandatory once the process has threads) */
    const char *exe; /* the agentd binary for the zygote; NULL means /proc/self/exe */
    unsigned warm;   /* children kept ready in their namespaces (0: each run starts cold) */
    struct sbx_config cfg;
    /* The policy of runs with network "egress" (sbx_egress.h); NULL: such runs are refused. Must outlive the pool. */
    const struct sbx_egress_policy *egress;
};

struct sbx_pool;
struct sbx_run;

/* Called exactly once per run, on the loop. res and its buffers belong to the run and are freed after the
 * callback returns; steal them with buf_steal() to keep them. The run pointer is dead after the callback. */
typedef void sbx_done_fn(struct sbx_run *run, struct sbx_result *res, void *ud);
typedef void sbx_pool_closed_fn(void *ud);

void sbx_pool_opts_init(struct sbx_pool_opts *opts);

/* Creates a pool on loop. With zygote, spawns it (the first run may wait for it; sbx_pool_close frees it).
 * Without, checks that the calling process is single-threaded and does the host set-up (cgroup parent,
 * seccomp compilation) in place. Returns 0, or -1 with the reason in err (may be NULL). */
int sbx_pool_new(uv_loop_t *loop, const struct sbx_pool_opts *opts, struct sbx_pool **out, struct buf *err);
/* Kills every run still going (their callbacks fire with KILLED), stops the zygote and frees the pool; cb (may be
 * NULL) fires once everything is closed and the pool is gone. No sbx_run_start after this. */
void sbx_pool_close(struct sbx_pool *pool, sbx_pool_closed_fn *cb, void *ud);
/* Number of children ready to start a run at once (for tests and metrics). */
unsigned sbx_pool_ready(const struct sbx_pool *pool);

/* Starts a run. 0 and *out set (out may be NULL); -1 with err filled when the spec is refused or the pool is
 * closing, in which case cb is never called. */
int sbx_run_start(struct sbx_pool *pool, const struct sbx_spec *spec, sbx_done_fn *cb, void *ud, struct sbx_run **out,
                  struct buf *err);
/* Kills the run's whole process tree; the callback still fires, with KILLED (unless it had already ended). */
void sbx_run_cancel(struct sbx_run *run);
/* Whether the run went straight to a warm child the zygote had offered (a direct run), not through the zygote. */
bool sbx_run_direct(const struct sbx_run *run);

/* Convenience for single-shot callers (the CLI): a private loop and pool, one run, result in *res
 * (sbx_result_free it). opts NULL means an in-process pool with no warm children. */
int sbx_run_sync(const struct sbx_pool_opts *opts, const struct sbx_spec *spec, struct sbx_result *res,
                 struct buf *err);


#endif
