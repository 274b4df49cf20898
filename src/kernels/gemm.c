/* sgemm through OpenBLAS: the one place osprey calls BLAS for the kernels.
 * Row-major throughout; OpenBLAS threads itself, so callers stay outside
 * their own OpenMP regions when they call it. */
#include <cblas.h>

#include "cpu_kernels.h"

void osp__cpu_sgemm(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb, float beta, float *c,
                    int ldc) {
    if (m <= 0 || n <= 0) return;
    cblas_sgemm(CblasRowMajor, ta == OSP_TRANS ? CblasTrans : CblasNoTrans,
                tb == OSP_TRANS ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
                beta, c, ldc);
}
