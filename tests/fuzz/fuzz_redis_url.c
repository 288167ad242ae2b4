/* libFuzzer target: the Redis URL parser (store/redis.c, REDIS_URL). Checks: an accepted URL has a host, a port in
 * 1..65535 and NUL-terminated fields; a refused one says why in fixed text (never echoing
 * the input, so never a password). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct redis_url u;
    struct buf err = BUF_INIT(1024);
    if (redis_url_parse(s, &u, &err) == 0) {
        if (u.host[0] == '\0' || u.port < 1 || u.port > 65535 || u.db < 0)
            abort();
        if (strnlen(u.host, sizeof(u.host)) == sizeof(u.host) || strnlen(u.pass, sizeof(u.pass)) == sizeof(u.pass) ||
            strnlen(u.user, sizeof(u.user)) == sizeof(u.user))
            abort();
    } else {
        if (err.len == 0)
            abort();
        /* the messages are fixed text: nothing of the input (a password) is echoed, so no byte outside
         * printable ASCII and no '@' or ':' from an authority can appear */
        for (size_t i = 0; i < err.len; i++)
            if ((unsigned char)err.data[i] < 0x20 || (unsigned char)err.data[i] > 0x7e || err.data[i] == '@')
                abort();
    }
    buf_free(&err);
    free(s);
    return 0;
}
