/* curl_dl.c: libcurl through dlopen (see curl_dl.h for why).
 *
 * Each forwarder below has the name and signature of the libcurl function it stands for, so the rest of the tree
 * is written against <curl/curl.h> as usual. They are hidden: the executable never exports them, so libcurl's own
 * references to its public functions cannot bind to these. The names are parenthesised to keep curl.h's
 * type-checking macros (which still check every call site elsewhere) from expanding here. */
#define CURL_DISABLE_TYPECHECK
#include "net/curl_dl.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/timeutil.h"

#define LIBCURL_SONAME "libcurl.so.4"
#define HIDDEN __attribute__((visibility("hidden")))

typedef void (*fnptr)(void);

static struct {
    CURLcode (*global_init)(long);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    CURLcode (*easy_pause)(CURL *, int);
    const char *(*easy_strerror)(CURLcode);
    CURLcode (*easy_perform)(CURL *);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_cleanup)(CURLM *);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} api;

#define SYM(field, name) {name, offsetof(__typeof__(api), field)}
static const struct {
    const char *name;
    size_t off;
} syms[] = {
    SYM(global_init, "curl_global_init"),
    SYM(global_cleanup, "curl_global_cleanup"),
    SYM(easy_init, "curl_easy_init"),
    SYM(easy_cleanup, "curl_easy_cleanup"),
    SYM(easy_reset, "curl_easy_reset"),
    SYM(easy_setopt, "curl_easy_setopt"),
    SYM(easy_getinfo, "curl_easy_getinfo"),
    SYM(easy_pause, "curl_easy_pause"),
    SYM(easy_strerror, "curl_easy_strerror"),
    SYM(easy_perform, "curl_easy_perform"),
    SYM(multi_init, "curl_multi_init"),
    SYM(multi_cleanup, "curl_multi_cleanup"),
    SYM(multi_setopt, "curl_multi_setopt"),
    SYM(multi_add_handle, "curl_multi_add_handle"),
    SYM(multi_remove_handle, "curl_multi_remove_handle"),
    SYM(multi_assign, "curl_multi_assign"),
    SYM(multi_socket_action, "curl_multi_socket_action"),
    SYM(multi_info_read, "curl_multi_info_read"),
    SYM(slist_append, "curl_slist_append"),
    SYM(slist_free_all, "curl_slist_free_all"),
};
_Static_assert(sizeof(fnptr) == sizeof(void *), "function and object pointers differ in size");
_Static_assert(sizeof(api) == sizeof(syms) / sizeof(syms[0]) * sizeof(fnptr), "a curl function has no symbol");

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_rc = -1;
static atomic_bool loaded; /* set (release) once api is complete: curl_dl_loaded may be asked from any thread */
static char load_err[256] = "libcurl not loaded";

static void load(void)
{
    uint64_t t0 = time_mono_us();
    void *h = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *e = dlerror();
        snprintf(load_err, sizeof(load_err), "cannot load %s (needed for https upstreams and proxies): %s",
                 LIBCURL_SONAME, e ? e : "unknown error");
        return;
    }
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        void *p = dlsym(h, syms[i].name);
        if (p == NULL) {
            snprintf(load_err, sizeof(load_err), "%s has no %s", LIBCURL_SONAME, syms[i].name);
            memset(&api, 0, sizeof(api));
            return; /* the handle stays open: harmless, and dlclose of a half-used library is not */
        }
        memcpy((char *)&api + syms[i].off, &p, sizeof(p));
    }
    if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_err, sizeof(load_err), "curl_global_init failed");
        memset(&api, 0, sizeof(api));
        return;
    }
    load_rc = 0;
    load_err[0] = '\0';
    atomic_store_explicit(&loaded, true, memory_order_release);
    log_debug("libcurl loaded in %llu us", (unsigned long long)(time_mono_us() - t0));
}

int curl_dl_load(void)
{
    pthread_once(&load_once, load);
    return load_rc;
}

bool curl_dl_loaded(void)
{
    return atomic_load_explicit(&loaded, memory_order_acquire);
}

const char *curl_dl_error(void)
{
    return load_err;
}

void curl_dl_cleanup(void)
{
    if (curl_dl_loaded())
        api.global_cleanup();
}

/* ---------- forwarders ---------- */

HIDDEN CURLcode(curl_global_init)(long flags)
{
    (void)flags; /* curl_dl_load initialises with CURL_GLOBAL_DEFAULT */
    return curl_dl_load() == 0 ? CURLE_OK : CURLE_FAILED_INIT;
}

HIDDEN void(curl_global_cleanup)(void)
{
    curl_dl_cleanup();
}

HIDDEN CURL *(curl_easy_init)(void)
{
    return api.easy_init ? api.easy_init() : NULL;
}

HIDDEN void(curl_easy_cleanup)(CURL *e)
{
    if (api.easy_cleanup)
        api.easy_cleanup(e);
}

/* Blocking transfer: only the OTLP exporter's own thread uses it (https collectors). */
HIDDEN CURLcode(curl_easy_perform)(CURL *e)
{
    return api.easy_perform ? api.easy_perform(e) : CURLE_FAILED_INIT;
}

HIDDEN void(curl_easy_reset)(CURL *e)
{
    if (api.easy_reset)
        api.easy_reset(e);
}

/* The one argument after the option is read by the type the option number encodes, as libcurl reads it. */
HIDDEN CURLcode(curl_easy_setopt)(CURL *e, CURLoption opt, ...)
{
    if (api.easy_setopt == NULL)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, opt);
    CURLcode rc;
    if (opt < CURLOPTTYPE_OBJECTPOINT)
        rc = api.easy_setopt(e, opt, va_arg(ap, long));
    else if (opt < CURLOPTTYPE_FUNCTIONPOINT)
        rc = api.easy_setopt(e, opt, va_arg(ap, void *));
    else if (opt < CURLOPTTYPE_OFF_T)
        rc = api.easy_setopt(e, opt, va_arg(ap, fnptr));
    else if (opt < CURLOPTTYPE_BLOB)
        rc = api.easy_setopt(e, opt, va_arg(ap, curl_off_t));
    else
        rc = api.easy_setopt(e, opt, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

/* Every CURLINFO takes a pointer to where the answer goes. */
HIDDEN CURLcode(curl_easy_getinfo)(CURL *e, CURLINFO info, ...)
{
    if (api.easy_getinfo == NULL)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    CURLcode rc = api.easy_getinfo(e, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

HIDDEN CURLcode(curl_easy_pause)(CURL *e, int bitmask)
{
    return api.easy_pause ? api.easy_pause(e, bitmask) : CURLE_FAILED_INIT;
}

HIDDEN const char *(curl_easy_strerror)(CURLcode code)
{
    return api.easy_strerror ? api.easy_strerror(code) : "libcurl not loaded";
}

HIDDEN CURLM *(curl_multi_init)(void)
{
    return api.multi_init ? api.multi_init() : NULL;
}

HIDDEN CURLMcode(curl_multi_cleanup)(CURLM *m)
{
    return api.multi_cleanup ? api.multi_cleanup(m) : CURLM_BAD_HANDLE;
}

HIDDEN CURLMcode(curl_multi_setopt)(CURLM *m, CURLMoption opt, ...)
{
    if (api.multi_setopt == NULL)
        return CURLM_BAD_HANDLE;
    va_list ap;
    va_start(ap, opt);
    CURLMcode rc;
    if (opt < CURLOPTTYPE_OBJECTPOINT)
        rc = api.multi_setopt(m, opt, va_arg(ap, long));
    else if (opt < CURLOPTTYPE_FUNCTIONPOINT)
        rc = api.multi_setopt(m, opt, va_arg(ap, void *));
    else if (opt < CURLOPTTYPE_OFF_T)
        rc = api.multi_setopt(m, opt, va_arg(ap, fnptr));
    else
        rc = api.multi_setopt(m, opt, va_arg(ap, curl_off_t));
    va_end(ap);
    return rc;
}

HIDDEN CURLMcode(curl_multi_add_handle)(CURLM *m, CURL *e)
{
    return api.multi_add_handle ? api.multi_add_handle(m, e) : CURLM_BAD_HANDLE;
}

HIDDEN CURLMcode(curl_multi_remove_handle)(CURLM *m, CURL *e)
{
    return api.multi_remove_handle ? api.multi_remove_handle(m, e) : CURLM_BAD_HANDLE;
}

HIDDEN CURLMcode(curl_multi_assign)(CURLM *m, curl_socket_t s, void *p)
{
    return api.multi_assign ? api.multi_assign(m, s, p) : CURLM_BAD_HANDLE;
}

HIDDEN CURLMcode(curl_multi_socket_action)(CURLM *m, curl_socket_t s, int ev_bitmask, int *running)
{
    return api.multi_socket_action ? api.multi_socket_action(m, s, ev_bitmask, running) : CURLM_BAD_HANDLE;
}

HIDDEN CURLMsg *(curl_multi_info_read)(CURLM *m, int *left)
{
    return api.multi_info_read ? api.multi_info_read(m, left) : NULL;
}

HIDDEN struct curl_slist *(curl_slist_append)(struct curl_slist *l, const char *s)
{
    return api.slist_append ? api.slist_append(l, s) : NULL;
}

HIDDEN void(curl_slist_free_all)(struct curl_slist *l)
{
    if (api.slist_free_all)
        api.slist_free_all(l);
}
