/* libFuzzer target: the MCP client's response parser (agent/mcp_client.h). The first byte picks the content type
 * (JSON body or SSE stream), the id the answer must carry and the size of the pieces the rest arrives in; the
 * same bytes parsed in one piece must give the same verdict, last event id, retry and server requests (nothing
 * may depend on fragmentation). An answer is
 * then read as a tools/list result and as a tools/call result, as the client would. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/mcp_client.h"
#include "common/alloc.h"
#include "common/buf.h"

static void count(void *ud, const cJSON *msg)
{
    (void)msg;
    (*(int *)ud)++;
}

static int parse(const char *s, size_t n, bool sse, int64_t id, size_t step, struct mcp_resp *p, int *asked)
{
    mcp_resp_init(p, sse, id, 1 << 16);
    p->on_request = count;
    p->req_ud = asked;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += step)
        rc = mcp_resp_feed(p, s + i, i + step <= n ? step : n - i);
    if (rc == 0)
        rc = mcp_resp_finish(p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool sse = data[0] & 1;
    int64_t id = (data[0] >> 1) & 3;
    size_t step = (size_t)(data[0] >> 3) + 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct mcp_resp a, b;
    int qa = 0, qb = 0;
    int ra = parse(s, n, sse, id, step, &a, &qa);
    int rb = parse(s, n, sse, id, n ? n : 1, &b, &qb);
    if (ra != rb || (ra == 1 && a.rpc_error != b.rpc_error))
        abort();
    /* what a resumption would ask for, and the server's requests seen, do not depend on fragmentation either */
    if (qa != qb || strcmp(a.last_event_id, b.last_event_id) != 0 || a.retry_ms != b.retry_ms ||
        a.unanswered != b.unanswered)
        abort();
    if (ra == 1 && a.result) {
        cJSON *arr = cJSON_CreateArray();
        char *cursor = NULL;
        (void)mcp_tools_to_openai(a.result, "srv", arr, &cursor);
        xfree(cursor);
        cJSON_Delete(arr);
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        (void)mcp_call_text(a.result, &out);
        buf_free(&out);
    }
    mcp_resp_free(&a);
    mcp_resp_free(&b);
    return 0;
}
