/* config_cli.h: `agentd config check|print`. */
#ifndef AGENTD_CONFIG_CLI_H
#define AGENTD_CONFIG_CLI_H

int config_cli_main(int argc, char **argv);

#endif
