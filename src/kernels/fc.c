/* Fully connected layer on the CPU, PyTorch's Linear layout:
 *   x (n x in), w (out x in), bias (out), y (n x out)
 *   y = x w^T + bias;  dx += dy w;  dw += dy^T x;  db += sum over rows of dy */
#include <string.h>

#include "cpu_kernels.h"

void osp__cpu_fc_forward(int n, int in, int out, const float *x, const float *w,
                         const float *bias, float *y) {
    float beta = 0.0f;
    if (bias) {
        /* Start from the bias and let the GEMM add to it. */
        for (int i = 0; i < n; i++) memcpy(y + (int64_t)i * out, bias, (size_t)out * sizeof(float));
        beta = 1.0f;
    }
    osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, n, out, in, 1.0f, x, in, w, in, beta, y, out);
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
