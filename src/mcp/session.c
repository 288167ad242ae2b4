/* session.c: the 2025-11-25 era's sessions (mcp.h). One table for the process (any worker may receive any
 * request of a session), under a mutex; lookups are linear in MCP_SESSIONS_MAX at most. A session belongs to the
 * key that created it: another key presenting its id is told it does not exist. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/alloc.h"
#include "common/timeutil.h"
#include "mcp/mcp.h"

struct session {
    char id[33];
    char version[16];
    char key_id[48];
    uint64_t last_ms;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct session *tab;
static size_t n, cap;

static uint64_t now_ms(void)
{
    return time_mono_us() / 1000;
}

/* Drops idle sessions; then, when still full, the idlest one. Under mu. */
static void make_room(uint64_t now)
{
    for (size_t i = 0; i < n;)
        if (now - tab[i].last_ms > MCP_SESSION_IDLE_MS)
            tab[i] = tab[--n];
        else
            i++;
    if (n < MCP_SESSIONS_MAX)
        return;
    size_t idlest = 0;
    for (size_t i = 1; i < n; i++)
        if (tab[i].last_ms < tab[idlest].last_ms)
            idlest = i;
    tab[idlest] = tab[--n];
}

int mcp_session_new(const char *key_id, const char *version, char id_out[33])
{
    unsigned char r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -1;
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(id_out + 2 * i, 3, "%02x", r[i]);
    pthread_mutex_lock(&mu);
    uint64_t now = now_ms();
    make_room(now);
    if (n == cap) {
        cap = cap ? cap * 2 : 16;
        tab = xrealloc(tab, cap * sizeof(*tab));
    }
    struct session *s = &tab[n++];
    memset(s, 0, sizeof(*s));
    memcpy(s->id, id_out, 33);
    snprintf(s->version, sizeof(s->version), "%s", version);
    snprintf(s->key_id, sizeof(s->key_id), "%s", key_id ? key_id : "");
    s->last_ms = now;
    pthread_mutex_unlock(&mu);
    return 0;
}

static struct session *find(const char *id, const char *key_id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i].id, id) == 0)
            return strcmp(tab[i].key_id, key_id ? key_id : "") == 0 ? &tab[i] : NULL;
    return NULL;
}

int mcp_session_get(const char *id, const char *key_id, char version_out[16])
{
    pthread_mutex_lock(&mu);
    uint64_t now = now_ms();
    struct session *s = find(id, key_id);
    int rc = -1;
    if (s && now - s->last_ms <= MCP_SESSION_IDLE_MS) {
        s->last_ms = now;
        memcpy(version_out, s->version, 16);
        rc = 0;
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

int mcp_session_end(const char *id, const char *key_id)
{
    pthread_mutex_lock(&mu);
    struct session *s = find(id, key_id);
    if (s)
        *s = tab[--n];
    pthread_mutex_unlock(&mu);
    return s ? 0 : -1;
}

size_t mcp_session_count(void)
{
    pthread_mutex_lock(&mu);
    size_t c = n;
    pthread_mutex_unlock(&mu);
    return c;
}

void mcp_shutdown(void)
{
    pthread_mutex_lock(&mu);
    xfree(tab);
    tab = NULL;
    n = cap = 0;
    pthread_mutex_unlock(&mu);
    mcp_http_free();
}
