/* Fuzz target: PNG decoding (libpng with every colour type, bit depth and
 * interlacing) and the sample path built on it.
 *
 * An input with the PNG signature is decoded as it is; any other input
 * patches one of a few valid PNGs made at start-up (RGB, palette with
 * transparency, 16-bit grey with alpha, interlaced, 1-bit): byte 0 picks
 * the image, bytes 1-2 where to XOR the rest in, bytes 3-4 where to cut. */
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/decode_impl.h"
#include "osprey/image.h"

#define N_SEEDS 5
static uint8_t *seed[N_SEEDS];
static size_t seed_len[N_SEEDS];

typedef struct sink {
    uint8_t *data;
    size_t len, cap;
} sink;

static void put(png_structp png, png_bytep d, size_t n) {
    sink *s = png_get_io_ptr(png);
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->data = realloc(s->data, s->cap);
    }
    memcpy(s->data + s->len, d, n);
    s->len += n;
}

static void flush(png_structp png) { (void)png; }

static void make(int k, int w, int h, int depth, int color, int interlace) {
    sink s = {0};
    uint8_t *px = malloc((size_t)w * h * 8); /* enough for any row layout */
    for (size_t i = 0; i < (size_t)w * h * 8; i++) px[i] = (uint8_t)(i * 11 % 251);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(s.data);
        free(px);
        return;
    }
    png_set_write_fn(png, &s, put, flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, 0, 0);
    png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 9, 9}};
    png_byte trns[2] = {0, 128};
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_set_PLTE(png, info, pal, 4);
        png_set_tRNS(png, info, trns, 2, NULL);
    }
    png_text text = {PNG_TEXT_COMPRESSION_zTXt, (char *)"Comment", (char *)"fuzz seed", 9, 0, NULL, NULL};
    png_set_text(png, info, &text, 1);
    png_write_info(png, info);
    size_t row = ((size_t)w * png_get_channels(png, info) * (size_t)depth + 7) / 8;
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) png_write_row(png, px + (size_t)y * row);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(px);
    seed[k] = s.data;
    seed_len[k] = s.len;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    make(0, 13, 7, 8, PNG_COLOR_TYPE_RGB, 0);
    make(1, 9, 9, 2, PNG_COLOR_TYPE_PALETTE, 0);
    make(2, 5, 6, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 0);
    make(3, 11, 10, 8, PNG_COLOR_TYPE_RGB_ALPHA, 1);
    make(4, 17, 3, 1, PNG_COLOR_TYPE_GRAY, 0);
    return 0;
}

static void decode(const uint8_t *data, size_t size) {
    const int64_t max_pixels = 1 << 20;
    osp_image_info info;
    osp_image img;
    if (osp__png_probe(data, size, "fuzz.png", max_pixels, &info) == OSP_OK &&
        osp__png_decode(data, size, "fuzz.png", max_pixels, &img, &info) == OSP_OK)
        osp_image_free(&img);
    osp_transform t = osp_transform_defaults(1, 6, 9);
    t.resize = OSP_RESIZE_LETTERBOX;
    float out[6 * 9];
    osp_image_to_sample(data, size, "fuzz.png", &t, max_pixels, NULL, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8)) {
        decode(data, size);
        return 0;
    }
    if (size < 5 || !seed[data[0] % N_SEEDS]) return 0;
    int k = data[0] % N_SEEDS;
    size_t len = seed_len[k];
    uint8_t *buf = malloc(len);
    memcpy(buf, seed[k], len);
    size_t at = ((size_t)data[1] << 8 | data[2]) % len;
    size_t cut = (size_t)data[3] << 8 | data[4];
    for (size_t i = 5; i < size && at < len; i++, at++) buf[at] ^= data[i];
    decode(buf, cut && cut < len ? cut : len);
    free(buf);
    return 0;
}
