/* L2 normalisation of each row of x (rows x cols): y = x / max(||x||, eps),
 * as torch.nn.functional.normalize. Norms are summed in double; threads own
 * whole rows. */
#include <math.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)

static double row_norm(const float *x, int cols) {
    double sq = 0;
    for (int j = 0; j < cols; j++) sq += (double)x[j] * x[j];
    return sqrt(sq);
}

void osp__cpu_l2norm_forward(int rows, int cols, float eps, const float *x, float *y) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= PARALLEL_MIN && rows > 1)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * cols;
        float *yr = y + (int64_t)r * cols;
        double norm = row_norm(xr, cols);
        float inv = (float)(1.0 / (norm > eps ? norm : eps));
        for (int j = 0; j < cols; j++) yr[j] = xr[j] * inv;
    }
}

/* Above eps, y = x / ||x|| gives dx = (dy - y * (y . dy)) / ||x||; below it
 * the denominator is the constant eps and dx = dy / eps (PyTorch's
 * clamp_min passes the gradient to the norm only where norm >= eps). */
void osp__cpu_l2norm_backward(int rows, int cols, float eps, const float *x, const float *y,
                              const float *dy, float *dx) {
    if (!dx) return;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= PARALLEL_MIN && rows > 1)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * cols, *yr = y + (int64_t)r * cols;
        const float *dyr = dy + (int64_t)r * cols;
        float *dxr = dx + (int64_t)r * cols;
        double norm = row_norm(xr, cols);
        if (norm >= eps) {
            double dot = 0;
            for (int j = 0; j < cols; j++) dot += (double)yr[j] * dyr[j];
            float inv = (float)(1.0 / norm), d = (float)dot;
            for (int j = 0; j < cols; j++) dxr[j] += (dyr[j] - yr[j] * d) * inv;
        } else {
            float inv = 1.0f / eps;
            for (int j = 0; j < cols; j++) dxr[j] += dyr[j] * inv;
        }
    }
}
