/* Test images made with the encoders of the libraries osprey decodes with:
 * TurboJPEG, libpng and libwebp. Each returns a malloc'd buffer (free it)
 * and its length, or NULL. Header-only (static inline) so that each test
 * program takes what it uses. */
#ifndef OSPREY_TEST_IMAGEGEN_H
#define OSPREY_TEST_IMAGEGEN_H

#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/encode.h>

/* A w x h RGB image: smooth gradients, with a bright block in the top-left
 * quarter so that flips and rotations show. */
static inline uint8_t *gen_rgb(int w, int h) {
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            q[1] = (uint8_t)(y * 255 / (h > 1 ? h - 1 : 1));
            q[2] = (uint8_t)((x + y) * 127 / (w + h));
            if (x < w / 2 && y < h / 2) q[0] = q[1] = q[2] = 250;
        }
    return p;
}

/* JPEG of w x h pixels (pixel_format a TJPF_*: RGB, GRAY or CMYK). */
static inline uint8_t *gen_jpeg(const uint8_t *px, int w, int h, int pixel_format, int subsamp,
                                int quality, size_t *len) {
    *len = 0;
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    unsigned long n = 0;
    if (tjCompress2(tj, px, w, 0, h, pixel_format, &out, &n, subsamp, quality, 0) != 0) {
        tjDestroy(tj);
        return NULL;
    }
    tjDestroy(tj);
    uint8_t *copy = malloc(n);
    memcpy(copy, out, n);
    tjFree(out);
    *len = n;
    return copy;
}

static inline uint8_t *gen_jpeg_rgb(int w, int h, int quality, size_t *len) {
    uint8_t *px = gen_rgb(w, h);
    uint8_t *j = gen_jpeg(px, w, h, TJPF_RGB, TJSAMP_444, quality, len);
    free(px);
    return j;
}

/* A copy of a JPEG with an APP1 EXIF segment holding orientation o right
 * after SOI; big-endian ("MM") or little-endian ("II") TIFF. */
static inline uint8_t *gen_with_exif(const uint8_t *jpeg, size_t len, int o, int big,
                                     size_t *out_len) {
    uint8_t seg[36];
    size_t n = 0;
    seg[n++] = 0xFF;
    seg[n++] = 0xE1;
    seg[n++] = 0;
    seg[n++] = 0; /* length, below */
    memcpy(seg + n, "Exif\0\0", 6);
    n += 6;
    const uint8_t tiff_be[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1,
                               0, (uint8_t)o, 0, 0, 0, 0, 0, 0};
    const uint8_t tiff_le[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0,
                               (uint8_t)o, 0, 0, 0, 0, 0, 0, 0};
    memcpy(seg + n, big ? tiff_be : tiff_le, sizeof tiff_be);
    n += sizeof tiff_be;
    seg[2] = (uint8_t)((n - 2) >> 8);
    seg[3] = (uint8_t)(n - 2);
    uint8_t *out = malloc(len + n);
    memcpy(out, jpeg, 2);
    memcpy(out + 2, seg, n);
    memcpy(out + 2 + n, jpeg + 2, len - 2);
    *out_len = len + n;
    return out;
}

typedef struct gen_png_buf {
    uint8_t *data;
    size_t len, cap;
} gen_png_buf;

static inline void gen_png_write(png_structp png, png_bytep d, size_t n) {
    gen_png_buf *b = png_get_io_ptr(png);
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
}

static inline void gen_png_flush(png_structp png) { (void)png; }

/* PNG of w x h from packed rows (row bytes = ceil(w * channels * depth / 8))
 * for colour type color (PNG_COLOR_TYPE_*); palette/trns used for palette
 * images (n_palette entries). */
static inline uint8_t *gen_png(const uint8_t *rows, int w, int h, int depth, int color,
                               int interlace, const png_color *palette, int n_palette,
                               const uint8_t *trns, int n_trns, size_t *len) {
    *len = 0;
    gen_png_buf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(b.data);
        return NULL;
    }
    png_set_write_fn(png, &b, gen_png_write, gen_png_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, n_palette);
    if (trns) png_set_tRNS(png, info, trns, n_trns, NULL);
    png_write_info(png, info);
    size_t row = ((size_t)w * png_get_channels(png, info) * (size_t)depth + 7) / 8;
    png_bytep *rp = malloc((size_t)h * sizeof *rp);
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)rows + (size_t)y * row;
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rp);
    *len = b.len;
    return b.data;
}

static inline uint8_t *gen_png_rgb(int w, int h, size_t *len) {
    uint8_t *px = gen_rgb(w, h);
    uint8_t *p = gen_png(px, w, h, 8, PNG_COLOR_TYPE_RGB, 0, NULL, 0, NULL, 0, len);
    free(px);
    return p;
}

/* WebP: lossless, or lossy at quality q. */
static inline uint8_t *gen_webp(const uint8_t *rgb, int w, int h, int lossless, float q,
                                size_t *len) {
    *len = 0;
    uint8_t *out = NULL;
    size_t n = lossless ? WebPEncodeLosslessRGB(rgb, w, h, w * 3, &out)
                        : WebPEncodeRGB(rgb, w, h, w * 3, q, &out);
    if (!n) return NULL;
    uint8_t *copy = malloc(n);
    memcpy(copy, out, n);
    WebPFree(out);
    *len = n;
    return copy;
}

/* CRC-32 as PNG chunks use it (bit by bit: tests need no speed). */
static inline uint32_t gen_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

/* A PNG whose IHDR declares w x h RGB pixels (with a correct CRC) and whose
 * image data is a few bytes: a decompression bomb's header. */
static inline uint8_t *gen_png_header_only(uint32_t w, uint32_t h, size_t *len) {
    uint8_t *p = malloc(64);
    size_t n = 0;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    uint8_t ihdr[17] = {'I', 'H', 'D', 'R', (uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8),
                        (uint8_t)w, (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8),
                        (uint8_t)h, 8, 2, 0, 0, 0};
    const uint8_t be13[4] = {0, 0, 0, 13};
    memcpy(p + n, be13, 4);
    n += 4;
    memcpy(p + n, ihdr, 17);
    n += 17;
    uint32_t crc = gen_crc32(ihdr, 17);
    p[n++] = (uint8_t)(crc >> 24);
    p[n++] = (uint8_t)(crc >> 16);
    p[n++] = (uint8_t)(crc >> 8);
    p[n++] = (uint8_t)crc;
    const uint8_t idat[] = {0, 0, 0, 2, 'I', 'D', 'A', 'T', 0x78, 0x9c, 0, 0, 0, 0};
    memcpy(p + n, idat, sizeof idat);
    n += sizeof idat;
    *len = n;
    return p;
}

/* Offset of the first SOFn marker's segment in a JPEG (0 if none). */
static inline size_t gen_jpeg_sof(const uint8_t *j, size_t len) {
    for (size_t i = 2; i + 4 < len;) {
        if (j[i] != 0xFF) return 0;
        uint8_t m = j[i + 1];
        if (m >= 0xC0 && m <= 0xC3) return i;
        i += 2 + ((size_t)j[i + 2] << 8 | j[i + 3]);
    }
    return 0;
}

static inline void gen_write(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (len) fwrite(buf, 1, len, f);
    fclose(f);
}

#endif
