/* The element-wise work of the ops that have no kernel family of their
 * own (add, reshape, dropout, ...): plain loops, one per slot, so that the
 * ops never touch activations themselves. Each value is computed as the
 * op's own loop computed it, so results are the same bit for bit. */
#include "cpu_kernels.h"

void osp__cpu_add(int64_t count, const float *a, const float *b, float *y) {
    for (int64_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

void osp__cpu_accumulate(int64_t count, const float *x, float *y) {
    for (int64_t i = 0; i < count; i++) y[i] += x[i];
}

void osp__cpu_dropout_forward(int64_t count, float p, uint64_t seed, uint64_t stream,
                              uint64_t step, const float *x, float *y, uint8_t *mask) {
    const float scale = 1.0f / (1.0f - p);
    osp_rng rng;
    osp_rng_derive(&rng, seed, stream, step);
    for (int64_t i = 0; i < count; i++) {
        mask[i] = osp_rng_uniform(&rng) >= p;
        y[i] = mask[i] ? x[i] * scale : 0.0f;
    }
}

void osp__cpu_dropout_backward(int64_t count, float p, const uint8_t *mask, const float *dy,
                               float *dx) {
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < count; i++)
        if (mask[i]) dx[i] += dy[i] * scale;
}

void osp__cpu_fill_bytes(void *ctx, void *p, int value, size_t bytes) {
    (void)ctx;
    unsigned char *b = p;
    for (size_t i = 0; i < bytes; i++) b[i] = (unsigned char)value;
}
