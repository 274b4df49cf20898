/* Gradient compression with error feedback (compress.h). */
#include "compress.h"

#include <math.h>
#include <string.h>

#include "osprey/core.h"

/* Values packed per pass: the residual is updated from a small buffer of
 * the packed chunk's values, so the arithmetic stays in the cache. */
#define BLOCK 1024

const char *osp__compress_name(osp__compress_kind kind) {
    switch (kind) {
    case OSP__COMPRESS_FP16: return "fp16";
    case OSP__COMPRESS_INT8: return "int8";
    default: return "none";
    }
}

int osp__compress_parse(const char *name, osp__compress_kind *kind) {
    static const osp__compress_kind all[] = {OSP__COMPRESS_NONE, OSP__COMPRESS_FP16, OSP__COMPRESS_INT8};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, osp__compress_name(all[i])) == 0) {
            *kind = all[i];
            return OSP_OK;
        }
    return osp_error(OSP_EINVAL, "unknown compression '%s' (none, fp16 or int8)", name);
}

size_t osp__compress_size(osp__compress_kind kind, int64_t n) {
    switch (kind) {
    case OSP__COMPRESS_FP16: return (size_t)n * 2;
    case OSP__COMPRESS_INT8: return sizeof(float) + (size_t)n;
    default: return (size_t)n * sizeof(float);
    }
}

static int8_t quantize(float v, float inv) {
    /* fmaxf first: a NaN becomes -127 rather than an out-of-range cast */
    return (int8_t)lrintf(fminf(fmaxf(v * inv, -127.0f), 127.0f));
}

static void pack_int8(const float *x, float *resid, int64_t n, unsigned char *out) {
    float top = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = fabsf(resid ? x[i] + resid[i] : x[i]);
        if (v > top) top = v;
    }
    const float scale = top / 127.0f, inv = top > 0 ? 127.0f / top : 0.0f;
    memcpy(out, &scale, sizeof scale);
    int8_t *q = (int8_t *)(out + sizeof scale);
    for (int64_t i = 0; i < n; i++) {
        float v = resid ? x[i] + resid[i] : x[i];
        q[i] = quantize(v, inv);
        if (resid) resid[i] = v - (float)q[i] * scale;
    }
}

static void pack_fp16(const float *x, float *resid, int64_t n, unsigned char *out) {
    float e[BLOCK], back[BLOCK];
    uint16_t h[BLOCK];
    for (int64_t at = 0; at < n; at += BLOCK) {
        const int64_t m = n - at < BLOCK ? n - at : BLOCK;
        for (int64_t i = 0; i < m; i++) e[i] = resid ? x[at + i] + resid[at + i] : x[at + i];
        osp_half_from_float(e, h, m);
        memcpy(out + 2 * at, h, (size_t)m * 2);
        if (!resid) continue;
        osp_float_from_half(h, back, m);
        for (int64_t i = 0; i < m; i++) resid[at + i] = e[i] - back[i];
    }
}

void osp__compress(osp__compress_kind kind, const float *x, float *resid, int64_t n, void *out) {
    switch (kind) {
    case OSP__COMPRESS_FP16: pack_fp16(x, resid, n, out); break;
    case OSP__COMPRESS_INT8: pack_int8(x, resid, n, out); break;
    default:
        memcpy(out, x, (size_t)n * sizeof(float));
        if (resid) memset(resid, 0, (size_t)n * sizeof(float));
        break;
    }
}

void osp__decompress_add(osp__compress_kind kind, const void *in, int64_t n, float *acc) {
    const unsigned char *p = in;
    if (kind == OSP__COMPRESS_FP16) {
        uint16_t h[BLOCK];
        float v[BLOCK];
        for (int64_t at = 0; at < n; at += BLOCK) {
            const int64_t m = n - at < BLOCK ? n - at : BLOCK;
            memcpy(h, p + 2 * at, (size_t)m * 2);
            osp_float_from_half(h, v, m);
            for (int64_t i = 0; i < m; i++) acc[at + i] += v[i];
        }
    } else if (kind == OSP__COMPRESS_INT8) {
        float scale;
        memcpy(&scale, p, sizeof scale);
        const int8_t *q = (const int8_t *)(p + sizeof scale);
        for (int64_t i = 0; i < n; i++) acc[i] += (float)q[i] * scale;
    } else {
        float v[BLOCK];
        for (int64_t at = 0; at < n; at += BLOCK) {
            const int64_t m = n - at < BLOCK ? n - at : BLOCK;
            memcpy(v, p + 4 * at, (size_t)m * 4);
            for (int64_t i = 0; i < m; i++) acc[at + i] += v[i];
        }
    }
}
