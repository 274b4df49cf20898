/* ONNX operators that move values without computing new ones (Concat,
 * Slice, Split, Gather, Expand, Squeeze, Unsqueeze) and the reductions
 * (ReduceMean, ReduceSum, ReduceMax), on computed values of any rank,
 * mapped onto [concat], [slice], [gather], [expand], [reshape] and
 * [reduce]. Axes are ONNX's, the batch first: the batch axis itself may
 * not be touched (osprey's layers work per sample), and is refused. A
 * constant operand of Concat becomes a [constant] layer, the same for
 * every sample: a vision transformer's class token. */
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* "key = a, b, c\n" */
static void put_list(onnx_keys *k, const char *key, const int64_t *v, int count) {
    onnx_key(k, "%s = ", key);
    for (int i = 0; i < count; i++) onnx_key(k, "%s%lld", i ? ", " : "", (long long)v[i]);
    onnx_key(k, "\n");
}

static void put_shape(onnx_keys *k, const osp_shape *s) {
    onnx_key(k, "shape = ");
    for (int d = 0; d < s->ndim; d++) onnx_key(k, "%s%lld", d ? "x" : "", (long long)s->dim[d]);
    onnx_key(k, "\n");
}

static int layer_in(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t i) {
    onnx_value *v = osp__onnx_input(im, n, i);
    if (!v) FAIL(OSP_EFORMAT, "input %zu is missing", i);
    if (v->kind != ONNX_VAL_LAYER)
        FAIL(OSP_ENOTSUP, "input %zu ('%s') is a constant where osprey needs a computed value", i,
             v->name);
    return v->node;
}

static const osp_shape *shape_of(onnx_importer *im, int node) {
    return &osp__onnx_layer(im, node)->shape;
}

static int bind(onnx_importer *im, const Osp__Onnx__NodeProto *n, int id) {
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

/* An ONNX axis of a rank-`rank` tensor (batch included) as a per-sample
 * axis, or an error for the batch axis or one that does not exist. */
static int sample_axis(onnx_importer *im, const Osp__Onnx__NodeProto *n, int64_t axis, int rank) {
    if (axis < -rank || axis >= rank)
        FAIL(OSP_EFORMAT, "axis %lld of a rank-%d tensor", (long long)axis, rank);
    if (axis < 0) axis += rank;
    if (axis == 0) FAIL(OSP_ENOTSUP, "works along the batch axis (osprey's layers work per sample)");
    return (int)axis - 1;
}

/* The node's integer argument `name` (an attribute or a constant input,
 * as the model's opset has it: osp__onnx_arg), up to max values; *count =
 * -1 when it is not given. */
static int int_list(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *name,
                    int64_t *out, int max, int *count) {
    onnx_const c;
    int given, rc = osp__onnx_arg(im, n, name, &c, &given);
    if (rc) return rc;
    *count = -1;
    if (!given) return OSP_OK;
    if (!c.is_int || c.ndim > 1 || c.numel > max) {
        osp__onnx_const_free(&c);
        FAIL(OSP_ENOTSUP, "'%s' must be a constant list of at most %d integers", name, max);
    }
    for (int64_t k = 0; k < c.numel; k++) {
        if (c.i[k] == ONNX_BATCH) {
            osp__onnx_const_free(&c);
            FAIL(OSP_ENOTSUP, "'%s' depends on the batch size", name);
        }
        out[k] = c.i[k];
    }
    *count = (int)c.numel;
    osp__onnx_const_free(&c);
    return OSP_OK;
}

/* A constant as a [constant] layer of per-sample rank `rank`: a leading
 * axis of 1 is the batch's. */
static int const_layer(onnx_importer *im, const Osp__Onnx__NodeProto *n, const onnx_const *c,
                       int rank, const char *suffix) {
    /* a leading axis of more than 1 is what a fixed batch leaves: a
     * constant expanded to it (cls_token.expand(3, -1, -1), folded) */
    if (c->ndim == rank + 1 && c->dim[0] > 1)
        FAIL(OSP_ENOTSUP, "a constant operand of %lld samples (a fixed batch?); export the model "
             "with a symbolic batch", (long long)c->dim[0]);
    if (c->ndim != rank + 1 || c->dim[0] != 1)
        FAIL(OSP_ENOTSUP, "a constant operand must be 1 x (the other operands' per-sample shape)");
    onnx_keys k = {.len = 0};
    osp_shape s = {.ndim = rank};
    for (int d = 0; d < rank; d++) s.dim[d] = c->dim[d + 1];
    put_shape(&k, &s);
    int id = osp__onnx_emit(im, n, suffix, "constant", NULL, 0, k.text);
    if (id < 0) return id;
    float *v = osp_alloc(sizeof(float) * (size_t)(c->numel ? c->numel : 1));
    if (!v) return OSP_ENOMEM;
    for (int64_t i = 0; i < c->numel; i++) v[i] = (float)osp__onnx_const_get(c, i);
    int rc = osp__onnx_weight_add(im, id, "value", v, c->numel);
    return rc ? rc : id;
}

int osp__onnx_map_concat_nd(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int ids[OSP_MAX_INPUTS], rank = -1;
    if (n->n_input < 1 || n->n_input > OSP_MAX_INPUTS)
        FAIL(OSP_ENOTSUP, "%zu inputs (1 to %d)", n->n_input, OSP_MAX_INPUTS);
    for (size_t i = 0; i < n->n_input; i++) {
        onnx_value *v = osp__onnx_input(im, n, i);
        if (!v) FAIL(OSP_EFORMAT, "input %zu is missing", i);
        if (v->kind == ONNX_VAL_LAYER) rank = shape_of(im, v->node)->ndim;
    }
    if (rank < 0) FAIL(OSP_EINVAL, "internal: no computed input");
    int axis = sample_axis(im, n, osp__onnx_attr_int(n, "axis", 1), rank + 1);
    if (axis < 0) return axis;
    for (size_t i = 0; i < n->n_input; i++) {
        onnx_value *v = osp__onnx_input(im, n, i);
        if (v->kind == ONNX_VAL_LAYER) ids[i] = v->node;
        else if (v->kind != ONNX_VAL_CONST) return layer_in(im, n, i);
        else {
            char suffix[32];
            snprintf(suffix, sizeof suffix, "_const%d", (int)i);
            if ((ids[i] = const_layer(im, n, &v->c, rank, suffix)) < 0) return ids[i];
        }
    }
    if (n->n_input == 1) return bind(im, n, ids[0]);
    onnx_keys k = {.len = 0};
    if (axis) onnx_key(&k, "axis = %d\n", axis);
    return bind(im, n, osp__onnx_emit(im, n, NULL, "concat", ids, (int)n->n_input, k.text));
}

/* ONNX bounds are int64 with INT64_MAX for "to the end": anything past
 * 2^30 is past every axis (at most 2^28), and clamps the same. */
static int64_t clamp_bound(int64_t v) {
    const int64_t far = (int64_t)1 << 30;
    return v > far ? far : v < -far ? -far : v;
}

/* One [slice] of x over the per-sample axes given; returns its id. */
static int emit_slice(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *suffix, int x,
                      const int64_t *starts, const int64_t *ends, const int64_t *axes,
                      const int64_t *steps, int count) {
    int64_t s[ONNX_MAX_RANK], e[ONNX_MAX_RANK];
    for (int i = 0; i < count; i++) {
        s[i] = clamp_bound(starts[i]);
        e[i] = clamp_bound(ends[i]);
    }
    onnx_keys k = {.len = 0};
    put_list(&k, "starts", s, count);
    put_list(&k, "ends", e, count);
    put_list(&k, "axes", axes, count);
    put_list(&k, "steps", steps, count);
    return osp__onnx_emit(im, n, suffix, "slice", &x, 1, k.text);
}

int osp__onnx_map_slice(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_in(im, n, 0);
    if (x < 0) return x;
    int rank = shape_of(im, x)->ndim + 1, ns, ne, na, nt, rc;
    int64_t starts[ONNX_MAX_RANK], ends[ONNX_MAX_RANK], axes[ONNX_MAX_RANK], steps[ONNX_MAX_RANK];
    if ((rc = int_list(im, n, "starts", starts, ONNX_MAX_RANK, &ns)) ||
        (rc = int_list(im, n, "ends", ends, ONNX_MAX_RANK, &ne)) ||
        (rc = int_list(im, n, "axes", axes, ONNX_MAX_RANK, &na)) ||
        (rc = int_list(im, n, "steps", steps, ONNX_MAX_RANK, &nt)))
        return rc;
    if (ns < 1 || ne != ns || (na >= 0 && na != ns) || (nt >= 0 && nt != ns))
        FAIL(OSP_EFORMAT, "starts, ends, axes and steps must be of one length");
    int64_t keep_s[ONNX_MAX_RANK], keep_e[ONNX_MAX_RANK], keep_a[ONNX_MAX_RANK], keep_t[ONNX_MAX_RANK];
    int count = 0;
    for (int i = 0; i < ns; i++) {
        int64_t step = nt >= 0 ? steps[i] : 1;
        if (step == 0) FAIL(OSP_EFORMAT, "step 0");
        int64_t a = na >= 0 ? axes[i] : i;
        if ((a == 0 || a == -rank)) {
            /* the whole batch, in order, is no slice at all */
            if (step == 1 && starts[i] == 0 && ends[i] >= (int64_t)1 << 30) continue;
            FAIL(OSP_ENOTSUP, "slices the batch axis (osprey's layers work per sample)");
        }
        int axis = sample_axis(im, n, a, rank);
        if (axis < 0) return axis;
        keep_s[count] = starts[i];
        keep_e[count] = ends[i];
        keep_a[count] = axis;
        keep_t[count++] = step > ((int64_t)1 << 30) ? (int64_t)1 << 30 : step < -((int64_t)1 << 30) ? -((int64_t)1 << 30) : step;
    }
    if (!count) return bind(im, n, x);
    return bind(im, n, emit_slice(im, n, NULL, x, keep_s, keep_e, keep_a, keep_t, count));
}

/* Split: one [slice] per output that the rest of the graph reads. */
int osp__onnx_map_split(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_in(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    int axis = sample_axis(im, n, osp__onnx_attr_int(n, "axis", 0), xs->ndim + 1);
    if (axis < 0) return axis;
    int64_t len = xs->dim[axis], sizes[ONNX_MAX_SPLIT];
    int outs, rc;
    if ((rc = osp__onnx_split_sizes(im, n, len, sizes, &outs))) return rc;
    int64_t at = 0, ax = axis, one = 1;
    for (int i = 0; i < outs; i++, at += sizes[i - 1]) {
        onnx_value *v = n->output[i] && *n->output[i] ? osp__onnx_value_find(im, n->output[i]) : NULL;
        if (!v || !v->uses) continue;
        if (sizes[i] < 1) FAIL(OSP_ENOTSUP, "output %d is empty", i);
        int64_t end = at + sizes[i];
        char suffix[32];
        snprintf(suffix, sizeof suffix, "_%d", i);
        int id = sizes[i] == len ? x : emit_slice(im, n, outs > 1 ? suffix : NULL, x, &at, &end, &ax, &one, 1);
        if (id < 0) return id;
        v->kind = ONNX_VAL_LAYER;
        v->node = id;
    }
    return OSP_OK;
}

int osp__onnx_map_gather(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_in(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    int axis = sample_axis(im, n, osp__onnx_attr_int(n, "axis", 0), xs->ndim + 1);
    if (axis < 0) return axis;
    const onnx_const *idx = osp__onnx_const_input(im, n, 1);
    if (!idx || !idx->is_int || idx->ndim > 1)
        FAIL(OSP_ENOTSUP, "the indices must be a constant integer scalar or list");
    if (idx->numel < 1 || idx->numel > 2 * OSP_MAX_DIMS)
        FAIL(OSP_ENOTSUP, "%lld indices (1 to %d)", (long long)idx->numel, 2 * OSP_MAX_DIMS);
    onnx_keys k = {.len = 0};
    if (axis) onnx_key(&k, "axis = %d\n", axis);
    for (int64_t i = 0; i < idx->numel; i++)
        if (idx->i[i] < -xs->dim[axis] || idx->i[i] >= xs->dim[axis])
            FAIL(OSP_ERANGE, "index %lld outside an axis of %lld", (long long)idx->i[i],
                 (long long)xs->dim[axis]);
    if (idx->ndim == 0) onnx_key(&k, "index = %lld\n", (long long)idx->i[0]);
    else put_list(&k, "indices", idx->i, (int)idx->numel);
    if (idx->ndim == 0 && xs->ndim == 1)
        FAIL(OSP_ENOTSUP, "picks one value per sample (a batch of scalars)");
    return bind(im, n, osp__onnx_emit(im, n, NULL, "gather", &x, 1, k.text));
}

/* Expand: of a computed value to a shape whose first axis is the batch's
 * (the batch size, or 1), an [expand]; of a constant to the batch size
 * (torch's class_token.expand(n, -1, -1)), a [constant] layer, broadcast
 * to the shape first when it asks for more. */
int osp__onnx_map_expand(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    onnx_value *v = osp__onnx_input(im, n, 0);
    const onnx_const *shape = osp__onnx_const_input(im, n, 1);
    if (!v) FAIL(OSP_EFORMAT, "input 0 is missing");
    if (!shape || !shape->is_int || shape->ndim != 1 || shape->numel < 1 ||
        shape->numel > OSP_MAX_DIMS)
        FAIL(OSP_ENOTSUP, "the shape must be a constant list of 1 to %d integers (after folding)",
             OSP_MAX_DIMS);
    int in_rank = v->kind == ONNX_VAL_LAYER ? shape_of(im, v->node)->ndim + 1 : v->c.ndim;
    int out_rank = in_rank > (int)shape->numel ? in_rank : (int)shape->numel;
    if (out_rank < 2) FAIL(OSP_ENOTSUP, "a result without a per-sample axis");
    /* the target aligned on the right with the output; the batch axis
     * must stay the batch */
    int64_t want[OSP_MAX_DIMS + 1];
    for (int d = 0; d < out_rank; d++) {
        int t = d - (out_rank - (int)shape->numel);
        want[d] = t >= 0 ? shape->i[t] : 1;
        if (d > 0 && (want[d] < 1 || want[d] > ((int64_t)1 << 28)))
            FAIL(OSP_ENOTSUP, "target dimension %lld", (long long)want[d]);
    }
    if (want[0] != 1 && want[0] != ONNX_BATCH)
        FAIL(OSP_ENOTSUP, "expands the batch axis to %lld; export the model with a symbolic batch",
             (long long)want[0]);
    onnx_keys k = {.len = 0};
    osp_shape target = {.ndim = out_rank - 1};
    for (int d = 1; d < out_rank; d++) target.dim[d - 1] = want[d];
    int x;
    if (v->kind == ONNX_VAL_LAYER) {
        /* a longer shape would align the batch with another axis */
        if (in_rank < out_rank) FAIL(OSP_ENOTSUP, "a shape of higher rank than the data's");
        x = v->node;
    } else if (v->kind == ONNX_VAL_CONST) {
        /* the constant's own leading axis (when of the output's rank) is
         * the batch's and must be 1 */
        onnx_const c = v->c;
        if (c.ndim < out_rank) {
            int pad = out_rank - c.ndim;
            memmove(c.dim + pad, c.dim, sizeof(int64_t) * (size_t)c.ndim);
            for (int d = 0; d < pad; d++) c.dim[d] = 1;
            c.ndim = out_rank;
        }
        if ((x = const_layer(im, n, &c, out_rank - 1, "_const")) < 0) return x;
    } else return layer_in(im, n, 0);
    const osp_shape *xs = shape_of(im, x);
    int same = xs->ndim == target.ndim;
    for (int d = 0; same && d < target.ndim; d++) same = target.dim[d] == 1 || target.dim[d] == xs->dim[d];
    if (same) return bind(im, n, x);
    put_shape(&k, &target);
    return bind(im, n, osp__onnx_emit(im, n, NULL, "expand", &x, 1, k.text));
}

/* Squeeze and Unsqueeze of a computed value: a [reshape] to the shape
 * ONNX gives (the batch axis neither dropped nor moved). */
int osp__onnx_map_squeeze(onnx_importer *im, const Osp__Onnx__NodeProto *n, int unsqueeze) {
    int x = layer_in(im, n, 0), rc, count;
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    int64_t axes[ONNX_MAX_RANK];
    if ((rc = int_list(im, n, "axes", axes, ONNX_MAX_RANK, &count))) return rc;
    int rank = xs->ndim + 1, out_rank = unsqueeze ? rank + (count > 0 ? count : 0) : rank;
    if (unsqueeze && count < 1) FAIL(OSP_EFORMAT, "no axes");
    if (out_rank > OSP_MAX_DIMS) FAIL(OSP_ERANGE, "a result of rank %d", out_rank);
    unsigned named = 0;
    for (int i = 0; i < count; i++) {
        int a = sample_axis(im, n, axes[i], out_rank);
        if (a < 0) return a;
        if (named & (1u << a)) FAIL(OSP_EFORMAT, "axis %lld named twice", (long long)axes[i]);
        named |= 1u << a;
    }
    osp_shape out = {.ndim = 0};
    if (unsqueeze) {
        for (int d = 0, from = 0; d < out_rank - 1; d++)
            out.dim[out.ndim++] = named & (1u << d) ? 1 : xs->dim[from++];
    } else {
        for (int d = 0; d < xs->ndim; d++) {
            int listed = count < 0 ? xs->dim[d] == 1 : (named >> d) & 1u;
            if (listed && xs->dim[d] != 1)
                FAIL(OSP_ESHAPE, "squeezes axis %d of size %lld", d + 1, (long long)xs->dim[d]);
            if (!listed) out.dim[out.ndim++] = xs->dim[d];
        }
        if (out.ndim == 0) FAIL(OSP_ENOTSUP, "leaves one value per sample (a batch of scalars)");
    }
    if (osp_shape_equal(&out, xs)) return bind(im, n, x);
    onnx_keys k = {.len = 0};
    put_shape(&k, &out);
    return bind(im, n, osp__onnx_emit(im, n, NULL, "reshape", &x, 1, k.text));
}

/* ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceL1, ReduceL2,
 * ReduceSumSquare, ReduceLogSum, ReduceLogSumExp over per-sample axes: [reduce]
 * (ReduceMean over the two spatial axes of N x C x H x W is a
 * [globalavgpool], osprey's faster kernel). Axes are an attribute, or an
 * input from opset 13 (ReduceSum) and 18 (the others): osp__onnx_arg. */
int osp__onnx_map_reduce(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_in(im, n, 0), rc, count;
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    const char *op = n->op_type + strlen("Reduce");
    int64_t axes[ONNX_MAX_RANK];
    if ((rc = int_list(im, n, "axes", axes, ONNX_MAX_RANK, &count))) return rc;
    int keepdims = (int)osp__onnx_attr_int(n, "keepdims", 1);
    if (keepdims != 0 && keepdims != 1) FAIL(OSP_EFORMAT, "keepdims %d", keepdims);
    if (count <= 0) {
        if (osp__onnx_attr_int(n, "noop_with_empty_axes", 0)) return bind(im, n, x);
        FAIL(OSP_ENOTSUP, "reduces every axis, the batch's too");
    }
    int rank = xs->ndim + 1;
    unsigned named = 0;
    onnx_keys k = {.len = 0};
    static const char *const kinds[][2] = {
        {"Mean", "mean"}, {"Sum", "sum"},     {"Max", "max"},
        {"Min", "min"},   {"L1", "l1"},       {"L2", "l2"},
        {"SumSquare", "sumsquare"}, {"LogSum", "logsum"}, {"LogSumExp", "logsumexp"}};
    const char *kind = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(op, kinds[i][0])) kind = kinds[i][1];
    if (!kind)
        FAIL(OSP_ENOTSUP, "operator %s is not supported by osprey (docs/onnx.md lists those that "
             "are)", n->op_type);
    onnx_key(&k, "op = %s\naxes = ", kind);
    for (int i = 0; i < count; i++) {
        int a = sample_axis(im, n, axes[i], rank);
        if (a < 0) return a;
        if (named & (1u << a)) FAIL(OSP_EFORMAT, "axis %lld named twice", (long long)axes[i]);
        named |= 1u << a;
        onnx_key(&k, "%s%d", i ? ", " : "", a);
    }
    onnx_key(&k, "\nkeepdims = %d\n", keepdims);
    if (!strcmp(op, "Mean") && xs->ndim == 3 && named == 6u) {
        if (keepdims) return bind(im, n, osp__onnx_emit(im, n, NULL, "globalavgpool", &x, 1, ""));
        int id = osp__onnx_emit(im, n, "_pool", "globalavgpool", &x, 1, "");
        return id < 0 ? id : bind(im, n, osp__onnx_emit(im, n, NULL, "flatten", &id, 1, ""));
    }
    if (!keepdims && named == (1u << xs->ndim) - 1)
        FAIL(OSP_ENOTSUP, "leaves one value per sample (a batch of scalars)");
    return bind(im, n, osp__onnx_emit(im, n, NULL, "reduce", &x, 1, k.text));
}
