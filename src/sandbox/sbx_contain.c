#include "sandbox/sbx_contain.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sandbox/sbx_egress.h"
#include "sandbox/sbx_runner.h"
#include "sandbox/sbx_wire.h"

/* Where the new root is assembled, in the child's private copy of the mount tree (any existing directory). */
#define NEWROOT "/tmp"

/* ---- the plan: what of the host the sandbox sees ---- */

/* Read-only binds, each optional except /usr. Nothing writable and nothing of /home, /root, /var, /run, /srv,
 * /sys or the rest of /etc is ever visible. */
static const char *const bind_paths[] = {
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/inputrc",
    NULL,
};

static void plan_add(struct sbx_contain_plan *plan, const char *path)
{
    struct stat st;
    if (lstat(path, &st) == -1)
        return;
    struct sbx_bind b = {.path = NULL, .target = NULL, .kind = SBX_BIND_DIR};
    if (S_ISLNK(st.st_mode)) {
        char t[4096];
        ssize_t n = readlink(path, t, sizeof(t) - 1);
        if (n <= 0)
            return;
        t[n] = '\0';
        b.kind = SBX_BIND_SYMLINK;
        b.target = xstrdup(t);
    } else if (S_ISREG(st.st_mode)) {
        b.kind = SBX_BIND_FILE;
    } else if (!S_ISDIR(st.st_mode)) {
        return;
    }
    b.path = xstrdup(path);
    plan->binds = xrealloc(plan->binds, (plan->nbinds + 1) * sizeof(*plan->binds));
    plan->binds[plan->nbinds++] = b;
}

static int read_last_cap(void)
{
    char s[16] = {0};
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    int v = CAP_LAST_CAP;
    if (fd != -1) {
        ssize_t n = read(fd, s, sizeof(s) - 1);
        if (n > 0) {
            v = 0;
            for (ssize_t i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
                v = v * 10 + (s[i] - '0');
        }
        close(fd);
    }
    return (v > 0 && v < 64) ? v : CAP_LAST_CAP;
}

int sbx_contain_plan_init(struct sbx_contain_plan *plan, struct buf *err)
{
    memset(plan, 0, sizeof(*plan));
    struct sbx_limits def;
    sbx_limits_default(&def);
    plan->work_bytes = def.work_bytes;
    plan->tmp_bytes = def.tmp_bytes;
    plan->last_cap = read_last_cap();
    for (const char *const *p = bind_paths; *p; p++)
        plan_add(plan, *p);
    /* Debian's python reads /etc/python3.X/sitecustomize.py: bind those directories too. */
    DIR *d = opendir("/etc");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strncmp(e->d_name, "python3", 7) == 0) {
                char p[300];
                (void)snprintf(p, sizeof(p), "/etc/%s", e->d_name);
                plan_add(plan, p);
            }
        }
        closedir(d);
    }
    if (plan->nbinds == 0 || strcmp(plan->binds[0].path, "/usr") != 0 || plan->binds[0].kind != SBX_BIND_DIR) {
        (void)buf_printf(err, "/usr is not a directory on this host");
        sbx_contain_plan_free(plan);
        return -1;
    }
    for (int net = 0; net < SBX_NET__COUNT; net++) {
        if (sbx_seccomp_build((enum sbx_net)net, &plan->seccomp[net], err) != 0) {
            sbx_contain_plan_free(plan);
            return -1;
        }
    }
    return 0;
}

void sbx_contain_plan_free(struct sbx_contain_plan *plan)
{
    for (size_t i = 0; i < plan->nbinds; i++) {
        xfree(plan->binds[i].path);
        xfree(plan->binds[i].target);
    }
    xfree(plan->binds);
    for (int net = 0; net < SBX_NET__COUNT; net++)
        sbx_seccomp_free(&plan->seccomp[net]);
    memset(plan, 0, sizeof(*plan));
}

/* ---- the child ---- */

struct child {
    struct sbx_step_ctx sc; /* the control socket, and "<step>: <reason>" of the failing step */
    const struct sbx_contain_plan *plan;
    uint64_t work_bytes, tmp_bytes;
    bool cgroup_memory;
    int runner_fd;
    enum sbx_net net;
};

typedef int step_fn(struct child *c);

struct step {
    const char *name;
    step_fn *fn;
};

static void run_steps(struct child *c, const struct step *steps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        errno = 0;
        c->sc.err[0] = '\0';
        if (steps[i].fn(c) != 0)
            sbx_step_die(&c->sc, steps[i].name);
    }
}

/* -- phase A -- */

static int step_signals(struct child *c)
{
    sigset_t none;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        (void)sigaction(s, &dfl, NULL); /* SIGKILL/SIGSTOP and the RT ones libc keeps refuse: fine */
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) == -1)
        return sbx_step_fail(&c->sc, "sigprocmask");
    /* Nothing of the engine's may leak in: not its stdio (agentd's logs), not its sockets. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null == -1)
        return sbx_step_fail(&c->sc, "open /dev/null");
    for (int fd = 0; fd < 3; fd++)
        if (dup2(null, fd) == -1)
            return sbx_step_fail(&c->sc, "dup2");
    /* The runner's image (sbx_runner.h) goes to fd 4, out of the way first in case it is on 3. */
    int runner = c->runner_fd >= 0 ? fcntl(c->runner_fd, F_DUPFD_CLOEXEC, 10) : -1;
    if (c->sc.ctl != SBX_RUNNER_CTL_FD) {
        if (dup3(c->sc.ctl, SBX_RUNNER_CTL_FD, O_CLOEXEC) == -1)
            return sbx_step_fail(&c->sc, "dup3");
        c->sc.ctl = SBX_RUNNER_CTL_FD;
    }
    c->runner_fd = -1;
    if (runner >= 0 && dup3(runner, SBX_RUNNER_IMAGE_FD, O_CLOEXEC) == SBX_RUNNER_IMAGE_FD)
        c->runner_fd = SBX_RUNNER_IMAGE_FD;
    unsigned first = c->runner_fd >= 0 ? SBX_RUNNER_IMAGE_FD + 1 : SBX_RUNNER_IMAGE_FD;
    if (syscall(SYS_close_range, first, ~0u, 0u) == -1) {
        for (int fd = (int)first; fd < 65536; fd++)
            (void)close(fd);
    }
    return 0;
}

static int step_die_with_parent(struct child *c)
{
    (void)prctl(PR_SET_NAME, "agentd-sbx"); /* for ps, until execve names it after the program */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
        return sbx_step_fail(&c->sc, "prctl(PR_SET_PDEATHSIG)");
    /* The engine writes our maps and cgroup, then says MAPPED. EOF means it died before: leave. */
    char msg[64];
    int fds[SBX_WIRE_MAX_FDS], nfds;
    long n = sbx_wire_recv(c->sc.ctl, msg, sizeof(msg), fds, &nfds);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    struct sbx_msg_hdr h;
    const void *body;
    size_t blen;
    if (n <= 0)
        _exit(SBX_CHILD_SETUP_FAILED);
    if (sbx_wire_msg_parse(msg, (size_t)n, &h, &body, &blen) != 0 || h.type != SBX_MSG_MAPPED) {
        errno = EPROTO;
        return sbx_step_fail(&c->sc, "expected MAPPED");
    }
    return 0;
}

static int step_ids(struct child *c)
{
    /* Keep the permitted caps across the uid change: set-up still needs them (mount, remount). */
    if (prctl(PR_SET_KEEPCAPS, 1) == -1)
        return sbx_step_fail(&c->sc, "prctl(PR_SET_KEEPCAPS)");
    if (setresgid(SBX_IN_GID, SBX_IN_GID, SBX_IN_GID) == -1)
        return sbx_step_fail(&c->sc, "setresgid(%d)", SBX_IN_GID);
    if (setresuid(SBX_IN_UID, SBX_IN_UID, SBX_IN_UID) == -1)
        return sbx_step_fail(&c->sc, "setresuid(%d)", SBX_IN_UID);
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) == -1)
        return sbx_step_fail(&c->sc, "capget");
    d[0].effective = d[0].permitted;
    d[1].effective = d[1].permitted;
    if (syscall(SYS_capset, &h, d) == -1)
        return sbx_step_fail(&c->sc, "capset");
    if (prctl(PR_SET_KEEPCAPS, 0) == -1)
        return sbx_step_fail(&c->sc, "prctl(PR_SET_KEEPCAPS, 0)");
    /* The kernel clears the parent-death signal on any change of uid or gid: arm it again. A parent that died
     * in between leaves us nobody to send READY to, and the wait for RUN then ends at EOF. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
        return sbx_step_fail(&c->sc, "prctl(PR_SET_PDEATHSIG) after setresuid");
    return 0;
}

static int step_cgroup_ns(struct child *c)
{
    /* After the engine put us in the run's cgroup, so that cgroup is our namespace's root. */
    if (unshare(CLONE_NEWCGROUP) == -1)
        return sbx_step_fail(&c->sc, "unshare(CLONE_NEWCGROUP)");
    return 0;
}

/* The flags a remount must keep: in a user namespace the kernel refuses to drop a locked one. */
static unsigned long locked_flags(const char *path)
{
    struct statvfs sv;
    unsigned long f = 0;
    if (statvfs(path, &sv) == -1)
        return 0;
    if (sv.f_flag & ST_NOSUID)
        f |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV)
        f |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC)
        f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME)
        f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME)
        f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME)
        f |= MS_RELATIME;
    return f;
}

static int bind_ro(struct child *c, const char *src, const char *dst)
{
    if (mount(src, dst, NULL, MS_BIND, NULL) == -1)
        return sbx_step_fail(&c->sc, "bind %s", src);
    unsigned long f = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(dst);
    if (mount(NULL, dst, NULL, f, NULL) == -1)
        return sbx_step_fail(&c->sc, "remount %s read-only", dst);
    return 0;
}

static int touch(const char *path, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd == -1)
        return -1;
    close(fd);
    return 0;
}

/* mkdir -p under NEWROOT for a path like "/etc/ssl/certs" (its parents). */
static int mkparents(const char *inside)
{
    char p[4200];
    (void)snprintf(p, sizeof(p), NEWROOT "%s", inside);
    for (char *s = p + sizeof(NEWROOT); *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) == -1 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    }
    return 0;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd == -1)
        return -1;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    close(fd);
    return w == (ssize_t)n ? 0 : -1;
}

static int step_mount_private(struct child *c)
{
    /* Nothing we mount may propagate back to the host, whatever its / is shared as. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1)
        return sbx_step_fail(&c->sc, "make / private");
    if (mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=0755") == -1)
        return sbx_step_fail(&c->sc, "tmpfs root");
    return 0;
}

static int step_binds(struct child *c)
{
    char dst[4200];
    for (size_t i = 0; i < c->plan->nbinds; i++) {
        const struct sbx_bind *b = &c->plan->binds[i];
        (void)snprintf(dst, sizeof(dst), NEWROOT "%s", b->path);
        if (mkparents(b->path) == -1)
            return sbx_step_fail(&c->sc, "mkdir for %s", b->path);
        switch (b->kind) {
        case SBX_BIND_SYMLINK:
            if (symlink(b->target, dst) == -1)
                return sbx_step_fail(&c->sc, "symlink %s", b->path);
            break;
        case SBX_BIND_DIR:
            if (mkdir(dst, 0755) == -1)
                return sbx_step_fail(&c->sc, "mkdir %s", b->path);
            if (bind_ro(c, b->path, dst) != 0)
                return -1;
            break;
        case SBX_BIND_FILE:
            if (touch(dst, 0644) == -1)
                return sbx_step_fail(&c->sc, "create %s", b->path);
            if (bind_ro(c, b->path, dst) != 0)
                return -1;
            break;
        }
    }
    return 0;
}

static int step_etc(struct child *c)
{
    static const struct {
        const char *path, *text;
    } files[] = {
        {NEWROOT "/etc/passwd", "root:x:0:0:root:/:/usr/sbin/nologin\n"
                                "sandbox:x:1000:1000:sandbox:/work:/bin/sh\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
        {NEWROOT "/etc/group", "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n"},
        {NEWROOT "/etc/hosts", "127.0.0.1\tlocalhost " SBX_HOSTNAME "\n::1\tlocalhost ip6-localhost\n"},
        {NEWROOT "/etc/hostname", SBX_HOSTNAME "\n"},
    };
    if (mkdir(NEWROOT "/etc", 0755) == -1 && errno != EEXIST)
        return sbx_step_fail(&c->sc, "mkdir /etc");
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (write_file(files[i].path, files[i].text) == -1)
            return sbx_step_fail(&c->sc, "write %s", files[i].path + sizeof(NEWROOT) - 1);
    return 0;
}

static int step_dev(struct child *c)
{
    static const char *const devs[] = {"null", "zero", "full", "random", "urandom"};
    static const struct {
        const char *name, *target;
    } links[] = {{"fd", "/proc/self/fd"},
                 {"stdin", "/proc/self/fd/0"},
                 {"stdout", "/proc/self/fd/1"},
                 {"stderr", "/proc/self/fd/2"},
                 {"shm", "/tmp"}};
    char src[64], dst[64];
    if (mkdir(NEWROOT "/dev", 0755) == -1)
        return sbx_step_fail(&c->sc, "mkdir /dev");
    if (mount("tmpfs", NEWROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755") == -1)
        return sbx_step_fail(&c->sc, "tmpfs /dev");
    /* Device nodes cannot be created in a user namespace: bind the host's harmless ones. */
    for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
        (void)snprintf(src, sizeof(src), "/dev/%s", devs[i]);
        (void)snprintf(dst, sizeof(dst), NEWROOT "/dev/%s", devs[i]);
        if (touch(dst, 0666) == -1)
            return sbx_step_fail(&c->sc, "create %s", src);
        if (mount(src, dst, NULL, MS_BIND, NULL) == -1)
            return sbx_step_fail(&c->sc, "bind %s", src);
    }
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        (void)snprintf(dst, sizeof(dst), NEWROOT "/dev/%s", links[i].name);
        if (symlink(links[i].target, dst) == -1)
            return sbx_step_fail(&c->sc, "symlink /dev/%s", links[i].name);
    }
    if (mount(NULL, NEWROOT "/dev", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) == -1)
        return sbx_step_fail(&c->sc, "remount /dev read-only");
    return 0;
}

static int step_proc(struct child *c)
{
    /* We are PID 1 of the new PID namespace, so this /proc shows the run's processes only. */
    if (mkdir(NEWROOT "/proc", 0555) == -1)
        return sbx_step_fail(&c->sc, "mkdir /proc");
    if (mount("proc", NEWROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == -1)
        return sbx_step_fail(&c->sc, "mount proc");
    if (bind_ro(c, NEWROOT "/proc/sys", NEWROOT "/proc/sys") != 0)
        return -1;
    return 0;
}

static int mount_tmpfs(struct child *c, const char *dst, uint64_t bytes, const char *mode)
{
    char opts[128];
    (void)snprintf(opts, sizeof(opts), "size=%llu,nr_inodes=16384,mode=%s", (unsigned long long)bytes, mode);
    if (mkdir(dst, 0755) == -1)
        return sbx_step_fail(&c->sc, "mkdir %s", dst + sizeof(NEWROOT) - 1);
    if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, opts) == -1)
        return sbx_step_fail(&c->sc, "tmpfs %s", dst + sizeof(NEWROOT) - 1);
    return 0;
}

static int step_scratch(struct child *c)
{
    if (mount_tmpfs(c, NEWROOT "/tmp", c->tmp_bytes, "1777") != 0)
        return -1;
    return mount_tmpfs(c, NEWROOT "/work", c->work_bytes, "0755");
}

static int step_pivot(struct child *c)
{
    /* pivot_root(".", ".") stacks the old root under the new one at "/", then detaching "." removes it
     * (runc's trick; no directory for the old root is left behind). */
    if (chdir(NEWROOT) == -1)
        return sbx_step_fail(&c->sc, "chdir " NEWROOT);
    if (syscall(SYS_pivot_root, ".", ".") == -1)
        return sbx_step_fail(&c->sc, "pivot_root");
    if (umount2(".", MNT_DETACH) == -1)
        return sbx_step_fail(&c->sc, "detach old root");
    if (chdir("/") == -1)
        return sbx_step_fail(&c->sc, "chdir /");
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) == -1)
        return sbx_step_fail(&c->sc, "remount / read-only");
    return 0;
}

static int step_hostname(struct child *c)
{
    if (sethostname(SBX_HOSTNAME, sizeof(SBX_HOSTNAME) - 1) == -1)
        return sbx_step_fail(&c->sc, "sethostname");
    if (setdomainname("", 0) == -1)
        return sbx_step_fail(&c->sc, "setdomainname");
    return 0;
}

/* Network "egress": the namespace's loopback up, and the socket the pool's proxy will serve listening on it
 * (sbx_egress.h), made here, where the capability to bring an interface up is still held, and handed to the engine.
 * This process keeps no copy: the program finds the port taken (no SO_REUSEPORT on it) and can only connect. */
static int step_net(struct child *c)
{
    if (c->net != SBX_NET_EGRESS)
        return 0;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s == -1)
        return sbx_step_fail(&c->sc, "socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == -1) {
        close(s);
        return sbx_step_fail(&c->sc, "SIOCGIFFLAGS lo");
    }
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) == -1) {
        close(s);
        return sbx_step_fail(&c->sc, "bring lo up");
    }
    close(s);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l == -1)
        return sbx_step_fail(&c->sc, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(SBX_EGRESS_PORT)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) == -1 || listen(l, 128) == -1) {
        close(l);
        return sbx_step_fail(&c->sc, "listen on 127.0.0.1:%d", SBX_EGRESS_PORT);
    }
    int rc = sbx_step_send_fd(c->sc.ctl, SBX_MSG_EGRESS, l);
    close(l);
    if (rc != 0) {
        errno = -rc;
        return sbx_step_fail(&c->sc, "send the listener");
    }
    return 0;
}

/* A session of its own: no controlling terminal to inject input into (CVE-2017-5226). Done while warm: with
 * autogroup scheduling (CONFIG_SCHED_AUTOGROUP, on by default in distribution kernels) setsid makes the process a task
 * group of its own, and moving into it gave the CPU away; in the run's phase B that took 70-200 us from a warm run
 * (kernel trace, bench/sandbox/phases.sh: the child was switched out right after setsid, every time). */
static int step_setsid(struct child *c)
{
    if (setsid() == -1)
        return sbx_step_fail(&c->sc, "setsid");
    return 0;
}

/* -- phase B -- */

static int step_no_new_privs(struct child *c)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
        return sbx_step_fail(&c->sc, "prctl(PR_SET_NO_NEW_PRIVS)");
    return 0;
}

static int step_drop_caps(struct child *c)
{
    for (int cap = 0; cap <= c->plan->last_cap; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 && errno != EINVAL)
            return sbx_step_fail(&c->sc, "drop bounding cap %d", cap);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 && errno != EINVAL)
        return sbx_step_fail(&c->sc, "clear ambient caps");
    unsigned long bits = SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
                         SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
                         SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) == -1)
        return sbx_step_fail(&c->sc, "lock securebits");
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capset, &h, d) == -1)
        return sbx_step_fail(&c->sc, "capset(none)");
    /* Trust, but verify. */
    if (syscall(SYS_capget, &h, d) == -1)
        return sbx_step_fail(&c->sc, "capget");
    if (d[0].permitted | d[0].effective | d[0].inheritable | d[1].permitted | d[1].effective | d[1].inheritable) {
        errno = EPERM;
        return sbx_step_fail(&c->sc, "capabilities still present");
    }
    return 0;
}

static int step_seccomp(struct child *c)
{
    int listener = -1;
    if (sbx_seccomp_load(&c->plan->seccomp[c->net], &listener) == -1)
        return sbx_step_fail(&c->sc, "seccomp");
    if (listener >= 0) {
        /* The engine holds the filter past the run (sbx_seccomp.h): its release is then not the exit's work. */
        (void)sbx_step_send_fd(c->sc.ctl, SBX_MSG_HOLD, listener);
        close(listener);
    }
    return 0;
}

/* A warm Python child: everything of phase B that needs no spec, then the interpreter (sbx_pywarm.h). */
static int step_py_boot(struct child *c)
{
    if (chdir("/work") == -1)
        return sbx_step_fail(&c->sc, "chdir /work");
    /* A pipe on 0-2 until the run's own arrive: the interpreter sets its stdio up for a non-seekable,
     * non-terminal file, as it does for the run's pipes on a cold start. */
    int p[2];
    if (pipe2(p, 0) == -1)
        return sbx_step_fail(&c->sc, "pipe");
    if (dup2(p[0], 0) == -1 || dup2(p[1], 1) == -1 || dup2(p[1], 2) == -1)
        return sbx_step_fail(&c->sc, "dup2");
    if (p[0] > 3)
        close(p[0]);
    if (p[1] > 3)
        close(p[1]);
    /* The control socket stays on fd 3 across execve: the bootstrap says READY and reads the run on it. */
    if (fcntl(c->sc.ctl, F_SETFD, 0) == -1)
        return sbx_step_fail(&c->sc, "fcntl");
    if (syscall(SYS_close_range, 4u, ~0u, 0u) == -1) {
        for (int fd = 4; fd < 65536; fd++)
            (void)close(fd);
    }
    return 0;
}

/* Phase B in the runner (sbx_runner.h): exec'd from its image on fd 4 with the control socket on fd 3. Returns only
 * if that exec failed (a host that forbids executing a memfd, say), for the caller to run phase B itself. */
static void exec_runner(struct child *c)
{
    if (c->runner_fd < 0)
        return;
    if (fcntl(c->sc.ctl, F_SETFD, 0) == 0) {
        const char *const argv[] = {SBX_RUNNER_NAME, c->cgroup_memory ? "1" : "0", NULL};
        const char *const envp[] = {NULL};
        (void)syscall(SYS_execveat, c->runner_fd, "", argv, envp, AT_EMPTY_PATH);
        (void)fcntl(c->sc.ctl, F_SETFD, FD_CLOEXEC);
    }
    close(c->runner_fd);
    c->runner_fd = -1;
}

void sbx_contain_child(const struct sbx_contain_plan *plan, const struct sbx_contain_args *args, int ctl)
{
    static struct child c; /* static: this process has nothing else to do, and the stack stays small */
    memset(&c, 0, sizeof(c));
    c.plan = plan;
    c.sc.ctl = ctl;
    c.work_bytes = args->work_bytes;
    c.tmp_bytes = args->tmp_bytes;
    c.cgroup_memory = args->cgroup_memory;
    c.runner_fd = args->python_argv ? -1 : args->runner_fd;
    c.net = args->net < SBX_NET__COUNT ? args->net : SBX_NET_NONE;
    static const struct step phase_a[] = {
        {"signals", step_signals},
        {"die_with_parent", step_die_with_parent},
        {"ids", step_ids},
        {"cgroup_ns", step_cgroup_ns},
        {"mount_private", step_mount_private},
        {"binds", step_binds},
        {"etc", step_etc},
        {"dev", step_dev},
        {"proc", step_proc},
        {"scratch", step_scratch},
        {"pivot_root", step_pivot},
        {"hostname", step_hostname},
        {"net", step_net},
        {"setsid", step_setsid},
        {"no_new_privs", step_no_new_privs},
        {"drop_caps", step_drop_caps},
        {"seccomp", step_seccomp},
    };
    run_steps(&c, phase_a, sizeof(phase_a) / sizeof(phase_a[0]));
    if (args->python_argv) {
        static const struct step py[] = {{"py_boot", step_py_boot}};
        run_steps(&c, py, 1);
        const char *const *argv = args->python_argv;
        execve(argv[0], (char *const *)argv, (char *const *)sbx_runner_base_env);
        c.sc.err[0] = '\0';
        sbx_step_fail(&c.sc, "%s", argv[0]);
        sbx_step_die(&c.sc, "execve");
    }
    exec_runner(&c);
    sbx_runner_main(c.sc.ctl, c.cgroup_memory);
}
