/* Fully connected kernels and the sgemm wrapper against naive loops. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_kernels.h"
#include "osprey/kernels.h"

static float *rand_buf(size_t n, unsigned seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    float *v = malloc((n ? n : 1) * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = 2 * osp_rng_uniform(&r) - 1;
    return v;
}

static void expect_close(const char *what, const float *got, const double *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i]),
                  "%s[%zu] = %.7g, expected %.7g", what, i, got[i], want[i]);
}

/* Both transposes, lda/ldb/ldc wider than the matrices, alpha and beta. */
Test(sgemm, all_transposes_and_strides) {
    const int m = 7, n = 5, k = 9, pad = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
            float *a = rand_buf((size_t)(ta ? k : m) * lda, 1);
            float *b = rand_buf((size_t)(tb ? n : k) * ldb, 2);
            float *c = rand_buf((size_t)m * ldc, 3);
            double *want = calloc((size_t)m * ldc, sizeof(double));
            for (int i = 0; i < m; i++)
                for (int j = 0; j < ldc; j++) {
                    double s = 0;
                    if (j < n)
                        for (int l = 0; l < k; l++)
                            s += (double)(ta ? a[l * lda + i] : a[i * lda + l]) *
                                 (tb ? b[j * ldb + l] : b[l * ldb + j]);
                    /* columns past n are outside C and must stay as they were */
                    want[i * ldc + j] = j < n ? 0.5 * s + 2.0 * c[i * ldc + j] : c[i * ldc + j];
                }
            osp__cpu_sgemm(ta ? OSP_TRANS : OSP_NO_TRANS, tb ? OSP_TRANS : OSP_NO_TRANS, m, n, k,
                           0.5f, a, lda, b, ldb, 2.0f, c, ldc);
            expect_close("c", c, want, (size_t)m * ldc);
            free(a), free(b), free(c), free(want);
        }
}

static void check_fc(int n, int in, int out) {
    float *x = rand_buf((size_t)n * in, 4), *w = rand_buf((size_t)out * in, 5);
    float *b = rand_buf((size_t)out, 6), *dy = rand_buf((size_t)n * out, 7);
    float *y = rand_buf((size_t)n * out, 8);
    float *dx = rand_buf((size_t)n * in, 9), *dw = rand_buf((size_t)out * in, 10);
    float *db = rand_buf((size_t)out, 11);
    double *ry = calloc((size_t)n * out, sizeof(double)), *rdx = calloc((size_t)n * in, sizeof(double));
    double *rdw = calloc((size_t)out * in, sizeof(double)), *rdb = calloc((size_t)out, sizeof(double));
    for (int i = 0; i < n * in; i++) rdx[i] = dx[i];
    for (int i = 0; i < out * in; i++) rdw[i] = dw[i];
    for (int j = 0; j < out; j++) rdb[j] = db[j];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < out; j++) {
            double s = 0;
            for (int l = 0; l < in; l++) {
                s += (double)x[i * in + l] * w[j * in + l];
                rdx[i * in + l] += (double)dy[i * out + j] * w[j * in + l];
                rdw[j * in + l] += (double)dy[i * out + j] * x[i * in + l];
            }
            ry[i * out + j] = s;
            rdb[j] += dy[i * out + j];
        }

    osp__cpu_fc_forward(n, in, out, x, w, NULL, y);
    expect_close("y (no bias)", y, ry, (size_t)n * out);
    for (int i = 0; i < n * out; i++) ry[i] += b[i % out];
    osp__cpu_fc_forward(n, in, out, x, w, b, y);
    expect_close("y", y, ry, (size_t)n * out);

    /* Accumulates into what the gradients held. */
    osp__cpu_fc_backward(n, in, out, x, w, dy, dx, dw, db);
    expect_close("dx", dx, rdx, (size_t)n * in);
    expect_close("dw", dw, rdw, (size_t)out * in);
    expect_close("db", db, rdb, (size_t)out);

    /* NULL parts are skipped, the others unchanged in meaning. */
    float *dw2 = rand_buf((size_t)out * in, 10);
    osp__cpu_fc_backward(n, in, out, x, w, dy, NULL, dw2, NULL);
    expect_close("dw (dx, db NULL)", dw2, rdw, (size_t)out * in);
    float *dx2 = rand_buf((size_t)n * in, 9);
    osp__cpu_fc_backward(n, in, out, x, w, dy, dx2, NULL, NULL);
    expect_close("dx (dw, db NULL)", dx2, rdx, (size_t)n * in);

    void *blocks[] = {x, w, b, dy, y, dx, dw, db, ry, rdx, rdw, rdb, dw2, dx2};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) free(blocks[i]);
}

Test(fc, odd_sizes) {
    check_fc(3, 17, 5);
    check_fc(1, 9, 13);
    check_fc(7, 1, 3);
    check_fc(5, 33, 1);
}

Test(fc, split_over_threads) {
    /* 2^18 weights and up, at most 4 images: outputs shared among the
     * threads in blocks of 16 (509: a short last block) */
    check_fc(1, 520, 509);
    check_fc(3, 600, 450);
}

Test(fc, through_backend_table) {
    const osp_backend *be = osp_backend_cpu_reference();
    float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0}, b[2] = {0.5f, -0.5f}, y[4];
    be->fc_forward(2, 3, 2, x, w, b, y);
    float want[4] = {1 - 3 + 0.5f, 2 + 2 - 0.5f, 4 - 6 + 0.5f, 8 + 5 - 0.5f};
    for (int i = 0; i < 4; i++) cr_assert_float_eq(y[i], want[i], 1e-6);
}
