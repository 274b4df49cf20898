/* [expand]: broadcasts the per-sample tensor to `shape` as numpy (and
 * ONNX's Expand without the batch axis) broadcast: shapes aligned on the
 * right, an axis of 1 repeated to the other's size (either side), the
 * result of the larger rank. 1xD to `shape = 5x1x1` gives 5x1xD. The
 * backward sums the gradient over the repeats. */
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"
#include "strided.h"

#define EXPAND_MAX_DIMS (OSP_MAX_DIMS - 1) /* the batch takes one axis */

typedef struct expand_attrs {
    int ndim;
    int dim[EXPAND_MAX_DIMS];
    int64_t stride[OSP_MAX_DIMS]; /* from setup: the input's, 0 where repeated */
} expand_attrs;

static int expand_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': expand takes one input, not %d", n->name,
                         n->n_inputs);
    expand_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': expand has no shape", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    int nd = in->ndim > a->ndim ? in->ndim : a->ndim;
    if (nd > EXPAND_MAX_DIMS)
        return osp_error(OSP_ESHAPE, "layer '%s': more than %d axes", n->name, EXPAND_MAX_DIMS);
    int64_t in_stride[OSP_MAX_DIMS], dim[OSP_MAX_DIMS], total = 1;
    osp__row_strides(in, in_stride);
    for (int d = 0; d < nd; d++) {
        int i = d - (nd - in->ndim), t = d - (nd - a->ndim);
        int64_t x = i >= 0 ? in->dim[i] : 1, want = t >= 0 ? a->dim[t] : 1;
        if (x != want && x != 1 && want != 1) {
            char s[64];
            osp_shape_format(in, s, sizeof s);
            return osp_error(OSP_ESHAPE, "layer '%s': cannot broadcast the input (%s) to the "
                             "shape: axis %d has %lld where %lld is asked", n->name, s, d,
                             (long long)x, (long long)want);
        }
        dim[d] = x == 1 ? want : x;
        a->stride[d] = i >= 0 && x != 1 ? in_stride[i] : 0;
        if (dim[d] > ((int64_t)1 << 28) / total)
            return osp_error(OSP_ESHAPE, "layer '%s': more than 2^28 values per sample", n->name);
        total *= dim[d];
    }
    n->shape = osp_shape_make(nd, dim);
    return OSP_OK;
}

static void expand_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    const expand_attrs *a = n->attrs;
    for (int b = 0; b < ex->batch; b++) {
        const float *xs = in->out + (int64_t)b * in->size;
        float *ys = n->out + (int64_t)b * n->size;
        OSP_STRIDED_FOR(n->shape.ndim, n->shape.dim, a->stride, 0, ys[o] = xs[x]);
    }
}

static void expand_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    const expand_attrs *a = n->attrs;
    for (int b = 0; b < ex->batch; b++) {
        float *dxs = in->dout + (int64_t)b * in->size;
        const float *dys = n->dout + (int64_t)b * n->size;
        OSP_STRIDED_FOR(n->shape.ndim, n->shape.dim, a->stride, 0, dxs[x] += dys[o]);
    }
}

/* ONNX: Expand to [1, shape] (the 1 keeps the batch, broadcast both ways). */
static int expand_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    (void)g;
    int64_t dim[OSP_MAX_DIMS];
    dim[0] = 1;
    for (int d = 0; d < n->shape.ndim; d++) dim[d + 1] = n->shape.dim[d];
    char *args[2] = {in[0], w->init_ints(w, w->name(w, "%s/shape", n->name), dim,
                                         n->shape.ndim + 1)};
    w->node(w, "Expand", n->name, 2, args, out);
    return OSP_OK;
}

static const osp_op expand_op = {
    .name = "expand",
    .setup = expand_setup,
    .forward = expand_forward,
    .backward = expand_backward,
    .onnx_export = expand_onnx,
};

static int expand_parse(osp_spec_section *s, void **attrs) {
    int dim[EXPAND_MAX_DIMS], n;
    int rc = osp_spec_ints(s, "shape", dim, EXPAND_MAX_DIMS, &n, 1, 1 << 28);
    if (rc) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'shape' (e.g. 4x1x16) is required");
    expand_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->ndim = n;
    memcpy(a->dim, dim, (size_t)n * sizeof *dim);
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_expand = {&expand_op, expand_parse};
