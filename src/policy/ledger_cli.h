/* ledger_cli.h: `agentd spend report` and the report formats it shares with GET /admin/spend. */
#ifndef AGENTD_LEDGER_CLI_H
#define AGENTD_LEDGER_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "store/ledger.h"

enum spend_format { SPEND_TABLE, SPEND_JSON, SPEND_CSV };

/* "7d", "24h", "30m", "2w" (before now), or "YYYY-MM-DD" (UTC midnight) -> unix ms. -1 when malformed. */
int64_t spend_parse_since(const char *s, int64_t now_ms);
int spend_parse_format(const char *s); /* -1 when unknown */

/* Rows as a table, a JSON array ({"<by>": value, "requests", "input_tokens", "output_tokens", "cost_usd",
 * "incomplete"}) or CSV with a header line. */
void spend_format_rows(struct buf *out, const struct ledger_sum *rows, size_t n, enum ledger_group by,
                       enum spend_format f);

int spend_cli_main(int argc, char **argv);

#endif
