/* The fully connected layer for inference with its weights packed once
 * (fc_prepare), included by fc_packed_avx2.c and fc_packed_avx512.c: y
 * (n x out) = fn(x (n x in) w^T + bias), where x holds a transformer's
 * batch x tokens rows.
 *
 * Through sgemm, each call packed w again (9 MB for a 768 x 3072 layer,
 * read from memory and written back to cache on every token-wise layer of
 * every image). Here w^T is packed at plan time into the layout the
 * convolution's GEMM tiles read (conv_gemm_avx2.h: B as panels of 16
 * columns), and the tiles are those very functions: y plays the
 * convolution's output with x's rows as its "filter" rows, read in place
 * by broadcasts, and w^T as its column matrix. The bias (per column here,
 * per row there) and the GELU are applied to each finished tile while it
 * is in L1 (fc_epilogue.h).
 *
 * Layout of the prepared weights, for in x out with out a multiple of 16:
 * blocks of PG_KC steps of the sum (the last one shorter), each holding
 * the out / 16 panels of that block one after the other, each panel kc x
 * 16 floats (step k's 16 columns side by side); block k0 starts at k0 *
 * out. So a pair of adjacent panels is one run of 2 kc 16 floats, as
 * pg_tile_wide reads it.
 *
 * Threads split either the columns (whole pairs of panels; each thread
 * then streams its own share of the weights) or the rows (tiles of
 * PG_WIDE_ROWS), whichever leaves the threads the more even shares: the
 * columns of a transformer's linear layers (768 and more), the rows of
 * ConvNeXt's narrow first stage (96 outputs: 3 pairs, over 3136 rows). */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"
#include "fc_epilogue.h"

/* conv_gemm_avx2.h also holds the convolution's packing and driver,
 * unused here */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "conv_gemm_avx2.h"
#pragma GCC diagnostic pop

/* Rows below which fc_fused.c's paths serve better (sgemv, and its split
 * of the weights for a few images): as its SPLIT_MIN_ROWS. */
#define FCP_MIN_ROWS 16
/* A block of y: 16 panels (256 columns) by 192 rows, over which the sums
 * run a block of PG_KC steps at a time. Its packed weights (256 KiB a
 * block of steps), its rows of x (192 KiB) and the block of y itself (192
 * KiB) stay in L2; each tile's rows of x (12 KiB) in L1. Without the rows
 * blocked, ConvNeXt's 3136 tokens streamed x and y from memory at each
 * block of steps (docs/kernels.md). */
#define FCP_BLOCK_PANELS 16
#define FCP_BLOCK_ROWS 192
/* Where OpenBLAS's sgemm does better: thousands of rows of a wide layer,
 * over which its packing of x pays (ViT's 768 x 3072 layers at batch 16:
 * docs/kernels.md). */
#define FCP_SGEMM_ROWS 2048
#define FCP_SGEMM_WIDTH 512

size_t KFN(fc_prepared_floats)(int in, int out) {
    if (in <= 0 || out <= 0 || out % PG_NR) return 0;
    return (size_t)in * (size_t)out;
}

void KFN(fc_prepare)(int in, int out, const float *w, float *prepared) {
    const int panels = out / PG_NR;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < panels; p++)
        for (int k0 = 0; k0 < in; k0 += PG_KC) {
            const int kc = in - k0 < PG_KC ? in - k0 : PG_KC;
            float *dst = prepared + (int64_t)k0 * out + (int64_t)p * kc * PG_NR;
            for (int c = 0; c < PG_NR; c++) {
                const float *src = w + (int64_t)(p * PG_NR + c) * in + k0;
                for (int k = 0; k < kc; k++) dst[k * PG_NR + c] = src[k];
            }
        }
}

/* Rows [0, rows) of y's columns [j, j + 16 (pair: 32)) over steps [0,
 * kc): a (x's first row at this block's first step, row stride lda), bp
 * (the panel's packed block); init y itself after the first block. Rows
 * in the widest tiles the copy has (pg_wide_takes), the rest in tiles of
 * up to 6 x 16. x is read in place: packing each tile's rows as the
 * convolution packs its filters (one stream) cost more than it saved
 * (docs/kernels.md). */
static void fcp_rows(int rows, int pair, int kc, const float *a, int64_t lda, const float *bp,
                     float *y, int64_t ldy, int add) {
    static const int widths[] = {2 * PG_MR, 8, PG_MR, 4};
    while (rows > 0) {
        int take = 0;
        for (int t = 0; t < 4 && !take; t++)
            if (widths[t] <= rows && pg_wide_takes(widths[t], pair)) take = widths[t];
        if (take) {
            pg_tile_wide(take, pair, 0, kc, a, lda, bp, y, ldy, add ? y : NULL, NULL, OSP_ACT_NONE,
                         0.0f);
        } else {
            take = rows < PG_MR ? rows : PG_MR;
            for (int h = 0; h <= pair; h++)
                pg_tile_rows(take, 2, 0, kc, a, lda, bp + (int64_t)h * kc * PG_NR, y + h * PG_NR,
                             ldy, add ? y + h * PG_NR : NULL, NULL, OSP_ACT_NONE, 0.0f);
        }
        rows -= take;
        a += take * lda;
        y += take * ldy;
    }
}

/* y's rows [i0, i1) (about FCP_BLOCK_ROWS) and panels [j0, j1) (at most
 * FCP_BLOCK_PANELS): the block's sums over every step of x, then its
 * epilogue. */
static void fcp_block(int in, int out, const float *x, const float *prepared, const float *bias,
                      int fn, float *y, int i0, int i1, int j0, int j1) {
    for (int k0 = 0; k0 < in; k0 += PG_KC) {
        const int kc = in - k0 < PG_KC ? in - k0 : PG_KC, last = k0 + kc == in;
        const float *block = prepared + (int64_t)k0 * out;
        for (int i = i0; i < i1; i += PG_WIDE_ROWS) {
            const int rows = i1 - i < PG_WIDE_ROWS ? i1 - i : PG_WIDE_ROWS;
            const float *a = x + (int64_t)i * in + k0;
            for (int p = j0; p < j1; p += 2) {
                const int pair = p + 1 < j1;
                fcp_rows(rows, pair, kc, a, in, block + (int64_t)p * kc * PG_NR,
                         y + (int64_t)i * out + p * PG_NR, out, k0 > 0);
                if (last && (bias || fn >= 0))
                    osp__fc_epilogue(rows, out, p * PG_NR, (p + 1 + pair) * PG_NR, bias, fn,
                                     y + (int64_t)i * out);
            }
        }
    }
}

/* y's rows [r0, r1) and panels [p0, p1) on the calling thread, in even
 * blocks of at least FCP_BLOCK_ROWS rows (whole tiles): a short last block
 * would read the weights from memory once more (197 rows as 192 + 5: the
 * 3072 x 768 layer 126 against 134-138 GFLOP/s). */
static void fcp_part(int in, int out, const float *x, const float *prepared, const float *bias,
                     int fn, float *y, int r0, int r1, int p0, int p1) {
    const int blocks = (r1 - r0) / FCP_BLOCK_ROWS > 1 ? (r1 - r0) / FCP_BLOCK_ROWS : 1;
    const int tiles = ((r1 - r0 + blocks - 1) / blocks + PG_WIDE_ROWS - 1) / PG_WIDE_ROWS;
    const int step = tiles * PG_WIDE_ROWS;
    for (int j = p0; j < p1; j += FCP_BLOCK_PANELS)
        for (int i = r0; i < r1; i += step)
            fcp_block(in, out, x, prepared, bias, fn, y, i, r1 - i < step ? r1 : i + step, j,
                      p1 - j < FCP_BLOCK_PANELS ? p1 : j + FCP_BLOCK_PANELS);
}

void KFN(fc_forward_prepared)(int n, int in, int out, const float *x, const float *w,
                              const float *prepared, const float *bias, int fn, float *y) {
    if (fn != OSP_FN_GELU && fn != OSP_FN_GELU_TANH) fn = -1;
    if (n < FCP_MIN_ROWS ||
        (n >= FCP_SGEMM_ROWS && in >= FCP_SGEMM_WIDTH && out >= FCP_SGEMM_WIDTH)) {
        KFN(fc_forward_fused)(n, in, out, x, w, bias, fn, y);
        return;
    }
    const int panels = out / PG_NR, pairs = (panels + 1) / 2;
    const int tiles = (n + PG_WIDE_ROWS - 1) / PG_WIDE_ROWS;
    int team = 1;
#ifdef _OPENMP
    team = omp_in_parallel() ? 1 : osp__kernel_team();
#endif
    if (team <= 1) {
        fcp_part(in, out, x, prepared, bias, fn, y, 0, n, 0, panels);
        return;
    }
    /* the largest share of either split, as a fraction of the whole:
     * columns unless rows are clearly more even */
    const double by_cols = (double)((pairs + team - 1) / team) / pairs;
    const double by_rows = (double)((tiles + team - 1) / team) / tiles;
    const int split_rows = by_rows * 1.05 < by_cols;
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (split_rows) {
            const int r0 = (int)((int64_t)tiles * t / nt) * PG_WIDE_ROWS;
            int r1 = (int)((int64_t)tiles * (t + 1) / nt) * PG_WIDE_ROWS;
            if (r1 > n) r1 = n;
            if (r1 > r0) fcp_part(in, out, x, prepared, bias, fn, y, r0, r1, 0, panels);
        } else {
            const int p0 = (int)((int64_t)pairs * t / nt) * 2;
            int p1 = (int)((int64_t)pairs * (t + 1) / nt) * 2;
            if (p1 > panels) p1 = panels;
            if (p1 > p0) fcp_part(in, out, x, prepared, bias, fn, y, 0, n, p0, p1);
        }
    }
#endif
}
