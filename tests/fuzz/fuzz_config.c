/* libFuzzer target: the configuration engine over agentd's real root table: YAML text through the schema walker
 * (every module's section, relative offsets, lists, dicts, validators, finish checks), then print (masking),
 * restart-keep against the defaults and free. The first byte chooses the path: even = a whole file, odd = one
 * `--set PATH=VALUE` / environment value (the text up to the first '=' is the path). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "config/config.h"
#include "config/schema.h"
#include "config/yaml_tree.h"

static struct config *fresh(void)
{
    struct config *c = xcalloc(1, sizeof(*c));
    c->schema = &config_schema;
    cfg_apply_defaults(&config_schema, c);
    return c;
}

static void drop(struct config *c)
{
    cfg_free_obj(&config_schema, c);
    xfree(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool one_setting = data[0] & 1;
    data++;
    size--;
    struct buf errors = BUF_INIT(1 << 20);
    struct cfg_ctx ctx = {"fuzz.yaml", &errors, 0};
    struct config *c = fresh();
    if (one_setting) {
        char *text = xmalloc(size + 1);
        memcpy(text, data, size);
        text[size] = '\0';
        char *eq = strchr(text, '=');
        if (eq) {
            *eq = '\0';
            cfg_set_path(&ctx, &config_schema, c, text, eq + 1);
        }
        xfree(text);
    } else {
        struct buf perr = BUF_INIT(4096);
        struct ynode *root = yaml_tree_parse((const char *)data, size, &perr);
        if (root) {
            cfg_read_map(&ctx, &config_schema, c, root, "");
            ynode_free(root);
        }
        buf_free(&perr);
    }
    cfg_finish(&ctx, &config_schema, c, "");
    struct buf out = BUF_INIT(BUF_UNBOUNDED);
    cfg_print(&out, &config_schema, c, 0);
    buf_free(&out);
    struct config *running = fresh();
    struct buf which = BUF_INIT(4096);
    cfg_keep_restart_fields(&config_schema, c, running, &which, "");
    buf_free(&which);
    drop(running);
    drop(c);
    buf_free(&errors);
    return 0;
}
