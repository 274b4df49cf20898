/* Batch normalisation over x (N x C x S): each channel is normalised over its
 * M = N*S values. Threads own whole channels, so every sum runs in one fixed
 * order whatever the thread count. Channel sums are taken in double, and the
 * variance in a second pass about the mean, so that inputs with a large mean
 * and a small spread keep their precision. */
#include <assert.h>
#include <math.h>

#include "cpu_kernels.h"

/* Channels smaller than this many values are not worth a thread each. */
#define PARALLEL_MIN (1 << 14)

void osp__cpu_batchnorm_forward_train(int n, int c, int s, const float *x, const float *gamma,
                                      const float *beta, float momentum, float eps,
                                      float *running_mean, float *running_var, float *save_mean,
                                      float *save_invstd, float *y) {
    const int64_t plane = s, stride = (int64_t)c * s, m = (int64_t)n * s;
    assert(m > 0);
#pragma omp parallel for schedule(static) if ((int64_t)c * m >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const float *xc = x + ch * plane;
        double sum = 0;
        for (int b = 0; b < n; b++)
            for (int64_t i = 0; i < plane; i++) sum += xc[b * stride + i];
        double mean = sum / (double)m;
        double sq = 0;
        for (int b = 0; b < n; b++)
            for (int64_t i = 0; i < plane; i++) {
                double d = xc[b * stride + i] - mean;
                sq += d * d;
            }
        double var = sq / (double)m; /* biased: what the batch is normalised by */
        double invstd = 1.0 / sqrt(var + eps);
        const double scale = gamma[ch] * invstd, shift = beta[ch];
        float *yc = y + ch * plane;
        /* (x - mean) in double: a float mean would cost the low bits of
         * inputs far from zero. */
        for (int b = 0; b < n; b++)
            for (int64_t i = 0; i < plane; i++)
                yc[b * stride + i] = (float)((xc[b * stride + i] - mean) * scale + shift);
        save_mean[ch] = (float)mean;
        save_invstd[ch] = (float)invstd;
        /* PyTorch tracks the unbiased variance; one value has none, so it
         * keeps the biased one (zero) rather than dividing by zero. */
        double unbiased = m > 1 ? sq / (double)(m - 1) : var;
        running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
        running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
}

void osp__cpu_batchnorm_forward_infer(int n, int c, int s, const float *x, const float *gamma,
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
 *   dx     = gamma * invstd * (dy - dbeta / M - xhat * dgamma / M). */
void osp__cpu_batchnorm_backward(int n, int c, int s, const float *x, const float *dy,
                                 const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    const int64_t plane = s, stride = (int64_t)c * s, m = (int64_t)n * s;
    if (!dx && !dgamma && !dbeta) return;
#pragma omp parallel for schedule(static) if ((int64_t)c * m >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const float *xc = x + ch * plane, *dyc = dy + ch * plane;
        const double mean = save_mean[ch], invstd = save_invstd[ch];
        double sum_dy = 0, sum_dy_xhat = 0;
        for (int b = 0; b < n; b++)
            for (int64_t i = 0; i < plane; i++) {
                double g = dyc[b * stride + i];
                sum_dy += g;
                sum_dy_xhat += g * (xc[b * stride + i] - mean) * invstd;
            }
        if (dbeta) dbeta[ch] += (float)sum_dy;
        if (dgamma) dgamma[ch] += (float)sum_dy_xhat;
        if (!dx) continue;
        const double k = gamma[ch] * invstd;
        const double mean_dy = sum_dy / (double)m, mean_dy_xhat = sum_dy_xhat / (double)m;
        float *dxc = dx + ch * plane;
        for (int b = 0; b < n; b++)
            for (int64_t i = 0; i < plane; i++) {
                double xhat = (xc[b * stride + i] - mean) * invstd;
                dxc[b * stride + i] += (float)(k * (dyc[b * stride + i] - mean_dy - xhat * mean_dy_xhat));
            }
    }
}
