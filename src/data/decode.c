/* Format-independent decoding: recognise the format from the bytes, hand
 * off to the format's decoder, apply the EXIF orientation. */
#include <string.h>
#include <strings.h>

#include "decode_impl.h"

osp_image_format osp_image_sniff(const void *buf, size_t len) {
    const uint8_t *b = buf;
    if (!b) return OSP_IMAGE_UNKNOWN;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return OSP_IMAGE_JPEG;
    if (len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return OSP_IMAGE_PNG;
    if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return OSP_IMAGE_WEBP;
    return OSP_IMAGE_UNKNOWN;
}

const char *osp_image_format_name(osp_image_format f) {
    switch (f) {
    case OSP_IMAGE_JPEG: return "JPEG";
    case OSP_IMAGE_PNG: return "PNG";
    case OSP_IMAGE_WEBP: return "WebP";
    default: return "unknown";
    }
}

int osp_image_name_known(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".webp"};
    size_t n = name ? strlen(name) : 0;
    for (size_t k = 0; k < sizeof ext / sizeof ext[0]; k++) {
        size_t e = strlen(ext[k]);
        if (n > e && !strcasecmp(name + n - e, ext[k])) return 1;
    }
    return 0;
}

/* Names the formats people do meet, so that the message says more than
 * "unknown". */
static const char *known_other(const uint8_t *b, size_t len) {
    if (len >= 4 && !memcmp(b, "GIF8", 4)) return "GIF";
    if (len >= 2 && b[0] == 'B' && b[1] == 'M') return "BMP";
    if (len >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4))) return "TIFF";
    if (len >= 12 && !memcmp(b + 4, "ftyp", 4)) return "HEIF/AVIF/MP4";
    return NULL;
}

static int unrecognised(const uint8_t *b, size_t len, const char *name) {
    if (len == 0) return osp_error(OSP_EFORMAT, "%s: empty file", name);
    const char *other = known_other(b, len);
    if (other)
        return osp_error(OSP_ENOTSUP, "%s: %s images are not supported (JPEG, PNG and WebP are)",
                         name, other);
    return osp_error(OSP_EFORMAT, "%s: not an image (not JPEG, PNG or WebP)", name);
}

int osp__check_pixels(const char *name, const char *format, int64_t width, int64_t height,
                      int64_t max_pixels) {
    if (max_pixels <= 0) max_pixels = OSP_IMAGE_MAX_PIXELS;
    if (width <= 0 || height <= 0)
        return osp_error(OSP_EFORMAT, "%s: %s header declares %lldx%lld pixels", name, format,
                         (long long)width, (long long)height);
    /* Sides are below 2^32 in every format, so the product fits. */
    if (width > INT32_MAX || height > INT32_MAX || width * height > max_pixels)
        return osp_error(OSP_ERANGE, "%s: %s of %lldx%lld pixels is over the limit of %lld pixels",
                         name, format, (long long)width, (long long)height, (long long)max_pixels);
    return OSP_OK;
}

size_t osp_image_max_file_bytes(int64_t max_pixels) {
    if (max_pixels <= 0) max_pixels = OSP_IMAGE_MAX_PIXELS;
    /* 4 bytes a pixel holds raw RGBA and any JPEG of sane quality; 16 MiB
     * more for metadata (EXIF thumbnails, ICC profiles). */
    uint64_t b = (uint64_t)max_pixels * 4 + (16u << 20);
    return b > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)b;
}

static int oriented_swaps(int orientation) { return orientation >= 5; }

int osp_image_probe(const void *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info) {
    if (!info) return osp_error(OSP_EINVAL, "osp_image_probe: no output");
    memset(info, 0, sizeof *info);
    if (!name) name = "(image)";
    if (!buf && len) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    int rc;
    switch (osp_image_sniff(buf, len)) {
    case OSP_IMAGE_JPEG: rc = osp__jpeg_probe(buf, len, name, max_pixels, info); break;
    case OSP_IMAGE_PNG: rc = osp__png_probe(buf, len, name, max_pixels, info); break;
    case OSP_IMAGE_WEBP: rc = osp__webp_probe(buf, len, name, max_pixels, info); break;
    default: return unrecognised(buf, len, name);
    }
    if (rc == OSP_OK && oriented_swaps(info->orientation)) {
        int t = info->width;
        info->width = info->height;
        info->height = t;
    }
    return rc;
}

/* Displayed pixel (x, y) of an image stored w x h with orientation o comes
 * from stored pixel (sx, sy) (EXIF 2.3, tag 0x0112: 6 = rotate 90 degrees
 * clockwise to display, 8 = 90 counter-clockwise, 2/4 mirrors, 5/7 the
 * two diagonal flips). */
static void source_of(int o, int w, int h, int x, int y, int *sx, int *sy) {
    switch (o) {
    case 2: *sx = w - 1 - x; *sy = y; break;
    case 3: *sx = w - 1 - x; *sy = h - 1 - y; break;
    case 4: *sx = x; *sy = h - 1 - y; break;
    case 5: *sx = y; *sy = x; break;
    case 6: *sx = y; *sy = h - 1 - x; break;
    case 7: *sx = w - 1 - y; *sy = h - 1 - x; break;
    case 8: *sx = w - 1 - y; *sy = x; break;
    default: *sx = x; *sy = y; break;
    }
}

static int orient(osp_image *img, int o, const char *name) {
    if (o <= 1 || o > 8) return OSP_OK;
    int w = img->width, h = img->height;
    int ow = oriented_swaps(o) ? h : w, oh = oriented_swaps(o) ? w : h;
    uint8_t *dst = osp_alloc((size_t)w * h * 3);
    if (!dst) return osp_error(OSP_ENOMEM, "%s: out of memory orienting %dx%d pixels", name, w, h);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            source_of(o, w, h, x, y, &sx, &sy);
            const uint8_t *s = img->pixels + ((size_t)sy * w + sx) * 3;
            uint8_t *d = dst + ((size_t)y * ow + x) * 3;
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
    osp_free(img->pixels);
    img->pixels = dst;
    img->width = ow;
    img->height = oh;
    return OSP_OK;
}

/* A rectangle of a w x h image (stored) as displayed under orientation o
 * (source_of's mapping, for whole rectangles); with inverse, the way
 * back, from a displayed rectangle of the displayed image to the stored
 * one (w x h still the stored size). */
static osp__window oriented_window(int o, double w, double h, osp__window r, int inverse) {
    /* 6 and 8 are each other's inverse; every other orientation is its own */
    if (inverse && (o == 6 || o == 8)) o = 14 - o;
    if (inverse && oriented_swaps(o)) {
        double t = w;
        w = h;
        h = t;
    }
    switch (o) {
    case 2: return (osp__window){w - r.x1, r.y0, w - r.x0, r.y1};
    case 3: return (osp__window){w - r.x1, h - r.y1, w - r.x0, h - r.y0};
    case 4: return (osp__window){r.x0, h - r.y1, r.x1, h - r.y0};
    case 5: return (osp__window){r.y0, r.x0, r.y1, r.x1};
    case 6: return (osp__window){h - r.y1, r.x0, h - r.y0, r.x1};
    case 7: return (osp__window){h - r.y1, w - r.x1, h - r.y0, w - r.x0};
    case 8: return (osp__window){r.y0, w - r.x1, r.y1, w - r.x0};
    default: return r;
    }
}

/* Decodes at least window (displayed, full size; NULL: all) of the image,
 * oriented; info gets the header as stored, *orientation the one applied,
 * *at where the pixels lie as displayed. */
static int decode_image(const void *buf, size_t len, const char *name, const osp_decode_options *opt,
                        const osp__window *window, osp_image *out, osp_image_info *info, int *orientation,
                        osp__placement *at) {
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    *orientation = 1;
    osp__placement stored;
    int rc;
    const osp_image_format format = osp_image_sniff(buf, len);
    switch (format) {
    case OSP_IMAGE_JPEG: {
        osp__jpeg_markers m;
        osp__jpeg_scan_markers(buf, len, &m);
        if (!opt->ignore_orientation) *orientation = m.orientation;
        const int swap = oriented_swaps(*orientation);
        /* the window as stored, from the header's stored size */
        osp_image_info head;
        osp__window w;
        const osp__window *win = NULL;
        if (window && osp__jpeg_probe(buf, len, name, opt->max_pixels, &head) == OSP_OK) {
            w = oriented_window(*orientation, head.width, head.height, *window, 1);
            win = &w;
        }
        rc = osp__jpeg_decode(buf, len, name, opt->max_pixels, swap ? opt->min_height : opt->min_width,
                              swap ? opt->min_width : opt->min_height, win, out, info, &stored);
        break;
    }
    case OSP_IMAGE_PNG: rc = osp__png_decode(buf, len, name, opt->max_pixels, out, info); break;
    case OSP_IMAGE_WEBP: rc = osp__webp_decode(buf, len, name, opt->max_pixels, out, info); break;
    default: return unrecognised(buf, len, name);
    }
    if (rc == OSP_OK && format != OSP_IMAGE_JPEG) stored = (osp__placement){0, 0, out->width, out->height};
    const int stored_w = out->width, stored_h = out->height;
    if (rc == OSP_OK) rc = orient(out, *orientation, name);
    if (rc != OSP_OK) {
        osp_image_free(out);
        return rc;
    }
    osp__window part = {stored.x, stored.y, stored.x + stored_w, stored.y + stored_h};
    part = oriented_window(*orientation, stored.full_width, stored.full_height, part, 0);
    const int swap = oriented_swaps(*orientation);
    *at = (osp__placement){(int)part.x0, (int)part.y0, swap ? stored.full_height : stored.full_width,
                           swap ? stored.full_width : stored.full_height};
    return OSP_OK;
}

int osp__image_decode_window(const void *buf, size_t len, const char *name, const osp_decode_options *opt,
                             const osp__window *window, osp_image *out, osp__placement *at) {
    if (!out) return osp_error(OSP_EINVAL, "osp_image_decode: no output");
    memset(out, 0, sizeof *out);
    if (!name) name = "(image)";
    if (!buf && len) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    osp_decode_options none = {0};
    osp_image_info info;
    int orientation;
    return decode_image(buf, len, name, opt ? opt : &none, window, out, &info, &orientation, at);
}

int osp_image_decode(const void *buf, size_t len, const char *name, const osp_decode_options *opt,
                     osp_image *out, osp_image_info *info) {
    if (!out) return osp_error(OSP_EINVAL, "osp_image_decode: no output");
    memset(out, 0, sizeof *out);
    if (!name) name = "(image)";
    if (!buf && len) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    osp_decode_options none = {0};
    osp_image_info local;
    if (!info) info = &local;
    int orientation;
    osp__placement at;
    int rc = decode_image(buf, len, name, opt ? opt : &none, NULL, out, info, &orientation, &at);
    if (rc != OSP_OK) return rc;
    info->orientation = orientation;
    if (oriented_swaps(orientation)) {
        int t = info->width;
        info->width = info->height;
        info->height = t;
    }
    return OSP_OK;
}

int osp_image_load(const char *path, const osp_decode_options *opt, osp_image *out,
                   osp_image_info *info) {
    if (!out) return osp_error(OSP_EINVAL, "osp_image_load: no output");
    memset(out, 0, sizeof *out);
    if (!path) return osp_error(OSP_EINVAL, "osp_image_load: no path");
    void *buf;
    size_t len;
    int rc = osp_file_read_all(path, osp_image_max_file_bytes(opt ? opt->max_pixels : 0), &buf, &len);
    if (rc != OSP_OK) return rc;
    rc = osp_image_decode(buf, len, path, opt, out, info);
    osp_free(buf);
    return rc;
}

void osp_image_free(osp_image *img) {
    if (!img) return;
    osp_free(img->pixels);
    img->pixels = NULL;
    img->width = img->height = 0;
}
