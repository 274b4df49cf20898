/* Element-wise activations. Each element is independent, so threads own
 * disjoint ranges and the result does not depend on the thread count.
 * Loops read every operand unconditionally so that the compiler makes
 * selects, not branches (a branch on the sign of x mispredicts half the
 * time: relu's backward ran 15x slower than its forward). */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

/* exp of a non-positive argument only: never overflows. */
static inline float sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* The comparisons are written so that a NaN passes through, as in PyTorch:
 * a diverging run shows in its loss instead of being masked. */
void KFN(activation_forward)(osp_activation act, float alpha, int64_t count, const float *x,
                                 float *y) {
    switch (act) {
    case OSP_ACT_NONE:
        if (y != x) memmove(y, x, (size_t)count * sizeof *y);
        break;
    case OSP_ACT_RELU:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
        break;
    case OSP_ACT_LEAKY_RELU:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = x[i] < 0.0f ? alpha * x[i] : x[i];
        break;
    case OSP_ACT_RELU6:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i] > 6.0f ? 6.0f : x[i];
        break;
    case OSP_ACT_SIGMOID:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = sigmoid(x[i]);
        break;
    case OSP_ACT_TANH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = tanhf(x[i]);
        break;
    case OSP_ACT_SWISH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = x[i] * sigmoid(x[i]);
        break;
    default:
        assert(!"unknown activation");
    }
}

/* Derivatives follow PyTorch at the kinks: relu'(0) = 0, leaky'(0) = alpha,
 * relu6' is 0 at both 0 and 6. Sigmoid and tanh read y (no exp needed); the
 * others read x. */
void KFN(activation_backward)(osp_activation act, float alpha, int64_t count, const float *x,
                                  const float *y, const float *dy, float *dx) {
    if (!dx) return;
    switch (act) {
    case OSP_ACT_NONE:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += dy[i];
        break;
    case OSP_ACT_RELU:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            const float g = dy[i]; /* read unconditionally: a select, not a branch */
            dx[i] += x[i] > 0.0f ? g : 0.0f;
        }
        break;
    case OSP_ACT_LEAKY_RELU:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            const float g = dy[i];
            dx[i] += x[i] > 0.0f ? g : alpha * g;
        }
        break;
    case OSP_ACT_RELU6:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            const float g = dy[i], v = x[i];
            dx[i] += ((v > 0.0f) & (v < 6.0f)) ? g : 0.0f;
        }
        break;
    case OSP_ACT_SIGMOID:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
        break;
    case OSP_ACT_TANH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
        break;
    case OSP_ACT_SWISH:
        /* d/dx x*s(x) = s + x*s*(1-s) */
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float s = sigmoid(x[i]);
            dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
        }
        break;
    default:
        assert(!"unknown activation");
    }
}
