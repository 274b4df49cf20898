/* Decoding: JPEG, PNG and WebP in their modes, made here by their own
 * encoders; the EXIF orientations; shrink-on-load; and refusal, with a
 * message naming the file, of truncated, corrupt, empty, unsupported and
 * oversized images. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdlib.h>
#include <string.h>

#include "data/decode_impl.h"
#include "imagegen.h"
#include "osprey/image.h"

static int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > worst) worst = d;
    }
    return worst;
}

static osp_image decode_ok(const uint8_t *buf, size_t len, const osp_decode_options *opt) {
    osp_image img;
    int rc = osp_image_decode(buf, len, "test.img", opt, &img, NULL);
    cr_assert_eq(rc, OSP_OK, "%s", osp_last_error());
    return img;
}

static void expect_error(const uint8_t *buf, size_t len, int code, const char *words) {
    osp_image img;
    int rc = osp_image_decode(buf, len, "bad/file.jpg", NULL, &img, NULL);
    cr_assert_eq(rc, code, "got %d (%s), expected %d", rc, osp_last_error(), code);
    cr_assert_null(img.pixels);
    cr_assert(strstr(osp_last_error(), "bad/file.jpg"), "message lacks the file: %s", osp_last_error());
    cr_assert(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

Test(decode, sniffs_by_content) {
    size_t n;
    uint8_t *png = gen_png_rgb(8, 8, &n);
    cr_assert_eq(osp_image_sniff(png, n), OSP_IMAGE_PNG);
    /* the name says JPEG; the content decides */
    osp_image img;
    cr_assert_eq(osp_image_decode(png, n, "photo.jpg", NULL, &img, NULL), OSP_OK);
    osp_image_free(&img);
    free(png);
    cr_assert_eq(osp_image_sniff("GIF89a", 6), OSP_IMAGE_UNKNOWN);
    cr_assert_str_eq(osp_image_format_name(OSP_IMAGE_WEBP), "WebP");
}

/* Which files folders list as images: by name, in any case. */
Test(decode, image_names) {
    static const char *const yes[] = {"a.jpg", "b/c.JPEG", "d.png", "e.WebP", "f.tar.jpg"};
    static const char *const no[] = {".jpg", "a.gif", "a.jpg.txt", "jpg", "", "a.jp"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_expect(osp_image_name_known(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_expect(!osp_image_name_known(no[i]), "%s", no[i]);
    cr_expect(!osp_image_name_known(NULL));
}

Test(decode, jpeg_rgb_and_grey) {
    const int w = 40, h = 30;
    uint8_t *px = gen_rgb(w, h);
    size_t n;
    uint8_t *j = gen_jpeg(px, w, h, TJPF_RGB, TJSAMP_444, 100, &n);
    osp_image_info info;
    osp_image img;
    cr_assert_eq(osp_image_decode(j, n, "a.jpg", NULL, &img, &info), OSP_OK);
    cr_assert_eq(img.width, w);
    cr_assert_eq(img.height, h);
    cr_assert_eq(info.format, OSP_IMAGE_JPEG);
    cr_assert_eq(info.channels, 3);
    cr_assert_leq(max_diff(img.pixels, px, (size_t)w * h * 3), 8);
    osp_image_free(&img);
    free(j);

    uint8_t grey[40 * 30];
    for (int i = 0; i < w * h; i++) grey[i] = (uint8_t)(i % w * 6);
    j = gen_jpeg(grey, w, h, TJPF_GRAY, TJSAMP_GRAY, 100, &n);
    img = decode_ok(j, n, NULL);
    for (int i = 0; i < w * h; i++) {
        cr_assert_eq(img.pixels[3 * i], img.pixels[3 * i + 1]);
        cr_assert_eq(img.pixels[3 * i], img.pixels[3 * i + 2]);
        cr_assert_leq(abs(img.pixels[3 * i] - grey[i]), 3);
    }
    osp_image_free(&img);
    free(j);
    free(px);
}

/* TurboJPEG writes CMYK with an Adobe segment, which readers take to mean
 * inverted CMYK (255 = no ink), as Photoshop writes it. */
Test(decode, jpeg_cmyk) {
    const int w = 16, h = 16;
    uint8_t cmyk[16 * 16 * 4];
    const uint8_t want[3] = {200, 120, 40};
    const uint8_t k_inv = 204; /* 20% black */
    for (int i = 0; i < w * h; i++) {
        /* inverted: C' K' / 255 = R */
        cmyk[4 * i] = (uint8_t)(want[0] * 255 / k_inv);
        cmyk[4 * i + 1] = (uint8_t)(want[1] * 255 / k_inv);
        cmyk[4 * i + 2] = (uint8_t)(want[2] * 255 / k_inv);
        cmyk[4 * i + 3] = k_inv;
    }
    size_t n;
    uint8_t *j = gen_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_444, 100, &n);
    cr_assert_not_null(j);
    osp_image_info info;
    cr_assert_eq(osp_image_probe(j, n, "c.jpg", 0, &info), OSP_OK);
    cr_assert_eq(info.channels, 4);
    osp_image img = decode_ok(j, n, NULL);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < 3; c++)
            cr_assert_leq(abs(img.pixels[3 * i + c] - want[c]), 3, "pixel %d channel %d: %d", i, c,
                          img.pixels[3 * i + c]);
    osp_image_free(&img);
    free(j);
}

/* Displayed from stored, written out plainly for each EXIF orientation. */
static void expected_pixel(int o, const uint8_t *s, int w, int h, int x, int y, uint8_t *out) {
    int sx = x, sy = y;
    switch (o) {
    case 2: sx = w - 1 - x; break;                       /* mirror left-right */
    case 3: sx = w - 1 - x; sy = h - 1 - y; break;       /* half turn */
    case 4: sy = h - 1 - y; break;                       /* mirror top-bottom */
    case 5: sx = y; sy = x; break;                       /* transpose */
    case 6: sx = y; sy = h - 1 - x; break;               /* quarter turn clockwise */
    case 7: sx = w - 1 - y; sy = h - 1 - x; break;       /* transverse */
    case 8: sx = w - 1 - y; sy = x; break;               /* quarter turn counter-clockwise */
    }
    memcpy(out, s + ((size_t)sy * w + sx) * 3, 3);
}

Test(decode, exif_orientations) {
    /* 8x8 blocks of flat colour survive JPEG exactly enough to compare */
    const int w = 32, h = 16;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int b = (y / 8) * 4 + x / 8;
            uint8_t *q = px + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(b * 30);
            q[1] = (uint8_t)(255 - b * 30);
            q[2] = (uint8_t)(b % 2 * 200);
        }
    size_t n;
    uint8_t *plain = gen_jpeg(px, w, h, TJPF_RGB, TJSAMP_444, 100, &n);
    for (int big = 0; big < 2; big++)
        for (int o = 1; o <= 8; o++) {
            size_t m;
            uint8_t *j = gen_with_exif(plain, n, o, big, &m);
            osp_image_info info;
            cr_assert_eq(osp_image_probe(j, m, "o.jpg", 0, &info), OSP_OK);
            cr_assert_eq(info.orientation, o);
            osp_image img = decode_ok(j, m, NULL);
            int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
            cr_assert_eq(img.width, ow, "orientation %d", o);
            cr_assert_eq(img.height, oh);
            cr_assert_eq(info.width, ow);
            for (int y = 4; y < oh; y += 8)
                for (int x = 4; x < ow; x += 8) {
                    uint8_t e[3];
                    expected_pixel(o, px, w, h, x, y, e);
                    cr_assert_leq(max_diff(img.pixels + ((size_t)y * ow + x) * 3, e, 3), 6,
                                  "orientation %d at %d,%d", o, x, y);
                }
            osp_image_free(&img);
            osp_decode_options keep = {.ignore_orientation = 1};
            img = decode_ok(j, m, &keep);
            cr_assert_eq(img.width, w);
            osp_image_free(&img);
            free(j);
        }
    free(plain);
    free(px);
}

Test(decode, exif_parser_refuses_nonsense) {
    const uint8_t bad_order[] = {'X', 'X', 0, 42, 0, 0, 0, 8, 0, 0};
    cr_assert_eq(osp__exif_orientation(bad_order, sizeof bad_order), 1);
    /* IFD offset past the end, a count larger than what is there, a wrong type */
    const uint8_t far[] = {'M', 'M', 0, 42, 0xFF, 0xFF, 0xFF, 0xF0, 0, 0};
    cr_assert_eq(osp__exif_orientation(far, sizeof far), 1);
    const uint8_t many[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0xFF, 0xFF, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6};
    cr_assert_eq(osp__exif_orientation(many, sizeof many), 1); /* entry cut short */
    const uint8_t type[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 4, 0, 0, 0, 1, 0, 6, 0, 0};
    cr_assert_eq(osp__exif_orientation(type, sizeof type), 1);
    const uint8_t nine[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 9, 0, 0, 0};
    cr_assert_eq(osp__exif_orientation(nine, sizeof nine), 1);
    const uint8_t six[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0};
    cr_assert_eq(osp__exif_orientation(six, sizeof six), 6);
    osp__jpeg_markers m;
    const uint8_t cut[] = {0xFF, 0xD8, 0xFF, 0xE1, 0x40, 0x00, 'E', 'x'};
    osp__jpeg_scan_markers(cut, sizeof cut, &m);
    cr_assert_eq(m.orientation, 1);
}

Test(decode, jpeg_shrink_on_load) {
    size_t n;
    uint8_t *j = gen_jpeg_rgb(800, 600, 90, &n);
    osp_decode_options opt = {.min_width = 100, .min_height = 75};
    osp_image img = decode_ok(j, n, &opt);
    cr_assert_eq(img.width, 100); /* 1/8 */
    cr_assert_eq(img.height, 75);
    osp_image_free(&img);
    opt.min_width = 101;
    img = decode_ok(j, n, &opt);
    cr_assert_eq(img.width, 200); /* 1/4: 1/8 would be too small */
    osp_image_free(&img);
    opt.min_width = 500;
    opt.min_height = 1;
    img = decode_ok(j, n, &opt);
    cr_assert_eq(img.width, 800);
    osp_image_free(&img);
    /* with a quarter turn, the minimum is of the displayed width */
    size_t m;
    uint8_t *r = gen_with_exif(j, n, 6, 1, &m);
    opt.min_width = 75;
    opt.min_height = 100;
    img = decode_ok(r, m, &opt);
    cr_assert_eq(img.width, 75);
    cr_assert_eq(img.height, 100);
    osp_image_free(&img);
    free(r);
    free(j);
}

Test(decode, png_modes) {
    const int w = 13, h = 7; /* odd sizes: rows with padding bits */
    uint8_t *rgb = gen_rgb(w, h);
    size_t n;
    /* 8-bit RGB, plain and interlaced: exact */
    for (int inter = 0; inter < 2; inter++) {
        uint8_t *p = gen_png(rgb, w, h, 8, PNG_COLOR_TYPE_RGB, inter, NULL, 0, NULL, 0, &n);
        osp_image img = decode_ok(p, n, NULL);
        cr_assert_eq(max_diff(img.pixels, rgb, (size_t)w * h * 3), 0);
        osp_image_free(&img);
        free(p);
    }
    /* RGBA: alpha dropped */
    uint8_t rgba[13 * 7 * 4], rgb16[13 * 7 * 6], grey16[13 * 7 * 2], ga[13 * 7 * 2];
    for (int i = 0; i < w * h; i++) {
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = (uint8_t)(i * 3);
        for (int c = 0; c < 3; c++) rgb16[6 * i + 2 * c] = rgb16[6 * i + 2 * c + 1] = rgb[3 * i + c];
        grey16[2 * i] = grey16[2 * i + 1] = rgb[3 * i];
        ga[2 * i] = rgb[3 * i];
        ga[2 * i + 1] = 7;
    }
    uint8_t *p = gen_png(rgba, w, h, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, NULL, 0, NULL, 0, &n);
    osp_image img = decode_ok(p, n, NULL);
    cr_assert_eq(max_diff(img.pixels, rgb, (size_t)w * h * 3), 0);
    osp_image_free(&img);
    free(p);
    /* 16-bit RGB with v * 257 in each channel: exactly v */
    p = gen_png(rgb16, w, h, 16, PNG_COLOR_TYPE_RGB, 0, NULL, 0, NULL, 0, &n);
    osp_image_info info;
    cr_assert_eq(osp_image_decode(p, n, "x.png", NULL, &img, &info), OSP_OK);
    cr_assert_eq(info.bit_depth, 16);
    cr_assert_eq(max_diff(img.pixels, rgb, (size_t)w * h * 3), 0);
    osp_image_free(&img);
    free(p);
    /* 16-bit grey and grey + alpha: replicated into R, G, B */
    for (int kind = 0; kind < 2; kind++) {
        p = kind ? gen_png(ga, w, h, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, NULL, 0, NULL, 0, &n)
                 : gen_png(grey16, w, h, 16, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, &n);
        img = decode_ok(p, n, NULL);
        for (int i = 0; i < w * h; i++)
            for (int c = 0; c < 3; c++) cr_assert_eq(img.pixels[3 * i + c], rgb[3 * i]);
        osp_image_free(&img);
        free(p);
    }
    /* 1-bit grey: 0 and 255 */
    uint8_t bits[7 * 2];
    memset(bits, 0xAA, sizeof bits); /* 1010... */
    p = gen_png(bits, w, h, 1, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, &n);
    img = decode_ok(p, n, NULL);
    for (int x = 0; x < w; x++) cr_assert_eq(img.pixels[3 * x], x % 2 ? 0 : 255);
    osp_image_free(&img);
    free(p);
    /* 4-bit palette with transparency */
    png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    uint8_t trns[3] = {255, 0, 128};
    uint8_t idx[7 * 7];
    for (int i = 0; i < 7 * 7; i++) idx[i] = (uint8_t)((i % 3) << 4 | ((i + 1) % 3));
    p = gen_png(idx, w, h, 4, PNG_COLOR_TYPE_PALETTE, 0, pal, 3, trns, 3, &n);
    img = decode_ok(p, n, NULL);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int byte = idx[y * 7 + x / 2], k = x % 2 ? byte & 15 : byte >> 4;
            const uint8_t want[3] = {pal[k].red, pal[k].green, pal[k].blue};
            cr_assert_eq(max_diff(img.pixels + ((size_t)y * w + x) * 3, want, 3), 0);
        }
    osp_image_free(&img);
    free(p);
    free(rgb);
}

Test(decode, webp_lossless_and_lossy) {
    const int w = 24, h = 20;
    uint8_t *rgb = gen_rgb(w, h);
    size_t n;
    uint8_t *p = gen_webp(rgb, w, h, 1, 0, &n);
    osp_image_info info;
    osp_image img;
    cr_assert_eq(osp_image_decode(p, n, "a.webp", NULL, &img, &info), OSP_OK);
    cr_assert_eq(info.format, OSP_IMAGE_WEBP);
    cr_assert_eq(max_diff(img.pixels, rgb, (size_t)w * h * 3), 0);
    osp_image_free(&img);
    free(p);
    p = gen_webp(rgb, w, h, 0, 95, &n);
    img = decode_ok(p, n, NULL);
    cr_assert_leq(max_diff(img.pixels, rgb, (size_t)w * h * 3), 40);
    osp_image_free(&img);
    free(p);
    free(rgb);
}

Test(decode, bad_files_are_refused_by_name) {
    size_t n;
    uint8_t *j = gen_jpeg_rgb(64, 48, 90, &n);
    expect_error(j, 0, OSP_EFORMAT, "empty file");
    expect_error(j, n * 6 / 10, OSP_EFORMAT, "truncated JPEG");
    expect_error(j, 200, OSP_EFORMAT, "JPEG");
    expect_error((const uint8_t *)"hello, world\n", 13, OSP_EFORMAT, "not an image");
    expect_error((const uint8_t *)"GIF89a\1\0\1\0", 10, OSP_ENOTSUP, "GIF");
    /* damaged entropy-coded data */
    uint8_t *bad = malloc(n);
    memcpy(bad, j, n);
    for (size_t i = n / 2; i < n / 2 + 40; i++) bad[i] = (uint8_t)(bad[i] * 7 + 13);
    osp_image img;
    int rc = osp_image_decode(bad, n, "bad/file.jpg", NULL, &img, NULL);
    if (rc != OSP_OK) cr_assert(strstr(osp_last_error(), "bad/file.jpg"));
    else osp_image_free(&img); /* some damage decodes without a warning */
    /* 12-bit precision, which this libjpeg is not built for */
    memcpy(bad, j, n);
    size_t sof = gen_jpeg_sof(bad, n);
    cr_assert_gt(sof, 0);
    bad[sof + 4] = 12;
    expect_error(bad, n, OSP_ENOTSUP, "precision");
    free(bad);

    uint8_t *p = gen_png_rgb(30, 20, &n);
    expect_error(p, n - 30, OSP_EFORMAT, "PNG");
    expect_error(p, 20, OSP_EFORMAT, "PNG");
    p[20] ^= 0x55; /* inside IHDR: its CRC no longer matches */
    expect_error(p, n, OSP_EFORMAT, "corrupt PNG");
    free(p);

    uint8_t *rgb = gen_rgb(30, 20);
    uint8_t *w = gen_webp(rgb, 30, 20, 0, 80, &n);
    expect_error(w, n / 2, OSP_EFORMAT, "WebP");
    expect_error(w, 16, OSP_EFORMAT, "WebP");
    free(w);
    free(rgb);
    free(j);
}

/* A header that declares a huge image is refused before anything of its
 * size is allocated: under AddressSanitizer an attempt to allocate 10 GB
 * would fail loudly. */
Test(decode, decompression_bombs) {
    size_t n;
    uint8_t *p = gen_png_header_only(60000, 60000, &n);
    expect_error(p, n, OSP_ERANGE, "60000x60000");
    osp_image_info info;
    cr_assert_eq(osp_image_probe(p, n, "bomb.png", 0, &info), OSP_ERANGE);
    free(p);

    uint8_t *j = gen_jpeg_rgb(16, 16, 90, &n);
    size_t sof = gen_jpeg_sof(j, n);
    j[sof + 5] = 60000 >> 8; /* height */
    j[sof + 6] = 60000 & 255;
    j[sof + 7] = 60000 >> 8; /* width */
    j[sof + 8] = 60000 & 255;
    expect_error(j, n, OSP_ERANGE, "over the limit");
    free(j);

    /* WebP lossless header of 16384 x 16384 */
    uint8_t *rgb = gen_rgb(8, 8);
    uint8_t *w = gen_webp(rgb, 8, 8, 1, 0, &n);
    cr_assert(!memcmp(w + 12, "VP8L", 4));
    uint32_t bits = 16383u | 16383u << 14;
    w[21] = (uint8_t)bits;
    w[22] = (uint8_t)(bits >> 8);
    w[23] = (uint8_t)(bits >> 16);
    w[24] = (uint8_t)((w[24] & 0xF0) | (bits >> 24));
    expect_error(w, n, OSP_ERANGE, "16384x16384");
    free(w);
    free(rgb);

    /* the limit is configurable: 100 x 100 is 10000 pixels */
    p = gen_png_rgb(100, 100, &n);
    osp_decode_options opt = {.max_pixels = 9999};
    osp_image img;
    cr_assert_eq(osp_image_decode(p, n, "x.png", &opt, &img, NULL), OSP_ERANGE);
    opt.max_pixels = 10000;
    cr_assert_eq(osp_image_decode(p, n, "x.png", &opt, &img, NULL), OSP_OK);
    osp_image_free(&img);
    free(p);
    cr_assert_gt(osp_image_max_file_bytes(0), (size_t)OSP_IMAGE_MAX_PIXELS * 3);
}

/* Library code never prints: libpng and libjpeg warnings stay quiet. */
Test(decode, quiet_on_warnings, .init = cr_redirect_stderr) {
    size_t n;
    uint8_t *j = gen_jpeg_rgb(64, 48, 90, &n);
    osp_image img;
    cr_assert_neq(osp_image_decode(j, n / 2, "t.jpg", NULL, &img, NULL), OSP_OK);
    uint8_t *p = gen_png_rgb(30, 20, &n);
    /* a damaged ancillary chunk before IDAT would warn; a damaged IHDR errs */
    p[20] ^= 1;
    cr_assert_neq(osp_image_decode(p, n, "t.png", NULL, &img, NULL), OSP_OK);
    free(p);
    free(j);
    fflush(stderr);
    cr_assert_stderr_eq_str("");
}

Test(decode, load_names_missing_files) {
    osp_image img;
    cr_assert_eq(osp_image_load("/nonexistent/x.jpg", NULL, &img, NULL), OSP_ENOENT);
    cr_assert(strstr(osp_last_error(), "/nonexistent/x.jpg"));
}
