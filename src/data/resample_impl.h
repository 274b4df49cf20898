/* Resampling with a chosen instruction set (private to src/data, and for
 * the tests that hold the SIMD passes to the reference). */
#ifndef OSPREY_DATA_RESAMPLE_IMPL_H
#define OSPREY_DATA_RESAMPLE_IMPL_H

#include "osprey/image.h"

typedef enum osp__resample_isa {
    OSP__RESAMPLE_AUTO = 0, /* the fastest the CPU runs (osp_image_resample) */
    OSP__RESAMPLE_REF = 1,  /* plain C, the reference */
} osp__resample_isa;

/* osp_image_resample, with the passes isa says, from img, a part of an
 * image whose pixel (0, 0) is pixel (img_x, img_y) of the whole; src is in
 * the whole's pixels. The result is the whole's, to the bit, where the
 * part holds the pixels src covers and one more on each side. */
int osp__image_resample_isa(const osp_image *img, int img_x, int img_y, osp_rect src, int flip, int channels,
                            float *out, int out_h, int out_w, int dst_x, int dst_y, int dst_w, int dst_h,
                            osp__resample_isa isa);

#endif
