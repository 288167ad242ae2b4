/* sbx_wire.h: the byte format runs travel in, between the pool client, the zygote and a sandbox child.
 *
 * A spec is serialized once by the client and decoded twice: by the engine (for the limits) and by the child
 * (for everything) in its own address space, so the child never shares memory with anyone. Integers are
 * host-endian (all parties are the same binary on the same machine); byte strings are a u32 length, the bytes
 * and a NUL, so a decoded string can be used in place as a C string. Decoders check every length against what
 * is left, refuse interior NULs where a C string is meant, and enforce the SBX_MAX_* ceilings: a malformed
 * message is refused, never half-read. */
#ifndef AGENTD_SBX_WIRE_H
#define AGENTD_SBX_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

#define SBX_WIRE_MAGIC 0x53425831u /* "SBX1" */

/* Message types on the client <-> zygote socket and the zygote <-> child control socket. */
enum sbx_msg_type {
    SBX_MSG_HELLO = 1, /* zygote -> client: ready; body: a text summary (isolation in force) */
    SBX_MSG_RUN,       /* client -> zygote, zygote -> child: body = spec; fds stdin, stdout, stderr [, memfd] */
    SBX_MSG_CANCEL,    /* client -> zygote: body = u32 reason */
    SBX_MSG_RESULT,    /* zygote -> client: body = u32 children ready, then struct sbx_exit */
    SBX_MSG_MAPPED,    /* zygote -> child: ids mapped and cgroup joined, go on */
    SBX_MSG_READY,     /* child -> zygote: set-up done, waiting for a run */
    SBX_MSG_ERROR,     /* child -> zygote: a step failed; zygote -> client: no engine; body = text */
    SBX_MSG_POOL,      /* zygote -> client: body = u32 children ready */
    SBX_MSG_WORKDIR,   /* child -> engine, while warm (a warm interpreter: with its run): fd = /work (O_DIRECTORY);
                        * the RESULT of a run with spec.collect_files carries it on to the client, which reads the
                        * files */
    SBX_MSG_HOLD,      /* child -> engine, in set-up: fd = its seccomp filter's listener, held past the run's end */
    SBX_MSG_OFFER,     /* zygote -> client: id = token, a ready child reserved for direct runs; fd = its control
                        * socket; body = struct sbx_wire_offer (sbx_wire_encode_offer) */
    SBX_MSG_WITHDRAW,  /* zygote -> client: id = token, that child is gone */
    SBX_MSG_EGRESS,    /* child -> engine, in set-up (network "egress"): fd = the socket listening on its loopback for
                        * the proxy; engine -> client, once the child has its RUN: id = run, the same fd, to serve
                        * (sbx_egress.h) until the run's RESULT */
};

/* Flag on RUN: the spec is not inline but in the memfd passed as the 4th fd. */
#define SBX_MSG_F_MEMFD 1u
/* Flag on RUN, client -> zygote: a direct run. Body = u64 token of the offered child, then the spec; no fds. The
 * client sends it before it sends the child its RUN itself (sbx_engine_attach_direct). */
#define SBX_MSG_F_DIRECT 2u
/* Specs up to this size travel inline in the message; larger ones in a sealed memfd. */
#define SBX_WIRE_INLINE_MAX (32u << 10)
/* Largest message ever read from a socket (inline spec + header, or a result). */
#define SBX_WIRE_MSG_MAX (SBX_WIRE_INLINE_MAX + 64)

struct sbx_msg_hdr {
    uint32_t magic;
    uint16_t type;
    uint16_t flags;
    uint64_t id;
};

/* What the engine knows when a run has ended; the client adds the output. */
struct sbx_exit {
    uint32_t reason; /* enum sbx_reason */
    int32_t exit_code;
    int32_t term_signal;
    int32_t host_pid;
    uint32_t host_uid;
    uint64_t wall_us;
    uint64_t cpu_us;
    uint64_t peak_memory_bytes;
    uint64_t oom_kills;
    char cgroup[8];
    char cgroup_name[48];
    char error[256];
};

/* A spec decoded from wire bytes; strings point into those bytes, which must outlive it. */
struct sbx_wire_spec {
    struct sbx_spec spec;
    const char **argv; /* argc + 1 entries, NULL-terminated */
    const char **env;
    struct sbx_file *files;
};

struct sbx_wire_reader {
    const unsigned char *p;
    size_t n;
    bool bad; /* sticky: set by the first read past the end or a malformed field */
};

void sbx_wire_put_u32(struct buf *b, uint32_t v);
void sbx_wire_put_u64(struct buf *b, uint64_t v);
void sbx_wire_put_bytes(struct buf *b, const void *p, size_t n);
void sbx_wire_put_str(struct buf *b, const char *s);

void sbx_wire_reader_init(struct sbx_wire_reader *r, const void *p, size_t n);
uint32_t sbx_wire_get_u32(struct sbx_wire_reader *r);
uint64_t sbx_wire_get_u64(struct sbx_wire_reader *r);
/* Returns the bytes (NUL-terminated in place) and their length; NULL and bad set when malformed. With
 * cstring, a NUL inside the bytes is malformed too. */
const char *sbx_wire_get_bytes(struct sbx_wire_reader *r, size_t *len, bool cstring);

/* Appends the spec to out (which should be unbounded or large); -1 when it passes SBX_MAX_SPEC_BYTES.
 * stdin is not part of it: it is streamed. The spec is assumed valid (sbx_spec_validate). */
int sbx_wire_encode_spec(const struct sbx_spec *spec, struct buf *out);
/* Decodes and validates; 0 or -1 (the reason in err, which may be NULL). Free with sbx_wire_spec_free. */
int sbx_wire_decode_spec(const void *p, size_t n, struct sbx_wire_spec *out, struct buf *err);
void sbx_wire_spec_free(struct sbx_wire_spec *ws);

void sbx_wire_encode_exit(const struct sbx_exit *e, struct buf *out);
int sbx_wire_decode_exit(const void *p, size_t n, struct sbx_exit *e);

/* What a warm child offered for direct runs was made for (the body of SBX_MSG_OFFER; sbx_engine.h). */
struct sbx_wire_offer {
    uint64_t work_bytes, tmp_bytes; /* the sizes of its /work and /tmp */
    bool has_cgroup;                /* if so, the limits its cgroup has (a run must want exactly these) */
    uint64_t cg_memory;
    uint32_t cg_pids, cg_cpu;
};
void sbx_wire_encode_offer(const struct sbx_wire_offer *o, struct buf *out);
/* 0, or -1 when p is not exactly one encoded offer. */
int sbx_wire_decode_offer(const void *p, size_t n, struct sbx_wire_offer *o);

/* Message framing: header then body. */
void sbx_wire_msg_begin(struct buf *b, enum sbx_msg_type type, uint16_t flags, uint64_t id);
/* Splits a received message; -1 when it is shorter than a header or the magic is wrong. */
int sbx_wire_msg_parse(const void *p, size_t n, struct sbx_msg_hdr *hdr, const void **body, size_t *body_len);

/* sendmsg/recvmsg of one SOCK_SEQPACKET message with up to SBX_WIRE_MAX_FDS fds (SCM_RIGHTS). send returns 0, or -errno
 * (-EAGAIN on a full non-blocking socket). recv returns the byte count (0 at EOF) or -errno; received fds are
 * CLOEXEC, *nfds says how many, and a truncated message or control part is -EMSGSIZE with the fds closed. */
#define SBX_WIRE_MAX_FDS 6
int sbx_wire_send(int sock, const void *p, size_t n, const int *fds, int nfds);
long sbx_wire_recv(int sock, void *p, size_t cap, int *fds, int *nfds);
/* The same, with the received fds inheritable (no MSG_CMSG_CLOEXEC): for the runner, whose RUN brings the run's
 * stdio, which lands on 0-2 when those are free. */
long sbx_wire_recv_inheritable(int sock, void *p, size_t cap, int *fds, int *nfds);

#endif
