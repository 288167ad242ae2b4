#include "config/schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/str.h"

#define FIELD_PTR(obj, f) ((void *)((char *)(obj) + (f)->off))
#define FIELD_CPTR(obj, f) ((const void *)((const char *)(obj) + (f)->off))

void cfg_error_at(struct cfg_ctx *ctx, const struct ynode *where, const char *path, const char *fmt, ...)
{
    ctx->nerrors++;
    if (where)
        buf_printf(ctx->errors, "%s:%u:%u: ", ctx->source, where->line, where->col);
    else
        buf_printf(ctx->errors, "%s: ", ctx->source);
    if (path && *path)
        buf_printf(ctx->errors, "%s: ", path);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(ctx->errors, fmt, ap);
    va_end(ap);
    buf_append_char(ctx->errors, '\n');
}

/* ---- value parsers ---- */

int cfg_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "on", "1"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "off", "0"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Splits "123unit" into the number and its unit; the number may be fractional ("1.5GiB"). */
static int split_number(const char *s, double *num, const char **unit)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    char tmp[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *num = strtod(tmp, NULL);
    while (*p == ' ')
        p++;
    *unit = p;
    return 0;
}

int cfg_parse_size(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KiB", 1024.0},
                 {"Ki", 1024.0},
                 {"K", 1024.0},
                 {"KB", 1000.0},
                 {"kB", 1000.0},
                 {"MiB", 1048576.0},
                 {"Mi", 1048576.0},
                 {"M", 1048576.0},
                 {"MB", 1e6},
                 {"GiB", 1073741824.0},
                 {"Gi", 1073741824.0},
                 {"G", 1073741824.0},
                 {"GB", 1e9},
                 {"TiB", 1099511627776.0},
                 {"Ti", 1099511627776.0}};
    double num;
    const char *unit;
    if (split_number(s, &num, &unit) != 0)
        return -1;
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            double v = num * units[i].mult;
            if (v > 9.0e18 || v != floor(v))
                return -1;
            *out = (int64_t)v;
            return 0;
        }
    }
    return -1;
}

int cfg_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"ms", 1}, {"s", 1000.0}, {"m", 60000.0}, {"h", 3600000.0}, {"d", 86400000.0}};
    double num;
    const char *unit;
    if (split_number(s, &num, &unit) != 0)
        return -1;
    if (*unit == '\0')
        return num == 0 ? (*out = 0, 0) : -1;
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            double v = num * units[i].mult;
            if (v > 9.0e15 || v != floor(v))
                return -1;
            *out = (int64_t)v;
            return 0;
        }
    }
    return -1;
}

int cfg_parse_addr(const char *s, char *host, size_t hostsize, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL) /* a bare IPv6 address needs brackets */
            return -1;
    }
    if (hlen >= hostsize)
        return -1;
    uint64_t p;
    if (str_to_u64(str_from(colon + 1), &p) != 0 || p > 65535)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (hlen == 0)
        str_lcpy(host, "0.0.0.0", hostsize);
    *port = (int)p;
    return 0;
}

/* ---- reading ---- */

static const char *type_name(const struct cfg_field *f)
{
    switch (f->type) {
    case CFG_BOOL: return "a boolean (true or false)";
    case CFG_INT: return "an integer";
    case CFG_DOUBLE: return "a number";
    case CFG_SIZE: return "a size like 4096, 16KiB, 4MiB, 1GiB";
    case CFG_DURATION: return "a duration like 500ms, 30s, 5m, 1h";
    case CFG_STRING: return "a string";
    case CFG_ENUM: return "one of the allowed values";
    case CFG_ADDR: return "an address HOST:PORT";
    case CFG_STRLIST: return "a list of strings";
    case CFG_MAP: return "a map";
    case CFG_LIST: return "a list";
    case CFG_DICT: return "a map of names";
    }
    return "?";
}

static void enum_values(struct buf *b, const char *const *enums)
{
    for (size_t i = 0; enums[i]; i++)
        buf_printf(b, "%s%s", i ? ", " : "", enums[i]);
}

static void free_field(const struct cfg_field *f, void *obj);

static void free_list(const struct cfg_schema *sub, struct cfg_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        cfg_free_obj(sub, (char *)l->items + i * sub->item_size);
    xfree(l->items);
    l->items = NULL;
    l->n = 0;
}

static void free_field(const struct cfg_field *f, void *obj)
{
    void *p = FIELD_PTR(obj, f);
    switch (f->type) {
    case CFG_STRING:
    case CFG_ADDR:
        xfree_null((char **)p);
        break;
    case CFG_STRLIST: {
        struct cfg_strlist *sl = p;
        for (size_t i = 0; i < sl->n; i++)
            xfree(sl->v[i]);
        xfree(sl->v);
        sl->v = NULL;
        sl->n = 0;
        break;
    }
    case CFG_MAP:
        cfg_free_obj(f->sub, p);
        break;
    case CFG_DICT: {
        /* a dict item's first member is its name, which is not one of the item's schema fields */
        struct cfg_list *l = p;
        for (size_t i = 0; i < l->n; i++)
            xfree(*(char **)((char *)l->items + i * f->sub->item_size));
        free_list(f->sub, p);
        break;
    }
    case CFG_LIST:
        free_list(f->sub, p);
        break;
    default:
        break;
    }
}

void cfg_free_obj(const struct cfg_schema *s, void *obj)
{
    for (size_t i = 0; i < s->nfields; i++)
        free_field(&s->fields[i], obj);
}

/* Reads a scalar text into a field. Returns 0, or -1 after reporting. */
static int set_scalar(struct cfg_ctx *ctx, const struct cfg_field *f, void *obj, const char *text,
                      const struct ynode *where, const char *path)
{
    void *p = FIELD_PTR(obj, f);
    switch (f->type) {
    case CFG_BOOL:
        if (cfg_parse_bool(text, (bool *)p) != 0)
            goto bad_type;
        return 0;
    case CFG_INT:
    case CFG_SIZE:
    case CFG_DURATION: {
        int64_t v;
        int rc = f->type == CFG_INT        ? str_to_i64(str_from(text), &v)
                 : f->type == CFG_SIZE ? cfg_parse_size(text, &v)
                                       : cfg_parse_duration_ms(text, &v);
        if (rc != 0)
            goto bad_type;
        if (v < f->min || v > f->max) {
            if (f->type == CFG_DURATION)
                cfg_error_at(ctx, where, path, "%s is out of range (allowed %lldms..%lldms)", text,
                             (long long)f->min, (long long)f->max);
            else
                cfg_error_at(ctx, where, path, "%s is out of range (allowed %lld..%lld)", text, (long long)f->min,
                             (long long)f->max);
            return -1;
        }
        *(int64_t *)p = v;
        return 0;
    }
    case CFG_DOUBLE: {
        double v;
        if (str_to_double(str_from(text), &v) != 0)
            goto bad_type;
        if (v < f->dmin || v > f->dmax) {
            cfg_error_at(ctx, where, path, "%s is out of range (allowed %g..%g)", text, f->dmin, f->dmax);
            return -1;
        }
        *(double *)p = v;
        return 0;
    }
    case CFG_STRING:
        if (f->max > 0 && (int64_t)strlen(text) > f->max) {
            cfg_error_at(ctx, where, path, "longer than %lld characters", (long long)f->max);
            return -1;
        }
        xfree(*(char **)p);
        *(char **)p = xstrdup(text);
        return 0;
    case CFG_ADDR: {
        char host[256];
        int port;
        if (cfg_parse_addr(text, host, sizeof(host), &port) != 0) {
            cfg_error_at(ctx, where, path, "'%s' is not an address (expected HOST:PORT, [IPv6]:PORT or :PORT)", text);
            return -1;
        }
        xfree(*(char **)p);
        *(char **)p = xstrdup(text);
        return 0;
    }
    case CFG_ENUM:
        for (int i = 0; f->enums[i]; i++) {
            if (strcmp(text, f->enums[i]) == 0) {
                *(int *)p = i;
                return 0;
            }
        }
        {
            struct buf allowed = BUF_INIT(4096);
            enum_values(&allowed, f->enums);
            cfg_error_at(ctx, where, path, "'%s' is not allowed (allowed: %s)", text, allowed.data ? allowed.data : "");
            buf_free(&allowed);
        }
        return -1;
    default:
        break;
    }
bad_type:
    cfg_error_at(ctx, where, path, "'%s' is not %s", text, type_name(f));
    return -1;
}

static void read_node(struct cfg_ctx *ctx, const struct cfg_field *f, void *obj, const struct ynode *n,
                      const char *path)
{
    switch (f->type) {
    case CFG_MAP:
        cfg_read_map(ctx, f->sub, FIELD_PTR(obj, f), n, path);
        return;
    case CFG_STRLIST: {
        if (n->kind != YNODE_SEQ) {
            cfg_error_at(ctx, n, path, "expected %s", type_name(f));
            return;
        }
        free_field(f, obj);
        struct cfg_strlist *sl = FIELD_PTR(obj, f);
        sl->v = xcalloc(n->nitems ? n->nitems : 1, sizeof(char *));
        for (size_t i = 0; i < n->nitems; i++) {
            if (n->items[i]->kind != YNODE_SCALAR) {
                cfg_error_at(ctx, n->items[i], path, "list items must be strings");
                continue;
            }
            sl->v[sl->n++] = xstrdup(n->items[i]->value);
        }
        return;
    }
    case CFG_LIST:
    case CFG_DICT: {
        bool dict = f->type == CFG_DICT;
        if (n->kind != (dict ? YNODE_MAP : YNODE_SEQ)) {
            if (ynode_is_null(n)) { /* "models:" with nothing under it: an empty list */
                free_field(f, obj);
                return;
            }
            cfg_error_at(ctx, n, path, "expected %s", type_name(f));
            return;
        }
        free_field(f, obj);
        struct cfg_list *l = FIELD_PTR(obj, f);
        size_t count = dict ? ynode_map_len(n) : n->nitems;
        l->items = xcalloc(count ? count : 1, f->sub->item_size);
        for (size_t i = 0; i < count; i++) {
            /* a key that is not a string is refused before its item exists: no entry without a name */
            if (dict && ynode_map_key(n, i)->kind != YNODE_SCALAR) {
                cfg_error_at(ctx, ynode_map_key(n, i), path, "keys must be strings");
                continue;
            }
            void *item = (char *)l->items + l->n * f->sub->item_size;
            cfg_apply_defaults(f->sub, item);
            l->n++;
            char ipath[512];
            if (dict) {
                const struct ynode *k = ynode_map_key(n, i);
                snprintf(ipath, sizeof(ipath), "%s.%s", path, k->value);
                for (size_t j = 0; j < i; j++)
                    if (ynode_map_key(n, j)->kind == YNODE_SCALAR && strcmp(ynode_map_key(n, j)->value, k->value) == 0)
                        cfg_error_at(ctx, k, path, "duplicate key '%s'", k->value);
                *(char **)item = xstrdup(k->value);
                cfg_read_map(ctx, f->sub, item, ynode_map_val(n, i), ipath);
            } else {
                snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
                cfg_read_map(ctx, f->sub, item, n->items[i], ipath);
            }
        }
        return;
    }
    default:
        if (n->kind != YNODE_SCALAR) {
            cfg_error_at(ctx, n, path, "expected %s, found a %s", type_name(f), n->kind == YNODE_MAP ? "map" : "list");
            return;
        }
        if (ynode_is_null(n) && f->type != CFG_STRING) {
            cfg_error_at(ctx, n, path, "a value is required (%s)", type_name(f));
            return;
        }
        set_scalar(ctx, f, obj, n->value, n, path);
    }
}

static const struct cfg_field *find_field(const struct cfg_schema *s, const char *key)
{
    for (size_t i = 0; i < s->nfields; i++)
        if (strcmp(s->fields[i].key, key) == 0)
            return &s->fields[i];
    return NULL;
}

void cfg_read_map(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, const struct ynode *map,
                  const char *path)
{
    if (map->kind != YNODE_MAP) {
        if (ynode_is_null(map))
            return;
        cfg_error_at(ctx, map, path, "expected a map");
        return;
    }
    bool seen[128] = {false};
    for (size_t i = 0; i < ynode_map_len(map); i++) {
        const struct ynode *k = ynode_map_key(map, i);
        const struct ynode *v = ynode_map_val(map, i);
        if (k->kind != YNODE_SCALAR) {
            cfg_error_at(ctx, k, path, "keys must be strings");
            continue;
        }
        const struct cfg_field *f = find_field(s, k->value);
        char fpath[512];
        snprintf(fpath, sizeof(fpath), "%s%s%s", path, *path ? "." : "", k->value);
        if (f == NULL) {
            struct buf allowed = BUF_INIT(4096);
            for (size_t j = 0; j < s->nfields; j++)
                buf_printf(&allowed, "%s%s", j ? ", " : "", s->fields[j].key);
            cfg_error_at(ctx, k, path, "unknown key '%s' (allowed: %s)", k->value, allowed.data ? allowed.data : "");
            buf_free(&allowed);
            continue;
        }
        size_t idx = (size_t)(f - s->fields);
        if (idx < 128 && seen[idx]) {
            cfg_error_at(ctx, k, fpath, "duplicate key");
            continue;
        }
        if (idx < 128)
            seen[idx] = true;
        read_node(ctx, f, obj, v, fpath);
    }
    for (size_t j = 0; j < s->nfields && j < 128; j++)
        if ((s->fields[j].flags & CFG_REQUIRED) && !seen[j])
            cfg_error_at(ctx, map, path, "missing required key '%s'", s->fields[j].key);
    if (s->validate)
        s->validate(ctx, obj, map, path);
}

void cfg_apply_defaults(const struct cfg_schema *s, void *obj)
{
    struct buf errs = BUF_INIT(4096);
    struct cfg_ctx ctx = {"built-in default", &errs, 0};
    for (size_t i = 0; i < s->nfields; i++) {
        const struct cfg_field *f = &s->fields[i];
        if (f->type == CFG_MAP) {
            cfg_apply_defaults(f->sub, FIELD_PTR(obj, f));
        } else if (f->def && f->type == CFG_STRLIST) {
            struct ynode *n = yaml_tree_parse(f->def, strlen(f->def), &errs);
            if (n) {
                read_node(&ctx, f, obj, n, f->key);
                ynode_free(n);
            }
        } else if (f->def) {
            set_scalar(&ctx, f, obj, f->def, NULL, f->key);
        }
    }
    if (ctx.nerrors) /* a bad built-in default is a programming error: fail loudly in every test */
        fprintf(stderr, "agentd: invalid built-in default: %s", errs.data);
    buf_free(&errs);
}

int cfg_set_path(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, const char *path, const char *text)
{
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t klen = dot ? (size_t)(dot - p) : strlen(p);
        char key[128];
        if (klen >= sizeof(key))
            break;
        memcpy(key, p, klen);
        key[klen] = '\0';
        const struct cfg_field *f = find_field(s, key);
        if (f == NULL)
            break;
        if (dot) {
            if (f->type != CFG_MAP)
                break;
            s = f->sub;
            obj = FIELD_PTR(obj, f);
            p = dot + 1;
            continue;
        }
        int before = ctx->nerrors;
        if (f->type == CFG_MAP || f->type == CFG_LIST || f->type == CFG_DICT ||
            (f->type == CFG_STRLIST && text[0] == '[')) {
            struct buf err = BUF_INIT(4096);
            struct ynode *n = yaml_tree_parse(text, strlen(text), &err);
            if (n == NULL) {
                cfg_error_at(ctx, NULL, path, "invalid YAML: %s", err.data ? err.data : "");
            } else {
                read_node(ctx, f, obj, n, path);
                ynode_free(n);
            }
            buf_free(&err);
        } else if (f->type == CFG_STRLIST) {
            free_field(f, obj);
            struct cfg_strlist *sl = FIELD_PTR(obj, f);
            size_t cap = 1;
            for (const char *c = text; *c; c++)
                cap += *c == ',';
            sl->v = xcalloc(cap, sizeof(char *));
            const char *start = text;
            for (;;) {
                const char *comma = strchr(start, ',');
                struct str item = str_trim(str_make(start, comma ? (size_t)(comma - start) : strlen(start)));
                if (item.n)
                    sl->v[sl->n++] = str_dup(item);
                if (!comma)
                    break;
                start = comma + 1;
            }
        } else {
            set_scalar(ctx, f, obj, text, NULL, path);
        }
        return ctx->nerrors == before ? 0 : -1;
    }
    cfg_error_at(ctx, NULL, NULL, "unknown setting '%s'", path);
    return -1;
}

static const char *env_lookup(char **env, const char *name)
{
    size_t n = strlen(name);
    for (char **e = env; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static void env_walk(struct cfg_ctx *ctx, const struct cfg_schema *root, const struct cfg_schema *s, void *obj,
                     char **env, const char *prefix)
{
    for (size_t i = 0; i < s->nfields; i++) {
        const struct cfg_field *f = &s->fields[i];
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", f->key);
        if (f->type == CFG_MAP) {
            env_walk(ctx, root, f->sub, obj, env, path);
            continue;
        }
        if (f->flags & CFG_NO_ENV)
            continue;
        char name[300] = "AGENTD_";
        size_t k = strlen(name);
        for (const char *c = path; *c && k + 1 < sizeof(name); c++)
            name[k++] = *c == '.' ? '_' : (char)toupper((unsigned char)*c);
        name[k] = '\0';
        const char *src = ctx->source;
        char label[340];
        if (f->env_alias) {
            const char *v = env_lookup(env, f->env_alias);
            if (v) {
                snprintf(label, sizeof(label), "environment %s", f->env_alias);
                ctx->source = label;
                if (f->flags & CFG_ENV_SECONDS) {
                    uint64_t secs;
                    if (str_to_u64(str_from(v), &secs) != 0 || secs > 86400 * 365) {
                        cfg_error_at(ctx, NULL, path, "'%s' is not a whole number of seconds", v);
                    } else {
                        char tmp[32];
                        snprintf(tmp, sizeof(tmp), "%llus", (unsigned long long)secs);
                        cfg_set_path(ctx, root, obj, path, tmp);
                    }
                } else {
                    cfg_set_path(ctx, root, obj, path, v);
                }
                ctx->source = src;
            }
        }
        const char *v = env_lookup(env, name);
        if (v) {
            snprintf(label, sizeof(label), "environment %s", name);
            ctx->source = label;
            cfg_set_path(ctx, root, obj, path, v);
            ctx->source = src;
        }
    }
}

void cfg_read_env(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, char **environ_)
{
    env_walk(ctx, s, s, obj, environ_, "");
}

/* ---- printing ---- */

static void print_indent(struct buf *out, int indent)
{
    for (int i = 0; i < indent; i++)
        buf_append_char(out, ' ');
}

static void print_scalar(struct buf *out, const struct cfg_field *f, const void *obj)
{
    const void *p = (const char *)obj + f->off;
    if (f->flags & CFG_SECRET) {
        const char *s = *(char *const *)p;
        buf_append_str(out, s && *s ? "\"***\"" : "\"\"");
        return;
    }
    switch (f->type) {
    case CFG_BOOL:
        buf_append_str(out, *(const bool *)p ? "true" : "false");
        break;
    case CFG_INT:
        buf_printf(out, "%lld", (long long)*(const int64_t *)p);
        break;
    case CFG_DOUBLE:
        buf_printf(out, "%.10g", *(const double *)p);
        break;
    case CFG_SIZE: {
        int64_t v = *(const int64_t *)p;
        if (v && v % 1073741824 == 0)
            buf_printf(out, "%lldGiB", (long long)(v / 1073741824));
        else if (v && v % 1048576 == 0)
            buf_printf(out, "%lldMiB", (long long)(v / 1048576));
        else if (v && v % 1024 == 0)
            buf_printf(out, "%lldKiB", (long long)(v / 1024));
        else
            buf_printf(out, "%lld", (long long)v);
        break;
    }
    case CFG_DURATION: {
        int64_t v = *(const int64_t *)p;
        if (v && v % 3600000 == 0)
            buf_printf(out, "%lldh", (long long)(v / 3600000));
        else if (v && v % 60000 == 0)
            buf_printf(out, "%lldm", (long long)(v / 60000));
        else if (v && v % 1000 == 0)
            buf_printf(out, "%llds", (long long)(v / 1000));
        else
            buf_printf(out, "%lldms", (long long)v);
        break;
    }
    case CFG_STRING:
    case CFG_ADDR: {
        const char *s = *(char *const *)p;
        if (f->mask)
            f->mask(out, s ? s : "");
        else
            buf_append_json_cstr(out, s ? s : "");
        break;
    }
    case CFG_ENUM:
        buf_append_str(out, f->enums[*(const int *)p]);
        break;
    default:
        break;
    }
}

void cfg_print(struct buf *out, const struct cfg_schema *s, const void *obj, int indent)
{
    for (size_t i = 0; i < s->nfields; i++) {
        const struct cfg_field *f = &s->fields[i];
        const void *p = (const char *)obj + f->off;
        print_indent(out, indent);
        buf_printf(out, "%s:", f->key);
        if (f->type == CFG_MAP) {
            buf_append_char(out, '\n');
            cfg_print(out, f->sub, p, indent + 2);
        } else if (f->type == CFG_STRLIST) {
            const struct cfg_strlist *sl = p;
            buf_append_str(out, " [");
            for (size_t j = 0; j < sl->n; j++) {
                if (j)
                    buf_append_str(out, ", ");
                if (f->flags & CFG_SECRET)
                    buf_append_str(out, "\"***\"");
                else if (f->mask)
                    f->mask(out, sl->v[j]);
                else
                    buf_append_json_cstr(out, sl->v[j]);
            }
            buf_append_str(out, "]\n");
        } else if (f->type == CFG_LIST || f->type == CFG_DICT) {
            const struct cfg_list *l = p;
            if (l->n == 0) {
                buf_append_str(out, f->type == CFG_LIST ? " []\n" : " {}\n");
                continue;
            }
            buf_append_char(out, '\n');
            for (size_t j = 0; j < l->n; j++) {
                const void *item = (const char *)l->items + j * f->sub->item_size;
                if (f->type == CFG_DICT) {
                    print_indent(out, indent + 2);
                    buf_append_json_cstr(out, *(char *const *)item);
                    buf_append_str(out, ":\n");
                    cfg_print(out, f->sub, item, indent + 4);
                } else {
                    struct buf tmp = BUF_INIT(BUF_UNBOUNDED);
                    cfg_print(&tmp, f->sub, item, indent + 4);
                    /* turn the first line's indentation into "- " */
                    if (tmp.len >= (size_t)indent + 4) {
                        print_indent(out, indent + 2);
                        buf_append_str(out, "- ");
                        buf_append(out, tmp.data + indent + 4, tmp.len - (size_t)indent - 4);
                    }
                    buf_free(&tmp);
                }
            }
        } else {
            buf_append_char(out, ' ');
            print_scalar(out, f, obj);
            buf_append_char(out, '\n');
        }
    }
}

static bool field_equal(const struct cfg_field *f, const void *a, const void *b)
{
    const void *pa = FIELD_CPTR(a, f), *pb = FIELD_CPTR(b, f);
    switch (f->type) {
    case CFG_BOOL: return *(const bool *)pa == *(const bool *)pb;
    case CFG_INT:
    case CFG_SIZE:
    case CFG_DURATION: return *(const int64_t *)pa == *(const int64_t *)pb;
    case CFG_DOUBLE: return *(const double *)pa == *(const double *)pb;
    case CFG_ENUM: return *(const int *)pa == *(const int *)pb;
    case CFG_STRING:
    case CFG_ADDR: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return (sa == NULL && sb == NULL) || (sa && sb && strcmp(sa, sb) == 0);
    }
    default: return true; /* lists are never restart-only */
    }
}

/* Copies a scalar field's value from src into dst (strings are duplicated; dst's old string is freed). */
static void field_copy(const struct cfg_field *f, void *dst, const void *src)
{
    void *pd = FIELD_PTR(dst, f);
    const void *ps = FIELD_CPTR(src, f);
    switch (f->type) {
    case CFG_BOOL: *(bool *)pd = *(const bool *)ps; break;
    case CFG_INT:
    case CFG_SIZE:
    case CFG_DURATION: *(int64_t *)pd = *(const int64_t *)ps; break;
    case CFG_DOUBLE: *(double *)pd = *(const double *)ps; break;
    case CFG_ENUM: *(int *)pd = *(const int *)ps; break;
    case CFG_STRING:
    case CFG_ADDR: {
        const char *v = *(char *const *)ps;
        xfree(*(char **)pd);
        *(char **)pd = v ? xstrdup(v) : NULL;
        break;
    }
    default: break;
    }
}

bool cfg_keep_restart_fields(const struct cfg_schema *s, void *next, const void *running, struct buf *which,
                             const char *path)
{
    bool kept = false;
    for (size_t i = 0; i < s->nfields; i++) {
        const struct cfg_field *f = &s->fields[i];
        char fpath[256];
        snprintf(fpath, sizeof(fpath), "%s%s%s", path, *path ? "." : "", f->key);
        if (f->type == CFG_MAP) {
            kept |= cfg_keep_restart_fields(f->sub, FIELD_PTR(next, f), FIELD_CPTR(running, f), which, fpath);
        } else if ((f->flags & CFG_RESTART) && !field_equal(f, next, running)) {
            buf_printf(which, "%s%s", which->len ? ", " : "", fpath);
            field_copy(f, next, running);
            kept = true;
        }
    }
    return kept;
}

void cfg_finish(struct cfg_ctx *ctx, const struct cfg_schema *s, void *obj, const char *path)
{
    for (size_t i = 0; i < s->nfields; i++) {
        const struct cfg_field *f = &s->fields[i];
        if (f->type != CFG_MAP)
            continue;
        char fpath[256];
        snprintf(fpath, sizeof(fpath), "%s%s%s", path, *path ? "." : "", f->key);
        cfg_finish(ctx, f->sub, FIELD_PTR(obj, f), fpath);
    }
    if (s->finish)
        s->finish(ctx, obj, path);
}

static const char *short_type(const struct cfg_field *f)
{
    switch (f->type) {
    case CFG_BOOL: return "bool";
    case CFG_INT: return "integer";
    case CFG_DOUBLE: return "number";
    case CFG_SIZE: return "size";
    case CFG_DURATION: return "duration";
    case CFG_STRING: return "string";
    case CFG_ENUM: return "enum";
    case CFG_ADDR: return "address";
    case CFG_STRLIST: return "list of strings";
    case CFG_MAP: return "map";
    case CFG_LIST: return "list";
    case CFG_DICT: return "map of names";
    }
    return "?";
}

void cfg_describe(struct buf *out, const struct cfg_schema *s, const char *prefix)
{
    for (size_t i = 0; i < s->nfields; i++) {
        const struct cfg_field *f = &s->fields[i];
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", f->key);
        if (f->type == CFG_MAP) {
            cfg_describe(out, f->sub, path);
            continue;
        }
        buf_printf(out, "| `%s` | %s | ", path, short_type(f));
        if (f->flags & CFG_SECRET)
            buf_append_str(out, "(secret)");
        else if (f->def)
            buf_printf(out, "`%s`", f->def);
        buf_append_str(out, " | ");
        if (f->type == CFG_ENUM) {
            for (size_t k = 0; f->enums[k]; k++)
                buf_printf(out, "%s`%s`", k ? ", " : "", f->enums[k]);
        } else if ((f->type == CFG_INT || f->type == CFG_SIZE) && f->max > 0) {
            buf_printf(out, "%lld..%lld", (long long)f->min, (long long)f->max);
        } else if (f->type == CFG_DURATION && f->max > 0) {
            buf_printf(out, "%lldms..%lldms", (long long)f->min, (long long)f->max);
        } else if (f->type == CFG_DOUBLE && f->dmax > 0) {
            buf_printf(out, "%g..%g", f->dmin, f->dmax);
        }
        buf_append_str(out, " | ");
        if (!(f->flags & CFG_NO_ENV) && prefix[0] != '\0' && strchr(prefix, '[') == NULL) {
            buf_append_str(out, "`AGENTD_");
            for (const char *c = path; *c; c++)
                buf_append_char(out, *c == '.' ? '_' : (char)toupper((unsigned char)*c));
            buf_append_str(out, "`");
            if (f->env_alias)
                buf_printf(out, ", `%s`", f->env_alias);
        } else if (!(f->flags & CFG_NO_ENV) && (f->type == CFG_LIST || f->type == CFG_DICT)) {
            buf_append_str(out, "`AGENTD_");
            for (const char *c = path; *c; c++)
                buf_append_char(out, *c == '.' ? '_' : (char)toupper((unsigned char)*c));
            buf_append_str(out, "` (YAML)");
        }
        buf_printf(out, " | %s%s%s |\n", f->help ? f->help : "", (f->flags & CFG_RESTART) ? " (restart to change)" : "",
                   (f->flags & CFG_REQUIRED) ? " (required)" : "");
        if (f->type == CFG_LIST || f->type == CFG_DICT) {
            char sub[300];
            snprintf(sub, sizeof(sub), "%s[]", path);
            cfg_describe(out, f->sub, sub);
        }
    }
}
