/* service.c: the sandbox as a service (service.h): a warm pool per loop, admission (running, then a bounded
 * queue), ceilings on what a caller may ask for, the POST /v1/sandbox/runs body, and the service's metrics. */
#include "sandbox/service.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "sandbox/sbx.h"
#include "telemetry/metrics.h"

/* ---- process-wide state ---- */

static struct {
    bool started;
    struct sbx_service_opts o;
    char *exe, *cgroup_parent;
    char **egress_hosts; /* G.o.egress's own copies */
    uint16_t *egress_ports;
    _Atomic unsigned next_slice;
} G;

static const char *const reason_label[] = {"reason", NULL};
static const double run_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static struct metric_def m_runs = METRIC_DEF("agentd_sandbox_runs_total",
                                             "Sandbox runs of the service by how they ended (exit, signal, timeout, "
                                             "cpu, memory, output_cap, killed, error).",
                                             METRIC_COUNTER, reason_label);
static struct metric_def m_refused = METRIC_DEF("agentd_sandbox_refused_total",
                                                "Sandbox runs refused before starting: busy (queue full), "
                                                "invalid (bad spec or over a ceiling), unavailable.",
                                                METRIC_COUNTER, reason_label);
static struct metric_def m_wall = METRIC_HISTOGRAM_DEF("agentd_sandbox_run_duration_seconds",
                                                       "Wall time of sandbox runs, start to exit.", NULL, run_buckets);
static struct metric_def m_queue = METRIC_HISTOGRAM_DEF("agentd_sandbox_queue_wait_seconds",
                                                        "Time sandbox runs waited for a free slot.", NULL, run_buckets);
static struct metric_def m_direct = METRIC_DEF("agentd_sandbox_direct_runs_total",
                                              "Sandbox runs the daemon handed straight to a warm child; the rest "
                                              "went through the sandbox zygote.",
                                              METRIC_COUNTER, NULL);
static struct metric_def m_running =
    METRIC_DEF("agentd_sandbox_running", "Sandbox runs going now (all loops).", METRIC_GAUGE, NULL);
static struct metric_def m_queued =
    METRIC_DEF("agentd_sandbox_queued", "Sandbox runs waiting for a slot now (all loops).", METRIC_GAUGE, NULL);

static const char *const outcome_label[] = {"outcome", NULL};
static const char *const direction_label[] = {"direction", NULL};
static struct metric_def m_egress_conns =
    METRIC_DEF("agentd_sandbox_egress_connections_total",
               "Connections sandbox runs opened through the egress proxy: allowed, or refused (policy, bad request, "
               "upstream failure, caps).",
               METRIC_COUNTER, outcome_label);
static struct metric_def m_egress_bytes =
    METRIC_DEF("agentd_sandbox_egress_bytes_total",
               "Bytes through the sandbox egress proxy: out (from runs) and in (to runs).", METRIC_COUNTER,
               direction_label);

static void metrics_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    metrics_register(&m_runs);
    metrics_register(&m_refused);
    metrics_register(&m_egress_conns);
    metrics_register(&m_egress_bytes);
    metrics_register(&m_wall);
    metrics_register(&m_queue);
    metrics_register(&m_direct);
    metrics_register(&m_running);
    metrics_register(&m_queued);
}

void sbx_service_opts_init(struct sbx_service_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->warm = 2;
    o->max_running = 8;
    o->max_queued = 64;
    o->loops = 1;
    o->cfg.uid_base = 1000000000u;
    o->cfg.uid_count = 1024;
    o->cfg.cgroup_mode = SBX_CGROUP_AUTO;
    sbx_limits_default(&o->defaults);
    o->max_code_bytes = 1u << 20;
    o->max_stdin_bytes = 8u << 20;
    o->max_files_bytes = 16u << 20;
    o->output_files = SBX_FILES_OUT_MAX;
    o->output_files_bytes = SBX_FILES_OUT_BYTES;
}

int sbx_service_start(const struct sbx_service_opts *o, struct buf *err)
{
    if (G.started)
        return 0;
    if (o->max_running == 0 || o->cfg.uid_count == 0) {
        (void)buf_printf(err, "sandbox service: max_running and uid_count must be at least 1");
        return -1;
    }
    metrics_once();
    G.o = *o;
    G.exe = o->exe ? xstrdup(o->exe) : NULL;
    G.cgroup_parent = o->cfg.cgroup_parent ? xstrdup(o->cfg.cgroup_parent) : NULL;
    G.o.exe = G.exe;
    G.o.cfg.cgroup_parent = G.cgroup_parent;
    if (G.o.loops == 0)
        G.o.loops = 1;
    struct sbx_egress_policy *eg = &G.o.egress;
    G.egress_hosts = eg->n_allow_hosts ? xcalloc(eg->n_allow_hosts, sizeof(char *)) : NULL;
    for (size_t i = 0; i < eg->n_allow_hosts; i++)
        G.egress_hosts[i] = xstrdup(o->egress.allow_hosts[i]);
    eg->allow_hosts = (const char *const *)G.egress_hosts;
    G.egress_ports = eg->n_ports ? xmemdup(o->egress.ports, eg->n_ports * sizeof(uint16_t)) : NULL;
    eg->ports = G.egress_ports;
    /* A default above its ceiling would refuse every request that names no limit: the ceiling wins. */
    struct sbx_limits *d = &G.o.defaults;
    const struct sbx_limits *c = &G.o.ceiling;
#define CLAMP(f)                                                                                                       \
    if (c->f && d->f > c->f)                                                                                           \
        d->f = c->f;
    CLAMP(wall_ms)
    CLAMP(cpu_ms)
    CLAMP(memory_bytes)
    CLAMP(address_space_bytes)
    CLAMP(pids)
    CLAMP(nofile)
    CLAMP(fsize_bytes)
    CLAMP(cpu_percent)
    CLAMP(stdout_max)
    CLAMP(stderr_max)
    CLAMP(work_bytes)
    CLAMP(tmp_bytes)
#undef CLAMP
    atomic_store(&G.next_slice, 0);
    G.started = true;
    return 0;
}

void sbx_service_stop(void)
{
    if (!G.started)
        return;
    xfree(G.exe);
    xfree(G.cgroup_parent);
    for (size_t i = 0; i < G.o.egress.n_allow_hosts; i++)
        xfree(G.egress_hosts[i]);
    xfree(G.egress_hosts);
    xfree(G.egress_ports);
    memset(&G.o, 0, sizeof(G.o));
    G.exe = G.cgroup_parent = NULL;
    G.egress_hosts = NULL;
    G.egress_ports = NULL;
    G.started = false;
}

bool sbx_service_started(void)
{
    return G.started;
}

const struct sbx_service_opts *sbx_service_options(void)
{
    return G.started ? &G.o : NULL;
}

void sbx_service_spec_init(struct sbx_spec *spec)
{
    sbx_spec_init(spec);
    if (G.started)
        spec->limits = G.o.defaults;
}

/* ---- jobs and lanes (one lane per loop, on the loop's thread) ---- */

struct lane;

struct sbx_service_job {
    struct lane *lane;
    struct sbx_service_job *prev, *next; /* the lane's queue, or its running list */
    struct sbx_run *run;                 /* while running */
    sbx_service_done_fn *cb;
    void *ud;
    uint64_t t_submit_us, queue_us;
    bool queued, cancelled;
    /* A queued job's own copy of its spec (the caller's may be gone by the time it starts). */
    struct sbx_spec spec;
    char *blob;
    const char **ptrs;
    struct sbx_file *files;
};

struct lane {
    uv_loop_t *loop;
    struct sbx_pool *pool;
    uv_timer_t kick; /* starts queued jobs and delivers cancelled ones, outside the callers' stacks */
    struct sbx_service_job *q_head, *q_tail;
    struct sbx_service_job *running;
    struct sbx_service_job *dead; /* cancelled while queued: out of the queue, their callbacks not yet made */
    unsigned nrunning, nqueued;
    unsigned open_handles; /* kick + pool */
    bool closing;
};

static _Thread_local struct lane *tl_lane;

static void job_free(struct sbx_service_job *j)
{
    xfree(j->blob);
    xfree(j->ptrs);
    xfree(j->files);
    xfree(j);
}

static void lane_maybe_free(struct lane *l)
{
    if (l->closing && l->open_handles == 0 && l->nrunning == 0 && l->nqueued == 0)
        xfree(l);
}

static void list_remove(struct sbx_service_job **head, struct sbx_service_job **tail, struct sbx_service_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        *head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else if (tail)
        *tail = j->prev;
    j->prev = j->next = NULL;
}

static void count_result(const struct sbx_result *res)
{
    metrics_inc(&m_runs, (const char *const[]){sbx_reason_name(res->reason)});
    if (res->host_pid > 0)
        metrics_observe(&m_wall, NULL, (double)res->wall_us / 1e6);
    if (res->egress) {
        metrics_add(&m_egress_conns, (const char *const[]){"allowed"}, (double)res->egress_connections);
        metrics_add(&m_egress_conns, (const char *const[]){"refused"}, (double)res->egress_refused);
        metrics_add(&m_egress_bytes, (const char *const[]){"out"}, (double)res->egress_bytes_out);
        metrics_add(&m_egress_bytes, (const char *const[]){"in"}, (double)res->egress_bytes_in);
    }
}

/* A job that never ran (cancelled in the queue, or its lane closed): KILLED. */
static void deliver_killed(struct sbx_service_job *j, const char *why)
{
    struct sbx_result res;
    memset(&res, 0, sizeof(res));
    res.reason = SBX_REASON_KILLED;
    res.exit_code = -1;
    (void)snprintf(res.cgroup, sizeof(res.cgroup), "none");
    (void)snprintf(res.error, sizeof(res.error), "%s", why);
    count_result(&res);
    j->cb(j, &res, time_mono_us() - j->t_submit_us, j->ud);
    sbx_result_free(&res);
    job_free(j);
}

static void kick(struct lane *l);

static void on_run_done(struct sbx_run *run, struct sbx_result *res, void *ud)
{
    (void)run;
    struct sbx_service_job *j = ud;
    struct lane *l = j->lane;
    list_remove(&l->running, NULL, j);
    l->nrunning--;
    metrics_add(&m_running, NULL, -1);
    count_result(res);
    j->run = NULL;
    j->cb(j, res, j->queue_us, j->ud);
    job_free(j);
    if (l->closing)
        lane_maybe_free(l);
    else if (l->q_head)
        kick(l);
}

static int start_now(struct lane *l, struct sbx_service_job *j, const struct sbx_spec *spec, struct buf *err)
{
    j->queue_us = time_mono_us() - j->t_submit_us;
    if (sbx_run_start(l->pool, spec, on_run_done, j, &j->run, err) != 0)
        return -1;
    metrics_observe(&m_queue, NULL, (double)j->queue_us / 1e6);
    if (sbx_run_direct(j->run))
        metrics_add(&m_direct, NULL, 1);
    j->next = l->running;
    if (l->running)
        l->running->prev = j;
    l->running = j;
    l->nrunning++;
    metrics_add(&m_running, NULL, 1);
    return 0;
}

static void on_kick(uv_timer_t *t)
{
    struct lane *l = t->data;
    while (l->dead) {
        struct sbx_service_job *j = l->dead;
        l->dead = j->next;
        deliver_killed(j, "cancelled while queued");
    }
    while (l->q_head && l->nrunning < G.o.max_running && !l->closing) {
        struct sbx_service_job *j = l->q_head;
        list_remove(&l->q_head, &l->q_tail, j);
        l->nqueued--;
        metrics_add(&m_queued, NULL, -1);
        struct buf err = BUF_INIT(1024);
        if (start_now(l, j, &j->spec, &err) != 0) {
            struct sbx_result res;
            memset(&res, 0, sizeof(res));
            res.reason = SBX_REASON_ERROR;
            res.exit_code = -1;
            (void)snprintf(res.cgroup, sizeof(res.cgroup), "none");
            (void)snprintf(res.error, sizeof(res.error), "%s", err.data ? err.data : "could not start");
            count_result(&res);
            j->cb(j, &res, j->queue_us, j->ud);
            sbx_result_free(&res);
            job_free(j);
        }
        buf_free(&err);
    }
}

static void kick(struct lane *l)
{
    if (!l->closing)
        (void)uv_timer_start(&l->kick, on_kick, 0, 0);
}

static void on_kick_closed(uv_handle_t *h)
{
    struct lane *l = h->data;
    l->open_handles--;
    lane_maybe_free(l);
}

static void on_pool_closed(void *ud)
{
    struct lane *l = ud;
    l->pool = NULL;
    l->open_handles--;
    lane_maybe_free(l);
}

int sbx_service_loop_open(uv_loop_t *loop, struct buf *err)
{
    if (!G.started) {
        (void)buf_printf(err, "the sandbox service is not started");
        return SBX_SVC_UNAVAILABLE;
    }
    if (tl_lane) {
        if (tl_lane->loop == loop)
            return SBX_SVC_OK;
        (void)buf_printf(err, "this thread already serves another loop");
        return SBX_SVC_UNAVAILABLE;
    }
    struct sbx_pool_opts po;
    sbx_pool_opts_init(&po);
    po.zygote = true;
    po.exe = G.o.exe;
    po.warm = G.o.warm;
    po.cfg = G.o.cfg;
    po.egress = G.o.egress_enabled ? &G.o.egress : NULL;
    /* Each loop gets its own slice of the uid range, so no two live runs of this process share a host uid. */
    unsigned slices = G.o.loops > G.o.cfg.uid_count ? G.o.cfg.uid_count : G.o.loops;
    unsigned slice = atomic_fetch_add(&G.next_slice, 1) % slices;
    po.cfg.uid_count = G.o.cfg.uid_count / slices;
    po.cfg.uid_base = G.o.cfg.uid_base + slice * po.cfg.uid_count;
    struct lane *l = xcalloc(1, sizeof(*l));
    l->loop = loop;
    if (sbx_pool_new(loop, &po, &l->pool, err) != 0) {
        xfree(l);
        return SBX_SVC_UNAVAILABLE;
    }
    uv_timer_init(loop, &l->kick);
    l->kick.data = l;
    l->open_handles = 2;
    tl_lane = l;
    return SBX_SVC_OK;
}

void sbx_service_loop_close(uv_loop_t *loop)
{
    struct lane *l = tl_lane;
    if (l == NULL || l->loop != loop)
        return;
    tl_lane = NULL;
    l->closing = true;
    /* Queued jobs never ran; running ones end KILLED through the pool's close. */
    while (l->dead) {
        struct sbx_service_job *j = l->dead;
        l->dead = j->next;
        deliver_killed(j, "cancelled while queued");
    }
    while (l->q_head) {
        struct sbx_service_job *j = l->q_head;
        list_remove(&l->q_head, &l->q_tail, j);
        l->nqueued--;
        metrics_add(&m_queued, NULL, -1);
        deliver_killed(j, "the sandbox service is shutting down");
    }
    uv_timer_stop(&l->kick);
    uv_close((uv_handle_t *)&l->kick, on_kick_closed);
    sbx_pool_close(l->pool, on_pool_closed, l);
}

/* ---- submit ---- */

static int over(struct buf *err, const char *what, uint64_t v, uint64_t max)
{
    (void)buf_printf(err, "%s %" PRIu64 " is above this service's ceiling of %" PRIu64, what, v, max);
    return -1;
}

/* The ceilings: what the operator lets a caller ask for. param gets the field's name in the request format. */
static int check_ceiling(const struct sbx_spec *s, struct buf *err, const char **param)
{
    const struct sbx_limits *c = &G.o.ceiling, *v = &s->limits;
    static const struct {
        const char *name;
        size_t off;
        bool is32;
    } f[] = {
        {"wall_ms", offsetof(struct sbx_limits, wall_ms), false},
        {"cpu_ms", offsetof(struct sbx_limits, cpu_ms), false},
        {"memory_bytes", offsetof(struct sbx_limits, memory_bytes), false},
        {"address_space_bytes", offsetof(struct sbx_limits, address_space_bytes), false},
        {"pids", offsetof(struct sbx_limits, pids), true},
        {"nofile", offsetof(struct sbx_limits, nofile), true},
        {"fsize_bytes", offsetof(struct sbx_limits, fsize_bytes), false},
        {"cpu_percent", offsetof(struct sbx_limits, cpu_percent), true},
        {"stdout_max", offsetof(struct sbx_limits, stdout_max), false},
        {"stderr_max", offsetof(struct sbx_limits, stderr_max), false},
        {"work_bytes", offsetof(struct sbx_limits, work_bytes), false},
        {"tmp_bytes", offsetof(struct sbx_limits, tmp_bytes), false},
    };
    *param = NULL;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        uint64_t cv, vv;
        if (f[i].is32) {
            uint32_t a, b;
            memcpy(&a, (const char *)c + f[i].off, sizeof(a));
            memcpy(&b, (const char *)v + f[i].off, sizeof(b));
            cv = a;
            vv = b;
        } else {
            memcpy(&cv, (const char *)c + f[i].off, sizeof(cv));
            memcpy(&vv, (const char *)v + f[i].off, sizeof(vv));
        }
        if (cv && vv > cv) {
            *param = f[i].name;
            char what[64];
            (void)snprintf(what, sizeof(what), "limits.%s", f[i].name);
            return over(err, what, vv, cv);
        }
    }
    if (G.o.max_code_bytes && s->code_len > G.o.max_code_bytes) {
        *param = "code";
        return over(err, "code of", s->code_len, G.o.max_code_bytes);
    }
    if (G.o.max_stdin_bytes && s->stdin_len > G.o.max_stdin_bytes) {
        *param = "stdin";
        return over(err, "stdin of", s->stdin_len, G.o.max_stdin_bytes);
    }
    uint64_t total = 0;
    for (size_t i = 0; i < s->nfiles; i++)
        total += s->files[i].len;
    if (G.o.max_files_bytes && total > G.o.max_files_bytes) {
        *param = "files";
        return over(err, "files totalling", total, G.o.max_files_bytes);
    }
    return 0;
}

/* A deep copy of spec into j (one blob for the bytes, one array for the pointers). */
static void copy_spec(struct sbx_service_job *j, const struct sbx_spec *s)
{
    size_t bytes = s->code_len + 1 + s->stdin_len + 1;
    for (size_t i = 0; i < s->argc; i++)
        bytes += strlen(s->argv[i]) + 1;
    for (size_t i = 0; i < s->envc; i++)
        bytes += strlen(s->env[i]) + 1;
    for (size_t i = 0; i < s->nfiles; i++)
        bytes += strlen(s->files[i].name) + 1 + s->files[i].len + 1;
    char *p = j->blob = xmalloc(bytes);
    j->ptrs = xcalloc(s->argc + s->envc + 2, sizeof(*j->ptrs));
    j->files = xcalloc(s->nfiles + 1, sizeof(*j->files));
    j->spec = *s;
#define PUT(dst, src, n)                                                                                               \
    do {                                                                                                               \
        if (n)                                                                                                         \
            memcpy(p, (src), (n));                                                                                     \
        p[(n)] = '\0';                                                                                                 \
        (dst) = p;                                                                                                     \
        p += (n) + 1;                                                                                                  \
    } while (0)
    if (s->code)
        PUT(j->spec.code, s->code, s->code_len);
    if (s->stdin_data) {
        const char *d;
        PUT(d, s->stdin_data, s->stdin_len);
        j->spec.stdin_data = d;
    }
    const char **argv = j->ptrs, **env = j->ptrs + s->argc + 1;
    for (size_t i = 0; i < s->argc; i++)
        PUT(argv[i], s->argv[i], strlen(s->argv[i]));
    for (size_t i = 0; i < s->envc; i++)
        PUT(env[i], s->env[i], strlen(s->env[i]));
    for (size_t i = 0; i < s->nfiles; i++) {
        j->files[i] = s->files[i];
        PUT(j->files[i].name, s->files[i].name, strlen(s->files[i].name));
        const char *d;
        PUT(d, s->files[i].data, s->files[i].len);
        j->files[i].data = d;
    }
#undef PUT
    j->spec.argv = s->argc ? argv : NULL;
    j->spec.env = s->envc ? env : NULL;
    j->spec.files = s->nfiles ? j->files : NULL;
}

static void refuse(const char *why)
{
    metrics_inc(&m_refused, (const char *const[]){why});
}

int sbx_service_submit(uv_loop_t *loop, const struct sbx_spec *spec, sbx_service_done_fn *cb, void *ud,
                       struct sbx_service_job **out, struct buf *err)
{
    if (out)
        *out = NULL;
    if (!tl_lane || tl_lane->loop != loop) {
        int rc = sbx_service_loop_open(loop, err);
        if (rc != SBX_SVC_OK) {
            refuse("unavailable");
            return rc;
        }
    }
    struct lane *l = tl_lane;
    const char *param;
    if (check_ceiling(spec, err, &param) != 0 || sbx_spec_validate(spec, err) != 0) {
        refuse("invalid");
        return SBX_SVC_INVALID;
    }
    if (l->nrunning >= G.o.max_running && l->nqueued >= G.o.max_queued) {
        (void)buf_printf(err, "the sandbox is busy: %u runs going and %u waiting on this worker", l->nrunning,
                         l->nqueued);
        refuse("busy");
        return SBX_SVC_BUSY;
    }
    struct sbx_service_job *j = xcalloc(1, sizeof(*j));
    j->lane = l;
    j->cb = cb;
    j->ud = ud;
    j->t_submit_us = time_mono_us();
    if (l->nrunning < G.o.max_running && !l->q_head) {
        if (start_now(l, j, spec, err) != 0) {
            job_free(j);
            refuse("unavailable");
            return SBX_SVC_UNAVAILABLE;
        }
    } else {
        copy_spec(j, spec);
        j->queued = true;
        j->prev = l->q_tail;
        if (l->q_tail)
            l->q_tail->next = j;
        else
            l->q_head = j;
        l->q_tail = j;
        l->nqueued++;
        metrics_add(&m_queued, NULL, 1);
        kick(l);
    }
    if (out)
        *out = j;
    return SBX_SVC_OK;
}

void sbx_service_cancel(struct sbx_service_job *job)
{
    if (job->run) {
        sbx_run_cancel(job->run);
        return;
    }
    struct lane *l = job->lane;
    if (job->cancelled)
        return;
    /* Still queued: out of the queue at once (it no longer holds a place), KILLED from the next kick. */
    job->cancelled = true;
    list_remove(&l->q_head, &l->q_tail, job);
    l->nqueued--;
    metrics_add(&m_queued, NULL, -1);
    job->next = l->dead;
    l->dead = job;
    kick(l);
}

void sbx_service_stats(uv_loop_t *loop, struct sbx_service_stats *st)
{
    memset(st, 0, sizeof(*st));
    struct lane *l = tl_lane;
    if (l == NULL || l->loop != loop)
        return;
    st->running = l->nrunning;
    st->queued = l->nqueued;
    st->ready = l->pool ? sbx_pool_ready(l->pool) : 0;
}

/* ---- the request body ---- */

#define REQUEST_TEXT_MAX ((size_t)SBX_MAX_SPEC_BYTES * 2)

static int bad(struct buf *err, char *param, size_t cap, const char *field, const char *msg)
{
    (void)buf_printf(err, "%s", msg);
    (void)snprintf(param, cap, "%s", field ? field : "");
    return SBX_SVC_INVALID;
}

static bool all_strings(const cJSON *a, bool nonempty)
{
    if (!cJSON_IsArray(a) || (nonempty && a->child == NULL))
        return false;
    for (const cJSON *c = a->child; c; c = c->next)
        if (!cJSON_IsString(c))
            return false;
    return true;
}

/* Moves item from the request into the spec object under the name the sandbox's JSON spec uses. */
static void move(cJSON *req, cJSON *item, cJSON *spec, const char *name)
{
    (void)cJSON_DetachItemViaPointer(req, item);
    cJSON_AddItemToObject(spec, name, item);
}

static int translate_limits(cJSON *lim, struct buf *err, char *param, size_t cap)
{
    if (!cJSON_IsObject(lim))
        return bad(err, param, cap, "limits", "limits must be an object");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(lim, "timeout_ms"); /* the name callers expect for the wall clock */
    if (t) {
        if (cJSON_GetObjectItemCaseSensitive(lim, "wall_ms"))
            return bad(err, param, cap, "limits.timeout_ms", "give limits.timeout_ms or limits.wall_ms, not both");
        cJSON_AddItemToObject(lim, "wall_ms", cJSON_DetachItemViaPointer(lim, t));
    }
    return SBX_SVC_OK;
}

static int parse_request(const char *body, size_t len, struct sbx_json_spec *out, struct buf *err, char *param,
                         size_t param_cap)
{
    memset(out, 0, sizeof(*out));
    param[0] = '\0';
    if (len > REQUEST_TEXT_MAX)
        return bad(err, param, param_cap, NULL, "the request body is too large");
    cJSON *req = cJSON_ParseWithLength(body, len);
    if (req == NULL || !cJSON_IsObject(req)) {
        cJSON_Delete(req);
        return bad(err, param, param_cap, NULL, "the request body must be a JSON object");
    }
    cJSON *spec = cJSON_CreateObject();
    int rc = SBX_SVC_OK;
    const cJSON *language = NULL, *code = NULL, *command = NULL, *args = NULL;
    static const char *const known[] = {"language", "code",         "command", "args", "network",  "limits",
                                        "stdin",    "stdin_base64", "files",   "env",  "timeout_s"};
    unsigned char seen[sizeof(known) / sizeof(known[0])] = {0};
    cJSON *next;
    for (cJSON *c = req->child; c && rc == SBX_SVC_OK; c = next) {
        next = c->next;
        const char *k = c->string;
        size_t ki = 0;
        while (ki < sizeof(known) / sizeof(known[0]) && strcmp(known[ki], k) != 0)
            ki++;
        if (ki < sizeof(known) / sizeof(known[0]) && seen[ki]++) {
            struct buf m = BUF_INIT(512);
            (void)buf_printf(&m, "field \"%s\" is given twice", k);
            rc = bad(err, param, param_cap, k, m.data);
            buf_free(&m);
        } else if ((strcmp(k, "command") == 0 && args) || (strcmp(k, "args") == 0 && command)) {
            rc = bad(err, param, param_cap, k, "command takes no args (args go with language)");
        } else if (strcmp(k, "language") == 0) {
            if (!cJSON_IsString(c) || sbx_lang_parse(c->valuestring) < 0) {
                struct buf m = BUF_INIT(512);
                (void)buf_printf(&m, "unknown language%s%.64s%s: use python, sh or node",
                                 cJSON_IsString(c) ? " \"" : "", cJSON_IsString(c) ? c->valuestring : "",
                                 cJSON_IsString(c) ? "\"" : "");
                rc = bad(err, param, param_cap, "language", m.data);
                buf_free(&m);
            } else {
                language = c;
                move(req, c, spec, "lang");
            }
        } else if (strcmp(k, "code") == 0) {
            if (!cJSON_IsString(c)) {
                rc = bad(err, param, param_cap, "code", "code must be a string");
            } else {
                code = c;
                move(req, c, spec, "code");
            }
        } else if (strcmp(k, "command") == 0) {
            if (!all_strings(c, true)) {
                rc = bad(err, param, param_cap, "command", "command must be a non-empty array of strings (argv)");
            } else {
                command = c;
                move(req, c, spec, "argv");
            }
        } else if (strcmp(k, "args") == 0) {
            if (!all_strings(c, false)) {
                rc = bad(err, param, param_cap, "args", "args must be an array of strings");
            } else {
                args = c;
                move(req, c, spec, "argv");
            }
        } else if (strcmp(k, "network") == 0) {
            int net = cJSON_IsFalse(c) ? SBX_NET_NONE : cJSON_IsString(c) ? sbx_net_parse(c->valuestring) : -1;
            if (net == SBX_NET_NONE) {
                /* the default */
            } else if (net == SBX_NET_EGRESS) {
                if (!G.o.egress_enabled)
                    rc = bad(err, param, param_cap, "network",
                             "network \"egress\" is not enabled on this server (sandbox.egress.enabled)");
                else
                    move(req, c, spec, "net");
            } else {
                rc = bad(err, param, param_cap, "network", "network must be \"none\" or \"egress\"");
            }
        } else if (strcmp(k, "limits") == 0) {
            rc = translate_limits(c, err, param, param_cap);
            if (rc == SBX_SVC_OK)
                move(req, c, spec, "limits");
        } else if (strcmp(k, "stdin") == 0 || strcmp(k, "stdin_base64") == 0 || strcmp(k, "files") == 0 ||
                   strcmp(k, "env") == 0 || strcmp(k, "timeout_s") == 0) {
            move(req, c, spec, k);
        } else {
            struct buf m = BUF_INIT(512);
            (void)buf_printf(&m, "unknown field \"%.64s\"", k);
            rc = bad(err, param, param_cap, k, m.data);
            buf_free(&m);
        }
    }
    cJSON_Delete(req);
    if (rc == SBX_SVC_OK) {
        if (args && !language)
            rc = bad(err, param, param_cap, "args", "args go with language");
        else if (language && command)
            rc = bad(err, param, param_cap, "command", "give language and code, or command, not both");
        else if (!language && !command)
            rc = bad(err, param, param_cap, code ? "language" : NULL,
                     code ? "code needs a language (python, sh or node)" : "give language and code, or command");
        else if (language && !code && !args)
            rc = bad(err, param, param_cap, "code", "language needs code (or args for the interpreter)");
        else if (args && !language)
            rc = bad(err, param, param_cap, "args", "args go with language");
        else if (args && code)
            rc = bad(
                err, param, param_cap, "args",
                "args are the interpreter's arguments in place of the snippet (\"-c\", \"...\"): give code or args");
    }
    if (rc != SBX_SVC_OK) {
        cJSON_Delete(spec);
        sbx_spec_init(&out->spec);
        return rc;
    }
    struct buf e2 = BUF_INIT(1024);
    if (sbx_json_spec_from_object(spec, G.started ? &G.o.defaults : NULL, out, &e2) != 0) {
        const char *m = e2.data ? e2.data : "invalid request";
        /* the sandbox's JSON parser names the field in its sentence: say which in param too */
        const char *field = strstr(m, "file") || strstr(m, "mode")                  ? "files"
                            : strstr(m, "limit") || strstr(m, "must be an integer") ? "limits"
                            : strstr(m, "stdin") || strstr(m, "base64")             ? "stdin"
                            : strstr(m, "env")                                      ? "env"
                            : strstr(m, "timeout_s")                                ? "timeout_s"
                            : strstr(m, "argument") || strstr(m, "argv")            ? "command"
                                                                                    : NULL;
        rc = bad(err, param, param_cap, field, m);
        buf_free(&e2);
        return rc;
    }
    buf_free(&e2);
    const char *p = NULL;
    if (G.started && check_ceiling(&out->spec, err, &p) != 0) {
        char name[64];
        (void)snprintf(name, sizeof(name), "%s%s",
                       strcmp(p, "code") && strcmp(p, "stdin") && strcmp(p, "files") ? "limits." : "", p);
        (void)snprintf(param, param_cap, "%s", name);
        return SBX_SVC_INVALID;
    }
    /* The files the run leaves in /work come back with its result (docs/sandbox-service.md). */
    out->spec.files_out_max = G.started ? G.o.output_files : SBX_FILES_OUT_MAX;
    out->spec.files_out_bytes = G.started ? G.o.output_files_bytes : SBX_FILES_OUT_BYTES;
    out->spec.collect_files = out->spec.files_out_max > 0;
    return SBX_SVC_OK;
}

int sbx_service_parse_request(const char *body, size_t len, struct sbx_json_spec *out, struct buf *err, char *param,
                              size_t param_cap)
{
    int rc = parse_request(body, len, out, err, param, param_cap);
    if (rc != SBX_SVC_OK && G.started)
        refuse("invalid");
    return rc;
}

/* ---- the request body, written (the CLI's --daemon) ---- */

static void append_b64(struct buf *out, const void *data, size_t len)
{
    char *enc = xmalloc((len + 2) / 3 * 4 + 1);
    int n = len ? EVP_EncodeBlock((unsigned char *)enc, data, (int)len) : 0;
    (void)buf_append_char(out, '"');
    (void)buf_append(out, enc, (size_t)n);
    (void)buf_append_char(out, '"');
    xfree(enc);
}

int sbx_service_request_json(const struct sbx_spec *s, struct buf *out, struct buf *err)
{
    if (s->code && memchr(s->code, '\0', s->code_len)) {
        (void)buf_printf(err, "the code contains a NUL byte");
        return -1;
    }
    (void)buf_append_char(out, '{');
    const char *sep = "";
    if (s->lang != SBX_LANG_NONE) {
        (void)buf_printf(out, "\"language\":\"%s\"", sbx_lang_name(s->lang));
        sep = ",";
        if (s->argc == 0 && s->code) {
            (void)buf_append_str(out, ",\"code\":");
            (void)buf_append_json_str(out, s->code, s->code_len);
        }
    }
    if (s->argc) {
        (void)buf_printf(out, "%s\"%s\":[", sep, s->lang != SBX_LANG_NONE ? "args" : "command");
        for (size_t i = 0; i < s->argc; i++) {
            if (i)
                (void)buf_append_char(out, ',');
            (void)buf_append_json_cstr(out, s->argv[i]);
        }
        (void)buf_append_char(out, ']');
        sep = ",";
    }
    if (s->stdin_len) {
        (void)buf_printf(out, "%s\"stdin_base64\":", sep);
        append_b64(out, s->stdin_data, s->stdin_len);
        sep = ",";
    }
    if (s->envc) {
        (void)buf_printf(out, "%s\"env\":[", sep);
        for (size_t i = 0; i < s->envc; i++) {
            if (i)
                (void)buf_append_char(out, ',');
            (void)buf_append_json_cstr(out, s->env[i]);
        }
        (void)buf_append_char(out, ']');
        sep = ",";
    }
    if (s->nfiles) {
        (void)buf_printf(out, "%s\"files\":[", sep);
        for (size_t i = 0; i < s->nfiles; i++) {
            (void)buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
            (void)buf_append_json_cstr(out, s->files[i].name);
            (void)buf_append_str(out, ",\"content_base64\":");
            append_b64(out, s->files[i].data, s->files[i].len);
            if (s->files[i].mode)
                (void)buf_printf(out, ",\"mode\":%u", s->files[i].mode & 0777);
            (void)buf_append_char(out, '}');
        }
        (void)buf_append_char(out, ']');
        sep = ",";
    }
    /* Only the limits that differ from the sandbox's defaults: the rest are the service's to choose. */
    struct sbx_limits d;
    sbx_limits_default(&d);
    const struct sbx_limits *l = &s->limits;
    (void)buf_printf(out, "%s\"limits\":{", sep);
    sep = "";
#define LIM(f)                                                                                                         \
    if (l->f != d.f) {                                                                                                 \
        (void)buf_printf(out, "%s\"" #f "\":%" PRIu64, sep, (uint64_t)l->f);                                           \
        sep = ",";                                                                                                     \
    }
    LIM(wall_ms)
    LIM(cpu_ms)
    LIM(memory_bytes)
    LIM(address_space_bytes)
    LIM(pids)
    LIM(nofile)
    LIM(fsize_bytes)
    LIM(cpu_percent)
    LIM(stdout_max)
    LIM(stderr_max)
    LIM(work_bytes)
    LIM(tmp_bytes)
#undef LIM
    (void)buf_printf(out, "},\"network\":\"%s\"}", sbx_net_name(s->net) ? sbx_net_name(s->net) : "none");
    return 0;
}
