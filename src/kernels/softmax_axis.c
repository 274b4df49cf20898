/* Softmax and log-softmax along one axis of an outer x len x inner block
 * (the axis of length len, with inner values between its steps), as
 * torch.softmax(x, dim) and torch.log_softmax(x, dim): per (outer, inner)
 * pair the maximum is subtracted before exp and the sum runs in double.
 * inner == 1 is the row-wise softmax. The log form stays finite where the
 * softmax underflows to 0 (logits thousands apart). Threads own whole
 * outer slices. */
#include <math.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)

/* One (outer, inner) line: x[j * inner] and y[j * inner] for j < len. */
typedef void (*line_fn)(int len, int64_t inner, const float *x, float *y);

static float line_max(int len, int64_t inner, const float *x) {
    float m = x[0];
    for (int j = 1; j < len; j++) m = x[j * inner] > m ? x[j * inner] : m;
    return m;
}

static void softmax_line(int len, int64_t inner, const float *x, float *y) {
    const float m = line_max(len, inner, x);
    double sum = 0;
    for (int j = 0; j < len; j++) {
        y[j * inner] = expf(x[j * inner] - m);
        sum += y[j * inner];
    }
    float inv = (float)(1.0 / sum); /* sum >= 1: the max contributes exp(0) */
    for (int j = 0; j < len; j++) y[j * inner] *= inv;
}

static void logsoftmax_line(int len, int64_t inner, const float *x, float *y) {
    const float m = line_max(len, inner, x);
    double sum = 0;
    for (int j = 0; j < len; j++) sum += exp((double)x[j * inner] - m);
    const double shift = m + log(sum); /* sum >= 1: the max contributes exp(0) */
    for (int j = 0; j < len; j++) y[j * inner] = (float)((double)x[j * inner] - shift);
}

/* line over every (outer, inner) pair of the block. */
static void each_line(int64_t outer, int len, int64_t inner, const float *x, float *y,
                      line_fn line) {
#pragma omp parallel for schedule(static) if (outer * len * inner >= PARALLEL_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            line(len, inner, x + o * len * inner + i, y + o * len * inner + i);
}

void osp__cpu_softmax_axis_forward(int64_t outer, int len, int64_t inner, const float *x,
                                   float *y) {
    each_line(outer, len, inner, x, y, softmax_line);
}

void osp__cpu_logsoftmax_forward(int64_t outer, int len, int64_t inner, const float *x,
                                 float *y) {
    each_line(outer, len, inner, x, y, logsoftmax_line);
}

/* Both backwards along the axis, from the output y: softmax's dx = y (dy -
 * sum(dy y)); log-softmax's dx = dy - exp(y) sum(dy). */
static void backward(int64_t outer, int len, int64_t inner, const float *y, const float *dy,
                     float *dx, int log_form) {
    if (!dx) return;
#pragma omp parallel for schedule(static) if (outer * len * inner >= PARALLEL_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * len * inner + i;
            double total = 0;
            for (int j = 0; j < len; j++)
                total += log_form ? (double)dy[base + j * inner]
                                  : (double)dy[base + j * inner] * y[base + j * inner];
            const float t = (float)total;
            for (int j = 0; j < len; j++) {
                const int64_t k = base + j * inner;
                dx[k] += log_form ? dy[k] - expf(y[k]) * t : y[k] * (dy[k] - t);
            }
        }
}

void osp__cpu_softmax_axis_backward(int64_t outer, int len, int64_t inner, const float *y,
                                    const float *dy, float *dx) {
    backward(outer, len, inner, y, dy, dx, 0);
}

void osp__cpu_logsoftmax_backward(int64_t outer, int len, int64_t inner, const float *y,
                                  const float *dy, float *dx) {
    backward(outer, len, inner, y, dy, dx, 1);
}
