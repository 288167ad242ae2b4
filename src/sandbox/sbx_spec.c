/* sbx_spec.c: the sandbox vocabulary's names, defaults and checks (sandbox/sbx_spec.h). */
#include "sandbox/sbx_spec.h"

#include <string.h>
#include <strings.h>

#include "common/alloc.h"

bool sbx_spec_file_name_ok(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > 255)
        return false;
    if (name[0] == '.' || name[0] == '-') /* also rules out "." and ".." */
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

bool sbx_spec_file_path_ok(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > SBX_FILES_PATH_MAX)
        return false;
    size_t seg = 0, dirs = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '/')
            continue;
        /* name[seg..i) is one segment: a plain name (so neither empty, "." nor "..") */
        if (!sbx_spec_file_name_ok(name + seg, i - seg))
            return false;
        if (i < len && ++dirs > SBX_FILES_DEPTH)
            return false;
        seg = i + 1;
    }
    return true;
}

static const char *const reason_names[SBX_REASON__COUNT] = {
    "exit", "signal", "timeout", "cpu", "memory", "output_cap", "killed", "error",
};
static const char *const lang_names[SBX_LANG__COUNT] = {"none", "python", "sh", "node"};
static const char *const snippet_names[SBX_LANG__COUNT] = {NULL, "main.py", "main.sh", "main.js"};

const char *sbx_lang_snippet_name(enum sbx_lang l)
{
    return (unsigned)l < SBX_LANG__COUNT ? snippet_names[l] : NULL;
}

const char *sbx_reason_name(enum sbx_reason r)
{
    return (unsigned)r < SBX_REASON__COUNT ? reason_names[r] : "?";
}

const char *const sbx_net_names[SBX_NET__COUNT + 1] = {[SBX_NET_NONE] = "none", [SBX_NET_EGRESS] = "egress"};

const char *sbx_net_name(enum sbx_net net)
{
    return (unsigned)net < SBX_NET__COUNT ? sbx_net_names[net] : NULL;
}

int sbx_net_parse(const char *s)
{
    for (int i = 0; s && i < SBX_NET__COUNT; i++)
        if (strcmp(s, sbx_net_names[i]) == 0)
            return i;
    return -1;
}

const char *sbx_lang_name(enum sbx_lang l)
{
    return (unsigned)l < SBX_LANG__COUNT ? lang_names[l] : "?";
}

int sbx_lang_parse(const char *name)
{
    if (strcmp(name, "python") == 0 || strcmp(name, "python3") == 0 || strcmp(name, "py") == 0)
        return SBX_LANG_PYTHON;
    if (strcmp(name, "sh") == 0 || strcmp(name, "shell") == 0)
        return SBX_LANG_SH;
    if (strcmp(name, "node") == 0 || strcmp(name, "js") == 0 || strcmp(name, "javascript") == 0)
        return SBX_LANG_NODE;
    return -1;
}

void sbx_limits_default(struct sbx_limits *l)
{
    l->wall_ms = 10000;
    l->cpu_ms = 10000;
    l->memory_bytes = 256ull << 20;
    l->address_space_bytes = 4ull << 30;
    l->pids = 64;
    l->nofile = 64;
    l->fsize_bytes = 8ull << 20;
    l->cpu_percent = 100;
    l->stdout_max = 1u << 20;
    l->stderr_max = 1u << 20;
    l->work_bytes = 64ull << 20;
    l->tmp_bytes = 64ull << 20;
}

void sbx_spec_init(struct sbx_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    sbx_limits_default(&spec->limits);
    spec->files_out_max = SBX_FILES_OUT_MAX;
    spec->files_out_bytes = SBX_FILES_OUT_BYTES;
}

static bool env_ok(const char *e)
{
    const char *eq = strchr(e, '=');
    if (eq == NULL || eq == e)
        return false;
    for (const char *p = e; p < eq; p++) {
        char c = *p;
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!alpha && !(p > e && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static int range(uint64_t v, uint64_t lo, uint64_t hi, const char *name, struct buf *err)
{
    if (v >= lo && v <= hi)
        return 0;
    (void)buf_printf(err, "limit %s must be between %llu and %llu", name, (unsigned long long)lo,
                     (unsigned long long)hi);
    return -1;
}

#define RANGE(field, lo, hi)                                                                                           \
    do {                                                                                                               \
        if (range(l->field, (lo), (hi), #field, err) != 0)                                                             \
            return -1;                                                                                                 \
    } while (0)

int sbx_spec_validate(const struct sbx_spec *spec, struct buf *err)
{
    const struct sbx_limits *l = &spec->limits;
    if ((unsigned)spec->lang >= SBX_LANG__COUNT) {
        (void)buf_printf(err, "unknown language");
        return -1;
    }
    if ((unsigned)spec->net >= SBX_NET__COUNT) {
        (void)buf_printf(err, "unknown network mode");
        return -1;
    }
    if (spec->lang == SBX_LANG_NONE && spec->argc == 0) {
        (void)buf_printf(err, "no command given");
        return -1;
    }
    if (spec->lang == SBX_LANG_NONE && spec->code) {
        (void)buf_printf(err, "code needs a language");
        return -1;
    }
    if (spec->lang != SBX_LANG_NONE && spec->argc == 0 && spec->code == NULL) {
        (void)buf_printf(err, "no code and no arguments for the interpreter");
        return -1;
    }
    if (spec->argc > SBX_MAX_ARGS || spec->envc > SBX_MAX_ENV || spec->nfiles > SBX_MAX_FILES) {
        (void)buf_printf(err, "too many arguments, environment entries or files");
        return -1;
    }
    for (size_t i = 0; i < spec->argc; i++) {
        if (spec->argv[i] == NULL || (i == 0 && spec->lang == SBX_LANG_NONE && spec->argv[0][0] == '\0')) {
            (void)buf_printf(err, "argument %zu is missing", i);
            return -1;
        }
    }
    for (size_t i = 0; i < spec->envc; i++) {
        if (spec->env[i] == NULL || !env_ok(spec->env[i])) {
            (void)buf_printf(err, "environment entry %zu is not NAME=value", i);
            return -1;
        }
    }
    const char *snippet =
        (spec->lang != SBX_LANG_NONE && spec->argc == 0) ? sbx_lang_snippet_name(spec->lang) : NULL;
    for (size_t i = 0; i < spec->nfiles; i++) {
        const struct sbx_file *f = &spec->files[i];
        if (f->name == NULL || !sbx_spec_file_path_ok(f->name, strlen(f->name))) {
            (void)buf_printf(err,
                             "file name %zu refused: a relative path of at most %d directories and %d bytes, each "
                             "part a plain name without control characters or a leading '.' or '-' (no '..', no "
                             "empty part)",
                             i, SBX_FILES_DEPTH, SBX_FILES_PATH_MAX);
            return -1;
        }
        if ((f->data == NULL && f->len) || (f->mode & ~0777u)) {
            (void)buf_printf(err, "file %s: bad data or mode", f->name);
            return -1;
        }
        if (snippet && strcmp(f->name, snippet) == 0) {
            (void)buf_printf(err, "file %s clashes with the snippet's file name", f->name);
            return -1;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(spec->files[k].name, f->name) == 0) {
                (void)buf_printf(err, "file %s given twice", f->name);
                return -1;
            }
        }
    }
    if (spec->stdin_len > SBX_MAX_STDIN_BYTES || (spec->stdin_len && spec->stdin_data == NULL)) {
        (void)buf_printf(err, "stdin larger than %u bytes", SBX_MAX_STDIN_BYTES);
        return -1;
    }
    RANGE(wall_ms, 1, 24ull * 3600 * 1000);
    RANGE(cpu_ms, 1, 24ull * 3600 * 1000);
    RANGE(memory_bytes, 4ull << 20, 1ull << 40);
    if (l->address_space_bytes)
        RANGE(address_space_bytes, 16ull << 20, 1ull << 47);
    RANGE(pids, 1, 65536);
    RANGE(nofile, 8, 1 << 20);
    RANGE(fsize_bytes, 1, 1ull << 40);
    RANGE(cpu_percent, 1, 100000);
    RANGE(stdout_max, 0, SBX_MAX_OUTPUT_BYTES);
    RANGE(stderr_max, 0, SBX_MAX_OUTPUT_BYTES);
    RANGE(work_bytes, 64u << 10, SBX_MAX_TMPFS_BYTES);
    RANGE(tmp_bytes, 64u << 10, SBX_MAX_TMPFS_BYTES);
    return 0;
}

void sbx_result_free(struct sbx_result *res)
{
    buf_free(&res->out);
    buf_free(&res->err);
    for (size_t i = 0; i < res->nfiles; i++) {
        xfree(res->files[i].name);
        xfree(res->files[i].data);
    }
    xfree(res->files);
    res->files = NULL;
    res->nfiles = 0;
}
