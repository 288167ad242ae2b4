/* cloud_creds.c: credential sources, the credentials thread and the helpers kinds share (see cloud_creds.h). */
#include "gateway/cloud_creds.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "gateway/gw_types.h"
#include "gateway/provider_ids.h"
#include "net/curl_dl.h"

const char *const cc_auth_names[CC_AUTH_COUNT + 1] = {
    [CC_AUTH_AUTO] = "auto",
    [CC_AUTH_API_KEY] = "api_key",
    [CC_AUTH_AWS_WEB_IDENTITY] = "aws_web_identity",
    [CC_AUTH_AWS_CONTAINER] = "aws_container",
    [CC_AUTH_AZURE_WORKLOAD_IDENTITY] = "azure_workload_identity",
    [CC_AUTH_AZURE_MANAGED_IDENTITY] = "azure_managed_identity",
    [CC_AUTH_GOOGLE_SERVICE_ACCOUNT] = "google_service_account",
    [CC_AUTH_GOOGLE_METADATA] = "google_metadata",
    [CC_AUTH_COUNT] = NULL,
};

/* The implementation of each kind; NULL: not built in (yet). */
static const struct cc_kind *const cc_kinds[CC_AUTH_COUNT] = {
    [CC_AUTH_AWS_WEB_IDENTITY] = &cc_kind_aws_web_identity,
    [CC_AUTH_AWS_CONTAINER] = &cc_kind_aws_container,
    [CC_AUTH_AZURE_WORKLOAD_IDENTITY] = &cc_kind_azure_workload_identity,
    [CC_AUTH_AZURE_MANAGED_IDENTITY] = &cc_kind_azure_managed_identity,
    [CC_AUTH_GOOGLE_SERVICE_ACCOUNT] = &cc_kind_google_service_account, /* cloud_google.c */
    [CC_AUTH_GOOGLE_METADATA] = &cc_kind_google_metadata,
};

/* What `auto` tries, in order, among the kinds of the deployment's cloud (after a static key). AWS follows the
 * SDKs' default chain (environment keys, web identity, container); Azure's managed identity is not here: IMDS
 * cannot be detected from the environment, so it must be asked for (`auth: azure_managed_identity`). */
static const int auto_chain[] = {
    CC_AUTH_AWS_WEB_IDENTITY, CC_AUTH_AWS_CONTAINER, CC_AUTH_AZURE_WORKLOAD_IDENTITY,
    CC_AUTH_GOOGLE_SERVICE_ACCOUNT, CC_AUTH_GOOGLE_METADATA,
};

enum cc_cloud cc_provider_cloud(int provider)
{
    switch (provider) {
    case PROVIDER_BEDROCK: return CC_CLOUD_AWS;
    case PROVIDER_AZURE_OPENAI: return CC_CLOUD_AZURE;
    case PROVIDER_VERTEX: return CC_CLOUD_GOOGLE;
    default: return CC_CLOUD_NONE;
    }
}

enum cc_cloud cc_auth_cloud(int auth)
{
    switch (auth) {
    case CC_AUTH_AWS_WEB_IDENTITY:
    case CC_AUTH_AWS_CONTAINER: return CC_CLOUD_AWS;
    case CC_AUTH_AZURE_WORKLOAD_IDENTITY:
    case CC_AUTH_AZURE_MANAGED_IDENTITY: return CC_CLOUD_AZURE;
    case CC_AUTH_GOOGLE_SERVICE_ACCOUNT:
    case CC_AUTH_GOOGLE_METADATA: return CC_CLOUD_GOOGLE;
    default: return CC_CLOUD_NONE;
    }
}

static void wipe_free(char *p)
{
    if (p) {
        volatile char *v = p;
        while (*v)
            *v++ = 0;
        xfree(p);
    }
}

void cc_creds_clear(struct cc_creds *c)
{
    wipe_free(c->token);
    wipe_free(c->access_key_id);
    wipe_free(c->secret_access_key);
    wipe_free(c->session_token);
    memset(c, 0, sizeof(*c));
}

static void spec_clear(struct cc_spec *s)
{
    for (size_t i = 0; i < CC_NARGS; i++)
        xfree_null(&s->arg[i]);
}

/* ---------- sources ---------- */

struct cc_source {
    struct cc_source *next;
    struct cc_spec spec;
    const struct cc_kind *kind;
    int refs;                   /* deployments using it; 0: freed by the thread (or at put when idle) */
    struct cc_snap *cur;        /* the last good credentials, or NULL */
    struct cc_snap *prev;       /* the ones before (an error answered just after a refresh may quote them) */
    uint64_t valid_until_ms;    /* monotonic; UINT64_MAX: no expiry */
    uint64_t next_fetch_ms;     /* monotonic; 0: as soon as possible */
    uint64_t backoff_ms;
    uint64_t last_attempt_ms;   /* monotonic end of the last fetch; 0: none yet */
    bool fetching;
    char last_err[512];         /* the last fetch's error; "" after a success */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cc_source *head;
    pthread_t th;
    bool running, stop;
    uint64_t fetches, failures;
} C = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    return time_mono_us() / 1000;
}

static void snap_put(struct cc_snap *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        cc_creds_clear(&s->c);
        xfree(s);
    }
}

static void source_free(struct cc_source *s)
{
    snap_put(s->cur);
    snap_put(s->prev);
    spec_clear(&s->spec);
    xfree(s);
}

static void unlink_source(struct cc_source *s)
{
    for (struct cc_source **pp = &C.head; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            return;
        }
}

static bool spec_equal(const struct cc_spec *a, const struct cc_spec *b)
{
    if (a->auth != b->auth)
        return false;
    for (size_t i = 0; i < CC_NARGS; i++) {
        if ((a->arg[i] == NULL) != (b->arg[i] == NULL))
            return false;
        if (a->arg[i] && strcmp(a->arg[i], b->arg[i]) != 0)
            return false;
    }
    return true;
}

/* Takes ownership of spec's strings. */
static struct cc_source *intern(struct cc_spec *spec)
{
    pthread_mutex_lock(&C.mu);
    for (struct cc_source *s = C.head; s; s = s->next)
        if (s->refs > 0 && spec_equal(&s->spec, spec)) {
            s->refs++;
            pthread_mutex_unlock(&C.mu);
            spec_clear(spec);
            return s;
        }
    struct cc_source *s = xcalloc(1, sizeof(*s));
    s->spec = *spec;
    memset(spec, 0, sizeof(*spec));
    s->kind = cc_kinds[s->spec.auth];
    s->refs = 1;
    s->next = C.head;
    C.head = s;
    if (C.running)
        pthread_cond_signal(&C.cv);
    pthread_mutex_unlock(&C.mu);
    return s;
}

static int try_kind(int auth, char **env, const struct cc_dep_info *dep, struct cc_source **out, char *why,
                    size_t whylen)
{
    const struct cc_kind *k = cc_kinds[auth];
    if (k == NULL) {
        snprintf(why, whylen, "auth: %s is not built into this agentd", cc_auth_names[auth]);
        return -1;
    }
    struct cc_spec spec = {.auth = auth};
    int rc = k->configure(&spec, env, dep, why, whylen);
    if (rc != 0) {
        spec_clear(&spec);
        return rc;
    }
    *out = intern(&spec);
    return 0;
}

int cc_source_get(int auth, bool has_key, char **env, const struct cc_dep_info *dep, struct cc_source **out,
                  char *why, size_t whylen)
{
    *out = NULL;
    if (why && whylen)
        why[0] = '\0';
    enum cc_cloud cloud = cc_provider_cloud(dep->provider);
    if (auth == CC_AUTH_API_KEY)
        return 1;
    if (auth == CC_AUTH_AUTO) {
        if (has_key || cloud == CC_CLOUD_NONE)
            return 1;
        for (size_t i = 0; i < sizeof(auto_chain) / sizeof(auto_chain[0]); i++) {
            int a = auto_chain[i];
            if (cc_auth_cloud(a) != cloud || cc_kinds[a] == NULL)
                continue;
            int rc = try_kind(a, env, dep, out, why, whylen);
            if (rc <= 0)
                return rc;
        }
        if (why && whylen)
            why[0] = '\0';
        return 1;
    }
    if (auth <= CC_AUTH_API_KEY || auth >= CC_AUTH_COUNT) {
        snprintf(why, whylen, "unknown auth");
        return -1;
    }
    if (cc_auth_cloud(auth) != cloud) {
        snprintf(why, whylen, "auth: %s does not apply to this provider", cc_auth_names[auth]);
        return -1;
    }
    int rc = try_kind(auth, env, dep, out, why, whylen);
    return rc == 1 ? -1 : rc; /* asked for explicitly: missing environment is an error */
}

void cc_source_put(struct cc_source *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&C.mu);
    if (--s->refs == 0 && !s->fetching) {
        unlink_source(s);
        source_free(s);
    }
    pthread_mutex_unlock(&C.mu);
}

const char *cc_source_kind(const struct cc_source *s)
{
    return s ? cc_auth_names[s->spec.auth] : "none";
}

/* ---------- request side ---------- */

enum cc_status cc_acquire(struct cc_source *s, struct cc_snap **out, char *why, size_t whylen)
{
    *out = NULL;
    enum cc_status st;
    pthread_mutex_lock(&C.mu);
    if (s->cur && mono_ms() < s->valid_until_ms) {
        atomic_fetch_add_explicit(&s->cur->refs, 1, memory_order_relaxed);
        *out = s->cur;
        st = CC_OK;
    } else if (s->last_err[0]) {
        snprintf(why, whylen, "%s", s->last_err);
        st = CC_FAILED;
    } else {
        snprintf(why, whylen, "%s", s->cur ? "the credentials expired and their refresh has not completed"
                                 : C.running ? "the first fetch has not completed"
                                             : "no credentials thread runs in this process");
        st = CC_PENDING;
    }
    if (st != CC_OK) {
        /* Demand: a request found nothing valid, so fetch sooner than the schedule or the backoff would, but not
         * more often than every CC_DEMAND_RETRY_MS per source however much traffic arrives. */
        uint64_t at = s->last_attempt_ms ? s->last_attempt_ms + CC_DEMAND_RETRY_MS : 0;
        if (C.running && !s->fetching && at < s->next_fetch_ms) {
            s->next_fetch_ms = at;
            pthread_cond_signal(&C.cv);
        }
    }
    pthread_mutex_unlock(&C.mu);
    return st;
}

void cc_release(struct cc_snap *snap)
{
    snap_put(snap);
}

bool cc_source_state(struct cc_source *s, char *why, size_t whylen)
{
    pthread_mutex_lock(&C.mu);
    bool ok = s->cur && mono_ms() < s->valid_until_ms;
    if (!ok)
        snprintf(why, whylen, "%s", s->last_err[0] ? s->last_err
                                    : s->cur        ? "the credentials expired and their refresh has not completed"
                                    : C.running     ? "the first fetch has not completed"
                                                    : "no credentials thread runs in this process");
    pthread_mutex_unlock(&C.mu);
    return ok;
}

size_t cc_recent(struct cc_source *s, struct cc_snap *out[2])
{
    size_t n = 0;
    pthread_mutex_lock(&C.mu);
    struct cc_snap *sn[2] = {s->cur, s->prev};
    for (int i = 0; i < 2; i++)
        if (sn[i]) {
            atomic_fetch_add_explicit(&sn[i]->refs, 1, memory_order_relaxed);
            out[n++] = sn[i];
        }
    pthread_mutex_unlock(&C.mu);
    return n;
}

void cc_error_set(struct gw_error *err, const char *dep_label, const struct cc_source *s, enum cc_status st,
                  const char *why)
{
    gw_error_set(err, 503, GW_ERR_OVERLOADED, "deployment %s: %s credentials are not available%s: %s", dep_label,
                 cc_source_kind(s), st == CC_PENDING ? " yet" : "", why && *why ? why : "unknown reason");
    snprintf(err->code, sizeof(err->code), "upstream_credentials_unavailable");
    err->retryable = true;
}

/* ---------- the thread ---------- */

/* NULL, or visible ASCII only: what goes into a header line. */
static bool header_safe(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return false;
    return true;
}

/* After a fetch: store its result (C.mu held). */
static void fetched(struct cc_source *s, int rc, struct cc_creds *cr, const char *err)
{
    uint64_t now = mono_ms();
    int64_t wall = (int64_t)(time_wall_us() / 1000000);
    C.fetches++;
    s->last_attempt_ms = now;
    if (rc == 0 && !(header_safe(cr->token) && header_safe(cr->access_key_id) &&
                     header_safe(cr->secret_access_key) && header_safe(cr->session_token))) {
        rc = -1;
        err = "the endpoint returned credentials with characters not allowed in a header";
    } else if (rc == 0 && (cr->token == NULL) == (cr->access_key_id == NULL || cr->secret_access_key == NULL)) {
        rc = -1;
        err = "the endpoint returned no usable credentials";
    } else if (rc == 0 && cr->expires_at != 0 && cr->expires_at <= wall) {
        rc = -1;
        err = "the endpoint returned credentials that have already expired (check the clock)";
    }
    if (rc != 0) {
        C.failures++;
        cc_creds_clear(cr);
        snprintf(s->last_err, sizeof(s->last_err), "%s", err && *err ? err : "fetch failed");
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : CC_BACKOFF_MIN_MS;
        if (s->backoff_ms > CC_BACKOFF_MAX_MS)
            s->backoff_ms = CC_BACKOFF_MAX_MS;
        s->next_fetch_ms = now + s->backoff_ms;
        log_warn("cloud credentials (%s): %s; retrying in %llu ms", s->kind->name, s->last_err,
                 (unsigned long long)s->backoff_ms);
        return;
    }
    struct cc_snap *n = xcalloc(1, sizeof(*n));
    n->c = *cr;
    memset(cr, 0, sizeof(*cr));
    atomic_init(&n->refs, 1);
    bool first = s->cur == NULL;
    snap_put(s->prev);
    s->prev = s->cur;
    s->cur = n;
    s->last_err[0] = '\0';
    s->backoff_ms = 0;
    if (n->c.expires_at == 0) {
        s->valid_until_ms = UINT64_MAX;
        s->next_fetch_ms = UINT64_MAX;
    } else {
        uint64_t life_ms = (uint64_t)(n->c.expires_at - wall) * 1000;
        uint64_t skew = life_ms / 20 < 30000 ? life_ms / 20 : 30000;
        s->valid_until_ms = now + life_ms - skew;
        uint64_t by_margin = life_ms > CC_REFRESH_MARGIN_S * 1000ull ? life_ms - CC_REFRESH_MARGIN_S * 1000ull : 0;
        uint64_t by_frac = (uint64_t)((double)life_ms * CC_REFRESH_FRACTION);
        uint64_t in = by_margin < by_frac ? by_margin : by_frac;
        if (in < CC_MIN_REFRESH_MS)
            in = CC_MIN_REFRESH_MS;
        s->next_fetch_ms = now + in;
    }
    if (first)
        log_info("cloud credentials (%s): obtained, valid for %lld s", s->kind->name,
                 n->c.expires_at ? (long long)(n->c.expires_at - wall) : -1LL);
    else
        log_debug("cloud credentials (%s): refreshed", s->kind->name);
}

static void *thread_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&C.mu);
    while (!C.stop) {
        uint64_t now = mono_ms(), wake = UINT64_MAX;
        struct cc_source *pick = NULL;
        for (struct cc_source *s = C.head, *nx; s; s = nx) {
            nx = s->next;
            if (s->refs == 0) {
                unlink_source(s);
                source_free(s);
                continue;
            }
            if (s->next_fetch_ms <= now) {
                pick = s;
                break;
            }
            if (s->next_fetch_ms < wake)
                wake = s->next_fetch_ms;
        }
        if (pick) {
            pick->fetching = true;
            pthread_mutex_unlock(&C.mu);
            struct cc_creds cr = {0};
            char err[512] = "";
            int rc = pick->kind->fetch(&pick->spec, &cr, err, sizeof(err));
            pthread_mutex_lock(&C.mu);
            pick->fetching = false;
            fetched(pick, rc, &cr, err);
            continue;
        }
        if (wake == UINT64_MAX) {
            pthread_cond_wait(&C.cv, &C.mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t d = wake - now;
            ts.tv_sec += (time_t)(d / 1000);
            ts.tv_nsec += (long)(d % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&C.cv, &C.mu, &ts);
        }
    }
    pthread_mutex_unlock(&C.mu);
    return NULL;
}

int cc_start(void)
{
    pthread_mutex_lock(&C.mu);
    if (C.running) {
        pthread_mutex_unlock(&C.mu);
        return 0;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&C.cv, &ca);
    pthread_condattr_destroy(&ca);
    C.stop = false;
    if (pthread_create(&C.th, NULL, thread_main, NULL) != 0) {
        pthread_cond_destroy(&C.cv);
        pthread_mutex_unlock(&C.mu);
        log_error("cloud credentials: cannot start the credentials thread");
        return -1;
    }
    C.running = true;
    pthread_mutex_unlock(&C.mu);
    return 0;
}

void cc_stop(void)
{
    pthread_mutex_lock(&C.mu);
    if (!C.running) {
        pthread_mutex_unlock(&C.mu);
        return;
    }
    C.stop = true;
    pthread_cond_signal(&C.cv);
    pthread_mutex_unlock(&C.mu);
    pthread_join(C.th, NULL); /* a fetch in flight ends within its CC_HTTP_TIMEOUT_MS */
    pthread_mutex_lock(&C.mu);
    C.running = false;
    pthread_cond_destroy(&C.cv);
    for (struct cc_source *s = C.head, *nx; s; s = nx) { /* the unreferenced ones; the rest go at put */
        nx = s->next;
        if (s->refs == 0) {
            unlink_source(s);
            source_free(s);
        }
    }
    pthread_mutex_unlock(&C.mu);
}

void cc_stats(uint64_t *fetches, uint64_t *failures)
{
    pthread_mutex_lock(&C.mu);
    *fetches = C.fetches;
    *failures = C.failures;
    pthread_mutex_unlock(&C.mu);
}

/* ---------- helpers ---------- */

struct rx {
    struct buf *b;
    bool over;
};

static size_t rx_body(char *p, size_t sz, size_t n, void *ud)
{
    struct rx *rx = ud;
    size_t len = sz * n;
    if (rx->b->len + len > CC_HTTP_MAX_BODY) {
        rx->over = true;
        return 0;
    }
    buf_append(rx->b, p, len);
    return len;
}

static bool local_target(const char *url)
{
    static const char *const pre[] = {"http://169.254.", "http://127.", "http://localhost", "http://[::1]",
                                      "http://[fd00:ec2::"};
    for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
        if (strncmp(url, pre[i], strlen(pre[i])) == 0)
            return true;
    return false;
}

int cc_http(const char *method, const char *url, const char *const *headers, const char *body, size_t body_len,
            long timeout_ms, int *status, struct buf *resp, char *err, size_t errlen)
{
    *status = 0;
    if (curl_dl_load() != 0) {
        snprintf(err, errlen, "libcurl is not available: %s", curl_dl_error());
        return -1;
    }
    CURL *e = curl_easy_init();
    if (e == NULL) {
        snprintf(err, errlen, "libcurl refused a handle");
        return -1;
    }
    struct curl_slist *h = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    h = curl_slist_append(h, "Expect:");
    struct rx rx = {resp, false};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (local_target(url)) /* metadata endpoints are never reached through a proxy */
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "agentd/" AGENTD_VERSION);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : (long)CC_HTTP_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, rx_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &rx);
    CURLcode rc = curl_easy_perform(e);
    long code = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (rx.over) {
        snprintf(err, errlen, "the response exceeds %d bytes", CC_HTTP_MAX_BODY);
        return -1;
    }
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s", curl_easy_strerror(rc));
        return -1;
    }
    *status = (int)code;
    return 0;
}

int cc_read_file(const char *path, struct buf *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char tmp[4096];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        if (out->len + (size_t)n > 65536) {
            snprintf(err, errlen, "%s is larger than 64 KiB", path);
            close(fd);
            return -1;
        }
        buf_append(out, tmp, (size_t)n);
    }
    close(fd);
    while (out->len && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r' ||
                        out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t'))
        out->data[--out->len] = '\0';
    if (out->len == 0) {
        snprintf(err, errlen, "%s is empty", path);
        return -1;
    }
    return 0;
}

void cc_form_encode(struct buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            buf_append_char(out, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(out, e, 3);
        }
    }
}

const char *cc_env(char **env, const char *name)
{
    size_t n = strlen(name);
    for (char **e = env; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return (*e)[n + 1] ? *e + n + 1 : NULL;
    return NULL;
}

static int digits(const char *s, size_t n, size_t at, size_t k, int *out)
{
    if (at + k > n)
        return -1;
    int v = 0;
    for (size_t i = at; i < at + k; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int cc_parse_iso8601(const char *s, size_t n, int64_t *out)
{
    int Y, M, D, h, m, sec;
    if (digits(s, n, 0, 4, &Y) || n < 19 || s[4] != '-' || digits(s, n, 5, 2, &M) || s[7] != '-' ||
        digits(s, n, 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || digits(s, n, 11, 2, &h) ||
        s[13] != ':' || digits(s, n, 14, 2, &m) || s[16] != ':' || digits(s, n, 17, 2, &sec))
        return -1;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return -1;
    size_t i = 19;
    if (i < n && s[i] == '.') {
        i++;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 12)
            i++;
        if (i == start)
            return -1;
    }
    int64_t off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (digits(s, n, i + 1, 2, &oh) || i + 3 >= n || s[i + 3] != ':' || digits(s, n, i + 4, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        off = (s[i] == '+' ? 1 : -1) * (int64_t)(oh * 3600 + om * 60);
        i += 6;
    } else {
        return -1;
    }
    if (i != n)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (int64_t)t - off;
    return 0;
}

void cc_brief_body(char *dst, size_t n, const struct buf *b)
{
    size_t k = b->len < 200 ? b->len : 200;
    size_t j = 0;
    for (size_t i = 0; i < k && j + 1 < n; i++)
        dst[j++] = b->data[i] >= 0x20 && b->data[i] < 0x7f ? b->data[i] : ' ';
    dst[j] = '\0';
}
