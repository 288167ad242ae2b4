/* libFuzzer target: the response cache's key (gateway/cache.c). Any body: no crash, no read out of bounds, and a
 * key that is a function of the request: the same bytes give the same key, and reordering the top-level members
 * of a valid object (printed back by cJSON) does not change it. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jscan.h"
#include "gateway/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cache_key_input in = {"openai", false, str_from("k"), str_from("m"), str_make((const char *)data, size)};
    uint8_t a[CACHE_KEY_LEN], b[CACHE_KEY_LEN];
    int rc = cache_key(&in, a);
    if (cache_key(&in, b) != rc || (rc == 0 && memcmp(a, b, CACHE_KEY_LEN) != 0))
        abort();
    /* the property below holds for what the front doors accept: valid JSON (cJSON is more lenient, e.g. a raw NUL
     * inside a string, which it cuts short) */
    size_t off;
    const char *msg;
    if (rc != 0 || jscan_validate((const char *)data, size, &off, &msg) != 0)
        return 0;
    /* reversed top-level members: the same key */
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (root == NULL)
        abort(); /* cache_key accepted it */
    /* the original as cJSON prints it, against its members reversed, printed the same way (a number printed back
     * may differ in its last digit from what was sent: both sides go through the same printing) */
    char *fwd = cJSON_PrintUnformatted(root);
    if (fwd == NULL)
        abort();
    in.body = str_from(fwd);
    if (cache_key(&in, a) != 0)
        abort();
    cJSON_free(fwd);
    cJSON *rev = cJSON_CreateObject();
    while (root->child) {
        cJSON *c = cJSON_DetachItemViaPointer(root, root->child);
        c->next = rev->child;
        if (rev->child) {
            c->prev = rev->child->prev;
            rev->child->prev = c;
        } else {
            c->prev = c;
        }
        rev->child = c;
    }
    /* with a duplicate name the order is meaningful (a provider reads one of them): reversal may change the key */
    bool dup = false;
    for (const cJSON *x = rev->child; x && !dup; x = x->next)
        for (const cJSON *y = x->next; y && !dup; y = y->next)
            dup = strcmp(x->string, y->string) == 0;
    char *txt = dup ? NULL : cJSON_PrintUnformatted(rev);
    if (txt) {
        in.body = str_from(txt);
        if (cache_key(&in, b) == 0 && memcmp(a, b, CACHE_KEY_LEN) != 0)
            abort();
        cJSON_free(txt);
    }
    cJSON_Delete(rev);
    cJSON_Delete(root);
    return 0;
}
