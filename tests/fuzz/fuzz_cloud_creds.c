/* libFuzzer target: the cloud credential response parsers (gateway/cloud_aws.c, cloud_azure.c): STS
 * AssumeRoleWithWebIdentity XML, the container credentials JSON and the Entra ID / IMDS token JSON. The first byte
 * picks the parser. Checks: a success fills every field its kind needs and nothing else, a failure leaves no
 * credential behind and always says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cloud_creds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > CC_HTTP_MAX_BODY)
        return 0;
    int which = data[0] % 3;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    struct cc_creds c;
    char err[512];
    err[0] = '\0';
    int rc = which == 0   ? cc_aws_parse_sts(body, len, &c, err, sizeof(err))
             : which == 1 ? cc_aws_parse_container(body, len, &c, err, sizeof(err))
                          : cc_azure_parse_token(body, len, 1700000000, &c, err, sizeof(err));
    if (rc != 0) {
        if (err[0] == '\0' || c.token || c.access_key_id || c.secret_access_key || c.session_token)
            abort();
        return 0;
    }
    if (which == 2) {
        if (c.token == NULL || c.access_key_id || c.expires_at <= 0)
            abort();
    } else {
        if (c.token || c.access_key_id == NULL || c.secret_access_key == NULL || (which == 0 && !c.session_token))
            abort();
    }
    cc_creds_clear(&c);
    return 0;
}
