/* libFuzzer: a file name for /work (sbx_spec_file_path_ok), as an agent's tool call gives it. Whatever is accepted
 * must be a relative path of plain names: no leading or trailing '/', no empty part, no "." or ".." part, no NUL,
 * within SBX_FILES_PATH_MAX bytes and SBX_FILES_DEPTH directories; checked here by a second, naive reading. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sbx_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    if (!sbx_spec_file_path_ok(s, size))
        return 0;
    if (size == 0 || size > SBX_FILES_PATH_MAX || s[0] == '/' || s[size - 1] == '/' || memchr(s, '\0', size))
        abort();
    size_t start = 0, dirs = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && s[i] != '/')
            continue;
        size_t n = i - start;
        if (n == 0 || (n == 1 && s[start] == '.') || (n == 2 && s[start] == '.' && s[start + 1] == '.') ||
            s[start] == '-' || !sbx_spec_file_name_ok(s + start, n))
            abort();
        if (i < size)
            dirs++;
        start = i + 1;
    }
    if (dirs > SBX_FILES_DEPTH)
        abort();
    return 0;
}
