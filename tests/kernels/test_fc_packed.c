/* The linear layer with prepared weights (fc_prepare, fc_forward_prepared)
 * on every backend that has it, against the reference backend's fc_forward
 * then special_forward: sums over fewer and more steps than one block of
 * the packed weights (256), row counts that leave every remainder of the
 * 12- and 6-row tiles, an odd number of 16-column panels, without and with
 * bias, no function, GELU and tanh GELU on one thread, and with bias and
 * GELU on two (both splits: columns, and rows where the columns are
 * few). */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/kernels.h"

static float *filled(size_t n, uint64_t seed, float scale) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    float *v = malloc(n * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = scale * (2 * osp_rng_uniform(&r) - 1);
    return v;
}

/* A sum of `in` products of values below 1 in magnitude, in another order
 * than the reference's: a few ulps of the terms' sum. */
static void close_all(const char *be, int n, int in, int out, const float *got,
                      const float *want) {
    const float tol = 1e-6f * (float)in;
    for (size_t i = 0; i < (size_t)n * out; i++)
        cr_assert(fabsf(got[i] - want[i]) <= tol * (1 + fabsf(want[i])),
                  "%s %dx%dx%d y[%zu] = %.8g, want %.8g", be, n, in, out, i, got[i], want[i]);
}

static void check_shape(const osp_backend *be, int n, int in, int out, int threads) {
    const osp_backend *ref = osp_backend_cpu_reference();
    static const int fns[] = {-1, OSP_FN_GELU, OSP_FN_GELU_TANH};
    float *x = filled((size_t)n * in, 3, 1.0f), *w = filled((size_t)out * in, 4, 0.5f);
    float *bias = filled((size_t)out, 5, 1.0f);
    float *want = malloc((size_t)n * out * sizeof(float));
    float *got = malloc((size_t)n * out * sizeof(float));
    const size_t floats = be->fc_prepared_floats(in, out);
    cr_assert_gt(floats, 0, "%s prepares nothing for %d x %d", be->name, in, out);
    /* 64-byte aligned, as osp_alloc's: the tiles load the panels aligned */
    float *prepared = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    cr_assert(want && got && prepared);
    omp_set_num_threads(threads);
    be->fc_prepare(in, out, w, prepared);
    /* every epilogue on one thread; the threads' shares with one */
    for (int with_bias = threads - 1; with_bias < 2; with_bias++)
        for (size_t f = threads - 1; f < (threads == 1 ? 3 : 2); f++) {
            const float *b = with_bias ? bias : NULL;
            ref->fc_forward(n, in, out, x, w, b, want);
            if (fns[f] >= 0)
                ref->special_forward((osp_special)fns[f], (int64_t)n * out, want, want);
            memset(got, 0xff, (size_t)n * out * sizeof(float)); /* NaNs */
            be->fc_forward_prepared(n, in, out, x, w, prepared, b, fns[f], got);
            close_all(be->name, n, in, out, got, want);
        }
    free(x), free(w), free(bias), free(want), free(got), free(prepared);
}

Test(fc_packed, matches_reference) {
    /* rows: a few (the unprepared path), 16..23 and 197 (remainders of 12
     * and 6), 3136 (ConvNeXt's first stage: rows split, blocks of 192),
     * 2048 x 512 x 512 (left to sgemm); in: 24, 256, 600 (one block,
     * exactly one, three with a short last); out: 16, 48, 96 (1, 3 and 6
     * panels), 512 */
    static const int shapes[][3] = {{3, 24, 48},   {16, 24, 16},   {17, 600, 48},
                                    {19, 256, 96}, {23, 24, 1024}, {197, 600, 96},
                                    {197, 96, 512}, {3136, 24, 96}, {2048, 512, 512}};
    static const char *const names[] = {"avx2", "avx512"};
    int tested = 0;
    for (size_t v = 0; v < 2; v++) {
        const osp_backend *be = osp_backend_find(names[v]);
        if (!be) continue;
        cr_assert_not_null(be->fc_forward_prepared, "%s", be->name);
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int threads = 1; threads <= 2; threads++)
                check_shape(be, shapes[s][0], shapes[s][1], shapes[s][2], threads);
        tested++;
    }
    if (!tested) cr_skip_test("no AVX2: no backend prepares fc weights");
}

/* Widths that are not a multiple of 16 are left to the unprepared path;
 * the reference prepares nothing. */
Test(fc_packed, declines_ragged_widths) {
    cr_assert_null(osp_backend_cpu_reference()->fc_prepared_floats);
    static const char *const names[] = {"avx2", "avx512"};
    for (size_t v = 0; v < 2; v++) {
        const osp_backend *be = osp_backend_find(names[v]);
        if (!be) continue;
        cr_assert_eq(be->fc_prepared_floats(768, 1000), 0);
        cr_assert_eq(be->fc_prepared_floats(768, 8), 0);
        cr_assert_eq(be->fc_prepared_floats(768, 3072), (size_t)768 * 3072);
    }
}
