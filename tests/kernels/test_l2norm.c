/* L2-normalisation kernels against naive double-precision references (the
 * backward through the full Jacobian of each row). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu_kernels.h"

typedef struct l2_case {
    int rows, cols;
} l2_case;

/* Odd sizes; the last is past the kernels' parallel threshold. */
static const l2_case cases[] = {{1, 1}, {3, 7}, {5, 129}, {33, 1001}};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

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

static double ref_norm(const float *x, int cols) {
    double sq = 0;
    for (int j = 0; j < cols; j++) sq += (double)x[j] * x[j];
    return sqrt(sq);
}

/* Row 1 (if any) is all zeros and row 2 (if any) is tiny: both take the
 * eps branch. */
static void make_input(float *x, const l2_case *k, float eps, uint64_t seed) {
    fill(x, (int64_t)k->rows * k->cols, -2, 2, seed);
    if (k->rows > 1) memset(x + k->cols, 0, (size_t)k->cols * sizeof(float));
    if (k->rows > 2)
        for (int j = 0; j < k->cols; j++) x[2 * k->cols + j] *= eps * 1e-2f;
}

Test(l2norm, forward_matches_reference) {
    const float eps = 1e-6f;
    for (int t = 0; t < N_CASES; t++) {
        const l2_case *k = &cases[t];
        int64_t n = (int64_t)k->rows * k->cols;
        float *x = new_floats(n), *y = new_floats(n);
        make_input(x, k, eps, 1 + t);
        osp__cpu_l2norm_forward(k->rows, k->cols, eps, x, y);
        for (int r = 0; r < k->rows; r++) {
            const float *xr = x + (int64_t)r * k->cols;
            double d = fmax(ref_norm(xr, k->cols), eps);
            for (int j = 0; j < k->cols; j++) {
                double want = xr[j] / d;
                float got = y[(int64_t)r * k->cols + j];
                cr_assert(fabs(got - want) <= 1e-6 * (1e-6 + fabs(want)), "y[%d,%d] = %g, want %g",
                          r, j, got, want);
            }
        }
        osp_free(x), osp_free(y);
    }
}

Test(l2norm, backward_matches_full_jacobian) {
    const float eps = 1e-6f;
    for (int t = 0; t < N_CASES; t++) {
        const l2_case *k = &cases[t];
        if (k->cols > 200) continue; /* the reference is cols^2 per row */
        int64_t n = (int64_t)k->rows * k->cols;
        float *x = new_floats(n), *y = new_floats(n), *dy = new_floats(n), *dx = new_floats(n),
              *dx0 = new_floats(n);
        make_input(x, k, eps, 10 + t);
        fill(dy, n, -1, 1, 20 + t);
        fill(dx0, n, -1, 1, 30 + t);
        memcpy(dx, dx0, (size_t)n * sizeof(float));
        osp__cpu_l2norm_forward(k->rows, k->cols, eps, x, y);
        osp__cpu_l2norm_backward(k->rows, k->cols, eps, x, y, dy, dx);
        for (int r = 0; r < k->rows; r++) {
            const float *xr = x + (int64_t)r * k->cols, *dyr = dy + (int64_t)r * k->cols;
            double norm = ref_norm(xr, k->cols);
            for (int i = 0; i < k->cols; i++) {
                /* y_j = x_j / max(norm, eps); above eps,
                 * d y_j / d x_i = delta_ij / norm - x_j x_i / norm^3 */
                double want = dx0[(int64_t)r * k->cols + i];
                for (int j = 0; j < k->cols; j++) {
                    double jac = norm >= eps ? (i == j) / norm - xr[j] * (double)xr[i] / pow(norm, 3)
                                             : (i == j) / (double)eps;
                    want += dyr[j] * jac;
                }
                float got = dx[(int64_t)r * k->cols + i];
                cr_assert(fabs(got - want) <= 1e-5 * (1 + fabs(want)), "dx[%d,%d] = %g, want %g",
                          r, i, got, want);
            }
        }
        osp__cpu_l2norm_backward(k->rows, k->cols, eps, x, y, dy, NULL);
        osp_free(x), osp_free(y), osp_free(dy), osp_free(dx), osp_free(dx0);
    }
}

Test(l2norm, backward_matches_finite_differences) {
    enum { rows = 2, cols = 9 };
    const float eps = 1e-12f;
    float x[rows * cols], y[rows * cols], yp[rows * cols], ym[rows * cols], r[rows * cols],
        dx[rows * cols];
    fill(x, rows * cols, -1, 1, 77);
    fill(r, rows * cols, -1, 1, 78);
    memset(dx, 0, sizeof dx);
    osp__cpu_l2norm_forward(rows, cols, eps, x, y);
    osp__cpu_l2norm_backward(rows, cols, eps, x, y, r, dx);
    for (int i = 0; i < rows * cols; i++) {
        float saved = x[i];
        x[i] = saved + 1e-3f;
        float up = x[i];
        osp__cpu_l2norm_forward(rows, cols, eps, x, yp);
        x[i] = saved - 1e-3f;
        float down = x[i];
        osp__cpu_l2norm_forward(rows, cols, eps, x, ym);
        x[i] = saved;
        double lp = 0, lm = 0;
        for (int j = 0; j < rows * cols; j++) lp += (double)yp[j] * r[j], lm += (double)ym[j] * r[j];
        double numeric = (lp - lm) / ((double)up - down);
        cr_assert(fabs(dx[i] - numeric) <= 2e-3 * (1 + fabs(numeric)), "dx[%d] = %g, numeric %g", i,
                  dx[i], numeric);
    }
}
