/* JPEG through libjpeg-turbo's TurboJPEG API. Shrink-on-load uses its DCT
 * scaling: decoding at 1/2, 1/4 or 1/8 skips most of the inverse DCT and
 * upsampling work, which is where a large photo's decode time goes when
 * the network wants 224 x 224.
 *
 * CMYK and YCCK files (from print workflows) are decoded to CMYK and
 * converted here; files with an Adobe APP14 segment store CMYK inverted,
 * as Photoshop writes them and as other readers assume. */
#include <stdio.h>
#include <string.h>
#include <turbojpeg.h>

#include "decode_impl.h"

/* The scales whose inverse DCT libjpeg-turbo has SIMD code for; the
 * others (3/8, 5/8, ...) are plain C and slower than decoding at the next
 * SIMD scale and resampling. */
static const int SHRINK[] = {8, 4, 2};

static int scaled(int size, int denom) { return (size + denom - 1) / denom; }

/* A TurboJPEG warning stops the decode unless it is one that leaves every
 * pixel intact: stray bytes between segments are common in camera files
 * and harmless. Truncation ("Premature end of JPEG file") and damaged
 * entropy data are refused: the missing part would be grey. */
static int harmless_warning(const char *msg) { return strstr(msg, "extraneous bytes") != NULL; }

/* libjpeg's messages are stable English (jerror.h): they tell truncation
 * and features it was built without (12-bit, lossless) from damage. */
static int tj_fail(tjhandle tj, const char *name) {
    const char *msg = tjGetErrorStr2(tj);
    if (strstr(msg, "Premature end")) return osp_error(OSP_EFORMAT, "%s: truncated JPEG", name);
    if (strstr(msg, "Unsupported"))
        return osp_error(OSP_ENOTSUP, "%s: unsupported JPEG: %s", name, msg);
    return osp_error(OSP_EFORMAT, "%s: corrupt JPEG: %s", name, msg);
}

/* Header: size, colour space; tj stays open for a decode to follow. */
static int read_header(tjhandle tj, const uint8_t *buf, size_t len, const char *name,
                       int64_t max_pixels, osp_image_info *info, int *colorspace, int *adobe) {
    int w, h, subsamp, cs;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &cs) != 0)
        return tj_fail(tj, name);
    int rc = osp__check_pixels(name, "JPEG", w, h, max_pixels);
    if (rc != OSP_OK) return rc;
    memset(info, 0, sizeof *info);
    info->format = OSP_IMAGE_JPEG;
    info->width = w;
    info->height = h;
    info->bit_depth = 8;
    info->channels = cs == TJCS_GRAY ? 1 : (cs == TJCS_CMYK || cs == TJCS_YCCK) ? 4 : 3;
    *colorspace = cs;
    osp__jpeg_markers m;
    osp__jpeg_scan_markers(buf, len, &m);
    info->orientation = m.orientation;
    *adobe = m.adobe;
    return OSP_OK;
}

int osp__jpeg_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return osp_error(OSP_ENOMEM, "%s: cannot start the JPEG decoder", name);
    int cs = 0, adobe = 0;
    int rc = read_header(tj, buf, len, name, max_pixels, info, &cs, &adobe);
    tjDestroy(tj);
    return rc;
}

/* CMYK to RGB in place (4 bytes in, 3 out, front to back). Inverted CMYK
 * holds 255 - ink, so R = C' K' / 255; plain CMYK holds the ink. */
static void cmyk_to_rgb(uint8_t *px, size_t n, int inverted) {
    for (size_t i = 0; i < n; i++) {
        unsigned c = px[4 * i], m = px[4 * i + 1], y = px[4 * i + 2], k = px[4 * i + 3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        px[3 * i] = (uint8_t)((c * k + 127) / 255);
        px[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
        px[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

int osp__jpeg_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                     int min_w, int min_h, osp_image *out, osp_image_info *info) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return osp_error(OSP_ENOMEM, "%s: cannot start the JPEG decoder", name);
    int cs = 0, adobe = 0;
    int rc = read_header(tj, buf, len, name, max_pixels, info, &cs, &adobe);
    if (rc != OSP_OK) {
        tjDestroy(tj);
        return rc;
    }
    int denom = 1;
    for (size_t k = 0; k < sizeof SHRINK / sizeof SHRINK[0] && (min_w > 0 || min_h > 0); k++)
        if (scaled(info->width, SHRINK[k]) >= min_w && scaled(info->height, SHRINK[k]) >= min_h) {
            denom = SHRINK[k];
            break;
        }
    /* TurboJPEG rounds scaled sizes up, as scaled() does. */
    int w = scaled(info->width, denom), h = scaled(info->height, denom);
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    size_t px = (size_t)w * (size_t)h; /* <= max_pixels: checked, fits */
    uint8_t *pixels = osp_alloc(px * (cmyk ? 4 : 3));
    if (!pixels) {
        tjDestroy(tj);
        return osp_error(OSP_ENOMEM, "%s: out of memory for %dx%d pixels", name, w, h);
    }
    int flags = TJFLAG_LIMITSCANS; /* refuse progressive files with > 500 scans */
    if (tjDecompress2(tj, buf, (unsigned long)len, pixels, w, 0, h, cmyk ? TJPF_CMYK : TJPF_RGB,
                      flags) != 0 &&
        (tjGetErrorCode(tj) != TJERR_WARNING || !harmless_warning(tjGetErrorStr2(tj)))) {
        rc = tj_fail(tj, name);
        osp_free(pixels);
        tjDestroy(tj);
        return rc;
    }
    tjDestroy(tj);
    if (cmyk) cmyk_to_rgb(pixels, px, adobe);
    out->width = w;
    out->height = h;
    out->pixels = pixels;
    return OSP_OK;
}
