/* Fused sigmoid + binary cross-entropy (multi-label loss) against a naive
 * double-precision reference, for huge logits, and against finite
 * differences. PyTorch's BCEWithLogitsLoss is checked in nn/test_golden.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu_kernels.h"

static const int cases[][2] = {{1, 1}, {3, 7}, {5, 101}, {2, 1}, {37, 1001}};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

static void fill(float *v, int64_t n, float lo, float hi, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

static void multi_hot(float *t, int64_t n, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) t[i] = osp_rng_uniform(&r) < 0.3 ? 1.0f : 0.0f;
}

/* -t log s - (1-t) log (1-s), in double, straight from the definition. */
static double ref_bce(int64_t n, const float *x, const float *t) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        sum += -(double)t[i] * log(s) - (1.0 - t[i]) * log1p(-s);
    }
    return sum / (double)n;
}

Test(sigmoid_bce, loss_probs_and_gradient_match_reference) {
    for (int c = 0; c < N_CASES; c++) {
        int rows = cases[c][0], cols = cases[c][1];
        int64_t n = (int64_t)rows * cols;
        float *x = osp_alloc((size_t)n * 4), *t = osp_alloc((size_t)n * 4);
        float *p = osp_alloc((size_t)n * 4), *d = osp_alloc((size_t)n * 4), *d2 = osp_alloc((size_t)n * 4);
        cr_assert(x && t && p && d && d2);
        fill(x, n, -6, 6, 10 + c);
        multi_hot(t, n, 20 + c);
        for (int64_t i = 0; i < n; i++) p[i] = d[i] = 123.0f; /* must be overwritten */
        double want = ref_bce(n, x, t);
        double loss = osp__cpu_sigmoid_bce(rows, cols, x, t, p, d);
        cr_assert(fabs(loss - want) <= 1e-9 * (1 + want), "%dx%d: loss %.12g, want %.12g", rows, cols,
                  loss, want);
        for (int64_t i = 0; i < n; i++) {
            double s = 1.0 / (1.0 + exp(-(double)x[i]));
            double g = (s - t[i]) / (double)n;
            cr_assert(fabs(p[i] - s) <= 1e-6 * s + 1e-9, "probs[%lld]", (long long)i);
            cr_assert(fabs(d[i] - g) <= 1e-6 * fabs(g) + 1e-12, "d[%lld] = %g, want %g", (long long)i,
                      d[i], g);
        }
        /* Optional outputs change nothing else. */
        cr_assert_eq(osp__cpu_sigmoid_bce(rows, cols, x, t, NULL, NULL), loss);
        cr_assert_eq(osp__cpu_sigmoid_bce(rows, cols, x, t, NULL, d2), loss);
        cr_assert_eq(memcmp(d, d2, (size_t)n * sizeof(float)), 0);
        /* The backend table reaches the same kernel. */
        double slot_loss = -1;
        osp_backend_cpu_reference()->sigmoid_bce(rows, cols, x, t, NULL, NULL, &slot_loss);
        cr_assert_eq(slot_loss, loss);
        osp_free(x), osp_free(t), osp_free(p), osp_free(d), osp_free(d2);
    }
}

/* Logits of magnitude 1e4: exp(-x) overflows and log(sigmoid) underflows
 * without the stable form. */
Test(sigmoid_bce, stable_for_huge_logits) {
    float x[4] = {1e4f, -1e4f, 1e4f, -1e4f}, t[4] = {1, 0, 0, 1}, p[4], d[4];
    double loss = osp__cpu_sigmoid_bce(1, 4, x, t, p, d);
    cr_assert(isfinite(loss));
    /* right answers cost 0, wrong ones 1e4 each */
    cr_assert(fabs(loss - 2e4 / 4) < 1e-6, "loss %.12g", loss);
    float want_d[4] = {0, 0, 0.25f, -0.25f};
    for (int i = 0; i < 4; i++) {
        cr_assert(isfinite(p[i]) && isfinite(d[i]));
        cr_assert(fabsf(d[i] - want_d[i]) < 1e-7f, "d[%d] = %g", i, d[i]);
    }
    /* An all-zero row (a negative image) is just the zero-target loss. */
    float z[3] = {0, 0, 0}, zt[3] = {0, 0, 0};
    cr_assert(fabs(osp__cpu_sigmoid_bce(1, 3, z, zt, NULL, NULL) - log(2.0)) < 1e-12);
}

Test(sigmoid_bce, gradient_matches_finite_differences) {
    enum { rows = 3, cols = 11 };
    float x[rows * cols], t[rows * cols], d[rows * cols];
    fill(x, rows * cols, -4, 4, 123);
    multi_hot(t, rows * cols, 321);
    t[5] = 0.25f; /* soft targets too */
    osp__cpu_sigmoid_bce(rows, cols, x, t, NULL, d);
    for (int i = 0; i < rows * cols; i++) {
        float saved = x[i];
        x[i] = saved + 1e-2f;
        double lp = osp__cpu_sigmoid_bce(rows, cols, x, t, NULL, NULL);
        float up = x[i];
        x[i] = saved - 1e-2f;
        double lm = osp__cpu_sigmoid_bce(rows, cols, x, t, NULL, NULL);
        double numeric = (lp - lm) / ((double)up - x[i]);
        x[i] = saved;
        cr_assert(fabs(d[i] - numeric) <= 1e-5 + 1e-3 * fabs(numeric), "d[%d] = %g, numeric %g", i,
                  d[i], numeric);
    }
}
