/* libFuzzer target: the JSON scanner. Validation must never read out of bounds, and whatever it accepts cJSON
 * must accept too (differential check), with field lookups agreeing on presence. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jscan.h"

/* jscan_each_fields on validated text must agree with jscan_fields on each element (the trusted string skip). */
static int each_elem(const struct jval *e, const struct jval *f, void *ud)
{
    static const char *const ek[] = {"role", "content"};
    (*(size_t *)ud)++;
    if (e->type != J_OBJECT)
        return f[0].type != J_NONE || f[1].type != J_NONE ? (abort(), 0) : 0;
    struct jval g[2];
    if (jscan_fields(e->raw.p, e->raw.n, ek, g, 2, NULL, NULL) != 0)
        return 0; /* a duplicate key: jscan_each_fields stops there too */
    for (int i = 0; i < 2; i++)
        if (g[i].type != f[i].type || (g[i].type != J_NONE && (g[i].raw.n != f[i].raw.n || g[i].raw.p != f[i].raw.p)))
            abort();
    return 0;
}

static int count_elem(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    (void)v;
    (*(size_t *)ud)++;
    return 0;
}

struct nth {
    size_t want;
    struct jval v;
};

static int nth_elem(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    struct nth *n = ud;
    if (n->want-- == 0) {
        n->v = *v;
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int ok = jscan_validate(s, size, NULL, NULL) == 0;
    /* the relay's cheap check passes every valid object or array */
    int structure = jscan_structure_ok(s, size) == 0;
    if (structure != (jscan_structure_ok_bytes(s, size) == 0))
        abort(); /* the block scan and the byte reference disagree */
    /* the decoders' one pass: the same structure answer, the same as its byte reference, and on valid JSON the
     * same keys as jscan_may_have_object */
    static const char *const ek[] = {"usage", "error", "message", NULL};
    unsigned hits = 0, hits_b = 0;
    int ev = jscan_event_scan(s, size, ek, &hits);
    if (ev != jscan_event_scan_bytes(s, size, ek, &hits_b) || hits != hits_b || (ev == 0) != structure)
        abort();
    if (ok && ev == 0)
        for (int k = 0; k < 3; k++)
            if (((hits >> k) & 1) != jscan_may_have_object(s, size, (const char *const[]){ek[k], NULL}))
                abort();
    size_t lead = 0;
    while (lead < size && (s[lead] == ' ' || s[lead] == '\t' || s[lead] == '\n' || s[lead] == '\r'))
        lead++;
    if (ok && lead < size && (s[lead] == '{' || s[lead] == '[') && !structure)
        abort();
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
        if (f[2].type == J_ARRAY) {
            static const char *const ek[] = {"role", "content"};
            struct jval scratch[2];
            size_t visited = 0, total = 0;
            int rc = jscan_each_fields(&f[2], ek, scratch, 2, each_elem, &visited);
            struct nth n = {0, {J_NONE, STR_NULL}};
            jscan_each(&f[2], count_elem, &total);
            if (rc == 0 && visited != total)
                abort();
            if (rc != 0) {
                /* only a duplicate "role"/"content" in the element it stopped at may end the walk early */
                n.want = visited;
                jscan_each(&f[2], nth_elem, &n);
                struct jval g[2];
                if (n.v.type != J_OBJECT || jscan_fields(n.v.raw.p, n.v.raw.n, ek, g, 2, NULL, NULL) == 0)
                    abort();
            }
        }
    }
    return 0;
}
