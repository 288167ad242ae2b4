/* sbx_pages.h: making a process's own pages present and writable ahead of time (MADV_POPULATE_READ/WRITE), so that
 * the work that follows takes no page fault. A first touch of a page costs 15-30 us on a VM whose page tables are
 * shadowed by the hypervisor. Used by the sandbox runner while warm (sbx_runner.c) and by the engine while idle
 * (sbx_engine.c). Linux before 5.14 refuses the advice: then nothing is done and the faults stay. */
#ifndef AGENTD_SBX_PAGES_H
#define AGENTD_SBX_PAGES_H

#include <stdbool.h>
#include <stdint.h>

/* The segments of every loaded object (the program and its libraries): their writable data past RELRO made
 * writable, and with text, their code and read-only data mapped too. */
void sbx_pages_objects(bool text);
/* [start, end) made present and writable, the pages wholly inside it. */
void sbx_pages_write(uintptr_t start, uintptr_t end);

#endif
