/* Depthwise 3x3 convolution forward with AVX2 + FMA, included by conv.c in
 * its AVX2 copy (the AVX-512 copy has conv_depthwise_avx512.h).
 *
 * Why: the portable loops ran mobilenet_v2's depthwise layers at 1.4-6
 * GFLOP/s on AMD's Zen 1, 40% of its inference. The AVX-512 kernel's
 * masked loads at the plane's edges would be slow here (vmaskmovps runs at
 * a third of a plain load's rate on Zen 1), so each plane is first copied
 * into a zero-padded scratch and every load is a plain one:
 *   - stride 1: the plane with its padding, rows wide enough for whole
 *     vectors of output; output (r, q) = sum of w(i, j) xp(r + i, q + j);
 *   - stride 2: the padded plane split into its even and odd columns,
 *     xe(row, k) = xp(row, 2k) and xo(row, k) = xp(row, 2k + 1); output
 *     (r, q) = sum over i of w(i, 0) xe(2r + i, q) + w(i, 1) xo(2r + i, q)
 *     + w(i, 2) xe(2r + i, q + 1).
 * Four output rows x 8 columns are summed in registers: each input row is
 * loaded three times (three column shifts) and feeds the up to three
 * output rows that read it. Sums run tap row by tap row in a fixed order,
 * so results repeat bit for bit; the bias and activation are conv.c's
 * epilogue on the finished plane. Backward passes stay on the portable
 * loops. */
#ifndef OSPREY_CONV_DEPTHWISE_AVX2_H
#define OSPREY_CONV_DEPTHWISE_AVX2_H

#include <immintrin.h>
#include <string.h>

/* The scratch of one plane (128 KiB of stack): 112x112 at stride 1 takes
 * 114 x 122 floats. Larger planes keep the portable loops. */
#define DWA_SCRATCH_FLOATS 32768
/* Floats of one padded row before it is split (stride 2). */
#define DWA_ROW_FLOATS 2048
/* Below this many FLOPs one thread. Lower than the AVX-512 kernel's 1e7:
 * at 8 lanes a layer takes twice as long, and with 1e7 mobilenet_v2 at
 * batch 1 on 2 threads ran 34 images/s against 37-41 with 5e5 (Zen 1). */
#define DWA_PAR_MIN_FLOPS 5e5

typedef struct dwa_geom {
    int qv;       /* output columns computed: Q rounded up to whole vectors */
    int rows;     /* rows of the scratch */
    int wp;       /* floats per scratch row (stride 2: per even or odd row) */
    int64_t size; /* floats of the scratch */
} dwa_geom;

static dwa_geom dwa_geometry(const osp_conv_desc *d) {
    dwa_geom g;
    g.qv = (d->q + 7) / 8 * 8;
    if (d->stride_h == 1) {
        g.rows = d->p + 2;
        g.wp = g.qv + 2 > d->w + 2 * d->pad_w ? g.qv + 2 : d->w + 2 * d->pad_w;
        g.size = (int64_t)g.rows * g.wp;
    } else {
        g.rows = 2 * d->p + 1;
        /* even and odd halves of a padded row of 2 * wp columns */
        const int half = (d->w + 2 * d->pad_w + 1) / 2;
        g.wp = g.qv + 1 > half ? g.qv + 1 : half;
        g.size = (int64_t)g.rows * 2 * g.wp;
    }
    return g;
}

/* 3x3, dilation 1, equal strides of 1 or 2, padding at most 2, one input
 * channel per group (any multiplier), and a plane whose scratch fits. */
static int dwa_handles(const osp_conv_desc *d) {
    if (!(d->groups == d->c && d->c > 0 && d->kh == 3 && d->kw == 3 && d->dil_h == 1 &&
          d->dil_w == 1 && d->stride_h == d->stride_w &&
          (d->stride_h == 1 || d->stride_h == 2) && d->pad_h >= 0 && d->pad_h <= 2 &&
          d->pad_w >= 0 && d->pad_w <= 2 && d->p > 0 && d->q > 0))
        return 0;
    const dwa_geom g = dwa_geometry(d);
    return g.size <= DWA_SCRATCH_FLOATS && (d->stride_h == 1 || 2 * g.wp <= DWA_ROW_FLOATS);
}

/* Padded row rr of the plane (the input row rr - pad_h, or zeros) into row,
 * wp floats (the input's columns at pad_w). */
static void dwa_padded_row(const osp_conv_desc *d, const float *x, int rr, float *row, int wp) {
    memset(row, 0, (size_t)wp * sizeof(float));
    const int r = rr - d->pad_h;
    if (r >= 0 && r < d->h) memcpy(row + d->pad_w, x + (int64_t)r * d->w, (size_t)d->w * sizeof(float));
}

/* The scratch of one plane for stride 1. */
static void dwa_fill_s1(const osp_conv_desc *d, const dwa_geom *g, const float *x, float *s) {
    for (int rr = 0; rr < g->rows; rr++) dwa_padded_row(d, x, rr, s + (int64_t)rr * g->wp, g->wp);
}

/* The scratch of one plane for stride 2: each padded row split into its
 * even columns (wp floats) then its odd ones (wp floats). */
static void dwa_fill_s2(const osp_conv_desc *d, const dwa_geom *g, const float *x, float *s,
                        float *row) {
    const int width = 2 * g->wp;
    for (int rr = 0; rr < g->rows; rr++) {
        dwa_padded_row(d, x, rr, row, width);
        float *even = s + (int64_t)rr * width, *odd = even + g->wp;
        int k = 0;
        for (; k + 8 <= g->wp; k += 8) {
            const __m256 a = _mm256_loadu_ps(row + 2 * k), b = _mm256_loadu_ps(row + 2 * k + 8);
            /* [a0 a2 b0 b2 | a4 a6 b4 b6] -> a0 a2 a4 a6 b0 b2 b4 b6 */
            const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
            _mm256_storeu_ps(even + k,
                             _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8)));
            _mm256_storeu_ps(odd + k,
                             _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xd8)));
        }
        for (; k < g->wp; k++) {
            even[k] = row[2 * k];
            odd[k] = row[2 * k + 1];
        }
    }
}

/* Output row r's 8 columns at q (those below Q) from acc. */
static inline void dwa_store(const osp_conv_desc *d, float *y, int r, int q, __m256 acc) {
    float *at = y + (int64_t)r * d->q + q;
    if (q + 8 <= d->q) {
        _mm256_storeu_ps(at, acc);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, acc);
        memcpy(at, tmp, (size_t)(d->q - q) * sizeof(float));
    }
}

/* Tap row i of input row `in` (three column shifts a, b, c) into acc. */
#define DWA_TAPS(acc, i) \
    acc = _mm256_fmadd_ps(w[3 * (i) + 2], c, _mm256_fmadd_ps(w[3 * (i) + 1], b, _mm256_fmadd_ps(w[3 * (i)], a, acc)))

/* Output rows [r0, r0 + ROWS) of one plane from its scratch s. Input row
 * ii of the block (scratch row r0 * stride + ii) feeds output row o with
 * tap row ii - stride * o, where that is 0, 1 or 2. */
static inline __attribute__((always_inline)) void
dwa_rows(const osp_conv_desc *d, const dwa_geom *g, const float *s, const __m256 *w, float *y,
         int r0, const int ROWS, const int STRIDE) {
    const int in_rows = STRIDE * (ROWS - 1) + 3;
    const int64_t pitch = STRIDE == 1 ? g->wp : 2 * g->wp;
    for (int q = 0; q < g->qv; q += 8) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int ii = 0; ii < in_rows; ii++) {
            const float *row = s + (int64_t)(STRIDE * r0 + ii) * pitch + q;
            __m256 a, b, c;
            if (STRIDE == 1) {
                a = _mm256_loadu_ps(row);
                b = _mm256_loadu_ps(row + 1);
                c = _mm256_loadu_ps(row + 2);
            } else {
                a = _mm256_loadu_ps(row);
                b = _mm256_loadu_ps(row + g->wp);
                c = _mm256_loadu_ps(row + 1);
            }
            /* o = 0..3, i = ii - STRIDE * o */
            if (ii <= 2) DWA_TAPS(a0, ii);
            if (ROWS > 1 && ii - STRIDE >= 0 && ii - STRIDE <= 2) DWA_TAPS(a1, ii - STRIDE);
            if (ROWS > 2 && ii - 2 * STRIDE >= 0 && ii - 2 * STRIDE <= 2) DWA_TAPS(a2, ii - 2 * STRIDE);
            if (ROWS > 3 && ii - 3 * STRIDE >= 0 && ii - 3 * STRIDE <= 2) DWA_TAPS(a3, ii - 3 * STRIDE);
        }
        dwa_store(d, y, r0, q, a0);
        if (ROWS > 1) dwa_store(d, y, r0 + 1, q, a1);
        if (ROWS > 2) dwa_store(d, y, r0 + 2, q, a2);
        if (ROWS > 3) dwa_store(d, y, r0 + 3, q, a3);
    }
}

static __attribute__((noinline)) void dwa_plane_s1(const osp_conv_desc *d, const dwa_geom *g,
                                                   const float *s, const __m256 *w, float *y) {
    int r = 0;
    for (; r + 4 <= d->p; r += 4) dwa_rows(d, g, s, w, y, r, 4, 1);
    for (; r < d->p; r++) dwa_rows(d, g, s, w, y, r, 1, 1);
}

static __attribute__((noinline)) void dwa_plane_s2(const osp_conv_desc *d, const dwa_geom *g,
                                                   const float *s, const __m256 *w, float *y) {
    int r = 0;
    for (; r + 4 <= d->p; r += 4) dwa_rows(d, g, s, w, y, r, 4, 2);
    for (; r < d->p; r++) dwa_rows(d, g, s, w, y, r, 1, 2);
}

/* y = act(conv(x, w) + bias), as dw_forward computes it; epilogue is
 * conv.c's. Returns 0, having done nothing, for a shape it does not
 * handle. */
static int dwa_forward(const osp_conv_desc *d, const float *x, const float *w, const float *bias,
                       float *y, void (*epilogue)(float *, int64_t, float, const osp_conv_desc *)) {
    if (!dwa_handles(d)) return 0;
    const dwa_geom g = dwa_geometry(d);
    const int kg = d->k / d->groups;
    const int64_t planes = (int64_t)d->n * d->k, hw = (int64_t)d->h * d->w,
                  s = (int64_t)d->p * d->q;
#pragma omp parallel for schedule(static) if (18.0 * planes * s > DWA_PAR_MIN_FLOPS)
    for (int64_t t = 0; t < planes; t++) {
        float scratch[DWA_SCRATCH_FLOATS], row[DWA_ROW_FLOATS];
        const int k = (int)(t % d->k);
        const float *xp = x + (t / d->k * d->c + k / kg) * hw;
        __m256 wv[9];
        for (int i = 0; i < 9; i++) wv[i] = _mm256_set1_ps(w[(int64_t)k * 9 + i]);
        if (d->stride_h == 1) {
            dwa_fill_s1(d, &g, xp, scratch);
            dwa_plane_s1(d, &g, scratch, wv, y + t * s);
        } else {
            dwa_fill_s2(d, &g, xp, scratch, row);
            dwa_plane_s2(d, &g, scratch, wv, y + t * s);
        }
        epilogue(y + t * s, s, bias ? bias[k] : 0.0f, d);
    }
    return 1;
}

#endif
