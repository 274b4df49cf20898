/* JPEG through libjpeg-turbo: headers through its TurboJPEG API, pixels
 * through its libjpeg API, which can decode a window of the image.
 * Shrink-on-load uses its DCT scaling: decoding at 1/2, 1/4 or 1/8 skips
 * most of the inverse DCT and upsampling work, which is where a large
 * photo's decode time goes when the network wants 224 x 224. A window
 * (the part a center crop keeps) skips the inverse DCT, upsampling and
 * colour conversion of the rows above and below it and of the columns
 * beside it; every coefficient is still entropy-decoded (that cannot be
 * skipped without restart markers), which also keeps truncation and
 * damage anywhere in the file an error, as for a whole decode.
 *
 * CMYK and YCCK files (from print workflows) are decoded to CMYK and
 * converted here; files with an Adobe APP14 segment store CMYK inverted,
 * as Photoshop writes them and as other readers assume. */
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
/* jpeglib.h needs size_t and FILE declared first */
#include <jpeglib.h>
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
static int jpeg_fail(const char *msg, const char *name) {
    if (strstr(msg, "Premature end")) return osp_error(OSP_EFORMAT, "%s: truncated JPEG", name);
    if (strstr(msg, "Unsupported"))
        return osp_error(OSP_ENOTSUP, "%s: unsupported JPEG: %s", name, msg);
    return osp_error(OSP_EFORMAT, "%s: corrupt JPEG: %s", name, msg);
}

static int tj_fail(tjhandle tj, const char *name) { return jpeg_fail(tjGetErrorStr2(tj), name); }

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

/* libjpeg reports through these: an error, or a warning that is not
 * harmless, jumps back out of the decode with its message; nothing is
 * printed. */
typedef struct jpeg_errors {
    struct jpeg_error_mgr mgr;
    jmp_buf back;
    char msg[JMSG_LENGTH_MAX];
} jpeg_errors;

static void on_error(j_common_ptr c) {
    jpeg_errors *e = (jpeg_errors *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->back, 1);
}

static void on_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    jpeg_errors *e = (jpeg_errors *)c->err;
    c->err->format_message(c, e->msg);
    if (!harmless_warning(e->msg)) longjmp(e->back, 1);
}

/* Progressive files of more than 500 scans are refused, as TurboJPEG's
 * TJFLAG_LIMITSCANS does: each scan can make the decoder pass over the
 * whole image again. */
static void on_progress(j_common_ptr c) {
    if (c->is_decompressor && ((j_decompress_ptr)c)->input_scan_number > 500) {
        jpeg_errors *e = (jpeg_errors *)c->err;
        snprintf(e->msg, sizeof e->msg, "progressive JPEG with more than 500 scans");
        longjmp(e->back, 1);
    }
}

/* The rows [y0, y1) and at least the *w columns from *x0 of the image at
 * the decoder's scale into pixels (3 or 4 bytes a pixel, rows of *w
 * pixels): the columns widen to whole blocks, and *x0 and *w then say
 * where they start and how many. The rows outside are skipped, which
 * still entropy-decodes them. */
static void decode_rows(j_decompress_ptr d, unsigned *x0, unsigned *w, unsigned y0, unsigned y1, uint8_t *pixels,
                        int bytes) {
    JDIMENSION cx = *x0, cw = *w;
    if (cw < d->output_width) jpeg_crop_scanline(d, &cx, &cw);
    *x0 = cx;
    *w = cw;
    if (y0 > 0) jpeg_skip_scanlines(d, y0);
    while (d->output_scanline < y1) {
        JSAMPROW row = pixels + (size_t)(d->output_scanline - y0) * cw * (size_t)bytes;
        jpeg_read_scanlines(d, &row, 1);
    }
    if (d->output_scanline < d->output_height) jpeg_skip_scanlines(d, d->output_height - d->output_scanline);
    jpeg_finish_decompress(d);
}

/* v in [0, hi]; NaN is 0 */
static int clamp_to(double v, int hi) { return !(v > 0) ? 0 : v >= hi ? hi : (int)v; }

int osp__jpeg_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels, int min_w, int min_h,
                     const osp__window *window, osp_image *out, osp_image_info *info, osp__placement *at) {
    osp__jpeg_markers m;
    osp__jpeg_scan_markers(buf, len, &m);
    struct jpeg_decompress_struct d;
    jpeg_errors err;
    struct jpeg_progress_mgr progress = {.progress_monitor = on_progress};
    /* volatile: set after setjmp, read after a longjmp back */
    uint8_t *volatile pixels = NULL;
    memset(&d, 0, sizeof d);
    d.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_error;
    err.mgr.emit_message = on_message;
    err.msg[0] = '\0';
    if (setjmp(err.back)) {
        jpeg_destroy_decompress(&d);
        osp_free(pixels);
        return jpeg_fail(err.msg, name);
    }
    jpeg_create_decompress(&d);
    d.progress = &progress;
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    int rc = osp__check_pixels(name, "JPEG", d.image_width, d.image_height, max_pixels);
    if (rc != OSP_OK) {
        jpeg_destroy_decompress(&d);
        return rc;
    }
    const int cs = d.jpeg_color_space, cmyk = cs == JCS_CMYK || cs == JCS_YCCK;
    memset(info, 0, sizeof *info);
    info->format = OSP_IMAGE_JPEG;
    info->width = (int)d.image_width;
    info->height = (int)d.image_height;
    info->bit_depth = 8;
    info->channels = cs == JCS_GRAYSCALE ? 1 : cmyk ? 4 : 3;
    info->orientation = m.orientation;
    int denom = 1;
    for (size_t k = 0; k < sizeof SHRINK / sizeof SHRINK[0] && (min_w > 0 || min_h > 0); k++)
        if (scaled(info->width, SHRINK[k]) >= min_w && scaled(info->height, SHRINK[k]) >= min_h) {
            denom = SHRINK[k];
            break;
        }
    d.scale_num = 1;
    d.scale_denom = (unsigned)denom;
    d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&d);
    /* libjpeg rounds scaled sizes up, as scaled() does */
    const int sw = (int)d.output_width, sh = (int)d.output_height, bytes = cmyk ? 4 : 3;
    unsigned x0 = 0, w = (unsigned)sw, y0 = 0, y1 = (unsigned)sh;
    if (window) {
        /* in pixels of this scale, with a margin: the pixels at a cut's
         * edge come out of the upsampling a little otherwise than in a
         * whole decode, and the ones inside must not */
        const double kx = (double)sw / info->width, ky = (double)sh / info->height;
        const int xa = clamp_to(floor(window->x0 * kx) - OSP__WINDOW_MARGIN, sw);
        const int xb = clamp_to(ceil(window->x1 * kx) + OSP__WINDOW_MARGIN, sw);
        const int ya = clamp_to(floor(window->y0 * ky) - OSP__WINDOW_MARGIN, sh);
        const int yb = clamp_to(ceil(window->y1 * ky) + OSP__WINDOW_MARGIN, sh);
        if (xb > xa && yb > ya) { /* else an empty window: all of it */
            x0 = (unsigned)xa;
            w = (unsigned)(xb - xa);
            y0 = (unsigned)ya;
            y1 = (unsigned)yb;
        }
    }
    /* at most the whole image: within max_pixels, checked */
    pixels = osp_alloc((size_t)sw * (size_t)(y1 - y0) * (size_t)bytes);
    if (!pixels) {
        jpeg_destroy_decompress(&d);
        return osp_error(OSP_ENOMEM, "%s: out of memory for %dx%d pixels", name, sw, (int)(y1 - y0));
    }
    decode_rows(&d, &x0, &w, y0, y1, pixels, bytes);
    jpeg_destroy_decompress(&d);
    const size_t px = (size_t)w * (y1 - y0);
    if (cmyk) cmyk_to_rgb(pixels, px, m.adobe);
    out->width = (int)w;
    out->height = (int)(y1 - y0);
    out->pixels = pixels;
    at->x = (int)x0;
    at->y = (int)y0;
    at->full_width = sw;
    at->full_height = sh;
    return OSP_OK;
}
