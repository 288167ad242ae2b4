/* libFuzzer target: the service-account key parser (cloud_google.c cc_google_parse_sa) and the Vertex Anthropic
 * body rewrite (providers/vertex.c). Checks: an accepted key has its required fields and an http(s) token_uri; a
 * refused one leaves nothing allocated (LSan) and says why; the rewritten body always carries the Vertex version
 * and never a model. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cloud_google.h"
#include "gateway/providers/vertex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    struct cc_google_sa sa;
    char err[256] = "";
    if (cc_google_parse_sa((const char *)data, size, &sa, err, sizeof(err)) == 0) {
        if (!sa.client_email || !sa.private_key || !sa.token_uri ||
            (strncmp(sa.token_uri, "https://", 8) != 0 && strncmp(sa.token_uri, "http://", 7) != 0))
            abort();
        cc_google_sa_free(&sa);
    } else if (err[0] == '\0' || sa.client_email || sa.private_key || sa.token_uri) {
        abort();
    }
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (cJSON_IsObject(j)) {
        if (vertex_anthropic_body(j, false) != 0)
            abort();
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "anthropic_version");
        if (!cJSON_IsString(v) || strcmp(v->valuestring, "vertex-2023-10-16") != 0 ||
            cJSON_GetObjectItemCaseSensitive(j, "model"))
            abort();
    }
    cJSON_Delete(j);
    return 0;
}
