#include "sandbox/sbx_json.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <string.h>

#include "common/alloc.h"

/* Largest spec text accepted (files travel inside it). */
#define SPEC_TEXT_MAX ((size_t)SBX_MAX_SPEC_BYTES * 2)

static char *own(struct sbx_json_spec *js, char *s)
{
    js->owned = xrealloc(js->owned, (js->nowned + 1) * sizeof(*js->owned));
    js->owned[js->nowned++] = s;
    return s;
}

static int b64_decode(struct sbx_json_spec *js, const char *in, const char **out, size_t *outlen, struct buf *err)
{
    size_t n = strlen(in);
    /* EVP_DecodeBlock is lenient about '=' (it decodes "====" as data): check the alphabet and padding here. */
    size_t pad = (n >= 1 && in[n - 1] == '=') + (n >= 2 && in[n - 2] == '=');
    bool bad = n % 4 != 0 || n / 4 * 3 > SBX_MAX_SPEC_BYTES;
    for (size_t i = 0; i < n - pad && !bad; i++) {
        char c = in[i];
        bad = !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/');
    }
    if (bad) {
        (void)buf_printf(err, "bad base64");
        return -1;
    }
    char *dst = own(js, xmalloc(n / 4 * 3 + 1));
    int got = n ? EVP_DecodeBlock((unsigned char *)dst, (const unsigned char *)in, (int)n) : 0;
    if (got < 0) {
        (void)buf_printf(err, "bad base64");
        return -1;
    }
    /* EVP_DecodeBlock counts the padding as data: take it back off. */
    if (got < (int)pad) {
        (void)buf_printf(err, "bad base64");
        return -1;
    }
    got -= (int)pad;
    dst[got] = '\0';
    *out = dst;
    *outlen = (size_t)got;
    return 0;
}

static int get_u64(const cJSON *v, const char *what, uint64_t max, uint64_t *out, struct buf *err)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > (double)max ||
        v->valuedouble != floor(v->valuedouble)) {
        (void)buf_printf(err, "%s must be an integer between 0 and %" PRIu64, what, max);
        return -1;
    }
    *out = (uint64_t)v->valuedouble;
    return 0;
}

static int parse_limits(const cJSON *o, struct sbx_limits *l, struct buf *err)
{
    static const struct {
        const char *name;
        size_t off;
        int is32;
        uint64_t scale;
    } fields[] = {
        {"wall_ms", offsetof(struct sbx_limits, wall_ms), 0, 1},
        {"cpu_ms", offsetof(struct sbx_limits, cpu_ms), 0, 1},
        {"memory_bytes", offsetof(struct sbx_limits, memory_bytes), 0, 1},
        {"memory_mb", offsetof(struct sbx_limits, memory_bytes), 0, 1u << 20},
        {"address_space_bytes", offsetof(struct sbx_limits, address_space_bytes), 0, 1},
        {"pids", offsetof(struct sbx_limits, pids), 1, 1},
        {"nofile", offsetof(struct sbx_limits, nofile), 1, 1},
        {"fsize_bytes", offsetof(struct sbx_limits, fsize_bytes), 0, 1},
        {"cpu_percent", offsetof(struct sbx_limits, cpu_percent), 1, 1},
        {"stdout_max", offsetof(struct sbx_limits, stdout_max), 0, 1},
        {"stderr_max", offsetof(struct sbx_limits, stderr_max), 0, 1},
        {"work_bytes", offsetof(struct sbx_limits, work_bytes), 0, 1},
        {"tmp_bytes", offsetof(struct sbx_limits, tmp_bytes), 0, 1},
    };
    if (!cJSON_IsObject(o)) {
        (void)buf_printf(err, "limits must be an object");
        return -1;
    }
    for (const cJSON *c = o->child; c; c = c->next) {
        size_t i = 0, n = sizeof(fields) / sizeof(fields[0]);
        while (i < n && strcmp(fields[i].name, c->string) != 0)
            i++;
        if (i == n) {
            (void)buf_printf(err, "unknown limit \"%s\"", c->string);
            return -1;
        }
        uint64_t v, max = (fields[i].is32 ? UINT32_MAX : (UINT64_C(1) << 50)) / fields[i].scale;
        if (get_u64(c, c->string, max, &v, err) != 0)
            return -1;
        v *= fields[i].scale;
        char *p = (char *)l + fields[i].off;
        if (fields[i].is32) {
            uint32_t v32 = (uint32_t)v;
            memcpy(p, &v32, sizeof(v32));
        } else {
            memcpy(p, &v, sizeof(v));
        }
    }
    return 0;
}

static int parse_env(struct sbx_json_spec *js, const cJSON *v, struct buf *err)
{
    int n = cJSON_GetArraySize(v);
    if ((!cJSON_IsObject(v) && !cJSON_IsArray(v)) || n > SBX_MAX_ENV) {
        (void)buf_printf(err, "env must be an object or an array of at most %d entries", SBX_MAX_ENV);
        return -1;
    }
    js->env = xcalloc((size_t)n + 1, sizeof(*js->env));
    size_t i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c)) {
            (void)buf_printf(err, "env values must be strings");
            return -1;
        }
        if (cJSON_IsObject(v)) {
            struct buf kv = BUF_INIT(BUF_UNBOUNDED);
            (void)buf_printf(&kv, "%s=%s", c->string, c->valuestring);
            js->env[i] = own(js, buf_steal(&kv, NULL));
        } else {
            js->env[i] = c->valuestring;
        }
    }
    js->spec.env = js->env;
    js->spec.envc = i;
    return 0;
}

static int parse_files(struct sbx_json_spec *js, const cJSON *v, struct buf *err)
{
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n > SBX_MAX_FILES) {
        (void)buf_printf(err, "files must be an array of at most %d entries", SBX_MAX_FILES);
        return -1;
    }
    js->files = xcalloc((size_t)n + 1, sizeof(*js->files));
    size_t i = 0;
    for (const cJSON *f = v->child; f; f = f->next, i++) {
        struct sbx_file *out = &js->files[i];
        if (!cJSON_IsObject(f)) {
            (void)buf_printf(err, "each file must be an object");
            return -1;
        }
        out->data = "";
        for (const cJSON *c = f->child; c; c = c->next) {
            if (strcmp(c->string, "name") == 0 && cJSON_IsString(c)) {
                out->name = c->valuestring;
            } else if (strcmp(c->string, "content") == 0 && cJSON_IsString(c)) {
                out->data = c->valuestring;
                out->len = strlen(c->valuestring);
            } else if (strcmp(c->string, "content_base64") == 0 && cJSON_IsString(c)) {
                const char *d;
                if (b64_decode(js, c->valuestring, &d, &out->len, err) != 0)
                    return -1;
                out->data = d;
            } else if (strcmp(c->string, "mode") == 0) {
                uint64_t m;
                if (get_u64(c, "mode", 0777, &m, err) != 0)
                    return -1;
                out->mode = (uint32_t)m;
            } else {
                (void)buf_printf(err, "unknown or mistyped file field \"%s\"", c->string);
                return -1;
            }
        }
        if (out->name == NULL) {
            (void)buf_printf(err, "a file has no name");
            return -1;
        }
    }
    js->spec.files = js->files;
    js->spec.nfiles = i;
    return 0;
}

int sbx_json_parse_spec(const char *text, size_t len, struct sbx_json_spec *out, struct buf *err)
{
    if (len > SPEC_TEXT_MAX) {
        memset(out, 0, sizeof(*out));
        sbx_spec_init(&out->spec);
        (void)buf_printf(err, "spec text too large");
        return -1;
    }
    return sbx_json_spec_from_object(cJSON_ParseWithLength(text, len), NULL, out, err);
}

int sbx_json_spec_from_object(struct cJSON *root, const struct sbx_limits *defaults, struct sbx_json_spec *out,
                              struct buf *err)
{
    memset(out, 0, sizeof(*out));
    sbx_spec_init(&out->spec);
    if (defaults)
        out->spec.limits = *defaults;
    out->root = root;
    if (out->root == NULL || !cJSON_IsObject(out->root)) {
        (void)buf_printf(err, "spec is not a JSON object");
        return -1;
    }
    struct sbx_spec *s = &out->spec;
    for (const cJSON *c = out->root->child; c; c = c->next) {
        const char *k = c->string;
        if (strcmp(k, "id") == 0 && (cJSON_IsString(c) || cJSON_IsNumber(c))) {
            if (cJSON_IsString(c))
                (void)snprintf(out->id, sizeof(out->id), "%s", c->valuestring);
            else
                (void)snprintf(out->id, sizeof(out->id), "%.0f", c->valuedouble);
        } else if (strcmp(k, "lang") == 0 && cJSON_IsString(c)) {
            int l = sbx_lang_parse(c->valuestring);
            if (l < 0) {
                (void)buf_printf(err, "unknown lang (python, sh, node)");
                return -1;
            }
            s->lang = (enum sbx_lang)l;
        } else if (strcmp(k, "code") == 0 && cJSON_IsString(c)) {
            s->code = c->valuestring;
            s->code_len = strlen(c->valuestring);
        } else if ((strcmp(k, "argv") == 0 && out->argv) || (strcmp(k, "env") == 0 && out->env) ||
                   (strcmp(k, "files") == 0 && out->files)) {
            (void)buf_printf(err, "field \"%s\" given twice", k);
            return -1;
        } else if (strcmp(k, "argv") == 0 && cJSON_IsArray(c)) {
            int n = cJSON_GetArraySize(c);
            if (n > SBX_MAX_ARGS) {
                (void)buf_printf(err, "too many arguments");
                return -1;
            }
            out->argv = xcalloc((size_t)n + 1, sizeof(*out->argv));
            size_t i = 0;
            for (const cJSON *a = c->child; a; a = a->next) {
                if (!cJSON_IsString(a)) {
                    (void)buf_printf(err, "argv entries must be strings");
                    return -1;
                }
                out->argv[i++] = a->valuestring;
            }
            s->argv = out->argv;
            s->argc = i;
        } else if (strcmp(k, "env") == 0) {
            if (parse_env(out, c, err) != 0)
                return -1;
        } else if (strcmp(k, "stdin") == 0 && cJSON_IsString(c)) {
            s->stdin_data = c->valuestring;
            s->stdin_len = strlen(c->valuestring);
        } else if (strcmp(k, "stdin_base64") == 0 && cJSON_IsString(c)) {
            const char *d;
            if (b64_decode(out, c->valuestring, &d, &s->stdin_len, err) != 0)
                return -1;
            s->stdin_data = d;
        } else if (strcmp(k, "files") == 0) {
            if (parse_files(out, c, err) != 0)
                return -1;
        } else if (strcmp(k, "limits") == 0) {
            if (parse_limits(c, &s->limits, err) != 0)
                return -1;
        } else if (strcmp(k, "timeout_s") == 0) {
            if (!cJSON_IsNumber(c) || !(c->valuedouble > 0) || c->valuedouble > 86400) {
                (void)buf_printf(err, "timeout_s must be a number of seconds in (0, 86400]");
                return -1;
            }
            s->limits.wall_ms = (uint64_t)ceil(c->valuedouble * 1000);
        } else if (strcmp(k, "net") == 0 && cJSON_IsString(c)) {
            int net = sbx_net_parse(c->valuestring);
            if (net < 0) {
                (void)buf_printf(err, "net must be \"none\" or \"egress\"");
                return -1;
            }
            s->net = (enum sbx_net)net;
        } else {
            (void)buf_printf(err, "unknown or mistyped field \"%s\"", k);
            return -1;
        }
    }
    return sbx_spec_validate(s, err);
}

void sbx_json_spec_free(struct sbx_json_spec *js)
{
    for (size_t i = 0; i < js->nowned; i++)
        xfree(js->owned[i]);
    xfree(js->owned);
    xfree(js->argv);
    xfree(js->env);
    xfree(js->files);
    if (js->root)
        cJSON_Delete(js->root);
    memset(js, 0, sizeof(*js));
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, <= U+10FFFF), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t need;
    uint32_t cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        need = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        need = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        need = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((need == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return need;
}

bool sbx_json_append_utf8(struct buf *out, const char *s, size_t n)
{
    bool valid = true;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    (void)buf_append_char(out, '"');
    while (i < n) {
        size_t l = utf8_len(u + i, n - i);
        if (l == 0) {
            /* Flush the valid run before the bad byte, then U+FFFD for it. */
            if (run) {
                struct buf tmp = BUF_INIT(BUF_UNBOUNDED);
                (void)buf_append_json_str(&tmp, s + i - run, run);
                (void)buf_append(out, tmp.data + 1, tmp.len - 2);
                buf_free(&tmp);
                run = 0;
            }
            (void)buf_append_str(out, "\\ufffd");
            valid = false;
            i++;
            continue;
        }
        run += l;
        i += l;
    }
    if (run) {
        struct buf tmp = BUF_INIT(BUF_UNBOUNDED);
        (void)buf_append_json_str(&tmp, s + n - run, run);
        (void)buf_append(out, tmp.data + 1, tmp.len - 2);
        buf_free(&tmp);
    }
    (void)buf_append_char(out, '"');
    return valid;
}

static void append_output(struct buf *out, const char *key, const struct buf *b)
{
    (void)buf_printf(out, ",\"%s\":", key);
    if (sbx_json_append_utf8(out, b->data ? b->data : "", b->len))
        return;
    size_t cap = (b->len + 2) / 3 * 4 + 1;
    char *enc = xmalloc(cap);
    int n = EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)b->data, (int)b->len);
    (void)buf_printf(out, ",\"%s_base64\":\"%.*s\"", key, n, enc);
    xfree(enc);
}

void sbx_json_outfile(const struct sbx_outfile *f, struct buf *out)
{
    (void)buf_append_str(out, "{\"name\":");
    (void)buf_append_json_cstr(out, f->name);
    (void)buf_printf(out, ",\"size\":%zu,\"mode\":%u,\"content\":", f->len, (unsigned)f->mode);
    size_t mark = out->len;
    /* Text (valid UTF-8, no NUL) as it is; anything else exactly, in base64. */
    if (memchr(f->data, '\0', f->len) == NULL && sbx_json_append_utf8(out, f->data, f->len)) {
        (void)buf_append_char(out, '}');
        return;
    }
    out->len = mark - sizeof("\"content\":") + 1;
    size_t cap = (f->len + 2) / 3 * 4 + 1;
    char *enc = xmalloc(cap);
    int n = EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)f->data, (int)f->len);
    (void)buf_printf(out, "\"content_base64\":\"%.*s\"}", n, enc);
    xfree(enc);
}

void sbx_json_outfiles(const struct sbx_result *res, struct buf *out)
{
    if (!res->files_collected)
        return;
    (void)buf_append_str(out, ",\"files\":[");
    for (size_t i = 0; i < res->nfiles; i++) {
        if (i)
            (void)buf_append_char(out, ',');
        sbx_json_outfile(&res->files[i], out);
    }
    (void)buf_printf(out, "],\"files_truncated\":%s", res->files_truncated ? "true" : "false");
}

void sbx_json_result(const struct sbx_result *res, const char *id, struct buf *out)
{
    (void)buf_append_char(out, '{');
    if (id && id[0]) {
        (void)buf_append_str(out, "\"id\":");
        (void)buf_append_json_cstr(out, id);
        (void)buf_append_char(out, ',');
    }
    (void)buf_printf(out, "\"reason\":\"%s\",\"exit_code\":", sbx_reason_name(res->reason));
    if (res->exit_code >= 0)
        (void)buf_printf(out, "%d", res->exit_code);
    else
        (void)buf_append_str(out, "null");
    (void)buf_append_str(out, ",\"signal\":");
    if (res->term_signal > 0) {
        const char *abbrev = sigabbrev_np(res->term_signal);
        (void)buf_printf(out, "%d,\"signal_name\":\"SIG%s\"", res->term_signal, abbrev ? abbrev : "?");
    } else {
        (void)buf_append_str(out, "null");
    }
    (void)buf_printf(out,
                     ",\"wall_ms\":%.3f,\"cpu_ms\":%.3f,\"peak_memory_bytes\":%" PRIu64 ",\"oom_kills\":%" PRIu64
                     ",\"cgroup\":\"%s\",\"host_uid\":%u,\"host_pid\":%d,\"cgroup_name\":",
                     (double)res->wall_us / 1000.0, (double)res->cpu_us / 1000.0, res->peak_memory_bytes,
                     res->oom_kills, res->cgroup[0] ? res->cgroup : "none", res->host_uid, res->host_pid);
    if (res->cgroup_name[0])
        (void)buf_append_json_cstr(out, res->cgroup_name);
    else
        (void)buf_append_str(out, "null");
    append_output(out, "stdout", &res->out);
    append_output(out, "stderr", &res->err);
    (void)buf_printf(out, ",\"stdout_truncated\":%s,\"stderr_truncated\":%s,\"error\":",
                     res->out_truncated ? "true" : "false", res->err_truncated ? "true" : "false");
    if (res->error[0])
        (void)buf_append_json_cstr(out, res->error);
    else
        (void)buf_append_str(out, "null");
    sbx_json_outfiles(res, out);
    if (res->egress)
        (void)buf_printf(out,
                         ",\"egress\":{\"connections\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                         ",\"bytes_in\":%" PRIu64 "}",
                         res->egress_connections, res->egress_refused, res->egress_bytes_out, res->egress_bytes_in);
    (void)buf_append_char(out, '}');
}
