/* sbx_contain.h: what a sandbox child does between clone() and execve(), as an ordered list of small steps.
 *
 * The engine clones the child into new user, PID, mount, network, IPC and UTS namespaces, writes its uid/gid
 * maps and cgroup, then lets it go. The child runs in two phases (nsjail's containProc, split so a warm pool
 * can stop in the middle). Everything that needs privilege, and everything slow, is in phase A, which a warm
 * child has done before any run exists; phase B runs without any privilege left.
 *
 *   phase A (no spec needed)
 *     signals        default dispositions, nothing blocked, stdio on /dev/null, every other fd closed
 *     die_with_parent PR_SET_PDEATHSIG(SIGKILL); waits for MAPPED (EOF: the engine is gone, exit)
 *     ids            setresgid/setresuid to 1000 inside (host uid_base+slot), caps kept for set-up only;
 *                    PDEATHSIG armed again (a uid change clears it)
 *     cgroup_ns      unshare(CLONE_NEWCGROUP) now that the run's cgroup is joined
 *     mount_private  everything private (nothing propagates to the host), a small tmpfs for the new root
 *     binds          read-only, nosuid, nodev binds of /usr, /bin, /lib*, and the few /etc files interpreters
 *                    read; nothing else of the host (no /home, /root, /var, /run, /sys, rest of /etc)
 *     etc            generated passwd, group, hosts, hostname
 *     dev            tmpfs /dev: null, zero, full, random, urandom, fd links; read-only
 *     proc           a fresh /proc of the new PID namespace, /proc/sys read-only
 *     scratch        size-capped tmpfs /tmp and /work (the sizes this child was made for)
 *     pivot_root     into the new root, old root detached, new root read-only
 *     hostname       "sandbox"
 *     net            network "egress" only: loopback up, a socket listening on 127.0.0.1:3128 sent to the engine
 *                    (SBX_MSG_EGRESS) and closed here: the pool's proxy serves it (sbx_egress.h)
 *     setsid         new session: no controlling terminal to inject into (TIOCSTI); here, not per run, since with
 *                    autogroup scheduling it makes a task group and gives the CPU away
 *     no_new_privs   setuid/file caps inert from here on
 *     drop_caps      bounding and ambient sets cleared, securebits locked, capset to nothing, verified
 *     seccomp        the pre-compiled filter of its network mode
 *                    -> execveat the runner (sbx_runner.h: a small program of its own, from the engine's memfd on
 *                       fd 4, the control socket kept on fd 3, nothing else open), which runs phase B: says READY,
 *                       waits for RUN. If that exec fails, this process runs phase B itself.
 *   (a warm Python child instead: py_boot, i.e. /work as cwd, a pipe on 0-2, the control socket kept on
 *    fd 3, all else closed, the clean environment; then execve python3 -c BOOTSTRAP, which says READY itself and
 *    does the rest of phase B in the interpreter: sbx_pywarm.h)
 *   phase B (per run, unprivileged: sbx_runner.c)
 *     receive        the spec, decoded from the RUN message (inline or memfd), and the three stdio fds
 *     files          written into /work (O_EXCL|O_NOFOLLOW under a dirfd), the snippet as main.<ext>
 *     stdio          the pipe ends on 0, 1, 2
 *     exec_args      argv (interpreter + snippet), the program looked up in PATH inside, a clean environment
 *     close_fds      all but 0-2 and the control socket (close-on-exec)
 *     rlimits        CPU, NPROC, NOFILE, FSIZE, CORE=0, STACK, MEMLOCK, MSGQUEUE, NICE, RTPRIO, SIGPENDING, AS,
 *                    and DATA = the memory limit when no cgroup limits memory
 *     execve         the control socket closes on success; on failure the error goes back on it
 *
 * Any failing step reports "<step>: <reason>" on the control socket and _exits: nothing runs half-contained. */
#ifndef AGENTD_SBX_CONTAIN_H
#define AGENTD_SBX_CONTAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "sandbox/sbx_seccomp.h"

#define SBX_IN_UID 1000
#define SBX_IN_GID 1000
#define SBX_HOSTNAME "sandbox"

enum sbx_bind_kind { SBX_BIND_DIR, SBX_BIND_FILE, SBX_BIND_SYMLINK };

struct sbx_bind {
    char *path;   /* host path, also the path inside */
    char *target; /* SYMLINK: the link text, recreated inside */
    enum sbx_bind_kind kind;
};

/* Computed once by the engine before any clone; children only read it (their copy of the memory). */
struct sbx_contain_plan {
    struct sbx_bind *binds;
    size_t nbinds;
    struct sbx_seccomp_prog seccomp[SBX_NET__COUNT]; /* one filter per network mode */
    uint64_t work_bytes, tmp_bytes;  /* sizes of warm children's /work and /tmp (the default limits) */
    int last_cap;
};

/* Looks at the host (which of /bin, /lib64, /etc/python3*, ... exist and how) and compiles the seccomp
 * filter. 0, or -1 with the reason in err. */
int sbx_contain_plan_init(struct sbx_contain_plan *plan, struct buf *err);
void sbx_contain_plan_free(struct sbx_contain_plan *plan);

/* What differs between children of one plan. */
struct sbx_contain_args {
    uint64_t work_bytes, tmp_bytes; /* sizes of /work and /tmp */
    bool cgroup_memory;             /* a cgroup limits the run's memory; if not, RLIMIT_DATA does (per process) */
    const char *const *python_argv; /* a warm interpreter: after phase A, exec this (sbx_pywarm_argv, python3
                                     * with the bootstrap) instead of waiting for RUN here; NULL: a plain child */
    int runner_fd;                  /* a plain child: the runner's image (sbx_runner.h) to exec for phase B, or -1 */
    enum sbx_net net;               /* the network it is made for (its filter; egress: loopback up, the listener) */
};

/* The child's whole life after clone(); ctl is its end of the control socket. Never returns. */
void sbx_contain_child(const struct sbx_contain_plan *plan, const struct sbx_contain_args *args, int ctl)
    __attribute__((noreturn));

#endif
