/* auth_config.c: the `auth:` section, and what `auth.mode: auto` means for a given configuration. */
#include "policy/auth_config.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "common/macros.h"
#include "config/config.h"
#include "policy/auth.h"

static const char *const auth_modes[] = {"auto", "keys", "none", NULL};
_Static_assert(ARRAY_LEN(auth_modes) == AUTH_MODE_NONE + 2, "one name per AUTH_MODE_*");

#define AOFF(f) offsetof(struct config_auth, f)
static const struct cfg_field auth_fields[] = {
    {.key = "mode", .type = CFG_ENUM, .off = AOFF(mode), .enums = auth_modes, .def = "auto",
     .help = "keys: every gateway request needs a virtual key (agentd keys create); none: no key needed; auto: "
             "keys when listening beyond loopback or ENVIRONMENT=production, else none"},
};

const struct cfg_schema auth_config_schema = {.name = "auth", .fields = auth_fields, .nfields = ARRAY_LEN(auth_fields)};

bool auth_host_is_loopback(const char *host)
{
    char h[256];
    size_t n = strlen(host);
    if (n >= sizeof(h))
        return false;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* "[::1]" */
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
    } else {
        memcpy(h, host, n + 1);
    }
    if (strcasecmp(h, "localhost") == 0)
        return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false; /* "", "0.0.0.0", "::", a name: beyond loopback */
}

static int resolve(const struct config *cfg)
{
    if (cfg->auth.mode != AUTH_MODE_AUTO)
        return cfg->auth.mode;
    if (cfg->server.environment && strcasecmp(cfg->server.environment, "production") == 0)
        return AUTH_MODE_KEYS;
    char host[256];
    int port;
    if (cfg_parse_addr(cfg->server.listen, host, sizeof(host), &port) != 0 || !auth_host_is_loopback(host))
        return AUTH_MODE_KEYS;
    return AUTH_MODE_NONE;
}

void auth_config_finish(struct config *cfg)
{
    cfg->auth.effective = resolve(cfg);
}

int auth_mode_effective(const struct config *cfg)
{
    return cfg->auth.effective ? cfg->auth.effective : resolve(cfg);
}
