/* curl_dl.h: libcurl, loaded when something needs it.
 *
 * Debian's libcurl pulls some thirty shared libraries (GnuTLS, p11-kit, Kerberos, LDAP, ...), several of which
 * initialise themselves in constructors: linking it costs every agentd process ~9 ms of start-up on this kind of
 * VM and ~4 MB of resident pages, whether or not a single https request is ever made. agentd's own HTTP/1.1 client
 * serves plain http, the mock model needs no network, and `agentd sandbox` and `agentd config` never touch the
 * network at all; so libcurl is opened with dlopen() the first time a transfer needs it (https, a proxy, or
 * gateway.upstream_client: curl), or at start-up when the configuration says it will be needed.
 *
 * The curl_* functions agentd calls are defined in curl_dl.c with hidden visibility and forward to the loaded
 * library; callers include <curl/curl.h> as usual and must have had curl_dl_load() succeed first. */
#ifndef AGENTD_CURL_DL_H
#define AGENTD_CURL_DL_H

#include <stdbool.h>

/* Opens libcurl and runs curl_global_init, once per process (thread-safe; later calls return the first result).
 * Returns 0, or -1 with the reason in curl_dl_error(). */
int curl_dl_load(void);
bool curl_dl_loaded(void);
const char *curl_dl_error(void);
/* curl_global_cleanup if it was loaded. The library stays mapped (its threads and atexit handlers may still
 * refer to it). */
void curl_dl_cleanup(void);

#endif
