/* libFuzzer: the body of POST /v1/sandbox/runs (sbx_service_parse_request). Whatever it accepts must be a spec the
 * sandbox validates and that reads back the same once written as the CLI's --daemon writes it; whatever it refuses
 * must say why; everything frees cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sbx_json_spec js;
    struct buf err = BUF_INIT(1024);
    char param[64];
    int rc = sbx_service_parse_request((const char *)data, size, &js, &err, param, sizeof(param));
    if (rc == SBX_SVC_OK) {
        struct buf e2 = BUF_INIT(1024);
        if (sbx_spec_validate(&js.spec, &e2) != 0)
            abort(); /* accepted, so it must run */
        /* what the CLI's --daemon writes of it reads back as the same spec */
        struct buf again = BUF_INIT(BUF_UNBOUNDED);
        struct sbx_json_spec js2;
        char p2[64];
        if (sbx_service_request_json(&js.spec, &again, &e2) != 0 ||
            sbx_service_parse_request(again.data, again.len, &js2, &e2, p2, sizeof(p2)) != SBX_SVC_OK)
            abort();
        const struct sbx_spec *a = &js.spec, *b = &js2.spec;
        if (a->lang != b->lang || a->argc != b->argc || a->envc != b->envc || a->nfiles != b->nfiles ||
            a->code_len != b->code_len || (a->code_len && memcmp(a->code, b->code, a->code_len) != 0) ||
            a->stdin_len != b->stdin_len || (a->stdin_len && memcmp(a->stdin_data, b->stdin_data, a->stdin_len) != 0) ||
            memcmp(&a->limits, &b->limits, sizeof(a->limits)) != 0)
            abort();
        for (size_t i = 0; i < a->argc; i++)
            if (strcmp(a->argv[i], b->argv[i]) != 0)
                abort();
        for (size_t i = 0; i < a->envc; i++)
            if (strcmp(a->env[i], b->env[i]) != 0)
                abort();
        for (size_t i = 0; i < a->nfiles; i++)
            if (strcmp(a->files[i].name, b->files[i].name) != 0 || a->files[i].len != b->files[i].len ||
                (a->files[i].mode & 0777) != (b->files[i].mode & 0777) ||
                (a->files[i].len && memcmp(a->files[i].data, b->files[i].data, a->files[i].len) != 0))
                abort();
        sbx_json_spec_free(&js2);
        buf_free(&again);
        buf_free(&e2);
    } else if (rc != SBX_SVC_INVALID || err.len == 0 || strlen(param) >= sizeof(param)) {
        abort(); /* a refusal says why */
    }
    sbx_json_spec_free(&js);
    buf_free(&err);
    return 0;
}
