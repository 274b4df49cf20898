/* sgemm and sgemv through OpenBLAS: the one place osprey calls BLAS for
 * the kernels. Row-major throughout. Called inside an OpenMP region,
 * OpenBLAS's OpenMP build runs on the calling thread; outside, it splits
 * large GEMMs over the threads itself, and small ones stay on the calling
 * thread (below). */
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

/* Multiply-adds below which a GEMM is not split over threads. */
#define SMALL_GEMM 1e7

void osp__cpu_sgemm(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb, float beta, float *c,
                    int ldc) {
    if (m <= 0 || n <= 0) return;
#ifdef _OPENMP
    /* OpenBLAS's OpenMP build splits a GEMM over omp_get_max_threads()
     * threads when called outside a parallel region; below about 10^7
     * multiply-adds the split costs more than it saves: a small GEMM ran
     * slower on two threads than on one. Such a GEMM runs on the calling
     * thread: the count is per thread,
     * so set and restored around the call. */
    if ((double)m * n * k < SMALL_GEMM && !omp_in_parallel() && omp_get_max_threads() > 1) {
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        cblas_sgemm(CblasRowMajor, ta == OSP_TRANS ? CblasTrans : CblasNoTrans,
                    tb == OSP_TRANS ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
                    beta, c, ldc);
        omp_set_num_threads(threads);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta == OSP_TRANS ? CblasTrans : CblasNoTrans,
                tb == OSP_TRANS ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
                beta, c, ldc);
}

void osp__cpu_sgemv_rows(int rows, int cols, const float *a, int lda, const float *x, float beta,
                         float *y) {
    if (rows <= 0) return;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, a, lda, x, 1, beta, y, 1);
}
