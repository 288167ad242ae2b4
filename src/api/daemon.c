#include "api/daemon.h"

#include <stdio.h>

int daemon_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "agentd serve: not built yet\n");
    return 2;
}
