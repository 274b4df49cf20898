/* The plain element-wise functions of the special_* slots: exp, log, sqrt,
 * abs, neg, reciprocal, softplus and softsign, value by value, as PyTorch
 * computes them (its gradients at the kinks and edges included). Each value
 * is independent, so the result does not depend on the thread count. */
#include <math.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

/* log(1 + exp(x)) without overflow for large x nor lost digits for very
 * negative x. */
static inline float softplus(float x) {
    return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
}

static inline float sigmoid(float x) {
    return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static inline float unary(osp_special fn, float x) {
    switch (fn) {
    case OSP_FN_EXP: return expf(x);
    case OSP_FN_LOG: return logf(x);
    case OSP_FN_SQRT: return sqrtf(x);
    case OSP_FN_ABS: return fabsf(x);
    case OSP_FN_NEG: return -x;
    case OSP_FN_RECIPROCAL: return 1.0f / x;
    case OSP_FN_SOFTPLUS: return softplus(x);
    case OSP_FN_SOFTSIGN: return x / (1.0f + fabsf(x));
    default: return NAN; /* GELU and erf live in gelu.c */
    }
}

/* d f / d x at x. abs: sign(x), 0 at 0 (torch.sgn). */
static inline float unary_grad(osp_special fn, float x) {
    switch (fn) {
    case OSP_FN_EXP: return expf(x);
    case OSP_FN_LOG: return 1.0f / x;
    case OSP_FN_SQRT: return 0.5f / sqrtf(x);
    case OSP_FN_ABS: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f;
    case OSP_FN_NEG: return -1.0f;
    case OSP_FN_RECIPROCAL: return -1.0f / (x * x);
    case OSP_FN_SOFTPLUS: return sigmoid(x);
    case OSP_FN_SOFTSIGN: {
        float d = 1.0f + fabsf(x);
        return 1.0f / (d * d);
    }
    default: return NAN;
    }
}

void osp__cpu_unary_forward(osp_special fn, int64_t count, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) y[i] = unary(fn, x[i]);
}

void osp__cpu_unary_backward(osp_special fn, int64_t count, const float *x, const float *dy,
                             float *dx) {
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * unary_grad(fn, x[i]);
}
