/* agentd: one binary, several commands. Each command lives with its subsystem; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "api/daemon.h"
#include "api/keys_cli.h"
#include "config/config_cli.h"
#include "gateway/routing.h"
#include "policy/ledger_cli.h"
#include "sandbox/sandbox_cli.h"

static int usage(FILE *out, int rc)
{
    fprintf(out,
            "usage: agentd <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve [--config FILE] [--listen ADDR:PORT] [--ops-listen ADDR:PORT] [--data-dir DIR] [--workers N]\n"
            "                        run the daemon (API on :8000, probes and metrics on :8080)\n"
            "  config check FILE     validate a configuration file (exit 0 valid, 2 invalid)\n"
            "  config print [--config FILE]\n"
            "                        print the effective configuration, secrets masked\n"
            "  config describe       list every setting (Markdown)\n"
            "  keys create|list|show|update|revoke\n"
            "                        manage virtual keys (agentd keys CMD --help)\n"
            "  spend report --by key|user|team|workflow|model|day [--since 7d] [--format table|json|csv]\n"
            "               [--data-dir DIR]\n"
            "                        spend from the ledger, grouped\n"
            "  spend whatif --rules FILE [--days N] [--data-dir DIR]\n"
            "                        what routing rules would have saved over the ledger\n"
            "  sandbox run|check|batch|bench\n"
            "                        run code in the sandbox; report isolation features; run many; measure\n"
            "  version               print the version\n");
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return daemon_main(argc - 1, argv + 1);
    if (strcmp(cmd, "config") == 0)
        return config_cli_main(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return keys_cli_main(argc - 1, argv + 1);
    if (strcmp(cmd, "spend") == 0 && argc > 2 && strcmp(argv[2], "whatif") == 0)
        return routing_whatif_main(argc - 2, argv + 2);
    if (strcmp(cmd, "spend") == 0)
        return spend_cli_main(argc - 1, argv + 1);
    if (strcmp(cmd, "sandbox") == 0)
        return sandbox_cli_main(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("agentd %s\n", AGENTD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout, 0);
    fprintf(stderr, "agentd: unknown command '%s'\n", cmd);
    return usage(stderr, 2);
}
