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

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

/* Creates each file in dirfd; 0, or -1 with the failing name and errno in err (nothing is rolled back: the
 * caller is a sandbox child that exits on failure). */
int sbx_files_write(int dirfd, const struct sbx_file *files, size_t n, struct buf *err);
/* Writes one file the same way (the code snippet uses it). */
int sbx_files_write_one(int dirfd, const char *name, const void *data, size_t len, unsigned mode, struct buf *err);

#endif
