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
    if (!sbx_spec_file_name_ok(name, strlen(name))) {
        (void)buf_printf(err, "file name refused");
        return -1;
    }
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
                    (mode & 0777) ? (mode & 0777) : 0644);
    if (fd == -1) {
        (void)buf_printf(err, "create %s: %s", name, strerror(errno));
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

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
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

void sbx_files_collect(int work_fd, const struct sbx_files_known *known, size_t nknown, uint32_t max_files,
                       uint64_t max_bytes, struct sbx_result *res)
{
    res->files_collected = true;
    DIR *d = fdopendir(work_fd);
    if (d == NULL) {
        close(work_fd);
        res->files_truncated = true;
        return;
    }
    rewinddir(d); /* the fd may share its offset with another (a dup) */
    int dfd = dirfd(d);
    char **names = NULL;
    size_t nnames = 0, cap = 0, scanned = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (++scanned > SBX_FILES_OUT_SCAN) {
            res->files_truncated = true;
            break;
        }
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 || !S_ISREG(st.st_mode))
            continue;
        if (!sbx_spec_file_name_ok(e->d_name, strlen(e->d_name)) || !utf8_ok(e->d_name)) {
            res->files_truncated = true;
            continue;
        }
        if (nnames == cap) {
            cap = cap ? cap * 2 : 16;
            names = xrealloc(names, cap * sizeof(*names));
        }
        names[nnames++] = xstrdup(e->d_name);
    }
    if (nnames > 1)
        qsort(names, nnames, sizeof(*names), cmp_name);
    uint64_t used = 0;
    for (size_t i = 0; i < nnames; i++) {
        char *data = NULL;
        size_t len = 0;
        if (res->nfiles >= max_files) {
            res->files_truncated = true;
            break;
        }
        uint32_t mode = 0644;
        uint64_t room = max_bytes - used;
        const struct sbx_files_known *kn = NULL;
        for (size_t k = 0; k < nknown && kn == NULL; k++)
            if (strcmp(known[k].name, names[i]) == 0)
                kn = &known[k];
        /* An input left as it was is no output, however large. */
        int rc = read_one(dfd, names[i], kn && kn->len > room ? kn->len : room, &data, &len, &mode);
        if (rc != 0) {
            if (rc < 0)
                res->files_truncated = true;
            continue;
        }
        bool same = kn && kn->len == len && kn->hash == sbx_files_hash(data, len);
        if (same || len > room) {
            if (!same)
                res->files_truncated = true;
            xfree(data);
            continue;
        }
        res->files = xrealloc(res->files, (res->nfiles + 1) * sizeof(*res->files));
        struct sbx_outfile *f = &res->files[res->nfiles++];
        f->name = names[i];
        names[i] = NULL;
        f->data = data;
        f->len = len;
        f->mode = mode;
        used += len;
    }
    for (size_t i = 0; i < nnames; i++)
        xfree(names[i]);
    xfree(names);
    closedir(d);
}
