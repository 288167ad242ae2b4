/* lat: closed-loop HTTP/1.1 latency probe for bench/run.sh (concurrency 1, one keep-alive connection).
 *
 * Sends the same request N times, one after another, and records per request, from the moment the request is
 * written (CLOCK_MONOTONIC):
 *   total  until the last byte of the response (chunked terminator or Content-Length reached)
 *   ttfb   until the first byte of the response head
 *   ttft   until the first complete SSE event carrying a `data:` line (the first chunk a streaming client
 *          can hand to its caller); only with --stream
 * and prints one JSON object with percentiles of each (microseconds), error counts and the SSE event count of
 * the last response, so the driver can check that every path relayed the whole stream.
 *
 *   lat -p PORT [-h HOST] [-u PATH] [-m METHOD] [-b BODY | -f BODYFILE] [-H 'Name: value']... [-n N] [-w WARMUP]
 *       [-d SECONDS] [--stream] [--raw] [--gap-us US]
 *   --raw adds every total in microseconds ("total_raw_us"); --gap-us sleeps that long before each request (not
 *   timed: a paced client, so a pool behind the endpoint is refilled when the request arrives).
 *   -n is the most requests measured; -d stops earlier once that many seconds of measuring have passed.
 *
 * Deliberately small and dependency-free: no libcurl, so the probe's own overhead is a write() and a few read()s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg)
{
    fprintf(stderr, "lat: %s\n", msg);
    exit(2);
}

static const char *host = "127.0.0.1";
static int port;
static int fd = -1;

static int connect_once(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("bad host (IPv4 literal expected)");
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(s);
        return -1;
    }
    return s;
}

static int write_all(int s, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(s, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- one response ---- */

struct result {
    int status;
    bool ok;         /* complete response read */
    bool close;      /* server asked to close, or closed */
    uint64_t t_head; /* first byte */
    uint64_t t_data; /* first complete data event (0 if none) */
    uint64_t t_end;
    int events;      /* SSE events with a data: line */
    size_t body_bytes;
};

/* SSE scanner over the decoded body: counts events (blank-line terminated) that contained a `data:` line. */
struct sse {
    char line[64];
    size_t linelen; /* bytes of the current line seen (only the first 63 kept) */
    bool event_has_data;
};

static void sse_feed(struct sse *s, const char *p, size_t n, struct result *r)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\r')
            continue;
        if (c == '\n') {
            if (s->linelen == 0) { /* blank line: end of event */
                if (s->event_has_data) {
                    r->events++;
                    if (r->t_data == 0)
                        r->t_data = now_ns();
                }
                s->event_has_data = false;
            } else if (s->linelen >= 5 && strncmp(s->line, "data:", 5) == 0) {
                s->event_has_data = true;
            }
            s->linelen = 0;
            continue;
        }
        if (s->linelen < sizeof(s->line) - 1)
            s->line[s->linelen] = c;
        s->linelen++;
    }
}

static char rbuf[1 << 16];

static int read_response(struct result *r, bool stream)
{
    memset(r, 0, sizeof(*r));
    static char head[16384];
    size_t hlen = 0;
    size_t have = 0, off = 0; /* bytes in rbuf after the head */
    /* read the head */
    for (;;) {
        ssize_t n = read(fd, head + hlen, sizeof(head) - 1 - hlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        if (r->t_head == 0)
            r->t_head = now_ns();
        hlen += (size_t)n;
        head[hlen] = '\0';
        char *e = strstr(head, "\r\n\r\n");
        if (e) {
            size_t hsize = (size_t)(e + 4 - head);
            have = hlen - hsize;
            memcpy(rbuf, e + 4, have);
            head[hsize] = '\0';
            break;
        }
        if (hlen >= sizeof(head) - 1)
            return -1;
    }
    if (strncmp(head, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(head + 9);
    long long clen = -1;
    bool chunked = false;
    for (char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        char *h = l + 2;
        if (strncasecmp(h, "content-length:", 15) == 0)
            clen = atoll(h + 15);
        else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strcasestr(h, "chunked") &&
                 strcasestr(h, "chunked") < strstr(h, "\r\n"))
            chunked = true;
        else if (strncasecmp(h, "connection:", 11) == 0 && strcasestr(h, "close") &&
                 strcasestr(h, "close") < strstr(h, "\r\n"))
            r->close = true;
    }
    struct sse sse = {0};
    /* body */
    enum { SIZE, DATA, DATA_CRLF, TRAILER, DONE } st = SIZE;
    long long left = chunked ? 0 : clen; /* -1: until close */
    char sizeline[64];
    size_t sl = 0;
    if (!chunked && clen == 0)
        st = DONE;
    for (;;) {
        while (off < have && st != DONE) {
            if (!chunked) {
                size_t take = have - off;
                if (left >= 0 && (long long)take > left)
                    take = (size_t)left;
                if (stream)
                    sse_feed(&sse, rbuf + off, take, r);
                r->body_bytes += take;
                off += take;
                if (left >= 0) {
                    left -= (long long)take;
                    if (left == 0)
                        st = DONE;
                }
                continue;
            }
            char c = rbuf[off];
            switch (st) {
            case SIZE:
                off++;
                if (c == '\n') {
                    sizeline[sl] = '\0';
                    left = strtoll(sizeline, NULL, 16);
                    sl = 0;
                    st = left == 0 ? TRAILER : DATA;
                } else if (sl < sizeof(sizeline) - 1) {
                    sizeline[sl++] = c;
                }
                break;
            case DATA: {
                size_t take = have - off;
                if ((long long)take > left)
                    take = (size_t)left;
                if (stream)
                    sse_feed(&sse, rbuf + off, take, r);
                r->body_bytes += take;
                off += take;
                left -= (long long)take;
                if (left == 0)
                    st = DATA_CRLF;
                break;
            }
            case DATA_CRLF:
                off++;
                if (c == '\n')
                    st = SIZE;
                break;
            case TRAILER: /* after the 0 chunk: lines until an empty one */
                off++;
                if (c == '\n') {
                    if (sl == 0)
                        st = DONE;
                    sl = 0;
                } else if (c != '\r') {
                    sl++;
                }
                break;
            case DONE: break;
            }
        }
        if (st == DONE)
            break;
        ssize_t n = read(fd, rbuf, sizeof(rbuf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            if (!chunked && clen < 0) { /* delimited by close */
                r->close = true;
                break;
            }
            return -1;
        }
        have = (size_t)n;
        off = 0;
    }
    r->t_end = now_ns();
    r->ok = true;
    return 0;
}

/* ---- stats ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted v, in microseconds */
static double pct(const uint64_t *v, int n, double p)
{
    int k = (int)(p / 100.0 * n + 0.999999) - 1;
    if (k < 0)
        k = 0;
    if (k >= n)
        k = n - 1;
    return (double)v[k] / 1e3;
}

static void print_stats(const char *name, uint64_t *v, int n, bool comma)
{
    if (n == 0) {
        printf("\"%s\":null%s", name, comma ? "," : "");
        return;
    }
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)v[i];
    printf("\"%s\":{\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"max\":%.1f,\"mean\":%.1f}%s", name,
           (double)v[0] / 1e3, pct(v, n, 50), pct(v, n, 90), pct(v, n, 99), (double)v[n - 1] / 1e3, sum / n / 1e3, comma ? "," : "");
}

int main(int argc, char **argv)
{
    const char *path = "/", *method = NULL, *body = NULL;
    const char *hdrs[32];
    int nh = 0, n = 1000, warm = 100;
    double max_secs = 0;
    bool stream = false, raw = false;
    int gap_us = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--stream")) {
            stream = true;
            continue;
        }
        if (!strcmp(a, "--raw")) {
            raw = true;
            continue;
        }
        if (!v)
            die("option needs a value");
        i++;
        if (!strcmp(a, "-p")) port = atoi(v);
        else if (!strcmp(a, "-h")) host = v;
        else if (!strcmp(a, "-u")) path = v;
        else if (!strcmp(a, "-m")) method = v;
        else if (!strcmp(a, "-b")) body = v;
        else if (!strcmp(a, "-f")) {
            FILE *f = fopen(v, "rb");
            if (!f)
                die("cannot open body file");
            static char fb[1 << 20];
            size_t len = fread(fb, 1, sizeof(fb) - 1, f);
            fclose(f);
            fb[len] = '\0';
            while (len > 0 && (fb[len - 1] == '\n' || fb[len - 1] == '\r'))
                fb[--len] = '\0';
            body = fb;
        } else if (!strcmp(a, "-H")) {
            if (nh == 32)
                die("too many headers");
            hdrs[nh++] = v;
        } else if (!strcmp(a, "-n")) n = atoi(v);
        else if (!strcmp(a, "-w")) warm = atoi(v);
        else if (!strcmp(a, "-d")) max_secs = atof(v);
        else if (!strcmp(a, "--gap-us")) gap_us = atoi(v);
        else die("unknown option");
    }
    if (port <= 0 || n <= 0 || warm < 0)
        die("usage: lat -p PORT [-h HOST] [-u PATH] [-m METHOD] [-b BODY|-f FILE] [-H 'k: v']... [-n N] [-w W] [-d S] [--stream] [--raw] [--gap-us US]");
    if (!method)
        method = body ? "POST" : "GET";
    size_t cap = 4096 + (body ? strlen(body) : 0);
    for (int i = 0; i < nh; i++)
        cap += strlen(hdrs[i]) + 2;
    char *req = malloc(cap);
    int len = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: agentd-bench-lat\r\n", method, path,
                       host, port);
    for (int i = 0; i < nh; i++)
        len += snprintf(req + len, cap - (size_t)len, "%s\r\n", hdrs[i]);
    if (body)
        len += snprintf(req + len, cap - (size_t)len, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    else
        len += snprintf(req + len, cap - (size_t)len, "\r\n");

    uint64_t *tot = calloc((size_t)n, sizeof(uint64_t)), *ttfb = calloc((size_t)n, sizeof(uint64_t)),
             *ttft = calloc((size_t)n, sizeof(uint64_t));
    int got = 0, nttft = 0, errors = 0, non2xx = 0, reconnects = 0, last_events = -1, min_events = -1;
    size_t last_bytes = 0;
    uint64_t t_start = 0;
    for (int i = 0; i < warm + n; i++) {
        if (i == warm)
            t_start = now_ns();
        if (i > warm && max_secs > 0 && (double)(now_ns() - t_start) / 1e9 >= max_secs)
            break;
        if (fd < 0) {
            fd = connect_once();
            if (fd < 0) {
                errors++;
                if (errors > 50)
                    break;
                usleep(10000);
                continue;
            }
            if (i > 0)
                reconnects++;
        }
        if (gap_us > 0)
            usleep((useconds_t)gap_us); /* paced: not timed */
        struct result r;
        uint64_t t0 = now_ns();
        if (write_all(fd, req, (size_t)len) != 0 || read_response(&r, stream) != 0) {
            close(fd);
            fd = -1;
            if (i >= warm)
                errors++;
            if (errors > 50)
                break;
            continue;
        }
        if (r.close) {
            close(fd);
            fd = -1;
        }
        if (i < warm)
            continue;
        if (r.status < 200 || r.status > 299)
            non2xx++;
        tot[got] = r.t_end - t0;
        ttfb[got] = r.t_head - t0;
        got++;
        if (stream) {
            if (r.t_data)
                ttft[nttft++] = r.t_data - t0;
            last_events = r.events;
            if (min_events < 0 || r.events < min_events)
                min_events = r.events;
        }
        last_bytes = r.body_bytes;
    }
    double secs = (double)(now_ns() - t_start) / 1e9;
    printf("{\"requests\":%d,\"errors\":%d,\"non2xx\":%d,\"reconnects\":%d,\"seconds\":%.3f,\"rps\":%.1f,"
           "\"body_bytes\":%zu,\"events\":%d,\"min_events\":%d,",
           got, errors, non2xx, reconnects, secs, got / (secs > 0 ? secs : 1), last_bytes, last_events, min_events);
    if (raw) { /* before print_stats sorts them */
        printf("\"total_raw_us\":[");
        for (int i = 0; i < got; i++)
            printf("%s%.1f", i ? "," : "", (double)tot[i] / 1e3);
        printf("],");
    }
    print_stats("total_us", tot, got, true);
    print_stats("ttfb_us", ttfb, got, true);
    print_stats("ttft_us", ttft, nttft, false);
    printf("}\n");
    return got > 0 ? 0 : 1;
}
