/* sandbox_cli.h: `agentd sandbox run|check`. */
#ifndef AGENTD_SANDBOX_CLI_H
#define AGENTD_SANDBOX_CLI_H

/* argv[0] is "sandbox". Returns the process exit code. */
int sandbox_cli_main(int argc, char **argv);

#endif
