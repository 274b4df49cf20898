/* [gather]: picks entries of one per-sample axis by constant indices, as
 * ONNX's Gather (and torch.index_select) without the batch axis.
 * `index = 0` (one index) drops the axis: x[:, 0] of N x T x D is N x D, a
 * vision transformer's class token; `indices = 2, 0, 2` keeps it with
 * three entries. Negative indices count from the end. A sample of one
 * value keeps a shape of 1. The backward adds each output gradient to the
 * entry it came from (twice for an index given twice). */
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

#define GATHER_MAX_INDICES (2 * OSP_MAX_DIMS) /* the longest list a spec key holds */

typedef struct gather_attrs {
    int axis;
    int scalar; /* `index`: the axis is dropped */
    int n;
    int idx[]; /* n entries, as written */
} gather_attrs;

static int gather_axis(const gather_attrs *a, int ndim) {
    return a->axis < 0 ? a->axis + ndim : a->axis;
}

static int gather_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': gather takes one input, not %d", n->name,
                         n->n_inputs);
    const gather_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': gather has no indices", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    char s[64];
    osp_shape_format(in, s, sizeof s);
    int axis = gather_axis(a, in->ndim);
    if (axis < 0 || axis >= in->ndim)
        return osp_error(OSP_ESHAPE, "layer '%s': axis %d does not exist in the input (%s)",
                         n->name, a->axis, s);
    for (int i = 0; i < a->n; i++)
        if (a->idx[i] < -in->dim[axis] || a->idx[i] >= in->dim[axis])
            return osp_error(OSP_ESHAPE, "layer '%s': index %d is outside axis %d (size %lld) "
                             "of the input (%s)", n->name, a->idx[i], axis,
                             (long long)in->dim[axis], s);
    osp_shape out = *in;
    if (a->scalar) {
        for (int d = axis; d + 1 < in->ndim; d++) out.dim[d] = in->dim[d + 1];
        out.ndim--;
        if (out.ndim == 0) out = osp_shape_make(1, (const int64_t[]){1});
    } else {
        out.dim[axis] = a->n;
    }
    n->shape = out;
    return OSP_OK;
}

/* A sample is `outer` blocks of the axis; each entry of the axis is an
 * `inner`-value row. */
static void gather_geometry(const osp_node *in, const gather_attrs *a, int64_t *outer,
                            int64_t *dim, int64_t *inner) {
    int axis = gather_axis(a, in->shape.ndim);
    *outer = *inner = 1;
    for (int d = 0; d < in->shape.ndim; d++)
        if (d < axis) *outer *= in->shape.dim[d];
        else if (d > axis) *inner *= in->shape.dim[d];
    *dim = in->shape.dim[axis];
}

static void gather_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    const gather_attrs *a = n->attrs;
    int64_t outer, dim, inner;
    gather_geometry(in, a, &outer, &dim, &inner);
    for (int64_t r = 0; r < (int64_t)ex->batch * outer; r++)
        for (int i = 0; i < a->n; i++) {
            int64_t k = a->idx[i] < 0 ? a->idx[i] + dim : a->idx[i];
            memcpy(n->out + (r * a->n + i) * inner, in->out + (r * dim + k) * inner,
                   (size_t)inner * sizeof(float));
        }
}

static void gather_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    const gather_attrs *a = n->attrs;
    int64_t outer, dim, inner;
    gather_geometry(in, a, &outer, &dim, &inner);
    for (int64_t r = 0; r < (int64_t)ex->batch * outer; r++)
        for (int i = 0; i < a->n; i++) {
            int64_t k = a->idx[i] < 0 ? a->idx[i] + dim : a->idx[i];
            float *dx = in->dout + (r * dim + k) * inner;
            const float *dy = n->dout + (r * a->n + i) * inner;
            for (int64_t j = 0; j < inner; j++) dx[j] += dy[j];
        }
}

/* ONNX: Gather (axis + 1) of an int64 initializer; one index is a 1-D
 * list of one, and a Reshape then drops the axis. */
static int gather_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    const gather_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s' ([gather]) has no attributes", n->name);
    int64_t idx[GATHER_MAX_INDICES];
    for (int i = 0; i < a->n; i++) idx[i] = a->idx[i];
    char *args[2] = {in[0], w->init_ints(w, w->name(w, "%s/indices", n->name), idx, a->n)};
    int axis = gather_axis(a, osp_graph_node_const(g, n->inputs[0])->shape.ndim) + 1;
    char *picked = a->scalar ? w->name(w, "%s/picked", n->name) : out;
    w->attr_int(w, w->node(w, "Gather", n->name, 2, args, picked), "axis", axis);
    if (a->scalar) {
        char *shape[2] = {picked, w->init_shape(w, w->name(w, "%s/shape", n->name), &n->shape)};
        w->node(w, "Reshape", w->name(w, "%s/drop", n->name), 2, shape, out);
    }
    return OSP_OK;
}

static const osp_op gather_op = {
    .name = "gather",
    .setup = gather_setup,
    .forward = gather_forward,
    .backward = gather_backward,
    .onnx_export = gather_onnx,
};

static int gather_parse(osp_spec_section *s, void **attrs) {
    int axis, one, many, rc, idx[GATHER_MAX_INDICES];
    if ((rc = osp_spec_int(s, "axis", 0, -(OSP_MAX_DIMS - 1), OSP_MAX_DIMS - 2, &axis)) ||
        (rc = osp_spec_ints(s, "index", idx, 1, &one, -(1 << 28), (1 << 28) - 1)))
        return rc;
    if (!one && (rc = osp_spec_ints(s, "indices", idx, GATHER_MAX_INDICES, &many, -(1 << 28),
                                    (1 << 28) - 1)))
        return rc;
    if (one && osp_spec_str(s, "indices", NULL))
        return osp_spec_error(s, "indices", "give either 'index' or 'indices', not both");
    if (!one && !many)
        return osp_spec_error(s, NULL, "'index' (one, dropping the axis) or 'indices' (a list "
                              "of up to %d) is required", GATHER_MAX_INDICES);
    int count = one ? 1 : many;
    gather_attrs *a = osp_calloc(1, sizeof *a + sizeof(int) * (size_t)count);
    if (!a) return OSP_ENOMEM;
    a->axis = axis;
    a->scalar = one;
    a->n = count;
    memcpy(a->idx, idx, sizeof(int) * (size_t)count);
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_gather = {&gather_op, gather_parse};
