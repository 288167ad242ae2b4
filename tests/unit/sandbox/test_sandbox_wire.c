/* The spec/result byte format: round trips, refusal of every malformed input, fd passing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sandbox/sbx.h"
#include "sandbox/sbx_wire.h"
#include "test.h"

static void sample(struct sbx_spec *s)
{
    static const char *const argv[] = {"-c", "print(1)"};
    static const char *const env[] = {"A=1", "B=two"};
    static const struct sbx_file files[] = {{"in.txt", "abc", 3, 0600}, {"empty", "", 0, 0}};
    sbx_spec_init(s);
    s->lang = SBX_LANG_PYTHON;
    s->argv = argv;
    s->argc = 2;
    s->env = env;
    s->envc = 2;
    s->files = files;
    s->nfiles = 2;
    s->limits.wall_ms = 1234;
    s->limits.pids = 7;
    s->net = SBX_NET_EGRESS;
}

static void test_roundtrip(void)
{
    struct sbx_spec s;
    struct sbx_wire_spec d;
    struct buf w = BUF_INIT(BUF_UNBOUNDED), err = BUF_INIT(256);
    sample(&s);
    ok(sbx_wire_encode_spec(&s, &w) == 0);
    ok(sbx_wire_decode_spec(w.data, w.len, &d, &err) == 0);
    is_int(d.spec.lang, SBX_LANG_PYTHON);
    is_int(d.spec.argc, 2);
    is_str(d.spec.argv[1], "print(1)");
    ok(d.spec.argv[2] == NULL);
    is_int(d.spec.envc, 2);
    is_str(d.spec.env[1], "B=two");
    is_int(d.spec.nfiles, 2);
    is_str(d.spec.files[0].name, "in.txt");
    is_int(d.spec.files[0].len, 3);
    ok(memcmp(d.spec.files[0].data, "abc", 3) == 0);
    is_int(d.spec.files[0].mode, 0600);
    is_int(d.spec.files[1].len, 0);
    is_int(d.spec.limits.wall_ms, 1234);
    is_int(d.spec.limits.pids, 7);
    is_int(d.spec.net, SBX_NET_EGRESS);
    ok(d.spec.code == NULL);
    sbx_wire_spec_free(&d);
    /* A network mode the decoder does not know is refused (the net field follows the magic and the language). */
    {
        char *copy = xmemdup(w.data, w.len);
        uint32_t bogus = SBX_NET__COUNT;
        memcpy(copy + 8, &bogus, 4);
        ok(sbx_wire_decode_spec(copy, w.len, &d, &err) == -1);
        xfree(copy);
    }

    /* Every truncation and every single-byte corruption of the length fields must be refused or decode to
     * something valid; never crash or read past the end (ASan watches). */
    for (size_t n = 0; n < w.len; n++) {
        char *copy = xmemdup(w.data, n);
        buf_reset(&err);
        ok(sbx_wire_decode_spec(copy, n, &d, &err) == -1);
        xfree(copy);
    }
    for (size_t i = 0; i < w.len; i++) {
        char *copy = xmemdup(w.data, w.len);
        copy[i] ^= 0x5a;
        buf_reset(&err);
        if (sbx_wire_decode_spec(copy, w.len, &d, &err) == 0)
            sbx_wire_spec_free(&d);
        xfree(copy);
    }
    /* Trailing garbage is refused. */
    (void)buf_append(&w, "x", 1);
    ok(sbx_wire_decode_spec(w.data, w.len, &d, &err) == -1);
    buf_free(&w);
    buf_free(&err);
}

static void test_decode_validates(void)
{
    struct sbx_spec s;
    struct sbx_wire_spec d;
    struct buf w = BUF_INIT(BUF_UNBOUNDED), err = BUF_INIT(256);
    static const struct sbx_file bad[] = {{"../x", "a", 1, 0}};
    sample(&s);
    s.files = bad;
    s.nfiles = 1;
    /* The encoder trusts its caller; the decoder must not. */
    ok(sbx_wire_encode_spec(&s, &w) == 0);
    ok(sbx_wire_decode_spec(w.data, w.len, &d, &err) == -1);
    ok(err.data && strstr(err.data, "file name") != NULL);
    buf_free(&w);
    buf_free(&err);
}

static void test_exit(void)
{
    struct sbx_exit e, d;
    struct buf w = BUF_INIT(BUF_UNBOUNDED);
    memset(&e, 0, sizeof(e));
    e.reason = SBX_REASON_MEMORY;
    e.exit_code = -1;
    e.term_signal = 9;
    e.wall_us = 123456;
    e.peak_memory_bytes = 1u << 30;
    e.host_uid = 1000000001;
    snprintf(e.cgroup, sizeof(e.cgroup), "v2");
    snprintf(e.error, sizeof(e.error), "none at all");
    sbx_wire_encode_exit(&e, &w);
    ok(sbx_wire_decode_exit(w.data, w.len, &d) == 0);
    is_int(d.reason, SBX_REASON_MEMORY);
    is_int(d.exit_code, -1);
    is_int(d.term_signal, 9);
    is_int(d.wall_us, 123456);
    is_int(d.host_uid, 1000000001);
    is_str(d.cgroup, "v2");
    is_str(d.error, "none at all");
    for (size_t n = 0; n < w.len; n++)
        ok(sbx_wire_decode_exit(w.data, n, &d) == -1);
    buf_free(&w);
}

static void test_offer(void)
{
    struct sbx_wire_offer o = {.work_bytes = 64u << 20,
                               .tmp_bytes = 16u << 20,
                               .has_cgroup = true,
                               .cg_memory = 512u << 20,
                               .cg_pids = 64,
                               .cg_cpu = 100},
                          d;
    struct buf w = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_encode_offer(&o, &w);
    ok(sbx_wire_decode_offer(w.data, w.len, &d) == 0);
    ok(d.work_bytes == o.work_bytes && d.tmp_bytes == o.tmp_bytes && d.has_cgroup && d.cg_memory == o.cg_memory &&
       d.cg_pids == 64 && d.cg_cpu == 100);
    /* every shorter prefix, and a byte more, is refused */
    for (size_t n = 0; n < w.len; n++)
        ok(sbx_wire_decode_offer(w.data, n, &d) == -1);
    (void)buf_append(&w, "x", 1);
    ok(sbx_wire_decode_offer(w.data, w.len, &d) == -1);
    /* has_cgroup is 0 or 1 */
    w.len--;
    w.data[16] = 2;
    ok(sbx_wire_decode_offer(w.data, w.len, &d) == -1);
    buf_free(&w);
}

static void test_fds(void)
{
    int sv[2], p[2];
    ok(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    ok(pipe(p) == 0);
    struct buf m = BUF_INIT(BUF_UNBOUNDED);
    sbx_wire_msg_begin(&m, SBX_MSG_RUN, SBX_MSG_F_MEMFD, 42);
    (void)buf_append(&m, "body", 4);
    int fds[2] = {p[0], p[1]};
    ok(sbx_wire_send(sv[0], m.data, m.len, fds, 2) == 0);
    char in[128];
    int got[SBX_WIRE_MAX_FDS], n = 0;
    long r = sbx_wire_recv(sv[1], in, sizeof(in), got, &n);
    is_int(r, (long)m.len);
    is_int(n, 2);
    struct sbx_msg_hdr h;
    const void *body;
    size_t blen;
    ok(sbx_wire_msg_parse(in, (size_t)r, &h, &body, &blen) == 0);
    is_int(h.type, SBX_MSG_RUN);
    is_int(h.flags, SBX_MSG_F_MEMFD);
    is_int(h.id, 42);
    ok(blen == 4 && memcmp(body, "body", 4) == 0);
    ok(fcntl(got[0], F_GETFD) & FD_CLOEXEC); /* received fds never leak into an exec */
    ok(write(got[1], "z", 1) == 1);
    char c = 0;
    ok(read(p[0], &c, 1) == 1 && c == 'z');
    for (int i = 0; i < n; i++)
        close(got[i]);
    /* A message larger than the buffer is refused whole, its fds closed. */
    ok(sbx_wire_send(sv[0], m.data, m.len, fds, 1) == 0);
    is_int(sbx_wire_recv(sv[1], in, 4, got, &n), -EMSGSIZE);
    is_int(n, 0);
    ok(sbx_wire_msg_parse("short", 5, &h, &body, &blen) == -1);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    ok(sbx_wire_recv(sv[1], in, sizeof(in), got, &n) == 0); /* EOF */
    close(sv[1]);
    buf_free(&m);
}

static void test_validate(void)
{
    struct sbx_spec s;
    struct buf err = BUF_INIT(512);
    sbx_spec_init(&s);
    ok(sbx_spec_validate(&s, &err) == -1); /* nothing to run */
    static const char *const argv[] = {"/bin/true"};
    s.argv = argv;
    s.argc = 1;
    ok(sbx_spec_validate(&s, &err) == 0);
    s.limits.pids = 0;
    buf_reset(&err);
    ok(sbx_spec_validate(&s, &err) == -1);
    ok(strstr(err.data, "pids") != NULL);
    sbx_spec_init(&s);
    s.argv = argv;
    s.argc = 1;
    static const char *const env[] = {"1BAD=x"};
    s.env = env;
    s.envc = 1;
    ok(sbx_spec_validate(&s, &err) == -1);
    sbx_spec_init(&s);
    s.lang = SBX_LANG_SH;
    s.code = "echo";
    s.code_len = 4;
    static const struct sbx_file clash[] = {{"main.sh", "x", 1, 0}};
    s.files = clash;
    s.nfiles = 1;
    ok(sbx_spec_validate(&s, &err) == -1);
    static const struct sbx_file twice[] = {{"a", "x", 1, 0}, {"a", "y", 1, 0}};
    s.files = twice;
    s.nfiles = 2;
    ok(sbx_spec_validate(&s, &err) == -1);
    s.nfiles = 1;
    ok(sbx_spec_validate(&s, &err) == 0);
    s.limits.work_bytes = 1;
    ok(sbx_spec_validate(&s, &err) == -1);
    is_int(sbx_lang_parse("python3"), SBX_LANG_PYTHON);
    is_int(sbx_lang_parse("js"), SBX_LANG_NODE);
    is_int(sbx_lang_parse("cobol"), -1);
    is_str(sbx_reason_name(SBX_REASON_OUTPUT_CAP), "output_cap");
    buf_free(&err);
}

int main(void)
{
    subtest("spec round trip and corruption", test_roundtrip);
    subtest("decoder validates", test_decode_validates);
    subtest("exit round trip", test_exit);
    subtest("offer round trip, exact length", test_offer);
    subtest("messages with fds", test_fds);
    subtest("spec validation", test_validate);
    return done_testing();
}
