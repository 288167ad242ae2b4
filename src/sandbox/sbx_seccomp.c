#include "sandbox/sbx_seccomp.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/alloc.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

const char *const sbx_seccomp_denied[] = {
    /* another process's memory and fds */
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    /* the file system tree */
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "name_to_handle_at",
    "open_by_handle_at",
    /* namespaces */
    "unshare",
    "setns",
    /* kernel attack surface few programs need */
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    "lookup_dcookie",
    "modify_ldt",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
    /* the machine itself */
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "vhangup",
    "uselib",
    "sethostname",
    "setdomainname",
    "nfsservctl",
    NULL,
};

/* personality() bits that weaken the address space; the call is refused when any is set. The query
 * personality(0xffffffff) has them all set and is refused too: no interpreter we run needs it. */
static const unsigned long personality_bad[] = {
    READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO, ADDR_COMPAT_LAYOUT, ADDR_LIMIT_3GB, ADDR_LIMIT_32BIT,
};

static const unsigned long clone_ns_flags[] = {
    CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

static struct scmp_arg_cmp cmp(unsigned arg, enum scmp_compare op, scmp_datum_t a, scmp_datum_t b)
{
    struct scmp_arg_cmp c = {.arg = arg, .op = op, .datum_a = a, .datum_b = b};
    return c;
}

static int add(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned n, const struct scmp_arg_cmp *cmp,
               const char *what, struct buf *err)
{
    int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (rc < 0) {
        (void)buf_printf(err, "seccomp rule %s: %s", what, strerror(-rc));
        return -1;
    }
    return 0;
}

int sbx_seccomp_build(enum sbx_net net, struct sbx_seccomp_prog *out, struct buf *err)
{
    int rc = -1, mfd = -1;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    memset(out, 0, sizeof(*out));
    if (ctx == NULL) {
        (void)buf_printf(err, "seccomp_init failed");
        goto out;
    }
    /* Another ABI's syscall numbers mean other syscalls: kill rather than let them through. */
    if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0) {
        (void)buf_printf(err, "seccomp bad-arch action");
        goto out;
    }
    for (const char *const *name = sbx_seccomp_denied; *name; name++) {
        int nr = seccomp_syscall_resolve_name(*name);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a syscall on this architecture */
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0, NULL, *name, err) != 0)
            goto out;
    }
    if (add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, NULL, "clone3", err) != 0)
        goto out;
    for (size_t i = 0; i < sizeof(clone_ns_flags) / sizeof(clone_ns_flags[0]); i++) {
        struct scmp_arg_cmp c = cmp(0, SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &c, "clone", err) != 0)
            goto out;
    }
    for (size_t i = 0; i < sizeof(personality_bad) / sizeof(personality_bad[0]); i++) {
        struct scmp_arg_cmp c = cmp(0, SCMP_CMP_MASKED_EQ, personality_bad[i], personality_bad[i]);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1, &c, "personality", err) != 0)
            goto out;
    }
    /* ioctl's request is an int: compare the low 32 bits only, so junk in the high half cannot dodge it. */
    static const unsigned long tty_bad[] = {TIOCSTI, TIOCLINUX};
    for (size_t i = 0; i < 2; i++) {
        struct scmp_arg_cmp c = cmp(1, SCMP_CMP_MASKED_EQ, 0xffffffffu, tty_bad[i]);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, &c, "ioctl", err) != 0)
            goto out;
    }
    if (net == SBX_NET_NONE) {
        struct scmp_arg_cmp c = cmp(0, SCMP_CMP_NE, AF_UNIX, 0);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, &c, "socket", err) != 0)
            goto out;
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socketpair), 1, &c, "socketpair", err) != 0)
            goto out;
    } else {
        /* egress: AF_UNIX, AF_INET and AF_INET6 only (the namespace has nothing but loopback; the proxy is the way
         * out). No netlink, no packet sockets. Whole 64-bit compares: junk in the high half is >= 11, refused. */
        static const int syscalls[] = {SCMP_SYS(socket), SCMP_SYS(socketpair)};
        for (size_t k = 0; k < 2; k++) {
            struct scmp_arg_cmp c = cmp(0, SCMP_CMP_GE, AF_INET6 + 1, 0);
            if (add(ctx, SCMP_ACT_ERRNO(EPERM), syscalls[k], 1, &c, "socket", err) != 0)
                goto out;
            for (int fam = 0; fam < AF_INET6; fam++) {
                if (fam == AF_UNIX || fam == AF_INET)
                    continue;
                c = cmp(0, SCMP_CMP_EQ, (scmp_datum_t)fam, 0);
                if (add(ctx, SCMP_ACT_ERRNO(EPERM), syscalls[k], 1, &c, "socket", err) != 0)
                    goto out;
            }
        }
    }
    /* Export the BPF to memory once; children load the bytes without touching libseccomp. */
    mfd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
    if (mfd == -1) {
        (void)buf_printf(err, "memfd_create: %s", strerror(errno));
        goto out;
    }
    int erc = seccomp_export_bpf(ctx, mfd);
    if (erc != 0) {
        (void)buf_printf(err, "seccomp_export_bpf: %s", strerror(-erc));
        goto out;
    }
    struct stat st;
    if (fstat(mfd, &st) == -1 || st.st_size <= 0 || st.st_size % (off_t)sizeof(struct sock_filter) != 0 ||
        st.st_size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        (void)buf_printf(err, "seccomp program has a bad size");
        goto out;
    }
    out->insns = xmalloc((size_t)st.st_size);
    if (pread(mfd, out->insns, (size_t)st.st_size, 0) != st.st_size) {
        (void)buf_printf(err, "reading the seccomp program: %s", strerror(errno));
        goto out;
    }
    out->len = (unsigned short)(st.st_size / (off_t)sizeof(struct sock_filter));
    rc = 0;
out:
    if (mfd != -1)
        close(mfd);
    if (ctx)
        seccomp_release(ctx);
    if (rc != 0)
        sbx_seccomp_free(out);
    return rc;
}

void sbx_seccomp_free(struct sbx_seccomp_prog *p)
{
    xfree_null(&p->insns);
    p->len = 0;
}

int sbx_seccomp_load(const struct sbx_seccomp_prog *p, int *listener)
{
    struct sock_fprog fprog = {.len = p->len, .filter = p->insns};
    if (p->insns == NULL || p->len == 0) {
        errno = EINVAL;
        return -1;
    }
    if (listener) {
        long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
        *listener = fd >= 0 ? (int)fd : -1;
        if (fd >= 0)
            return 0;
        /* EBUSY: a filter of ours (a container's) has a listener already; EINVAL: a kernel before 5.0. */
        if (errno != EBUSY && errno != EINVAL)
            return -1;
    }
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) == 0 ? 0 : -1;
}
