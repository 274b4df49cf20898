/* Moving values between layouts: a permutation of axes (transpose) and
 * blocks of rows at a stride (concatenation along an inner axis). One
 * sample per thread, so results do not depend on the thread count. */
#include <string.h>

#include "cpu_kernels.h"

/* Values below which one thread is faster than a team. */
#define PARALLEL_MIN (1 << 15)

/* Calls BODY(o, at) for every output offset o of a sample, in order, with
 * at the offset of the input value it holds; the innermost axis is a
 * loop. */
#define FOR_EACH_VALUE(ndim, dims, stride, BODY)                                            \
    do {                                                                                    \
        const int nd = (ndim);                                                              \
        const int64_t len = (dims)[nd - 1], step = (stride)[nd - 1];                        \
        int64_t idx[OSP_MAX_DIMS] = {0}, base = 0, o = 0;                                   \
        for (;;) {                                                                          \
            for (int64_t j = 0; j < len; j++, o++) {                                        \
                const int64_t at = base + j * step;                                           \
                BODY;                                                                       \
            }                                                                               \
            int k = nd - 2;                                                                 \
            for (; k >= 0; k--) {                                                           \
                base += (stride)[k];                                                        \
                if (++idx[k] < (dims)[k]) break;                                            \
                base -= (stride)[k] * (dims)[k];                                            \
                idx[k] = 0;                                                                 \
            }                                                                               \
            if (k < 0) break;                                                               \
        }                                                                                   \
    } while (0)

static int64_t sample_size(int ndim, const int64_t *dims) {
    int64_t size = 1;
    for (int i = 0; i < ndim; i++) size *= dims[i];
    return size;
}

void osp__cpu_permute_forward(int64_t samples, int ndim, const int64_t *dims,
                              const int64_t *stride, const float *x, float *y) {
    const int64_t size = sample_size(ndim, dims);
#pragma omp parallel for schedule(static) if (samples * size >= PARALLEL_MIN)
    for (int64_t s = 0; s < samples; s++) {
        const float *xs = x + s * size;
        float *ys = y + s * size;
        FOR_EACH_VALUE(ndim, dims, stride, ys[o] = xs[at]);
    }
}

void osp__cpu_permute_backward(int64_t samples, int ndim, const int64_t *dims,
                               const int64_t *stride, const float *dy, float *dx) {
    const int64_t size = sample_size(ndim, dims);
#pragma omp parallel for schedule(static) if (samples * size >= PARALLEL_MIN)
    for (int64_t s = 0; s < samples; s++) {
        float *dxs = dx + s * size;
        const float *dys = dy + s * size;
        FOR_EACH_VALUE(ndim, dims, stride, dxs[at] += dys[o]);
    }
}

void osp__cpu_copy_rows(int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                        int64_t ldy) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
        memcpy(yr, xr, (size_t)len * sizeof(float));
    }
}

void osp__cpu_accumulate_rows(int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                              int64_t ldy) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
        for (int64_t j = 0; j < len; j++) yr[j] += xr[j];
    }
}
