/* yaml_tree.h: a YAML document as a small tree with source positions, built from libyaml's events.
 *
 * The configuration checker needs two things libyaml's event stream makes awkward: look-ahead (a key's value
 * decides how the next node is read) and positions for every node, so that every error names
 * file:line:column. Anchors and aliases are refused (a configuration has no need for them, and alias expansion
 * is the classic "billion laughs" amplification), as are tags other than the core ones. Depth and node count are
 * bounded. */
#ifndef AGENTD_YAML_TREE_H
#define AGENTD_YAML_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

enum ynode_kind { YNODE_SCALAR, YNODE_MAP, YNODE_SEQ };

struct ynode {
    enum ynode_kind kind;
    unsigned line, col;      /* 1-based */
    char *value;             /* scalar text (NUL-terminated); NULL for maps and sequences */
    size_t value_len;
    bool quoted;             /* scalar was quoted: never "null"/"true" by plain-scalar rules */
    struct ynode **items;    /* MAP: key, value, key, value...; SEQ: elements */
    size_t nitems;
    size_t cap;
};

#define YAML_TREE_MAX_DEPTH 32
#define YAML_TREE_MAX_NODES 100000

/* Parses text into a tree. On error returns NULL and writes "LINE:COL: message" into err.
 * An empty document (or only comments) yields an empty map. Free with ynode_free. */
struct ynode *yaml_tree_parse(const char *text, size_t len, struct buf *err);
void ynode_free(struct ynode *n);

/* MAP helpers: number of pairs, the i-th key / value. */
static inline size_t ynode_map_len(const struct ynode *n)
{
    return n->nitems / 2;
}
static inline const struct ynode *ynode_map_key(const struct ynode *n, size_t i)
{
    return n->items[2 * i];
}
static inline const struct ynode *ynode_map_val(const struct ynode *n, size_t i)
{
    return n->items[2 * i + 1];
}
const struct ynode *ynode_map_get(const struct ynode *n, const char *key);
/* True for a plain scalar that YAML reads as null ("", "~", "null"). */
bool ynode_is_null(const struct ynode *n);

#endif
