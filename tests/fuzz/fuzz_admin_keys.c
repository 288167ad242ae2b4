/* libFuzzer target: the admin API's key JSON (POST /admin/keys, PATCH /admin/keys/{id}). A body is either refused
 * with a message and the record unchanged, or applied; what is applied must survive its own JSON form
 * (key_to_json -> key_apply_json gives the same record). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *print(const struct key_record *r)
{
    cJSON *j = key_to_json(r, 1000);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    cJSON *o = cJSON_ParseWithLength((const char *)data, size);
    if (o == NULL)
        return 0;
    char err[512];
    /* update of an existing record: on refusal nothing may change */
    struct key_record r = {0};
    cJSON *base = cJSON_Parse("{\"name\":\"base\",\"models\":[\"m\"],\"tags\":{\"a\":\"b\"},\"rpm\":3}");
    if (key_apply_json(&r, base, true, 1000, err, sizeof(err)) != 0)
        abort();
    cJSON_Delete(base);
    char *before = print(&r);
    if (key_apply_json(&r, o, false, 1000, err, sizeof(err)) != 0) {
        char *after = print(&r);
        if (strcmp(before, after) != 0 || err[0] == '\0')
            abort();
        cJSON_free(after);
    }
    cJSON_free(before);
    key_record_free(&r);

    /* create, then the record's own JSON must read back to the same record */
    struct key_record c = {0};
    if (key_apply_json(&c, o, true, 1000, err, sizeof(err)) == 0) {
        if (c.name == NULL || c.name[0] == '\0')
            abort();
        cJSON *j = key_to_json(&c, 1000);
        static const char *const out_only[] = {"id", "created_at", "revoked_at", "status", "hint"};
        for (size_t i = 0; i < sizeof(out_only) / sizeof(out_only[0]); i++)
            cJSON_DeleteItemFromObjectCaseSensitive(j, out_only[i]);
        struct key_record back = {0};
        if (key_apply_json(&back, j, true, 1000, err, sizeof(err)) != 0)
            abort(); /* what we accepted and print, we must accept again */
        char *a = print(&c), *b = print(&back);
        if (strcmp(a, b) != 0)
            abort();
        cJSON_free(a);
        cJSON_free(b);
        key_record_free(&back);
        cJSON_Delete(j);
    }
    key_record_free(&c);
    cJSON_Delete(o);
    return 0;
}
