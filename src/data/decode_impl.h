/* Internal interface between the format-independent decoder (decode.c)
 * and the one file per format. Each format decoder produces 8-bit RGB in
 * the stored orientation; decode.c applies the EXIF orientation. */
#ifndef OSPREY_DATA_DECODE_IMPL_H
#define OSPREY_DATA_DECODE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/image.h"

/* Refuses width x height over max_pixels (or a non-positive side) with a
 * message naming the file; called on the header's size before any
 * allocation. */
int osp__check_pixels(const char *name, const char *format, int64_t width, int64_t height,
                      int64_t max_pixels);

/* What the markers before a JPEG's first scan say. */
typedef struct osp__jpeg_markers {
    int orientation;     /* EXIF orientation 1..8; 1 when absent or invalid */
    int adobe;           /* an APP14 "Adobe" segment is present */
} osp__jpeg_markers;

/* Walks the marker segments of a JPEG up to its first scan. Never fails:
 * what it cannot read it leaves at the defaults (the decoder proper reports
 * damaged files). */
void osp__jpeg_scan_markers(const uint8_t *buf, size_t len, osp__jpeg_markers *m);
/* The EXIF orientation in a TIFF structure (the body of an APP1 "Exif"
 * segment after its 6-byte name); 1 when absent or invalid. */
int osp__exif_orientation(const uint8_t *tiff, size_t len);

/* The part of an image a decode must give: [x0, x1) x [y0, y1) in pixels
 * of the full-size image. */
typedef struct osp__window {
    double x0, y0, x1, y1;
} osp__window;

/* Pixels decoded beyond a window on each side (at the decode's scale):
 * a cut's edge pixels are upsampled from fewer neighbours than in a whole
 * decode, so the ones a window holds are kept away from it; resampling
 * reads up to a pixel beyond its rectangle (bilinear taps), and a pixel
 * more absorbs the rounding of the scaled window. */
#define OSP__WINDOW_MARGIN 3

/* Where a decoded image lies: its pixel (0, 0) is pixel (x, y) of the
 * whole image at the decode's scale, full_width x full_height. */
typedef struct osp__placement {
    int x, y, full_width, full_height;
} osp__placement;

/* Decodes at least window (NULL: the whole image) of the image, shrunk
 * on load as opt says, EXIF orientation applied; window and *at are as
 * displayed. The pixels a window covers are those of a whole decode at
 * the same scale, to the bit; a format that cannot decode a part decodes
 * the whole. */
int osp__image_decode_window(const void *buf, size_t len, const char *name, const osp_decode_options *opt,
                             const osp__window *window, osp_image *out, osp__placement *at);

/* Per format: probe and decode fill info with the stored (not yet
 * oriented) full size; decode fills out in the stored orientation, and
 * min_w/min_h (JPEG shrink-on-load) are in stored orientation too, as
 * are a JPEG decode's window (NULL: all of it) and *at. */
int osp__jpeg_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info);
int osp__jpeg_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels, int min_w, int min_h,
                     const osp__window *window, osp_image *out, osp_image_info *info, osp__placement *at);
int osp__png_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                   osp_image_info *info);
int osp__png_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image *out, osp_image_info *info);
int osp__webp_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info);
int osp__webp_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                     osp_image *out, osp_image_info *info);

#endif
