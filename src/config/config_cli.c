#include "config/config_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "config/config.h"
#include "config/litellm.h"

extern char **environ;

static int check(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: agentd config check FILE\n");
        return 2;
    }
    struct config_flags flags = {.config_path = argv[1]};
    struct buf errors = BUF_INIT(1 << 20);
    /* The file alone: the environment of the machine running the check is not the pod's. */
    char *no_env[] = {NULL};
    struct config *c = config_load(&flags, no_env, &errors);
    if (c == NULL) {
        fputs(errors.data ? errors.data : "invalid configuration\n", stderr);
        buf_free(&errors);
        return 2;
    }
    printf("%s: ok\n", argv[1]);
    config_unref(c);
    buf_free(&errors);
    return 0;
}

static int print(int argc, char **argv)
{
    struct config_flags flags = {0};
    int i = config_parse_flags(argc, argv, &flags, true);
    if (i < 0)
        return 2;
    if (i < argc) {
        fprintf(stderr, "agentd config print: unexpected argument '%s'\n", argv[i]);
        return 2;
    }
    flags.config_path = config_default_path(flags.config_path);
    struct buf errors = BUF_INIT(1 << 20);
    struct config *c = config_load(&flags, environ, &errors);
    if (c == NULL) {
        fputs(errors.data ? errors.data : "invalid configuration\n", stderr);
        buf_free(&errors);
        return 2;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    config_print(&out, c);
    fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    buf_free(&errors);
    config_unref(c);
    return 0;
}

static int describe(void)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    buf_append_str(&out, "| setting | type | default | allowed | environment | meaning |\n|---|---|---|---|---|---|\n");
    cfg_describe(&out, &config_schema, "");
    fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    return 0;
}

int config_cli_main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "describe") == 0)
        return describe();
    if (argc >= 2 && strcmp(argv[1], "check") == 0)
        return check(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "import-litellm") == 0)
        return litellm_import_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "print") == 0)
        return print(argc - 1, argv + 1);
    fprintf(stderr, "usage: agentd config check FILE | agentd config print [--config FILE] [--set PATH=VALUE]... | "
                    "agentd config describe | agentd config import-litellm FILE\n");
    return 2;
}
