#include "api/admin_spend.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "api/admin_keys.h"
#include "common/alloc.h"
#include "common/str.h"
#include "common/timeutil.h"
#include "config/config.h"
#include "policy/auth.h"
#include "policy/ledger_cli.h"
#include "store/ledger.h"
#include "store/store_config.h"

/* The value of name in a query string (no percent-decoding: every accepted value is plain ASCII). */
static bool query_get(struct str q, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        if (j - i > nl && memcmp(q.p + i, name, nl) == 0 && q.p[i + nl] == '=') {
            size_t vn = j - i - nl - 1;
            if (vn >= outsz)
                return false;
            memcpy(out, q.p + i + nl + 1, vn);
            out[vn] = '\0';
            return true;
        }
        i = j + 1;
    }
    return false;
}

struct job {
    uv_work_t w;
    struct http_req *req;
    char data_dir[4096];
    enum ledger_group by;
    enum spend_format fmt;
    int64_t since_ms;
    struct ledger_sum *rows;
    size_t n;
    int rc;
    struct buf err;
};

static void work(uv_work_t *w)
{
    struct job *j = w->data;
    struct ledger_store *s = store_ledger_ops()->open(j->data_dir, true, &j->err);
    if (s == NULL) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/ledger.db", j->data_dir);
        j->rc = access(path, F_OK) == 0 ? -1 : 0; /* no ledger yet: nothing spent */
        return;
    }
    j->rc = store_ledger_ops()->report(s, j->by, j->since_ms, &j->rows, &j->n, &j->err);
    store_ledger_ops()->close(s);
}

static void done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    if (status != 0 || j->rc != 0) {
        http_respond_error(j->req, 503, "api_error", "ledger_unavailable",
                           j->err.data ? j->err.data : "the spend ledger cannot be read");
    } else {
        struct buf out = BUF_INIT(BUF_UNBOUNDED);
        spend_format_rows(&out, j->rows, j->n, j->by, j->fmt);
        http_respond(j->req, 200, j->fmt == SPEND_CSV ? "text/csv" : "application/json", out.data, out.len);
        buf_free(&out);
    }
    xfree(j->rows);
    buf_free(&j->err);
    xfree(j);
}

void admin_spend(struct http_req *req)
{
    if (!admin_guard(req, "/admin/spend"))
        return;
    char by[32] = "", since[40] = "7d", format[16] = "json";
    query_get(req->query, "since", since, sizeof(since));
    query_get(req->query, "format", format, sizeof(format));
    int g = query_get(req->query, "by", by, sizeof(by)) ? ledger_group_parse(by) : -1;
    int f = spend_parse_format(format);
    int64_t since_ms = spend_parse_since(since, (int64_t)(time_wall_us() / 1000));
    if (g < 0 || f < 0 || f == SPEND_TABLE || since_ms < 0) {
        http_respond_error(req, 400, "invalid_request_error", "invalid_parameter",
                           g < 0    ? "by must be key, user, team, workflow, model or day"
                           : f < 0 || f == SPEND_TABLE ? "format must be json or csv"
                                    : "since must be like 7d, 24h, 30m, 2w or YYYY-MM-DD");
        return;
    }
    struct job *j = xcalloc(1, sizeof(*j));
    j->w.data = j;
    j->req = req;
    j->by = (enum ledger_group)g;
    j->fmt = (enum spend_format)f;
    j->since_ms = since_ms;
    j->err = (struct buf)BUF_INIT(4096);
    snprintf(j->data_dir, sizeof(j->data_dir), "%s", req->cfg->server.data_dir);
    if (uv_queue_work(http_server_loop(req->server), &j->w, work, done) != 0) {
        xfree(j);
        http_respond_error(req, 503, "api_error", "busy", "cannot schedule the report");
    }
}
