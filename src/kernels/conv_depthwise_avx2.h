/* Depthwise 3x3 convolution forward with AVX2 + FMA, included by conv.c in
 * its AVX2 copy (the AVX-512 copy has conv_depthwise_avx512.h, and this
 * kernel only behind it, for wider windows).
 *
 * Why: the portable loops left mobilenet_v2's depthwise layers far below
 * the vector units' speed, and they were 40% of its inference. The
 * AVX-512 kernel's masked loads at the plane's edges would be slow here
 * (vmaskmovps is several times slower than a plain load on some AVX2
 * CPUs, AMD's among them), so each plane is first copied into a
 * zero-padded scratch and every load is a plain one:
 *   - stride 1: the plane with its padding, rows wide enough for whole
 *     vectors of output; output (r, q) = sum of w(i, j) xp(r + i, q + j);
 *   - stride 2: the padded plane split into its even and odd columns,
 *     xe(row, k) = xp(row, 2k) and xo(row, k) = xp(row, 2k + 1); output
 *     (r, q) = sum over i of w(i, 0) xe(2r + i, q) + w(i, 1) xo(2r + i, q)
 *     + w(i, 2) xe(2r + i, q + 1).
 * Four output rows x 8 columns are summed in registers: each input row is
 * loaded three times (three column shifts) and feeds the up to three
 * output rows that read it. Sums run tap row by tap row in a fixed order,
 * so results repeat bit for bit; the bias and a simple activation are
 * applied in registers before the store (others are conv.c's epilogue on
 * the finished plane). Backward passes stay on the portable loops. */
#ifndef OSPREY_CONV_DEPTHWISE_AVX2_H
#define OSPREY_CONV_DEPTHWISE_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "act_avx2.h"

/* The scratch of one plane (128 KiB of stack): 112x112 at stride 1 takes
 * 114 x 122 floats. Larger planes keep the portable loops. */
#define DWA_SCRATCH_FLOATS 32768
/* Below this many FLOPs one thread. Lower than the AVX-512 kernel's: at 8
 * lanes a layer takes twice as long, so smaller layers already pay for a
 * second thread (mobilenet_v2 at batch 1 ran faster with this threshold
 * than with 1e7). */
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
        g.wp = ((g.qv + 2 > d->w + 2 * d->pad_w ? g.qv + 2 : d->w + 2 * d->pad_w) + 7) / 8 * 8;
        g.size = (int64_t)g.rows * g.wp;
    } else {
        g.rows = 2 * d->p + 1;
        /* even and odd halves of a padded row of 2 * wp columns */
        const int half = (d->w + 2 * d->pad_w + 1) / 2;
        g.wp = ((g.qv + 1 > half ? g.qv + 1 : half) + 7) / 8 * 8;
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
    return g.size <= DWA_SCRATCH_FLOATS;
}

/* in[i .. i + 8), with zeros for the columns outside [0, w). A vector
 * that straddles an edge is the row's first or last whole vector with its
 * lanes moved into place and masked: with masked loads (vmaskmovps) the
 * loads, not the sums, set the pace of a stride-2 layer. */
static inline __m256 dwa_padded_vec(const float *in, int i, int w) {
    if (i >= 0 && i + 8 <= w) return _mm256_loadu_ps(in + i);
    if (i + 8 <= 0 || i >= w) return _mm256_setzero_ps();
    if (w < 8) {
        float t[8];
        for (int l = 0; l < 8; l++) t[l] = i + l >= 0 && i + l < w ? in[i + l] : 0.0f;
        return _mm256_loadu_ps(t);
    }
    const int base = i < 0 ? 0 : w - 8;
    const __m256i at =
        _mm256_add_epi32(_mm256_set1_epi32(i), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi32(at, _mm256_set1_epi32(-1)),
                                        _mm256_cmpgt_epi32(_mm256_set1_epi32(w), at));
    const __m256 v = _mm256_permutevar8x32_ps(_mm256_loadu_ps(in + base),
                                              _mm256_sub_epi32(at, _mm256_set1_epi32(base)));
    return _mm256_and_ps(v, _mm256_castsi256_ps(ok));
}

/* The scratch of one plane for stride 1: padded row rr (wp floats, a whole
 * number of vectors) is the input row rr - pad_h at column pad_w, or zeros. */
static void dwa_fill_s1(const osp_conv_desc *d, const dwa_geom *g, const float *x, float *s) {
    for (int rr = 0; rr < g->rows; rr++) {
        float *row = s + (int64_t)rr * g->wp;
        const int r = rr - d->pad_h;
        if (r < 0 || r >= d->h) {
            for (int c = 0; c < g->wp; c += 8) _mm256_storeu_ps(row + c, _mm256_setzero_ps());
            continue;
        }
        const float *in = x + (int64_t)r * d->w;
        for (int c = 0; c < g->wp; c += 8)
            _mm256_storeu_ps(row + c, dwa_padded_vec(in, c - d->pad_w, d->w));
    }
}

/* The scratch of one plane for stride 2: each padded row split into its
 * even columns (wp floats, a whole number of vectors) then its odd ones. */
static void dwa_fill_s2(const osp_conv_desc *d, const dwa_geom *g, const float *x, float *s) {
    const int width = 2 * g->wp;
    for (int rr = 0; rr < g->rows; rr++) {
        float *even = s + (int64_t)rr * width, *odd = even + g->wp;
        const int r = rr - d->pad_h;
        if (r < 0 || r >= d->h) {
            for (int c = 0; c < width; c += 8) _mm256_storeu_ps(even + c, _mm256_setzero_ps());
            continue;
        }
        const float *in = x + (int64_t)r * d->w;
        for (int k = 0; k < g->wp; k += 8) {
            const __m256 a = dwa_padded_vec(in, 2 * k - d->pad_w, d->w),
                         b = dwa_padded_vec(in, 2 * k + 8 - d->pad_w, d->w);
            /* [a0 a2 b0 b2 | a4 a6 b4 b6] -> a0 a2 a4 a6 b0 b2 b4 b6 */
            const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
            _mm256_storeu_ps(even + k,
                             _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8)));
            _mm256_storeu_ps(odd + k,
                             _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xd8)));
        }
    }
}

/* The bias and activation applied in registers; any other activation is
 * left to conv.c's epilogue over the finished plane. */
typedef struct dwa_out {
    __m256 bias;
    int act; /* OSP_ACT_NONE, _RELU, _RELU6 or _LEAKY_RELU */
    __m256 slope;
} dwa_out;

/* Output row r's 8 columns at q (those below Q) from acc, with o's bias
 * and activation. */
static inline void dwa_store(const osp_conv_desc *d, float *y, int r, int q, __m256 acc,
                             const dwa_out *o) {
    acc = avx2_act(_mm256_add_ps(acc, o->bias), o->act, o->slope);
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
         int r0, const dwa_out *o, const int ROWS, const int STRIDE) {
    const int in_rows = STRIDE * (ROWS - 1) + 3;
    const int64_t pitch = STRIDE == 1 ? g->wp : 2 * g->wp;
    for (int q = 0; q < g->qv; q += 8) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        /* unrolled, so that the tap-row tests below vanish */
#pragma GCC unroll 12
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
        dwa_store(d, y, r0, q, a0, o);
        if (ROWS > 1) dwa_store(d, y, r0 + 1, q, a1, o);
        if (ROWS > 2) dwa_store(d, y, r0 + 2, q, a2, o);
        if (ROWS > 3) dwa_store(d, y, r0 + 3, q, a3, o);
    }
}

/* One plane's output rows, four at a time, from its scratch s. */
static __attribute__((noinline)) void dwa_plane(const osp_conv_desc *d, const dwa_geom *g,
                                                const float *s, const __m256 *w, float *y,
                                                const dwa_out *o) {
    int r = 0;
    if (d->stride_h == 1) {
        for (; r + 4 <= d->p; r += 4) dwa_rows(d, g, s, w, y, r, o, 4, 1);
        for (; r < d->p; r++) dwa_rows(d, g, s, w, y, r, o, 1, 1);
    } else {
        for (; r + 4 <= d->p; r += 4) dwa_rows(d, g, s, w, y, r, o, 4, 2);
        for (; r < d->p; r++) dwa_rows(d, g, s, w, y, r, o, 1, 2);
    }
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
    const int fused = avx2_act_in_registers(d->act);
#pragma omp parallel for schedule(static) if (18.0 * planes * s > DWA_PAR_MIN_FLOPS)
    for (int64_t t = 0; t < planes; t++) {
        float scratch[DWA_SCRATCH_FLOATS];
        const int k = (int)(t % d->k);
        const float *xp = x + (t / d->k * d->c + k / kg) * hw;
        __m256 wv[9];
        for (int i = 0; i < 9; i++) wv[i] = _mm256_set1_ps(w[(int64_t)k * 9 + i]);
        const float b = bias ? bias[k] : 0.0f;
        const dwa_out o = {_mm256_set1_ps(fused ? b : 0.0f), fused ? (int)d->act : OSP_ACT_NONE,
                           _mm256_set1_ps(d->act_alpha)};
        if (d->stride_h == 1) dwa_fill_s1(d, &g, xp, scratch);
        else dwa_fill_s2(d, &g, xp, scratch);
        dwa_plane(d, &g, scratch, wv, y + t * s, &o);
        if (!fused) epilogue(y + t * s, s, b, d);
    }
    return 1;
}

#endif
