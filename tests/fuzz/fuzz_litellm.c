/* libFuzzer target: `agentd config import-litellm` over any text. Whatever the input, the converter either refuses
 * it or writes YAML that parses again (every string it copies is quoted and escaped), with one line per note. */
#include <stdint.h>
#include <stdlib.h>

#include "common/buf.h"
#include "config/litellm.h"
#include "config/yaml_tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf out = BUF_INIT(BUF_UNBOUNDED), notes = BUF_INIT(1 << 20), err = BUF_INIT(4096);
    if (litellm_import((const char *)data, size, &out, &notes, &err) == 0) {
        struct buf perr = BUF_INIT(4096);
        struct ynode *again = yaml_tree_parse(out.data ? out.data : "", out.len, &perr);
        if (again == NULL)
            abort(); /* the converter wrote YAML that does not parse */
        ynode_free(again);
        buf_free(&perr);
    }
    buf_free(&out);
    buf_free(&notes);
    buf_free(&err);
    return 0;
}
