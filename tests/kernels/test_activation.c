/* Activation kernels against naive double-precision references. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>

#include "kernels/cpu_kernels.h"

static const osp_activation all_acts[] = {OSP_ACT_NONE,    OSP_ACT_RELU, OSP_ACT_LEAKY_RELU,
                                          OSP_ACT_RELU6,   OSP_ACT_SIGMOID, OSP_ACT_TANH,
                                          OSP_ACT_SWISH};
#define N_ACTS (int)(sizeof all_acts / sizeof all_acts[0])
/* Odd sizes, one past the kernel's parallel threshold. */
static const int64_t sizes[] = {1, 7, 1001, 70001};
#define N_SIZES (int)(sizeof sizes / sizeof sizes[0])
static const float alpha = 0.13f;

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double ref_forward(osp_activation act, double x) {
    switch (act) {
    case OSP_ACT_NONE: return x;
    case OSP_ACT_RELU: return x > 0 ? x : 0;
    case OSP_ACT_LEAKY_RELU: return x > 0 ? x : alpha * x;
    case OSP_ACT_RELU6: return x < 0 ? 0 : x > 6 ? 6 : x;
    case OSP_ACT_SIGMOID: return ref_sigmoid(x);
    case OSP_ACT_TANH: return tanh(x);
    case OSP_ACT_SWISH: return x * ref_sigmoid(x);
    }
    return NAN;
}

/* PyTorch's choices at the kinks: relu'(0) = 0, leaky'(0) = alpha,
 * relu6'(0) = relu6'(6) = 0. */
static double ref_derivative(osp_activation act, double x) {
    double s = ref_sigmoid(x);
    switch (act) {
    case OSP_ACT_NONE: return 1;
    case OSP_ACT_RELU: return x > 0 ? 1 : 0;
    case OSP_ACT_LEAKY_RELU: return x > 0 ? 1 : alpha;
    case OSP_ACT_RELU6: return x > 0 && x < 6 ? 1 : 0;
    case OSP_ACT_SIGMOID: return s * (1 - s);
    case OSP_ACT_TANH: return 1 - tanh(x) * tanh(x);
    case OSP_ACT_SWISH: return s + x * s * (1 - s);
    }
    return NAN;
}

static void fill(float *v, int64_t n, float lo, float hi, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

static float *new_floats(int64_t n) {
    float *p = osp_alloc((size_t)n * sizeof(float));
    cr_assert_not_null(p);
    return p;
}

Test(activation, forward_and_backward_match_reference) {
    for (int a = 0; a < N_ACTS; a++)
        for (int si = 0; si < N_SIZES; si++) {
            osp_activation act = all_acts[a];
            int64_t n = sizes[si];
            float *x = new_floats(n), *y = new_floats(n), *dy = new_floats(n), *dx = new_floats(n);
            float *dx0 = new_floats(n);
            fill(x, n, -8, 8, 1 + si);
            /* the kinks themselves */
            x[0] = 0.0f;
            if (n > 2) x[2] = 6.0f;
            fill(dy, n, -1, 1, 100 + si);
            fill(dx0, n, -1, 1, 200 + si);
            for (int64_t i = 0; i < n; i++) dx[i] = dx0[i];
            osp__cpu_activation_forward(act, alpha, n, x, y);
            osp__cpu_activation_backward(act, alpha, n, x, y, dy, dx);
            for (int64_t i = 0; i < n; i++) {
                double want = ref_forward(act, x[i]);
                cr_assert(fabs(y[i] - want) <= 1e-6 + 1e-6 * fabs(want),
                          "act %d n %lld: y[%lld] = %g, want %g", act, (long long)n, (long long)i,
                          y[i], want);
                double dwant = dx0[i] + dy[i] * ref_derivative(act, x[i]);
                cr_assert(fabs(dx[i] - dwant) <= 1e-5 + 1e-5 * fabs(dwant),
                          "act %d n %lld: dx[%lld] = %g, want %g (x = %g)", act, (long long)n,
                          (long long)i, dx[i], dwant, x[i]);
            }
            /* a NULL gradient is skipped */
            osp__cpu_activation_backward(act, alpha, n, x, y, dy, NULL);
            osp_free(x);
            osp_free(y);
            osp_free(dy);
            osp_free(dx);
            osp_free(dx0);
        }
}

Test(activation, backward_matches_finite_differences) {
    const int n = 301;
    const double h = 1e-3;
    float x[301], y[301], dy[301], dx[301], xp[301], xm[301], yp[301], ym[301];
    for (int a = 0; a < N_ACTS; a++) {
        osp_activation act = all_acts[a];
        fill(x, n, -7, 7, 5);
        for (int i = 0; i < n; i++) {
            /* stay clear of the kinks, where the difference is not the slope */
            if (fabsf(x[i]) < 0.01f || fabsf(x[i] - 6.0f) < 0.01f) x[i] += 0.05f;
            xp[i] = (float)(x[i] + h);
            xm[i] = (float)(x[i] - h);
            dy[i] = 1.0f;
            dx[i] = 0.0f;
        }
        osp__cpu_activation_forward(act, alpha, n, x, y);
        osp__cpu_activation_forward(act, alpha, n, xp, yp);
        osp__cpu_activation_forward(act, alpha, n, xm, ym);
        osp__cpu_activation_backward(act, alpha, n, x, y, dy, dx);
        for (int i = 0; i < n; i++) {
            double numeric = ((double)yp[i] - ym[i]) / ((double)xp[i] - xm[i]);
            cr_assert(fabs(dx[i] - numeric) <= 2e-3 + 2e-3 * fabs(numeric),
                      "act %d: x = %g: analytic %g, numeric %g", act, x[i], dx[i], numeric);
        }
    }
}

Test(activation, saturating_inputs_stay_finite) {
    const float x[] = {-FLT_MAX, -1e30f, -1e4f, -100.0f, -89.0f, 89.0f, 100.0f, 1e4f, 1e30f, FLT_MAX};
    const int n = (int)(sizeof x / sizeof x[0]);
    float y[10], dy[10], dx[10];
    for (int i = 0; i < n; i++) dy[i] = 1.0f;
    const osp_activation smooth[] = {OSP_ACT_SIGMOID, OSP_ACT_TANH, OSP_ACT_SWISH};
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < n; i++) dx[i] = 0.0f;
        osp__cpu_activation_forward(smooth[a], alpha, n, x, y);
        osp__cpu_activation_backward(smooth[a], alpha, n, x, y, dy, dx);
        for (int i = 0; i < n; i++) {
            cr_assert(isfinite(y[i]) && isfinite(dx[i]), "act %d: x = %g gives y = %g, dx = %g",
                      smooth[a], x[i], y[i], dx[i]);
            double want = x[i] > 0 ? (smooth[a] == OSP_ACT_SWISH ? x[i] : 1.0)
                                   : (smooth[a] == OSP_ACT_TANH ? -1.0 : 0.0);
            cr_assert(fabs(y[i] - want) <= 1e-6 * fabs(want) + 1e-30, "act %d: f(%g) = %g", smooth[a],
                      x[i], y[i]);
            double dwant = (smooth[a] == OSP_ACT_SWISH && x[i] > 0) ? 1.0 : 0.0;
            cr_assert(fabs(dx[i] - dwant) <= 1e-6, "act %d: f'(%g) = %g", smooth[a], x[i], dx[i]);
        }
    }
}

Test(activation, nan_passes_through) {
    const float x[2] = {NAN, 1.0f};
    float y[2];
    for (int a = 0; a < N_ACTS; a++) {
        osp__cpu_activation_forward(all_acts[a], alpha, 2, x, y);
        cr_assert(isnan(y[0]), "act %d: f(NaN) = %g", all_acts[a], y[0]);
        cr_assert(!isnan(y[1]));
    }
}
