/* Convolution kernels against a naive loop, forward and both backwards, over
 * the paths the CPU kernel takes: several images per GEMM (with a one-image
 * remainder), pointwise 1x1, grouped, depthwise (with a channel
 * multiplier), strides, padding, dilation, odd sizes, threads over images
 * and over the rows of a lone image, and the fused activation epilogue.
 * Every case runs on every CPU backend this machine supports (the portable
 * reference always). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_kernels.h"
#include "osprey/kernels.h"

typedef struct conv_case {
    const char *name;
    int n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups;
} conv_case;

static osp_conv_desc make_desc(const conv_case *t) {
    osp_conv_desc d = {.n = t->n, .c = t->c, .h = t->h, .w = t->w, .k = t->k, .kh = t->kh,
                       .kw = t->kw, .stride_h = t->sh, .stride_w = t->sw, .pad_h = t->ph,
                       .pad_w = t->pw, .dil_h = t->dh, .dil_w = t->dw, .groups = t->groups};
    d.p = osp_conv_out_size(t->h, t->kh, t->sh, t->ph, t->dh, 0);
    d.q = osp_conv_out_size(t->w, t->kw, t->sw, t->pw, t->dw, 0);
    cr_assert(d.p > 0 && d.q > 0, "%s: bad case", t->name);
    return d;
}

/* Exact-size heap blocks so that AddressSanitizer sees any overrun. */
static float *rand_buf(size_t n, osp_rng *r) {
    float *v = malloc((n ? n : 1) * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = 2 * osp_rng_uniform(r) - 1;
    return v;
}

static float *copy_buf(const float *v, size_t n) {
    float *c = malloc((n ? n : 1) * sizeof(float));
    memcpy(c, v, n * sizeof(float));
    return c;
}

/* Stale workspace must never leak into results: start it as NaN. A kernel
 * that asked for none gets NULL. */
static void *nan_workspace(size_t bytes) {
    if (!bytes) return NULL;
    void *ws = malloc(bytes);
    cr_assert_not_null(ws);
    for (size_t i = 0; i < bytes / sizeof(float); i++) ((float *)ws)[i] = NAN;
    return ws;
}

/* Runs body for every (image, filter, output pixel, tap) whose tap lands
 * inside the input, with xi, yi, wi the flat indices into x, y and w. */
#define FOR_EACH_TAP(d, body)                                                               \
    for (int n_ = 0; n_ < (d)->n; n_++)                                                     \
        for (int k_ = 0; k_ < (d)->k; k_++)                                                 \
            for (int p_ = 0; p_ < (d)->p; p_++)                                             \
                for (int q_ = 0; q_ < (d)->q; q_++)                                         \
                    for (int cc_ = 0; cc_ < (d)->c / (d)->groups; cc_++)                    \
                        for (int i_ = 0; i_ < (d)->kh; i_++)                                \
                            for (int j_ = 0; j_ < (d)->kw; j_++) {                          \
                                int kg_ = (d)->k / (d)->groups;                             \
                                int c_ = k_ / kg_ * ((d)->c / (d)->groups) + cc_;           \
                                int h_ = p_ * (d)->stride_h - (d)->pad_h + i_ * (d)->dil_h; \
                                int w_ = q_ * (d)->stride_w - (d)->pad_w + j_ * (d)->dil_w; \
                                if (h_ < 0 || h_ >= (d)->h || w_ < 0 || w_ >= (d)->w)       \
                                    continue;                                               \
                                int64_t xi = (((int64_t)n_ * (d)->c + c_) * (d)->h + h_) *  \
                                                 (d)->w + w_;                               \
                                int64_t yi = (((int64_t)n_ * (d)->k + k_) * (d)->p + p_) *  \
                                                 (d)->q + q_;                               \
                                int64_t wi = (((int64_t)k_ * ((d)->c / (d)->groups) + cc_) * \
                                                  (d)->kh + i_) * (d)->kw + j_;             \
                                body;                                                       \
                            }

static void ref_forward(const osp_conv_desc *d, const float *x, const float *w, const float *b,
                        double *y) {
    size_t ny = (size_t)d->n * d->k * d->p * d->q;
    for (size_t i = 0; i < ny; i++) y[i] = b ? b[i / ((size_t)d->p * d->q) % d->k] : 0.0;
    FOR_EACH_TAP(d, y[yi] += (double)x[xi] * w[wi]);
}

static void ref_backward(const osp_conv_desc *d, const float *x, const float *w, const float *dy,
                         double *dx, double *dw, double *db) {
    FOR_EACH_TAP(d, {
        dx[xi] += (double)dy[yi] * w[wi];
        dw[wi] += (double)dy[yi] * x[xi];
    });
    size_t ny = (size_t)d->n * d->k * d->p * d->q;
    for (size_t i = 0; i < ny; i++) db[i / ((size_t)d->p * d->q) % d->k] += dy[i];
}

static void expect_close(const char *name, const char *what, const float *got, const double *want,
                         size_t n) {
    for (size_t i = 0; i < n; i++) {
        double tol = 1e-4 + 1e-4 * fabs(want[i]);
        cr_assert(fabs(got[i] - want[i]) <= tol, "%s: %s[%zu] = %.7g, expected %.7g", name, what,
                  i, got[i], want[i]);
    }
}

/* y = act(y) as activation.c computes it, for the epilogue check. */
static double apply_act(int act, double v) {
    switch (act) {
    case OSP_ACT_RELU: return v < 0 ? 0 : v;
    case OSP_ACT_RELU6: return v < 0 ? 0 : v > 6 ? 6 : v;
    case OSP_ACT_LEAKY_RELU: return v < 0 ? 0.1 * v : v;
    default: return v;
    }
}

static void check_case_on(const osp_backend *be, const conv_case *t) {
    osp_conv_desc d = make_desc(t);
    osp_rng r;
    osp_rng_seed(&r, 1234);
    size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.k * d.p * d.q;
    size_t nw = (size_t)d.k * (d.c / d.groups) * d.kh * d.kw, nb = (size_t)d.k;
    float *x = rand_buf(nx, &r), *w = rand_buf(nw, &r), *b = rand_buf(nb, &r);
    float *dy = rand_buf(ny, &r);
    /* Backward kernels accumulate: start the gradients at random values. */
    float *dx0 = rand_buf(nx, &r), *dw0 = rand_buf(nw, &r), *db0 = rand_buf(nb, &r);
    size_t ws_bytes = be->conv2d_workspace(&d);
    void *ws = nan_workspace(ws_bytes);

    double *ry = calloc(ny, sizeof(double)), *rdx = calloc(nx, sizeof(double));
    double *rdw = calloc(nw, sizeof(double)), *rdb = calloc(nb, sizeof(double));
    ref_backward(&d, x, w, dy, rdx, rdw, rdb);

    static const int acts[] = {OSP_ACT_RELU, OSP_ACT_RELU6, OSP_ACT_LEAKY_RELU};
    for (int with_bias = 0; with_bias < 3; with_bias++) {
        float *y = rand_buf(ny, &r), *y2 = rand_buf(ny, &r);
        /* 2: bias and a fused activation (each case a different one) */
        osp_conv_desc da = d;
        if (with_bias == 2) {
            da.act = acts[(t->n + t->c + t->k) % 3];
            da.act_alpha = 0.1f;
        }
        ref_forward(&d, x, w, with_bias ? b : NULL, ry);
        if (with_bias == 2) {
            /* a fused residual add, before the activation */
            float *res = rand_buf(ny, &r), *yr = rand_buf(ny, &r);
            double *want = calloc(ny, sizeof(double));
            for (size_t i = 0; i < ny; i++) want[i] = apply_act(da.act, ry[i] + res[i]);
            osp_conv_desc dr = da;
            dr.residual = res;
            be->conv2d_forward(&dr, x, w, b, yr, ws);
            expect_close(t->name, "y (residual)", yr, want, ny);
            free(res);
            free(yr);
            free(want);
        }
        for (size_t i = 0; i < ny; i++) ry[i] = apply_act(da.act, ry[i]);
        be->conv2d_forward(&da, x, w, with_bias ? b : NULL, y, ws);
        expect_close(t->name, with_bias == 2 ? "y (fused act)" : with_bias ? "y" : "y (no bias)", y,
                     ry, ny);
        be->conv2d_forward(&da, x, w, with_bias ? b : NULL, y2, ws);
        cr_assert(!memcmp(y, y2, ny * sizeof(float)), "%s: forward is not deterministic", t->name);
        /* with the filters prepared (AVX2: Winograd's transform, which then
         * serves a lone image too) */
        const size_t np = be->conv2d_prepared_floats(&d);
        if (np) {
            float *prep = rand_buf(np, &r);
            be->conv2d_prepare(&d, w, prep);
            da.prepared = prep;
            be->conv2d_forward(&da, x, w, with_bias ? b : NULL, y2, ws);
            expect_close(t->name, "y (prepared filters)", y2, ry, ny);
            free(prep);
        }
        free(y);
        free(y2);
    }

    float *dx = copy_buf(dx0, nx);
    be->conv2d_backward_data(&d, dy, w, dx, ws);
    for (size_t i = 0; i < nx; i++) rdx[i] += dx0[i];
    expect_close(t->name, "dx", dx, rdx, nx);

    float *dw = copy_buf(dw0, nw), *db = copy_buf(db0, nb);
    float *dw2 = copy_buf(dw0, nw), *db2 = copy_buf(db0, nb);
    be->conv2d_backward_filter(&d, x, dy, dw, db, ws);
    for (size_t i = 0; i < nw; i++) rdw[i] += dw0[i];
    for (size_t i = 0; i < nb; i++) rdb[i] += db0[i];
    expect_close(t->name, "dw", dw, rdw, nw);
    expect_close(t->name, "db", db, rdb, nb);
    be->conv2d_backward_filter(&d, x, dy, dw2, db2, ws);
    cr_assert(!memcmp(dw, dw2, nw * sizeof(float)) && !memcmp(db, db2, nb * sizeof(float)),
              "%s: backward_filter is not deterministic", t->name);

    /* NULL gradients are skipped; the other one is still right. */
    memcpy(dw2, dw0, nw * sizeof(float));
    memcpy(db2, db0, nb * sizeof(float));
    be->conv2d_backward_filter(&d, x, dy, NULL, db2, ws);
    expect_close(t->name, "db (dw NULL)", db2, rdb, nb);
    be->conv2d_backward_filter(&d, x, dy, dw2, NULL, ws);
    expect_close(t->name, "dw (db NULL)", dw2, rdw, nw);

    void *blocks[] = {x, w, b, dy, dx0, dw0, db0, ws, ry, rdx, rdw, rdb, dx, dw, db, dw2, db2};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) free(blocks[i]);
}

static void check_case(const conv_case *t) {
    static const char *const names[] = {"reference", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        const osp_backend *be = osp_backend_find(names[i]);
        if (be) check_case_on(be, t); /* NULL: this CPU lacks the instructions */
    }
}

static void check_all(const conv_case *cases, int n) {
    for (int i = 0; i < n; i++) check_case(&cases[i]);
}

/*                  name            n  c  h   w   k  kh kw sh sw ph pw dh dw groups */
Test(conv, plain) {
    static const conv_case cases[] = {
        {"3x3 pad 1",             3, 3, 7,  9,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"5x5 no pad",            2, 1, 11, 10, 4, 5, 5, 1, 1, 0, 0, 1, 1, 1},
        {"3x5 window",            2, 2, 8,  9,  3, 3, 5, 1, 1, 1, 2, 1, 1, 1},
        {"one image",             1, 3, 6,  5,  2, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        /* 13x13 outputs: 4 images per GEMM (TARGET_COLS 512 in conv.c) */
        {"gemm remainder of 1",   5, 2, 13, 13, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"gemm remainder of 3",   7, 2, 13, 13, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"window = input",        2, 3, 4,  5,  6, 4, 5, 1, 1, 0, 0, 1, 1, 1},
        /* large enough for the OpenMP loops to run in parallel */
        {"parallel",              4, 8, 20, 21, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        /* over 2 MFLOP: threads over images (5 images: unequal shares) */
        {"threads over images",   5, 16, 24, 23, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        /* one image: threads over output rows */
        {"threads over rows",     1, 16, 33, 31, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"rows, stride 2",        1, 16, 33, 31, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        /* a thread's rows in blocks of 13 (128K floats of 147 x 64 columns) */
        {"rows in blocks, 7x7/2", 1, 3, 128, 128, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1},
        /* one image with a small plane: threads over output channels */
        {"threads over channels", 1, 128, 7, 7, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        /* AVX2: Winograd F(2x2, 3x3) from 64 channels and 7x7 planes:
         * threads over images; a lone image of odd sides (half tiles) with
         * threads over its channels and GEMMs; tile rows of 8 + 7; lone
         * images on small planes, which take it only with prepared
         * filters; 64 channels in and out over more than 196 tiles: bands
         * of tile rows (two of 8 rows of 17 tiles), shared by the threads
         * over one image or three */
        {"winograd images",       2, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd lone, odd",    1, 64, 29, 27, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd 3 images",     3, 65, 16, 30, 67, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd 7x7 images",   2, 64, 7,  7,  72, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd lone 14x14",   1, 66, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd lone 7x9",     1, 64, 7,  9,  64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd lone, bands",  1, 64, 31, 33, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"winograd bands",        3, 64, 32, 34, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"channels, 1x1",         1, 256, 9, 9, 256, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        /* threads over channels (or columns) that share one column
         * matrix, filled by all of them (rows of taps split unevenly: 7 x 9
         * = 63) */
        {"channels, 3x3/2",       1, 7, 29, 27, 96, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {"channels, 1x1/2",       1, 67, 13, 13, 192, 1, 1, 2, 2, 0, 0, 1, 1, 1},
        /* fewer output channels than columns: threads over columns, in
         * pairs of panels (96 + 100, 64 + 79; "channels, 3x3/2" above:
         * 96 + 114 of a shared column matrix) */
        {"columns, 1x1",          1, 96, 14, 14, 40, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"columns, 1x1, odd",     1, 50, 11, 13, 36, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    };
    check_all(cases, sizeof cases / sizeof cases[0]);
}

Test(conv, stride_pad_dilation) {
    static const conv_case cases[] = {
        {"stride 2",              3, 3, 9,  8,  4, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {"stride 2x3",            2, 2, 11, 13, 3, 3, 3, 2, 3, 0, 1, 1, 1, 1},
        {"pad 2",                 2, 2, 5,  7,  3, 3, 3, 1, 1, 2, 2, 1, 1, 1},
        {"dilation 2",            2, 3, 9,  9,  4, 3, 3, 1, 1, 2, 2, 2, 2, 1},
        {"dilation 2x3 stride 2", 2, 2, 12, 13, 3, 3, 2, 2, 2, 1, 0, 2, 3, 1},
        {"7x7 stride 2 pad 3",    2, 3, 15, 17, 4, 7, 7, 2, 2, 3, 3, 1, 1, 1},
        /* im2col's vector gather of every second column: rows of 8k + 1
         * inputs, their last load ending at the plane's last float */
        {"stride 2, wide rows",   2, 2, 5,  49, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {"1x1 stride 2, 33 wide", 1, 2, 3,  33, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1},
        /* column matrices over 256K floats go a block of output rows at a
         * time: 147 x 3306 here, blocks of 31 rows and a last of 27 */
        {"row blocks 7x7/2",      2, 3, 115, 113, 4, 7, 7, 2, 2, 3, 3, 1, 1, 1},
    };
    check_all(cases, sizeof cases / sizeof cases[0]);
}

Test(conv, groups) {
    static const conv_case cases[] = {
        {"groups 2",              3, 4, 7,  6,  6, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"groups 3 stride 2",     2, 6, 9,  9,  3, 3, 3, 2, 2, 1, 1, 1, 1, 3},
        {"groups 2, 1x1",         3, 4, 5,  5,  2, 1, 1, 1, 1, 0, 0, 1, 1, 2},
        {"groups 2, row blocks",  2, 4, 100, 100, 4, 5, 5, 1, 1, 0, 0, 1, 1, 2},
    };
    check_all(cases, sizeof cases / sizeof cases[0]);
}

Test(conv, depthwise) {
    static const conv_case cases[] = {
        {"depthwise 3x3",         3, 4, 7,  8,  4, 3, 3, 1, 1, 1, 1, 1, 1, 4},
        {"depthwise stride 2",    2, 5, 9,  10, 5, 3, 3, 2, 2, 1, 1, 1, 1, 5},
        {"depthwise dilation 2",  2, 3, 9,  9,  3, 3, 3, 1, 1, 2, 2, 2, 2, 3},
        {"depthwise multiplier",  2, 3, 6,  7,  6, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"depthwise 5x3 stride",  2, 2, 11, 7,  2, 5, 3, 2, 3, 2, 1, 1, 1, 2},
        {"depthwise parallel",    4, 16, 24, 23, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16},
        /* 3x3 at stride 1 or 2 and padding up to 2 have their own AVX-512
         * and AVX2 kernels: 16 (8) output columns a vector (widths below,
         * at and above 8, 16 and 32), 4 output rows a pass (heights that
         * leave 1 to 3 rows over), masked loads (AVX2: zero-padded copies,
         * even and odd columns apart at stride 2) at the edges */
        {"dw3 s1 7x7",            3, 4, 7,  7,  4, 3, 3, 1, 1, 1, 1, 1, 1, 4},
        {"dw3 s1 w8",             1, 3, 5,  8,  3, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"dw3 s1 w15 x2",         3, 3, 3,  15, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"dw3 s1 w16",            1, 2, 9,  16, 2, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"dw3 s1 w17",            3, 2, 6,  17, 2, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"dw3 s1 w33 x2",         1, 2, 11, 33, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"dw3 s1 w56",            1, 3, 13, 56, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"dw3 s1 1x1 plane",      3, 2, 1,  1,  4, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"dw3 s1 h2",             1, 2, 2,  9,  2, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"dw3 s1 pad 0 w7",       3, 3, 5,  7,  3, 3, 3, 1, 1, 0, 0, 1, 1, 3},
        {"dw3 s1 pad 0 w17 x2",   1, 2, 9,  17, 4, 3, 3, 1, 1, 0, 0, 1, 1, 2},
        {"dw3 s1 pad 0 w33",      3, 2, 7,  33, 2, 3, 3, 1, 1, 0, 0, 1, 1, 2},
        {"dw3 s1 pad 0x1",        1, 3, 7,  15, 3, 3, 3, 1, 1, 0, 1, 1, 1, 3},
        {"dw3 s1 pad 2",          3, 2, 5,  8,  4, 3, 3, 1, 1, 2, 2, 1, 1, 2},
        {"dw3 s2 7x7",            3, 3, 7,  7,  3, 3, 3, 2, 2, 1, 1, 1, 1, 3},
        {"dw3 s2 w8 x2",          1, 2, 5,  8,  4, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw3 s2 w15",            3, 4, 9,  15, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4},
        {"dw3 s2 w16",            1, 2, 3,  16, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw3 s2 w17 x2",         3, 2, 11, 17, 4, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw3 s2 w33",            1, 3, 13, 33, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3},
        {"dw3 s2 w56",            3, 2, 17, 56, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw3 s2 h2",             1, 2, 2,  7,  2, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw3 s2 pad 0 w16",      3, 2, 7,  16, 2, 3, 3, 2, 2, 0, 0, 1, 1, 2},
        {"dw3 s2 pad 0 w33 x2",   1, 2, 9,  33, 4, 3, 3, 2, 2, 0, 0, 1, 1, 2},
        {"dw3 s2 pad 0 w67",      3, 2, 5,  67, 2, 3, 3, 2, 2, 0, 0, 1, 1, 2},
        {"dw3 s2 pad 1x0",        1, 3, 8,  17, 3, 3, 3, 2, 2, 1, 0, 1, 1, 3},
        {"dw3 s2 pad 2",          3, 2, 9,  17, 2, 3, 3, 2, 2, 2, 2, 1, 1, 2},
        /* over the kernel's threshold for threads over planes */
        /* AVX2: eight channels at a time (13: a group of 8 and one of 5),
         * large planes a band of rows at a time */
        {"dw3 s1 40x37",          1, 3, 40, 37, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"dw3 s2 45x41",          1, 2, 45, 41, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw3 13 channels s2",    2, 13, 9, 11, 13, 3, 3, 2, 2, 0, 0, 1, 1, 13},
        {"dw3 13 channels pad 2", 1, 13, 6, 5, 13, 3, 3, 1, 1, 2, 2, 1, 1, 13},
        /* stride 2 on a plane too large for one band: 5 output rows a band */
        {"dw3 s2 bands of rows",  1, 9, 20, 112, 9, 3, 3, 2, 2, 1, 1, 1, 1, 9},
        {"dw3 s1 bands of rows",  2, 9, 23, 112, 9, 3, 3, 1, 1, 1, 1, 1, 1, 9},
        {"dw3 s1 parallel",       3, 32, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32},
        {"dw3 s2 parallel x2",    2, 16, 56, 56, 32, 3, 3, 2, 2, 1, 1, 1, 1, 16},
    };
    check_all(cases, sizeof cases / sizeof cases[0]);

    /* The activations that check_case does not fuse, and ReLU6 on outputs
     * large enough to reach its upper clamp, on every backend. */
    static const int acts[] = {OSP_ACT_SIGMOID, OSP_ACT_TANH, OSP_ACT_SWISH, OSP_ACT_RELU6};
    static const conv_case act_cases[] = {
        {"dw3 s1 activations",    2, 3, 9,  17, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"dw3 s2 activations",    2, 3, 9,  17, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3},
        {"dw 5x3 activations",    2, 2, 11, 7,  2, 5, 3, 2, 3, 2, 1, 1, 1, 2},
    };
    static const char *const names[] = {"reference", "avx2", "avx512"};
    for (size_t c = 0; c < sizeof act_cases / sizeof act_cases[0]; c++) {
        osp_conv_desc d = make_desc(&act_cases[c]);
        osp_rng r;
        osp_rng_seed(&r, 99);
        size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.k * d.p * d.q;
        float *x = rand_buf(nx, &r), *w = rand_buf((size_t)d.k * d.kh * d.kw, &r);
        float *b = rand_buf((size_t)d.k, &r), *y = rand_buf(ny, &r);
        for (size_t i = 0; i < nx; i++) x[i] *= 4; /* some outputs above 6 */
        double *want = calloc(ny, sizeof(double));
        for (int a = 0; a < 4; a++) {
            ref_forward(&d, x, w, b, want);
            for (size_t i = 0; i < ny; i++) {
                double v = want[i], sig = 1 / (1 + exp(-v));
                want[i] = acts[a] == OSP_ACT_SIGMOID ? sig
                          : acts[a] == OSP_ACT_TANH  ? tanh(v)
                          : acts[a] == OSP_ACT_SWISH ? v * sig
                                                     : apply_act(acts[a], v);
            }
            osp_conv_desc da = d;
            da.act = acts[a];
            for (int i = 0; i < 3; i++) {
                const osp_backend *be = osp_backend_find(names[i]);
                if (!be) continue;
                be->conv2d_forward(&da, x, w, b, y, NULL);
                expect_close(act_cases[c].name, "y (activation)", y, want, ny);
            }
        }
        free(x);
        free(w);
        free(b);
        free(y);
        free(want);
    }
}

Test(conv, pointwise) {
    static const conv_case cases[] = {
        {"1x1 grouped images",    3, 5, 6,  7,  4, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 one image",         1, 5, 6,  7,  4, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        /* 529 outputs per image: one image per GEMM, x used in place */
        {"1x1 large planes",      3, 3, 23, 23, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 stride 2",          2, 3, 7,  9,  4, 1, 1, 2, 2, 0, 0, 1, 1, 1},
        {"1x1 pad 1",             2, 3, 4,  5,  2, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {"1x1 threads over rows", 1, 64, 17, 16, 64, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 threads, images",   3, 64, 16, 16, 48, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        /* more inputs than one block of the AVX2 GEMM (256) and planes
         * narrower than its 16-column tiles, which then span images */
        {"1x1 long sums, 15 px",  3, 300, 5, 3, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"3x3 long sums, 20 px",  3, 40, 4, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        /* six full panels of one image packed row by row, then a panel
         * of 4 columns on its own, in two blocks of the sums */
        {"1x1 long sums, 100 px", 1, 300, 10, 10, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        /* 49 columns: the AVX2 GEMM's lone last column by dot products
         * (sums of 13: a tail past the vectors of 8; of 300: two blocks) */
        {"1x1 7x7, last column",  1, 13, 7, 7, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 7x7, long sums",    1, 300, 7, 7, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        /* a last panel of 8 columns or fewer is 8 wide: 24 = 16 + 8 in
         * place, 49 = 3 x 16 + 1 through the scratch tile */
        {"1x1 narrow last panel", 1, 20, 4, 6, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"3x3 7x7 narrow panel",  1, 12, 7, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    };
    check_all(cases, sizeof cases / sizeof cases[0]);
}

Test(conv, workspace_size) {
    /* Depthwise needs no scratch. */
    conv_case dw = {"dw", 4, 8, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8};
    osp_conv_desc d = make_desc(&dw);
    cr_assert_eq(osp__cpu_conv2d_workspace(&d), 0);
    /* Every variant asks for the same scratch, so one plan serves all. */
    conv_case pw = {"pw", 4, 8, 64, 64, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    d = make_desc(&pw);
    const osp_backend *be = osp_backend_default();
    cr_assert_eq(osp_backend_cpu_reference()->conv2d_workspace(&d), be->conv2d_workspace(&d));
}

/* "Same" windows at stride 1, which the AVX-512 backend computes directly
 * (conv_direct.h): flattened planes whose rows do and do not fill 16 lanes
 * or end inside a vector, output channels that leave 4- and 1-channel tiles,
 * a lone image split over threads by rows, several chunks of images in the
 * filter gradient, input channels in chunks, and windows other than 3x3. */
Test(conv, direct_same) {
    static const conv_case cases[] = {
        {"same 32x32",            3, 5,  32, 32, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same 8x8, 13 outputs",  4, 7,  8,  8,  13, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same 9x9, 5 outputs",   2, 3,  9,  9,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same 17x15",            2, 4,  17, 15, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same 5x13 plane",       3, 6,  5,  13, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        /* under 64 pixels: im2col + sgemm */
        {"same 7x7 plane",        2, 4,  7,  7,  3, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same lone image rows",  1, 16, 33, 31, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same filter chunks",    9, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same 5x5",              2, 3,  12, 11, 10, 5, 5, 1, 1, 2, 2, 1, 1, 1},
        {"same 1x3",              2, 4,  9,  18, 6, 1, 3, 1, 1, 0, 1, 1, 1, 1},
        /* input channels in chunks of 576 inner terms: 64 + 6, and 23 + 2 */
        {"same 70 channels",      2, 70, 8,  9,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"same 5x5, 25 channels", 2, 25, 8,  9,  5, 5, 5, 1, 1, 2, 2, 1, 1, 1},
    };
    check_all(cases, sizeof cases / sizeof cases[0]);
}

/* The AVX-512 copy of the GEMM takes one or two full panels of 16 columns
 * for 6 or 12 rows in one tile of 512-bit sums; each lane still sums in the
 * same order, so its outputs are the AVX2 copy's bit for bit: 1x1 layers
 * on planes of 4x8, 8x8, 10x10 and 4x5 (one or two pairs of panels per
 * image, a lone panel after them, panels straddling images, a narrow last
 * panel; 13, 14, 16, 20 and 26 rows: tiles of 12, 8, 6 and 4 rows and
 * what is left), sums in two blocks, a residual, ReLU, filters in place
 * and packed. */
Test(conv, avx512_gemm_same_bits) {
    const osp_backend *a = osp_backend_find("avx2"), *b = osp_backend_find("avx512");
    if (!a || !b) cr_skip_test("this CPU lacks AVX2 or AVX-512");
    static const conv_case cases[] = {
        {"1x1 4x8, 3 images",    3, 300, 4,  8,  16, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 8x8, 2 images",    2, 300, 8,  8,  20, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 8x8, one image",   1, 300, 8,  8,  14, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 10x10, one image", 1, 300, 10, 10, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 4x5, 2 images",    2, 300, 4,  5,  20, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"1x1 4x5, one image",   1, 300, 4,  5,  26, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        osp_conv_desc d = make_desc(&cases[c]);
        d.act = OSP_ACT_RELU;
        osp_rng r;
        osp_rng_seed(&r, 7);
        size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.k * d.p * d.q;
        float *x = rand_buf(nx, &r), *w = rand_buf((size_t)d.k * d.c, &r);
        float *bias = rand_buf((size_t)d.k, &r), *res = rand_buf(ny, &r);
        float *ya = rand_buf(ny, &r), *yb = rand_buf(ny, &r);
        d.residual = res;
        void *wsa = nan_workspace(a->conv2d_workspace(&d));
        void *wsb = nan_workspace(b->conv2d_workspace(&d));
        a->conv2d_forward(&d, x, w, bias, ya, wsa);
        b->conv2d_forward(&d, x, w, bias, yb, wsb);
        cr_assert(!memcmp(ya, yb, ny * sizeof(float)), "%s: in place", cases[c].name);
        const size_t np = b->conv2d_prepared_floats(&d);
        if (np && np == a->conv2d_prepared_floats(&d)) {
            float *pa = rand_buf(np, &r), *pb = rand_buf(np, &r);
            a->conv2d_prepare(&d, w, pa);
            b->conv2d_prepare(&d, w, pb);
            osp_conv_desc da = d, db = d;
            da.prepared = pa;
            db.prepared = pb;
            a->conv2d_forward(&da, x, w, bias, ya, wsa);
            b->conv2d_forward(&db, x, w, bias, yb, wsb);
            cr_assert(!memcmp(ya, yb, ny * sizeof(float)), "%s: packed filters", cases[c].name);
            free(pa);
            free(pb);
        }
        void *blocks[] = {x, w, bias, res, ya, yb, wsa, wsb};
        for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) free(blocks[i]);
    }
}
