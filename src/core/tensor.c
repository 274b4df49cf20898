/* Shapes and float32 tensors. */
#include <stdio.h>
#include <string.h>

#include "osprey/core.h"

int64_t osp_shape_numel(const osp_shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->dim[i];
    return n;
}

int osp_shape_equal(const osp_shape *a, const osp_shape *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dim[i] != b->dim[i]) return 0;
    return 1;
}

void osp_shape_format(const osp_shape *s, char *buf, size_t len) {
    size_t used = 0;
    if (len == 0) return;
    buf[0] = '\0';
    for (int i = 0; i < s->ndim && used < len; i++) {
        int n = snprintf(buf + used, len - used, i ? "x%lld" : "%lld", (long long)s->dim[i]);
        if (n < 0) break;
        used += (size_t)n;
    }
}

osp_shape osp_shape_make(int ndim, const int64_t *dim) {
    osp_shape s = {0};
    s.ndim = ndim < 0 ? 0 : ndim > OSP_MAX_DIMS ? OSP_MAX_DIMS : ndim;
    for (int i = 0; i < s.ndim; i++) s.dim[i] = dim[i];
    return s;
}

osp_shape osp_shape4(int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t d[4] = {n, c, h, w};
    return osp_shape_make(4, d);
}

/* Checks dims and gives the element count in *numel; an error otherwise. */
static int checked_numel(const osp_shape *shape, int64_t *numel) {
    if (shape->ndim < 0 || shape->ndim > OSP_MAX_DIMS)
        return osp_error(OSP_EINVAL, "tensor rank %d is outside 0..%d", shape->ndim, OSP_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < shape->ndim; i++) {
        int64_t d = shape->dim[i];
        if (d < 0 || (d > 0 && n > INT64_MAX / 4 / d))
            return osp_error(OSP_ERANGE, "tensor dimension %d (%lld) is negative or too large", i,
                             (long long)d);
        n *= d;
    }
    *numel = n;
    return OSP_OK;
}

int osp_tensor_new(const osp_shape *shape, osp_tensor **out) {
    *out = NULL;
    int64_t n = 0;
    int rc = checked_numel(shape, &n);
    if (rc) return rc;
    osp_tensor *t = osp_calloc(1, sizeof *t);
    if (!t) return OSP_ENOMEM;
    t->data = osp_calloc((size_t)n, sizeof(float));
    if (!t->data) {
        osp_free(t);
        return OSP_ENOMEM;
    }
    t->shape = *shape;
    t->numel = n;
    t->owns_data = 1;
    *out = t;
    return OSP_OK;
}

int osp_tensor_wrap(float *data, const osp_shape *shape, osp_tensor **out) {
    *out = NULL;
    int64_t n = 0;
    int rc = checked_numel(shape, &n);
    if (rc) return rc;
    osp_tensor *t = osp_calloc(1, sizeof *t);
    if (!t) return OSP_ENOMEM;
    t->data = data;
    t->shape = *shape;
    t->numel = n;
    *out = t;
    return OSP_OK;
}

void osp_tensor_free(osp_tensor *t) {
    if (!t) return;
    if (t->owns_data) osp_free(t->data);
    osp_free(t);
}
