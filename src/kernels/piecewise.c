/* Piecewise-linear element-wise functions ([hardsigmoid], [hardswish],
 * [clip]; see osp_piecewise). Each value is independent, so the result
 * does not depend on the thread count. The comparisons are written so that
 * a NaN input gives a NaN output, as in PyTorch; the gradients at the
 * kinks are PyTorch's. */
#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

void osp__cpu_piecewise_forward(osp_piecewise fn, const float *params, int64_t count,
                                const float *x, float *y) {
    const float alpha = params[0], beta = params[1], lo = params[2], hi = params[3];
    switch (fn) {
    case OSP_PW_HARDSIGMOID:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float v = alpha * x[i] + beta;
            y[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
        break;
    case OSP_PW_HARDSWISH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float v = x[i] + 3.0f;
            v = v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v;
            y[i] = x[i] * v / 6.0f;
        }
        break;
    case OSP_PW_CLIP:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
        break;
    }
}

void osp__cpu_piecewise_backward(osp_piecewise fn, const float *params, int64_t count,
                                 const float *x, const float *dy, float *dx) {
    const float alpha = params[0], beta = params[1], lo = params[2], hi = params[3];
    switch (fn) {
    case OSP_PW_HARDSIGMOID:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float v = alpha * x[i] + beta;
            dx[i] += v > 0.0f && v < 1.0f ? alpha * dy[i] : 0.0f;
        }
        break;
    case OSP_PW_HARDSWISH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float d = x[i] < -3.0f ? 0.0f : x[i] <= 3.0f ? x[i] / 3.0f + 0.5f : 1.0f;
            dx[i] += d * dy[i];
        }
        break;
    case OSP_PW_CLIP:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += x[i] >= lo && x[i] <= hi ? dy[i] : 0.0f;
        break;
    }
}
