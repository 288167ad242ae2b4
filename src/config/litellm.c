/* litellm.c: `agentd config import-litellm FILE`, for users leaving LiteLLM.
 *
 * Reads a LiteLLM proxy configuration (model_list, router_settings, litellm_settings, general_settings) and
 * writes agentd YAML on stdout: entries of model_list with the same model_name become one agentd model whose
 * deployments keep their order and weight; `provider/model` prefixes map onto agentd's providers;
 * `os.environ/NAME` keys become api_key_env. Everything that has no agentd equivalent, or that is a secret written
 * inline, is listed on stderr ("not carried over: PATH: why") and as comments at the top of the output, so the
 * result can be reviewed, then checked with `agentd config check`. Grouping sorts the entries (n log n); the rest
 * is one pass over the tree; the file is bounded like a configuration file (4 MiB, yaml_tree's depth and node
 * limits). */
#include "config/litellm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/macros.h"
#include "config/yaml_tree.h"

#define LITELLM_FILE_MAX (4 << 20)

static int slurp(const char *path, struct buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        fprintf(stderr, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (n > 0 && buf_append(out, chunk, (size_t)n) != 0)) {
            fprintf(stderr, "%s: %s\n", path, n < 0 ? strerror(errno) : "larger than 4 MiB");
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
    }
    close(fd);
    return 0;
}

/* A YAML double-quoted scalar. */
static void yq(struct buf *o, const char *s)
{
    buf_append_str(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf_printf(o, "\\%c", c);
        else if (c < 0x20)
            buf_printf(o, "\\x%02x", c);
        else
            buf_append(o, s, 1);
    }
    buf_append_str(o, "\"");
}

static const char *scalar(const struct ynode *map, const char *key)
{
    const struct ynode *v = map && map->kind == YNODE_MAP ? ynode_map_get(map, key) : NULL;
    return v && v->kind == YNODE_SCALAR && !ynode_is_null(v) ? v->value : NULL;
}

struct notes {
    struct buf text;
    int n;
};

__attribute__((format(printf, 3, 4))) static void note(struct notes *nt, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    buf_printf(&nt->text, "not carried over: %s: %s\n", path, msg);
    nt->n++;
}

/* LiteLLM's provider prefix -> agentd provider; NULL when agentd has none. */
static const char *map_provider(const char *prefix, const char *api_base)
{
    static const struct {
        const char *litellm, *agentd;
    } t[] = {
        {"openai", "openai"},
        {"azure", "azure-openai"},
        {"anthropic", "anthropic"},
        {"gemini", "gemini"},
        {"bedrock", "bedrock"},
        {"vertex_ai", "vertex-ai"},
        {"hosted_vllm", "openai-compatible"},
        {"openai_like", "openai-compatible"},
        {"ollama", "openai-compatible"},
        {"ollama_chat", "openai-compatible"},
        {"lm_studio", "openai-compatible"},
        {"llamafile", "openai-compatible"},
        {"together_ai", "openai-compatible"},
        {"groq", "openai-compatible"},
        {"deepseek", "openai-compatible"},
        {"mistral", "openai-compatible"},
        {"fireworks_ai", "openai-compatible"},
        {"openrouter", "openai-compatible"},
        {"xai", "openai-compatible"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        if (strcmp(prefix, t[i].litellm) == 0)
            return strcmp(t[i].agentd, "openai") == 0 && api_base && !strstr(api_base, "api.openai.com")
                       ? "openai-compatible"
                       : t[i].agentd;
    return NULL;
}

/* Public endpoints of the OpenAI-compatible providers above, when the file gives no api_base. */
static const char *default_base(const char *prefix)
{
    static const struct {
        const char *p, *url;
    } t[] = {
        {"together_ai", "https://api.together.xyz/v1"},   {"groq", "https://api.groq.com/openai/v1"},
        {"deepseek", "https://api.deepseek.com/v1"},      {"mistral", "https://api.mistral.ai/v1"},
        {"fireworks_ai", "https://api.fireworks.ai/inference/v1"},
        {"openrouter", "https://openrouter.ai/api/v1"},   {"xai", "https://api.x.ai/v1"},
        {"ollama", "http://127.0.0.1:11434/v1"},          {"ollama_chat", "http://127.0.0.1:11434/v1"},
        {"lm_studio", "http://127.0.0.1:1234/v1"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        if (strcmp(prefix, t[i].p) == 0)
            return t[i].url;
    return NULL;
}

static bool known_param(const char *k)
{
    static const char *const known[] = {"model", "api_key", "api_base", "api_version", "aws_region_name",
                                        "vertex_project", "vertex_location", "vertex_credentials", "weight", "timeout", "stream_timeout", NULL};
    for (int i = 0; known[i]; i++)
        if (strcmp(k, known[i]) == 0)
            return true;
    return false;
}

/* One model_list entry as a deployment; false when it cannot be carried over (noted). */
static bool deployment(struct buf *o, struct notes *nt, const struct ynode *entry, size_t idx)
{
    char path[96];
    snprintf(path, sizeof(path), "model_list[%zu]", idx);
    const struct ynode *p = ynode_map_get(entry, "litellm_params");
    const char *model = scalar(p, "model");
    if (model == NULL) {
        note(nt, path, "no litellm_params.model");
        return false;
    }
    char prefix[64] = "openai"; /* LiteLLM reads a bare name as OpenAI */
    const char *slash = strchr(model, '/');
    const char *upstream = model;
    if (slash && (size_t)(slash - model) < sizeof(prefix)) {
        memcpy(prefix, model, (size_t)(slash - model));
        prefix[slash - model] = '\0';
        upstream = slash + 1;
    }
    const char *base = scalar(p, "api_base");
    const char *provider = map_provider(prefix, base);
    if (provider == NULL) {
        note(nt, path, "provider '%s' (%s) has no agentd equivalent", prefix, model);
        return false;
    }
    buf_append_str(o, "      - provider: ");
    buf_append_str(o, provider);
    buf_append_str(o, "\n        model: ");
    yq(o, upstream);
    buf_append_str(o, "\n");
    if (base == NULL && strcmp(provider, "openai-compatible") == 0)
        base = default_base(prefix);
    if (base) {
        buf_append_str(o, "        base_url: ");
        yq(o, base);
        buf_append_str(o, "\n");
    } else if (strcmp(provider, "openai-compatible") == 0) {
        note(nt, path, "provider '%s' needs api_base", prefix);
        return false;
    }
    const char *v;
    if ((v = scalar(p, "api_version"))) {
        buf_append_str(o, "        api_version: ");
        yq(o, v);
        buf_append_str(o, "\n");
    }
    if ((v = scalar(p, "aws_region_name"))) {
        buf_append_str(o, "        region: ");
        yq(o, v);
        buf_append_str(o, "\n");
    }
    if ((v = scalar(p, "vertex_project"))) {
        buf_append_str(o, "        project: ");
        yq(o, v);
        buf_append_str(o, "\n");
    }
    if ((v = scalar(p, "vertex_location"))) {
        buf_append_str(o, "        location: ");
        yq(o, v);
        buf_append_str(o, "\n");
    }
    if ((v = scalar(p, "vertex_credentials"))) { /* a key file's path, or the key itself (not carried: a secret) */
        if (v[0] == '{' || strncmp(v, "os.environ/", 11) == 0) {
            note(nt, path, "vertex_credentials inline or from the environment: give credentials_file or "
                           "GOOGLE_APPLICATION_CREDENTIALS");
        } else {
            buf_append_str(o, "        credentials_file: ");
            yq(o, v);
            buf_append_str(o, "\n");
        }
    }
    if ((v = scalar(p, "weight"))) {
        char *end;
        long w = strtol(v, &end, 10);
        if (*end == '\0' && w >= 0 && w <= 1000000)
            buf_printf(o, "        weight: %ld\n", w);
        else
            note(nt, path, "weight '%s' is not a whole number 0..1000000", v);
    }
    if ((v = scalar(p, "timeout"))) {
        char *end;
        double s = strtod(v, &end);
        if (*end == '\0' && s > 0 && s <= 86400)
            buf_printf(o, "        timeout: %lldms\n", (long long)(s * 1000));
        else
            note(nt, path, "timeout '%s' is not a number of seconds", v);
    }
    if ((v = scalar(p, "api_key"))) {
        if (strncmp(v, "os.environ/", 11) == 0 && v[11]) {
            buf_append_str(o, "        api_key_env: ");
            yq(o, v + 11);
            buf_append_str(o, "\n");
        } else {
            note(nt, path, "an inline api_key is not copied; put it in an environment variable and set api_key_env");
        }
    }
    for (size_t i = 0; p && p->kind == YNODE_MAP && i < ynode_map_len(p); i++) {
        const char *k = ynode_map_key(p, i)->value;
        if (k && !known_param(k)) {
            char sub[160];
            snprintf(sub, sizeof(sub), "%s.litellm_params.%s", path, k);
            note(nt, sub, "%s", strcmp(k, "rpm") == 0 || strcmp(k, "tpm") == 0
                                    ? "per-deployment limits: use `ratelimits:` with scope deployment"
                                    : "no agentd equivalent");
        }
    }
    return true;
}

static void other_section(struct notes *nt, const struct ynode *root, const char *name, const char *why)
{
    const struct ynode *s = ynode_map_get(root, name);
    if (s == NULL || s->kind != YNODE_MAP) {
        if (s)
            note(nt, name, "%s", why);
        return;
    }
    for (size_t i = 0; i < ynode_map_len(s); i++) {
        char path[160];
        snprintf(path, sizeof(path), "%s.%s", name, ynode_map_key(s, i)->value ? ynode_map_key(s, i)->value : "?");
        note(nt, path, "%s", why);
    }
}

struct entry_ref {
    const char *name;
    size_t idx;
};

static int cmp_ref(const void *a, const void *b)
{
    const struct entry_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

int litellm_import(const char *text, size_t len, struct buf *out, struct buf *notes_out, struct buf *err)
{
    struct ynode *root = yaml_tree_parse(text, len, err);
    if (root == NULL)
        return -1;
    int rc = -1;
    struct notes nt = {BUF_INIT(1 << 20), 0};
    struct buf models = BUF_INIT(LITELLM_FILE_MAX);
    struct buf gateway = BUF_INIT(4096);
    const struct ynode *list = root->kind == YNODE_MAP ? ynode_map_get(root, "model_list") : NULL;
    if (list == NULL || list->kind != YNODE_SEQ) {
        buf_printf(err, " no model_list (a list) at the top level: not a LiteLLM configuration\n");
        goto out;
    }
    /* model_name groups, in first-seen order: each name once, its entries in file order. Entries sorted by
     * (name, position) give each group as a run; `next` chains a group's entries, `head` marks its first. */
    size_t n = list->nitems;
    struct entry_ref *refs = xcalloc(n ? n : 1, sizeof(*refs));
    size_t *next = xcalloc(n ? n : 1, sizeof(size_t));
    bool *head = xcalloc(n ? n : 1, sizeof(bool));
    size_t nrefs = 0;
    for (size_t i = 0; i < n; i++) {
        const struct ynode *e = list->items[i];
        const char *name = e->kind == YNODE_MAP ? scalar(e, "model_name") : NULL;
        if (name == NULL) {
            char path[64];
            snprintf(path, sizeof(path), "model_list[%zu]", i);
            note(&nt, path, "no model_name");
            continue;
        }
        refs[nrefs++] = (struct entry_ref){name, i};
    }
    qsort(refs, nrefs, sizeof(*refs), cmp_ref);
    for (size_t k = 0; k < nrefs; k++) {
        bool first = k == 0 || strcmp(refs[k - 1].name, refs[k].name) != 0;
        bool last = k + 1 == nrefs || strcmp(refs[k + 1].name, refs[k].name) != 0;
        head[refs[k].idx] = first;
        next[refs[k].idx] = last ? SIZE_MAX : refs[k + 1].idx;
    }
    for (size_t i = 0; i < n; i++) {
        if (!head[i])
            continue;
        const char *name = scalar(list->items[i], "model_name");
        struct buf deps = BUF_INIT(LITELLM_FILE_MAX);
        int ndeps = 0;
        bool embeddings = false;
        for (size_t j = i; j != SIZE_MAX; j = next[j]) {
            const struct ynode *f = list->items[j];
            const char *mode = scalar(ynode_map_get(f, "model_info"), "mode");
            if (mode && strcmp(mode, "embedding") == 0)
                embeddings = true;
            if (ndeps == 16) {
                char path[64];
                snprintf(path, sizeof(path), "model_list[%zu]", j);
                note(&nt, path, "more than 16 deployments for '%s'", name);
                continue;
            }
            if (deployment(&deps, &nt, f, j))
                ndeps++;
        }
        if (ndeps > 0) {
            buf_append_str(&models, "  - name: ");
            yq(&models, name);
            buf_append_str(&models, "\n");
            if (embeddings)
                buf_append_str(&models, "    embeddings: true\n");
            buf_append_str(&models, "    deployments:\n");
            buf_append(&models, deps.data, deps.len);
        }
        buf_free(&deps);
    }
    xfree(refs);
    xfree(next);
    xfree(head);

    const struct ynode *rs = ynode_map_get(root, "router_settings");
    for (size_t i = 0; rs && rs->kind == YNODE_MAP && i < ynode_map_len(rs); i++) {
        const char *k = ynode_map_key(rs, i)->value ? ynode_map_key(rs, i)->value : "?";
        const struct ynode *v = ynode_map_val(rs, i);
        char path[160];
        snprintf(path, sizeof(path), "router_settings.%s", k);
        if (strcmp(k, "timeout") == 0 && v->kind == YNODE_SCALAR) {
            char *end;
            double s = strtod(v->value, &end);
            if (*end == '\0' && s >= 0.1 && s <= 86400)
                buf_printf(&gateway, "  request_timeout: %lldms\n", (long long)(s * 1000));
            else
                note(&nt, path, "'%s' is not a number of seconds in 0.1..86400", v->value);
        } else if (strcmp(k, "routing_strategy") == 0) {
            note(&nt, path, "agentd draws the first deployment by weight and falls back in list order");
        } else if (strcmp(k, "fallbacks") == 0 || strcmp(k, "context_window_fallbacks") == 0 ||
                   strcmp(k, "content_policy_fallbacks") == 0) {
            note(&nt, path, "fallbacks across model names: list the fallback as a further deployment of the model");
        } else if (strncmp(k, "redis_", 6) == 0) {
            note(&nt, path, "shared state across replicas is agentd's cluster mode (REDIS_URL)");
        } else {
            note(&nt, path, "no agentd equivalent");
        }
    }
    other_section(&nt, root, "litellm_settings", "no agentd equivalent");
    other_section(&nt, root, "general_settings", "see docs/keys.md (virtual keys) and docs/configuration.md");
    other_section(&nt, root, "environment_variables", "set them in the process environment");
    for (size_t i = 0; root->kind == YNODE_MAP && i < ynode_map_len(root); i++) {
        const char *k = ynode_map_key(root, i)->value ? ynode_map_key(root, i)->value : "?";
        if (strcmp(k, "model_list") && strcmp(k, "router_settings") && strcmp(k, "litellm_settings") &&
            strcmp(k, "general_settings") && strcmp(k, "environment_variables"))
            note(&nt, k, "unknown LiteLLM section");
    }

    buf_append_str(out, "# agentd configuration imported from a LiteLLM config by `agentd config import-litellm`\n");
    if (nt.n) {
        buf_printf(out, "# %d setting%s could not be carried over:\n", nt.n, nt.n == 1 ? "" : "s");
        for (char *line = nt.text.data; line && *line;) {
            char *nl = strchr(line, '\n');
            buf_append_str(out, "#   ");
            buf_append(out, line, nl ? (size_t)(nl - line + 1) : strlen(line));
            line = nl ? nl + 1 : NULL;
        }
    }
    if (gateway.len) {
        buf_append_str(out, "gateway:\n");
        buf_append(out, gateway.data, gateway.len);
    }
    buf_append_str(out, "models:");
    if (models.len) {
        buf_append_str(out, "\n");
        buf_append(out, models.data, models.len);
    } else {
        buf_append_str(out, " []\n");
    }
    if (nt.text.len)
        buf_append(notes_out, nt.text.data, nt.text.len);
    rc = 0;
out:
    buf_free(&nt.text);
    buf_free(&models);
    buf_free(&gateway);
    ynode_free(root);
    return rc;
}

int litellm_import_main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: agentd config import-litellm FILE   (agentd YAML on stdout, what is not carried "
                        "over on stderr)\n");
        return 2;
    }
    struct buf text = BUF_INIT(LITELLM_FILE_MAX);
    if (slurp(argv[1], &text) != 0) {
        buf_free(&text);
        return 2;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED), notes = BUF_INIT(1 << 20), err = BUF_INIT(4096);
    int rc = litellm_import(text.data ? text.data : "", text.len, &out, &notes, &err);
    if (rc != 0) {
        fprintf(stderr, "%s:%s", argv[1], err.data ? err.data : " invalid\n");
        if (err.data && err.len && err.data[err.len - 1] != '\n')
            fputc('\n', stderr);
    } else {
        fwrite(out.data, 1, out.len, stdout);
        if (notes.len)
            fwrite(notes.data, 1, notes.len, stderr);
    }
    buf_free(&text);
    buf_free(&out);
    buf_free(&notes);
    buf_free(&err);
    return rc == 0 ? 0 : 2;
}
