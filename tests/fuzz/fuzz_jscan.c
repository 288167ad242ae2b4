/* libFuzzer target: the JSON scanner. Validation must never read out of bounds, and whatever it accepts cJSON
 * must accept too (differential check), with field lookups agreeing on presence. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int ok = jscan_validate(s, size, NULL, NULL) == 0;
    if (ok && memchr(s, '\0', size) == NULL) {
        cJSON *t = cJSON_ParseWithLength(s, size);
        /* cJSON is laxer in places (it takes some invalid escapes), so only one direction must hold. */
        if (t == NULL && size < 100000) {
            /* cJSON has a nesting limit of 1000 and we allow 128: anything we accept it must parse */
            abort();
        }
        cJSON_Delete(t);
    }
    static const char *const keys[] = {"model", "stream", "messages", "usage"};
    struct jval f[4];
    if (jscan_fields(s, size, keys, f, 4, NULL, NULL) == 0) {
        struct buf b = BUF_INIT(1 << 20);
        for (int i = 0; i < 4; i++) {
            if (f[i].type == J_STRING)
                jval_str(&f[i], &b);
            int64_t n;
            jval_i64(&f[i], &n);
        }
        buf_free(&b);
        struct jval v;
        jscan_path(s, size, "usage.prompt_tokens_details.cached_tokens", &v);
    }
    return 0;
}
