#include "sandbox/sbx_cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"

static const char *const cgc_names[SBX_CGC__COUNT] = {"memory", "pids", "cpu", "cpuacct"};

static char *join(const char *a, const char *b)
{
    struct buf p = BUF_INIT(BUF_UNBOUNDED);
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/')
        la--;
    (void)buf_append(&p, a, la);
    if (b[0] != '/')
        (void)buf_append_char(&p, '/');
    if (strcmp(b, "/") != 0)
        (void)buf_append_str(&p, b);
    return buf_steal(&p, NULL);
}

int sbx_cgroup_write(const char *dir, const char *file, const char *value)
{
    char *path = join(dir, file);
    int rc = -1, fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd != -1) {
        size_t n = strlen(value);
        ssize_t w = write(fd, value, n);
        rc = (w == (ssize_t)n) ? 0 : -1;
        int saved = errno;
        close(fd);
        errno = saved;
    }
    xfree(path);
    return rc;
}

long sbx_cgroup_read(const char *dir, const char *file, char *out, size_t cap)
{
    char *path = join(dir, file);
    long rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    xfree(path);
    if (fd == -1)
        return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, out + len, cap - 1 - len);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                rc = (long)len;
            break;
        }
        len += (size_t)r;
    }
    if (len + 1 >= cap)
        rc = (long)len;
    out[len] = '\0';
    close(fd);
    return rc;
}

int sbx_cgroup_keyed(const char *body, const char *key, uint64_t *val)
{
    size_t kl = strlen(key);
    for (const char *line = body; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            const char *v = line + kl + 1;
            const char *e = v;
            while (*e >= '0' && *e <= '9')
                e++;
            return str_to_u64(str_make(v, (size_t)(e - v)), val);
        }
    }
    return -1;
}

static bool file_exists(const char *dir, const char *file)
{
    char *path = join(dir, file);
    bool ok = access(path, F_OK) == 0;
    xfree(path);
    return ok;
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static bool opt_has(const char *opts, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = opts; p;) {
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0' || p[n] == '\n'))
            return true;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return false;
}

static bool list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\n')
            e++;
        if ((size_t)(e - p) == n && strncmp(p, name, n) == 0)
            return true;
        p = e;
    }
    return false;
}

/* Joins a cgroup path to a mount whose root is mroot (a bind of a subtree, or a cgroup namespace). */
static char *in_mount(const char *mnt, const char *mroot, const char *cgpath)
{
    size_t rl = strlen(mroot);
    if (strcmp(mroot, "/") != 0 && strncmp(cgpath, mroot, rl) == 0 && (cgpath[rl] == '/' || cgpath[rl] == '\0'))
        cgpath += rl;
    return join(mnt, cgpath[0] ? cgpath : "/");
}

int sbx_cgroup_detect(struct sbx_cgroup_env *env, const char *mountinfo, const char *self_cgroup,
                      const char *parent_path, struct buf *why)
{
    char line[4096];
    char *v2_root = NULL, *v1_root[SBX_CGC__COUNT] = {0};
    memset(env, 0, sizeof(*env));
    if (parent_path && parent_path[0])
        env->parent_path = xstrdup(parent_path);

    FILE *f = fopen(mountinfo, "re");
    if (f == NULL) {
        (void)buf_printf(why, "cannot read %s: %s", mountinfo, strerror(errno));
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
        char *fields[6] = {0}, *save = NULL, *tok = strtok_r(line, " ", &save);
        int nf = 0;
        for (; tok && nf < 6; tok = strtok_r(NULL, " ", &save))
            fields[nf++] = tok;
        while (tok && strcmp(tok, "-") != 0)
            tok = strtok_r(NULL, " ", &save);
        if (nf < 6 || tok == NULL)
            continue;
        char *fstype = strtok_r(NULL, " ", &save);
        (void)strtok_r(NULL, " ", &save);
        char *super = strtok_r(NULL, " \n", &save);
        if (fstype == NULL || super == NULL)
            continue;
        unescape(fields[3]);
        unescape(fields[4]);
        if (strcmp(fstype, "cgroup2") == 0 && env->v2_mount == NULL) {
            env->v2_mount = xstrdup(fields[4]);
            v2_root = xstrdup(fields[3]);
        } else if (strcmp(fstype, "cgroup") == 0) {
            for (int c = 0; c < SBX_CGC__COUNT; c++) {
                if (env->mount[c] == NULL && opt_has(super, cgc_names[c])) {
                    env->mount[c] = xstrdup(fields[4]);
                    v1_root[c] = xstrdup(fields[3]);
                }
            }
        }
    }
    fclose(f);

    f = fopen(self_cgroup, "re");
    if (f == NULL) {
        (void)buf_printf(why, "cannot read %s: %s", self_cgroup, strerror(errno));
        goto out;
    }
    while (fgets(line, sizeof(line), f)) {
        /* hierarchy-id:controller-list:path */
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c1 = *c2 = '\0';
        char *ctrls = c1 + 1, *path = c2 + 1;
        path[strcspn(path, "\n")] = '\0';
        if (strcmp(line, "0") == 0 && ctrls[0] == '\0') {
            if (env->v2_mount && env->v2_own == NULL)
                env->v2_own = in_mount(env->v2_mount, v2_root, path);
            continue;
        }
        for (int c = 0; c < SBX_CGC__COUNT; c++)
            if (env->mount[c] && env->own[c] == NULL && opt_has(ctrls, cgc_names[c]))
                env->own[c] = in_mount(env->mount[c], v1_root[c], path);
    }
    fclose(f);

    /* v2 first: it is what production runs. It counts only when our cgroup is offered memory and pids. */
    if (env->v2_own) {
        char ctl[512];
        if (sbx_cgroup_read(env->v2_own, "cgroup.controllers", ctl, sizeof(ctl)) >= 0 && list_has(ctl, "memory") &&
            list_has(ctl, "pids")) {
            env->version = 2;
            env->have[SBX_CGC_MEMORY] = env->have[SBX_CGC_PIDS] = true;
            env->have[SBX_CGC_CPU] = list_has(ctl, "cpu");
            env->have[SBX_CGC_CPUACCT] = false; /* cpu.stat is always there on v2 */
            goto out;
        }
        (void)buf_printf(why, "cgroup v2 at %s lacks memory or pids; ", env->v2_mount);
    }
    if (env->own[SBX_CGC_MEMORY] && env->own[SBX_CGC_PIDS]) {
        env->version = 1;
        for (int c = 0; c < SBX_CGC__COUNT; c++)
            env->have[c] = env->own[c] != NULL;
        goto out;
    }
    (void)buf_printf(why, "no cgroup hierarchy with memory and pids controllers");
out:
    xfree(v2_root);
    for (int c = 0; c < SBX_CGC__COUNT; c++)
        xfree(v1_root[c]);
    return 0;
}

static char *parent_for(const struct sbx_cgroup_env *env, const char *mnt, const char *own)
{
    if (env->parent_path)
        return join(mnt, env->parent_path);
    return join(own, "agentd-sandbox");
}

static int mkdir_ok(const char *dir, struct buf *why)
{
    if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
        (void)buf_printf(why, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Moves every process of the cgroup own into the leaf own/agentd, so own may enable controllers. A process
 * may fork while we move: a few passes until the list reads empty. */
static int evacuate(const char *own, struct buf *why)
{
    char *leaf = join(own, "agentd");
    int rc = -1;
    char pids[8192];
    if (mkdir_ok(leaf, why) != 0)
        goto out;
    for (int round = 0; round < 8; round++) {
        long n = sbx_cgroup_read(own, "cgroup.procs", pids, sizeof(pids));
        if (n < 0) {
            (void)buf_printf(why, "read %s/cgroup.procs: %s", own, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        char *save = NULL;
        for (char *pid = strtok_r(pids, "\n", &save); pid; pid = strtok_r(NULL, "\n", &save)) {
            if (sbx_cgroup_write(leaf, "cgroup.procs", pid) != 0 && errno != ESRCH) {
                (void)buf_printf(why, "move %s to %s: %s", pid, leaf, strerror(errno));
                goto out;
            }
        }
    }
    rc = 0;
out:
    xfree(leaf);
    return rc;
}

static void controllers_line(const struct sbx_cgroup_env *env, char *out, size_t cap)
{
    (void)snprintf(out, cap, "+memory +pids%s", env->have[SBX_CGC_CPU] ? " +cpu" : "");
}

static int prepare_v2(struct sbx_cgroup_env *env, struct buf *why)
{
    char want[64], have[512];
    controllers_line(env, want, sizeof(want));
    char *parent = parent_for(env, env->v2_mount, env->v2_own);
    int rc = -1;
    /* Our own cgroup hands the controllers down only if its subtree_control has them. */
    if (env->parent_path == NULL) {
        if (sbx_cgroup_read(env->v2_own, "cgroup.subtree_control", have, sizeof(have)) < 0) {
            (void)buf_printf(why, "read %s/cgroup.subtree_control: %s", env->v2_own, strerror(errno));
            goto out;
        }
        if (!list_has(have, "memory") || !list_has(have, "pids") ||
            (env->have[SBX_CGC_CPU] && !list_has(have, "cpu"))) {
            char procs[64];
            if (sbx_cgroup_read(env->v2_own, "cgroup.procs", procs, sizeof(procs)) > 0 && evacuate(env->v2_own, why))
                goto out;
            if (sbx_cgroup_write(env->v2_own, "cgroup.subtree_control", want) != 0) {
                (void)buf_printf(why, "enable controllers in %s: %s", env->v2_own, strerror(errno));
                goto out;
            }
        }
    }
    if (mkdir_ok(parent, why) != 0)
        goto out;
    if (sbx_cgroup_read(parent, "cgroup.subtree_control", have, sizeof(have)) < 0 || !list_has(have, "memory") ||
        !list_has(have, "pids") || (env->have[SBX_CGC_CPU] && !list_has(have, "cpu"))) {
        if (sbx_cgroup_write(parent, "cgroup.subtree_control", want) != 0) {
            (void)buf_printf(why, "enable controllers in %s: %s", parent, strerror(errno));
            goto out;
        }
    }
    env->has_kill = file_exists(parent, "cgroup.kill");
    for (int c = 0; c < SBX_CGC__COUNT; c++)
        env->parent[c] = env->have[c] ? xstrdup(parent) : NULL;
    rc = 0;
out:
    xfree(parent);
    return rc;
}

static int prepare_v1(struct sbx_cgroup_env *env, struct buf *why)
{
    for (int c = 0; c < SBX_CGC__COUNT; c++) {
        if (!env->have[c])
            continue;
        env->parent[c] = parent_for(env, env->mount[c], env->own[c]);
        if (mkdir_ok(env->parent[c], why) != 0)
            return -1;
    }
    return 0;
}

int sbx_cgroup_prepare(struct sbx_cgroup_env *env, struct buf *why)
{
    int rc = -1;
    if (env->version == 2)
        rc = prepare_v2(env, why);
    else if (env->version == 1)
        rc = prepare_v1(env, why);
    else
        (void)buf_printf(why, "no usable cgroup hierarchy");
    if (rc != 0) {
        for (int c = 0; c < SBX_CGC__COUNT; c++)
            xfree_null(&env->parent[c]);
    }
    return rc;
}

void sbx_cgroup_env_free(struct sbx_cgroup_env *env)
{
    for (int c = 0; c < SBX_CGC__COUNT; c++) {
        xfree(env->mount[c]);
        xfree(env->own[c]);
        xfree(env->parent[c]);
    }
    xfree(env->v2_mount);
    xfree(env->v2_own);
    xfree(env->parent_path);
    memset(env, 0, sizeof(*env));
}

void sbx_cgroup_describe(const struct sbx_cgroup_env *env, struct buf *out)
{
    bool first = true;
    for (int c = 0; c < SBX_CGC__COUNT; c++) {
        if (env->have[c] && env->parent[c]) {
            (void)buf_printf(out, "%s%s", first ? "" : " ", cgc_names[c]);
            first = false;
        }
    }
}

int sbx_cgroup_gc(const struct sbx_cgroup_env *env)
{
    int removed = 0;
    for (int c = 0; c < SBX_CGC__COUNT; c++) {
        if (env->parent[c] == NULL)
            continue;
        DIR *d = opendir(env->parent[c]);
        if (d == NULL)
            continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            uint64_t pid;
            const char *n = e->d_name, *dash;
            if (strncmp(n, "run-", 4) != 0 || (dash = strchr(n + 4, '-')) == NULL ||
                str_to_u64(str_make(n + 4, (size_t)(dash - n - 4)), &pid) != 0 || pid == 0 || pid > INT32_MAX)
                continue;
            /* A live engine (us included) owns its groups; only a dead one's are garbage. */
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
                continue;
            struct sbx_cgroup cg;
            memset(&cg, 0, sizeof(cg));
            cg.fd = -1;
            cg.version = env->version;
            cg.dir[c] = join(env->parent[c], n);
            sbx_cgroup_kill(&cg);
            if (rmdir(cg.dir[c]) == 0)
                removed++;
            xfree(cg.dir[c]);
        }
        closedir(d);
    }
    return removed;
}

/* Two controllers co-mounted (cpu,cpuacct) share a directory: act on it once. */
static bool first_use(const struct sbx_cgroup *cg, int c)
{
    for (int i = 0; i < c; i++)
        if (cg->dir[i] && strcmp(cg->dir[i], cg->dir[c]) == 0)
            return false;
    return true;
}

/* What sbx_cgroup_stats reads, by version: the peak, the OOM count, the CPU time (in SBX_CGC_CPUACCT's dir on v1). */
static const char *const stat_files[2][3] = {
    {"memory.max_usage_in_bytes", "memory.oom_control", "cpuacct.usage"},
    {"memory.peak", "memory.events", "cpu.stat"},
};

static const char *stat_dir(const struct sbx_cgroup *cg, int i)
{
    return cg->version == 1 && i == 2 ? cg->dir[SBX_CGC_CPUACCT] : cg->dir[SBX_CGC_MEMORY];
}

void sbx_cgroup_open_stats(struct sbx_cgroup *cg)
{
    if (cg->stats_open)
        return;
    for (int i = 0; i < 3; i++) {
        const char *dir = stat_dir(cg, i);
        cg->stat_fd[i] = -1;
        if (dir) {
            char *path = join(dir, stat_files[cg->version == 2][i]);
            cg->stat_fd[i] = open(path, O_RDONLY | O_CLOEXEC);
            xfree(path);
        }
    }
    cg->stats_open = true;
}

/* Reads stat file i from its open fd (from offset 0: kernfs makes the text afresh), else by path. */
static long read_stat(struct sbx_cgroup *cg, int i, char *out, size_t cap)
{
    if (!cg->stats_open || cg->stat_fd[i] == -1) {
        const char *dir = stat_dir(cg, i);
        return dir ? sbx_cgroup_read(dir, stat_files[cg->version == 2][i], out, cap) : -1;
    }
    ssize_t n;
    do
        n = pread(cg->stat_fd[i], out, cap - 1, 0);
    while (n == -1 && errno == EINTR);
    if (n < 0)
        return -1;
    out[n] = '\0';
    return (long)n;
}

int sbx_cgroup_create(const struct sbx_cgroup_env *env, const char *name, struct sbx_cgroup *cg, struct buf *why)
{
    memset(cg, 0, sizeof(*cg));
    cg->fd = -1;
    cg->version = env->version;
    for (int c = 0; c < SBX_CGC__COUNT; c++)
        if (env->parent[c])
            cg->dir[c] = join(env->parent[c], name);
    for (int c = 0; c < SBX_CGC__COUNT; c++) {
        if (cg->dir[c] == NULL || !first_use(cg, c))
            continue;
        if (mkdir(cg->dir[c], 0755) == -1) {
            (void)buf_printf(why, "mkdir %s: %s", cg->dir[c], strerror(errno));
            /* Remove what this call made, but not a directory that was already there. */
            for (int k = 0; k < c; k++)
                if (cg->dir[k] && first_use(cg, k))
                    (void)rmdir(cg->dir[k]);
            for (int k = 0; k < SBX_CGC__COUNT; k++)
                xfree_null(&cg->dir[k]);
            return -1;
        }
    }
    if (cg->version == 2 && cg->dir[SBX_CGC_MEMORY]) {
        cg->fd = open(cg->dir[SBX_CGC_MEMORY], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cg->fd == -1) {
            (void)buf_printf(why, "open %s: %s", cg->dir[SBX_CGC_MEMORY], strerror(errno));
            (void)sbx_cgroup_destroy(cg);
            return -1;
        }
    }
    return 0;
}

static int put(struct sbx_cgroup *cg, int c, const char *file, const char *value, bool optional, struct buf *why)
{
    if (cg->dir[c] == NULL)
        return 0;
    if (sbx_cgroup_write(cg->dir[c], file, value) == 0)
        return 0;
    if (optional && errno == ENOENT)
        return 0;
    (void)buf_printf(why, "write %s/%s: %s", cg->dir[c], file, strerror(errno));
    return -1;
}

int sbx_cgroup_set_limits(struct sbx_cgroup *cg, uint64_t memory, uint32_t pids, uint32_t cpu_percent, struct buf *why)
{
    char mem[32], npids[16], quota[48];
    if (memory)
        (void)snprintf(mem, sizeof(mem), "%" PRIu64, memory);
    else
        (void)snprintf(mem, sizeof(mem), cg->version == 2 ? "max" : "-1");
    if (pids)
        (void)snprintf(npids, sizeof(npids), "%u", pids);
    else
        (void)snprintf(npids, sizeof(npids), "max");
    if (cg->version == 2) {
        if (cpu_percent)
            (void)snprintf(quota, sizeof(quota), "%u 100000", cpu_percent * 1000u);
        else
            (void)snprintf(quota, sizeof(quota), "max 100000");
        if (put(cg, SBX_CGC_MEMORY, "memory.max", mem, false, why) ||
            put(cg, SBX_CGC_MEMORY, "memory.swap.max", "0", true, why) ||
            put(cg, SBX_CGC_MEMORY, "memory.oom.group", "1", true, why) ||
            put(cg, SBX_CGC_PIDS, "pids.max", npids, false, why) || put(cg, SBX_CGC_CPU, "cpu.max", quota, false, why))
            return -1;
        return 0;
    }
    if (cpu_percent)
        (void)snprintf(quota, sizeof(quota), "%u", cpu_percent * 1000u);
    else
        (void)snprintf(quota, sizeof(quota), "-1");
    /* memsw must stay >= limit_in_bytes: raise both in the order the kernel accepts. */
    if (put(cg, SBX_CGC_MEMORY, "memory.limit_in_bytes", mem, false, why) ||
        put(cg, SBX_CGC_MEMORY, "memory.memsw.limit_in_bytes", mem, true, why) ||
        put(cg, SBX_CGC_PIDS, "pids.max", npids, false, why) ||
        put(cg, SBX_CGC_CPU, "cpu.cfs_period_us", "100000", false, why) ||
        put(cg, SBX_CGC_CPU, "cpu.cfs_quota_us", quota, false, why))
        return -1;
    return 0;
}

int sbx_cgroup_attach(struct sbx_cgroup *cg, pid_t pid, struct buf *why)
{
    char p[16];
    (void)snprintf(p, sizeof(p), "%d", (int)pid);
    for (int c = 0; c < SBX_CGC__COUNT; c++) {
        if (cg->dir[c] == NULL || !first_use(cg, c))
            continue;
        if (sbx_cgroup_write(cg->dir[c], "cgroup.procs", p) != 0) {
            (void)buf_printf(why, "attach to %s: %s", cg->dir[c], strerror(errno));
            return -1;
        }
    }
    return 0;
}

int sbx_cgroup_stats(struct sbx_cgroup *cg, struct sbx_cgroup_stats *st)
{
    char body[2048];
    uint64_t v;
    memset(st, 0, sizeof(*st));
    const char *mem = cg->dir[SBX_CGC_MEMORY];
    if (mem == NULL)
        return -1;
    if (cg->version == 2) {
        if (read_stat(cg, 0, body, sizeof(body)) > 0 &&
            str_to_u64(str_trim(str_make(body, strcspn(body, "\n"))), &v) == 0) {
            st->peak_memory_bytes = v;
            st->have_peak = true;
        }
        if (read_stat(cg, 1, body, sizeof(body)) > 0 && sbx_cgroup_keyed(body, "oom_kill", &v) == 0)
            st->oom_kills = v;
        if (read_stat(cg, 2, body, sizeof(body)) > 0 && sbx_cgroup_keyed(body, "usage_usec", &v) == 0) {
            st->cpu_us = v;
            st->have_cpu = true;
        }
        return 0;
    }
    if (read_stat(cg, 0, body, sizeof(body)) > 0 && str_to_u64(str_make(body, strcspn(body, "\n")), &v) == 0) {
        st->peak_memory_bytes = v;
        st->have_peak = true;
    }
    if (read_stat(cg, 1, body, sizeof(body)) > 0 && sbx_cgroup_keyed(body, "oom_kill", &v) == 0)
        st->oom_kills = v;
    if (read_stat(cg, 2, body, sizeof(body)) > 0 && str_to_u64(str_make(body, strcspn(body, "\n")), &v) == 0) {
        st->cpu_us = v / 1000;
        st->have_cpu = true;
    }
    return 0;
}

static const char *procs_dir(const struct sbx_cgroup *cg)
{
    return cg->dir[SBX_CGC_PIDS] ? cg->dir[SBX_CGC_PIDS] : cg->dir[SBX_CGC_MEMORY];
}

void sbx_cgroup_kill(struct sbx_cgroup *cg)
{
    const char *dir = procs_dir(cg);
    char body[8192];
    if (dir == NULL)
        return;
    if (cg->version == 2 && sbx_cgroup_write(dir, "cgroup.kill", "1") == 0)
        return;
    if (sbx_cgroup_read(dir, "cgroup.procs", body, sizeof(body)) <= 0)
        return;
    for (char *p = body; *p;) {
        char *e = p;
        while (*e >= '0' && *e <= '9')
            e++;
        uint64_t pid;
        if (e > p && str_to_u64(str_make(p, (size_t)(e - p)), &pid) == 0 && pid > 1 && pid < INT32_MAX)
            (void)kill((pid_t)pid, SIGKILL);
        p = *e ? e + 1 : e;
    }
}

bool sbx_cgroup_empty(struct sbx_cgroup *cg)
{
    const char *dir = procs_dir(cg);
    char body[64];
    if (dir == NULL)
        return true;
    return sbx_cgroup_read(dir, "cgroup.procs", body, sizeof(body)) <= 0;
}

int sbx_cgroup_destroy(struct sbx_cgroup *cg)
{
    int rc = 0;
    if (cg->fd != -1) {
        close(cg->fd);
        cg->fd = -1;
    }
    if (cg->stats_open) {
        for (int i = 0; i < 3; i++)
            if (cg->stat_fd[i] != -1)
                close(cg->stat_fd[i]);
        cg->stats_open = false;
    }
    for (int c = SBX_CGC__COUNT - 1; c >= 0; c--) {
        if (cg->dir[c] == NULL || !first_use(cg, c))
            continue;
        int tries = 0;
        while (rmdir(cg->dir[c]) == -1 && errno != ENOENT) {
            /* EBUSY: a process is still on its way out; kill what is there and look again. */
            if (errno != EBUSY || ++tries > 100) {
                log_perror("rmdir %s", cg->dir[c]);
                rc = -1;
                break;
            }
            sbx_cgroup_kill(cg);
            (void)usleep(1000);
        }
    }
    for (int c = 0; c < SBX_CGC__COUNT; c++)
        xfree_null(&cg->dir[c]);
    return rc;
}
