/* sbx_runner.h: phase B of a sandbox child (sbx_contain.h), the steps that need the run: receive it, write its
 * files, its pipes on 0-2, argv and the environment, close every other fd, the rlimits, execve. What no run decides
 * (the current directory /work, its fd for the engine, the fixed rlimits, 0-2 freed) is done before READY.
 *
 * A warm child runs them in a small program of its own, the runner (agentd-sandbox-runner, built from
 * sbx_runner_main.c, static where the toolchain allows, and carried inside agentd: sbx_runner_image), which it
 * execs once phase A is done, before any run exists. The program a run starts then replaces a small process, not
 * a copy of the engine's: its execve is about 0.4 ms faster on a 2-vCPU VM, and phase B no longer copies the
 * engine's pages as it writes them. Where the runner cannot be exec'd, the child runs the same steps itself (sbx_runner_main). Everything
 * here is safe in a child of the (single-threaded) engine, uses only libc, and never
 * returns to the caller: the run's program replaces the process, or the error goes back on the control
 * socket and the process _exits. */
#ifndef AGENTD_SBX_RUNNER_H
#define AGENTD_SBX_RUNNER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/sbx_spec.h"
#include "sandbox/sbx_wire.h"

/* Exit status of a child whose set-up failed (the ERROR message says why). */
#define SBX_CHILD_SETUP_FAILED 121

/* The runner's file descriptors: the control socket, and (in the child, until the exec) the runner's image. */
#define SBX_RUNNER_CTL_FD 3
#define SBX_RUNNER_IMAGE_FD 4
/* argv[1] of the runner: whether a cgroup limits the run's memory ("1") or RLIMIT_DATA must ("0"). */
#define SBX_RUNNER_NAME "agentd-sandbox-runner"

/* How a step of a sandbox child fails: "<step>: <reason>" goes back on the control socket, then _exit. */
struct sbx_step_ctx {
    int ctl;
    char err[512]; /* the failing step's reason */
};
int sbx_step_vfail(struct sbx_step_ctx *c, const char *fmt, va_list ap);
int sbx_step_fail(struct sbx_step_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbx_step_die(struct sbx_step_ctx *c, const char *step) __attribute__((noreturn));
void sbx_step_send(int ctl, enum sbx_msg_type type, const char *text);
/* A message of type with no body and fd attached (HOLD, WORKDIR, EGRESS): 0 or -errno (sbx_wire_send). */
int sbx_step_send_fd(int ctl, enum sbx_msg_type type, int fd);

/* Phase B on control socket ctl: says READY, waits for RUN, and execs the run's program. Never returns. */
void sbx_runner_main(int ctl, bool cgroup_memory) __attribute__((noreturn));

/* One resource limit of a run, as phase B sets it (name: "CPU", "AS", ...). */
struct sbx_rlimit {
    int res;
    const char *name;
    uint64_t soft, hard;
    bool fixed; /* the same for every run: a warm runner sets it before its run exists */
};
#define SBX_RLIMITS_MAX 16
/* The rlimits of a run with limits l, in the order they are set; returns how many (<= SBX_RLIMITS_MAX). */
size_t sbx_runner_rlimits(const struct sbx_limits *l, bool cgroup_memory, struct sbx_rlimit *out);

/* The environment every run starts from (the spec adds to it or replaces entries), NULL-terminated. */
extern const char *const sbx_runner_base_env[];

/* The interpreter of a language (argv[0]), NULL for NONE. */
const char *sbx_runner_interpreter(int lang);

/* The runner program, built with agentd and linked into it (empty when the build has none). */
extern const unsigned char sbx_runner_image[];
extern const unsigned char sbx_runner_image_end[];

#endif
