/* The convolution's forward GEMM with AVX2 + FMA, included by conv.c in its
 * AVX2 and AVX-512 copies: y (M x cols) = w (M x K) * B (K x cols), with
 * the bias and a simple activation applied in registers before the single
 * store.
 *
 * Why not sgemm: OpenBLAS ran mobilenet_v2's 1x1 layers of one image far
 * below the machine's peak (docs/kernels.md), and every GEMM was followed
 * by a pass over y for the bias and activation, and, for small planes
 * (14x14, 7x7), by copies of the images side by side into a column matrix
 * and of the result back out. Here the columns of B and y may be spread over images: column
 * j is column j % s of image j / s, so a batch of 1x1 convolutions is one
 * GEMM straight from x into y, with no copies.
 *
 * Blocking, as in Goto's sgemm: B is packed a block of up to PG_KC rows
 * at a time, PG_BLOCK_PANELS panels of 16 columns wide at full depth and
 * wider for shorter sums (zeros past the last column), in a buffer that
 * stays in L2; each 6 x 16 tile of y keeps its 12 sums in registers
 * over the block's rows, reading w's six rows by broadcasts (in place:
 * each of its cache lines serves 16 steps; or, under an inference plan,
 * packed by pg_pack_filters so that a group of six rows is one stream)
 * and one packed row of 16 per step. A last panel of 2 to 8 columns is packed 8
 * wide and its tiles keep 6 sums; a lone last column (a 7x7 plane's 49th)
 * is packed as one and summed along w's rows (pg_col1). A tile lying
 * inside one image is loaded and stored in place; one that straddles
 * images or runs past the last column goes through a 6 x 16 scratch. The
 * AVX-512 copy takes two groups of rows at a time, and one or two full
 * panels of one image in one tile of 512-bit sums of 12, 8, 6 or 4 rows
 * (pg_tile_wide, pg_wide_takes), with the same results.
 *
 * Sums run over K in a fixed order, so results repeat bit for bit; they
 * differ from sgemm's order by rounding only. */
#ifndef OSPREY_CONV_GEMM_AVX2_H
#define OSPREY_CONV_GEMM_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "act_avx2.h"

#define PG_MR 6
#define PG_NR 16
/* Rows of B per block: a panel of 256 x 16 floats is 16 KiB, half of L1. */
#define PG_KC 256
/* Panels per block at full depth: 8 x 16 KiB stays beside w's rows in an
 * L2 of 512 KiB, the smallest among the CPUs it was tuned on. */
#define PG_BLOCK_PANELS 8
/* Floats of one thread's packing buffer. */
#define PG_PACK_FLOATS ((int64_t)PG_BLOCK_PANELS * PG_KC * PG_NR)
#ifdef PACK_FLOATS /* conv.c's; fc_packed.h packs nothing per call */
_Static_assert(PG_PACK_FLOATS <= PACK_FLOATS, "conv.c reserves too little for the packing");
#endif

/* Where B and y live: column j is column j % s of image j / s. */
typedef struct pg_cols {
    const float *b;  /* B's row 0, image 0 */
    int64_t b_image; /* floats from one image's B to the next */
    int64_t ldb;     /* floats from one row of B to the next */
    float *y;        /* y's row 0, image 0 */
    int64_t y_image; /* floats from one image's y to the next */
    int64_t ldy;     /* floats from one row of y to the next */
    int64_t s;       /* columns per image */
    const float *r;  /* a residual laid out as y, added to it, or NULL */
} pg_cols;

/* B's rows [k0, k0 + kc) of columns [j, j + width) into dst (kc x nr, nr
 * 16 or 8, or 1 for a lone column), zeros past width. */
static void pg_pack_panel(const pg_cols *c, int64_t k0, int kc, int64_t j, int width, int nr,
                          float *dst) {
    int64_t image = j / c->s, col = j % c->s;
    if (nr == 1) {
        const float *src = c->b + image * c->b_image + col + k0 * c->ldb;
        for (int k = 0; k < kc; k++) dst[k] = src[k * c->ldb];
        return;
    }
    if (width == nr && col + nr <= c->s) {
        const float *src = c->b + image * c->b_image + col + k0 * c->ldb;
        for (int k = 0; k < kc; k++, src += c->ldb) {
            _mm256_store_ps(dst + k * nr, _mm256_loadu_ps(src));
            if (nr == 16) _mm256_store_ps(dst + k * nr + 8, _mm256_loadu_ps(src + 8));
        }
        return;
    }
    for (int t = 0; t < nr;) {
        int len;
        if (t < width) {
            len = (int)(c->s - col < width - t ? c->s - col : width - t);
            const float *src = c->b + image * c->b_image + col + k0 * c->ldb;
            for (int k = 0; k < kc; k++)
                memcpy(dst + k * nr + t, src + k * c->ldb, (size_t)len * sizeof(float));
            image++;
            col = 0;
        } else {
            len = nr - t;
            for (int k = 0; k < kc; k++) memset(dst + k * nr + t, 0, (size_t)len * sizeof(float));
        }
        t += len;
    }
}

/* B's rows [k0, k0 + kc) of the full panels of columns [j, j + 16 panels),
 * which lie in one image, packed as pg_pack_panel packs each (dst: panel p
 * at p kc 16). Row by row, so that each row of B is read in one run, with
 * the rows a few steps ahead fetched meanwhile: panel by panel, B's rows
 * were as many streams as the block has rows, more than the prefetchers
 * follow, and a layer with many rows and few columns a block (such as
 * mobilenet_v2's 144 -> 24 on 56x56) spent as long packing as multiplying.
 * The gain, per layer and per network, is in docs/kernels.md. */
#define PG_PACK_AHEAD 12
static void pg_pack_rows(const pg_cols *c, int64_t k0, int kc, int64_t j, int panels, float *dst) {
    const float *src = c->b + j / c->s * c->b_image + j % c->s + k0 * c->ldb;
    for (int k = 0; k < kc; k++, src += c->ldb) {
        if (k + PG_PACK_AHEAD < kc)
            for (int p = 0; p < panels; p += 4) /* a cache line per 16 floats */
                _mm_prefetch((const char *)(src + PG_PACK_AHEAD * c->ldb + p * PG_NR),
                             _MM_HINT_T0);
        for (int p = 0; p < panels; p++) {
            float *to = dst + ((int64_t)p * kc + k) * PG_NR;
            _mm256_store_ps(to, _mm256_loadu_ps(src + p * PG_NR));
            _mm256_store_ps(to + 8, _mm256_loadu_ps(src + p * PG_NR + 8));
        }
    }
}

/* The scratch tile t (mr x 16) from or to columns [j, j + width) of y, or
 * (from) of the residual when from_r. */
static void pg_tile_copy(const pg_cols *c, int64_t i0, int mr, int64_t j, int width, float *t,
                         int to_y, int from_r) {
    int64_t image = j / c->s, col = j % c->s;
    for (int u = 0; u < width;) {
        int len = (int)(c->s - col < width - u ? c->s - col : width - u);
        const int64_t at = image * c->y_image + i0 * c->ldy + col;
        for (int r = 0; r < mr; r++) {
            if (to_y)
                memcpy(c->y + at + r * c->ldy, t + r * PG_NR + u, (size_t)len * sizeof(float));
            else
                memcpy(t + r * PG_NR + u, (from_r ? c->r : c->y) + at + r * c->ldy,
                       (size_t)len * sizeof(float));
        }
        u += len;
        image++;
        col = 0;
    }
}

/* w's element (r, k) in a tile's rows a: row r in place (row stride lda),
 * or, packed as pg_pack_filters lays w out (k's PG_MR rows side by side),
 * step k of group r / PG_MR, the groups lda PG_MR floats apart (lda is
 * K; a tile of one group never reads it). */
static inline __attribute__((always_inline)) const float *pg_w(const float *a, int64_t lda,
                                                               int packed, int r, int k) {
    return packed ? a + (r / PG_MR) * PG_MR * lda + (int64_t)k * PG_MR + r % PG_MR
                  : a + r * lda + k;
}

/* One tile: y (mr x 16, row stride ldy) = (init or 0) + a (mr x kc, read
 * through pg_w) * bp (kc x 16), then, where bias is given, + bias per row and
 * the activation act (an osp_act; alpha for leaky ReLU). init (row stride
 * ldy) is y itself for a block of the sums after the first, or a residual.
 * The sums are two arrays indexed only by fully unrolled loops, so that
 * they live in registers. */
static inline __attribute__((always_inline)) void
pg_tile(int mr, int nv, int packed, int kc, const float *a, int64_t lda, const float *bp, float *y,
        int64_t ldy, const float *init, const float *bias, int act, float alpha) {
    const int nr = 8 * nv; /* nv vectors of columns: 2, or 1 for a narrow last panel */
    __m256 lo[PG_MR], hi[PG_MR];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        lo[r] = init ? _mm256_loadu_ps(init + r * ldy) : _mm256_setzero_ps();
        hi[r] = init && nv == 2 ? _mm256_loadu_ps(init + r * ldy + 8) : _mm256_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(bp + k * nr);
        const __m256 b1 = nv == 2 ? _mm256_load_ps(bp + k * nr + 8) : b0;
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            const __m256 w = _mm256_broadcast_ss(pg_w(a, lda, packed, r, k));
            lo[r] = _mm256_fmadd_ps(w, b0, lo[r]);
            if (nv == 2) hi[r] = _mm256_fmadd_ps(w, b1, hi[r]);
        }
    }
    if (bias) {
        const __m256 slope = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            const __m256 b = _mm256_broadcast_ss(bias + r);
            lo[r] = avx2_act(_mm256_add_ps(lo[r], b), act, slope);
            if (nv == 2) hi[r] = avx2_act(_mm256_add_ps(hi[r], b), act, slope);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        _mm256_storeu_ps(y + r * ldy, lo[r]);
        if (nv == 2) _mm256_storeu_ps(y + r * ldy + 8, hi[r]);
    }
}

/* The full 6-row tile, compiled on its own so that the registers are all
 * its own (inlined into a larger function, GCC once kept every sum on the
 * stack inside the k loop: 3x slower); w's rows in place or packed. */
static __attribute__((noinline)) void pg_tile6(int kc, const float *a, int64_t lda, const float *bp,
                                               float *y, int64_t ldy, const float *init,
                                               const float *bias, int act, float alpha) {
    pg_tile(6, 2, 0, kc, a, lda, bp, y, ldy, init, bias, act, alpha);
}
static __attribute__((noinline)) void pg_tile6_packed(int kc, const float *a, const float *bp,
                                                      float *y, int64_t ldy, const float *init,
                                                      const float *bias, int act, float alpha) {
    pg_tile(6, 2, 1, kc, a, 0, bp, y, ldy, init, bias, act, alpha);
}

#ifdef __AVX512F__
/* A tile of 512-bit sums for the AVX-512 copy: mr rows (up to two groups
 * of 6) by nv full panels (bp, and kc x 16 floats after it) of one image,
 * in place. On CPUs whose units are 512 bits wide each FMA
 * does twice pg_tile6's columns; twelve rows read each packed row of B
 * for twice the FMAs, so that B's block, which lies in L2, is read half
 * as often, and 12 x 16 has the 12 sums in flight that 6 x 16 lacks. Each
 * lane still sums over k in order with one FMA a step, so y is bit for bit
 * that of pg_tile6 over the same rows and columns. The epilogue runs on
 * 8-lane halves with avx2_act. */
static inline __attribute__((always_inline)) void
pg_tile_z(int mr, int nv, int packed, int kc, const float *a, int64_t lda, const float *bp,
          float *y, int64_t ldy, const float *init, const float *bias, int act, float alpha) {
    const float *bp1 = bp + (int64_t)kc * PG_NR;
    __m512 s[2 * PG_MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            s[r][v] = init ? _mm512_loadu_ps(init + r * ldy + 16 * v) : _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(bp + k * PG_NR);
        const __m512 b1 = nv == 2 ? _mm512_loadu_ps(bp1 + k * PG_NR) : b0;
#pragma GCC unroll 12
        for (int r = 0; r < mr; r++) {
            const __m512 w = _mm512_set1_ps(*pg_w(a, lda, packed, r, k));
            s[r][0] = _mm512_fmadd_ps(w, b0, s[r][0]);
            if (nv == 2) s[r][1] = _mm512_fmadd_ps(w, b1, s[r][1]);
        }
    }
    const __m256 slope = _mm256_set1_ps(alpha);
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __m512 t = s[r][v];
            if (bias) t = _mm512_add_ps(t, _mm512_set1_ps(bias[r]));
            const __m256 q[2] = {_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1)};
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++)
                _mm256_storeu_ps(y + r * ldy + 16 * v + 8 * h,
                                 bias ? avx2_act(q[h], act, slope) : q[h]);
        }
    }
}

/* Rows taken together by one tile: two groups in the AVX-512 copy. */
#define PG_WIDE_ROWS (2 * PG_MR)
#else
#define PG_WIDE_ROWS PG_MR
#endif

/* Whether pg_tile_wide takes mr rows of one full panel or of a pair: in
 * the AVX-512 copy 12 or 8 rows (8: the rest of 32, 128, 512 ... rows),
 * and for a pair also 6 or 4 (the rest of 16, 64, 256 ...); 4 x 16 would
 * have too few sums in flight. In the AVX2 copy, a pair for a full group. */
static inline int pg_wide_takes(int mr, int pair) {
#ifdef __AVX512F__
    return mr == 2 * PG_MR || mr == 8 || (pair && (mr == PG_MR || mr == 4));
#else
    return pair && mr == PG_MR;
#endif
}

/* Full panels of one image in place, for mr rows (as pg_wide_takes) of w
 * (a, row stride or packed as pg_w reads it, lda = K) and one panel (bp),
 * or two (pair: bp and kc x 16 floats after it). In the AVX-512 copy one
 * tile of 512-bit sums; in the AVX2 copy two 6 x 16 tiles. */
static __attribute__((noinline)) void pg_tile_wide(int mr, int pair, int packed, int kc,
                                                  const float *a, int64_t lda, const float *bp,
                                                  float *y, int64_t ldy, const float *init,
                                                  const float *bias, int act, float alpha) {
#ifdef __AVX512F__
#define PG_TILE_Z(MR, NV)                                                                      \
    (packed ? pg_tile_z(MR, NV, 1, kc, a, lda, bp, y, ldy, init, bias, act, alpha)              \
            : pg_tile_z(MR, NV, 0, kc, a, lda, bp, y, ldy, init, bias, act, alpha))
    if (mr == 2 * PG_MR && pair) PG_TILE_Z(2 * PG_MR, 2);
    else if (mr == 2 * PG_MR) PG_TILE_Z(2 * PG_MR, 1);
    else if (mr == 8 && pair) PG_TILE_Z(8, 2);
    else if (mr == 8) PG_TILE_Z(8, 1);
    else if (mr == PG_MR) PG_TILE_Z(PG_MR, 2);
    else PG_TILE_Z(4, 2);
#undef PG_TILE_Z
#else
    (void)mr;
    for (int h = 0; h <= pair; h++) {
        const float *bh = bp + (int64_t)h * kc * PG_NR, *ih = init ? init + h * PG_NR : NULL;
        if (packed) pg_tile6_packed(kc, a, bh, y + h * PG_NR, ldy, ih, bias, act, alpha);
        else pg_tile6(kc, a, lda, bh, y + h * PG_NR, ldy, ih, bias, act, alpha);
    }
#endif
}

/* pg_tile with mr, nv and packed constants, so that its sums live in
 * registers. */
static inline __attribute__((always_inline)) void
pg_tile_any(int mr, int nv, int packed, int kc, const float *a, int64_t lda, const float *bp,
            float *y, int64_t ldy, const float *init, const float *bias, int act, float alpha) {
#define PG_TILE(MR, NV) pg_tile(MR, NV, packed, kc, a, lda, bp, y, ldy, init, bias, act, alpha)
    if (nv == 1) {
        switch (mr) {
        case 6: PG_TILE(6, 1); break;
        case 5: PG_TILE(5, 1); break;
        case 4: PG_TILE(4, 1); break;
        case 3: PG_TILE(3, 1); break;
        case 2: PG_TILE(2, 1); break;
        default: PG_TILE(1, 1); break;
        }
        return;
    }
    switch (mr) {
    case 6:
        if (packed) pg_tile6_packed(kc, a, bp, y, ldy, init, bias, act, alpha);
        else pg_tile6(kc, a, lda, bp, y, ldy, init, bias, act, alpha);
        break;
    case 5: PG_TILE(5, 2); break;
    case 4: PG_TILE(4, 2); break;
    case 3: PG_TILE(3, 2); break;
    case 2: PG_TILE(2, 2); break;
    default: PG_TILE(1, 2); break;
    }
#undef PG_TILE
}

static void pg_tile_rows(int mr, int nv, int packed, int kc, const float *a, int64_t lda,
                         const float *bp, float *y, int64_t ldy, const float *init,
                         const float *bias, int act, float alpha) {
    if (packed) pg_tile_any(mr, nv, 1, kc, a, lda, bp, y, ldy, init, bias, act, alpha);
    else pg_tile_any(mr, nv, 0, kc, a, lda, bp, y, ldy, init, bias, act, alpha);
}

/* A lone last column (a 7x7 plane's 49th): y (mr x 1, row stride ldy) =
 * (init or 0) + a (mr x kc, through pg_w) * bc (kc floats), then bias and
 * act as pg_tile. Dot products along the rows of a, eight steps of the sum
 * per FMA, or, with w packed, one step of all six rows per FMA, where a
 * narrow tile would spend an FMA of 8 lanes on each step for one useful
 * lane: 42 FMAs per 6 rows and step for 49 columns become 37. */
static void pg_col1(int mr, int packed, int kc, const float *a, int64_t lda, const float *bc,
                    float *y, int64_t ldy, const float *init, const float *bias, int act,
                    float alpha) {
    float v[8] __attribute__((aligned(32))) = {0}; /* lane r: row r's sum */
    if (packed) {
        /* lanes 6 and 7 read the next step's rows, unused (pg_pack_filters
         * leaves room after the last step); four sums, so that the FMAs do
         * not wait on each other, indexed only by an unrolled loop, so that
         * they stay in registers (acc[k & 3] kept them in memory, each FMA
         * waiting on the last one's store: the lone column took as long as
         * 16 columns in a 12 x 16 tile) */
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        int k = 0;
        for (; k + 4 <= kc; k += 4)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                acc[u] = _mm256_fmadd_ps(_mm256_loadu_ps(a + (int64_t)(k + u) * PG_MR),
                                         _mm256_broadcast_ss(bc + k + u), acc[u]);
        for (; k < kc; k++)
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + (int64_t)k * PG_MR),
                                     _mm256_broadcast_ss(bc + k), acc[0]);
        _mm256_store_ps(v, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]),
                                         _mm256_add_ps(acc[2], acc[3])));
    } else {
        __m256 acc[PG_MR];
        for (int r = 0; r < PG_MR; r++) acc[r] = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= kc; k += 8) {
            const __m256 b = _mm256_loadu_ps(bc + k);
#pragma GCC unroll 6
            for (int r = 0; r < PG_MR; r++)
                if (r < mr) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(a + r * lda + k), b, acc[r]);
        }
        for (int r = 0; r < mr; r++) {
            float lanes[8];
            _mm256_storeu_ps(lanes, acc[r]);
            v[r] = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) +
                   ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            for (int t = k; t < kc; t++) v[r] += a[r * lda + t] * bc[t];
        }
    }
    for (int r = 0; r < mr; r++) v[r] += (init ? init[r * ldy] : 0.0f) + (bias ? bias[r] : 0.0f);
    if (bias)
        _mm256_store_ps(v, avx2_act(_mm256_load_ps(v), act, _mm256_set1_ps(alpha)));
    for (int r = 0; r < mr; r++) y[r * ldy] = v[r];
}

/* Floats of w (M x K) packed by pg_pack_filters. */
static int64_t pg_packed_floats(int M, int K) {
    return (int64_t)(M + PG_MR - 1) / PG_MR * PG_MR * K + 8;
}

/* Row groups [g0, g1) of w (M x K) packed: group g (rows PG_MR g ..) as K
 * steps of its PG_MR rows side by side (zeros past row M), at wp + PG_MR g K,
 * so that pg_gemm reads each block of its sums as one stream; and 8 zeros
 * after the last group (pg_col1 reads past its last step). */
static void pg_pack_filters(int M, int K, const float *w, float *wp, int g0, int g1) {
    for (int g = g0; g < g1; g++) {
        float *dst = wp + (int64_t)g * PG_MR * K;
        for (int r = 0; r < PG_MR; r++) {
            const int row = g * PG_MR + r;
            for (int k = 0; k < K; k++)
                dst[(int64_t)k * PG_MR + r] = row < M ? w[(int64_t)row * K + k] : 0.0f;
        }
    }
    if (g1 == (M + PG_MR - 1) / PG_MR) memset(wp + (int64_t)g1 * PG_MR * K, 0, 8 * sizeof(float));
}

/* y's columns [0, cols) = w (M x K, row stride K) * B (+ c's residual),
 * on the calling thread, using pack (PG_PACK_FLOATS, 32-byte aligned);
 * then bias[i] (if given) added to row i and d's activation applied where
 * avx2_act_in_registers says so. The caller applies any other activation
 * (the bias and residual already added). wp, when given, is w packed by
 * pg_pack_filters (from a multiple of PG_MR rows: wp + i K for row i). */
static void pg_gemm(int M, int K, const float *w, const float *wp, const pg_cols *c,
                    int64_t cols, const float *bias, const osp_conv_desc *d, float *pack) {
    static const float zeros[PG_WIDE_ROWS] = {0};
    const int act = avx2_act_in_registers(d->act) ? (int)d->act : OSP_ACT_NONE;
    float tile[PG_MR * PG_NR] __attribute__((aligned(32)));
    /* Short sums take wider blocks in the same buffer: each of B's rows is
     * then read in longer runs, which the prefetchers follow better (it
     * helps layers with few input channels on large planes, and leaves
     * the others as they were). */
    const int64_t block_cols = PG_PACK_FLOATS / (K < PG_KC ? K : PG_KC) / PG_NR * PG_NR;
    for (int64_t jb = 0; jb < cols; jb += block_cols) {
        const int64_t jn = cols - jb < block_cols ? cols - jb : block_cols;
        const int panels = (int)((jn + PG_NR - 1) / PG_NR);
        for (int k0 = 0; k0 < K; k0 += PG_KC) {
            const int kc = K - k0 < PG_KC ? K - k0 : PG_KC;
            const int add = k0 > 0 || c->r, last = k0 + kc == K;
            /* full panels within one image row by row, the others one by one */
            int packed_panels = 0;
            const int full = (int)(jn / PG_NR);
            if (full > 1 && jb / c->s == (jb + (int64_t)full * PG_NR - 1) / c->s) {
                pg_pack_rows(c, k0, kc, jb, full, pack);
                packed_panels = full;
            }
            for (int p = packed_panels; p < panels; p++) {
                int width = (int)(jn - p * PG_NR < PG_NR ? jn - p * PG_NR : PG_NR);
                pg_pack_panel(c, k0, kc, jb + p * PG_NR, width,
                              width == 1 ? 1 : width <= 8 ? 8 : PG_NR,
                              pack + (int64_t)p * kc * PG_NR);
            }
            for (int i0 = 0, rows; i0 < M; i0 += rows) {
                /* two groups at a time where the copy has tiles for them */
                rows = M - i0 < PG_WIDE_ROWS ? M - i0 : PG_WIDE_ROWS;
                const int packed = wp != NULL;
                /* row i0 + r at a + r K in place; packed, group i0 / PG_MR + g
                 * at a + g PG_MR K */
                const float *a = packed ? wp + (int64_t)i0 * K + (int64_t)k0 * PG_MR
                                        : w + (int64_t)i0 * K + k0;
                /* The next rows' block of packed weights, into L2 while
                 * these rows' tiles run, on the first pass over the
                 * weights: they come from memory once per step and the
                 * hardware prefetchers start late on a block of 6 KiB.
                 * Into L2, one group ahead: into L1, or two groups ahead,
                 * gained less (docs/kernels.md) */
                if (packed && jb == 0 && i0 + rows < M) {
                    for (int g = 0; g < rows; g += PG_MR) {
                        const float *next = a + (int64_t)(rows + g) * K;
                        for (int off = 0; off < kc * PG_MR; off += 16)
                            _mm_prefetch((const char *)(next + off), _MM_HINT_T1);
                    }
                } else if (jb == 0 && i0 + rows < M) {
                    /* in place: each of the next rows' kc weights (as
                     * Winograd's U, which comes from memory on a lone
                     * image: it gains more there than it costs when the
                     * weights are already in cache) */
                    for (int r = rows; r < 2 * rows && i0 + r < M; r++)
                        for (int off = 0; off < kc; off += 16)
                            _mm_prefetch((const char *)(a + (int64_t)r * K + off), _MM_HINT_T1);
                }
                const float *b = !last                 ? NULL
                                 : bias                ? bias + i0
                                 : act != OSP_ACT_NONE ? zeros
                                                       : NULL;
                for (int p = 0; p < panels; p++) {
                    const int64_t j = jb + p * PG_NR;
                    const int width = (int)(jn - p * PG_NR < PG_NR ? jn - p * PG_NR : PG_NR);
                    /* a last panel of 8 columns or fewer is a narrow one */
                    const int nv = width <= 8 ? 1 : 2, nr = 8 * nv;
                    const float *bp = pack + (int64_t)p * kc * PG_NR;
                    const int64_t at = j / c->s * c->y_image + (int64_t)i0 * c->ldy + j % c->s;
                    /* in place: the first block starts from the residual,
                     * later ones from y */
                    const float *init = !add ? NULL : k0 > 0 ? c->y + at : c->r + at;
                    const int in_image = width == PG_NR && j % c->s + PG_NR <= c->s;
                    /* this panel and the next, full, in one image */
                    const int pair = in_image && (int64_t)(p + 2) * PG_NR <= jn &&
                                     j % c->s + 2 * PG_NR <= c->s;
                    if (in_image && pg_wide_takes(rows, pair)) {
                        pg_tile_wide(rows, pair, packed, kc, a, K, bp, c->y + at, c->ldy, init, b,
                                     act, d->act_alpha);
                        p += pair;
                        continue;
                    }
                    for (int g = 0; g < rows; g += PG_MR) { /* group by group */
                        const int mr = rows - g < PG_MR ? rows - g : PG_MR;
                        const float *ag = a + (int64_t)g * K, *bg = b ? b + g : NULL;
                        const int64_t atg = at + g * c->ldy;
                        const float *ig = init ? init + g * c->ldy : NULL;
                        if (width == 1) { /* a lone column never straddles images */
                            pg_col1(mr, packed, kc, ag, K, bp, c->y + atg, c->ldy, ig, bg, act,
                                    d->act_alpha);
                        } else if (width == nr && j % c->s + nr <= c->s) {
                            pg_tile_rows(mr, nv, packed, kc, ag, K, bp, c->y + atg, c->ldy, ig,
                                         bg, act, d->act_alpha);
                        } else {
                            if (add) pg_tile_copy(c, i0 + g, mr, j, width, tile, 0, k0 == 0);
                            pg_tile_rows(mr, nv, packed, kc, ag, K, bp, tile, PG_NR,
                                         add ? tile : NULL, bg, act, d->act_alpha);
                            pg_tile_copy(c, i0 + g, mr, j, width, tile, 1, 0);
                        }
                    }
                }
            }
        }
    }
}

#endif
