/* Log-softmax along one axis of an outer x len x inner block, as
 * torch.log_softmax(x, dim): per (outer, inner) pair, x - max - log(sum
 * exp(x - max)), the sum in double. It stays finite where the softmax
 * underflows to 0 (logits thousands apart). Threads own whole outer
 * slices. */
#include <math.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)

static void one_line(int len, int64_t inner, const float *x, float *y) {
    float m = x[0];
    for (int j = 1; j < len; j++) m = x[j * inner] > m ? x[j * inner] : m;
    double sum = 0;
    for (int j = 0; j < len; j++) sum += exp((double)x[j * inner] - m);
    const double shift = m + log(sum); /* sum >= 1: the max contributes exp(0) */
    for (int j = 0; j < len; j++) y[j * inner] = (float)((double)x[j * inner] - shift);
}

void osp__cpu_logsoftmax_forward(int64_t outer, int len, int64_t inner, const float *x,
                                 float *y) {
#pragma omp parallel for schedule(static) if (outer * len * inner >= PARALLEL_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            one_line(len, inner, x + o * len * inner + i, y + o * len * inner + i);
}

/* dx = dy - softmax * sum(dy) along the axis, softmax = exp(y). */
void osp__cpu_logsoftmax_backward(int64_t outer, int len, int64_t inner, const float *y,
                                  const float *dy, float *dx) {
    if (!dx) return;
#pragma omp parallel for schedule(static) if (outer * len * inner >= PARALLEL_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * len * inner + i;
            double total = 0;
            for (int j = 0; j < len; j++) total += dy[base + j * inner];
            const float t = (float)total;
            for (int j = 0; j < len; j++)
                dx[base + j * inner] += dy[base + j * inner] - expf(y[base + j * inner]) * t;
        }
}
