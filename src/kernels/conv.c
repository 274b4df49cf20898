/* 2-D convolution on the CPU: im2col + sgemm, a few images per GEMM.
 *
 * Names used throughout (per convolution group; see osp_conv_desc):
 *   Cg = C / groups, Kg = K / groups   channels of one group
 *   R  = Cg * kh * kw                  rows of a column matrix (one per tap)
 *   S  = P * Q                         output positions of one image
 *   G  = images per GEMM (images_per_gemm), gi <= G in the last chunk
 *   col : R  x (gi*S)   im2col of gi images, image-major along the columns
 *   buf : Kg x (gi*S)   GEMM output (forward) or gathered dy (backward);
 *                       only when G > 1, where images are not contiguous
 *   w   : K x R, group g's rows start at g*Kg*R
 *
 * Small images make a small GEMM (LeNet: 20 x 25 x 576); putting G images
 * side by side gives sgemm enough columns to run at full speed.
 *
 * Special cases that skip im2col:
 *   - 1x1, stride 1, no padding, one image at a time: x is already the
 *     R x S matrix;
 *   - depthwise (Cg == 1, groups > 1, any multiplier Kg): a direct loop per
 *     plane, since a GEMM with one row per tap wastes the BLAS.
 *
 * Determinism: the GEMMs run one after another and OpenBLAS splits each over
 * its M and N dimensions only, so dW accumulates over image chunks with
 * beta = 1 in a fixed order. Every OpenMP loop gives each thread whole
 * output rows or planes. None of this depends on the thread count, so
 * neither does the workspace (a plan made before osp_threads_set stays
 * valid). */
#include <string.h>

#include "cpu_kernels.h"

/* Enough GEMM columns for sgemm to run well. Measured on LeNet and CIFAR
 * ResNet layers: 512 beat both 1 image per GEMM and 2048+ columns, where the
 * column buffer falls out of L2. */
#define TARGET_COLS 512
/* Grouping images never makes the column buffer larger than this (2 MiB). */
#define MAX_GROUPED_COL_FLOATS ((int64_t)512 << 10)
/* Below this many inner iterations an OpenMP region costs more than it saves. */
#define PAR_MIN_WORK 32768

typedef struct geom {
    int cg, kg, r, s;
    int64_t hw, chw, ks; /* plane of x, image of x, image of y */
    int pointwise;       /* 1x1, stride 1, no padding */
    int depthwise;
} geom;

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
    return m;
}

static int images_per_gemm(const osp_conv_desc *d, const geom *m) {
    if (m->s >= TARGET_COLS || d->n <= 1) return 1;
    int64_t g = (TARGET_COLS + m->s - 1) / m->s;
    if (g > d->n) g = d->n;
    while (g > 1 && (int64_t)m->r * g * m->s > MAX_GROUPED_COL_FLOATS) g--;
    return (int)g;
}

size_t osp__cpu_conv2d_workspace(const osp_conv_desc *d) {
    geom m = geometry(d);
    if (m.depthwise) return 0;
    int g = images_per_gemm(d, &m);
    if (g == 1 && m.pointwise) return 0;
    int64_t floats = (int64_t)m.r * g * m.s;
    if (g > 1) floats += (int64_t)m.kg * g * m.s;
    return (size_t)floats * sizeof(float);
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

/* col (R x gi*S) = the taps of images n0..n0+gi, channels of group g. */
static void im2col(const osp_conv_desc *d, const geom *m, const float *x, int n0, int gi, int g,
                   float *col) {
    const int64_t tasks = (int64_t)m->r * gi;
    const int64_t ld = (int64_t)gi * m->s;
#pragma omp parallel for schedule(static) if (tasks * m->s > PAR_MIN_WORK)
    for (int64_t t = 0; t < tasks; t++) {
        int r = (int)(t / gi), img = (int)(t % gi);
        int c = r / (d->kh * d->kw), i = r / d->kw % d->kh, j = r % d->kw;
        const float *src = x + (int64_t)(n0 + img) * m->chw + (int64_t)(g * m->cg + c) * m->hw;
        float *dst = col + r * ld + (int64_t)img * m->s;
        int q_lo, q_hi;
        valid_range(d->q, d->w, d->stride_w, d->pad_w, j * d->dil_w, &q_lo, &q_hi);
        for (int p = 0; p < d->p; p++) {
            float *row = dst + (int64_t)p * d->q;
            int h = p * d->stride_h - d->pad_h + i * d->dil_h;
            if (h < 0 || h >= d->h) {
                memset(row, 0, (size_t)d->q * sizeof(float));
                continue;
            }
            /* x column of output q: off + q * stride_w (valid for q_lo <= q < q_hi) */
            const int64_t off = (int64_t)h * d->w - d->pad_w + j * d->dil_w;
            for (int q = 0; q < q_lo; q++) row[q] = 0.0f;
            if (d->stride_w == 1) {
                if (q_hi > q_lo)
                    memcpy(row + q_lo, src + off + q_lo, (size_t)(q_hi - q_lo) * sizeof(float));
            } else {
                for (int q = q_lo; q < q_hi; q++) row[q] = src[off + (int64_t)q * d->stride_w];
            }
            for (int q = q_hi; q < d->q; q++) row[q] = 0.0f;
        }
    }
}

/* dx (images n0..n0+gi, group g) += the taps in col, summed back per pixel.
 * Each thread owns whole input planes. */
static void col2im(const osp_conv_desc *d, const geom *m, const float *col, int n0, int gi, int g,
                   float *dx) {
    const int64_t tasks = (int64_t)gi * m->cg;
    const int64_t ld = (int64_t)gi * m->s;
#pragma omp parallel for schedule(static) if (tasks * d->kh * d->kw * m->s > PAR_MIN_WORK)
    for (int64_t t = 0; t < tasks; t++) {
        int img = (int)(t / m->cg), c = (int)(t % m->cg);
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
                    for (int q = q_lo; q < q_hi; q++)
                        plane[off + (int64_t)q * d->stride_w] += row[q];
                }
            }
    }
}

/* buf (Kg x gi*S) = dy of images n0..n0+gi, channels of group g. */
static void gather_dy(const osp_conv_desc *d, const geom *m, const float *dy, int n0, int gi,
                      int g, float *buf) {
    const int64_t rows = (int64_t)m->kg * gi;
#pragma omp parallel for schedule(static) if (rows * m->s > PAR_MIN_WORK)
    for (int64_t t = 0; t < rows; t++) {
        int k = (int)(t / gi), img = (int)(t % gi);
        memcpy(buf + (int64_t)k * gi * m->s + (int64_t)img * m->s,
               dy + (int64_t)(n0 + img) * m->ks + (int64_t)(g * m->kg + k) * m->s,
               (size_t)m->s * sizeof(float));
    }
}

/* The inverse of gather_dy: y rows of group g from buf. */
static void scatter_y(const osp_conv_desc *d, const geom *m, const float *buf, int n0, int gi,
                      int g, float *y) {
    const int64_t rows = (int64_t)m->kg * gi;
#pragma omp parallel for schedule(static) if (rows * m->s > PAR_MIN_WORK)
    for (int64_t t = 0; t < rows; t++) {
        int k = (int)(t / gi), img = (int)(t % gi);
        memcpy(y + (int64_t)(n0 + img) * m->ks + (int64_t)(g * m->kg + k) * m->s,
               buf + (int64_t)k * gi * m->s + (int64_t)img * m->s, (size_t)m->s * sizeof(float));
    }
}

static void add_bias(const osp_conv_desc *d, const geom *m, const float *bias, int n0, int gi,
                     float *y) {
    const int64_t rows = (int64_t)gi * d->k;
#pragma omp parallel for schedule(static) if (rows * m->s > PAR_MIN_WORK)
    for (int64_t t = 0; t < rows; t++) {
        float b = bias[t % d->k];
        float *row = y + (int64_t)n0 * m->ks + t * m->s;
        for (int s = 0; s < m->s; s++) row[s] += b;
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

static void dw_forward(const osp_conv_desc *d, const geom *m, const float *x, const float *w,
                       const float *bias, float *y) {
    const int64_t planes = (int64_t)d->n * d->k;
    const int taps = d->kh * d->kw, sh = d->stride_h, sw = d->stride_w;
#pragma omp parallel for schedule(static) if (planes * m->s * taps > PAR_MIN_WORK)
    for (int64_t t = 0; t < planes; t++) {
        int k = (int)(t % d->k);
        const float *xp = x + t / d->k * m->chw + (int64_t)(k / m->kg) * m->hw;
        const float *wk = w + (int64_t)k * taps;
        float *yp = y + t * m->s;
        float b = bias ? bias[k] : 0.0f;
        for (int s = 0; s < m->s; s++) yp[s] = b;
        for (int i = 0; i < d->kh; i++)
            for (int j = 0; j < d->kw; j++) {
                tap_rect r = tap_rect_of(d, i, j);
                float wv = wk[i * d->kw + j];
                for (int p = r.p_lo; p < r.p_hi; p++) {
                    float *yrow = yp + (int64_t)p * d->q;
                    const int64_t row = r.off + (int64_t)p * sh * d->w; /* x index of q = 0 */
                    if (sw == 1)
                        for (int q = r.q_lo; q < r.q_hi; q++) yrow[q] += wv * xp[row + q];
                    else
                        for (int q = r.q_lo; q < r.q_hi; q++)
                            yrow[q] += wv * xp[row + (int64_t)q * sw];
                }
            }
    }
}

/* dx plane c of image n gathers from the Kg output channels that read it. */
static void dw_backward_data(const osp_conv_desc *d, const geom *m, const float *dy,
                             const float *w, float *dx) {
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

/* ---- the kernels ----------------------------------------------------------- */

void osp__cpu_conv2d_forward(const osp_conv_desc *d, const float *x, const float *w,
                             const float *bias, float *y, void *workspace) {
    geom m = geometry(d);
    if (m.depthwise) {
        dw_forward(d, &m, x, w, bias, y);
        return;
    }
    const int G = images_per_gemm(d, &m);
    float *col = workspace, *buf = G > 1 ? col + (int64_t)m.r * G * m.s : NULL;
    for (int n0 = 0; n0 < d->n; n0 += G) {
        int gi = d->n - n0 < G ? d->n - n0 : G;
        for (int g = 0; g < d->groups; g++) {
            const float *wg = w + (int64_t)g * m.kg * m.r;
            const float *b = col;
            if (gi == 1 && m.pointwise) b = x + (int64_t)n0 * m.chw + (int64_t)g * m.cg * m.hw;
            else im2col(d, &m, x, n0, gi, g, col);
            if (gi == 1) {
                float *yg = y + (int64_t)n0 * m.ks + (int64_t)g * m.kg * m.s;
                osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m.kg, m.s, m.r, 1.0f, wg, m.r, b, m.s,
                               0.0f, yg, m.s);
            } else {
                osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m.kg, gi * m.s, m.r, 1.0f, wg, m.r, b,
                               gi * m.s, 0.0f, buf, gi * m.s);
                scatter_y(d, &m, buf, n0, gi, g, y);
            }
        }
        if (bias) add_bias(d, &m, bias, n0, gi, y);
    }
}

void osp__cpu_conv2d_backward_data(const osp_conv_desc *d, const float *dy, const float *w,
                                   float *dx, void *workspace) {
    if (!dx) return;
    geom m = geometry(d);
    if (m.depthwise) {
        dw_backward_data(d, &m, dy, w, dx);
        return;
    }
    const int G = images_per_gemm(d, &m);
    float *col = workspace, *buf = G > 1 ? col + (int64_t)m.r * G * m.s : NULL;
    for (int n0 = 0; n0 < d->n; n0 += G) {
        int gi = d->n - n0 < G ? d->n - n0 : G;
        for (int g = 0; g < d->groups; g++) {
            const float *wg = w + (int64_t)g * m.kg * m.r;
            const float *a = dy + (int64_t)n0 * m.ks + (int64_t)g * m.kg * m.s;
            if (gi > 1) {
                gather_dy(d, &m, dy, n0, gi, g, buf);
                a = buf;
            }
            if (gi == 1 && m.pointwise) {
                /* dx is the column matrix itself: accumulate straight into it. */
                float *dxg = dx + (int64_t)n0 * m.chw + (int64_t)g * m.cg * m.hw;
                osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, m.r, m.s, m.kg, 1.0f, wg, m.r, a, m.s,
                               1.0f, dxg, m.s);
                continue;
            }
            osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, m.r, gi * m.s, m.kg, 1.0f, wg, m.r, a,
                           gi * m.s, 0.0f, col, gi * m.s);
            col2im(d, &m, col, n0, gi, g, dx);
        }
    }
}

void osp__cpu_conv2d_backward_filter(const osp_conv_desc *d, const float *x, const float *dy,
                                     float *dw, float *db, void *workspace) {
    geom m = geometry(d);
    if (m.depthwise) {
        if (dw || db) dw_backward_filter(d, &m, x, dy, dw, db);
        return;
    }
    if (db) bias_grad(d, &m, dy, db);
    if (!dw) return;
    const int G = images_per_gemm(d, &m);
    float *col = workspace, *buf = G > 1 ? col + (int64_t)m.r * G * m.s : NULL;
    for (int n0 = 0; n0 < d->n; n0 += G) {
        int gi = d->n - n0 < G ? d->n - n0 : G;
        for (int g = 0; g < d->groups; g++) {
            const float *a = dy + (int64_t)n0 * m.ks + (int64_t)g * m.kg * m.s;
            if (gi > 1) {
                gather_dy(d, &m, dy, n0, gi, g, buf);
                a = buf;
            }
            const float *b = col;
            if (gi == 1 && m.pointwise) b = x + (int64_t)n0 * m.chw + (int64_t)g * m.cg * m.hw;
            else im2col(d, &m, x, n0, gi, g, col);
            osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, m.kg, m.r, gi * m.s, 1.0f, a, gi * m.s, b,
                           gi * m.s, 1.0f, dw + (int64_t)g * m.kg * m.r, m.r);
        }
    }
}
