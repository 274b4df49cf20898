/* GELU (exact, through erf, and PyTorch's tanh approximation) and erf
 * itself, value by value. Each value is independent, so the result does not
 * depend on the thread count. Compiled once per instruction set (see
 * cpu_kernels.h): vmath.h's branch-free exp and erf let every loop here
 * vectorise. */
#include "cpu_kernels.h"
#include "vmath.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f
#define TWO_OVER_SQRT_PI 1.12837916709551257390f
#define SQRT_2_OVER_PI 0.79788456080286535588f
#define TANH_C 0.044715f

/* d/dx x Phi(x) = Phi(x) + x phi(x). */
static inline float gelu_grad(float x) {
    return 0.5f * (1.0f + osp__verf(x * INV_SQRT2)) + x * INV_SQRT_2PI * osp__vexp(-0.5f * x * x);
}

/* With u = k (x + c x^3) and t = tanh u = 2 / (1 + e^(-2u)) - 1:
 * 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2). */
static inline float gelu_tanh_grad(float x) {
    const float u = SQRT_2_OVER_PI * (x + TANH_C * x * x * x);
    const float t = 2.0f / (1.0f + osp__vexp(-2.0f * u)) - 1.0f;
    return 0.5f * (1.0f + t) +
           0.5f * x * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * TANH_C * x * x);
}

void KFN(special_forward)(osp_special fn, int64_t count, const float *x, float *y) {
    switch (fn) {
    case OSP_FN_GELU:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = osp__vgelu(x[i]);
        break;
    case OSP_FN_GELU_TANH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = osp__vgelu_tanh(x[i]);
        break;
    case OSP_FN_ERF:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = osp__verf(x[i]);
        break;
    default:
        osp__cpu_unary_forward(fn, count, x, y);
        break;
    }
}

void KFN(special_backward)(osp_special fn, int64_t count, const float *x, const float *dy,
                           float *dx) {
    if (!dx) return;
    switch (fn) {
    case OSP_FN_GELU:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * gelu_grad(x[i]);
        break;
    case OSP_FN_GELU_TANH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * gelu_tanh_grad(x[i]);
        break;
    case OSP_FN_ERF:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++)
            dx[i] += dy[i] * TWO_OVER_SQRT_PI * osp__vexp(-x[i] * x[i]);
        break;
    default:
        osp__cpu_unary_backward(fn, count, x, dy, dx);
        break;
    }
}
