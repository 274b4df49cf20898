/* The SIMD backends (the multiversioned pool, batchnorm and activation
 * kernels; conv has its own cases in test_conv.c) against the portable
 * reference on the same inputs: every slot, forward and backward, within
 * 1e-5 relative. A variant this CPU cannot run is skipped. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/kernels.h"

enum { N = 3, C = 5, H = 13, W = 11, COUNT = N * C * H * W };

static void fill(float *v, int n, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) v[i] = 4 * osp_rng_uniform(&r) - 2;
}

static void close_all(const char *be, const char *what, const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++)
        cr_assert(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])), "%s %s[%d] = %.8g, want %.8g",
                  be, what, i, got[i], want[i]);
}

static void compare(const osp_backend *v) {
    const osp_backend *ref = osp_backend_cpu_reference();
    static float x[COUNT], dy[COUNT], a[COUNT], b[COUNT], da[COUNT], db[COUNT];
    static int32_t am[COUNT], bm[COUNT];
    fill(x, COUNT, 1);
    fill(dy, COUNT, 2);
    for (int act = OSP_ACT_NONE; act <= OSP_ACT_SWISH; act++) {
        ref->activation_forward(act, 0.1f, COUNT, x, a);
        v->activation_forward(act, 0.1f, COUNT, x, b);
        close_all(v->name, "activation y", b, a, COUNT);
        memset(da, 0, sizeof da), memset(db, 0, sizeof db);
        ref->activation_backward(act, 0.1f, COUNT, x, a, dy, da);
        v->activation_backward(act, 0.1f, COUNT, x, a, dy, db);
        close_all(v->name, "activation dx", db, da, COUNT);
    }
    float g[C], bt[C], rm[C], rv[C], rm2[C], rv2[C], sm[C], si[C], sm2[C], si2[C];
    fill(g, C, 3), fill(bt, C, 4);
    for (int c = 0; c < C; c++) rm[c] = rm2[c] = 0, rv[c] = rv2[c] = 1;
    ref->batchnorm_forward_train(N, C, H * W, x, g, bt, 0.1f, 1e-5f, rm, rv, sm, si, a);
    v->batchnorm_forward_train(N, C, H * W, x, g, bt, 0.1f, 1e-5f, rm2, rv2, sm2, si2, b);
    close_all(v->name, "bn y", b, a, COUNT);
    close_all(v->name, "bn running var", rv2, rv, C);
    ref->batchnorm_forward_infer(N, C, H * W, x, g, bt, rm, rv, 1e-5f, a);
    v->batchnorm_forward_infer(N, C, H * W, x, g, bt, rm, rv, 1e-5f, b);
    close_all(v->name, "bn infer y", b, a, COUNT);
    float dg[C] = {0}, dbt[C] = {0}, dg2[C] = {0}, dbt2[C] = {0};
    memset(da, 0, sizeof da), memset(db, 0, sizeof db);
    ref->batchnorm_backward(N, C, H * W, x, dy, g, sm, si, da, dg, dbt);
    v->batchnorm_backward(N, C, H * W, x, dy, g, sm, si, db, dg2, dbt2);
    close_all(v->name, "bn dx", db, da, COUNT);
    close_all(v->name, "bn dgamma", dg2, dg, C);
    osp_conv_desc d = {.n = N, .c = C, .h = H, .w = W, .k = C, .kh = 3, .kw = 3, .stride_h = 2,
                       .stride_w = 2, .pad_h = 1, .pad_w = 1, .dil_h = 1, .dil_w = 1, .groups = 1};
    d.p = osp_conv_out_size(H, 3, 2, 1, 1, 0);
    d.q = osp_conv_out_size(W, 3, 2, 1, 1, 0);
    const int ny = N * C * d.p * d.q;
    ref->maxpool_forward(&d, x, a, am);
    v->maxpool_forward(&d, x, b, bm);
    close_all(v->name, "maxpool y", b, a, ny);
    cr_assert(!memcmp(am, bm, (size_t)ny * sizeof(int32_t)), "%s maxpool argmax", v->name);
    memset(da, 0, sizeof da), memset(db, 0, sizeof db);
    ref->maxpool_backward(&d, dy, am, da);
    v->maxpool_backward(&d, dy, am, db);
    close_all(v->name, "maxpool dx", db, da, COUNT);
    ref->avgpool_forward(&d, 0, x, a);
    v->avgpool_forward(&d, 0, x, b);
    close_all(v->name, "avgpool y", b, a, ny);
    memset(da, 0, sizeof da), memset(db, 0, sizeof db);
    ref->avgpool_backward(&d, 1, dy, da);
    v->avgpool_backward(&d, 1, dy, db);
    close_all(v->name, "avgpool dx", db, da, COUNT);
}

Test(variants, match_reference) {
    static const char *const names[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        const osp_backend *v = osp_backend_find(names[i]);
        if (v) compare(v);
    }
    /* The reference is always there, and OSP_BACKEND picks it. */
    cr_assert_not_null(osp_backend_find("reference"));
    setenv("OSP_BACKEND", "reference", 1);
    cr_assert_eq(osp_backend_default(), osp_backend_cpu_reference());
}

/* Inference's max pooling (no argmax) against the reference's, bit for
 * bit: the stride-2 windows of every width up to past a vector run, with
 * padding, dilation, NaNs and ties. */
Test(variants, maxpool_without_argmax) {
    static const char *const names[] = {"avx2", "avx512"};
    const osp_backend *ref = osp_backend_cpu_reference();
    static const int shapes[][5] = {/* kh=kw, pad, dil, h, w */
                                    {3, 1, 1, 9, 17}, {3, 1, 1, 112, 112}, {3, 0, 1, 7, 300},
                                    {2, 0, 1, 8, 8},  {3, 1, 2, 11, 23},  {5, 2, 1, 13, 531},
                                    {4, 1, 1, 6, 10}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int k = shapes[s][0], pad = shapes[s][1], dil = shapes[s][2];
        osp_conv_desc d = {.n = 2, .c = 3, .h = shapes[s][3], .w = shapes[s][4], .k = 3, .kh = k,
                           .kw = k, .stride_h = 2, .stride_w = 2, .pad_h = pad, .pad_w = pad,
                           .dil_h = dil, .dil_w = dil, .groups = 1};
        d.p = osp_conv_out_size(d.h, k, 2, pad, dil, 0);
        d.q = osp_conv_out_size(d.w, k, 2, pad, dil, 0);
        const int nx = d.n * d.c * d.h * d.w, ny = d.n * d.c * d.p * d.q;
        float *x = malloc(nx * sizeof(float)), *a = malloc(ny * sizeof(float));
        float *b = malloc(ny * sizeof(float));
        fill(x, nx, 7 + s);
        for (int i = 0; i < nx; i += 37) x[i] = NAN;
        for (int i = 5; i < nx; i += 41) x[i] = x[i - 1]; /* ties */
        ref->maxpool_forward(&d, x, a, NULL);
        for (int i = 0; i < 2; i++) {
            const osp_backend *v = osp_backend_find(names[i]);
            if (!v) continue;
            v->maxpool_forward(&d, x, b, NULL);
            cr_assert(!memcmp(a, b, (size_t)ny * sizeof(float)), "%s maxpool %dx%d/2 on %dx%d",
                      v->name, k, k, d.h, d.w);
        }
        free(x), free(a), free(b);
    }
}

/* The same for the 3x3/2 pooling of CNN stems (padding 1), whose AVX-512
 * copy folds each row's taps before the rows: on values drawn from a few,
 * so that ties are common, with zeros of both signs, -inf and NaNs that
 * differ in their payload (which of them wins shows), on every width and
 * height up to past two strips of 16 outputs. */
Test(variants, maxpool_3x3_stride2_ties_zeros_and_nans) {
    const osp_backend *ref = osp_backend_cpu_reference(), *v = osp_backend_find("avx512");
    if (!v) return;
    for (int h = 1; h <= 70; h += 3)
        for (int w = 1; w <= 70; w++) {
            osp_conv_desc d = {.n = 1, .c = 2, .h = h, .w = w, .k = 2, .kh = 3, .kw = 3,
                               .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .dil_h = 1,
                               .dil_w = 1, .groups = 1};
            d.p = osp_conv_out_size(h, 3, 2, 1, 1, 0);
            d.q = osp_conv_out_size(w, 3, 2, 1, 1, 0);
            const int nx = d.c * h * w, ny = d.c * d.p * d.q;
            float *x = malloc(nx * sizeof(float)), *a = malloc(ny * sizeof(float));
            float *b = malloc(ny * sizeof(float));
            osp_rng r;
            osp_rng_seed(&r, (uint64_t)(h * 100 + w));
            for (int i = 0; i < nx; i++) {
                const uint64_t pick = osp_rng_below(&r, 40);
                if (pick < 3) { /* a NaN whose payload names it */
                    const uint32_t bits = 0x7fc00000u | (uint32_t)i;
                    memcpy(&x[i], &bits, sizeof bits);
                } else {
                    const float values[] = {-1.0f, -0.0f, 0.0f, 1.0f, 2.0f, -INFINITY};
                    x[i] = values[pick % 6];
                }
            }
            ref->maxpool_forward(&d, x, a, NULL);
            v->maxpool_forward(&d, x, b, NULL);
            cr_assert(!memcmp(a, b, (size_t)ny * sizeof(float)), "maxpool 3x3/2 on %dx%d", h, w);
            free(x), free(a), free(b);
        }
}
