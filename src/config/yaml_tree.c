#include "config/yaml_tree.h"

#include <string.h>
#include <yaml.h>

#include "common/alloc.h"
#include "common/macros.h"

void ynode_free(struct ynode *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nitems; i++)
        ynode_free(n->items[i]);
    xfree(n->items);
    xfree(n->value);
    xfree(n);
}

static struct ynode *node_new(enum ynode_kind kind, const yaml_mark_t *m)
{
    struct ynode *n = xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->line = (unsigned)m->line + 1;
    n->col = (unsigned)m->column + 1;
    return n;
}

static void node_push(struct ynode *parent, struct ynode *child)
{
    if (parent->nitems == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->items = xrealloc(parent->items, parent->cap * sizeof(*parent->items));
    }
    parent->items[parent->nitems++] = child;
}

static bool tag_ok(const yaml_char_t *tag)
{
    if (tag == NULL)
        return true;
    static const char *const ok_tags[] = {YAML_STR_TAG, YAML_INT_TAG, YAML_FLOAT_TAG, YAML_BOOL_TAG,
                                          YAML_NULL_TAG, YAML_MAP_TAG, YAML_SEQ_TAG};
    for (size_t i = 0; i < ARRAY_LEN(ok_tags); i++)
        if (strcmp((const char *)tag, ok_tags[i]) == 0)
            return true;
    return false;
}

struct ynode *yaml_tree_parse(const char *text, size_t len, struct buf *err)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    struct ynode *stack[YAML_TREE_MAX_DEPTH + 1];
    int depth = 0;
    size_t nodes = 0;
    struct ynode *root = NULL;
    bool done = false, failed = false;

    if (!yaml_parser_initialize(&parser)) {
        buf_printf(err, "1:1: cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    while (!done && !failed) {
        if (!yaml_parser_parse(&parser, &ev)) {
            buf_printf(err, "%zu:%zu: %s%s%s", parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                       parser.problem ? parser.problem : "invalid YAML", parser.context ? " " : "",
                       parser.context ? parser.context : "");
            failed = true;
            break;
        }
        struct ynode *n = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (root != NULL) {
                buf_printf(err, "%zu:%zu: only one YAML document is allowed", ev.start_mark.line + 1,
                           ev.start_mark.column + 1);
                failed = true;
            }
            break;
        case YAML_ALIAS_EVENT:
            buf_printf(err, "%zu:%zu: YAML aliases are not allowed in agentd configuration", ev.start_mark.line + 1,
                       ev.start_mark.column + 1);
            failed = true;
            break;
        case YAML_SCALAR_EVENT:
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT: {
            const yaml_char_t *anchor = ev.type == YAML_SCALAR_EVENT           ? ev.data.scalar.anchor
                                        : ev.type == YAML_MAPPING_START_EVENT ? ev.data.mapping_start.anchor
                                                                               : ev.data.sequence_start.anchor;
            const yaml_char_t *tag = ev.type == YAML_SCALAR_EVENT           ? ev.data.scalar.tag
                                     : ev.type == YAML_MAPPING_START_EVENT ? ev.data.mapping_start.tag
                                                                            : ev.data.sequence_start.tag;
            if (anchor != NULL) {
                buf_printf(err, "%zu:%zu: YAML anchors are not allowed in agentd configuration",
                           ev.start_mark.line + 1, ev.start_mark.column + 1);
                failed = true;
                break;
            }
            if (!tag_ok(tag)) {
                buf_printf(err, "%zu:%zu: unsupported YAML tag %s", ev.start_mark.line + 1, ev.start_mark.column + 1,
                           (const char *)tag);
                failed = true;
                break;
            }
            if (++nodes > YAML_TREE_MAX_NODES) {
                buf_printf(err, "%zu:%zu: document has more than %d nodes", ev.start_mark.line + 1,
                           ev.start_mark.column + 1, YAML_TREE_MAX_NODES);
                failed = true;
                break;
            }
            if (ev.type == YAML_SCALAR_EVENT) {
                n = node_new(YNODE_SCALAR, &ev.start_mark);
                n->value = xstrndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
                n->value_len = ev.data.scalar.length;
                n->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            } else {
                n = node_new(ev.type == YAML_MAPPING_START_EVENT ? YNODE_MAP : YNODE_SEQ, &ev.start_mark);
            }
            if (depth > 0) {
                node_push(stack[depth - 1], n);
            } else if (root == NULL) {
                root = n;
            } else {
                ynode_free(n); /* cannot happen: one root per document */
                n = NULL;
            }
            if (n && n->kind != YNODE_SCALAR) {
                if (depth >= YAML_TREE_MAX_DEPTH) {
                    buf_printf(err, "%u:%u: nesting deeper than %d levels", n->line, n->col, YAML_TREE_MAX_DEPTH);
                    failed = true;
                    break;
                }
                stack[depth++] = n;
            }
            break;
        }
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (failed) {
        ynode_free(root);
        return NULL;
    }
    if (root == NULL || (root->kind == YNODE_SCALAR && ynode_is_null(root))) {
        ynode_free(root);
        yaml_mark_t m = {0, 0, 0};
        root = node_new(YNODE_MAP, &m);
    }
    return root;
}

const struct ynode *ynode_map_get(const struct ynode *n, const char *key)
{
    if (n == NULL || n->kind != YNODE_MAP)
        return NULL;
    for (size_t i = 0; i < ynode_map_len(n); i++) {
        const struct ynode *k = ynode_map_key(n, i);
        if (k->kind == YNODE_SCALAR && strcmp(k->value, key) == 0)
            return ynode_map_val(n, i);
    }
    return NULL;
}

bool ynode_is_null(const struct ynode *n)
{
    if (n->kind != YNODE_SCALAR || n->quoted)
        return false;
    return n->value_len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
           strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0;
}
