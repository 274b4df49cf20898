/* Softmax and fused softmax + cross-entropy kernels against naive
 * double-precision references and finite differences. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu_kernels.h"

typedef struct sm_case {
    int rows, cols;
} sm_case;

/* Odd sizes; the last is past the kernels' parallel threshold. */
static const sm_case cases[] = {{1, 1}, {3, 7}, {5, 101}, {2, 1}, {37, 1001}};
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

static void labels_for(int32_t *labels, int rows, int cols, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int i = 0; i < rows; i++) labels[i] = (int32_t)osp_rng_below(&r, (uint64_t)cols);
}

/* softmax of one row in double, shifted by the row's max (exact maths). */
static void ref_softmax_row(const float *x, int cols, double *p) {
    double m = x[0], sum = 0;
    for (int j = 1; j < cols; j++) m = fmax(m, x[j]);
    for (int j = 0; j < cols; j++) sum += exp(x[j] - m);
    for (int j = 0; j < cols; j++) p[j] = exp(x[j] - m) / sum;
}

/* mean over rows of -log(softmax(x)[label]) */
static double ref_xent(int rows, int cols, const float *x, const int32_t *labels) {
    double total = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * cols;
        double m = xr[0], sum = 0;
        for (int j = 1; j < cols; j++) m = fmax(m, xr[j]);
        for (int j = 0; j < cols; j++) sum += exp(xr[j] - m);
        total += log(sum) + m - xr[labels[r]];
    }
    return total / rows;
}

Test(softmax, forward_matches_reference) {
    for (int t = 0; t < N_CASES; t++) {
        int rows = cases[t].rows, cols = cases[t].cols;
        int64_t n = (int64_t)rows * cols;
        float *x = new_floats(n), *y = new_floats(n);
        double *p = osp_alloc((size_t)cols * sizeof(double));
        fill(x, n, -5, 5, 1 + t);
        osp__cpu_softmax_forward(rows, cols, x, y);
        for (int r = 0; r < rows; r++) {
            ref_softmax_row(x + (int64_t)r * cols, cols, p);
            double sum = 0;
            for (int j = 0; j < cols; j++) {
                float got = y[(int64_t)r * cols + j];
                cr_assert(fabs(got - p[j]) <= 1e-6 * p[j] + 1e-9, "%dx%d: y[%d,%d] = %g, want %g",
                          rows, cols, r, j, got, p[j]);
                sum += got;
            }
            cr_assert(fabs(sum - 1) < 1e-5);
        }
        osp_free(x), osp_free(y), osp_free(p);
    }
}

Test(softmax, backward_matches_full_jacobian) {
    for (int t = 0; t < N_CASES; t++) {
        int rows = cases[t].rows, cols = cases[t].cols;
        if (cols > 200) continue; /* the reference is cols^2 per row */
        int64_t n = (int64_t)rows * cols;
        float *x = new_floats(n), *y = new_floats(n), *dy = new_floats(n), *dx = new_floats(n),
              *dx0 = new_floats(n);
        fill(x, n, -3, 3, 10 + t);
        fill(dy, n, -1, 1, 20 + t);
        fill(dx0, n, -1, 1, 30 + t);
        memcpy(dx, dx0, (size_t)n * sizeof(float));
        osp__cpu_softmax_forward(rows, cols, x, y);
        osp__cpu_softmax_backward(rows, cols, y, dy, dx);
        for (int r = 0; r < rows; r++) {
            const float *yr = y + (int64_t)r * cols, *dyr = dy + (int64_t)r * cols;
            for (int i = 0; i < cols; i++) {
                /* dx_i = sum_j dy_j * (d y_j / d x_i) = sum_j dy_j * y_j * (delta_ij - y_i) */
                double want = dx0[(int64_t)r * cols + i];
                for (int j = 0; j < cols; j++)
                    want += (double)dyr[j] * yr[j] * ((i == j) - (double)yr[i]);
                float got = dx[(int64_t)r * cols + i];
                cr_assert(fabs(got - want) <= 1e-6 + 1e-6 * fabs(want), "dx[%d,%d] = %g, want %g",
                          r, i, got, want);
            }
        }
        osp__cpu_softmax_backward(rows, cols, y, dy, NULL);
        osp_free(x), osp_free(y), osp_free(dy), osp_free(dx), osp_free(dx0);
    }
}

Test(softmax_xent, loss_probs_and_gradient_match_reference) {
    for (int t = 0; t < N_CASES; t++) {
        int rows = cases[t].rows, cols = cases[t].cols;
        int64_t n = (int64_t)rows * cols;
        float *x = new_floats(n), *probs = new_floats(n), *d = new_floats(n);
        double *p = osp_alloc((size_t)cols * sizeof(double));
        int32_t *labels = osp_alloc((size_t)rows * sizeof(int32_t));
        fill(x, n, -6, 6, 40 + t);
        labels_for(labels, rows, cols, 50 + t);
        for (int64_t i = 0; i < n; i++) d[i] = probs[i] = 123.0f; /* must be overwritten */
        double want = ref_xent(rows, cols, x, labels);
        double loss = osp__cpu_softmax_xent(rows, cols, x, labels, probs, d);
        cr_assert(fabs(loss - want) <= 1e-9 * (1 + want), "%dx%d: loss %.12g, want %.12g", rows,
                  cols, loss, want);
        for (int r = 0; r < rows; r++) {
            ref_softmax_row(x + (int64_t)r * cols, cols, p);
            for (int j = 0; j < cols; j++) {
                int64_t k = (int64_t)r * cols + j;
                double g = (p[j] - (j == labels[r])) / rows;
                cr_assert(fabs(probs[k] - p[j]) <= 1e-6 * p[j] + 1e-9, "probs[%d,%d]", r, j);
                cr_assert(fabs(d[k] - g) <= 1e-6 * fabs(g) + 1e-9, "dlogits[%d,%d] = %g, want %g",
                          r, j, d[k], g);
            }
        }
        /* Optional outputs change nothing else. */
        cr_assert_eq(osp__cpu_softmax_xent(rows, cols, x, labels, NULL, NULL), loss);
        cr_assert_eq(osp__cpu_softmax_xent(rows, cols, x, labels, probs, NULL), loss);
        float *d2 = new_floats(n);
        cr_assert_eq(osp__cpu_softmax_xent(rows, cols, x, labels, NULL, d2), loss);
        cr_assert_eq(memcmp(d, d2, (size_t)n * sizeof(float)), 0);
        osp_free(x), osp_free(probs), osp_free(d), osp_free(d2), osp_free(p), osp_free(labels);
    }
}

/* Logits of magnitude 1e4: exp without the shift overflows. */
Test(softmax_xent, stable_for_huge_logits) {
    enum { rows = 4, cols = 9 };
    float x[rows * cols], probs[rows * cols], d[rows * cols], y[rows * cols];
    int32_t labels[rows] = {0, 3, 8, 5};
    fill(x, rows * cols, -1e4f, 1e4f, 99);
    x[3 * cols + 2] = 1e4f;
    x[3 * cols + 5] = 1e4f - 1.0f; /* label one unit below the winner */
    double loss = osp__cpu_softmax_xent(rows, cols, x, labels, probs, d);
    double want = ref_xent(rows, cols, x, labels);
    cr_assert(isfinite(loss));
    cr_assert(fabs(loss - want) <= 1e-9 * want, "loss %.12g, want %.12g", loss, want);
    osp__cpu_softmax_forward(rows, cols, x, y);
    for (int i = 0; i < rows * cols; i++) {
        cr_assert(isfinite(probs[i]) && isfinite(d[i]) && isfinite(y[i]));
        cr_assert(fabsf(probs[i] - y[i]) <= 1e-6f * y[i] + 1e-30f, "probs %g, softmax %g", probs[i], y[i]);
    }
    /* the last row's loss is log(1 + e) to within the other logits' share */
    float all_big[cols];
    for (int j = 0; j < cols; j++) all_big[j] = -1e4f;
    all_big[2] = 1e4f;
    all_big[5] = 1e4f - 1.0f;
    double row_loss = osp__cpu_softmax_xent(1, cols, all_big, &labels[3], NULL, NULL);
    cr_assert(fabs(row_loss - log(1 + exp(1.0))) < 1e-9, "loss %.12g", row_loss);
}

Test(softmax_xent, gradient_matches_finite_differences) {
    enum { rows = 3, cols = 11 };
    float x[rows * cols], d[rows * cols];
    int32_t labels[rows];
    fill(x, rows * cols, -4, 4, 123);
    labels_for(labels, rows, cols, 321);
    osp__cpu_softmax_xent(rows, cols, x, labels, NULL, d);
    for (int i = 0; i < rows * cols; i++) {
        float saved = x[i];
        x[i] = saved + 1e-2f;
        double lp = osp__cpu_softmax_xent(rows, cols, x, labels, NULL, NULL);
        float up = x[i];
        x[i] = saved - 1e-2f;
        double lm = osp__cpu_softmax_xent(rows, cols, x, labels, NULL, NULL);
        double numeric = (lp - lm) / ((double)up - x[i]);
        x[i] = saved;
        cr_assert(fabs(d[i] - numeric) <= 1e-4 + 1e-3 * fabs(numeric), "d[%d] = %g, numeric %g",
                  i, d[i], numeric);
    }
}
