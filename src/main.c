/* agentd: one binary, several commands. Each command lives with its subsystem; this file only dispatches. */
#include <curl/curlver.h>
#include <cjson/cJSON.h>
#include <http_parser.h>
#include <openssl/crypto.h>
#include <seccomp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>
#include <yaml.h>
#include <zlib.h>

#include "agent/mcp_conformance_client.h"
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
            "  config import-litellm FILE\n"
            "                        turn a LiteLLM config (model_list, router_settings) into agentd YAML\n"
            "  keys create|list|show|update|revoke\n"
            "                        manage virtual keys (agentd keys CMD --help)\n"
            "  spend report --by key|user|team|workflow|model|day [--since 7d] [--format table|json|csv]\n"
            "               [--data-dir DIR]\n"
            "                        spend from the ledger, grouped\n"
            "  spend whatif --rules FILE [--days N] [--data-dir DIR]\n"
            "                        what routing rules would have saved over the ledger\n"
            "  sandbox run|check|batch|bench\n"
            "                        run code in the sandbox; report isolation features; run many; measure\n"
            "  version               print the version, git commit, build date, compiler and libraries\n"
            "\n"
            "Every command answers --help.\n");
    return rc;
}

#ifndef AGENTD_GIT_COMMIT
#define AGENTD_GIT_COMMIT "unknown"
#endif
#ifndef AGENTD_BUILD_DATE
#define AGENTD_BUILD_DATE "unknown"
#endif
#if defined(__clang__)
#define COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define COMPILER "gcc " __VERSION__
#else
#define COMPILER "unknown"
#endif

static int version(void)
{
    const struct scmp_version *sv = seccomp_version();
    printf("agentd %s\n"
           "commit:   %s\n"
           "built:    %s\n"
           "compiler: %s\n"
           "libraries:\n"
           "  libuv %s\n"
           "  http-parser %d.%d.%d\n"
           "  libcurl %s (headers; the library is opened at first use)\n"
           "  cJSON %s\n"
           "  libyaml %s\n"
           "  libseccomp %u.%u.%u\n"
           "  SQLite %s\n"
           "  %s\n"
           "  zlib %s\n",
           AGENTD_VERSION, AGENTD_GIT_COMMIT, AGENTD_BUILD_DATE, COMPILER, uv_version_string(),
           HTTP_PARSER_VERSION_MAJOR, HTTP_PARSER_VERSION_MINOR, HTTP_PARSER_VERSION_PATCH, LIBCURL_VERSION,
           cJSON_Version(), yaml_get_version_string(), sv ? sv->major : 0, sv ? sv->minor : 0,
           sv ? sv->micro : 0, sqlite3_libversion(), OpenSSL_version(OPENSSL_VERSION), zlibVersion());
    return 0;
}

/* `agentd CMD ... --help`: commands without a help of their own get their lines of the overview. */
static const struct {
    const char *cmd, *text;
} helps[] = {
    {"serve", "usage: agentd serve [--config FILE] [--listen ADDR:PORT] [--ops-listen ADDR:PORT] [--data-dir DIR]\n"
              "                    [--workers N] [--log-level LEVEL] [--set PATH=VALUE]...\n"
              "run the daemon: API on :8000, probes and metrics on :8080.\n"
              "configuration: --config, else $AGENTD_CONFIG, else /app/config/agentd.yaml when it exists, else the\n"
              "built-in defaults; the file is watched and reloaded when it changes (and on SIGHUP).\n"},
    {"config", "usage: agentd config check FILE          validate a file (exit 0 valid, 2 invalid)\n"
               "       agentd config print [--config FILE] [--set PATH=VALUE]...\n"
               "                                        the effective configuration, secrets masked\n"
               "       agentd config describe           every setting (Markdown)\n"
               "       agentd config import-litellm FILE  LiteLLM model_list/router_settings -> agentd YAML on\n"
               "                                        stdout; what cannot be carried over on stderr\n"},
    {"spend", "usage: agentd spend report --by key|user|team|workflow|model|day [--since 7d]\n"
              "                           [--format table|json|csv] [--data-dir DIR]\n"
              "       agentd spend whatif --rules FILE [--days N] [--data-dir DIR]\n"},
    {"version", "usage: agentd version\nprint the version, git commit, build date, compiler and linked libraries\n"},
};

static bool wants_help(int argc, char **argv)
{
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) /* past "--": the sandboxed command's own */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    const char *cmd = argv[1];
    if (wants_help(argc, argv)) {
        for (size_t k = 0; k < sizeof(helps) / sizeof(helps[0]); k++) {
            if (strcmp(cmd, helps[k].cmd) == 0) {
                fputs(helps[k].text, stdout);
                return 0;
            }
        }
        if (strcmp(cmd, "sandbox") == 0) { /* its overview covers run, check, batch and bench */
            char *h[] = {argv[1], (char *)"--help", NULL};
            return sandbox_cli_main(2, h);
        }
    }
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
    if (strcmp(cmd, "mcp-client-conformance") == 0) /* a test tool (docs/mcp.md), not in the usage text */
        return mcp_conformance_client_main(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        return version();
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout, 0);
    fprintf(stderr, "agentd: unknown command '%s'\n", cmd);
    return usage(stderr, 2);
}
