/* Aligned allocation with overflow-checked sizes: the one out-of-memory
 * policy (return NULL with OSP_ENOMEM set; never abort). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "osprey/core.h"

/* Blocks of 2 MiB and more (a network's weights, the inference arena)
 * start on a 2 MiB boundary and ask for transparent huge pages, where the
 * system leaves them to madvise (Debian's default): a network streams
 * every weight from memory at each step, and with 4 KiB pages resnet50's
 * 100 MB cost a TLB miss every 4 KiB; huge pages made it faster and its
 * runs vary less (docs/kernels.md). */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

int osp_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return OSP_ERANGE;
    *out = a * b;
    return OSP_OK;
}

void *osp_alloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    /* aligned_alloc wants a multiple of the alignment */
    if (bytes > SIZE_MAX - OSP_ALIGN) {
        osp_error(OSP_ENOMEM, "allocation of %zu bytes is too large", bytes);
        return NULL;
    }
    void *p = NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_PAGE_BYTES) {
        if (posix_memalign(&p, HUGE_PAGE_BYTES, bytes) != 0) p = NULL;
        /* advice only: where transparent huge pages are off, nothing changes */
        if (p) (void)madvise(p, bytes / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES, MADV_HUGEPAGE);
    } else
#endif
    {
        size_t rounded = (bytes + OSP_ALIGN - 1) / OSP_ALIGN * OSP_ALIGN;
        p = aligned_alloc(OSP_ALIGN, rounded);
    }
    if (!p) osp_error(OSP_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *osp_calloc(size_t n, size_t size) {
    size_t bytes;
    if (osp_mul_size(n, size, &bytes) != OSP_OK) {
        osp_error(OSP_ENOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = osp_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void osp_free(void *p) { free(p); }
