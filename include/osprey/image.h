/* osprey image: decoding untrusted JPEG, PNG and WebP files, resampling,
 * and the transforms that turn a photo into a network input (resize, crop,
 * letterbox; random crops, flips and colour jitter for training).
 *
 * Pixels flow one way:
 *
 *     file bytes --decode--> osp_image (8-bit RGB, H x W x 3, as displayed)
 *                --transform--> C x H x W float32 in [0, 1]
 *                --normalise--> (x - mean[c]) / std[c], the network's input
 *
 * Every decoder checks the declared width x height against a pixel limit
 * before it allocates anything, so a 60000 x 60000 header costs nothing. */
#ifndef OSPREY_IMAGE_H
#define OSPREY_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- decoding ---------------------------------------------------------- */

typedef enum osp_image_format {
    OSP_IMAGE_UNKNOWN = 0,
    OSP_IMAGE_JPEG = 1,
    OSP_IMAGE_PNG = 2,
    OSP_IMAGE_WEBP = 3,
} osp_image_format;

/* Default limit on width x height: 8192 x 8192, 64 Mi pixels. A decoded
 * image of that size takes 192 MiB as 8-bit RGB. */
#define OSP_IMAGE_MAX_PIXELS ((int64_t)1 << 26)

/* An 8-bit RGB image, rows packed: pixel (y, x) channel c is at
 * pixels[(y * width + x) * 3 + c]. Owned: free with osp_image_free. */
typedef struct osp_image {
    int width, height;
    uint8_t *pixels;
} osp_image;

/* What a file's header says. */
typedef struct osp_image_info {
    osp_image_format format;
    int width, height; /* as displayed, after the EXIF orientation */
    int orientation;   /* EXIF orientation 1..8 (1 = as stored; JPEG only) */
    int channels;      /* in the file: 1 grey, 2 grey+alpha, 3 colour,
                          4 colour+alpha or CMYK */
    int bit_depth;     /* bits per channel in the file: 8, or 1..16 for PNG */
} osp_image_info;

typedef struct osp_decode_options {
    int64_t max_pixels;       /* refuse larger images (0 = OSP_IMAGE_MAX_PIXELS) */
    /* JPEG shrink-on-load: decode at the smallest DCT scale (1/2 .. 1/8)
     * that keeps the image at least min_width x min_height as displayed.
     * 0 = full size. Other formats always decode at full size. */
    int min_width, min_height;
    int ignore_orientation;   /* 1: keep the stored orientation */
} osp_decode_options;

/* The format from the first bytes; the file name's extension is never
 * consulted, so a PNG named photo.jpg decodes as the PNG it is. */
OSP_API osp_image_format osp_image_sniff(const void *buf, size_t len);
OSP_API const char *osp_image_format_name(osp_image_format f);
/* 1 if the file name ends in .jpg, .jpeg, .png or .webp, in any case: the
 * files an image folder holds as samples (osp_dataset_open_folder) and a
 * folder given to the batch pipeline reads. Listing only: decoding goes
 * by the bytes, as above. */
OSP_API int osp_image_name_known(const char *name);

/* Reads the header only (no pixels). name is for messages ("cat.jpg:
 * truncated JPEG"). Fails with OSP_ERANGE when width x height is over
 * max_pixels (0 = the default). */
OSP_API int osp_image_probe(const void *buf, size_t len, const char *name, int64_t max_pixels,
                            osp_image_info *info);

/* Decodes a whole image to RGB: grey is replicated, alpha dropped, 16-bit
 * scaled to 8, palettes expanded, CMYK converted, EXIF orientation applied.
 * opt may be NULL. On failure out is left empty and the error names the
 * file. info (may be NULL) gets the header, with the full-size dimensions. */
OSP_API int osp_image_decode(const void *buf, size_t len, const char *name,
                             const osp_decode_options *opt, osp_image *out, osp_image_info *info);
/* The same from a file; files larger than a pixel limit's worth of bytes
 * are refused before they are read. */
OSP_API int osp_image_load(const char *path, const osp_decode_options *opt, osp_image *out,
                           osp_image_info *info);
/* Releases the pixels (img itself is the caller's); safe on an empty image. */
OSP_API void osp_image_free(osp_image *img);

/* The largest file osp_image_load reads for a pixel limit: no valid
 * encoding of that many pixels needs more bytes. */
OSP_API size_t osp_image_max_file_bytes(int64_t max_pixels);

/* ---- resampling -------------------------------------------------------- */

/* A rectangle in pixels; fractional edges are allowed. */
typedef struct osp_rect {
    float x, y, w, h;
} osp_rect;

/* Resamples the src rectangle of img into the dst rectangle (integer
 * pixels) of a channels x out_h x out_w float buffer, values in [0, 1].
 * Each axis is averaged by area where it shrinks and interpolated
 * bilinearly where it grows. flip mirrors left and right. channels is 3
 * (RGB) or 1 (grey: 0.299 R + 0.587 G + 0.114 B). Pixels of out outside dst
 * are not touched. */
OSP_API int osp_image_resample(const osp_image *img, osp_rect src, int flip, int channels,
                               float *out, int out_h, int out_w, int dst_x, int dst_y, int dst_w,
                               int dst_h);

/* ---- transforms -------------------------------------------------------- */

typedef enum osp_resize_mode {
    /* scale so that the output covers crop_fraction of the short side,
     * then take the middle (ImageNet's resize 256, crop 224 is 0.875) */
    OSP_RESIZE_CENTER = 0,
    OSP_RESIZE_STRETCH = 1,   /* the whole image to the output size */
    OSP_RESIZE_LETTERBOX = 2, /* the whole image inside, grey (0.5) bars */
} osp_resize_mode;

/* Random augmentation for training. Each sample draws from its own
 * generator (see osp_loader: seed, epoch and sample index), so augmentation
 * does not depend on which thread decoded the sample. */
typedef struct osp_augment {
    int crop;                     /* random resized crop */
    float scale_min, scale_max;   /* its area, as a fraction of the image */
    float ratio_min, ratio_max;   /* its aspect ratio, width / height */
    /* Multi-scale training (Deep Image): the short side scaled to a random
     * length in [short_min, short_max], then a random crop of the output
     * size. Replaces crop when short_max > 0. */
    int short_min, short_max;
    int flip;                     /* mirror with probability 1/2 */
    float jitter;                 /* brightness, contrast and saturation
                                     factors drawn from [1 - j, 1 + j] */
} osp_augment;

typedef struct osp_transform {
    int channels, height, width;  /* the output: 1 or 3 x H x W */
    osp_resize_mode resize;       /* without augmentation (evaluation) */
    float crop_fraction;          /* OSP_RESIZE_CENTER: (0, 1] */
    osp_augment augment;          /* used when a generator is given */
} osp_transform;

/* Center resize (crop fraction 0.875), no augmentation enabled; the
 * augmentation ranges hold torchvision's defaults (scale 0.08..1, ratio
 * 3/4..4/3) for when crop is switched on. */
OSP_API osp_transform osp_transform_defaults(int channels, int height, int width);
/* Checks a transform's values; a message naming the bad one. */
OSP_API int osp_transform_check(const osp_transform *t);

/* Where one sample comes from, decided from the header's size alone so
 * that the decoder can shrink on load. */
typedef struct osp_sample_plan {
    osp_rect src;             /* in the full-size image */
    int dst_x, dst_y, dst_w, dst_h; /* in the output (letterbox bars outside) */
    int flip;
    float brightness, contrast, saturation; /* 1 = unchanged */
} osp_sample_plan;

/* Plans a sample of a width x height image; rng NULL means no
 * augmentation (t->resize decides), else t->augment draws from rng. */
OSP_API void osp_transform_plan(const osp_transform *t, int width, int height, osp_rng *rng,
                                osp_sample_plan *plan);
/* Renders the plan from img, which may be a shrunken decode of a
 * full_width x full_height image. out: t->channels x t->height x t->width. */
OSP_API int osp_transform_apply(const osp_transform *t, const osp_sample_plan *plan,
                                const osp_image *img, int full_width, int full_height, float *out);

/* Decode + plan + shrink-on-load + render: one encoded image to one
 * sample in [0, 1]. rng as for osp_transform_plan. */
OSP_API int osp_image_to_sample(const void *buf, size_t len, const char *name,
                                const osp_transform *t, int64_t max_pixels, osp_rng *rng,
                                float *out);

/* The same for n transforms of one image (up to 64: the input scales of an
 * ensemble), decoded once (shrunk on load only as far as the largest
 * output needs), no augmentation: out[i] gets t[i]'s sample. */
OSP_API int osp_image_to_samples(const void *buf, size_t len, const char *name,
                                 const osp_transform *t, int n, int64_t max_pixels,
                                 float *const *out);
/* In place: x = (x - mean[c]) / std[c] for each of channels planes of
 * plane floats (channels past the fourth use mean[0], std[0], as
 * osp_net_normalize does). */
OSP_API void osp_image_normalize(float *x, int channels, int64_t plane, const float *mean,
                                 const float *std);

#ifdef __cplusplus
}
#endif

#endif
