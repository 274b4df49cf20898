/* Max pooling 3x3, stride 2, padding 1 (the pooling after a ResNet stem)
 * for inference (no argmax), AVX-512: each input row's three taps first,
 * then three such row maxima, 16 outputs at a time down a strip of
 * columns, so that the maxima of a row serve both output rows that read
 * it. Why: pool.c visits the nine taps of every output, two loads and a
 * shuffle each, which left this layer compute-bound at about a quarter of
 * the memory's speed; in an int8 ResNet it cost as much as the stem's
 * convolution.
 *
 * The same bits as pool.c: its rule (a later tap wins if it is greater or
 * NaN, so the result is the last NaN, else the first of the largest
 * values in row-major order) gives the same result folded over any split
 * of that order into consecutive runs, as here; taps in the padding are
 * -inf, which never wins (a window always holds a tap of the input). */
#include <immintrin.h>
#include <math.h>

#include "cpu_kernels.h"

#define PAR_MIN_WORK 32768

/* best, then v, by pool.c's rule */
static inline __m512 fold(__m512 best, __m512 v) {
    const __mmask16 win =
        _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(win, best, v);
}

/* Which of the 16 columns from c >= 0 on lie before w. */
static inline __mmask16 columns_in(int c, int w) {
    if (c >= w) return 0;
    return w - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (w - c)) - 1);
}

/* The strip's columns: masks of its loads and the outputs it stores. */
typedef struct strip {
    int q0;               /* first output */
    __mmask16 lo, hi, ex; /* columns 2 q0 - 1 + [0, 16), + [16, 32), 2 q0 + 31 */
    __mmask16 out;        /* outputs q0 + [0, 16) that exist */
} strip;

/* Maxima of the three taps of row `row` for the strip's 16 outputs:
 * columns 2q - 1, 2q and 2q + 1 of output q. */
static inline __m512 row_max(const float *row, const strip *s) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const int c = 2 * s->q0 - 1;
    /* column -1 (q0 = 0) is padding: load from the row's start, shifted */
    const __m512 lo = c < 0 ? _mm512_mask_expandloadu_ps(ninf, s->lo, row)
                            : _mm512_mask_loadu_ps(ninf, s->lo, row + c);
    const __m512 hi = _mm512_mask_loadu_ps(ninf, s->hi, row + c + 16);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i next = _mm512_setr_epi32(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 0);
    const __m512 left = _mm512_permutex2var_ps(lo, even, hi);
    const __m512 centre = _mm512_permutex2var_ps(lo, odd, hi);
    __m512 right = _mm512_permutex2var_ps(lo, next, hi);
    right = _mm512_mask_mov_ps(right, 0x8000,
                               s->ex ? _mm512_set1_ps(row[c + 32]) : ninf);
    return fold(fold(left, centre), right);
}

static void plane(const osp_conv_desc *d, const float *x, float *y) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int q0 = 0; q0 < d->q; q0 += 16) {
        strip s;
        /* the last strip overlaps the one before where Q allows */
        s.q0 = q0 + 16 > d->q && d->q >= 16 ? d->q - 16 : q0;
        const int c = 2 * s.q0 - 1;
        s.lo = c < 0 ? (__mmask16)(columns_in(0, d->w) << 1) : columns_in(c, d->w);
        s.hi = columns_in(c + 16, d->w);
        s.ex = c + 32 < d->w;
        s.out = columns_in(s.q0, d->q);
        __m512 above = ninf; /* row 2p - 1: the padding above row 0 */
        for (int p = 0; p < d->p; p++) {
            const __m512 mid = row_max(x + (int64_t)2 * p * d->w, &s);
            const __m512 below = 2 * p + 1 < d->h ? row_max(x + (int64_t)(2 * p + 1) * d->w, &s)
                                                  : ninf;
            _mm512_mask_storeu_ps(y + (int64_t)p * d->q + s.q0, s.out, fold(fold(above, mid), below));
            above = below;
        }
    }
}

int osp__avx512_maxpool3s2(const osp_conv_desc *d, const float *x, float *y) {
    if (d->kh != 3 || d->kw != 3 || d->stride_h != 2 || d->stride_w != 2 || d->pad_h != 1 ||
        d->pad_w != 1 || d->dil_h != 1 || d->dil_w != 1 || d->p != (d->h - 1) / 2 + 1 || d->q != (d->w - 1) / 2 + 1)
        return 0;
    const int64_t planes = (int64_t)d->n * d->c, hw = (int64_t)d->h * d->w;
    const int64_t s = (int64_t)d->p * d->q;
#pragma omp parallel for schedule(static) if (planes * s * 9 > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) plane(d, x + t * hw, y + t * s);
    return 1;
}
