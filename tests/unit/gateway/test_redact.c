/* Secrets agentd knows never leave through upstream text (issue 15 item 3): an upstream 401 quoting the key
 * ("Incorrect API key provided: sk-...") was relayed verbatim and logged. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "gateway/redact.h"
#include "test.h"

static const char *KEY = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wxyz";

static char *scrub(const struct redact_set *rs, const char *in)
{
    static char out[4096];
    struct buf b = BUF_INIT(BUF_UNBOUNDED);
    redact_append(rs, in, strlen(in), &b);
    snprintf(out, sizeof(out), "%.*s", (int)b.len, b.data ? b.data : "");
    buf_free(&b);
    return out;
}

static void test_whole_and_fragments(void)
{
    struct redact_set *rs = redact_set_new();
    redact_set_add(rs, KEY);
    is_str(scrub(rs, "Incorrect API key provided: sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wxyz."),
           "Incorrect API key provided: [REDACTED].");
    /* truncated the way servers do: a visible head and tail */
    is_str(scrub(rs, "key sk-proj-ABCD...6789wxyz is invalid"), "key [REDACTED]...[REDACTED] is invalid");
    /* a head fragment alone, a tail fragment alone */
    is_str(scrub(rs, "[sk-proj-ABCDEFG]"), "[[REDACTED]]");
    is_str(scrub(rs, "ends ...3456789wxyz"), "ends ...[REDACTED]");
    /* a middle piece is caught when it reaches either end */
    is_str(scrub(rs, "x WXYZ0123456789wxyz y"), "x [REDACTED] y");
    /* several occurrences, adjacent ones merge */
    is_str(
        scrub(rs,
              "a sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wxyzsk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wxyz b"),
        "a [REDACTED] b");
    /* fewer than 8 bytes of it are not a leak worth blanking ordinary text for */
    is_str(scrub(rs, "sk-proj wxyz"), "sk-proj wxyz");
    is_str(scrub(rs, "nothing here"), "nothing here");
    is_str(scrub(rs, ""), "");
    redact_set_free(rs);
}

static void test_short_secrets(void)
{
    struct redact_set *rs = redact_set_new();
    redact_set_add(rs, "abc");        /* too short: ignored */
    redact_set_add(rs, "0123456789"); /* 10 bytes: only whole */
    redact_set_add(rs, "0123456789"); /* duplicate */
    redact_set_add(rs, NULL);
    redact_set_add(rs, "");
    is_int(redact_set_count(rs), 1);
    is_str(scrub(rs, "abc 0123456789 01234567"), "abc [REDACTED] 01234567");
    redact_set_free(rs);
}

static void test_headers(void)
{
    struct redact_set *rs = redact_set_new();
    redact_set_add_header(rs, "Authorization: Bearer tok-1234567890abcdefghij  ");
    redact_set_add_header(rs, "X-Title: my-application-title");
    redact_set_add_header(rs, "X-Api-Key:keyvalue-0987654321");
    redact_set_add_header(rs, "no colon at all here");
    is_int(redact_set_count(rs), 3); /* "Bearer tok-...", "tok-...", "keyvalue-..." */
    /* (the tail of "Bearer tok-..." reaches back over the space before the token: harmless) */
    is_str(scrub(rs, "got tok-1234567890abcdefghij and keyvalue-0987654321 for my-application-title"),
           "got[REDACTED] and [REDACTED] for my-application-title");
    redact_set_free(rs);
}

static void test_upstream_error(void)
{
    struct redact_set *rs = redact_set_new();
    redact_set_add(rs, KEY);
    struct gw_error e;
    gw_error_set(&e, 401, GW_ERR_AUTHENTICATION, "Incorrect API key provided: %s", KEY);
    snprintf(e.code, sizeof(e.code), "invalid_api_key");
    e.from_upstream = true;
    redact_upstream_error(rs, "openai:gpt-4o", &e);
    is_int(e.status, 502);
    is_int(e.type, GW_ERR_API);
    ok(e.retryable);
    is_str(e.code, "upstream_authentication_failed");
    is_str(e.message,
           "upstream authentication failed at deployment openai:gpt-4o (HTTP 401): Incorrect API key provided: "
           "[REDACTED]");
    /* 403 too; other statuses keep theirs, scrubbed */
    gw_error_set(&e, 403, GW_ERR_PERMISSION, "denied");
    e.from_upstream = true;
    redact_upstream_error(rs, "d", &e);
    is_int(e.status, 502);
    gw_error_set(&e, 429, GW_ERR_RATE_LIMIT, "slow down, %s", KEY);
    e.from_upstream = true;
    redact_upstream_error(rs, "d", &e);
    is_int(e.status, 429);
    is_str(e.message, "slow down, [REDACTED]");
    /* agentd's own 401s (not from upstream) are not rewritten */
    gw_error_set(&e, 401, GW_ERR_AUTHENTICATION, "no");
    redact_upstream_error(rs, "d", &e);
    is_int(e.status, 401);
    /* a message filled to the brim: the cut never leaves key bytes */
    char big[1100];
    memset(big, 'x', sizeof(big));
    size_t klen = strlen(KEY);
    memcpy(big + 1000, KEY, klen);
    big[1000 + klen] = '\0';
    gw_error_set(&e, 400, GW_ERR_INVALID_REQUEST, "%s", big);
    e.from_upstream = true;
    redact_upstream_error(rs, "d", &e);
    ok(strstr(e.message, "ABCDEFGH") == NULL);
    ok(strstr(e.message, "sk-proj-") == NULL);
    redact_upstream_error(NULL, NULL, &e); /* no set: harmless */
    redact_set_free(rs);
}

/* Linear: a text made to defeat naive matching (a periodic key inside a periodic text) takes about twice as long
 * at twice the size. */
static double run(const struct redact_set *rs, size_t n)
{
    struct buf in = BUF_INIT(BUF_UNBOUNDED);
    for (size_t i = 0; i < n; i++)
        buf_append(&in, "a", 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    redact_append(rs, in.data, in.len, &out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ok(out.len < 64); /* all of it is the key's bytes */
    buf_free(&out);
    buf_free(&in);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static void test_linear(void)
{
    struct redact_set *rs = redact_set_new();
    char key[4097];
    memset(key, 'a', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    redact_set_add(rs, key);
    redact_set_add(rs, "aaaaaaaab"); /* whole-only secret whose head matches everywhere */
    run(rs, 1 << 16);
    double t1 = run(rs, 1 << 18), t2 = run(rs, 1 << 19);
    printf("# 256 KiB %.4f s, 512 KiB %.4f s\n", t1, t2);
    ok(t2 < t1 * 4 + 0.05);
    redact_set_free(rs);
}

int main(void)
{
    subtest("whole secret and fragments", test_whole_and_fragments);
    subtest("short secrets", test_short_secrets);
    subtest("secret headers", test_headers);
    subtest("upstream errors", test_upstream_error);
    subtest("linear", test_linear);
    return done_testing();
}
