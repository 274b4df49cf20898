/* Int8 convolution for inference (layouts and arithmetic: conv_int8.h):
 * the filters' quantisation, the driver shared with the VNNI kernel, and
 * the portable kernel of the reference backend, which the VNNI kernel
 * must equal bit for bit (tests/kernels/test_conv_int8.c).
 *
 * Only ungrouped convolutions: a depthwise layer reads each input once
 * per tap, so it is bound by memory, not arithmetic, and stays float32. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "conv_int8.h"

#define ALIGN64(x) (((x) + 63) / 64 * 64)

/* Direct layouts of strided layers: the strides at most this, so that
 * at most 16 phases (conv_int8.h) */
#define INT8_MAX_PHASE_STRIDE 4

typedef struct int8_geom {
    int direct;
    int r, groups, kp;
    int hp, wp;        /* the bordered input plane */
    int cq;            /* direct: channel quads */
    int sh, sw;        /* direct: the strides; the plane split into sh x sw phases */
    int hs, ws;        /* direct: a phase's rows, and its cells a row */
    int phases;        /* direct: the phases some tap reads, stored in this order: */
    signed char phase_slot[INT8_MAX_PHASE_STRIDE * INT8_MAX_PHASE_STRIDE]; /* or -1 */
    int64_t plane;     /* direct: bytes from one phase plane to the next */
    int64_t slack;     /* direct: bytes after a phase plane that dropped cells read */
    int grid;          /* the output grid's width */
    int64_t cells;     /* P * grid */
    int blocks;        /* of 32 cells */
    int64_t in_bytes, b_bytes, slot; /* each 64-byte aligned */
} int8_geom;

static int int8_geometry(const osp_conv_desc *d, int8_geom *g) {
    if (d->groups != 1) return 0;
    g->direct = d->stride_h <= INT8_MAX_PHASE_STRIDE && d->stride_w <= INT8_MAX_PHASE_STRIDE;
    g->r = d->c * d->kh * d->kw;
    g->cq = (d->c + 3) / 4;
    g->groups = g->direct ? g->cq * d->kh * d->kw : (g->r + 3) / 4;
    if ((int64_t)g->groups * 4 > OSP_INT8_MAX_TAPS) return 0;
    g->kp = (d->k + 3) / 4 * 4;
    g->hp = (d->p - 1) * d->stride_h + (d->kh - 1) * d->dil_h + 1;
    g->wp = (d->q - 1) * d->stride_w + (d->kw - 1) * d->dil_w + 1;
    /* the input itself must fit too (padding may be smaller than the
     * window's reach past the last row) */
    if (g->hp < d->h + d->pad_h) g->hp = d->h + d->pad_h;
    if (g->wp < d->w + d->pad_w) g->wp = d->w + d->pad_w;
    if (g->direct) {
        g->sh = d->stride_h;
        g->sw = d->stride_w;
        g->hs = (g->hp + g->sh - 1) / g->sh;
        g->ws = (g->wp + g->sw - 1) / g->sw;
        memset(g->phase_slot, -1, sizeof g->phase_slot);
        g->phases = 0;
        for (int i = 0; i < d->kh; i++)
            for (int j = 0; j < d->kw; j++) {
                signed char *at = &g->phase_slot[i * d->dil_h % g->sh * g->sw + j * d->dil_w % g->sw];
                if (*at < 0) *at = (signed char)g->phases++;
            }
    }
    g->grid = g->direct ? g->ws : d->q;
    g->cells = (int64_t)d->p * g->grid;
    g->blocks = (int)((g->cells + INT8_BLOCK_COLS - 1) / INT8_BLOCK_COLS);
    if (g->direct) {
        /* each phase's plane, + what the last block's dropped cells read
         * past it: up to 31 cells and a 128-byte load, + the window's
         * reach along a row */
        g->slack = 2 * INT8_BLOCK_BYTES + (int64_t)(d->kw - 1) * d->dil_w * 4;
        g->plane = (int64_t)g->hs * g->ws * 4 + g->slack;
        g->in_bytes = ALIGN64(g->cq * g->phases * g->plane);
        /* strided: a row of the input quantised before it is dealt out */
        g->b_bytes = g->sh * g->sw > 1 ? ALIGN64((int64_t)d->w * 4) : 0;
    } else {
        g->slack = 0;
        g->plane = (int64_t)g->hp * g->wp;
        g->in_bytes = ALIGN64((int64_t)d->c * g->plane + 64); /* + 64: vector reads past the end */
        g->b_bytes = ALIGN64((int64_t)g->blocks * g->groups * INT8_BLOCK_BYTES);
    }
    g->slot = g->in_bytes + g->b_bytes;
    return 1;
}

size_t osp__conv2d_int8_prepared_bytes(const osp_conv_desc *d) {
    int8_geom g;
    if (!int8_geometry(d, &g)) return 0;
    return (size_t)(ALIGN64(sizeof(int8_filters)) + ALIGN64(4 * (int64_t)g.kp) * 2 +
                    (int64_t)g.kp * g.groups * 4);
}

/* one slot per core, + 64 to align the first; then the output scales and
 * biases (2 Kp floats) and the groups' offsets */
size_t osp__conv2d_int8_workspace(const osp_conv_desc *d) {
    int8_geom g;
    if (!int8_geometry(d, &g)) return 0;
    return (size_t)(g.slot * osp__kernel_slots() + 64 + ALIGN64(8 * (int64_t)g.kp) +
                    8 * (int64_t)g.groups);
}

/* Whether a layer of geometry g reads (and so can be handed) the
 * unsplit direct layout that int8_packed_at writes. */
static int reads_packed(const int8_geom *g) {
    return g->direct && g->sh == 1 && g->sw == 1;
}

size_t osp__conv2d_int8_packed_bytes(const osp_conv_desc *d) {
    int8_geom g;
    if (!int8_geometry(d, &g) || !reads_packed(&g)) return 0;
    return (size_t)g.in_bytes;
}

/* Group and lane of tap (c, i, j) of the flattened window r. */
static void place(const osp_conv_desc *d, const int8_geom *g, int r, int *group, int *lane) {
    if (!g->direct) {
        *group = r / 4;
        *lane = r % 4;
        return;
    }
    const int taps = d->kh * d->kw, c = r / taps, ij = r % taps;
    *group = (c / 4) * taps + ij;
    *lane = c % 4;
}

void osp__conv2d_int8_prepare(const osp_conv_desc *d, const float *w, void *prepared) {
    int8_geom g;
    if (!int8_geometry(d, &g)) return;
    int8_filters *f = prepared;
    memset(f, 0, osp__conv2d_int8_prepared_bytes(d));
    f->k = d->k;
    f->kp = g.kp;
    f->groups = g.groups;
    f->direct = g.direct;
    f->scale_off = (int32_t)ALIGN64(sizeof(int8_filters));
    f->sum_off = f->scale_off + (int32_t)ALIGN64(4 * (int64_t)g.kp);
    f->w_off = f->sum_off + (int32_t)ALIGN64(4 * (int64_t)g.kp);
    float *scale = (float *)((char *)f + f->scale_off);
    int32_t *sum = (int32_t *)((char *)f + f->sum_off);
    int8_t *wq = (int8_t *)((char *)f + f->w_off);
    for (int k = 0; k < d->k; k++) {
        const float *row = w + (int64_t)k * g.r;
        float amax = 0;
        for (int r = 0; r < g.r; r++) amax = fmaxf(amax, fabsf(row[r]));
        /* NaN weights give a NaN scale, and NaN outputs, as float32 would */
        const float s = amax > 0 ? amax / 127.0f : (amax == 0 ? 1.0f : amax);
        scale[k] = s;
        int k0;
        const int m = int8_tile_of(f, k, &k0);
        int8_t *tile = wq + (int64_t)k0 * g.groups * 4;
        int32_t total = 0;
        for (int r = 0; r < g.r; r++) {
            float t = row[r] / s;
            t = t > -127.0f ? t : -127.0f;
            t = t < 127.0f ? t : 127.0f;
            const int q = (int)lrintf(t);
            int group, lane;
            place(d, &g, r, &group, &lane);
            tile[((int64_t)group * m + (k - k0)) * 4 + lane] = (int8_t)q;
            total += q;
        }
        sum[k] = total;
    }
    for (int k = d->k; k < g.kp; k++) scale[k] = 1.0f;
}

void osp__int8_quantize_ref(const float *x, int n, float inv_scale, int zero, uint8_t *q) {
    for (int i = 0; i < n; i++) q[i] = osp__int8_quantize_one(x[i], inv_scale, zero);
}

void osp__int8_quantize4_ref(const float *const x[4], int n, float inv_scale, int zero,
                             uint8_t *q) {
    for (int t = 0; t < 4; t++)
        for (int j = 0; j < n; j++)
            q[4 * j + t] = x[t] ? osp__int8_quantize_one(x[t][j], inv_scale, zero) : (uint8_t)zero;
}

float osp__int8_activate(const osp_conv_desc *d, float v) {
    switch ((osp_activation)d->act) {
    case OSP_ACT_NONE: return v;
    case OSP_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case OSP_ACT_RELU6: v = v > 0.0f ? v : 0.0f; return v < 6.0f ? v : 6.0f;
    case OSP_ACT_LEAKY_RELU: return v > 0.0f ? v : v * d->act_alpha;
    case OSP_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case OSP_ACT_TANH: return tanhf(v);
    case OSP_ACT_SWISH: return v / (1.0f + expf(-v));
    }
    return v;
}

float osp__int8_finish(const int8_out *o, int k, int32_t acc, float res) {
    const int32_t centred = acc - o->zero * int8_sums(o->f)[k];
    float v = fmaf((float)centred, o->oscale[k], o->bias[k]);
    if (o->res) v += res;
    return osp__int8_activate(o->d, v);
}

void osp__int8_gemm_ref(const int8_out *o, int k0, int k1, int b0, int b1) {
    const int8_filters *f = o->f;
    const int8_t *wq = int8_weights(f);
    const int q = o->d->q, s = o->d->p * o->d->q;
    for (int k = k0; k < k1 && k < f->k; k++) {
        int t0;
        const int m = int8_tile_of(f, k, &t0);
        const int8_t *tile = wq + (int64_t)t0 * f->groups * 4 + (k - t0) * 4;
        for (int64_t n = (int64_t)b0 * INT8_BLOCK_COLS; n < (int64_t)b1 * INT8_BLOCK_COLS; n++) {
            if (n >= o->cells || n % o->grid >= q) continue; /* a dropped cell */
            const uint8_t *block = o->src + n / INT8_BLOCK_COLS * o->block_stride +
                                   n % INT8_BLOCK_COLS * 4;
            int32_t acc = 0;
            for (int gq = 0; gq < f->groups; gq++) {
                const int8_t *a = tile + (int64_t)gq * m * 4;
                const uint8_t *b = block + o->off[gq];
                acc += a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
            }
            const int64_t at = (int64_t)k * s + n / o->grid * q + n % o->grid;
            const float v = osp__int8_finish(o, k, acc, o->res ? o->res[at] : 0.0f);
            if (o->y) o->y[at] = v;
            if (o->yq)
                *int8_packed_at(o, k, n / o->grid, n % o->grid) =
                    osp__int8_quantize_one(v, o->yq_inv, o->yq_zero);
        }
    }
}

/* Panel layouts: quantises image x's channels [c0, c1) into bordered
 * planes of bytes. */
static void quantize_planes(const osp_conv_desc *d, const int8_geom *g, const float *x,
                            float inv_scale, int zero, int c0, int c1, uint8_t *in,
                            const int8_kernel *kern) {
    for (int c = c0; c < c1; c++) {
        uint8_t *p = in + c * g->plane;
        memset(p, zero, (size_t)d->pad_h * g->wp);
        for (int i = 0; i < d->h; i++) {
            uint8_t *row = p + (int64_t)(i + d->pad_h) * g->wp;
            memset(row, zero, (size_t)d->pad_w);
            kern->quant(x + ((int64_t)c * d->h + i) * d->w, d->w, inv_scale, zero, row + d->pad_w);
            memset(row + d->pad_w + d->w, zero, (size_t)(g->wp - d->pad_w - d->w));
        }
        const int below = g->hp - d->pad_h - d->h;
        if (below > 0) memset(p + (int64_t)(d->pad_h + d->h) * g->wp, zero, (size_t)below * g->wp);
    }
}

/* Direct layout: quantises image x's channel quads [q0, q1) into bordered
 * planes of four channels side by side; channels past C read as the zero
 * point (their weights are 0). */
static void quantize_quads(const osp_conv_desc *d, const int8_geom *g, const float *x,
                           float inv_scale, int zero, int q0, int q1, uint8_t *in,
                           const int8_kernel *kern) {
    const int64_t line = (int64_t)g->wp * 4;
    for (int cq = q0; cq < q1; cq++) {
        uint8_t *p = in + cq * g->plane;
        memset(p, zero, (size_t)(d->pad_h * line));
        for (int i = 0; i < d->h; i++) {
            uint8_t *out = p + (i + d->pad_h) * line;
            const float *src[4];
            for (int t = 0; t < 4; t++) {
                const int c = cq * 4 + t;
                src[t] = c < d->c ? x + ((int64_t)c * d->h + i) * d->w : NULL;
            }
            memset(out, zero, (size_t)d->pad_w * 4);
            kern->quant4(src, d->w, inv_scale, zero, out + d->pad_w * 4);
            memset(out + (d->pad_w + d->w) * 4, zero, (size_t)(g->wp - d->pad_w - d->w) * 4);
        }
        const int below = g->hp - d->pad_h - d->h;
        if (below > 0) memset(p + (d->pad_h + d->h) * line, zero, (size_t)(below * line));
        memset(p + g->hp * line, zero, (size_t)g->slack); /* read by dropped cells */
    }
}

/* Direct layout of a strided layer: quantises image x's channel quads
 * [q0, q1) into their phase planes. Each input row is quantised once
 * into row (four channels side by side, as quantize_quads) and its cells
 * dealt out to the phases some tap reads; the rest is the zero point. */
static void quantize_phases(const osp_conv_desc *d, const int8_geom *g, const float *x,
                            float inv_scale, int zero, int q0, int q1, uint8_t *in, uint8_t *row,
                            const int8_kernel *kern) {
    const int64_t line = (int64_t)g->ws * 4;
    for (int cq = q0; cq < q1; cq++) {
        uint8_t *quad = in + cq * g->phases * g->plane;
        memset(quad, zero, (size_t)(g->phases * g->plane));
        for (int i = 0; i < d->h; i++) {
            const int r = i + d->pad_h;
            const signed char *slots = g->phase_slot + r % g->sh * g->sw;
            int read = 0;
            for (int pc = 0; pc < g->sw; pc++) read |= slots[pc] >= 0;
            if (!read) continue;
            const float *src[4];
            for (int t = 0; t < 4; t++) {
                const int c = cq * 4 + t;
                src[t] = c < d->c ? x + ((int64_t)c * d->h + i) * d->w : NULL;
            }
            kern->quant4(src, d->w, inv_scale, zero, row);
            for (int pc = 0; pc < g->sw; pc++) {
                if (slots[pc] < 0) continue;
                /* the first column whose bordered column pad_w + j is pc mod sw */
                const int j0 = ((pc - d->pad_w) % g->sw + g->sw) % g->sw;
                uint8_t *out = quad + slots[pc] * g->plane + (int64_t)(r / g->sh) * line +
                               (int64_t)((d->pad_w + j0) / g->sw) * 4;
                for (int j = j0; j < d->w; j += g->sw, out += 4) memcpy(out, row + 4 * j, 4);
            }
        }
    }
}

/* The zero point in the parts of image y's packed output (channel quads
 * [q0, q1) of the next layer's direct layout ng, nd) that no output
 * lands in: the borders, the slack, and all of a quad that has channels
 * past K (the GEMM writes only the ones below). */
static void fill_packed_borders(const osp_conv_desc *nd, const int8_geom *ng, int zero, int q0,
                                int q1, uint8_t *y) {
    const int64_t line = (int64_t)ng->wp * 4;
    for (int cq = q0; cq < q1; cq++) {
        uint8_t *p = y + cq * ng->plane;
        if (cq * 4 + 4 > nd->c) {
            memset(p, zero, (size_t)ng->plane);
            continue;
        }
        memset(p, zero, (size_t)(nd->pad_h * line));
        const int right = ng->wp - nd->pad_w - nd->w;
        for (int i = 0; i < nd->h; i++) {
            uint8_t *row = p + (i + nd->pad_h) * line;
            memset(row, zero, (size_t)nd->pad_w * 4);
            memset(row + (nd->pad_w + nd->w) * 4, zero, (size_t)right * 4);
        }
        const int64_t below = ng->hp - nd->pad_h - nd->h;
        memset(p + (nd->pad_h + nd->h) * line, zero, (size_t)(below * line + ng->slack));
    }
}

/* out[4 j + t] = src[t][j * stride] for j < len. */
static void interleave4(const uint8_t *const src[4], int stride, int len, uint8_t *out) {
    int j = 0;
#if defined(__SSE2__)
    if (stride <= 2) {
        const __m128i low = _mm_set1_epi16(0xff);
        for (; j + 16 <= len; j += 16) {
            __m128i v[4];
            for (int t = 0; t < 4; t++) {
                const uint8_t *p = src[t] + (int64_t)j * stride;
                if (stride == 1) {
                    v[t] = _mm_loadu_si128((const __m128i *)p);
                } else { /* the even bytes of 32 */
                    const __m128i a = _mm_and_si128(_mm_loadu_si128((const __m128i *)p), low);
                    const __m128i b = _mm_and_si128(_mm_loadu_si128((const __m128i *)(p + 16)), low);
                    v[t] = _mm_packus_epi16(a, b);
                }
            }
            const __m128i ab0 = _mm_unpacklo_epi8(v[0], v[1]), ab1 = _mm_unpackhi_epi8(v[0], v[1]);
            const __m128i cd0 = _mm_unpacklo_epi8(v[2], v[3]), cd1 = _mm_unpackhi_epi8(v[2], v[3]);
            _mm_storeu_si128((__m128i *)(out + 4 * j), _mm_unpacklo_epi16(ab0, cd0));
            _mm_storeu_si128((__m128i *)(out + 4 * j + 16), _mm_unpackhi_epi16(ab0, cd0));
            _mm_storeu_si128((__m128i *)(out + 4 * j + 32), _mm_unpacklo_epi16(ab1, cd1));
            _mm_storeu_si128((__m128i *)(out + 4 * j + 48), _mm_unpackhi_epi16(ab1, cd1));
        }
        for (; j + 8 <= len; j += 8) {
            __m128i v[4];
            for (int t = 0; t < 4; t++) {
                const uint8_t *p = src[t] + (int64_t)j * stride;
                if (stride == 1) {
                    v[t] = _mm_loadl_epi64((const __m128i *)p);
                } else {
                    const __m128i a = _mm_and_si128(_mm_loadu_si128((const __m128i *)p), low);
                    v[t] = _mm_packus_epi16(a, a);
                }
            }
            const __m128i ab = _mm_unpacklo_epi8(v[0], v[1]), cd = _mm_unpacklo_epi8(v[2], v[3]);
            _mm_storeu_si128((__m128i *)(out + 4 * j), _mm_unpacklo_epi16(ab, cd));
            _mm_storeu_si128((__m128i *)(out + 4 * j + 16), _mm_unpackhi_epi16(ab, cd));
        }
    }
#endif
    for (; j < len; j++)
        for (int t = 0; t < 4; t++) out[4 * j + t] = src[t][(int64_t)j * stride];
}

/* Packs tap groups [q0, q1) of the image's window into the panel: for each
 * group, runs of output positions that stay within one output row and
 * one block of the panel. */
static void pack_panel(const osp_conv_desc *d, const int8_geom *g, const uint8_t *in, int q0,
                       int q1, uint8_t *panel) {
    const int taps = d->kh * d->kw, groups = g->groups;
    for (int gq = q0; gq < q1; gq++) {
        int64_t offs[4];
        for (int t = 0; t < 4; t++) {
            /* a tap past R (weight 0) reads tap 0's bytes: tap 0 of a group
             * is always live */
            const int r = gq * 4 + t < g->r ? gq * 4 + t : gq * 4;
            const int c = r / taps, i = r % taps / d->kw, j = r % d->kw;
            offs[t] = c * g->plane + (int64_t)i * d->dil_h * g->wp + (int64_t)j * d->dil_w;
        }
        int64_t n = 0;
        for (int p = 0; p < d->p; p++) {
            const uint8_t *src[4];
            for (int t = 0; t < 4; t++) src[t] = in + offs[t] + (int64_t)p * d->stride_h * g->wp;
            for (int q = 0; q < d->q;) {
                int len = INT8_BLOCK_COLS - (int)(n % INT8_BLOCK_COLS);
                if (len > d->q - q) len = d->q - q;
                uint8_t *out = panel + (n / INT8_BLOCK_COLS * groups + gq) * INT8_BLOCK_BYTES +
                               n % INT8_BLOCK_COLS * 4;
                const uint8_t *at[4];
                for (int t = 0; t < 4; t++) at[t] = src[t] + (int64_t)q * d->stride_w;
                interleave4(at, d->stride_w, len, out);
                q += len;
                n += len;
            }
        }
        for (; n < (int64_t)g->blocks * INT8_BLOCK_COLS; n++)
            memset(panel + (n / INT8_BLOCK_COLS * groups + gq) * INT8_BLOCK_BYTES +
                       n % INT8_BLOCK_COLS * 4,
                   0, 4);
    }
}

static void share(int n, int t, int nt, int *lo, int *hi) {
    *lo = (int)((int64_t)n * t / nt);
    *hi = (int)((int64_t)n * (t + 1) / nt);
}

/* GEMM work of one image split over nt threads: ranges of blocks of
 * columns, or (too few blocks) of tiles of output channels. */
static void gemm_share(const int8_out *o, const int8_geom *g, int t, int nt, int8_gemm_fn gemm) {
    const int full = g->kp / INT8_TILE_ROWS;
    const int tiles = full + (g->kp - full * INT8_TILE_ROWS) / 4;
    int lo, hi;
    if (g->blocks >= 4 * nt || tiles < nt) {
        share(g->blocks, t, nt, &lo, &hi);
        if (lo < hi) gemm(o, 0, g->kp, lo, hi);
        return;
    }
    share(tiles, t, nt, &lo, &hi);
    if (lo >= hi) return;
    const int k0 = lo < full ? lo * INT8_TILE_ROWS : full * INT8_TILE_ROWS + (lo - full) * 4;
    const int k1 = hi < full ? hi * INT8_TILE_ROWS : full * INT8_TILE_ROWS + (hi - full) * 4;
    gemm(o, k0, k1, 0, g->blocks);
}

/* Quantises image x (and packs it) for the GEMM, thread t of nt's share;
 * row: thread t's own g->b_bytes (a direct layout's scratch row). */
static void prepare_input(const osp_conv_desc *d, const int8_geom *g, const float *x, float inv,
                          int zero, uint8_t *slot, uint8_t *row, int t, int nt,
                          const int8_kernel *kern, int barrier) {
    int lo, hi;
    if (g->direct) {
        share(g->cq, t, nt, &lo, &hi);
        if (reads_packed(g)) quantize_quads(d, g, x, inv, zero, lo, hi, slot, kern);
        else quantize_phases(d, g, x, inv, zero, lo, hi, slot, row, kern);
        return;
    }
    share(d->c, t, nt, &lo, &hi);
    quantize_planes(d, g, x, inv, zero, lo, hi, slot, kern);
    if (barrier) {
#pragma omp barrier
    }
    share(g->groups, t, nt, &lo, &hi);
    pack_panel(d, g, slot, lo, hi, slot + g->in_bytes);
}

void osp__int8_conv_run(const osp_conv_desc *d, const osp_int8_io *io, const void *prepared,
                        const float *bias, void *workspace, const int8_kernel *kern) {
    int8_geom g, ng;
    if (!int8_geometry(d, &g) || (io->xq && !reads_packed(&g))) return;
    const float x_scale = io->x_scale;
    const int x_zero = io->x_zero;
    const float *x = io->x;
    float *y = io->y;
    const osp_conv_desc *nd = io->next;
    uint8_t *yq = io->yq;
    if (!y && !yq) return;
    if (yq && (!nd || nd->c != d->k || nd->h != d->p || nd->w != d->q || !int8_geometry(nd, &ng) ||
               !reads_packed(&ng)))
        return;
    const int8_filters *f = prepared;
    uint8_t *base = (uint8_t *)ALIGN64((uintptr_t)workspace);
    float *oscale = (float *)(base + g.slot * osp__kernel_slots());
    float *obias = oscale + g.kp;
    int64_t *off = (int64_t *)((uint8_t *)oscale + ALIGN64(8 * (int64_t)g.kp));
    for (int k = 0; k < g.kp; k++) {
        oscale[k] = x_scale * int8_scales(f)[k];
        obias[k] = bias && k < d->k ? bias[k] : 0.0f;
    }
    const int taps = d->kh * d->kw;
    for (int gq = 0; gq < g.groups; gq++) {
        if (!g.direct) {
            off[gq] = (int64_t)gq * INT8_BLOCK_BYTES;
            continue;
        }
        /* tap (i, j) of quad cq: phase (i dil_h % sh, j dil_w % sw), shifted
         * (i dil_h / sh, j dil_w / sw) cells in it (one phase at stride 1) */
        const int cq = gq / taps, i = (gq % taps / d->kw) * d->dil_h, j = gq % d->kw * d->dil_w;
        const int slot = g.phase_slot[i % g.sh * g.sw + j % g.sw];
        off[gq] = (cq * g.phases + slot) * g.plane +
                  ((int64_t)(i / g.sh) * g.ws + j / g.sw) * 4;
    }
    int8_out o0 = {.d = d, .f = f, .off = off, .grid = g.grid, .cells = g.cells,
                   .block_stride = g.direct ? INT8_BLOCK_BYTES : (int64_t)g.groups * INT8_BLOCK_BYTES,
                   .zero = x_zero, .oscale = oscale, .bias = obias};
    if (yq) {
        o0.yq_plane = ng.plane;
        o0.yq_wp = ng.wp;
        o0.yq_top = nd->pad_h;
        o0.yq_left = nd->pad_w;
        o0.yq_zero = io->y_zero;
        o0.yq_inv = 1.0f / io->y_scale;
    }
    const float inv = 1.0f / x_scale;
    const int64_t chw = (int64_t)d->c * d->h * d->w, ks = (int64_t)d->k * d->p * d->q;
    const int64_t work = (int64_t)d->n * d->k * d->p * d->q * g.r;
    const int nt = work >= 1000000 ? osp__kernel_team() : 1;
    if (nt > 1 && d->n >= nt) {
        /* whole images per thread, each in its own slot */
#pragma omp parallel num_threads(nt)
        {
            int t = 0, tn = 1, lo, hi;
#ifdef _OPENMP
            t = omp_get_thread_num();
            tn = omp_get_num_threads();
#endif
            uint8_t *slot = base + t * g.slot;
            share(d->n, t, tn, &lo, &hi);
            for (int n = lo; n < hi; n++) {
                int8_out o = o0;
                o.src = io->xq ? io->xq + n * g.in_bytes : g.direct ? slot : slot + g.in_bytes;
                o.y = y ? y + n * ks : NULL;
                o.yq = yq ? yq + n * ng.in_bytes : NULL;
                o.res = d->residual ? d->residual + n * ks : NULL;
                if (!io->xq)
                    prepare_input(d, &g, x + n * chw, inv, x_zero, slot, slot + g.in_bytes, 0, 1,
                                  kern, 0);
                if (yq) fill_packed_borders(nd, &ng, io->y_zero, 0, ng.cq, o.yq);
                gemm_share(&o, &g, 0, 1, kern->gemm);
            }
        }
        return;
    }
    /* one image at a time, the team sharing each step (slot 0) */
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = 0, tn = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        tn = omp_get_num_threads();
#endif
        for (int n = 0; n < d->n; n++) {
            int8_out o = o0;
            o.src = io->xq ? io->xq + n * g.in_bytes : g.direct ? base : base + g.in_bytes;
            o.y = y ? y + n * ks : NULL;
            o.yq = yq ? yq + n * ng.in_bytes : NULL;
            o.res = d->residual ? d->residual + n * ks : NULL;
            if (!io->xq)
                prepare_input(d, &g, x + n * chw, inv, x_zero, base, base + t * g.slot + g.in_bytes,
                              t, tn, kern, 1);
            if (yq) {
                int lo, hi;
                share(ng.cq, t, tn, &lo, &hi);
                fill_packed_borders(nd, &ng, io->y_zero, lo, hi, o.yq);
            }
#pragma omp barrier
            gemm_share(&o, &g, t, tn, kern->gemm);
#pragma omp barrier
        }
    }
}

static const int8_kernel portable = {osp__int8_gemm_ref, osp__int8_quantize_ref,
                                     osp__int8_quantize4_ref};

void osp__cpu_conv2d_int8_forward(const osp_conv_desc *d, float x_scale, int x_zero,
                                  const float *x, const void *prepared, const float *bias,
                                  float *y, void *workspace) {
    const osp_int8_io io = {.x_scale = x_scale, .x_zero = x_zero, .x = x, .y = y};
    osp__int8_conv_run(d, &io, prepared, bias, workspace, &portable);
}

void osp__cpu_conv2d_int8_forward_io(const osp_conv_desc *d, const osp_int8_io *io,
                                     const void *prepared, const float *bias, void *workspace) {
    osp__int8_conv_run(d, io, prepared, bias, workspace, &portable);
}
