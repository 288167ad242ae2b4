/* pending.c: server-to-client requests waiting for their answers (pending.h). */
#include "mcp/pending.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

struct mcp_pending {
    struct mcp_pending *next;
    uv_async_t async;
    char sid[40];
    char id[MCP_PENDING_ID_MAX];
    cJSON *answer; /* set (under mu) by the answering thread */
    bool listed;   /* in the list (under mu) */
    mcp_pending_fn *cb;
    void *ud;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct mcp_pending *head;
static size_t count;
static unsigned long long seq;

static void unlink_locked(struct mcp_pending *p)
{
    for (struct mcp_pending **pp = &head; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            p->listed = false;
            count--;
            return;
        }
}

static void closed(uv_handle_t *h)
{
    struct mcp_pending *p = h->data;
    cJSON_Delete(p->answer);
    xfree(p);
}

static void woken(uv_async_t *a)
{
    struct mcp_pending *p = a->data;
    pthread_mutex_lock(&mu);
    cJSON *answer = p->answer;
    p->answer = NULL;
    if (answer && p->listed)
        unlink_locked(p);
    pthread_mutex_unlock(&mu);
    if (answer == NULL)
        return;
    mcp_pending_fn *cb = p->cb;
    void *ud = p->ud;
    uv_close((uv_handle_t *)&p->async, closed);
    cb(ud, answer);
    cJSON_Delete(answer);
}

struct mcp_pending *mcp_pending_new(uv_loop_t *loop, const char *sid, char id_out[MCP_PENDING_ID_MAX],
                                    mcp_pending_fn *cb, void *ud)
{
    struct mcp_pending *p = xcalloc(1, sizeof(*p));
    pthread_mutex_lock(&mu);
    if (count >= MCP_PENDING_MAX) {
        pthread_mutex_unlock(&mu);
        xfree(p);
        return NULL;
    }
    snprintf(p->id, sizeof(p->id), "agentd-%llu", ++seq);
    snprintf(p->sid, sizeof(p->sid), "%s", sid);
    p->cb = cb;
    p->ud = ud;
    uv_async_init(loop, &p->async, woken);
    p->async.data = p;
    p->next = head;
    head = p;
    p->listed = true;
    count++;
    pthread_mutex_unlock(&mu);
    memcpy(id_out, p->id, MCP_PENDING_ID_MAX);
    return p;
}

void mcp_pending_cancel(struct mcp_pending *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&mu);
    if (p->listed)
        unlink_locked(p);
    pthread_mutex_unlock(&mu);
    uv_close((uv_handle_t *)&p->async, closed);
}

int mcp_pending_answer(const char *sid, const cJSON *msg)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    if (!cJSON_IsString(id))
        return -1;
    int rc = -1;
    pthread_mutex_lock(&mu);
    for (struct mcp_pending *p = head; p; p = p->next)
        if (p->answer == NULL && strcmp(p->id, id->valuestring) == 0 && strcmp(p->sid, sid) == 0) {
            p->answer = cJSON_Duplicate(msg, true);
            uv_async_send(&p->async);
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&mu);
    return rc;
}
