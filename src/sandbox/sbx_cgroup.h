/* sbx_cgroup.h: per-run cgroups (memory, pids, CPU) on cgroup v2, with a v1 fallback.
 *
 * v2 (what Kubernetes nodes and current distributions run): one hierarchy. Run groups live under a parent,
 * by default "<our own cgroup>/agentd-sandbox". The "no internal processes" rule means controllers can only be
 * enabled in our cgroup's subtree_control once it holds no process, so when they are missing and our cgroup
 * is populated, every process in it is first moved to a leaf "<own>/agentd" (what systemd's Delegate= and
 * runc expect), then +memory +pids +cpu are enabled in our cgroup and in the parent. A run group gets
 * memory.max, memory.swap.max = 0, memory.oom.group = 1 (an OOM kills the whole run), pids.max and cpu.max;
 * the child is placed in it atomically by clone3(CLONE_INTO_CGROUP), or by a write to cgroup.procs.
 * Stats come from memory.peak, memory.events (oom_kill) and cpu.stat (usage_usec); cgroup.kill kills it.
 *
 * v1 (this build machine): one hierarchy per controller (memory, pids, cpu, cpuacct), each with its own
 * "<own>/agentd-sandbox" parent; limits in memory.limit_in_bytes (+ memsw), pids.max, cpu.cfs_quota_us;
 * stats from memory.max_usage_in_bytes, memory.oom_control (oom_kill) and cpuacct.usage.
 *
 * Detection reads mountinfo and /proc/self/cgroup; both paths are parameters so the unit tests can point
 * them at a fake tree of plain files. Everything here runs in the engine (zygote), never in a sandbox child. */
#ifndef AGENTD_SBX_CGROUP_H
#define AGENTD_SBX_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"

enum sbx_cgc { SBX_CGC_MEMORY = 0, SBX_CGC_PIDS, SBX_CGC_CPU, SBX_CGC_CPUACCT, SBX_CGC__COUNT };

struct sbx_cgroup_env {
    int version;                  /* 0 (none usable), 1 or 2 */
    char *mount[SBX_CGC__COUNT];  /* v1: mount point of each controller's hierarchy (NULL: absent) */
    char *own[SBX_CGC__COUNT];    /* v1: our cgroup path in it, from the hierarchy root */
    char *v2_mount;               /* v2: the cgroup2 mount point */
    char *v2_own;                 /* v2: our cgroup path */
    char *parent_path;            /* configured parent (NULL: "<own>/agentd-sandbox") */
    char *parent[SBX_CGC__COUNT]; /* after prepare: absolute parent dir per controller (v2: all the same) */
    bool have[SBX_CGC__COUNT];    /* controller usable */
    bool has_kill;                /* v2 cgroup.kill */
};

/* One run's group. */
struct sbx_cgroup {
    char *dir[SBX_CGC__COUNT]; /* absolute dirs; v2: the same string in every used slot */
    int fd;                    /* v2: O_DIRECTORY fd for CLONE_INTO_CGROUP, else -1 */
    int version;
    /* The files sbx_cgroup_stats reads, opened ahead by sbx_cgroup_open_stats (-1: could not), so that the read at
     * the end of a run, which the caller waits for, is three preads and not three path walks. Valid when
     * stats_open; a file without an fd is read by its path. */
    int stat_fd[3];
    bool stats_open;
};

struct sbx_cgroup_stats {
    uint64_t peak_memory_bytes; /* 0 when the kernel does not keep it (v2 before 5.19) */
    uint64_t cpu_us;
    uint64_t oom_kills;
    bool have_peak, have_cpu;
};

/* Finds usable hierarchies: v2 when our cgroup2 cgroup offers memory and pids, else v1 when memory and pids
 * hierarchies are mounted, else none (version 0, why says so). Returns 0 (even for none). */
int sbx_cgroup_detect(struct sbx_cgroup_env *env, const char *mountinfo, const char *self_cgroup,
                      const char *parent_path, struct buf *why);
/* Creates the parent(s) and enables controllers (see above). 0, or -1 with why. */
int sbx_cgroup_prepare(struct sbx_cgroup_env *env, struct buf *why);
void sbx_cgroup_env_free(struct sbx_cgroup_env *env);
/* Name of the controllers in force, e.g. "memory pids cpu". */
void sbx_cgroup_describe(const struct sbx_cgroup_env *env, struct buf *out);

/* Removes run groups ("run-<pid>-<n>") that an engine which has since died left behind (it was SIGKILLed
 * before it could rmdir them): their processes died with it (PDEATHSIG), so they are empty; anything still in
 * one is killed first. Returns how many were removed. */
int sbx_cgroup_gc(const struct sbx_cgroup_env *env);

/* mkdir of a run group called name under the parent(s). -1 with why on failure (nothing left behind). */
int sbx_cgroup_create(const struct sbx_cgroup_env *env, const char *name, struct sbx_cgroup *cg, struct buf *why);
/* Writes the limits; memory 0 / pids 0 / cpu_percent 0 leave that one unlimited. */
int sbx_cgroup_set_limits(struct sbx_cgroup *cg, uint64_t memory, uint32_t pids, uint32_t cpu_percent, struct buf *why);
/* Moves pid in (for groups not joined at clone). */
int sbx_cgroup_attach(struct sbx_cgroup *cg, pid_t pid, struct buf *why);
/* Opens the files sbx_cgroup_stats reads (once, ahead of the run); sbx_cgroup_destroy closes them. */
void sbx_cgroup_open_stats(struct sbx_cgroup *cg);
int sbx_cgroup_stats(struct sbx_cgroup *cg, struct sbx_cgroup_stats *st);
/* SIGKILLs everything in the group (cgroup.kill on v2, else each pid listed). */
void sbx_cgroup_kill(struct sbx_cgroup *cg);
/* true when no process is left in it. */
bool sbx_cgroup_empty(struct sbx_cgroup *cg);
/* rmdir (after killing what is left); frees cg's strings either way. -1 if a directory stayed. */
int sbx_cgroup_destroy(struct sbx_cgroup *cg);

/* Small file helpers, shared with the unit tests. */
int sbx_cgroup_write(const char *dir, const char *file, const char *value);
/* Reads at most cap-1 bytes, NUL-terminated; returns the length or -1. */
long sbx_cgroup_read(const char *dir, const char *file, char *out, size_t cap);
/* Finds "key N" in a flat-keyed file body (memory.events, cpu.stat, memory.oom_control). */
int sbx_cgroup_keyed(const char *body, const char *key, uint64_t *val);

#endif
