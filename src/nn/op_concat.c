/* [concat]: two or more inputs (up to OSP_MAX_INPUTS: a densely connected
 * block reads dozens) joined along one per-sample axis, `axis` (default 0,
 * the channel axis; negative counts from the last): C1 x H x W, C2 x H x W
 * -> (C1 + C2) x H x W, or T1 x D, T2 x D -> (T1 + T2) x D with axis 0. The
 * other axes must match. As torch.cat(dim=axis + 1). */

#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct concat_attrs {
    int axis; /* as written: may be negative */
} concat_attrs;

/* The axis the node joins along, in [0, ndim). */
static int concat_axis(const osp_node *n, int ndim) {
    const concat_attrs *a = n->attrs;
    int axis = a ? a->axis : 0;
    return axis < 0 ? axis + ndim : axis;
}

static int concat_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs < 2)
        return osp_error(OSP_ESHAPE,
                         "layer '%s': concat needs two or more inputs (input = a, b), not %d",
                         n->name, n->n_inputs);
    const osp_node *first = osp_node_input(g, n, 0);
    osp_shape out = first->shape;
    int axis = concat_axis(n, out.ndim);
    if (axis < 0 || axis >= out.ndim)
        return osp_error(OSP_ESHAPE, "layer '%s': axis %d does not exist in a rank-%d input",
                         n->name, ((const concat_attrs *)n->attrs)->axis, out.ndim);
    for (int i = 1; i < n->n_inputs; i++) {
        const osp_node *other = osp_node_input(g, n, i);
        int same = other->shape.ndim == out.ndim;
        for (int d = 0; same && d < out.ndim; d++) same = d == axis || other->shape.dim[d] == out.dim[d];
        if (!same) {
            char a[64], b[64];
            osp_shape_format(&first->shape, a, sizeof a);
            osp_shape_format(&other->shape, b, sizeof b);
            return osp_error(OSP_ESHAPE,
                             "layer '%s': cannot concatenate '%s' (%s) and '%s' (%s): only axis "
                             "%d may differ",
                             n->name, first->name, a, other->name, b, axis);
        }
        out.dim[axis] += other->shape.dim[axis];
        if (out.dim[axis] > ((int64_t)1 << 28))
            return osp_error(OSP_ESHAPE, "layer '%s': axis %d grows past 2^28", n->name, axis);
    }
    n->shape = out;
    return OSP_OK;
}

/* Each sample is `outer` rows, one per index of the axes before `axis`;
 * every input contributes a block of its own row length to each row. */
static int64_t outer_count(const osp_shape *s, int axis) {
    int64_t outer = 1;
    for (int d = 0; d < axis; d++) outer *= s->dim[d];
    return outer;
}

static void concat_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const int axis = concat_axis(n, n->shape.ndim);
    const int64_t outer = outer_count(&n->shape, axis), row = n->size / outer;
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        const osp_node *in = osp_node_input(g, n, i);
        const int64_t len = in->size / outer;
        ex->be->copy_rows((int64_t)ex->batch * outer, len, in->out, len, n->out + at, row);
        at += len;
    }
}

static void concat_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const int axis = concat_axis(n, n->shape.ndim);
    const int64_t outer = outer_count(&n->shape, axis), row = n->size / outer;
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        osp_node *in = osp_node_input(g, n, i);
        const int64_t len = in->size / outer;
        if (in->dout)
            ex->be->accumulate_rows((int64_t)ex->batch * outer, len, n->dout + at, row, in->dout,
                                    len);
        at += len;
    }
}

/* ONNX: Concat on axis + 1 (the batch comes first). A [constant] input's
 * value is already its Expand to the batch (op_constant.c). */
static int concat_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    (void)g;
    w->attr_int(w, w->node(w, "Concat", n->name, n->n_inputs, in, out), "axis",
                concat_axis(n, n->shape.ndim) + 1);
    return OSP_OK;
}

static const osp_op concat_op = {
    .name = "concat",
    .setup = concat_setup,
    .forward = concat_forward,
    .backward = concat_backward,
    .onnx_export = concat_onnx,
};

static int concat_parse(osp_spec_section *s, void **attrs) {
    int axis;
    int rc = osp_spec_int(s, "axis", 0, -(OSP_MAX_DIMS - 1), OSP_MAX_DIMS - 2, &axis);
    if (rc) return rc;
    *attrs = NULL;
    if (axis == 0) return OSP_OK;
    concat_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->axis = axis;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_concat = {&concat_op, concat_parse};
