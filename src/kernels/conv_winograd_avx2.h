/* 3x3 "same" convolution forward by Winograd's F(2x2, 3x3) with AVX2 +
 * FMA, included by conv.c in its AVX2 and AVX-512 copies (after
 * conv_gemm_avx2.h, whose GEMM it uses).
 *
 * Why: resnet18's and resnet50's 3x3 layers (64 to 512 channels) already
 * ran near the cores' peak through the direct kernel, and nothing faster
 * was left for them but fewer multiplications. F(2x2, 3x3) makes
 * each 2x2 block of outputs ("tile") from a 4x4 block of input:
 *   U = G g G^T      per filter (K x C 3x3 filters -> 16 K x C matrices)
 *   V = B^T d B      per tile and input channel (16 C x T matrices)
 *   M_xi = U_xi V_xi for each of the 16 positions xi (16 GEMMs K x C x T)
 *   y = A^T M A      per tile and output channel (2x2 outputs)
 * 16 K C T multiply-adds instead of 36 K C T; the transforms are adds.
 *
 * Layout: V[xi][c][t], M[xi][k][t], tiles t = th * tw_count + tw in row
 * order. The transforms run over 8 tiles along a tile row at a time: input
 * tile tw reads padded columns 2tw .. 2tw + 3, i.e. input columns 2tw - 1
 * .. 2tw + 2, so each input row is first split into its odd and even
 * columns (odd[m] = x[2m - 1], even[m] = x[2m], zeros outside) and tile
 * column j is then a plain load at tw (j = 0: odd, 1: even) or tw + 1 (j =
 * 2: odd, 3: even).
 *
 * Rounding: the transforms add up to 9 terms, so results differ from the
 * direct sum by a few units in the last place of the largest terms (the
 * golden tests' 1e-4 relative bound has ample room). They repeat bit for
 * bit: every sum has a fixed order. */
#ifndef OSPREY_CONV_WINOGRAD_AVX2_H
#define OSPREY_CONV_WINOGRAD_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "act_avx2.h"

/* Floats of one split input row (odd or even half), with room for a whole
 * vector past the last tile. */
#define WG_ROW_FLOATS 1040

/* U[xi][k][c] = G g G^T of filter (k, c), for k in [k0, k1). */
static void wg_filters(const osp_conv_desc *d, const float *w, float *u, int k0, int k1) {
    const int64_t kc = (int64_t)d->k * d->c;
    for (int k = k0; k < k1; k++)
        for (int c = 0; c < d->c; c++) {
            const float *g = w + ((int64_t)k * d->c + c) * 9;
            float t[4][3]; /* G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 */
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (int a = 0; a < 4; a++) {
                float *at = u + (int64_t)a * 4 * kc + (int64_t)k * d->c + c;
                at[0] = t[a][0];
                at[kc] = 0.5f * (t[a][0] + t[a][1] + t[a][2]);
                at[2 * kc] = 0.5f * (t[a][0] - t[a][1] + t[a][2]);
                at[3 * kc] = t[a][2];
            }
        }
}

/* Input row r of plane x split: odd[m] = x[r][2m - 1], even[m] = x[r][2m]
 * for m in [0, n), zeros outside the plane. */
static void wg_split_row(const osp_conv_desc *d, const float *x, int r, int n, float *odd,
                         float *even) {
    if (r < 0 || r >= d->h) {
        memset(odd, 0, (size_t)n * sizeof(float));
        memset(even, 0, (size_t)n * sizeof(float));
        return;
    }
    const float *row = x + (int64_t)r * d->w;
    odd[0] = 0.0f; /* column -1: padding */
    even[0] = row[0];
    int m = 1;
    /* eight of each from the 16 columns 2m - 1 .. 2m + 14, where they all
     * lie in the row: column by column, this was most of wg_inputs' time */
    for (; m + 8 <= n && 2 * m + 15 <= d->w; m += 8) {
        const __m256 a = _mm256_loadu_ps(row + 2 * m - 1), b = _mm256_loadu_ps(row + 2 * m + 7);
        /* within each 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6, then the
         * middle 64-bit pairs swapped into order */
        const __m256d o = _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88));
        const __m256d e = _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD));
        _mm256_storeu_ps(odd + m, _mm256_castpd_ps(_mm256_permute4x64_pd(o, 0xD8)));
        _mm256_storeu_ps(even + m, _mm256_castpd_ps(_mm256_permute4x64_pd(e, 0xD8)));
    }
    for (; m < n; m++) {
        const int a = 2 * m - 1, b = 2 * m;
        odd[m] = a < d->w ? row[a] : 0.0f;
        even[m] = b < d->w ? row[b] : 0.0f;
    }
}

/* V[xi][c][t] for channels [c0, c1) of one image x and the tiles of tile
 * rows [th0, th1) (t counted from th0's first); v holds 16 matrices of ldv
 * floats a row. */
static void wg_inputs(const osp_conv_desc *d, const float *x, int c0, int c1, int th0, int th1,
                      float *v, int64_t ldv) {
    const int tw_n = (d->q + 1) / 2;
    const int64_t hw = (int64_t)d->h * d->w, mat = (int64_t)d->c * ldv;
    float odd[4][WG_ROW_FLOATS] __attribute__((aligned(32)));
    float even[4][WG_ROW_FLOATS] __attribute__((aligned(32)));
    for (int c = c0; c < c1; c++) {
        const float *plane = x + c * hw;
        for (int th = th0; th < th1; th++) {
            for (int i = 0; i < 4; i++) {
                wg_split_row(d, plane, 2 * th - 1 + i, tw_n + 1, odd[i], even[i]);
                /* lanes past the last tile read zeros */
                memset(odd[i] + tw_n + 1, 0, 8 * sizeof(float));
                memset(even[i] + tw_n + 1, 0, 8 * sizeof(float));
            }
            float *out = v + (int64_t)c * ldv + (int64_t)(th - th0) * tw_n;
            for (int tw = 0; tw < tw_n; tw += 8) {
                __m256 t[4][4];
                for (int j = 0; j < 4; j++) {
                    const float *col[4];
                    for (int i = 0; i < 4; i++) col[i] = (j & 1 ? even[i] : odd[i]) + tw + (j >> 1);
                    const __m256 d0 = _mm256_loadu_ps(col[0]), d1 = _mm256_loadu_ps(col[1]),
                                 d2 = _mm256_loadu_ps(col[2]), d3 = _mm256_loadu_ps(col[3]);
                    /* B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 */
                    t[0][j] = _mm256_sub_ps(d0, d2);
                    t[1][j] = _mm256_add_ps(d1, d2);
                    t[2][j] = _mm256_sub_ps(d2, d1);
                    t[3][j] = _mm256_sub_ps(d1, d3);
                }
                const int n = tw_n - tw < 8 ? tw_n - tw : 8;
                for (int a = 0; a < 4; a++) {
                    /* (B^T d) B: the same combinations of columns */
                    __m256 r[4] = {_mm256_sub_ps(t[a][0], t[a][2]), _mm256_add_ps(t[a][1], t[a][2]),
                                   _mm256_sub_ps(t[a][2], t[a][1]),
                                   _mm256_sub_ps(t[a][1], t[a][3])};
                    for (int b = 0; b < 4; b++) {
                        float *at = out + (a * 4 + b) * mat + tw;
                        if (n == 8) {
                            _mm256_storeu_ps(at, r[b]);
                        } else {
                            float lanes[8];
                            _mm256_storeu_ps(lanes, r[b]);
                            memcpy(at, lanes, (size_t)n * sizeof(float));
                        }
                    }
                }
            }
        }
    }
}

/* y (one image) for channels [k0, k1) and tile rows [th0, th1) from
 * M[xi][k][t] (16 matrices of ldm floats a row, t counted from th0's first
 * tile), plus bias and the residual res (laid out as y; NULL: none), then
 * the activation where avx2_act_in_registers allows (the caller applies
 * any other). */
static void wg_outputs(const osp_conv_desc *d, const float *mm, int64_t ldm, const float *bias,
                       int k0, int k1, int th0, int th1, const float *res, float *y) {
    const int tw_n = (d->q + 1) / 2;
    const int64_t s = (int64_t)d->p * d->q, mat = (int64_t)d->k * ldm;
    const int act = avx2_act_in_registers(d->act) ? (int)d->act : OSP_ACT_NONE;
    const __m256 slope = _mm256_set1_ps(d->act_alpha);
    for (int k = k0; k < k1; k++) {
        const __m256 bv = _mm256_set1_ps(bias ? bias[k] : 0.0f);
        for (int th = th0; th < th1; th++) {
            const float *in = mm + (int64_t)k * ldm + (int64_t)(th - th0) * tw_n;
            for (int tw = 0; tw < tw_n; tw += 8) {
                __m256 sr[2][4]; /* A^T M: rows m0 + m1 + m2, m1 - m2 - m3 */
                for (int b = 0; b < 4; b++) {
                    const __m256 m0 = _mm256_loadu_ps(in + (0 * 4 + b) * mat + tw),
                                 m1 = _mm256_loadu_ps(in + (1 * 4 + b) * mat + tw),
                                 m2 = _mm256_loadu_ps(in + (2 * 4 + b) * mat + tw),
                                 m3 = _mm256_loadu_ps(in + (3 * 4 + b) * mat + tw);
                    sr[0][b] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    sr[1][b] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                const int n = tw_n - tw < 8 ? tw_n - tw : 8;
                for (int a = 0; a < 2; a++) {
                    const int row = 2 * th + a;
                    if (row >= d->p) break;
                    /* (A^T M) A: outputs 2tw (even) and 2tw + 1 (odd) */
                    const __m256 ev = _mm256_add_ps(
                        _mm256_add_ps(_mm256_add_ps(sr[a][0], sr[a][1]), sr[a][2]), bv);
                    const __m256 od = _mm256_add_ps(
                        _mm256_sub_ps(_mm256_sub_ps(sr[a][1], sr[a][2]), sr[a][3]), bv);
                    /* interleave: e0 o0 e1 o1 ... e7 o7 */
                    const __m256 lo = _mm256_unpacklo_ps(ev, od), hi = _mm256_unpackhi_ps(ev, od);
                    __m256 first = _mm256_permute2f128_ps(lo, hi, 0x20),
                           second = _mm256_permute2f128_ps(lo, hi, 0x31);
                    const int64_t off = (int64_t)k * s + (int64_t)row * d->q + 2 * tw;
                    float *at = y + off;
                    const int cols = d->q - 2 * tw < 2 * n ? d->q - 2 * tw : 2 * n;
                    if (res) {
                        float lanes[16] = {0};
                        const float *r = res + off;
                        if (cols < 16) r = memcpy(lanes, r, (size_t)cols * sizeof(float));
                        first = _mm256_add_ps(first, _mm256_loadu_ps(r));
                        second = _mm256_add_ps(second, _mm256_loadu_ps(r + 8));
                    }
                    first = avx2_act(first, act, slope);
                    second = avx2_act(second, act, slope);
                    if (cols == 16) {
                        _mm256_storeu_ps(at, first);
                        _mm256_storeu_ps(at + 8, second);
                    } else {
                        float lanes[16];
                        _mm256_storeu_ps(lanes, first);
                        _mm256_storeu_ps(lanes + 8, second);
                        memcpy(at, lanes, (size_t)cols * sizeof(float));
                    }
                }
            }
        }
    }
}

#endif
