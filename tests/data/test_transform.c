/* Transforms: the geometry of center, stretch and letterbox; random crops,
 * multi-scale crops, flips and jitter within their ranges and the same for
 * the same generator; shrink-on-load giving what a full decode gives. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imagegen.h"
#include "osprey/image.h"

Test(transform, center_crop_geometry) {
    osp_transform t = osp_transform_defaults(3, 224, 224);
    osp_sample_plan p;
    osp_transform_plan(&t, 400, 300, NULL, &p);
    /* resize 300 -> 256, crop 224: 224 / 256 of the short side */
    float side = 300 * 0.875f;
    cr_assert_float_eq(p.src.w, side, 1e-3);
    cr_assert_float_eq(p.src.h, side, 1e-3);
    cr_assert_float_eq(p.src.x, (400 - side) / 2, 1e-3);
    cr_assert_float_eq(p.src.y, (300 - side) / 2, 1e-3);
    cr_assert_eq(p.dst_w, 224);
    cr_assert_eq(p.flip, 0);
    cr_assert_eq(p.brightness, 1);
    t.crop_fraction = 1;
    osp_transform_plan(&t, 300, 400, NULL, &p);
    cr_assert_float_eq(p.src.w, 300, 1e-3);
    cr_assert_float_eq(p.src.y, 50, 1e-3);
    t.resize = OSP_RESIZE_STRETCH;
    osp_transform_plan(&t, 300, 400, NULL, &p);
    cr_assert_float_eq(p.src.h, 400, 1e-6);
}

Test(transform, letterbox) {
    osp_transform t = osp_transform_defaults(3, 8, 8);
    t.resize = OSP_RESIZE_LETTERBOX;
    osp_image img = {4, 2, malloc(24)};
    memset(img.pixels, 255, 24);
    osp_sample_plan p;
    osp_transform_plan(&t, 4, 2, NULL, &p);
    cr_assert_eq(p.dst_w, 8);
    cr_assert_eq(p.dst_h, 4);
    cr_assert_eq(p.dst_y, 2);
    float out[3 * 64];
    cr_assert_eq(osp_transform_apply(&t, &p, &img, 4, 2, out), OSP_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                cr_assert_float_eq(out[(c * 8 + y) * 8 + x], y >= 2 && y < 6 ? 1.0f : 0.5f, 1e-6);
    free(img.pixels);
}

Test(transform, random_resized_crop_ranges) {
    osp_transform t = osp_transform_defaults(3, 32, 32);
    t.augment.crop = 1;
    t.augment.scale_min = 0.2f;
    t.augment.scale_max = 0.6f;
    int flips = 0;
    t.augment.flip = 1;
    for (int i = 0; i < 2000; i++) {
        osp_rng r;
        osp_rng_derive(&r, 5, 0, (uint64_t)i);
        osp_sample_plan p;
        osp_transform_plan(&t, 640, 480, &r, &p);
        cr_assert(p.src.x >= 0 && p.src.y >= 0 && p.src.x + p.src.w <= 640.01f &&
                  p.src.y + p.src.h <= 480.01f);
        float area = p.src.w * p.src.h / (640.0f * 480.0f), ratio = p.src.w / p.src.h;
        cr_assert(area >= 0.2f - 1e-3 && area <= 0.6f + 1e-3, "area %g", area);
        cr_assert(ratio >= 0.75f - 1e-3 && ratio <= 4 / 3.0f + 1e-3, "ratio %g", ratio);
        flips += p.flip;
        /* the same generator gives the same plan */
        osp_rng again;
        osp_rng_derive(&again, 5, 0, (uint64_t)i);
        osp_sample_plan q;
        osp_transform_plan(&t, 640, 480, &again, &q);
        cr_assert(!memcmp(&p, &q, sizeof p));
    }
    cr_assert(flips > 900 && flips < 1100, "%d flips in 2000", flips);
}

Test(transform, random_crop_of_a_thin_image_falls_back) {
    osp_transform t = osp_transform_defaults(3, 32, 32);
    t.augment.crop = 1;
    t.augment.scale_min = 0.9f;
    osp_rng r;
    osp_rng_seed(&r, 1);
    osp_sample_plan p;
    osp_transform_plan(&t, 1000, 10, &r, &p); /* no 3:4..4:3 window of 90% fits */
    cr_assert_float_eq(p.src.h, 10, 1e-4);
    cr_assert_float_eq(p.src.w, 10 * 4 / 3.0f, 1e-3);
}

Test(transform, multi_scale) {
    osp_transform t = osp_transform_defaults(3, 224, 224);
    t.augment.short_min = 256;
    t.augment.short_max = 512;
    cr_assert_eq(osp_transform_check(&t), OSP_OK);
    int lo = 1000, hi = 0;
    for (int i = 0; i < 500; i++) {
        osp_rng r;
        osp_rng_derive(&r, 9, 1, (uint64_t)i);
        osp_sample_plan p;
        osp_transform_plan(&t, 1200, 900, &r, &p);
        /* 224 output pixels over src.w source pixels: short side scaled to */
        int side = (int)lroundf(224.0f / p.src.w * 900);
        if (side < lo) lo = side;
        if (side > hi) hi = side;
        cr_assert(p.src.x >= 0 && p.src.x + p.src.w <= 1200.01f);
    }
    cr_assert(lo >= 256 && lo < 280 && hi <= 512 && hi > 490, "%d..%d", lo, hi);
    t.augment.short_min = 100; /* below the output size */
    cr_assert_eq(osp_transform_check(&t), OSP_EINVAL);
}

Test(transform, jitter_stays_in_range) {
    osp_transform t = osp_transform_defaults(3, 16, 16);
    t.augment.jitter = 0.4f;
    uint8_t *rgb = gen_rgb(16, 16);
    osp_image img = {16, 16, rgb};
    float out[3 * 256], plain[3 * 256];
    osp_sample_plan p;
    osp_transform_plan(&t, 16, 16, NULL, &p);
    cr_assert_eq(osp_transform_apply(&t, &p, &img, 16, 16, plain), OSP_OK);
    int changed = 0;
    for (int i = 0; i < 50; i++) {
        osp_rng r;
        osp_rng_derive(&r, 3, 0, (uint64_t)i);
        osp_transform_plan(&t, 16, 16, &r, &p);
        cr_assert(p.brightness >= 0.6f && p.brightness <= 1.4f);
        cr_assert(p.saturation >= 0.6f && p.saturation <= 1.4f);
        cr_assert_eq(osp_transform_apply(&t, &p, &img, 16, 16, out), OSP_OK);
        for (int k = 0; k < 3 * 256; k++) cr_assert(out[k] >= 0 && out[k] <= 1);
        changed += memcmp(out, plain, sizeof out) != 0;
    }
    cr_assert_eq(changed, 50);
    free(rgb);
}

Test(transform, checks) {
    osp_transform t = osp_transform_defaults(2, 8, 8);
    cr_assert_eq(osp_transform_check(&t), OSP_EINVAL);
    t = osp_transform_defaults(3, 8, 8);
    t.crop_fraction = 0;
    cr_assert_eq(osp_transform_check(&t), OSP_EINVAL);
    t = osp_transform_defaults(3, 8, 8);
    t.augment.scale_min = 0.9f;
    t.augment.scale_max = 0.5f;
    cr_assert_eq(osp_transform_check(&t), OSP_EINVAL);
    t = osp_transform_defaults(3, 8, 8);
    t.augment.jitter = 1.5f;
    cr_assert_eq(osp_transform_check(&t), OSP_EINVAL);
}

/* A JPEG decoded at 1/4 size (shrink-on-load) and resampled gives nearly
 * what the full decode does. */
Test(transform, shrink_on_load_matches_full_decode) {
    size_t n;
    uint8_t *j = gen_jpeg_rgb(960, 720, 95, &n);
    osp_transform t = osp_transform_defaults(3, 64, 64);
    float fast[3 * 64 * 64], full[3 * 64 * 64];
    cr_assert_eq(osp_image_to_sample(j, n, "a.jpg", &t, 0, NULL, fast), OSP_OK);
    osp_image img;
    osp_image_info info;
    cr_assert_eq(osp_image_decode(j, n, "a.jpg", NULL, &img, &info), OSP_OK);
    osp_sample_plan p;
    osp_transform_plan(&t, info.width, info.height, NULL, &p);
    cr_assert_eq(osp_transform_apply(&t, &p, &img, info.width, info.height, full), OSP_OK);
    double diff = 0;
    for (int i = 0; i < 3 * 64 * 64; i++) diff += fabs(fast[i] - full[i]);
    cr_assert_lt(diff / (3 * 64 * 64), 0.01, "mean difference %g", diff / (3 * 64 * 64));
    osp_image_free(&img);
    free(j);
}

Test(transform, normalize) {
    float x[2 * 3] = {0, 0.5f, 1, 0, 0.5f, 1};
    const float mean[2] = {0.5f, 0.25f}, std[2] = {0.5f, 0.25f};
    osp_image_normalize(x, 2, 3, mean, std);
    const float want[6] = {-1, 0, 1, -1, 1, 3};
    for (int i = 0; i < 6; i++) cr_assert_float_eq(x[i], want[i], 1e-6);
}

/* Several sizes from one decode: each the same as a lone decode for it,
 * except where a larger size keeps a JPEG from shrinking as far on load
 * (then within the error of the DCT scaling). */
Test(transform, several_sizes_from_one_decode) {
    size_t jlen, plen;
    uint8_t *jpeg = gen_jpeg_rgb(640, 480, 95, &jlen), *png = gen_png_rgb(64, 48, &plen);
    osp_transform t[2] = {osp_transform_defaults(3, 24, 24), osp_transform_defaults(3, 200, 200)};
    float *a[2], *b[2];
    for (int i = 0; i < 2; i++) {
        a[i] = malloc(3 * 200 * 200 * sizeof(float));
        b[i] = malloc(3 * 200 * 200 * sizeof(float));
    }
    cr_assert_eq(osp_image_to_samples(png, plen, "p.png", t, 2, 0, a), 0, "%s", osp_last_error());
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(osp_image_to_sample(png, plen, "p.png", &t[i], 0, NULL, b[i]), 0);
        cr_assert(memcmp(a[i], b[i], (size_t)(3 * t[i].height * t[i].width) * sizeof(float)) == 0, "png size %d", i);
    }
    cr_assert_eq(osp_image_to_samples(jpeg, jlen, "j.jpg", t, 2, 0, a), 0, "%s", osp_last_error());
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(osp_image_to_sample(jpeg, jlen, "j.jpg", &t[i], 0, NULL, b[i]), 0);
        for (int k = 0; k < 3 * t[i].height * t[i].width; k++)
            cr_assert(fabsf(a[i][k] - b[i][k]) < 0.08f, "jpeg size %d at %d: %g vs %g", i, k, a[i][k], b[i][k]);
    }
    cr_assert_eq(osp_image_to_samples(png, plen / 2, "cut.png", t, 2, 0, a), OSP_EFORMAT);
    cr_assert_eq(osp_image_to_samples(png, plen, "p.png", t, 0, 0, a), OSP_EINVAL);
    for (int i = 0; i < 2; i++) {
        free(a[i]);
        free(b[i]);
    }
    free(jpeg);
    free(png);
}

/* The sample the plan asks for, from a decode of the whole image (shrunk
 * on load as osp_image_to_sample shrinks it): what a decode of only the
 * part the plan reads must give. */
static void whole_decode_sample(const uint8_t *j, size_t n, const osp_transform *t, const osp_sample_plan *p,
                                float *out) {
    osp_image_info info;
    cr_assert_eq(osp_image_probe(j, n, "w.jpg", 0, &info), OSP_OK);
    osp_decode_options opt = {0};
    double need_w = ceil((double)info.width * p->dst_w / p->src.w - 1e-3);
    double need_h = ceil((double)info.height * p->dst_h / p->src.h - 1e-3);
    if (need_w < info.width && need_h < info.height) {
        opt.min_width = (int)need_w;
        opt.min_height = (int)need_h;
    }
    osp_image img;
    cr_assert_eq(osp_image_decode(j, n, "w.jpg", &opt, &img, NULL), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(osp_transform_apply(t, p, &img, info.width, info.height, out), OSP_OK);
    osp_image_free(&img);
}

/* A JPEG decoded in part (the window a center crop or a random crop
 * reads, at every shrink-on-load scale, in every EXIF orientation, 4:2:0
 * and 4:4:4, landscape and portrait) gives the very floats that the whole
 * decode gives. */
Test(transform, a_window_decodes_what_the_whole_does) {
    const int sizes[][2] = {{640, 480}, {480, 640}, {333, 251}, {1000, 180}};
    const int outs[][3] = {{3, 64, 64}, {3, 100, 60}, {1, 32, 32}, {3, 224, 224}};
    for (size_t s = 0; s < 4; s++) {
        const int w = sizes[s][0], h = sizes[s][1];
        uint8_t *px = gen_rgb(w, h);
        for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(px[i] + (uint32_t)i * 7919u % 61u); /* texture */
        size_t n;
        uint8_t *plain = gen_jpeg(px, w, h, TJPF_RGB, s % 2 ? TJSAMP_444 : TJSAMP_420, 90, &n);
        for (int o = 1; o <= 8; o++) {
            size_t m;
            uint8_t *j = gen_with_exif(plain, n, o, o % 2, &m);
            osp_image_info info;
            cr_assert_eq(osp_image_probe(j, m, "w.jpg", 0, &info), OSP_OK);
            for (size_t k = 0; k < 4; k++) {
                osp_transform t = osp_transform_defaults(outs[k][0], outs[k][1], outs[k][2]);
                t.augment.crop = k == 1;
                t.augment.flip = 1;
                const size_t len = (size_t)outs[k][0] * outs[k][1] * outs[k][2];
                float *a = malloc(len * sizeof(float)), *b = malloc(len * sizeof(float));
                osp_rng r, again;
                osp_rng_derive(&r, 3, s, (uint64_t)(o * 10 + (int)k));
                again = r;
                osp_rng *rng = k == 1 ? &r : NULL;
                cr_assert_eq(osp_image_to_sample(j, m, "w.jpg", &t, 0, rng, a), OSP_OK, "%s", osp_last_error());
                osp_sample_plan p;
                osp_transform_plan(&t, info.width, info.height, k == 1 ? &again : NULL, &p);
                whole_decode_sample(j, m, &t, &p, b);
                cr_assert(!memcmp(a, b, len * sizeof(float)), "%dx%d, orientation %d, output %zu differs", w, h, o, k);
                if (k != 1) {
                    float *c[1] = {b};
                    cr_assert_eq(osp_image_to_samples(j, m, "w.jpg", &t, 1, 0, c), OSP_OK);
                    cr_assert(!memcmp(a, b, len * sizeof(float)), "to_samples: %dx%d, orientation %d", w, h, o);
                }
                free(a);
                free(b);
            }
            free(j);
        }
        free(plain);
        free(px);
    }
}
