/* Fuzz target: JPEG decoding (libjpeg-turbo, the marker and EXIF parsers,
 * CMYK, orientation, shrink-on-load, windows) and the sample path built on
 * it.
 *
 * An input that starts like a JPEG is decoded as it is. Any other input
 * patches one of a few valid JPEGs made at start-up (baseline, progressive,
 * grey, CMYK, with EXIF): byte 0 picks the image, bytes 1-2 where to start
 * XOR-ing the rest in, bytes 3-4 where to cut it. So the fuzzer reaches deep
 * into the decoder without binary seeds in the repository. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "data/decode_impl.h"
#include "osprey/image.h"

#define N_SEEDS 5
static uint8_t *seed[N_SEEDS];
static size_t seed_len[N_SEEDS];

static void make(int k, int w, int h, int format, int subsamp, int flags) {
    int ch = tjPixelSize[format];
    uint8_t *px = malloc((size_t)w * h * ch);
    for (int i = 0; i < w * h * ch; i++) px[i] = (uint8_t)(i * 7 + i / (w * ch) * 13);
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    unsigned long n = 0;
    if (tjCompress2(tj, px, w, 0, h, format, &out, &n, subsamp, 80, flags) == 0) {
        seed[k] = malloc(n + 40);
        seed_len[k] = n;
        memcpy(seed[k], out, n);
    }
    tjFree(out);
    tjDestroy(tj);
    free(px);
}

/* An APP1 EXIF segment (orientation 6) after SOI. */
static void add_exif(int k) {
    static const uint8_t app1[] = {0xFF, 0xE1, 0, 34, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0, 0, 0, 8,
                                   0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0};
    if (!seed[k]) return;
    memmove(seed[k] + 2 + sizeof app1, seed[k] + 2, seed_len[k] - 2);
    memcpy(seed[k] + 2, app1, sizeof app1);
    seed_len[k] += sizeof app1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    make(0, 24, 16, TJPF_RGB, TJSAMP_420, 0);
    make(1, 17, 9, TJPF_RGB, TJSAMP_444, TJFLAG_PROGRESSIVE);
    make(2, 16, 16, TJPF_GRAY, TJSAMP_GRAY, 0);
    make(3, 8, 8, TJPF_CMYK, TJSAMP_422, 0);
    make(4, 40, 24, TJPF_RGB, TJSAMP_420, 0);
    add_exif(4);
    return 0;
}

static void decode(const uint8_t *data, size_t size) {
    const int64_t max_pixels = 1 << 20; /* keeps each run fast */
    osp_image_info info;
    osp_image img;
    osp__jpeg_markers m;
    osp__jpeg_scan_markers(data, size, &m);
    osp__placement at;
    if (osp__jpeg_probe(data, size, "fuzz.jpg", max_pixels, &info) == OSP_OK &&
        osp__jpeg_decode(data, size, "fuzz.jpg", max_pixels, 4, 4, NULL, &img, &info, &at) == OSP_OK)
        osp_image_free(&img);
    osp_decode_options opt = {.max_pixels = max_pixels};
    if (osp_image_decode(data, size, "fuzz.jpg", &opt, &img, NULL) == OSP_OK) osp_image_free(&img);
    /* a window from the input's length: inside, across an edge, or outside */
    const double a = (double)(size % 37) - 5, b = (double)(size % 23) - 3;
    const osp__window w = {a, b, a + (double)(size % 29), b + (double)(size % 17)};
    opt.min_width = 2;
    opt.min_height = 2;
    if (osp__image_decode_window(data, size, "fuzz.jpg", &opt, &w, &img, &at) == OSP_OK) osp_image_free(&img);
    osp_transform t = osp_transform_defaults(3, 8, 8);
    t.augment.crop = t.augment.flip = 1;
    t.augment.jitter = 0.3f;
    float out[3 * 8 * 8];
    osp_rng r;
    osp_rng_seed(&r, size);
    osp_image_to_sample(data, size, "fuzz.jpg", &t, max_pixels, &r, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) {
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
