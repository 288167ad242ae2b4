/* daemon.c: `agentd serve`.
 *
 * Threads: N workers, each with its own libuv loop, SO_REUSEPORT API socket and HTTP server; the main thread runs
 * a loop of its own for signals, the ops listener (probes, metrics), readiness checks and reloads. Workers are
 * told what to do through an atomic command mask and uv_async_send, never through locks they would wait on.
 *
 * Shutdown (SIGTERM/SIGINT): /ready turns 503 at once; after server.timeouts.drain_delay the workers close their
 * listeners and finish in-flight requests for up to drain_grace; then every connection is closed, the loops run
 * dry, the threads are joined, everything is freed, and the process exits 0. */
#include "api/daemon.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "api/ops.h"
#include "agent/run.h"
#include "gateway/cache.h"
#include "gateway/cloud_creds.h"
#include "gateway/govern.h"
#include "gateway/routing.h"
#include "policy/alerts.h"
#include "api/routes.h"
#include "api/sandbox_http.h"
#include "api/worker.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/str.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/registry.h"
#include "mcp/mcp.h"
#include "net/http.h"
#include "telemetry/eval.h"
#include "telemetry/metrics.h"
#include "telemetry/otlp.h"
#include "store/store_config.h"

extern char **environ;

struct daemon {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t ready_check;  /* data dir probe */
    uv_timer_t drain_timer;  /* drain_delay, then drain_grace */
    uv_fs_event_t cfg_watch; /* the configuration file's directory (Kubernetes swaps a ..data symlink in it) */
    uv_timer_t cfg_settle;   /* a burst of directory events becomes one look at the file */
    bool cfg_watching;
    struct stat cfg_seen;    /* the file (symlinks followed) as last loaded */
    bool cfg_seen_ok;
    uv_async_t worker_done;
    struct config_flags flags;
    struct config *cfg;      /* the main thread's reference to the current snapshot */
    struct http_server *ops;
    struct worker *workers;
    int nworkers;
    int drain_phase;         /* 0 running, 1 delay, 2 grace, 3 forced */
    _Atomic int listeners_open; /* workers whose API listener is still open */
    char api_host[256];
    int api_port;
};

static struct daemon D;

/* The ops listener's own connection budget: probes and scrapes get through a saturated API. */
#define OPS_MAX_CONNECTIONS 256

static void release_cfg(struct config *c)
{
    config_unref(c);
}

/* What the HTTP server needs from a configuration snapshot (net/ never reads the configuration): the limits, and
 * a reference to the snapshot itself, which handlers find as req->cfg for their request's lifetime. */
static struct http_options http_options_of(struct config *c)
{
    const struct config_server *s = &c->server;
    return (struct http_options){
        .limits =
            {
                .header_bytes = (size_t)s->max_header_bytes,
                .body_bytes = (size_t)s->max_body_bytes,
                .connections = (long)s->max_connections,
                .ops_connections = OPS_MAX_CONNECTIONS,
                .pipeline = (unsigned)s->max_pipeline,
                .header_timeout_ms = (uint64_t)s->header_timeout_ms,
                .body_timeout_ms = (uint64_t)s->body_timeout_ms,
                .idle_timeout_ms = (uint64_t)s->idle_timeout_ms,
            },
        .cfg = config_ref(c),
        .cfg_release = release_cfg,
    };
}

/* ---------- workers ---------- */

static void worker_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void worker_check_stopped(struct worker *w)
{
    if (!w->draining || http_server_connections(w->http) > 0 || atomic_load(&w->stopped))
        return;
    /* No connections left: close our own handles so the loop ends. */
    atomic_store(&w->stopped, true);
    sandbox_http_worker_stop(w);
    ex_worker_free(w->gateway);
    w->gateway = NULL;
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_close((uv_handle_t *)&w->turn, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
}

static void on_worker_wakeup(uv_async_t *a)
{
    struct worker *w = a->data;
    unsigned cmds = atomic_exchange(&w->cmds, 0);
    if (cmds & WORKER_CMD_RELOAD) {
        struct config *c = config_acquire();
        if (c) {
            struct http_options o = http_options_of(c);
            http_server_set_options(w->http, &o);
            config_unref(w->cfg);
            w->cfg = c;
        }
    }
    if ((cmds & (WORKER_CMD_DRAIN | WORKER_CMD_FORCE)) && !w->draining) {
        w->draining = true;
        agents_worker_drain(&w->loop); /* runs stop at their last committed step; a restart resumes them */
        http_server_close_listeners(w->http); /* the socket is closed by the time this returns */
        http_server_drain(w->http);
        if (atomic_fetch_sub(&D.listeners_open, 1) == 1)
            log_info("draining: API listeners closed; in-flight requests have %lldms",
                     (long long)w->cfg->server.drain_grace_ms);
    }
    if ((cmds & WORKER_CMD_FORCE) && w->gateway) {
        /* What the grace period did not finish ends with the caller's error event (or error body) and is
         * settled, before the connections close. */
        struct gw_error err;
        gw_error_set(&err, 503, GW_ERR_OVERLOADED,
                     "agentd is shutting down: the request did not finish within the drain grace period "
                     "(server.timeouts.drain_grace)");
        int n = ex_worker_end_all(w->gateway, &err);
        if (n)
            log_warn("drain grace over: ended %d LLM request%s still running", n, n == 1 ? "" : "s");
    }
    if (cmds & WORKER_CMD_FORCE)
        http_server_close_all(w->http);
    worker_check_stopped(w);
}

static void on_worker_turn(uv_prepare_t *p)
{
    struct worker *w = p->data;
    atomic_store_explicit(&w->last_turn_us, time_mono_us(), memory_order_relaxed);
    log_batch_flush(); /* this turn's access lines, in one write, before the loop sleeps */
    worker_check_stopped(w);
}

static void on_worker_tick(uv_timer_t *t)
{
    (void)t; /* only here so that an idle loop still turns and stamps its heartbeat */
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "agentd-w%d", w->id);
    pthread_setname_np(pthread_self(), name);
    log_batch_enable();
    sandbox_http_worker_start(w); /* the pool belongs to this thread */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    sandbox_http_worker_stop(w); /* (done already when the worker drained) */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Anything still open (nothing, normally) is closed so the loop can be freed. */
    uv_walk(&w->loop, worker_close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    mcp_worker_done();
    log_batch_disable();
    atomic_store(&w->stopped, true);
    uv_async_send(&D.worker_done);
    return NULL;
}

static int worker_init(struct worker *w, int id, int api_fd)
{
    w->id = id;
    w->api_fd = api_fd;
    if (uv_loop_init(&w->loop) != 0)
        return -1;
    w->loop.data = w;
    w->cfg = config_ref(D.cfg);
    struct http_options o = http_options_of(w->cfg);
    w->http = http_server_new(&w->loop, &o);
    w->gateway = ex_worker_new(&w->loop, gw_config_up_options(w->cfg));
    agents_worker_init(&w->loop, w->gateway, id); /* worker 0 resumes the unfinished agent runs */
    uv_async_init(&w->loop, &w->wakeup, on_worker_wakeup);
    w->wakeup.data = w;
    uv_prepare_init(&w->loop, &w->turn);
    w->turn.data = w;
    uv_prepare_start(&w->turn, on_worker_turn);
    uv_timer_init(&w->loop, &w->tick);
    uv_timer_start(&w->tick, on_worker_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&w->tick);
    atomic_store(&w->last_turn_us, time_mono_us());
    if (http_server_listen_fd(w->http, api_fd, "api", &api_router, (int)D.cfg->server.backlog) != 0)
        return -1;
    return 0;
}

static void workers_send(unsigned cmd)
{
    for (int i = 0; i < D.nworkers; i++) {
        atomic_fetch_or(&D.workers[i].cmds, cmd);
        uv_async_send(&D.workers[i].wakeup);
    }
}

/* ---------- drain ---------- */

static void on_drain_timer(uv_timer_t *t);

static void begin_shutdown(const char *why)
{
    if (D.drain_phase != 0) {
        log_warn("%s again during drain: closing every connection now", why);
        D.drain_phase = 3;
        workers_send(WORKER_CMD_FORCE);
        return;
    }
    atomic_store(&ops_state.draining, true);
    adm_close(&admission_global); /* queued requests get 503 now; nothing new waits for a slot */
    D.drain_phase = 1;
    log_info("%s: draining (ready=false; listeners close in %lldms)", why, (long long)D.cfg->server.drain_delay_ms);
    uv_timer_start(&D.drain_timer, on_drain_timer, (uint64_t)D.cfg->server.drain_delay_ms, 0);
}

static void on_drain_timer(uv_timer_t *t)
{
    (void)t;
    if (D.drain_phase == 1) {
        D.drain_phase = 2;
        log_info("draining: closing API listeners");
        workers_send(WORKER_CMD_DRAIN);
        uv_timer_start(&D.drain_timer, on_drain_timer, (uint64_t)D.cfg->server.drain_grace_ms, 0);
    } else if (D.drain_phase == 2) {
        D.drain_phase = 3;
        log_warn("drain grace period over: closing the remaining connections");
        workers_send(WORKER_CMD_FORCE);
    }
}

static void main_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_worker_done(uv_async_t *a)
{
    (void)a;
    for (int i = 0; i < D.nworkers; i++)
        if (!atomic_load(&D.workers[i].stopped))
            return;
    /* Every worker loop has ended: stop the main loop too. */
    if (D.ops) {
        http_server_close_listeners(D.ops);
        http_server_close_all(D.ops);
    }
    uv_walk(&D.loop, main_close_walk, NULL);
}

/* ---------- signals, reload ---------- */

/* Configuration plus what is derived from it (the model registry with its keys from the environment). */
static struct config *load_config(struct buf *errors)
{
    struct config *c = config_load(&D.flags, environ, errors);
    if (c == NULL)
        return NULL;
    struct buf warnings = BUF_INIT(1 << 16);
    registry_attach(c, environ, &warnings);
    for (char *line = warnings.data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        log_warn("%s", line);
        line = nl ? nl + 1 : NULL;
    }
    buf_free(&warnings);
    return c;
}

static void reload(void)
{
    struct buf errors = BUF_INIT(1 << 20);
    struct config *c = load_config(&errors);
    if (c == NULL) {
        /* Keep serving with the old configuration; say exactly why the new one was refused. */
        const char *p = errors.data ? errors.data : "invalid configuration";
        struct log_line l;
        if (log_begin(&l, LL_ERROR, "configuration reload refused; keeping the current configuration")) {
            log_field_cstr(&l, "errors", p);
            log_end(&l);
        }
        buf_free(&errors);
        return;
    }
    buf_free(&errors);
    struct buf which = BUF_INIT(4096);
    /* Settings the schema marks CFG_RESTART keep their running values, so that what `config print` and the
     * process agree on stays true. */
    if (config_keep_restart_settings(c, D.cfg, &which))
        log_warn("configuration reload: %s change only on restart; the running values stay", which.data);
    buf_free(&which);
    log_min_level = c->log.level;
    log_set_format(c->log.format);
    config_publish(config_ref(c));
    ex_preload(c);
    config_unref(D.cfg);
    D.cfg = c;
    struct http_options o = http_options_of(c);
    http_server_set_options(D.ops, &o);
    workers_send(WORKER_CMD_RELOAD);
    log_info("configuration reloaded (generation %llu)", (unsigned long long)c->generation);
}

/* ---------- the mounted configuration file ----------
 *
 * A ConfigMap volume is a directory whose agentd.yaml is a symlink into `..data`, itself a symlink to a
 * timestamped directory; kubelet writes a new directory and renames a new `..data` over the old one. An inotify
 * watch on the file itself would die with the old directory, so the directory is watched, and what counts is the
 * file the path resolves to now: its device, inode, size and modification time. The 2 s readiness timer compares
 * them as well, for file systems without inotify (and a watch that could not be set up). */

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void cfg_remember(void)
{
    D.cfg_seen_ok = D.cfg->path && stat(D.cfg->path, &D.cfg_seen) == 0;
}

static void cfg_check_changed(const char *how)
{
    if (D.cfg->path == NULL || D.drain_phase != 0)
        return;
    struct stat st;
    if (stat(D.cfg->path, &st) != 0)
        return; /* mid-swap, or removed: the running configuration stays */
    if (D.cfg_seen_ok && same_file(&st, &D.cfg_seen))
        return;
    struct log_line l;
    if (log_begin(&l, LL_INFO, "configuration file changed: reloading")) {
        log_field_cstr(&l, "file", D.cfg->path);
        log_field_cstr(&l, "noticed_by", how);
        log_end(&l);
    }
    D.cfg_seen = st; /* a refused file is not retried until it changes again */
    D.cfg_seen_ok = true;
    reload();
}

static void on_cfg_settle(uv_timer_t *t)
{
    (void)t;
    cfg_check_changed("watch");
}

static void on_cfg_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)h;
    (void)filename;
    (void)events;
    if (status < 0)
        return;
    /* kubelet's swap is several events (new directory, new ..data_tmp, rename): look once they have settled */
    uv_timer_start(&D.cfg_settle, on_cfg_settle, 50, 0);
}

static void cfg_watch_start(void)
{
    uv_timer_init(&D.loop, &D.cfg_settle);
    cfg_remember();
    if (D.cfg->path == NULL)
        return;
    char dir[4096];
    if (str_lcpy(dir, D.cfg->path, sizeof(dir)) >= sizeof(dir))
        return;
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        str_lcpy(dir, ".", sizeof(dir));
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    uv_fs_event_init(&D.loop, &D.cfg_watch);
    int e = uv_fs_event_start(&D.cfg_watch, on_cfg_event, dir, 0);
    if (e != 0) {
        log_warn("cannot watch %s for configuration changes (%s); checking every 2s instead", dir, uv_strerror(e));
        uv_close((uv_handle_t *)&D.cfg_watch, NULL);
        return;
    }
    D.cfg_watching = true;
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (signum == SIGHUP) {
        reload();
        cfg_remember();
    }
    else
        begin_shutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void check_data_dir(void)
{
    static bool checked;
    bool ok = access(D.cfg->server.data_dir, W_OK | X_OK) == 0;
    if (checked && ok != atomic_load(&ops_state.data_dir_ok))
        log_warn("data dir %s is %s", D.cfg->server.data_dir, ok ? "usable again" : "not writable");
    else if (!checked && !ok)
        log_warn("data dir %s is not writable", D.cfg->server.data_dir);
    checked = true;
    atomic_store(&ops_state.data_dir_ok, ok);
}

static void on_ready_check(uv_timer_t *t)
{
    (void)t;
    check_data_dir();
    cfg_check_changed("poll");
}

/* ---------- start-up ---------- */

static int cpu_quota_workers(void)
{
    cpu_set_t set;
    int n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    /* cgroup v2 cpu.max "QUOTA PERIOD" or v1 cfs_quota_us / cfs_period_us: a pod limited to 2 CPUs on a 64-core
     * node should run 2 workers, not 64. */
    long quota = -1, period = 0;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
    if (f) {
        char q[32];
        if (fscanf(f, "%31s %ld", q, &period) == 2 && strcmp(q, "max") != 0)
            quota = strtol(q, NULL, 10);
        fclose(f);
    } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "re"))) {
        if (fscanf(f, "%ld", &quota) != 1)
            quota = -1;
        fclose(f);
        if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "re"))) {
            if (fscanf(f, "%ld", &period) != 1)
                period = 0;
            fclose(f);
        }
    }
    if (quota > 0 && period > 0) {
        int q = (int)((quota + period - 1) / period);
        if (q < n)
            n = q;
    }
    return n < 1 ? 1 : n;
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    if (str_lcpy(tmp, path, sizeof(tmp)) >= sizeof(tmp))
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) == -1 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0750) == -1 && errno != EEXIST)
        return -1;
    return 0;
}

static void format_addr(char *out, size_t n, const char *host, int port)
{
    if (strchr(host, ':'))
        snprintf(out, n, "[%s]:%d", host, port);
    else
        snprintf(out, n, "%s:%d", host, port);
}

static const char *app_dir(void)
{
    return config_app_dir();
}

static int mkdir_p(const char *path);

/* The configured data dir cannot be created (a non-root pod whose working directory is read-only, `./data`):
 * fall back to the container's cache volume, and say so. Returns 0 when D.cfg was reloaded with the fallback, 1
 * when no fallback was needed or possible. */
static int data_dir_fallback(void)
{
    static char set[4200];
    if (mkdir_p(D.cfg->server.data_dir) == 0)
        return 1;
    int err = errno;
    char fallback[4096];
    int n = snprintf(fallback, sizeof(fallback), "%s/cache", app_dir());
    if (n <= 0 || (size_t)n >= sizeof(fallback) || strcmp(fallback, D.cfg->server.data_dir) == 0 ||
        D.flags.nsets >= CONFIG_MAX_SETS || mkdir_p(fallback) != 0 || access(fallback, W_OK | X_OK) != 0) {
        errno = err;
        log_perror("cannot create data dir %s", D.cfg->server.data_dir);
        return 1;
    }
    struct log_line l;
    if (log_begin(&l, LL_WARN, "data dir cannot be created; using the container cache volume instead")) {
        log_field_cstr(&l, "configured", D.cfg->server.data_dir);
        log_field_cstr(&l, "error", strerror(err));
        log_field_cstr(&l, "data_dir", fallback);
        log_end(&l);
    }
    /* Every later load (reloads too) gets it, as if given on the command line. */
    snprintf(set, sizeof(set), "server.data_dir=%s", fallback);
    D.flags.sets[D.flags.nsets++] = set;
    struct buf errors = BUF_INIT(1 << 20);
    struct config *c = load_config(&errors);
    buf_free(&errors);
    if (c == NULL)
        return 1;
    config_unref(D.cfg);
    D.cfg = c;
    return 0;
}

/* "mock,gpt-4o,..." for the start-up line. */
static void models_served(struct buf *out)
{
    const struct registry *r = registry_of(D.cfg);
    for (size_t i = 0; r && i < r->nmodels; i++)
        buf_printf(out, "%s%s", i ? "," : "", r->models[i].name);
}

int daemon_main(int argc, char **argv)
{
    int rc = 1;
    int i = config_parse_flags(argc, argv, &D.flags, true);
    if (i < 0)
        return 2;
    if (i < argc) {
        fprintf(stderr, "agentd serve: unexpected argument '%s'\n", argv[i]);
        return 2;
    }
    D.flags.config_path = config_default_path(D.flags.config_path);
    struct buf errors = BUF_INIT(1 << 20);
    if (ex_global_init() != 0) {
        fprintf(stderr, "agentd: cannot initialise the gateway\n");
        return 1;
    }
    cache_init();   /* the response cache in the spine's cache stage (gateway/cache.c) */
    routing_init(); /* routing rules in plan (gateway/routing.c) */
    D.cfg = load_config(&errors);
    if (D.cfg == NULL) {
        fputs(errors.data ? errors.data : "invalid configuration\n", stderr);
        buf_free(&errors);
        ex_global_cleanup();
        return 2;
    }
    buf_free(&errors);
    log_min_level = D.cfg->log.level;
    log_set_format(D.cfg->log.format);
    data_dir_fallback();
    {
        /* DATABASE_URL / store.database_url: a URL that does not parse or that the server refuses is a
         * configuration error; a server that is merely down is reported by /ready until it answers */
        struct buf derr = BUF_INIT(4096);
        if (store_backend_start(D.cfg, true, &derr) != 0) {
            fprintf(stderr, "agentd: %s\n", derr.data ? derr.data : "bad DATABASE_URL");
            buf_free(&derr);
            config_unref(D.cfg);
            ex_global_cleanup();
            return 2;
        }
        buf_free(&derr);
        if (strcmp(store_backend_name(), "sqlite") != 0)
            log_info("store: %s (keys, spend ledger, stored responses and agent runs)", store_backend_name());
    }
    config_publish(config_ref(D.cfg));
    ex_preload(D.cfg);
    signal(SIGPIPE, SIG_IGN);
    ops_state.started_us = time_mono_us();
    atomic_store(&ops_state.config_ok, true);

    govern_init();
    struct buf gerr = BUF_INIT(4096);
    if (govern_start(D.cfg, &gerr) != 0) /* budgets rebuilt from the ledger, then its writer */
        log_warn("spend ledger not available: %s", gerr.data ? gerr.data : "?");
    buf_free(&gerr);
    cache_load(D.cfg); /* cache.persist: answers saved at the last shutdown */
    if (alerts_start(D.cfg) != 0) /* spend alerts: budget thresholds, spend-rate anomalies, webhooks */
        log_warn("spend alerts not available");

    metrics_register_process_collector();
    ops_init_http_metrics();
    /* before the exporter thread starts: the service registers its metrics; its uid range is split per worker */
    sandbox_http_init(D.cfg, (unsigned)(D.cfg->server.workers > 0 ? (int)D.cfg->server.workers : cpu_quota_workers()));
    otel_start(D.cfg);
    cc_start(); /* cloud credentials of the deployments (gateway/cloud_creds.h), fetched off the worker loops */
    eval_set_transport(&eval_gateway_transport); /* the LLM judge answers through the gateway */
    eval_start(D.cfg); /* response evaluations: with or without an OTLP endpoint (the scores are metrics too) */
    routes_init(D.cfg);

    D.nworkers = D.cfg->server.workers > 0 ? (int)D.cfg->server.workers : cpu_quota_workers();
    D.workers = xcalloc((size_t)D.nworkers, sizeof(*D.workers));
    ops_state.workers = D.workers;
    ops_state.nworkers = D.nworkers;

    /* Bind everything before any thread starts, so a taken port fails the start with a clear message. */
    char host[256], ops_host[256];
    int port, ops_port;
    struct buf err = BUF_INIT(4096);
    int ops_fd = -1;
    int *fds = xcalloc((size_t)D.nworkers, sizeof(int));
    int nfds = 0;
    cfg_parse_addr(D.cfg->server.listen, host, sizeof(host), &port);
    cfg_parse_addr(D.cfg->server.ops_listen, ops_host, sizeof(ops_host), &ops_port);
    for (; nfds < D.nworkers; nfds++) {
        /* The first socket resolves port 0 to a real port; the others join it with SO_REUSEPORT. */
        fds[nfds] = http_bind_socket(host, &port, nfds == 0, &err);
        if (fds[nfds] < 0)
            break;
    }
    if (nfds == D.nworkers)
        ops_fd = http_bind_socket(ops_host, &ops_port, true, &err);
    if (nfds < D.nworkers || ops_fd < 0) {
        log_error("cannot listen: %s", err.data ? err.data : "?");
        for (int k = 0; k < nfds; k++)
            close(fds[k]);
        buf_free(&err);
        xfree(fds);
        goto out_early;
    }
    buf_free(&err);

    uv_loop_init(&D.loop);
    D.loop.data = NULL;
    struct http_options o = http_options_of(D.cfg);
    D.ops = http_server_new(&D.loop, &o);
    if (http_server_listen_fd(D.ops, ops_fd, "ops", &ops_router, (int)D.cfg->server.backlog) != 0) {
        xfree(fds);
        goto out_loop;
    }
    uv_signal_init(&D.loop, &D.sigterm);
    uv_signal_start(&D.sigterm, on_signal, SIGTERM);
    uv_signal_init(&D.loop, &D.sigint);
    uv_signal_start(&D.sigint, on_signal, SIGINT);
    uv_signal_init(&D.loop, &D.sighup);
    uv_signal_start(&D.sighup, on_signal, SIGHUP);
    uv_timer_init(&D.loop, &D.drain_timer);
    uv_timer_init(&D.loop, &D.ready_check);
    check_data_dir();
    uv_timer_start(&D.ready_check, on_ready_check, 2000, 2000);
    uv_async_init(&D.loop, &D.worker_done, on_worker_done);
    cfg_watch_start();

    atomic_store(&D.listeners_open, D.nworkers);
    int started = 0;
    for (; started < D.nworkers; started++) {
        if (worker_init(&D.workers[started], started, fds[started]) != 0 ||
            pthread_create(&D.workers[started].thread, NULL, worker_main, &D.workers[started]) != 0) {
            log_error("cannot start worker %d", started);
            break;
        }
    }
    xfree(fds);
    if (started < D.nworkers) {
        D.nworkers = started;
        ops_state.nworkers = started;
        begin_shutdown("start-up failure");
    } else {
        char api_addr[300], ops_addr[300];
        format_addr(api_addr, sizeof(api_addr), host, port);
        format_addr(ops_addr, sizeof(ops_addr), ops_host, ops_port);
        struct log_line l;
        if (log_begin(&l, LL_INFO, "listening")) {
            log_field_cstr(&l, "api", api_addr);
            log_field_cstr(&l, "ops", ops_addr);
            log_field_int(&l, "workers", D.nworkers);
            log_field_cstr(&l, "version", AGENTD_VERSION);
            log_field_cstr(&l, "environment", D.cfg->server.environment);
            log_field_cstr(&l, "config", D.cfg->path ? D.cfg->path : "(built-in defaults)");
            log_field_cstr(&l, "data_dir", D.cfg->server.data_dir);
            struct buf models = BUF_INIT(1 << 16);
            models_served(&models);
            log_field_cstr(&l, "models", models.data ? models.data : "");
            buf_free(&models);
            log_end(&l);
        }
    }

    uv_run(&D.loop, UV_RUN_DEFAULT);
    for (int k = 0; k < D.nworkers; k++)
        pthread_join(D.workers[k].thread, NULL);
    rc = 0;
    log_info("stopped");

out_loop:
    uv_walk(&D.loop, main_close_walk, NULL);
    uv_run(&D.loop, UV_RUN_DEFAULT);
    uv_loop_close(&D.loop);
    for (int k = 0; k < D.nworkers; k++) {
        struct worker *w = &D.workers[k];
        ex_worker_free(w->gateway); /* a worker that never started */
        w->gateway = NULL;
        uv_loop_close(&w->loop);
        http_server_free(w->http);
        config_unref(w->cfg);
    }
    http_server_free(D.ops);
out_early:
    xfree(D.workers);
    sandbox_http_shutdown();
    routes_shutdown();
    eval_stop(); /* scores what is queued while the exporter still runs */
    otel_stop(); /* flushes the spans the workers handed over, and a last metrics export */
    cc_stop();
    cache_save(D.cfg); /* cache.persist: the workers have stopped */
    config_unref(D.cfg);
    config_shutdown();
    alerts_stop();
    govern_cleanup(); /* writes the ledger's last rows */
    store_backend_stop();
    cache_cleanup();
    metrics_shutdown();
    ex_global_cleanup();
    return rc;
}
