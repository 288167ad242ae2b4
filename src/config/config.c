#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/str.h"

#define CONFIG_FILE_MAX (4 << 20)

static int read_file(const char *path, struct buf *out, struct buf *errors)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n == -1) {
            if (errno == EINTR)
                continue;
            buf_printf(errors, "%s: cannot read: %s\n", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (buf_append(out, chunk, (size_t)n) != 0) {
            buf_printf(errors, "%s: larger than %d bytes\n", path, CONFIG_FILE_MAX);
            goto out;
        }
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

struct config *config_load_schema(const struct cfg_schema *schema, const struct config_flags *flags,
                                  char **environ_, struct buf *errors)
{
    struct config *c = xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    c->schema = schema;
    cfg_apply_defaults(schema, c);
    struct cfg_ctx ctx = {"", errors, 0};

    if (flags && flags->config_path) {
        c->path = xstrdup(flags->config_path);
        struct buf text = BUF_INIT(CONFIG_FILE_MAX);
        if (read_file(flags->config_path, &text, errors) != 0) {
            ctx.nerrors++;
        } else {
            struct buf perr = BUF_INIT(4096);
            struct ynode *root = yaml_tree_parse(text.data ? text.data : "", text.len, &perr);
            ctx.source = flags->config_path;
            if (root == NULL) {
                buf_printf(errors, "%s:%s\n", flags->config_path, perr.data ? perr.data : " invalid YAML");
                ctx.nerrors++;
            } else {
                cfg_read_map(&ctx, schema, c, root, "");
                ynode_free(root);
            }
            buf_free(&perr);
        }
        buf_free(&text);
    }
    ctx.source = "environment";
    cfg_read_env(&ctx, schema, c, environ_);
    if (flags) {
        for (int i = 0; i < flags->nsets; i++) {
            const char *eq = strchr(flags->sets[i], '=');
            char path[256];
            size_t n = eq ? (size_t)(eq - flags->sets[i]) : 0;
            if (eq == NULL || n >= sizeof(path)) {
                ctx.source = "command line";
                cfg_error_at(&ctx, NULL, NULL, "'%s' is not PATH=VALUE", flags->sets[i]);
                continue;
            }
            memcpy(path, flags->sets[i], n);
            path[n] = '\0';
            char label[300];
            snprintf(label, sizeof(label), "command line --set %s", path);
            ctx.source = label;
            cfg_set_path(&ctx, schema, c, path, eq + 1);
        }
    }
    ctx.source = "configuration";
    cfg_finish(&ctx, schema, c, "");
    if (ctx.nerrors) {
        config_unref(c);
        return NULL;
    }
    return c;
}

struct config *config_ref(struct config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void config_unref(struct config *c)
{
    if (c == NULL)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->ext_free)
        c->ext_free(c->ext);
    cfg_free_obj(c->schema, c);
    xfree(c->path);
    xfree(c);
}

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct config *current;
static uint64_t generation;

struct config *config_acquire(void)
{
    pthread_mutex_lock(&current_lock);
    struct config *c = current ? config_ref(current) : NULL;
    pthread_mutex_unlock(&current_lock);
    return c;
}

void config_publish(struct config *c)
{
    pthread_mutex_lock(&current_lock);
    struct config *old = current;
    c->generation = ++generation;
    current = c;
    pthread_mutex_unlock(&current_lock);
    config_unref(old);
}

void config_shutdown(void)
{
    pthread_mutex_lock(&current_lock);
    struct config *old = current;
    current = NULL;
    pthread_mutex_unlock(&current_lock);
    config_unref(old);
}

void config_print(struct buf *out, const struct config *c)
{
    buf_printf(out, "# effective configuration%s%s (secrets masked)\n", c->path ? " from " : "",
               c->path ? c->path : " (built-in defaults)");
    cfg_print(out, c->schema, c, 0);
}

bool config_keep_restart_settings(struct config *next, const struct config *running, struct buf *which)
{
    return cfg_keep_restart_fields(next->schema, next, running, which, "");
}

const char *config_app_dir(void)
{
    const char *a = getenv("AGENTD_APP_DIR");
    return a && *a ? a : "/app";
}

const char *config_default_path(const char *given)
{
    static char path[4096];
    if (given && *given)
        return given;
    const char *env = getenv("AGENTD_CONFIG");
    if (env && *env)
        return env;
    int n = snprintf(path, sizeof(path), "%s/config/agentd.yaml", config_app_dir());
    if (n > 0 && (size_t)n < sizeof(path) && access(path, R_OK) == 0)
        return path;
    return NULL;
}

static int add_set(struct config_flags *flags, const char *path, const char *value)
{
    if (flags->nsets >= (int)ARRAY_LEN(flags->sets)) {
        fprintf(stderr, "agentd: too many settings on the command line\n");
        return -1;
    }
    /* Stored as "path=value" in a small static arena that lives for the process. */
    static char storage[CONFIG_MAX_SETS][512];
    int n = snprintf(storage[flags->nsets], sizeof(storage[0]), "%s=%s", path, value);
    if (n < 0 || (size_t)n >= sizeof(storage[0])) {
        fprintf(stderr, "agentd: value for %s is too long\n", path);
        return -1;
    }
    flags->sets[flags->nsets] = storage[flags->nsets];
    flags->nsets++;
    return 0;
}

int config_parse_flags(int argc, char **argv, struct config_flags *flags, bool allow_serve_flags)
{
    static const struct {
        const char *flag;
        const char *path;
    } map[] = {{"--listen", "server.listen"},       {"--ops-listen", "server.ops_listen"},
               {"--data-dir", "server.data_dir"},   {"--workers", "server.workers"},
               {"--log-level", "log.level"}};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        char name[64];
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (strncmp(a, "--", 2) != 0 || nlen >= sizeof(name))
            break;
        memcpy(name, a, nlen);
        name[nlen] = '\0';
        bool takes_value = strcmp(name, "--config") == 0 || strcmp(name, "--set") == 0;
        for (size_t k = 0; k < ARRAY_LEN(map); k++)
            takes_value |= strcmp(name, map[k].flag) == 0;
        if (!takes_value)
            break;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "agentd: %s needs a value\n", name);
            return -1;
        }
        if (strcmp(name, "--config") == 0) {
            flags->config_path = val;
            continue;
        }
        if (strcmp(name, "--set") == 0) {
            if (flags->nsets >= (int)ARRAY_LEN(flags->sets)) {
                fprintf(stderr, "agentd: too many --set\n");
                return -1;
            }
            flags->sets[flags->nsets++] = val;
            continue;
        }
        if (!allow_serve_flags) {
            fprintf(stderr, "agentd: %s is not accepted here\n", name);
            return -1;
        }
        for (size_t k = 0; k < ARRAY_LEN(map); k++)
            if (strcmp(name, map[k].flag) == 0 && add_set(flags, map[k].path, val) != 0)
                return -1;
    }
    return i;
}
