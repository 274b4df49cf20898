/* Folding of Equal and Where on constants: what PyTorch's exporter writes
 * for x.expand(n, -1, -1), where -1 means "keep that axis":
 * Where(Equal(sizes, -1), ones, sizes). The batch size (ONNX_BATCH) may
 * travel through: it is unknown but positive, so it equals itself and
 * differs from any number below 1; compared with a positive number the
 * answer is unknown and the node is refused. */
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* Folded results are shapes and masks: as onnx_fold.c, far fewer values
 * than an initializer may hold, so a hostile broadcast cannot inflate. */
#define SELECT_MAX_VALUES ((int64_t)1 << 24)

/* Numpy broadcasting of up to three constants: the result's dims and, per
 * operand, its strides (0 where broadcast). */
static int broadcast(const onnx_const *const *c, int count, int *rank, int64_t *dim,
                     int64_t stride[3][ONNX_MAX_RANK]) {
    *rank = 0;
    for (int i = 0; i < count; i++)
        if (c[i]->ndim > *rank) *rank = c[i]->ndim;
    for (int k = 0; k < *rank; k++) dim[k] = 1;
    for (int i = 0; i < count; i++)
        for (int k = 0; k < c[i]->ndim; k++) {
            int64_t d = c[i]->dim[k], *out = &dim[k + *rank - c[i]->ndim];
            if (d != 1 && *out != 1 && d != *out) return OSP_ESHAPE;
            if (d != 1) *out = d;
        }
    int64_t total = 1;
    for (int k = 0; k < *rank; k++)
        if ((total *= dim[k]) > SELECT_MAX_VALUES) return OSP_ERANGE;
    for (int i = 0; i < count; i++) {
        int64_t s = 1;
        for (int k = *rank - 1; k >= 0; k--) {
            int kk = k - (*rank - c[i]->ndim);
            int64_t d = kk >= 0 ? c[i]->dim[kk] : 1;
            stride[i][k] = d == 1 ? 0 : s;
            s *= d;
        }
    }
    return OSP_OK;
}

/* The offset in operand i of the result's element o. */
static int64_t offset(int rank, const int64_t *dim, const int64_t *stride, int64_t o) {
    int64_t at = 0;
    for (int k = rank - 1; k >= 0; k--) {
        at += (o % dim[k]) * stride[k];
        o /= dim[k];
    }
    return at;
}

static int is_batch(const onnx_const *c, int64_t i) {
    return c->is_int && osp__onnx_batch_factor(c->i[i]);
}

int osp__onnx_fold_equal(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *c[2] = {osp__onnx_const_input(im, n, 0), osp__onnx_const_input(im, n, 1)};
    if (!c[0] || !c[1]) FAIL(OSP_EFORMAT, "needs two inputs");
    int rank;
    int64_t dim[ONNX_MAX_RANK], stride[3][ONNX_MAX_RANK];
    if (broadcast(c, 2, &rank, dim, stride))
        FAIL(OSP_ESHAPE, "shapes that do not broadcast, or to more than 2^24 values");
    int rc = osp__onnx_const_alloc(out, rank, dim, 1);
    if (rc) return rc;
    for (int64_t o = 0; o < out->numel; o++) {
        int64_t a = offset(rank, dim, stride[0], o), b = offset(rank, dim, stride[1], o);
        int ba = is_batch(c[0], a), bb = is_batch(c[1], b);
        if (ba || bb) {
            double other = ba ? osp__onnx_const_get(c[1], b) : osp__onnx_const_get(c[0], a);
            if (ba && bb)
                out->i[o] = osp__onnx_batch_factor(c[0]->i[a]) == osp__onnx_batch_factor(c[1]->i[b]);
            else if (other < 1.0) out->i[o] = 0;
            else {
                osp__onnx_const_free(out);
                FAIL(OSP_ENOTSUP, "compares the batch size with %g", other);
            }
        } else out->i[o] = osp__onnx_const_get(c[0], a) == osp__onnx_const_get(c[1], b);
    }
    return OSP_OK;
}

int osp__onnx_fold_where(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *c[3] = {osp__onnx_const_input(im, n, 0), osp__onnx_const_input(im, n, 1),
                              osp__onnx_const_input(im, n, 2)};
    if (!c[0] || !c[1] || !c[2]) FAIL(OSP_EFORMAT, "needs three inputs");
    if (c[1]->is_int != c[2]->is_int) FAIL(OSP_EFORMAT, "the two branches differ in type");
    int rank;
    int64_t dim[ONNX_MAX_RANK], stride[3][ONNX_MAX_RANK];
    if (broadcast(c, 3, &rank, dim, stride))
        FAIL(OSP_ESHAPE, "shapes that do not broadcast, or to more than 2^24 values");
    int rc = osp__onnx_const_alloc(out, rank, dim, c[1]->is_int);
    if (rc) return rc;
    for (int64_t o = 0; o < out->numel; o++) {
        int64_t at = offset(rank, dim, stride[0], o);
        if (is_batch(c[0], at)) {
            osp__onnx_const_free(out);
            FAIL(OSP_ENOTSUP, "uses the batch size as a condition");
        }
        int pick = osp__onnx_const_get(c[0], at) != 0.0 ? 1 : 2;
        int64_t from = offset(rank, dim, stride[pick], o);
        if (out->is_int) out->i[o] = c[pick]->i[from];
        else out->f[o] = c[pick]->f[from];
    }
    return OSP_OK;
}
