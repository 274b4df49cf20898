/* Batch normalisation over x (N x C x S): each channel is normalised over its
 * M = N*S values. Threads own whole channels, so every sum runs in one fixed
 * order whatever the thread count.
 *
 * Precision and speed: sums run in LANES double accumulators (float
 * lanes lost 1e-3 of the gradient sums, which nearly cancel), in a fixed
 * order that vectorises on every instruction set. The mean and variance
 * come from one pass of sums about a pivot p (the channel's first value):
 * var = E[(x - p)^2] - (mean - p)^2. Since p is one of the values, mean - p
 * is a few standard deviations, and in double the difference loses nothing
 * that matters even for inputs with a large mean and a small spread. */
#include <assert.h>
#include <math.h>

#include "cpu_kernels.h"

/* Channels smaller than this many values are not worth a thread each. */
#define PARALLEL_MIN (1 << 14)
#define LANES 8

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>

/* The AVX-512 and AVX2 copies sum with explicit vectors: a float vector a
 * step, widened to two vectors of doubles, two accumulators per sum. GCC's
 * code for the lane arrays below ran these passes at a third of memory
 * speed, which made batch norm a large share of ResNet-20's training step
 * (docs/kernels.md). */
#if defined(__AVX512F__)
#define STEP 16
typedef __m512 vf;
typedef __m512d vd;
#define VF_LOAD(p) _mm512_loadu_ps(p)
#define VD_SET1(v) _mm512_set1_pd(v)
#define VD_ADD(a, b) _mm512_add_pd(a, b)
#define VD_SUB(a, b) _mm512_sub_pd(a, b)
#define VD_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define VD_TOTAL(v) _mm512_reduce_add_pd(v)
static inline vd low_pd(vf v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline vd high_pd(vf v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
/* The two halves, each rounded to float, stored as one vector at y. */
static inline void store_halves(float *y, vd lo, vd hi) {
    _mm512_storeu_ps(y, _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)),
                                           _mm512_cvtpd_ps(hi), 1));
}
#else
#define STEP 8
typedef __m256 vf;
typedef __m256d vd;
#define VF_LOAD(p) _mm256_loadu_ps(p)
#define VD_SET1(v) _mm256_set1_pd(v)
#define VD_ADD(a, b) _mm256_add_pd(a, b)
#define VD_SUB(a, b) _mm256_sub_pd(a, b)
#define VD_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define VD_TOTAL(v) total_pd(v)
static inline vd low_pd(vf v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
static inline vd high_pd(vf v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
static inline double total_pd(vd v) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
static inline void store_halves(float *y, vd lo, vd hi) {
    _mm256_storeu_ps(y, _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)),
                                             _mm256_cvtpd_ps(hi), 1));
}
#endif

#define HAVE_VECTOR_SUMS 1

static void plane_moments(const float *v, int64_t n, float pivot, double *sum, double *sq) {
    const vd p = VD_SET1(pivot);
    vd a0 = VD_SET1(0.0), a1 = a0, b0 = a0, b1 = a0;
    int64_t i = 0;
    for (; i + STEP <= n; i += STEP) {
        const vf x = VF_LOAD(v + i);
        const vd d0 = VD_SUB(low_pd(x), p), d1 = VD_SUB(high_pd(x), p);
        a0 = VD_ADD(a0, d0);
        a1 = VD_ADD(a1, d1);
        b0 = VD_FMA(d0, d0, b0);
        b1 = VD_FMA(d1, d1, b1);
    }
    double ta = VD_TOTAL(VD_ADD(a0, a1)), tb = VD_TOTAL(VD_ADD(b0, b1));
    for (; i < n; i++) {
        double d = (double)v[i] - pivot;
        ta += d;
        tb += d * d;
    }
    *sum += ta;
    *sq += tb;
}

static void plane_dot(const float *g, const float *x, int64_t n, float m, double *sg, double *sgx) {
    const vd mv = VD_SET1(m);
    vd a0 = VD_SET1(0.0), a1 = a0, b0 = a0, b1 = a0;
    int64_t i = 0;
    for (; i + STEP <= n; i += STEP) {
        const vf gv = VF_LOAD(g + i), xv = VF_LOAD(x + i);
        const vd g0 = low_pd(gv), g1 = high_pd(gv);
        a0 = VD_ADD(a0, g0);
        a1 = VD_ADD(a1, g1);
        b0 = VD_FMA(g0, VD_SUB(low_pd(xv), mv), b0);
        b1 = VD_FMA(g1, VD_SUB(high_pd(xv), mv), b1);
    }
    double ta = VD_TOTAL(VD_ADD(a0, a1)), tb = VD_TOTAL(VD_ADD(b0, b1));
    for (; i < n; i++) {
        ta += g[i];
        tb += (double)g[i] * ((double)x[i] - m);
    }
    *sg += ta;
    *sgx += tb;
}

/* y = (x - mean) * scale + shift in double, rounded to float. */
static void plane_normalize(const float *x, float *y, int64_t n, double mean, double scale,
                            double shift) {
    const vd mv = VD_SET1(mean), sv = VD_SET1(scale), hv = VD_SET1(shift);
    int64_t i = 0;
    for (; i + STEP <= n; i += STEP) {
        const vf xv = VF_LOAD(x + i);
        store_halves(y + i, VD_FMA(VD_SUB(low_pd(xv), mv), sv, hv),
                     VD_FMA(VD_SUB(high_pd(xv), mv), sv, hv));
    }
    for (; i < n; i++) y[i] = (float)((x[i] - mean) * scale + shift);
}
#endif

#ifndef HAVE_VECTOR_SUMS
static double lane_total(const double *acc) {
    double t = 0;
    for (int l = 0; l < LANES; l++) t += acc[l];
    return t;
}

/* Sums of v - pivot and (v - pivot)^2 over v[0..n), in one pass: about a
 * value near the data (the channel's first one), so a large mean costs no
 * precision and the variance needs no second pass about the mean. */
static void plane_moments(const float *v, int64_t n, float pivot, double *sum, double *sq) {
    double a[LANES] = {0}, b[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            double d = (double)v[i + l] - pivot;
            a[l] += d;
            b[l] += d * d;
        }
    double ta = lane_total(a), tb = lane_total(b);
    for (; i < n; i++) {
        double d = (double)v[i] - pivot;
        ta += d;
        tb += d * d;
    }
    *sum += ta;
    *sq += tb;
}

/* Sums of g and g * (x - m) over a plane. */
static void plane_dot(const float *g, const float *x, int64_t n, float m, double *sg, double *sgx) {
    double a[LANES] = {0}, b[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            a[l] += g[i + l];
            b[l] += (double)g[i + l] * ((double)x[i + l] - m);
        }
    double ta = lane_total(a), tb = lane_total(b);
    for (; i < n; i++) {
        ta += g[i];
        tb += (double)g[i] * ((double)x[i] - m);
    }
    *sg += ta;
    *sgx += tb;
}

static void plane_normalize(const float *x, float *y, int64_t n, double mean, double scale,
                            double shift) {
    for (int64_t i = 0; i < n; i++) y[i] = (float)((x[i] - mean) * scale + shift);
}
#endif

void KFN(batchnorm_forward_train)(int n, int c, int s, const float *x, const float *gamma,
                                  const float *beta, float momentum, float eps,
                                  float *running_mean, float *running_var, float *save_mean,
                                  float *save_invstd, float *y) {
    const int64_t plane = s, stride = (int64_t)c * s, m = (int64_t)n * s;
    assert(m > 0);
#pragma omp parallel for schedule(static) if ((int64_t)c * m >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const float *xc = x + ch * plane;
        const float pivot = xc[0];
        double sum = 0, sq = 0;
        for (int b = 0; b < n; b++) plane_moments(xc + b * stride, plane, pivot, &sum, &sq);
        const double shift_m = sum / (double)m, mean = pivot + shift_m;
        const float mf = (float)mean;
        double var = sq / (double)m - shift_m * shift_m; /* biased: what the batch is normalised by */
        if (var < 0) var = 0;
        const double invstd = 1.0 / sqrt(var + eps);
        /* In double, as PyTorch's golden outputs need: a float scale and
         * shift moved the golden test's gradients by 1e-2 (and so did
         * float arithmetic about the float mean, with the shift corrected
         * in double: 6e-3). */
        const double scale = gamma[ch] * invstd, shift = beta[ch];
        float *yc = y + ch * plane;
        for (int b = 0; b < n; b++)
            plane_normalize(xc + b * stride, yc + b * stride, plane, mean, scale, shift);
        save_mean[ch] = mf;
        save_invstd[ch] = (float)invstd;
        /* PyTorch tracks the unbiased variance; one value has none, so it
         * keeps the biased one (zero) rather than dividing by zero. */
        double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
        running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
        running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
}

void KFN(batchnorm_forward_infer)(int n, int c, int s, const float *x, const float *gamma,
                                  const float *beta, const float *running_mean,
                                  const float *running_var, float eps, float *y) {
    const int64_t plane = s;
    /* Parallel over (sample, channel) planes: inference batches may be one
     * image with few channels or many with many. */
#pragma omp parallel for schedule(static) if ((int64_t)n * c * plane >= PARALLEL_MIN)
    for (int64_t nc = 0; nc < (int64_t)n * c; nc++) {
        int ch = (int)(nc % c);
        double invstd = 1.0 / sqrt((double)running_var[ch] + eps);
        const float scale = (float)(gamma[ch] * invstd), mean = running_mean[ch], shift = beta[ch];
        const float *xp = x + nc * plane;
        float *yp = y + nc * plane;
        for (int64_t i = 0; i < plane; i++) yp[i] = (xp[i] - mean) * scale + shift;
    }
}

/* With xhat = (x - mean) * invstd over a channel's M values:
 *   dbeta  = sum(dy),  dgamma = sum(dy * xhat),
 *   dx     = gamma * invstd * (dy - dbeta / M - xhat * dgamma / M).
 * save_mean holds the float mean the forward normalised about. */
void KFN(batchnorm_backward)(int n, int c, int s, const float *x, const float *dy,
                             const float *gamma, const float *save_mean,
                             const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    const int64_t plane = s, stride = (int64_t)c * s, m = (int64_t)n * s;
    if (!dx && !dgamma && !dbeta) return;
#pragma omp parallel for schedule(static) if ((int64_t)c * m >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const float *xc = x + ch * plane, *dyc = dy + ch * plane;
        const float mean = save_mean[ch], invstd = save_invstd[ch];
        double sum_dy = 0, sum_dy_xm = 0;
        for (int b = 0; b < n; b++)
            plane_dot(dyc + b * stride, xc + b * stride, plane, mean, &sum_dy, &sum_dy_xm);
        const double sum_dy_xhat = sum_dy_xm * invstd;
        if (dbeta) dbeta[ch] += (float)sum_dy;
        if (dgamma) dgamma[ch] += (float)sum_dy_xhat;
        if (!dx) continue;
        /* dx += k * (dy - mean_dy) - k * invstd * mean_dy_xhat * (x - mean) */
        const float k = gamma[ch] * invstd;
        const float mean_dy = (float)(sum_dy / (double)m);
        const float kx = (float)(k * invstd * (sum_dy_xhat / (double)m));
        float *dxc = dx + ch * plane;
        for (int b = 0; b < n; b++) {
            const float *gp = dyc + b * stride, *xp = xc + b * stride;
            float *dp = dxc + b * stride;
            for (int64_t i = 0; i < plane; i++)
                dp[i] += k * (gp[i] - mean_dy) - kx * (xp[i] - mean);
        }
    }
}
