/* The ANN benchmark vector files (.fvecs, .ivecs, .bvecs): records of a
 * little-endian int32 dimension d followed by d elements (float32, int32 or
 * uint8). No header, no count: the count is the file length over the record
 * size, so every record must have the same d. */
#include <string.h>

#include "io/io_impl.h"

#define VECS_MAX_DIM (1 << 20)

int osp_vecs_parse(const void *buf, size_t len, const char *name, osp_dtype dtype,
                   osp_array *out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_vecs_parse: no output");
    memset(out, 0, sizeof *out);
    if (!name) name = "(memory)";
    if (!buf && len > 0) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    if (dtype != OSP_DTYPE_F32 && dtype != OSP_DTYPE_I32 && dtype != OSP_DTYPE_U8)
        return osp_error(OSP_EINVAL, "%s: vector files hold F32, I32 or U8, not %s", name,
                         osp_dtype_name(dtype));
    const unsigned char *b = buf;
    if (len < 4) return osp_error(OSP_EFORMAT, "%s: %zu bytes is too short for a vector file",
                                  name, len);
    uint32_t d = osp__load_le32(b);
    if (d < 1 || d > VECS_MAX_DIM)
        return osp_error(OSP_EFORMAT, "%s: vector dimension %u is outside 1..%d", name, d,
                         VECS_MAX_DIM);
    size_t elem = osp_dtype_size(dtype);
    size_t row = (size_t)d * elem; /* at most 8 MiB: no overflow */
    size_t record = 4 + row;
    if (len % record != 0)
        return osp_error(OSP_EFORMAT, "%s: file length %zu is not a multiple of the record "
                         "size %zu (dimension %u)", name, len, record, d);
    size_t n = len / record;
    for (size_t i = 1; i < n; i++) {
        uint32_t di = osp__load_le32(b + i * record);
        if (di != d)
            return osp_error(OSP_EFORMAT, "%s: record %zu has dimension %u, expected %u", name,
                             i, di, d);
    }
    unsigned char *data = osp_alloc(n * row); /* n * row < len */
    if (!data) return osp_error(OSP_ENOMEM, "%s: out of memory for %zu bytes", name, n * row);
    for (size_t i = 0; i < n; i++) memcpy(data + i * row, b + i * record + 4, row);
    int64_t dims[2] = {(int64_t)n, (int64_t)d};
    out->dtype = dtype;
    out->shape = osp_shape_make(2, dims);
    out->data = data;
    return OSP_OK;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int osp_vecs_read(const char *path, osp_array *out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_vecs_read: no output");
    memset(out, 0, sizeof *out);
    if (!path) return osp_error(OSP_EINVAL, "osp_vecs_read: no path");
    osp_dtype dtype;
    if (has_suffix(path, ".fvecs"))
        dtype = OSP_DTYPE_F32;
    else if (has_suffix(path, ".ivecs"))
        dtype = OSP_DTYPE_I32;
    else if (has_suffix(path, ".bvecs"))
        dtype = OSP_DTYPE_U8;
    else
        return osp_error(OSP_EINVAL, "%s: not a .fvecs, .ivecs or .bvecs file", path);
    osp_mapped_file m;
    int rc = osp_file_map(path, &m);
    if (rc != OSP_OK) return rc;
    rc = osp_vecs_parse(m.data, m.len, path, dtype, out);
    osp_file_unmap(&m);
    return rc;
}
