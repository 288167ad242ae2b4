#include "sandbox/sandbox_cli.h"

#include <stdio.h>

int sandbox_cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "agentd sandbox: not built yet\n");
    return 2;
}
