/* schema.h: declarative configuration tables (redis createIntConfig, haproxy cfg keywords).
 *
 * Each module describes its own section as a table of struct cfg_field, next to its code: key, type, range,
 * default, where the value lives, and flags (gateway/gw_config.c, api/server_config.c, telemetry/log_config.c,
 * ...). The composition root (api/config_root.c) assembles the sections into the root table. One engine (this
 * directory, which names no module) reads the YAML tree, environment variables and command-line flags through the
 * same tables, so every setting has the same checks, the same error messages (file:line:column, the path, the
 * allowed values) and the same environment name (AGENTD_ + the path in upper case with '.' -> '_'). */
#ifndef AGENTD_SCHEMA_H
#define AGENTD_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/macros.h"
#include "config/yaml_tree.h"

enum cfg_type {
    CFG_BOOL,     /* bool */
    CFG_INT,      /* int64_t */
    CFG_DOUBLE,   /* double */
    CFG_SIZE,     /* int64_t bytes; "16KiB", "4MiB", "1GiB", "1000" */
    CFG_DURATION, /* int64_t milliseconds; "500ms", "30s", "5m", "1h"; 0 needs no unit */
    CFG_STRING,   /* char * (heap) */
    CFG_ENUM,     /* int, index into enums[] */
    CFG_ADDR,     /* char *, "host:port", "[v6]:port" or ":port" */
    CFG_STRLIST,  /* struct cfg_strlist */
    CFG_MAP,      /* nested keys; the sub-schema's offsets are relative to this field's offset (a member struct,
                   * or .off = 0 for keys that only group fields of the same struct) */
    CFG_LIST,     /* struct cfg_list of sub->item_size items */
    CFG_DICT,     /* YAML map of name -> item; struct cfg_list whose items start with `char *name` */
};

enum {
    CFG_SECRET = 1 << 0,      /* masked by `config print` */
    CFG_RESTART = 1 << 1,     /* a reload cannot change it; the old value stays and a warning is logged */
    CFG_REQUIRED = 1 << 2,    /* must be present (inside list items) */
    CFG_ENV_SECONDS = 1 << 3, /* the environment alias gives a plain number of seconds (REQUEST_TIMEOUT_SECONDS) */
    CFG_NO_ENV = 1 << 4,      /* no AGENTD_* variable (list item fields) */
};

struct cfg_list {
    void *items;
    size_t n;
};

struct cfg_strlist {
    char **v;
    size_t n;
};

struct cfg_schema;
/* Writes one value (a string, or one item of a list of strings) as YAML with its secret parts masked. */
typedef void cfg_mask_fn(struct buf *out, const char *value);

struct cfg_field {
    const char *key;
    enum cfg_type type;
    size_t off;
    int64_t min, max;       /* INT/SIZE/DURATION range; DOUBLE uses dmin/dmax */
    double dmin, dmax;
    const char *def;        /* default, as text read by the same rules; NULL = zero / empty */
    const char *const *enums;
    const struct cfg_schema *sub;
    unsigned flags;
    const char *env_alias;  /* extra environment name (ENVIRONMENT, MAX_CONCURRENT_REQUESTS, ...) */
    const char *help;
    cfg_mask_fn *mask;      /* STRING/STRLIST: `config print` writes values through this (partly secret values) */
};

struct cfg_ctx;
/* Whole-object check after an object's fields are read; reports with cfg_error_at. */
typedef void cfg_validate_fn(struct cfg_ctx *ctx, void *obj, const struct ynode *where, const char *path);

struct cfg_schema {
    const char *name;
    size_t item_size;             /* for LIST/DICT items */
    const struct cfg_field *fields;
    size_t nfields;               /* ARRAY_LEN(fields) (common/macros.h), never counted by hand */
    cfg_validate_fn *validate;    /* after a YAML map of this schema is read */
    /* After every source (defaults, file, environment, flags) is applied; called by cfg_finish for the root and
     * every CFG_MAP section under it, with where = NULL. Cross-field checks that flags can break live here. */
    void (*finish)(struct cfg_ctx *ctx, void *obj, const char *path);
};

/* Error sink shared by one load. Errors accumulate, so `config check` reports all of them at once. */
struct cfg_ctx {
    const char *source;   /* file name, "environment" or "command line" */
    struct buf *errors;   /* one error per line */
    int nerrors;
};

__attribute__((format(printf, 4, 5))) void cfg_error_at(struct cfg_ctx *ctx, const struct ynode *where,
                                                        const char *path, const char *fmt, ...);

/* Fills obj with every field's default. */
void cfg_apply_defaults(const struct cfg_schema *s, void *obj);
/* Reads a YAML map into obj. Unknown keys, wrong types, out-of-range values are errors. */
void cfg_read_map(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, const struct ynode *map,
                  const char *path);
/* Sets the setting at a dotted path from text (a flag or environment value). Lists and dicts take YAML text. */
int cfg_set_path(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, const char *path, const char *text);
/* Applies AGENTD_<PATH> variables and aliases from the environment for every field. */
void cfg_read_env(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, char **environ_);
/* Frees what the fields own (strings, lists); leaves obj itself. */
void cfg_free_obj(const struct cfg_schema *s, void *obj);
/* Writes obj as YAML (secrets masked). */
void cfg_print(struct buf *out, const struct cfg_schema *s, const void *obj, int indent);
/* Runs every `finish` check of s and of the CFG_MAP sections under it. */
void cfg_finish(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, const char *path);
/* For a reload: every CFG_RESTART field of `next` that differs from `running` gets the running value back (a
 * copy), so the published snapshot says what the process really uses. Names the fields it kept into `which`
 * (", "-separated) and returns true when there was any. */
bool cfg_keep_restart_fields(const struct cfg_schema *s, void *next, const void *running, struct buf *which,
                             const char *path);

/* Writes a Markdown table of every setting (path, type, default, range, environment name, help). */
void cfg_describe(struct buf *out, const struct cfg_schema *s, const char *prefix);

/* Value parsers, exported for tests and for modules with custom syntax. Return 0 or -1. */
int cfg_parse_size(const char *s, int64_t *out);
int cfg_parse_duration_ms(const char *s, int64_t *out);
int cfg_parse_bool(const char *s, bool *out);
int cfg_parse_addr(const char *s, char *host, size_t hostsize, int *port);

#endif
