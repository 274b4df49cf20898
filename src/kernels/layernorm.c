/* Layer normalisation of each row (rows x cols), as torch.nn.LayerNorm over
 * the trailing axes: y = (x - mean) / sqrt(var + eps) * gamma + beta with
 * the biased variance. The forward's statistics are summed in 16 float
 * lanes, then in double (a vectorised loop; a row of a transformer is a few
 * hundred values, tens a lane), the backward's in double; threads own whole
 * rows in the forward and dx, whole columns in dgamma and dbeta, so that the
 * result does not depend on the thread count. Compiled once per
 * instruction set (cpu_kernels.h). */
#include <math.h>

#include "cpu_kernels.h"

#define LANES 16

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)

/* Sum of (x[j] - c)^2 if square, else of x[j] - c. */
static double lane_sum(const float *x, int cols, float c, int square) {
    float lane[LANES] = {0};
    int j = 0;
    for (; j + LANES <= cols; j += LANES)
        for (int u = 0; u < LANES; u++) {
            const float d = x[j + u] - c;
            lane[u] += square ? d * d : d;
        }
    double s = 0;
    for (; j < cols; j++) {
        const double d = (double)x[j] - c;
        s += square ? d * d : d;
    }
    for (int u = 0; u < LANES; u++) s += lane[u];
    return s;
}

/* Two passes: the mean, then the squares about it (no cancellation). */
static void row_stats(const float *x, int cols, float eps, float *mean, float *invstd) {
    const float m = (float)(lane_sum(x, cols, 0.0f, 0) / cols);
    const double var = lane_sum(x, cols, m, 1) / cols;
    *mean = m;
    *invstd = (float)(1.0 / sqrt(var + (double)eps));
}

void KFN(layernorm_forward)(int64_t rows, int cols, float eps, const float *x,
                            const float *gamma, const float *beta, float *y,
                            float *save_mean, float *save_invstd) {
#pragma omp parallel for schedule(static) if (rows * cols >= PARALLEL_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float mean, inv;
        row_stats(xr, cols, eps, &mean, &inv);
        if (save_mean) save_mean[r] = mean;
        if (save_invstd) save_invstd[r] = inv;
        for (int j = 0; j < cols; j++) {
            float v = (xr[j] - mean) * inv;
            yr[j] = v * (gamma ? gamma[j] : 1.0f) + (beta ? beta[j] : 0.0f);
        }
    }
}

/* With xhat = (x - mean) * invstd and g = dy * gamma:
 * dx = invstd * (g - mean(g) - xhat * mean(g * xhat)); dgamma = sum dy xhat,
 * dbeta = sum dy over rows. */
void KFN(layernorm_backward)(int64_t rows, int cols, const float *x, const float *dy,
                             const float *gamma, const float *save_mean,
                             const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    if (dx) {
#pragma omp parallel for schedule(static) if (rows * cols >= PARALLEL_MIN && rows > 1)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * cols, *dyr = dy + r * cols;
            float *dxr = dx + r * cols;
            const float mean = save_mean[r], inv = save_invstd[r];
            double sg = 0, sgx = 0;
            for (int j = 0; j < cols; j++) {
                double g = (double)dyr[j] * (gamma ? gamma[j] : 1.0f);
                sg += g;
                sgx += g * ((xr[j] - mean) * inv);
            }
            const float mg = (float)(sg / cols), mgx = (float)(sgx / cols);
            for (int j = 0; j < cols; j++) {
                float g = dyr[j] * (gamma ? gamma[j] : 1.0f), xhat = (xr[j] - mean) * inv;
                dxr[j] += inv * (g - mg - xhat * mgx);
            }
        }
    }
    if (!dgamma && !dbeta) return;
#pragma omp parallel for schedule(static) if (rows * cols >= PARALLEL_MIN && cols > 1)
    for (int j = 0; j < cols; j++) {
        double sg = 0, sb = 0;
        for (int64_t r = 0; r < rows; r++) {
            float d = dy[r * cols + j];
            sg += (double)d * ((x[r * cols + j] - save_mean[r]) * save_invstd[r]);
            sb += d;
        }
        if (dgamma) dgamma[j] += (float)sg;
        if (dbeta) dbeta[j] += (float)sb;
    }
}
