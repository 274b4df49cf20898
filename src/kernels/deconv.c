/* Transposed convolution on the CPU: sgemm + col2im, the adjoint of the
 * convolution's im2col + sgemm. Per image and group g (Cg = C/groups input
 * channels, Kg = K/groups output channels, R = Kg*kh*kw rows, S = H*W):
 *
 *   forward          col (R x S) = W_g' (R x Cg) * x_g (Cg x S), then col2im
 *                    scatters col into y (each tap adds to one output)
 *   backward data    col = im2col(dy), dx_g (Cg x S) += W_g (Cg x R) * col
 *   backward filter  col = im2col(dy), dW_g (Cg x R) += x_g (Cg x S) * col'
 *
 * where W_g is the group's Cg rows of w (C x Kg x kh x kw, R values each)
 * and col2im / im2col map row (k, i, j), column (h, w) to output
 * (k, h*stride_h - pad_h + i*dil_h, w*stride_w - pad_w + j*dil_w), skipping
 * taps that fall outside P x Q. The workspace is one col (R x S floats).
 *
 * Threads: where one image's GEMM is too small for sgemm to split it
 * (SMALL_GEMM, as gemm.c), the forward and the data backward give each
 * thread whole images and a column buffer of its own (the workspace holds
 * one per core); otherwise sgemm splits itself and col2im is split over
 * output channels. Either way each output is summed in one order whatever
 * the thread count. The filter backward sums over images into one dw, in
 * image order. */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

/* Values below which col2im / im2col are not worth a team of threads. */
#define PARALLEL_MIN (1 << 15)
/* Multiply-adds below which sgemm keeps a GEMM on one thread (gemm.c). */
#define SMALL_GEMM 1e7

static size_t col_floats(const osp_conv_desc *d) {
    return (size_t)(d->k / d->groups) * d->kh * d->kw * (size_t)d->h * d->w;
}

size_t osp__cpu_deconv2d_workspace(const osp_conv_desc *d) {
    return col_floats(d) * (size_t)osp__kernel_slots() * sizeof(float);
}

/* The threads to give whole images to: 1 where sgemm splits each image's
 * GEMM itself (or there is one image). */
static int image_team(const osp_conv_desc *d) {
    const double macs = (double)(d->k / d->groups) * d->kh * d->kw * d->h * d->w * (d->c / d->groups);
    if (d->n < 2 || macs >= SMALL_GEMM) return 1;
    const int team = osp__kernel_team();
    return team < d->n ? team : d->n;
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The output coordinate of input index in along an axis for tap t. */
static inline int out_at(int in, int t, int stride, int pad, int dil) {
    return in * stride - pad + t * dil;
}

/* y (the group's Kg channels of one image, P x Q each) += col2im(col). */
static void col2im_add(const osp_conv_desc *d, const float *col, float *y) {
    const int kg = d->k / d->groups, hw = d->h * d->w;
    const int64_t work = (int64_t)kg * d->kh * d->kw * hw;
    (void)work;
#pragma omp parallel for schedule(static) if (work >= PARALLEL_MIN)
    for (int k = 0; k < kg; k++) {
        float *yk = y + (int64_t)k * d->p * d->q;
        for (int i = 0; i < d->kh; i++)
            for (int j = 0; j < d->kw; j++) {
                const float *row = col + ((int64_t)(k * d->kh + i) * d->kw + j) * hw;
                for (int h = 0; h < d->h; h++) {
                    const int oy = out_at(h, i, d->stride_h, d->pad_h, d->dil_h);
                    if (oy < 0 || oy >= d->p) continue;
                    float *yr = yk + (int64_t)oy * d->q;
                    const float *cr = row + (int64_t)h * d->w;
                    for (int w = 0; w < d->w; w++) {
                        const int ox = out_at(w, j, d->stride_w, d->pad_w, d->dil_w);
                        if (ox >= 0 && ox < d->q) yr[ox] += cr[w];
                    }
                }
            }
    }
}

/* col (R x S) = the group's Kg channels of dy gathered per tap (0 where
 * a tap falls outside P x Q). */
static void im2col_of(const osp_conv_desc *d, const float *dy, float *col) {
    const int kg = d->k / d->groups, hw = d->h * d->w;
    const int rows = kg * d->kh * d->kw;
    const int64_t work = (int64_t)rows * hw;
    (void)work;
#pragma omp parallel for schedule(static) if (work >= PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        const int k = r / (d->kh * d->kw), i = r / d->kw % d->kh, j = r % d->kw;
        const float *dk = dy + (int64_t)k * d->p * d->q;
        float *cr = col + (int64_t)r * hw;
        for (int h = 0; h < d->h; h++) {
            const int oy = out_at(h, i, d->stride_h, d->pad_h, d->dil_h);
            float *c = cr + (int64_t)h * d->w;
            if (oy < 0 || oy >= d->p) {
                memset(c, 0, (size_t)d->w * sizeof *c);
                continue;
            }
            const float *dr = dk + (int64_t)oy * d->q;
            for (int w = 0; w < d->w; w++) {
                const int ox = out_at(w, j, d->stride_w, d->pad_w, d->dil_w);
                c[w] = ox >= 0 && ox < d->q ? dr[ox] : 0.0f;
            }
        }
    }
}

/* One image's forward: y (K x P x Q) from x (C x H x W). */
static void forward_image(const osp_conv_desc *d, const float *x, const float *w,
                          const float *bias, float *y, float *col) {
    const int cg = d->c / d->groups, kg = d->k / d->groups, hw = d->h * d->w;
    const int rows = kg * d->kh * d->kw;
    const int64_t plane = (int64_t)d->p * d->q;
    memset(y, 0, (size_t)(d->k * plane) * sizeof *y);
    for (int g = 0; g < d->groups; g++) {
        osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, rows, hw, cg, 1.0f, w + (int64_t)g * cg * rows,
                       rows, x + (int64_t)g * cg * hw, hw, 0.0f, col, hw);
        col2im_add(d, col, y + (int64_t)g * kg * plane);
    }
    if (bias)
        for (int k = 0; k < d->k; k++) {
            float *yk = y + k * plane;
            for (int64_t i = 0; i < plane; i++) yk[i] += bias[k];
        }
}

void osp__cpu_deconv2d_forward(const osp_conv_desc *d, const float *x, const float *w,
                               const float *bias, float *y, void *workspace) {
    const int64_t x_img = (int64_t)d->c * d->h * d->w, y_img = (int64_t)d->k * d->p * d->q;
    const int64_t col = (int64_t)col_floats(d);
    const int team = image_team(d);
    (void)team;
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
    for (int n = 0; n < d->n; n++)
        forward_image(d, x + n * x_img, w, bias, y + n * y_img,
                      (float *)workspace + thread_id() * col);
}

/* One image's dx (C x H x W) += from dy (K x P x Q). */
static void data_image(const osp_conv_desc *d, const float *dy, const float *w, float *dx,
                       float *col) {
    const int cg = d->c / d->groups, kg = d->k / d->groups, hw = d->h * d->w;
    const int rows = kg * d->kh * d->kw;
    const int64_t plane = (int64_t)d->p * d->q;
    for (int g = 0; g < d->groups; g++) {
        im2col_of(d, dy + (int64_t)g * kg * plane, col);
        osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, cg, hw, rows, 1.0f, w + (int64_t)g * cg * rows,
                       rows, col, hw, 1.0f, dx + (int64_t)g * cg * hw, hw);
    }
}

void osp__cpu_deconv2d_backward_data(const osp_conv_desc *d, const float *dy, const float *w,
                                     float *dx, void *workspace) {
    const int64_t x_img = (int64_t)d->c * d->h * d->w, y_img = (int64_t)d->k * d->p * d->q;
    const int64_t col = (int64_t)col_floats(d);
    const int team = image_team(d);
    (void)team;
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
    for (int n = 0; n < d->n; n++)
        data_image(d, dy + n * y_img, w, dx + n * x_img, (float *)workspace + thread_id() * col);
}

void osp__cpu_deconv2d_backward_filter(const osp_conv_desc *d, const float *x, const float *dy,
                                       float *dw, float *db, void *workspace) {
    const int cg = d->c / d->groups, kg = d->k / d->groups, hw = d->h * d->w;
    const int rows = kg * d->kh * d->kw;
    const int64_t plane = (int64_t)d->p * d->q, y_img = (int64_t)d->k * plane;
    float *col = workspace;
    if (dw)
        for (int n = 0; n < d->n; n++)
            for (int g = 0; g < d->groups; g++) {
                im2col_of(d, dy + n * y_img + (int64_t)g * kg * plane, col);
                osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, cg, rows, hw, 1.0f,
                               x + ((int64_t)n * d->c + (int64_t)g * cg) * hw, hw, col, hw, 1.0f,
                               dw + (int64_t)g * cg * rows, rows);
            }
    if (db) {
        /* one channel per thread, images in order: a fixed order of sums */
#pragma omp parallel for schedule(static) if ((int64_t)d->n * y_img >= PARALLEL_MIN)
        for (int k = 0; k < d->k; k++) {
            double sum = 0;
            for (int n = 0; n < d->n; n++) {
                const float *p = dy + n * y_img + k * plane;
                for (int64_t i = 0; i < plane; i++) sum += p[i];
            }
            db[k] += (float)sum;
        }
    }
}
