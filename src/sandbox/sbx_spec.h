/* sbx_spec.h: the sandbox's vocabulary: what a run is asked to do (struct sbx_spec, its limits and files), how it
 * ended (struct sbx_result, enum sbx_reason), the host-level settings (struct sbx_config), and the checks a spec
 * must pass. Every sandbox module speaks it; only sbx.h (pools and runs) adds the machinery on top, so the
 * engine, the wire format, the JSON codec, seccomp and the file writer depend on this and not on each other's
 * callers. */
#ifndef AGENTD_SBX_SPEC_H
#define AGENTD_SBX_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum sbx_lang { SBX_LANG_NONE = 0, SBX_LANG_PYTHON, SBX_LANG_SH, SBX_LANG_NODE, SBX_LANG__COUNT };

/* The run's network. Both are a network namespace of its own, with no route out.
 *   none    its loopback down, and no socket family but AF_UNIX (seccomp);
 *   egress  its loopback up, AF_INET and AF_INET6 sockets too, and one way out: the pool's HTTP proxy, listening
 *           on 127.0.0.1:3128 inside and named by HTTP_PROXY and HTTPS_PROXY (sbx_egress.h), which lets through
 *           what the daemon's egress policy allows. */
enum sbx_net { SBX_NET_NONE = 0, SBX_NET_EGRESS, SBX_NET__COUNT };
/* The modes' names, by value, NULL-terminated (a configuration enum's table too). */
extern const char *const sbx_net_names[SBX_NET__COUNT + 1];
/* "none", "egress"; NULL for a value out of range. */
const char *sbx_net_name(enum sbx_net net);
/* The mode named s, or -1. */
int sbx_net_parse(const char *s);

/* Why a run ended. */
enum sbx_reason {
    SBX_REASON_EXIT = 0,   /* the program exited by itself: exit_code */
    SBX_REASON_SIGNAL,     /* it died of a signal nobody outside sent (SIGSEGV, SIGSYS, SIGXFSZ, ...) */
    SBX_REASON_TIMEOUT,    /* wall-clock deadline passed: the whole tree was killed */
    SBX_REASON_CPU,        /* RLIMIT_CPU reached */
    SBX_REASON_MEMORY,     /* the cgroup memory limit was hit and the OOM killer killed it */
    SBX_REASON_OUTPUT_CAP, /* stdout or stderr passed its cap: the tree was killed */
    SBX_REASON_KILLED,     /* sbx_run_cancel() or the pool closed */
    SBX_REASON_ERROR,      /* the sandbox could not be set up (fail closed: nothing of the program ran) */
    SBX_REASON__COUNT
};

struct sbx_limits {
    uint64_t wall_ms;             /* deadline from start; the whole tree is SIGKILLed (10 s) */
    uint64_t cpu_ms;              /* CPU per process, RLIMIT_CPU, rounded up to whole seconds (10 s) */
    uint64_t memory_bytes;        /* cgroup memory limit of the whole run; without cgroups, RLIMIT_DATA per
                                   * process (256 MiB) */
    uint64_t address_space_bytes; /* RLIMIT_AS per process when cgroups limit memory (4 GiB: V8 reserves a lot) */
    uint32_t pids;                /* cgroup pids.max and RLIMIT_NPROC (64) */
    uint32_t nofile;              /* RLIMIT_NOFILE (64) */
    uint64_t fsize_bytes;         /* RLIMIT_FSIZE: largest file a process may write (8 MiB) */
    uint32_t cpu_percent;         /* cgroup CPU bandwidth, 100 = one CPU (100) */
    uint64_t stdout_max;          /* bytes kept of stdout; more kills the run with OUTPUT_CAP (1 MiB) */
    uint64_t stderr_max;          /* same for stderr (1 MiB) */
    uint64_t work_bytes;          /* size of the tmpfs at /work, the working directory (64 MiB) */
    uint64_t tmp_bytes;           /* size of the tmpfs at /tmp (64 MiB) */
};

/* Ceilings a spec may ask for; sbx_spec_validate() refuses more. */
#define SBX_MAX_ARGS 1024
#define SBX_MAX_ENV 256
#define SBX_MAX_FILES 256
#define SBX_MAX_SPEC_BYTES (64u << 20) /* argv + env + files + code, serialized */
#define SBX_MAX_STDIN_BYTES (64u << 20)
#define SBX_MAX_OUTPUT_BYTES (256u << 20)
#define SBX_MAX_TMPFS_BYTES (4ull << 30)

/* A file placed in /work before the program starts. name is a relative path of plain names (sbx_spec_file_path_ok). */
struct sbx_file {
    const char *name;
    const void *data;
    size_t len;
    uint32_t mode; /* permission bits only (& 0777); 0 means 0644 */
};

/* What to run. Nothing here is kept after sbx_run_start() returns: the spec is serialized at once. */
struct sbx_spec {
    enum sbx_lang lang; /* NONE: argv[0] is the program (absolute, or looked up in PATH inside) */
    const char *code;   /* with lang and no argv: the snippet, written to /work/main.{py,sh,js} */
    size_t code_len;
    const char *const *argv; /* with lang: arguments given to the interpreter; else the command */
    size_t argc;
    const char *const *env; /* extra "NAME=value" entries on top of PATH, HOME, TMPDIR, LANG, USER */
    size_t envc;
    const void *stdin_data; /* bytes the program reads on stdin, then EOF */
    size_t stdin_len;
    const struct sbx_file *files;
    size_t nfiles;
    struct sbx_limits limits;
    enum sbx_net net;
    /* Output files: with collect_files, the regular files left in /work and its subdirectories when the run ends
     * (named by their relative path; other than the snippet and the input files left unchanged) come back in the
     * result, at most files_out_max of them and files_out_bytes together (sbx_files_collect; defaults
     * SBX_FILES_OUT_MAX, SBX_FILES_OUT_BYTES). */
    bool collect_files;
    uint32_t files_out_max;
    uint64_t files_out_bytes;
};

#define SBX_FILES_OUT_MAX 64
#define SBX_FILES_OUT_BYTES (1u << 20)
#define SBX_FILES_OUT_SCAN 4096 /* directory entries looked at, at most */
#define SBX_FILES_DEPTH 8       /* directories in a file's name (in and out), at most */
#define SBX_FILES_PATH_MAX 1024 /* bytes of a file's name (in and out), at most */

/* A file the run left in /work (see sbx_spec.collect_files). */
struct sbx_outfile {
    char *name;
    char *data;
    size_t len;
    uint32_t mode; /* permission bits */
};

struct sbx_result {
    enum sbx_reason reason;
    int exit_code;   /* the exit status when the program exited (whatever the reason), else -1 */
    int term_signal; /* the signal that ended it, 0 when it exited */
    uint64_t wall_us;
    uint64_t cpu_us;            /* user + system of the whole tree (cgroup), else of the reaped processes */
    uint64_t peak_memory_bytes; /* cgroup peak, else the largest RSS of a reaped process */
    uint64_t oom_kills;         /* processes the OOM killer killed in this run */
    struct buf out, err;        /* captured stdout / stderr, at most stdout_max / stderr_max bytes */
    bool out_truncated, err_truncated;
    uint32_t host_uid;    /* the unprivileged host uid the run's uid 1000 was mapped to */
    int host_pid;         /* pid of the run's init (the program) on the host, 0 if it never started */
    char cgroup[8];       /* "v2", "v1" or "none": which cgroup limits were in force */
    char cgroup_name[48]; /* the run's cgroup under the parent ("run-<engine pid>-<n>"), removed by now */
    char error[256];      /* with ERROR: what failed (a step and errno), for the operator */
    /* with spec.collect_files: the output files, by name; files_truncated when some were left out (more than
     * files_out_max, past files_out_bytes, or not readable as a regular file) */
    bool files_collected, files_truncated;
    struct sbx_outfile *files;
    size_t nfiles;
    /* network "egress": what went through the proxy (sbx_egress.h) */
    bool egress;
    uint64_t egress_connections, egress_refused, egress_bytes_out, egress_bytes_in;
};

enum sbx_cgroup_mode {
    SBX_CGROUP_AUTO = 0, /* use cgroup limits when the host offers them (v2, else v1); fail closed if set-up fails */
    SBX_CGROUP_REQUIRED, /* refuse to run without them */
    SBX_CGROUP_OFF,      /* rlimits only */
};

/* Host-level settings shared by every run of a pool. */
struct sbx_config {
    uint32_t uid_base;  /* runs map their uid 1000 to host uids uid_base .. uid_base+uid_count-1 (1000000000) */
    uint32_t uid_count; /* also the ceiling on children alive at once (1024) */
    enum sbx_cgroup_mode cgroup_mode;
    const char *cgroup_parent; /* cgroup path (from the hierarchy root) to create run groups under; NULL means
                                * "<our own cgroup>/agentd-sandbox" */
    unsigned warm_python;      /* warm Python interpreters kept ready besides the pool's plain children (0) */
};

void sbx_limits_default(struct sbx_limits *l);
/* Zeroes the spec and sets the default limits. */
void sbx_spec_init(struct sbx_spec *spec);
/* 0 when the spec may run; else -1 and a reason in err. Run by sbx_run_start too. */
int sbx_spec_validate(const struct sbx_spec *spec, struct buf *err);
/* A file name a spec may carry: a plain basename, 1 to 255 bytes, no '/', no NUL, no control character, not
 * "." or "..", not starting with '.' or '-'. Names come from the agent and so are hostile. */
bool sbx_spec_file_name_ok(const char *name, size_t len);
/* A file name a run may be given or give back (sbx_files.h): a relative path, segments separated by single '/',
 * each passing sbx_spec_file_name_ok (so no empty, "." or ".." part, no leading '/'), at most SBX_FILES_DEPTH
 * directories and SBX_FILES_PATH_MAX bytes. Linear in len. */
bool sbx_spec_file_path_ok(const char *name, size_t len);
void sbx_result_free(struct sbx_result *res);

const char *sbx_reason_name(enum sbx_reason r);
const char *sbx_lang_name(enum sbx_lang l);
/* The file a snippet is written to in /work ("main.py"), NULL for NONE. */
const char *sbx_lang_snippet_name(enum sbx_lang l);
/* -1 when unknown; accepts "python", "python3", "sh", "node", "js". */
int sbx_lang_parse(const char *name);

#endif
