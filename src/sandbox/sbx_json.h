/* sbx_json.h: runs described in JSON (what an agent's tool call carries) and results printed as JSON.
 *
 * A spec object, all fields optional except what sbx_spec_validate needs:
 *   {"id": "r1", "lang": "python", "code": "print(1)", "argv": ["-c", "pass"],
 *    "env": {"K": "v"} or ["K=v"], "stdin": "text" | "stdin_base64": "...",
 *    "files": [{"name": "data.csv", "content": "..." | "content_base64": "...", "mode": 420}],
 *    "timeout_s": 5, "net": "none",
 *    "limits": {"wall_ms", "cpu_ms", "memory_mb" | "memory_bytes", "address_space_bytes", "pids", "nofile",
 *               "fsize_bytes", "cpu_percent", "stdout_max", "stderr_max", "work_bytes", "tmp_bytes"}}
 * Unknown keys are refused (a typo must not silently drop a limit). The text comes from the agent: every
 * size is checked, numbers must be non-negative integers in range, and the result is validated. */
#ifndef AGENTD_SBX_JSON_H
#define AGENTD_SBX_JSON_H

#include <stddef.h>

#include "common/buf.h"
#include "sandbox/sbx_spec.h"

struct cJSON;

struct sbx_json_spec {
    struct sbx_spec spec;
    char id[128];
    struct cJSON *root;
    const char **argv;
    const char **env;
    struct sbx_file *files;
    char **owned; /* strings decoded or built here (base64, "K=v") */
    size_t nowned;
};

/* Parses and validates; 0, or -1 with the reason in err. Free with sbx_json_spec_free (also after failure). */
int sbx_json_parse_spec(const char *text, size_t len, struct sbx_json_spec *out, struct buf *err);
void sbx_json_spec_free(struct sbx_json_spec *js);
/* The same from a parsed object, which out takes over (NULL or not an object: an error), with limits starting
 * from defaults (NULL: the sandbox's own). */
int sbx_json_spec_from_object(struct cJSON *root, const struct sbx_limits *defaults, struct sbx_json_spec *out,
                              struct buf *err);

/* Appends the result as one JSON object (no newline). id may be NULL. Output that is not valid UTF-8 is
 * given lossily in "stdout" (U+FFFD) and exactly in "stdout_base64". */
void sbx_json_result(const struct sbx_result *res, const char *id, struct buf *out);
/* Appends one output file as {"name","size","mode","content"} (text: valid UTF-8 without NUL) or with
 * "content_base64" instead (anything else). */
void sbx_json_outfile(const struct sbx_outfile *f, struct buf *out);
/* With res->files_collected: appends ,"files":[...],"files_truncated":bool; else nothing. */
void sbx_json_outfiles(const struct sbx_result *res, struct buf *out);
/* Appends s as a JSON string, replacing invalid UTF-8 with U+FFFD; returns false when it had to. */
bool sbx_json_append_utf8(struct buf *out, const char *s, size_t n);

#endif
