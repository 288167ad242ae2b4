/* upstream_curl.h: the libcurl backend of the upstream client. It serves what agentd's own HTTP/1.1 client
 * does not (https with HTTP/2 by ALPN, proxies from the environment, unusual URLs), or everything under
 * UP_CLIENT_CURL. libcurl itself is opened at the first transfer (net/curl_dl.h). net/upstream.c chooses
 * between the backends; nothing else calls this one. */
#ifndef AGENTD_UPSTREAM_CURL_H
#define AGENTD_UPSTREAM_CURL_H

#include "net/upstream_types.h"

/* start fails (returns -1, *why set) only when libcurl cannot be loaded or refuses the handle. */
extern const struct up_backend_ops up_curl_backend_ops;

#endif
