/* Direct convolution for "same" windows with AVX-512 or AVX2 + FMA,
 * included by conv.c in those two copies (the portable copy keeps im2col +
 * sgemm).
 *
 * Why: a ResNet's 3x3 layers have few channels (16-64 on CIFAR) so the GEMM
 * after im2col has only 16-64 rows; sgemm ran those at about half its peak,
 * and im2col itself wrote and read nine copies of the input on top. Here
 * the input is read in place.
 *
 * Shapes: one group, stride 1, dilation 1, and an output the size of the
 * input (P == H, Q == W: odd kh, kw with pad (k-1)/2), which makes output
 * pixel s read input pixel s + (i - pad_h) * W + (j - pad_w) for tap (i, j)
 * in the flattened plane. So a vector of neighbouring outputs is one
 * unaligned load of as many inputs per tap and channel, whatever the width;
 * the lanes whose tap falls outside the image (left/right columns,
 * top/bottom rows) are masked off, and a masked-off lane is never read, so
 * loads at the plane's edges cannot fault. The backward data pass of the
 * same layer is again such a convolution (transposed_desc in conv.c), so
 * training's two heavy passes both come here.
 *
 * Register tile: OCB output channels x NV vectors of outputs. AVX-512: 8 x 3
 * vectors of 16 (24 accumulators, 3 inputs, 1 broadcast weight of the 32
 * zmm registers); AVX2: 4 x 3 vectors of 8 (12 accumulators, 3 inputs, a
 * broadcast or a mask of the 16 ymm). Each (channel, tap) step loads NV
 * input vectors and OCB weights for OCB * NV multiply-adds. The sums run
 * channel by channel, tap by tap in a fixed order, so results repeat bit
 * for bit. */
#include <immintrin.h>
#include <stdint.h>

/* ---- the vector operations, for one instruction set ----------------------
 * A mask has one bit per lane. AVX2 has no mask registers: its masked loads
 * take a vector of all-ones or zero lanes, looked up from the bits. */
#if defined(__AVX512F__)
#define DIRECT_LANES 16
#define DIRECT_OCB 8
typedef __m512 dvec;
typedef __mmask16 dmask;
#define DV_ZERO() _mm512_setzero_ps()
#define DV_SET1(f) _mm512_set1_ps(f)
#define DV_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define DV_ADD(a, b) _mm512_add_ps(a, b)
#define DV_MAX(a, b) _mm512_max_ps(a, b)
#define DV_LOADU(p) _mm512_loadu_ps(p)
#define DV_STOREU(p, v) _mm512_storeu_ps(p, v)
#define DV_MASK_LOAD(m, p) _mm512_maskz_loadu_ps(m, p)
typedef __mmask16 dlanes;
#define DV_LANES(m) (m)
#define DV_LOAD_LANES(l, p) _mm512_maskz_loadu_ps(l, p)
#define DV_LOAD_INSIDE(l, p) _mm512_maskz_loadu_ps(l, p)
#define DIRECT_INSIDE_LOADS 0
#define DIRECT_AVX512 1
#define DV_MASK_STORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define DV_SUM(v) _mm512_reduce_add_ps(v)
#else
#define DIRECT_LANES 8
#define DIRECT_OCB 4
typedef __m256 dvec;
typedef uint8_t dmask;
#define DIRECT_LANE(m, l) ((((m) >> (l)) & 1) ? -1 : 0)
#define DIRECT_LUT1(m)                                                                      \
    {DIRECT_LANE(m, 0), DIRECT_LANE(m, 1), DIRECT_LANE(m, 2), DIRECT_LANE(m, 3),              \
     DIRECT_LANE(m, 4), DIRECT_LANE(m, 5), DIRECT_LANE(m, 6), DIRECT_LANE(m, 7)}
#define DIRECT_LUT2(m) DIRECT_LUT1(m), DIRECT_LUT1((m) + 1)
#define DIRECT_LUT4(m) DIRECT_LUT2(m), DIRECT_LUT2((m) + 2)
#define DIRECT_LUT8(m) DIRECT_LUT4(m), DIRECT_LUT4((m) + 4)
#define DIRECT_LUT16(m) DIRECT_LUT8(m), DIRECT_LUT8((m) + 8)
#define DIRECT_LUT32(m) DIRECT_LUT16(m), DIRECT_LUT16((m) + 16)
#define DIRECT_LUT64(m) DIRECT_LUT32(m), DIRECT_LUT32((m) + 32)
#define DIRECT_LUT128(m) DIRECT_LUT64(m), DIRECT_LUT64((m) + 64)
/* direct_lanes[m]: lane l is all ones where bit l of m is set (8 KiB). */
static const int32_t direct_lanes[256][8] __attribute__((aligned(32))) = {
    DIRECT_LUT128(0), DIRECT_LUT128(128)};
#define DV_LANE_MASK(m) _mm256_load_si256((const __m256i *)direct_lanes[m])
#define DV_ZERO() _mm256_setzero_ps()
#define DV_SET1(f) _mm256_set1_ps(f)
#define DV_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define DV_ADD(a, b) _mm256_add_ps(a, b)
#define DV_MAX(a, b) _mm256_max_ps(a, b)
#define DV_LOADU(p) _mm256_loadu_ps(p)
#define DV_STOREU(p, v) _mm256_storeu_ps(p, v)
#define DV_MASK_LOAD(m, p) _mm256_maskload_ps(p, DV_LANE_MASK(m))
/* Lanes as a vector, and two ways to load through them: vmaskmovps, which
 * cannot fault, and a plain load and-ed with the lanes for vectors that lie
 * inside the plane. The second is much faster where vmaskmovps is slow
 * (AMD's CPUs among them: a tile of multiply-adds fed by it ran at a third
 * of the speed). */
typedef __m256 dlanes;
#define DV_LANES(m) _mm256_castsi256_ps(DV_LANE_MASK(m))
#define DV_LOAD_LANES(l, p) _mm256_maskload_ps(p, _mm256_castps_si256(l))
#define DV_LOAD_INSIDE(l, p) _mm256_and_ps(_mm256_loadu_ps(p), l)
#define DIRECT_INSIDE_LOADS 1
#define DIRECT_AVX512 0
#define DV_MASK_STORE(p, m, v) _mm256_maskstore_ps(p, DV_LANE_MASK(m), v)
static inline float dv_sum(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}
#define DV_SUM(v) dv_sum(v)
#endif
#define DIRECT_ALL_LANES ((dmask)((1u << DIRECT_LANES) - 1))
/* The first n lanes (n < DIRECT_LANES), or all of them. */
#define DIRECT_FIRST(n) ((n) >= DIRECT_LANES ? DIRECT_ALL_LANES : (dmask)((1u << (n)) - 1))

#define DIRECT_NV 3
#define DIRECT_MAX_TAPS 49 /* up to 7x7 */

/* Input channels go in chunks of up to 576 inner terms (64 channels x
 * 3x3): a tile's filters for one chunk (AVX-512: 8 x 576 floats, 18 KiB) then stay
 * in L1 while it runs. Without chunks, 128-512 channels streamed the
 * filters from L2 and ran slower than sgemm on im2col. */
#define DIRECT_CHUNK_R 576

/* Planes of at least 64 pixels: at 7x7 (49 pixels in 4 vectors, a quarter
 * of the lanes idle) sgemm on im2col is faster, and from 8x8, whose
 * vectors are full, the direct kernel is. */
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
    const float *x0; /* input channel c0 at the column's first pixel */
    int64_t xstride; /* from one input channel to the next */
} direct_pass;

/* For the nv vectors starting at output pixel s0 (pixels < s_end only):
 * mask[v * taps + t] = the lanes whose tap t lies inside the image. */
static void direct_masks(const osp_conv_desc *d, int s0, int nv, int s_end, dmask *mask) {
    const int taps = d->kh * d->kw;
    /* Row and column of the current lane, stepped rather than divided:
     * a stage of 32x32 planes makes masks for every 3 vectors. */
    int r = s0 / d->w, c = s0 % d->w;
    for (int v = 0; v < nv; v++) {
        unsigned rows[DIRECT_MAX_TAPS] = {0}, cols[DIRECT_MAX_TAPS] = {0};
        for (int l = 0; l < DIRECT_LANES; l++, c == d->w - 1 ? (c = 0, r++) : c++) {
            if (s0 + v * DIRECT_LANES + l >= s_end) break;
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
                mask[v * taps + i * d->kw + j] = (dmask)(rows[i] & cols[j]);
    }
}

/* One tile: output channels k0..k0+OCB, the NV vectors at pixel s0, of one
 * image. Inlined with constant OCB and NV. The accumulators are named
 * variables, not an array: GCC kept an array of them in registers but also
 * stored all 24 to the stack on every step. */
#define DIRECT_ACCS(o) dvec a##o##0 = DV_ZERO(), a##o##1 = a##o##0, a##o##2 = a##o##0
#define DIRECT_FMA(o)                                                                  \
    if (OCB > o) {                                                                     \
        const dvec wv = DV_SET1(wc[o * R + t]);                                        \
        a##o##0 = DV_FMA(wv, in0, a##o##0);                                            \
        if (NV > 1) a##o##1 = DV_FMA(wv, in1, a##o##1);                                \
        if (NV > 2) a##o##2 = DV_FMA(wv, in2, a##o##2);                                \
    }
#define DIRECT_STORE(o)                                                                \
    if (OCB > o) {                                                                     \
        direct_store(d, y, bias, k0 + o, s0, s_end, a##o##0, ps);                      \
        if (NV > 1)                                                                    \
            direct_store(d, y, bias, k0 + o, s0 + DIRECT_LANES, s_end, a##o##1, ps);   \
        if (NV > 2)                                                                    \
            direct_store(d, y, bias, k0 + o, s0 + 2 * DIRECT_LANES, s_end, a##o##2, ps); \
    }

/* Output channel k's vector of pixels at s (those below s_end), added to
 * y's or stored, with bias and ReLU when the pass finishes. Whole vectors
 * go unmasked (AVX2's masked store is slow). */
static inline __attribute__((always_inline)) void direct_store(const osp_conv_desc *d, float *y,
                                                               const float *bias, int k, int s,
                                                               int s_end, dvec r,
                                                               const direct_pass *ps) {
    float *yk = y + (int64_t)k * d->p * d->q + s;
    const int left = s_end - s;
    if (left >= DIRECT_LANES) {
        if (ps->add) r = DV_ADD(r, DV_LOADU(yk));
    } else if (ps->add) {
        r = DV_ADD(r, DV_MASK_LOAD(DIRECT_FIRST(left), yk));
    }
    if (ps->finish) {
        if (bias) r = DV_ADD(r, DV_SET1(bias[k]));
        if (d->act == OSP_ACT_RELU) r = DV_MAX(r, DV_ZERO());
    }
    if (left >= DIRECT_LANES) DV_STOREU(yk, r);
    else DV_MASK_STORE(yk, DIRECT_FIRST(left), r);
}

/* lanes: the column's lanes per vector and tap. INSIDE: every load of the
 * column lies inside the plane (so only the lanes' zeros matter, not
 * faults), at vector v and tap t offset voff[v * taps + t] from s0;
 * otherwise tap t reads at off[t] from each vector. */
static inline __attribute__((always_inline)) void
direct_tile(const osp_conv_desc *d, const float *w, const float *bias, float *y, int k0, int s0,
            int s_end, const dlanes *lanes, const int *off, const int *voff,
            const direct_pass *ps, const int OCB, const int NV, const int INSIDE) {
    const int taps = d->kh * d->kw, S = d->p * d->q;
    const int64_t R = (int64_t)d->c * taps;
    DIRECT_ACCS(0); DIRECT_ACCS(1); DIRECT_ACCS(2); DIRECT_ACCS(3);
    DIRECT_ACCS(4); DIRECT_ACCS(5); DIRECT_ACCS(6); DIRECT_ACCS(7);
    const dlanes *l0 = lanes, *l1 = lanes + taps, *l2 = lanes + 2 * taps;
    const int *o0 = voff, *o1 = voff + taps, *o2 = voff + 2 * taps;
#define DIRECT_LOAD(v, at)                                   \
    (INSIDE ? DV_LOAD_INSIDE(l##v[t], xc + o##v[t])          \
            : DV_LOAD_LANES(l##v[t], xc + (at) + v * DIRECT_LANES))
    for (int c = ps->c0; c < ps->c1; c++) {
        const float *xc = ps->x0 + (c - ps->c0) * ps->xstride;
        const float *wc = w + (int64_t)k0 * R + (int64_t)c * taps;
        for (int t = 0; t < taps; t++) {
            const dvec in0 = DIRECT_LOAD(0, off[t]);
            const dvec in1 = NV > 1 ? DIRECT_LOAD(1, off[t]) : in0;
            const dvec in2 = NV > 2 ? DIRECT_LOAD(2, off[t]) : in0;
            DIRECT_FMA(0) DIRECT_FMA(1) DIRECT_FMA(2) DIRECT_FMA(3)
            DIRECT_FMA(4) DIRECT_FMA(5) DIRECT_FMA(6) DIRECT_FMA(7)
        }
    }
#undef DIRECT_LOAD
    DIRECT_STORE(0) DIRECT_STORE(1) DIRECT_STORE(2) DIRECT_STORE(3)
    DIRECT_STORE(4) DIRECT_STORE(5) DIRECT_STORE(6) DIRECT_STORE(7)
    /* Other activations as the GEMM path applies them, while in cache. */
    if (ps->finish && d->act != OSP_ACT_NONE && d->act != OSP_ACT_RELU) {
        const int len = s_end - s0 < NV * DIRECT_LANES ? s_end - s0 : NV * DIRECT_LANES;
        for (int o = 0; o < OCB; o++) epilogue(y + (int64_t)(k0 + o) * S + s0, len, 0.0f, d);
    }
}

/* The tiles of the NV vectors at s0 for every output channel. */
static inline __attribute__((always_inline)) void
direct_column(const osp_conv_desc *d, const float *w, const float *bias, float *y, int s0,
              int s_end, const dlanes *lanes, const int *off, const int *voff,
              const direct_pass *ps, const int NV, const int INSIDE) {
    int k0 = 0;
    for (; k0 + DIRECT_OCB <= d->k; k0 += DIRECT_OCB)
        direct_tile(d, w, bias, y, k0, s0, s_end, lanes, off, voff, ps, DIRECT_OCB, NV, INSIDE);
    for (; k0 + 4 <= d->k; k0 += 4)
        direct_tile(d, w, bias, y, k0, s0, s_end, lanes, off, voff, ps, 4, NV, INSIDE);
    for (; k0 < d->k; k0++)
        direct_tile(d, w, bias, y, k0, s0, s_end, lanes, off, voff, ps, 1, NV, INSIDE);
}

/* The floats of input one column's strip may hold (64 KiB of stack). */
#define DIRECT_STRIP_FLOATS 16384

/* A column's passes over the input channels in chunks. strip: where to copy
 * the span of input that the column reads, zero outside the plane, for a
 * column at the plane's top or bottom that cannot load inside the plane;
 * or NULL. */
static inline __attribute__((always_inline)) void
direct_chunks(const osp_conv_desc *d, const float *x, const float *w, const float *bias,
              float *y, int s0, int s_end, const dlanes *lanes, const int *off, const int *voff,
              float *strip, int accumulate, const int NV, const int INSIDE) {
    const int taps = d->kh * d->kw, plane_size = d->h * d->w;
    const int chunk = taps >= DIRECT_CHUNK_R ? 1 : DIRECT_CHUNK_R / taps;
    const int lo = s0 + off[0], span = NV * DIRECT_LANES + off[taps - 1] - off[0];
    for (int c0 = 0; c0 < d->c; c0 += chunk) {
        const int c1 = d->c - c0 < chunk ? d->c : c0 + chunk;
        direct_pass ps = {c0, c1, accumulate || c0 > 0, !accumulate && c1 == d->c,
                          x + (int64_t)c0 * plane_size + s0, plane_size};
        if (strip) {
            for (int c = c0; c < c1; c++) {
                const float *xc = x + (int64_t)c * plane_size;
                float *sc = strip + (int64_t)(c - c0) * span;
                for (int i = 0; i < span; i++)
                    sc[i] = lo + i >= 0 && lo + i < plane_size ? xc[lo + i] : 0.0f;
            }
            ps.x0 = strip - off[0];
            ps.xstride = span;
        }
        direct_column(d, w, bias, y, s0, s_end, lanes, off, voff, &ps, NV, INSIDE);
    }
}

/* Planes of up to 128 x 128 pixels have their masks made once per call:
 * DIRECT_PLANE_VECTORS x taps of them, 18 KiB of stack at 3x3. */
#define DIRECT_PLANE_VECTORS (16384 / DIRECT_LANES)
#define DIRECT_PLANE_MASKS (DIRECT_PLANE_VECTORS * 9)

/* The masks of a whole plane into mask (DIRECT_PLANE_MASKS long), or 0 if
 * they do not fit. Made once per call, they serve every image: made per
 * column and image they took a tenth of ResNet-20's stage-1 forward. */
static int direct_plane_masks(const osp_conv_desc *d, const geom *m, dmask *mask) {
    const int nvec = (m->s + DIRECT_LANES - 1) / DIRECT_LANES;
    if ((int64_t)nvec * d->kh * d->kw > DIRECT_PLANE_MASKS) return 0;
    direct_masks(d, 0, nvec, m->s, mask);
    return 1;
}

/* For the nv vectors at s0 with masks mask: where each (vector, tap) can
 * load a whole vector inside the plane, into voff (from s0), and whether
 * all of them can. A tap wholly outside the image (the row above the first,
 * say) loads some vector of the plane and its zero lanes drop it. A vector
 * with some lanes in the image that would read past the plane's ends (rows
 * not a whole number of vectors, or the plane's last vector) cannot. */
static int inside_offsets(const osp_conv_desc *d, int s0, int nv, const dmask *mask,
                          const int *off, int *voff) {
    const int taps = d->kh * d->kw, plane_size = d->h * d->w;
    for (int v = 0; v < nv; v++)
        for (int t = 0; t < taps; t++) {
            const int at = s0 + v * DIRECT_LANES + off[t];
            if (at >= 0 && at + DIRECT_LANES <= plane_size) {
                voff[v * taps + t] = at - s0;
            } else if (mask[v * taps + t] == 0) {
                int safe = s0 + v * DIRECT_LANES;
                if (safe + DIRECT_LANES > plane_size) safe = plane_size - DIRECT_LANES;
                voff[v * taps + t] = safe - s0;
            } else {
                return 0;
            }
        }
    return 1;
}

/* Output pixels [s_begin, s_end) of one image (x, y at that image), all
 * channels; added to y without bias or activation when accumulate.
 * plane: the plane's masks when s_begin is 0 (direct_plane_masks), or NULL
 * to make them column by column. */
static void direct_image(const osp_conv_desc *d, const float *x, const float *w,
                         const float *bias, float *y, int s_begin, int s_end, int accumulate,
                         const dmask *plane) {
    int off[DIRECT_MAX_TAPS];
    for (int i = 0; i < d->kh; i++)
        for (int j = 0; j < d->kw; j++) off[i * d->kw + j] = (i - d->pad_h) * d->w + (j - d->pad_w);
    dmask mask[DIRECT_NV * DIRECT_MAX_TAPS];
    dlanes lanes[DIRECT_NV * DIRECT_MAX_TAPS];
    int voff[DIRECT_NV * DIRECT_MAX_TAPS];
    const int taps = d->kh * d->kw;
    const int chunk = taps >= DIRECT_CHUNK_R ? 1 : DIRECT_CHUNK_R / taps;
    const int strip_channels = d->c < chunk ? d->c : chunk;
#if DIRECT_INSIDE_LOADS
    float strip_buf[DIRECT_STRIP_FLOATS];
#else
    float *strip_buf = NULL;
#endif
    /* Columns of up to NV vectors, sized evenly so that no column is left
     * with a lone vector's poor ratio of loads to multiply-adds. */
    const int nvec = (s_end - s_begin + DIRECT_LANES - 1) / DIRECT_LANES;
    const int cols = (nvec + DIRECT_NV - 1) / DIRECT_NV;
    int v0 = 0;
    for (int col = 0; col < cols; col++) {
        int nv = (nvec - v0) / (cols - col) + ((nvec - v0) % (cols - col) ? 1 : 0);
        int s0 = s_begin + v0 * DIRECT_LANES;
        const dmask *cm = mask;
        if (plane) cm = plane + (int64_t)v0 * taps;
        else direct_masks(d, s0, nv, s_end, mask);
        for (int i = 0; i < nv * taps; i++) lanes[i] = DV_LANES(cm[i]);
        int inside = DIRECT_INSIDE_LOADS && inside_offsets(d, s0, nv, cm, off, voff);
        float *strip = NULL;
        if (DIRECT_INSIDE_LOADS && !inside &&
            (int64_t)strip_channels * (nv * DIRECT_LANES + off[taps - 1] - off[0]) <=
                DIRECT_STRIP_FLOATS) {
            /* Edge columns read a zero-padded copy of their strip, in place. */
            strip = strip_buf;
            for (int v = 0; v < nv; v++)
                for (int t = 0; t < taps; t++) voff[v * taps + t] = v * DIRECT_LANES + off[t];
            inside = 1;
        }
#define DIRECT_CHUNKS(nv, in) \
    direct_chunks(d, x, w, bias, y, s0, s_end, lanes, off, voff, strip, accumulate, nv, in)
        if (inside) {
            if (nv == 3) DIRECT_CHUNKS(3, 1);
            else if (nv == 2) DIRECT_CHUNKS(2, 1);
            else DIRECT_CHUNKS(1, 1);
        } else {
            if (nv == 3) DIRECT_CHUNKS(3, 0);
            else if (nv == 2) DIRECT_CHUNKS(2, 0);
            else DIRECT_CHUNKS(1, 0);
        }
#undef DIRECT_CHUNKS
        v0 += nv;
    }
}

/* The images of a filter gradient go in chunks of this many bytes of x and
 * dy, which stay in L2 while every tile reads them. */
#define DIRECT_FILTER_CHUNK_BYTES (512 << 10)

#if DIRECT_AVX512
/* ---- AVX-512: filter gradient of a 3x3 "same" convolution -----------------
 *
 * dw[k][c][t] = sum over images and pixels s of dy[k][s] * x[c][s + off[t]]
 * (lanes outside the image masked as above). For three output channels and
 * one input channel the 3 x 9 sums live in registers (27 of the 32 zmm)
 * while the pixels of a chunk of images stream past: per vector of pixels,
 * 3 loads of dy and 9 of x feed 27 multiply-adds (two channels, 11 loads
 * for 18, ran 20-35% slower). Replaces im2col (nine copies of x) and a GEMM
 * whose 16-64 wide side ran it at half speed. On AVX2 the masked loads made
 * this slower than im2col + sgemm (several times slower where vmaskmovps
 * is slow): padded_filter_images below takes its place there. */
static int direct_filter_applies(const osp_conv_desc *d, const geom *m) {
    return direct_applies(d, m) && d->kh == 3 && d->kw == 3 && m->r <= DIRECT_CHUNK_R &&
           (m->s + DIRECT_LANES - 1) / DIRECT_LANES <= DIRECT_PLANE_VECTORS;
}

#define DIRECT_DW_ACCS(t) dvec p0##t = DV_ZERO(), p1##t = p0##t, p2##t = p0##t
#define DIRECT_DW_FMA(t)                                                      \
    {                                                                         \
        const dvec xv = DV_MASK_LOAD(mv[t], xs + off[t]);                     \
        p0##t = DV_FMA(g0, xv, p0##t);                                        \
        if (KB > 1) p1##t = DV_FMA(g1, xv, p1##t);                            \
        if (KB > 2) p2##t = DV_FMA(g2, xv, p2##t);                            \
    }
#define DIRECT_DW_SUM(t)                                                      \
    {                                                                         \
        part[(int64_t)(c * 9 + t) * d->k + k0] += DV_SUM(p0##t);              \
        if (KB > 1) part[(int64_t)(c * 9 + t) * d->k + k0 + 1] += DV_SUM(p1##t); \
        if (KB > 2) part[(int64_t)(c * 9 + t) * d->k + k0 + 2] += DV_SUM(p2##t); \
    }

/* part (R x K, transposed as bwd_filter_images keeps it) += the sums of
 * output channels k0..k0+KB against input channel c over images [n0, n1). */
static inline __attribute__((always_inline)) void
direct_filter_tile(const osp_conv_desc *d, const geom *m, const float *x, const float *dy,
                   float *part, int k0, int c, int n0, int n1, const dmask *mask,
                   const int *off, const int KB) {
    const int nvec = (m->s + DIRECT_LANES - 1) / DIRECT_LANES;
    const dmask tail = DIRECT_FIRST(m->s - (nvec - 1) * DIRECT_LANES);
    DIRECT_DW_ACCS(0); DIRECT_DW_ACCS(1); DIRECT_DW_ACCS(2);
    DIRECT_DW_ACCS(3); DIRECT_DW_ACCS(4); DIRECT_DW_ACCS(5);
    DIRECT_DW_ACCS(6); DIRECT_DW_ACCS(7); DIRECT_DW_ACCS(8);
    for (int n = n0; n < n1; n++) {
        const float *xc = x + (int64_t)n * m->chw + (int64_t)c * m->hw;
        const float *g0p = dy + (int64_t)n * m->ks + (int64_t)k0 * m->s;
        const float *g1p = g0p + (KB > 1 ? m->s : 0), *g2p = g0p + (KB > 2 ? 2 * m->s : 0);
        for (int v = 0; v < nvec; v++) {
            dvec g0, g1, g2;
            if (v < nvec - 1) {
                g0 = DV_LOADU(g0p + v * DIRECT_LANES);
                g1 = KB > 1 ? DV_LOADU(g1p + v * DIRECT_LANES) : g0;
                g2 = KB > 2 ? DV_LOADU(g2p + v * DIRECT_LANES) : g0;
            } else {
                g0 = DV_MASK_LOAD(tail, g0p + v * DIRECT_LANES);
                g1 = KB > 1 ? DV_MASK_LOAD(tail, g1p + v * DIRECT_LANES) : g0;
                g2 = KB > 2 ? DV_MASK_LOAD(tail, g2p + v * DIRECT_LANES) : g0;
            }
            const dmask *mv = mask + (int64_t)v * 9;
            const float *xs = xc + v * DIRECT_LANES;
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
                                 const dmask *mask) {
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

#else
/* ---- AVX2: the 3x3 filter gradient from zero-padded copies ----------------
 *
 * Without cheap masked loads, the masks go into the data instead: x is
 * copied with a border of zeros ((H+2) x (W+2) per channel) and dy with two
 * zero columns after each row (H x (W+2)). Then for every tap (i, j)
 *   dw[k][c][i*3+j] = sum over s of dyp[k][s] * xp[c][s + i*(W+2) + j]
 * with no mask at all: a padding column of dy is zero wherever a tap
 * would wrap into the next row. A tile is four output channels and one
 * row of taps: per vector of pixels, 4 loads of dy and 3 of x feed 12
 * multiply-adds (one channel and all nine taps, 10 loads for 9, ran no
 * faster than im2col + sgemm). The images go in chunks whose copies stay
 * in L2 while every tile reads them. */
typedef struct padded_geom {
    int wp;          /* padded width W + 2 */
    int nv;          /* vectors of dy's padded plane */
    int64_t xplane;  /* floats per channel of x's copy, with room for the last taps */
    int64_t dyplane; /* floats per channel of dy's copy */
    int64_t image;   /* floats of one image's copies */
} padded_geom;

#define PADDED_KB 4

static padded_geom padded_geometry(const osp_conv_desc *d) {
    padded_geom p;
    p.wp = d->w + 2;
    p.nv = (d->h * p.wp + DIRECT_LANES - 1) / DIRECT_LANES;
    p.dyplane = (int64_t)p.nv * DIRECT_LANES;
    p.xplane = p.dyplane + 2 * p.wp + 2;
    p.image = (int64_t)d->c * p.xplane + (int64_t)d->k * p.dyplane;
    return p;
}

/* 3x3 "same" with a multiple of four output channels, and one image's
 * copies fit the slot's column buffer (m->col floats). */
static int padded_filter_applies(const osp_conv_desc *d, const geom *m) {
    return direct_applies(d, m) && d->kh == 3 && d->kw == 3 && d->k % PADDED_KB == 0 &&
           padded_geometry(d).image <= m->col;
}

/* The copies of one image: only the padding is written with zeros (zeroing
 * whole buffers first cost a tenth of the filter gradient). */
static void padded_copy(const osp_conv_desc *d, const geom *m, const padded_geom *p,
                        const float *x, const float *dy, float *xp, float *dyp) {
    const int h = d->h, w = d->w, wp = p->wp;
    for (int c = 0; c < d->c; c++) {
        float *xc = xp + c * p->xplane;
        memset(xc, 0, (size_t)(wp + 1) * sizeof(float)); /* top row, row 1's left pad */
        for (int r = 0; r < h; r++) {
            float *row = xc + (int64_t)(r + 1) * wp + 1;
            memcpy(row, x + c * m->hw + (int64_t)r * w, (size_t)w * sizeof(float));
            row[w] = row[w + 1] = 0.0f; /* right pad, the next row's left pad */
        }
        const int64_t done = (int64_t)(h + 1) * wp + 1; /* bottom row and the tail */
        memset(xc + done, 0, (size_t)(p->xplane - done) * sizeof(float));
    }
    for (int k = 0; k < d->k; k++) {
        float *gk = dyp + k * p->dyplane;
        for (int r = 0; r < h; r++) {
            float *row = gk + (int64_t)r * wp;
            memcpy(row, dy + k * m->s + (int64_t)r * w, (size_t)w * sizeof(float));
            row[w] = row[w + 1] = 0.0f;
        }
        memset(gk + (int64_t)h * wp, 0, (size_t)(p->dyplane - (int64_t)h * wp) * sizeof(float));
    }
}

#define PADDED_ACCS(b) dvec q##b##0 = DV_ZERO(), q##b##1 = q##b##0, q##b##2 = q##b##0
#define PADDED_FMA(b)                                          \
    {                                                          \
        const dvec g = DV_LOADU(g##b + v * DIRECT_LANES);      \
        q##b##0 = DV_FMA(g, x0, q##b##0);                      \
        q##b##1 = DV_FMA(g, x1, q##b##1);                      \
        q##b##2 = DV_FMA(g, x2, q##b##2);                      \
    }
#define PADDED_SUM(b)                                                            \
    {                                                                            \
        float *at = part + (int64_t)(c * 9 + i * 3) * d->k + k0 + b;             \
        at[0] += DV_SUM(q##b##0);                                                \
        at[d->k] += DV_SUM(q##b##1);                                             \
        at[2 * d->k] += DV_SUM(q##b##2);                                         \
    }

/* part (R x K) += the filter gradient over images [n0, n1), using ws (the
 * slot's column buffer) for the copies. */
static void padded_filter_images(const osp_conv_desc *d, const geom *m, const float *x,
                                 const float *dy, float *part, int n0, int n1, float *ws) {
    const padded_geom p = padded_geometry(d);
    int chunk = (int)(m->col / p.image);
    const int l2_images = (int)(DIRECT_FILTER_CHUNK_BYTES / (p.image * (int64_t)sizeof(float)));
    if (chunk > l2_images) chunk = l2_images;
    if (chunk < 1) chunk = 1;
    for (int a = n0; a < n1; a += chunk) {
        const int b = n1 - a < chunk ? n1 : a + chunk;
        for (int n = a; n < b; n++) {
            float *xp = ws + (int64_t)(n - a) * p.image;
            padded_copy(d, m, &p, x + (int64_t)n * m->chw, dy + (int64_t)n * m->ks, xp,
                        xp + (int64_t)d->c * p.xplane);
        }
        for (int k0 = 0; k0 < d->k; k0 += PADDED_KB)
            for (int c = 0; c < d->c; c++)
                for (int i = 0; i < 3; i++) {
                    PADDED_ACCS(0); PADDED_ACCS(1); PADDED_ACCS(2); PADDED_ACCS(3);
                    for (int n = a; n < b; n++) {
                        const float *img = ws + (int64_t)(n - a) * p.image;
                        const float *xs = img + (int64_t)c * p.xplane + (int64_t)i * p.wp;
                        const float *g0 = img + (int64_t)d->c * p.xplane + (int64_t)k0 * p.dyplane;
                        const float *g1 = g0 + p.dyplane, *g2 = g1 + p.dyplane;
                        const float *g3 = g2 + p.dyplane;
                        for (int v = 0; v < p.nv; v++) {
                            const float *xv = xs + v * DIRECT_LANES;
                            const dvec x0 = DV_LOADU(xv), x1 = DV_LOADU(xv + 1),
                                       x2 = DV_LOADU(xv + 2);
                            PADDED_FMA(0) PADDED_FMA(1) PADDED_FMA(2) PADDED_FMA(3)
                        }
                    }
                    PADDED_SUM(0) PADDED_SUM(1) PADDED_SUM(2) PADDED_SUM(3)
                }
    }
}
#endif
