/* 2-D resizing (osp_resize_desc in osprey/kernels.h), as ONNX's Resize
 * defines it: an output coordinate x maps to the input coordinate
 * transform(x), which nearest rounds and linear interpolates between its
 * two neighbours, clamped to the edge. Both axes are separable, so each
 * output is a weighted sum of at most 2 x 2 inputs; the backward scatters
 * each output's gradient to those inputs with the same weights. Threads own
 * whole planes, so the sums do not depend on the thread count. */
#include <math.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)

/* The taps of output coordinate x on one axis: inputs i0 and i1 with
 * weights 1 - w and w (nearest: i0 == i1, w = 0). */
typedef struct tap {
    int i0, i1;
    float w;
} tap;

/* In float, as ONNX Runtime computes it: where the result lands on a
 * rounding boundary (1.5 / 0.6f - 0.5 is just below 2), double precision
 * would round the other way. */
static float source_coord(const osp_resize_desc *d, int xi, int in, int out, float scale) {
    float x = (float)xi;
    switch (d->coord) {
    case OSP_COORD_HALF_PIXEL: return (x + 0.5f) / scale - 0.5f;
    case OSP_COORD_PYTORCH_HALF_PIXEL: return out > 1 ? (x + 0.5f) / scale - 0.5f : 0.0f;
    case OSP_COORD_ALIGN_CORNERS:
        return out > 1 ? x * (float)(in - 1) / (float)(out - 1) : 0.0f;
    case OSP_COORD_ASYMMETRIC: return x / scale;
    case OSP_COORD_TF_HALF_PIXEL_FOR_NN: return (x + 0.5f) / scale;
    }
    return 0.0f;
}

static int round_nearest(osp_resize_nearest mode, float s) {
    float f = floorf(s), frac = s - f;
    switch (mode) {
    case OSP_NEAREST_FLOOR: return (int)f;
    case OSP_NEAREST_CEIL: return (int)ceilf(s);
    case OSP_NEAREST_ROUND_PREFER_CEIL: return (int)(frac >= 0.5f ? f + 1 : f);
    case OSP_NEAREST_ROUND_PREFER_FLOOR: break;
    }
    return (int)(frac > 0.5f ? f + 1 : f);
}

static int clamp(int i, int len) { return i < 0 ? 0 : i >= len ? len - 1 : i; }

static tap tap_of(const osp_resize_desc *d, int x, int in, int out, float scale) {
    float s = source_coord(d, x, in, out, scale);
    tap t;
    if (d->mode == OSP_INTERP_NEAREST) {
        /* Coordinates far outside are clamped before the cast. */
        s = s < -1.0f ? -1.0f : s > (float)in ? (float)in : s;
        t.i0 = t.i1 = clamp(round_nearest(d->nearest, s), in);
        t.w = 0.0f;
        return t;
    }
    s = s < 0.0f ? 0.0f : s > (float)(in - 1) ? (float)(in - 1) : s;
    t.i0 = (int)s;
    t.i1 = t.i0 + 1 < in ? t.i0 + 1 : t.i0;
    t.w = s - (float)t.i0;
    return t;
}

void osp__cpu_resize_forward(const osp_resize_desc *d, const float *x, float *y) {
    const int64_t in_size = (int64_t)d->in_h * d->in_w, out_size = (int64_t)d->out_h * d->out_w;
#pragma omp parallel for schedule(static) if (d->planes * out_size >= PARALLEL_MIN && d->planes > 1)
    for (int64_t p = 0; p < d->planes; p++) {
        const float *xp = x + p * in_size;
        float *yp = y + p * out_size;
        for (int oy = 0; oy < d->out_h; oy++) {
            tap ty = tap_of(d, oy, d->in_h, d->out_h, d->scale_h);
            const float *r0 = xp + (int64_t)ty.i0 * d->in_w, *r1 = xp + (int64_t)ty.i1 * d->in_w;
            float *yr = yp + (int64_t)oy * d->out_w;
            for (int ox = 0; ox < d->out_w; ox++) {
                tap tx = tap_of(d, ox, d->in_w, d->out_w, d->scale_w);
                if (d->mode == OSP_INTERP_NEAREST) {
                    yr[ox] = r0[tx.i0];
                    continue;
                }
                float top = r0[tx.i0] + tx.w * (r0[tx.i1] - r0[tx.i0]);
                float bottom = r1[tx.i0] + tx.w * (r1[tx.i1] - r1[tx.i0]);
                yr[ox] = top + ty.w * (bottom - top);
            }
        }
    }
}

void osp__cpu_resize_backward(const osp_resize_desc *d, const float *dy, float *dx) {
    const int64_t in_size = (int64_t)d->in_h * d->in_w, out_size = (int64_t)d->out_h * d->out_w;
#pragma omp parallel for schedule(static) if (d->planes * out_size >= PARALLEL_MIN && d->planes > 1)
    for (int64_t p = 0; p < d->planes; p++) {
        float *dxp = dx + p * in_size;
        const float *dyp = dy + p * out_size;
        for (int oy = 0; oy < d->out_h; oy++) {
            tap ty = tap_of(d, oy, d->in_h, d->out_h, d->scale_h);
            float *r0 = dxp + (int64_t)ty.i0 * d->in_w, *r1 = dxp + (int64_t)ty.i1 * d->in_w;
            const float *g = dyp + (int64_t)oy * d->out_w;
            for (int ox = 0; ox < d->out_w; ox++) {
                tap tx = tap_of(d, ox, d->in_w, d->out_w, d->scale_w);
                if (d->mode == OSP_INTERP_NEAREST) {
                    r0[tx.i0] += g[ox];
                    continue;
                }
                float top = g[ox] * (1.0f - ty.w), bottom = g[ox] * ty.w;
                r0[tx.i0] += top * (1.0f - tx.w);
                r0[tx.i1] += top * tx.w;
                r1[tx.i0] += bottom * (1.0f - tx.w);
                r1[tx.i1] += bottom * tx.w;
            }
        }
    }
}
