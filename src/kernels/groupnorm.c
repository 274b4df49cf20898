/* Group normalisation on the CPU over x (N x C x S): each sample's
 * channels in groups of Cg = C/groups, each group's M = Cg*S values
 * normalised by their own mean and biased variance.
 *
 *   forward   xhat = (x - mean) * invstd, y = xhat * gamma[c] + beta[c]
 *   backward  dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *             with dxhat = dy * gamma[c], the means over the group's M values;
 *             dgamma[c] += sum of dy * xhat, dbeta[c] += sum of dy (over N, S)
 *
 * Sums run in double, two passes for the variance (mean first), so that
 * inputs with a large mean and small spread keep their precision. Threads
 * own whole (sample, group) pairs for x and whole channels for the
 * parameter gradients, so every sum runs in one order whatever the thread
 * count. */
#include <math.h>

#include "cpu_kernels.h"

/* Values below which a team of threads costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

/* Mean and 1/sqrt(var + eps) of m values. */
static void stats(const float *x, int64_t m, float eps, float *mean, float *invstd) {
    double sum = 0;
    for (int64_t i = 0; i < m; i++) sum += x[i];
    const double mu = sum / (double)m;
    double sq = 0;
    for (int64_t i = 0; i < m; i++) {
        const double e = x[i] - mu;
        sq += e * e;
    }
    *mean = (float)mu;
    *invstd = (float)(1.0 / sqrt(sq / (double)m + eps));
}

void osp__cpu_groupnorm_forward(int n, int c, int s, int groups, float eps, const float *x,
                                const float *gamma, const float *beta, float *save_mean,
                                float *save_invstd, float *y) {
    const int cg = c / groups;
    const int64_t m = (int64_t)cg * s;
    const int pairs = n * groups;
#pragma omp parallel for schedule(static) if ((int64_t)pairs * m >= PARALLEL_MIN)
    for (int ng = 0; ng < pairs; ng++) {
        const float *xg = x + ng * m;
        float *yg = y + ng * m;
        float mean, invstd;
        stats(xg, m, eps, &mean, &invstd);
        if (save_mean) save_mean[ng] = mean;
        if (save_invstd) save_invstd[ng] = invstd;
        const int c0 = ng % groups * cg;
        for (int k = 0; k < cg; k++) {
            const float a = invstd * gamma[c0 + k], b = beta[c0 + k] - mean * a;
            const float *xk = xg + (int64_t)k * s;
            float *yk = yg + (int64_t)k * s;
            for (int i = 0; i < s; i++) yk[i] = xk[i] * a + b;
        }
    }
}

/* dx for one (sample, group): m values in cg channels of s. */
static void group_dx(int cg, int s, const float *x, const float *dy, const float *gamma,
                     float mean, float invstd, float *dx) {
    double sum_d = 0, sum_dx = 0; /* of dxhat, of dxhat * xhat */
    for (int k = 0; k < cg; k++)
        for (int i = 0; i < s; i++) {
            const int64_t o = (int64_t)k * s + i;
            const double dh = (double)dy[o] * gamma[k];
            sum_d += dh;
            sum_dx += dh * ((double)(x[o] - mean) * invstd);
        }
    const double m = (double)cg * s, mean_d = sum_d / m, mean_dx = sum_dx / m;
    for (int k = 0; k < cg; k++)
        for (int i = 0; i < s; i++) {
            const int64_t o = (int64_t)k * s + i;
            const double xh = (double)(x[o] - mean) * invstd;
            dx[o] += (float)(invstd * ((double)dy[o] * gamma[k] - mean_d - xh * mean_dx));
        }
}

void osp__cpu_groupnorm_backward(int n, int c, int s, int groups, const float *x,
                                 const float *dy, const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma,
                                 float *dbeta) {
    const int cg = c / groups;
    const int64_t m = (int64_t)cg * s, total = (int64_t)n * c * s;
    const int pairs = n * groups;
    (void)total;
    if (dx) {
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN)
        for (int ng = 0; ng < pairs; ng++)
            group_dx(cg, s, x + ng * m, dy + ng * m, gamma + ng % groups * cg, save_mean[ng],
                     save_invstd[ng], dx + ng * m);
    }
    if (!dgamma && !dbeta) return;
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN)
    for (int k = 0; k < c; k++) {
        double sg = 0, sb = 0;
        for (int i = 0; i < n; i++) {
            const int ng = i * groups + k / cg;
            const float mean = save_mean[ng], invstd = save_invstd[ng];
            const int64_t off = ((int64_t)i * c + k) * s;
            for (int j = 0; j < s; j++) {
                sb += dy[off + j];
                sg += (double)dy[off + j] * ((double)(x[off + j] - mean) * invstd);
            }
        }
        if (dgamma) dgamma[k] += (float)sg;
        if (dbeta) dbeta[k] += (float)sb;
    }
}
