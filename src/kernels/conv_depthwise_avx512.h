/* Depthwise 3x3 convolution with AVX-512 intrinsics, for conv.c's
 * AVX-512 copy only (conv.c includes this under __AVX512F__).
 *
 * Handles kh = kw = 3, dilation 1, stride 1 or 2 (the same on both axes),
 * padding 0, 1 or 2 on each axis and planes of any height and of widths up
 * to 1024: the forward pass and the backward data pass. The entry points
 * return 0 for any other shape, and dw_forward / dw_backward_data run
 * their portable loops.
 *
 * One plane at a time (threads over planes, as the portable loops). A
 * pass over a plane computes DW3_ROWS output rows by 16 output columns in
 * DW3_ROWS zmm accumulators:
 *   - each input row of the pass is loaded once per tap column j and
 *     feeds every output row of the pass that reads it, so a stride-1
 *     pass of 4 rows loads 6 x 3 vectors for its 36 FMAs instead of 36;
 *   - the loads are masked to the input columns that exist: masked-out
 *     lanes read zero and never fault, so the left and right padding, and
 *     planes narrower than 16 or not a multiple of 16, need no copy and no
 *     scalar tail; the stores are masked to the output columns that exist;
 *   - tap rows above or below the image are skipped;
 *   - rows past the end of the output are computed (from whatever input
 *     rows exist) but not stored, so a 7-row plane takes two full passes
 *     rather than one pass and three single rows whose nine FMAs would
 *     each wait on the one before;
 *   - the sums start from the bias and take the taps in (i, j) order; the
 *     activation is applied in registers before the store.
 * Every memory access is a masked load or store, so none reaches outside
 * the tensors; the input rows a few passes down are prefetched. */
#ifndef OSPREY_CONV_DEPTHWISE_AVX512_H
#define OSPREY_CONV_DEPTHWISE_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#include "osprey/kernels.h"

/* Output rows per pass: enough independent accumulators to hide the FMA
 * latency when a plane is a single 16-lane column block (7x7 and 14x14). */
#define DW3_ROWS 4
/* Passes of DW3_ROWS output rows between an input row's prefetch and its
 * first load (3 and 4 ran the same). */
#define DW3_AHEAD 2
/* Below this many FLOPs a parallel region costs more than it saves, as
 * for conv.c's PAR_MIN_FLOPS. (It had been 1e7 while threads slept
 * between regions, when waking them cost as much as a layer of one image
 * saved; inference now spins between regions, and two threads take such
 * layers in well under the time of one: conv.c's dc8_on_avx512.) */
#define DW3_PAR_MIN_FLOPS 1e6

/* conv.c's epilogue: bias and activation over a finished plane. */
typedef void (*dw3_epilogue_fn)(float *v, int64_t n, float b, const osp_conv_desc *d);

/* One plane's shape: out = a 3x3 correlation of in, with padding. */
typedef struct dw3_plane {
    int ih, iw, oh, ow;
    int pad_h, pad_w;
} dw3_plane;

/* The activations done in registers; the others (sigmoid, tanh, swish) are
 * left to conv.c's epilogue. */
static int dw3_act_in_regs(int act) {
    return act == OSP_ACT_NONE || act == OSP_ACT_RELU || act == OSP_ACT_LEAKY_RELU ||
           act == OSP_ACT_RELU6;
}

/* act (a constant where this is inlined) with the same comparisons as
 * conv.c's epilogue (t < 0, t > 6), so that NaN and -0 come out as there;
 * max and min instructions would differ. */
static inline __attribute__((always_inline)) __m512 dw3_act(__m512 v, const int act,
                                                            __m512 alpha) {
    const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
    switch (act) {
    case OSP_ACT_RELU:
        return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
    case OSP_ACT_LEAKY_RELU:
        return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, alpha);
    case OSP_ACT_RELU6: {
        const __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, six, _CMP_GT_OQ), six);
        return _mm512_mask_mov_ps(v, neg, zero);
    }
    default:
        return v;
    }
}

/* Lanes [lo, hi) of a 16-lane mask, the bounds clamped to [0, 16]. */
static inline __mmask16 dw3_lanes(int lo, int hi) {
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* The masks of one block of 16 output columns, the same in every row of
 * every plane: for the loads (stride 1: tap column j; stride 2: the three
 * loads of a row), the input columns that exist and that some stored lane
 * needs; for the stores, the output columns that exist. */
typedef struct dw3_cols {
    __mmask16 load[3], store;
} dw3_cols;

/* Output widths up to this many blocks of 16 (1024 columns); wider planes
 * take the portable loops. */
#define DW3_MAX_BLOCKS 64

/* cols[b] for the blocks b of a plane's width. */
static void dw3_cols_of(const dw3_plane *g, int stride, dw3_cols *cols) {
    for (int q0 = 0; q0 < g->ow; q0 += 16) {
        dw3_cols *b = &cols[q0 / 16];
        const int nq = g->ow - q0 < 16 ? g->ow - q0 : 16;
        const int c0 = q0 * stride - g->pad_w; /* the input column of lane 0, tap j = 0 */
        /* input columns [c0, c_end): up to the last stored lane's tap j = 2 */
        const int last = c0 + (nq - 1) * stride + 2;
        const int c_end = last < g->iw ? last + 1 : g->iw;
        for (int j = 0; j < 3; j++) {
            const int first = c0 + (stride == 1 ? j : 16 * j); /* column of the load's lane 0 */
            b->load[j] = dw3_lanes(-first, c_end - first);
        }
        if (stride == 2) b->load[2] &= 1; /* the third load: one column */
        b->store = dw3_lanes(0, nq);
    }
}

/* What a plane's accumulators start from and how they are stored. */
typedef struct dw3_out {
    float *out;
    __m512 bias;  /* the start of every sum (forward) */
    __m512 alpha; /* leaky ReLU's slope */
} dw3_out;

/* Output rows [p0, p0 + DW3_ROWS) by the 16 columns from q0 of a plane.
 * stride (1 or 2), accumulate (start from what out holds rather than the
 * bias, and store no activation) and act are constants where this is
 * inlined, so that the loops over rows and taps unroll and their tests
 * fold away. */
static inline __attribute__((always_inline)) void
dw3_block(const dw3_plane *g, const int stride, const int accumulate, const int act,
          const float *in, const __m512 wv[9], const dw3_out *o, int p0, int q0, dw3_cols m) {
    /* Stride 2: lane l of tap column j reads input column c0 + 2l + j. Two
     * loads hold columns c0 .. c0 + 31; these indices pick the even and the
     * odd ones (bit 4 of an index selects the second load). */
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const int in_rows = (DW3_ROWS - 1) * stride + 3; /* input rows a pass reads */
    const int r0 = p0 * stride - g->pad_h;           /* the input row of tap row 0 of row p0 */
    const int c0 = q0 * stride - g->pad_w;           /* the input column of lane 0, tap j = 0 */
    float *out = o->out + (int64_t)p0 * g->ow + q0;
    /* The input rows that the pass DW3_AHEAD passes down adds, under
     * these columns: the hardware prefetchers kept up with neither the
     * rows of a pass nor the passes, and large planes moved their data at
     * a third of the memory's speed or less (docs/kernels.md). Rows past
     * the plane are the start of the next one when planes follow each
     * other (one channel per group); a prefetch never faults, so one past
     * the tensor costs nothing. */
    const int ahead = r0 + in_rows + (DW3_AHEAD - 1) * DW3_ROWS * stride;
    for (int r = ahead < 0 ? 0 : ahead; r < ahead + DW3_ROWS * stride; r++) {
        const char *src = (const char *)(in + (int64_t)r * g->iw + (c0 < 0 ? 0 : c0));
        for (int l = 0; l <= stride; l++) _mm_prefetch(src + 64 * l, _MM_HINT_T0);
    }
    __m512 acc[DW3_ROWS];
    for (int k = 0; k < DW3_ROWS; k++) {
        if (!accumulate)
            acc[k] = o->bias;
        else if (p0 + k < g->oh)
            acc[k] = _mm512_maskz_loadu_ps(m.store, out + (int64_t)k * g->ow);
        else
            acc[k] = _mm512_setzero_ps();
    }
#pragma GCC unroll 16
    for (int rr = 0; rr < in_rows; rr++) {
        const int r = r0 + rr;
        if (r < 0 || r >= g->ih) continue; /* a padding row: its taps add nothing */
        /* The pointer may start before the row (left padding): the
         * masked-out lanes are never read. */
        const float *src = in + (int64_t)r * g->iw + c0;
        __m512 t[3]; /* tap column j of the 16 lanes */
        if (stride == 1) {
            for (int j = 0; j < 3; j++) t[j] = _mm512_maskz_loadu_ps(m.load[j], src + j);
        } else {
            __m512 a = _mm512_maskz_loadu_ps(m.load[0], src);
            __m512 b = _mm512_maskz_loadu_ps(m.load[1], src + 16);
            __m512 c = _mm512_maskz_loadu_ps(m.load[2], src + 32);
            t[0] = _mm512_permutex2var_ps(a, even, b);
            t[1] = _mm512_permutex2var_ps(a, odd, b);
            /* column c0 + 2l + 2 is lane l + 1 of t[0], and column c0 + 32
             * (lane 0 of c) for the last lane: one lane shift brings it in */
            t[2] = _mm512_castsi512_ps(
                _mm512_alignr_epi32(_mm512_castps_si512(c), _mm512_castps_si512(t[0]), 1));
        }
#pragma GCC unroll 16
        for (int k = 0; k < DW3_ROWS; k++) {
            const int i = rr - k * stride; /* the tap row of this input row for output row k */
            if (i < 0 || i > 2) continue;
            for (int j = 0; j < 3; j++) acc[k] = _mm512_fmadd_ps(wv[i * 3 + j], t[j], acc[k]);
        }
    }
    for (int k = 0; k < DW3_ROWS && p0 + k < g->oh; k++)
        _mm512_mask_storeu_ps(out + (int64_t)k * g->ow, m.store, dw3_act(acc[k], act, o->alpha));
}

/* A whole plane: out = act(bias + the correlation of in with the 3x3
 * filter w, row-major), or out += the correlation when accumulate. */
static inline __attribute__((always_inline)) void
dw3_plane_run(const dw3_plane *g, const dw3_cols *cols, const int stride, const int accumulate,
              const int act, const float *in, const float *w, const dw3_out *o) {
    /* local copies, which the stores to out cannot change */
    const dw3_plane gl = *g;
    const dw3_out ol = *o;
    __m512 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
    for (int p0 = 0; p0 < gl.oh; p0 += DW3_ROWS)
        for (int q0 = 0; q0 < gl.ow; q0 += 16)
            dw3_block(&gl, stride, accumulate, act, in, wv, &ol, p0, q0, cols[q0 / 16]);
}

/* The forward plane for each stride and activation (a copy of the loops
 * each, without a branch on the activation inside them). */
static inline __attribute__((always_inline)) void
dw3_forward_plane(const dw3_plane *g, const dw3_cols *cols, const int stride, int act,
                  const float *in, const float *w, const dw3_out *o) {
    switch (act) {
    case OSP_ACT_RELU: dw3_plane_run(g, cols, stride, 0, OSP_ACT_RELU, in, w, o); break;
    case OSP_ACT_LEAKY_RELU:
        dw3_plane_run(g, cols, stride, 0, OSP_ACT_LEAKY_RELU, in, w, o);
        break;
    case OSP_ACT_RELU6: dw3_plane_run(g, cols, stride, 0, OSP_ACT_RELU6, in, w, o); break;
    default: dw3_plane_run(g, cols, stride, 0, OSP_ACT_NONE, in, w, o); break;
    }
}

static __attribute__((noinline)) void dw3_forward_s1(const dw3_plane *g, const dw3_cols *cols,
                                                     int act, const float *in, const float *w,
                                                     const dw3_out *o) {
    dw3_forward_plane(g, cols, 1, act, in, w, o);
}

static __attribute__((noinline)) void dw3_forward_s2(const dw3_plane *g, const dw3_cols *cols,
                                                     int act, const float *in, const float *w,
                                                     const dw3_out *o) {
    dw3_forward_plane(g, cols, 2, act, in, w, o);
}

static __attribute__((noinline)) void dw3_accumulate_s1(const dw3_plane *g, const dw3_cols *cols,
                                                        const float *in, const float *w,
                                                        const dw3_out *o) {
    dw3_plane_run(g, cols, 1, 1, OSP_ACT_NONE, in, w, o);
}

/* ---- backward data at stride 2 ----------------------------------------- */

/* There dx(r, c) gets w(i, j) dy(p, q) for r = 2p - pad_h + i and
 * c = 2q - pad_w + j: each dx row takes the one or two tap rows i of its
 * parity, and each dx column the taps j of its parity. So a pass computes
 * the even and the odd columns of 32 dx columns c0 .. c0 + 31 in two
 * vectors: column c0 + 2l + e takes w(i, j) dy(p, m0 + l + d) for the j
 * with e + pad_w - j even, d = (e + pad_w - j) / 2 (m0 = c0 / 2; d is -1,
 * 0 or 1), and two permutes interleave them into dx order. */

/* The masks of one block of 32 dx columns: the dy loads at m0 - 1, m0 and
 * m0 + 1 (the dy columns that exist), and the two dx stores. */
typedef struct dw3_cols2 {
    __mmask16 load[3], store[2];
} dw3_cols2;

/* dx plane += the dy plane's taps; g describes the forward convolution's
 * plane (in = dx's shape, out = dy's). pad_w is a constant where this is
 * inlined, so that the parity tests fold away. */
static inline __attribute__((always_inline)) void
dw3_scatter_s2_run(const dw3_plane *g, const dw3_cols2 *cols, const int pad_w, const float *dy,
                   const float *w, float *dx) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const dw3_plane gl = *g;
    __m512 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
    for (int r = 0; r < gl.ih; r++) {
        float *row = dx + (int64_t)r * gl.iw;
        for (int c0 = 0; c0 < gl.iw; c0 += 32) {
            const dw3_cols2 m = cols[c0 / 32];
            __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}; /* even, odd columns */
            for (int i = 0; i < 3; i++) {
                const int p2 = r + gl.pad_h - i; /* 2p */
                if (p2 < 0 || p2 % 2 || p2 / 2 >= gl.oh) continue;
                const float *src = dy + (int64_t)(p2 / 2) * gl.ow + c0 / 2;
                __m512 u[3]; /* dy columns m0 + l + d, d = -1, 0, 1 (unused ones fold away) */
                for (int d = 0; d < 3; d++) u[d] = _mm512_maskz_loadu_ps(m.load[d], src + d - 1);
                for (int e = 0; e < 2; e++)
                    for (int j = 0; j < 3; j++) {
                        const int off = e + pad_w - j;
                        if (off % 2) continue;
                        acc[e] = _mm512_fmadd_ps(wv[i * 3 + j], u[off / 2 + 1], acc[e]);
                    }
            }
            __m512 a = _mm512_maskz_loadu_ps(m.store[0], row + c0);
            __m512 b = _mm512_maskz_loadu_ps(m.store[1], row + c0 + 16);
            a = _mm512_add_ps(a, _mm512_permutex2var_ps(acc[0], lo, acc[1]));
            b = _mm512_add_ps(b, _mm512_permutex2var_ps(acc[0], hi, acc[1]));
            _mm512_mask_storeu_ps(row + c0, m.store[0], a);
            _mm512_mask_storeu_ps(row + c0 + 16, m.store[1], b);
        }
    }
}

static __attribute__((noinline)) void dw3_scatter_s2(const dw3_plane *g, const dw3_cols2 *cols,
                                                     const float *dy, const float *w,
                                                     float *dx) {
    switch (g->pad_w) {
    case 0: dw3_scatter_s2_run(g, cols, 0, dy, w, dx); break;
    case 1: dw3_scatter_s2_run(g, cols, 1, dy, w, dx); break;
    default: dw3_scatter_s2_run(g, cols, 2, dy, w, dx); break;
    }
}

/* The shapes these kernels take: depthwise (one input channel per group,
 * any multiplier), 3x3, dilation 1, equal strides of 1 or 2, padding at
 * most 2, planes up to DW3_MAX_BLOCKS blocks of 16 wide. */
static int dw3_handles(const osp_conv_desc *d) {
    return d->groups == d->c && d->c > 0 && d->kh == 3 && d->kw == 3 && d->dil_h == 1 &&
           d->dil_w == 1 && d->stride_h == d->stride_w &&
           (d->stride_h == 1 || d->stride_h == 2) && d->pad_h >= 0 && d->pad_h <= 2 &&
           d->pad_w >= 0 && d->pad_w <= 2 && d->p > 0 && d->q > 0 &&
           d->q <= 16 * DW3_MAX_BLOCKS && d->w <= 16 * DW3_MAX_BLOCKS;
}

/* y = act(conv(x, w) + bias), as dw_forward computes it; epilogue is
 * conv.c's, for the activations not done in registers. Returns 0, having
 * done nothing, for a shape it does not handle. */
static int dw3_forward_avx512(const osp_conv_desc *d, const float *x, const float *w,
                              const float *bias, float *y, dw3_epilogue_fn epilogue) {
    if (!dw3_handles(d)) return 0;
    const int kg = d->k / d->groups;
    const int64_t planes = (int64_t)d->n * d->k, hw = (int64_t)d->h * d->w,
                  s = (int64_t)d->p * d->q;
    const dw3_plane g = {d->h, d->w, d->p, d->q, d->pad_h, d->pad_w};
    dw3_cols cols[DW3_MAX_BLOCKS];
    dw3_cols_of(&g, d->stride_h, cols);
    const int in_regs = dw3_act_in_regs(d->act);
#pragma omp parallel for schedule(static) if (18.0 * planes * s > DW3_PAR_MIN_FLOPS)
    for (int64_t t = 0; t < planes; t++) {
        const int k = (int)(t % d->k);
        const float *xp = x + (t / d->k * d->c + k / kg) * hw;
        const float b = bias ? bias[k] : 0.0f;
        /* The sums start from the bias: one add fewer per output than
         * adding it at the end (the epilogue adds it for the others). */
        const dw3_out o = {y + t * s, _mm512_set1_ps(in_regs ? b : 0.0f),
                           _mm512_set1_ps(d->act_alpha)};
        const int act = in_regs ? d->act : OSP_ACT_NONE;
        if (d->stride_h == 1)
            dw3_forward_s1(&g, cols, act, xp, w + (int64_t)k * 9, &o);
        else
            dw3_forward_s2(&g, cols, act, xp, w + (int64_t)k * 9, &o);
        /* sigmoid, tanh and swish: conv.c's scalar code, on the plane while
         * it is still in cache */
        if (!in_regs) epilogue(y + t * s, s, b, d);
    }
    return 1;
}

/* dx += conv_transpose(dy, w), as dw_backward_data computes it. At stride
 * 1, dx is a correlation of dy with the filter turned by 180 degrees and
 * padded by 2 - pad: dx(r, c) gets w(i, j) dy(r + pad - i, c + pad - j),
 * the forward kernel's loops. Stride 2 has its own (above). Returns 0,
 * having done nothing, for a shape it does not handle. */
static int dw3_backward_data_avx512(const osp_conv_desc *d, const float *dy, const float *w,
                                    float *dx) {
    if (!dw3_handles(d)) return 0;
    const int kg = d->k / d->groups, stride = d->stride_h;
    const int64_t planes = (int64_t)d->n * d->c, hw = (int64_t)d->h * d->w,
                  s = (int64_t)d->p * d->q;
    /* stride 1: the correlation's shape; stride 2: the forward one's */
    const dw3_plane g = stride == 1
                            ? (dw3_plane){d->p, d->q, d->h, d->w, 2 - d->pad_h, 2 - d->pad_w}
                            : (dw3_plane){d->h, d->w, d->p, d->q, d->pad_h, d->pad_w};
    dw3_cols cols[DW3_MAX_BLOCKS];
    dw3_cols2 cols2[DW3_MAX_BLOCKS / 2];
    if (stride == 1) {
        dw3_cols_of(&g, 1, cols);
    } else {
        for (int c0 = 0; c0 < d->w; c0 += 32) {
            dw3_cols2 *b = &cols2[c0 / 32];
            for (int k = 0; k < 3; k++) {
                const int first = c0 / 2 + k - 1; /* the dy column of lane 0 */
                b->load[k] = dw3_lanes(-first, d->q - first);
            }
            b->store[0] = dw3_lanes(0, d->w - c0);
            b->store[1] = dw3_lanes(0, d->w - c0 - 16);
        }
    }
#pragma omp parallel for schedule(static) if (18.0 * planes * kg * s > DW3_PAR_MIN_FLOPS)
    for (int64_t t = 0; t < planes; t++) {
        const int c = (int)(t % d->c);
        /* the Kg output channels that read this input channel, in order */
        for (int kk = 0; kk < kg; kk++) {
            const int64_t k = (int64_t)c * kg + kk;
            const float *yp = dy + (t / d->c * d->k + k) * s;
            if (stride == 2) {
                dw3_scatter_s2(&g, cols2, yp, w + k * 9, dx + t * hw);
                continue;
            }
            float turned[9];
            for (int i = 0; i < 9; i++) turned[i] = w[k * 9 + 8 - i];
            const dw3_out o = {dx + t * hw, _mm512_setzero_ps(), _mm512_setzero_ps()};
            dw3_accumulate_s1(&g, cols, yp, turned, &o);
        }
    }
    return 1;
}

#endif
