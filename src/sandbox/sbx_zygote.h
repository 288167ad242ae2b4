/* sbx_zygote.h: the zygote, a single-threaded process that runs the sandbox engine for a multi-threaded parent.
 *
 * Forking a multi-threaded process leaves the child with whatever locks other threads held, so the daemon
 * never forks sandboxes itself: sbx_pool_new(zygote=true) execs /proc/self/exe as
 * `agentd sandbox zygote --fd 3 ...` with one end of a SOCK_SEQPACKET socketpair on fd 3. The zygote builds the
 * engine (cgroup parent, seccomp BPF, mount plan), warms children, and serves RUN/CANCEL messages; stdio pipe
 * ends arrive with SCM_RIGHTS and go straight on to the child. It dies with its parent (PR_SET_PDEATHSIG, and
 * EOF on the socket), killing and reaping its children and removing their cgroups first. */
#ifndef AGENTD_SBX_ZYGOTE_H
#define AGENTD_SBX_ZYGOTE_H

/* argv[0] is "zygote". Returns the exit code. */
int sbx_zygote_main(int argc, char **argv);

#endif
