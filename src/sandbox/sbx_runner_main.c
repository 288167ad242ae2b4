/* agentd-sandbox-runner: phase B of a warm sandbox child (sbx_runner.h), as a program of its own.
 *
 * A warm child execs it from the engine's memfd once its isolation is in place (namespaces, root, no privileges,
 * seccomp), with its control socket on fd 3: it says READY, waits for the run, and execs the run's program. Its
 * only library is libc, so the process the program replaces is a few pages rather than a copy of agentd's. Built
 * with agentd and linked into it (sbx_runner_image.c); never installed or run by hand. */
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "sandbox/sbx_runner.h"

int main(int argc, char **argv)
{
    (void)prctl(PR_SET_NAME, "agentd-sbx"); /* exec'd from an fd, it would be named "4" until the run's exec */
    if (argc != 2)
        _exit(SBX_CHILD_SETUP_FAILED);
    sbx_runner_main(SBX_RUNNER_CTL_FD, strcmp(argv[1], "1") == 0);
}
