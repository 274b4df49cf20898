/* Int8 convolution with AVX-512 VNNI (vpdpbusd: four u8 x s8 products
 * summed into each of 16 int32 lanes per instruction, four times
 * float32's multiply-adds per instruction). The layouts, the driver and
 * the epilogue's arithmetic are conv_int8.h's; this file has the GEMM and
 * the quantisation in registers, and must equal the portable kernel bit
 * for bit (the same float operations in the same order: the file is built
 * with -ffp-contract=off, and the one fused multiply-add is explicit in
 * both). */
#include <immintrin.h>
#include <string.h>

#include "conv_int8.h"

void osp__vnni_int8_quantize(const float *x, int n, float inv_scale, int zero, uint8_t *q);

/* Sixteen values quantised in 32-bit lanes (0..255), as
 * osp__int8_quantize_one. */
static inline __m512i quantize16(__m512 x, __m512 inv, __m512i z) {
    __m512 t = _mm512_mul_ps(x, inv);
    /* max/min give their second operand for NaN, as the portable code */
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-512.0f)), _mm512_set1_ps(512.0f));
    const __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(t), z);
    return _mm512_min_epi32(_mm512_max_epi32(v, _mm512_setzero_si512()), _mm512_set1_epi32(255));
}

/* Four rows at once: each output lane's four bytes are the four rows'
 * values, so the interleaved layout comes out of the registers. */
void osp__vnni_int8_quantize4(const float *const x[4], int n, float inv_scale, int zero,
                              uint8_t *q) {
    const __m512 inv = _mm512_set1_ps(inv_scale);
    const __m512i z = _mm512_set1_epi32(zero);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i word = _mm512_setzero_si512();
        for (int t = 0; t < 4; t++) {
            const __m512i v = x[t] ? quantize16(_mm512_maskz_loadu_ps(m, x[t] + i), inv, z) : z;
            word = _mm512_or_si512(word, _mm512_slli_epi32(v, 8 * t));
        }
        _mm512_mask_storeu_epi32(q + 4 * i, m, word);
    }
}

void osp__vnni_int8_quantize(const float *x, int n, float inv_scale, int zero, uint8_t *q) {
    const __m512 inv = _mm512_set1_ps(inv_scale);
    const __m512i z = _mm512_set1_epi32(zero);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512i v = quantize16(_mm512_maskz_loadu_ps(m, x + i), inv, z);
        _mm_mask_storeu_epi8(q + i, m, _mm512_cvtepi32_epi8(v));
    }
}

/* Which of the 16 grid cells from n are outputs (the grid's columns past
 * Q and cells past the last row are not), and the output index of the
 * first: the outputs of consecutive valid cells are consecutive. */
static inline __mmask16 valid16(const int8_out *o, int64_t n, int64_t *first) {
    const int q = o->d->q;
    int64_t col = n % o->grid;
    __mmask16 m = 0;
    *first = -1;
    for (int l = 0; l < 16 && n + l < o->cells; l++) {
        if (col < q) {
            if (*first < 0) *first = (n + l) / o->grid * q + col;
            m |= (__mmask16)(1u << l);
        }
        if (++col == o->grid) col = 0;
    }
    return m;
}

/* The epilogue's values of 16 cells of channel k, whose valid ones (m)
 * are the outputs from index at on in the channel's P x Q plane. */
static inline __m512 value16(const int8_out *o, int k, __m512i acc, int64_t at, __mmask16 m) {
    const osp_conv_desc *d = o->d;
    const __m512i centred = _mm512_sub_epi32(acc, _mm512_set1_epi32(o->zero * int8_sums(o->f)[k]));
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(centred), _mm512_set1_ps(o->oscale[k]),
                               _mm512_set1_ps(o->bias[k]));
    if (o->res)
        v = _mm512_add_ps(v, _mm512_maskz_expandloadu_ps(
                                 m, o->res + (int64_t)k * o->d->p * o->d->q + at));
    const __m512 zero = _mm512_setzero_ps();
    switch ((osp_activation)d->act) {
    case OSP_ACT_NONE: break;
    case OSP_ACT_RELU: v = _mm512_max_ps(v, zero); break;
    case OSP_ACT_RELU6: v = _mm512_min_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(6.0f)); break;
    case OSP_ACT_LEAKY_RELU: {
        const __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
        v = _mm512_mask_blend_ps(pos, _mm512_mul_ps(v, _mm512_set1_ps(d->act_alpha)), v);
        break;
    }
    default: { /* the transcendental ones: as the portable code, one by one */
        float buf[16];
        _mm512_storeu_ps(buf, v);
        for (int j = 0; j < 16; j++) buf[j] = osp__int8_activate(d, buf[j]);
        v = _mm512_loadu_ps(buf);
        break;
    }
    }
    return v;
}

/* ... stored as float32 */
static inline void store16(const int8_out *o, int k, __m512 v, int64_t at, __mmask16 m) {
    float *y = o->y + (int64_t)k * o->d->p * o->d->q + at;
    if (m == 0xffff) {
        _mm512_storeu_ps(y, v);
        return;
    }
    const int count = __builtin_popcount(m);
    _mm512_mask_storeu_ps(y, (__mmask16)((1u << count) - 1), _mm512_maskz_compress_ps(m, v));
}

/* ... (stored as float32 too where o->y is) quantised as the next layer
 * would, in 32-bit lanes (a channel past K: the zero point) */
static inline __m512i byte16(const int8_out *o, int k, __m512i acc, int64_t at, __mmask16 m) {
    if (k >= o->f->k) return _mm512_set1_epi32(o->yq_zero);
    const __m512 v = value16(o, k, acc, at, m);
    if (o->y) store16(o, k, v, at, m);
    return quantize16(v, _mm512_set1_ps(o->yq_inv), _mm512_set1_epi32(o->yq_zero));
}

/* The packed epilogue of 16 cells of the four channels of quad k0 / 4:
 * the four bytes of a cell side by side, the valid cells stored into
 * their rows of the next layer's bordered planes. */
static inline void finish16_packed(const int8_out *o, int k0, __m512i a0, __m512i a1, __m512i a2,
                                   __m512i a3, int64_t at, __mmask16 m) {
    __m512i word = byte16(o, k0, a0, at, m);
    word = _mm512_or_si512(word, _mm512_slli_epi32(byte16(o, k0 + 1, a1, at, m), 8));
    word = _mm512_or_si512(word, _mm512_slli_epi32(byte16(o, k0 + 2, a2, at, m), 16));
    word = _mm512_or_si512(word, _mm512_slli_epi32(byte16(o, k0 + 3, a3, at, m), 24));
    const int q = o->d->q;
    int64_t row = at / q, col = at % q;
    uint8_t *dst = int8_packed_at(o, k0, row, col);
    if (m == 0xffff && col + 16 <= q) {
        _mm512_storeu_si512(dst, word);
        return;
    }
    /* cells from one output row to the next jump the borders */
    uint32_t cells[16];
    _mm512_storeu_si512(cells, _mm512_maskz_compress_epi32(m, word));
    const int count = __builtin_popcount(m);
    for (int i = 0; i < count;) {
        const int len = count - i < q - col ? count - i : (int)(q - col);
        memcpy(dst, cells + i, (size_t)len * 4);
        i += len;
        if (i < count) dst = int8_packed_at(o, k0, ++row, col = 0);
    }
}

/* The valid cells of a block's two halves, and their first outputs. */
typedef struct block_cells {
    __mmask16 m0, m1;
    int64_t at0, at1;
} block_cells;

/* rows x 32 cells from channel k0 and block b (rows: 12 or 4). */
static inline __attribute__((always_inline)) void tile(const int8_out *o, const int8_t *w,
                                                       int rows, int k0, int b,
                                                       const block_cells *v) {
    const int8_filters *f = o->f;
    const uint8_t *block = o->src + b * o->block_stride;
    const int64_t *off = o->off;
    __m512i acc[INT8_TILE_ROWS][2];
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int gq = 0; gq < f->groups; gq++) {
        const uint8_t *bp = block + off[gq];
        const __m512i b0 = _mm512_loadu_si512(bp), b1 = _mm512_loadu_si512(bp + 64);
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            int32_t four;
            memcpy(&four, w + 4 * r, 4);
            const __m512i a = _mm512_set1_epi32(four);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], b0, a);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], b1, a);
        }
        w += 4 * rows;
    }
    if (o->yq) {
        /* unrolled, so that the accumulators stay in registers */
#pragma GCC unroll 3
        for (int r = 0; r < rows; r += 4) {
            if (k0 + r >= f->k) break;
            if (v->m0)
                finish16_packed(o, k0 + r, acc[r][0], acc[r + 1][0], acc[r + 2][0], acc[r + 3][0],
                                v->at0, v->m0);
            if (v->m1)
                finish16_packed(o, k0 + r, acc[r][1], acc[r + 1][1], acc[r + 2][1], acc[r + 3][1],
                                v->at1, v->m1);
        }
        return;
    }
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++) {
        const int k = k0 + r;
        if (k >= f->k) break;
        if (v->m0) store16(o, k, value16(o, k, acc[r][0], v->at0, v->m0), v->at0, v->m0);
        if (v->m1) store16(o, k, value16(o, k, acc[r][1], v->at1, v->m1), v->at1, v->m1);
    }
}

/* Blocks of columns taken together: each tile of filters runs over all of
 * them before the next, so that its outputs are written row by row (a
 * layer with few taps is bound by those writes) and its filters stay in
 * cache. */
#define CHUNK_BLOCKS 64

static void gemm(const int8_out *o, int k0, int k1, int b0, int b1) {
    const int8_filters *f = o->f;
    const int8_t *wq = int8_weights(f);
    block_cells cells[CHUNK_BLOCKS];
    for (int c0 = b0; c0 < b1; c0 += CHUNK_BLOCKS) {
        const int c1 = b1 - c0 < CHUNK_BLOCKS ? b1 : c0 + CHUNK_BLOCKS;
        for (int b = c0; b < c1; b++) {
            block_cells *v = &cells[b - c0];
            const int64_t n = (int64_t)b * INT8_BLOCK_COLS;
            v->m0 = valid16(o, n, &v->at0);
            v->m1 = valid16(o, n + 16, &v->at1);
        }
        for (int k = k0; k < k1;) {
            int t0;
            const int rows = int8_tile_of(f, k, &t0);
            const int8_t *w = wq + (int64_t)k * f->groups * 4;
            for (int b = c0; b < c1; b++) {
                if (rows == INT8_TILE_ROWS) tile(o, w, INT8_TILE_ROWS, k, b, &cells[b - c0]);
                else tile(o, w, 4, k, b, &cells[b - c0]);
            }
            k += rows;
        }
    }
}

static const int8_kernel vnni = {gemm, osp__vnni_int8_quantize, osp__vnni_int8_quantize4};

void osp__vnni_conv2d_int8_forward(const osp_conv_desc *d, float x_scale, int x_zero,
                                   const float *x, const void *prepared, const float *bias,
                                   float *y, void *workspace) {
    const osp_int8_io io = {.x_scale = x_scale, .x_zero = x_zero, .x = x, .y = y};
    osp__int8_conv_run(d, &io, prepared, bias, workspace, &vnni);
}

void osp__vnni_conv2d_int8_forward_io(const osp_conv_desc *d, const osp_int8_io *io,
                                      const void *prepared, const float *bias, void *workspace) {
    osp__int8_conv_run(d, io, prepared, bias, workspace, &vnni);
}
