#include "common/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

static bool v4_public(uint32_t a) /* host order */
{
    uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16), b2 = (uint8_t)(a >> 8);
    if (b0 == 0 || b0 == 10 || b0 == 127 || b0 >= 224)
        return false; /* this network, private, loopback, multicast, reserved, broadcast */
    if (b0 == 100 && (b1 & 0xc0) == 64)
        return false; /* shared address space (CGNAT) */
    if (b0 == 169 && b1 == 254)
        return false; /* link-local (cloud metadata) */
    if (b0 == 172 && (b1 & 0xf0) == 16)
        return false;
    if (b0 == 192 && b1 == 168)
        return false;
    if (b0 == 192 && b1 == 0 && (b2 == 0 || b2 == 2))
        return false; /* IETF protocol assignments, TEST-NET-1 */
    if (b0 == 198 && (b1 & 0xfe) == 18)
        return false; /* benchmarking */
    if (b0 == 198 && b1 == 51 && b2 == 100)
        return false;
    if (b0 == 203 && b1 == 0 && b2 == 113)
        return false;
    return true;
}

bool netaddr_public(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_public(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return false;
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t zero[10] = {0};
    if (memcmp(b, zero, 10) == 0 && ((b[10] == 0xff && b[11] == 0xff) || (b[10] == 0 && b[11] == 0))) {
        /* IPv4-mapped (::ffff:a.b.c.d) or -compatible (::a.b.c.d, which includes :: and ::1) */
        uint32_t v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return b[10] == 0xff && v4_public(v4);
    }
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, nat64, 12) == 0)
        return v4_public((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15]);
    if ((b[0] & 0xfe) == 0xfc)
        return false; /* unique local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return false; /* link-local */
    if (b[0] == 0xff)
        return false; /* multicast */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return false; /* documentation */
    return true;
}
