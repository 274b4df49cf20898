/* WebP through libwebp (lossy and lossless, alpha dropped). Animated WebP
 * would need the demux library and a choice of frame: refused. */
#include <webp/decode.h>

#include "decode_impl.h"

static int features(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    WebPBitstreamFeatures *f) {
    VP8StatusCode st = WebPGetFeatures(buf, len, f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA) return osp_error(OSP_EFORMAT, "%s: truncated WebP", name);
    if (st != VP8_STATUS_OK) return osp_error(OSP_EFORMAT, "%s: corrupt WebP header", name);
    if (f->has_animation) return osp_error(OSP_ENOTSUP, "%s: animated WebP is not supported", name);
    return osp__check_pixels(name, "WebP", f->width, f->height, max_pixels);
}

int osp__webp_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image_info *info) {
    WebPBitstreamFeatures f;
    int rc = features(buf, len, name, max_pixels, &f);
    if (rc != OSP_OK) return rc;
    info->format = OSP_IMAGE_WEBP;
    info->width = f.width;
    info->height = f.height;
    info->orientation = 1;
    info->channels = f.has_alpha ? 4 : 3;
    info->bit_depth = 8;
    return OSP_OK;
}

int osp__webp_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                     osp_image *out, osp_image_info *info) {
    int rc = osp__webp_probe(buf, len, name, max_pixels, info);
    if (rc != OSP_OK) return rc;
    WebPBitstreamFeatures f = {.width = info->width, .height = info->height};
    size_t stride = (size_t)f.width * 3, size = stride * (size_t)f.height;
    uint8_t *px = osp_alloc(size);
    if (!px) return osp_error(OSP_ENOMEM, "%s: out of memory for %dx%d pixels", name, f.width, f.height);
    if (!WebPDecodeRGBInto(buf, len, px, size, (int)stride)) {
        osp_free(px);
        return osp_error(OSP_EFORMAT, "%s: corrupt or truncated WebP", name);
    }
    out->width = f.width;
    out->height = f.height;
    out->pixels = px;
    return OSP_OK;
}
