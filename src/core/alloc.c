/* Aligned allocation with overflow-checked sizes: the one out-of-memory
 * policy (return NULL with OSP_ENOMEM set; never abort). */
#include <stdlib.h>
#include <string.h>

#include "osprey/core.h"

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
    size_t rounded = (bytes + OSP_ALIGN - 1) / OSP_ALIGN * OSP_ALIGN;
    void *p = aligned_alloc(OSP_ALIGN, rounded);
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
