#include "sandbox/sandbox_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"
#include "sandbox/sbx.h"
#include "sandbox/sbx_check.h"
#include "sandbox/sbx_egress.h"
#include "sandbox/sbx_json.h"
#include "sandbox/sbx_remote.h"
#include "sandbox/sbx_zygote.h"

static int usage(FILE *out, int rc)
{
    fprintf(out, "usage: agentd sandbox run [options] [-- CMD [ARG...]]\n"
                 "       agentd sandbox check [pool options]\n"
                 "       agentd sandbox batch [pool options] [--concurrency N] < specs.jsonl\n"
                 "       agentd sandbox bench [pool options] [--runs N] [--concurrency N] [--pace] [--raw] [run "
                 "options] -- CMD...\n"
                 "\n"
                 "run: runs CMD (or, with --lang and no CMD, the code read from stdin) in the sandbox and prints the\n"
                 "result as JSON: reason (exit, signal, timeout, cpu, memory, output_cap, killed, error), exit_code,\n"
                 "signal, wall_ms, cpu_ms, peak_memory_bytes, stdout, stderr, ...\n"
                 "  --lang python|sh|node   run in that interpreter (CMD then holds its arguments)\n"
                 "  --timeout S             wall-clock limit in seconds (10)\n"
                 "  --cpu S                 CPU seconds per process (10)\n"
                 "  --memory MB             memory limit of the whole run (256)\n"
                 "  --pids N                processes (64)         --nofile N     open files (64)\n"
                 "  --fsize BYTES           largest file (8 MiB)   --cpu-percent P  CPU bandwidth, 100 = 1 CPU\n"
                 "  --stdout-max BYTES      --stderr-max BYTES     output kept; more kills the run (1 MiB each)\n"
                 "  --work-size BYTES       --tmp-size BYTES       tmpfs sizes of /work and /tmp (64 MiB each)\n"
                 "  --net none|egress       none (the default): no network at all; egress: out through a proxy only,\n"
                 "                          to public addresses on ports 80 and 443 (with --daemon: its policy)\n"
                 "  --egress-host H         with egress: only this host (example.com, *.example.com); repeat for more\n"
                 "  --egress-port N         with egress: this port instead of 80 and 443; repeat for more\n"
                 "  --file NAME=PATH        copy host file PATH to /work/NAME (NAME: a plain file name)\n"
                 "  --env NAME=VALUE        extra environment variable\n"
                 "  --stdin-file PATH       the program's stdin (\"-\": this command's stdin); default empty\n"
                 "  --daemon URL            run it through a daemon's POST /v1/sandbox/runs (http://host:port) and its\n"
                 "                          warm pool, with the key in AGENTD_API_KEY; the daemon's limits apply\n"
                 "pool options:\n"
                 "  --zygote                start runs from a zygote process (as the daemon does)\n"
                 "  --warm N                children kept ready (0)\n"
                 "  --warm-python N         warm Python interpreters kept ready besides them, for --lang python (0)\n"
                 "  --cgroup auto|required|off   --cgroup-parent PATH   --uid-base N   --uid-count N\n"
                 "  --log-level debug|info|warn|error (warn)\n");
    return rc;
}

/* ---- option parsing ---- */

struct cli {
    struct sbx_pool_opts pool;
    struct sbx_spec spec;
    const char **argv;
    size_t argc;
    const char **env;
    size_t envc;
    struct sbx_file *files;
    size_t nfiles;
    char **owned;
    size_t nowned;
    const char *stdin_file;
    const char *daemon; /* run: through this daemon's POST /v1/sandbox/runs */
    bool lang_set;
    unsigned runs, concurrency;
    bool pace; /* bench: start each run once the pool is warm again */
    /* --net egress: the policy of the pool's proxy (the defaults, and --egress-host / --egress-port) */
    struct sbx_egress_policy egress;
    const char **egress_hosts;
    uint16_t *egress_ports;
    bool raw;  /* bench: print every run's time too */
};

static char *keep(struct cli *c, char *s)
{
    c->owned = xrealloc(c->owned, (c->nowned + 1) * sizeof(*c->owned));
    c->owned[c->nowned++] = s;
    return s;
}

static void cli_free(struct cli *c)
{
    for (size_t i = 0; i < c->nowned; i++)
        xfree(c->owned[i]);
    xfree(c->owned);
    xfree(c->argv);
    xfree(c->env);
    xfree(c->files);
    xfree(c->egress_hosts);
    xfree(c->egress_ports);
}

/* Reads a whole file (a regular file or a pipe) up to max bytes. */
static int slurp(const char *path, size_t max, char **out, size_t *len, struct buf *err)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct buf b = BUF_INIT(max);
    if (fd == -1) {
        (void)buf_printf(err, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == -1 ||
        (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode))) {
        (void)buf_printf(err, "%s: not a regular file or pipe", path);
        goto fail;
    }
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            (void)buf_printf(err, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        if (buf_append(&b, chunk, (size_t)n) != 0) {
            (void)buf_printf(err, "%s: larger than %zu bytes", path, max);
            goto fail;
        }
    }
    if (fd != STDIN_FILENO)
        close(fd);
    if (b.data == NULL)
        (void)buf_reserve(&b, 0);
    *out = buf_steal(&b, len);
    return 0;
fail:
    if (fd != STDIN_FILENO)
        close(fd);
    buf_free(&b);
    return -1;
}

static int num_u64(const char *v, uint64_t *out)
{
    return v ? str_to_u64(str_from(v), out) : -1;
}

static int num_u32(const char *v, uint32_t *out)
{
    uint64_t x;
    if (num_u64(v, &x) != 0 || x > UINT32_MAX)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

static int num_seconds_ms(const char *v, uint64_t *ms)
{
    double d;
    if (v == NULL || str_to_double(str_from(v), &d) != 0 || !(d > 0) || d > 86400)
        return -1;
    *ms = (uint64_t)ceil(d * 1000);
    return 0;
}

/* Parses pool options and (with run) run options; stops at "--" or the first non-option. Returns the index
 * of the first operand, or -1 (message printed). */
static int parse(struct cli *c, int argc, char **argv, bool run, struct buf *err)
{
    int i = 1;
    while (i < argc) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t ms = 0;
        int bad = 0;
        if (strcmp(a, "--") == 0)
            return i + 1;
        if (a[0] != '-')
            return i;
        if (strcmp(a, "--zygote") == 0 || strcmp(a, "--pace") == 0 || strcmp(a, "--raw") == 0) {
            if (a[2] == 'z')
                c->pool.zygote = true;
            else if (a[2] == 'p')
                c->pace = true;
            else
                c->raw = true;
            i++;
            continue;
        }
        if (v == NULL) {
            (void)buf_printf(err, "%s needs a value", a);
            return -1;
        }
        if (strcmp(a, "--warm") == 0)
            bad = num_u32(v, &c->pool.warm);
        else if (strcmp(a, "--warm-python") == 0)
            bad = num_u32(v, &c->pool.cfg.warm_python);
        else if (strcmp(a, "--uid-base") == 0)
            bad = num_u32(v, &c->pool.cfg.uid_base);
        else if (strcmp(a, "--uid-count") == 0)
            bad = num_u32(v, &c->pool.cfg.uid_count) || c->pool.cfg.uid_count == 0;
        else if (strcmp(a, "--cgroup-parent") == 0)
            c->pool.cfg.cgroup_parent = v;
        else if (strcmp(a, "--cgroup") == 0) {
            if (strcmp(v, "auto") == 0)
                c->pool.cfg.cgroup_mode = SBX_CGROUP_AUTO;
            else if (strcmp(v, "required") == 0)
                c->pool.cfg.cgroup_mode = SBX_CGROUP_REQUIRED;
            else if (strcmp(v, "off") == 0)
                c->pool.cfg.cgroup_mode = SBX_CGROUP_OFF;
            else
                bad = 1;
        } else if (strcmp(a, "--log-level") == 0) {
            int l = log_level_parse(v);
            bad = l < 0;
            if (!bad)
                log_min_level = l;
        } else if (strcmp(a, "--runs") == 0)
            bad = num_u32(v, &c->runs) || c->runs == 0 || c->runs > 1000000;
        else if (strcmp(a, "--concurrency") == 0)
            bad = num_u32(v, &c->concurrency) || c->concurrency == 0 || c->concurrency > 4096;
        else if (!run) {
            (void)buf_printf(err, "unknown option %s", a);
            return -1;
        } else if (strcmp(a, "--lang") == 0) {
            int l = sbx_lang_parse(v);
            bad = l < 0;
            c->spec.lang = bad ? SBX_LANG_NONE : (enum sbx_lang)l;
            c->lang_set = !bad;
        } else if (strcmp(a, "--timeout") == 0) {
            bad = num_seconds_ms(v, &ms);
            c->spec.limits.wall_ms = ms;
        } else if (strcmp(a, "--cpu") == 0) {
            bad = num_seconds_ms(v, &ms);
            c->spec.limits.cpu_ms = ms;
        } else if (strcmp(a, "--memory") == 0) {
            uint64_t mb;
            bad = num_u64(v, &mb) || mb == 0 || mb > (1u << 20);
            c->spec.limits.memory_bytes = mb << 20;
        } else if (strcmp(a, "--pids") == 0)
            bad = num_u32(v, &c->spec.limits.pids);
        else if (strcmp(a, "--nofile") == 0)
            bad = num_u32(v, &c->spec.limits.nofile);
        else if (strcmp(a, "--fsize") == 0)
            bad = num_u64(v, &c->spec.limits.fsize_bytes);
        else if (strcmp(a, "--cpu-percent") == 0)
            bad = num_u32(v, &c->spec.limits.cpu_percent);
        else if (strcmp(a, "--stdout-max") == 0)
            bad = num_u64(v, &c->spec.limits.stdout_max);
        else if (strcmp(a, "--stderr-max") == 0)
            bad = num_u64(v, &c->spec.limits.stderr_max);
        else if (strcmp(a, "--work-size") == 0)
            bad = num_u64(v, &c->spec.limits.work_bytes);
        else if (strcmp(a, "--tmp-size") == 0)
            bad = num_u64(v, &c->spec.limits.tmp_bytes);
        else if (strcmp(a, "--net") == 0) {
            int net = sbx_net_parse(v);
            bad = net < 0;
            if (!bad)
                c->spec.net = (enum sbx_net)net;
        } else if (strcmp(a, "--egress-host") == 0 && !sbx_egress_host_pattern_ok(v)) {
            bad = 1;
        } else if (strcmp(a, "--egress-host") == 0) {
            c->egress_hosts = xrealloc(c->egress_hosts, (c->egress.n_allow_hosts + 1) * sizeof(*c->egress_hosts));
            c->egress_hosts[c->egress.n_allow_hosts++] = v;
            c->egress.allow_hosts = c->egress_hosts;
        } else if (strcmp(a, "--egress-port") == 0) {
            uint32_t port = 0;
            bad = num_u32(v, &port) || port == 0 || port > 65535;
            if (!bad) {
                c->egress_ports = xrealloc(c->egress_ports, (c->egress.n_ports + 1) * sizeof(*c->egress_ports));
                c->egress_ports[c->egress.n_ports++] = (uint16_t)port;
                c->egress.ports = c->egress_ports;
            }
        }
        else if (strcmp(a, "--stdin-file") == 0)
            c->stdin_file = v;
        else if (strcmp(a, "--daemon") == 0)
            c->daemon = v;
        else if (strcmp(a, "--env") == 0) {
            c->env = xrealloc(c->env, (c->envc + 1) * sizeof(*c->env));
            c->env[c->envc++] = v;
        } else if (strcmp(a, "--file") == 0) {
            const char *eq = strchr(v, '=');
            if (eq == NULL || eq == v) {
                (void)buf_printf(err, "--file wants NAME=PATH");
                return -1;
            }
            char *data;
            size_t len;
            if (slurp(eq + 1, SBX_MAX_SPEC_BYTES, &data, &len, err) != 0)
                return -1;
            c->files = xrealloc(c->files, (c->nfiles + 1) * sizeof(*c->files));
            c->files[c->nfiles].name = keep(c, xstrndup(v, (size_t)(eq - v)));
            c->files[c->nfiles].data = keep(c, data);
            c->files[c->nfiles].len = len;
            c->files[c->nfiles].mode = 0;
            c->nfiles++;
        } else {
            (void)buf_printf(err, "unknown option %s", a);
            return -1;
        }
        if (bad) {
            (void)buf_printf(err, "bad value for %s: %s", a, v);
            return -1;
        }
        i += 2;
    }
    return i;
}

/* Fills the spec from the operands (CMD...) and stdin/code. */
static int build_spec(struct cli *c, int argc, char **argv, int first, struct buf *err)
{
    c->argc = (size_t)(argc - first);
    c->argv = xcalloc(c->argc + 1, sizeof(*c->argv));
    for (size_t k = 0; k < c->argc; k++)
        c->argv[k] = argv[first + (int)k];
    c->spec.argv = c->argv;
    c->spec.argc = c->argc;
    c->spec.env = c->env;
    c->spec.envc = c->envc;
    c->spec.files = c->files;
    c->spec.nfiles = c->nfiles;
    char *data;
    size_t len;
    if (c->lang_set && c->argc == 0) {
        if (slurp("-", SBX_MAX_SPEC_BYTES, &data, &len, err) != 0)
            return -1;
        c->spec.code = keep(c, data);
        c->spec.code_len = len;
    }
    if (c->stdin_file) {
        if (c->lang_set && c->argc == 0 && strcmp(c->stdin_file, "-") == 0) {
            (void)buf_printf(err, "stdin already carries the code");
            return -1;
        }
        if (slurp(c->stdin_file, SBX_MAX_STDIN_BYTES, &data, &len, err) != 0)
            return -1;
        c->spec.stdin_data = keep(c, data);
        c->spec.stdin_len = len;
    }
    return 0;
}

static void cli_init(struct cli *c)
{
    memset(c, 0, sizeof(*c));
    sbx_pool_opts_init(&c->pool);
    /* The CLI's own pool lets egress through (asked for on the command line, --net egress) with the default policy
     * or --egress-host / --egress-port; a daemon (--daemon) applies its own. */
    c->pool.egress = &c->egress;
    sbx_spec_init(&c->spec);
    c->runs = 200;
    c->concurrency = 1;
}

/* ---- run ---- */

static int cmd_run(int argc, char **argv)
{
    struct cli c;
    struct buf err = BUF_INIT(1024), out = BUF_INIT(BUF_UNBOUNDED);
    struct sbx_result res;
    int rc = 2;
    cli_init(&c);
    memset(&res, 0, sizeof(res));
    int first = parse(&c, argc, argv, true, &err);
    if (first < 0 || build_spec(&c, argc, argv, first, &err) != 0) {
        fprintf(stderr, "agentd sandbox run: %s\n", err.data);
        goto out;
    }
    if (sbx_spec_validate(&c.spec, &err) != 0) {
        fprintf(stderr, "agentd sandbox run: %s\n", err.data);
        goto out;
    }
    if (c.daemon) {
        int status = 0;
        if (sbx_remote_run(c.daemon, getenv("AGENTD_API_KEY"), &c.spec, &status, &out, &err) != 0) {
            fprintf(stderr, "agentd sandbox run: %s\n", err.data ? err.data : "failed");
            rc = 1;
            goto out;
        }
        if (status != 200) { /* the daemon's error JSON says why */
            fprintf(stderr, "agentd sandbox run: the daemon answered %d: %.*s\n", status, (int)out.len,
                    out.data ? out.data : "");
            rc = status == 400 ? 2 : 1;
            goto out;
        }
        (void)buf_append_char(&out, '\n');
        fwrite(out.data, 1, out.len, stdout);
        fflush(stdout);
        rc = 0;
        goto out;
    }
    if (sbx_run_sync(&c.pool, &c.spec, &res, &err) != 0) {
        fprintf(stderr, "agentd sandbox run: %s\n", err.data ? err.data : "failed");
        rc = 1;
        goto out;
    }
    sbx_json_result(&res, NULL, &out);
    (void)buf_append_char(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    rc = res.reason == SBX_REASON_ERROR ? 1 : 0;
out:
    sbx_result_free(&res);
    buf_free(&out);
    buf_free(&err);
    cli_free(&c);
    return rc;
}

static int cmd_check(int argc, char **argv)
{
    struct cli c;
    struct buf err = BUF_INIT(1024), out = BUF_INIT(BUF_UNBOUNDED);
    cli_init(&c);
    if (parse(&c, argc, argv, false, &err) != argc) {
        fprintf(stderr, "agentd sandbox check: %s\n", err.data ? err.data : "unexpected operand");
        buf_free(&err);
        cli_free(&c);
        return 2;
    }
    int rc = sbx_check_report(&c.pool, &out);
    (void)buf_append_char(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    buf_free(&out);
    buf_free(&err);
    cli_free(&c);
    return rc;
}

/* ---- batch and bench: many runs on one pool ---- */

struct multi;

/* One batch line in flight. */
struct job {
    struct sbx_json_spec js;
    struct multi *m;
};

struct multi {
    uv_loop_t *loop;
    struct sbx_pool *pool;
    struct cli *cli;
    /* batch */
    char *input;
    size_t input_len, pos;
    /* bench */
    unsigned started, finished, warmup, failures;
    uint64_t *lat_ns;
    unsigned nlat;
    unsigned active;
    bool input_done, bench;
    int rc;
    uv_timer_t pace_timer;
};

static void start_more(struct multi *m);

static void on_batch_done(struct sbx_run *run, struct sbx_result *res, void *ud)
{
    struct job *j = ud;
    struct multi *m = j->m;
    (void)run;
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    sbx_json_result(res, j->js.id, &out);
    (void)buf_append_char(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    buf_free(&out);
    sbx_json_spec_free(&j->js);
    xfree(j);
    m->active--;
    start_more(m);
}

static void print_error_line(const char *id, const char *msg)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    (void)buf_append_str(&out, "{");
    if (id && id[0]) {
        (void)buf_append_str(&out, "\"id\":");
        (void)buf_append_json_cstr(&out, id);
        (void)buf_append_char(&out, ',');
    }
    (void)buf_append_str(&out, "\"reason\":\"error\",\"error\":");
    (void)buf_append_json_cstr(&out, msg);
    (void)buf_append_str(&out, "}\n");
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    buf_free(&out);
}

struct bench_run {
    struct multi *m;
    uint64_t t0;
};

static void on_bench_run_done(struct sbx_run *run, struct sbx_result *res, void *ud)
{
    struct bench_run *b = ud;
    struct multi *m = b->m;
    uint64_t dt = uv_hrtime() - b->t0;
    (void)run;
    xfree(b);
    /* The first runs warm caches and the pool: not counted. */
    if (m->finished >= m->warmup && m->nlat < m->cli->runs)
        m->lat_ns[m->nlat++] = dt;
    m->finished++;
    m->active--;
    if (res->reason != SBX_REASON_EXIT || res->exit_code != 0) {
        if (m->failures++ < 3)
            log_warn("bench run failed: %s exit %d %s", sbx_reason_name(res->reason), res->exit_code, res->error);
    }
    start_more(m);
}

static void on_pace(uv_timer_t *t)
{
    struct multi *m = t->data;
    if (m->pool)
        start_more(m);
}

static void start_more(struct multi *m)
{
    struct buf err = BUF_INIT(1024);
    while (m->active < m->cli->concurrency) {
        if (m->bench) {
            if (m->started >= m->cli->runs + m->warmup)
                break;
            /* Paced: what a run sees when it arrives at a warm pool (runs separated by, say, an LLM call). */
            if (m->cli->pace && sbx_pool_ready(m->pool) < m->cli->pool.warm + m->cli->pool.cfg.warm_python) {
                uv_timer_start(&m->pace_timer, on_pace, 1, 0);
                break;
            }
            struct bench_run *b = xcalloc(1, sizeof(*b));
            b->m = m;
            b->t0 = uv_hrtime();
            if (sbx_run_start(m->pool, &m->cli->spec, on_bench_run_done, b, NULL, &err) != 0) {
                fprintf(stderr, "agentd sandbox bench: %s\n", err.data);
                xfree(b);
                m->rc = 1;
                m->started = m->cli->runs + m->warmup;
                break;
            }
            m->started++;
            m->active++;
            continue;
        }
        if (m->pos >= m->input_len)
            break;
        char *line = m->input + m->pos;
        char *nl = memchr(line, '\n', m->input_len - m->pos);
        size_t len = nl ? (size_t)(nl - line) : m->input_len - m->pos;
        m->pos += len + (nl ? 1 : 0);
        if (str_trim(str_make(line, len)).n == 0)
            continue;
        struct job *j = xcalloc(1, sizeof(*j));
        j->m = m;
        buf_reset(&err);
        if (sbx_json_parse_spec(line, len, &j->js, &err) != 0 ||
            sbx_run_start(m->pool, &j->js.spec, on_batch_done, j, NULL, &err) != 0) {
            print_error_line(j->js.id, err.data ? err.data : "refused");
            sbx_json_spec_free(&j->js);
            xfree(j);
            continue;
        }
        j->m = m;
        m->active++;
    }
    buf_free(&err);
    bool more = m->bench ? m->started < m->cli->runs + m->warmup : m->pos < m->input_len;
    if (m->active == 0 && !more && m->pool) {
        sbx_pool_close(m->pool, NULL, NULL);
        m->pool = NULL;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, unsigned n, double p)
{
    if (n == 0)
        return 0;
    double idx = p / 100.0 * (n - 1);
    unsigned lo = (unsigned)idx;
    unsigned hi = lo + 1 < n ? lo + 1 : lo;
    return ((double)v[lo] + (idx - lo) * ((double)v[hi] - (double)v[lo])) / 1e6;
}

static int cmd_multi(int argc, char **argv, bool bench)
{
    struct cli c;
    struct multi m;
    struct buf err = BUF_INIT(1024);
    uv_loop_t loop;
    int rc = 2;
    cli_init(&c);
    memset(&m, 0, sizeof(m));
    m.cli = &c;
    m.bench = bench;
    int first = parse(&c, argc, argv, bench, &err);
    if (first < 0 || (!bench && first != argc) || (bench && build_spec(&c, argc, argv, first, &err) != 0)) {
        fprintf(stderr, "agentd sandbox %s: %s\n", bench ? "bench" : "batch",
                err.data ? err.data : "unexpected operand");
        goto out_noloop;
    }
    if (bench && sbx_spec_validate(&c.spec, &err) != 0) {
        fprintf(stderr, "agentd sandbox bench: %s\n", err.data);
        goto out_noloop;
    }
    if (!bench && slurp("-", (size_t)SBX_MAX_SPEC_BYTES * 4, &m.input, &m.input_len, &err) != 0) {
        fprintf(stderr, "agentd sandbox batch: %s\n", err.data);
        goto out_noloop;
    }
    if (uv_loop_init(&loop) != 0)
        goto out_noloop;
    m.loop = &loop;
    uv_timer_init(&loop, &m.pace_timer);
    m.pace_timer.data = &m;
    rc = 1;
    if (sbx_pool_new(&loop, &c.pool, &m.pool, &err) != 0) {
        fprintf(stderr, "agentd sandbox: %s\n", err.data);
        goto out;
    }
    if (bench) {
        m.warmup = c.runs / 10 < 20 ? c.runs / 10 : 20;
        m.lat_ns = xcalloc(c.runs, sizeof(*m.lat_ns));
    }
    rc = 0;
    start_more(&m);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    if (bench) {
        qsort(m.lat_ns, m.nlat, sizeof(*m.lat_ns), cmp_u64);
        double sum = 0;
        for (unsigned i = 0; i < m.nlat; i++)
            sum += (double)m.lat_ns[i] / 1e6;
        printf(
            "{\"mode\":\"%s\",\"paced\":%s,\"warm\":%u,\"concurrency\":%u,\"runs\":%u,\"failures\":%u,\"p50_ms\":%.3f,"
            "\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"mean_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f",
            c.pool.zygote ? "zygote" : "in-process", c.pace ? "true" : "false", c.pool.warm, c.concurrency, m.nlat,
            m.failures, pct(m.lat_ns, m.nlat, 50), pct(m.lat_ns, m.nlat, 95), pct(m.lat_ns, m.nlat, 99),
            m.nlat ? sum / m.nlat : 0, pct(m.lat_ns, m.nlat, 0), pct(m.lat_ns, m.nlat, 100));
        if (c.raw) {
            printf(",\"times_ms\":[");
            for (unsigned i = 0; i < m.nlat; i++)
                printf("%s%.3f", i ? "," : "", (double)m.lat_ns[i] / 1e6);
            printf("]");
        }
        printf("}\n");
        fflush(stdout);
        if (m.failures)
            rc = 1;
    }
out:
    if (m.pool)
        sbx_pool_close(m.pool, NULL, NULL);
    uv_close((uv_handle_t *)&m.pace_timer, NULL);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&loop);
out_noloop:
    if (m.rc)
        rc = m.rc;
    xfree(m.input);
    xfree(m.lat_ns);
    buf_free(&err);
    cli_free(&c);
    return rc;
}

int sandbox_cli_main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    log_min_level = LL_WARN;
    /* stdin goes to the program through a pipe it may close early: that must be EPIPE, not death. */
    signal(SIGPIPE, SIG_IGN);
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "batch") == 0)
        return cmd_multi(argc - 1, argv + 1, false);
    if (strcmp(cmd, "bench") == 0)
        return cmd_multi(argc - 1, argv + 1, true);
    if (strcmp(cmd, "zygote") == 0)
        return sbx_zygote_main(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout, 0);
    fprintf(stderr, "agentd sandbox: unknown command '%s'\n", cmd);
    return usage(stderr, 2);
}
