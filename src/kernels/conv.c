/* 2-D convolution on the CPU: im2col + sgemm, a few images per GEMM,
 * threads over images (or over output rows of a lone image), bias and
 * activation applied while the output is still in cache.
 *
 * Names used throughout (per convolution group; see osp_conv_desc):
 *   Cg = C / groups, Kg = K / groups   channels of one group
 *   R  = Cg * kh * kw                  rows of a column matrix (one per tap)
 *   S  = P * Q                         output positions of one image
 *   G  = images per GEMM (images_per_gemm), gi <= G in the last chunk
 *   col : R  x (gi*cols)  im2col of gi images (cols = S, or the positions
 *                         of a block of output rows), image-major
 *   buf : Kg x (gi*S)     GEMM output (forward) or gathered dy (backward);
 *                         only when G > 1, where images are not contiguous
 *   dwp : K x R           one thread's share of the filter gradient
 *   w   : K x R, group g's rows start at g*Kg*R
 *
 * Small images make a small GEMM (LeNet: 20 x 25 x 576); putting G images
 * side by side gives sgemm enough columns to run at full speed.
 *
 * Threads. With T threads (at most the cores) and N >= T images, each
 * thread takes a contiguous share of the images, with its own workspace
 * slot, and calls a single-threaded sgemm (OpenBLAS's OpenMP build runs one
 * thread inside a parallel region): one fork per layer instead of one per
 * GEMM, and no GEMM split so thin that its threads wait on each other. A
 * lone image's forward splits its output rows over the threads instead.
 * Work below PAR_MIN_FLOPS runs on the calling thread, with a one-thread
 * sgemm, where a fork and join would cost more than it saves.
 *
 * Special cases that skip im2col:
 *   - 1x1, stride 1, no padding, one image at a time: x is already the
 *     R x S matrix (in the AVX2 and AVX-512 forwards, all of a thread's
 *     images);
 *   - depthwise (Cg == 1, groups > 1, any multiplier Kg): a direct loop per
 *     plane, since a GEMM with one row per tap wastes the BLAS (3x3 on
 *     AVX2: conv_depthwise_c8_avx2.h, else (channel multipliers, very wide
 *     planes) conv_depthwise_avx2.h; on AVX-512: the same eight-channel
 *     kernel for small planes and layers (dc8_on_avx512), else
 *     conv_depthwise_avx512.h);
 *   - AVX-512 and AVX2: stride-1 "same" windows on planes of 64+ pixels,
 *     forward, backward data and the 3x3 filter gradient (conv_direct.h).
 * The AVX2 and AVX-512 forwards' other GEMMs are conv_gemm_avx2.h's, not
 * sgemm, with the bias and activation applied in registers, and their 3x3
 * layers of 64+ channels take Winograd (conv_winograd_avx2.h).
 *
 * Determinism: every thread's share of the work depends only on N and the
 * thread count; the filter gradient adds the threads' shares in thread
 * order. So a run repeats bit for bit at the same thread count. The
 * workspace has one slot per core whatever the thread count, so a plan
 * made before osp_threads_set stays valid. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#include "conv_depthwise_avx2.h"
#include "conv_depthwise_c8_avx2.h"
#endif
#if defined(__AVX512F__)
#include "conv_depthwise_avx512.h"
#endif

/* AVX2 and AVX-512 builds run the forward GEMM themselves
 * (conv_gemm_avx2.h: 256-bit vectors, which match sgemm's AVX-512 kernels
 * on CPUs whose 512-bit operations take two passes through 256-bit units,
 * and fuse the bias and activation into the store); the portable build
 * calls sgemm. Its packing buffer is part of every
 * build's workspace, so that one plan serves every backend. */
#define PACK_FLOATS ((int64_t)32768)
#if defined(__AVX2__) && defined(__FMA__)
#define HAVE_PACKED_GEMM 1
#include "conv_gemm_avx2.h"
#include "conv_winograd_avx2.h"
#else
#define HAVE_PACKED_GEMM 0
#endif

/* Enough GEMM columns for sgemm to run well. Measured on LeNet and CIFAR
 * ResNet layers: 512 beat both 1 image per GEMM and 2048+ columns, where the
 * column buffer falls out of L2. */
#define TARGET_COLS 512
/* Grouping images never makes the column buffer larger than this (2 MiB). */
#define MAX_GROUPED_COL_FLOATS ((int64_t)512 << 10)
/* Below this many inner iterations an OpenMP region costs more than it saves. */
#define PAR_MIN_WORK 32768
/* The same for a whole convolution, in floating-point operations: with
 * passive waiting a fork wakes sleeping threads (tens of microseconds).
 * With the packed GEMM (conv_gemm_avx2.h), which splits small layers well,
 * a layer of a million FLOPs already gains from a second thread, and a
 * higher threshold left ResNet-20's small layers of one image on one
 * thread. (With sgemm a higher one had paid: OpenBLAS split small GEMMs
 * at a loss.) The measurements are in docs/kernels.md. */
#define PAR_MIN_FLOPS 1e6
/* Workspace parts start on a cache line. */
#define ROUND16(x) (((x) + 15) / 16 * 16)

typedef struct geom {
    int cg, kg, r, s;
    int64_t hw, chw, ks; /* plane of x, image of x, image of y */
    int pointwise;       /* 1x1, stride 1, no padding */
    int depthwise;
    int G;               /* images per GEMM */
    int winograd;        /* a shape for F(2x2, 3x3) (winograd_shape) */
    int64_t tiles;       /* its 2x2 output tiles per image */
    int64_t col, buf, dwp, wv, pack, slot; /* floats of each workspace part, and of a slot */
    int64_t wu;          /* floats of the transformed filters, once after the slots */
} geom;

static int images_per_gemm(const osp_conv_desc *d, const geom *m) {
    if (m->s >= TARGET_COLS || d->n <= 1) return 1;
    int64_t g = (TARGET_COLS + m->s - 1) / m->s;
    if (g > d->n) g = d->n;
    while (g > 1 && (int64_t)m->r * g * m->s > MAX_GROUPED_COL_FLOATS) g--;
    return (int)g;
}

/* Winograd's F(2x2, 3x3) (conv_winograd_avx2.h, AVX2 and AVX-512): 3x3
 * "same" windows at stride 1, 64+ channels in and out, planes of 7x7 and
 * up: the shapes where its 2.25x fewer multiplications were measured to
 * outrun the direct kernel, whose own speed there left nothing else to
 * gain (docs/kernels.md). The test is on the shape
 * alone, so that every build reserves the same workspace. Limits: a split input row within the kernel's buffer
 * (planes up to 2048 wide), and V and M (16 (C + K) T floats per slot)
 * within 32 MiB. */
#define WINOGRAD_MAX_SLOT_FLOATS ((int64_t)8 << 20)
/* A lone image without prepared filters (conv2d_prepare) needs planes of
 * 28x28 and up: on 14x14 (49 tiles) the filter transform, made on every
 * call, costs as much as the GEMMs save, and the direct kernel is faster
 * there. Prepared filters pay for the transform once, and then Winograd
 * wins on every plane down to 7x7. */
#define WINOGRAD_LONE_MIN_TILES 196

static int winograd_shape(const osp_conv_desc *d) {
    const int64_t tiles = (int64_t)((d->p + 1) / 2) * ((d->q + 1) / 2);
    return d->kh == 3 && d->kw == 3 && d->stride_h == 1 && d->stride_w == 1 && d->dil_h == 1 &&
           d->dil_w == 1 && d->pad_h == 1 && d->pad_w == 1 && d->groups == 1 && d->c >= 64 &&
           d->k >= 64 && d->p == d->h && d->q == d->w && d->p >= 7 && d->q >= 7 &&
           d->q <= 2048 && 16 * ((int64_t)d->c + d->k) * tiles <= WINOGRAD_MAX_SLOT_FLOATS;
}

static geom geometry(const osp_conv_desc *d) {
    geom m;
    m.cg = d->c / d->groups;
    m.kg = d->k / d->groups;
    m.r = m.cg * d->kh * d->kw;
    m.s = d->p * d->q;
    m.hw = (int64_t)d->h * d->w;
    m.chw = (int64_t)d->c * m.hw;
    m.ks = (int64_t)d->k * m.s;
    m.pointwise = d->kh == 1 && d->kw == 1 && d->stride_h == 1 && d->stride_w == 1 &&
                  d->pad_h == 0 && d->pad_w == 0;
    m.depthwise = m.cg == 1 && d->groups > 1;
    m.G = images_per_gemm(d, &m);
    m.col = m.G == 1 && m.pointwise ? 0 : ROUND16((int64_t)m.r * m.G * m.s);
    m.buf = m.G > 1 ? ROUND16((int64_t)m.kg * m.G * m.s) : 0;
    m.dwp = ROUND16((int64_t)d->k * m.r);
    const int wshape = winograd_shape(d);
    m.tiles = (int64_t)((d->p + 1) / 2) * ((d->q + 1) / 2);
    m.winograd = wshape && (d->n >= 2 || m.tiles >= WINOGRAD_LONE_MIN_TILES || d->prepared);
    /* V (16 x C x T) and M (16 x K x T, + 8: the output transform's last
     * vector reads past its end), and U when not prepared; reserved for
     * every batch size (whether the filters come prepared is not known
     * when the workspace is sized) */
    m.wv = wshape ? ROUND16(16 * d->c * m.tiles) + ROUND16(16 * d->k * m.tiles + 8) : 0;
    m.wu = wshape ? ROUND16(16 * (int64_t)d->k * d->c) : 0;
    m.pack = ROUND16(PACK_FLOATS + 8); /* + 8: room to align */
    m.slot = m.col + m.buf + m.dwp + m.wv + m.pack;
    return m;
}

static int64_t flops(const osp_conv_desc *d, const geom *m) {
    return 2 * (int64_t)d->n * m->ks * m->r;
}

static osp_conv_desc transposed_desc(const osp_conv_desc *d);

size_t KFN(conv2d_workspace)(const osp_conv_desc *d) {
    geom m = geometry(d);
    if (m.depthwise) return 0;
    int64_t floats = m.slot * osp__kernel_slots() + m.wu;
    osp_conv_desc td = transposed_desc(d);
    if (td.n) { /* the backward data pass's slots and transposed filters */
        geom tm = geometry(&td);
        int64_t t = tm.slot * osp__kernel_slots() + ROUND16((int64_t)d->k * m.r);
        if (t > floats) floats = t;
    }
    return (size_t)floats * sizeof(float);
}

/* Threads for this much work: 1, or the team. */
static int threads_for(const osp_conv_desc *d, const geom *m) {
    return flops(d, m) >= PAR_MIN_FLOPS ? osp__kernel_team() : 1;
}

/* Thread t's share [lo, hi) of n items. */
static void share(int n, int t, int nt, int *lo, int *hi) {
    *lo = (int)((int64_t)n * t / nt);
    *hi = (int)((int64_t)n * (t + 1) / nt);
}

/* share, for output channels, in whole tiles of 6 rows (the AVX2 GEMM's
 * PG_MR; its packed filters start a group at each). */
static void share_rows(int n, int t, int nt, int *lo, int *hi) {
    *lo = t == 0 ? 0 : (int)(((int64_t)n * t / nt + 3) / 6 * 6);
    *hi = t == nt - 1 ? n : (int)(((int64_t)n * (t + 1) / nt + 3) / 6 * 6);
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

static inline float sigmoidf(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* v[0..n) += b, then the desc's activation (as activation.c computes it). */
static void epilogue(float *v, int64_t n, float b, const osp_conv_desc *d) {
    const float a = d->act_alpha;
    switch (d->act) {
    case OSP_ACT_NONE:
        if (b != 0.0f)
            for (int64_t i = 0; i < n; i++) v[i] += b;
        break;
    case OSP_ACT_RELU:
        for (int64_t i = 0; i < n; i++) {
            float t = v[i] + b;
            v[i] = t < 0.0f ? 0.0f : t;
        }
        break;
    case OSP_ACT_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) {
            float t = v[i] + b;
            v[i] = t < 0.0f ? a * t : t;
        }
        break;
    case OSP_ACT_RELU6:
        for (int64_t i = 0; i < n; i++) {
            float t = v[i] + b;
            v[i] = t < 0.0f ? 0.0f : t > 6.0f ? 6.0f : t;
        }
        break;
    case OSP_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) v[i] = sigmoidf(v[i] + b);
        break;
    case OSP_ACT_TANH:
        for (int64_t i = 0; i < n; i++) v[i] = tanhf(v[i] + b);
        break;
    case OSP_ACT_SWISH:
        for (int64_t i = 0; i < n; i++) {
            float t = v[i] + b;
            v[i] = t * sigmoidf(t);
        }
        break;
    }
}

/* Output indices o in [lo, hi) whose input index o*stride - pad + off lies
 * in [0, in). */
static void valid_range(int out, int in, int stride, int pad, int off, int *lo, int *hi) {
    int a = pad - off, b = in + pad - off;
    int l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int h = b <= 0 ? 0 : (b + stride - 1) / stride;
    if (l > out) l = out;
    if (h > out) h = out;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* row[q] = src[2q] for q < n, reading src[0 .. 2n-2] only. ResNet's
 * stride-2 layers (the stem, the 3x3 and 1x1 layers that halve the plane)
 * spent a fifth of their time in a scalar loop here (resnet50's 128-channel
 * 3x3 at batch 1: 21% of its samples, 11% with this); AVX2 takes eight
 * outputs from two loads, one shuffle and one lane permute. */
static void gather_stride2(float *row, const float *src, int n) {
    int q = 0;
#if defined(__AVX2__)
    /* a step loads src[2q .. 2q+15]: within bounds while 2q+15 <= 2n-2 */
    for (; q + 8 < n; q += 8) {
        const __m256 a = _mm256_loadu_ps(src + 2 * q), b = _mm256_loadu_ps(src + 2 * q + 8);
        /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6, then the pairs in order */
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        _mm256_storeu_ps(row + q, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                      _mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
    }
#endif
    for (; q < n; q++) row[q] = src[2 * q];
}

#if defined(__AVX512F__)
/* row[0, n) for an output row of at most 16 columns at stride 2: src[2q]
 * for q in [lo, hi), zeros elsewhere; reads src[2 lo .. 2 hi - 2] only
 * (src may point before the plane: masked-out lanes are never read). Two
 * masked loads, one permute and one masked store, where the row had been
 * two loops of zeros and a scalar gather, which took a fifth of the time
 * of a 3x3/2 layer on 14x14 planes (its rows are only 7 columns, so the
 * row making is not amortised). */
static inline void gather_stride2_row16(float *row, const float *src, int lo, int hi, int n) {
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const int end = 2 * hi - 1; /* one past the last input read */
    const __m512 a = _mm512_maskz_loadu_ps(dw3_lanes(2 * lo, end), src);
    const __m512 b = _mm512_maskz_loadu_ps(dw3_lanes(2 * lo - 16, end - 16), src + 16);
    _mm512_mask_storeu_ps(row, dw3_lanes(0, n),
                          _mm512_maskz_permutex2var_ps(dw3_lanes(lo, hi), a, even, b));
}
#endif

/* Rows [r0, r1) of col (R x gi*cols) = the taps of images n0..n0+gi for
 * output rows [p0, p1) (cols = (p1 - p0) * Q), channels of group g. */
static void im2col_rows(const osp_conv_desc *d, const geom *m, const float *x, int n0, int gi,
                        int g, int p0, int p1, int r0, int r1, float *col) {
    const int64_t cols = (int64_t)(p1 - p0) * d->q, ld = (int64_t)gi * cols;
    for (int r = r0; r < r1; r++) {
        int c = r / (d->kh * d->kw), i = r / d->kw % d->kh, j = r % d->kw;
        int q_lo, q_hi;
        valid_range(d->q, d->w, d->stride_w, d->pad_w, j * d->dil_w, &q_lo, &q_hi);
        for (int img = 0; img < gi; img++) {
            const float *src = x + (int64_t)(n0 + img) * m->chw + (int64_t)(g * m->cg + c) * m->hw;
            float *dst = col + r * ld + (int64_t)img * cols;
            for (int p = p0; p < p1; p++) {
                float *row = dst + (int64_t)(p - p0) * d->q;
                int h = p * d->stride_h - d->pad_h + i * d->dil_h;
                if (h < 0 || h >= d->h) {
                    memset(row, 0, (size_t)d->q * sizeof(float));
                    continue;
                }
                /* x column of output q: off + q * stride_w (valid for q_lo <= q < q_hi) */
                const int64_t off = (int64_t)h * d->w - d->pad_w + j * d->dil_w;
#if defined(__AVX512F__)
                if (d->stride_w == 2 && d->q <= 16) {
                    gather_stride2_row16(row, src + off, q_lo, q_hi, d->q);
                    continue;
                }
#endif
                for (int q = 0; q < q_lo; q++) row[q] = 0.0f;
                if (d->stride_w == 1) {
                    if (q_hi > q_lo)
                        memcpy(row + q_lo, src + off + q_lo, (size_t)(q_hi - q_lo) * sizeof(float));
                } else if (d->stride_w == 2) {
                    if (q_hi > q_lo) gather_stride2(row + q_lo, src + off + 2 * q_lo, q_hi - q_lo);
                } else {
                    for (int q = q_lo; q < q_hi; q++) row[q] = src[off + (int64_t)q * d->stride_w];
                }
                for (int q = q_hi; q < d->q; q++) row[q] = 0.0f;
            }
        }
    }
}

/* All of col: im2col_rows over every row. */
static void im2col(const osp_conv_desc *d, const geom *m, const float *x, int n0, int gi, int g,
                   int p0, int p1, float *col) {
    im2col_rows(d, m, x, n0, gi, g, p0, p1, 0, m->r, col);
}

/* dx (images n0..n0+gi, group g) += the taps in col, summed back per pixel. */
static void col2im(const osp_conv_desc *d, const geom *m, const float *col, int n0, int gi, int g,
                   float *dx) {
    const int64_t ld = (int64_t)gi * m->s;
    for (int img = 0; img < gi; img++)
        for (int c = 0; c < m->cg; c++) {
            float *plane = dx + (int64_t)(n0 + img) * m->chw + (int64_t)(g * m->cg + c) * m->hw;
            for (int i = 0; i < d->kh; i++)
                for (int j = 0; j < d->kw; j++) {
                    int r = (c * d->kh + i) * d->kw + j;
                    const float *src = col + r * ld + (int64_t)img * m->s;
                    int q_lo, q_hi;
                    valid_range(d->q, d->w, d->stride_w, d->pad_w, j * d->dil_w, &q_lo, &q_hi);
                    for (int p = 0; p < d->p; p++) {
                        int h = p * d->stride_h - d->pad_h + i * d->dil_h;
                        if (h < 0 || h >= d->h) continue;
                        const int64_t off = (int64_t)h * d->w - d->pad_w + j * d->dil_w;
                        const float *row = src + (int64_t)p * d->q;
                        float *out = plane + off;
                        if (d->stride_w == 1)
                            for (int q = q_lo; q < q_hi; q++) out[q] += row[q];
                        else
                            for (int q = q_lo; q < q_hi; q++) out[(int64_t)q * d->stride_w] += row[q];
                    }
                }
        }
}

/* buf (Kg x gi*S) = dy of images n0..n0+gi, channels of group g. */
static void gather_dy(const osp_conv_desc *d, const geom *m, const float *dy, int n0, int gi,
                      int g, float *buf) {
    for (int k = 0; k < m->kg; k++)
        for (int img = 0; img < gi; img++)
            memcpy(buf + (int64_t)k * gi * m->s + (int64_t)img * m->s,
                   dy + (int64_t)(n0 + img) * m->ks + (int64_t)(g * m->kg + k) * m->s,
                   (size_t)m->s * sizeof(float));
}

/* The inverse of gather_dy: y rows of group g from buf (added to y when
 * accumulate). */
static void scatter_y(const osp_conv_desc *d, const geom *m, const float *buf, int n0, int gi,
                      int g, int accumulate, float *y) {
    for (int k = 0; k < m->kg; k++)
        for (int img = 0; img < gi; img++) {
            float *dst = y + (int64_t)(n0 + img) * m->ks + (int64_t)(g * m->kg + k) * m->s;
            const float *src = buf + (int64_t)k * gi * m->s + (int64_t)img * m->s;
            if (accumulate)
                for (int s = 0; s < m->s; s++) dst[s] += src[s];
            else
                memcpy(dst, src, (size_t)m->s * sizeof(float));
        }
}

/* Sum of v[0..n) with eight fixed lanes: vectorisable, same order every run. */
static float sum_lanes(const float *v, int64_t n) {
    float lane[8] = {0}, tail = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lane[l] += v[i + l];
    for (; i < n; i++) tail += v[i];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

/* db[k] += sum of dy over N, P, Q; one thread per output channel. */
static void bias_grad(const osp_conv_desc *d, const geom *m, const float *dy, float *db) {
#pragma omp parallel for schedule(static) if ((int64_t)d->n * m->ks > PAR_MIN_WORK)
    for (int k = 0; k < d->k; k++) {
        double sum = 0;
        for (int n = 0; n < d->n; n++) {
            const float *row = dy + (int64_t)n * m->ks + (int64_t)k * m->s;
            sum += sum_lanes(row, m->s);
        }
        db[k] += (float)sum;
    }
}

/* ---- depthwise: direct loops, one plane per task ------------------------- */

/* Output channel k reads input channel k / Kg. Each loop runs tap by tap
 * over the rectangle of outputs whose tap lands inside the input, so the
 * inner loops have no bounds tests; a plane fits in cache for the kh*kw
 * sweeps. */

/* The outputs [p_lo, p_hi) x [q_lo, q_hi) whose tap (i, j) is inside x, and
 * the x offset of output (0, 0) for that tap. */
typedef struct tap_rect {
    int p_lo, p_hi, q_lo, q_hi;
    int64_t off;
} tap_rect;

static tap_rect tap_rect_of(const osp_conv_desc *d, int i, int j) {
    tap_rect t;
    valid_range(d->p, d->h, d->stride_h, d->pad_h, i * d->dil_h, &t.p_lo, &t.p_hi);
    valid_range(d->q, d->w, d->stride_w, d->pad_w, j * d->dil_w, &t.q_lo, &t.q_hi);
    t.off = (int64_t)(i * d->dil_h - d->pad_h) * d->w + (j * d->dil_w - d->pad_w);
    return t;
}

/* Sum of a[q] * b[q * stride] with eight fixed lanes (vectorisable when
 * stride is 1; the same order on every run). */
static float dot_lanes(const float *a, const float *b, int stride, int n) {
    float lane[8] = {0}, tail = 0;
    int q = 0;
    if (stride == 1)
        for (; q + 8 <= n; q += 8)
            for (int l = 0; l < 8; l++) lane[l] += a[q + l] * b[q + l];
    for (; q < n; q++) tail += a[q] * b[(int64_t)q * stride];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

#if defined(__AVX512F__)
/* On AVX-512 the eight-channel kernel (conv_depthwise_c8_avx2.h) beats
 * the plane-at-a-time one (conv_depthwise_avx512.h) on small output planes,
 * whose rows are one partial 16-lane vector (7x7 and smaller, up to
 * 14x14 at stride 2), and on layers too small for that kernel to take two
 * threads.
 * Since the plane-at-a-time kernel prefetches its rows and takes two
 * threads from 1 MFLOP, it wins the larger layers, of one image too; the
 * two run alike around 28x28, hence, at stride 1, a bound in FLOPs. The
 * mobilenet_v2 timings behind it are in docs/kernels.md. */
#define DC8_MAX_STRIDE1_FLOPS 5e6
static int dc8_on_avx512(const osp_conv_desc *d) {
    const int64_t s = (int64_t)d->p * d->q;
    return s <= 7 * 7 || (d->stride_h == 2 && s <= 14 * 14) ||
           (d->stride_h == 1 && 18.0 * d->n * d->k * s <= DC8_MAX_STRIDE1_FLOPS);
}
#endif

/* Row by row: each output row takes its kh x kw taps while it sits in L1
 * (sweeping the whole plane tap by tap spilled planes of 56x56 and up to
 * L2). The taps are added in the same (i, j) order as before, from 0, so
 * the sums are unchanged. */
#define DW_MAX_KW 16

static void dw_forward(const osp_conv_desc *d, const geom *m, const float *x, const float *w,
                       const float *bias, float *y) {
#if defined(__AVX512F__)
    if (dc8_on_avx512(d) && dc8_forward(d, x, w, bias, y, epilogue)) return;
    if (dw3_forward_avx512(d, x, w, bias, y, epilogue)) return;
    if (dwa_forward(d, x, w, bias, y, epilogue)) return; /* wider windows, multipliers */
#elif defined(__AVX2__) && defined(__FMA__)
    if (dc8_forward(d, x, w, bias, y, epilogue)) return;
    if (dwa_forward(d, x, w, bias, y, epilogue)) return;
#endif
    const int64_t planes = (int64_t)d->n * d->k;
    const int taps = d->kh * d->kw, sh = d->stride_h, sw = d->stride_w;
    int q_lo[DW_MAX_KW], q_hi[DW_MAX_KW];
    const int kw = d->kw <= DW_MAX_KW ? d->kw : 0; /* 0: tap by tap over the plane */
    for (int j = 0; j < kw; j++)
        valid_range(d->q, d->w, sw, d->pad_w, j * d->dil_w, &q_lo[j], &q_hi[j]);
#pragma omp parallel for schedule(static) if (planes * m->s * taps > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        int k = (int)(t % d->k);
        const float *xp = x + t / d->k * m->chw + (int64_t)(k / m->kg) * m->hw;
        const float *wk = w + (int64_t)k * taps;
        float *yp = y + t * m->s;
        for (int s = 0; s < m->s; s++) yp[s] = 0.0f;
        if (kw) {
            for (int p = 0; p < d->p; p++) {
                float *yrow = yp + (int64_t)p * d->q;
                for (int i = 0; i < d->kh; i++) {
                    const int r = p * sh - d->pad_h + i * d->dil_h;
                    if (r < 0 || r >= d->h) continue;
                    const float *xrow = xp + (int64_t)r * d->w - d->pad_w;
                    for (int j = 0; j < kw; j++) {
                        const float wv = wk[i * d->kw + j];
                        const float *src = xrow + j * d->dil_w;
                        if (sw == 1)
                            for (int q = q_lo[j]; q < q_hi[j]; q++) yrow[q] += wv * src[q];
                        else
                            for (int q = q_lo[j]; q < q_hi[j]; q++)
                                yrow[q] += wv * src[(int64_t)q * sw];
                    }
                }
            }
        } else {
            for (int i = 0; i < d->kh; i++)
                for (int j = 0; j < d->kw; j++) {
                    tap_rect r = tap_rect_of(d, i, j);
                    float wv = wk[i * d->kw + j];
                    for (int p = r.p_lo; p < r.p_hi; p++) {
                        float *yrow = yp + (int64_t)p * d->q;
                        const int64_t row = r.off + (int64_t)p * sh * d->w; /* x index of q = 0 */
                        for (int q = r.q_lo; q < r.q_hi; q++) yrow[q] += wv * xp[row + (int64_t)q * sw];
                    }
                }
        }
        epilogue(yp, m->s, bias ? bias[k] : 0.0f, d);
    }
}

/* dx plane c of image n gathers from the Kg output channels that read it. */
static void dw_backward_data(const osp_conv_desc *d, const geom *m, const float *dy,
                             const float *w, float *dx) {
#if defined(__AVX512F__)
    if (dw3_backward_data_avx512(d, dy, w, dx)) return;
#endif
    const int64_t planes = (int64_t)d->n * d->c;
    const int taps = d->kh * d->kw, sh = d->stride_h, sw = d->stride_w;
#pragma omp parallel for schedule(static) if (planes * m->kg * m->s * taps > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        int c = (int)(t % d->c);
        float *xp = dx + t * m->hw;
        for (int kk = 0; kk < m->kg; kk++) {
            int k = c * m->kg + kk;
            const float *yp = dy + t / d->c * m->ks + (int64_t)k * m->s;
            const float *wk = w + (int64_t)k * taps;
            for (int i = 0; i < d->kh; i++)
                for (int j = 0; j < d->kw; j++) {
                    tap_rect r = tap_rect_of(d, i, j);
                    float wv = wk[i * d->kw + j];
                    for (int p = r.p_lo; p < r.p_hi; p++) {
                        const float *yrow = yp + (int64_t)p * d->q;
                        const int64_t row = r.off + (int64_t)p * sh * d->w;
                        if (sw == 1)
                            for (int q = r.q_lo; q < r.q_hi; q++) xp[row + q] += wv * yrow[q];
                        else
                            for (int q = r.q_lo; q < r.q_hi; q++)
                                xp[row + (int64_t)q * sw] += wv * yrow[q];
                    }
                }
        }
    }
}

/* dw[k] and db[k] belong to one thread, which runs over the batch in order. */
static void dw_backward_filter(const osp_conv_desc *d, const geom *m, const float *x,
                               const float *dy, float *dw, float *db) {
    const int taps = d->kh * d->kw, sh = d->stride_h, sw = d->stride_w;
#pragma omp parallel for schedule(static) if ((int64_t)d->n * m->ks * taps > PAR_MIN_WORK)
    for (int k = 0; k < d->k; k++) {
        float *wk = dw ? dw + (int64_t)k * taps : NULL;
        double bsum = 0;
        for (int n = 0; n < d->n; n++) {
            const float *xp = x + (int64_t)n * m->chw + (int64_t)(k / m->kg) * m->hw;
            const float *yp = dy + (int64_t)n * m->ks + (int64_t)k * m->s;
            if (db) bsum += sum_lanes(yp, m->s);
            if (!wk) continue;
            for (int i = 0; i < d->kh; i++)
                for (int j = 0; j < d->kw; j++) {
                    tap_rect r = tap_rect_of(d, i, j);
                    float sum = 0;
                    for (int p = r.p_lo; p < r.p_hi; p++)
                        sum += dot_lanes(yp + (int64_t)p * d->q + r.q_lo,
                                         xp + r.off + (int64_t)p * sh * d->w + (int64_t)r.q_lo * sw,
                                         sw, r.q_hi - r.q_lo);
                    wk[i * d->kw + j] += sum;
                }
        }
        if (db) db[k] += (float)bsum;
    }
}

/* The direct convolution needs FMA and masked loads: AVX-512, or AVX2. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define HAVE_DIRECT 1
#include "conv_direct.h"
#define USES_DIRECT(d, m) direct_applies(d, m)
#else
#define HAVE_DIRECT 0
#define USES_DIRECT(d, m) 0
#endif

/* ---- im2col + sgemm workers (each runs on one thread, or alone) ---------- */

/* Column matrices above this many floats (1 MiB) go a block of output rows
 * at a time. */
#define ROW_BLOCK_COL_FLOATS ((int64_t)256 << 10)

static void fwd_rows(const osp_conv_desc *d, const geom *m, const float *x, const float *w,
                     const float *bias, float *y, int n, int p0, int p1, float *ws);

#if HAVE_PACKED_GEMM
/* Slot ws's packing buffer, on a 32-byte boundary. */
static float *pg_pack_of(const geom *m, float *ws) {
    uintptr_t p = (uintptr_t)(ws + m->slot - m->pack);
    return (float *)((p + 31) & ~(uintptr_t)31);
}

/* Where d's residual holds the value for y's element `at` (y0: y's first),
 * or NULL without a residual. */
static const float *residual_at(const osp_conv_desc *d, const float *y0, const float *at) {
    return d->residual ? d->residual + (at - y0) : NULL;
}

/* The activation pg_gemm left undone, over columns [s0, s0 + cols) of
 * channels [k0, k1) of images [n0, n1). */
static void pg_finish(const osp_conv_desc *d, const geom *m, float *y, int n0, int n1, int k0,
                      int k1, int64_t s0, int64_t cols) {
    if (avx2_act_in_registers(d->act)) return;
    for (int a = n0; a < n1; a++)
        for (int k = k0; k < k1; k++)
            epilogue(y + (int64_t)a * m->ks + k * m->s + s0, cols, 0.0f, d);
}

/* w packed for pg_gemm (conv2d_prepare), or NULL: what d->prepared holds
 * outside Winograd's shapes. */
static const float *packed_w(const osp_conv_desc *d) {
    return winograd_shape(d) ? NULL : d->prepared;
}

/* fwd_images through pg_gemm: a 1x1 layer reads x in place, all images in
 * one GEMM; others im2col as the sgemm path does. */
static void pg_images(const osp_conv_desc *d, const geom *m, const float *x, const float *w,
                      const float *bias, float *y, int n0, int n1, float *ws) {
    float *col = ws, *pack = pg_pack_of(m, ws);
    const float *wp = packed_w(d); /* only for one group */
    for (int g = 0; g < d->groups; g++) {
        const float *wg = w + (int64_t)g * m->kg * m->r, *bg = bias ? bias + g * m->kg : NULL;
        float *yg = y + (int64_t)g * m->kg * m->s;
        if (m->pointwise) {
            pg_cols c = {x + (int64_t)n0 * m->chw + (int64_t)g * m->cg * m->hw, m->chw, m->hw,
                         yg + (int64_t)n0 * m->ks, m->ks, m->s, m->s, NULL};
            c.r = residual_at(d, y, c.y);
            pg_gemm(m->kg, m->r, wg, wp, &c, (int64_t)(n1 - n0) * m->s, bg, d, pack);
        } else if (m->G == 1 && (int64_t)m->r * m->s > ROW_BLOCK_COL_FLOATS) {
            /* as in fwd_images: a block of output rows at a time */
            int rows = (int)(ROW_BLOCK_COL_FLOATS / ((int64_t)m->r * d->q));
            if (rows < 1) rows = 1;
            for (int a = n0; a < n1; a++)
                for (int p0 = 0; p0 < d->p; p0 += rows) {
                    int p1 = d->p - p0 < rows ? d->p : p0 + rows;
                    int64_t cols = (int64_t)(p1 - p0) * d->q;
                    im2col(d, m, x, a, 1, g, p0, p1, col);
                    pg_cols c = {col, 0, cols, yg + (int64_t)a * m->ks + (int64_t)p0 * d->q, 0,
                                 m->s, cols, NULL};
                    c.r = residual_at(d, y, c.y);
                    pg_gemm(m->kg, m->r, wg, wp, &c, cols, bg, d, pack);
                }
        } else {
            for (int a = n0; a < n1; a += m->G) {
                int gi = n1 - a < m->G ? n1 - a : m->G;
                im2col(d, m, x, a, gi, g, 0, d->p, col);
                pg_cols c = {col, m->s, (int64_t)gi * m->s, yg + (int64_t)a * m->ks, m->ks, m->s,
                             m->s, NULL};
                c.r = residual_at(d, y, c.y);
                pg_gemm(m->kg, m->r, wg, wp, &c, (int64_t)gi * m->s, bg, d, pack);
            }
        }
    }
    pg_finish(d, m, y, n0, n1, 0, d->k, 0, m->s);
}
#endif

/* y of images [n0, n1), all rows, using workspace slot ws; added to y
 * (no bias, no activation) when accumulate. */
static void fwd_images(const osp_conv_desc *d, const geom *m, const float *x, const float *w,
                       const float *bias, float *y, int n0, int n1, int accumulate, float *ws) {
#if HAVE_DIRECT
    if (direct_applies(d, m)) {
        dmask plane[DIRECT_PLANE_MASKS];
        const int have = direct_plane_masks(d, m, plane);
        for (int a = n0; a < n1; a++)
            direct_image(d, x + (int64_t)a * m->chw, w, bias, y + (int64_t)a * m->ks, 0, m->s,
                         accumulate, have ? plane : NULL);
        return;
    }
#endif
#if HAVE_PACKED_GEMM
    if (!accumulate) {
        pg_images(d, m, x, w, bias, y, n0, n1, ws);
        return;
    }
#endif
    if (!accumulate && m->G == 1 && !m->pointwise &&
        (int64_t)m->r * m->s > ROW_BLOCK_COL_FLOATS) {
        /* A column matrix larger than L2 (ResNet's 7x7/2 stem on 224x224:
         * 147 x 12544 floats, 7 MB) is made and multiplied a block of
         * output rows at a time, so that sgemm reads it from cache. */
        int rows = (int)(ROW_BLOCK_COL_FLOATS / ((int64_t)m->r * d->q));
        if (rows < 1) rows = 1;
        for (int a = n0; a < n1; a++)
            for (int p0 = 0; p0 < d->p; p0 += rows)
                fwd_rows(d, m, x, w, bias, y, a, p0, d->p - p0 < rows ? d->p : p0 + rows, ws);
        return;
    }
    const float beta = accumulate ? 1.0f : 0.0f;
    float *col = ws, *buf = ws + m->col;
    for (int a = n0; a < n1; a += m->G) {
        int gi = n1 - a < m->G ? n1 - a : m->G;
        for (int g = 0; g < d->groups; g++) {
            const float *wg = w + (int64_t)g * m->kg * m->r;
            const float *b = col;
            if (gi == 1 && m->pointwise) b = x + (int64_t)a * m->chw + (int64_t)g * m->cg * m->hw;
            else im2col(d, m, x, a, gi, g, 0, d->p, col);
            if (gi == 1) {
                float *yg = y + (int64_t)a * m->ks + (int64_t)g * m->kg * m->s;
                osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m->kg, m->s, m->r, 1.0f, wg, m->r, b,
                               m->s, beta, yg, m->s);
            } else {
                osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m->kg, gi * m->s, m->r, 1.0f, wg, m->r,
                               b, gi * m->s, 0.0f, buf, gi * m->s);
                scatter_y(d, m, buf, a, gi, g, accumulate, y);
            }
        }
        if (!accumulate && (bias || d->act != OSP_ACT_NONE))
            for (int64_t t = 0; t < (int64_t)gi * d->k; t++)
                epilogue(y + (int64_t)a * m->ks + t * m->s, m->s, bias ? bias[t % d->k] : 0.0f, d);
    }
}

/* A lone image with a small plane (ResNet's last stage: 7x7 = 49 columns)
 * splits its output channels over the threads rather than its rows: 3 or 4
 * rows of 7 make GEMMs of 21-28 columns, too narrow to keep the GEMM's
 * tiles busy. Each thread makes the image's whole column matrix itself,
 * which costs far less than the GEMM it feeds. */
#define CHANNEL_SPLIT_MAX_S 256

static int split_channels(const osp_conv_desc *d, const geom *m, int nt) {
    return d->groups == 1 && m->s < CHANNEL_SPLIT_MAX_S && d->k >= 16 * nt && !USES_DIRECT(d, m);
}

/* Under split_channels, the threads take columns of the plane instead,
 * each all output channels, where the filters are the smaller operand
 * (fewer output channels than columns: mobilenet_v2's projecting 1x1
 * layers on 14x14, 64 or 96 channels): the threads then read the filters
 * twice rather than the columns, and a share of 6-row groups no longer
 * leaves one thread 30 rows and the other 34 (whose tiles of 12, 12, 6 and
 * 4 rows fit 64 badly). Shares are whole pairs of 16-column panels. */
static int split_columns(const osp_conv_desc *d, const geom *m, int nt) {
    return HAVE_PACKED_GEMM && d->k < m->s && m->s >= 32 * nt;
}

/* Thread t's columns [j0, j1) under split_columns. */
static void share_columns(const geom *m, int t, int nt, int64_t *j0, int64_t *j1) {
    *j0 = t == 0 ? 0 : (m->s * t / nt + 16) / 32 * 32;
    *j1 = t == nt - 1 ? m->s : (m->s * (t + 1) / nt + 16) / 32 * 32;
}

/* y of image n, output channels [k0, k1), from b (image n's x for a
 * pointwise shape, else its column matrix), using workspace slot ws. */
static void fwd_channels(const osp_conv_desc *d, const geom *m, const float *b, const float *w,
                         const float *bias, float *y, int n, int k0, int k1, float *ws) {
    if (k1 <= k0) return;
    float *yk = y + (int64_t)n * m->ks + (int64_t)k0 * m->s;
#if HAVE_PACKED_GEMM
    pg_cols c = {b, 0, m->s, yk, 0, m->s, m->s, residual_at(d, y, yk)};
    const float *wp = packed_w(d); /* k0 is a multiple of PG_MR (share_rows) */
    pg_gemm(k1 - k0, m->r, w + (int64_t)k0 * m->r, wp ? wp + (int64_t)k0 * m->r : NULL, &c, m->s,
            bias ? bias + k0 : NULL, d, pg_pack_of(m, ws));
    pg_finish(d, m, y, n, n + 1, k0, k1, 0, m->s);
#else
    osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, k1 - k0, m->s, m->r, 1.0f, w + (int64_t)k0 * m->r,
                   m->r, b, m->s, 0.0f, yk, m->s);
    if (bias || d->act != OSP_ACT_NONE)
        for (int k = k0; k < k1; k++)
            epilogue(yk + (int64_t)(k - k0) * m->s, m->s, bias ? bias[k] : 0.0f, d);
#endif
}

#if HAVE_PACKED_GEMM
/* y of image n, columns [j0, j1) of its plane and every output channel,
 * from b (as fwd_channels), using workspace slot ws. */
static void fwd_columns(const osp_conv_desc *d, const geom *m, const float *b, const float *w,
                        const float *bias, float *y, int n, int64_t j0, int64_t j1, float *ws) {
    if (j1 <= j0) return;
    float *yn = y + (int64_t)n * m->ks;
    const float *r = residual_at(d, y, yn);
    /* the share as one image of j1 - j0 columns, rows a plane apart */
    pg_cols c = {b + j0, 0, m->s, yn + j0, 0, m->s, j1 - j0, r ? r + j0 : NULL};
    pg_gemm(d->k, m->r, w, packed_w(d), &c, j1 - j0, bias, d, pg_pack_of(m, ws));
    pg_finish(d, m, y, n, n + 1, 0, d->k, j0, j1 - j0);
}
#endif

/* A thread's share of a lone image's rows goes through im2col and the GEMM
 * in blocks of rows whose column matrix stays within this many floats
 * (512 KiB, in L2), so that the GEMM reads the columns im2col has just
 * written from cache: a stem such as ResNet's 7x7/2 has a column matrix
 * of several megabytes per thread, which otherwise goes out to memory and
 * back (docs/kernels.md). */
#define ROW_SPLIT_COL_FLOATS ((int64_t)128 << 10)

/* Rows per block for a share of `rows` rows (see ROW_SPLIT_COL_FLOATS). */
static int rows_per_block(const osp_conv_desc *d, const geom *m, int rows) {
    if (m->pointwise || USES_DIRECT(d, m)) return rows; /* no column matrix */
    const int64_t fit = ROW_SPLIT_COL_FLOATS / ((int64_t)m->r * d->q);
    return fit < 1 ? 1 : fit < rows ? (int)fit : rows;
}

/* y of image n, output rows [p0, p1), using workspace slot ws. */
static void fwd_rows(const osp_conv_desc *d, const geom *m, const float *x, const float *w,
                     const float *bias, float *y, int n, int p0, int p1, float *ws) {
    if (p1 <= p0) return;
    const int64_t cols = (int64_t)(p1 - p0) * d->q;
#if HAVE_DIRECT
    if (direct_applies(d, m)) {
        direct_image(d, x + (int64_t)n * m->chw, w, bias, y + (int64_t)n * m->ks,
                     p0 * d->q, p1 * d->q, 0, NULL);
        return;
    }
#endif
    for (int g = 0; g < d->groups; g++) {
        const float *b = ws;
        int ldb = (int)cols;
        if (m->pointwise) { /* output row p reads input row p */
            b = x + (int64_t)n * m->chw + (int64_t)g * m->cg * m->hw + (int64_t)p0 * d->q;
            ldb = m->s;
        } else {
            im2col(d, m, x, n, 1, g, p0, p1, ws);
        }
#if HAVE_PACKED_GEMM
        float *yg = y + (int64_t)n * m->ks + (int64_t)g * m->kg * m->s + (int64_t)p0 * d->q;
        pg_cols c = {b, 0, ldb, yg, 0, m->s, cols, residual_at(d, y, yg)};
        pg_gemm(m->kg, m->r, w + (int64_t)g * m->kg * m->r, packed_w(d), &c, cols,
                bias ? bias + g * m->kg : NULL, d, pg_pack_of(m, ws));
#else
        osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m->kg, (int)cols, m->r, 1.0f,
                       w + (int64_t)g * m->kg * m->r, m->r, b, ldb, 0.0f,
                       y + (int64_t)n * m->ks + (int64_t)g * m->kg * m->s + (int64_t)p0 * d->q, m->s);
#endif
    }
#if HAVE_PACKED_GEMM
    pg_finish(d, m, y, n, n + 1, 0, d->k, (int64_t)p0 * d->q, cols);
#else
    if (bias || d->act != OSP_ACT_NONE)
        for (int k = 0; k < d->k; k++)
            epilogue(y + (int64_t)n * m->ks + (int64_t)k * m->s + (int64_t)p0 * d->q, cols,
                     bias ? bias[k] : 0.0f, d);
#endif
}

/* dx of images [n0, n1) += conv_transpose(dy, w), using slot ws. */
static void bwd_data_images(const osp_conv_desc *d, const geom *m, const float *dy,
                            const float *w, float *dx, int n0, int n1, float *ws) {
    float *col = ws, *buf = ws + m->col;
    for (int a = n0; a < n1; a += m->G) {
        int gi = n1 - a < m->G ? n1 - a : m->G;
        for (int g = 0; g < d->groups; g++) {
            const float *wg = w + (int64_t)g * m->kg * m->r;
            const float *dyg = dy + (int64_t)a * m->ks + (int64_t)g * m->kg * m->s;
            if (gi > 1) {
                gather_dy(d, m, dy, a, gi, g, buf);
                dyg = buf;
            }
            if (gi == 1 && m->pointwise) {
                /* dx is the column matrix itself: accumulate straight into it. */
                float *dxg = dx + (int64_t)a * m->chw + (int64_t)g * m->cg * m->hw;
                osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, m->r, m->s, m->kg, 1.0f, wg, m->r, dyg,
                               m->s, 1.0f, dxg, m->s);
                continue;
            }
            osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, m->r, gi * m->s, m->kg, 1.0f, wg, m->r, dyg,
                           gi * m->s, 0.0f, col, gi * m->s);
            col2im(d, m, col, a, gi, g, dx);
        }
    }
}

/* dwt += corr(x, dy) over images [n0, n1), using slot ws, where dwt holds
 * each group's filter gradient transposed (R x Kg): the GEMM then has the
 * taps as its long side, where with Kg rows (as few as 16) it ran at well
 * under half the speed. */
static void bwd_filter_images(const osp_conv_desc *d, const geom *m, const float *x,
                              const float *dy, float *dwt, int n0, int n1, float *ws) {
    float *col = ws, *buf = ws + m->col;
    for (int a = n0; a < n1; a += m->G) {
        int gi = n1 - a < m->G ? n1 - a : m->G;
        for (int g = 0; g < d->groups; g++) {
            const float *dyg = dy + (int64_t)a * m->ks + (int64_t)g * m->kg * m->s;
            if (gi > 1) {
                gather_dy(d, m, dy, a, gi, g, buf);
                dyg = buf;
            }
            const float *b = col;
            if (gi == 1 && m->pointwise) b = x + (int64_t)a * m->chw + (int64_t)g * m->cg * m->hw;
            else im2col(d, m, x, a, gi, g, 0, d->p, col);
            osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, m->r, m->kg, gi * m->s, 1.0f, b, gi * m->s,
                           dyg, gi * m->s, 1.0f, dwt + (int64_t)g * m->kg * m->r, m->kg);
        }
    }
}

/* ---- the kernels ----------------------------------------------------------- */

#if HAVE_PACKED_GEMM
static void winograd_forward(const osp_conv_desc *d, const geom *m, const float *x,
                             const float *w, const float *bias, float *y, float *ws);
#endif

/* Whether the forward adds d's residual in its own pass: the packed GEMM
 * and Winograd paths do, in registers. */
static int residual_in_pass(const osp_conv_desc *d, const geom *m) {
#if HAVE_PACKED_GEMM
    return !m->depthwise && (m->winograd || !USES_DIRECT(d, m));
#else
    (void)d, (void)m;
    return 0;
#endif
}

/* y = act(y + d's residual), for the paths that do not add it themselves:
 * a pass of its own, as the separate add was. */
static void add_residual(const osp_conv_desc *d, float *y) {
    const int64_t s = (int64_t)d->p * d->q, planes = (int64_t)d->n * d->k;
#pragma omp parallel for schedule(static) if (planes * s >= ((int64_t)1 << 16))
    for (int64_t i = 0; i < planes; i++) {
        float *v = y + i * s;
        const float *r = d->residual + i * s;
        for (int64_t j = 0; j < s; j++) v[j] += r[j];
        if (d->act != OSP_ACT_NONE) epilogue(v, s, 0.0f, d);
    }
}

void KFN(conv2d_forward)(const osp_conv_desc *d, const float *x, const float *w,
                         const float *bias, float *y, void *workspace) {
    geom m = geometry(d);
    if (d->residual && !residual_in_pass(d, &m)) {
        osp_conv_desc plain = *d;
        plain.residual = NULL;
        plain.act = OSP_ACT_NONE;
        KFN(conv2d_forward)(&plain, x, w, bias, y, workspace);
        add_residual(d, y);
        return;
    }
    if (m.depthwise) {
        dw_forward(d, &m, x, w, bias, y);
        return;
    }
    float *ws = workspace;
#if HAVE_PACKED_GEMM
    if (m.winograd) {
        winograd_forward(d, &m, x, w, bias, y, ws);
        return;
    }
#endif
    const int nt = threads_for(d, &m);
    if (nt > 1 && d->n >= nt) {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), lo, hi;
            share(d->n, t, omp_get_num_threads(), &lo, &hi);
            fwd_images(d, &m, x, w, bias, y, lo, hi, 0, ws + t * m.slot);
        }
    } else if (nt > 1 && split_channels(d, &m, nt)) {
        /* The threads fill one column matrix together (slot 0's), then
         * each multiplies its output channels by all of it. */
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num(), tn = omp_get_num_threads();
            int lo, hi, r0, r1;
            int64_t j0 = 0, j1 = 0;
            const int by_columns = split_columns(d, &m, tn);
            if (by_columns) share_columns(&m, t, tn, &j0, &j1);
            share_rows(d->k, t, tn, &lo, &hi);
            share(m.r, t, tn, &r0, &r1);
            for (int n = 0; n < d->n; n++) {
                const float *b = x + (int64_t)n * m.chw;
                if (!m.pointwise) {
                    if (n > 0) {
#pragma omp barrier
                    }
                    im2col_rows(d, &m, x, n, 1, 0, 0, d->p, r0, r1, ws);
#pragma omp barrier
                    b = ws;
                }
#if HAVE_PACKED_GEMM
                if (by_columns) {
                    fwd_columns(d, &m, b, w, bias, y, n, j0, j1, ws + t * m.slot);
                    continue;
                }
#endif
                fwd_channels(d, &m, b, w, bias, y, n, lo, hi, ws + t * m.slot);
            }
        }
    } else if (nt > 1 && d->p >= nt) {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), lo, hi;
            share(d->p, t, omp_get_num_threads(), &lo, &hi);
            const int rows = rows_per_block(d, &m, hi - lo);
            for (int n = 0; n < d->n; n++)
                for (int p0 = lo; p0 < hi; p0 += rows)
                    fwd_rows(d, &m, x, w, bias, y, n, p0, hi - p0 < rows ? hi : p0 + rows,
                             ws + t * m.slot);
        }
    } else {
        fwd_images(d, &m, x, w, bias, y, 0, d->n, 0, ws);
    }
}

#if HAVE_PACKED_GEMM
/* Winograd in bands of tile rows: where U is small (64 channels in and
 * out: 256 KiB), each image is transformed, multiplied and transformed
 * back a band of about WG_BAND_TILES tiles at a time, so that its V and M
 * (16 (C + K) floats a tile: 6.4 MB an image on 56x56) are used while
 * they are still in cache, and threads share a lone image's bands; for
 * larger U, reading it once per band costs what the bands save. 196
 * tiles beat both smaller and larger bands on resnet18's layer1
 * (docs/kernels.md). */
#define WG_BAND_TILES 196
#define WG_BAND_MAX_U_BYTES ((int64_t)256 << 10)

/* Tile rows per band, or all of them (one band) where bands do not pay. */
static int wg_band_rows(const osp_conv_desc *d) {
    const int th_n = (d->p + 1) / 2, tw_n = (d->q + 1) / 2;
    if (16 * (int64_t)d->k * d->c * (int64_t)sizeof(float) > WG_BAND_MAX_U_BYTES ||
        (int64_t)th_n * tw_n <= WG_BAND_TILES)
        return th_n;
    const int rows = (WG_BAND_TILES + tw_n - 1) / tw_n;
    const int bands = (th_n + rows - 1) / rows;
    return (th_n + bands - 1) / bands; /* bands of even height */
}

/* y = conv(x, w) + bias, activated, by F(2x2, 3x3) (conv_winograd_avx2.h).
 * The threads transform the filters together, then take bands of tile rows
 * (wg_band_rows; one band: a whole image) of the images each (V and M in
 * their own slots) or, for fewer images than threads and one band an
 * image, share each image's channels, then its 16 GEMMs, then its output
 * channels (V and M in slot 0). */
static void winograd_forward(const osp_conv_desc *d, const geom *m, const float *x,
                             const float *w, const float *bias, float *y, float *ws) {
    const int64_t tl = m->tiles, vf = ROUND16(16 * d->c * tl);
    const int th_n = (d->p + 1) / 2, tw_n = (d->q + 1) / 2, band = wg_band_rows(d);
    const int bands = (th_n + band - 1) / band;
    const float *u = d->prepared ? d->prepared : ws + m->slot * osp__kernel_slots();
    osp_conv_desc plain = *d; /* the GEMMs add no bias and apply no activation */
    plain.act = OSP_ACT_NONE;
    const int nt = threads_for(d, m);
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), tn = omp_get_num_threads();
        float *pack = pg_pack_of(m, ws + t * m->slot);
        int lo, hi;
        if (!d->prepared) {
            share(d->k, t, tn, &lo, &hi);
            wg_filters(d, w, ws + m->slot * osp__kernel_slots(), lo, hi);
#pragma omp barrier
        }
        if (bands > 1 || d->n >= tn) { /* one band: whole images */
            float *v = ws + t * m->slot + m->col + m->buf + m->dwp;
            float *mm = v + ROUND16(16 * d->c * (int64_t)band * tw_n);
            share(d->n * bands, t, tn, &lo, &hi);
            for (int item = lo; item < hi; item++) {
                const int a = item / bands, th0 = item % bands * band;
                const int th1 = th0 + band < th_n ? th0 + band : th_n;
                const int64_t bt = (int64_t)(th1 - th0) * tw_n; /* the band's tiles */
                wg_inputs(d, x + a * m->chw, 0, d->c, th0, th1, v, bt);
                for (int xi = 0; xi < 16; xi++) {
                    pg_cols c = {v + xi * d->c * bt, 0, bt, mm + xi * d->k * bt, 0, bt, bt, NULL};
                    pg_gemm(d->k, d->c, u + (int64_t)xi * d->k * d->c, NULL, &c, bt, NULL, &plain,
                            pack);
                }
                wg_outputs(d, mm, bt, bias, 0, d->k, th0, th1, residual_at(d, y, y + a * m->ks),
                           y + a * m->ks);
            }
        } else {
            float *v = ws + m->col + m->buf + m->dwp, *mm = v + vf;
            for (int a = 0; a < d->n; a++) {
                share(d->c, t, tn, &lo, &hi);
                wg_inputs(d, x + a * m->chw, lo, hi, 0, th_n, v, tl);
#pragma omp barrier
#pragma omp for schedule(static)
                for (int xi = 0; xi < 16; xi++) {
                    pg_cols c = {v + xi * d->c * tl, 0, tl, mm + xi * d->k * tl, 0, tl, tl, NULL};
                    pg_gemm(d->k, d->c, u + (int64_t)xi * d->k * d->c, NULL, &c, tl, NULL, &plain,
                            pack);
                }
                share(d->k, t, tn, &lo, &hi);
                wg_outputs(d, mm, tl, bias, lo, hi, 0, th_n, residual_at(d, y, y + a * m->ks),
                           y + a * m->ks);
#pragma omp barrier
            }
        }
    }
    pg_finish(d, m, y, 0, d->n, 0, d->k, 0, m->s);
}
#endif

/* Prepared filters: Winograd's U (16 x K x C) for the shapes it takes,
 * so that a lone 14x14 image gains from it too and no forward pays for
 * the transform; w packed for the GEMM (pg_pack_filters) for the shapes
 * that read w through it. Other shapes and builds have nothing to
 * prepare. */
#if HAVE_PACKED_GEMM
/* Shapes whose forward reads w through pg_gemm: one group, neither
 * Winograd's nor the direct kernel's. */
static int gemm_packs_filters(const osp_conv_desc *d) {
    const geom m = geometry(d);
    return d->groups == 1 && !winograd_shape(d) && !USES_DIRECT(d, &m);
}
#endif

size_t KFN(conv2d_prepared_floats)(const osp_conv_desc *d) {
#if HAVE_PACKED_GEMM
    if (winograd_shape(d)) return (size_t)16 * d->k * d->c;
    if (gemm_packs_filters(d)) return (size_t)pg_packed_floats(d->k, d->c * d->kh * d->kw);
#endif
    (void)d;
    return 0;
}

void KFN(conv2d_prepare)(const osp_conv_desc *d, const float *w, float *prepared) {
#if HAVE_PACKED_GEMM
    const int packs = gemm_packs_filters(d), r = d->c * d->kh * d->kw;
    if (!packs && !winograd_shape(d)) return;
    /* the threads take groups of PG_MR rows to pack, or output channels */
    const int items = packs ? (d->k + PG_MR - 1) / PG_MR : d->k;
    const int nt = (int64_t)d->k * r >= 4096 ? osp__kernel_team() : 1;
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        share(items, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        if (packs) pg_pack_filters(d->k, r, w, prepared, lo, hi);
        else wg_filters(d, w, prepared, lo, hi);
    }
#else
    (void)d, (void)w, (void)prepared;
#endif
}

/* For stride 1, dx is a forward convolution of dy with the filters
 * transposed (K <-> C within each group) and flipped, padded by
 * dil*(k-1) - pad: a GEMM with R = Kg*kh*kw inner terms, instead of one
 * with only Kg (16 for a ResNet's first stage) followed by col2im's
 * scattered adds. Returns its desc, or one with n = 0 when the shape does
 * not allow it. */
static osp_conv_desc transposed_desc(const osp_conv_desc *d) {
    osp_conv_desc t = *d;
    t.n = 0;
    t.prepared = NULL; /* forward filters, not the transposed ones */
    int ph = d->dil_h * (d->kh - 1) - d->pad_h, pw = d->dil_w * (d->kw - 1) - d->pad_w;
    if (d->stride_h != 1 || d->stride_w != 1 || ph < 0 || pw < 0) return t;
    if (d->kh == 1 && d->kw == 1) return t; /* pointwise: the GEMM is already direct */
    /* Its column matrix holds Kg x H x W taps per window position against
     * Cg x P x Q for col2im: where the convolution shrinks the image and
     * widens the channels (LeNet's conv2: 7,200 against 1,280), col2im's
     * smaller GEMM wins, by more than twice on that layer. */
    if ((int64_t)(d->k / d->groups) * d->h * d->w * 4 >
        (int64_t)(d->c / d->groups) * d->p * d->q * 5)
        return t;
    t.n = d->n;
    t.c = d->k, t.h = d->p, t.w = d->q;
    t.k = d->c, t.p = d->h, t.q = d->w;
    t.pad_h = ph, t.pad_w = pw;
    t.act = OSP_ACT_NONE;
    return t;
}

/* wt (C x Kg x kh x kw) = w (K x Cg x kh x kw) transposed within each group
 * and flipped. */
static void transpose_filters(const osp_conv_desc *d, const geom *m, const float *w, float *wt) {
    const int taps = d->kh * d->kw;
    for (int c = 0; c < d->c; c++) {
        int g = c / m->cg, cc = c % m->cg;
        for (int k = 0; k < m->kg; k++) {
            const float *src = w + ((int64_t)(g * m->kg + k) * m->cg + cc) * taps;
            float *dst = wt + ((int64_t)c * m->kg + k) * taps;
            for (int t = 0; t < taps; t++) dst[t] = src[taps - 1 - t];
        }
    }
}

void KFN(conv2d_backward_data)(const osp_conv_desc *d, const float *dy, const float *w,
                               float *dx, void *workspace) {
    if (!dx) return;
    geom m = geometry(d);
    if (m.depthwise) {
        dw_backward_data(d, &m, dy, w, dx);
        return;
    }
    float *ws = workspace;
    const int nt = threads_for(d, &m);
    osp_conv_desc td = transposed_desc(d);
    if (td.n) {
        /* The transposed filters go after every slot's share of the
         * workspace (conv2d_workspace counts them). */
        geom tm = geometry(&td);
        float *wt = ws + osp__kernel_slots() * tm.slot;
        transpose_filters(d, &m, w, wt);
        if (nt > 1 && d->n >= nt) {
#pragma omp parallel num_threads(nt)
            {
                int t = omp_get_thread_num(), lo, hi;
                share(d->n, t, omp_get_num_threads(), &lo, &hi);
                fwd_images(&td, &tm, dy, wt, NULL, dx, lo, hi, 1, ws + t * tm.slot);
            }
        } else {
            fwd_images(&td, &tm, dy, wt, NULL, dx, 0, d->n, 1, ws);
        }
        return;
    }
    if (nt > 1 && d->n >= nt) {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), lo, hi;
            share(d->n, t, omp_get_num_threads(), &lo, &hi);
            bwd_data_images(d, &m, dy, w, dx, lo, hi, ws + t * m.slot);
        }
    } else {
        bwd_data_images(d, &m, dy, w, dx, 0, d->n, ws);
    }
}

void KFN(conv2d_backward_filter)(const osp_conv_desc *d, const float *x, const float *dy,
                                 float *dw, float *db, void *workspace) {
    geom m = geometry(d);
    if (m.depthwise) {
        if (dw || db) dw_backward_filter(d, &m, x, dy, dw, db);
        return;
    }
    if (db) bias_grad(d, &m, dy, db);
    if (!dw) return;
    float *ws = workspace;
    int nt = threads_for(d, &m);
    if (d->n < nt) nt = 1;
    const int64_t nw = (int64_t)d->k * m.r;
#if HAVE_DIRECT && DIRECT_AVX512
    dmask plane_masks[DIRECT_PLANE_MASKS];
    const int direct = direct_filter_applies(d, &m);
    if (direct) direct_masks(d, 0, (m.s + DIRECT_LANES - 1) / DIRECT_LANES, m.s, plane_masks);
#elif HAVE_DIRECT
    const int padded = padded_filter_applies(d, &m);
#endif
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), team = omp_get_num_threads(), lo, hi;
        float *part = ws + t * m.slot + m.col + m.buf;
        memset(part, 0, (size_t)nw * sizeof(float));
        share(d->n, t, team, &lo, &hi);
#if HAVE_DIRECT && DIRECT_AVX512
        if (direct)
            direct_filter_images(d, &m, x, dy, part, lo, hi, plane_masks);
        else
#elif HAVE_DIRECT
        if (padded)
            padded_filter_images(d, &m, x, dy, part, lo, hi, ws + t * m.slot);
        else
#endif
            bwd_filter_images(d, &m, x, dy, part, lo, hi, ws + t * m.slot);
#pragma omp barrier
        /* dw[g][k][r] += the threads' dwt[g][r][k], in thread order: the
         * same sum every run. */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nw; i++) {
            int64_t g = i / ((int64_t)m.kg * m.r), k = i / m.r % m.kg, r = i % m.r;
            int64_t at = (g * m.r + r) * m.kg + k;
            float sum = 0.0f;
            for (int u = 0; u < team; u++) sum += ws[u * m.slot + m.col + m.buf + at];
            dw[i] += sum;
        }
    }
}
