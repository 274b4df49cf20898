/* Fully connected layer on the CPU, PyTorch's Linear layout:
 *   x (n x in), w (out x in), bias (out), y (n x out)
 *   y = x w^T + bias;  dx += dy w;  dw += dy^T x;  db += sum over rows of dy */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

/* A few images read the whole weight matrix for two FLOPs a weight: the
 * layer runs at memory speed, which one core does not reach alone. From
 * this many weights (1 MiB) up, each thread takes a share of the outputs
 * (rows of w): a classifier such as mobilenet_v2's 1280 x 1000 is bound
 * by memory at batch 1, and sgemm stays on one thread below 10^7
 * multiply-adds (gemm.c). */
#define SPLIT_MIN_WEIGHTS ((int64_t)1 << 18)
/* ... and for at most this many images; more make a GEMM worth its name.
 * One image is a matrix-vector product, which sgemv runs faster than
 * sgemm (about twice as fast on the classifier above). */
#define SPLIT_MAX_IMAGES 4

void osp__cpu_fc_forward(int n, int in, int out, const float *x, const float *w,
                         const float *bias, float *y) {
    float beta = 0.0f;
    if (bias) {
        /* Start from the bias and let the GEMM add to it. */
        for (int i = 0; i < n; i++) memcpy(y + (int64_t)i * out, bias, (size_t)out * sizeof(float));
        beta = 1.0f;
    }
#ifdef _OPENMP
    const int team = osp__kernel_team();
    if (n <= SPLIT_MAX_IMAGES && (int64_t)in * out >= SPLIT_MIN_WEIGHTS && team > 1 &&
        !omp_in_parallel()) {
#pragma omp parallel num_threads(team)
        {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            /* shares of whole 16-output blocks */
            const int blocks = (out + 15) / 16;
            int o0 = (int)((int64_t)blocks * t / nt) * 16;
            int o1 = (int)((int64_t)blocks * (t + 1) / nt) * 16;
            if (o1 > out) o1 = out;
            if (o1 > o0 && n == 1) /* a matrix-vector product: sgemv */
                osp__cpu_sgemv_rows(o1 - o0, in, w + (int64_t)o0 * in, in, x, beta, y + o0);
            else if (o1 > o0)
                osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, n, o1 - o0, in, 1.0f, x, in,
                               w + (int64_t)o0 * in, in, beta, y + o0, out);
        }
        return;
    }
#endif
    if (n == 1) osp__cpu_sgemv_rows(out, in, w, in, x, beta, y);
    else osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, n, out, in, 1.0f, x, in, w, in, beta, y, out);
}

void osp__cpu_fc_backward(int n, int in, int out, const float *x, const float *w,
                          const float *dy, float *dx, float *dw, float *db) {
    if (dx) osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, n, in, out, 1.0f, dy, out, w, in, 1.0f, dx, in);
    if (dw) osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db) {
        /* Rows in order: the same sum on every run, and n x out is small. */
        for (int i = 0; i < n; i++) {
            const float *row = dy + (int64_t)i * out;
            for (int j = 0; j < out; j++) db[j] += row[j];
        }
    }
}
