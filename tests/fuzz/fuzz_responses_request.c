/* libFuzzer target: the Responses request path: the head scan, then (when the body is JSON) validation and
 * translation with and without a stored conversation, the Response skeleton, and the input items a stored
 * conversation keeps. Checks that a refused request always says why (a 400 with a message), that an accepted one
 * yields a chat request with at least one message, and that the head and the tree agree on what JSON is. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/responses.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    const char *s = (const char *)data;
    struct responses_head h;
    struct gw_error err;
    memset(&err, 0, sizeof(err));
    int hrc = responses_parse_head(s, size, &h, &err);
    if (hrc != 0 && (err.status != 400 || err.message[0] == '\0'))
        abort();
    cJSON *req = cJSON_ParseWithLength(s, size);
    if (req == NULL)
        return 0;
    /* the same bytes as a stored conversation too: any array is a candidate history */
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(req, "input");
    for (int pass = 0; pass < 2; pass++) {
        struct buf dropped = BUF_INIT(BUF_UNBOUNDED);
        memset(&err, 0, sizeof(err));
        cJSON *c = responses_to_chat(req, pass && cJSON_IsArray(hist) ? hist : NULL, &dropped, &err);
        if (c == NULL) {
            if (err.status != 400 || err.message[0] == '\0')
                abort();
        } else {
            if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "messages")) < 1)
                abort();
            char *txt = cJSON_PrintUnformatted(c);
            if (txt == NULL)
                abort();
            cJSON_free(txt);
            cJSON_Delete(c);
        }
        buf_free(&dropped);
    }
    cJSON *sk = responses_skeleton(req, "resp_fuzz", 1, "m");
    cJSON *items = responses_input_items(req);
    responses_append_output(items, sk);
    cJSON_Delete(items);
    cJSON_Delete(sk);
    cJSON_Delete(req);
    return 0;
}
