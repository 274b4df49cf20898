/* Fuzz target: WebP decoding (libwebp, lossy and lossless, with alpha) and
 * the sample path built on it.
 *
 * An input starting with "RIFF" is decoded as it is; any other input
 * patches one of a few valid WebPs made at start-up: byte 0 picks the
 * image, bytes 1-2 where to XOR the rest in, bytes 3-4 where to cut. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <webp/encode.h>

#include "data/decode_impl.h"
#include "osprey/image.h"

#define N_SEEDS 3
static uint8_t *seed[N_SEEDS];
static size_t seed_len[N_SEEDS];

static void make(int k, int w, int h, int lossless, int alpha) {
    int ch = alpha ? 4 : 3;
    uint8_t *px = malloc((size_t)w * h * ch), *out = NULL;
    for (int i = 0; i < w * h * ch; i++) px[i] = (uint8_t)(i * 5 + i / (w * ch) * 17);
    size_t n = alpha ? (lossless ? WebPEncodeLosslessRGBA(px, w, h, w * 4, &out)
                                 : WebPEncodeRGBA(px, w, h, w * 4, 70, &out))
                     : (lossless ? WebPEncodeLosslessRGB(px, w, h, w * 3, &out)
                                 : WebPEncodeRGB(px, w, h, w * 3, 70, &out));
    if (n) {
        seed[k] = malloc(n);
        memcpy(seed[k], out, n);
        seed_len[k] = n;
    }
    WebPFree(out);
    free(px);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    make(0, 16, 12, 0, 0);
    make(1, 9, 7, 1, 0);
    make(2, 8, 8, 0, 1);
    return 0;
}

static void decode(const uint8_t *data, size_t size) {
    const int64_t max_pixels = 1 << 20;
    osp_image_info info;
    osp_image img;
    if (osp__webp_probe(data, size, "fuzz.webp", max_pixels, &info) == OSP_OK &&
        osp__webp_decode(data, size, "fuzz.webp", max_pixels, &img, &info) == OSP_OK)
        osp_image_free(&img);
    osp_transform t = osp_transform_defaults(3, 5, 5);
    t.augment.short_min = 5;
    t.augment.short_max = 9;
    float out[3 * 5 * 5];
    osp_rng r;
    osp_rng_seed(&r, size);
    osp_image_to_sample(data, size, "fuzz.webp", &t, max_pixels, &r, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 4 && !memcmp(data, "RIFF", 4)) {
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
