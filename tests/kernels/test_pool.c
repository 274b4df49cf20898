/* Pooling kernels against naive loops: max (value, argmax, backward through
 * the argmax) and average (both padding rules; the divisor written as
 * PyTorch's avg_pool2d computes it), over odd sizes, strides, padding, ceil
 * mode, windows wholly in padding, and the whole-plane (global) case. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_kernels.h"
#include "osprey/kernels.h"

typedef struct pool_case {
    const char *name;
    int n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ceil;
} pool_case;

static osp_conv_desc make_desc(const pool_case *t) {
    osp_conv_desc d = {.n = t->n, .c = t->c, .h = t->h, .w = t->w, .k = t->c, .kh = t->kh,
                       .kw = t->kw, .stride_h = t->sh, .stride_w = t->sw, .pad_h = t->ph,
                       .pad_w = t->pw, .dil_h = t->dh, .dil_w = t->dw, .groups = 1};
    d.p = osp_conv_out_size(t->h, t->kh, t->sh, t->ph, t->dh, t->ceil);
    d.q = osp_conv_out_size(t->w, t->kw, t->sw, t->pw, t->dw, t->ceil);
    cr_assert(d.p > 0 && d.q > 0, "%s: bad case", t->name);
    return d;
}

static float *rand_buf(size_t n, unsigned seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    float *v = malloc((n ? n : 1) * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = 2 * osp_rng_uniform(&r) - 1;
    return v;
}

static void ref_maxpool(const osp_conv_desc *d, const float *x, float *y, int32_t *am) {
    for (int t = 0; t < d->n * d->c; t++)
        for (int p = 0; p < d->p; p++)
            for (int q = 0; q < d->q; q++) {
                float best = 0;
                int32_t at = -1;
                for (int i = 0; i < d->kh; i++)
                    for (int j = 0; j < d->kw; j++) {
                        int h = p * d->stride_h - d->pad_h + i * d->dil_h;
                        int w = q * d->stride_w - d->pad_w + j * d->dil_w;
                        if (h < 0 || h >= d->h || w < 0 || w >= d->w) continue;
                        float v = x[(size_t)t * d->h * d->w + (size_t)h * d->w + w];
                        if (at < 0 || v > best) {
                            best = v;
                            at = h * d->w + w;
                        }
                    }
                size_t o = ((size_t)t * d->p + p) * d->q + q;
                y[o] = best;
                am[o] = at;
            }
}

/* PyTorch's avg_pool2d (dilation 1). */
static void ref_avgpool(const osp_conv_desc *d, int exclude_pad, const float *x, const float *dy,
                        double *y, double *dx) {
    for (int t = 0; t < d->n * d->c; t++)
        for (int p = 0; p < d->p; p++)
            for (int q = 0; q < d->q; q++) {
                int hs = p * d->stride_h - d->pad_h, ws = q * d->stride_w - d->pad_w;
                int he = hs + d->kh < d->h + d->pad_h ? hs + d->kh : d->h + d->pad_h;
                int we = ws + d->kw < d->w + d->pad_w ? ws + d->kw : d->w + d->pad_w;
                int size = (he - hs) * (we - ws);
                hs = hs > 0 ? hs : 0;
                ws = ws > 0 ? ws : 0;
                he = he < d->h ? he : d->h;
                we = we < d->w ? we : d->w;
                if (he <= hs || we <= ws) size = 0;
                else if (exclude_pad) size = (he - hs) * (we - ws);
                size_t o = ((size_t)t * d->p + p) * d->q + q;
                double sum = 0;
                for (int h = hs; h < he; h++)
                    for (int w = ws; w < we; w++) {
                        size_t xi = (size_t)t * d->h * d->w + (size_t)h * d->w + w;
                        sum += x[xi];
                        if (size) dx[xi] += (double)dy[o] / size;
                    }
                y[o] = size ? sum / size : 0.0;
            }
}

static void check_max(const pool_case *t) {
    osp_conv_desc d = make_desc(t);
    size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.c * d.p * d.q;
    float *x = rand_buf(nx, 1), *dy = rand_buf(ny, 2), *dx = rand_buf(nx, 3);
    float *ry = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
    float *y2 = malloc(ny * sizeof(float)), *rdx = malloc(nx * sizeof(float));
    int32_t *ram = malloc(ny * sizeof(int32_t)), *am = malloc(ny * sizeof(int32_t));
    memcpy(rdx, dx, nx * sizeof(float));
    ref_maxpool(&d, x, ry, ram);
    osp__cpu_maxpool_forward(&d, x, y, am);
    for (size_t i = 0; i < ny; i++) {
        cr_assert_eq(y[i], ry[i], "%s: y[%zu] = %g, expected %g", t->name, i, y[i], ry[i]);
        cr_assert_eq(am[i], ram[i], "%s: argmax[%zu] = %d, expected %d", t->name, i, am[i], ram[i]);
    }
    /* Inference runs without an argmax. */
    osp__cpu_maxpool_forward(&d, x, y2, NULL);
    cr_assert(!memcmp(y, y2, ny * sizeof(float)), "%s: NULL argmax changes y", t->name);
    for (size_t i = 0; i < ny; i++)
        if (ram[i] >= 0) rdx[(i / ((size_t)d.p * d.q)) * d.h * d.w + (size_t)ram[i]] += dy[i];
    osp__cpu_maxpool_backward(&d, dy, am, dx);
    for (size_t i = 0; i < nx; i++)
        cr_assert_float_eq(dx[i], rdx[i], 1e-5, "%s: dx[%zu] = %g, expected %g", t->name, i, dx[i],
                           rdx[i]);
    free(x), free(dy), free(dx), free(ry), free(y), free(y2), free(rdx), free(ram), free(am);
}

static void check_avg(const pool_case *t, int exclude_pad) {
    osp_conv_desc d = make_desc(t);
    size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.c * d.p * d.q;
    float *x = rand_buf(nx, 4), *dy = rand_buf(ny, 5), *dx = rand_buf(nx, 6);
    float *y = malloc(ny * sizeof(float));
    double *ry = calloc(ny, sizeof(double)), *rdx = calloc(nx, sizeof(double));
    for (size_t i = 0; i < nx; i++) rdx[i] = dx[i];
    ref_avgpool(&d, exclude_pad, x, dy, ry, rdx);
    osp__cpu_avgpool_forward(&d, exclude_pad, x, y);
    osp__cpu_avgpool_backward(&d, exclude_pad, dy, dx);
    const char *mode = exclude_pad ? "exclude_pad" : "include_pad";
    for (size_t i = 0; i < ny; i++)
        cr_assert(fabs(y[i] - ry[i]) <= 1e-5, "%s (%s): y[%zu] = %g, expected %g", t->name, mode,
                  i, y[i], ry[i]);
    for (size_t i = 0; i < nx; i++)
        cr_assert(fabs(dx[i] - rdx[i]) <= 1e-5, "%s (%s): dx[%zu] = %g, expected %g", t->name,
                  mode, i, dx[i], rdx[i]);
    free(x), free(dy), free(dx), free(y), free(ry), free(rdx);
}

/*  name                   n  c  h   w  kh kw sh sw ph pw dh dw ceil */
static const pool_case window_cases[] = {
    {"2x2 stride 2",        2, 3, 8,  8,  2, 2, 2, 2, 0, 0, 1, 1, 0},
    {"2x2 odd input",       2, 3, 7,  9,  2, 2, 2, 2, 0, 0, 1, 1, 0},
    {"3x3 stride 2 pad 1",  2, 2, 9,  10, 3, 3, 2, 2, 1, 1, 1, 1, 0},
    {"3x3 stride 1 pad 1",  1, 3, 5,  6,  3, 3, 1, 1, 1, 1, 1, 1, 0},
    {"3x3 stride 2 ceil",   2, 2, 8,  10, 3, 3, 2, 2, 0, 0, 1, 1, 1},
    {"ceil with pad",       2, 2, 8,  11, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {"3x2 window 3x1",      2, 2, 10, 7,  3, 2, 3, 1, 1, 0, 1, 1, 0},
    {"ceil 2x2 odd",        1, 2, 7,  5,  2, 2, 2, 2, 0, 0, 1, 1, 1},
    {"window = plane",      2, 3, 5,  7,  5, 7, 1, 1, 0, 0, 1, 1, 0},
    {"global 1x1 plane",    2, 3, 1,  1,  1, 1, 1, 1, 0, 0, 1, 1, 0},
    {"window = plane, pad", 2, 2, 4,  3,  4, 3, 1, 1, 1, 1, 1, 1, 0},
    /* pad 2 with a 2-wide window: the corner windows hold only padding. */
    {"windows of padding",  1, 2, 5,  4,  2, 2, 3, 3, 2, 2, 1, 1, 0},
    /* large enough for the OpenMP loops to run in parallel */
    {"parallel",            4, 8, 33, 31, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {"parallel global",     4, 16, 45, 47, 45, 47, 1, 1, 0, 0, 1, 1, 0},
};

Test(maxpool, windows) {
    for (size_t i = 0; i < sizeof window_cases / sizeof window_cases[0]; i++)
        check_max(&window_cases[i]);
}

Test(maxpool, dilation) {
    pool_case t = {"dilation 2", 2, 2, 9, 11, 3, 3, 2, 1, 1, 2, 2, 2, 0};
    check_max(&t);
}

Test(maxpool, ties_nan_and_padding_never_win) {
    /* All -1: padding (which would read as 0) must not win; the first of
     * equal values does. A NaN wins its window. */
    pool_case t = {"ties", 1, 1, 4, 4, 3, 3, 2, 2, 1, 1, 1, 1, 0};
    osp_conv_desc d = make_desc(&t);
    float x[16], y[4];
    int32_t am[4];
    for (int i = 0; i < 16; i++) x[i] = -1.0f;
    x[15] = NAN;
    osp__cpu_maxpool_forward(&d, x, y, am);
    cr_assert_eq(y[0], -1.0f);
    cr_assert_eq(am[0], 0);
    cr_assert_eq(am[1], 1); /* window columns 1..3 from the first row */
    cr_assert(isnan(y[3]));
    cr_assert_eq(am[3], 15);
}

Test(avgpool, include_pad) {
    for (size_t i = 0; i < sizeof window_cases / sizeof window_cases[0]; i++)
        check_avg(&window_cases[i], 0);
}

Test(avgpool, exclude_pad) {
    for (size_t i = 0; i < sizeof window_cases / sizeof window_cases[0]; i++)
        check_avg(&window_cases[i], 1);
}

Test(avgpool, global_is_plane_mean) {
    pool_case t = {"global 7x7", 3, 5, 7, 7, 7, 7, 1, 1, 0, 0, 1, 1, 0};
    osp_conv_desc d = make_desc(&t);
    size_t nx = 3 * 5 * 49;
    float *x = rand_buf(nx, 9), y[15], y2[15];
    osp__cpu_avgpool_forward(&d, 0, x, y);
    osp__cpu_avgpool_forward(&d, 1, x, y2);
    for (int pl = 0; pl < 15; pl++) {
        double s = 0;
        for (int i = 0; i < 49; i++) s += x[pl * 49 + i];
        cr_assert(fabs(y[pl] - s / 49) <= 1e-6, "plane %d: %g vs %g", pl, y[pl], s / 49);
        cr_assert_eq(y[pl], y2[pl]);
    }
    free(x);
}
