/* Softmax along one axis of an outer x len x inner block (the axis of
 * length len, with inner values between its steps), as torch.softmax(x,
 * dim): per (outer, inner) pair the maximum is subtracted before exp and
 * the sum runs in double. inner == 1 is the row-wise softmax. Threads own
 * whole outer slices. */
#include <math.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)

static void one_line(int len, int64_t inner, const float *x, float *y) {
    float m = x[0];
    for (int j = 1; j < len; j++) m = x[j * inner] > m ? x[j * inner] : m;
    double sum = 0;
    for (int j = 0; j < len; j++) {
        y[j * inner] = expf(x[j * inner] - m);
        sum += y[j * inner];
    }
    float inv = (float)(1.0 / sum); /* sum >= 1: the max contributes exp(0) */
    for (int j = 0; j < len; j++) y[j * inner] *= inv;
}

void osp__cpu_softmax_axis_forward(int64_t outer, int len, int64_t inner, const float *x,
                                   float *y) {
#pragma omp parallel for schedule(static) if (outer * len * inner >= PARALLEL_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            one_line(len, inner, x + o * len * inner + i, y + o * len * inner + i);
}

/* dx = y * (dy - sum(dy * y)) along the axis. */
void osp__cpu_softmax_axis_backward(int64_t outer, int len, int64_t inner, const float *y,
                                    const float *dy, float *dx) {
    if (!dx) return;
#pragma omp parallel for schedule(static) if (outer * len * inner >= PARALLEL_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * len * inner + i;
            double dot = 0;
            for (int j = 0; j < len; j++) dot += (double)dy[base + j * inner] * y[base + j * inner];
            const float d = (float)dot;
            for (int j = 0; j < len; j++)
                dx[base + j * inner] += y[base + j * inner] * (dy[base + j * inner] - d);
        }
}
