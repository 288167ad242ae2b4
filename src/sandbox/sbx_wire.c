#include "sandbox/sbx_wire.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"

/* The buffers these append to are unbounded (their content is bounded by the spec checks), so an append can
 * only fail by aborting on OOM; the return values are not needed. */
void sbx_wire_put_u32(struct buf *b, uint32_t v)
{
    (void)buf_append(b, &v, sizeof(v));
}

void sbx_wire_put_u64(struct buf *b, uint64_t v)
{
    (void)buf_append(b, &v, sizeof(v));
}

void sbx_wire_put_bytes(struct buf *b, const void *p, size_t n)
{
    sbx_wire_put_u32(b, (uint32_t)n);
    if (n)
        (void)buf_append(b, p, n);
    (void)buf_append_char(b, '\0');
}

void sbx_wire_put_str(struct buf *b, const char *s)
{
    sbx_wire_put_bytes(b, s ? s : "", s ? strlen(s) : 0);
}

void sbx_wire_reader_init(struct sbx_wire_reader *r, const void *p, size_t n)
{
    r->p = p;
    r->n = n;
    r->bad = false;
}

static const void *take(struct sbx_wire_reader *r, size_t n)
{
    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    const void *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}

uint32_t sbx_wire_get_u32(struct sbx_wire_reader *r)
{
    uint32_t v = 0;
    const void *p = take(r, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return v;
}

uint64_t sbx_wire_get_u64(struct sbx_wire_reader *r)
{
    uint64_t v = 0;
    const void *p = take(r, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return v;
}

const char *sbx_wire_get_bytes(struct sbx_wire_reader *r, size_t *len, bool cstring)
{
    uint32_t n = sbx_wire_get_u32(r);
    if (r->bad || n == UINT32_MAX) {
        r->bad = true;
        return NULL;
    }
    const char *p = take(r, (size_t)n + 1);
    if (p == NULL || p[n] != '\0' || (cstring && memchr(p, '\0', n) != NULL)) {
        r->bad = true;
        return NULL;
    }
    if (len)
        *len = n;
    return p;
}

int sbx_wire_encode_spec(const struct sbx_spec *spec, struct buf *out)
{
    size_t start = out->len;
    const struct sbx_limits *l = &spec->limits;
    sbx_wire_put_u32(out, SBX_WIRE_MAGIC);
    sbx_wire_put_u32(out, (uint32_t)spec->lang);
    sbx_wire_put_u32(out, (uint32_t)spec->net);
    sbx_wire_put_u64(out, l->wall_ms);
    sbx_wire_put_u64(out, l->cpu_ms);
    sbx_wire_put_u64(out, l->memory_bytes);
    sbx_wire_put_u64(out, l->address_space_bytes);
    sbx_wire_put_u32(out, l->pids);
    sbx_wire_put_u32(out, l->nofile);
    sbx_wire_put_u64(out, l->fsize_bytes);
    sbx_wire_put_u32(out, l->cpu_percent);
    sbx_wire_put_u64(out, l->stdout_max);
    sbx_wire_put_u64(out, l->stderr_max);
    sbx_wire_put_u64(out, l->work_bytes);
    sbx_wire_put_u64(out, l->tmp_bytes);
    sbx_wire_put_u32(out, spec->code != NULL); /* an empty snippet is still a snippet */
    sbx_wire_put_bytes(out, spec->code, spec->code ? spec->code_len : 0);
    sbx_wire_put_u32(out, (uint32_t)spec->argc);
    for (size_t i = 0; i < spec->argc; i++)
        sbx_wire_put_str(out, spec->argv[i]);
    sbx_wire_put_u32(out, (uint32_t)spec->envc);
    for (size_t i = 0; i < spec->envc; i++)
        sbx_wire_put_str(out, spec->env[i]);
    sbx_wire_put_u32(out, (uint32_t)spec->nfiles);
    for (size_t i = 0; i < spec->nfiles; i++) {
        sbx_wire_put_str(out, spec->files[i].name);
        sbx_wire_put_u32(out, spec->files[i].mode);
        sbx_wire_put_bytes(out, spec->files[i].data, spec->files[i].len);
    }
    sbx_wire_put_u32(out, spec->collect_files ? 1u : 0u);
    if (out->len - start > SBX_MAX_SPEC_BYTES) {
        out->len = start;
        return -1;
    }
    return 0;
}

static void fail(struct buf *err, const char *what)
{
    if (err)
        (void)buf_printf(err, "malformed spec: %s", what);
}

int sbx_wire_decode_spec(const void *p, size_t n, struct sbx_wire_spec *out, struct buf *err)
{
    struct sbx_wire_reader r;
    memset(out, 0, sizeof(*out));
    sbx_wire_reader_init(&r, p, n);
    if (sbx_wire_get_u32(&r) != SBX_WIRE_MAGIC) {
        fail(err, "magic");
        return -1;
    }
    struct sbx_spec *s = &out->spec;
    struct sbx_limits *l = &s->limits;
    uint32_t lang = sbx_wire_get_u32(&r);
    uint32_t net = sbx_wire_get_u32(&r);
    l->wall_ms = sbx_wire_get_u64(&r);
    l->cpu_ms = sbx_wire_get_u64(&r);
    l->memory_bytes = sbx_wire_get_u64(&r);
    l->address_space_bytes = sbx_wire_get_u64(&r);
    l->pids = sbx_wire_get_u32(&r);
    l->nofile = sbx_wire_get_u32(&r);
    l->fsize_bytes = sbx_wire_get_u64(&r);
    l->cpu_percent = sbx_wire_get_u32(&r);
    l->stdout_max = sbx_wire_get_u64(&r);
    l->stderr_max = sbx_wire_get_u64(&r);
    l->work_bytes = sbx_wire_get_u64(&r);
    l->tmp_bytes = sbx_wire_get_u64(&r);
    if (lang >= SBX_LANG__COUNT || net >= SBX_NET__COUNT) {
        fail(err, "lang or net");
        goto bad;
    }
    s->lang = (enum sbx_lang)lang;
    s->net = (enum sbx_net)net;
    uint32_t has_code = sbx_wire_get_u32(&r);
    s->code = sbx_wire_get_bytes(&r, &s->code_len, false);
    if (has_code > 1) {
        fail(err, "code flag");
        goto bad;
    }
    if (!has_code)
        s->code = NULL;
    uint32_t argc = sbx_wire_get_u32(&r);
    if (r.bad || argc > SBX_MAX_ARGS) {
        fail(err, "argc");
        goto bad;
    }
    out->argv = xcalloc((size_t)argc + 1, sizeof(*out->argv));
    for (uint32_t i = 0; i < argc; i++)
        out->argv[i] = sbx_wire_get_bytes(&r, NULL, true);
    s->argv = out->argv;
    s->argc = argc;
    uint32_t envc = sbx_wire_get_u32(&r);
    if (r.bad || envc > SBX_MAX_ENV) {
        fail(err, "envc");
        goto bad;
    }
    out->env = xcalloc((size_t)envc + 1, sizeof(*out->env));
    for (uint32_t i = 0; i < envc; i++)
        out->env[i] = sbx_wire_get_bytes(&r, NULL, true);
    s->env = out->env;
    s->envc = envc;
    uint32_t nfiles = sbx_wire_get_u32(&r);
    if (r.bad || nfiles > SBX_MAX_FILES) {
        fail(err, "nfiles");
        goto bad;
    }
    out->files = xcalloc((size_t)nfiles + 1, sizeof(*out->files));
    for (uint32_t i = 0; i < nfiles; i++) {
        out->files[i].name = sbx_wire_get_bytes(&r, NULL, true);
        out->files[i].mode = sbx_wire_get_u32(&r);
        out->files[i].data = sbx_wire_get_bytes(&r, &out->files[i].len, false);
    }
    s->files = out->files;
    s->nfiles = nfiles;
    uint32_t collect = sbx_wire_get_u32(&r);
    if (collect > 1) {
        fail(err, "collect flag");
        goto bad;
    }
    s->collect_files = collect == 1;
    if (r.bad || r.n != 0) {
        fail(err, r.bad ? "truncated" : "trailing bytes");
        goto bad;
    }
    if (sbx_spec_validate(s, err) != 0)
        goto bad;
    return 0;
bad:
    sbx_wire_spec_free(out);
    return -1;
}

void sbx_wire_spec_free(struct sbx_wire_spec *ws)
{
    xfree_null(&ws->argv);
    xfree_null(&ws->env);
    xfree_null(&ws->files);
    memset(&ws->spec, 0, sizeof(ws->spec));
}

void sbx_wire_encode_exit(const struct sbx_exit *e, struct buf *out)
{
    sbx_wire_put_u32(out, e->reason);
    sbx_wire_put_u32(out, (uint32_t)e->exit_code);
    sbx_wire_put_u32(out, (uint32_t)e->term_signal);
    sbx_wire_put_u32(out, (uint32_t)e->host_pid);
    sbx_wire_put_u32(out, e->host_uid);
    sbx_wire_put_u64(out, e->wall_us);
    sbx_wire_put_u64(out, e->cpu_us);
    sbx_wire_put_u64(out, e->peak_memory_bytes);
    sbx_wire_put_u64(out, e->oom_kills);
    sbx_wire_put_bytes(out, e->cgroup, strnlen(e->cgroup, sizeof(e->cgroup) - 1));
    sbx_wire_put_bytes(out, e->cgroup_name, strnlen(e->cgroup_name, sizeof(e->cgroup_name) - 1));
    sbx_wire_put_bytes(out, e->error, strnlen(e->error, sizeof(e->error) - 1));
}

int sbx_wire_decode_exit(const void *p, size_t n, struct sbx_exit *e)
{
    struct sbx_wire_reader r;
    size_t len;
    memset(e, 0, sizeof(*e));
    sbx_wire_reader_init(&r, p, n);
    e->reason = sbx_wire_get_u32(&r);
    e->exit_code = (int32_t)sbx_wire_get_u32(&r);
    e->term_signal = (int32_t)sbx_wire_get_u32(&r);
    e->host_pid = (int32_t)sbx_wire_get_u32(&r);
    e->host_uid = sbx_wire_get_u32(&r);
    e->wall_us = sbx_wire_get_u64(&r);
    e->cpu_us = sbx_wire_get_u64(&r);
    e->peak_memory_bytes = sbx_wire_get_u64(&r);
    e->oom_kills = sbx_wire_get_u64(&r);
    const char *cg = sbx_wire_get_bytes(&r, &len, true);
    if (cg && len < sizeof(e->cgroup))
        memcpy(e->cgroup, cg, len + 1);
    else
        r.bad = true;
    const char *cgn = sbx_wire_get_bytes(&r, &len, true);
    if (cgn && len < sizeof(e->cgroup_name))
        memcpy(e->cgroup_name, cgn, len + 1);
    else
        r.bad = true;
    const char *msg = sbx_wire_get_bytes(&r, &len, true);
    if (msg && len < sizeof(e->error))
        memcpy(e->error, msg, len + 1);
    else
        r.bad = true;
    if (r.bad || r.n != 0 || e->reason >= SBX_REASON__COUNT)
        return -1;
    return 0;
}

void sbx_wire_encode_offer(const struct sbx_wire_offer *o, struct buf *out)
{
    sbx_wire_put_u64(out, o->work_bytes);
    sbx_wire_put_u64(out, o->tmp_bytes);
    sbx_wire_put_u32(out, o->has_cgroup ? 1u : 0u);
    sbx_wire_put_u64(out, o->cg_memory);
    sbx_wire_put_u32(out, o->cg_pids);
    sbx_wire_put_u32(out, o->cg_cpu);
}

int sbx_wire_decode_offer(const void *p, size_t n, struct sbx_wire_offer *o)
{
    struct sbx_wire_reader r;
    memset(o, 0, sizeof(*o));
    sbx_wire_reader_init(&r, p, n);
    o->work_bytes = sbx_wire_get_u64(&r);
    o->tmp_bytes = sbx_wire_get_u64(&r);
    uint32_t cg = sbx_wire_get_u32(&r);
    o->has_cgroup = cg == 1;
    o->cg_memory = sbx_wire_get_u64(&r);
    o->cg_pids = sbx_wire_get_u32(&r);
    o->cg_cpu = sbx_wire_get_u32(&r);
    return r.bad || r.n != 0 || cg > 1 ? -1 : 0;
}

void sbx_wire_msg_begin(struct buf *b, enum sbx_msg_type type, uint16_t flags, uint64_t id)
{
    struct sbx_msg_hdr h = {.magic = SBX_WIRE_MAGIC, .type = (uint16_t)type, .flags = flags, .id = id};
    (void)buf_append(b, &h, sizeof(h));
}

int sbx_wire_msg_parse(const void *p, size_t n, struct sbx_msg_hdr *hdr, const void **body, size_t *body_len)
{
    if (n < sizeof(*hdr))
        return -1;
    memcpy(hdr, p, sizeof(*hdr));
    if (hdr->magic != SBX_WIRE_MAGIC)
        return -1;
    *body = (const char *)p + sizeof(*hdr);
    *body_len = n - sizeof(*hdr);
    return 0;
}

int sbx_wire_send(int sock, const void *p, size_t n, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * SBX_WIRE_MAX_FDS)];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > SBX_WIRE_MAX_FDS)
        return -EINVAL;
    if (nfds > 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t w = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1)
            return -errno;
        return (size_t)w == n ? 0 : -EMSGSIZE;
    }
}

static long wire_recv(int sock, void *p, size_t cap, int *fds, int *nfds, int flags)
{
    struct iovec iov = {.iov_base = p, .iov_len = cap};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * SBX_WIRE_MAX_FDS)];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    ssize_t r;
    *nfds = 0;
    do
        r = recvmsg(sock, &mh, flags);
    while (r == -1 && errno == EINTR);
    if (r == -1)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (size_t)i, sizeof(int));
            if (*nfds < SBX_WIRE_MAX_FDS)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return -EMSGSIZE;
    }
    return (long)r;
}

long sbx_wire_recv(int sock, void *p, size_t cap, int *fds, int *nfds)
{
    return wire_recv(sock, p, cap, fds, nfds, MSG_CMSG_CLOEXEC);
}

long sbx_wire_recv_inheritable(int sock, void *p, size_t cap, int *fds, int *nfds)
{
    return wire_recv(sock, p, cap, fds, nfds, 0);
}
