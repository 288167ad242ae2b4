#include "sandbox/sbx_files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
