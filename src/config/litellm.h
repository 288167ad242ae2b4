/* litellm.h: LiteLLM proxy configuration -> agentd YAML (`agentd config import-litellm`). */
#ifndef AGENTD_LITELLM_H
#define AGENTD_LITELLM_H

#include <stddef.h>

#include "common/buf.h"

/* Converts a LiteLLM config (YAML text) into agentd YAML appended to out; one "not carried over: PATH: why" line
 * per setting that has no equivalent goes to notes. Returns 0, or -1 with the reason in err (not YAML, no
 * model_list). */
int litellm_import(const char *text, size_t len, struct buf *out, struct buf *notes, struct buf *err);
/* argv[0] = "import-litellm", argv[1] = FILE. Exit status: 0 converted, 2 unreadable or not a LiteLLM file. */
int litellm_import_main(int argc, char **argv);

#endif
