/* Resampling 8-bit RGB into float planes, one axis at a time.
 *
 * Each axis gets a plan: for every output pixel, `taps` source indices and
 * weights. Shrinking averages by area (each output pixel is the mean of
 * the source pixels it covers, partial pixels weighted by their overlap),
 * which does not alias the way sampling does; enlarging interpolates
 * bilinearly between pixel centres. The horizontal pass turns the source
 * rows that the vertical plan needs into floats at the output width; the
 * vertical pass combines those rows into the output planes. */
#include <math.h>
#include <string.h>

#include "osprey/image.h"

typedef struct axis_plan {
    int n, taps;
    int *index; /* n x taps source indices, clamped to the image */
    float *w;   /* n x taps weights, summing to 1 for each output */
} axis_plan;

static int taps_for(float len, int out_n) {
    double s = (double)len / out_n;
    return s > 1 ? (int)ceil(s) + 1 : 2;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Convex combinations of values <= 1 can round a hair above it. (fminf is
 * a libm call here: it must handle NaN, which cannot occur.) */
static float at_most_1(float v) { return v < 1.0f ? v : 1.0f; }

/* Plans out_n outputs over source [x0, x0 + len) of an axis of src_n
 * pixels; index and w have room for out_n x taps. */
static void plan_axis(axis_plan *p, double x0, double len, int src_n) {
    double s = len / p->n;
    for (int o = 0; o < p->n; o++) {
        int *ix = p->index + (size_t)o * p->taps;
        float *w = p->w + (size_t)o * p->taps;
        double sum = 0;
        if (s > 1) {
            double a = x0 + o * s, b = a + s;
            double k0 = floor(a);
            for (int t = 0; t < p->taps; t++) {
                double lo = fmax(a, k0 + t), hi = fmin(b, k0 + t + 1);
                w[t] = hi > lo ? (float)(hi - lo) : 0.0f;
                ix[t] = clampi((int)k0 + t, 0, src_n - 1);
                sum += w[t];
            }
        } else {
            double c = x0 + (o + 0.5) * s - 0.5, k0 = floor(c), f = c - k0;
            w[0] = (float)(1 - f);
            w[1] = (float)f;
            ix[0] = clampi((int)k0, 0, src_n - 1);
            ix[1] = clampi((int)k0 + 1, 0, src_n - 1);
            sum = (double)w[0] + w[1];
        }
        for (int t = 0; t < p->taps; t++) w[t] = sum > 0 ? (float)(w[t] / sum) : (float)(t == 0);
    }
}

int osp_image_resample(const osp_image *img, osp_rect src, int flip, int channels, float *out,
                       int out_h, int out_w, int dst_x, int dst_y, int dst_w, int dst_h) {
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 || !out)
        return osp_error(OSP_EINVAL, "osp_image_resample: empty image or output");
    if (channels != 1 && channels != 3)
        return osp_error(OSP_EINVAL, "osp_image_resample: %d channels (1 or 3 are possible)", channels);
    if (!(src.w > 0) || !(src.h > 0) || !isfinite(src.x) || !isfinite(src.y) || !isfinite(src.w) ||
        !isfinite(src.h))
        return osp_error(OSP_EINVAL, "osp_image_resample: empty or invalid source rectangle");
    /* a pixel of slack for rounding in the caller's arithmetic */
    if (src.x < -1 || src.y < -1 || src.x + src.w > img->width + 1.0f ||
        src.y + src.h > img->height + 1.0f)
        return osp_error(OSP_EINVAL, "osp_image_resample: source rectangle outside the image");
    if (dst_w <= 0 || dst_h <= 0 || dst_x < 0 || dst_y < 0 || dst_x > out_w - dst_w ||
        dst_y > out_h - dst_h)
        return osp_error(OSP_EINVAL, "osp_image_resample: destination outside the output");
    axis_plan px = {.n = dst_w, .taps = taps_for(src.w, dst_w)};
    axis_plan py = {.n = dst_h, .taps = taps_for(src.h, dst_h)};
    size_t nx = (size_t)px.n * px.taps, ny = (size_t)py.n * py.taps;
    /* One block: both plans, then the rows of the horizontal pass. */
    size_t head = (nx + ny) * (sizeof(int) + sizeof(float));
    head = (head + 63) / 64 * 64;
    unsigned char *block = osp_alloc(head);
    if (!block) return OSP_ENOMEM;
    px.index = (int *)block;
    py.index = px.index + nx;
    px.w = (float *)(py.index + ny);
    py.w = px.w + nx;
    plan_axis(&px, src.x, src.w, img->width);
    plan_axis(&py, src.y, src.h, img->height);

    int y_lo = img->height, y_hi = -1;
    for (size_t k = 0; k < ny; k++) {
        if (py.index[k] < y_lo) y_lo = py.index[k];
        if (py.index[k] > y_hi) y_hi = py.index[k];
    }
    const size_t row_len = (size_t)dst_w * 3;
    float *rows = osp_alloc(((size_t)(y_hi - y_lo + 1) + 1) * row_len * sizeof(float));
    if (!rows) {
        osp_free(block);
        return OSP_ENOMEM;
    }
    float *acc = rows + (size_t)(y_hi - y_lo + 1) * row_len;

    for (int y = y_lo; y <= y_hi; y++) {
        const uint8_t *s = img->pixels + (size_t)y * img->width * 3;
        float *r = rows + (size_t)(y - y_lo) * row_len;
        for (int o = 0; o < dst_w; o++) {
            const int *ix = px.index + (size_t)o * px.taps;
            const float *w = px.w + (size_t)o * px.taps;
            float a = 0, b = 0, c = 0;
            for (int t = 0; t < px.taps; t++) {
                const uint8_t *p = s + (size_t)ix[t] * 3;
                a += w[t] * p[0];
                b += w[t] * p[1];
                c += w[t] * p[2];
            }
            float *d = r + (size_t)(flip ? dst_w - 1 - o : o) * 3;
            d[0] = a;
            d[1] = b;
            d[2] = c;
        }
    }

    const size_t plane = (size_t)out_h * out_w;
    for (int o = 0; o < dst_h; o++) {
        const int *iy = py.index + (size_t)o * py.taps;
        const float *w = py.w + (size_t)o * py.taps;
        memset(acc, 0, row_len * sizeof(float));
        for (int t = 0; t < py.taps; t++) {
            const float *r = rows + (size_t)(iy[t] - y_lo) * row_len;
            const float wt = w[t] * (1.0f / 255.0f);
            for (size_t j = 0; j < row_len; j++) acc[j] += wt * r[j];
        }
        float *d = out + (size_t)(dst_y + o) * out_w + dst_x;
        if (channels == 3) {
            for (int x = 0; x < dst_w; x++) {
                d[x] = at_most_1(acc[3 * x]);
                d[plane + x] = at_most_1(acc[3 * x + 1]);
                d[2 * plane + x] = at_most_1(acc[3 * x + 2]);
            }
        } else {
            for (int x = 0; x < dst_w; x++)
                d[x] = at_most_1(0.299f * acc[3 * x] + 0.587f * acc[3 * x + 1] + 0.114f * acc[3 * x + 2]);
        }
    }
    osp_free(rows);
    osp_free(block);
    return OSP_OK;
}
