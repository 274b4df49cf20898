/* Depthwise 3x3 convolution forward with AVX2 + FMA, eight channels at a
 * time; included by conv.c in its AVX2 copy, which tries it before
 * conv_depthwise_avx2.h's plane-at-a-time kernel (left with the channel
 * multipliers), and in its AVX-512 copy, which takes it for small planes
 * and layers (dc8_on_avx512).
 *
 * Why: on planes of 14x14 and 7x7 (mobilenet_v2's later stages) the
 * plane-at-a-time kernel spends most of its time at the plane's edges: a
 * row of 7 or 14 outputs is one or two vectors, every one of them partial,
 * and a plane's set-up is paid for 49 outputs. Here a vector holds one
 * pixel of eight channels, so no vector is partial and padding is a zero
 * border:
 *   1. the eight planes are transposed (8x8 blocks over the flattened
 *      plane) into pixel-major order, then copied row by row into a
 *      scratch with a zero border of the padding's width;
 *   2. each output pixel is 9 FMAs of a tap's eight weights and the input
 *      pixel under it, four output pixels along a row at a time (so that
 *      four sums are in flight), then the bias and activation;
 *   3. the outputs are transposed back into the eight planes.
 * Sums run over the taps in a fixed order, so results repeat bit for bit. */
#ifndef OSPREY_CONV_DEPTHWISE_C8_AVX2_H
#define OSPREY_CONV_DEPTHWISE_C8_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "act_avx2.h"

/* Every plane size: at stride 2 the plane-at-a-time kernel's even/odd copy
 * costs as much as its sums; at stride 1 it kept large planes until the
 * transposes here lost their lane-crossing shuffles, since when this
 * kernel is the faster at every plane size (docs/kernels.md). */
/* Floats of the padded scratch of a band of rows: (32 + 4)^2 pixels of 8
 * channels. */
#define DC8_PADDED_FLOATS (36 * 36 * 8)
/* Pixels of the flat scratch, which holds a band's input rows, then its
 * output rows. */
#define DC8_FLAT_PIXELS (36 * 36)

/* 3x3, dilation 1, equal strides of 1 or 2, padding at most 2, one filter
 * per channel. */
static int dc8_handles(const osp_conv_desc *d) {
    return d->groups == d->c && d->k == d->c && d->c > 0 && d->kh == 3 && d->kw == 3 &&
           d->dil_h == 1 && d->dil_w == 1 && d->stride_h == d->stride_w &&
           (d->stride_h == 1 || d->stride_h == 2) && d->pad_h >= 0 && d->pad_h <= 2 &&
           d->pad_w >= 0 && d->pad_w <= 2 && d->p > 0 && d->q > 0;
}

/* The 4x4 transpose of a, b, c, d within each 128-bit lane: lane-wise,
 * a becomes (a0 b0 c0 d0), b (a1 b1 c1 d1) and so on. An 8x8 transpose is
 * two of these over vectors whose halves hold rows i and i + 4: no
 * lane-crossing shuffle (vperm2f128 is several micro-ops on some AVX2
 * CPUs, and the layers ran measurably faster without it). */
static inline void dc8_transpose4(__m256 *a, __m256 *b, __m256 *c, __m256 *d) {
    const __m256 t0 = _mm256_unpacklo_ps(*a, *b), t1 = _mm256_unpackhi_ps(*a, *b);
    const __m256 t2 = _mm256_unpacklo_ps(*c, *d), t3 = _mm256_unpackhi_ps(*c, *d);
    *a = _mm256_shuffle_ps(t0, t2, 0x44);
    *b = _mm256_shuffle_ps(t0, t2, 0xee);
    *c = _mm256_shuffle_ps(t1, t3, 0x44);
    *d = _mm256_shuffle_ps(t1, t3, 0xee);
}

/* Four floats of plane l at f, or zeros for a lane past cn. */
static inline __m128 dc8_load4(const float *const plane[8], int l, int cn, int64_t f) {
    return l < cn ? _mm_loadu_ps(plane[l] + f) : _mm_setzero_ps();
}

/* out (n x 8, pixel-major) = the first n floats of the cn planes at
 * plane[l] (l < cn; zeros for the other lanes). */
static void dc8_gather(const float *const plane[8], int cn, int64_t n, float *out) {
    int64_t f = 0;
    for (; f + 8 <= n; f += 8) {
        __m256 r[8]; /* r[i], r[4 + i]: pixels f.. and f + 4.. of planes i | i + 4 */
        for (int i = 0; i < 4; i++)
            for (int h = 0; h < 2; h++)
                r[4 * h + i] = _mm256_insertf128_ps(
                    _mm256_castps128_ps256(dc8_load4(plane, i, cn, f + 4 * h)),
                    dc8_load4(plane, i + 4, cn, f + 4 * h), 1);
        dc8_transpose4(&r[0], &r[1], &r[2], &r[3]);
        dc8_transpose4(&r[4], &r[5], &r[6], &r[7]);
        for (int j = 0; j < 8; j++) _mm256_store_ps(out + (f + j) * 8, r[j]);
    }
    for (; f < n; f++)
        for (int l = 0; l < 8; l++) out[f * 8 + l] = l < cn ? plane[l][f] : 0.0f;
}

/* The inverse: plane[l][0..n) = lane l of in (n x 8), for l < cn. */
static void dc8_scatter(const float *in, int64_t n, int cn, float *const plane[8]) {
    int64_t f = 0;
    for (; f + 8 <= n; f += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; j++) r[j] = _mm256_load_ps(in + (f + j) * 8);
        /* then r[c] (r[4 + c]): pixels f.. (f + 4..) of planes c | c + 4 */
        dc8_transpose4(&r[0], &r[1], &r[2], &r[3]);
        dc8_transpose4(&r[4], &r[5], &r[6], &r[7]);
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++) {
                if (c < cn)
                    _mm_storeu_ps(plane[c] + f + 4 * h, _mm256_castps256_ps128(r[4 * h + c]));
                if (c + 4 < cn)
                    _mm_storeu_ps(plane[c + 4] + f + 4 * h, _mm256_extractf128_ps(r[4 * h + c], 1));
            }
    }
    for (; f < n; f++)
        for (int l = 0; l < cn; l++) plane[l][f] = in[f * 8 + l];
}

/* One output row p: out[q] (8 channels each) for q in [0, Q), from the
 * padded scratch s (wp pixels a row). */
static inline __attribute__((always_inline)) void dc8_row(const osp_conv_desc *d, const float *s,
                                                          int wp, const __m256 w[9], __m256 bias,
                                                          int act, __m256 slope, int p, float *out,
                                                          const int STRIDE) {
    const float *top = s + (int64_t)p * STRIDE * wp * 8;
    int q = 0;
    for (; q < d->q; q += 4) {
        const int n = d->q - q < 4 ? d->q - q : 4;
        __m256 a[4] = {bias, bias, bias, bias};
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                const float *at = top + ((int64_t)i * wp + q * STRIDE + j) * 8;
                const __m256 wt = w[i * 3 + j];
                /* the lanes past a short row's end read scratch that is
                 * there (the next row or the border) and are not stored */
                a[0] = _mm256_fmadd_ps(wt, _mm256_load_ps(at), a[0]);
                a[1] = _mm256_fmadd_ps(wt, _mm256_load_ps(at + STRIDE * 8), a[1]);
                a[2] = _mm256_fmadd_ps(wt, _mm256_load_ps(at + 2 * STRIDE * 8), a[2]);
                a[3] = _mm256_fmadd_ps(wt, _mm256_load_ps(at + 3 * STRIDE * 8), a[3]);
            }
        for (int u = 0; u < n; u++) {
            const __m256 v = avx2_act(a[u], act, slope);
            _mm256_store_ps(out + (int64_t)(q + u) * 8, v);
        }
    }
}

/* Output rows per band for this shape (0: none fits the scratch). */
static int dc8_band_rows(const osp_conv_desc *d) {
    const int st = d->stride_h, wp = d->w + 2 * d->pad_w;
    int rows = d->p;
    /* the band's padded input rows, and the pixels read past its last one */
    while (rows > 0 && (((int64_t)(rows - 1) * st + 3) * wp + 8 * st) * 8 > DC8_PADDED_FLOATS)
        rows--;
    while (rows > 0 && (((int64_t)(rows - 1) * st + 3) * d->w > DC8_FLAT_PIXELS ||
                        (int64_t)rows * d->q > DC8_FLAT_PIXELS))
        rows--;
    return rows;
}

/* y = act(conv(x, w) + bias), as dw_forward computes it; epilogue is
 * conv.c's, for the activations not applied here. Returns 0, having done
 * nothing, for a shape it does not handle. Planes too large for the
 * scratch go a band of output rows at a time, with the input rows the
 * band reads: a band's input rows are a contiguous span of the flattened
 * plane, and its output rows too. */
static int dc8_forward(const osp_conv_desc *d, const float *x, const float *w, const float *bias,
                       float *y, void (*epilogue)(float *, int64_t, float, const osp_conv_desc *)) {
    if (!dc8_handles(d)) return 0;
    const int band = dc8_band_rows(d);
    if (band < 1) return 0;
    const int st = d->stride_h, wp = d->w + 2 * d->pad_w;
    const int64_t padded = (((int64_t)(band - 1) * st + 3) * wp + 8 * st) * 8;
    const int groups = (d->c + 7) / 8;
    const int64_t hw = (int64_t)d->h * d->w, s = (int64_t)d->p * d->q,
                  items = (int64_t)d->n * groups;
    const int fused = avx2_act_in_registers(d->act);
#pragma omp parallel if (18.0 * d->n * d->c * s > DWA_PAR_MIN_FLOPS)
    {
        float pad_buf[DC8_PADDED_FLOATS] __attribute__((aligned(32)));
        float flat[DC8_FLAT_PIXELS * 8] __attribute__((aligned(32)));
        memset(pad_buf, 0, (size_t)padded * sizeof(float)); /* the border stays zero */
#pragma omp for schedule(static)
        for (int64_t t = 0; t < items; t++) {
            const int64_t n = t / groups;
            const int c0 = (int)(t % groups) * 8, cn = d->c - c0 < 8 ? d->c - c0 : 8;
            const float *in[8];
            float *outp[8];
            for (int l = 0; l < 8; l++) {
                const int c = c0 + (l < cn ? l : 0);
                in[l] = x + (n * d->c + c) * hw;
                outp[l] = y + (n * d->c + c) * s;
            }
            __m256 wv[9];
            float lanes[8];
            for (int i = 0; i < 9; i++) {
                for (int l = 0; l < 8; l++) lanes[l] = l < cn ? w[(int64_t)(c0 + l) * 9 + i] : 0.0f;
                wv[i] = _mm256_loadu_ps(lanes);
            }
            for (int l = 0; l < 8; l++) lanes[l] = l < cn && bias && fused ? bias[c0 + l] : 0.0f;
            const __m256 bv = _mm256_loadu_ps(lanes);
            const int act = fused ? (int)d->act : OSP_ACT_NONE;
            const __m256 slope = _mm256_set1_ps(d->act_alpha);
            for (int p0 = 0; p0 < d->p; p0 += band) {
                const int p1 = d->p - p0 < band ? d->p : p0 + band;
                const int rows = (p1 - p0 - 1) * st + 3, top = p0 * st - d->pad_h;
                const int r_lo = top < 0 ? 0 : top, r_hi = top + rows < d->h ? top + rows : d->h;
                /* 1. the band's input rows pixel-major, then into the padded
                 * scratch row by row (rows off the plane: zeros) */
                if (r_hi > r_lo) {
                    const float *span[8];
                    for (int l = 0; l < 8; l++) span[l] = in[l] + (int64_t)r_lo * d->w;
                    dc8_gather(span, cn, (int64_t)(r_hi - r_lo) * d->w, flat);
                }
                for (int br = 0; br < rows; br++) {
                    float *dst = pad_buf + ((int64_t)br * wp + d->pad_w) * 8;
                    const int r = top + br;
                    if (r >= 0 && r < d->h)
                        memcpy(dst, flat + (int64_t)(r - r_lo) * d->w * 8,
                               (size_t)d->w * 8 * sizeof(float));
                    else
                        memset(dst, 0, (size_t)d->w * 8 * sizeof(float));
                }
                /* 2. the sums, into flat (now the band's output, pixel-major) */
                for (int p = p0; p < p1; p++) {
                    float *out = flat + (int64_t)(p - p0) * d->q * 8;
                    if (st == 1)
                        dc8_row(d, pad_buf, wp, wv, bv, act, slope, p - p0, out, 1);
                    else
                        dc8_row(d, pad_buf, wp, wv, bv, act, slope, p - p0, out, 2);
                }
                /* 3. back into the planes */
                float *span[8];
                for (int l = 0; l < 8; l++) span[l] = outp[l] + (int64_t)p0 * d->q;
                const int64_t count = (int64_t)(p1 - p0) * d->q;
                dc8_scatter(flat, count, cn, span);
                if (!fused)
                    for (int l = 0; l < cn; l++)
                        epilogue(span[l], count, bias ? bias[c0 + l] : 0.0f, d);
            }
        }
    }
    return 1;
}

#endif
