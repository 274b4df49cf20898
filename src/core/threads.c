/* The thread policy: one count for OpenMP and OpenBLAS together. */
#include <time.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "osprey/core.h"

static int thread_count = 1;

/* OpenBLAS's parallel mode: 2 is its OpenMP build, the one that runs an
 * sgemm called from an OpenMP thread on that thread alone. Its pthread
 * build starts threads of its own inside osprey's, which then wait on each
 * other (measured: 2 threads no faster than 1). */
#define OPENBLAS_OPENMP 2

void osp_threads_set(int n) {
    static int warned;
    if (n > 1 && openblas_get_parallel() != OPENBLAS_OPENMP && !warned) {
        warned = 1;
        osp_log(OSP_LOG_WARN, "OpenBLAS is not its OpenMP build (libopenblas0-openmp): "
                "threads will wait on each other; rebuild osprey with it");
    }
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    if (n <= 0) n = 1;
#endif
    /* Kernels call sgemm outside their own parallel regions, so BLAS may use
     * the same cores; it never runs at the same time as an OpenMP loop. */
    openblas_set_num_threads(n);
    thread_count = n;
}

int osp_threads_get(void) { return thread_count; }

double osp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
