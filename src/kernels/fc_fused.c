/* Fully connected layer with its epilogue, for inference: y = fn(x w^T +
 * bias), the layout of fc.c, where fn is a GELU that the plan fused into
 * the layer (or none). A transformer's linear layers map every token: x
 * holds batch x tokens rows, one GEMM of a useful shape.
 *
 * With several threads, each takes a share of the outputs (columns of y,
 * rows of w) and runs one single-threaded sgemm over all rows, then adds
 * the bias and applies fn to its share while it is still in cache: one
 * pass over y instead of the bias copy before the GEMM and a GELU pass
 * after it, and no synchronisation inside OpenBLAS. Compiled once per
 * instruction set (cpu_kernels.h) so that the epilogue vectorises. */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"
#include "fc_epilogue.h"

/* Rows below which the shares are too thin to pay for a parallel region:
 * fc.c's paths (sgemv, its own split) serve a few images better. */
#define SPLIT_MIN_ROWS 16

void KFN(fc_forward_fused)(int n, int in, int out, const float *x, const float *w,
                           const float *bias, int fn, float *y) {
    if (fn != OSP_FN_GELU && fn != OSP_FN_GELU_TANH) fn = -1;
    int team = 1;
#ifdef _OPENMP
    team = omp_in_parallel() ? 1 : osp__kernel_team();
#endif
    if (n < SPLIT_MIN_ROWS) {
        osp__cpu_fc_forward(n, in, out, x, w, bias, y);
        if (fn >= 0) KFN(special_forward)((osp_special)fn, (int64_t)n * out, y, y);
        return;
    }
    if (team <= 1) {
        osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
        osp__fc_epilogue(n, out, 0, out, bias, fn, y);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        /* shares of whole 16-column blocks: a cache line of y each row */
        const int blocks = (out + 15) / 16;
        const int c0 = (int)((int64_t)blocks * t / nt) * 16;
        int c1 = (int)((int64_t)blocks * (t + 1) / nt) * 16;
        if (c1 > out) c1 = out;
        if (c1 > c0) {
            /* inside the region, OpenBLAS runs on this thread (gemm.c) */
            osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, n, c1 - c0, in, 1.0f, x, in,
                           w + (int64_t)c0 * in, in, 0.0f, y + c0, out);
            osp__fc_epilogue(n, out, c0, c1, bias, fn, y);
        }
    }
#endif
}
