/* The CPU tables' memory slots: device memory is host memory, so the
 * copies are memcpy and the allocator is osp_alloc's. Zero fills of many
 * megabytes (a training step's activation gradients) are split over the
 * threads: one core alone does not reach the memory's write speed. */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

/* Under 4 MB a fork costs more than a second thread saves. */
#define ZERO_PARALLEL_BYTES ((size_t)4 << 20)

void *osp__cpu_mem_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    return osp_alloc(bytes);
}

void osp__cpu_mem_free(void *ctx, void *p) {
    (void)ctx;
    osp_free(p);
}

void osp__cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes) memcpy(dst, src, bytes);
}

void osp__cpu_mem_zero(void *ctx, void *p, size_t bytes) {
    (void)ctx;
#pragma omp parallel if (bytes >= ZERO_PARALLEL_BYTES)
    {
        size_t t = 0, team = 1;
#ifdef _OPENMP
        t = (size_t)omp_get_thread_num();
        team = (size_t)omp_get_num_threads();
#endif
        const size_t lo = bytes / team * t + (t < bytes % team ? t : bytes % team);
        const size_t len = bytes / team + (t < bytes % team);
        if (len) memset((char *)p + lo, 0, len);
    }
}

/* An inference pass takes only the cores other processes leave idle; a
 * training pass keeps its count, at which its results repeat bit for bit.
 * The token is the team to restore, 0 for none. */
int osp__cpu_run_begin(void *ctx, int infer) {
    (void)ctx;
#ifdef _OPENMP
    if (infer && !omp_in_parallel()) {
        const int team = omp_get_max_threads(), threads = osp_threads_for_inference();
        if (threads != team) {
            omp_set_num_threads(threads);
            return team;
        }
    }
#else
    (void)infer;
#endif
    return 0;
}

void osp__cpu_run_end(void *ctx, int token) {
    (void)ctx;
#ifdef _OPENMP
    if (token > 0) omp_set_num_threads(token);
#else
    (void)token;
#endif
}
