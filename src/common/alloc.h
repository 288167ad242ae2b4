/* alloc.h: the only door to the heap.
 *
 * Small allocations abort on failure (redis's zmalloc, h2o's h2o_mem_alloc): a daemon that cannot get 64 bytes
 * cannot do anything useful, and checking every small allocation buries the real error paths. What is sized by
 * input never reaches here unchecked: buffers carry their own limits (see buf.h).
 * Raw malloc/free/strdup are banned elsewhere (scripts/lint.sh). */
#ifndef AGENTD_ALLOC_H
#define AGENTD_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n) __attribute__((malloc, alloc_size(1), returns_nonnull));
void *xcalloc(size_t count, size_t size) __attribute__((malloc, alloc_size(1, 2), returns_nonnull));
void *xrealloc(void *p, size_t n) __attribute__((alloc_size(2), returns_nonnull));
char *xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
char *xstrndup(const char *s, size_t n) __attribute__((malloc, returns_nonnull));
void *xmemdup(const void *p, size_t n) __attribute__((returns_nonnull));
void xfree(void *p);

/* Frees *pp and sets it to NULL, so a second free is harmless (curl's curlx_safefree). */
#define xfree_null(pp)                                                                                    \
    do {                                                                                                  \
        xfree(*(pp));                                                                                     \
        *(pp) = NULL;                                                                                     \
    } while (0)

/* Called when the heap refuses an allocation: logs and aborts. */
void alloc_oom(size_t n) __attribute__((noreturn, cold));

#endif
