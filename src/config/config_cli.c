#include "config/config_cli.h"

#include <stdio.h>

int config_cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "agentd config: not built yet\n");
    return 2;
}
