/* Many GEMMs of one shape (the heads of an attention, the samples of a
 * batch), each through osp__cpu_sgemm. Products with their own output run
 * in parallel, one per thread (OpenBLAS then runs on the calling thread);
 * products that share an output (stride_c == 0, the gradient of an operand
 * broadcast over the others) run in order, so that the sum does not depend
 * on the thread count. */
#include "cpu_kernels.h"

/* Multiply-adds below which products are not spread over threads. */
#define PARALLEL_MIN 1e5

void osp__cpu_sgemm_batched(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k,
                            float alpha, const float *a, int lda, int64_t stride_a,
                            const float *b, int ldb, int64_t stride_b, float beta, float *c,
                            int ldc, int64_t stride_c, int count) {
    if (count <= 0 || m <= 0 || n <= 0) return;
    if (count == 1 || stride_c == 0) {
        for (int i = 0; i < count; i++)
            osp__cpu_sgemm(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
                           i ? 1.0f : beta, c + i * stride_c, ldc);
        return;
    }
#pragma omp parallel for schedule(static) if ((double)m * n * k * count >= PARALLEL_MIN)
    for (int i = 0; i < count; i++)
        osp__cpu_sgemm(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
                       c + i * stride_c, ldc);
}
