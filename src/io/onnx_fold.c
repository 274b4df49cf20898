/* Constant folding: operators whose inputs are all known at import time
 * (initializers, Constant nodes, the shape of a layer) are evaluated here,
 * so the network never sees them. Exporters emit such chains for a flatten:
 * Shape -> Gather -> Unsqueeze -> Concat -> Reshape. The batch size is not
 * known; it travels through as the marker ONNX_BATCH, which only Reshape may
 * consume. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

static const char *const foldable[] = {"Constant", "Identity", "Shape", "Gather", "Unsqueeze",
                                       "Squeeze", "Concat", "Cast", "Reshape", "Slice", "Add",
                                       "Sub", "Mul", "Div", "ConstantOfShape", "Flatten", "Transpose",
                                       "Split", "Equal", "Where", "Pow", "Mod", "Range",
                                       "ScatterND", "Not", "Expand", NULL};

int osp__onnx_is_foldable(const char *op) {
    for (int i = 0; foldable[i]; i++)
        if (!strcmp(op, foldable[i])) return 1;
    return 0;
}

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* Folded constants are shapes, indices and small tensors: a limit far
 * below an initializer's keeps a hostile graph from inflating them. */
#define ONNX_MAX_FOLDED ((int64_t)1 << 24)

static int fold_alloc(onnx_const *c, int ndim, const int64_t *dim, int is_int) {
    int64_t numel = 1;
    for (int k = 0; k < ndim; k++) {
        if (dim[k] < 0 || (dim[k] && numel > ONNX_MAX_FOLDED / dim[k]))
            return osp_error(OSP_ERANGE, "a folded constant of more than %lld values",
                             (long long)ONNX_MAX_FOLDED);
        numel *= dim[k];
    }
    return osp__onnx_const_alloc(c, ndim, dim, is_int);
}

static int normalize_axis(int64_t axis, int rank, int *out) {
    if (axis < -rank || axis >= rank) return OSP_ERANGE;
    *out = (int)(axis < 0 ? axis + rank : axis);
    return OSP_OK;
}

static int set_output(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t o,
                      onnx_const *c) {
    if (n->n_output <= o || !n->output[o] || !*n->output[o]) {
        osp__onnx_const_free(c);
        FAIL(OSP_EFORMAT, "has no output");
    }
    onnx_value *v = osp__onnx_value_add(im, n->output[o]);
    if (!v) {
        osp__onnx_const_free(c);
        return OSP_ENOMEM;
    }
    v->kind = ONNX_VAL_CONST;
    v->c = *c;
    return OSP_OK;
}

static int set_result(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *c) {
    return set_output(im, n, 0, c);
}

/* Split of a constant: every output is set here (the part sizes in each
 * opset's form come from onnx_opset.c). */
static int fold_split(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    int axis, count, rc;
    if (x->ndim < 1 || normalize_axis(osp__onnx_attr_int(n, "axis", 0), x->ndim, &axis))
        FAIL(OSP_EFORMAT, "bad axis for data of rank %d", x->ndim);
    int64_t sizes[ONNX_MAX_SPLIT];
    if ((rc = osp__onnx_split_sizes(im, n, x->dim[axis], sizes, &count))) return rc;
    int64_t outer = 1, inner = 1, len = x->dim[axis], at = 0;
    for (int k = 0; k < axis; k++) outer *= x->dim[k];
    for (int k = axis + 1; k < x->ndim; k++) inner *= x->dim[k];
    for (int p = 0; p < count; at += sizes[p], p++) {
        int64_t dims[ONNX_MAX_RANK];
        memcpy(dims, x->dim, sizeof dims);
        dims[axis] = sizes[p];
        onnx_const c;
        if ((rc = fold_alloc(&c, x->ndim, dims, x->is_int))) return rc;
        int64_t o = 0;
        for (int64_t a = 0; a < outer; a++)
            for (int64_t b = 0; b < sizes[p] * inner; b++, o++) {
                int64_t from = (a * len + at) * inner + b;
                if (x->is_int) c.i[o] = x->i[from];
                else c.f[o] = x->f[from];
            }
        if (n->output[p] && *n->output[p]) {
            if ((rc = set_output(im, n, (size_t)p, &c))) return rc;
        } else osp__onnx_const_free(&c);
    }
    return OSP_OK;
}

static int copy_const(const onnx_const *src, onnx_const *dst) {
    int rc = osp__onnx_const_alloc(dst, src->ndim, src->dim, src->is_int);
    if (rc) return rc;
    size_t es = src->is_int ? sizeof(int64_t) : sizeof(float);
    if (src->numel) memcpy(src->is_int ? (void *)dst->i : (void *)dst->f,
                           src->is_int ? (void *)src->i : (void *)src->f, (size_t)src->numel * es);
    return OSP_OK;
}

static int fold_constant(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const Osp__Onnx__AttributeProto *a;
    if ((a = osp__onnx_attr(n, "value")) && a->t) return osp__onnx_const_from_tensor(im, a->t, out);
    if ((a = osp__onnx_attr(n, "value_float")) && a->has_f) {
        int rc = fold_alloc(out, 0, NULL, 0);
        if (!rc) out->f[0] = a->f;
        return rc;
    }
    if ((a = osp__onnx_attr(n, "value_int")) && a->has_i) {
        int rc = fold_alloc(out, 0, NULL, 1);
        if (!rc) out->i[0] = a->i;
        return rc;
    }
    if ((a = osp__onnx_attr(n, "value_floats"))) {
        int64_t d = (int64_t)a->n_floats;
        int rc = fold_alloc(out, 1, &d, 0);
        if (!rc && d) memcpy(out->f, a->floats, (size_t)d * sizeof(float));
        return rc;
    }
    if ((a = osp__onnx_attr(n, "value_ints"))) {
        int64_t d = (int64_t)a->n_ints;
        int rc = fold_alloc(out, 1, &d, 1);
        if (!rc && d) memcpy(out->i, a->ints, (size_t)d * sizeof(int64_t));
        return rc;
    }
    FAIL(OSP_ENOTSUP, "a Constant without a tensor, float or int value");
}

static int fold_shape(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    onnx_value *x = osp__onnx_input(im, n, 0);
    if (!x) FAIL(OSP_EFORMAT, "has no input");
    int64_t dims[ONNX_MAX_RANK];
    int rank;
    if (x->kind == ONNX_VAL_CONST) {
        rank = x->c.ndim;
        memcpy(dims, x->c.dim, sizeof(int64_t) * (size_t)rank);
    } else {
        int rc = osp__onnx_layout_dims(im, x, dims, &rank);
        if (rc) FAIL(rc, "input of rank %d", rank);
    }
    int64_t start = osp__onnx_attr_int(n, "start", 0), end = osp__onnx_attr_int(n, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = start < 0 ? 0 : start > rank ? rank : start;
    end = end < start ? start : end > rank ? rank : end;
    int64_t len = end - start;
    int rc = fold_alloc(out, 1, &len, 1);
    if (rc) return rc;
    for (int64_t k = 0; k < len; k++) out->i[k] = dims[start + k];
    return OSP_OK;
}

static int fold_gather(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *data = osp__onnx_const_input(im, n, 0),
                     *idx = osp__onnx_const_input(im, n, 1);
    if (!data || !idx) FAIL(OSP_ENOTSUP, "Gather is supported on constants only");
    if (!idx->is_int) FAIL(OSP_EFORMAT, "indices must be integers");
    int axis;
    if (data->ndim < 1 || normalize_axis(osp__onnx_attr_int(n, "axis", 0), data->ndim, &axis))
        FAIL(OSP_EFORMAT, "bad axis for data of rank %d", data->ndim);
    int rank = data->ndim - 1 + idx->ndim;
    if (rank > ONNX_MAX_RANK) FAIL(OSP_ERANGE, "result of rank %d", rank);
    int64_t dims[ONNX_MAX_RANK];
    int r = 0;
    for (int k = 0; k < axis; k++) dims[r++] = data->dim[k];
    for (int k = 0; k < idx->ndim; k++) dims[r++] = idx->dim[k];
    for (int k = axis + 1; k < data->ndim; k++) dims[r++] = data->dim[k];
    int rc = fold_alloc(out, rank, dims, data->is_int);
    if (rc) return rc;
    int64_t outer = 1, inner = 1, len = data->dim[axis];
    for (int k = 0; k < axis; k++) outer *= data->dim[k];
    for (int k = axis + 1; k < data->ndim; k++) inner *= data->dim[k];
    int64_t o = 0;
    for (int64_t a = 0; a < outer; a++)
        for (int64_t j = 0; j < idx->numel; j++) {
            int64_t at = idx->i[j] < 0 ? idx->i[j] + len : idx->i[j];
            if (at < 0 || at >= len) {
                osp__onnx_const_free(out);
                FAIL(OSP_ERANGE, "index %lld out of range for an axis of %lld",
                     (long long)idx->i[j], (long long)len);
            }
            for (int64_t b = 0; b < inner; b++, o++) {
                int64_t from = (a * len + at) * inner + b;
                if (data->is_int) out->i[o] = data->i[from];
                else out->f[o] = data->f[from];
            }
        }
    return OSP_OK;
}

static int fold_unsqueeze(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    int64_t axes[ONNX_MAX_RANK];
    int na, rc;
    if ((rc = osp__onnx_axes_arg(im, n, axes, &na))) return rc;
    if (na < 0) FAIL(OSP_EFORMAT, "Unsqueeze without axes");
    int rank = x->ndim + na;
    if (rank > ONNX_MAX_RANK) FAIL(OSP_ERANGE, "result of rank %d", rank);
    int inserted[ONNX_MAX_RANK] = {0};
    for (int k = 0; k < na; k++) {
        int ax;
        if (normalize_axis(axes[k], rank, &ax) || inserted[ax])
            FAIL(OSP_EFORMAT, "bad or repeated axis %lld", (long long)axes[k]);
        inserted[ax] = 1;
    }
    if ((rc = copy_const(x, out))) return rc;
    out->ndim = rank;
    for (int k = 0, from = 0; k < rank; k++) out->dim[k] = inserted[k] ? 1 : x->dim[from++];
    return OSP_OK;
}

static int fold_squeeze(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    int64_t axes[ONNX_MAX_RANK];
    int na, rc;
    if ((rc = osp__onnx_axes_arg(im, n, axes, &na))) return rc;
    int drop[ONNX_MAX_RANK] = {0};
    for (int k = 0; k < (na < 0 ? x->ndim : na); k++) {
        int ax = k;
        if (na >= 0 && normalize_axis(axes[k], x->ndim, &ax)) FAIL(OSP_EFORMAT, "bad axis");
        if (x->dim[ax] == 1) drop[ax] = 1;
        else if (na >= 0) FAIL(OSP_EFORMAT, "cannot squeeze an axis of size %lld",
                               (long long)x->dim[ax]);
    }
    if ((rc = copy_const(x, out))) return rc;
    int r = 0;
    for (int k = 0; k < x->ndim; k++)
        if (!drop[k]) out->dim[r++] = x->dim[k];
    out->ndim = r;
    return OSP_OK;
}

static int fold_concat(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    if (n->n_input < 1) FAIL(OSP_EFORMAT, "has no input");
    const onnx_const *first = osp__onnx_const_input(im, n, 0);
    int axis, is_int = 1;
    if (first->ndim < 1 || normalize_axis(osp__onnx_attr_int(n, "axis", 0), first->ndim, &axis))
        FAIL(OSP_EFORMAT, "bad axis");
    int64_t dims[ONNX_MAX_RANK];
    memcpy(dims, first->dim, sizeof dims);
    dims[axis] = 0;
    for (size_t i = 0; i < n->n_input; i++) {
        const onnx_const *c = osp__onnx_const_input(im, n, i);
        if (!c || c->ndim != first->ndim) FAIL(OSP_EFORMAT, "inputs of different ranks");
        for (int k = 0; k < c->ndim; k++)
            if (k != axis && c->dim[k] != first->dim[k]) FAIL(OSP_EFORMAT, "mismatched shapes");
        dims[axis] += c->dim[axis];
        if (dims[axis] > ONNX_MAX_ELEMENTS) FAIL(OSP_ERANGE, "too large");
        is_int &= c->is_int;
    }
    int rc = fold_alloc(out, first->ndim, dims, is_int);
    if (rc) return rc;
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < axis; k++) outer *= dims[k];
    for (int k = axis + 1; k < first->ndim; k++) inner *= dims[k];
    int64_t o = 0;
    for (int64_t a = 0; a < outer; a++)
        for (size_t i = 0; i < n->n_input; i++) {
            const onnx_const *c = osp__onnx_const_input(im, n, i);
            int64_t len = c->dim[axis] * inner;
            for (int64_t b = 0; b < len; b++, o++) {
                int64_t from = a * len + b;
                if (is_int) out->i[o] = c->i[from];
                else if (c->is_int && osp__onnx_batch_factor(c->i[from])) {
                    osp__onnx_const_free(out);
                    FAIL(OSP_ENOTSUP, "uses the batch size as a number");
                } else out->f[o] = (float)osp__onnx_const_get(c, from);
            }
        }
    return OSP_OK;
}

static int fold_cast(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    int64_t to = osp__onnx_attr_int(n, "to", 0);
    int is_int;
    if (to == OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ||
        to == OSP__ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE)
        is_int = 0;
    else if (to == OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ||
             to == OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ||
             to == OSP__ONNX__TENSOR_PROTO__DATA_TYPE__BOOL)
        is_int = 1;
    else FAIL(OSP_ENOTSUP, "Cast to type %lld", (long long)to);
    int rc = fold_alloc(out, x->ndim, x->dim, is_int);
    if (rc) return rc;
    for (int64_t k = 0; k < x->numel; k++) {
        if (x->is_int && osp__onnx_batch_factor(x->i[k]) && !is_int) {
            osp__onnx_const_free(out);
            FAIL(OSP_ENOTSUP, "uses the batch size as a number");
        }
        if (to == OSP__ONNX__TENSOR_PROTO__DATA_TYPE__BOOL)
            out->i[k] = osp__onnx_const_get(x, k) != 0.0; /* a mask (swin's mask != 0) */
        else if (is_int) out->i[k] = x->is_int ? x->i[k] : (int64_t)x->f[k];
        else out->f[k] = (float)osp__onnx_const_get(x, k);
    }
    return OSP_OK;
}

/* The target shape of a Reshape of a constant. */
static int fold_reshape(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0), *shape = osp__onnx_const_input(im, n, 1);
    if (!shape || !shape->is_int || shape->ndim != 1 || shape->numel > ONNX_MAX_RANK)
        FAIL(OSP_EFORMAT, "the shape must be a constant 1-D integer tensor of rank <= %d",
             ONNX_MAX_RANK);
    int64_t dims[ONNX_MAX_RANK], known = 1;
    int infer = -1, rank = (int)shape->numel;
    for (int k = 0; k < rank; k++) {
        int64_t d = shape->i[k];
        if (d == 0 && !osp__onnx_attr_int(n, "allowzero", 0)) {
            if (k >= x->ndim) FAIL(OSP_EFORMAT, "copies a dimension the input lacks");
            d = x->dim[k];
        }
        if (d == -1) {
            if (infer >= 0) FAIL(OSP_EFORMAT, "two -1 dimensions");
            infer = k;
            d = 1;
        } else if (d < 0) FAIL(OSP_EFORMAT, "dimension %lld", (long long)d);
        dims[k] = d;
        known *= d;
        if (known > ONNX_MAX_ELEMENTS) FAIL(OSP_ERANGE, "too large");
    }
    if (infer >= 0) {
        if (!known || x->numel % known) FAIL(OSP_ESHAPE, "cannot infer the -1 dimension");
        dims[infer] = x->numel / known;
        known *= dims[infer];
    }
    if (known != x->numel) FAIL(OSP_ESHAPE, "%lld elements into %lld", (long long)x->numel,
                                (long long)known);
    int rc = copy_const(x, out);
    if (rc) return rc;
    out->ndim = rank;
    memcpy(out->dim, dims, sizeof(int64_t) * (size_t)rank);
    return OSP_OK;
}

static int fold_flatten(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    int axis;
    if (normalize_axis(osp__onnx_attr_int(n, "axis", 1), x->ndim + 1, &axis))
        FAIL(OSP_EFORMAT, "bad axis");
    int64_t a = 1, b = 1;
    for (int k = 0; k < x->ndim; k++) *(k < axis ? &a : &b) *= x->dim[k];
    int rc = copy_const(x, out);
    if (rc) return rc;
    out->ndim = 2;
    out->dim[0] = a;
    out->dim[1] = b;
    return OSP_OK;
}

/* Maps each output element to its source, axis by axis (row-major). */
static int64_t source_index(const onnx_const *x, const int64_t *out_dim, const int64_t *start,
                            const int64_t *step, const int *perm, int64_t o) {
    int64_t idx[ONNX_MAX_RANK], src = 0;
    for (int k = x->ndim - 1; k >= 0; k--) {
        idx[k] = o % out_dim[k];
        o /= out_dim[k];
    }
    /* Output axis k reads input axis perm[k] (the same axis for a slice). */
    int64_t pos[ONNX_MAX_RANK];
    for (int k = 0; k < x->ndim; k++) {
        int in_axis = perm ? perm[k] : k;
        pos[in_axis] = start ? start[k] + idx[k] * step[k] : idx[k];
    }
    for (int k = 0; k < x->ndim; k++) src = src * x->dim[k] + pos[k];
    return src;
}

static int slice_of(onnx_importer *im, const Osp__Onnx__NodeProto *n, const onnx_const *x,
                    const onnx_const *starts, const onnx_const *ends, const onnx_const *axes,
                    const onnx_const *steps, onnx_const *out);

/* Slice of a constant: any axes, steps of either sign (PyTorch's pads are
 * reversed with a step of -1). */
static int fold_slice(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    /* Attributes before opset 10 (no steps), inputs from it. */
    static const char *const names[4] = {"starts", "ends", "axes", "steps"};
    onnx_const arg[4];
    int given[4], rc = OSP_OK;
    for (int k = 0; k < 4; k++) {
        given[k] = 0;
        if (!rc) rc = osp__onnx_arg(im, n, names[k], &arg[k], &given[k]);
    }
    if (!rc) rc = slice_of(im, n, x, given[0] ? &arg[0] : NULL, given[1] ? &arg[1] : NULL,
                           given[2] ? &arg[2] : NULL, given[3] ? &arg[3] : NULL, out);
    for (int k = 0; k < 4; k++)
        if (given[k]) osp__onnx_const_free(&arg[k]);
    return rc;
}

static int slice_of(onnx_importer *im, const Osp__Onnx__NodeProto *n, const onnx_const *x,
                    const onnx_const *starts, const onnx_const *ends, const onnx_const *axes,
                    const onnx_const *steps, onnx_const *out) {
    if (!starts || !ends) FAIL(OSP_EFORMAT, "Slice without starts and ends");
    int64_t count = starts->numel;
    if (!starts->is_int || !ends->is_int || ends->numel != count || count > x->ndim ||
        (axes && (!axes->is_int || axes->numel != count)) ||
        (steps && (!steps->is_int || steps->numel != count)))
        FAIL(OSP_EFORMAT, "Slice with mismatched starts, ends, axes and steps");
    int64_t start[ONNX_MAX_RANK], step[ONNX_MAX_RANK], dims[ONNX_MAX_RANK];
    int seen[ONNX_MAX_RANK] = {0};
    for (int k = 0; k < x->ndim; k++) {
        start[k] = 0;
        step[k] = 1;
        dims[k] = x->dim[k];
    }
    for (int64_t j = 0; j < count; j++) {
        int ax;
        if (normalize_axis(axes ? axes->i[j] : j, x->ndim, &ax) || seen[ax])
            FAIL(OSP_EFORMAT, "bad or repeated axis");
        seen[ax] = 1;
        int64_t len = x->dim[ax], st = steps ? steps->i[j] : 1, s = starts->i[j], e = ends->i[j];
        if (st == 0 || osp__onnx_batch_factor(s) || osp__onnx_batch_factor(e)) FAIL(OSP_EFORMAT, "bad Slice bounds");
        if (s < 0) s += len;
        if (e < 0 && e > INT64_MIN / 2) e += len;
        if (st > 0) {
            s = s < 0 ? 0 : s > len ? len : s;
            e = e < 0 ? 0 : e > len ? len : e;
            dims[ax] = e > s ? (e - s + st - 1) / st : 0;
        } else {
            s = s < 0 ? 0 : s > len - 1 ? len - 1 : s;
            e = e < -1 ? -1 : e > len - 1 ? len - 1 : e;
            dims[ax] = s > e ? (s - e + (-st) - 1) / (-st) : 0;
        }
        start[ax] = s;
        step[ax] = st;
    }
    int rc = fold_alloc(out, x->ndim, dims, x->is_int);
    if (rc) return rc;
    for (int64_t o = 0; o < out->numel; o++) {
        int64_t from = source_index(x, dims, start, step, NULL, o);
        if (x->is_int) out->i[o] = x->i[from];
        else out->f[o] = x->f[from];
    }
    return OSP_OK;
}

static int fold_transpose(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *x = osp__onnx_const_input(im, n, 0);
    size_t np;
    const int64_t *p = osp__onnx_attr_ints(n, "perm", &np);
    int perm[ONNX_MAX_RANK], used[ONNX_MAX_RANK] = {0};
    int64_t dims[ONNX_MAX_RANK];
    if (p && (int)np != x->ndim) FAIL(OSP_EFORMAT, "perm of %zu axes for rank %d", np, x->ndim);
    for (int k = 0; k < x->ndim; k++) {
        int64_t a = p ? p[k] : x->ndim - 1 - k;
        if (a < 0 || a >= x->ndim || used[a]) FAIL(OSP_EFORMAT, "bad perm");
        used[a] = 1;
        perm[k] = (int)a;
        dims[k] = x->dim[a];
    }
    int rc = fold_alloc(out, x->ndim, dims, x->is_int);
    if (rc) return rc;
    for (int64_t o = 0; o < out->numel; o++) {
        int64_t from = source_index(x, dims, NULL, NULL, perm, o);
        if (x->is_int) out->i[o] = x->i[from];
        else out->f[o] = x->f[from];
    }
    return OSP_OK;
}

static int fold_constant_of_shape(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                                  onnx_const *out) {
    const onnx_const *shape = osp__onnx_const_input(im, n, 0);
    if (!shape->is_int || shape->ndim != 1 || shape->numel > ONNX_MAX_RANK)
        FAIL(OSP_EFORMAT, "the shape must be a 1-D integer tensor");
    for (int64_t k = 0; k < shape->numel; k++)
        if (osp__onnx_batch_factor(shape->i[k]))
            FAIL(OSP_ENOTSUP, "a constant as large as the batch");
    onnx_const value = {0};
    const Osp__Onnx__AttributeProto *a = osp__onnx_attr(n, "value");
    int rc;
    if (a && a->t) {
        if ((rc = osp__onnx_const_from_tensor(im, a->t, &value))) return rc;
        if (value.numel != 1) {
            osp__onnx_const_free(&value);
            FAIL(OSP_EFORMAT, "the value must hold one element");
        }
    } else if ((rc = fold_alloc(&value, 0, NULL, 0))) return rc;
    rc = fold_alloc(out, (int)shape->numel, shape->i, value.is_int);
    if (!rc)
        for (int64_t k = 0; k < out->numel; k++) {
            if (value.is_int) out->i[k] = value.i[0];
            else out->f[k] = value.f[0];
        }
    osp__onnx_const_free(&value);
    return rc;
}

/* Integer power by squaring; *over = 1 past int64. */
static int64_t int_pow(int64_t x, int64_t y, int *over) {
    int64_t r = 1;
    while (y > 0 && !*over) {
        if (y & 1) *over |= __builtin_mul_overflow(r, x, &r);
        y >>= 1;
        if (y) *over |= __builtin_mul_overflow(x, x, &x);
    }
    return r;
}

/* Add, Sub, Mul, Div, Pow, Mod of two constants, with numpy broadcasting.
 * Mod with fmod = 0 takes the divisor's sign (Python's %), as torch's
 * remainder that swin's padding writes; fmod = 1 the dividend's (C). */
static int fold_binary(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out) {
    const onnx_const *a = osp__onnx_const_input(im, n, 0), *b = osp__onnx_const_input(im, n, 1);
    if (!a || !b) FAIL(OSP_EFORMAT, "needs two inputs");
    int rank = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t dims[ONNX_MAX_RANK], sa[ONNX_MAX_RANK], sb[ONNX_MAX_RANK];
    int64_t stride_a = 1, stride_b = 1;
    for (int k = rank - 1; k >= 0; k--) {
        int ka = k - (rank - a->ndim), kb = k - (rank - b->ndim);
        int64_t da = ka >= 0 ? a->dim[ka] : 1, db = kb >= 0 ? b->dim[kb] : 1;
        if (da != db && da != 1 && db != 1) FAIL(OSP_ESHAPE, "shapes do not broadcast");
        dims[k] = da == 1 ? db : da;
        sa[k] = da == 1 ? 0 : stride_a;
        sb[k] = db == 1 ? 0 : stride_b;
        stride_a *= da;
        stride_b *= db;
    }
    int is_int = a->is_int && b->is_int;
    /* Pow's result takes the base's type (ONNX); the others both alike */
    if (!strcmp(n->op_type, "Pow")) is_int = a->is_int;
    int rc = fold_alloc(out, rank, dims, is_int);
    if (rc) return rc;
    char op = !strcmp(n->op_type, "Pow") ? 'P' : !strcmp(n->op_type, "Mod") ? '%' : n->op_type[0];
    int fmod_c = op == '%' && osp__onnx_attr_int(n, "fmod", 0);
    for (int64_t o = 0; o < out->numel; o++) {
        int64_t ia = 0, ib = 0, rem = o;
        for (int k = rank - 1; k >= 0; k--) {
            int64_t c = rem % dims[k];
            rem /= dims[k];
            ia += c * sa[k];
            ib += c * sb[k];
        }
        int64_t fa = a->is_int ? osp__onnx_batch_factor(a->i[ia]) : 0,
                fb = b->is_int ? osp__onnx_batch_factor(b->i[ib]) : 0;
        if (fa || fb) {
            /* k x batch times a positive count stays a multiple of the
             * batch (torch's N * num_heads), and so does k x batch divided
             * by a divisor of k (swin's B * nW // nW); anything else is
             * refused */
            int64_t c = fa ? (b->is_int ? b->i[ib] : 0) : a->i[ia], f = fa ? fa : fb;
            int mul = op == 'M' && c >= 1 && c < ONNX_BATCH_MAX_FACTOR / f,
                div = op == 'D' && fa && c >= 1 && f % c == 0;
            if (!is_int || (fa && fb) || (!mul && !div)) {
                osp__onnx_const_free(out);
                FAIL(OSP_ENOTSUP, "uses the batch size in arithmetic");
            }
            out->i[o] = osp__onnx_batch_times(mul ? f * c : f / c);
            continue;
        }
        if (is_int && op == 'P' && !b->is_int) {
            /* an integer base to a float power: computed, then truncated
             * to the base's type (as ONNX Runtime) */
            double r = pow((double)a->i[ia], osp__onnx_const_get(b, ib));
            if (!(fabs(r) < 9.2e18)) {
                osp__onnx_const_free(out);
                FAIL(OSP_ERANGE, "integer overflow in %lld ^ %g", (long long)a->i[ia],
                     osp__onnx_const_get(b, ib));
            }
            out->i[o] = (int64_t)r;
        } else if (is_int && op == 'P') {
            int64_t x = a->i[ia], y = b->i[ib];
            int over = 0;
            if (y < 0) {
                osp__onnx_const_free(out);
                FAIL(OSP_ENOTSUP, "an integer to the negative power %lld", (long long)y);
            }
            out->i[o] = int_pow(x, y, &over);
            if (over) {
                osp__onnx_const_free(out);
                FAIL(OSP_ERANGE, "integer overflow in %lld ^ %lld", (long long)x, (long long)y);
            }
        } else if (is_int && op == '%') {
            int64_t x = a->i[ia], y = b->i[ib];
            if (y == 0) {
                osp__onnx_const_free(out);
                FAIL(OSP_EINVAL, "integer modulo by zero");
            }
            int64_t r = y == -1 ? 0 : x % y;
            if (!fmod_c && r != 0 && (r < 0) != (y < 0)) r += y;
            out->i[o] = r;
        } else if (is_int) {
            int64_t x = a->i[ia], y = b->i[ib], r = 0;
            if (op == 'D' && y == 0) {
                osp__onnx_const_free(out);
                FAIL(OSP_EINVAL, "integer division by zero");
            }
            /* shapes and indices: a result past int64 is a hostile model */
            int over = op == 'A'   ? __builtin_add_overflow(x, y, &r)
                       : op == 'S' ? __builtin_sub_overflow(x, y, &r)
                       : op == 'M' ? __builtin_mul_overflow(x, y, &r)
                                   : (x == INT64_MIN && y == -1) || (r = x / y, 0);
            if (over) {
                osp__onnx_const_free(out);
                FAIL(OSP_ERANGE, "integer overflow in %lld %c %lld", (long long)x,
                     op == 'A' ? '+' : op == 'S' ? '-' : op == 'M' ? '*' : '/', (long long)y);
            }
            out->i[o] = r;
        } else {
            double x = osp__onnx_const_get(a, ia), y = osp__onnx_const_get(b, ib);
            double r = op == 'A'   ? x + y
                       : op == 'S' ? x - y
                       : op == 'M' ? x * y
                       : op == 'D' ? x / y
                       : op == 'P' ? pow(x, y)
                                   : fmod(x, y);
            /* Python's sign for fmod = 0 (ONNX requires fmod = 1 for
             * floats; the sign rule is the same that integers follow) */
            if (op == '%' && !fmod_c && r != 0 && (r < 0) != (y < 0)) r += y;
            out->f[o] = (float)r;
        }
    }
    return OSP_OK;
}

int osp__onnx_fold(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    const char *op = n->op_type;
    for (size_t i = 0; i < n->n_input; i++) {
        onnx_value *v = osp__onnx_input(im, n, i);
        /* Shape reads only the shape of a layer; the rest need constants. */
        if (v && v->kind != ONNX_VAL_CONST && strcmp(op, "Shape"))
            FAIL(OSP_EINVAL, "internal: folding a node with a computed input");
    }
    onnx_const c;
    int rc;
    if (!strcmp(op, "Constant")) rc = fold_constant(im, n, &c);
    else if (!strcmp(op, "Identity")) {
        const onnx_const *x = osp__onnx_const_input(im, n, 0);
        if (!x) FAIL(OSP_EFORMAT, "has no input");
        rc = copy_const(x, &c);
    } else if (!strcmp(op, "Shape")) rc = fold_shape(im, n, &c);
    else if (n->n_input < 1 || !osp__onnx_const_input(im, n, 0)) FAIL(OSP_EFORMAT, "has no input");
    else if (!strcmp(op, "Gather")) rc = fold_gather(im, n, &c);
    else if (!strcmp(op, "Unsqueeze")) rc = fold_unsqueeze(im, n, &c);
    else if (!strcmp(op, "Squeeze")) rc = fold_squeeze(im, n, &c);
    else if (!strcmp(op, "Concat")) rc = fold_concat(im, n, &c);
    else if (!strcmp(op, "Cast")) rc = fold_cast(im, n, &c);
    else if (!strcmp(op, "Reshape")) rc = fold_reshape(im, n, &c);
    else if (!strcmp(op, "Flatten")) rc = fold_flatten(im, n, &c);
    else if (!strcmp(op, "Slice")) rc = fold_slice(im, n, &c);
    else if (!strcmp(op, "Transpose")) rc = fold_transpose(im, n, &c);
    else if (!strcmp(op, "ConstantOfShape")) rc = fold_constant_of_shape(im, n, &c);
    else if (!strcmp(op, "Split")) return fold_split(im, n);
    else if (!strcmp(op, "Equal")) rc = osp__onnx_fold_equal(im, n, &c);
    else if (!strcmp(op, "Where")) rc = osp__onnx_fold_where(im, n, &c);
    else if (!strcmp(op, "Expand") && osp__onnx_expand_has_batch(im, n))
        return osp__onnx_map_expand(im, n); /* a constant broadcast over the batch: a layer */
    else if (!strcmp(op, "Range") || !strcmp(op, "Expand") || !strcmp(op, "ScatterND") ||
             !strcmp(op, "Not"))
        rc = osp__onnx_fold_fill(im, n, &c);
    else rc = fold_binary(im, n, &c);
    if (rc) {
        /* Messages from the helpers above already name the node. */
        if (!strstr(osp_last_error(), "node '")) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", osp_last_error());
            FAIL(rc, "%s", msg);
        }
        return rc;
    }
    return set_result(im, n, &c);
}
