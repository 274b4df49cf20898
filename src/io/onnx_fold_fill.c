/* Folding of the operators that build constant tensors from shapes:
 * Range, Expand, ScatterND and Not. Swin's shifted-window attention writes
 * its mask this way: zeros of the padded image's size, regions numbered by
 * slice assignments (ScatterND of an Expand of a Range grid), the windows
 * compared (Equal, Not) and turned into -100 or 0 (Where). Each is a
 * function of the per-sample shape alone, so the whole chain becomes one
 * constant. The batch size (ONNX_BATCH) may not take part: it has no value. */
#include <math.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* As in onnx_fold.c: folded tensors are masks and indices, far fewer values
 * than an initializer may hold, so a hostile shape cannot inflate them. */
#define FILL_MAX_VALUES ((int64_t)1 << 24)

static int has_batch(const onnx_const *c) {
    for (int64_t k = 0; c->is_int && k < c->numel; k++)
        if (osp__onnx_batch_factor(c->i[k])) return 1;
    return 0;
}

static int alloc_checked(onnx_const *c, int ndim, const int64_t *dim, int is_int) {
    int64_t total = 1;
    for (int k = 0; k < ndim; k++) {
        if (dim[k] < 0 || (dim[k] && total > FILL_MAX_VALUES / dim[k])) return OSP_ERANGE;
        total *= dim[k];
    }
    return osp__onnx_const_alloc(c, ndim, dim, is_int);
}

/* Range(start, limit, delta): max(ceil((limit - start) / delta), 0) values. */
static int fold_range(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *arg[3];
    int is_int = 1;
    for (size_t i = 0; i < 3; i++) {
        arg[i] = osp__onnx_const_input(im, n, i);
        if (!arg[i] || arg[i]->numel != 1) FAIL(OSP_EFORMAT, "input %zu must be a scalar", i);
        if (has_batch(arg[i])) FAIL(OSP_ENOTSUP, "a range as long as the batch");
        is_int &= arg[i]->is_int;
    }
    double start = osp__onnx_const_get(arg[0], 0), limit = osp__onnx_const_get(arg[1], 0),
           delta = osp__onnx_const_get(arg[2], 0);
    if (delta == 0 || !isfinite(start) || !isfinite(limit) || !isfinite(delta))
        FAIL(OSP_EFORMAT, "start %g, limit %g, delta %g", start, limit, delta);
    double count = ceil((limit - start) / delta);
    if (count < 0) count = 0;
    if (count > (double)FILL_MAX_VALUES) FAIL(OSP_ERANGE, "a range of %g values", count);
    int64_t len = (int64_t)count;
    int rc = alloc_checked(out, 1, &len, is_int);
    if (rc) FAIL(rc, "a range of %lld values", (long long)len);
    for (int64_t k = 0; k < len; k++) {
        if (is_int) out->i[k] = arg[0]->i[0] + k * arg[2]->i[0];
        else out->f[k] = (float)(start + (double)k * delta);
    }
    return OSP_OK;
}

/* Expand of a constant to a shape without the batch: numpy broadcasting in
 * both directions (a 1 in the shape keeps the input's axis). */
static int fold_expand(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0), *shape = osp__onnx_const_input(im, n, 1);
    if (!shape || !shape->is_int || shape->ndim != 1 || shape->numel > ONNX_MAX_RANK)
        FAIL(OSP_EFORMAT, "the shape must be a 1-D integer tensor of at most %d values",
             ONNX_MAX_RANK);
    int rank = x->ndim > (int)shape->numel ? x->ndim : (int)shape->numel;
    int64_t dims[ONNX_MAX_RANK], stride[ONNX_MAX_RANK], s = 1;
    for (int k = rank - 1; k >= 0; k--) {
        int kx = k - (rank - x->ndim), ks = k - (rank - (int)shape->numel);
        int64_t dx = kx >= 0 ? x->dim[kx] : 1, ds = ks >= 0 ? shape->i[ks] : 1;
        if (ds < 0 || (dx != ds && dx != 1 && ds != 1))
            FAIL(OSP_ESHAPE, "shape %lld does not broadcast with %lld", (long long)ds,
                 (long long)dx);
        dims[k] = dx == 1 ? ds : dx;
        stride[k] = dx == 1 ? 0 : s;
        s *= dx;
    }
    int rc = alloc_checked(out, rank, dims, x->is_int);
    if (rc) FAIL(rc, "an expansion to more than %lld values", (long long)FILL_MAX_VALUES);
    for (int64_t o = 0; o < out->numel; o++) {
        int64_t from = 0, rem = o;
        for (int k = rank - 1; k >= 0; k--) {
            from += (rem % dims[k]) * stride[k];
            rem /= dims[k];
        }
        if (x->is_int) out->i[o] = x->i[from];
        else out->f[o] = x->f[from];
    }
    return OSP_OK;
}

/* ScatterND(data, indices, updates): a copy of data with the slices that
 * indices (... x k) name replaced by updates (or combined with them, for
 * the reductions of opsets 16 and 18). */
static int fold_scatter_nd(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *data = osp__onnx_const_input(im, n, 0),
                     *idx = osp__onnx_const_input(im, n, 1),
                     *upd = osp__onnx_const_input(im, n, 2);
    if (!data || !idx || !upd) FAIL(OSP_EFORMAT, "needs three inputs");
    if (!idx->is_int || idx->ndim < 1) FAIL(OSP_EFORMAT, "indices must be integers of rank >= 1");
    if (has_batch(data) || has_batch(idx) || has_batch(upd))
        FAIL(OSP_ENOTSUP, "uses the batch size as a number");
    if (data->is_int != upd->is_int) FAIL(OSP_EFORMAT, "data and updates differ in type");
    char buf[16];
    const char *red = osp__onnx_attr_string(n, "reduction", "none", buf, sizeof buf);
    int mode = !strcmp(red, "none") ? 0 : !strcmp(red, "add") ? 1 : !strcmp(red, "mul") ? 2
             : !strcmp(red, "max") ? 3 : !strcmp(red, "min") ? 4 : -1;
    if (mode < 0) FAIL(OSP_ENOTSUP, "reduction '%s'", red);
    int64_t k = idx->dim[idx->ndim - 1];
    if (k < 1 || k > data->ndim) FAIL(OSP_EFORMAT, "index tuples of %lld for data of rank %d",
                                      (long long)k, data->ndim);
    /* updates: indices' leading axes, then data's axes after the k indexed */
    int urank = idx->ndim - 1 + data->ndim - (int)k;
    if (upd->ndim != urank) FAIL(OSP_ESHAPE, "updates of rank %d, not %d", upd->ndim, urank);
    for (int d = 0; d < urank; d++) {
        int64_t want = d < idx->ndim - 1 ? idx->dim[d] : data->dim[d - (idx->ndim - 1) + k];
        if (upd->dim[d] != want) FAIL(OSP_ESHAPE, "updates do not fit data and indices");
    }
    int64_t slice = 1, tuples = idx->numel / k;
    for (int d = (int)k; d < data->ndim; d++) slice *= data->dim[d];
    int rc = alloc_checked(out, data->ndim, data->dim, data->is_int);
    if (rc) return rc;
    size_t es = data->is_int ? sizeof(int64_t) : sizeof(float);
    if (data->numel) memcpy(out->is_int ? (void *)out->i : (void *)out->f,
                            data->is_int ? (void *)data->i : (void *)data->f,
                            (size_t)data->numel * es);
    for (int64_t t = 0; t < tuples; t++) {
        int64_t at = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t len = data->dim[j], i = idx->i[t * k + j];
            if (i < -len || i >= len) {
                osp__onnx_const_free(out);
                FAIL(OSP_ERANGE, "index %lld out of range for an axis of %lld", (long long)i,
                     (long long)len);
            }
            at = at * len + (i < 0 ? i + len : i);
        }
        at *= slice;
        for (int64_t e = 0; e < slice; e++) {
            int64_t from = t * slice + e;
            if (out->is_int) {
                int64_t *o = &out->i[at + e], u = upd->i[from];
                *o = mode == 0 ? u : mode == 1 ? *o + u : mode == 2 ? *o * u
                   : mode == 3 ? (u > *o ? u : *o) : (u < *o ? u : *o);
            } else {
                float *o = &out->f[at + e], u = upd->f[from];
                *o = mode == 0 ? u : mode == 1 ? *o + u : mode == 2 ? *o * u
                   : mode == 3 ? fmaxf(u, *o) : fminf(u, *o);
            }
        }
    }
    return OSP_OK;
}

static int fold_not(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    if (!x->is_int || has_batch(x)) FAIL(OSP_EFORMAT, "Not of a value that is not boolean");
    int rc = osp__onnx_const_alloc(out, x->ndim, x->dim, 1);
    if (rc) return rc;
    for (int64_t k = 0; k < x->numel; k++) out->i[k] = !x->i[k];
    return OSP_OK;
}

int osp__onnx_expand_has_batch(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    const onnx_const *shape = osp__onnx_const_input(im, n, 1);
    return shape && has_batch(shape);
}

int osp__onnx_fold_fill(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const char *op = n->op_type;
    if (!strcmp(op, "Range")) return fold_range(im, n, out);
    if (!strcmp(op, "Expand")) return fold_expand(im, n, out);
    if (!strcmp(op, "ScatterND")) return fold_scatter_nd(im, n, out);
    return fold_not(im, n, out);
}
