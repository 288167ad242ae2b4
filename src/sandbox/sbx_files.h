/* sbx_files.h: the files a run asks for in its work dir: name checks and creation.
 *
 * Names come from the agent (tool arguments) and so are hostile. A name is a plain basename
 * (sbx_spec_file_name_ok: 1 to 255 bytes, no '/', no NUL, no control character, not "." or "..", and it does not
 * start with '.' or '-': no hidden-file or option look-alikes), checked again here. Files are created relative to the work dir's fd with O_CREAT|O_EXCL|O_NOFOLLOW, so
 * an existing entry, a symlink included, is never followed or overwritten. */
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

/* Reads the output files of a finished run from its /work (work_fd, closed here) into res->files (sorted by name):
 * the regular files at the top level (subdirectories are not walked; symlinks, FIFOs, sockets and devices are
 * skipped, and nothing is opened but with O_NOFOLLOW|O_NONBLOCK, then checked to be a regular file), whose name
 * passes sbx_spec_file_name_ok and is valid UTF-8, other than the known ones left unchanged. At most max_files
 * files and max_bytes of content together, and at most SBX_FILES_OUT_SCAN directory entries are looked at: a file
 * left out for any of these limits, or because its name is refused or it cannot be read, sets
 * res->files_truncated. Sets res->files_collected. Linear in the entries looked at (plus a sort). */
void sbx_files_collect(int work_fd, const struct sbx_files_known *known, size_t nknown, uint32_t max_files,
                       uint64_t max_bytes, struct sbx_result *res);

#endif
