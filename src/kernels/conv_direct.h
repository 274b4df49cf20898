/* Direct convolution for "same" windows with AVX-512, included by conv.c in
 * its AVX-512 copy only (the portable and AVX2 copies keep im2col + sgemm).
 *
 * Why: a ResNet's 3x3 layers have few channels (16-64 on CIFAR) so the GEMM
 * after im2col has only 16-64 rows; sgemm ran those at about half its peak,
 * and im2col itself wrote and read nine copies of the input on top. Here
 * the input is read in place.
 *
 * Shapes: one group, stride 1, dilation 1, and an output the size of the
 * input (P == H, Q == W: odd kh, kw with pad (k-1)/2), which makes output
 * pixel s read input pixel s + (i - pad_h) * W + (j - pad_w) for tap (i, j)
 * in the flattened plane. So 16 neighbouring outputs are one unaligned load
 * of 16 inputs per tap and channel, whatever the width; the lanes whose tap
 * falls outside the image (left/right columns, top/bottom rows) are masked
 * off, and a masked-off lane is never read, so loads at the plane's edges
 * cannot fault. The backward data pass of the same layer is again such a
 * convolution (transposed_desc in conv.c), so training's two heavy passes
 * both come here.
 *
 * Register tile: OCB output channels x NV vectors of 16 outputs (8 x 3: 24
 * accumulators, 3 inputs, 1 broadcast weight of the 32 zmm registers).
 * Each (channel, tap) step loads NV input vectors and OCB weights for
 * OCB * NV multiply-adds. The sums run channel by channel, tap by tap in a
 * fixed order, so results repeat bit for bit. */
#include <immintrin.h>

#define DIRECT_OCB 8
#define DIRECT_NV 3
#define DIRECT_MAX_TAPS 49 /* up to 7x7 */

/* Input channels go in chunks of up to 576 inner terms (64 channels x
 * 3x3): a tile's filters for one chunk (8 x 576 floats, 18 KiB) then stay
 * in L1 while it runs. Without chunks, 128-512 channels streamed the
 * filters from L2 and ran slower than sgemm on im2col. */
#define DIRECT_CHUNK_R 576

/* Planes of at least 64 pixels: at 7x7 (49 pixels in 4 vectors, a quarter
 * of the lanes idle) sgemm on im2col was faster (measured on one thread,
 * 512 channels: 68 against 81 GFLOP/s; at 8x8 with 64 channels 88 against
 * 48). */
#define DIRECT_MIN_S 64

static int direct_applies(const osp_conv_desc *d, const geom *m) {
    return d->groups == 1 && d->stride_h == 1 && d->stride_w == 1 && d->dil_h == 1 &&
           d->dil_w == 1 && d->p == d->h && d->q == d->w && (d->kh > 1 || d->kw > 1) &&
           d->kh * d->kw <= DIRECT_MAX_TAPS && m->s >= DIRECT_MIN_S;
}

/* One pass of the tiles over input channels [c0, c1): add to what y holds
 * (a later chunk, or the backward data pass), and finish (bias and
 * activation, after the last chunk of a forward). */
typedef struct direct_pass {
    int c0, c1, add, finish;
} direct_pass;

/* For the nv vectors starting at output pixel s0 (pixels < s_end only):
 * mask[v * taps + t] = the lanes whose tap t lies inside the image. */
static void direct_masks(const osp_conv_desc *d, int s0, int nv, int s_end, __mmask16 *mask) {
    const int taps = d->kh * d->kw;
    /* Row and column of the current lane, stepped rather than divided:
     * a stage of 32x32 planes makes masks for every 3 vectors. */
    int r = s0 / d->w, c = s0 % d->w;
    for (int v = 0; v < nv; v++) {
        unsigned rows[DIRECT_MAX_TAPS] = {0}, cols[DIRECT_MAX_TAPS] = {0};
        for (int l = 0; l < 16; l++, c == d->w - 1 ? (c = 0, r++) : c++) {
            if (s0 + v * 16 + l >= s_end) break;
            for (int i = 0; i < d->kh; i++) {
                int rr = r + i - d->pad_h;
                if (rr >= 0 && rr < d->h) rows[i] |= 1u << l;
            }
            for (int j = 0; j < d->kw; j++) {
                int cc = c + j - d->pad_w;
                if (cc >= 0 && cc < d->w) cols[j] |= 1u << l;
            }
        }
        for (int i = 0; i < d->kh; i++)
            for (int j = 0; j < d->kw; j++)
                mask[v * taps + i * d->kw + j] = (__mmask16)(rows[i] & cols[j]);
    }
}

/* One tile: output channels k0..k0+OCB, the NV vectors at pixel s0, of one
 * image. Inlined with constant OCB and NV. The accumulators are named
 * variables, not an array: GCC kept an array of them in registers but also
 * stored all 24 to the stack on every step. */
#define DIRECT_ACCS(o) __m512 a##o##0 = _mm512_setzero_ps(), a##o##1 = a##o##0, a##o##2 = a##o##0
#define DIRECT_FMA(o)                                                                  \
    if (OCB > o) {                                                                     \
        const __m512 wv = _mm512_set1_ps(wc[o * R + t]);                               \
        a##o##0 = _mm512_fmadd_ps(wv, in0, a##o##0);                                   \
        if (NV > 1) a##o##1 = _mm512_fmadd_ps(wv, in1, a##o##1);                       \
        if (NV > 2) a##o##2 = _mm512_fmadd_ps(wv, in2, a##o##2);                       \
    }
#define DIRECT_STORE(o)                                                                \
    if (OCB > o) {                                                                     \
        direct_store(d, y, bias, k0 + o, s0, s_end, a##o##0, ps);                      \
        if (NV > 1) direct_store(d, y, bias, k0 + o, s0 + 16, s_end, a##o##1, ps);     \
        if (NV > 2) direct_store(d, y, bias, k0 + o, s0 + 32, s_end, a##o##2, ps);     \
    }

/* Output channel k's 16 pixels at s (those below s_end), added to y's or
 * stored, with bias and ReLU when the pass finishes. */
static inline __attribute__((always_inline)) void direct_store(const osp_conv_desc *d, float *y,
                                                               const float *bias, int k, int s,
                                                               int s_end, __m512 r,
                                                               const direct_pass *ps) {
    float *yk = y + (int64_t)k * d->p * d->q + s;
    const int left = s_end - s;
    const __mmask16 store = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    if (ps->add) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(store, yk));
    if (ps->finish) {
        if (bias) r = _mm512_add_ps(r, _mm512_set1_ps(bias[k]));
        if (d->act == OSP_ACT_RELU) r = _mm512_max_ps(r, _mm512_setzero_ps());
    }
    _mm512_mask_storeu_ps(yk, store, r);
}

static inline __attribute__((always_inline)) void
direct_tile(const osp_conv_desc *d, const float *x, const float *w, const float *bias, float *y,
            int k0, int s0, int s_end, const __mmask16 *mask, const int *off,
            const direct_pass *ps, const int OCB, const int NV) {
    const int taps = d->kh * d->kw, S = d->p * d->q;
    const int64_t R = (int64_t)d->c * taps;
    DIRECT_ACCS(0); DIRECT_ACCS(1); DIRECT_ACCS(2); DIRECT_ACCS(3);
    DIRECT_ACCS(4); DIRECT_ACCS(5); DIRECT_ACCS(6); DIRECT_ACCS(7);
    const __mmask16 *m0 = mask, *m1 = mask + taps, *m2 = mask + 2 * taps;
    for (int c = ps->c0; c < ps->c1; c++) {
        const float *xc = x + (int64_t)c * S + s0;
        const float *wc = w + (int64_t)k0 * R + (int64_t)c * taps;
        for (int t = 0; t < taps; t++) {
            const float *xt = xc + off[t];
            const __m512 in0 = _mm512_maskz_loadu_ps(m0[t], xt);
            const __m512 in1 = NV > 1 ? _mm512_maskz_loadu_ps(m1[t], xt + 16) : in0;
            const __m512 in2 = NV > 2 ? _mm512_maskz_loadu_ps(m2[t], xt + 32) : in0;
            DIRECT_FMA(0) DIRECT_FMA(1) DIRECT_FMA(2) DIRECT_FMA(3)
            DIRECT_FMA(4) DIRECT_FMA(5) DIRECT_FMA(6) DIRECT_FMA(7)
        }
    }
    DIRECT_STORE(0) DIRECT_STORE(1) DIRECT_STORE(2) DIRECT_STORE(3)
    DIRECT_STORE(4) DIRECT_STORE(5) DIRECT_STORE(6) DIRECT_STORE(7)
    /* Other activations as the GEMM path applies them, while in cache. */
    if (ps->finish && d->act != OSP_ACT_NONE && d->act != OSP_ACT_RELU) {
        const int len = s_end - s0 < NV * 16 ? s_end - s0 : NV * 16;
        for (int o = 0; o < OCB; o++) epilogue(y + (int64_t)(k0 + o) * S + s0, len, 0.0f, d);
    }
}

/* The tiles of the NV vectors at s0 for every output channel. */
static inline __attribute__((always_inline)) void
direct_column(const osp_conv_desc *d, const float *x, const float *w, const float *bias, float *y,
              int s0, int s_end, const __mmask16 *mask, const int *off, const direct_pass *ps,
              const int NV) {
    int k0 = 0;
    for (; k0 + DIRECT_OCB <= d->k; k0 += DIRECT_OCB)
        direct_tile(d, x, w, bias, y, k0, s0, s_end, mask, off, ps, DIRECT_OCB, NV);
    for (; k0 + 4 <= d->k; k0 += 4)
        direct_tile(d, x, w, bias, y, k0, s0, s_end, mask, off, ps, 4, NV);
    for (; k0 < d->k; k0++)
        direct_tile(d, x, w, bias, y, k0, s0, s_end, mask, off, ps, 1, NV);
}

/* Masks of a whole plane (nvec x taps) fit this many: up to 1024 vectors
 * (128 x 128) of 3x3, 18 KiB of stack. */
#define DIRECT_PLANE_MASKS (1024 * 9)

/* The masks of a whole plane into mask (DIRECT_PLANE_MASKS long), or 0 if
 * they do not fit. Made once per call, they serve every image: made per
 * column and image they took a tenth of ResNet-20's stage-1 forward. */
static int direct_plane_masks(const osp_conv_desc *d, const geom *m, __mmask16 *mask) {
    const int nvec = (m->s + 15) / 16;
    if ((int64_t)nvec * d->kh * d->kw > DIRECT_PLANE_MASKS) return 0;
    direct_masks(d, 0, nvec, m->s, mask);
    return 1;
}

/* Output pixels [s_begin, s_end) of one image (x, y at that image), all
 * channels; added to y without bias or activation when accumulate.
 * plane: the plane's masks when s_begin is 0 (direct_plane_masks), or NULL
 * to make them column by column. */
static void direct_image(const osp_conv_desc *d, const float *x, const float *w,
                         const float *bias, float *y, int s_begin, int s_end, int accumulate,
                         const __mmask16 *plane) {
    int off[DIRECT_MAX_TAPS];
    for (int i = 0; i < d->kh; i++)
        for (int j = 0; j < d->kw; j++) off[i * d->kw + j] = (i - d->pad_h) * d->w + (j - d->pad_w);
    __mmask16 mask[DIRECT_NV * DIRECT_MAX_TAPS];
    const int taps = d->kh * d->kw;
    const int chunk = taps >= DIRECT_CHUNK_R ? 1 : DIRECT_CHUNK_R / taps;
    /* Columns of up to NV vectors, sized evenly so that no column is left
     * with a lone vector's poor ratio of loads to multiply-adds. */
    const int nvec = (s_end - s_begin + 15) / 16;
    const int cols = (nvec + DIRECT_NV - 1) / DIRECT_NV;
    int v0 = 0;
    for (int col = 0; col < cols; col++) {
        int nv = (nvec - v0) / (cols - col) + ((nvec - v0) % (cols - col) ? 1 : 0);
        int s0 = s_begin + v0 * 16;
        const __mmask16 *cm = mask;
        if (plane) cm = plane + (int64_t)v0 * taps;
        else direct_masks(d, s0, nv, s_end, mask);
        for (int c0 = 0; c0 < d->c; c0 += chunk) {
            const int c1 = d->c - c0 < chunk ? d->c : c0 + chunk;
            const direct_pass ps = {c0, c1, accumulate || c0 > 0, !accumulate && c1 == d->c};
            if (nv == 3) direct_column(d, x, w, bias, y, s0, s_end, cm, off, &ps, 3);
            else if (nv == 2) direct_column(d, x, w, bias, y, s0, s_end, cm, off, &ps, 2);
            else direct_column(d, x, w, bias, y, s0, s_end, cm, off, &ps, 1);
        }
        v0 += nv;
    }
}

/* ---- filter gradient of a 3x3 "same" convolution --------------------------
 *
 * dw[k][c][t] = sum over images and pixels s of dy[k][s] * x[c][s + off[t]]
 * (lanes outside the image masked as above). For three output channels
 * and one input channel the 3 x 9 sums live in registers (27 of the 32
 * zmm) while the pixels of a few images stream past: per 16 pixels, 3 loads
 * of dy and 9 of x feed 27 multiply-adds (two channels, 11 loads for 18,
 * ran 20-35% slower). The images go in chunks small enough for their x and
 * dy to stay in L2 while every (k, c) tile reads them. Replaces im2col (nine
 * copies of x) and a GEMM whose 16-64 wide side ran it at half speed. */
#define DIRECT_FILTER_CHUNK_BYTES (512 << 10)
/* Planes up to 128 x 128: the masks of one plane sit on the stack. */
#define DIRECT_FILTER_MAX_VECTORS 1024

static int direct_filter_applies(const osp_conv_desc *d, const geom *m) {
    return direct_applies(d, m) && d->kh == 3 && d->kw == 3 && m->r <= DIRECT_CHUNK_R &&
           (m->s + 15) / 16 <= DIRECT_FILTER_MAX_VECTORS;
}

#define DIRECT_DW_ACCS(t) __m512 p0##t = _mm512_setzero_ps(), p1##t = p0##t, p2##t = p0##t
#define DIRECT_DW_FMA(t)                                                      \
    {                                                                         \
        const __m512 xv = _mm512_maskz_loadu_ps(mv[t], xs + off[t]);          \
        p0##t = _mm512_fmadd_ps(g0, xv, p0##t);                               \
        if (KB > 1) p1##t = _mm512_fmadd_ps(g1, xv, p1##t);                   \
        if (KB > 2) p2##t = _mm512_fmadd_ps(g2, xv, p2##t);                   \
    }
#define DIRECT_DW_SUM(t)                                                      \
    {                                                                         \
        part[(int64_t)(c * 9 + t) * d->k + k0] += _mm512_reduce_add_ps(p0##t); \
        if (KB > 1) part[(int64_t)(c * 9 + t) * d->k + k0 + 1] += _mm512_reduce_add_ps(p1##t); \
        if (KB > 2) part[(int64_t)(c * 9 + t) * d->k + k0 + 2] += _mm512_reduce_add_ps(p2##t); \
    }

/* part (R x K, transposed as bwd_filter_images keeps it) += the sums of
 * output channels k0..k0+KB against input channel c over images [n0, n1). */
static inline __attribute__((always_inline)) void
direct_filter_tile(const osp_conv_desc *d, const geom *m, const float *x, const float *dy,
                   float *part, int k0, int c, int n0, int n1, const __mmask16 *mask,
                   const int *off, const int KB) {
    const int nvec = (m->s + 15) / 16;
    const __mmask16 tail = m->s % 16 ? (__mmask16)((1u << (m->s % 16)) - 1) : (__mmask16)0xffff;
    DIRECT_DW_ACCS(0); DIRECT_DW_ACCS(1); DIRECT_DW_ACCS(2);
    DIRECT_DW_ACCS(3); DIRECT_DW_ACCS(4); DIRECT_DW_ACCS(5);
    DIRECT_DW_ACCS(6); DIRECT_DW_ACCS(7); DIRECT_DW_ACCS(8);
    for (int n = n0; n < n1; n++) {
        const float *xc = x + (int64_t)n * m->chw + (int64_t)c * m->hw;
        const float *g0p = dy + (int64_t)n * m->ks + (int64_t)k0 * m->s;
        const float *g1p = g0p + (KB > 1 ? m->s : 0), *g2p = g0p + (KB > 2 ? 2 * m->s : 0);
        for (int v = 0; v < nvec; v++) {
            const __mmask16 lanes = v == nvec - 1 ? tail : (__mmask16)0xffff;
            const __m512 g0 = _mm512_maskz_loadu_ps(lanes, g0p + v * 16);
            const __m512 g1 = KB > 1 ? _mm512_maskz_loadu_ps(lanes, g1p + v * 16) : g0;
            const __m512 g2 = KB > 2 ? _mm512_maskz_loadu_ps(lanes, g2p + v * 16) : g0;
            const __mmask16 *mv = mask + (int64_t)v * 9;
            const float *xs = xc + v * 16;
            DIRECT_DW_FMA(0) DIRECT_DW_FMA(1) DIRECT_DW_FMA(2)
            DIRECT_DW_FMA(3) DIRECT_DW_FMA(4) DIRECT_DW_FMA(5)
            DIRECT_DW_FMA(6) DIRECT_DW_FMA(7) DIRECT_DW_FMA(8)
        }
    }
    DIRECT_DW_SUM(0) DIRECT_DW_SUM(1) DIRECT_DW_SUM(2)
    DIRECT_DW_SUM(3) DIRECT_DW_SUM(4) DIRECT_DW_SUM(5)
    DIRECT_DW_SUM(6) DIRECT_DW_SUM(7) DIRECT_DW_SUM(8)
}

/* part += the filter gradient over images [n0, n1). mask holds one plane's
 * masks (nvec x 9), made by the caller. */
static void direct_filter_images(const osp_conv_desc *d, const geom *m, const float *x,
                                 const float *dy, float *part, int n0, int n1,
                                 const __mmask16 *mask) {
    int off[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) off[i * 3 + j] = (i - d->pad_h) * d->w + (j - d->pad_w);
    const int64_t image_bytes = (m->chw + m->ks) * (int64_t)sizeof(float);
    int chunk = (int)(DIRECT_FILTER_CHUNK_BYTES / image_bytes);
    if (chunk < 1) chunk = 1;
    for (int a = n0; a < n1; a += chunk) {
        const int b = n1 - a < chunk ? n1 : a + chunk;
        int k0 = 0;
        for (; k0 + 3 <= d->k; k0 += 3)
            for (int c = 0; c < d->c; c++)
                direct_filter_tile(d, m, x, dy, part, k0, c, a, b, mask, off, 3);
        for (; k0 + 2 <= d->k; k0 += 2)
            for (int c = 0; c < d->c; c++)
                direct_filter_tile(d, m, x, dy, part, k0, c, a, b, mask, off, 2);
        for (; k0 < d->k; k0++)
            for (int c = 0; c < d->c; c++)
                direct_filter_tile(d, m, x, dy, part, k0, c, a, b, mask, off, 1);
    }
}
