/* sbx_files.h: the files a run asks for in its work dir, and those it leaves there: name checks, creation, and the
 * bounded walk that reads them back.
 *
 * Names come from the agent (tool arguments) and so are hostile. A name is a relative path (sbx_spec_file_path_ok):
 * segments separated by single '/', each a plain name (sbx_spec_file_name_ok: 1 to 255 bytes, no NUL, no control
 * character, not "." or "..", and not starting with '.' or '-': no hidden-file or option look-alikes), so no
 * leading '/', no empty segment and no "..", at most SBX_FILES_DEPTH directories and SBX_FILES_PATH_MAX bytes.
 * Files are created relative to the work dir's fd, one directory level at a time (mkdirat, then openat with
 * O_DIRECTORY|O_NOFOLLOW), the file itself with O_CREAT|O_EXCL|O_NOFOLLOW, so an existing entry, a symlink
 * included, is never followed or overwritten. */
#ifndef AGENTD_SBX_FILES_H
#define AGENTD_SBX_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

/* Creates each file in dirfd; 0, or -1 with the failing name and errno in err (nothing is rolled back: the
 * caller is a sandbox child that exits on failure). */
int sbx_files_write(int dirfd, const struct sbx_file *files, size_t n, struct buf *err);
/* Writes one file the same way (the code snippet uses it). */
int sbx_files_write_one(int dirfd, const char *name, const void *data, size_t len, unsigned mode, struct buf *err);

/* What the run was given in /work (the snippet and the input files): a file still holding exactly that is not an
 * output. hash is sbx_files_hash of the content. */
struct sbx_files_known {
    char *name;
    size_t len;
    uint64_t hash;
};

uint64_t sbx_files_hash(const void *data, size_t len);

/* Reads the output files of a finished run from its /work (work_fd, closed here) into res->files, named by their
 * path relative to /work ("out/a.txt") and sorted by it (strcmp): the regular files of /work and of its
 * subdirectories, down to SBX_FILES_DEPTH levels, other than the known ones left unchanged. The walk never resolves
 * a path from the top: each directory is opened relative to its parent's fd with O_DIRECTORY|O_NOFOLLOW and each
 * file with O_NOFOLLOW|O_NONBLOCK, then checked to be a regular file, so a symlink (to a file or a directory) is
 * never followed and a FIFO never blocks. Every segment of a name passes sbx_spec_file_name_ok and is valid UTF-8
 * (a hidden directory, say .cache, is not walked). Each directory's entries are sorted (directories as "name/"),
 * so the files are met, and the limits applied, in the order of their names. At most max_files files and
 * max_bytes of content together, and at most SBX_FILES_OUT_SCAN directory entries over the whole walk (directories
 * included: a tree of a million empty directories costs the same as 4096): a file left out for any of these
 * limits, a directory deeper than SBX_FILES_DEPTH, a name longer than SBX_FILES_PATH_MAX or refused, or a file
 * that cannot be read, sets res->files_truncated. Sets res->files_collected. Linear in the entries looked at
 * (plus a sort per directory); at most SBX_FILES_DEPTH + 1 directories are open at once. */
void sbx_files_collect(int work_fd, const struct sbx_files_known *known, size_t nknown, uint32_t max_files,
                       uint64_t max_bytes, struct sbx_result *res);

#endif
