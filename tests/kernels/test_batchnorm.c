/* Batch-norm kernels against a naive double-precision reference. The
 * backward reference is the textbook chain rule through mean and variance,
 * not the kernel's closed form. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu_kernels.h"

typedef struct bn_case {
    int n, c, s;
} bn_case;

/* Odd sizes; the last is past the kernel's parallel threshold. */
static const bn_case cases[] = {{3, 5, 7}, {4, 3, 1}, {1, 2, 9}, {5, 4, 1003}};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

static void fill(float *v, int64_t n, float lo, float hi, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

static float *new_floats(int64_t n) {
    float *p = osp_alloc((size_t)(n ? n : 1) * sizeof(float));
    cr_assert_not_null(p);
    return p;
}

static int64_t at(const bn_case *k, int b, int ch, int i) {
    return ((int64_t)b * k->c + ch) * k->s + i;
}

/* Batch mean and biased variance of one channel. */
static void ref_stats(const bn_case *k, const float *x, int ch, double *mean, double *var) {
    double m = (double)k->n * k->s, sum = 0, sq = 0;
    for (int b = 0; b < k->n; b++)
        for (int i = 0; i < k->s; i++) sum += x[at(k, b, ch, i)];
    *mean = sum / m;
    for (int b = 0; b < k->n; b++)
        for (int i = 0; i < k->s; i++) sq += pow(x[at(k, b, ch, i)] - *mean, 2);
    *var = sq / m;
}

static void close_to(double got, double want, double tol, const char *what, int64_t i) {
    cr_assert(fabs(got - want) <= tol * (1 + fabs(want)), "%s[%lld] = %.9g, want %.9g", what,
              (long long)i, got, want);
}

Test(batchnorm, forward_train_matches_reference) {
    const float eps = 1e-3f, momentum = 0.1f;
    for (int t = 0; t < N_CASES; t++) {
        const bn_case *k = &cases[t];
        int64_t total = (int64_t)k->n * k->c * k->s, m = (int64_t)k->n * k->s;
        float *x = new_floats(total), *y = new_floats(total), *g = new_floats(k->c),
              *bt = new_floats(k->c), *rm = new_floats(k->c), *rv = new_floats(k->c),
              *rm0 = new_floats(k->c), *rv0 = new_floats(k->c), *sm = new_floats(k->c),
              *si = new_floats(k->c);
        fill(x, total, -2, 3, 10 + t);
        fill(g, k->c, 0.5f, 1.5f, 20 + t);
        fill(bt, k->c, -1, 1, 30 + t);
        fill(rm0, k->c, -1, 1, 40 + t);
        fill(rv0, k->c, 0.5f, 2, 50 + t);
        memcpy(rm, rm0, (size_t)k->c * sizeof(float));
        memcpy(rv, rv0, (size_t)k->c * sizeof(float));
        osp__cpu_batchnorm_forward_train(k->n, k->c, k->s, x, g, bt, momentum, eps, rm, rv, sm,
                                         si, y);
        for (int ch = 0; ch < k->c; ch++) {
            double mean, var;
            ref_stats(k, x, ch, &mean, &var);
            double invstd = 1 / sqrt(var + eps);
            double unbiased = m > 1 ? var * m / (m - 1) : var;
            close_to(sm[ch], mean, 1e-6, "save_mean", ch);
            close_to(si[ch], invstd, 1e-6, "save_invstd", ch);
            close_to(rm[ch], 0.9 * rm0[ch] + 0.1 * mean, 1e-6, "running_mean", ch);
            close_to(rv[ch], 0.9 * rv0[ch] + 0.1 * unbiased, 1e-6, "running_var", ch);
            for (int b = 0; b < k->n; b++)
                for (int i = 0; i < k->s; i++) {
                    int64_t j = at(k, b, ch, i);
                    close_to(y[j], (x[j] - mean) * invstd * g[ch] + bt[ch], 1e-5, "y", j);
                }
        }
        osp_free(x), osp_free(y), osp_free(g), osp_free(bt), osp_free(rm), osp_free(rv);
        osp_free(rm0), osp_free(rv0), osp_free(sm), osp_free(si);
    }
}

Test(batchnorm, forward_infer_matches_reference) {
    const float eps = 1e-5f;
    for (int t = 0; t < N_CASES; t++) {
        const bn_case *k = &cases[t];
        int64_t total = (int64_t)k->n * k->c * k->s;
        float *x = new_floats(total), *y = new_floats(total), *g = new_floats(k->c),
              *bt = new_floats(k->c), *rm = new_floats(k->c), *rv = new_floats(k->c);
        fill(x, total, -2, 3, 60 + t);
        fill(g, k->c, -1.5f, 1.5f, 70 + t);
        fill(bt, k->c, -1, 1, 80 + t);
        fill(rm, k->c, -1, 1, 90 + t);
        fill(rv, k->c, 0.1f, 2, 95 + t);
        osp__cpu_batchnorm_forward_infer(k->n, k->c, k->s, x, g, bt, rm, rv, eps, y);
        for (int64_t j = 0; j < total; j++) {
            int ch = (int)(j / k->s % k->c);
            close_to(y[j], ((double)x[j] - rm[ch]) / sqrt((double)rv[ch] + eps) * g[ch] + bt[ch],
                     1e-5, "y", j);
        }
        osp_free(x), osp_free(y), osp_free(g), osp_free(bt), osp_free(rm), osp_free(rv);
    }
}

/* dL/dx through xhat = (x - mean) / sqrt(var + eps), term by term. */
static void ref_backward(const bn_case *k, const float *x, const float *dy, const float *g,
                         float eps, double *dx, double *dg, double *db) {
    double m = (double)k->n * k->s;
    for (int ch = 0; ch < k->c; ch++) {
        double mean, var;
        ref_stats(k, x, ch, &mean, &var);
        double invstd = 1 / sqrt(var + eps), dvar = 0, dmean = 0, sum_diff = 0;
        dg[ch] = db[ch] = 0;
        for (int b = 0; b < k->n; b++)
            for (int i = 0; i < k->s; i++) {
                int64_t j = at(k, b, ch, i);
                double xhat = (x[j] - mean) * invstd, dxhat = dy[j] * g[ch];
                db[ch] += dy[j];
                dg[ch] += dy[j] * xhat;
                dvar += dxhat * (x[j] - mean) * -0.5 * pow(var + eps, -1.5);
                dmean += -dxhat * invstd;
                sum_diff += -2 * (x[j] - mean);
            }
        dmean += dvar * sum_diff / m;
        for (int b = 0; b < k->n; b++)
            for (int i = 0; i < k->s; i++) {
                int64_t j = at(k, b, ch, i);
                dx[j] = dy[j] * g[ch] * invstd + dvar * 2 * (x[j] - mean) / m + dmean / m;
            }
    }
}

Test(batchnorm, backward_matches_reference_and_accumulates) {
    const float eps = 1e-3f;
    for (int t = 0; t < N_CASES; t++) {
        const bn_case *k = &cases[t];
        int64_t total = (int64_t)k->n * k->c * k->s;
        float *x = new_floats(total), *y = new_floats(total), *dy = new_floats(total),
              *dx = new_floats(total), *dx0 = new_floats(total), *g = new_floats(k->c),
              *bt = new_floats(k->c), *rm = new_floats(k->c), *rv = new_floats(k->c),
              *sm = new_floats(k->c), *si = new_floats(k->c), *dg = new_floats(k->c),
              *db = new_floats(k->c), *dg2 = new_floats(k->c), *db2 = new_floats(k->c);
        double *rdx = osp_alloc((size_t)total * sizeof(double)), *rdg = osp_alloc((size_t)k->c * sizeof(double)),
               *rdb = osp_alloc((size_t)k->c * sizeof(double));
        fill(x, total, -2, 3, 110 + t);
        fill(dy, total, -1, 1, 120 + t);
        fill(dx0, total, -1, 1, 130 + t);
        fill(g, k->c, -1.5f, 1.5f, 140 + t);
        fill(bt, k->c, -1, 1, 150 + t);
        fill(dg, k->c, -1, 1, 160 + t);
        fill(db, k->c, -1, 1, 170 + t);
        memcpy(dx, dx0, (size_t)total * sizeof(float));
        memcpy(dg2, dg, (size_t)k->c * sizeof(float));
        memcpy(db2, db, (size_t)k->c * sizeof(float));
        for (int ch = 0; ch < k->c; ch++) rm[ch] = 0, rv[ch] = 1;
        osp__cpu_batchnorm_forward_train(k->n, k->c, k->s, x, g, bt, 0.1f, eps, rm, rv, sm, si, y);
        osp__cpu_batchnorm_backward(k->n, k->c, k->s, x, dy, g, sm, si, dx, dg, db);
        ref_backward(k, x, dy, g, eps, rdx, rdg, rdb);
        /* Per channel, the scale of dx is |gamma| * invstd * |dy|. */
        for (int64_t j = 0; j < total; j++) close_to(dx[j], dx0[j] + rdx[j], 2e-4, "dx", j);
        for (int ch = 0; ch < k->c; ch++) {
            double m = (double)k->n * k->s;
            close_to(dg[ch], dg2[ch] + rdg[ch], 1e-5 * sqrt(m), "dgamma", ch);
            close_to(db[ch], db2[ch] + rdb[ch], 1e-5 * sqrt(m), "dbeta", ch);
        }
        /* Without dx only the parameter gradients move; with none, nothing. */
        memcpy(dg, dg2, (size_t)k->c * sizeof(float));
        osp__cpu_batchnorm_backward(k->n, k->c, k->s, x, dy, g, sm, si, NULL, dg, NULL);
        for (int ch = 0; ch < k->c; ch++)
            close_to(dg[ch], dg2[ch] + rdg[ch], 1e-5 * sqrt((double)k->n * k->s), "dgamma", ch);
        memcpy(dx, dx0, (size_t)total * sizeof(float));
        osp__cpu_batchnorm_backward(k->n, k->c, k->s, x, dy, g, sm, si, dx, NULL, NULL);
        for (int64_t j = 0; j < total; j++) close_to(dx[j], dx0[j] + rdx[j], 2e-4, "dx", j);
        osp__cpu_batchnorm_backward(k->n, k->c, k->s, x, dy, g, sm, si, NULL, NULL, NULL);
        osp_free(x), osp_free(y), osp_free(dy), osp_free(dx), osp_free(dx0), osp_free(g);
        osp_free(bt), osp_free(rm), osp_free(rv), osp_free(sm), osp_free(si), osp_free(dg);
        osp_free(db), osp_free(dg2), osp_free(db2), osp_free(rdx), osp_free(rdg), osp_free(rdb);
    }
}

/* Values far from zero with a small spread: a one-pass float variance
 * (E[x^2] - E[x]^2) loses every digit here. */
Test(batchnorm, large_mean_keeps_precision) {
    const bn_case k = {8, 2, 129};
    int64_t total = (int64_t)k.n * k.c * k.s;
    float *x = new_floats(total), *y = new_floats(total), g[2] = {1, 1}, bt[2] = {0, 0};
    float rm[2] = {0, 0}, rv[2] = {1, 1}, sm[2], si[2];
    fill(x, total, -1, 1, 7);
    for (int64_t j = 0; j < total; j++) x[j] += 1e4f;
    osp__cpu_batchnorm_forward_train(k.n, k.c, k.s, x, g, bt, 0.1f, 1e-5f, rm, rv, sm, si, y);
    for (int ch = 0; ch < k.c; ch++) {
        double mean, var;
        ref_stats(&k, x, ch, &mean, &var);
        close_to(1.0 / ((double)si[ch] * si[ch]), var + 1e-5, 1e-5, "var", ch);
        for (int b = 0; b < k.n; b++)
            for (int i = 0; i < k.s; i++) {
                int64_t j = at(&k, b, ch, i);
                close_to(y[j], (x[j] - mean) / sqrt(var + 1e-5), 1e-5, "y", j);
            }
    }
    osp_free(x), osp_free(y);
}

/* One value per channel has no unbiased variance: nothing may become NaN. */
Test(batchnorm, single_value_per_channel_stays_finite) {
    float x[3] = {1, 2, 3}, y[3], g[3] = {1, 1, 1}, bt[3] = {0.5f, 0.5f, 0.5f};
    float rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1}, sm[3], si[3];
    osp__cpu_batchnorm_forward_train(1, 3, 1, x, g, bt, 0.1f, 1e-5f, rm, rv, sm, si, y);
    for (int ch = 0; ch < 3; ch++) {
        cr_assert_float_eq(y[ch], 0.5f, 1e-6);
        cr_assert(isfinite(rv[ch]) && isfinite(rm[ch]));
        cr_assert_float_eq(rv[ch], 0.9f, 1e-6);
    }
}
