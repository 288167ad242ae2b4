/* sbx_pywarm.h: warm Python interpreters for the sandbox pool.
 *
 * A Python warm child has done phase A like every warm child (namespaces, uid, cgroup, mounts, no_new_privs,
 * capabilities dropped, seccomp), then execs /usr/bin/python3 -c BOOTSTRAP with its control socket on fd 3, a
 * pipe on 0-2 and the same clean environment and working directory (/work) a cold run gets. The bootstrap (the
 * source is in sbx_pywarm.c) lets the interpreter finish its own start-up (site, encodings), says READY and blocks
 * reading the control socket. The engine then sends one PYRUN message: the snippet, the files, extra environment
 * and the run's rlimits (marshal-encoded by sbx_pywarm_encode), with the three stdio pipe ends (SCM_RIGHTS).
 * The bootstrap writes /work/main.py and the files as the C child would, puts the pipes on 0-2, sets the
 * rlimits, closes every other fd (the control socket too: that EOF is the engine's "exec" signal), and runs the
 * code once in a fresh __main__ module. The process is never given a second run: it exits with the program, so
 * nothing one run does can be seen by another. docs/sandbox.md has the isolation review.
 *
 * Only runs whose cold start would look the same qualify (sbx_pywarm_eligible): a Python snippet with no extra
 * interpreter arguments and no environment entry that changes how the interpreter starts (PYTHON*, LANG, LC_*,
 * HOME, TZ). Others take a plain warm child, the cold path. */
#ifndef AGENTD_SBX_PYWARM_H
#define AGENTD_SBX_PYWARM_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

/* engine -> Python warm child: body = marshal payload (or memfd, SBX_MSG_F_MEMFD); fds stdin, stdout, stderr. */
#define SBX_MSG_PYRUN 64

/* Whether a run may be served by a warm interpreter (results identical to `python3 main.py`). */
bool sbx_pywarm_eligible(const struct sbx_spec *s);

/* The PYRUN payload for s: a marshal tuple (code, files, env, rlimits, collect_files), rlimits as the C child
 * would set them (cgroup_memory: a cgroup limits memory, so no RLIMIT_DATA). */
void sbx_pywarm_encode(const struct sbx_spec *s, bool cgroup_memory, struct buf *out);

/* The argv of the warm interpreter (NULL-terminated, static storage): python3 -c BOOTSTRAP and the wire
 * constants the bootstrap needs. */
const char *const *sbx_pywarm_argv(void);

#endif
