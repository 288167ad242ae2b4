#include "sandbox/sbx_pages.h"

#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Reading may round outward; writing only covers whole pages inside the range, since a page shared with a read-only
 * neighbour (RELRO) would fail the whole call. */
static void populate(uintptr_t start, uintptr_t end, int advice)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (advice == MADV_POPULATE_READ) {
        start &= ~(page - 1);
        end = (end + page - 1) & ~(page - 1);
    } else {
        start = (start + page - 1) & ~(page - 1);
        end &= ~(page - 1);
    }
    if (end > start)
        (void)madvise((void *)start, end - start, advice);
}

void sbx_pages_write(uintptr_t start, uintptr_t end)
{
    populate(start, end, MADV_POPULATE_WRITE);
}

static int object(struct dl_phdr_info *info, size_t size, void *ud)
{
    bool text = *(const bool *)ud;
    (void)size;
    uintptr_t relro_end = 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO)
            relro_end = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr, end = start + ph->p_memsz;
        if (text)
            populate(start, end, MADV_POPULATE_READ);
        if ((ph->p_flags & PF_W) && end > relro_end)
            populate(start > relro_end ? start : relro_end, end, MADV_POPULATE_WRITE);
    }
    return 0;
}

void sbx_pages_objects(bool text)
{
    (void)dl_iterate_phdr(object, &text);
}
