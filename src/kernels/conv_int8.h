/* Int8 convolution (inference), shared by the portable kernel
 * (conv_int8.c) and the AVX-512 VNNI one (conv_int8_vnni.c): the layouts,
 * the driver that quantises the input and runs a GEMM per image, and the
 * epilogue both must compute in the same order, so that they agree bit
 * for bit.
 *
 * VNNI's dot product takes four bytes at a time, so the taps of a window
 * go in groups of four, and a GEMM over groups g of B (input bytes) and W
 * (filters) gives each output
 *     acc = sum over g, t < 4 of W[k][g][t] * B[n][g][t]        (exact, int32)
 * Two ways to lay B out, chosen by the shape alone:
 *
 *  - Direct (strides up to 4: all the layers of common CNNs): the input
 *    is quantised into [ceil(C / 4)][Hp][Wp][4] bytes, four channels side
 *    by side, with borders holding the zero point. A group is four
 *    channels at one tap (i, j); the outputs are numbered over a grid as
 *    wide as the bordered input (n = p * Wp + q), so that for every group
 *    the bytes of 16 consecutive outputs are 64 consecutive bytes, at an
 *    offset that depends on the group alone. The grid's columns past Q
 *    are computed and dropped (2 of 58 at 56 x 56 with 3 x 3 windows).
 *    With strides sh x sw the bordered plane is split into phases, rows
 *    r = i mod sh and columns j mod sw each, [ceil(C / 4)][phase]
 *    [Hp / sh][Wp / sw][4] (only the phases some tap reads: one for a
 *    1 x 1 window); output (p, q) at tap (i, j) reads phase (i mod sh,
 *    j mod sw) at (p + i / sh, q + j / sw), so the grid is Wp / sw wide
 *    and each tap is again one offset: a strided layer is a stride-1
 *    one over its phases, with no im2col.
 *  - Panel (strides over 4): the window is unrolled (im2col) into blocks
 *    of 32 outputs, [blocks][groups][32][4], a group being four
 *    consecutive taps of the flattened window (c, i, j); grid width Q.
 *
 * Either way a group's bytes for block b of 32 outputs start at
 *     src + b * block_stride + off[g]
 * and a 12 x 32 tile of outputs is, per group, two 64-byte loads of B,
 * twelve 4-byte broadcasts of filters and 24 dot products of 16 lanes.
 *
 * Prepared filters (conv2d_int8_prepare):
 *   header | float scale[Kp] | int32 sum[Kp] | int8 tiles
 * where Kp = K rounded up to 4, scale[k] = max |w[k]| / 127 (symmetric,
 * per output channel), q = round(w / scale) in [-127, 127], sum[k] = the
 * sum of channel k's q (it cancels the input's zero point), and a tile of
 * m rows (12, then 4s) starting at channel k0 holds, from byte
 * k0 * groups * 4 on, [groups][m][4].
 *
 * Sums are exact in int32 (at most OSP_INT8_MAX_TAPS groups of 4:
 * 255 * 127 * 4 * 16384 < 2^31); an output is
 *   y = fma((float)(acc - zero * sum[k]), x_scale * scale[k], bias[k])
 * then + residual, then the activation; an output packed for the next
 * layer is then quantised as that layer would quantise y
 * (osp__int8_quantize_one), so that both ways give the same bytes. */
#ifndef OSPREY_CONV_INT8_H
#define OSPREY_CONV_INT8_H

#include <math.h>
#include <stdint.h>

#include "cpu_kernels.h"

#define OSP_INT8_MAX_TAPS 65536
#define INT8_TILE_ROWS 12
#define INT8_BLOCK_COLS 32
#define INT8_BLOCK_BYTES (INT8_BLOCK_COLS * 4)

typedef struct int8_filters {
    int32_t k, kp, groups, direct;
    int32_t scale_off, sum_off, w_off; /* bytes from the header's start */
    int32_t pad_;
} int8_filters;

static inline const float *int8_scales(const int8_filters *f) {
    return (const float *)((const char *)f + f->scale_off);
}
static inline const int32_t *int8_sums(const int8_filters *f) {
    return (const int32_t *)((const char *)f + f->sum_off);
}
static inline const int8_t *int8_weights(const int8_filters *f) {
    return (const int8_t *)((const char *)f + f->w_off);
}

/* Rows of the tile that holds channel k, and its first channel. */
static inline int int8_tile_of(const int8_filters *f, int k, int *k0) {
    const int full = f->kp / INT8_TILE_ROWS * INT8_TILE_ROWS;
    if (k < full) {
        *k0 = k / INT8_TILE_ROWS * INT8_TILE_ROWS;
        return INT8_TILE_ROWS;
    }
    *k0 = full + (k - full) / 4 * 4;
    return 4;
}

/* One image's GEMM: where B is, and what the epilogue needs. */
typedef struct int8_out {
    const osp_conv_desc *d;
    const int8_filters *f;
    const uint8_t *src;     /* B */
    const int64_t *off;     /* groups byte offsets */
    int64_t block_stride;   /* bytes from one block of 32 outputs to the next */
    int grid;               /* the output grid's width (Wp or Q); valid columns < Q */
    int64_t cells;          /* P * grid */
    int zero;
    const float *oscale;    /* Kp: x_scale * scale[k] */
    const float *bias;      /* Kp, zeros where the layer has none */
    float *y;               /* this image's K x P x Q output, or NULL; */
    uint8_t *yq;            /* this image's output packed for the next layer, or NULL */
    int64_t yq_plane;       /* its bytes from one channel quad to the next */
    int yq_wp, yq_top, yq_left; /* its bordered row's cells, and the borders */
    int yq_zero;
    float yq_inv;           /* 1 / its input scale */
    const float *res;       /* this image's residual, or NULL */
} int8_out;

/* Where output (k, p, q) goes in a packed output (direct layout of the
 * next layer's input, conv_int8.c): byte k % 4 of its cell. */
static inline uint8_t *int8_packed_at(const int8_out *o, int k, int64_t p, int64_t q) {
    return o->yq + (int64_t)(k / 4) * o->yq_plane +
           ((p + o->yq_top) * o->yq_wp + q + o->yq_left) * 4 + k % 4;
}

/* d's activation of one value. */
float osp__int8_activate(const osp_conv_desc *d, float v);
/* One output value from its exact sum, as every kernel must compute it. */
float osp__int8_finish(const int8_out *o, int k, int32_t acc, float res);

/* A kernel's GEMM over output channels [k0, k1) (whole tiles) and blocks
 * [b0, b1) of 32 grid cells, writing the valid outputs through o. */
typedef void (*int8_gemm_fn)(const int8_out *o, int k0, int k1, int b0, int b1);
/* A kernel's quantisation of n floats into bytes; and of four rows of n
 * floats into n groups of four bytes, q[4 j + t] from x[t][j] (a NULL row
 * gives the zero point: a channel past C). */
typedef void (*int8_quant_fn)(const float *x, int n, float inv_scale, int zero, uint8_t *q);
typedef void (*int8_quant4_fn)(const float *const x[4], int n, float inv_scale, int zero,
                               uint8_t *q);

/* A kernel: its GEMM and quantisations. */
typedef struct int8_kernel {
    int8_gemm_fn gemm;
    int8_quant_fn quant;
    int8_quant4_fn quant4;
} int8_kernel;

/* One value quantised, as every kernel must: x * inv_scale clamped to
 * [-512, 512] (NaN to the low end, as the vector max and min give it),
 * rounded to nearest even, + zero, clamped to 0..255. */
static inline uint8_t osp__int8_quantize_one(float x, float inv_scale, int zero) {
    float t = x * inv_scale;
    t = t > -512.0f ? t : -512.0f;
    t = t < 512.0f ? t : 512.0f;
    const int v = (int)lrintf(t) + zero;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

void osp__int8_quantize_ref(const float *x, int n, float inv_scale, int zero, uint8_t *q);
void osp__int8_quantize4_ref(const float *const x[4], int n, float inv_scale, int zero,
                             uint8_t *q);
void osp__int8_gemm_ref(const int8_out *o, int k0, int k1, int b0, int b1);

/* The forward of both kernels: quantise (and pack) unless io's input is
 * packed already, GEMM, image by image; the output float32 or packed for
 * the next layer (its borders written here, its cells by the GEMM). */
void osp__int8_conv_run(const osp_conv_desc *d, const osp_int8_io *io, const void *prepared,
                        const float *bias, void *workspace, const int8_kernel *k);

#endif
