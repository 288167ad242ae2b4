/* keys_cli.c: `agentd keys ...`. Flags become the same JSON the admin API takes, and go through the same
 * operation (admin_keys.c), so both agree on every check. Output is JSON on stdout (`list`/`show` print a table
 * unless --json); errors go to stderr with exit 2 (usage, bad value), 1 (store) or 3 (no such key). */
#include "api/keys_cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api/admin_keys.h"
#include "common/buf.h"
#include "common/str.h"
#include "config/config.h"
#include "store/store_config.h"

extern char **environ;

static const char create_usage[] =
    "usage: agentd keys create --name NAME [--user U] [--team T] [--tag k=v]... [--models a,b]\n"
    "                          [--budget-usd X [--budget-window total|day|week|month]] [--budget-tokens N]\n"
    "                          [--rpm N] [--tpm N] [--max-concurrent N] [--expires 30d] [--caller-attribution]\n"
    "                          [--mcp-tools a,srv__*] [--mcp-deny b]\n"
    "                          [--data-dir DIR] [--config FILE]\n"
    "Creates a virtual key and prints it as one JSON object; \"key\" is the secret, shown this once.\n";
static const char update_usage[] =
    "usage: agentd keys update ID [--name NAME] [--user U] [--team T] [--tag k=v]... [--models a,b|all]\n"
    "                          [--budget-usd X] [--budget-window W] [--budget-tokens N] [--rpm N] [--tpm N]\n"
    "                          [--max-concurrent N] [--expires 30d|never] [--caller-attribution|--no-caller-attribution]\n"
    "                          [--mcp-tools a,srv__*|all] [--mcp-deny b|none]\n"
    "                          [--data-dir DIR] [--config FILE]\n"
    "Changes the given fields of a key (--tag replaces all tags) and prints it as JSON.\n";
static const char list_usage[] = "usage: agentd keys list [--json] [--data-dir DIR] [--config FILE]\n"
                                 "Lists every key (never the secrets).\n";
static const char show_usage[] = "usage: agentd keys show ID [--json] [--data-dir DIR] [--config FILE]\n";
static const char revoke_usage[] = "usage: agentd keys revoke ID [--data-dir DIR] [--config FILE]\n"
                                   "Revokes a key: a running daemon refuses it within a second.\n";
static const char keys_usage[] =
    "usage: agentd keys create|list|show|update|revoke [options]   (agentd keys CMD --help)\n";

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int number(cJSON *o, const char *key, const char *flag, const char *v, bool whole, FILE *err)
{
    char *end;
    double d = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || (whole && strspn(v, "0123456789") != strlen(v))) {
        fprintf(err, "agentd keys: %s wants a %snumber, not '%s'\n", flag, whole ? "whole " : "", v);
        return -1;
    }
    cJSON_AddNumberToObject(o, key, d);
    return 0;
}

cJSON *keys_cli_flags(int argc, char **argv, const char **data_dir, const char **config_path, FILE *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *tags = NULL;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--caller-attribution") == 0 || strcmp(f, "--no-caller-attribution") == 0) {
            cJSON_DeleteItemFromObject(o, "caller_attribution");
            cJSON_AddBoolToObject(o, "caller_attribution", f[2] == 'c');
            continue;
        }
        if (strncmp(f, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(err, "agentd keys: %s '%s'\n", strncmp(f, "--", 2) ? "unexpected argument" : "missing value for",
                    f);
            goto fail;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(f, "--data-dir") == 0)
            *data_dir = v;
        else if (strcmp(f, "--config") == 0)
            *config_path = v;
        else if (strcmp(f, "--name") == 0 || strcmp(f, "--user") == 0 || strcmp(f, "--team") == 0 ||
                 strcmp(f, "--budget-window") == 0) {
            const char *key = strcmp(f, "--budget-window") == 0 ? "budget_window" : f + 2;
            if (cJSON_GetObjectItemCaseSensitive(o, key)) {
                fprintf(err, "agentd keys: %s given twice\n", f);
                goto fail;
            }
            cJSON_AddStringToObject(o, key, v);
        } else if (strcmp(f, "--tag") == 0) {
            const char *eq = strchr(v, '=');
            if (eq == NULL || eq == v) {
                fprintf(err, "agentd keys: --tag wants k=v, not '%s'\n", v);
                goto fail;
            }
            if (!tags)
                tags = cJSON_AddObjectToObject(o, "tags");
            char k[KEY_TEXT_MAX + 1];
            size_t kn = (size_t)(eq - v);
            if (kn > KEY_TEXT_MAX) {
                fprintf(err, "agentd keys: tag name too long\n");
                goto fail;
            }
            memcpy(k, v, kn);
            k[kn] = '\0';
            if (cJSON_GetObjectItemCaseSensitive(tags, k)) {
                fprintf(err, "agentd keys: --tag %s given twice\n", k);
                goto fail;
            }
            cJSON_AddStringToObject(tags, k, eq + 1);
        } else if (strcmp(f, "--models") == 0) {
            if (strcmp(v, "all") == 0 || strcmp(v, "*") == 0)
                cJSON_AddNullToObject(o, "models");
            else
                cJSON_AddStringToObject(o, "models", v);
        } else if (strcmp(f, "--mcp-tools") == 0 || strcmp(f, "--mcp-deny") == 0) {
            const char *field = f[6] == 't' ? "mcp_tools" : "mcp_deny";
            if (strcmp(v, "all") == 0 || strcmp(v, "none") == 0)
                cJSON_AddNullToObject(o, field);
            else
                cJSON_AddStringToObject(o, field, v);
        } else if (strcmp(f, "--budget-usd") == 0) {
            rc = number(o, "budget_usd", f, v, false, err);
        } else if (strcmp(f, "--budget-tokens") == 0) {
            rc = number(o, "budget_tokens", f, v, true, err);
        } else if (strcmp(f, "--rpm") == 0) {
            rc = number(o, "rpm", f, v, true, err);
        } else if (strcmp(f, "--tpm") == 0) {
            rc = number(o, "tpm", f, v, true, err);
        } else if (strcmp(f, "--max-concurrent") == 0) {
            rc = number(o, "max_concurrent", f, v, true, err);
        } else if (strcmp(f, "--expires") == 0) {
            if (strcmp(v, "never") == 0)
                cJSON_AddNumberToObject(o, "expires_at", 0);
            else
                cJSON_AddStringToObject(o, "expires_in", v);
        } else {
            fprintf(err, "agentd keys: unknown option '%s'\n", f);
            goto fail;
        }
        if (rc != 0)
            goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* The daemon creates its data dir at start; a key may be created before the first start. */
static void mkdir_p(const char *path)
{
    char tmp[4096];
    if (str_lcpy(tmp, path, sizeof(tmp)) >= sizeof(tmp))
        return;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return;
        *p = '/';
    }
    mkdir(tmp, 0750);
}

static void print_table(const cJSON *v)
{
    const cJSON *arr = v;
    cJSON *one = NULL;
    if (!cJSON_IsArray(v)) {
        one = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(one, (cJSON *)v);
        arr = one;
    }
    printf("%-21s %-20s %-12s %-12s %-8s %s\n", "ID", "NAME", "USER", "TEAM", "STATUS", "HINT");
    const cJSON *k;
    cJSON_ArrayForEach(k, arr)
    {
        printf("%-21s %-20s %-12s %-12s %-8s %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(k, "id")),
               cJSON_GetStringValue(cJSON_GetObjectItem(k, "name")),
               cJSON_GetStringValue(cJSON_GetObjectItem(k, "user")),
               cJSON_GetStringValue(cJSON_GetObjectItem(k, "team")),
               cJSON_GetStringValue(cJSON_GetObjectItem(k, "status")),
               cJSON_GetStringValue(cJSON_GetObjectItem(k, "hint")));
    }
    cJSON_Delete(one);
}

int keys_cli_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(keys_usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (is_help(cmd)) {
        fputs(keys_usage, stdout);
        return 0;
    }
    enum keys_op op;
    const char *usage;
    bool needs_id = true;
    if (strcmp(cmd, "create") == 0) {
        op = KEYS_OP_CREATE;
        usage = create_usage;
        needs_id = false;
    } else if (strcmp(cmd, "list") == 0) {
        op = KEYS_OP_LIST;
        usage = list_usage;
        needs_id = false;
    } else if (strcmp(cmd, "show") == 0) {
        op = KEYS_OP_SHOW;
        usage = show_usage;
    } else if (strcmp(cmd, "update") == 0) {
        op = KEYS_OP_UPDATE;
        usage = update_usage;
    } else if (strcmp(cmd, "revoke") == 0) {
        op = KEYS_OP_REVOKE;
        usage = revoke_usage;
    } else {
        fprintf(stderr, "agentd keys: unknown command '%s'\n%s", cmd, keys_usage);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (is_help(argv[i])) {
            fputs(usage, stdout);
            return 0;
        }
    int i = 2;
    const char *id = NULL;
    if (needs_id) {
        if (i >= argc || strncmp(argv[i], "--", 2) == 0) {
            fprintf(stderr, "agentd keys %s: which key? (an id from `agentd keys list`)\n%s", cmd, usage);
            return 2;
        }
        id = argv[i++];
    }
    bool json = false;
    const char *data_dir = NULL, *config_path = config_default_path(NULL);
    cJSON *body = NULL;
    if (op == KEYS_OP_CREATE || op == KEYS_OP_UPDATE) {
        body = keys_cli_flags(argc - i, argv + i, &data_dir, &config_path, stderr);
        if (body == NULL) {
            fputs(usage, stderr);
            return 2;
        }
    } else {
        for (; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0)
                json = true;
            else if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc)
                data_dir = argv[++i];
            else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
                config_path = argv[++i];
            else {
                fprintf(stderr, "agentd keys %s: unexpected argument '%s'\n%s", cmd, argv[i], usage);
                return 2;
            }
        }
    }
    /* The data dir the daemon would use: --data-dir, else the configuration's server.data_dir. */
    struct config_flags flags = {.config_path = config_path};
    char set[4200];
    if (data_dir) {
        snprintf(set, sizeof(set), "server.data_dir=%s", data_dir);
        flags.sets[flags.nsets++] = set;
    }
    struct buf errors = BUF_INIT(1 << 20);
    struct config *c = config_load(&flags, environ, &errors);
    if (c == NULL) {
        fputs(errors.data ? errors.data : "invalid configuration\n", stderr);
        buf_free(&errors);
        cJSON_Delete(body);
        return 2;
    }
    buf_free(&errors);
    struct keys_admin a = {0};
    struct buf err = BUF_INIT(4096);
    int rc = 1;
    mkdir_p(c->server.data_dir);
    /* DATABASE_URL (or store.database_url): the keys are the cluster's, in PostgreSQL */
    if (store_backend_start(c, true, &err) != 0) {
        fprintf(stderr, "agentd keys: %s\n", err.data ? err.data : "bad DATABASE_URL");
        buf_free(&err);
        cJSON_Delete(body);
        config_unref(c);
        return 2;
    }
    if (keys_admin_open(&a, c->server.data_dir, &err) != 0) {
        fprintf(stderr, "agentd keys: %s\n", err.data ? err.data : "cannot open the key store");
    } else {
        cJSON *out = NULL;
        int status = keys_admin_exec(&a, op, id, body, (int64_t)time(NULL), &out);
        if (status < 300) {
            if (json || op == KEYS_OP_CREATE || op == KEYS_OP_UPDATE || op == KEYS_OP_REVOKE) {
                char *s = cJSON_PrintUnformatted(out);
                puts(s);
                cJSON_free(s);
            } else {
                print_table(out);
            }
            rc = 0;
        } else {
            const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(out, "error"), "message");
            fprintf(stderr, "agentd keys %s: %s\n", cmd, cJSON_GetStringValue(m) ? m->valuestring : "failed");
            rc = status == 404 ? 3 : status == 400 ? 2 : 1;
        }
        cJSON_Delete(out);
    }
    keys_admin_close(&a);
    store_backend_stop();
    buf_free(&err);
    cJSON_Delete(body);
    config_unref(c);
    return rc;
}
