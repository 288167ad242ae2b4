/* sbx_seccomp.h: the syscall filter of sandboxed programs (libseccomp, compiled once per pool).
 *
 * A deny-list with default ALLOW, like Docker's default profile, aimed at what sandboxes are escaped through
 * and at kernel attack surface few programs need: ptrace and cross-process memory access; mount and the new
 * mount API, pivot_root, chroot; keyctl/add_key/request_key; bpf; perf_event_open; userfaultfd; io_uring;
 * kexec and module loading; unshare, setns and clone with namespace flags (clone3 answers ENOSYS, since its
 * flags cannot be inspected, so libc falls back to clone); personality flags that weaken ASLR or make data
 * executable; open_by_handle_at (the "shocker" escape); TIOCSTI/TIOCLINUX terminal injection; clock, swap,
 * reboot, quota, acct, syslog; and, with the network off, every socket family but AF_UNIX. Denied calls fail
 * with EPERM (the program sees an error it can report); a syscall of another ABI (i386 int 0x80, x32) kills
 * the process. The compiled BPF is loaded in the child with seccomp(2), after no_new_privs, as its last step
 * before execve. */
#ifndef AGENTD_SBX_SECCOMP_H
#define AGENTD_SBX_SECCOMP_H

#include <linux/filter.h>
#include <stddef.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

struct sbx_seccomp_prog {
    struct sock_filter *insns;
    unsigned short len;
};

/* Compiles the filter for a network mode; 0, or -1 with the reason in err. Free with sbx_seccomp_free. */
int sbx_seccomp_build(enum sbx_net net, struct sbx_seccomp_prog *out, struct buf *err);
void sbx_seccomp_free(struct sbx_seccomp_prog *p);
/* Installs the filter on the calling thread (no_new_privs must be set). 0 or -1 with errno. Async-signal-safe:
 * used in a sandbox child between clone and execve. */
/* With listener non-NULL, also asks for the filter's notification fd (SECCOMP_FILTER_FLAG_NEW_LISTENER) and stores it
 * there, or -1 where the kernel cannot give one (then the filter is loaded without). Nothing of the filter sends
 * notifications: the fd is only a reference that keeps the filter alive, so that whoever holds it, not the exiting
 * process, frees the filter (the sandbox engine gives it to its reaper). */
int sbx_seccomp_load(const struct sbx_seccomp_prog *p, int *listener);

/* The syscalls denied outright, by name, for `sandbox check` and the tests. NULL-terminated. */
extern const char *const sbx_seccomp_denied[];

#endif
