/* Max and average pooling on the CPU.
 *
 * x is N x C x H x W, y is N x C x P x Q (d->k == d->c). Every loop runs one
 * image-channel plane per task, so each thread owns the planes it writes and
 * the results do not depend on the schedule.
 *
 * Windows follow PyTorch: window (p, q) starts at (p*stride_h - pad_h,
 * q*stride_w - pad_w); padded taps never win a max; an average divides by
 * the taps inside the padded input (count_include_pad=True: a ceil-mode
 * window hanging past the right padding counts only up to it), or by the
 * taps inside the input with exclude_pad. A window with no tap inside the
 * input outputs 0 and passes no gradient. */
#include <math.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "cpu_kernels.h"

#define PAR_MIN_WORK 32768

/* Taps i in [lo, hi) of a window starting at start (dilation dil) that land
 * in [0, in). */
static void taps_inside(int start, int taps, int dil, int in, int *lo, int *hi) {
    int l = start >= 0 ? 0 : (-start + dil - 1) / dil;
    int h = in - start <= 0 ? 0 : (in - start + dil - 1) / dil;
    if (h > taps) h = taps;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* Taps of the window inside [-pad, in + pad): the include-pad divisor. */
static int taps_in_padded(int start, int taps, int dil, int in, int pad) {
    int lo, hi;
    taps_inside(start + pad, taps, dil, in + 2 * pad, &lo, &hi);
    return hi - lo;
}

static int is_global(const osp_conv_desc *d) {
    return d->kh == d->h && d->kw == d->w && d->pad_h == 0 && d->pad_w == 0 && d->p == 1 &&
           d->q == 1;
}

/* Sum of a plane with eight fixed lanes: vectorisable, and the same order on
 * every run. */
static float plane_sum(const float *v, int64_t n) {
    float lane[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lane[l] += v[i + l];
    float tail = 0;
    for (; i < n; i++) tail += v[i];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

/* One output of a window that may hang over the padding. As PyTorch: the
 * first of equal maxima wins, a NaN beats everything. */
static void max_window(const osp_conv_desc *d, const float *xp, int h0, int i_lo, int i_hi, int q,
                       float *y, int32_t *arg) {
    int w0 = q * d->stride_w - d->pad_w, j_lo, j_hi;
    taps_inside(w0, d->kw, d->dil_w, d->w, &j_lo, &j_hi);
    if (i_lo == i_hi || j_lo == j_hi) {
        *y = 0.0f;
        if (arg) *arg = -1;
        return;
    }
    int64_t best_at = (int64_t)(h0 + i_lo * d->dil_h) * d->w + w0 + j_lo * d->dil_w;
    float best = -INFINITY;
    for (int i = i_lo; i < i_hi; i++) {
        const int64_t row = (int64_t)(h0 + i * d->dil_h) * d->w;
        for (int j = j_lo; j < j_hi; j++) {
            int64_t at = row + w0 + j * d->dil_w;
            float v = xp[at];
            if (v > best || isnan(v)) {
                best = v;
                best_at = at;
            }
        }
    }
    *y = best;
    if (arg) *arg = (int32_t)best_at;
}

#define MAX_RUN 256

#if defined(__AVX2__)
/* src[2k], k < 8: two loads, a shuffle and a lane permute. src[15] is
 * not needed: where it may lie past the input (tail), it is not read. */
static inline __m256 every_other(const float *src, int tail) {
    const __m256i first7 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0);
    const __m256 a = _mm256_loadu_ps(src);
    const __m256 b = tail ? _mm256_maskload_ps(src + 8, first7) : _mm256_loadu_ps(src + 8);
    /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6, then the pairs in order */
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Outputs q..q+7 of a stride-2 row, as max_interior's loop: the taps in
 * its order, a NaN winning (the first one met stays). */
static inline __m256 max8_stride2(const osp_conv_desc *d, const float *xp, int h0, int i_lo,
                                  int i_hi, int q, int tail) {
    __m256 best = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    for (int i = i_lo; i < i_hi; i++) {
        const float *row = xp + (int64_t)(h0 + i * d->dil_h) * d->w + 2 * q - d->pad_w;
        for (int j = 0; j < d->kw; j++) {
            const __m256 v = every_other(row + j * d->dil_w, tail);
            best = _mm256_max_ps(v, best); /* v > best ? v : best, ties keep best */
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
    }
    if (_mm256_movemask_ps(nan)) { /* rare: again, keeping the first NaN of each lane */
        best = _mm256_set1_ps(-INFINITY);
        for (int i = i_lo; i < i_hi; i++) {
            const float *row = xp + (int64_t)(h0 + i * d->dil_h) * d->w + 2 * q - d->pad_w;
            for (int j = 0; j < d->kw; j++) {
                const __m256 v = every_other(row + j * d->dil_w, tail);
                const __m256 win = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                                _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                best = _mm256_blendv_ps(best, v, win);
            }
        }
    }
    return best;
}

/* max_interior for stride 2 without an argmax (inference), eight outputs
 * at a time. Why: a tap's inputs for neighbouring outputs lie two apart,
 * and the compiler does not vectorise loads two apart, which left ResNet's
 * 3x3/2 pooling after the stem several times slower than ONNX Runtime's.
 * Returns whether it took the outputs (at
 * least eight of them). */
static int max_interior_stride2(const osp_conv_desc *d, const float *xp, int h0, int i_lo,
                                int i_hi, int q_lo, int q_hi, float *y) {
    if (q_hi - q_lo < 8) return 0;
    const int span = (d->kw - 1) * d->dil_w;
    for (int q = q_lo;; q += 8) {
        if (q > q_hi - 8) q = q_hi - 8; /* the last eight, overlapping the ones before */
        /* input column 2q - pad_w + span + 15 may lie past the row's end */
        const int tail = 2 * q - d->pad_w + span + 15 >= d->w;
        _mm256_storeu_ps(y + q, max8_stride2(d, xp, h0, i_lo, i_hi, q, tail));
        if (q == q_hi - 8) return 1;
    }
}
#endif

/* Outputs q_lo..q_hi-1 of row p, whose windows lie inside the input along
 * the width: the taps are visited in the same order as max_window's, but
 * with the columns innermost and no branches, so the compiler vectorises. */
static void max_interior(const osp_conv_desc *d, const float *xp, int h0, int i_lo, int i_hi,
                         int q_lo, int q_hi, float *y, int32_t *arg) {
    float best[MAX_RUN];
    int32_t at[MAX_RUN];
    const int sw = d->stride_w;
#if defined(__AVX2__)
    if (sw == 2 && !arg && max_interior_stride2(d, xp, h0, i_lo, i_hi, q_lo, q_hi, y)) return;
#endif
    for (int q0 = q_lo; q0 < q_hi; q0 += MAX_RUN) {
        const int n = q_hi - q0 < MAX_RUN ? q_hi - q0 : MAX_RUN;
        const int first = (h0 + i_lo * d->dil_h) * d->w + q0 * sw - d->pad_w;
        for (int k = 0; k < n; k++) {
            best[k] = -INFINITY;
            at[k] = first + k * sw;
        }
        for (int i = i_lo; i < i_hi; i++) {
            for (int j = 0; j < d->kw; j++) {
                const int base = (h0 + i * d->dil_h) * d->w + q0 * sw - d->pad_w + j * d->dil_w;
                const float *src = xp + base;
                if (arg) {
                    for (int k = 0; k < n; k++) {
                        float v = src[k * sw];
                        int win = (v > best[k]) | (v != v);
                        best[k] = win ? v : best[k];
                        at[k] = win ? base + k * sw : at[k];
                    }
                } else {
                    for (int k = 0; k < n; k++) {
                        float v = src[k * sw];
                        best[k] = ((v > best[k]) | (v != v)) ? v : best[k];
                    }
                }
            }
        }
        memcpy(y + q0, best, sizeof(float) * (size_t)n);
        if (arg) memcpy(arg + q0, at, sizeof(int32_t) * (size_t)n);
    }
}

void KFN(maxpool_forward)(const osp_conv_desc *d, const float *x, float *y, int32_t *argmax) {
#if defined(__AVX512F__)
    if (!argmax && osp__avx512_maxpool3s2(d, x, y)) return;
#endif
    const int64_t planes = (int64_t)d->n * d->c, hw = (int64_t)d->h * d->w;
    const int64_t s = (int64_t)d->p * d->q;
    /* Columns whose windows lie inside the input: w0 >= 0 and the last tap
     * w0 + (kw - 1) * dil_w < w. */
    const int span = (d->kw - 1) * d->dil_w;
    int q_lo = (d->pad_w + d->stride_w - 1) / d->stride_w;
    int q_hi = d->w - 1 - span + d->pad_w < 0 ? 0 : (d->w - 1 - span + d->pad_w) / d->stride_w + 1;
    if (q_hi > d->q) q_hi = d->q;
    if (q_lo > q_hi) q_lo = q_hi;
#pragma omp parallel for schedule(static) if (planes * s * d->kh * d->kw > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        const float *xp = x + t * hw;
        float *yp = y + t * s;
        int32_t *ap = argmax ? argmax + t * s : NULL;
        for (int p = 0; p < d->p; p++) {
            int h0 = p * d->stride_h - d->pad_h, i_lo, i_hi;
            taps_inside(h0, d->kh, d->dil_h, d->h, &i_lo, &i_hi);
            float *yr = yp + (int64_t)p * d->q;
            int32_t *ar = ap ? ap + (int64_t)p * d->q : NULL;
            int lo = i_lo < i_hi ? q_lo : d->q, hi = i_lo < i_hi ? q_hi : d->q;
            for (int q = 0; q < lo; q++) max_window(d, xp, h0, i_lo, i_hi, q, yr + q, ar ? ar + q : NULL);
            if (lo < hi) max_interior(d, xp, h0, i_lo, i_hi, lo, hi, yr, ar);
            for (int q = hi > lo ? hi : lo; q < d->q; q++)
                max_window(d, xp, h0, i_lo, i_hi, q, yr + q, ar ? ar + q : NULL);
        }
    }
}

void KFN(maxpool_backward)(const osp_conv_desc *d, const float *dy, const int32_t *argmax,
                               float *dx) {
    if (!dx) return;
    const int64_t planes = (int64_t)d->n * d->c, hw = (int64_t)d->h * d->w;
    const int64_t s = (int64_t)d->p * d->q;
#pragma omp parallel for schedule(static) if (planes * s > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        const float *gp = dy + t * s;
        const int32_t *ap = argmax + t * s;
        float *xp = dx + t * hw;
        for (int64_t o = 0; o < s; o++)
            if (ap[o] >= 0) xp[ap[o]] += gp[o];
    }
}

/* Divisor of window (h0, w0), or 0 when no tap lies inside the input. */
static int avg_divisor(const osp_conv_desc *d, int exclude_pad, int h0, int w0, int i_lo,
                       int i_hi, int j_lo, int j_hi) {
    if (i_lo == i_hi || j_lo == j_hi) return 0;
    if (exclude_pad) return (i_hi - i_lo) * (j_hi - j_lo);
    return taps_in_padded(h0, d->kh, d->dil_h, d->h, d->pad_h) *
           taps_in_padded(w0, d->kw, d->dil_w, d->w, d->pad_w);
}

void KFN(avgpool_forward)(const osp_conv_desc *d, int exclude_pad, const float *x, float *y) {
    const int64_t planes = (int64_t)d->n * d->c, hw = (int64_t)d->h * d->w;
    const int64_t s = (int64_t)d->p * d->q;
    if (is_global(d)) {
        const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if (planes * hw > PAR_MIN_WORK)
        for (int64_t t = 0; t < planes; t++) y[t] = plane_sum(x + t * hw, hw) * inv;
        return;
    }
#pragma omp parallel for schedule(static) if (planes * s * d->kh * d->kw > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        const float *xp = x + t * hw;
        float *yp = y + t * s;
        for (int p = 0; p < d->p; p++) {
            int h0 = p * d->stride_h - d->pad_h, i_lo, i_hi;
            taps_inside(h0, d->kh, d->dil_h, d->h, &i_lo, &i_hi);
            for (int q = 0; q < d->q; q++) {
                int w0 = q * d->stride_w - d->pad_w, j_lo, j_hi;
                taps_inside(w0, d->kw, d->dil_w, d->w, &j_lo, &j_hi);
                int div = avg_divisor(d, exclude_pad, h0, w0, i_lo, i_hi, j_lo, j_hi);
                float sum = 0;
                for (int i = i_lo; i < i_hi; i++) {
                    const float *row = xp + (int64_t)(h0 + i * d->dil_h) * d->w;
                    for (int j = j_lo; j < j_hi; j++) sum += row[w0 + j * d->dil_w];
                }
                yp[(int64_t)p * d->q + q] = div ? sum / (float)div : 0.0f;
            }
        }
    }
}

void KFN(avgpool_backward)(const osp_conv_desc *d, int exclude_pad, const float *dy,
                               float *dx) {
    if (!dx) return;
    const int64_t planes = (int64_t)d->n * d->c, hw = (int64_t)d->h * d->w;
    const int64_t s = (int64_t)d->p * d->q;
    if (is_global(d)) {
        const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if (planes * hw > PAR_MIN_WORK)
        for (int64_t t = 0; t < planes; t++) {
            float g = dy[t] * inv;
            float *xp = dx + t * hw;
            for (int64_t i = 0; i < hw; i++) xp[i] += g;
        }
        return;
    }
#pragma omp parallel for schedule(static) if (planes * s * d->kh * d->kw > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        const float *gp = dy + t * s;
        float *xp = dx + t * hw;
        for (int p = 0; p < d->p; p++) {
            int h0 = p * d->stride_h - d->pad_h, i_lo, i_hi;
            taps_inside(h0, d->kh, d->dil_h, d->h, &i_lo, &i_hi);
            for (int q = 0; q < d->q; q++) {
                int w0 = q * d->stride_w - d->pad_w, j_lo, j_hi;
                taps_inside(w0, d->kw, d->dil_w, d->w, &j_lo, &j_hi);
                int div = avg_divisor(d, exclude_pad, h0, w0, i_lo, i_hi, j_lo, j_hi);
                if (!div) continue;
                float g = gp[(int64_t)p * d->q + q] / (float)div;
                for (int i = i_lo; i < i_hi; i++) {
                    float *row = xp + (int64_t)(h0 + i * d->dil_h) * d->w;
                    for (int j = j_lo; j < j_hi; j++) row[w0 + j * d->dil_w] += g;
                }
            }
        }
    }
}
