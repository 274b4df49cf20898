/* Resampling: area averages when shrinking, bilinear when enlarging,
 * checked against values worked out by hand; the SIMD passes against the
 * plain C reference, to the bit. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/resample_impl.h"
#include "osprey/image.h"

static osp_image make(int w, int h) {
    osp_image img = {w, h, malloc((size_t)w * h * 3)};
    return img;
}

static void set(osp_image *img, int x, int y, uint8_t r, uint8_t g, uint8_t b) {
    uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    p[0] = r;
    p[1] = g;
    p[2] = b;
}

static osp_rect whole(const osp_image *img) {
    return (osp_rect){0, 0, (float)img->width, (float)img->height};
}

Test(resample, constant_stays_constant) {
    osp_image img = make(37, 23);
    for (int i = 0; i < 37 * 23; i++) set(&img, i % 37, i / 37, 51, 102, 204);
    const int sizes[][2] = {{5, 3}, {23, 37}, {100, 80}, {1, 1}};
    for (size_t k = 0; k < 4; k++) {
        int oh = sizes[k][0], ow = sizes[k][1];
        float *out = malloc((size_t)3 * oh * ow * sizeof(float));
        osp_rect r = {3.3f, 2.7f, 20.1f, 15.5f};
        cr_assert_eq(osp_image_resample(&img, r, k % 2, 3, out, oh, ow, 0, 0, ow, oh), OSP_OK);
        for (int i = 0; i < oh * ow; i++) {
            cr_assert_float_eq(out[i], 0.2f, 1e-5);
            cr_assert_float_eq(out[oh * ow + i], 0.4f, 1e-5);
            cr_assert_float_eq(out[2 * oh * ow + i], 0.8f, 1e-5);
        }
        free(out);
    }
    free(img.pixels);
}

Test(resample, integer_shrink_is_block_mean) {
    osp_image img = make(8, 4);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 8; x++) set(&img, x, y, (uint8_t)(x * 30 + y), (uint8_t)(y * 60), 0);
    float out[3 * 1 * 2];
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 3, out, 1, 2, 0, 0, 2, 1), OSP_OK);
    for (int o = 0; o < 2; o++) {
        double r = 0, g = 0;
        for (int y = 0; y < 4; y++)
            for (int x = 4 * o; x < 4 * o + 4; x++) {
                r += x * 30 + y;
                g += y * 60;
            }
        cr_assert_float_eq(out[o], r / 16 / 255, 1e-5);
        cr_assert_float_eq(out[2 + o], g / 16 / 255, 1e-5);
    }
    free(img.pixels);
}

/* 3 pixels to 2: each output covers one and a half, so the middle pixel
 * is shared a third to each. */
Test(resample, fractional_shrink_weights_overlap) {
    osp_image img = make(3, 1);
    set(&img, 0, 0, 0, 0, 0);
    set(&img, 1, 0, 90, 0, 0);
    set(&img, 2, 0, 255, 0, 0);
    float out[3 * 2];
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 3, out, 1, 2, 0, 0, 2, 1), OSP_OK);
    cr_assert_float_eq(out[0], (0 * 1.0 + 90 * 0.5) / 1.5 / 255, 1e-5);
    cr_assert_float_eq(out[1], (90 * 0.5 + 255 * 1.0) / 1.5 / 255, 1e-5);
    free(img.pixels);
}

/* 2 pixels to 4: centres at -0.25, 0.25, 0.75, 1.25 source pixels. */
Test(resample, bilinear_enlarge) {
    osp_image img = make(2, 1);
    set(&img, 0, 0, 0, 0, 0);
    set(&img, 1, 0, 255, 255, 255);
    float out[3 * 4];
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 3, out, 1, 4, 0, 0, 4, 1), OSP_OK);
    const float want[4] = {0, 0.25f, 0.75f, 1};
    for (int i = 0; i < 4; i++) cr_assert_float_eq(out[i], want[i], 1e-6, "%d: %g", i, out[i]);
    cr_assert_eq(osp_image_resample(&img, whole(&img), 1, 3, out, 1, 4, 0, 0, 4, 1), OSP_OK);
    for (int i = 0; i < 4; i++) cr_assert_float_eq(out[i], want[3 - i], 1e-6);
    free(img.pixels);
}

Test(resample, identity_copy_and_grey) {
    osp_image img = make(5, 4);
    for (int i = 0; i < 20; i++) set(&img, i % 5, i / 5, (uint8_t)(i * 12), (uint8_t)(255 - i), (uint8_t)(i * 5));
    float out[3 * 20], grey[20];
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 3, out, 4, 5, 0, 0, 5, 4), OSP_OK);
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 1, grey, 4, 5, 0, 0, 5, 4), OSP_OK);
    for (int i = 0; i < 20; i++) {
        cr_assert_float_eq(out[i], i * 12 / 255.0f, 1e-6);
        cr_assert_float_eq(out[20 + i], (255 - i) / 255.0f, 1e-6);
        float y = 0.299f * out[i] + 0.587f * out[20 + i] + 0.114f * out[40 + i];
        cr_assert_float_eq(grey[i], y, 1e-5);
    }
    free(img.pixels);
}

Test(resample, destination_rectangle_only) {
    osp_image img = make(4, 4);
    memset(img.pixels, 255, 48);
    float out[3 * 6 * 6];
    for (int i = 0; i < 3 * 36; i++) out[i] = -1;
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 3, out, 6, 6, 1, 2, 4, 3), OSP_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 6; y++)
            for (int x = 0; x < 6; x++) {
                int inside = x >= 1 && x < 5 && y >= 2 && y < 5;
                cr_assert_float_eq(out[(c * 6 + y) * 6 + x], inside ? 1.0f : -1.0f, 1e-6);
            }
    free(img.pixels);
}

Test(resample, large_factors) {
    osp_image img = make(3000, 10);
    for (int x = 0; x < 3000; x++)
        for (int y = 0; y < 10; y++) set(&img, x, y, (uint8_t)(x < 1500 ? 0 : 255), 0, 0);
    float out[3 * 2];
    cr_assert_eq(osp_image_resample(&img, whole(&img), 0, 3, out, 1, 2, 0, 0, 2, 1), OSP_OK);
    cr_assert_float_eq(out[0], 0.0f, 1e-6);
    cr_assert_float_eq(out[1], 1.0f, 1e-5);
    free(img.pixels);
}

Test(resample, refuses_bad_arguments) {
    osp_image img = make(4, 4);
    memset(img.pixels, 0, 48);
    float out[3 * 16];
    osp_rect r = whole(&img);
    cr_assert_eq(osp_image_resample(&img, r, 0, 2, out, 4, 4, 0, 0, 4, 4), OSP_EINVAL);
    cr_assert_eq(osp_image_resample(&img, r, 0, 3, out, 4, 4, 1, 0, 4, 4), OSP_EINVAL);
    cr_assert_eq(osp_image_resample(&img, (osp_rect){0, 0, 0, 4}, 0, 3, out, 4, 4, 0, 0, 4, 4), OSP_EINVAL);
    cr_assert_eq(osp_image_resample(&img, (osp_rect){0, 0, NAN, 4}, 0, 3, out, 4, 4, 0, 0, 4, 4), OSP_EINVAL);
    cr_assert_eq(osp_image_resample(&img, (osp_rect){0, 0, 1e9f, 4}, 0, 3, out, 4, 4, 0, 0, 4, 4), OSP_EINVAL);
    osp_image empty = {0};
    cr_assert_eq(osp_image_resample(&empty, r, 0, 3, out, 4, 4, 0, 0, 4, 4), OSP_EINVAL);
    free(img.pixels);
}

/* The passes the CPU runs against the reference on random photos, windows,
 * sizes (shrinking, enlarging, both at once), flips and channel counts:
 * the same bits, or the reference is all this CPU has. */
Test(resample, simd_matches_the_reference) {
    uint64_t state = 12345;
#define NEXT() (state = state * 6364136223846793005u + 1442695040888963407u, (uint32_t)(state >> 33))
    for (int k = 0; k < 300; k++) {
        const int w = 1 + (int)(NEXT() % 300), h = 1 + (int)(NEXT() % 200);
        osp_image img = make(w, h);
        for (int i = 0; i < w * h * 3; i++) img.pixels[i] = (uint8_t)NEXT();
        const float x = (float)(NEXT() % 1000) / 1000 * (float)w * 0.5f, y = (float)(NEXT() % 1000) / 1000 * (float)h * 0.5f;
        osp_rect r = {x, y, ((float)w - x) * (0.05f + (float)(NEXT() % 950) / 1000), ((float)h - y) * (0.05f + (float)(NEXT() % 950) / 1000)};
        const int ow = 1 + (int)(NEXT() % 97), oh = 1 + (int)(NEXT() % 89), channels = k % 5 ? 3 : 1, flip = k % 2;
        const size_t n = (size_t)channels * ow * oh;
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        cr_assert_eq(osp__image_resample_isa(&img, 0, 0, r, flip, channels, a, oh, ow, 0, 0, ow, oh, OSP__RESAMPLE_REF), OSP_OK);
        cr_assert_eq(osp__image_resample_isa(&img, 0, 0, r, flip, channels, b, oh, ow, 0, 0, ow, oh, OSP__RESAMPLE_AUTO), OSP_OK);
        cr_assert(!memcmp(a, b, n * sizeof(float)), "case %d: %dx%d -> %dx%d differs", k, w, h, ow, oh);
        free(a);
        free(b);
        free(img.pixels);
    }
#undef NEXT
}
