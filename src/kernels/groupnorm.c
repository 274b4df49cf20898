/* Group normalisation on the CPU over x (N x C x S): each sample's
 * channels in groups of Cg = C/groups, each group's M = Cg*S values
 * normalised by their own mean and biased variance.
 *
 *   forward   xhat = (x - mean) * invstd, y = xhat * gamma[c] + beta[c]
 *   backward  dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *             with dxhat = dy * gamma[c], the means over the group's M values;
 *             dgamma[c] += sum of dy * xhat, dbeta[c] += sum of dy (over N, S)
 *
 * Sums run in double, in LANES accumulators, the variance's about a pivot
 * (one of the values), so that inputs with a large mean and small spread
 * keep their precision. Threads
 * own whole (sample, group) pairs for x and whole channels for the
 * parameter gradients, so every sum runs in one order whatever the thread
 * count. */
#include <math.h>

#include "cpu_kernels.h"

/* Values below which a team of threads costs more than it saves. */
#define PARALLEL_MIN (1 << 15)
#define LANES 8

/* Mean and 1/sqrt(var + eps) of m values, in one pass of LANES double
 * sums about a pivot p (the first value): var = E[(x - p)^2] - (mean - p)^2,
 * which loses nothing that matters in double since p is one of the values
 * (as batchnorm.c); the lanes break the chain of dependent adds. */
static void stats(const float *x, int64_t m, float eps, float *mean, float *invstd) {
    const double p = x[0];
    double a[LANES] = {0}, b[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= m; i += LANES)
        for (int l = 0; l < LANES; l++) {
            const double d = (double)x[i + l] - p;
            a[l] += d;
            b[l] += d * d;
        }
    double sa = 0, sb = 0;
    for (; i < m; i++) {
        const double d = (double)x[i] - p;
        sa += d;
        sb += d * d;
    }
    for (int l = 0; l < LANES; l++) {
        sa += a[l];
        sb += b[l];
    }
    const double shift = sa / (double)m, var = fmax(sb / (double)m - shift * shift, 0.0);
    *mean = (float)(p + shift);
    *invstd = (float)(1.0 / sqrt(var + eps));
}

/* sum of g and of g * (x - mean), n values, in LANES double sums. */
static void dot(const float *g, const float *x, int64_t n, float mean, double *sg, double *sgx) {
    double a[LANES] = {0}, b[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            a[l] += g[i + l];
            b[l] += (double)g[i + l] * ((double)x[i + l] - mean);
        }
    double ta = 0, tb = 0;
    for (; i < n; i++) {
        ta += g[i];
        tb += (double)g[i] * ((double)x[i] - mean);
    }
    for (int l = 0; l < LANES; l++) {
        ta += a[l];
        tb += b[l];
    }
    *sg = ta;
    *sgx = tb;
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
    for (int k = 0; k < cg; k++) {
        double sg, sgx;
        dot(dy + (int64_t)k * s, x + (int64_t)k * s, s, mean, &sg, &sgx);
        sum_d += sg * gamma[k];
        sum_dx += sgx * gamma[k] * invstd;
    }
    const double m = (double)cg * s, mean_d = sum_d / m, mean_dx = sum_dx / m;
    for (int k = 0; k < cg; k++) {
        /* dx = invstd * (dy * gamma - mean_d - (x - mean) * invstd * mean_dx) */
        const float a = (float)(invstd * gamma[k]), b = (float)(invstd * invstd * mean_dx);
        const float c = (float)(-invstd * mean_d) + b * mean;
        const float *xk = x + (int64_t)k * s, *dk = dy + (int64_t)k * s;
        float *o = dx + (int64_t)k * s;
        for (int i = 0; i < s; i++) o[i] += a * dk[i] - b * xk[i] + c;
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
            double g, gx;
            dot(dy + off, x + off, s, mean, &g, &gx);
            sb += g;
            sg += gx * invstd;
        }
        if (dgamma) dgamma[k] += (float)sg;
        if (dbeta) dbeta[k] += (float)sb;
    }
}
