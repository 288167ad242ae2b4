#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jscan.h"
#include "test.h"

static int valid(const char *s)
{
    return jscan_validate(s, strlen(s), NULL, NULL) == 0;
}

static void test_validate(void)
{
    ok(valid("{}"));
    ok(valid(" [1, -2.5e+3, true, false, null, \"x\\u00e9\\n\"] "));
    ok(valid("{\"a\":{\"b\":[{}]}}"));
    ok(valid("\"caf\xc3\xa9\""));
    ok(!valid(""));
    ok(!valid("{"));
    ok(!valid("{\"a\":}"));
    ok(!valid("{\"a\":1,}"));
    ok(!valid("[01]"));
    ok(!valid("[1.]"));
    ok(!valid("\"\\x\""));
    ok(!valid("\"a\nb\""));          /* raw control character */
    ok(!valid("\"\xc3\x28\""));      /* invalid UTF-8 */
    ok(!valid("\"\xed\xa0\x80\""));  /* UTF-8 encoded surrogate */
    ok(!valid("{} {}"));
    ok(!valid("\"\\ud800\""));          /* lone high surrogate */
    ok(!valid("\"\\udc00\""));          /* lone low surrogate */
    ok(!valid("\"\\ud800\\u0041\""));   /* high surrogate followed by a non-surrogate */
    ok(valid("\"\\ud83d\\ude00\""));     /* a proper pair */
    ok(!valid("tru"));
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    ok(jscan_validate(deep, 400, NULL, NULL) == -1); /* nesting bound */
    size_t off;
    const char *msg;
    ok(jscan_validate("{\"a\":tru}", 9, &off, &msg) == -1);
    is_int(off, 5);
}

static void test_fields(void)
{
    const char *body = "{\"model\":\"gpt\",\"stream\":true,\"n\":3,\"nested\":{\"model\":\"no\"},\"m\\u006fdel2\":1}";
    const char *keys[] = {"model", "stream", "n", "missing", "model2"};
    struct jval f[5];
    ok(jscan_fields(body, strlen(body), keys, f, 5, NULL, NULL) == 0);
    ok(jval_is_str(&f[0], "gpt"));
    bool b = false;
    ok(jval_bool(&f[1], &b) == 0 && b);
    int64_t n;
    ok(jval_i64(&f[2], &n) == 0 && n == 3);
    ok(f[3].type == J_NONE);
    ok(f[4].type == J_NUMBER); /* escaped key matched */
    struct jval v;
    ok(jscan_path(body, strlen(body), "nested.model", &v) == 0 && jval_is_str(&v, "no"));
    ok(jscan_path(body, strlen(body), "nested.none", &v) == -1);
    ok(jscan_fields("[1]", 3, keys, f, 1, NULL, NULL) == -1); /* not an object */
    const char *dup = "{\"model\":\"a\",\"x\":1,\"model\":\"b\"}";
    size_t off;
    const char *msg;
    ok(jscan_fields(dup, strlen(dup), keys, f, 1, &off, &msg) == -1); /* a key we read, twice */
    is_str(msg, "duplicate member");
    const char *dup_other = "{\"model\":\"a\",\"x\":1,\"x\":2}";
    ok(jscan_fields(dup_other, strlen(dup_other), keys, f, 1, NULL, NULL) == 0); /* duplicates we ignore are fine */
}

static void test_strings(void)
{
    const char *s = "\"a\\\"b\\\\c\\u00e9\\ud83d\\ude00\\n\"";
    struct jval v = {J_STRING, {s, strlen(s)}};
    struct buf b = BUF_INIT(100);
    ok(jval_str(&v, &b) == 0);
    is_str(b.data, "a\"b\\c\xc3\xa9\xf0\x9f\x98\x80\n");
    buf_free(&b);
    ok(jval_is_str(&v, "a\"b\\c\xc3\xa9\xf0\x9f\x98\x80\n"));
    struct jval num = {J_NUMBER, STR_LIT("1e3")};
    int64_t i;
    ok(jval_i64(&num, &i) == 0 && i == 1000);
    struct jval frac = {J_NUMBER, STR_LIT("1.5")};
    ok(jval_i64(&frac, &i) == -1);
}

static int count_cb(struct str key, const struct jval *v, void *ud)
{
    (void)key;
    (void)v;
    (*(int *)ud)++;
    return 0;
}

static void test_each(void)
{
    const char *arr = "[1, {\"a\":[2,3]}, \"x\"]";
    struct jval v = {J_ARRAY, {arr, strlen(arr)}};
    int n = 0;
    ok(jscan_each(&v, count_cb, &n) == 0);
    is_int(n, 3);
    const char *obj = "{\"a\":1,\"b\":{\"c\":2}}";
    struct jval o = {J_OBJECT, {obj, strlen(obj)}};
    n = 0;
    ok(jscan_each(&o, count_cb, &n) == 0);
    is_int(n, 2);
}

/* The 8-bytes-at-a-time string scan must stop at exactly the bytes the byte loop stops at, wherever they fall
 * in a word: every stop byte at every offset of a long ASCII run. */
static void test_string_words(void)
{
    static const char stops[] = {'"', '\\', '\x01', '\x1f', '\x7f', (char)0x80, (char)0xc3, (char)0xff};
    char doc[64];
    for (size_t k = 0; k < sizeof(stops); k++) {
        for (size_t at = 1; at < 40; at++) {
            memset(doc, 'a', sizeof(doc));
            doc[0] = '"';
            doc[at] = stops[k];
            doc[50] = '"';
            bool valid = stops[k] == '"' || stops[k] == '\x7f'; /* 0x7f (DEL) is allowed in a string */
            size_t len = stops[k] == '"' ? at + 1 : 51;
            size_t off = 0;
            const char *msg = NULL;
            int rc = jscan_validate(doc, len, &off, &msg);
            if (!ok(rc == (valid ? 0 : -1)))
                printf("# stop byte 0x%02x at %zu: rc %d\n", (unsigned char)stops[k], at, rc);
            if (!valid && stops[k] != '\\' && (unsigned char)stops[k] < 0x80)
                ok(off == at); /* the error points at the control character itself */
        }
    }
}

static void test_may_have_object(void)
{
    static const char *const keys[] = {"usage", "error", NULL};
    struct {
        const char *doc;
        bool want;
    } cases[] = {
        {"{\"choices\":[],\"usage\":null}", false},
        {"{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}", true},
        {"{\"usage\" : \n {}}", true},
        {"{\"error\":{\"message\":\"x\"}}", true},
        {"{\"content\":\"the \\\"usage\\\":{ of words\"}", false}, /* inside a string: escaped quotes */
        {"{\"usage_x\":{}}", false},
        {"{\"xusage\":{}}", false},
        {"{\"a\":{\"usage\":{}}}", true}, /* nested: may be; the caller scans */
        {"{\"usage\"", true},             /* cut short: cannot tell, so scan (and fail there) */
        {"", false},
        {"\"", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (!ok(jscan_may_have_object(cases[i].doc, strlen(cases[i].doc), keys) == cases[i].want))
            printf("# case %zu: %s\n", i, cases[i].doc);
}

static void test_structure(void)
{
#define SOK(t) jscan_structure_ok(t, strlen(t))
    is_int(SOK("{\"a\":[1,{\"b\":\"x}]\\\"y\"}],\"c\":null}"), 0); /* brackets inside strings, an escaped quote */
    is_int(SOK("  [ {} , [] ]\n"), 0);
    is_int(SOK("{\"s\":\"a\\\\\"}"), 0); /* "a\\" ends the string: an even run of backslashes */
    is_int(SOK("{\"s\":\"a\\\"}"), -1);  /* "a\" escapes the quote: the string never closes */
    is_int(SOK("{\"choices\":[{\"delta\":{\"content\":\"par"), -1); /* truncated mid-string */
    is_int(SOK("{\"choices\":[{\"delta\":{}}]"), -1);                /* truncated: one level open */
    is_int(SOK("{\"a\":[1}]"), -1);                                     /* mismatched */
    is_int(SOK("{} x"), -1);                                            /* trailing bytes */
    is_int(SOK("{}}"), -1);
    is_int(SOK("\"str\""), -1); /* an event payload is an object or an array */
    is_int(SOK(""), -1);
    /* deeper than 64: the full validation decides */
    char deep[200];
    memset(deep, '[', 70);
    memset(deep + 70, ']', 70);
    is_int(jscan_structure_ok(deep, 140), 0);
    is_int(jscan_structure_ok(deep, 139), -1);
#undef SOK
}

/* The block scan against the byte-by-byte reference: chunk-shaped events cut and mutated at every offset, so
 * that structure bytes, escapes and block edges meet in every position. */
static void test_structure_blocks(void)
{
    static const char *const seeds[] = {
        ("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
         "{\"content\":\"a \\\"quoted\\\" {word} [x] \\\\\"},\"finish_reason\":null}],\"usage\":null}"),
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\u00e9\\n\"}}",
        "  [ {\"a\":[[[],{}]]}, \"\\\\\\\"\", [] ]  ",
        /* a string longer than a block, past block edges, with escapes: the scan skips such a string's body */
        ("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" lorem ipsum "
         "dolor sit amet \\\"consectetur\\\" adipiscing {elit} sed do eiusmod [tempor] incididunt ut labore \\\\\\\\"
         "et dolore magna aliqua ut enim ad minim veniam quis nostrud \\\\\\\" exercitation ullamco laboris nisi "
         "ut aliquip ex ea commodo\\\\\"}}"),
    };
    static const char alphabet[] = "\"\\{}[] a:,";
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int mismatches = 0, checked = 0;
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        size_t n = strlen(seeds[s]);
        char *buf = malloc(n + 1);
        for (size_t cut = 0; cut <= n; cut++) { /* every truncation */
            memcpy(buf, seeds[s], cut);
            mismatches += jscan_structure_ok(buf, cut) != jscan_structure_ok_bytes(buf, cut);
            checked++;
        }
        for (int round = 0; round < 4000; round++) { /* one to three bytes replaced */
            memcpy(buf, seeds[s], n);
            int k = 1 + (int)(rng % 3);
            for (int j = 0; j < k; j++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                buf[(rng >> 33) % n] = alphabet[(rng >> 17) % (sizeof(alphabet) - 1)];
            }
            int a = jscan_structure_ok(buf, n), b = jscan_structure_ok_bytes(buf, n);
            mismatches += a != b;
            checked++;
        }
        free(buf);
    }
    is_int(mismatches, 0);
    ok(checked > 12000);
}

/* Escapes at every offset of a string longer than a block (whose body the block scan skips with memchr): a
 * backslash as the last byte of a block, an escaped quote or backslash just after a block edge. */
static void test_structure_long_strings(void)
{
    char run40[64], run41[64]; /* runs of backslashes longer than the 32 bytes looked at before a skip */
    memset(run40, '\\', 40);
    memcpy(run40 + 40, "\"", 2);
    memset(run41, '\\', 41);
    memcpy(run41 + 41, "\"", 2);
    const char *const escs[] = {"\\\"", "\\\\", "\\\\\\\"", "\\\\\\\\", "\\", "\"", run40, run41};
    char buf[400];
    int mismatches = 0, valid = 0;
    for (size_t e = 0; e < sizeof(escs) / sizeof(escs[0]); e++)
        for (size_t off = 0; off < 140; off++)
            for (size_t tail = 0; tail < 100; tail += 33) {
                size_t n = (size_t)snprintf(buf, sizeof(buf), "{\"t\":\"%.*s%s%.*s\",\"u\":[{}]}", (int)off,
                                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                            escs[e], (int)tail,
                                            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
                                            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
                int a = jscan_structure_ok(buf, n), b = jscan_structure_ok_bytes(buf, n);
                mismatches += a != b;
                valid += b == 0;
            }
    is_int(mismatches, 0);
    ok(valid > 1000); /* the escaped ones are whole; a lone backslash or quote breaks the string */
}

/* jscan_event_scan: the structure answer of jscan_structure_ok, and the keys that may have an object value. */
static void test_event_scan(void)
{
    static const char *const keys[] = {"usage", "error", "message", NULL};
    static const struct {
        const char *doc;
        int rc;
        unsigned hits;
    } cases[] = {
        {"{\"choices\":[],\"usage\":null}", 0, 0},
        {"{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}", 0, 1},
        {" {\"usage\" : \n {}} ", 0, 1},
        {"{\"error\":{\"message\":{}}}", 0, 2 | 4},
        {"{\"content\":\"the \\\"usage\\\":{ of words\"}", 0, 0}, /* inside a string */
        {"{\"content\":\"the \\\"usage\\\":\",\"x\":{}}", 0, 0},  /* a key ending in usage" inside a string */
        {"{\"usage_x\":{},\"xusage\":{},\"usage\":[{}]}", 0, 0},
        {"{\"a\":{\"usage\":{}}}", 0, 1},     /* nested: may be; the caller scans */
        {"[{\"usage\":{}}]", 0, 1},
        {"{\"usage\"{}}", 0, 0},              /* no colon: not a member value */
        {"{\"a-name-longer-than-the-64-bytes-looked-back-at-for-a-key-xxxxxxxxxxxxxusage\":{}}", 0, 0},
        {"{\"a-name-longer-than-the-64-bytes-looked-back-at-for-a-key-xxxxxxxxx\\\"usage\":{}}", 0, 1},
        {"{\"\":{},\"e\":{},\"rror\":{}}", 0, 0}, /* names that are a key's prefix, suffix, or empty */
        {"{\"usage\":{}", -1, 0},             /* cut short: refused, no hits */
        {"{\"usage\":{}} x", -1, 0},
        {"", -1, 0},
        {"\"usage\"", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned h = 99, hb = 99;
        int rc = jscan_event_scan(cases[i].doc, strlen(cases[i].doc), keys, &h);
        int rb = jscan_event_scan_bytes(cases[i].doc, strlen(cases[i].doc), keys, &hb);
        if (!ok(rc == cases[i].rc && h == cases[i].hits && rb == rc && hb == h))
            printf("# case %zu: %s: rc %d hits %u (bytes: %d %u)\n", i, cases[i].doc, rc, h, rb, hb);
    }
    /* deeper than 64: the full validation decides, jscan_may_have_object names the keys */
    char deep[300];
    size_t n = (size_t)snprintf(deep, sizeof(deep), "{\"usage\":{}, \"a\":");
    memset(deep + n, '[', 70);
    memset(deep + n + 70, ']', 70);
    memcpy(deep + n + 140, "}", 2);
    unsigned h = 0;
    is_int(jscan_event_scan(deep, n + 141, keys, &h), 0);
    is_int((int)h, 1);
    is_int(jscan_event_scan(deep, n + 140, keys, &h), -1);
    is_int((int)h, 0);
}

/* The block scan of jscan_event_scan against its byte reference, and against jscan_may_have_object on the texts
 * that are valid JSON, on mutated events (keys and brackets placed at every block offset). */
static void test_event_scan_blocks(void)
{
    static const char *const keys[] = {"usage", "error", NULL};
    static const char *const seeds[] = {
        ("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
         "{\"content\":\"a \\\"usage\\\":{ {word} [x] \\\\\"},\"finish_reason\":null}],\"usage\" : {\"total\":3}}"),
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\u00e9\\n\"}}",
        "  [ {\"error\":[[[],{}]]}, \"\\\\\\\"\", {\"error\":\n{}} ]  ",
        /* a string longer than a block, past block edges, with escapes: the scan skips such a string's body */
        ("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" lorem ipsum "
         "dolor sit amet \\\"consectetur\\\" adipiscing {elit} sed do eiusmod [tempor] incididunt ut labore \\\\\\\\"
         "et dolore magna aliqua ut enim ad minim veniam quis nostrud \\\\\\\" exercitation ullamco laboris nisi "
         "ut aliquip ex ea commodo\\\\\"}}"),
    };
    static const char alphabet[] = "\"\\{}[] a:,usYy_";
    uint64_t rng = 0x2545f4914f6cdd1dull;
    int mismatches = 0, valid = 0, checked = 0;
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        size_t n = strlen(seeds[s]);
        char *buf = malloc(n + 1);
        for (int round = 0; round < 6000; round++) {
            size_t len = n;
            memcpy(buf, seeds[s], n);
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            if (round % 4 == 0) /* a truncation */
                len = (rng >> 33) % (n + 1);
            else
                for (int k = 1 + (int)(rng % 3); k > 0; k--) { /* one to three bytes replaced */
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    buf[(rng >> 33) % n] = alphabet[(rng >> 17) % (sizeof(alphabet) - 1)];
                }
            unsigned a = 0, b = 0;
            int ra = jscan_event_scan(buf, len, keys, &a), rb = jscan_event_scan_bytes(buf, len, keys, &b);
            mismatches += ra != rb || a != b || ra != jscan_structure_ok(buf, len);
            if (jscan_validate(buf, len, NULL, NULL) == 0 && ra == 0) {
                valid++;
                for (int k = 0; k < 2; k++)
                    mismatches += ((a >> k) & 1) != jscan_may_have_object(buf, len, (const char *const[]){keys[k], NULL});
            }
            checked++;
        }
        free(buf);
    }
    is_int(mismatches, 0);
    ok(checked == 24000 && valid > 1000);
}

/* jscan_fields_trusted: the same members as jscan_fields on a value out of validated text, escapes and nesting
 * included, a duplicate of a key asked for still refused. */
static void test_fields_trusted(void)
{
    const char *doc = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a \\\"q\\\" \\\\\",\"x\":{\"y\":[\"}\",\"]\"]},"
                      "\"tool_calls\":null},\"finish_reason\":\"stop\"}]}";
    const char *top_keys[] = {"choices"};
    struct jval top[1];
    ok(jscan_fields(doc, strlen(doc), top_keys, top, 1, NULL, NULL) == 0);
    const char *choice_keys[] = {"delta", "finish_reason"};
    const char *delta_keys[] = {"content", "tool_calls", "x"};
    struct jval ch[2], want[2], dl[3], dlw[3];
    /* the first choice as a jval */
    const char *c0 = strchr(top[0].raw.p, '{');
    struct jval choice = {.type = J_OBJECT, .raw = str_make(c0, (size_t)(top[0].raw.p + top[0].raw.n - 1 - c0))};
    ok(jscan_fields_trusted(&choice, choice_keys, ch, 2) == 0);
    ok(jscan_fields(choice.raw.p, choice.raw.n, choice_keys, want, 2, NULL, NULL) == 0);
    for (int i = 0; i < 2; i++) {
        is_int(ch[i].type, want[i].type);
        ok(ch[i].raw.n == want[i].raw.n && memcmp(ch[i].raw.p, want[i].raw.p, ch[i].raw.n) == 0);
    }
    ok(jscan_fields_trusted(&ch[0], delta_keys, dl, 3) == 0);
    ok(jscan_fields(ch[0].raw.p, ch[0].raw.n, delta_keys, dlw, 3, NULL, NULL) == 0);
    for (int i = 0; i < 3; i++) {
        is_int(dl[i].type, dlw[i].type);
        ok(dl[i].raw.n == dlw[i].raw.n && memcmp(dl[i].raw.p, dlw[i].raw.p, dl[i].raw.n) == 0);
    }
    struct jval dup = {.type = J_OBJECT, .raw = str_from("{\"content\":\"a\",\"content\":\"b\"}")};
    ok(jscan_fields_trusted(&dup, delta_keys, dl, 3) == -1);
    struct jval notobj = {.type = J_ARRAY, .raw = str_from("[]")};
    ok(jscan_fields_trusted(&notobj, delta_keys, dl, 3) == -1);
}

int main(void)
{
    subtest("string scan by words", test_string_words);
    subtest("may have object", test_may_have_object);
    subtest("structure check by blocks equals the byte reference", test_structure_blocks);
    subtest("long strings: escapes at every block offset", test_structure_long_strings);
    subtest("event scan: structure and keys in one pass", test_event_scan);
    subtest("event scan by blocks equals the byte reference and jscan_may_have_object", test_event_scan_blocks);
    subtest("validate", test_validate);
    subtest("fields and paths", test_fields);
    subtest("strings and numbers", test_strings);
    subtest("each", test_each);
    subtest("structure only (the relay's check)", test_structure);
    subtest("fields of validated text", test_fields_trusted);
    return done_testing();
}
