/* From a decoded photo to a network input: where to take the sample from
 * (a plan, decided from the header's size before decoding, so that JPEGs
 * can shrink on load and decode only the part the plan reads), then
 * resampling, flipping and colour jitter.
 *
 * With a generator the plan is random (training augmentation); the draws
 * happen in a fixed order (crop, flip, jitter), so a generator seeded the
 * same way gives the same sample. */
#include <math.h>
#include <string.h>

#include "decode_impl.h"
#include "resample_impl.h"

osp_transform osp_transform_defaults(int channels, int height, int width) {
    osp_transform t;
    memset(&t, 0, sizeof t);
    t.channels = channels;
    t.height = height;
    t.width = width;
    t.resize = OSP_RESIZE_CENTER;
    t.crop_fraction = 0.875f;
    t.augment.scale_min = 0.08f;
    t.augment.scale_max = 1.0f;
    t.augment.ratio_min = 3.0f / 4.0f;
    t.augment.ratio_max = 4.0f / 3.0f;
    return t;
}

int osp_transform_check(const osp_transform *t) {
    const osp_augment *a = &t->augment;
    if (t->channels != 1 && t->channels != 3)
        return osp_error(OSP_EINVAL, "images give 1 (grey) or 3 (RGB) channels, not %d", t->channels);
    if (t->height < 1 || t->width < 1 || t->height > 16384 || t->width > 16384)
        return osp_error(OSP_EINVAL, "sample size %dx%d is outside 1..16384", t->height, t->width);
    if (t->resize < OSP_RESIZE_CENTER || t->resize > OSP_RESIZE_LETTERBOX)
        return osp_error(OSP_EINVAL, "unknown resize mode %d", (int)t->resize);
    if (!(t->crop_fraction > 0 && t->crop_fraction <= 1))
        return osp_error(OSP_EINVAL, "the crop fraction must be in (0, 1], not %g", t->crop_fraction);
    if (!(a->scale_min > 0 && a->scale_min <= a->scale_max && a->scale_max <= 1))
        return osp_error(OSP_EINVAL, "crop scale %g..%g must satisfy 0 < min <= max <= 1",
                         a->scale_min, a->scale_max);
    if (!(a->ratio_min > 0 && a->ratio_min <= a->ratio_max && isfinite(a->ratio_max)))
        return osp_error(OSP_EINVAL, "crop ratio %g..%g must satisfy 0 < min <= max", a->ratio_min,
                         a->ratio_max);
    if (a->short_max > 0) {
        int need = t->height > t->width ? t->height : t->width;
        if (a->short_min < need || a->short_min > a->short_max || a->short_max > 65536)
            return osp_error(OSP_EINVAL, "multi-scale short side %d..%d must satisfy %d <= min <= "
                             "max (the sample's larger side first)", a->short_min, a->short_max,
                             need);
    }
    if (!(a->jitter >= 0 && a->jitter < 1))
        return osp_error(OSP_EINVAL, "colour jitter must be in [0, 1), not %g", a->jitter);
    return OSP_OK;
}

static float uniform(osp_rng *r, float lo, float hi) { return lo + (hi - lo) * osp_rng_uniform(r); }

/* torchvision's RandomResizedCrop: up to ten tries at an area and aspect
 * that fit, else the whole image cut to the nearest allowed aspect. */
static osp_rect random_resized_crop(const osp_augment *a, float W, float H, osp_rng *r) {
    for (int attempt = 0; attempt < 10; attempt++) {
        float area = W * H * uniform(r, a->scale_min, a->scale_max);
        float ratio = expf(uniform(r, logf(a->ratio_min), logf(a->ratio_max)));
        float w = sqrtf(area * ratio), h = sqrtf(area / ratio);
        if (w <= W && h <= H) {
            float x = uniform(r, 0, W - w), y = uniform(r, 0, H - h);
            return (osp_rect){x, y, w, h};
        }
    }
    float w = W, h = H;
    if (W / H < a->ratio_min) h = W / a->ratio_min;
    else if (W / H > a->ratio_max) w = H * a->ratio_max;
    return (osp_rect){(W - w) / 2, (H - h) / 2, w, h};
}

/* Deep Image's multi-scale training: the image scaled so its short side
 * is a random length in [short_min, short_max], and an output-sized
 * window taken at random from it. */
static osp_rect multi_scale_crop(const osp_transform *t, float W, float H, osp_rng *r) {
    const osp_augment *a = &t->augment;
    int side = a->short_min + (int)osp_rng_below(r, (uint64_t)(a->short_max - a->short_min + 1));
    float k = (float)side / fminf(W, H);
    float w = fminf((float)t->width / k, W), h = fminf((float)t->height / k, H);
    float x = uniform(r, 0, W - w), y = uniform(r, 0, H - h);
    return (osp_rect){x, y, w, h};
}

void osp_transform_plan(const osp_transform *t, int width, int height, osp_rng *rng,
                        osp_sample_plan *p) {
    const float W = (float)width, H = (float)height;
    const float ow = (float)t->width, oh = (float)t->height;
    memset(p, 0, sizeof *p);
    p->dst_w = t->width;
    p->dst_h = t->height;
    p->brightness = p->contrast = p->saturation = 1;
    const osp_augment *a = &t->augment;
    if (rng && a->short_max > 0) {
        p->src = multi_scale_crop(t, W, H, rng);
    } else if (rng && a->crop) {
        p->src = random_resized_crop(a, W, H, rng);
    } else if (t->resize == OSP_RESIZE_STRETCH) {
        p->src = (osp_rect){0, 0, W, H};
    } else if (t->resize == OSP_RESIZE_LETTERBOX) {
        float k = fminf(ow / W, oh / H);
        int dw = (int)lroundf(W * k), dh = (int)lroundf(H * k);
        p->dst_w = dw < 1 ? 1 : dw > t->width ? t->width : dw;
        p->dst_h = dh < 1 ? 1 : dh > t->height ? t->height : dh;
        p->dst_x = (t->width - p->dst_w) / 2;
        p->dst_y = (t->height - p->dst_h) / 2;
        p->src = (osp_rect){0, 0, W, H};
    } else {
        /* scale k puts the output over crop_fraction of the short side */
        float k = fmaxf(ow / W, oh / H) / t->crop_fraction;
        float w = fminf(ow / k, W), h = fminf(oh / k, H);
        p->src = (osp_rect){(W - w) / 2, (H - h) / 2, w, h};
    }
    if (!rng) return;
    if (a->flip) p->flip = osp_rng_uniform(rng) < 0.5f;
    if (a->jitter > 0) {
        p->brightness = uniform(rng, 1 - a->jitter, 1 + a->jitter);
        p->contrast = uniform(rng, 1 - a->jitter, 1 + a->jitter);
        p->saturation = uniform(rng, 1 - a->jitter, 1 + a->jitter);
    }
}

static float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

/* Brightness scales, contrast blends with the mean grey level, saturation
 * with each pixel's own grey; each step is clamped to [0, 1] as
 * torchvision's ColorJitter does. */
static void jitter(const osp_sample_plan *p, float *x, int channels, size_t plane) {
    size_t n = plane * (size_t)channels;
    if (p->brightness != 1)
        for (size_t i = 0; i < n; i++) x[i] = clamp01(x[i] * p->brightness);
    if (p->contrast != 1) {
        double sum = 0;
        for (size_t i = 0; i < plane; i++)
            sum += channels == 3 ? 0.299f * x[i] + 0.587f * x[plane + i] + 0.114f * x[2 * plane + i]
                                 : x[i];
        float mean = (float)(sum / (double)plane);
        for (size_t i = 0; i < n; i++) x[i] = clamp01((x[i] - mean) * p->contrast + mean);
    }
    if (p->saturation != 1 && channels == 3)
        for (size_t i = 0; i < plane; i++) {
            float g = 0.299f * x[i] + 0.587f * x[plane + i] + 0.114f * x[2 * plane + i];
            for (int c = 0; c < 3; c++) {
                float *v = x + (size_t)c * plane + i;
                *v = clamp01((*v - g) * p->saturation + g);
            }
        }
}

/* Renders the plan from img, a part of a (maybe shrunken) decode of a
 * full_width x full_height image that lies where at says. */
static int apply_placed(const osp_transform *t, const osp_sample_plan *p, const osp_image *img,
                        const osp__placement *at, int full_width, int full_height, float *out) {
    if (!img || !img->pixels || full_width <= 0 || full_height <= 0)
        return osp_error(OSP_EINVAL, "osp_transform_apply: empty image");
    const size_t plane = (size_t)t->height * t->width;
    if (p->dst_w != t->width || p->dst_h != t->height)
        for (size_t i = 0; i < plane * (size_t)t->channels; i++) out[i] = 0.5f; /* letterbox bars */
    /* the plan is in full-size pixels; img may be a shrunken decode */
    float sx = (float)at->full_width / (float)full_width, sy = (float)at->full_height / (float)full_height;
    osp_rect r = {p->src.x * sx, p->src.y * sy, p->src.w * sx, p->src.h * sy};
    int rc = osp__image_resample_isa(img, at->x, at->y, r, p->flip, t->channels, out, t->height, t->width,
                                     p->dst_x, p->dst_y, p->dst_w, p->dst_h, OSP__RESAMPLE_AUTO);
    if (rc != OSP_OK) return rc;
    jitter(p, out, t->channels, plane);
    return OSP_OK;
}

int osp_transform_apply(const osp_transform *t, const osp_sample_plan *p, const osp_image *img,
                        int full_width, int full_height, float *out) {
    const osp__placement whole = {0, 0, img ? img->width : 0, img ? img->height : 0};
    return apply_placed(t, p, img, &whole, full_width, full_height, out);
}

/* The part of a width x height image that plans 0..n-1 read, or NULL
 * (into *w) when that is all of it. */
static const osp__window *window_of(const osp_sample_plan *plans, int n, int width, int height, osp__window *w) {
    *w = (osp__window){width, height, 0, 0};
    for (int i = 0; i < n; i++) {
        const osp_rect *r = &plans[i].src;
        w->x0 = fmin(w->x0, r->x);
        w->y0 = fmin(w->y0, r->y);
        w->x1 = fmax(w->x1, (double)r->x + r->w);
        w->y1 = fmax(w->y1, (double)r->y + r->h);
    }
    /* less than a few rows or columns to spare: not worth a cut */
    if (w->x0 <= 8 && w->y0 <= 8 && w->x1 >= width - 8 && w->y1 >= height - 8) return NULL;
    return w;
}

int osp_image_to_sample(const void *buf, size_t len, const char *name, const osp_transform *t,
                        int64_t max_pixels, osp_rng *rng, float *out) {
    osp_image_info info;
    int rc = osp_image_probe(buf, len, name, max_pixels, &info);
    if (rc != OSP_OK) return rc;
    osp_sample_plan plan;
    osp_transform_plan(t, info.width, info.height, rng, &plan);
    /* The decode may shrink as long as the planned window keeps at least
     * one source pixel per output pixel. */
    osp_decode_options opt = {.max_pixels = max_pixels};
    double need_w = ceil((double)info.width * plan.dst_w / plan.src.w - 1e-3);
    double need_h = ceil((double)info.height * plan.dst_h / plan.src.h - 1e-3);
    opt.min_width = need_w >= info.width ? 0 : (int)need_w;
    opt.min_height = need_h >= info.height ? 0 : (int)need_h;
    if (opt.min_width == 0 || opt.min_height == 0) opt.min_width = opt.min_height = 0;
    osp_image img;
    osp__window w;
    osp__placement at;
    rc = osp__image_decode_window(buf, len, name, &opt, window_of(&plan, 1, info.width, info.height, &w), &img, &at);
    if (rc != OSP_OK) return rc;
    rc = apply_placed(t, &plan, &img, &at, info.width, info.height, out);
    osp_image_free(&img);
    return rc;
}

int osp_image_to_samples(const void *buf, size_t len, const char *name, const osp_transform *t,
                         int n, int64_t max_pixels, float *const *out) {
    if (n < 1 || n > 64) return osp_error(OSP_EINVAL, "1 to 64 transforms at once, not %d", n);
    osp_image_info info;
    int rc = osp_image_probe(buf, len, name, max_pixels, &info);
    if (rc != OSP_OK) return rc;
    osp_sample_plan plans[64];
    /* One decode for all: shrunk only as far as the largest need allows. */
    int min_w = 0, min_h = 0, full = 0;
    for (int i = 0; i < n; i++) {
        osp_transform_plan(&t[i], info.width, info.height, NULL, &plans[i]);
        double need_w = ceil((double)info.width * plans[i].dst_w / plans[i].src.w - 1e-3);
        double need_h = ceil((double)info.height * plans[i].dst_h / plans[i].src.h - 1e-3);
        if (need_w >= info.width || need_h >= info.height) full = 1;
        if (need_w > min_w) min_w = (int)need_w;
        if (need_h > min_h) min_h = (int)need_h;
    }
    osp_decode_options opt = {.max_pixels = max_pixels};
    if (!full) {
        opt.min_width = min_w;
        opt.min_height = min_h;
    }
    osp_image img;
    osp__window w;
    osp__placement at;
    rc = osp__image_decode_window(buf, len, name, &opt, window_of(plans, n, info.width, info.height, &w), &img, &at);
    if (rc != OSP_OK) return rc;
    for (int i = 0; i < n && rc == OSP_OK; i++)
        rc = apply_placed(&t[i], &plans[i], &img, &at, info.width, info.height, out[i]);
    osp_image_free(&img);
    return rc;
}

void osp_image_normalize(float *x, int channels, int64_t plane, const float *mean,
                         const float *std) {
    for (int c = 0; c < channels; c++) {
        int k = c < 4 ? c : 0;
        float m = mean[k], inv = 1.0f / std[k];
        float *p = x + (int64_t)c * plane;
        for (int64_t i = 0; i < plane; i++) p[i] = (p[i] - m) * inv;
    }
}
