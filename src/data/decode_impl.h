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

/* Per format: probe and decode fill info with the stored (not yet
 * oriented) full size; decode fills out in the stored orientation, and
 * min_w/min_h (JPEG shrink-on-load) are in stored orientation too. */
int osp__jpeg_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info);
int osp__jpeg_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                     int min_w, int min_h, osp_image *out, osp_image_info *info);
int osp__png_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                   osp_image_info *info);
int osp__png_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image *out, osp_image_info *info);
int osp__webp_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info);
int osp__webp_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                     osp_image *out, osp_image_info *info);

#endif
