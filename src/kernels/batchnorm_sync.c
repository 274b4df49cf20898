/* Batch normalisation whose statistics span several replicas' batches
 * (synchronised batch norm): batchnorm.c's arithmetic, cut where it needs
 * a sum over the whole batch, so that the caller can add the replicas'
 * sums in between. Per channel, over this replica's n x s values:
 *
 *   forward   sums of x (center NULL), then of (x - mean)^2 about the
 *             global mean (two passes: no cancellation whatever the mean);
 *             then y from the global mean and variance;
 *   backward  sums of dy and dy * (x - mean); then dx from the global ones.
 *
 * Sums run in double, in a fixed order per channel: LANES interleaved
 * partial sums per channel, added up at its end. One running sum would
 * make every add wait on the one before; independent lanes keep the
 * adder busy and vectorise (in-process replicas, src/train/replicas.c,
 * run these on every batch-norm layer of every step). Threads own whole
 * channels. */
#include <math.h>

#include "cpu_kernels.h"

#define PARALLEL_MIN (1 << 14)
#define LANES 8

static double lanes_total(const double *v) {
    double t = 0;
    for (int l = 0; l < LANES; l++) t += v[l];
    return t;
}

void osp__cpu_batchnorm_sums(int n, int c, int s, const float *x, const double *center,
                             double *sum, double *sq) {
    const int64_t stride = (int64_t)c * s;
#pragma omp parallel for schedule(static) if ((int64_t)n * stride >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const double p = center ? center[ch] : 0.0;
        double a[LANES] = {0}, b[LANES] = {0};
        for (int i = 0; i < n; i++) {
            const float *v = x + i * stride + (int64_t)ch * s;
            int j = 0;
            for (; j + LANES <= s; j += LANES)
                for (int l = 0; l < LANES; l++) {
                    const double d = (double)v[j + l] - p;
                    a[l] += d;
                    b[l] += d * d;
                }
            for (; j < s; j++) {
                const double d = (double)v[j] - p;
                a[0] += d;
                b[0] += d * d;
            }
        }
        sum[ch] = lanes_total(a);
        sq[ch] = lanes_total(b);
    }
}

void osp__cpu_batchnorm_forward_stats(int n, int c, int s, const float *x, const float *gamma,
                                      const float *beta, float momentum, float eps,
                                      const double *mean, const double *var, double count,
                                      float *running_mean, float *running_var, float *save_mean,
                                      float *save_invstd, float *y) {
    const int64_t stride = (int64_t)c * s;
#pragma omp parallel for schedule(static) if ((int64_t)n * stride >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const double v = var[ch] > 0 ? var[ch] : 0;
        const double invstd = 1.0 / sqrt(v + eps), scale = gamma[ch] * invstd, shift = beta[ch];
        for (int i = 0; i < n; i++) {
            const int64_t at = i * stride + (int64_t)ch * s;
            for (int j = 0; j < s; j++)
                y[at + j] = (float)(((double)x[at + j] - mean[ch]) * scale + shift);
        }
        save_mean[ch] = (float)mean[ch];
        save_invstd[ch] = (float)invstd;
        /* As batchnorm.c: the running variance is the unbiased one. */
        const double unbiased = count > 1 ? v * count / (count - 1) : v;
        running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean[ch]);
        running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
}

void osp__cpu_batchnorm_backward_sums(int n, int c, int s, const float *x, const float *dy,
                                      const float *save_mean, const float *save_invstd,
                                      double *sum_dy, double *sum_dy_xm, float *dgamma,
                                      float *dbeta) {
    const int64_t stride = (int64_t)c * s;
#pragma omp parallel for schedule(static) if ((int64_t)n * stride >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const double m = save_mean[ch];
        double la[LANES] = {0}, lb[LANES] = {0};
        for (int i = 0; i < n; i++) {
            const float *g = dy + i * stride + (int64_t)ch * s, *v = x + i * stride + (int64_t)ch * s;
            int j = 0;
            for (; j + LANES <= s; j += LANES)
                for (int l = 0; l < LANES; l++) {
                    la[l] += g[j + l];
                    lb[l] += (double)g[j + l] * ((double)v[j + l] - m);
                }
            for (; j < s; j++) {
                la[0] += g[j];
                lb[0] += (double)g[j] * ((double)v[j] - m);
            }
        }
        const double a = lanes_total(la), b = lanes_total(lb);
        sum_dy[ch] = a;
        sum_dy_xm[ch] = b;
        if (dbeta) dbeta[ch] += (float)a;
        if (dgamma) dgamma[ch] += (float)(b * save_invstd[ch]);
    }
}

/* dx = gamma * invstd * (dy - sum_dy / M - xhat * sum_dy_xhat / M), the
 * sums and M over the whole batch (batchnorm.c's backward). */
void osp__cpu_batchnorm_backward_stats(int n, int c, int s, const float *x, const float *dy,
                                       const float *gamma, const float *save_mean,
                                       const float *save_invstd, const double *sum_dy,
                                       const double *sum_dy_xm, double count, float *dx) {
    const int64_t stride = (int64_t)c * s;
#pragma omp parallel for schedule(static) if ((int64_t)n * stride >= PARALLEL_MIN && c > 1)
    for (int ch = 0; ch < c; ch++) {
        const float mean = save_mean[ch], invstd = save_invstd[ch];
        const float k = gamma[ch] * invstd;
        const float mean_dy = (float)(sum_dy[ch] / count);
        const float kx = (float)(k * invstd * (sum_dy_xm[ch] * invstd / count));
        for (int i = 0; i < n; i++) {
            const int64_t at = i * stride + (int64_t)ch * s;
            for (int j = 0; j < s; j++)
                dx[at + j] += k * (dy[at + j] - mean_dy) - kx * (x[at + j] - mean);
        }
    }
}
