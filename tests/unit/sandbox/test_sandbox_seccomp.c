/* The seccomp filter: built once, then loaded in a child that checks what it denies and what it lets through. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/sbx_seccomp.h"
#include "test.h"

/* valgrind cannot run seccomp (nor, being a JIT, run under a filter meant for its guest). */
static bool under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

/* Child: one line per probe, "name errno" (0 when allowed), written to fd. */
static void probe(int fd, const char *name, long rc)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "%s %d\n", name, rc == -1 ? errno : 0);
    if (write(fd, line, (size_t)n) < 0)
        _exit(3);
}

static void child(const struct sbx_seccomp_prog *prog, int fd, bool with_listener)
{
    int listener = -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || sbx_seccomp_load(prog, with_listener ? &listener : NULL) != 0)
        _exit(2);
    /* The listener is a reference that keeps the filter alive, and nothing else: the filter works the same. */
    if (with_listener)
        probe(fd, "listener", listener >= 0 && fcntl(listener, F_GETFD) >= 0 ? 0 : (errno = EBADF, -1));
    probe(fd, "getpid", syscall(SYS_getpid));
    probe(fd, "ptrace", syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, getppid(), 0, 0));
    probe(fd, "mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
    probe(fd, "umount2", syscall(SYS_umount2, "/tmp", 0));
    probe(fd, "unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    probe(fd, "setns", syscall(SYS_setns, 0, 0));
    probe(fd, "keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    probe(fd, "add_key", syscall(SYS_add_key, "user", "x", "y", 1, 0));
    probe(fd, "bpf", syscall(SYS_bpf, 0, NULL, 0));
    probe(fd, "perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    probe(fd, "userfaultfd", syscall(SYS_userfaultfd, 0));
    probe(fd, "io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    probe(fd, "kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    probe(fd, "init_module", syscall(SYS_init_module, NULL, 0, ""));
    probe(fd, "open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    probe(fd, "clone3", syscall(SYS_clone3, NULL, 0));
    probe(fd, "clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL));
    probe(fd, "clone_newnet", syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, NULL));
    probe(fd, "personality_norand", syscall(SYS_personality, ADDR_NO_RANDOMIZE));
    probe(fd, "personality_rie", syscall(SYS_personality, 0x80000000UL | READ_IMPLIES_EXEC));
    probe(fd, "personality_linux", syscall(SYS_personality, PER_LINUX));
    /* The request's high half is junk the kernel ignores: it must not dodge the rule. */
    probe(fd, "tiocsti", syscall(SYS_ioctl, 0, 0xdead000000000000UL | TIOCSTI, "x"));
    probe(fd, "socket_inet", syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    probe(fd, "socket_inet6", syscall(SYS_socket, AF_INET6, SOCK_DGRAM, 0));
    probe(fd, "socket_netlink", syscall(SYS_socket, AF_NETLINK, SOCK_RAW, 0));
    probe(fd, "socket_packet", syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0));
    /* The family is an int: junk in the high half must not turn a refused family into an allowed one's number. */
    probe(fd, "socket_inet_junk", syscall(SYS_socket, 0x100000000UL | AF_INET, SOCK_STREAM, 0));
    probe(fd, "socket_zero", syscall(SYS_socket, 0, SOCK_STREAM, 0));
    long s = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
    probe(fd, "socket_unix", s);
    int sv[2];
    probe(fd, "socketpair_unix", syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv));
    /* A plain fork still works (clone without namespace flags). */
    pid_t p = fork();
    if (p == 0)
        _exit(0);
    probe(fd, "fork", p);
    if (p > 0)
        waitpid(p, NULL, 0);
    _exit(0);
}

static int expect(const char *out, const char *name, int err)
{
    char key[64];
    snprintf(key, sizeof(key), "%s ", name);
    const char *l = strstr(out, key);
    if (!l) {
        printf("#   no line for %s\n", name);
        return 0;
    }
    int got = atoi(l + strlen(key)); /* test code: lint does not apply */
    if (got != err)
        printf("#   %s: errno %d, expected %d\n", name, got, err);
    return got == err;
}

static void check_filter(bool with_listener, enum sbx_net net)
{
    struct sbx_seccomp_prog prog;
    struct buf err = BUF_INIT(256);
    if (under_valgrind()) {
        /* valgrind does not know the seccomp syscall, which libseccomp probes. */
        printf("# skip: under valgrind (no seccomp syscall)\n");
        ok(1);
        buf_free(&err);
        return;
    }
    ok(sbx_seccomp_build(net, &prog, &err) == 0);
    ok(prog.len > 20 && prog.len < 1000);
    buf_free(&err);
    int p[2];
    ok(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        child(&prog, p[1], with_listener);
    }
    close(p[1]);
    char out[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], out + n, sizeof(out) - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    int st;
    ok(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ok(expect(out, "getpid", 0));
    if (with_listener)
        ok(expect(out, "listener", 0));
    static const char *const denied[] = {"ptrace",
                                         "mount",
                                         "umount2",
                                         "unshare",
                                         "setns",
                                         "keyctl",
                                         "add_key",
                                         "bpf",
                                         "perf_event_open",
                                         "userfaultfd",
                                         "io_uring_setup",
                                         "kexec_load",
                                         "init_module",
                                         "open_by_handle_at",
                                         "clone_newuser",
                                         "clone_newnet",
                                         "personality_norand",
                                         "personality_rie",
                                         "tiocsti",
                                         "socket_netlink",
                                         "socket_packet",
                                         "socket_inet_junk",
                                         "socket_zero"};
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        ok(expect(out, denied[i], EPERM));
    ok(expect(out, "clone3", ENOSYS)); /* so libc falls back to clone, whose flags the filter can see */
    ok(expect(out, "personality_linux", 0));
    ok(expect(out, "socket_unix", 0));
    /* egress: the run's namespace has only loopback, and the proxy on it is the way out */
    ok(expect(out, "socket_inet", net == SBX_NET_EGRESS ? 0 : EPERM));
    ok(expect(out, "socket_inet6", net == SBX_NET_EGRESS ? 0 : EPERM));
    ok(expect(out, "socketpair_unix", 0));
    ok(expect(out, "fork", 0));
    sbx_seccomp_free(&prog);
    ok(prog.insns == NULL);
}

static void test_filter(void)
{
    check_filter(false, SBX_NET_NONE);
}

static void test_filter_listener(void)
{
    check_filter(true, SBX_NET_NONE);
}

static void test_filter_egress(void)
{
    check_filter(false, SBX_NET_EGRESS);
}

static void test_list(void)
{
    size_t n = 0;
    for (const char *const *s = sbx_seccomp_denied; *s; s++)
        n++;
    ok(n > 40);
    bool has_ptrace = false, has_bpf = false;
    for (const char *const *s = sbx_seccomp_denied; *s; s++) {
        has_ptrace |= strcmp(*s, "ptrace") == 0;
        has_bpf |= strcmp(*s, "bpf") == 0;
    }
    ok(has_ptrace && has_bpf);
}

int main(void)
{
    subtest("filter denies escape syscalls, allows the rest", test_filter);
    subtest("loaded with a listener (held by the engine past a run), the filter is the same", test_filter_listener);
    subtest("network egress: AF_INET and AF_INET6 too, and nothing more", test_filter_egress);
    subtest("denied list", test_list);
    return done_testing();
}
