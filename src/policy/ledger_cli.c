#include "policy/ledger_cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "config/config.h"
extern char **environ;
#include "store/store_config.h"

int64_t spend_parse_since(const char *s, int64_t now_ms)
{
    if (s == NULL || *s == '\0' || strlen(s) > 32)
        return -1;
    int y, m, d;
    char tail;
    if (sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) == 3 && strlen(s) == 10) {
        if (m < 1 || m > 12 || d < 1 || d > 31 || y < 1970)
            return -1;
        struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
        return (int64_t)timegm(&tm) * 1000;
    }
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n < 0 || n > 100000 || end[0] == '\0' || end[1] != '\0')
        return -1;
    int64_t unit;
    switch (end[0]) {
    case 'm': unit = 60000; break;
    case 'h': unit = 3600000; break;
    case 'd': unit = 86400000; break;
    case 'w': unit = 7 * 86400000LL; break;
    default: return -1;
    }
    return now_ms - n * unit;
}

int spend_parse_format(const char *s)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "table") == 0)
        return SPEND_TABLE;
    if (strcmp(s, "json") == 0)
        return SPEND_JSON;
    if (strcmp(s, "csv") == 0)
        return SPEND_CSV;
    return -1;
}

static void csv_field(struct buf *out, const char *s)
{
    bool quote = strpbrk(s, ",\"\r\n") != NULL;
    if (!quote) {
        buf_append_str(out, s);
        return;
    }
    buf_append_char(out, '"');
    for (; *s; s++) {
        if (*s == '"')
            buf_append_char(out, '"');
        buf_append_char(out, *s);
    }
    buf_append_char(out, '"');
}

void spend_format_rows(struct buf *out, const struct ledger_sum *rows, size_t n, enum ledger_group by,
                       enum spend_format f)
{
    const char *name = ledger_group_name(by);
    if (f == SPEND_JSON) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, name, rows[i].group);
            cJSON_AddNumberToObject(o, "requests", (double)rows[i].requests);
            cJSON_AddNumberToObject(o, "input_tokens", (double)rows[i].input_tokens);
            cJSON_AddNumberToObject(o, "output_tokens", (double)rows[i].output_tokens);
            cJSON_AddNumberToObject(o, "cost_usd", (double)rows[i].cost_nusd / 1e9);
            cJSON_AddNumberToObject(o, "incomplete", (double)rows[i].incomplete);
            cJSON_AddNumberToObject(o, "saved_usd", (double)rows[i].saved_nusd / 1e9);
            cJSON_AddItemToArray(arr, o);
        }
        char *s = cJSON_PrintUnformatted(arr);
        buf_append_str(out, s ? s : "[]");
        buf_append_char(out, '\n');
        cJSON_free(s);
        cJSON_Delete(arr);
        return;
    }
    if (f == SPEND_CSV) {
        buf_printf(out, "%s,requests,input_tokens,output_tokens,cost_usd,incomplete,saved_usd\n", name);
        for (size_t i = 0; i < n; i++) {
            csv_field(out, rows[i].group);
            buf_printf(out, ",%lld,%lld,%lld,%.9f,%lld,%.9f\n", (long long)rows[i].requests,
                       (long long)rows[i].input_tokens, (long long)rows[i].output_tokens,
                       (double)rows[i].cost_nusd / 1e9, (long long)rows[i].incomplete,
                       (double)rows[i].saved_nusd / 1e9);
        }
        return;
    }
    buf_printf(out, "%-32s %10s %14s %14s %14s %10s %14s\n", name, "requests", "input_tokens", "output_tokens",
               "cost_usd", "incomplete", "saved_usd");
    for (size_t i = 0; i < n; i++)
        buf_printf(out, "%-32.128s %10lld %14lld %14lld %14.6f %10lld %14.6f\n", rows[i].group[0] ? rows[i].group : "-",
                   (long long)rows[i].requests, (long long)rows[i].input_tokens, (long long)rows[i].output_tokens,
                   (double)rows[i].cost_nusd / 1e9, (long long)rows[i].incomplete, (double)rows[i].saved_nusd / 1e9);
}

static int usage(void)
{
    fputs("usage: agentd spend report --by key|user|team|workflow|model|day [--since 7d|YYYY-MM-DD]\n"
          "                           [--format table|json|csv] [--data-dir DIR]\n",
          stderr);
    return 2;
}

int spend_cli_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "report") != 0)
        return usage();
    const char *by = NULL, *since = "7d", *format = "table", *dir = getenv("AGENTD_SERVER_DATA_DIR");
    for (int i = 2; i < argc; i++) {
        const char **slot = strcmp(argv[i], "--by") == 0         ? &by
                            : strcmp(argv[i], "--since") == 0    ? &since
                            : strcmp(argv[i], "--format") == 0   ? &format
                            : strcmp(argv[i], "--data-dir") == 0 ? &dir
                                                                 : NULL;
        if (slot == NULL || i + 1 >= argc) {
            fprintf(stderr, "agentd spend report: unexpected argument '%s'\n", argv[i]);
            return usage();
        }
        *slot = argv[++i];
    }
    int g = ledger_group_parse(by);
    int f = spend_parse_format(format);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t since_ms = spend_parse_since(since, (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000);
    if (g < 0 || f < 0 || since_ms < 0) {
        fprintf(stderr, "agentd spend report: %s\n",
                g < 0 ? "--by must be key, user, team, workflow, model or day"
                : f < 0 ? "--format must be table, json or csv"
                        : "--since must be like 7d, 24h, 30m, 2w or YYYY-MM-DD");
        return 2;
    }
    if (dir == NULL || *dir == '\0')
        dir = "./data";
    struct buf err = BUF_INIT(4096);
    /* DATABASE_URL (or the configuration's store.database_url): the cluster's ledger, in PostgreSQL */
    struct config_flags flags = {.config_path = config_default_path(NULL)};
    struct config *c = config_load(&flags, environ, &err);
    if (c == NULL || store_backend_start(c, true, &err) != 0) {
        fprintf(stderr, "agentd spend report: %s\n", err.data ? err.data : "invalid configuration");
        config_unref(c);
        buf_free(&err);
        return 2;
    }
    config_unref(c);
    bool pg = strcmp(store_backend_name(), "sqlite") != 0;
    struct ledger_store *s = store_ledger_ops()->open(dir, true, &err);
    struct ledger_sum *rows = NULL;
    size_t n = 0;
    int rc = 0;
    if (s == NULL) {
        /* no ledger yet: an empty report, not an error */
        char path[4096];
        snprintf(path, sizeof(path), "%s/ledger.db", dir);
        rc = !pg && access(path, F_OK) != 0 ? 0 : -1;
    } else {
        rc = store_ledger_ops()->report(s, (enum ledger_group)g, since_ms, &rows, &n, &err);
        store_ledger_ops()->close(s);
    }
    store_backend_stop();
    if (rc != 0) {
        fprintf(stderr, "agentd spend report: %s\n", err.data ? err.data : "cannot read the ledger");
        buf_free(&err);
        return 1;
    }
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    spend_format_rows(&out, rows, n, (enum ledger_group)g, (enum spend_format)f);
    fwrite(out.data ? out.data : "", 1, out.len, stdout);
    buf_free(&out);
    buf_free(&err);
    xfree(rows);
    return 0;
}
