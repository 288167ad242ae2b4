/* sbx_engine.h: creates sandbox children and watches them to the end, on a single-threaded libuv loop.
 *
 * The engine is what forks, so it must live in a process with one thread: the zygote (sbx_zygote.c, a fresh
 * exec of agentd that the daemon talks to over a socket) or a single-threaded program such as the CLI.
 *
 * A child is cloned into new user, PID, mount, network, IPC and UTS namespaces (clone3 with CLONE_PIDFD, and
 * CLONE_INTO_CGROUP on cgroup v2), gets its uid/gid map (uid 1000 inside = a host uid of its own from the
 * configured range, never root) and its own cgroup, then sets itself up (sbx_contain.c phase A) and says
 * READY. Up to `warm` such children wait in their namespaces; a run takes one, its cgroup gets the run's
 * limits, and the RUN message (spec + stdio fds) makes it finish set-up and exec, so a warm run costs one
 * message, the per-run steps and the execve. Without a ready child a run starts one on the spot (cold), through
 * the same path. Exits are seen on the pidfd; the wall-clock deadline and cancellations SIGKILL the child,
 * which as PID 1 of its namespace takes the whole tree with it (the cgroup is killed too, for good measure). */
#ifndef AGENTD_SBX_ENGINE_H
#define AGENTD_SBX_ENGINE_H

#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"
#include "sandbox/sbx_wire.h"

struct sbx_engine;


struct sbx_engine_hooks {
    /* The run is over; called exactly once per submitted id, also for refusals and on close. work_fd is the
     * run's /work (with spec.collect_files) or -1; the hook owns it and must close it. */
    void (*on_result)(void *ud, uint64_t id, const struct sbx_exit *e, int work_fd);
    /* The number of ready children changed. May be NULL. */
    void (*on_ready)(void *ud, unsigned ready);
    /* Direct runs (all three NULL: none). A plain child is ready and reserved for the client (token names it in
     * sbx_engine_attach_direct): o says what it was made for, ctl_fd (owned by the hook) is a copy of the engine's end of its control socket, on which the
     * client may send it one RUN itself, after telling the engine with sbx_engine_attach_direct. The engine then
     * gives it no other run. */
    void (*on_offer)(void *ud, uint64_t token, const struct sbx_wire_offer *o, int ctl_fd);
    /* An offered child is gone (it died unused): the client must forget it. */
    void (*on_withdraw)(void *ud, uint64_t token);
    /* Before deciding an offered child died unused, the engine asks the client for what it has sent and not yet
     * been read (an sbx_engine_attach_direct for it may be waiting in a socket). */
    void (*sync)(void *ud);
    /* Run id asked for network "egress" and its child is running: listen_fd (owned by the hook) is the socket the
     * proxy serves until the run's result (sbx_egress.h). Before on_result, once per such run. May be NULL (the fd is
     * closed: the run's connections to the proxy are refused). */
    void (*on_egress)(void *ud, uint64_t id, int listen_fd);
};

/* For a process that only serves runs (the zygote), before sbx_engine_new: puts it in SCHED_BATCH, so that waking it
 * (a direct run's bookkeeping, the next warm child, the reaping) never preempts the running program or the client
 * on its CPU; its children go back to SCHED_OTHER, the policy the program would have had. A policy chosen by whoever
 * started us (not SCHED_OTHER) is left alone, and inherited. 0, or -1 with errno. */
int sbx_engine_background(void);
/* Creates the engine: checks the process is single-threaded, prepares cgroups per cfg->cgroup_mode, builds the
 * mount plan and seccomp filter, and starts warming `warm` children. 0 or -1 with err. Free with
 * sbx_engine_close. */
int sbx_engine_new(uv_loop_t *loop, unsigned warm, const struct sbx_config *cfg, const struct sbx_engine_hooks *hooks,
                   void *ud, struct sbx_engine **out, struct buf *err);
/* Starts run id with the serialized spec (copied). Takes ownership of fds (stdin read end, stdout and stderr
 * write ends): they are closed here whatever happens. The result arrives through on_result (even when the spec
 * is refused at once). */
void sbx_engine_submit(struct sbx_engine *eng, uint64_t id, const void *spec, size_t len, int fds[3]);
/* Run id was sent by the client itself to the offered child token (on_offer): attaches it there, with the limits of
 * spec (the RUN it sent). If that child is no longer available, run id ends with an error result at once (the
 * client, whose send then failed, has started it under another id). */
void sbx_engine_attach_direct(struct sbx_engine *eng, uint64_t id, uint64_t token, const void *spec, size_t len);
/* Ends run id at once with an ERROR result saying why (a RUN the client sent that cannot be started). */
void sbx_engine_fail(struct sbx_engine *eng, uint64_t id, const char *why);
/* Kills run id (reason OUTPUT_CAP or KILLED is reported, unless it had ended already). Unknown ids: ignored. */
void sbx_engine_cancel(struct sbx_engine *eng, uint64_t id, enum sbx_reason reason);
unsigned sbx_engine_ready(const struct sbx_engine *eng);
/* "cgroup v1 (memory pids cpu cpuacct)", "no cgroup: <why>" ... and the uid mapping, for logs and check. */
void sbx_engine_describe(const struct sbx_engine *eng, struct buf *out);
/* Which cgroup version is in force: 0, 1 or 2. */
int sbx_engine_cgroup_version(const struct sbx_engine *eng);
/* SIGKILLs and reaps every child (running ones report KILLED), removes their cgroups, closes the handles and
 * frees the engine once they are closed (run the loop to let that happen). */
void sbx_engine_close(struct sbx_engine *eng);

#endif
