/* keys_cli.h: `agentd keys create|list|show|update|revoke` against the data dir. */
#ifndef AGENTD_KEYS_CLI_H
#define AGENTD_KEYS_CLI_H

#include <cjson/cJSON.h>
#include <stdio.h>

int keys_cli_main(int argc, char **argv);

/* Turns create/update flags (argv[0..argc)) into the JSON body the admin API takes; sets *data_dir and
 * *config_path when given. NULL after printing the problem to err. Exported for tests. */
cJSON *keys_cli_flags(int argc, char **argv, const char **data_dir, const char **config_path, FILE *err);

#endif
