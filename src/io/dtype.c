/* Element types and the arrays that carry them. */
#include <string.h>

#include "io/io_impl.h"

int osp__dtype_valid(int t) { return t >= OSP_DTYPE_F32 && t <= OSP_DTYPE_F16; }

size_t osp_dtype_size(osp_dtype t) {
    switch (t) {
    case OSP_DTYPE_F32: return 4;
    case OSP_DTYPE_F64: return 8;
    case OSP_DTYPE_I32: return 4;
    case OSP_DTYPE_I64: return 8;
    case OSP_DTYPE_U8: return 1;
    case OSP_DTYPE_F16: return 2;
    }
    return 0;
}

const char *osp_dtype_name(osp_dtype t) {
    switch (t) {
    case OSP_DTYPE_F32: return "F32";
    case OSP_DTYPE_F64: return "F64";
    case OSP_DTYPE_I32: return "I32";
    case OSP_DTYPE_I64: return "I64";
    case OSP_DTYPE_U8: return "U8";
    case OSP_DTYPE_F16: return "F16";
    }
    return "unknown";
}

int osp__array_nbytes(osp_dtype dtype, const osp_shape *shape, const char *name, size_t *out) {
    if (!osp__dtype_valid((int)dtype))
        return osp_error(OSP_EINVAL, "%s: unknown dtype %d", name, (int)dtype);
    if (shape->ndim < 0 || shape->ndim > OSP_MAX_DIMS)
        return osp_error(OSP_ERANGE, "%s: rank %d is outside 0..%d", name, shape->ndim,
                         OSP_MAX_DIMS);
    size_t bytes = osp_dtype_size(dtype);
    for (int i = 0; i < shape->ndim; i++) {
        int64_t d = shape->dim[i];
        if (d < 0) return osp_error(OSP_ERANGE, "%s: dimension %d is negative", name, i);
        /* Also keep the total within int64, the type of element counts. */
        if ((uint64_t)d > SIZE_MAX || osp_mul_size(bytes, (size_t)d, &bytes) != OSP_OK ||
            bytes > (size_t)INT64_MAX)
            return osp_error(OSP_ERANGE, "%s: array size overflows", name);
    }
    *out = bytes;
    return OSP_OK;
}

int64_t osp_array_numel(const osp_array *a) {
    if (!a) return 0;
    return osp_shape_numel(&a->shape);
}

int osp_array_to_f32(osp_array *a) {
    if (!a) return osp_error(OSP_EINVAL, "osp_array_to_f32: no array");
    if (a->dtype == OSP_DTYPE_F32) return OSP_OK;
    if (!osp__dtype_valid((int)a->dtype))
        return osp_error(OSP_EINVAL, "osp_array_to_f32: unknown dtype %d", (int)a->dtype);
    const int64_t n = osp_array_numel(a);
    size_t bytes;
    if (n < 0 || osp_mul_size((size_t)n, sizeof(float), &bytes))
        return osp_error(OSP_ERANGE, "osp_array_to_f32: %lld elements are too many", (long long)n);
    float *f = osp_alloc(bytes ? bytes : sizeof(float));
    if (!f) return osp_error(OSP_ENOMEM, "out of memory converting %lld values to float32", (long long)n);
    switch (a->dtype) {
    case OSP_DTYPE_F16: osp_float_from_half(a->data, f, n); break;
    case OSP_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) f[i] = (float)((const double *)a->data)[i];
        break;
    case OSP_DTYPE_I32:
        for (int64_t i = 0; i < n; i++) f[i] = (float)((const int32_t *)a->data)[i];
        break;
    case OSP_DTYPE_I64:
        for (int64_t i = 0; i < n; i++) f[i] = (float)((const int64_t *)a->data)[i];
        break;
    case OSP_DTYPE_U8:
        for (int64_t i = 0; i < n; i++) f[i] = (float)((const uint8_t *)a->data)[i];
        break;
    case OSP_DTYPE_F32: break;
    }
    osp_free(a->data);
    a->data = f;
    a->dtype = OSP_DTYPE_F32;
    return OSP_OK;
}

void osp_array_free(osp_array *a) {
    if (!a) return;
    osp_free(a->data);
    memset(a, 0, sizeof *a);
}
