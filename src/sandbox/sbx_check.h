/* sbx_check.h: `agentd sandbox check`: which isolation features this host offers, and which are in force.
 *
 * "available" is probed on the host (a throwaway clone per namespace type, the seccomp and pidfd syscalls, the
 * cgroup hierarchies). "in_force" is observed from inside a real sandbox run: the run reads its own
 * /proc/self/status and /proc/self/ns/<type> and the check compares them with the host's, so a feature is reported in
 * force only when the sandboxed program actually sees it. Tests use this output to skip, by name and with the
 * reason, what a host cannot do. */
#ifndef AGENTD_SBX_CHECK_H
#define AGENTD_SBX_CHECK_H

#include "common/buf.h"
#include "sandbox/sbx.h"

/* Appends the report (one JSON object) to out. Returns 0 when sandboxed runs work here, else 1. */
int sbx_check_report(const struct sbx_pool_opts *opts, struct buf *out);

#endif
