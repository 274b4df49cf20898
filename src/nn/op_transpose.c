/* [transpose]: permutes the per-sample axes: output axis i is input axis
 * perm[i] (`perm = 1, 2, 0` turns C x H x W into H x W x C), as
 * x.permute(0, *[p + 1 for p in perm]) in PyTorch and ONNX's Transpose
 * without the batch axis. The backward applies the inverse permutation
 * (the backend's permute slots). */
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

static int transpose_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': transpose takes one input, not %d", n->name,
                         n->n_inputs);
    const transpose_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': transpose has no perm", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (a->ndim != in->ndim) {
        char s[64];
        osp_shape_format(in, s, sizeof s);
        return osp_error(OSP_ESHAPE, "layer '%s': perm has %d axes but the input (%s) has %d",
                         n->name, a->ndim, s, in->ndim);
    }
    int64_t dim[PERM_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) dim[i] = in->dim[a->perm[i]];
    n->shape = osp_shape_make(a->ndim, dim);
    return OSP_OK;
}

/* For output axis i, the input's stride (in values) along it. */
static void input_strides(const osp_shape *in, const transpose_attrs *a, int64_t *stride) {
    int64_t s[PERM_MAX_DIMS], t = 1;
    for (int k = in->ndim - 1; k >= 0; k--) {
        s[k] = t;
        t *= in->dim[k];
    }
    for (int i = 0; i < a->ndim; i++) stride[i] = s[a->perm[i]];
}

static void transpose_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    int64_t stride[PERM_MAX_DIMS];
    input_strides(&in->shape, n->attrs, stride);
    ex->be->permute_forward(ex->batch, n->shape.ndim, n->shape.dim, stride, in->out, n->out);
}

static void transpose_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    int64_t stride[PERM_MAX_DIMS];
    input_strides(&in->shape, n->attrs, stride);
    ex->be->permute_backward(ex->batch, n->shape.ndim, n->shape.dim, stride, n->dout, in->dout);
}

/* ONNX: Transpose, the batch axis staying first. */
static int transpose_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                          char *const *in, char *out) {
    int rc = osp__export_needs_attrs(n);
    if (rc) return rc;
    const transpose_attrs *a = n->attrs;
    int64_t perm[PERM_MAX_DIMS + 1];
    perm[0] = 0;
    for (int i = 0; i < a->ndim; i++) perm[i + 1] = a->perm[i] + 1;
    w->attr_ints(w, w->node(w, "Transpose", n->name, 1, in, out), "perm", perm, a->ndim + 1);
    return OSP_OK;
}

static const osp_op transpose_op = {
    .name = "transpose",
    .setup = transpose_setup,
    .forward = transpose_forward,
    .backward = transpose_backward,
    .onnx_export = transpose_onnx,
};

static int transpose_parse(osp_spec_section *s, void **attrs) {
    int perm[PERM_MAX_DIMS], n;
    int rc = osp_spec_ints(s, "perm", perm, PERM_MAX_DIMS, &n, 0, PERM_MAX_DIMS - 1);
    if (rc) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'perm' (e.g. 1, 2, 0) is required");
    int seen = 0;
    for (int i = 0; i < n; i++) {
        if (perm[i] >= n)
            return osp_spec_error(s, "perm", "'perm' has %d axes, so axis %d does not exist", n,
                                  perm[i]);
        if (seen & (1 << perm[i]))
            return osp_spec_error(s, "perm", "'perm' names axis %d twice", perm[i]);
        seen |= 1 << perm[i];
    }
    transpose_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->ndim = n;
    memcpy(a->perm, perm, (size_t)n * sizeof *perm);
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_transpose = {&transpose_op, transpose_parse};
