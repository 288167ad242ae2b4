#include "sandbox/sbx_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

int sbx_files_write_one(int dirfd, const char *name, const void *data, size_t len, unsigned mode, struct buf *err)
{
    size_t nlen = strlen(name);
    if (!sbx_spec_file_path_ok(name, nlen)) {
        (void)buf_printf(err, "file name refused");
        return -1;
    }
    /* the directories of a relative name, one level at a time from dirfd: made when missing, and each opened with
     * O_DIRECTORY|O_NOFOLLOW, so nothing the name meets is followed */
    char seg[256];
    int cur = dirfd;
    const char *p0 = name;
    for (const char *sl; (sl = memchr(p0, '/', nlen - (size_t)(p0 - name))) != NULL; p0 = sl + 1) {
        size_t sn = (size_t)(sl - p0);
        memcpy(seg, p0, sn);
        seg[sn] = '\0';
        if (mkdirat(cur, seg, 0755) == -1 && errno != EEXIST) {
            (void)buf_printf(err, "create %s: %s", name, strerror(errno));
            if (cur != dirfd)
                close(cur);
            return -1;
        }
        int next = openat(cur, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        if (cur != dirfd)
            close(cur);
        if (next == -1) {
            (void)buf_printf(err, "create %s: %s", name, strerror(e));
            return -1;
        }
        cur = next;
    }
    int fd = openat(cur, p0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
                    (mode & 0777) ? (mode & 0777) : 0644);
    int e = errno;
    if (cur != dirfd)
        close(cur);
    if (fd == -1) {
        (void)buf_printf(err, "create %s: %s", name, strerror(e));
        return -1;
    }
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1) {
            (void)buf_printf(err, "write %s: %s", name, strerror(errno));
            close(fd);
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    /* The umask must not narrow what was asked for (the child's umask is 022 anyway). */
    if (mode & 0777)
        (void)fchmod(fd, mode & 0777);
    close(fd);
    return 0;
}

int sbx_files_write(int dirfd, const struct sbx_file *files, size_t n, struct buf *err)
{
    for (size_t i = 0; i < n; i++)
        if (sbx_files_write_one(dirfd, files[i].name, files[i].data, files[i].len, files[i].mode, err) != 0)
            return -1;
    return 0;
}

uint64_t sbx_files_hash(const void *data, size_t len)
{
    /* FNV-1a: only tells "left as given" from "changed", for files the caller itself wrote there. */
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (n == 9 || (n == 1 && c < 0xc2) || (n == 3 && c > 0xf4))
            return false;
        for (size_t i = 1; i <= n; i++)
            if ((p[i] & 0xc0) != 0x80)
                return false;
        if ((n == 2 && c == 0xe0 && p[1] < 0xa0) || (n == 2 && c == 0xed && p[1] >= 0xa0) ||
            (n == 3 && c == 0xf0 && p[1] < 0x90) || (n == 3 && c == 0xf4 && p[1] >= 0x90))
            return false;
        p += n + 1;
    }
    return true;
}

/* A directory's entry, while it is walked. */
struct ent {
    char *name;
    bool dir;
};

/* The byte at i of the entry's sort key: its name, followed by '/' for a directory. */
static unsigned key_at(const struct ent *e, size_t i, size_t len)
{
    if (i < len)
        return (unsigned char)e->name[i];
    return i == len && e->dir ? '/' : 0;
}

/* Entries in the order of their full names: a directory sorts as its name followed by '/', so that walking each
 * directory in this order gives every file in strcmp order of its relative name ("a.txt" before "a/x"). */
static int cmp_ent(const void *pa, const void *pb)
{
    const struct ent *a = pa, *b = pb;
    size_t la = strlen(a->name), lb = strlen(b->name);
    for (size_t i = 0;; i++) {
        unsigned x = key_at(a, i, la), y = key_at(b, i, lb);
        if (x != y)
            return x < y ? -1 : 1;
        if (x == 0)
            return 0;
    }
}

/* Reads one regular file of at most room bytes: 0 with data, len and mode set; 1 when it is no regular file
 * (skipped quietly);
 * -1 when it cannot be read or is larger than room (then nothing is kept). */
static int read_one(int dfd, const char *name, uint64_t room, char **data, size_t *len, uint32_t *mode)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd == -1)
        return errno == ELOOP ? 1 : -1;
    struct stat st;
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 1;
    }
    if ((uint64_t)st.st_size > room) {
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size, n = 0;
    char *p = xmalloc(cap + 1);
    while (n < cap) {
        ssize_t r = read(fd, p + n, cap - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    p[n] = '\0';
    *mode = (uint32_t)(st.st_mode & 0777);
    *data = p;
    *len = n;
    return 0;
}

struct walk {
    const struct sbx_files_known *known;
    size_t nknown;
    uint32_t max_files;
    uint64_t max_bytes, used;
    size_t scanned;
    bool stop;
    struct sbx_result *res;
    char path[SBX_FILES_PATH_MAX + 1]; /* the relative name of the directory walked ("" at the top), then '/' */
    size_t plen;
};

/* One regular file of the walk (name in dfd; its relative name in w->path). */
static void take_file(struct walk *w, int dfd, const char *name)
{
    struct sbx_result *res = w->res;
    if (res->nfiles >= w->max_files) {
        res->files_truncated = true;
        w->stop = true;
        return;
    }
    char *data = NULL;
    size_t len = 0;
    uint32_t mode = 0644;
    uint64_t room = w->max_bytes - w->used;
    const struct sbx_files_known *kn = NULL;
    for (size_t k = 0; k < w->nknown && kn == NULL; k++)
        if (strcmp(w->known[k].name, w->path) == 0)
            kn = &w->known[k];
    /* An input left as it was is no output, however large. */
    int rc = read_one(dfd, name, kn && kn->len > room ? kn->len : room, &data, &len, &mode);
    if (rc != 0) {
        if (rc < 0)
            res->files_truncated = true;
        return;
    }
    bool same = kn && kn->len == len && kn->hash == sbx_files_hash(data, len);
    if (same || len > room) {
        if (!same)
            res->files_truncated = true;
        xfree(data);
        return;
    }
    res->files = xrealloc(res->files, (res->nfiles + 1) * sizeof(*res->files));
    struct sbx_outfile *f = &res->files[res->nfiles++];
    f->name = xstrdup(w->path);
    f->data = data;
    f->len = len;
    f->mode = mode;
    w->used += len;
}

/* Walks the directory open on fd (owned here), depth directories below /work: its entries sorted (cmp_ent), each
 * regular file taken, each directory walked through an fd opened relative to this one with
 * O_DIRECTORY|O_NOFOLLOW (a symlink is never followed, whatever replaced what). Recursion is bounded by
 * SBX_FILES_DEPTH, the entries by SBX_FILES_OUT_SCAN over the whole walk. */
static void walk_dir(struct walk *w, int fd, int depth)
{
    struct sbx_result *res = w->res;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        res->files_truncated = true;
        return;
    }
    rewinddir(d); /* the fd may share its offset with another (a dup) */
    int dfd = dirfd(d);
    struct ent *ents = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (++w->scanned > SBX_FILES_OUT_SCAN) {
            res->files_truncated = true;
            w->stop = true;
            break;
        }
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
            continue; /* symlinks, FIFOs, sockets, devices */
        if (!sbx_spec_file_name_ok(e->d_name, strlen(e->d_name)) || !utf8_ok(e->d_name)) {
            res->files_truncated = true;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            ents = xrealloc(ents, cap * sizeof(*ents));
        }
        ents[n].name = xstrdup(e->d_name);
        ents[n].dir = S_ISDIR(st.st_mode);
        n++;
    }
    if (n > 1)
        qsort(ents, n, sizeof(*ents), cmp_ent);
    size_t plen = w->plen;
    for (size_t i = 0; i < n && !w->stop; i++) {
        size_t nl = strlen(ents[i].name);
        if (plen + nl + 1 > SBX_FILES_PATH_MAX) { /* its name (and a '/') would be too long */
            res->files_truncated = true;
            continue;
        }
        memcpy(w->path + plen, ents[i].name, nl + 1);
        if (!ents[i].dir) {
            take_file(w, dfd, ents[i].name);
            continue;
        }
        if (depth >= SBX_FILES_DEPTH) {
            res->files_truncated = true;
            continue;
        }
        int sub = openat(dfd, ents[i].name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (sub == -1) {
            if (errno != ELOOP && errno != ENOTDIR) /* replaced by a symlink or a file meanwhile: skipped */
                res->files_truncated = true;
            continue;
        }
        w->path[plen + nl] = '/';
        w->path[plen + nl + 1] = '\0';
        w->plen = plen + nl + 1;
        walk_dir(w, sub, depth + 1);
        w->plen = plen;
    }
    w->path[plen] = '\0';
    for (size_t i = 0; i < n; i++)
        xfree(ents[i].name);
    xfree(ents);
    closedir(d);
}

void sbx_files_collect(int work_fd, const struct sbx_files_known *known, size_t nknown, uint32_t max_files,
                       uint64_t max_bytes, struct sbx_result *res)
{
    res->files_collected = true;
    struct walk *w = xcalloc(1, sizeof(*w));
    w->known = known;
    w->nknown = nknown;
    w->max_files = max_files;
    w->max_bytes = max_bytes;
    w->res = res;
    walk_dir(w, work_fd, 0);
    xfree(w);
}
